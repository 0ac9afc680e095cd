//! The master's event loop: events in, the handover's decisions
//! (`handover.rs`) carried out on real processes.
//!
//! All state lives on one thread (the one that called `run`), which is also
//! the thread that spawns workers, so Linux's parent-death signal — tied to
//! the spawning thread — fires only when the master itself dies.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::child::{describe_exit, Worker};
use super::control;
use super::event::{Answer, Event, Request};
use super::handover::{Effects, Ended, Handover, Outcome, Rules, Spawned, WorkerState};
use super::signals;
use super::systemd::Systemd;
use crate::binary_id::BinaryId;
use crate::child_registry;
use crate::log;
use crate::notify;
use crate::protocol::NOTIFY_RESTART;
use crate::shutdown::Shutdown;
use crate::sys::Launch;
use crate::upgrade::probation::{Installed, Probation};
use crate::upgrade::Report;
use crate::withheld::Withheld;

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
    /// The configured version, until a release brings another.
    pub version: Option<String>,
    /// The release source's credentials, kept from workers and probes.
    pub withheld: Withheld,
}

pub(crate) struct Supervisor {
    restart_signal: i32,
    no_restart: bool,
    probation: Duration,
    no_restart_after_fetch: bool,
    rx: Receiver<Event>,
    /// What to do: the workers' states, decided without processes.
    handover: Handover,
    /// Doing it: the processes, control clients and the service manager.
    live: Live,
    /// As PID 1 (a container's init) the master also reaps orphans.
    reap_all: bool,
    /// Shared with the upgrade thread: set once the master is stopping.
    stop_flag: Shutdown,
}

/// The handover's [`Effects`] on real processes, control clients and the
/// service manager.
struct Live {
    /// How workers start.
    launch: Launch,
    /// The version of the binary workers start from, if known.
    version: Option<String>,
    /// The release source's credentials, kept from workers and probes.
    withheld: Withheld,
    binary: BinaryId,
    run_dir: std::path::PathBuf,
    tx: Sender<Event>,
    ready_timeout: Duration,
    readiness: crate::config::Readiness,
    /// The worker processes (their notify relays end as they are dropped).
    processes: Vec<Worker>,
    /// For control clients: pending restart requests and the history
    /// `status` shows.
    outcomes: control::Outcomes,
    /// The service manager, when the master runs under systemd.
    systemd: Systemd,
}

impl Supervisor {
    pub fn new(
        settings: Settings,
        launch: Launch,
        binary: BinaryId,
        run_dir: std::path::PathBuf,
        tx: Sender<Event>,
        rx: Receiver<Event>,
    ) -> Self {
        let rules = Rules {
            terminate_timeout: settings.terminate_timeout,
            ready_timeout: settings.ready_timeout,
            ready_on_spawn: settings.ready_on_spawn,
            no_restart: settings.no_restart,
        };
        Supervisor {
            restart_signal: settings.restart_signal,
            no_restart: settings.no_restart,
            probation: settings.probation,
            no_restart_after_fetch: settings.no_restart_after_fetch,
            rx,
            handover: Handover::new(rules),
            live: Live {
                launch,
                version: settings.version,
                withheld: settings.withheld,
                binary,
                run_dir,
                tx,
                ready_timeout: settings.ready_timeout,
                readiness: settings.readiness,
                processes: Vec::new(),
                outcomes: control::Outcomes::new(),
                systemd: Systemd::from_env(),
            },
            reap_all: std::process::id() == 1,
            stop_flag: Shutdown::new(),
        }
    }

    /// The notification the upgrade thread waits on to stop polling.
    pub fn stop_flag(&self) -> Shutdown {
        self.stop_flag.clone()
    }

    /// Runs until the service ends; returns how the master should end.
    pub fn run(mut self) -> Outcome {
        if !self.handover.start(&mut self.live) {
            return self.handover.outcome().unwrap_or(Outcome::Exit(1));
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
            self.handover.deadlines(Instant::now(), &mut self.live);
            self.live.systemd.keep_alive();
            if self.handover.is_stopping() {
                self.live.systemd.stopping();
                self.stop_flag.trigger();
                self.live.outcomes.stopping();
                if let Some(p) = self.handover.take_probation() {
                    // Stopping is not the release's fault; it stays installed.
                    p.abandon();
                }
            }
            if let Some(outcome) = self.handover.finished() {
                return outcome;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.handover
            .next_deadline()
            .into_iter()
            .chain(self.live.systemd.next_deadline())
            .min()
    }

    fn handle(&mut self, event: Event) {
        let now = Instant::now();
        let live = &mut self.live;
        match event {
            Event::Child => {}
            Event::Restart => self.handover.restart("restart()", now, live),
            Event::Signal { signal, .. } if signal == self.restart_signal => {
                self.handover.restart(&signals::name(signal), now, live);
            }
            Event::Signal {
                signal,
                from_terminal,
            } => self.handover.signal(signal, from_terminal, now, live),
            Event::Notify { worker, message } => self.on_notify(worker, &message),
            Event::Upgrade(Report::Installed(installed)) => self.on_upgrade(installed),
            Event::Upgrade(Report::Rejected(what)) => live.outcomes.upgrade(what),
            Event::Control(request, reply) => self.on_control(request, reply),
        }
    }

    fn on_notify(&mut self, number: u64, message: &str) {
        for (key, value) in notify::parse(message) {
            match (key, value) {
                ("READY", "1") => self.handover.ready(number, Instant::now(), &mut self.live),
                ("STATUS", status) => {
                    log::debug!("worker {number} status: {status}");
                    self.live.systemd.worker_status(number, status);
                }
                (NOTIFY_RESTART, "1") => self.handover.restart(
                    &format!("worker {number}"),
                    Instant::now(),
                    &mut self.live,
                ),
                _ => {}
            }
        }
    }

    fn on_upgrade(&mut self, installed: Installed) {
        let what = installed.name();
        if self.handover.is_stopping() {
            installed.keep();
            return;
        }
        let now = Instant::now();
        if self.no_restart_after_fetch || self.no_restart {
            if let Some(v) = &installed.version {
                self.live.version = Some(v.clone());
            }
            installed.keep();
            if self.no_restart {
                self.handover
                    .restart(&format!("the upgrade to {what}"), now, &mut self.live);
            } else {
                log::info!("{what} installed; it runs from the next restart");
                self.live
                    .outcomes
                    .upgrade(format!("{what} installed; it runs from the next restart"));
            }
            return;
        }
        self.live
            .outcomes
            .upgrade(format!("{what} installed, on probation"));
        let number = self.handover.next_number();
        self.handover
            .begin_probation(installed.on_probation(number, self.probation));
        self.handover
            .restart(&format!("the upgrade to {what}"), now, &mut self.live);
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
        let pids: Vec<Pid> = self
            .handover
            .workers()
            .map(|w| Pid::from_raw(w.pid))
            .collect();
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
        let ended = Ended {
            how: describe_exit(&status),
            outcome: match status {
                WaitStatus::Exited(_, code) => Outcome::Exit(code),
                WaitStatus::Signaled(_, sig, _) => Outcome::Signal(sig as i32),
                _ => Outcome::Exit(1),
            },
            clean: matches!(status, WaitStatus::Exited(_, 0)),
        };
        self.handover
            .exited(pid.as_raw(), &ended, Instant::now(), &mut self.live);
        // Gone: its notify relay and readiness watcher end.
        self.live.processes.retain(|w| w.pid != pid);
    }

    /// Answers a control request: the status at once, a restart once the
    /// handover it causes has succeeded or failed.
    fn on_control(&mut self, request: Request, reply: Sender<Answer>) {
        match request {
            Request::Status => {
                let _ = reply.send(control::ok(&self.status().to_fields()));
            }
            Request::Restart if self.handover.is_stopping() => {
                let _ = reply.send(control::failed("the master is stopping"));
            }
            Request::Restart if self.no_restart => {
                let _ = reply.send(control::failed(
                    "restarts are off (no_restart): nothing was done",
                ));
            }
            Request::Restart => {
                self.live.outcomes.wait_for_next(reply);
                self.handover
                    .restart("the control socket", Instant::now(), &mut self.live);
            }
        }
    }

    fn status(&mut self) -> crate::control::Status {
        let info = |w: &WorkerState| crate::control::WorkerInfo {
            number: w.number,
            pid: w.pid.unsigned_abs(),
            age: w.started.elapsed(),
        };
        let live = &mut self.live;
        crate::control::Status {
            master_pid: std::process::id(),
            uptime: live.outcomes.started_at.elapsed(),
            version: live.version.clone(),
            binary_id: live.binary.current(),
            binary_path: live.launch.program.clone(),
            serving: self.handover.serving().map(info),
            starting: self.handover.starting().map(info),
            draining: self.handover.draining().iter().map(info).collect(),
            handovers: live.outcomes.handovers,
            failed_handovers: live.outcomes.failed_handovers,
            last_handover: control::ago(&live.outcomes.last_handover),
            last_upgrade: control::ago(&live.outcomes.last_upgrade),
        }
    }
}

impl Live {
    /// What a worker runs, for status lines: the version (a new release's
    /// own while it is on probation), else the binary ID's prefix.
    fn version_label(&self, id: &str, probation: Option<&Probation>) -> String {
        let version = match probation {
            Some(p) => p.version(),
            None => self.version.as_deref(),
        };
        match version {
            Some(v) => format!("version {v}"),
            None => format!("binary {}", id.get(..12).unwrap_or(id)),
        }
    }
}

impl Effects for Live {
    fn spawn(&mut self, number: u64, probation: Option<&Probation>) -> Result<Spawned, String> {
        let id = self.binary.current();
        self.systemd
            .starting(number, self.version_label(&id, probation));
        let worker = Worker::spawn(
            &mut self.launch,
            number,
            &id,
            self.version.as_deref(),
            &self.run_dir,
            &self.tx,
        )
        .map_err(|e| e.to_string())?;
        let spawned = Spawned {
            pid: worker.pid.as_raw(),
            at: Instant::now(),
        };
        log::info!("worker {number} started (pid {})", worker.pid);
        self.outcomes.started(number);
        super::readiness::watch(
            &self.readiness,
            &worker,
            self.ready_timeout,
            &self.tx,
            &self.withheld,
        );
        self.processes.push(worker);
        Ok(spawned)
    }

    fn signal(&mut self, pid: i32, signal: i32) {
        if let Ok(sig) = Signal::try_from(signal) {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }

    fn ready(&mut self, number: u64, pid: i32, after: Duration, handover: bool) {
        self.outcomes.ready(number, pid, after, handover);
        self.systemd.ready(number, pid);
    }

    fn handover_failed(&mut self, number: Option<u64>, reason: &str) {
        self.outcomes.failed(number, reason);
    }

    fn restart_failed(&mut self, why: &str) {
        self.systemd.restart_failed(why);
    }

    fn stopping(&mut self) {
        self.systemd.stopping();
    }

    fn probation_passed(&mut self, probation: Probation) {
        if let Some(v) = probation.version() {
            self.version = Some(v.to_string());
        }
        let line = probation.passed();
        self.outcomes.upgrade(line);
    }

    fn probation_failed(&mut self, probation: Probation, reason: &str) {
        let line = probation.failed(reason);
        self.outcomes.upgrade(line);
    }
}
