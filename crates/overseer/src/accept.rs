//! Accepting connections until the shutdown notification fires, without an
//! async runtime.
//!
//! A blocking `accept` cannot be interrupted, and neither closing nor
//! shutting down the listening socket is an option: it is shared with the
//! master and the other workers. Instead the listener gets a receive timeout
//! (Linux's `accept` honours `SO_RCVTIMEO`), so the loop wakes a few times a
//! second to look at the notification. Making the socket non-blocking would
//! not do: that flag lives on the shared open file and would change `accept`
//! for every worker.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use crate::shutdown::Shutdown;

/// How often a blocked accept looks at the shutdown notification.
const WAKE_INTERVAL: Duration = Duration::from_millis(50);

/// Iterator over accepted connections that ends when shutdown fires; see
/// [`Shutdown::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
    shutdown: &'a Shutdown,
    configured: bool,
}

impl Shutdown {
    /// Accepts connections on `listener` until this notification fires.
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
        }
        loop {
            if self.shutdown.is_triggered() {
                return None;
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
