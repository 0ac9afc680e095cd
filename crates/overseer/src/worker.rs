//! The worker side: recognising that this process is a worker, adopting the
//! inherited sockets, turning SIGTERM into the shutdown notification, and
//! running the program.

use std::sync::OnceLock;
use std::time::SystemTime;

use crate::config::{Config, ProgramFn, Readiness};
use crate::error::{Error, Result};
use crate::listener::{self, Listener};
use crate::log;
use crate::notify::Notifier;
use crate::protocol::*;
use crate::shutdown::Shutdown;
use crate::state::State;
use crate::sys;

/// The notify socket of this worker's master, once known (for `restart()`).
static NOTIFIER: OnceLock<Notifier> = OnceLock::new();

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Whether this process is a worker started by an overseer master: the
/// worker variables are set and name our actual parent. A program the worker
/// starts itself inherits the variables but has another parent, so it is not
/// mistaken for a worker.
pub(crate) fn is_worker() -> bool {
    let parent = std::os::unix::process::parent_id().to_string();
    env(OVERSEER_WORKER).is_some() && env(OVERSEER_MASTER_PID).as_deref() == Some(parent.as_str())
}

/// Asks this worker's master for a restart.
pub(crate) fn request_restart() -> Result<()> {
    let notifier = NOTIFIER.get().ok_or(Error::NotRunning)?;
    notifier
        .send(&format!("{NOTIFY_RESTART}=1"))
        .map_err(|e| Error::io("asking the master to restart", e))
}

/// Asks the master, over the notify socket, to re-execute itself.
pub(crate) fn request_reload() -> Result<()> {
    let notifier = NOTIFIER.get().ok_or(Error::NotRunning)?;
    notifier
        .send(&format!("{NOTIFY_RELOAD}=1"))
        .map_err(|e| Error::io("asking the master to re-execute itself", e))
}

/// Runs the program as a worker and exits the process when it returns.
pub(crate) fn run(config: &Config, program: &ProgramFn) -> ! {
    let state = match state_from_env(config) {
        Ok(s) => s,
        Err(e) => {
            log::error!("worker cannot start: {e}");
            std::process::exit(1);
        }
    };
    if let Some(n) = &state.notifier {
        let _ = NOTIFIER.set(n.clone());
    }
    if let Err(e) = watch_signals(state.shutdown.clone()) {
        log::warning!("cannot watch SIGTERM, graceful shutdown disabled: {e}");
    }
    if config.readiness == Readiness::Started {
        if let Err(e) = state.ready() {
            log::warning!("cannot report readiness: {e}");
        }
    }
    log::debug!("worker {} running the program", state.worker);
    program(state);
    std::process::exit(0)
}

/// Builds the worker's `State` from the inherited environment.
fn state_from_env(config: &Config) -> Result<State> {
    let listeners = take_listeners()?;
    let n = listeners.len();
    let names: Vec<String> = match env(LISTEN_FDNAMES) {
        Some(v) => v.split(':').map(str::to_string).collect(),
        None => (0..n).map(|i| format!("listener{i}")).collect(),
    };
    let addresses: Vec<String> = match env(OVERSEER_ADDRESSES) {
        Some(v) => v.lines().map(str::to_string).collect(),
        None => listeners.iter().map(Listener::local_addr_string).collect(),
    };
    // A binary configured with no address serves whatever the master got
    // from socket activation.
    if !config.addresses.is_empty() && config.addresses.len() != n {
        log::warning!(
            "this binary configures {} addresses but the master passed {n} sockets; \
             the master's addresses change only when it is restarted",
            config.addresses.len()
        );
    }
    Ok(State {
        enabled: true,
        id: env(OVERSEER_BIN_ID).unwrap_or_default(),
        started_at: SystemTime::now(),
        listeners,
        addresses,
        names,
        bin_path: env(OVERSEER_BIN_PATH)
            .map(Into::into)
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_default(),
        worker: env(OVERSEER_WORKER)
            .and_then(|w| w.parse().ok())
            .unwrap_or(0),
        // The binary's own version wins: after an upgrade the master still runs the old one.
        version: config.version.clone().or_else(|| env(OVERSEER_VERSION)),
        shutdown: Shutdown::new(),
        notifier: Notifier::from_env(),
    })
}

/// Adopts the sockets passed by socket activation (`LISTEN_FDS` at fds 3..).
fn take_listeners() -> Result<Vec<Listener>> {
    let count =
        listener::passed_count()?.ok_or_else(|| Error::Protocol("LISTEN_PID is not set".into()))?;
    listener::adopt_passed(count)
}

/// Turns the first SIGTERM into the shutdown notification; a second SIGTERM
/// terminates at once (so a program that ignores the notification can still
/// be stopped by hand). On platforms without a parent-death signal, also
/// triggers shutdown and exits if the master disappears.
pub(crate) fn watch_signals(shutdown: Shutdown) -> std::io::Result<()> {
    use signal_hook::consts::SIGTERM;
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM])?;
    std::thread::Builder::new()
        .name("overseer-signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                if shutdown.is_triggered() {
                    sys::die_by_signal(SIGTERM);
                }
                log::debug!("SIGTERM: draining");
                shutdown.trigger();
            }
        })?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    if is_worker() {
        let parent = std::os::unix::process::parent_id();
        std::thread::Builder::new()
            .name("overseer-parent".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_millis(500));
                if std::os::unix::process::parent_id() != parent {
                    log::error!("the master exited; stopping");
                    std::process::exit(1);
                }
            })?;
    }
    Ok(())
}
