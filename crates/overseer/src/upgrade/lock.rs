//! The locks beside a binary: who upgrades it, and who writes its ledger.
//!
//! Two masters can share one binary path (instances of a systemd template
//! unit, a shared `/usr/local/bin`). Only one of them may upgrade it: two
//! swaps racing would make the rollback copy the new build, and a starting
//! master removing "stale" staging files would remove a live one's. So a
//! master that upgrades a binary holds an exclusive `flock` on
//! `.NAME.overseer-lock` beside it for as long as its upgrade thread runs
//! (the kernel drops it however the process ends), with its pid written in
//! the file for the message another master gives. A master that cannot take
//! it serves without upgrading.
//!
//! The ledger has a lock of its own, `.NAME.overseer-state-lock`, held only
//! while it is read and rewritten, so that the master and an operator's
//! `overseer ledger reset-floor` never lose each other's update.
//!
//! Lock files are never removed (removing a lock file races with taking
//! it); they are a few bytes each.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a ledger write waits for another writer before giving up.
const LEDGER_LOCK_WAIT: Duration = Duration::from_secs(10);

/// The lock a master holds on the binary it upgrades.
#[derive(Debug)]
pub(crate) struct BinaryLock {
    /// Held, not read: the lock lasts as long as the descriptor (opened
    /// close-on-exec, so no worker or sanity check inherits it).
    _file: File,
}

/// Why a master does not upgrade its binary.
#[derive(Debug)]
pub(crate) enum NotLocked {
    /// Another process holds the lock: another master, with the pid it
    /// wrote there when it could.
    Held { lock: PathBuf, pid: Option<u32> },
    /// The lock file cannot be opened or locked.
    Failed { lock: PathBuf, error: io::Error },
}

impl BinaryLock {
    /// Takes the lock at `path`, at once or not at all.
    pub fn take(path: &Path, owner_like: &Path) -> Result<BinaryLock, NotLocked> {
        let failed = |error| NotLocked::Failed {
            lock: path.to_path_buf(),
            error,
        };
        let mut file = open(path, owner_like).map_err(failed)?;
        match file.try_lock() {
            Ok(()) => {
                // For the message of a master that finds it taken; a lock
                // file opened read-only (made by another user) has none.
                let _ = file
                    .set_len(0)
                    .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()));
                Ok(BinaryLock { _file: file })
            }
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                Err(NotLocked::Held {
                    lock: path.to_path_buf(),
                    pid: text.trim().parse().ok(),
                })
            }
            Err(fs::TryLockError::Error(e)) => Err(failed(e)),
        }
    }
}

/// Takes the lock at `path` for a ledger write, waiting a bounded time for
/// another writer to finish; dropping the file releases it.
pub(crate) fn ledger_lock(path: &Path, owner_like: &Path) -> io::Result<File> {
    let file = open(path, owner_like)?;
    let deadline = Instant::now() + LEDGER_LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is held by another process for more than {}s",
                        path.display(),
                        LEDGER_LOCK_WAIT.as_secs()
                    ),
                ))
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// Opens (creating it private, 0600) a lock file. One made by another user
/// is opened read-only: `flock` needs no write access. A lock file root
/// creates gets the owner of `owner_like` (the ledger, else the binary), so
/// that the service's own user can still open it.
fn open(path: &Path, owner_like: &Path) -> io::Result<File> {
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(file) => {
            give_owner_of(&file, owner_like)?;
            Ok(file)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            match OpenOptions::new().read(true).write(true).open(path) {
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => File::open(path),
                other => other,
            }
        }
        Err(e) => Err(e),
    }
}

/// When running as root, gives `file` the owner of `like` (if it exists):
/// files root writes beside a binary stay usable by the service's user.
pub(crate) fn give_owner_of(file: &File, like: &Path) -> io::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    match fs::metadata(like) {
        Ok(m) => std::os::unix::fs::fchown(file, Some(m.uid()), Some(m.gid())),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_told_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".app.overseer-lock");
        let held = BinaryLock::take(&path, dir.path()).unwrap();
        match BinaryLock::take(&path, dir.path()) {
            Err(NotLocked::Held { lock, pid }) => {
                assert_eq!(lock, path);
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("{other:?}"),
        }
        drop(held);
        BinaryLock::take(&path, dir.path()).unwrap();
    }

    #[test]
    fn a_ledger_writer_waits_for_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".app.overseer-state-lock");
        let first = ledger_lock(&path, dir.path()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let d = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            let second = ledger_lock(&p, &d).unwrap();
            tx.send(()).unwrap();
            drop(second);
        });
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(first);
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
    }
}
