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
use crate::sys::{self, Launch};
use crate::withheld::Withheld;

/// The master's one [`Launch`] for its workers: `program` run as `arg0`
/// with `args`, the master's environment without the variables it sets
/// itself, the `sockets` at fds 3.. and the variables that describe them
/// (and the master). What differs from one worker to the next is set by
/// [`Worker::spawn`].
pub(crate) fn launch(
    program: PathBuf,
    arg0: OsString,
    args: Vec<OsString>,
    sockets: &[Socket],
) -> Launch {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !WORKER_VARS.iter().any(|v| k == v))
        .collect();
    let mut set = |k: &str, v: String| env.push((k.into(), v.into()));
    set(LISTEN_FDS, sockets.len().to_string());
    let names: Vec<&str> = sockets.iter().map(|s| s.name.as_str()).collect();
    set(LISTEN_FDNAMES, names.join(":"));
    set(OVERSEER_MASTER_PID, std::process::id().to_string());
    set(OVERSEER_BIN_PATH, program.to_string_lossy().into_owned());
    let addresses: Vec<&str> = sockets.iter().map(|s| s.address.as_str()).collect();
    set(OVERSEER_ADDRESSES, addresses.join("\n"));
    Launch {
        program,
        arg0,
        args,
        env,
        fds: sockets
            .iter()
            .map(|s| s.listener.as_fd().as_raw_fd())
            .collect(),
        listen_pid: true,
        die_with_parent: true,
    }
}

/// Leaves the `withheld` variables of the master's environment out of the
/// workers' (those the master sets itself stay).
pub(crate) fn withhold(launch: &mut Launch, withheld: &Withheld) {
    launch
        .env
        .retain(|(k, _)| WORKER_VARS.iter().any(|v| k == v) || !withheld.contains(k));
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
    /// The master's end of its notify socket (owned by the relay thread
    /// for as long as the worker lives), carried across a re-exec.
    pub notify_fd: RawFd,
}

impl Worker {
    /// Starts worker `number` of the binary `bin_id` (of `version`, if
    /// known) by `launch`, with its notify socket in `run_dir`. Must run on
    /// the master's long-lived thread (the parent-death signal is tied to the
    /// spawning thread).
    pub fn spawn(
        launch: &mut Launch,
        number: u64,
        bin_id: &str,
        version: Option<&str>,
        run_dir: &Path,
        tx: &Sender<Event>,
    ) -> Result<Worker> {
        let notify_path = run_dir.join(format!("worker-{number}.sock"));
        let receiver = NotifyReceiver::bind(&notify_path)
            .map_err(|e| Error::io(format!("binding {}", notify_path.display()), e))?;
        launch.set_var(
            crate::notify::NOTIFY_SOCKET,
            notify_path.to_string_lossy().into_owned(),
        );
        launch.set_var(OVERSEER_WORKER, number.to_string());
        launch.set_var(OVERSEER_BIN_ID, bin_id);
        match version {
            Some(v) => launch.set_var(OVERSEER_VERSION, v),
            None => launch.remove_var(OVERSEER_VERSION),
        }
        let pid = sys::spawn(launch).map_err(|source| Error::Spawn {
            program: launch.program.clone(),
            source,
        })?;
        let pid = Pid::from_raw(pid as i32);
        let gone = Arc::new(AtomicBool::new(false));
        let notify_closer = receiver.closer().ok();
        let notify_fd = receiver.raw_fd();
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
            notify_fd,
        })
    }

    /// Takes over worker `number` (`pid`), started by a previous image of
    /// this master, with (a copy of) its notify socket at `notify_fd`
    /// (bound in `run_dir`), and starts its relay again.
    pub fn adopt(
        number: u64,
        pid: i32,
        notify_fd: RawFd,
        run_dir: &Path,
        tx: &Sender<Event>,
    ) -> Result<Worker> {
        let fd = sys::dup_fd(notify_fd)
            .map_err(|e| Error::io(format!("taking over worker {number}'s notify socket"), e))?;
        let receiver = NotifyReceiver::from_fd(fd, run_dir.join(format!("worker-{number}.sock")));
        let gone = Arc::new(AtomicBool::new(false));
        let notify_closer = receiver.closer().ok();
        let notify_fd = receiver.raw_fd();
        super::relay::start(receiver, number, gone.clone(), tx.clone())?;
        Ok(Worker {
            number,
            pid: Pid::from_raw(pid),
            gone,
            notify_closer,
            notify_fd,
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
