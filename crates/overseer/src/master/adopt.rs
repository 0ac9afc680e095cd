//! A new image of the master takes over what the previous one carried
//! (`carried.rs`): sockets, runtime directory, control socket, workers,
//! probation, history.
//!
//! Everything here works on copies of the carried descriptors and changes
//! nothing the previous image could not find again: on any error the
//! copies are dropped, what this image created (a newly bound socket file,
//! a new control socket) is removed, and the previous image runs again
//! with the originals. Only once [`prepare`] succeeded are the originals
//! closed ([`close_originals`]).

use std::os::fd::RawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

use super::carried::{Carried, SocketState};
use super::child::{self, Worker};
use super::control::{self, ControlSocket};
use super::event::Event;
use super::held::{program_of, Held, Resumed};
use super::reexec::Plan;
use super::run_dir::RunDir;
use super::steer::Steering;
use crate::address::{Address, Named};
use crate::config::Config;
use crate::listener::{self, Listener, Socket};
use crate::log;
use crate::sys;
use crate::upgrade::probation::{Installed, Probation};
use crate::upgrade::swap::Target;
use crate::upgrade::Pending;

/// What [`prepare`] made ready: the launch for the next workers, what the
/// master holds, what the supervisor resumes, and the control socket's
/// listener (its thread starts with the master's).
pub(super) struct Prepared {
    pub launch: sys::Launch,
    pub held: Held,
    pub resumed: Resumed,
    pub control_listener: Option<UnixListener>,
    /// The carried control socket, when this image has another (or none):
    /// its file is removed once the originals are closed.
    pub old_control: Option<ControlSocket>,
}

/// Builds everything this image needs from `state` under `config`, on
/// copies of the carried descriptors, sending worker events to `tx`. In a
/// `fallback` image the carried sockets are kept as they are, whatever the
/// configuration says. On error nothing the previous image needs changed.
pub(super) fn prepare(
    config: &Config,
    state: Carried,
    fallback: Option<String>,
    tx: &Sender<Event>,
) -> Result<Prepared, String> {
    let addresses = config.validate().map_err(|e| e.to_string())?;
    let (program, arg0, args) = program_of(config).map_err(|e| e.to_string())?;
    for fd in state.descriptors() {
        sys::dup_fd(fd).map_err(|e| format!("descriptor {fd} of the state: {e}"))?;
    }
    let mut created = Created::default();
    match build(
        config,
        state,
        fallback,
        tx,
        &addresses,
        program,
        arg0,
        args,
        &mut created,
    ) {
        Ok(p) => Ok(p),
        Err(e) => {
            created.remove();
            Err(e)
        }
    }
}

/// What this image created on disk, removed if it falls back.
#[derive(Default)]
struct Created {
    socket_files: Vec<std::path::PathBuf>,
    control: Option<std::path::PathBuf>,
}

impl Created {
    fn remove(self) {
        for path in self.socket_files {
            let _ = std::fs::remove_file(path);
        }
        if let Some(path) = self.control {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build(
    config: &Config,
    state: Carried,
    fallback: Option<String>,
    tx: &Sender<Event>,
    addresses: &[Named<Address>],
    program: std::path::PathBuf,
    arg0: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    created: &mut Created,
) -> Result<Prepared, String> {
    let now = Instant::now();
    let gap_ms = state.gap_ms(sys::monotonic_ns());
    // The sockets: each configured address served by the carried socket of
    // the same address, else bound anew; carried ones left over retire.
    let current: Vec<usize> = (0..state.sockets.len())
        .filter(|&i| !state.sockets[i].retired)
        .collect();
    let mut slots: Vec<(Option<usize>, String)> = Vec::new();
    let mut bound: Vec<Option<Socket>> = Vec::new();
    if fallback.is_some() || addresses.is_empty() {
        // As carried (a fallback, or sockets taken from socket activation
        // without configured addresses).
        for &i in &current {
            slots.push((Some(i), state.sockets[i].name.clone()));
            bound.push(None);
        }
    } else {
        let mut used = vec![false; state.sockets.len()];
        for (i, a) in addresses.iter().enumerate() {
            let name = listener::fd_name(a.name.as_deref(), i);
            let found = (0..state.sockets.len())
                .find(|&j| !used[j] && state.sockets[j].address == a.address.text);
            match found {
                Some(j) => {
                    used[j] = true;
                    slots.push((Some(j), name));
                    bound.push(None);
                }
                None => {
                    let socket = listener::bind_one(
                        &a.address,
                        name.clone(),
                        config.backlog,
                        config.steer_connections,
                    )
                    .map_err(|e| e.to_string())?;
                    if let Some(p) = &socket.unix_path {
                        created.socket_files.push(p.clone());
                    }
                    log::info!("bound {} for the new configuration", a.address);
                    slots.push((None, name));
                    bound.push(Some(socket));
                }
            }
        }
    }
    let described = |i: usize| {
        (
            state.sockets[i].address.clone(),
            state.sockets[i].name.clone(),
        )
    };
    let before: Vec<(String, String)> = current.iter().map(|&i| described(i)).collect();
    let mut sockets = Vec::with_capacity(slots.len());
    for ((slot, name), fresh) in slots.iter().zip(bound) {
        match (slot, fresh) {
            (Some(i), _) => sockets.push(carried_socket(&state.sockets[*i], name.clone())?),
            (None, Some(s)) => sockets.push(s),
            (None, None) => {}
        }
    }
    let after: Vec<(String, String)> = sockets
        .iter()
        .map(|s| (s.address.clone(), s.name.clone()))
        .collect();
    let sockets_changed = before != after;
    let in_use: Vec<usize> = slots.iter().filter_map(|(s, _)| *s).collect();
    let mut retired = Vec::new();
    for (i, s) in state.sockets.iter().enumerate() {
        if !in_use.contains(&i) {
            retired.push(carried_socket(s, s.name.clone())?);
        }
    }
    // The runtime directory, the control socket.
    let lock = match state.run_dir.lock_fd {
        Some(fd) => Some(
            sys::dup_fd(fd)
                .map(std::fs::File::from)
                .map_err(|e| format!("the runtime directory's lock: {e}"))?,
        ),
        None => None,
    };
    let run_dir = RunDir::adopted(Path::new(&state.run_dir.path), lock);
    let carried_control = match &state.control {
        Some(c) => Some(control::adopt(c).map_err(|e| e.to_string())?),
        None => None,
    };
    let wanted = config.control_socket.as_deref();
    let (control, control_listener, old_control) = match (wanted, carried_control) {
        (Some(path), Some((socket, listener))) if socket.path() == path => {
            (Some(socket), Some(listener), None)
        }
        (Some(path), old) => {
            let (socket, listener) = control::bind(path).map_err(|e| e.to_string())?;
            created.control = Some(path.to_path_buf());
            log::info!("control socket at {}", path.display());
            (Some(socket), Some(listener), old.map(|(s, _)| s))
        }
        (None, old) => (None, None, old.map(|(s, _)| s)),
    };
    // The workers, their notify relays started again.
    let h = &state.handover;
    let mut workers = Vec::new();
    for w in h.serving.iter().chain(&h.starting).chain(&h.draining) {
        if let Some(fd) = w.notify_fd {
            let worker = Worker::adopt(w.number, w.pid, fd, run_dir.path(), tx)
                .map_err(|e| e.to_string())?;
            workers.push(worker);
        }
    }
    let probation = match &state.probation {
        Some(p) => {
            let target = Target::resolve(Path::new(&p.path))
                .map_err(|e| format!("the release on probation at {:?}: {e}", p.path))?;
            let (reply, verdict) = mpsc::channel();
            let installed = Installed {
                target,
                sha256: p.sha256.clone(),
                version: p.version.clone(),
                tag: p.tag.clone(),
                via: None,
                reply,
            };
            let pending = Pending {
                sha256: p.sha256.clone(),
                version: p.version.clone(),
                tag: p.tag.clone(),
                verdict,
            };
            let ready_at = p
                .ready_ago_ms
                .map(|ms| super::carried::instant_ago(now, ms, gap_ms));
            let probation = Probation::resume(
                installed,
                p.worker,
                Duration::from_millis(p.period_ms),
                ready_at,
            );
            Some((probation, pending))
        }
        None => None,
    };
    let client = match state.client_fd {
        Some(fd) => Some(UnixStream::from(
            sys::dup_fd(fd).map_err(|e| format!("the waiting control client: {e}"))?,
        )),
        None => None,
    };
    let steering = match &state.steering {
        Some(carried) => Some(Steering::adopt(carried, &sockets, config.backlog)?),
        None => None,
    };
    let launch = child::launch(program, arg0, args, &sockets);
    let held = Held {
        sockets,
        retired,
        // Every worker running now may use a retired socket (one retired
        // by an earlier re-exec too): they close once those workers are gone.
        retire_before: state.handover.next_number,
        run_dir,
        control,
        plan: Some(Plan {
            exe: state.master_exe.clone().into(),
            argv: state.argv.clone(),
            config_text: config.config_text.clone(),
        }),
    };
    Ok(Prepared {
        launch,
        held,
        resumed: Resumed {
            state,
            probation,
            workers,
            client,
            gap_ms,
            sockets_changed,
            fallback,
            at: now,
            steering,
        },
        control_listener,
        old_control,
    })
}

/// A carried socket, through a copy of its descriptor, called `name`.
fn carried_socket(s: &SocketState, name: String) -> Result<Socket, String> {
    let fd = sys::dup_fd(s.fd).map_err(|e| format!("the socket for {}: {e}", s.address))?;
    let listener =
        Listener::from_fd(fd).map_err(|e| format!("the socket for {}: {e}", s.address))?;
    Ok(Socket {
        name,
        address: s.address.clone(),
        listener,
        unix_path: s.unix_path.clone().map(Into::into),
    })
}

/// Closes the carried descriptors themselves (this image holds copies).
pub(super) fn close_originals(fds: &[RawFd]) {
    for &fd in fds {
        if let Ok(owned) = sys::adopt_fd(fd) {
            drop(owned);
        }
    }
}
