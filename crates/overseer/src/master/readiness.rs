//! Readiness for programs that cannot send `READY=1` themselves:
//! [`Readiness::Alive`] and [`Readiness::Command`].
//!
//! When such a worker is spawned, a small thread waits (or probes) and then
//! delivers exactly what the worker's own sd_notify `READY=1` would: an
//! `Event::Notify` for that worker's number. The supervisor's ready logic
//! does the rest, and it already ignores a stale number (a worker that died,
//! was killed at `ready_timeout`, or became ready by itself meanwhile). The
//! thread ends when the worker is gone (its `Worker` dropped), once it has
//! reported, or at `ready_timeout`, whichever comes first.
//!
//! Probe commands are children of the master like the sanity check: they are
//! registered in [`crate::child_registry`] so that a master running as PID 1, which
//! reaps every child with `waitpid(-1)`, keeps their status instead of losing
//! it; every probe is waited for, killed first if it overruns.

use std::ffi::OsString;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::child::Worker;
use super::event::Event;
use crate::child_registry;
use crate::config::{Probe, Readiness};
use crate::log;
use crate::protocol::{LISTEN_FDNAMES, LISTEN_FDS, LISTEN_PID, OVERSEER_WORKER};
use crate::withheld::Withheld;

/// The probe's environment variable holding the new worker's pid.
pub(crate) const OVERSEER_WORKER_PID: &str = "OVERSEER_WORKER_PID";

/// How often the waiting thread looks whether its worker is gone.
const TICK: Duration = Duration::from_millis(20);

/// Starts watching a just-spawned worker, when `readiness` needs a watcher.
pub(crate) fn watch(
    readiness: &Readiness,
    worker: &Worker,
    ready_timeout: Duration,
    tx: &Sender<Event>,
    withheld: &Withheld,
) {
    let watcher = Watcher {
        number: worker.number,
        pid: worker.pid.as_raw(),
        gone: worker.gone_flag(),
        deadline: Instant::now() + ready_timeout,
        tx: tx.clone(),
        withheld: withheld.clone(),
    };
    let run: Box<dyn FnOnce(Watcher) + Send> = match readiness {
        Readiness::Alive(d) => {
            let d = *d;
            Box::new(move |w| w.alive(d))
        }
        Readiness::Command(probe) => {
            let probe = probe.clone();
            Box::new(move |w| w.probe(&probe))
        }
        _ => return,
    };
    let number = worker.number;
    let spawned = std::thread::Builder::new()
        .name(format!("overseer-ready-{number}"))
        .spawn(move || run(watcher));
    if let Err(e) = spawned {
        log::error!("cannot watch worker {number}'s readiness ({e}); it will not become ready");
    }
}

struct Watcher {
    number: u64,
    pid: i32,
    /// Set once the supervisor dropped the worker (reaped).
    gone: Arc<AtomicBool>,
    deadline: Instant,
    tx: Sender<Event>,
    /// Kept from the probe's environment.
    withheld: Withheld,
}

impl Watcher {
    fn gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst) || Instant::now() >= self.deadline
    }

    /// Sleeps up to `d`; false if the worker went away (or time ran out) meanwhile.
    fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            if self.gone() {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(TICK));
        }
    }

    fn ready(&self, why: &str) {
        log::debug!("worker {} counts as ready: {why}", self.number);
        let _ = self.tx.send(Event::Notify {
            worker: self.number,
            message: "READY=1".into(),
        });
    }

    fn alive(self, d: Duration) {
        if self.sleep(d) {
            self.ready(&format!("alive for {d:?}"));
        }
    }

    fn probe(self, probe: &Probe) {
        let mut last: Option<String> = None;
        let mut attempts = 0u64;
        while !self.gone() {
            attempts += 1;
            match self.attempt(probe) {
                Attempt::Passed => {
                    self.ready(&format!("the readiness probe passed (attempt {attempts})"));
                    return;
                }
                Attempt::Failed(how) => {
                    if last.as_deref() != Some(how.as_str()) {
                        log::debug!("worker {} readiness probe: {how}", self.number);
                    }
                    last = Some(how);
                }
                Attempt::Abandoned => break,
            }
            if !self.sleep(probe.interval) {
                break;
            }
        }
        if !self.gone.load(Ordering::SeqCst) {
            if let Some(how) = last {
                log::warning!(
                    "worker {}: the readiness probe never passed ({attempts} attempts; last: {how})",
                    self.number
                );
            }
        }
    }

    fn attempt(&self, probe: &Probe) -> Attempt {
        let pid = self.pid.to_string();
        let number = self.number.to_string();
        let substitute = |a: &OsString| -> OsString {
            match a.to_str() {
                Some(s) if s.contains('{') => {
                    s.replace("{pid}", &pid).replace("{worker}", &number).into()
                }
                _ => a.clone(),
            }
        };
        let mut cmd = Command::new(&probe.program);
        cmd.args(probe.args.iter().map(substitute))
            .env(OVERSEER_WORKER_PID, &pid)
            .env(OVERSEER_WORKER, &number)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for var in [
            crate::notify::NOTIFY_SOCKET,
            LISTEN_FDS,
            LISTEN_PID,
            LISTEN_FDNAMES,
        ] {
            cmd.env_remove(var);
        }
        self.withheld.remove_from(&mut cmd);
        let mut child = match child_registry::spawn(&mut cmd) {
            Ok(c) => c,
            Err(e) => {
                return Attempt::Failed(format!(
                    "cannot run {}: {e}",
                    probe.program.to_string_lossy()
                ))
            }
        };
        let child_pid = child.id() as i32;
        let until = (Instant::now() + probe.attempt_timeout).min(self.deadline);
        let result = loop {
            if let Some(status) = child_registry::try_wait(&mut child, child_pid) {
                break match status {
                    Some(0) => Attempt::Passed,
                    Some(code) if code > 0 => Attempt::Failed(format!("exit status {code}")),
                    Some(code) => Attempt::Failed(format!("killed by signal {}", -code)),
                    None => Attempt::Failed("ended in an unknown way".into()),
                };
            }
            let gone = self.gone.load(Ordering::SeqCst);
            if gone || Instant::now() >= until {
                let _ = child.kill();
                let _ = child_registry::wait(&mut child, child_pid);
                break if gone || Instant::now() >= self.deadline {
                    Attempt::Abandoned
                } else {
                    Attempt::Failed(format!(
                        "still running after {:?}: killed",
                        probe.attempt_timeout
                    ))
                };
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        child_registry::forget(child_pid);
        result
    }
}

enum Attempt {
    Passed,
    Failed(String),
    /// The worker is gone or out of time: stop probing.
    Abandoned,
}
