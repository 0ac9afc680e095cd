//! Fallback mode: the program runs directly in this process, with its
//! listeners bound in-process, when overseer is unsupported or failed to start.
//!
//! Sockets passed to this process by socket activation are served as the
//! master would have served them; if the master had already opened its
//! sockets when it failed, it hands them over (adopted descriptors can be
//! taken only once, and an address systemd holds cannot be bound again).

use std::time::SystemTime;

use crate::address::{Address, Named};
use crate::config::{Config, Program};
use crate::error::{Error, Result};
use crate::listener::Socket;
use crate::shutdown::Shutdown;
use crate::state::State;

/// Why overseer could not start, and the sockets it had open by then.
#[derive(Debug)]
pub(crate) struct Failed {
    pub error: Error,
    pub sockets: Option<Vec<Socket>>,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed {
            error,
            sockets: None,
        }
    }
}

/// Runs the program directly, on `sockets` if the master left some open;
/// returns when the program returns.
pub(crate) fn run(config: &Config, sockets: Option<Vec<Socket>>) -> Result<()> {
    let Program::Function(program) = &config.program else {
        return Err(Error::Config(
            "a command program cannot run without the master".into(),
        ));
    };
    let sockets = match sockets {
        Some(sockets) => sockets,
        None => open(config, &config.validate()?)?,
    };
    let unix_paths: Vec<_> = sockets.iter().filter_map(|s| s.unix_path.clone()).collect();
    let mut listeners = Vec::with_capacity(sockets.len());
    let mut addresses = Vec::with_capacity(sockets.len());
    let mut names = Vec::with_capacity(sockets.len());
    for socket in sockets {
        listeners.push(socket.listener);
        addresses.push(socket.address);
        names.push(socket.name);
    }
    let shutdown = Shutdown::new();
    #[cfg(unix)]
    if let Err(e) = crate::worker::watch_signals(shutdown.clone()) {
        crate::log::warning!("cannot watch SIGTERM: {e}");
    }
    let bin_path = std::env::current_exe().unwrap_or_default();
    let state = State {
        enabled: false,
        id: crate::binary_id::sha256_file(&bin_path).unwrap_or_default(),
        started_at: SystemTime::now(),
        listeners,
        addresses,
        names,
        bin_path,
        worker: 0,
        version: config.version.clone(),
        shutdown,
        #[cfg(unix)]
        notifier: None,
    };
    program(state);
    for path in unix_paths {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Adopts the sockets socket activation passed, binds the other addresses.
#[cfg(unix)]
fn open(config: &Config, addresses: &[Named<Address>]) -> Result<Vec<Socket>> {
    crate::sockets::open(addresses, config.backlog, false)
}

/// Binds the addresses.
#[cfg(not(unix))]
fn open(config: &Config, addresses: &[Named<Address>]) -> Result<Vec<Socket>> {
    crate::listener::bind_all(addresses, config.backlog)
}
