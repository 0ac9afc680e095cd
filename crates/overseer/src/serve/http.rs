//! One call that serves HTTP/1 and HTTP/2 across restarts without a failed
//! request: accept until draining, then drain every connection by its
//! protocol's rules, then return.

use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::close::CloseWhenDraining;
use super::listener::DrainingListener;
use crate::error::Result;
use crate::shutdown::Shutdown;
use crate::state::State;

type BoxError = Box<dyn StdError + Send + Sync>;

/// How long a draining worker keeps an idle HTTP/1 keep-alive connection
/// open by default, so a client that reuses it meanwhile gets an answer
/// (with `Connection: close`) instead of a reset. One second covers clients
/// that send again within a second of their last answer, which is what a
/// busy keep-alive client does; a connection idle for longer is closed.
pub const DEFAULT_IDLE_GRACE: Duration = Duration::from_secs(1);

/// Serves `service` (an axum `Router`, or any tower service) on the
/// worker's first TCP listener until the worker has drained; see [`Server`].
///
/// ```no_run
/// # #[cfg(feature = "hyper")]
/// # mod example {
/// use axum::{routing::get, Router};
///
/// fn program(state: overseer::State) {
///     let router = Router::new().route("/", get(|| async { "hello\n" }));
///     let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
///     if let Err(e) = runtime.block_on(overseer::serve::serve(&state, router)) {
///         eprintln!("{e}");
///     }
/// }
/// # }
/// ```
pub async fn serve<S, B>(state: &State, service: S) -> Result<()>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Server::new(state).serve(service).await
}

/// Serves a hyper service (`hyper::service::service_fn(handler)`, say) on
/// the worker's first TCP listener until the worker has drained; see
/// [`Server`].
pub async fn serve_hyper<S, B>(state: &State, service: S) -> Result<()>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Server::new(state).serve_hyper(service).await
}

/// An HTTP server for one worker: HTTP/1 and HTTP/2 (by prior knowledge)
/// on one listener, drained without a failed request when the worker's
/// shutdown fires:
///
/// - the listener stops accepting at once ([`DrainingListener`]);
/// - an HTTP/2 connection gets GOAWAY at once: the streams it already
///   started finish, and the client opens its next ones on a new connection;
/// - every HTTP/1 response from then on carries `Connection: close`
///   ([`CloseWhenDraining`]), so a keep-alive connection closes right after
///   its next answer; one that stays idle for the grace period
///   ([`DEFAULT_IDLE_GRACE`]) is closed then, and a request in flight at that
///   moment still finishes;
/// - the call returns once every connection has ended. The master's
///   `terminate_timeout` bounds how long that may take.
///
/// Upgrades (WebSocket) are served; an upgraded connection is the
/// handler's, and the worker's program decides when it ends.
#[derive(Debug)]
pub struct Server<'a> {
    state: &'a State,
    listener: Option<DrainingListener>,
    idle_grace: Duration,
    report_ready: bool,
}

impl<'a> Server<'a> {
    /// A server on the worker's first TCP listener, which reports the
    /// worker ready once it is listening.
    pub fn new(state: &'a State) -> Self {
        Self {
            state,
            listener: None,
            idle_grace: DEFAULT_IDLE_GRACE,
            report_ready: true,
        }
    }

    /// Serves on this listener instead (another of the worker's sockets).
    pub fn listener(mut self, listener: DrainingListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// How long an idle HTTP/1 connection is kept once draining (default
    /// [`DEFAULT_IDLE_GRACE`]).
    pub fn idle_grace(mut self, grace: Duration) -> Self {
        self.idle_grace = grace;
        self
    }

    /// Whether to report the worker ready ([`State::ready`]) once listening
    /// (default: yes). Turn it off when the worker serves several listeners
    /// and reports readiness itself once all of them are set up.
    pub fn report_ready(mut self, report: bool) -> Self {
        self.report_ready = report;
        self
    }

    /// Serves a tower service (an axum `Router`, say) until drained.
    pub async fn serve<S, B>(self, service: S) -> Result<()>
    where
        S: tower_service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.serve_hyper(TowerToHyperService::new(service)).await
    }

    /// Serves a hyper service until drained.
    pub async fn serve_hyper<S, B>(self, service: S) -> Result<()>
    where
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let mut listener = match self.listener {
            Some(listener) => listener,
            None => DrainingListener::new(self.state)?,
        };
        if self.report_ready {
            self.state.ready()?;
        }
        let builder = Builder::new(TokioExecutor::new());
        let mut connections = JoinSet::new();
        while let Some((stream, _peer)) = listener.accept().await {
            // Reaps the connections that have ended, so the set stays small.
            while connections.try_join_next().is_some() {}
            connections.spawn(connection(
                builder.clone(),
                stream,
                service.clone(),
                listener.shutdown().clone(),
                self.idle_grace,
            ));
        }
        while connections.join_next().await.is_some() {}
        Ok(())
    }
}

/// Serves one connection, then drains it by its protocol once `shutdown`
/// fires.
async fn connection<S, B>(
    builder: Builder<TokioExecutor>,
    stream: TcpStream,
    service: S,
    shutdown: Shutdown,
    idle_grace: Duration,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let saw_http2 = Arc::new(AtomicBool::new(false));
    let service = CloseWhenDraining::for_connection(service, shutdown.clone(), saw_http2.clone());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        ended = connection.as_mut() => return report(ended),
        () = shutdown.notified() => {}
    }
    // HTTP/2 drains by GOAWAY at once, race-free by design. HTTP/1 first
    // closes each connection after its next answer (Connection: close); an
    // idle one is closed only after the grace period.
    if !saw_http2.load(Ordering::Relaxed) {
        tokio::select! {
            ended = connection.as_mut() => return report(ended),
            () = tokio::time::sleep(idle_grace) => {}
        }
    }
    connection.as_mut().graceful_shutdown();
    report(connection.await);
}

/// A connection's end: errors are the client's (gone, malformed), logged
/// for debugging only.
fn report(ended: std::result::Result<(), BoxError>) {
    if let Err(e) = ended {
        crate::log::debug!("connection ended: {e}");
    }
}
