//! The master's private runtime directory: its workers' notify sockets.
//!
//! A master removes its directory when it ends, but one that is killed
//! (SIGKILL at the end of a stop timeout, the OOM killer) cannot, and each
//! start makes a new one: left alone, they pile up in `$XDG_RUNTIME_DIR` or
//! the temporary directory. So a live master holds an exclusive `flock` on a
//! `lock` file in its directory for its whole life, which the kernel drops
//! however the process ends, and a starting master removes each directory
//! of this kind, of its user, whose lock it can take: one whose master is
//! gone. A lock, not a pid, tells the live from the dead: masters in other
//! pid namespaces (containers) may share the directory, and pids are
//! reused.
//!
//! The lock file is locked under a temporary name and then renamed to
//! `lock`, so a directory with a `lock` file is never one still being set
//! up. A directory without one (a master that could not lock, or a version
//! before this), not named as `create` names them, or holding anything but
//! the lock and notify sockets is left alone. Taking or checking locks is
//! housekeeping: when it fails, the master starts all the same.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::carried;
use crate::error::{Error, Result};
use crate::log;

/// The directories' name: this prefix and this many random letters and digits.
const PREFIX: &str = "overseer-";
const RANDOM: usize = 6;
/// The lock file's name, once it is locked, and before.
const LOCK: &str = "lock";
const STAGING_LOCK: &str = ".lock";

/// A master's runtime directory, locked for as long as this value lives.
pub(crate) struct RunDir {
    /// Removed when dropped, unless it was taken over from a previous image
    /// of this master (`None`; removed by `close` all the same).
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    /// Held, not read: the lock lasts as long as the descriptor (which the
    /// standard library opens close-on-exec, so no worker inherits it).
    _lock: Option<File>,
}

impl RunDir {
    /// Removes the directories dead masters left, then makes and locks this
    /// master's, a private (0700) one in `$XDG_RUNTIME_DIR` when that is a
    /// directory, else in the temporary directory.
    pub(crate) fn create() -> Result<RunDir> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        remove_stale(&base);
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .rand_bytes(RANDOM)
            // Private: tempfile's default for directories is 0777 less the umask.
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(&base)
            .map_err(|e| {
                Error::io(
                    format!("creating a runtime directory in {}", base.display()),
                    e,
                )
            })?;
        let lock = match lock(dir.path()) {
            Ok(file) => Some(file),
            Err(e) => {
                log::debug!(
                    "{} is not locked ({e}): if this master is killed, the next one will not remove it",
                    dir.path().display()
                );
                None
            }
        };
        Ok(RunDir {
            path: dir.path().to_path_buf(),
            dir: Some(dir),
            _lock: lock,
        })
    }

    /// Takes over the directory at `path` a previous image of this master
    /// carried across its re-exec, still locked by (a copy of) the
    /// descriptor it carried.
    pub(crate) fn adopted(path: &Path, lock: Option<File>) -> RunDir {
        RunDir {
            dir: None,
            path: path.to_path_buf(),
            _lock: lock,
        }
    }

    /// What a re-exec carries of it (its lock's descriptor is kept open).
    pub(crate) fn carry(&self) -> carried::RunDirState {
        carried::RunDirState {
            path: self.path.clone().into_os_string(),
            lock_fd: self._lock.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory (the lock goes with the descriptor).
    pub(crate) fn close(self) {
        match self.dir {
            Some(dir) => {
                let _ = dir.close();
            }
            None => {
                let _ = fs::remove_dir_all(&self.path);
            }
        }
    }
}

/// Creates `dir/lock`, locked before it has its name.
fn lock(dir: &Path) -> std::io::Result<File> {
    let staging = dir.join(STAGING_LOCK);
    let file = File::create(&staging)?;
    file.try_lock().map_err(std::io::Error::from)?;
    fs::rename(&staging, dir.join(LOCK))?;
    Ok(file)
}

/// Removes the runtime directories in `base` of this user's masters that
/// are gone.
fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    let uid = nix::unistd::geteuid().as_raw();
    for entry in entries.flatten() {
        if !is_master_dir_name(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        // Not followed: a link, or another user's directory, is never touched.
        let ours = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if !ours || !holds_only_master_files(&path) {
            continue;
        }
        let Ok(file) = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path.join(LOCK))
        else {
            continue;
        };
        if file.try_lock().is_err() {
            continue; // its master is alive
        }
        match fs::remove_dir_all(&path) {
            Ok(()) => log::debug!("removed {}, left by a master that is gone", path.display()),
            Err(e) => log::debug!(
                "cannot remove {}, left by a master that is gone: {e}",
                path.display()
            ),
        }
    }
}

/// Whether a name is one `RunDir::create` gives: `overseer-` and six
/// letters or digits.
fn is_master_dir_name(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .is_some_and(|rest| rest.len() == RANDOM && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Whether a directory holds nothing but what a master puts there: its lock
/// file and its workers' notify sockets. Anything else, and it is not
/// removed, whatever its name.
fn holds_only_master_files(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.into_iter().all(|entry| {
        let Ok(entry) = entry else { return false };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let socket = entry.file_type().is_ok_and(|t| t.is_socket());
        name == LOCK
            || name == STAGING_LOCK
            || (socket && name.starts_with("worker-") && name.ends_with(".sock"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory like a master's, and its lock (dropping it lets go).
    fn master_dir(base: &Path, name: &str) -> (PathBuf, File) {
        let dir = base.join(name);
        fs::create_dir(&dir).expect("mkdir");
        let file = lock(&dir).expect("lock");
        (dir, file)
    }

    #[test]
    fn only_directories_whose_master_is_gone_are_removed() {
        let base = tempfile::tempdir().expect("temp dir");
        let (live, _held) = master_dir(base.path(), "overseer-live01");
        let (dead, held) = master_dir(base.path(), "overseer-dead01");
        let socket = std::os::unix::net::UnixDatagram::bind(dead.join("worker-3.sock"))
            .expect("bind a notify socket");
        drop((held, socket)); // its master ended without removing it
        let unlocked = base.path().join("overseer-nolock");
        fs::create_dir(&unlocked).expect("mkdir");
        let (other, held) = master_dir(base.path(), "other-dead01");
        drop(held);
        let (misnamed, held) = master_dir(base.path(), "overseer-notes");
        drop(held);
        let (more, held) = master_dir(base.path(), "overseer-more01");
        fs::write(more.join("notes.txt"), "not a master's").expect("write");
        drop(held);

        remove_stale(base.path());

        assert!(live.is_dir(), "a live master's directory was removed");
        assert!(!dead.exists(), "a dead master's directory was left");
        assert!(unlocked.is_dir(), "a directory without a lock was removed");
        assert!(other.is_dir(), "a directory without the prefix was removed");
        assert!(
            misnamed.is_dir(),
            "a directory not named like a master's was removed"
        );
        assert!(more.is_dir(), "a directory holding other files was removed");
    }

    #[test]
    fn names() {
        assert!(is_master_dir_name("overseer-Ab3xZ9"));
        assert!(!is_master_dir_name("overseer-Ab3xZ"));
        assert!(!is_master_dir_name("overseer-Ab3xZ9x"));
        assert!(!is_master_dir_name("overseer-Ab-xZ9"));
        assert!(!is_master_dir_name("overseer"));
    }
}
