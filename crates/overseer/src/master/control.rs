//! The master's end of the control socket (see [`crate::control`]): a thread
//! accepting connections from the master's own user, each request handed to
//! the supervisor's loop, which answers when it knows the outcome.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmodat, fstatat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::carried;
use super::event::{Answer, Event, Request};
use crate::error::{Error, Result};
use crate::listener::{self, Existing, FileId};
use crate::log;

/// An `ok` answer with its `key=value` lines.
pub(crate) fn ok(fields: &str) -> Answer {
    format!("ok\n{fields}")
}

/// A `refused:` answer: the request's input is wrong, nothing was done.
pub(crate) fn refused(reason: &str) -> Answer {
    format!("refused: {}\n", crate::control::one_line(reason))
}

/// An `error:` answer.
pub(crate) fn failed(reason: &str) -> Answer {
    format!("error: {}\n", crate::control::one_line(reason))
}

/// The bound control socket; its file is removed by [`ControlSocket::remove`].
#[derive(Debug)]
pub(crate) struct ControlSocket {
    /// As configured.
    path: std::path::PathBuf,
    /// The verified directory the socket file is in (see [`start`]).
    dir: File,
    /// The socket file's name in it.
    name: OsString,
    /// The listening socket, owned by the accepting thread for the rest of
    /// the process's life.
    listener_fd: RawFd,
}

impl ControlSocket {
    /// What a re-exec carries of it (its descriptors are kept open).
    pub fn carry(&self) -> carried::ControlState {
        carried::ControlState {
            path: self.path.clone().into_os_string(),
            listener_fd: self.listener_fd,
            dir_fd: self.dir.as_raw_fd(),
            name: self.name.to_string_lossy().into_owned(),
        }
    }

    /// Its path, as configured.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listening socket's descriptor.
    pub fn listener_fd(&self) -> RawFd {
        self.listener_fd
    }

    /// Removes the socket file (the accepting thread ends with the process).
    pub fn remove(&self) {
        let _ = unlinkat(
            Some(self.dir.as_raw_fd()),
            self.name.as_os_str(),
            UnlinkatFlags::NoRemoveDir,
        );
    }
}

/// Binds the control socket and starts its thread.
///
/// Nobody else may be able to move, replace or redirect the socket file, so
/// its directory is made private first and then trusted only through a
/// descriptor: created `0700` when missing, then opened without following a
/// symbolic link (`O_NOFOLLOW`), and its owner and mode checked on that
/// descriptor (`fstat`), not on a path someone could swap in between. It
/// must belong to this user (or root) and be writable by no one else, for
/// the default path and a given one alike. Everything after goes through
/// that descriptor too: the existing entry is examined and a stale one
/// removed relative to it (`fstatat`, `unlinkat`), and once bound the
/// socket file is found there, checked to be this user's socket, and made
/// `0600` relative to it (`fchmodat`). As no one else can write in the
/// directory, the entry checked is the entry changed: a `chmod` by path
/// after `bind` could instead follow a symbolic link swapped in meanwhile.
pub(crate) fn bind(path: &Path) -> Result<(ControlSocket, UnixListener)> {
    let err = |what: &str, e: io::Error| {
        Error::io(format!("{what} the control socket {}", path.display()), e)
    };
    let name = path.file_name().ok_or_else(|| {
        Error::Config(format!(
            "the control socket path {} does not name a file",
            path.display()
        ))
    })?;
    let dir_path = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = private_dir(dir_path, path)?;
    let at = Some(dir.as_raw_fd());
    let own = nix::unistd::geteuid().as_raw();
    match fstatat(at, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(err("examining the existing file of", e.into())),
        Ok(st) if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFSOCK.bits() => {
            return Err(Error::PathInUse {
                path: path.to_path_buf(),
            })
        }
        Ok(st) => {
            let id = file_id(&st);
            let connect = UnixStream::connect(path).map(drop);
            match listener::judge_existing(id, st.st_uid, own, &connect) {
                Existing::Stale(seen) => {
                    // Only that very file: gone or replaced since, it stays.
                    let now = fstatat(at, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                        .map_err(|e| err("examining the stale file of", e.into()))?;
                    if file_id(&now) != seen {
                        return Err(Error::Config(format!(
                            "the control socket {} was replaced while being examined",
                            path.display()
                        )));
                    }
                    unlinkat(at, name, UnlinkatFlags::NoRemoveDir)
                        .map_err(|e| err("replacing the stale file of", e.into()))?;
                }
                Existing::Live => {
                    return Err(Error::Config(format!(
                        "another master answers on the control socket {}; give this master its own (`overseer run`: --name or --control)",
                        path.display()
                    )))
                }
                Existing::Keep(reason) => {
                    return Err(Error::Config(format!(
                        "the control socket {} is left alone: {reason}; remove it if it is stale, or give this master its own (`overseer run`: --name or --control)",
                        path.display()
                    )))
                }
                Existing::Nothing | Existing::NotSocket => {}
            }
        }
    }
    let listener = UnixListener::bind(path).map_err(|e| err("binding", e))?;
    // The file bound must be the one in the directory checked above.
    let bound = fstatat(at, name, AtFlags::AT_SYMLINK_NOFOLLOW);
    match bound {
        Ok(st)
            if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFSOCK.bits() && st.st_uid == own => {}
        _ => {
            return Err(Error::Config(format!(
                "the control socket {} is not in the directory checked: was {} moved?",
                path.display(),
                dir_path.display()
            )))
        }
    }
    let socket = ControlSocket {
        path: path.to_path_buf(),
        dir,
        name: name.to_os_string(),
        listener_fd: listener.as_raw_fd(),
    };
    if let Err(e) = fchmodat(
        at,
        name,
        Mode::from_bits_truncate(0o600),
        FchmodatFlags::FollowSymlink,
    ) {
        socket.remove();
        return Err(err("restricting", e.into()));
    }
    Ok((socket, listener))
}

/// Binds the control socket (see [`bind`]) and starts its thread.
pub(crate) fn start(path: &Path, tx: Sender<Event>) -> Result<ControlSocket> {
    let (socket, listener) = bind(path)?;
    if let Err(e) = serve_on(listener, tx) {
        socket.remove();
        return Err(e);
    }
    log::info!("control socket at {}", path.display());
    Ok(socket)
}

/// Starts the thread that accepts connections on `listener`.
pub(crate) fn serve_on(listener: UnixListener, tx: Sender<Event>) -> Result<()> {
    std::thread::Builder::new()
        .name("overseer-control".into())
        .spawn(move || accept_loop(listener, tx))
        .map(drop)
        .map_err(|e| Error::io("starting the control socket's thread", e))
}

/// Takes over (through copies of its descriptors) the control socket a
/// previous image of this master carried across its re-exec; its thread is
/// started by [`serve_on`].
pub(crate) fn adopt(state: &carried::ControlState) -> Result<(ControlSocket, UnixListener)> {
    let listener_fd = crate::sys::dup_fd(state.listener_fd)
        .map_err(|e| Error::io("taking over the control socket", e))?;
    let dir = crate::sys::dup_fd(state.dir_fd)
        .map_err(|e| Error::io("taking over the control socket's directory", e))?;
    let listener = UnixListener::from(listener_fd);
    let socket = ControlSocket {
        path: state.path.clone().into(),
        dir: File::from(dir),
        name: state.name.clone().into(),
        listener_fd: listener.as_raw_fd(),
    };
    Ok((socket, listener))
}

/// Creates the directory `dir` of the control socket `socket` (`0700`, with
/// any missing parents) if it is missing, then opens it without following a
/// symbolic link and checks, on the open directory, that it belongs to this
/// user or root and that no one else may write in it.
fn private_dir(dir: &Path, socket: &Path) -> Result<File> {
    let shown = || {
        format!(
            "the directory {} of the control socket {}",
            dir.display(),
            socket.display()
        )
    };
    if let Err(e) = std::fs::symlink_metadata(dir) {
        if e.kind() != io::ErrorKind::NotFound {
            return Err(Error::io(format!("examining {}", shown()), e));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(format!("creating {}", shown()), e))?;
    }
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir);
    let dir_file = match opened {
        Ok(f) => f,
        // A symbolic link gives ELOOP or, with O_DIRECTORY, ENOTDIR.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
            let link = std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
            return Err(Error::Config(if link {
                format!(
                    "{} is a symbolic link: give the real directory, which must be private to this user",
                    shown()
                )
            } else {
                format!("{} is not a directory", shown())
            }));
        }
        Err(e) => return Err(Error::io(format!("opening {}", shown()), e)),
    };
    let meta = dir_file
        .metadata()
        .map_err(|e| Error::io(format!("examining {}", shown()), e))?;
    let own = nix::unistd::geteuid().as_raw();
    if let Some(problem) = not_private(meta.uid(), meta.mode(), own) {
        return Err(Error::Config(format!(
            "{} is not private to this user: {problem}; it must belong to this user (uid {own}) or root and be writable by no one else",
            shown()
        )));
    }
    Ok(dir_file)
}

/// Why a directory with this owner and mode is not private to user `own`.
fn not_private(owner: u32, mode: u32, own: u32) -> Option<String> {
    if owner != own && owner != 0 {
        Some(format!("it belongs to uid {owner}"))
    } else if mode & 0o022 != 0 {
        Some(format!(
            "its mode {:04o} lets others write in it",
            mode & 0o7777
        ))
    } else {
        None
    }
}

// `dev_t` and `ino_t` are not 64 bits everywhere (macOS: a 32-bit `dev_t`).
#[allow(clippy::unnecessary_cast)]
fn file_id(st: &nix::sys::stat::FileStat) -> FileId {
    FileId {
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
    }
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
        "reload" => {
            // The answer may come from the master's next image: the
            // connection itself goes to the loop, and crosses the re-exec.
            stream.set_read_timeout(None)?;
            let reload = Event::Reload {
                source: "the control socket".into(),
                client: Some(stream),
            };
            if let Err(mpsc::SendError(Event::Reload {
                client: Some(stream),
                ..
            })) = tx.send(reload)
            {
                (&stream).write_all(failed("the master is stopping").as_bytes())?;
            }
            return Ok(());
        }
        other => {
            let answer = failed(&format!(
                "unknown request {other:?} (known: restart, reload, status)"
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

/// The outcomes of handovers and upgrades as control clients see them: the
/// answers pending `restart` requests wait for, and the history `status`
/// shows.
#[derive(Debug)]
pub(crate) struct Outcomes {
    pub started_at: std::time::Instant,
    /// Pending restart answers: `None` until the next worker starts, then
    /// that worker's number.
    waiters: Vec<(Option<u64>, Sender<Answer>)>,
    pub handovers: u64,
    pub failed_handovers: u64,
    pub last_handover: Option<(std::time::Instant, String)>,
    pub last_upgrade: Option<(std::time::Instant, String)>,
    pub reexecs: u64,
    pub failed_reexecs: u64,
    pub last_reexec: Option<(std::time::Instant, String)>,
    /// What the release source said of this host last (not carried: the
    /// next image's first poll says it again).
    pub rollout: Option<String>,
}

impl Outcomes {
    /// What a re-exec carries of them, at `now` (pending restart requests
    /// are not: a re-exec waits for the handover they wait for).
    pub fn carry(&self, now: std::time::Instant) -> carried::OutcomesState {
        let ago = |e: &Option<(std::time::Instant, String)>| {
            e.as_ref()
                .map(|(at, what)| (carried::ago_ms(now, *at), what.clone()))
        };
        carried::OutcomesState {
            uptime_ms: carried::ago_ms(now, self.started_at),
            handovers: self.handovers,
            failed_handovers: self.failed_handovers,
            last_handover: ago(&self.last_handover),
            last_upgrade: ago(&self.last_upgrade),
            reexecs: self.reexecs,
            failed_reexecs: self.failed_reexecs,
            last_reexec: ago(&self.last_reexec),
        }
    }

    /// Takes over carried outcomes at `now`, `gap_ms` after they were
    /// gathered.
    pub fn adopt(state: &carried::OutcomesState, now: std::time::Instant, gap_ms: u64) -> Self {
        let at = |e: &Option<(u64, String)>| {
            e.as_ref()
                .map(|(ms, what)| (carried::instant_ago(now, *ms, gap_ms), what.clone()))
        };
        Outcomes {
            started_at: carried::instant_ago(now, state.uptime_ms, gap_ms),
            waiters: Vec::new(),
            handovers: state.handovers,
            failed_handovers: state.failed_handovers,
            last_handover: at(&state.last_handover),
            last_upgrade: at(&state.last_upgrade),
            reexecs: state.reexecs,
            failed_reexecs: state.failed_reexecs,
            last_reexec: at(&state.last_reexec),
            rollout: None,
        }
    }

    /// Whether a restart request waits for an answer.
    pub fn waiting(&self) -> bool {
        !self.waiters.is_empty()
    }

    /// Records a re-exec's outcome: done (`ok`), or failed with the reason.
    pub fn reexec(&mut self, ok: bool, what: String) {
        if ok {
            self.reexecs += 1;
        } else {
            self.failed_reexecs += 1;
        }
        self.last_reexec = Some((std::time::Instant::now(), what));
    }

    pub fn new() -> Self {
        Outcomes {
            started_at: std::time::Instant::now(),
            waiters: Vec::new(),
            handovers: 0,
            failed_handovers: 0,
            last_handover: None,
            last_upgrade: None,
            reexecs: 0,
            failed_reexecs: 0,
            last_reexec: None,
            rollout: None,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_directory_belongs_to_this_user_or_root_and_only_they_write() {
        assert_eq!(not_private(1000, 0o40700, 1000), None);
        assert_eq!(not_private(0, 0o40755, 1000), None);
        assert!(not_private(1001, 0o40700, 1000)
            .unwrap()
            .contains("uid 1001"));
        for mode in [0o40770, 0o40702, 0o41777] {
            let why = not_private(1000, mode, 1000).unwrap();
            assert!(why.contains("lets others write"), "{mode:o}: {why}");
        }
    }

    #[test]
    fn the_directory_is_created_private_and_never_followed_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let made = tmp.path().join("a/b");
        let socket = made.join("c.sock");
        private_dir(&made, &socket).unwrap();
        let mode = std::fs::metadata(&made).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&made, &link).unwrap();
        let err = private_dir(&link, &link.join("c.sock")).unwrap_err();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");

        std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = private_dir(&made, &socket).unwrap_err();
        assert!(err.to_string().contains("mode 0777"), "{err}");
    }
}
