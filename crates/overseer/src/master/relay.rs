//! A worker's notify relay: a thread per worker reading the worker's private
//! notify socket and passing its datagrams to the master's loop, within a
//! budget.
//!
//! A worker is the internet-facing program, possibly buggy or compromised,
//! and whatever it sends must not grow the master without limit. A datagram
//! is read into a buffer of [`MAX_DATAGRAM`](crate::notify::MAX_DATAGRAM)
//! bytes (the kernel cuts off the rest of a longer one; the kernel's own
//! queue of unread datagrams is bounded by the socket's buffer), and each worker may pass [`RATE`] datagrams a
//! second to the loop, in bursts of up to [`BURST`] (a token bucket). Past
//! that, datagrams are dropped and counted, with a warning once per burst
//! (a burst ends when the bucket is full again, and its count is logged
//! then), and what the loop acts on is kept from them, coalesced, to pass as
//! soon as the budget allows: `READY=1`, a restart request
//! (`OVERSEER_RESTART=1`) and the latest `STATUS=`. So the queue into the
//! loop holds at most a burst and a trickle per worker, and a flood can
//! neither hide a worker's readiness or its restart request nor leave a
//! stale status behind.
//!
//! A well-behaved worker sends `READY=1` once and at most a few `STATUS=`
//! lines a second, far below the budget: nothing it sends is ever held back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::event::Event;
use crate::error::{Error, Result};
use crate::log;
use crate::notify::{self, NotifyReceiver};
use crate::protocol::NOTIFY_RESTART;

/// Datagrams a worker may pass to the loop per second, on average.
pub(crate) const RATE: u32 = 50;
/// Datagrams a worker may pass at once, after a quiet time.
pub(crate) const BURST: u32 = 100;

/// How long an idle relay waits in one go: the worker's `Drop` closes the
/// socket to end the wait, so this is only a safety net.
const IDLE_WAIT: Duration = Duration::from_secs(30);

/// Starts the thread forwarding worker `number`'s notify datagrams to the
/// master's loop until `stop` is set (or the socket closed).
pub(crate) fn start(
    receiver: NotifyReceiver,
    number: u64,
    stop: Arc<AtomicBool>,
    tx: Sender<Event>,
) -> Result<()> {
    std::thread::Builder::new()
        .name(format!("overseer-notify-{number}"))
        .spawn(move || {
            let mut limiter = Limiter::new(Instant::now());
            let send = |step: Step| -> bool {
                match step.note {
                    Some(Note::Flooding) => log::warning!(
                        "worker {number} sends notify messages faster than {RATE} a second: the excess is dropped (its latest READY, STATUS and restart request are kept)"
                    ),
                    Some(Note::Calm(dropped)) => log::info!(
                        "worker {number}: {dropped} notify messages were dropped in that burst"
                    ),
                    None => {}
                }
                match step.forward {
                    Some(message) => tx
                        .send(Event::Notify {
                            worker: number,
                            message,
                        })
                        .is_ok(),
                    None => true,
                }
            };
            while !stop.load(Ordering::SeqCst) {
                let now = Instant::now();
                if !send(limiter.tick(now)) {
                    return;
                }
                match receiver.recv(limiter.wait(now)) {
                    Ok(Some(message)) => {
                        if !send(limiter.message(message, Instant::now())) {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(250)),
                }
            }
        })
        .map_err(|e| Error::io("starting a notify thread", e))?;
    Ok(())
}

/// What to do after a datagram or a tick.
#[derive(Debug, Default, PartialEq, Eq)]
struct Step {
    /// A message for the loop.
    forward: Option<String>,
    /// Something to log.
    note: Option<Note>,
}

#[derive(Debug, PartialEq, Eq)]
enum Note {
    /// The first datagram of a burst over the budget was dropped.
    Flooding,
    /// The burst is over (the budget is whole again): this many were dropped.
    Calm(u64),
}

/// The relay's decisions, apart from the socket and the clock.
#[derive(Debug)]
struct Limiter {
    bucket: Bucket,
    kept: Kept,
    /// Datagrams dropped in the current burst.
    dropped: u64,
}

impl Limiter {
    fn new(now: Instant) -> Limiter {
        Limiter {
            bucket: Bucket::new(RATE, BURST, now),
            kept: Kept::default(),
            dropped: 0,
        }
    }

    /// A datagram from the worker: passed on (after what was kept from
    /// earlier ones, in one message) if the budget allows, else dropped with
    /// what matters of it kept.
    fn message(&mut self, message: String, now: Instant) -> Step {
        if self.bucket.take(now) {
            let forward = match self.kept.take() {
                Some(kept) => format!("{kept}\n{message}"),
                None => message,
            };
            return Step {
                forward: Some(forward),
                note: None,
            };
        }
        self.kept.keep(&message);
        self.dropped += 1;
        Step {
            forward: None,
            note: (self.dropped == 1).then_some(Note::Flooding),
        }
    }

    /// Time passed: what was kept goes as soon as the budget allows, and a
    /// burst ends once the budget is whole again.
    fn tick(&mut self, now: Instant) -> Step {
        let mut step = Step::default();
        if !self.kept.is_empty() && self.bucket.take(now) {
            step.forward = self.kept.take();
        }
        if self.dropped > 0 && self.kept.is_empty() && self.bucket.is_full(now) {
            step.note = Some(Note::Calm(self.dropped));
            self.dropped = 0;
        }
        step
    }

    /// How long the relay may wait for the next datagram before a tick is due.
    fn wait(&self, now: Instant) -> Duration {
        let due = if !self.kept.is_empty() {
            self.bucket.until(1, now)
        } else if self.dropped > 0 {
            self.bucket.until(BURST, now)
        } else {
            IDLE_WAIT
        };
        // A zero timeout would mean "no timeout" to the socket.
        due.max(Duration::from_millis(1))
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` held.
#[derive(Debug)]
struct Bucket {
    rate: u32,
    burst: u32,
    /// Tokens held at `at` (fractions count: a token is a whole one).
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32, burst: u32, now: Instant) -> Bucket {
        Bucket {
            rate,
            burst,
            tokens: f64::from(burst),
            at: now,
        }
    }

    fn tokens(&self, now: Instant) -> f64 {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * f64::from(self.rate);
        (self.tokens + earned).min(f64::from(self.burst))
    }

    fn take(&mut self, now: Instant) -> bool {
        self.tokens = self.tokens(now);
        self.at = now.max(self.at);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, now: Instant) -> bool {
        self.tokens(now) >= f64::from(self.burst)
    }

    /// Time until `n` tokens are held.
    fn until(&self, n: u32, now: Instant) -> Duration {
        let missing = f64::from(n.min(self.burst)) - self.tokens(now);
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / f64::from(self.rate))
        }
    }
}

/// What the loop acts on, kept from dropped datagrams.
#[derive(Debug, Default)]
struct Kept {
    ready: bool,
    restart: bool,
    /// The latest status (one, however many were dropped).
    status: Option<String>,
}

impl Kept {
    fn keep(&mut self, message: &str) {
        for (key, value) in notify::parse(message) {
            match (key, value) {
                ("READY", "1") => self.ready = true,
                (NOTIFY_RESTART, "1") => self.restart = true,
                ("STATUS", status) => self.status = Some(status.to_string()),
                _ => {}
            }
        }
    }

    fn is_empty(&self) -> bool {
        !self.ready && !self.restart && self.status.is_none()
    }

    /// What was kept, as one datagram's lines, and forgets it.
    fn take(&mut self) -> Option<String> {
        let mut lines = Vec::new();
        if std::mem::take(&mut self.ready) {
            lines.push("READY=1".to_string());
        }
        if let Some(status) = self.status.take() {
            lines.push(format!("STATUS={status}"));
        }
        if std::mem::take(&mut self.restart) {
            lines.push(format!("{NOTIFY_RESTART}=1"));
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_well_behaved_worker_is_never_held_back() {
        let t0 = Instant::now();
        let mut l = Limiter::new(t0);
        let mut at = t0;
        let first = l.message("READY=1".into(), at);
        assert_eq!(first.forward.as_deref(), Some("READY=1"));
        // Ten statuses a second for a minute, and a restart request.
        for i in 0..600 {
            at += ms(100);
            let step = l.message(format!("STATUS=step {i}"), at);
            assert_eq!(step.forward, Some(format!("STATUS=step {i}")), "{i}");
            assert_eq!(step.note, None);
        }
        let step = l.message(format!("{NOTIFY_RESTART}=1"), at);
        assert_eq!(step.forward, Some(format!("{NOTIFY_RESTART}=1")));
        assert_eq!(l.dropped, 0);
    }

    #[test]
    fn a_flood_is_cut_to_the_budget_and_what_matters_is_kept() {
        let t0 = Instant::now();
        let mut l = Limiter::new(t0);
        let mut forwarded = Vec::new();
        let mut notes = Vec::new();
        // 10,000 datagrams within one second (a tenth of a millisecond
        // apart), READY=1 and a restart request among them.
        for i in 0..10_000u32 {
            let at = t0 + Duration::from_micros(u64::from(i) * 100);
            let message = match i {
                5_000 => "READY=1".to_string(),
                7_000 => format!("{NOTIFY_RESTART}=1"),
                _ => format!("STATUS=flood {i}"),
            };
            let step = l.message(message, at);
            forwarded.extend(step.forward);
            notes.extend(step.note);
        }
        let passed = forwarded.len() as u64;
        assert!(
            passed <= u64::from(BURST + RATE + 1),
            "{passed} passed in a second"
        );
        assert_eq!(notes, [Note::Flooding], "one warning for the burst");
        // What is still kept passes at the next token; then, once the
        // budget is whole again, the burst's count is told.
        let at = t0 + ms(1_000);
        let wait = l.wait(at);
        assert!(wait <= ms(1_000 / u64::from(RATE)) + ms(1), "{wait:?}");
        // (A millisecond more: the arithmetic is not exact to the nanosecond.)
        let at = at + wait + ms(1);
        let step = l.tick(at);
        forwarded.extend(step.forward);
        assert_eq!(step.note, None);
        let all = forwarded.join("\n");
        assert_eq!(all.matches("READY=1").count(), 1, "{all}");
        assert_eq!(all.matches(&format!("{NOTIFY_RESTART}=1")).count(), 1);
        let last_status = all.lines().rfind(|l| l.starts_with("STATUS="));
        assert_eq!(
            last_status,
            Some("STATUS=flood 9999"),
            "the latest status wins"
        );
        let later = at + l.wait(at) + ms(1);
        let step = l.tick(later);
        assert_eq!(step.forward, None);
        assert_eq!(step.note, Some(Note::Calm(10_000 - passed)));
        assert_eq!(l.wait(later), IDLE_WAIT);
    }

    #[test]
    fn kept_messages_go_before_the_next_one_passed() {
        let t0 = Instant::now();
        let mut l = Limiter::new(t0);
        for _ in 0..BURST {
            assert!(l.message("STATUS=x".into(), t0).forward.is_some());
        }
        assert_eq!(l.message("READY=1\nSTATUS=y".into(), t0).forward, None);
        let step = l.message("STATUS=z".into(), t0 + ms(1_000));
        assert_eq!(step.forward.as_deref(), Some("READY=1\nSTATUS=y\nSTATUS=z"));
    }

    #[test]
    fn the_bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 3, t0);
        assert!(b.take(t0) && b.take(t0) && b.take(t0));
        assert!(!b.take(t0));
        assert_eq!(b.until(1, t0), ms(100));
        assert!(b.take(t0 + ms(100)));
        assert!(!b.is_full(t0 + ms(200)));
        assert!(b.is_full(t0 + ms(10_000)));
        assert!(b.take(t0 + ms(10_000)) && b.take(t0 + ms(10_000)) && b.take(t0 + ms(10_000)));
        assert!(!b.take(t0 + ms(10_000)));
    }
}
