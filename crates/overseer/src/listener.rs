//! Binding the configured addresses (in the master, or in-process in fallback
//! mode) and rebuilding typed listeners from inherited descriptors (in a worker).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
#[cfg(unix)]
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
#[cfg(unix)]
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use socket2::{Domain, Protocol, SockAddr, Type};

use crate::address::{Address, Bind};
use crate::error::{Error, Result};

/// A listening socket handed to the program, in the order of the configured addresses.
#[derive(Debug)]
#[non_exhaustive]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A bound UDP socket.
    Udp(UdpSocket),
    /// A Unix stream listener.
    #[cfg(unix)]
    Unix(UnixListener),
}

impl Listener {
    /// The TCP listener, if this is one.
    pub fn as_tcp(&self) -> Option<&TcpListener> {
        match self {
            Listener::Tcp(l) => Some(l),
            _ => None,
        }
    }

    /// The UDP socket, if this is one.
    pub fn as_udp(&self) -> Option<&UdpSocket> {
        match self {
            Listener::Udp(s) => Some(s),
            _ => None,
        }
    }

    /// The Unix listener, if this is one.
    #[cfg(unix)]
    pub fn as_unix(&self) -> Option<&UnixListener> {
        match self {
            Listener::Unix(l) => Some(l),
            _ => None,
        }
    }

    /// The bound address as text: `127.0.0.1:8080`, `udp:[::]:53`, `unix:/run/app.sock`.
    pub fn local_addr_string(&self) -> String {
        let shown =
            |r: io::Result<SocketAddr>| r.map_or_else(|e| format!("?({e})"), |a| a.to_string());
        match self {
            Listener::Tcp(l) => shown(l.local_addr()),
            Listener::Udp(s) => format!("udp:{}", shown(s.local_addr())),
            #[cfg(unix)]
            Listener::Unix(l) => match l.local_addr() {
                Ok(a) => match a.as_pathname() {
                    Some(p) => format!("unix:{}", p.display()),
                    None => "unix:(unnamed)".to_string(),
                },
                Err(e) => format!("unix:?({e})"),
            },
        }
    }

    /// Rebuilds a typed listener from an inherited socket descriptor.
    #[cfg(unix)]
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Listener> {
        let socket = socket2::Socket::from(fd);
        let ty = socket.r#type()?;
        let family = socket.local_addr()?.family();
        let fd = OwnedFd::from(socket);
        let is_unix = family == libc::AF_UNIX as libc::sa_family_t;
        if ty == Type::STREAM && is_unix {
            Ok(Listener::Unix(UnixListener::from(fd)))
        } else if ty == Type::STREAM {
            Ok(Listener::Tcp(TcpListener::from(fd)))
        } else if ty == Type::DGRAM && !is_unix {
            Ok(Listener::Udp(UdpSocket::from(fd)))
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "inherited descriptor is neither a stream nor a UDP socket",
            ))
        }
    }

    /// Borrows the descriptor, to pass it to a worker.
    #[cfg(unix)]
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Udp(s) => s.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }
}

/// Inherited descriptors are adopted at most once per process.
#[cfg(unix)]
static ADOPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the passed descriptors were adopted already (they may be closed
/// since).
#[cfg(unix)]
pub(crate) fn adopted() -> bool {
    ADOPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// How many sockets socket activation passed to this process (`LISTEN_FDS`),
/// after checking that `LISTEN_PID` names this process. `None` when
/// `LISTEN_PID` is not set.
#[cfg(unix)]
pub(crate) fn passed_count() -> Result<Option<usize>> {
    use crate::protocol::{LISTEN_FDS, LISTEN_PID};
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Some(pid) = var(LISTEN_PID) else {
        return Ok(None);
    };
    if pid != std::process::id().to_string() {
        return Err(Error::Protocol(format!(
            "LISTEN_PID={pid} names another process (this is {})",
            std::process::id()
        )));
    }
    var(LISTEN_FDS)
        .unwrap_or_else(|| "0".into())
        .parse()
        .map(Some)
        .map_err(|_| Error::Protocol("LISTEN_FDS is not a number".into()))
}

/// Adopts the `count` passed sockets at fds 3, 4, … as typed listeners, in
/// order. Allowed once per process: the descriptors then belong to it.
#[cfg(unix)]
pub(crate) fn adopt_passed(count: usize) -> Result<Vec<Listener>> {
    use crate::protocol::LISTEN_FDS_START;
    use std::sync::atomic::Ordering;
    if ADOPTED.swap(true, Ordering::SeqCst) {
        return Err(Error::Protocol("sockets were already taken".into()));
    }
    (0..count)
        .map(|i| {
            let raw = LISTEN_FDS_START + i as i32;
            crate::sys::adopt_fd(raw)
                .and_then(Listener::from_fd)
                .map_err(|e| Error::Protocol(format!("fd {raw}: {e}")))
        })
        .collect()
}

/// One of the service's listening sockets, from where it is opened (bound,
/// or adopted from socket activation) to the worker's launch: what the
/// program calls it, the address it serves, the listener, and what to clean
/// up when the process exits.
#[derive(Debug)]
pub(crate) struct Socket {
    /// Its `LISTEN_FDNAMES` name: the configured one, else `listener0`,
    /// `listener1`, … by position.
    pub name: String,
    /// Its address, as configured (or as bound, for a passed socket taken
    /// without a configured address).
    pub address: String,
    /// The listening socket itself.
    pub listener: Listener,
    /// A Unix socket file this process created and must remove on exit
    /// (`None` for a socket adopted from socket activation: its file belongs
    /// to whoever passed it).
    pub unix_path: Option<PathBuf>,
}

/// The `LISTEN_FDNAMES` name of the `i`-th socket: the name it was given,
/// else `listener{i}`.
pub(crate) fn fd_name(name: Option<&str>, i: usize) -> String {
    name.map_or_else(|| format!("listener{i}"), str::to_string)
}

/// Binds every address, in order; on error nothing stays bound (Unix uses
/// `sockets::open`, which also adopts passed sockets).
#[cfg(any(test, not(unix)))]
pub(crate) fn bind_all(
    addresses: &[crate::address::Named<Address>],
    backlog: i32,
) -> Result<Vec<Socket>> {
    let mut bound: Vec<Socket> = Vec::with_capacity(addresses.len());
    for (i, a) in addresses.iter().enumerate() {
        match bind_one(&a.address, fd_name(a.name.as_deref(), i), backlog, false) {
            Ok(b) => bound.push(b),
            Err(e) => {
                remove_socket_files(&bound);
                return Err(e);
            }
        }
    }
    Ok(bound)
}

/// Removes the Unix socket files this process created.
pub(crate) fn remove_socket_files(sockets: &[Socket]) {
    for path in sockets.iter().filter_map(|s| s.unix_path.as_ref()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Binds one address, the socket called `name`; a TCP socket with
/// `SO_REUSEPORT` when `reuse_port` (for connection steering).
pub(crate) fn bind_one(
    address: &Address,
    name: String,
    backlog: i32,
    reuse_port: bool,
) -> Result<Socket> {
    let err = |source: io::Error| Error::Bind {
        address: address.text.clone(),
        source,
    };
    let tcp = |addr: SocketAddr| -> io::Result<Listener> {
        let socket =
            socket2::Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        if addr.is_ipv6() {
            socket.set_only_v6(!addr.ip().is_unspecified())?;
        }
        socket.bind(&SockAddr::from(addr))?;
        socket.listen(backlog)?;
        Ok(Listener::Tcp(socket.into()))
    };
    let udp = |addr: SocketAddr| -> io::Result<Listener> {
        let socket =
            socket2::Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(!addr.ip().is_unspecified())?;
        }
        socket.bind(&SockAddr::from(addr))?;
        Ok(Listener::Udp(socket.into()))
    };
    // `:port` means every interface: dual-stack IPv6 where the host has IPv6, else IPv4.
    let any = |port: u16, f: &dyn Fn(SocketAddr) -> io::Result<Listener>| {
        f(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
            .or_else(|_| f(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))))
    };
    let listener = match &address.bind {
        Bind::Tcp(addr) => tcp(*addr).map_err(err)?,
        Bind::TcpAny(port) => any(*port, &tcp).map_err(err)?,
        Bind::Udp(addr) => udp(*addr).map_err(err)?,
        Bind::UdpAny(port) => any(*port, &udp).map_err(err)?,
        Bind::Unix(path) => {
            return Ok(Socket {
                name,
                address: address.text.clone(),
                listener: bind_unix(address, path, backlog)?,
                unix_path: Some(path.to_path_buf()),
            })
        }
    };
    Ok(Socket {
        name,
        address: address.text.clone(),
        listener,
        unix_path: None,
    })
}

#[cfg(unix)]
fn bind_unix(address: &Address, path: &std::path::Path, backlog: i32) -> Result<Listener> {
    let err = |source: io::Error| Error::Bind {
        address: address.text.clone(),
        source,
    };
    match existing_socket(path) {
        Existing::Nothing => {}
        Existing::NotSocket => {
            return Err(Error::PathInUse {
                path: path.to_path_buf(),
            })
        }
        Existing::Live => return Err(err(io::Error::from(io::ErrorKind::AddrInUse))),
        Existing::Keep(reason) => {
            return Err(err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "the socket file {} is left alone: {reason}; remove it if it is stale",
                    path.display()
                ),
            )))
        }
        Existing::Stale(seen) => remove_stale(path, &seen).map_err(err)?,
    }
    let socket = socket2::Socket::new(Domain::UNIX, Type::STREAM, None).map_err(err)?;
    socket
        .bind(&SockAddr::unix(path).map_err(err)?)
        .map_err(err)?;
    if let Err(e) = socket.listen(backlog) {
        let _ = std::fs::remove_file(path);
        return Err(err(e));
    }
    Ok(Listener::Unix(UnixListener::from(OwnedFd::from(socket))))
}

/// What is at a Unix socket path about to be bound.
#[cfg(unix)]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Nothing: the path is free.
    Nothing,
    /// A file that is not a socket (never touched).
    NotSocket,
    /// A socket somebody answers on.
    Live,
    /// A socket file of this user that refuses connections: nobody listens,
    /// it is left over from a process that died. The file's identity, so that
    /// only this very file is removed.
    Stale(FileId),
    /// A socket that is not this process's to remove, and why.
    Keep(String),
}

/// A file's device and inode numbers.
#[cfg(unix)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// The decision about an existing socket file, from what a connection to it
/// gave. Only `ECONNREFUSED` (nothing listens) on a socket file owned by
/// this user (`owner` is `own`) makes it stale: any other failure to connect
/// (`EACCES` on another user's live socket, a full backlog, …) says nothing
/// about whether it is in use, and another user's file is not ours to remove
/// even when nothing listens on it.
#[cfg(unix)]
pub(crate) fn judge_existing(
    id: FileId,
    owner: u32,
    own: u32,
    connect: &io::Result<()>,
) -> Existing {
    match connect {
        Ok(()) => Existing::Live,
        Err(e) if e.raw_os_error() != Some(libc::ECONNREFUSED) => Existing::Keep(format!(
            "connecting to it failed ({e}), so it may be in use"
        )),
        Err(_) if owner != own => Existing::Keep(format!(
            "nothing listens on it, but it belongs to uid {owner}, not to this process's user ({own})"
        )),
        Err(_) => Existing::Stale(id),
    }
}

/// Looks at `path` without following a symbolic link, and connects to it if
/// it is a socket.
#[cfg(unix)]
pub(crate) fn existing_socket(path: &std::path::Path) -> Existing {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::os::unix::net::UnixStream;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Existing::Nothing,
        Err(e) => return Existing::Keep(format!("it cannot be examined ({e})")),
    };
    if !meta.file_type().is_socket() {
        return Existing::NotSocket;
    }
    let id = FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    };
    let connect = UnixStream::connect(path).map(drop);
    judge_existing(id, meta.uid(), nix::unistd::geteuid().as_raw(), &connect)
}

/// Removes the stale socket file `seen` at `path`, unless the path now holds
/// another file.
#[cfg(unix)]
fn remove_stale(path: &std::path::Path, seen: &FileId) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    if (FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    }) != *seen
    {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} was replaced while being examined", path.display()),
        ));
    }
    std::fs::remove_file(path)
}

#[cfg(not(unix))]
fn bind_unix(address: &Address, _path: &std::path::Path, _backlog: i32) -> Result<Listener> {
    Err(Error::InvalidAddress {
        address: address.text.clone(),
        reason: "Unix sockets are not available on this platform".into(),
    })
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::address::Named;
    use std::net::TcpStream;

    fn bind(texts: &[&str]) -> Result<Vec<Socket>> {
        let addresses: Vec<Named<Address>> = texts
            .iter()
            .map(|t| Named {
                name: None,
                address: Address::parse(t).unwrap(),
            })
            .collect();
        bind_all(&addresses, 16)
    }

    #[test]
    fn every_form_binds_with_its_type() {
        let bound = bind(&[":0", "127.0.0.1:0", "[::1]:0", "udp:127.0.0.1:0", "udp::0"]).unwrap();
        let kinds: Vec<&str> = bound
            .iter()
            .map(|b| match &b.listener {
                Listener::Tcp(_) => "tcp",
                Listener::Udp(_) => "udp",
                Listener::Unix(_) => "unix",
            })
            .collect();
        assert_eq!(kinds, ["tcp", "tcp", "tcp", "udp", "udp"]);
        // `:port` is every interface: IPv4 loopback reaches it too.
        let any = bound[0].listener.as_tcp().unwrap().local_addr().unwrap();
        assert!(any.ip().is_unspecified());
        TcpStream::connect(("127.0.0.1", any.port())).unwrap();
        let v6 = bound[2].listener.as_tcp().unwrap().local_addr().unwrap();
        assert!(v6.is_ipv6() && v6.ip().is_loopback());
        assert!(bound[3]
            .listener
            .local_addr_string()
            .starts_with("udp:127.0.0.1:"));
    }

    #[test]
    fn unix_sockets_replace_stale_files_and_refuse_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let text = format!("unix:{}", path.display());
        // Stale: a socket file nobody listens on.
        drop(UnixListener::bind(&path).unwrap());
        let bound = bind(&[&text]).unwrap();
        assert_eq!(bound[0].unix_path.as_deref(), Some(path.as_path()));
        // Live: somebody answers, so it is in use.
        let err = bind(&[&text]).unwrap_err();
        assert!(matches!(err, Error::Bind { .. }), "{err}");
        remove_socket_files(&bound);
        assert!(!path.exists());
        // Not a socket: left alone.
        std::fs::write(&path, b"data").unwrap();
        let err = bind(&[&text]).unwrap_err();
        assert!(matches!(err, Error::PathInUse { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }

    #[test]
    fn only_a_refused_connection_to_an_own_socket_file_is_stale() {
        let id = FileId { dev: 1, ino: 2 };
        let refused = Err(io::Error::from_raw_os_error(libc::ECONNREFUSED));
        let denied = Err(io::Error::from_raw_os_error(libc::EACCES));
        let busy = Err(io::Error::from_raw_os_error(libc::EAGAIN));
        assert_eq!(
            judge_existing(id, 1000, 1000, &refused),
            Existing::Stale(id)
        );
        assert_eq!(judge_existing(id, 1000, 1000, &Ok(())), Existing::Live);
        for (owner, connect) in [(1000, &denied), (1000, &busy), (0, &refused), (0, &denied)] {
            let got = judge_existing(id, owner, 1000, connect);
            assert!(
                matches!(got, Existing::Keep(_)),
                "{owner} {connect:?}: {got:?}"
            );
        }
        let Existing::Keep(why) = judge_existing(id, 1000, 1000, &denied) else {
            unreachable!()
        };
        assert!(why.contains("Permission denied"), "{why}");
        let Existing::Keep(why) = judge_existing(id, 0, 1000, &refused) else {
            unreachable!()
        };
        assert!(why.contains("uid 0"), "{why}");
    }

    #[test]
    fn another_users_stale_socket_file_is_left_alone() {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: changing a file's owner needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(UnixListener::bind(&path).unwrap());
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        let ino = std::fs::symlink_metadata(&path).unwrap().ino();
        let err = bind(&[&format!("unix:{}", path.display())]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("uid 65534") && text.contains("left alone"),
            "{text}"
        );
        assert_eq!(std::fs::symlink_metadata(&path).unwrap().ino(), ino);
    }

    #[test]
    fn a_failed_bind_leaves_nothing_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("first.sock");
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = format!("127.0.0.1:{}", taken.local_addr().unwrap().port());
        let err = bind(&[&format!("unix:{}", path.display()), &busy]).unwrap_err();
        assert!(err.to_string().contains(&busy), "{err}");
        assert!(!path.exists(), "the first socket file was removed again");
    }

    #[test]
    fn listeners_round_trip_through_a_descriptor() {
        let bound = bind(&["127.0.0.1:0", "udp:127.0.0.1:0"]).unwrap();
        for b in bound {
            let before = b.listener.local_addr_string();
            let fd = match b.listener {
                Listener::Tcp(l) => OwnedFd::from(l),
                Listener::Udp(s) => OwnedFd::from(s),
                Listener::Unix(l) => OwnedFd::from(l),
            };
            assert_eq!(Listener::from_fd(fd).unwrap().local_addr_string(), before);
        }
    }
}
