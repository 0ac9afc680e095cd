//! The master's end of the control socket (see [`crate::control`]): a thread
//! accepting connections from the master's own user, each request handed to
//! the supervisor's loop, which answers when it knows the outcome.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use super::Event;
use crate::error::{Error, Result};
use crate::log;

/// What a client asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    Restart,
    Status,
}

/// The whole answer to one request, as sent on the wire.
pub(crate) type Answer = String;

/// An `ok` answer with its `key=value` lines.
pub(crate) fn ok(fields: &str) -> Answer {
    format!("ok\n{fields}")
}

/// An `error:` answer.
pub(crate) fn failed(reason: &str) -> Answer {
    format!("error: {}\n", crate::control::one_line(reason))
}

/// The bound control socket; its file is removed by [`ControlSocket::remove`].
#[derive(Debug)]
pub(crate) struct ControlSocket {
    path: PathBuf,
}

impl ControlSocket {
    /// Removes the socket file (the accepting thread ends with the process).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the control socket and starts its thread.
pub(crate) fn start(path: &Path, tx: Sender<Event>) -> Result<ControlSocket> {
    let err = |what: &str, e: io::Error| {
        Error::io(format!("{what} the control socket {}", path.display()), e)
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| err("creating the directory of", e))?;
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::PathInUse {
                path: path.to_path_buf(),
            });
        }
        // A socket nobody answers on is left over from a master that died.
        if UnixStream::connect(path).is_ok() {
            return Err(Error::Config(format!(
                "another master answers on the control socket {}; give this master its own (`overseer run`: --name or --control)",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(|e| err("replacing the stale file of", e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| err("binding", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err("restricting", e))?;
    log::info!("control socket at {}", path.display());
    std::thread::Builder::new()
        .name("overseer-control".into())
        .spawn(move || accept_loop(listener, tx))
        .map_err(|e| err("starting the thread of", e))?;
    Ok(ControlSocket {
        path: path.to_path_buf(),
    })
}

fn accept_loop(listener: UnixListener, tx: Sender<Event>) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log::debug!("control socket: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if let Err(reason) = peer_allowed(&stream) {
            log::warning!("control socket: refused a connection: {reason}");
            continue;
        }
        let tx = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("overseer-control-client".into())
            .spawn(move || {
                if let Err(e) = serve(stream, &tx) {
                    log::debug!("control socket: {e}");
                }
            });
        if let Err(e) = spawned {
            log::warning!("control socket: cannot start a thread: {e}");
        }
    }
}

fn serve(stream: UnixStream, tx: &Sender<Event>) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let request = match line.trim() {
        "restart" => Request::Restart,
        "status" => Request::Status,
        other => {
            let answer = failed(&format!(
                "unknown request {other:?} (known: restart, status)"
            ));
            return (&stream).write_all(answer.as_bytes());
        }
    };
    let (reply, answer) = mpsc::channel();
    let answer = match tx.send(Event::Control(request, reply)) {
        Ok(()) => answer
            .recv()
            .unwrap_or_else(|_| failed("the master stopped before answering")),
        Err(_) => failed("the master is stopping"),
    };
    (&stream).write_all(answer.as_bytes())
}

/// Only the master's own user (or root) may use the socket.
fn peer_allowed(stream: &UnixStream) -> std::result::Result<(), String> {
    let Some(uid) = peer_uid(stream)? else {
        // The platform does not tell: the file's 0600 mode is the guard.
        return Ok(());
    };
    let own = nix::unistd::geteuid().as_raw();
    if uid == own || uid == 0 {
        Ok(())
    } else {
        Err(format!("uid {uid} is not the master's user ({own})"))
    }
}

/// The connecting process's uid, where the platform tells it.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_uid(stream: &UnixStream) -> std::result::Result<Option<u32>, String> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let creds = getsockopt(stream, PeerCredentials).map_err(|e| e.to_string())?;
    Ok(Some(creds.uid()))
}

#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
))]
fn peer_uid(stream: &UnixStream) -> std::result::Result<Option<u32>, String> {
    let (uid, _) = nix::unistd::getpeereid(stream).map_err(|e| e.to_string())?;
    Ok(Some(uid.as_raw()))
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
)))]
fn peer_uid(_: &UnixStream) -> std::result::Result<Option<u32>, String> {
    Ok(None)
}

/// What the supervisor keeps for control clients: pending `restart`
/// requests and the history shown by `status`.
#[derive(Debug)]
pub(crate) struct Ledger {
    pub started_at: std::time::Instant,
    /// Pending restart answers: `None` until the next worker starts, then
    /// that worker's number.
    waiters: Vec<(Option<u64>, Sender<Answer>)>,
    pub handovers: u64,
    pub failed_handovers: u64,
    pub last_handover: Option<(std::time::Instant, String)>,
    pub last_upgrade: Option<(std::time::Instant, String)>,
}

impl Ledger {
    pub fn new() -> Self {
        Ledger {
            started_at: std::time::Instant::now(),
            waiters: Vec::new(),
            handovers: 0,
            failed_handovers: 0,
            last_handover: None,
            last_upgrade: None,
        }
    }

    /// A restart request waiting for the next handover's outcome.
    pub fn wait_for_next(&mut self, reply: Sender<Answer>) {
        self.waiters.push((None, reply));
    }

    /// Worker `number` was started: it is the handover pending requests wait for.
    pub fn started(&mut self, number: u64) {
        for (n, _) in &mut self.waiters {
            n.get_or_insert(number);
        }
    }

    /// Worker `number` became ready; `handover` when it replaced another.
    pub fn ready(&mut self, number: u64, pid: i32, ready_after: Duration, handover: bool) {
        let ms = ready_after.as_millis();
        if handover {
            self.handovers += 1;
            self.last_handover = Some((
                std::time::Instant::now(),
                format!("worker {number} (pid {pid}) ready after {ms} ms"),
            ));
        }
        let answer = ok(&format!("worker={number}\npid={pid}\nready_ms={ms}\n"));
        self.answer(|n| n == Some(number), &answer);
    }

    /// A handover failed: worker `number` (or, with `None`, a worker that
    /// could not even be spawned) never became ready.
    pub fn failed(&mut self, number: Option<u64>, reason: &str) {
        self.failed_handovers += 1;
        self.last_handover = Some((std::time::Instant::now(), format!("failed: {reason}")));
        self.answer(|n| n == number, &failed(reason));
    }

    /// The master is stopping: nothing pending will complete.
    pub fn stopping(&mut self) {
        self.answer(|_| true, &failed("the master is stopping"));
    }

    /// Records an upgrade's outcome for the status.
    pub fn upgrade(&mut self, what: String) {
        self.last_upgrade = Some((std::time::Instant::now(), what));
    }

    fn answer(&mut self, which: impl Fn(Option<u64>) -> bool, answer: &str) {
        self.waiters.retain(|(n, reply)| {
            if which(*n) {
                let _ = reply.send(answer.to_string());
                false
            } else {
                true
            }
        });
    }
}

/// `TEXT, 5m 12s ago`
pub(crate) fn ago(event: &Option<(std::time::Instant, String)>) -> Option<String> {
    event
        .as_ref()
        .map(|(at, what)| format!("{what}, {} ago", crate::control::human(at.elapsed())))
}
