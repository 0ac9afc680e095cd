//! A tokio TCP listener that stops accepting for good once the worker drains.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::state::State;

/// How long accepting pauses after an error that is not one connection's
/// (too many open files, say): the error is logged once per pause.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A tokio listener on the worker's TCP socket that yields no connection
/// once the worker's [`Shutdown`] has fired, even while it is waiting for
/// one. Connections that arrive later wait in the shared kernel backlog for
/// the new worker instead of being taken by this one.
///
/// ```no_run
/// # async fn f(state: overseer::State) -> overseer::Result<()> {
/// let mut listener = overseer::serve::DrainingListener::new(&state)?;
/// state.ready()?;
/// while let Some((stream, peer)) = listener.accept().await {
///     // serve `stream` on a task of its own…
/// #   drop((stream, peer));
/// }
/// // draining: no more connections; let the open ones finish, then return
/// # Ok(()) }
/// ```
///
/// It must be made inside a tokio runtime. The socket becomes non-blocking,
/// which is a property of the socket shared with the master and the other
/// workers; overseer's own accept loop ([`Shutdown::incoming`]) works either
/// way, so a std worker and a tokio one can follow each other.
#[derive(Debug)]
pub struct DrainingListener {
    inner: TcpListener,
    shutdown: Shutdown,
}

impl DrainingListener {
    /// The worker's first TCP listener, drained by its shutdown notification.
    pub fn new(state: &State) -> Result<Self> {
        Self::from_std(state.tcp_listener()?, state.shutdown.clone())
    }

    /// Any std listener, drained when `shutdown` fires.
    pub fn from_std(listener: std::net::TcpListener, shutdown: Shutdown) -> Result<Self> {
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("making the listener non-blocking", e))?;
        let inner = TcpListener::from_std(listener)
            .map_err(|e| Error::io("registering the listener with tokio", e))?;
        Ok(Self { inner, shutdown })
    }

    /// The next connection (with `TCP_NODELAY` set), or `None` once the
    /// worker drains.
    ///
    /// Errors of one connection (reset or aborted before it was accepted)
    /// are skipped; others, such as running out of file descriptors, are
    /// logged and retried after a short pause, as axum's listener does.
    pub async fn accept(&mut self) -> Option<(TcpStream, SocketAddr)> {
        loop {
            tokio::select! {
                // Looked at first, so no connection is taken once draining.
                biased;
                () = self.shutdown.notified() => return None,
                accepted = self.inner.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        return Some((stream, peer));
                    }
                    Err(e) if is_per_connection(&e) => {}
                    Err(e) => {
                        crate::log::warning!("accepting a connection: {e}; retrying");
                        tokio::select! {
                            biased;
                            () = self.shutdown.notified() => return None,
                            () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                        }
                    }
                },
            }
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The shutdown notification this listener stops at.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }
}

/// Whether an accept error concerns one connection only.
fn is_per_connection(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
