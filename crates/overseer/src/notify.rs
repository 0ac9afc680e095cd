//! sd_notify datagrams: the worker → master readiness and status channel.
//!
//! The wire format is systemd's: newline-separated `KEY=VALUE` lines in one
//! datagram on the Unix socket named by `NOTIFY_SOCKET` (a path, or `@name`
//! for Linux's abstract namespace). Overseer adds one key of its own,
//! `OVERSEER_RESTART=1`, which a worker sends to ask for a restart.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable naming the notify socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends sd_notify datagrams to one socket.
#[derive(Debug, Clone)]
pub(crate) struct Notifier {
    target: String,
}

impl Notifier {
    /// A notifier for the socket named in `NOTIFY_SOCKET`, if any.
    pub fn from_env() -> Option<Notifier> {
        let target = std::env::var(NOTIFY_SOCKET).ok()?;
        (!target.is_empty()).then_some(Notifier { target })
    }

    /// A notifier for a socket path (or `@name`).
    #[cfg(test)]
    pub fn to(target: String) -> Notifier {
        Notifier { target }
    }

    /// Sends one datagram made of `KEY=VALUE` lines.
    pub fn send(&self, message: &str) -> io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        if let Some(name) = self.target.strip_prefix('@') {
            send_abstract(&socket, name, message)
        } else {
            socket.send_to(message.as_bytes(), &self.target).map(|_| ())
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(socket: &UnixDatagram, name: &str, message: &str) -> io::Result<()> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    socket.send_to_addr(message.as_bytes(), &addr).map(|_| ())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_: &UnixDatagram, _: &str, _: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract notify sockets exist only on Linux",
    ))
}

/// The longest datagram the master reads whole (the kernel cuts off the rest
/// of a longer one); sd_notify messages are a few short lines.
pub(crate) const MAX_DATAGRAM: usize = 4096;

/// The master's end: a datagram socket bound at a private path.
#[derive(Debug)]
pub(crate) struct NotifyReceiver {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifyReceiver {
    pub fn bind(path: &Path) -> io::Result<NotifyReceiver> {
        let _ = std::fs::remove_file(path);
        let socket = UnixDatagram::bind(path)?;
        Ok(NotifyReceiver {
            socket,
            path: path.to_path_buf(),
        })
    }

    /// A receiver over a socket already bound at `path` (one a previous
    /// image of the master carried across its re-exec).
    pub fn from_fd(fd: std::os::fd::OwnedFd, path: PathBuf) -> NotifyReceiver {
        NotifyReceiver {
            socket: UnixDatagram::from(fd),
            path,
        }
    }

    /// The socket's descriptor.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.socket)
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle that ends a wait in [`NotifyReceiver::recv`] from another
    /// thread, for good.
    pub fn closer(&self) -> io::Result<NotifyCloser> {
        Ok(NotifyCloser(self.socket.try_clone()?))
    }

    /// Waits up to `timeout` for one datagram; `None` when the wait ran out
    /// or the receiver was closed.
    pub fn recv(&self, timeout: Duration) -> io::Result<Option<String>> {
        self.socket.set_read_timeout(Some(timeout))?;
        let mut buf = [0u8; MAX_DATAGRAM];
        match self.socket.recv(&mut buf) {
            // Empty datagrams mean nothing; after `close`, reads return 0.
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(String::from_utf8_lossy(&buf[..n]).into_owned())),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        // A signal that landed on this thread is no error.
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// See [`NotifyReceiver::closer`].
#[derive(Debug)]
pub(crate) struct NotifyCloser(UnixDatagram);

impl NotifyCloser {
    /// Shuts the socket down: a thread blocked in `recv` returns at once.
    pub fn close(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

impl Drop for NotifyReceiver {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Splits a datagram into `(key, value)` pairs; lines without `=` are skipped.
pub(crate) fn parse(message: &str) -> impl Iterator<Item = (&str, &str)> {
    message.lines().filter_map(|l| l.split_once('='))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let rx = NotifyReceiver::bind(&dir.path().join("n.sock")).unwrap();
        let tx = Notifier {
            target: rx.path().to_string_lossy().into_owned(),
        };
        tx.send("READY=1\nSTATUS=serving").unwrap();
        let got = rx.recv(Duration::from_secs(5)).unwrap().unwrap();
        let pairs: Vec<_> = parse(&got).collect();
        assert_eq!(pairs, [("READY", "1"), ("STATUS", "serving")]);
        assert_eq!(rx.recv(Duration::from_millis(10)).unwrap(), None);
    }

    #[test]
    fn a_signal_during_a_wait_is_no_error() {
        use nix::sys::pthread::{pthread_kill, pthread_self};
        use nix::sys::signal::Signal;
        let caught = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGURG, caught.clone()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let rx = NotifyReceiver::bind(&dir.path().join("n.sock")).unwrap();
        let (tx, thread) = std::sync::mpsc::channel();
        let waiting = std::thread::spawn(move || {
            tx.send(pthread_self()).unwrap();
            rx.recv(Duration::from_secs(2))
        });
        let thread = thread.recv().unwrap();
        // Time to block in `recv`; were it not, the wait just times out.
        std::thread::sleep(Duration::from_millis(100));
        pthread_kill(thread, Signal::SIGURG).unwrap();
        assert_eq!(waiting.join().unwrap().unwrap(), None);
        assert!(caught.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn closing_ends_a_blocked_wait() {
        let dir = tempfile::tempdir().unwrap();
        let rx = NotifyReceiver::bind(&dir.path().join("n.sock")).unwrap();
        let closer = rx.closer().unwrap();
        let waiting = std::thread::spawn(move || rx.recv(Duration::from_secs(3600)));
        std::thread::sleep(Duration::from_millis(50));
        closer.close();
        // Bounded: without the close, the wait would last an hour.
        for _ in 0..500 {
            if waiting.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(waiting.is_finished(), "recv still blocked after close");
        assert_eq!(waiting.join().unwrap().unwrap(), None);
    }
}
