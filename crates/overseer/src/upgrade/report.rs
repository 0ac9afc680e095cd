//! What the upgrade thread tells the master's loop, and the line it tells it
//! through.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use super::probation::{Installed, Verdict};

/// What the upgrade thread tells the master's loop.
#[derive(Debug)]
pub(crate) enum Report {
    /// A release was swapped in; the loop answers on its `reply` once its
    /// first worker passed or failed probation (see [`probation`](super::probation)).
    Installed(Installed),
    /// A release was turned down, or could not be considered (for the status).
    Rejected(String),
    /// What the release source says of this host now (a fleet's wave),
    /// for the status.
    Rollout(Option<String>),
    /// A release kept after its probation (or without one) is recorded in
    /// the ledger: the upgrade thread is idle again.
    Kept,
}

/// A release installed and waiting for its verdict: the receiving end of
/// its [`Installed::reply`], with what the ledger records of it.
#[derive(Debug)]
pub(crate) struct Pending {
    pub sha256: String,
    pub version: Option<String>,
    pub tag: Option<String>,
    pub verdict: Receiver<Verdict>,
}

/// Held by the upgrade thread while it changes files (a release's staging,
/// swap and ledger entries), and taken by the master before it re-executes
/// itself, so that a new image never finds a step half done. The upgrade
/// thread lets go while it waits (between polls, and for a verdict).
///
/// It also counts the installs reported to the loop and not yet taken by
/// it: a re-exec made with one still in the loop's queue would lose it (the
/// release swapped in, never started nor judged).
#[derive(Debug, Clone, Default)]
pub(crate) struct Gate {
    lock: Arc<Mutex<()>>,
    installs: Arc<AtomicUsize>,
}

impl Gate {
    /// Waits for the gate, for as long as the step in progress takes.
    pub(super) fn enter(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An install is about to be reported to the loop.
    pub(super) fn install_reported(&self) {
        self.installs.fetch_add(1, Ordering::SeqCst);
    }

    /// The loop took a reported install.
    pub(crate) fn install_taken(&self) {
        let _ = self
            .installs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// Whether an install was reported that the loop has not taken yet.
    pub(crate) fn install_in_flight(&self) -> bool {
        self.installs.load(Ordering::SeqCst) > 0
    }

    /// Takes the gate if it is free within `within` (checked every 10 ms);
    /// `None` when the upgrade thread is still busy then.
    pub(crate) fn close(&self, within: Duration) -> Option<MutexGuard<'_, ()>> {
        let deadline = Instant::now() + within;
        loop {
            match self.lock.try_lock() {
                Ok(guard) => return Some(guard),
                Err(TryLockError::Poisoned(e)) => return Some(e.into_inner()),
                Err(TryLockError::WouldBlock) if Instant::now() >= deadline => return None,
                Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

/// The upgrade thread's line to the master's loop, handed to it by the
/// master: sends a [`Report`], false once the loop is gone.
pub(crate) struct ToSupervisor(Box<dyn Fn(Report) -> bool + Send>);

impl ToSupervisor {
    /// A line that delivers reports with `send`.
    pub fn new(send: impl Fn(Report) -> bool + Send + 'static) -> Self {
        ToSupervisor(Box::new(send))
    }

    pub(super) fn send(&self, report: Report) -> bool {
        (self.0)(report)
    }
}
