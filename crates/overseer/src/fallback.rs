//! Fallback mode: the program runs directly in this process, with its
//! listeners bound in-process, when overseer is unsupported or failed to start.

use std::time::SystemTime;

use crate::config::{Config, Program};
use crate::error::Result;
use crate::listener;
use crate::shutdown::Shutdown;
use crate::state::State;

/// Runs the program directly; returns when it returns.
pub(crate) fn run(config: &Config) -> Result<()> {
    let Program::Function(program) = &config.program else {
        return Err(crate::Error::Config(
            "a command program cannot run without the master".into(),
        ));
    };
    let addresses = config.validate()?;
    let bound = listener::bind_all(&addresses, config.backlog)?;
    let unix_paths: Vec<_> = bound.iter().filter_map(|b| b.unix_path.clone()).collect();
    let listeners = bound.into_iter().map(|b| b.listener).collect();
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
        addresses: addresses.iter().map(|a| a.text.clone()).collect(),
        names: config.listener_names(),
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
