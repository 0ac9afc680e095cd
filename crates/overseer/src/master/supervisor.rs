//! The master's event loop: the handover state machine of SPEC §3 and the
//! signal and exit-status rules of §4.
//!
//! All state lives on one thread (the one that called `run`), which is also
//! the thread that spawns workers, so Linux's parent-death signal — tied to
//! the spawning thread — fires only when the master itself dies.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::child::{describe, LaunchSpec, Phase, Worker};
use super::control;
use super::event::{Answer, Event, Request};
use super::signals;
use super::systemd::Systemd;
use crate::binary_id::BinaryId;
use crate::child_registry;
use crate::log;
use crate::notify;
use crate::protocol::NOTIFY_RESTART;
use crate::shutdown::Shutdown;
use crate::upgrade::probation::{Installed, Probation};
use crate::upgrade::Report;

/// The parts of the configuration the loop needs.
#[derive(Debug)]
pub(crate) struct Settings {
    pub restart_signal: i32,
    pub terminate_timeout: Duration,
    pub ready_timeout: Duration,
    /// Command mode with `Readiness::Started`: ready as soon as spawned.
    pub ready_on_spawn: bool,
    /// `Alive` and `Command` are watched by `readiness::watch`.
    pub readiness: crate::config::Readiness,
    pub no_restart: bool,
    /// How long a worker of a new release must run after becoming ready.
    pub probation: Duration,
    pub no_restart_after_fetch: bool,
}

/// How the master will end.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Exit(i32),
    Signal(i32),
}

impl Outcome {
    fn from_status(status: &WaitStatus) -> Outcome {
        match status {
            WaitStatus::Exited(_, code) => Outcome::Exit(*code),
            WaitStatus::Signaled(_, sig, _) => Outcome::Signal(*sig as i32),
            _ => Outcome::Exit(1),
        }
    }
}

pub(crate) struct Supervisor {
    settings: Settings,
    spec: LaunchSpec,
    binary: BinaryId,
    run_dir: std::path::PathBuf,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    next_number: u64,
    serving: Option<Worker>,
    starting: Option<Worker>,
    draining: Vec<Worker>,
    restart_queued: bool,
    /// Set once the master is on its way out, with the status to exit with
    /// (unknown until the serving worker has ended).
    stopping: bool,
    outcome: Option<Outcome>,
    reap_all: bool,
    probation: Option<Probation>,
    /// For control clients: pending restart requests and the history
    /// `status` shows.
    outcomes: control::Outcomes,
    /// Shared with the upgrade thread: set once the master is stopping.
    stop_flag: Shutdown,
    /// The service manager, when the master runs under systemd.
    systemd: Systemd,
}

impl Supervisor {
    pub fn new(
        settings: Settings,
        spec: LaunchSpec,
        binary: BinaryId,
        run_dir: std::path::PathBuf,
        tx: Sender<Event>,
        rx: Receiver<Event>,
    ) -> Self {
        Supervisor {
            settings,
            spec,
            binary,
            run_dir,
            tx,
            rx,
            next_number: 1,
            serving: None,
            starting: None,
            draining: Vec::new(),
            restart_queued: false,
            stopping: false,
            outcome: None,
            // As PID 1 (a container's init) the master also reaps orphans.
            reap_all: std::process::id() == 1,
            probation: None,
            outcomes: control::Outcomes::new(),
            stop_flag: Shutdown::new(),
            systemd: Systemd::from_env(),
        }
    }

    /// The notification the upgrade thread waits on to stop polling.
    pub fn stop_flag(&self) -> Shutdown {
        self.stop_flag.clone()
    }

    /// Runs until the service ends; returns how the master should end.
    pub fn run(mut self) -> Outcome {
        if !self.start_worker() {
            return self.outcome.unwrap_or(Outcome::Exit(1));
        }
        loop {
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600));
            match self.rx.recv_timeout(timeout) {
                Ok(event) => self.handle(event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {}
            }
            // Exits can coalesce into one SIGCHLD, and a SIGCHLD can precede
            // the event that explains it: reap on every turn.
            self.reap();
            self.check_deadlines();
            self.systemd.keep_alive();
            if self.stopping {
                self.systemd.stopping();
                self.stop_flag.trigger();
                self.outcomes.stopping();
                if let Some(p) = self.probation.take() {
                    p.abandon();
                }
            }
            if self.stopping && self.workers().next().is_none() {
                return self.outcome.unwrap_or(Outcome::Exit(0));
            }
        }
    }

    fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.serving
            .iter()
            .chain(self.starting.iter())
            .chain(self.draining.iter())
    }

    fn next_deadline(&self) -> Option<Instant> {
        let probation_end = self.probation.as_ref().and_then(Probation::ends_at);
        self.workers()
            .filter_map(Worker::deadline)
            .chain(probation_end)
            .chain(self.systemd.next_deadline())
            .min()
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Child => {}
            Event::Restart => self.request_restart("restart()"),
            Event::Signal { signal, .. } if signal == self.settings.restart_signal => {
                self.request_restart(&signals::name(signal));
            }
            Event::Signal {
                signal,
                from_terminal,
            } => self.on_signal(signal, from_terminal),
            Event::Notify { worker, message } => self.on_notify(worker, &message),
            Event::Upgrade(Report::Installed(installed)) => self.on_upgrade(installed),
            Event::Upgrade(Report::Rejected(what)) => self.outcomes.upgrade(what),
            Event::Control(request, reply) => self.on_control(request, reply),
        }
    }

    fn on_signal(&mut self, signal: i32, from_terminal: bool) {
        if signal == libc::SIGTERM {
            log::info!(
                "SIGTERM: stopping (workers get {:?} to drain)",
                self.settings.terminate_timeout
            );
            self.stop();
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
                let now = Instant::now();
                for w in self.serving.iter_mut().chain(self.starting.iter_mut()) {
                    w.stop_signalled = Some(now);
                }
            }
            return;
        }
        match self.serving.as_mut().or(self.starting.as_mut()) {
            Some(w) => {
                if stop_signal {
                    w.stop_signalled = Some(Instant::now());
                }
                log::debug!(
                    "forwarding {} to worker {}",
                    signals::name(signal),
                    w.number
                );
                w.signal(signal);
            }
            None => log::debug!("{} with no worker to forward to", signals::name(signal)),
        }
    }

    fn on_notify(&mut self, number: u64, message: &str) {
        for (key, value) in notify::parse(message) {
            match (key, value) {
                ("READY", "1") => self.on_ready(number),
                ("STATUS", status) => {
                    log::debug!("worker {number} status: {status}");
                    self.systemd.worker_status(number, status);
                }
                (NOTIFY_RESTART, "1") => self.request_restart(&format!("worker {number}")),
                _ => {}
            }
        }
    }

    fn on_upgrade(&mut self, installed: Installed) {
        let what = installed.name();
        if self.stopping {
            installed.keep();
            return;
        }
        if self.settings.no_restart_after_fetch || self.settings.no_restart {
            if let Some(v) = &installed.version {
                self.spec.version = Some(v.clone());
            }
            installed.keep();
            if self.settings.no_restart {
                self.request_restart(&format!("the upgrade to {what}"));
            } else {
                log::info!("{what} installed; it runs from the next restart");
                self.outcomes
                    .upgrade(format!("{what} installed; it runs from the next restart"));
            }
            return;
        }
        self.outcomes
            .upgrade(format!("{what} installed, on probation"));
        self.probation = Some(installed.on_probation(self.next_number, self.settings.probation));
        self.request_restart(&format!("the upgrade to {what}"));
    }

    /// Restores the previous binary after a release's worker failed.
    fn roll_back(&mut self, reason: &str) {
        if let Some(p) = self.probation.take() {
            let line = p.failed(reason);
            self.outcomes.upgrade(line);
        }
    }

    /// What worker `number` runs, for status lines: the version (a new
    /// release's own while it is on probation), else the binary ID's prefix.
    fn version_label(&self, number: u64, id: &str) -> String {
        let version = match self.probation.as_ref().filter(|p| p.is_worker(number)) {
            Some(p) => p.version(),
            None => self.spec.version.as_deref(),
        };
        match version {
            Some(v) => format!("version {v}"),
            None => format!("binary {}", id.get(..12).unwrap_or(id)),
        }
    }

    fn in_probation(&self, number: u64) -> bool {
        self.probation.as_ref().is_some_and(|p| p.is_worker(number))
    }

    fn request_restart(&mut self, source: &str) {
        if self.stopping {
            log::debug!("restart requested by {source} while stopping: ignored");
            return;
        }
        if self.settings.no_restart {
            log::info!("restart requested by {source}, restarts are off: stopping");
            self.stop();
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
        self.start_worker();
    }

    /// Starts the next worker; false when it could not be started (and, for
    /// the first worker, the outcome is set).
    fn start_worker(&mut self) -> bool {
        let number = self.next_number;
        self.next_number += 1;
        let id = self.binary.current();
        self.systemd
            .starting(number, self.version_label(number, &id));
        match Worker::spawn(
            &self.spec,
            number,
            &id,
            &self.run_dir,
            self.settings.ready_timeout,
            &self.tx,
        ) {
            Ok(worker) => {
                log::info!("worker {number} started (pid {})", worker.pid);
                self.outcomes.started(number);
                super::readiness::watch(
                    &self.settings.readiness,
                    &worker,
                    self.settings.ready_timeout,
                    &self.tx,
                    &self.spec.withheld,
                );
                self.starting = Some(worker);
                if self.settings.ready_on_spawn {
                    self.on_ready(number);
                }
                true
            }
            Err(e) => {
                log::error!("{e}");
                self.outcomes.failed(None, &e.to_string());
                if self.in_probation(number) {
                    self.roll_back(&format!("its worker could not be started: {e}"));
                }
                if self.serving.is_none() {
                    self.stopping = true;
                    self.outcome = Some(Outcome::Exit(1));
                } else {
                    log::error!("restart failed; the current worker keeps serving");
                    self.systemd.restart_failed(&format!(
                        "restart failed: {e}; the current worker keeps serving"
                    ));
                }
                false
            }
        }
    }

    fn on_ready(&mut self, number: u64) {
        let Some(mut new) = self
            .starting
            .take_if(|w| w.number == number && w.killed.is_none() && w.phase == Phase::Starting)
        else {
            return;
        };
        log::info!(
            "worker {number} ready after {} ms",
            new.started.elapsed().as_millis()
        );
        new.phase = Phase::Serving;
        self.outcomes.ready(
            number,
            new.pid.as_raw(),
            new.started.elapsed(),
            self.serving.is_some(),
        );
        self.systemd.ready(number, new.pid.as_raw());
        if let Some(p) = self.probation.as_mut().filter(|p| p.is_worker(number)) {
            p.worker_ready(Instant::now());
        }
        if let Some(mut old) = self.serving.replace(new) {
            if self.in_probation(old.number) {
                // Replaced by a newer worker before probation ended: the
                // release served until then, so it stays.
                self.pass_probation();
            }
            log::info!("worker {} draining (pid {})", old.number, old.pid);
            old.drain(self.settings.terminate_timeout);
            self.draining.push(old);
        }
        if self.stopping {
            // A stop arrived while this worker was starting.
            if let Some(w) = self.serving.as_mut() {
                w.drain(self.settings.terminate_timeout);
            }
        } else if std::mem::take(&mut self.restart_queued) {
            self.request_restart("a queued request");
        }
    }

    /// Graceful stop: every worker drains, then the master exits with the
    /// serving worker's status.
    fn stop(&mut self) {
        self.stopping = true;
        self.systemd.stopping();
        self.restart_queued = false;
        let timeout = self.settings.terminate_timeout;
        for w in self.serving.iter_mut().chain(self.starting.iter_mut()) {
            if w.phase != Phase::Draining {
                w.drain(timeout);
            }
        }
    }

    fn reap(&mut self) {
        if self.reap_all {
            let mut ended = Vec::new();
            child_registry::reap_all(|pid, status| ended.push((pid, status)));
            for (pid, status) in ended {
                self.on_exit(pid, status);
            }
            return;
        }
        let pids: Vec<Pid> = self.workers().map(|w| w.pid).collect();
        for pid in pids {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    self.on_exit(pid, status)
                }
                Ok(_) => {}
                // Already reaped (cannot happen unless someone else waits on
                // our children): treat as gone.
                Err(_) => self.on_exit(pid, WaitStatus::Exited(pid, 1)),
            }
        }
    }

    fn on_exit(&mut self, pid: Pid, status: WaitStatus) {
        let how = describe(&status);
        if let Some(w) = self.starting.take_if(|w| w.pid == pid) {
            let reason = w
                .killed
                .clone()
                .unwrap_or_else(|| format!("exited with {how} before becoming ready"));
            if !self.stopping {
                self.outcomes
                    .failed(Some(w.number), &format!("worker {} {reason}", w.number));
            }
            // A worker that ends after the operator's stop signal did not fail.
            let asked_to_stop = w.asked_to_stop(self.settings.terminate_timeout);
            let failed_release = self.in_probation(w.number) && !asked_to_stop;
            if failed_release {
                self.roll_back(&format!("its worker {} {reason}", w.number));
            }
            match &self.serving {
                None if failed_release && !self.stopping => {
                    log::error!(
                        "the previous worker ended meanwhile: starting one from the restored binary"
                    );
                    self.start_worker();
                }
                Some(s) if !self.stopping => {
                    let why = format!(
                        "restart failed: worker {} {reason}; worker {} keeps serving",
                        w.number, s.number
                    );
                    log::error!("{why}");
                    self.systemd.restart_failed(&why);
                }
                Some(_) => log::info!("worker {} ended while stopping ({how})", w.number),
                None => {
                    log::error!("worker {} {reason}; nothing is serving, exiting", w.number);
                    self.stopping = true;
                    if self.outcome.is_none() {
                        self.outcome = Some(if w.killed.is_some() {
                            Outcome::Exit(1)
                        } else {
                            Outcome::from_status(&status)
                        });
                    }
                    for d in &mut self.draining {
                        d.kill_deadline.get_or_insert(Instant::now());
                    }
                }
            }
            if !self.stopping && std::mem::take(&mut self.restart_queued) {
                self.request_restart("a queued request");
            }
            return;
        }
        if let Some(w) = self.serving.take_if(|w| w.pid == pid) {
            let outcome = Outcome::from_status(&status);
            let clean = matches!(status, WaitStatus::Exited(_, 0));
            // Ended by the operator's SIGINT, SIGQUIT or SIGHUP (or ^C): the
            // service is stopping, whatever the status; a release on
            // probation is not to blame and stays installed.
            if w.asked_to_stop(self.settings.terminate_timeout) && !self.stopping {
                log::info!(
                    "worker {} ended after a stop signal ({how}): stopping",
                    w.number
                );
                self.outcome = Some(outcome);
                self.stop();
                return;
            }
            if self.in_probation(w.number) && !self.stopping && !clean {
                self.roll_back(&format!(
                    "its worker {} failed within the {:?} probation ({how})",
                    w.number, self.settings.probation
                ));
                self.start_worker();
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
            self.outcome = Some(outcome);
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

    /// Answers a control request: the status at once, a restart once the
    /// handover it causes has succeeded or failed.
    fn on_control(&mut self, request: Request, reply: Sender<Answer>) {
        match request {
            Request::Status => {
                let _ = reply.send(control::ok(&self.status().to_fields()));
            }
            Request::Restart if self.stopping => {
                let _ = reply.send(control::failed("the master is stopping"));
            }
            Request::Restart if self.settings.no_restart => {
                let _ = reply.send(control::failed(
                    "restarts are off (no_restart): nothing was done",
                ));
            }
            Request::Restart => {
                self.outcomes.wait_for_next(reply);
                self.request_restart("the control socket");
            }
        }
    }

    fn status(&mut self) -> crate::control::Status {
        let info = |w: &Worker| crate::control::WorkerInfo {
            number: w.number,
            pid: w.pid.as_raw().unsigned_abs(),
            age: w.started.elapsed(),
        };
        crate::control::Status {
            master_pid: std::process::id(),
            uptime: self.outcomes.started_at.elapsed(),
            version: self.spec.version.clone(),
            binary_id: self.binary.current(),
            binary_path: self.spec.program.clone(),
            serving: self.serving.as_ref().map(info),
            starting: self.starting.as_ref().map(info),
            draining: self.draining.iter().map(info).collect(),
            handovers: self.outcomes.handovers,
            failed_handovers: self.outcomes.failed_handovers,
            last_handover: control::ago(&self.outcomes.last_handover),
            last_upgrade: control::ago(&self.outcomes.last_upgrade),
        }
    }

    /// A release's worker passed probation: the release stays.
    fn pass_probation(&mut self) {
        let Some(p) = self.probation.take() else {
            return;
        };
        if let Some(v) = p.version() {
            self.spec.version = Some(v.to_string());
        }
        let line = p.passed();
        self.outcomes.upgrade(line);
    }

    fn check_deadlines(&mut self) {
        let now = Instant::now();
        if self
            .probation
            .as_ref()
            .and_then(Probation::ends_at)
            .is_some_and(|t| now >= t)
        {
            self.pass_probation();
        }
        let ready_timeout = self.settings.ready_timeout;
        let terminate_timeout = self.settings.terminate_timeout;
        if let Some(w) = self.starting.as_mut() {
            if w.phase == Phase::Starting && now >= w.ready_deadline {
                w.kill(format!("was not ready within {ready_timeout:?}"));
            }
        }
        for w in self
            .draining
            .iter_mut()
            .chain(self.serving.iter_mut())
            .chain(self.starting.iter_mut())
        {
            if w.phase == Phase::Draining && w.kill_deadline.is_some_and(|d| now >= d) {
                w.kill(format!(
                    "was killed: still running {terminate_timeout:?} after SIGTERM"
                ));
            }
        }
    }
}
