//! Step 9 of the pipeline, and rollback: the durable atomic swap.
//!
//! The binary path always names a complete executable: the new file is
//! written, given the old file's permissions and `fsync`ed under a private
//! name in the same directory, the current binary is hard-linked to the
//! rollback name, and one `rename` puts the new file in place; then the
//! directory is `fsync`ed. A master killed at any instant leaves either the
//! old or the new binary at the path (and at worst a stray staging file,
//! removed at the next start).

use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::TempPath;

use super::stage;

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

    /// Where the upgrade state is kept.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(format!(".{}.overseer-state", self.name))
    }

    /// A private temporary name in the binary's directory.
    pub fn tmp_path(&self, purpose: &str) -> PathBuf {
        self.dir
            .join(format!(".{}.{purpose}.overseer-tmp", self.name))
    }

    /// Checks, by creating and removing a staging file, that a swap can work.
    pub fn check_writable(&self) -> io::Result<()> {
        let f = stage::staging_file(&self.dir, &self.name)?;
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

    /// Removes staging files left behind by a master that was killed.
    pub fn remove_stale_staging(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours_tmp =
                name.starts_with(&format!(".{}.", self.name)) && name.ends_with(".overseer-tmp");
            if stage::is_staging_name(&name, &self.name) || ours_tmp {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
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
    let tmp = target.tmp_path("previous");
    let _ = fs::remove_file(&tmp);
    link_or_copy(&target.path, &tmp)?;
    fs::rename(&tmp, target.rollback_path())?;
    staged.persist(&target.path).map_err(|e| e.error)?;
    sync_dir(&target.dir)
}

/// Puts the rollback copy back at the binary path.
pub(crate) fn restore(target: &Target) -> io::Result<()> {
    let tmp = target.tmp_path("restore");
    let _ = fs::remove_file(&tmp);
    link_or_copy(&target.rollback_path(), &tmp)?;
    fs::rename(&tmp, &target.path)?;
    sync_dir(&target.dir)
}

/// A hard link (instant, no extra space), or a durable copy where the
/// filesystem has no hard links.
fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to)?;
    File::open(to)?.sync_all()
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
        let mut staged = stage::staging_file(&target.dir, &target.name)?;
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
}
