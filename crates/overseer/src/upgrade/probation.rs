//! Probation: the first worker started from a release just installed decides
//! whether it stays.
//!
//! The pipeline hands the supervisor an [`Installed`] release and waits for
//! its [`Verdict`]. The supervisor either keeps it at once (no restart is
//! made, or the master is stopping) or starts the next worker from it, on
//! [`Probation`]; it then says only what happened to that worker: ready,
//! passed (it ran `probation` after becoming ready, or a newer worker
//! replaced it), or failed (it could not start, was not ready in time, or
//! ended with a failure). A failure restores the previous binary here, and
//! the pipeline remembers the release as bad.

use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::swap::{self, Target};
use crate::log;

/// A release installed at the binary path, waiting for its first worker.
#[derive(Debug)]
pub(crate) struct Installed {
    pub target: Target,
    pub sha256: String,
    pub version: Option<String>,
    /// The release's tag at its source, if it has one.
    pub tag: Option<String>,
    /// How its bytes came, when not downloaded whole (`as a delta: …`);
    /// not carried across a re-exec.
    pub via: Option<String>,
    pub reply: Sender<Verdict>,
}

/// The supervisor's answer about an installed release.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Its worker passed probation (or no restart was made).
    Kept,
    /// Its worker failed; the previous binary is back in place.
    RolledBack(String),
}

/// How a release is named in the log and the status: `version 1.4.0`, or
/// `release 0123456789ab` (its hash's prefix) when it has no version.
pub(crate) fn release_name(version: Option<&str>, sha256: &str) -> String {
    match version {
        Some(v) => format!("version {v}"),
        None => format!("release {}", sha256.get(..12).unwrap_or(sha256)),
    }
}

impl Installed {
    /// The release's name (see [`release_name`]).
    pub fn name(&self) -> String {
        release_name(self.version.as_deref(), &self.sha256)
    }

    /// The release stays without a probation: no restart was made for it,
    /// or the master is stopping.
    pub fn keep(self) {
        let _ = self.reply.send(Verdict::Kept);
    }

    /// Puts the release on probation: worker `worker`, the next one started,
    /// runs it, and must run `period` after becoming ready.
    pub fn on_probation(self, worker: u64, period: Duration) -> Probation {
        Probation {
            installed: self,
            worker,
            period,
            ready_at: None,
        }
    }
}

/// A release on probation, watched through its worker's start.
#[derive(Debug)]
pub(crate) struct Probation {
    installed: Installed,
    /// The number of the worker started from it.
    worker: u64,
    /// How long that worker must run after becoming ready.
    period: Duration,
    /// Set when that worker became ready; probation ends `period` later.
    ready_at: Option<Instant>,
}

impl Probation {
    /// Whether worker `number` is the one on probation.
    pub fn is_worker(&self, number: u64) -> bool {
        self.worker == number
    }

    /// The release's version, if it has one.
    pub fn version(&self) -> Option<&str> {
        self.installed.version.as_deref()
    }

    /// How long its worker must run after becoming ready.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The release on probation.
    pub fn installed(&self) -> &Installed {
        &self.installed
    }

    /// The number of the worker started from it.
    pub fn worker(&self) -> u64 {
        self.worker
    }

    /// When its worker became ready, if it did.
    pub fn ready_at(&self) -> Option<Instant> {
        self.ready_at
    }

    /// A probation carried across a master's re-exec: `installed` with its
    /// worker, period and, if it was ready, the time it became ready.
    pub fn resume(
        installed: Installed,
        worker: u64,
        period: Duration,
        ready_at: Option<Instant>,
    ) -> Probation {
        Probation {
            installed,
            worker,
            period,
            ready_at,
        }
    }

    /// Its worker became ready at `now`: the probation period starts.
    pub fn worker_ready(&mut self, now: Instant) {
        self.ready_at = Some(now);
    }

    /// When the probation is passed, once its worker is ready.
    pub fn ends_at(&self) -> Option<Instant> {
        self.ready_at.map(|t| t + self.period)
    }

    /// Its worker passed (it ran the whole period, or a newer worker
    /// replaced it first): the release stays. Returns the line for the
    /// status.
    pub fn passed(self) -> String {
        let what = format!("{} passed probation", self.installed.name());
        log::info!("{what}");
        self.installed.keep();
        what
    }

    /// Its worker failed for `reason`: the previous binary is restored, and
    /// the pipeline told to remember the release as bad. Returns the line
    /// for the status.
    pub fn failed(self, reason: &str) -> String {
        let Installed { target, reply, .. } = &self.installed;
        let what = self.installed.name();
        match swap::restore(target) {
            Ok(()) => log::error!(
                "upgrade to {what} rolled back: {reason}; the previous binary is back at {}",
                target.path.display()
            ),
            Err(e) => log::error!(
                "upgrade to {what} failed ({reason}) and the previous binary cannot be restored from {}: {e}",
                target.rollback_path().display()
            ),
        }
        let _ = reply.send(Verdict::RolledBack(reason.to_string()));
        format!("{what} rolled back: {reason}")
    }

    /// The master is stopping before the probation ended: that is not the
    /// release's fault, and it stays installed.
    pub fn abandon(self) {
        self.installed.keep();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn installed(version: Option<&str>) -> (Installed, mpsc::Receiver<Verdict>) {
        let target = Target {
            path: "/nonexistent/app".into(),
            dir: "/nonexistent".into(),
            name: "app".into(),
        };
        installed_at(target, version)
    }

    fn installed_at(target: Target, version: Option<&str>) -> (Installed, mpsc::Receiver<Verdict>) {
        let (reply, verdict) = mpsc::channel();
        let installed = Installed {
            target,
            sha256: "0123456789abcdef".repeat(4),
            version: version.map(str::to_string),
            tag: None,
            via: None,
            reply,
        };
        (installed, verdict)
    }

    #[test]
    fn a_release_is_named_by_its_version_else_its_hash() {
        assert_eq!(release_name(Some("1.4.0"), "00"), "version 1.4.0");
        assert_eq!(
            release_name(None, &"0123456789abcdef".repeat(4)),
            "release 0123456789ab"
        );
        assert_eq!(release_name(None, "0123"), "release 0123");
    }

    #[test]
    fn probation_ends_a_period_after_its_worker_is_ready() {
        let (installed, verdict) = installed(Some("2.0.0"));
        let mut p = installed.on_probation(7, Duration::from_secs(10));
        assert!(p.is_worker(7) && !p.is_worker(6));
        assert_eq!(p.ends_at(), None);
        let now = Instant::now();
        p.worker_ready(now);
        assert_eq!(p.ends_at(), Some(now + Duration::from_secs(10)));
        assert_eq!(p.passed(), "version 2.0.0 passed probation");
        assert!(matches!(verdict.try_recv(), Ok(Verdict::Kept)));
    }

    #[test]
    fn a_failed_probation_restores_the_previous_binary_and_says_why() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("app");
        std::fs::write(&path, "new").unwrap();
        let target = Target::resolve(&path).unwrap();
        std::fs::write(target.rollback_path(), "previous").unwrap();
        let (installed, verdict) = installed_at(target, None);
        let p = installed.on_probation(3, Duration::from_secs(1));
        assert_eq!(
            p.failed("its worker 3 exited"),
            "release 0123456789ab rolled back: its worker 3 exited"
        );
        match verdict.try_recv() {
            Ok(Verdict::RolledBack(reason)) => assert_eq!(reason, "its worker 3 exited"),
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "previous");
    }

    #[test]
    fn an_abandoned_probation_keeps_the_release() {
        let (installed, verdict) = installed(None);
        installed.on_probation(1, Duration::from_secs(1)).abandon();
        assert!(matches!(verdict.try_recv(), Ok(Verdict::Kept)));
    }
}
