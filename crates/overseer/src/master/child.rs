//! One worker process as the master holds it: its pid and its private
//! notify socket, with the relay that reads it. Where the worker is in its
//! life is the handover's business (`handover.rs`).

use std::ffi::OsString;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::event::Event;
use crate::error::{Error, Result};
use crate::listener::Socket;
use crate::notify::{NotifyCloser, NotifyReceiver};
use crate::protocol::*;
use crate::sys::{self, ChildSpec};
use crate::withheld::Withheld;

/// How to start a worker: fixed for the master's life except the binary's ID.
#[derive(Debug)]
pub(crate) struct LaunchSpec {
    pub program: PathBuf,
    pub arg0: OsString,
    pub args: Vec<OsString>,
    /// The master's environment without the variables it sets itself and
    /// those withheld.
    pub base_env: Vec<(OsString, OsString)>,
    /// The release source's credentials, kept from workers and probes.
    pub withheld: Withheld,
    pub fds: Vec<RawFd>,
    pub names: Vec<String>,
    pub addresses: Vec<String>,
    pub version: Option<String>,
}

impl LaunchSpec {
    pub fn new(
        program: PathBuf,
        arg0: OsString,
        args: Vec<OsString>,
        sockets: &[Socket],
        version: Option<String>,
    ) -> Self {
        let base_env = std::env::vars_os()
            .filter(|(k, _)| !WORKER_VARS.iter().any(|v| k == v))
            .collect();
        LaunchSpec {
            program,
            arg0,
            args,
            base_env,
            fds: sockets
                .iter()
                .map(|s| s.listener.as_fd().as_raw_fd())
                .collect(),
            names: sockets.iter().map(|s| s.name.clone()).collect(),
            addresses: sockets.iter().map(|s| s.address.clone()).collect(),
            version,
            withheld: Withheld::default(),
        }
    }

    /// Leaves the `withheld` variables out of the workers' environment (and
    /// keeps them for the readiness probes').
    pub fn withhold(&mut self, withheld: Withheld) {
        self.base_env.retain(|(k, _)| !withheld.contains(k));
        self.withheld = withheld;
    }
}

/// A worker process.
#[derive(Debug)]
pub(crate) struct Worker {
    pub number: u64,
    pub pid: Pid,
    /// Set once this `Worker` is dropped (the process was reaped): ends
    /// its notify relay and readiness watcher.
    gone: Arc<AtomicBool>,
    /// Ends the notify relay's wait when the worker is gone.
    notify_closer: Option<NotifyCloser>,
}

impl Worker {
    /// Starts worker `number`. Must run on the master's long-lived thread
    /// (the parent-death signal is tied to the spawning thread).
    pub fn spawn(
        spec: &LaunchSpec,
        number: u64,
        bin_id: &str,
        run_dir: &Path,
        tx: &Sender<Event>,
    ) -> Result<Worker> {
        let notify_path = run_dir.join(format!("worker-{number}.sock"));
        let receiver = NotifyReceiver::bind(&notify_path)
            .map_err(|e| Error::io(format!("binding {}", notify_path.display()), e))?;
        let mut env = spec.base_env.clone();
        let mut set = |k: &str, v: String| env.push((k.into(), v.into()));
        set(LISTEN_FDS, spec.fds.len().to_string());
        set(LISTEN_FDNAMES, spec.names.join(":"));
        set(
            crate::notify::NOTIFY_SOCKET,
            notify_path.to_string_lossy().into_owned(),
        );
        set(OVERSEER_MASTER_PID, std::process::id().to_string());
        set(OVERSEER_WORKER, number.to_string());
        set(OVERSEER_BIN_ID, bin_id.to_string());
        set(
            OVERSEER_BIN_PATH,
            spec.program.to_string_lossy().into_owned(),
        );
        set(OVERSEER_ADDRESSES, spec.addresses.join("\n"));
        if let Some(v) = &spec.version {
            set(OVERSEER_VERSION, v.clone());
        }
        let child = ChildSpec {
            program: spec.program.clone(),
            arg0: spec.arg0.clone(),
            args: spec.args.clone(),
            env,
            fds: spec.fds.clone(),
            listen_pid: true,
            die_with_parent: true,
        };
        let pid = sys::spawn(&child).map_err(|source| Error::Spawn {
            program: spec.program.clone(),
            source,
        })?;
        let pid = Pid::from_raw(pid as i32);
        let gone = Arc::new(AtomicBool::new(false));
        let notify_closer = receiver.closer().ok();
        if let Err(e) = super::relay::start(receiver, number, gone.clone(), tx.clone()) {
            // Without its notify relay the worker could never become ready.
            let _ = kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            return Err(e);
        }
        Ok(Worker {
            number,
            pid,
            gone,
            notify_closer,
        })
    }

    /// A flag set once this `Worker` is dropped (the process was reaped), for
    /// threads that watch it.
    pub fn gone_flag(&self) -> Arc<AtomicBool> {
        self.gone.clone()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.gone.store(true, Ordering::SeqCst);
        if let Some(closer) = &self.notify_closer {
            closer.close();
        }
    }
}

/// Describes how a process ended.
pub(crate) fn describe_exit(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, sig, core) => {
            format!("signal {sig}{}", if *core { " (core dumped)" } else { "" })
        }
        other => format!("{other:?}"),
    }
}
