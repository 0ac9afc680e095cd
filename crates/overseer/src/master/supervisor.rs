//! The master's event loop: events in, the handover's decisions
//! (`handover.rs`) carried out on real processes.
//!
//! All state lives on one thread (the one that called `run`), which is also
//! the thread that spawns workers, so Linux's parent-death signal — tied to
//! the spawning thread — fires only when the master itself dies.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::carried::{self, Carried};
use super::child::{describe_exit, Worker};
use super::control;
use super::event::Refusal;
use super::event::{Answer, Event, Request};
use super::handover::{Effects, Ended, Handover, Outcome, Rules, Spawned, WorkerState};
use super::held::{Held, Resumed};
use super::reexec;
use super::signals;
use super::steer::Steering;
use super::systemd::Systemd;
use crate::binary_id::BinaryId;
use crate::child_registry;
use crate::log;
use crate::notify;
use crate::protocol::{NOTIFY_RELOAD, NOTIFY_RESTART};
use crate::shutdown::Shutdown;
use crate::sys::Launch;
use crate::upgrade::probation::{Installed, Probation};
use crate::upgrade::{Gate, Pending, Report};
use crate::withheld::Withheld;

/// The parts of the configuration the loop needs.
#[derive(Debug)]
pub(crate) struct Settings {
    pub restart_signal: i32,
    pub reload_signal: Option<i32>,
    /// Re-execute the master into a release that passed probation.
    pub reexec_after_upgrade: bool,
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
    /// Steer new connections to the newest ready worker.
    pub steer: bool,
    /// The listen backlog (of the sockets steering opens).
    pub backlog: i32,
}

/// With steering, how long a replaced worker goes on accepting what was
/// sent to it before it is told to drain: a connection whose handshake began
/// before the switch lands in its queue up to a round trip later.
const STEER_SETTLE: Duration = Duration::from_secs(1);

pub(crate) struct Supervisor {
    restart_signal: i32,
    reload_signal: Option<i32>,
    reexec_after_upgrade: bool,
    /// What the master holds across re-execs.
    held: Held,
    /// Taken before a re-exec: the upgrade thread is between steps.
    gate: Gate,
    /// A re-exec asked for and not yet done or failed.
    reexec: Stage,
    /// What this image took over from a previous one, until said.
    adopted: Option<Adopted>,
    /// Workers numbered from this one were started by this thread. The
    /// others, carried from a previous image, were started by the thread
    /// that called `execve`, now the main thread: when the loop runs on
    /// another thread, a re-exec would end that thread, and Linux would
    /// kill those workers with it (parent-death signal), so they are
    /// replaced first.
    own_from: u64,
    /// A handover was started to replace such workers before a re-exec.
    replacing: bool,
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
    /// A release that passed probation, until the upgrade thread recorded
    /// it: the master then re-executes into it (when that is on).
    passed: Option<String>,
    /// Which socket each worker accepts on, when connections are steered.
    steering: Option<Steering>,
    /// The socket the next worker is to share, to take the connections
    /// left there.
    rescue: Option<usize>,
}

/// A re-exec request: what asked for it, and the control client waiting.
struct ReexecRequest {
    source: String,
    client: Option<UnixStream>,
}

/// Where a re-exec request is.
enum Stage {
    Idle,
    /// Waits for a handover in progress (or a release on probation, in
    /// library mode) to end.
    Waiting(ReexecRequest),
    /// The new binary's check runs, on the file found then.
    Checking(ReexecRequest, Option<reexec::FileId>),
    /// The check passed; executes as soon as nothing is in the way.
    Checked(ReexecRequest, Option<reexec::FileId>),
}

/// What this image took over, said once the loop starts.
struct Adopted {
    source: String,
    client: Option<UnixStream>,
    gap_ms: u64,
    sockets_changed: bool,
    fallback: Option<String>,
    workers: usize,
}

impl Supervisor {
    /// The loop over `held`, starting workers by `launch`; with `resumed`,
    /// the loop of a new image going on where the previous one stopped.
    /// Returns it with the verdict a carried probation's release waits for.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Settings,
        launch: Launch,
        binary: BinaryId,
        held: Held,
        gate: Gate,
        tx: Sender<Event>,
        rx: Receiver<Event>,
        resumed: Option<Resumed>,
    ) -> (Self, Option<Pending>) {
        let mut resumed = resumed;
        let steering = match resumed.as_mut().and_then(|r| r.steering.take()) {
            // Carried steering goes on whatever the configuration says: its
            // workers accept on their own sockets.
            Some(carried) => {
                if !settings.steer {
                    log::info!("connections are still steered (as before the re-exec) until the service restarts");
                }
                Some(carried)
            }
            None if settings.steer => Steering::new(&held.sockets, settings.backlog),
            None => None,
        };
        let rules = Rules {
            terminate_timeout: settings.terminate_timeout,
            ready_timeout: settings.ready_timeout,
            ready_on_spawn: settings.ready_on_spawn,
            no_restart: settings.no_restart,
            settle: steering.as_ref().map(|_| STEER_SETTLE),
        };
        let mut handover = Handover::new(rules.clone());
        let mut outcomes = control::Outcomes::new();
        let mut systemd = Systemd::from_env();
        let mut version = settings.version;
        let mut processes = Vec::new();
        let mut pending = None;
        let mut adopted = None;
        let mut own_from = 0;
        if let Some(r) = resumed {
            if !crate::sys::on_main_thread() {
                own_from = r.state.handover.next_number;
                log::warning!(
                    "overseer::run is not on the main thread: the next re-exec replaces the workers started before this one first (call overseer::run from main to avoid it)"
                );
            }
            let (probation, verdict) = match r.probation {
                Some((p, v)) => (Some(p), Some(v)),
                None => (None, None),
            };
            pending = verdict;
            handover = Handover::adopt(rules, &r.state.handover, probation, r.at, r.gap_ms);
            outcomes = control::Outcomes::adopt(&r.state.outcomes, r.at, r.gap_ms);
            systemd.adopt(&r.state.systemd);
            // Upgrades may have changed it since the configuration said.
            version = r.state.version_label.clone().or(version);
            adopted = Some(Adopted {
                source: r.state.source.clone(),
                client: r.client,
                gap_ms: r.gap_ms,
                sockets_changed: r.sockets_changed,
                fallback: r.fallback,
                workers: r.workers.len(),
            });
            processes = r.workers;
        }
        let run_dir = held.run_dir.path().to_path_buf();
        let supervisor = Supervisor {
            restart_signal: settings.restart_signal,
            reload_signal: settings.reload_signal,
            reexec_after_upgrade: settings.reexec_after_upgrade,
            held,
            gate,
            reexec: Stage::Idle,
            adopted,
            own_from,
            replacing: false,
            no_restart: settings.no_restart,
            probation: settings.probation,
            no_restart_after_fetch: settings.no_restart_after_fetch,
            rx,
            handover,
            live: Live {
                launch,
                version,
                withheld: settings.withheld,
                binary,
                run_dir,
                tx,
                ready_timeout: settings.ready_timeout,
                readiness: settings.readiness,
                processes,
                outcomes,
                systemd,
                passed: None,
                steering,
                rescue: None,
            },
            reap_all: std::process::id() == 1,
            stop_flag: Shutdown::new(),
        };
        (supervisor, pending)
    }

    /// The version workers run, if known (for the upgrade thread).
    pub fn version(&self) -> Option<String> {
        self.live.version.clone()
    }

    /// Gives back what the master holds (a set-up error after `new`).
    pub fn into_held(self) -> Held {
        self.held
    }

    /// The notification the upgrade thread waits on to stop polling.
    pub fn stop_flag(&self) -> Shutdown {
        self.stop_flag.clone()
    }

    /// Runs until the service ends; returns how the master should end, and
    /// what it held.
    pub fn run(mut self) -> (Outcome, Held) {
        match self.adopted.take() {
            Some(adopted) => self.took_over(adopted),
            None => {
                if !self.handover.start(&mut self.live) {
                    let outcome = self.handover.outcome().unwrap_or(Outcome::Exit(1));
                    return (outcome, self.held);
                }
            }
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
            self.rescue_stranded();
            self.live.systemd.keep_alive();
            self.retire_sockets();
            self.advance_reexec();
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
                return (outcome, self.held);
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
            Event::Signal { signal, .. } if Some(signal) == self.reload_signal => {
                self.request_reexec(signals::name(signal), None);
            }
            Event::Reload { source, client } => self.request_reexec(source, client),
            Event::Checked(result) => self.checked(result),
            Event::Upgrade(Report::Kept) => {
                if let Some(name) = live.passed.take() {
                    if self.reexec_after_upgrade {
                        self.request_reexec(format!("{name}, which passed probation"), None);
                    }
                }
            }
            Event::Signal {
                signal,
                from_terminal,
            } => self.handover.signal(signal, from_terminal, now, live),
            Event::Notify { worker, message } => self.on_notify(worker, &message),
            Event::Upgrade(Report::Installed(installed)) => {
                self.gate.install_taken();
                self.on_upgrade(installed)
            }
            Event::Upgrade(Report::Rejected(what)) => live.outcomes.upgrade(what),
            Event::Upgrade(Report::Rollout(what)) => live.outcomes.rollout = what,
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
                (NOTIFY_RELOAD, "1") => self.request_reexec(format!("worker {number}"), None),
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
        let via = installed
            .via
            .as_deref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default();
        self.live
            .outcomes
            .upgrade(format!("{what} installed{via}, on probation"));
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
        // Its socket is free before a replacement may be started for it.
        if let (Some(steering), Some(w)) = (
            self.live.steering.as_mut(),
            self.live.processes.iter().find(|w| w.pid == pid),
        ) {
            steering.forget(w.number);
        }
        self.handover
            .exited(pid.as_raw(), &ended, Instant::now(), &mut self.live);
        // Gone: its notify relay and readiness watcher end.
        self.live.processes.retain(|w| w.pid != pid);
        self.rescue_stranded();
    }

    /// With steering: a replaced worker that stopped accepting before it
    /// took every connection sent to it (it was stuck, or it was told to
    /// drain as one arrived) leaves them in its socket's queue, where only a
    /// worker given that socket can take them. One is started at once (a
    /// handover), sharing the socket with the old worker if it still runs.
    fn rescue_stranded(&mut self) {
        if self.handover.is_stopping() || self.handover.starting().is_some() || self.no_restart {
            return;
        }
        let handover = &self.handover;
        let Some(slot) = self
            .live
            .steering
            .as_ref()
            .and_then(|s| s.stranded(|n| handover.accepting(n)))
        else {
            return;
        };
        log::warning!(
            "connections wait in the accept queue of socket {slot}, whose workers will not take them: starting a worker on it"
        );
        self.live.rescue = Some(slot);
        self.handover.restart(
            "connections left by a replaced worker",
            Instant::now(),
            &mut self.live,
        );
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

    /// A re-exec was asked for by `source`: it waits for what is in the way,
    /// then the new binary is checked, then executed ([`Self::advance_reexec`]).
    fn request_reexec(&mut self, source: String, client: Option<UnixStream>) {
        let refuse = |client: Option<UnixStream>, why: &str| {
            log::warning!("re-exec asked for by {source} not made: {why}");
            answer(client, &control::failed(why));
        };
        if self.held.plan.is_none() {
            return refuse(client, "this master cannot re-execute itself: its executable was not found when it started");
        }
        if self.handover.is_stopping() {
            return refuse(client, "the master is stopping");
        }
        if !matches!(self.reexec, Stage::Idle) {
            return refuse(client, "a re-exec is in progress already");
        }
        log::info!("re-exec asked for by {source}");
        self.reexec = Stage::Waiting(ReexecRequest { source, client });
    }

    /// Whether a re-exec can be made now: no handover or restart answer is
    /// pending and, when the master's own binary is the program, no release
    /// is on probation (its binary is not yet one to run the master from).
    fn may_reexec(&self) -> bool {
        let own_release_on_probation =
            self.reexec_after_upgrade && self.handover.probation().is_some();
        self.handover.starting().is_none()
            && !self.handover.retiring()
            && !self.live.outcomes.waiting()
            && !own_release_on_probation
            && !self.foreign_workers()
    }

    /// Whether a worker started by another thread (see `own_from`) runs.
    fn foreign_workers(&self) -> bool {
        self.handover.workers().any(|w| w.number < self.own_from)
    }

    /// Moves a re-exec request on, once per turn of the loop.
    fn advance_reexec(&mut self) {
        if matches!(self.reexec, Stage::Idle) {
            return;
        }
        if self.handover.is_stopping() {
            if let Stage::Waiting(r) | Stage::Checking(r, _) | Stage::Checked(r, _) =
                std::mem::replace(&mut self.reexec, Stage::Idle)
            {
                self.reexec_failed(r, "the master is stopping");
            }
            return;
        }
        if !self.may_reexec() {
            let idle = self.handover.starting().is_none() && !self.live.outcomes.waiting();
            let foreign_serving = self
                .handover
                .serving()
                .is_some_and(|w| w.number < self.own_from);
            if idle && self.foreign_workers() && !self.replacing {
                self.replacing = true;
                self.handover.restart(
                    "a re-exec (the workers started before the last one go first)",
                    Instant::now(),
                    &mut self.live,
                );
            } else if idle && foreign_serving && self.replacing {
                // The handover that was to replace it failed.
                self.replacing = false;
                if let Stage::Waiting(r) = std::mem::replace(&mut self.reexec, Stage::Idle) {
                    self.reexec_failed(
                        r,
                        "the workers started before the last re-exec must be replaced first (overseer::run is not on the main thread), and the handover failed",
                    );
                }
            }
            return;
        }
        self.replacing = false;
        match std::mem::replace(&mut self.reexec, Stage::Idle) {
            Stage::Waiting(r) => {
                let mut file = None;
                if let Some(plan) = &self.held.plan {
                    let format = if self.live.steering.is_some() { 2 } else { 1 };
                    file = reexec::FileId::of(&plan.exe);
                    reexec::spawn_check(plan, format, &self.live.withheld, self.live.tx.clone());
                }
                self.reexec = Stage::Checking(r, file);
            }
            Stage::Checked(r, file) => self.exec(r, file),
            other => self.reexec = other,
        }
    }

    /// The new binary's check ended.
    fn checked(&mut self, result: Result<(), Refusal>) {
        let Stage::Checking(r, file) = std::mem::replace(&mut self.reexec, Stage::Idle) else {
            return;
        };
        match result {
            Ok(()) => self.reexec = Stage::Checked(r, file),
            Err(refusal) if refusal.bad_input => {
                log::error!(
                    "re-exec asked for by {} not made: {}",
                    r.source,
                    refusal.reason
                );
                self.live
                    .outcomes
                    .reexec(false, format!("{}: {}", r.source, refusal.reason));
                answer(r.client, &control::refused(&refusal.reason));
            }
            Err(refusal) => self.reexec_failed(r, &refusal.reason),
        }
    }

    /// A re-exec was not made, for `why`: the master goes on as it was.
    fn reexec_failed(&mut self, r: ReexecRequest, why: &str) {
        log::error!(
            "re-exec asked for by {} not made: {why}; this master goes on",
            r.source
        );
        self.live
            .outcomes
            .reexec(false, format!("{}: {why}", r.source));
        answer(r.client, &control::failed(why));
    }

    /// Executes the new image with the master's state; returns only when
    /// that failed, the master going on as it was. `checked` is the file
    /// the check ran, when it could be told.
    fn exec(&mut self, r: ReexecRequest, checked: Option<reexec::FileId>) {
        let Some(plan) = self.held.plan.clone() else {
            return self.reexec_failed(r, "the master's executable is not known");
        };
        // The upgrade thread between two steps, and kept there.
        let gate = self.gate.clone();
        let Some(_quiet) = gate.close(Duration::from_secs(5)) else {
            return self.reexec_failed(
                r,
                "a release is being installed; try again once it is (overseer status)",
            );
        };
        // A release installed meanwhile: its report, still in the loop's
        // queue, would be lost with this image, and a release swapped in
        // over the master's own file is not the binary checked. The loop
        // takes the report first (a restart, a probation), then the new
        // binary is checked.
        let changed = checked.is_some_and(|c| reexec::FileId::of(&plan.exe) != Some(c));
        if gate.install_in_flight() || changed {
            log::info!(
                "re-exec asked for by {} waits: {}",
                r.source,
                if changed {
                    "the master's binary changed since its check; it is checked again"
                } else {
                    "a release was installed meanwhile; it starts first"
                }
            );
            self.reexec = Stage::Waiting(r);
            return;
        }
        log::info!(
            "re-executing the master: {} (asked for by {})",
            plan.exe.display(),
            r.source
        );
        self.live.systemd.reexec_begins();
        let state = self.carry(&r, &plan);
        let error = reexec::exec(&plan, &state);
        self.live
            .systemd
            .reexec_ended(&format!("re-exec failed: {error}"));
        self.reexec_failed(r, &error);
    }

    /// Everything the next image needs, at this moment.
    fn carry(&self, r: &ReexecRequest, plan: &reexec::Plan) -> Carried {
        let now = Instant::now();
        let at_ns = crate::sys::monotonic_ns();
        let live = &self.live;
        let socket = |s: &crate::listener::Socket, retired: bool| carried::SocketState {
            name: s.name.clone(),
            address: s.address.clone(),
            unix_path: s
                .unix_path
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            fd: s.listener.as_fd().as_raw_fd(),
            retired,
        };
        let probation = self.handover.probation().map(|p| {
            let installed = p.installed();
            carried::ProbationState {
                path: installed.target.path.clone().into_os_string(),
                sha256: installed.sha256.clone(),
                version: installed.version.clone(),
                tag: installed.tag.clone(),
                worker: p.worker(),
                period_ms: p.period().as_millis() as u64,
                ready_ago_ms: p.ready_at().map(|t| carried::ago_ms(now, t)),
            }
        });
        let mut state = Carried {
            version: carried::VERSION,
            at_ns,
            master_exe: plan.exe.clone().into_os_string(),
            argv: plan.argv.clone(),
            program_mask: crate::sys::program_mask(),
            sockets: self
                .held
                .sockets
                .iter()
                .map(|s| socket(s, false))
                .chain(self.held.retired.iter().map(|s| socket(s, true)))
                .collect(),
            run_dir: self.held.run_dir.carry(),
            control: self.held.control.as_ref().map(|c| c.carry()),
            handover: self.handover.carry(now, |number| {
                live.processes
                    .iter()
                    .find(|w| w.number == number)
                    .map(|w| w.notify_fd)
            }),
            probation,
            outcomes: live.outcomes.carry(now),
            systemd: live.systemd.carry(),
            version_label: live.version.clone(),
            client_fd: r.client.as_ref().map(|c| c.as_raw_fd()),
            source: r.source.clone(),
            steering: live.steering.as_ref().map(|s| s.carry(&self.held.sockets)),
            config_text: plan.config_text.clone(),
        };
        state.version = state.format();
        state
    }

    /// This image took over from a previous one: says so to the log, the
    /// waiting client and the service manager, and gives the workers the
    /// new socket set if it changed.
    fn took_over(&mut self, a: Adopted) {
        let pid = std::process::id();
        let exe = self
            .held
            .plan
            .as_ref()
            .map(|p| p.exe.display().to_string())
            .unwrap_or_default();
        match &a.fallback {
            None => {
                log::info!(
                    "master re-executed in {} ms (asked for by {}): {exe} took over {} worker(s)",
                    a.gap_ms,
                    a.source,
                    a.workers
                );
                self.live.outcomes.reexec(
                    true,
                    format!("{exe} took over in {} ms ({})", a.gap_ms, a.source),
                );
                let fields = format!(
                    "master_pid={pid}\nbinary={exe}\ntook_ms={}\nreexecs={}\nsockets_changed={}\n",
                    a.gap_ms, self.live.outcomes.reexecs, a.sockets_changed
                );
                answer(a.client, &control::ok(&fields));
                let serving = self
                    .handover
                    .serving()
                    .map(|w| {
                        format!(
                            "serving (worker {}, pid {}); master re-executed",
                            w.number, w.pid
                        )
                    })
                    .unwrap_or_else(|| "master re-executed".into());
                self.live.systemd.reexec_ended(&serving);
            }
            Some(why) => {
                let line = format!(
                    "the new master image could not take over: {why}; the previous one runs again"
                );
                self.live
                    .outcomes
                    .reexec(false, format!("{}: {line}", a.source));
                answer(a.client, &control::failed(&line));
                self.live.systemd.reexec_ended(&line);
            }
        }
        // A carried worker still starting needs its readiness watched again.
        if let Some(w) = self.handover.starting() {
            if let Some(worker) = self.live.processes.iter().find(|p| p.number == w.number) {
                super::readiness::watch(
                    &self.live.readiness,
                    worker,
                    self.live.ready_timeout,
                    &self.live.tx,
                    &self.live.withheld,
                );
            }
        }
        if a.sockets_changed && a.fallback.is_none() {
            self.handover
                .restart("the new socket set", Instant::now(), &mut self.live);
        }
    }

    /// Closes the sockets no longer configured once no worker started with
    /// them is left.
    fn retire_sockets(&mut self) {
        if self.held.retired.is_empty() {
            return;
        }
        let before = self.held.retire_before;
        if self.handover.workers().any(|w| w.number < before) {
            return;
        }
        let retired = std::mem::take(&mut self.held.retired);
        crate::listener::remove_socket_files(&retired);
        for s in &retired {
            child_registry::let_go(s.listener.as_fd().as_raw_fd());
            log::info!("closed {} (no longer configured)", s.address);
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
            reexecs: live.outcomes.reexecs,
            failed_reexecs: live.outcomes.failed_reexecs,
            last_reexec: control::ago(&live.outcomes.last_reexec),
            rollout: live.outcomes.rollout.clone(),
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
        if let Some(steering) = self.steering.as_mut() {
            steering
                .place(number, &mut self.launch.fds, self.rescue.take())
                .map_err(|e| format!("cannot open a listening socket for worker {number}: {e}"))?;
        }
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
        self.passed = Some(probation.installed().name());
        let line = probation.passed();
        self.outcomes.upgrade(line);
    }

    fn probation_failed(&mut self, probation: Probation, reason: &str) {
        let line = probation.failed(reason);
        self.outcomes.upgrade(line);
    }

    fn steer(&mut self, number: u64) {
        if let Some(steering) = self.steering.as_mut() {
            steering.steer_to(number);
        }
    }

    fn queued(&mut self, number: u64) -> u32 {
        self.steering.as_ref().map_or(0, |s| s.queued(number))
    }
}

/// Sends a control client its answer, if one waits.
fn answer(client: Option<UnixStream>, answer: &str) {
    if let Some(mut c) = client {
        let _ = c.write_all(answer.as_bytes());
    }
}
