//! Where a master's control socket lives: the path for a service name in
//! the default directory (the user's runtime directory, `/run/overseer`
//! for root, else a private directory in `/tmp`), that directory checked
//! private first. `overseer run` places its socket there; `overseer
//! restart` and `overseer status` look for it there.

use std::path::{Path, PathBuf};

use crate::failure::Failure;

/// Where control sockets go by default: the user's runtime directory, or
/// `/run/overseer` for root, or a private directory in `/tmp`.
pub(crate) fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute() && d.is_dir())
    {
        return dir.join("overseer");
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        PathBuf::from("/run/overseer")
    } else {
        std::env::temp_dir().join(format!("overseer-{uid}"))
    }
}

/// Refuses a default directory that someone else could tamper with: it
/// must belong to this user (or root) and be writable by no one else.
/// (A missing one is created `0700` by the master.)
pub(crate) fn check_dir(dir: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return Ok(());
    };
    let uid = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || (meta.uid() != uid && meta.uid() != 0) || meta.mode() & 0o022 != 0 {
        return Err(Failure::Usage(format!(
            "{} is not a private directory of this user (owner uid {}, mode {:o}); remove it, or give --control PATH",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// The socket path for a service name.
pub(crate) fn socket_for(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sock"))
}

/// Checks a service name: it becomes a file name.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad service name {name:?}: use letters, digits, '-', '_', '.', '@' (not starting with '.')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_file_names() {
        assert!(check_name("myapp@2").is_ok());
        assert!(check_name("../x").is_err());
        assert!(check_name("").is_err());
        assert!(check_name(".hidden").is_err());
    }
}
