//! What the program is told about its run.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::listener::Listener;
use crate::shutdown::Shutdown;

/// The run-time state handed to the program in each worker (or, in fallback
/// mode, in the only process).
#[derive(Debug)]
#[non_exhaustive]
pub struct State {
    /// Whether the program runs under an overseer master. `false` in fallback
    /// mode, where the program runs directly with its listeners bound in-process.
    pub enabled: bool,
    /// SHA-256 (hex) of the running binary; empty when unknown.
    pub id: String,
    /// When this worker started.
    pub started_at: SystemTime,
    /// The listening sockets, in the order of the configured addresses.
    pub listeners: Vec<Listener>,
    /// The configured addresses, in the same order.
    pub addresses: Vec<String>,
    /// The listener names (`LISTEN_FDNAMES`), in the same order.
    pub names: Vec<String>,
    /// Path of the running binary.
    pub bin_path: PathBuf,
    /// This worker's number: 1 for the first worker, then 2, 3, …; 0 in fallback mode.
    pub worker: u64,
    /// The configured version, if any.
    pub version: Option<String>,
    /// Fires when the worker must drain: stop accepting, finish in-flight work, return.
    pub shutdown: Shutdown,
    #[cfg(unix)]
    pub(crate) notifier: Option<crate::notify::Notifier>,
}

impl State {
    /// Tells the master this worker is ready to serve, so the previous worker
    /// may drain. Needed only with [`crate::Readiness::Notify`]; harmless
    /// otherwise, and in fallback mode.
    pub fn ready(&self) -> Result<()> {
        self.notify("READY=1")
    }

    /// Publishes a one-line status (shown by the master's status and systemd).
    pub fn status(&self, status: &str) -> Result<()> {
        self.notify(&format!("STATUS={}", status.replace('\n', " ")))
    }

    fn notify(&self, message: &str) -> Result<()> {
        #[cfg(unix)]
        if let Some(n) = &self.notifier {
            return n
                .send(message)
                .map_err(|e| Error::io("notifying the master", e));
        }
        let _ = message;
        Ok(())
    }

    /// A handle to the first TCP listener (a duplicate descriptor of the same socket).
    pub fn tcp_listener(&self) -> Result<TcpListener> {
        let listener = self
            .listeners
            .iter()
            .find_map(Listener::as_tcp)
            .ok_or_else(|| Error::Config("no TCP address is configured".into()))?;
        listener
            .try_clone()
            .map_err(|e| Error::io("duplicating the TCP listener", e))
    }
}
