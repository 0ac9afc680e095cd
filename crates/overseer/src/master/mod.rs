//! The master: binds the sockets once, starts workers, hands over between
//! them, forwards signals and proxies the exit status.
//!
//! The master never serves traffic. Its listening sockets stay open for its
//! whole life, so a connection that arrives while no worker accepts waits in
//! the kernel backlog instead of being refused.

mod adopt;
mod carried;
mod child;
mod control;
mod event;
mod handover;
mod held;
mod readiness;
mod reexec;
mod relay;
mod run_dir;
mod signals;
mod steer;
mod supervisor;
mod systemd;

use std::convert::Infallible;
use std::ffi::OsString;
use std::sync::mpsc::{self, Sender};
use std::sync::OnceLock;

use std::os::fd::AsRawFd;

use crate::binary_id::BinaryId;
use crate::child_registry;
use crate::config::{Config, Program, Readiness};
use crate::error::{Error, Result};
use crate::fallback::Failed;
use crate::listener::Socket;
use crate::log;
use crate::sockets;
use crate::sys;
use crate::upgrade::{self, ToSupervisor};
use crate::withheld::Withheld;
use event::Event;
use handover::Outcome;
use held::{program_of, Held, Resumed};
use run_dir::RunDir;
use supervisor::{Settings, Supervisor};

/// The channel into the running master's loop, for `restart()`.
static MASTER: OnceLock<Sender<Event>> = OnceLock::new();

/// Asks the master running in this process for a restart.
pub(crate) fn request_restart() -> Result<()> {
    let tx = MASTER.get().ok_or(Error::NotRunning)?;
    tx.send(Event::Restart).map_err(|_| Error::NotRunning)
}

/// Asks the master running in this process to re-execute itself.
pub(crate) fn request_reload() -> Result<()> {
    let tx = MASTER.get().ok_or(Error::NotRunning)?;
    tx.send(Event::Reload {
        source: "reload()".into(),
        client: None,
    })
    .map_err(|_| Error::NotRunning)
}

/// In a new image of a master that cannot reach `run`: the previous image
/// runs again (see [`reexec::Incoming::fall_back`]). Returns in any other
/// process.
pub(crate) fn give_way(reason: &str) {
    if let Some(incoming) = reexec::Incoming::from_env() {
        let argv: Vec<OsString> = std::env::args_os().collect();
        incoming.fall_back(&argv, reason)
    }
}

/// See [`crate::fallback_config_text`].
pub(crate) fn fallback_config_text() -> Option<String> {
    reexec::Incoming::fallback_config_text()
}

/// Whether this process is running a master.
pub(crate) fn is_master() -> bool {
    MASTER.get().is_some()
}

/// Runs the master until the service ends, then ends this process the way
/// the last serving worker ended. Returns only on a set-up error, before any
/// worker was started, with the sockets if they were open by then: adopted
/// descriptors can be taken only once, so fallback mode serves those.
///
/// A new image of a master that re-executed itself takes over its state
/// instead ([`adopt`]), and never returns.
pub(crate) fn run(config: &Config) -> std::result::Result<Infallible, Failed> {
    reexec::answer_check_if_asked(config);
    if let Some(incoming) = reexec::Incoming::from_env() {
        adopt(config, incoming)
    }
    let addresses = config.validate()?;
    let (program, arg0, args) = program_of(config)?;
    let plan = match reexec::Plan::first(config) {
        Ok(plan) => Some(plan),
        Err(e) => {
            log::warning!(
                "this master cannot re-execute itself: its executable is not found ({e})"
            );
            None
        }
    };
    let run_dir = RunDir::create()?;
    let sockets = sockets::open(&addresses, config.backlog, config.steer_connections)?;
    let launch = child::launch(program, arg0, args, &sockets);
    let held = Held {
        sockets,
        retired: Vec::new(),
        retire_before: 0,
        run_dir,
        control: None,
        plan,
    };
    match serve(config, launch, held, None, mpsc::channel()) {
        Ok(never) => match never {},
        Err((error, sockets)) => Err(Failed {
            error,
            sockets: Some(sockets),
        }),
    }
}

/// The variables of the master's environment that the fetcher reads for
/// credentials, less those `Config::pass_env` names: its children do not get
/// them. Said once, by name.
fn withheld_credentials(config: &Config) -> Withheld {
    let Some(fetcher) = &config.upgrade.fetcher else {
        return Withheld::default();
    };
    let patterns = match fetcher.lock() {
        Ok(f) => f.credential_env(),
        Err(e) => e.into_inner().credential_env(),
    };
    let withheld = Withheld::from_env(&patterns, &config.pass_env);
    let names = withheld.names();
    if !names.is_empty() {
        log::info!(
            "withheld from the workers, the sanity check and readiness probes, as the release source's credentials: {} (Config::pass_env, or --pass-env, passes one on)",
            names.join(", ")
        );
    }
    withheld
}

/// Starts the master's threads and its supervisor over open sockets and runs
/// the service until it ends, starting workers by `launch`. Returns only on
/// a set-up error, with the sockets.
fn serve(
    config: &Config,
    mut launch: sys::Launch,
    mut held: Held,
    resumed: Option<(Resumed, Option<std::os::unix::net::UnixListener>)>,
    (tx, rx): (Sender<Event>, mpsc::Receiver<Event>),
) -> std::result::Result<Infallible, (Error, Vec<Socket>)> {
    let program = launch.program.clone();
    let withheld = withheld_credentials(config);
    child::withhold(&mut launch, &withheld);
    // Before any thread starts, so that every thread the master starts
    // inherits the mask and only the signal thread takes these signals; a
    // set-up error drops the guard, and the fallback runs with the mask the
    // process had.
    let _blocked = match sys::block_signals(&signals::handled(
        config.restart_signal,
        config.reload_signal,
    )) {
        Ok(b) => b,
        Err(e) => return Err((Error::io("blocking signals", e), held.sockets)),
    };
    // The control socket first: its path is the set-up step most likely to
    // fail, and nothing else has started yet if it does.
    let (resumed, control_listener) = match resumed {
        Some((r, l)) => (Some(r), l),
        None => (None, None),
    };
    match (&held.control, control_listener) {
        (Some(c), Some(listener)) => {
            if let Err(e) = control::serve_on(listener, tx.clone()) {
                c.remove();
                return Err((e, held.sockets));
            }
        }
        _ if resumed.is_some() => {}
        _ => {
            if let Some(path) = &config.control_socket {
                match control::start(path, tx.clone()) {
                    Ok(c) => held.control = Some(c),
                    Err(e) => return Err((e, held.sockets)),
                }
            }
        }
    }
    // No child but a worker may hold them, even for a moment.
    for s in held.sockets.iter().chain(&held.retired) {
        child_registry::keep_out(s.listener.as_fd().as_raw_fd());
    }
    if let Some(c) = &held.control {
        child_registry::keep_out(c.listener_fd());
    }
    if let Err(e) = signals::spawn(config.restart_signal, config.reload_signal, tx.clone()) {
        if let Some(c) = &held.control {
            c.remove();
        }
        return Err((e, held.sockets));
    }
    let _ = MASTER.set(tx.clone());
    let settings = Settings {
        restart_signal: config.restart_signal,
        reload_signal: config.reload_signal,
        reexec_after_upgrade: config.reexec_after_upgrade
            && matches!(config.program, Program::Function(_)),
        terminate_timeout: config.terminate_timeout,
        ready_timeout: config.ready_timeout,
        ready_on_spawn: matches!(config.program, Program::Command { .. })
            && config.readiness == Readiness::Started,
        readiness: config.readiness.clone(),
        no_restart: config.no_restart,
        probation: config.upgrade.probation,
        no_restart_after_fetch: config.upgrade.no_restart_after_fetch,
        version: config.version.clone(),
        withheld: withheld.clone(),
        steer: config.steer_connections,
        backlog: config.backlog,
    };
    let gate = upgrade::Gate::default();
    let (supervisor, pending) = Supervisor::new(
        settings,
        launch,
        BinaryId::new(program.clone()),
        held,
        gate.clone(),
        tx.clone(),
        rx,
        resumed,
    );
    // Not earlier: a set-up error makes `run` start the program in this
    // process instead (fallback), which should keep the allocator's
    // defaults; only the upgrade thread's start can still fail after this.
    sys::tune_malloc_for_master();
    let to_supervisor = ToSupervisor::new(move |report| tx.send(Event::Upgrade(report)).is_ok());
    if let Err(e) = upgrade::start(
        &config.upgrade,
        &program,
        supervisor.version(),
        upgrade::Links {
            supervisor: to_supervisor,
            stopping: supervisor.stop_flag(),
            gate,
        },
        withheld,
        pending,
    ) {
        let held = supervisor.into_held();
        if let Some(c) = &held.control {
            c.remove();
        }
        return Err((e, held.sockets));
    }
    let (outcome, held) = supervisor.run();
    // A re-exec check or readiness probe still running ends with the master.
    crate::child_registry::end_all();
    held.clean_up();
    match outcome {
        Outcome::Exit(code) => std::process::exit(code),
        Outcome::Signal(signal) => {
            log::debug!("ending by {} like the worker", signals::name(signal));
            sys::disable_core_dumps();
            sys::die_by_signal(signal)
        }
    }
}

/// Takes over the state a previous image of this master left (see
/// [`reexec`]): what can fail is done first, before any carried descriptor
/// is taken, so that on failure the previous image runs again with the
/// state as it was. Never returns.
fn adopt(config: &Config, incoming: reexec::Incoming) -> ! {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let state = match incoming.read() {
        Ok(s) => s,
        Err(e) => incoming.fall_back(&argv, &e),
    };
    if let Some(why) = &incoming.fallback {
        log::error!(
            "the new master image could not take over ({why}); the previous one runs again"
        );
    }
    sys::set_program_mask(&state.program_mask);
    let originals = state.descriptors();
    let (tx, rx) = mpsc::channel();
    let prepared = match adopt::prepare(config, state, incoming.fallback.clone(), &tx) {
        Ok(p) => p,
        Err(e) => incoming.fall_back(&argv, &e),
    };
    // The point of no return: the carried descriptors themselves close.
    incoming.close();
    adopt::close_originals(&originals);
    if let Some(old) = &prepared.old_control {
        old.remove();
    }
    let adopt::Prepared {
        launch,
        held,
        resumed,
        control_listener,
        ..
    } = prepared;
    match serve(
        config,
        launch,
        held,
        Some((resumed, control_listener)),
        (tx, rx),
    ) {
        Ok(never) => match never {},
        Err((e, _)) => {
            // Nothing can supervise the workers; they end with this process.
            log::error!("the new master image cannot go on: {e}; the service stops");
            std::process::exit(1)
        }
    }
}
