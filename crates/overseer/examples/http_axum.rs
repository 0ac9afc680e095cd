//! An axum 0.8 HTTP service under overseer that restarts without failing a
//! single request, keep-alive clients included.
//!
//! Run it:
//!
//! ```text
//! cargo run --example http_axum -- 127.0.0.1:3000
//! curl http://127.0.0.1:3000/              # worker=1 pid=… id=… version=dev
//! curl 'http://127.0.0.1:3000/slow?ms=3000' # the same, after three seconds
//! ```
//!
//! The process you started is the master; it holds the listening socket and
//! runs this binary again as a worker, which serves axum on its own tokio
//! runtime (overseer itself has none). Trigger a graceful restart with
//!
//! ```text
//! kill -USR2 <master pid>
//! ```
//!
//! A new worker starts, reports ready once its listener is set up
//! ([`Readiness::Notify`]), and only then the old worker gets SIGTERM and
//! drains:
//!
//! 1. it stops accepting at once (the [`DrainingListener`] below never
//!    yields another connection), so new connections go to the new worker;
//! 2. every response from then on carries `Connection: close`, so each
//!    keep-alive connection is closed by the server right after answering its
//!    next request, and the client reconnects to the new worker;
//! 3. only after a grace period are connections that stayed idle closed
//!    (axum's graceful shutdown), while in-flight requests, `/slow` ones
//!    included, still finish.
//!
//! Closing idle keep-alive connections at once (what plain
//! `with_graceful_shutdown(state.shutdown.notified())` does) races with a
//! client reusing one, which then sees a reset or an empty reply.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, Request, State as Shared};
use axum::http::header::{HeaderValue, CONNECTION};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use overseer::{Config, Readiness, Shutdown, State};
use tokio::net::{TcpListener, TcpStream};

/// How long a draining worker keeps idle keep-alive connections open, so
/// that clients reusing them get an answer (with `Connection: close`)
/// instead of a reset.
const IDLE_GRACE: Duration = Duration::from_secs(1);
/// The longest `/slow` sleep.
const MAX_SLOW_MS: u64 = 60_000;

fn main() {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_string());
    overseer::run(
        Config::new(program)
            .address(address)
            .readiness(Readiness::Notify)
            .terminate_timeout(Duration::from_secs(10)),
    );
}

/// Runs in each worker.
fn program(state: State) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot build the tokio runtime");
    runtime.block_on(serve(state));
}

/// What every handler needs.
#[derive(Clone)]
struct App {
    /// The answer to `GET /`, fixed for this worker.
    body: Arc<str>,
    shutdown: Shutdown,
}

async fn serve(state: State) {
    let worker = state.worker;
    let id = state.id.get(..12).unwrap_or(&state.id);
    let body = format!(
        "worker={worker} pid={} id={} version={}\n",
        std::process::id(),
        if id.is_empty() { "unknown" } else { id },
        state.version.as_deref().unwrap_or("dev"),
    );
    let app = App {
        body: body.into(),
        shutdown: state.shutdown.clone(),
    };

    // The master's socket is blocking; tokio needs it non-blocking.
    let std_listener = state.tcp_listener().expect("no TCP listener was passed");
    std_listener
        .set_nonblocking(true)
        .expect("cannot make the listener non-blocking");
    let listener =
        TcpListener::from_std(std_listener).expect("cannot register the listener with tokio");
    let local = listener
        .local_addr()
        .map_or_else(|e| format!("?({e})"), |a| a.to_string());

    let router = Router::new()
        .route("/", get(root))
        .route("/slow", get(slow))
        .layer(middleware::from_fn_with_state(
            app.shutdown.clone(),
            close_when_draining,
        ))
        .with_state(app);

    // Ready only now: the old worker keeps serving until this point.
    if let Err(e) = state.ready() {
        eprintln!("worker {worker}: cannot report readiness: {e}");
    }
    eprintln!(
        "worker {worker} serving on {local} (pid {})",
        std::process::id()
    );

    let listener = DrainingListener {
        inner: listener,
        shutdown: state.shutdown.clone(),
    };
    let drained = drain_after_grace(state.shutdown.clone(), worker);
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(drained)
        .await
    {
        eprintln!("worker {worker}: server error: {e}");
    }
    eprintln!("worker {worker} done");
}

/// Resolves [`IDLE_GRACE`] after the shutdown notification: only then does
/// axum close the connections that are still idle.
async fn drain_after_grace(shutdown: Shutdown, worker: u64) {
    shutdown.notified().await;
    eprintln!("worker {worker} draining");
    tokio::time::sleep(IDLE_GRACE).await;
}

/// Adds `Connection: close` to every response once the worker is draining,
/// so hyper closes each keep-alive connection right after answering on it.
async fn close_when_draining(
    Shared(shutdown): Shared<Shutdown>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    if shutdown.is_triggered() {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn root(Shared(app): Shared<App>) -> String {
    app.body.to_string()
}

async fn slow(Shared(app): Shared<App>, RawQuery(query): RawQuery) -> Response {
    let ms = query.as_deref().unwrap_or("").split('&').find_map(|pair| {
        let value = pair.strip_prefix("ms=")?;
        value.parse::<u64>().ok()
    });
    let Some(ms) = ms else {
        return (
            StatusCode::BAD_REQUEST,
            "usage: /slow?ms=N (milliseconds)\n",
        )
            .into_response();
    };
    tokio::time::sleep(Duration::from_millis(ms.min(MAX_SLOW_MS))).await;
    app.body.to_string().into_response()
}

/// A TCP listener that stops accepting for good once the shutdown
/// notification fires. Connections that arrive later wait in the shared
/// kernel backlog for the new worker instead of being taken by this one.
struct DrainingListener {
    inner: TcpListener,
    shutdown: Shutdown,
}

impl axum::serve::Listener for DrainingListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                // Checked first, so no connection is taken once draining.
                biased;
                () = self.shutdown.notified() => std::future::pending::<()>().await,
                accepted = self.inner.accept() => match accepted {
                    Ok((stream, addr)) => {
                        let _ = stream.set_nodelay(true);
                        return (stream, addr);
                    }
                    Err(e) => accept_error(e).await,
                },
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Like axum's own listener: per-connection errors are ignored, others (say,
/// too many open files) are reported and retried after a pause.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    eprintln!("accept error: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
