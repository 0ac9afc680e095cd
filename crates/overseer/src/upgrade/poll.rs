//! The upgrade thread's loop: poll the fetcher, read the ledger again first,
//! skip releases turned down before, hand a release to the pipeline and its
//! outcome to the supervisor, retry passing failures with a growing wait and
//! log them once while they repeat.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Duration;

use super::ledger::LedgerError;
use super::pipeline::Step;
use super::probation::{Installed, Verdict};
use super::rejection::Rejection;
use super::report::Pending;
use super::report::Report;
use super::upgrader::Upgrader;
use super::verify;
use crate::fetcher::{Poll, Release, Settled};
use crate::log;

/// The longest wait before retrying a release that failed for a passing
/// reason (unless the poll interval is longer).
const MAX_RETRY_WAIT: Duration = Duration::from_secs(300);

/// A panic's message, as `panic!` was given it.
pub(super) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// What makes two passing failures "the same" for the log: the message
/// without its numbers and without the random part of staging file names.
fn failure_key(reason: &str) -> String {
    let mut key = String::with_capacity(reason.len());
    let mut rest = reason;
    while let Some(at) = rest.find(".overseer-") {
        let (head, tail) = rest.split_at(at + ".overseer-".len());
        key.push_str(head);
        let end = tail
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    key.push_str(rest);
    key.retain(|c| !c.is_ascii_digit());
    key
}

impl Upgrader {
    pub(super) fn poll_loop(&mut self, fetcher: &mut dyn crate::fetcher::Fetcher) {
        // Releases that failed for a passing reason in a row: each retry
        // (a full download) waits twice as long as the one before.
        let mut retries: u32 = 0;
        loop {
            let interval = fetcher.interval().max(self.config.min_fetch_interval);
            let wait = if retries == 0 {
                interval
            } else {
                interval
                    .saturating_mul(1 << retries.min(16))
                    .min(MAX_RETRY_WAIT.max(interval))
            };
            // Sleeps the whole interval, unless the master stops meanwhile.
            if self.stopping.wait_timeout(wait) {
                return;
            }
            // No release is judged without the ledger's floor and memory.
            if !self.read_ledger() {
                continue;
            }
            if std::mem::take(&mut self.offer_again) {
                fetcher.retry();
            }
            let mut poll = Poll {
                installed: self.version.as_ref().map(|v| v.to_string()),
                serial: self.known.serial,
                rollout: self.rollout.clone(),
            };
            let fetched = panic::catch_unwind(AssertUnwindSafe(|| fetcher.poll(&mut poll)));
            self.polled(poll);
            let release = match fetched {
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) => {
                    retries = 0;
                    continue;
                }
                Ok(Err(e)) => {
                    self.passing_failure(format!("fetching failed: {e}"));
                    continue;
                }
                Err(p) => {
                    self.passing_failure(format!(
                        "fetching failed: the fetcher panicked: {}",
                        panic_message(&*p)
                    ));
                    continue;
                }
            };
            let carry_on = self.consider(release, fetcher);
            if let Some(settled) = self.settled.take() {
                fetcher.settled(&settled);
            }
            // A download and its checks leave freed buffers behind.
            crate::sys::release_free_memory();
            if !carry_on {
                return;
            }
            if std::mem::take(&mut self.retry_wanted) {
                fetcher.retry();
                retries = retries.saturating_add(1);
            } else {
                retries = 0;
            }
        }
    }

    /// Takes what the source said at a poll: a higher manifest serial goes
    /// to the ledger (so a replayed older manifest is refused after a
    /// restart too), the rollout state to the master's status.
    fn polled(&mut self, poll: Poll) {
        if poll.serial > self.known.serial {
            let serial = poll.serial;
            if let Err(e) = self.update_ledger(|e| e.serial = e.serial.max(serial)) {
                log::warning!("cannot record the fleet manifest's serial: {e}");
            }
        }
        if poll.rollout != self.rollout {
            self.rollout = poll.rollout.clone();
            let _ = self.supervisor.send(Report::Rollout(poll.rollout));
        }
    }

    /// Reads the ledger again (an operator may have repaired it or reset
    /// the floor); false, said once while it lasts, when it cannot be read.
    fn read_ledger(&mut self) -> bool {
        match self.ledger.read() {
            Ok(entries) => {
                if !std::mem::replace(&mut self.ledger_readable, true) {
                    log::info!(
                        "{} can be read now; upgrades resume",
                        self.ledger.path.display()
                    );
                    self.last_failure = None;
                    // What it holds now is the starting point, not a change.
                    self.known = entries;
                } else {
                    self.adopt(entries);
                }
                true
            }
            Err(e) => {
                self.ledger_unreadable(&e);
                false
            }
        }
    }

    /// Says (once while it lasts) that upgrades wait for the ledger.
    pub(super) fn ledger_unreadable(&mut self, e: &LedgerError) {
        self.ledger_readable = false;
        self.passing_failure(format!(
            "upgrades are paused: {e}; repair or remove it (removing it forgets the highest signed version seen and the releases that failed)"
        ));
    }

    /// Logs a passing failure, once while it repeats.
    fn passing_failure(&mut self, reason: String) {
        let key = failure_key(&reason);
        if self.last_failure.as_deref() != Some(key.as_str()) {
            log::error!("{reason}; trying again at the next poll");
            let _ = self.supervisor.send(Report::Rejected(reason.clone()));
            self.last_failure = Some(key);
        } else {
            log::debug!("{reason} (again)");
        }
    }

    /// Waits for the master's verdict on an installed release, then
    /// records it in the ledger and tells the master it is recorded; false
    /// once the master is gone.
    pub(super) fn settle(&mut self, pending: Pending) -> bool {
        let Pending {
            sha256,
            version,
            tag,
            verdict,
        } = pending;
        let verdict = verdict.recv();
        let gate = self.gate.clone();
        let _busy = gate.enter();
        if let Ok(v) = &verdict {
            let mut settled = Settled::default_for(tag.clone(), version.clone());
            if let Verdict::RolledBack(reason) = v {
                settled.rolled_back = Some(reason.clone());
            }
            self.settled = Some(settled);
        }
        match verdict {
            Ok(Verdict::Kept) => {
                if let Some(v) = version.as_deref().and_then(verify::parse_version) {
                    self.version = Some(v);
                }
                self.remember_installed(sha256, tag);
                self.supervisor.send(Report::Kept)
            }
            Ok(Verdict::RolledBack(reason)) => {
                log::debug!("remembering release {sha256} as bad: {reason}");
                self.remember_bad(&sha256, tag.as_deref());
                true
            }
            Err(_) => false,
        }
    }

    /// Runs the pipeline on one release; false once the master is gone.
    fn consider(&mut self, release: Release, fetcher: &mut dyn crate::fetcher::Fetcher) -> bool {
        let source = release.source.clone();
        let tag = release.tag.clone();
        if let Some(t) = &tag {
            if self.rejected_tags.contains(t) {
                log::debug!("{source}: release {t} was rejected before; skipped");
                return true;
            }
        }
        let named = describe_release(&release);
        // Held while files change: a re-exec waits for it (see `Gate`).
        let gate = self.gate.clone();
        let busy = gate.enter();
        // A panic is a rejection of the release: unwinding has dropped (and
        // so removed) its staging files, and what is left of any is removed.
        let outcome =
            panic::catch_unwind(AssertUnwindSafe(|| self.pipeline(release, &named, fetcher)))
                .unwrap_or_else(|p| {
                    self.target.remove_stale_staging();
                    Err(Rejection::release(format!(
                        "the upgrade pipeline panicked: {}",
                        panic_message(&*p)
                    )))
                });
        match outcome {
            Ok(Step::Same) => {
                self.last_failure = None;
                log::debug!("{source}: same binary as the running one; nothing to do");
                let current = self.binary.current();
                self.remember_installed(current, tag);
            }
            Ok(Step::KnownBad(hash)) => {
                log::debug!("{source}: release {hash} failed before; skipped");
                if let Some(t) = tag {
                    self.rejected_tags.insert(t);
                }
            }
            Ok(Step::Installed(installed)) => {
                self.last_failure = None;
                let (reply_tx, reply_rx) = mpsc::channel();
                let pending = Pending {
                    sha256: installed.sha256.clone(),
                    version: installed.version.clone(),
                    tag: installed.tag.clone(),
                    verdict: reply_rx,
                };
                let report = Report::Installed(Installed {
                    reply: reply_tx,
                    ..installed
                });
                self.gate.install_reported();
                if !self.supervisor.send(report) {
                    return false;
                }
                // Probation can be long: the master may re-execute meanwhile.
                drop(busy);
                return self.settle(pending);
            }
            Err(r) if r.of_release => {
                self.last_failure = None;
                if r.below_floor {
                    if let Some(t) = &tag {
                        self.below_floor_tags.insert(t.clone());
                    }
                }
                log::error!(
                    "release {named} rejected: {}; the running binary is unchanged",
                    r.reason
                );
                let _ = self
                    .supervisor
                    .send(Report::Rejected(format!("{named} rejected: {}", r.reason)));
                if let Some(t) = tag {
                    self.rejected_tags.insert(t);
                }
            }
            Err(r) => {
                self.retry_wanted = true;
                self.passing_failure(format!(
                    "release {named} not installed: {}; the running binary is unchanged",
                    r.reason
                ))
            }
        }
        true
    }
}

fn describe_release(r: &Release) -> String {
    match (&r.version, &r.tag) {
        (Some(v), _) => format!("{v} from {}", r.source),
        (None, Some(t)) => format!("{} ({t})", r.source),
        (None, None) => r.source.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::failure_key;

    #[test]
    fn repeated_failures_differing_in_staging_names_and_numbers_are_the_same() {
        let a = "writing the staging file: No space left (os error 28) at path \"/d/.app.overseer-E9zTSf.staging\"";
        let b = "writing the staging file: No space left (os error 28) at path \"/d/.app.overseer-6l6YvU.staging\"";
        assert_eq!(failure_key(a), failure_key(b));
        assert_ne!(
            failure_key(a),
            failure_key("download truncated at 10 of 20 bytes")
        );
    }
}
