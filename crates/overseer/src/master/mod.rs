//! The master: binds the sockets once, starts workers, hands over between
//! them, forwards signals and proxies the exit status.
//!
//! The master never serves traffic. Its listening sockets stay open for its
//! whole life, so a connection that arrives while no worker accepts waits in
//! the kernel backlog instead of being refused.

mod child;
mod control;
mod event;
mod handover;
mod readiness;
mod relay;
mod run_dir;
mod signals;
mod supervisor;
mod systemd;

use std::convert::Infallible;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::OnceLock;

use crate::binary_id::BinaryId;
use crate::config::{Config, Program, Readiness};
use crate::error::{Error, Result};
use crate::fallback::Failed;
use crate::listener::{self, Socket};
use crate::log;
use crate::sockets;
use crate::sys;
use crate::upgrade::{self, ToSupervisor};
use crate::withheld::Withheld;
use event::Event;
use handover::Outcome;
use run_dir::RunDir;
use supervisor::{Settings, Supervisor};

/// The channel into the running master's loop, for `restart()`.
static MASTER: OnceLock<Sender<Event>> = OnceLock::new();

/// Asks the master running in this process for a restart.
pub(crate) fn request_restart() -> Result<()> {
    let tx = MASTER.get().ok_or(Error::NotRunning)?;
    tx.send(Event::Restart).map_err(|_| Error::NotRunning)
}

/// Whether this process is running a master.
pub(crate) fn is_master() -> bool {
    MASTER.get().is_some()
}

/// Finds a command the way a shell would: a path with a slash as given (an
/// executable file there), otherwise the first executable file of that name
/// in `PATH`.
fn resolve_command(path: &Path) -> Result<PathBuf> {
    match which::which(path) {
        // `which` makes a relative path absolute; it is kept as given.
        Ok(_) if path.components().count() > 1 => Ok(path.to_path_buf()),
        Ok(found) => Ok(found),
        Err(_) => Err(Error::Spawn {
            program: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such executable"),
        }),
    }
}

/// Runs the master until the service ends, then ends this process the way
/// the last serving worker ended. Returns only on a set-up error, before any
/// worker was started, with the sockets if they were open by then: adopted
/// descriptors can be taken only once, so fallback mode serves those.
pub(crate) fn run(config: &Config) -> std::result::Result<Infallible, Failed> {
    let addresses = config.validate()?;
    let (program, arg0, args) = match &config.program {
        Program::Function(_) => {
            let exe = std::env::current_exe().map_err(Error::BinaryPath)?;
            let mut argv = std::env::args_os();
            let arg0 = argv.next().unwrap_or_else(|| exe.clone().into_os_string());
            (exe, arg0, argv.collect::<Vec<OsString>>())
        }
        Program::Command { path, args } => {
            let resolved = resolve_command(path)?;
            (resolved, path.clone().into_os_string(), args.clone())
        }
    };
    let run_dir = RunDir::create()?;
    let sockets = sockets::open(&addresses, config.backlog)?;
    let launch = child::launch(program, arg0, args, &sockets);
    match serve(config, launch, run_dir, &sockets) {
        Ok(never) => match never {},
        Err(error) => Err(Failed {
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
/// a set-up error.
fn serve(
    config: &Config,
    mut launch: sys::Launch,
    run_dir: RunDir,
    sockets: &[Socket],
) -> Result<Infallible> {
    let program = launch.program.clone();
    let withheld = withheld_credentials(config);
    child::withhold(&mut launch, &withheld);
    // Before any thread starts, so that every thread the master starts
    // inherits the mask and only the signal thread takes these signals; a
    // set-up error drops the guard, and the fallback runs with the mask the
    // process had.
    let _blocked = sys::block_signals(&signals::handled(config.restart_signal))
        .map_err(|e| Error::io("blocking signals", e))?;
    let (tx, rx) = mpsc::channel();
    // The control socket first: its path is the set-up step most likely to
    // fail, and nothing else has started yet if it does.
    let control = match &config.control_socket {
        Some(path) => Some(control::start(path, tx.clone())?),
        None => None,
    };
    let remove_control = || {
        if let Some(c) = &control {
            c.remove();
        }
    };
    if let Err(e) = signals::spawn(config.restart_signal, tx.clone()) {
        remove_control();
        return Err(e);
    }
    let _ = MASTER.set(tx.clone());
    let settings = Settings {
        restart_signal: config.restart_signal,
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
    };
    let supervisor = Supervisor::new(
        settings,
        launch,
        BinaryId::new(program.clone()),
        run_dir.path().to_path_buf(),
        tx.clone(),
        rx,
    );
    // Not earlier: a set-up error makes `run` start the program in this
    // process instead (fallback), which should keep the allocator's
    // defaults; only the upgrade thread's start can still fail after this.
    sys::tune_malloc_for_master();
    let to_supervisor = ToSupervisor::new(move |report| tx.send(Event::Upgrade(report)).is_ok());
    if let Err(e) = upgrade::start(
        &config.upgrade,
        &program,
        config.version.clone(),
        to_supervisor,
        supervisor.stop_flag(),
        withheld,
    ) {
        remove_control();
        return Err(e);
    }
    let outcome = supervisor.run();
    listener::remove_socket_files(sockets);
    remove_control();
    run_dir.close();
    match outcome {
        Outcome::Exit(code) => std::process::exit(code),
        Outcome::Signal(signal) => {
            log::debug!("ending by {} like the worker", signals::name(signal));
            sys::disable_core_dumps();
            sys::die_by_signal(signal)
        }
    }
}
