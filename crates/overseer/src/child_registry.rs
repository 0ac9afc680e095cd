//! The registry of the master's children that are not workers: the sanity
//! check of a new binary, the check before a re-exec and readiness probes.
//! As PID 1 the master reaps every child with `waitpid(-1)`; a child
//! registered here has its status kept for its owner instead of lost.
//!
//! Such a child holds every descriptor of the master from its fork to its
//! exec, which closes those marked close-on-exec. Killed with the master in
//! between, it would keep the service's listening sockets (and the control
//! socket) open a moment longer than the master, and a master started
//! right then could not bind them: the master's own sockets are
//! registered here ([`keep_out`]) and closed in each child [`spawn`]
//! starts, before its exec.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Registered pids, with their status once reaped by the master (an exit
/// code, or minus the signal number).
static REGISTERED: Mutex<BTreeMap<i32, Option<i32>>> = Mutex::new(BTreeMap::new());

fn lock() -> MutexGuard<'static, BTreeMap<i32, Option<i32>>> {
    REGISTERED.lock().unwrap_or_else(|e| e.into_inner())
}

/// The master's descriptors no child should hold (see the module's docs).
static KEPT_OUT: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

fn kept_out() -> MutexGuard<'static, Vec<RawFd>> {
    KEPT_OUT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers `fd`, one of the master's own sockets, to be closed in every
/// child [`keep_out_of`] prepares.
pub(crate) fn keep_out(fd: RawFd) {
    let mut fds = kept_out();
    if !fds.contains(&fd) {
        fds.push(fd);
    }
}

/// `fd` is about to be closed: its number may soon be another descriptor's.
pub(crate) fn let_go(fd: RawFd) {
    kept_out().retain(|&f| f != fd);
}

/// Has the child `cmd` starts close the registered descriptors, and leaves
/// the variables of a master's re-exec (which name descriptors of the
/// master) out of its environment.
fn keep_out_of(cmd: &mut Command) {
    use crate::protocol::{
        OVERSEER_MASTER_FALLBACK, OVERSEER_MASTER_PREVIOUS, OVERSEER_MASTER_STATE,
    };
    for var in [
        OVERSEER_MASTER_STATE,
        OVERSEER_MASTER_PREVIOUS,
        OVERSEER_MASTER_FALLBACK,
    ] {
        cmd.env_remove(var);
    }
    let fds = kept_out().clone();
    if !fds.is_empty() {
        crate::sys::close_in_child(cmd, fds);
    }
}

/// Spawns `cmd`, registered before anyone can reap it, without the
/// master's sockets (see [`keep_out`]).
pub(crate) fn spawn(cmd: &mut Command) -> io::Result<Child> {
    keep_out_of(cmd);
    let mut registered = lock();
    let child = cmd.spawn()?;
    registered.insert(child.id() as i32, None);
    Ok(child)
}

/// `Some(status)` once the child has ended (`status` is `None` when unknown).
pub(crate) fn try_wait(child: &mut Child, pid: i32) -> Option<Option<i32>> {
    match child.try_wait() {
        Ok(Some(status)) => Some(status.code().or(status.signal().map(|s| -s))),
        Ok(None) => None,
        // Reaped by the master (as PID 1): the status was kept here.
        Err(_) => match lock().get(&pid) {
            Some(Some(status)) => Some(Some(*status)),
            Some(None) => None,
            None => Some(None),
        },
    }
}

/// Waits (bounded) for a child that was just killed.
pub(crate) fn wait(child: &mut Child, pid: i32) -> Option<Option<i32>> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Some(s) = try_wait(child, pid) {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Drops a child's registration.
pub(crate) fn forget(pid: i32) {
    lock().remove(&pid);
}

/// Ends every registered child still running (with its process group, when
/// it leads one) and waits, bounded, until each has ended: a master that
/// stops leaves no check or probe behind. One still running a new binary's
/// check would keep that file busy (`ETXTBSY`) for whoever replaces it next.
pub(crate) fn end_all() {
    use nix::sys::signal::{kill, Signal};
    let pids: Vec<i32> = lock()
        .iter()
        .filter(|(_, status)| status.is_none())
        .map(|(pid, _)| *pid)
        .collect();
    for &pid in &pids {
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    for &pid in &pids {
        // Reaped here, or by its owner's thread (then ECHILD here).
        while Instant::now() < deadline {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(2)),
                _ => break,
            }
        }
    }
}

/// Reaps every ended child (PID 1 mode): registered ones have their status
/// kept, the rest go to `on_exit`.
pub(crate) fn reap_all(mut on_exit: impl FnMut(Pid, WaitStatus)) {
    let mut registered = lock();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(status) => {
                let Some(pid) = status.pid() else { continue };
                if let Some(slot) = registered.get_mut(&pid.as_raw()) {
                    *slot = match status {
                        WaitStatus::Exited(_, code) => Some(code),
                        WaitStatus::Signaled(_, sig, _) => Some(-(sig as i32)),
                        _ => continue,
                    };
                    continue;
                }
                on_exit(pid, status);
            }
        }
    }
}
