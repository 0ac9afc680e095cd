//! Step 9 of the pipeline, and rollback: the durable atomic swap.
//!
//! The binary path always names a complete executable: the new file is
//! written, given the old file's permissions and `fsync`ed under a private
//! name in the same directory, the current binary is hard-linked to the
//! rollback name, and one `rename` puts the new file in place; then the
//! directory is `fsync`ed. A master killed at any instant leaves either the
//! old or the new binary at the path (and at worst a stray staging or
//! temporary file, removed at the next start).
//!
//! Every temporary name is unique (`.NAME.PURPOSE.XXXXXX.overseer-tmp`), and
//! only the master holding the binary's lock (`lock.rs`) swaps, restores or
//! removes stale files, so two masters sharing a binary path never take or
//! remove each other's files.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::TempPath;

use super::download;

/// The binary an upgrade replaces.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The real file (symlinks resolved: a link's target is replaced).
    pub path: PathBuf,
    pub dir: PathBuf,
    pub name: String,
}

impl Target {
    /// Resolves the binary at `path`.
    pub fn resolve(path: &Path) -> io::Result<Target> {
        let path = fs::canonicalize(path)?;
        let dir = path
            .parent()
            .ok_or_else(|| io::Error::other("the binary has no parent directory"))?
            .to_path_buf();
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::other("the binary has no file name"))?
            .to_string_lossy()
            .into_owned();
        Ok(Target { path, dir, name })
    }

    /// Where the previous binary is kept after a swap.
    pub fn rollback_path(&self) -> PathBuf {
        self.dir.join(format!(".{}.overseer-previous", self.name))
    }

    /// Where the upgrade state (the ledger) is kept.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(format!(".{}.overseer-state", self.name))
    }

    /// The lock of the ledger, held while it is rewritten.
    pub fn state_lock_path(&self) -> PathBuf {
        self.dir.join(format!(".{}.overseer-state-lock", self.name))
    }

    /// The lock of the master that upgrades this binary.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(format!(".{}.overseer-lock", self.name))
    }

    /// Whether `file_name` is one of this binary's private temporary files:
    /// `.NAME.PURPOSE.XXXXXX.overseer-tmp`, or the fixed
    /// `.NAME.PURPOSE.overseer-tmp` of versions before unique names.
    fn is_tmp_name(&self, file_name: &str) -> bool {
        let Some(middle) = file_name
            .strip_prefix(&format!(".{}.", self.name))
            .and_then(|rest| rest.strip_suffix(".overseer-tmp"))
        else {
            return false;
        };
        let (purpose, random) = middle.split_once('.').unwrap_or((middle, ""));
        TMP_PURPOSES.contains(&purpose)
            && (random.is_empty()
                || (random.len() == TMP_RANDOM
                    && random.bytes().all(|b| b.is_ascii_alphanumeric())))
    }

    /// Checks, by creating and removing a staging file, that a swap can work.
    pub fn check_writable(&self) -> io::Result<()> {
        let f = download::staging_file(&self.dir, &self.name)?;
        f.close()?;
        let meta = fs::metadata(&self.path)?;
        if meta.permissions().readonly() && !running_as_root() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the binary itself is read-only",
            ));
        }
        Ok(())
    }

    /// Removes staging and temporary files left behind by a master that was
    /// killed. Only the master holding the binary's lock and the ledger's
    /// may call this: any other master's or writer's files are live.
    pub fn remove_stale_staging(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if download::is_staging_name(&name, &self.name) || self.is_tmp_name(&name) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// The random letters and digits in a temporary file's name.
pub(crate) const TMP_RANDOM: usize = 6;
/// What temporary files beside the binary are for: the rollback copy being
/// made, the restored binary, a new ledger.
const TMP_PURPOSES: [&str; 3] = ["previous", "restore", "state"];

/// A hard link to (or copy of) `from` under a unique temporary name in the
/// binary's directory, removed again unless it is persisted.
fn temporary_copy(
    target: &Target,
    from: &Path,
    purpose: &str,
) -> io::Result<tempfile::NamedTempFile<()>> {
    tempfile::Builder::new()
        .prefix(&format!(".{}.{purpose}.", target.name))
        .suffix(".overseer-tmp")
        .rand_bytes(TMP_RANDOM)
        .make_in(&target.dir, |path| link_or_copy(from, path))
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Gives a staged file the current binary's mode (and owner, when running
/// as root), so it can be sanity-checked and later swapped in unchanged.
pub(crate) fn match_permissions(target: &Target, staged: &File) -> io::Result<()> {
    let meta = fs::metadata(&target.path)?;
    staged.set_permissions(Permissions::from_mode(meta.mode() & 0o7777))?;
    if running_as_root() {
        std::os::unix::fs::fchown(staged, Some(meta.uid()), Some(meta.gid()))?;
        // chown clears set-id bits: set the mode again.
        staged.set_permissions(Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    Ok(())
}

/// Swaps `staged` (already `fsync`ed and closed) in at the binary path,
/// keeping the current binary as the rollback copy.
pub(crate) fn install(target: &Target, staged: TempPath) -> io::Result<()> {
    temporary_copy(target, &target.path, "previous")?
        .persist(target.rollback_path())
        .map_err(|e| e.error)?;
    staged.persist(&target.path).map_err(|e| e.error)?;
    sync_dir(&target.dir)
}

/// Puts the rollback copy back at the binary path.
pub(crate) fn restore(target: &Target) -> io::Result<()> {
    temporary_copy(target, &target.rollback_path(), "restore")?
        .persist(&target.path)
        .map_err(|e| e.error)?;
    sync_dir(&target.dir)
}

/// A hard link (instant, no extra space), or a durable copy where the
/// filesystem has no hard links. Never replaces an existing `to`.
fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
        Err(_) => {}
    }
    let mut source = File::open(from)?;
    let mut copy = OpenOptions::new().write(true).create_new(true).open(to)?;
    io::copy(&mut source, &mut copy)?;
    copy.set_permissions(source.metadata()?.permissions())?;
    copy.sync_all()
}

/// Makes a rename durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn swap_and_restore_through_a_symlink() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let real = tmp.path().join("app-1");
        fs::write(&real, b"old")?;
        fs::set_permissions(&real, Permissions::from_mode(0o751))?;
        let link = tmp.path().join("app");
        std::os::unix::fs::symlink(&real, &link)?;

        let target = Target::resolve(&link)?;
        assert_eq!(target.path, fs::canonicalize(&real)?);
        target.check_writable()?;
        let mut staged = download::staging_file(&target.dir, &target.name)?;
        staged.write_all(b"new")?;
        match_permissions(&target, staged.as_file())?;
        staged.as_file().sync_all()?;
        install(&target, staged.into_temp_path())?;

        assert_eq!(fs::read(&link)?, b"new");
        assert!(fs::symlink_metadata(&link)?.file_type().is_symlink());
        assert_eq!(fs::metadata(&real)?.mode() & 0o777, 0o751);
        assert_eq!(fs::read(target.rollback_path())?, b"old");

        restore(&target)?;
        assert_eq!(fs::read(&link)?, b"old");
        target.remove_stale_staging();
        let left: Vec<String> = fs::read_dir(tmp.path())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("staging") || n.contains("overseer-tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        Ok(())
    }

    #[test]
    fn stale_files_are_this_binarys_own_by_exact_name() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let bin = tmp.path().join("app");
        fs::write(&bin, b"binary")?;
        let target = Target::resolve(&bin)?;
        let stale = [
            ".app.previous.Ab12Cd.overseer-tmp",
            ".app.state.Ab12Cd.overseer-tmp",
            ".app.restore.Ab12Cd.overseer-tmp",
            // Fixed names of versions before unique ones.
            ".app.previous.overseer-tmp",
            ".app.state.overseer-tmp",
        ];
        let kept = [
            // Another binary's (named `app.state`), the ledger, the locks,
            // the rollback copy, names that only look alike.
            ".app.state.previous.Ab12Cd.overseer-tmp",
            ".app.overseer-state",
            ".app.overseer-state-lock",
            ".app.overseer-lock",
            ".app.overseer-previous",
            ".app.other.Ab12Cd.overseer-tmp",
            ".app.state.Ab12C.overseer-tmp",
        ];
        for name in stale.iter().chain(&kept) {
            fs::write(tmp.path().join(name), b"x")?;
        }
        target.remove_stale_staging();
        for name in stale {
            assert!(!tmp.path().join(name).exists(), "{name} was left");
        }
        for name in kept {
            assert!(tmp.path().join(name).exists(), "{name} was removed");
        }
        Ok(())
    }
}
