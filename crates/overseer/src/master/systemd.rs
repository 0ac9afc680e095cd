//! The master as a systemd service (docs/design.md, "Service managers and
//! containers"): what it tells the service manager over the manager's own
//! `NOTIFY_SOCKET`.
//!
//! The workers never talk to systemd: each has a private notify socket owned
//! by the master (and the master's `NOTIFY_SOCKET` is filtered from their
//! environment). The master speaks for them, from its own pid, so a unit
//! needs only `NotifyAccess=main`:
//!
//! | when | datagram |
//! |---|---|
//! | the first worker is ready | `READY=1`, `STATUS=serving version 1.2.0 (worker 1, pid 4242)` |
//! | a handover starts | `RELOADING=1`, `MONOTONIC_USEC=…` |
//! | the new worker is ready | `READY=1`, `STATUS=serving …` |
//! | the handover failed | `READY=1`, `STATUS=restart failed: …; worker N keeps serving` |
//! | the serving worker sends `STATUS=…` | the same `STATUS=…` |
//! | the master begins to stop | `STOPPING=1`, `STATUS=stopping` |
//! | every `WATCHDOG_USEC / 2` | `WATCHDOG=1` |
//!
//! `RELOADING=1` … `READY=1` is what `Type=notify-reload` expects, so
//! `systemctl reload` (with `ReloadSignal=` set to the restart signal) waits
//! for the handover and reports its end. A failed handover still ends with
//! `READY=1`: the service is up, served by the old worker, and systemd must
//! leave the reloading state.
//!
//! The keep-alives are sent from the supervisor's loop, not from a thread of
//! their own, so a loop that hangs stops them and systemd's watchdog fires.
//! Without `NOTIFY_SOCKET` every method here does nothing; a failure to send
//! is logged once, at debug level, and never stops the master.

use std::time::{Duration, Instant};

use nix::time::{clock_gettime, ClockId};

use super::carried;
use crate::log;
use crate::notify::Notifier;

/// The service manager's end of the conversation, if there is one.
#[derive(Debug)]
pub(crate) struct Systemd {
    notifier: Option<Notifier>,
    /// Time between two keep-alives (half of `WATCHDOG_USEC`).
    watchdog: Option<Duration>,
    next_keep_alive: Option<Instant>,
    /// `READY=1` was sent once: later starts are reloads.
    ready_sent: bool,
    /// `RELOADING=1` was sent and its `READY=1` not yet.
    reloading: bool,
    stopping_sent: bool,
    /// The worker being started and what it runs, for its `STATUS=` line.
    starting: Option<(u64, String)>,
    /// The worker whose own `STATUS=` lines are relayed.
    serving: Option<u64>,
    send_failed: bool,
}

impl Systemd {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the
    /// master's environment.
    pub fn from_env() -> Systemd {
        let notifier = Notifier::from_env();
        let watchdog = notifier.as_ref().and_then(|_| {
            watchdog_interval(
                std::env::var("WATCHDOG_USEC").ok().as_deref(),
                std::env::var("WATCHDOG_PID").ok().as_deref(),
                std::process::id(),
            )
        });
        if let Some(interval) = watchdog {
            log::debug!("systemd watchdog: a keep-alive every {interval:?}");
        }
        Systemd {
            notifier,
            watchdog,
            next_keep_alive: watchdog.map(|_| Instant::now()),
            ready_sent: false,
            reloading: false,
            stopping_sent: false,
            starting: None,
            serving: None,
            send_failed: false,
        }
    }

    /// A worker is about to be started; `release` says what it runs
    /// (`version 1.2.0`, `binary 0123456789ab`). Once the service was
    /// ready, this starts a reload (sent once until it ends).
    pub fn starting(&mut self, number: u64, release: String) {
        self.starting = Some((number, release));
        if self.ready_sent && !self.reloading && !self.stopping_sent {
            self.reloading = true;
            self.send(&reloading());
        }
    }

    /// What a re-exec carries of the conversation.
    pub fn carry(&self) -> carried::SystemdState {
        carried::SystemdState {
            ready_sent: self.ready_sent,
            serving: self.serving,
        }
    }

    /// Goes on with a conversation a previous image of this master carried.
    pub fn adopt(&mut self, state: &carried::SystemdState) {
        self.ready_sent = state.ready_sent;
        self.serving = state.serving;
    }

    /// The master is about to re-execute itself: a reload, ended by
    /// [`Systemd::reexec_ended`] in whichever image runs then.
    pub fn reexec_begins(&mut self) {
        if self.ready_sent && !self.reloading && !self.stopping_sent {
            self.reloading = true;
            self.send(&reloading());
        }
    }

    /// A re-exec ended (done or not): the reload ends with `status`. Only
    /// the image that sent `READY=1` before says it again.
    pub fn reexec_ended(&mut self, status: &str) {
        self.reloading = false;
        if self.ready_sent && !self.stopping_sent {
            self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
        }
    }

    /// Worker `number` (pid `pid`) became the serving worker.
    pub fn ready(&mut self, number: u64, pid: i32) {
        let release = match self.starting.take() {
            Some((n, release)) if n == number => release,
            _ => "a new worker".to_string(),
        };
        self.serving = Some(number);
        self.reloading = false;
        self.ready_sent = true;
        if !self.stopping_sent {
            self.send(&format!(
                "READY=1\nSTATUS=serving {release} (worker {number}, pid {pid})"
            ));
        }
    }

    /// A handover failed and the old worker keeps serving: `why` becomes the
    /// status, and a reload in progress ends.
    pub fn restart_failed(&mut self, why: &str) {
        self.starting = None;
        if self.stopping_sent {
            return;
        }
        let ready = if std::mem::take(&mut self.reloading) {
            "READY=1\n"
        } else {
            ""
        };
        self.send(&format!("{ready}STATUS={}", one_line(why)));
    }

    /// Relays a `STATUS=` line sent by worker `number`, if it is the one serving.
    pub fn worker_status(&mut self, number: u64, status: &str) {
        if self.serving == Some(number) && !self.stopping_sent {
            self.send(&format!("STATUS={}", one_line(status)));
        }
    }

    /// The master is on its way out (sent once).
    pub fn stopping(&mut self) {
        if !std::mem::replace(&mut self.stopping_sent, true) {
            self.reloading = false;
            self.send("STOPPING=1\nSTATUS=stopping");
        }
    }

    /// When the next keep-alive is due, for the loop's wake-up time.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_keep_alive
    }

    /// Sends `WATCHDOG=1` if it is due. Called on every turn of the loop.
    pub fn keep_alive(&mut self) {
        let (Some(interval), Some(due)) = (self.watchdog, self.next_keep_alive) else {
            return;
        };
        let now = Instant::now();
        if now >= due {
            self.send("WATCHDOG=1");
            self.next_keep_alive = Some(now + interval);
        }
    }

    fn send(&mut self, message: &str) {
        let Some(notifier) = &self.notifier else {
            return;
        };
        if let Err(e) = notifier.send(message) {
            if !std::mem::replace(&mut self.send_failed, true) {
                log::debug!("cannot notify systemd (further failures not logged): {e}");
            }
        }
    }
}

/// `RELOADING=1` with the time it began, as systemd asks.
fn reloading() -> String {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(now) => format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1_000
        ),
        Err(_) => "RELOADING=1".to_string(),
    }
}

/// The keep-alive interval: half of `WATCHDOG_USEC`, when the watchdog is
/// meant for this process (`WATCHDOG_PID` unset or equal to `pid`).
fn watchdog_interval(usec: Option<&str>, watchdog_pid: Option<&str>, pid: u32) -> Option<Duration> {
    if let Some(p) = watchdog_pid.filter(|p| !p.is_empty()) {
        if p.trim().parse::<u32>().ok() != Some(pid) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// A status is one line of the datagram.
fn one_line(text: &str) -> String {
    text.replace('\n', " ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::notify::NotifyReceiver;

    #[test]
    fn watchdog_interval_is_half_the_timeout_and_only_for_this_pid() {
        let half = Some(Duration::from_millis(100));
        assert_eq!(watchdog_interval(Some("200000"), None, 42), half);
        assert_eq!(watchdog_interval(Some("200000"), Some("42"), 42), half);
        assert_eq!(watchdog_interval(Some("200000"), Some(""), 42), half);
        assert_eq!(watchdog_interval(Some("200000"), Some("43"), 42), None);
        assert_eq!(watchdog_interval(Some("200000"), Some("x"), 42), None);
        assert_eq!(watchdog_interval(None, Some("42"), 42), None);
        assert_eq!(watchdog_interval(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval(Some("-5"), None, 42), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 42), None);
        assert_eq!(
            watchdog_interval(Some("1"), None, 42),
            Some(Duration::from_millis(1))
        );
    }

    fn connected() -> (tempfile::TempDir, NotifyReceiver, Systemd) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("systemd.sock");
        let rx = NotifyReceiver::bind(&path).unwrap();
        let systemd = Systemd {
            notifier: Some(Notifier::to(path.to_string_lossy().into_owned())),
            watchdog: None,
            next_keep_alive: None,
            ready_sent: false,
            reloading: false,
            stopping_sent: false,
            starting: None,
            serving: None,
            send_failed: false,
        };
        (dir, rx, systemd)
    }

    fn received(rx: &NotifyReceiver) -> Vec<String> {
        std::iter::from_fn(|| rx.recv(Duration::from_millis(20)).unwrap()).collect()
    }

    #[test]
    fn a_handover_is_a_reload_and_a_failed_one_still_ends_it() {
        let (_dir, rx, mut sd) = connected();
        sd.starting(1, "version 1".into());
        sd.worker_status(1, "warming up");
        sd.ready(1, 100);
        sd.worker_status(1, "42 clients\nconnected");
        sd.worker_status(2, "not serving yet");
        let got = received(&rx);
        assert_eq!(
            got,
            [
                "READY=1\nSTATUS=serving version 1 (worker 1, pid 100)",
                "STATUS=42 clients connected"
            ]
        );
        sd.starting(2, "version 2".into());
        // A second start in the same reload (say, from a restored binary)
        // does not start another reload.
        sd.starting(3, "version 1".into());
        sd.restart_failed("restart failed: worker 3 exited; worker 1 keeps serving");
        sd.restart_failed("nothing to end");
        sd.starting(4, "version 2".into());
        sd.ready(4, 104);
        let got = received(&rx);
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(
            got[0].starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{got:?}"
        );
        assert_eq!(
            got[1],
            "READY=1\nSTATUS=restart failed: worker 3 exited; worker 1 keeps serving"
        );
        assert_eq!(got[2], "STATUS=nothing to end");
        assert!(
            got[3].starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{got:?}"
        );
        assert_eq!(
            got[4],
            "READY=1\nSTATUS=serving version 2 (worker 4, pid 104)"
        );
        sd.stopping();
        sd.stopping();
        sd.worker_status(4, "draining");
        sd.starting(5, "version 2".into());
        assert_eq!(received(&rx), ["STOPPING=1\nSTATUS=stopping"]);
    }

    #[test]
    fn keep_alives_follow_the_interval_and_nothing_is_sent_without_a_socket() {
        let (_dir, rx, mut sd) = connected();
        sd.watchdog = Some(Duration::from_secs(3600));
        sd.next_keep_alive = Some(Instant::now());
        sd.keep_alive();
        sd.keep_alive();
        assert_eq!(received(&rx), ["WATCHDOG=1"]);
        assert!(sd.next_deadline().unwrap() > Instant::now() + Duration::from_secs(3000));
        let mut silent = Systemd {
            notifier: None,
            ..sd
        };
        silent.stopping();
        silent.keep_alive();
        assert!(received(&rx).is_empty());
    }
}
