//! Accepting connections until the shutdown notification fires, without an
//! async runtime.
//!
//! A blocking `accept` cannot be interrupted, and neither closing nor
//! shutting down the listening socket is an option: it is shared with the
//! master and the other workers. Making the socket non-blocking would not do
//! either: that flag lives on the shared open file and would change `accept`
//! for every worker.
//!
//! So the loop `poll`s the listener together with a pipe of its own, which
//! the notification writes to when it fires: a draining worker stops
//! accepting at once, and an idle one sleeps without waking. `poll` wakes
//! every process waiting on the listener while only one gets the connection,
//! so the `accept` that follows may still block; the listener's receive
//! timeout (Linux's `accept` honours `SO_RCVTIMEO`) bounds that wait, after
//! which the loop looks at the notification again. Where the pipe cannot be
//! made, the timeout alone paces the loop.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use crate::shutdown::Shutdown;

/// The longest a blocked `accept` goes without looking at the notification.
const WAKE_INTERVAL: Duration = Duration::from_millis(50);

/// Iterator over accepted connections that ends when shutdown fires; see
/// [`Shutdown::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
    shutdown: &'a Shutdown,
    configured: bool,
    #[cfg(unix)]
    wake: Option<wake::Pipe>,
}

impl Shutdown {
    /// Accepts connections on `listener` until this notification fires.
    ///
    /// When it fires, the iterator ends at once, even while waiting for a
    /// connection (within 50 ms in the rare case that another worker took
    /// the connection this one was woken for).
    ///
    /// ```no_run
    /// # fn f(state: overseer::State) {
    /// let listener = state.tcp_listener().unwrap();
    /// for stream in state.shutdown.incoming(&listener) {
    ///     let Ok(stream) = stream else { continue };
    ///     // hand `stream` to a thread…
    /// }
    /// // no longer accepting: wait for open connections, then return
    /// # }
    /// ```
    pub fn incoming<'a>(&'a self, listener: &'a TcpListener) -> Incoming<'a> {
        Incoming {
            listener,
            shutdown: self,
            configured: false,
            #[cfg(unix)]
            wake: None,
        }
    }
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.configured {
            self.configured = true;
            let sock = socket2::SockRef::from(self.listener);
            if let Err(e) = sock.set_read_timeout(Some(WAKE_INTERVAL)) {
                return Some(Err(e));
            }
            #[cfg(unix)]
            {
                // Without the pipe, the receive timeout alone paces the loop.
                self.wake = wake::Pipe::register(self.shutdown).ok();
            }
        }
        loop {
            if self.shutdown.is_triggered() {
                return None;
            }
            #[cfg(unix)]
            if let Some(pipe) = &self.wake {
                match pipe.wait(self.listener) {
                    Ok(wake::Ready::Listener) => {}
                    Ok(wake::Ready::Shutdown) => return None,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Some(Err(e)),
                }
            }
            match self.listener.accept() {
                Ok((stream, _)) => {
                    // Accepted sockets inherit the timeout; give them a clean slate.
                    let _ = stream.set_read_timeout(None);
                    return Some(Ok(stream));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The pipe that the shutdown notification writes to when it fires.
#[cfg(unix)]
mod wake {
    use std::future::Future;
    use std::io;
    use std::net::TcpListener;
    use std::os::fd::{AsFd, OwnedFd};
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};

    use nix::fcntl::OFlag;
    use nix::poll::{PollFd, PollFlags, PollTimeout};

    use crate::shutdown::{Notified, Shutdown};

    /// What `poll` found ready.
    pub(super) enum Ready {
        Listener,
        Shutdown,
    }

    #[derive(Debug)]
    pub(super) struct Pipe {
        read: OwnedFd,
        /// Registered with the notification; dropping it takes the waker out.
        _registration: Notified,
    }

    /// Writes one byte to the pipe when woken.
    struct Writer(OwnedFd);

    impl Wake for Writer {
        fn wake(self: Arc<Self>) {
            // Non-blocking: if the pipe were full, a byte is already there.
            let _ = nix::unistd::write(&self.0, &[1]);
        }
    }

    impl Pipe {
        pub(super) fn register(shutdown: &Shutdown) -> io::Result<Pipe> {
            let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
            let waker = Waker::from(Arc::new(Writer(write)));
            let mut registration = shutdown.notified();
            // Polling registers the waker; should the notification already
            // have fired, the accept loop sees it before waiting.
            let _ = Pin::new(&mut registration).poll(&mut Context::from_waker(&waker));
            Ok(Pipe {
                read,
                _registration: registration,
            })
        }

        /// Waits until the listener has a connection or the notification fired.
        pub(super) fn wait(&self, listener: &TcpListener) -> io::Result<Ready> {
            let mut fds = [
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.read.as_fd(), PollFlags::POLLIN),
            ];
            nix::poll::poll(&mut fds, PollTimeout::NONE)?;
            let woken = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            if woken(&fds[1]) {
                return Ok(Ready::Shutdown);
            }
            // Readable, or an error `accept` will report.
            debug_assert!(woken(&fds[0]));
            Ok(Ready::Listener)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::sync::Arc;

    /// A connection that arrives right after the notification fired stays
    /// in the backlog for another worker instead of being taken by a
    /// draining one.
    #[test]
    fn a_draining_loop_takes_no_connection_after_the_notification() {
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let accepted = std::thread::spawn({
            let (listener, shutdown) = (listener.clone(), shutdown.clone());
            move || shutdown.incoming(&listener).count()
        });
        // Let the loop settle into its wait (it would also end if it had not).
        std::thread::sleep(Duration::from_millis(100));
        shutdown.trigger();
        let _client = TcpStream::connect(addr).unwrap();
        assert_eq!(accepted.join().unwrap(), 0);
        // The connection is still there for whoever accepts next.
        assert!(listener.accept().is_ok());
    }

    #[test]
    fn connections_are_accepted_until_the_notification() {
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let accepted = std::thread::spawn({
            let (listener, shutdown) = (listener.clone(), shutdown.clone());
            move || {
                let mut n = 0;
                for stream in shutdown.incoming(&listener) {
                    stream.unwrap();
                    n += 1;
                    if n == 3 {
                        shutdown.trigger();
                    }
                }
                n
            }
        });
        let clients: Vec<_> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        assert_eq!(accepted.join().unwrap(), 3);
        drop(clients);
    }
}
