//! The handover state machine (docs/design.md, "Handover") and the exit-status
//! rules ("Signals and exit status"), as decisions only: what to do on a
//! restart trigger, on `READY=1`, on a worker's exit, on a deadline and on a
//! signal, for the serving, starting and draining workers and the release on
//! probation.
//!
//! [`Handover`] never calls `waitpid`, `kill` or `spawn` and never reads the
//! clock: the time comes with each call, exits come as [`Ended`], and every
//! effect (start a worker, signal one, tell control clients and the service
//! manager, settle a probation) goes through [`Effects`]. The supervisor
//! implements those over real processes; the tests below record them.

use std::time::{Duration, Instant};

use super::carried;
use super::signals;
use crate::log;
use crate::upgrade::probation::Probation;

/// The rules a handover follows, from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub terminate_timeout: Duration,
    pub ready_timeout: Duration,
    /// Command mode with `Readiness::Started`: ready as soon as spawned.
    pub ready_on_spawn: bool,
    /// A restart request stops the service instead.
    pub no_restart: bool,
    /// With connection steering: how long a replaced worker goes on
    /// accepting after new connections were steered away from it, before it
    /// is told to drain (and only once its accept queue is empty).
    pub settle: Option<Duration>,
}

/// How long a replaced worker's accept queue may stay non-empty after the
/// settle time before it is told to drain anyway (it is not accepting): the
/// supervisor then starts a worker on its socket to take what is left.
pub(crate) const QUEUE_WAIT: Duration = Duration::from_secs(2);
/// How often a non-empty accept queue is looked at again.
const QUEUE_POLL: Duration = Duration::from_millis(5);

/// How the master will end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Exit(i32),
    Signal(i32),
}

/// How a worker process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ended {
    /// As the log says it: `exit status 3`, `signal 9`.
    pub how: String,
    /// How the master ends if it ends with this worker.
    pub outcome: Outcome,
    /// Exited with status 0.
    pub clean: bool,
}

/// A worker just started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spawned {
    pub pid: i32,
    /// When it was started: its `ready_timeout` counts from here.
    pub at: Instant,
}

/// What the handover does to the world, in the order it decides it.
pub(crate) trait Effects {
    /// Starts worker `number`, which runs `probation`'s release when given.
    fn spawn(&mut self, number: u64, probation: Option<&Probation>) -> Result<Spawned, String>;
    /// Sends `signal` to the worker with `pid` (one already gone is no error).
    fn signal(&mut self, pid: i32, signal: i32);
    /// Worker `number` became ready `after` its start; `handover` when it
    /// replaced a serving worker.
    fn ready(&mut self, number: u64, pid: i32, after: Duration, handover: bool);
    /// A handover failed: worker `number` (`None`: one that could not be
    /// started) will not serve.
    fn handover_failed(&mut self, number: Option<u64>, reason: &str);
    /// A restart failed and the current worker keeps serving (for the
    /// service manager).
    fn restart_failed(&mut self, why: &str);
    /// The master is stopping.
    fn stopping(&mut self);
    /// The release's worker passed probation: the release stays.
    fn probation_passed(&mut self, probation: Probation);
    /// The release's worker failed probation for `reason`: the previous
    /// binary comes back.
    fn probation_failed(&mut self, probation: Probation, reason: &str);
    /// With connection steering: every new connection goes to worker
    /// `number` from now on.
    fn steer(&mut self, number: u64);
    /// With connection steering: the connections waiting in worker
    /// `number`'s accept queues.
    fn queued(&mut self, number: u64) -> u32;
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Started, not yet ready; its ready deadline applies.
    Starting,
    /// Ready and serving.
    Serving,
    /// Replaced (with steering, SIGTERM may still be due); its kill
    /// deadline applies once told to drain.
    Draining,
}

/// A replaced worker that is still accepting: SIGTERM is due at `at` if its
/// accept queue is empty by then, and at `give_up` in any case.
#[derive(Debug, Clone, Copy)]
struct TermDue {
    at: Instant,
    give_up: Instant,
}

/// A worker as the handover sees it.
#[derive(Debug)]
pub(crate) struct WorkerState {
    pub number: u64,
    pub pid: i32,
    pub phase: Phase,
    pub started: Instant,
    ready_deadline: Instant,
    kill_deadline: Option<Instant>,
    /// Steered away from, not yet told to drain.
    term_due: Option<TermDue>,
    /// Set once SIGKILL was sent, with the reason to report.
    killed: Option<String>,
    /// When a stop signal (SIGINT, SIGQUIT, SIGHUP) last reached the worker
    /// from the operator: an exit soon after is a stop, not a failure.
    stop_signalled: Option<Instant>,
}

impl WorkerState {
    fn new(number: u64, spawned: Spawned, ready_timeout: Duration) -> Self {
        WorkerState {
            number,
            pid: spawned.pid,
            phase: Phase::Starting,
            started: spawned.at,
            ready_deadline: spawned.at + ready_timeout,
            kill_deadline: None,
            term_due: None,
            killed: None,
            stop_signalled: None,
        }
    }

    /// Tells the worker to drain, with `timeout` before SIGKILL.
    fn drain(&mut self, timeout: Duration, now: Instant, fx: &mut dyn Effects) {
        self.phase = Phase::Draining;
        self.term_due = None;
        self.kill_deadline = Some(now + timeout);
        fx.signal(self.pid, libc::SIGTERM);
    }

    /// New connections go elsewhere now: the worker drains after `settle`,
    /// once it has accepted what was sent to it before.
    fn retire(&mut self, settle: Duration, now: Instant) {
        self.phase = Phase::Draining;
        self.term_due = Some(TermDue {
            at: now + settle,
            give_up: now + settle + QUEUE_WAIT,
        });
    }

    /// SIGKILLs the worker once, remembering why.
    fn kill(&mut self, reason: String, fx: &mut dyn Effects) {
        if self.killed.is_none() {
            fx.signal(self.pid, libc::SIGKILL);
            self.killed = Some(reason);
        }
    }

    /// Whether the operator asked the worker to stop (a stop signal within
    /// `grace` before `now`), so that its exit is a stop, whatever its status.
    fn asked_to_stop(&self, grace: Duration, now: Instant) -> bool {
        self.stop_signalled
            .is_some_and(|t| now.saturating_duration_since(t) <= grace)
    }

    /// The earliest time this worker needs attention.
    fn deadline(&self) -> Option<Instant> {
        if self.killed.is_some() {
            return None;
        }
        if let Some(due) = self.term_due {
            return Some(due.at);
        }
        match self.phase {
            Phase::Starting => Some(self.ready_deadline),
            _ => self.kill_deadline,
        }
    }
}

/// The workers, the queued restart, the release on probation and how the
/// master will end.
#[derive(Debug)]
pub(crate) struct Handover {
    rules: Rules,
    next_number: u64,
    serving: Option<WorkerState>,
    starting: Option<WorkerState>,
    draining: Vec<WorkerState>,
    restart_queued: bool,
    /// Set once the master is on its way out.
    stopping: bool,
    /// The status to exit with (unknown until the serving worker has ended).
    outcome: Option<Outcome>,
    probation: Option<Probation>,
}

impl Handover {
    /// No worker yet; the first is number 1.
    pub fn new(rules: Rules) -> Self {
        Handover {
            rules,
            next_number: 1,
            serving: None,
            starting: None,
            draining: Vec::new(),
            restart_queued: false,
            stopping: false,
            outcome: None,
            probation: None,
        }
    }

    /// The state to carry across a re-exec at `now`, each worker's notify
    /// socket found by `notify_fd`. The release on probation is carried
    /// apart (see [`Handover::probation`]).
    pub fn carry(
        &self,
        now: Instant,
        notify_fd: impl Fn(u64) -> Option<std::os::fd::RawFd>,
    ) -> carried::HandoverState {
        let worker = |w: &WorkerState| carried::WorkerState {
            number: w.number,
            pid: w.pid,
            phase: match w.phase {
                Phase::Starting => carried::PhaseState::Starting,
                Phase::Serving => carried::PhaseState::Serving,
                Phase::Draining => carried::PhaseState::Draining,
            },
            started_ago_ms: carried::ago_ms(now, w.started),
            ready_deadline_in_ms: carried::in_ms(now, w.ready_deadline),
            kill_deadline_in_ms: w.kill_deadline.map(|t| carried::in_ms(now, t)),
            killed: w.killed.clone(),
            stop_signalled_ago_ms: w.stop_signalled.map(|t| carried::ago_ms(now, t)),
            notify_fd: notify_fd(w.number),
        };
        carried::HandoverState {
            next_number: self.next_number,
            restart_queued: self.restart_queued,
            outcome: self.outcome.map(|o| match o {
                Outcome::Exit(c) => carried::OutcomeState::Exit(c),
                Outcome::Signal(s) => carried::OutcomeState::Signal(s),
            }),
            serving: self.serving.as_ref().map(worker),
            starting: self.starting.as_ref().map(worker),
            draining: self.draining.iter().map(worker).collect(),
        }
    }

    /// Takes over a carried handover at `now`, `gap_ms` after it was
    /// gathered, following `rules` (the new image's) from then on, with the
    /// release on `probation` if there was one.
    pub fn adopt(
        rules: Rules,
        state: &carried::HandoverState,
        probation: Option<Probation>,
        now: Instant,
        gap_ms: u64,
    ) -> Handover {
        let worker = |w: &carried::WorkerState| WorkerState {
            number: w.number,
            pid: w.pid,
            phase: match w.phase {
                carried::PhaseState::Starting => Phase::Starting,
                carried::PhaseState::Serving => Phase::Serving,
                carried::PhaseState::Draining => Phase::Draining,
            },
            started: carried::instant_ago(now, w.started_ago_ms, gap_ms),
            ready_deadline: carried::instant_in(now, w.ready_deadline_in_ms, gap_ms),
            kill_deadline: w
                .kill_deadline_in_ms
                .map(|ms| carried::instant_in(now, ms, gap_ms)),
            // A re-exec waits until no replaced worker waits for its
            // SIGTERM (steering), so none is carried.
            term_due: None,
            killed: w.killed.clone(),
            stop_signalled: w
                .stop_signalled_ago_ms
                .map(|ms| carried::instant_ago(now, ms, gap_ms)),
        };
        Handover {
            rules,
            next_number: state.next_number,
            serving: state.serving.as_ref().map(worker),
            starting: state.starting.as_ref().map(worker),
            draining: state.draining.iter().map(worker).collect(),
            restart_queued: state.restart_queued,
            stopping: false,
            outcome: state.outcome.map(|o| match o {
                carried::OutcomeState::Exit(c) => Outcome::Exit(c),
                carried::OutcomeState::Signal(s) => Outcome::Signal(s),
            }),
            probation,
        }
    }

    /// The release on probation, if any.
    pub fn probation(&self) -> Option<&Probation> {
        self.probation.as_ref()
    }

    /// Starts the first worker; false when it could not be started (the
    /// master then ends with [`Handover::outcome`]).
    pub fn start(&mut self, fx: &mut dyn Effects) -> bool {
        self.start_worker(fx)
    }

    /// Whether the master is on its way out.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// How the master ends, as far as known.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// How the master ends, once it is stopping and no worker is left.
    pub fn finished(&self) -> Option<Outcome> {
        (self.stopping && self.workers().next().is_none())
            .then(|| self.outcome.unwrap_or(Outcome::Exit(0)))
    }

    /// The worker serving now.
    pub fn serving(&self) -> Option<&WorkerState> {
        self.serving.as_ref()
    }

    /// The worker being started, until it is ready or gone.
    pub fn starting(&self) -> Option<&WorkerState> {
        self.starting.as_ref()
    }

    /// Whether worker `number` is still expected to accept connections:
    /// starting, serving, or replaced but not yet told to drain.
    pub fn accepting(&self, number: u64) -> bool {
        self.workers()
            .any(|w| w.number == number && (w.phase != Phase::Draining || w.term_due.is_some()))
    }

    /// Whether a replaced worker still waits for its SIGTERM (steering).
    pub fn retiring(&self) -> bool {
        self.draining.iter().any(|w| w.term_due.is_some())
    }

    /// The workers told to drain that have not ended yet.
    pub fn draining(&self) -> &[WorkerState] {
        &self.draining
    }

    /// Every worker still running.
    pub fn workers(&self) -> impl Iterator<Item = &WorkerState> {
        self.serving
            .iter()
            .chain(self.starting.iter())
            .chain(self.draining.iter())
    }

    /// The number the next worker will get.
    pub fn next_number(&self) -> u64 {
        self.next_number
    }

    /// Puts a release on probation; its worker is the next one started
    /// (see [`Handover::next_number`]).
    pub fn begin_probation(&mut self, probation: Probation) {
        self.probation = Some(probation);
    }

    /// Takes the release on probation away, once the master is stopping.
    pub fn take_probation(&mut self) -> Option<Probation> {
        self.probation.take()
    }

    /// The earliest deadline: a worker's, or the end of a probation.
    pub fn next_deadline(&self) -> Option<Instant> {
        let probation_end = self.probation.as_ref().and_then(Probation::ends_at);
        self.workers()
            .filter_map(WorkerState::deadline)
            .chain(probation_end)
            .min()
    }

    fn in_probation(&self, number: u64) -> bool {
        self.probation.as_ref().is_some_and(|p| p.is_worker(number))
    }

    /// A restart was asked for by `source`: started at once, queued (at
    /// most one) during a handover, ignored while stopping; with restarts
    /// off, the service stops instead.
    pub fn restart(&mut self, source: &str, now: Instant, fx: &mut dyn Effects) {
        if self.stopping {
            log::debug!("restart requested by {source} while stopping: ignored");
            return;
        }
        if self.rules.no_restart {
            log::info!("restart requested by {source}, restarts are off: stopping");
            self.stop(now, fx);
            return;
        }
        if self.starting.is_some() {
            if !self.restart_queued {
                log::info!("restart requested by {source} during a handover: queued");
            }
            self.restart_queued = true;
            return;
        }
        log::info!("restart requested by {source}");
        self.start_worker(fx);
    }

    /// Starts the next worker; false when it could not be started (and, for
    /// the first worker, the outcome is set).
    fn start_worker(&mut self, fx: &mut dyn Effects) -> bool {
        let number = self.next_number;
        self.next_number += 1;
        let probation = self.probation.as_ref().filter(|p| p.is_worker(number));
        match fx.spawn(number, probation) {
            Ok(spawned) => {
                self.starting = Some(WorkerState::new(number, spawned, self.rules.ready_timeout));
                if self.rules.ready_on_spawn {
                    self.ready(number, spawned.at, fx);
                }
                true
            }
            Err(e) => {
                log::error!("{e}");
                fx.handover_failed(None, &e);
                if self.in_probation(number) {
                    self.roll_back(&format!("its worker could not be started: {e}"), fx);
                }
                if self.serving.is_none() {
                    self.stopping = true;
                    self.outcome = Some(Outcome::Exit(1));
                } else {
                    log::error!("restart failed; the current worker keeps serving");
                    fx.restart_failed(&format!(
                        "restart failed: {e}; the current worker keeps serving"
                    ));
                }
                false
            }
        }
    }

    /// Worker `number` sent `READY=1` (or counts as ready): if it is the
    /// starting worker, it serves and the one it replaces drains.
    pub fn ready(&mut self, number: u64, now: Instant, fx: &mut dyn Effects) {
        let Some(mut new) = self
            .starting
            .take_if(|w| w.number == number && w.killed.is_none() && w.phase == Phase::Starting)
        else {
            return;
        };
        let after = now.saturating_duration_since(new.started);
        log::info!("worker {number} ready after {} ms", after.as_millis());
        new.phase = Phase::Serving;
        fx.ready(number, new.pid, after, self.serving.is_some());
        if self.rules.settle.is_some() {
            fx.steer(number);
        }
        if let Some(p) = self.probation.as_mut().filter(|p| p.is_worker(number)) {
            p.worker_ready(now);
        }
        if let Some(mut old) = self.serving.replace(new) {
            if self.in_probation(old.number) {
                // Replaced by a newer worker before probation ended: the
                // release served until then, so it stays.
                self.pass_probation(fx);
            }
            match self.rules.settle {
                Some(settle) => {
                    log::info!(
                        "worker {} gets no new connections; it drains once it has taken those sent to it (pid {})",
                        old.number,
                        old.pid
                    );
                    old.retire(settle, now);
                }
                None => {
                    log::info!("worker {} draining (pid {})", old.number, old.pid);
                    old.drain(self.rules.terminate_timeout, now, fx);
                }
            }
            self.draining.push(old);
        }
        if self.stopping {
            // A stop arrived while this worker was starting.
            if let Some(w) = self.serving.as_mut() {
                w.drain(self.rules.terminate_timeout, now, fx);
            }
        } else if std::mem::take(&mut self.restart_queued) {
            self.restart("a queued request", now, fx);
        }
    }

    /// Graceful stop: every worker drains, then the master exits with the
    /// serving worker's status.
    pub fn stop(&mut self, now: Instant, fx: &mut dyn Effects) {
        self.stopping = true;
        fx.stopping();
        self.restart_queued = false;
        let timeout = self.rules.terminate_timeout;
        for w in self.serving.iter_mut().chain(self.starting.iter_mut()) {
            if w.phase != Phase::Draining {
                w.drain(timeout, now, fx);
            }
        }
        for w in &mut self.draining {
            if w.term_due.is_some() {
                w.drain(timeout, now, fx);
            }
        }
    }

    /// A signal other than the restart signal and SIGCHLD: SIGTERM stops the
    /// service; the others are forwarded to the serving worker (or the
    /// starting one), unless they came from the terminal, which signalled
    /// the workers itself.
    pub fn signal(&mut self, signal: i32, from_terminal: bool, now: Instant, fx: &mut dyn Effects) {
        if signal == libc::SIGTERM {
            log::info!(
                "SIGTERM: stopping (workers get {:?} to drain)",
                self.rules.terminate_timeout
            );
            self.stop(now, fx);
            return;
        }
        let stop_signal = signals::STOP.contains(&signal);
        if from_terminal {
            // The terminal signalled the whole process group, workers included.
            log::debug!(
                "{} from the terminal already reached the workers",
                signals::name(signal)
            );
            if stop_signal {
                for w in self.serving.iter_mut().chain(self.starting.iter_mut()) {
                    w.stop_signalled = Some(now);
                }
            }
            return;
        }
        match self.serving.as_mut().or(self.starting.as_mut()) {
            Some(w) => {
                if stop_signal {
                    w.stop_signalled = Some(now);
                }
                log::debug!(
                    "forwarding {} to worker {}",
                    signals::name(signal),
                    w.number
                );
                fx.signal(w.pid, signal);
            }
            None => log::debug!("{} with no worker to forward to", signals::name(signal)),
        }
    }

    /// The process `pid` ended: a starting worker's exit is a failed
    /// handover, the serving worker's ends the service (unless a handover
    /// can still take over), a draining worker's is expected.
    pub fn exited(&mut self, pid: i32, ended: &Ended, now: Instant, fx: &mut dyn Effects) {
        let how = &ended.how;
        if let Some(w) = self.starting.take_if(|w| w.pid == pid) {
            self.starting_exited(w, ended, now, fx);
            return;
        }
        if let Some(w) = self.serving.take_if(|w| w.pid == pid) {
            self.serving_exited(w, ended, now, fx);
            return;
        }
        if let Some(i) = self.draining.iter().position(|w| w.pid == pid) {
            let w = self.draining.swap_remove(i);
            match &w.killed {
                Some(reason) => log::warning!("worker {} {reason}", w.number),
                None => log::info!("worker {} drained ({how})", w.number),
            }
            return;
        }
        log::debug!("reaped orphan pid {pid} ({how})");
    }

    fn starting_exited(
        &mut self,
        w: WorkerState,
        ended: &Ended,
        now: Instant,
        fx: &mut dyn Effects,
    ) {
        let how = &ended.how;
        let reason = w
            .killed
            .clone()
            .unwrap_or_else(|| format!("exited with {how} before becoming ready"));
        if !self.stopping {
            fx.handover_failed(Some(w.number), &format!("worker {} {reason}", w.number));
        }
        // A worker that ends after the operator's stop signal did not fail.
        let asked_to_stop = w.asked_to_stop(self.rules.terminate_timeout, now);
        let failed_release = self.in_probation(w.number) && !asked_to_stop;
        if failed_release {
            self.roll_back(&format!("its worker {} {reason}", w.number), fx);
        }
        match &self.serving {
            None if failed_release && !self.stopping => {
                log::error!(
                    "the previous worker ended meanwhile: starting one from the restored binary"
                );
                self.start_worker(fx);
            }
            Some(s) if !self.stopping => {
                let why = format!(
                    "restart failed: worker {} {reason}; worker {} keeps serving",
                    w.number, s.number
                );
                log::error!("{why}");
                fx.restart_failed(&why);
            }
            Some(_) => log::info!("worker {} ended while stopping ({how})", w.number),
            None => {
                log::error!("worker {} {reason}; nothing is serving, exiting", w.number);
                self.stopping = true;
                if self.outcome.is_none() {
                    self.outcome = Some(if w.killed.is_some() {
                        Outcome::Exit(1)
                    } else {
                        ended.outcome
                    });
                }
                for d in &mut self.draining {
                    d.kill_deadline.get_or_insert(now);
                }
            }
        }
        if !self.stopping && std::mem::take(&mut self.restart_queued) {
            self.restart("a queued request", now, fx);
        }
    }

    fn serving_exited(
        &mut self,
        w: WorkerState,
        ended: &Ended,
        now: Instant,
        fx: &mut dyn Effects,
    ) {
        let how = &ended.how;
        // Ended by the operator's SIGINT, SIGQUIT or SIGHUP (or ^C): the
        // service is stopping, whatever the status; a release on probation
        // is not to blame and stays installed.
        if w.asked_to_stop(self.rules.terminate_timeout, now) && !self.stopping {
            log::info!(
                "worker {} ended after a stop signal ({how}): stopping",
                w.number
            );
            self.outcome = Some(ended.outcome);
            self.stop(now, fx);
            return;
        }
        if self.in_probation(w.number) && !self.stopping && !ended.clean {
            self.roll_back(
                &format!(
                    "its worker {} failed within the {:?} probation ({how})",
                    w.number,
                    self.probation_period()
                ),
                fx,
            );
            self.start_worker(fx);
            return;
        }
        if self.stopping {
            log::info!("worker {} stopped ({how})", w.number);
        } else if self.starting.is_some() {
            // It died mid-handover: the new worker may still take over; if
            // it does not, the master ends with this status.
            log::warning!("worker {} exited during a handover ({how})", w.number);
        } else {
            log::info!("worker {} exited ({how}); exiting with it", w.number);
            self.stopping = true;
        }
        self.outcome = Some(ended.outcome);
    }

    fn probation_period(&self) -> Duration {
        self.probation
            .as_ref()
            .map_or(Duration::ZERO, Probation::period)
    }

    /// Acts on the deadlines due at `now`: a probation passed, a starting
    /// worker not ready in time, a draining one still running.
    pub fn deadlines(&mut self, now: Instant, fx: &mut dyn Effects) {
        if self
            .probation
            .as_ref()
            .and_then(Probation::ends_at)
            .is_some_and(|t| now >= t)
        {
            self.pass_probation(fx);
        }
        let ready_timeout = self.rules.ready_timeout;
        let terminate_timeout = self.rules.terminate_timeout;
        for w in &mut self.draining {
            let Some(due) = w.term_due.filter(|d| now >= d.at) else {
                continue;
            };
            let queued = fx.queued(w.number);
            if queued == 0 {
                log::info!("worker {} draining (pid {})", w.number, w.pid);
                w.drain(terminate_timeout, now, fx);
            } else if now >= due.give_up {
                log::warning!(
                    "worker {} draining with {queued} connection(s) still in its accept queue after {QUEUE_WAIT:?}: it is not accepting",
                    w.number
                );
                w.drain(terminate_timeout, now, fx);
            } else {
                w.term_due = Some(TermDue {
                    at: now + QUEUE_POLL,
                    ..due
                });
            }
        }
        if let Some(w) = self.starting.as_mut() {
            if w.phase == Phase::Starting && now >= w.ready_deadline {
                w.kill(format!("was not ready within {ready_timeout:?}"), fx);
            }
        }
        for w in self
            .draining
            .iter_mut()
            .chain(self.serving.iter_mut())
            .chain(self.starting.iter_mut())
        {
            if w.phase == Phase::Draining && w.kill_deadline.is_some_and(|d| now >= d) {
                w.kill(
                    format!("was killed: still running {terminate_timeout:?} after SIGTERM"),
                    fx,
                );
            }
        }
    }

    /// The release's worker failed: the previous binary comes back.
    fn roll_back(&mut self, reason: &str, fx: &mut dyn Effects) {
        if let Some(p) = self.probation.take() {
            fx.probation_failed(p, reason);
        }
    }

    /// The release's worker passed probation: the release stays.
    fn pass_probation(&mut self, fx: &mut dyn Effects) {
        if let Some(p) = self.probation.take() {
            fx.probation_passed(p);
        }
    }
}

#[cfg(test)]
mod tests;
