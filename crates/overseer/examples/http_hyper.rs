//! A hyper 1 HTTP service under overseer (no framework): HTTP/1 and HTTP/2
//! on one port, restarted without failing a single request.
//!
//! Run it (the library's `hyper` feature serves it):
//!
//! ```text
//! cargo run -p overseer --features hyper --example http_hyper -- 127.0.0.1:3000
//! curl http://127.0.0.1:3000/                           # worker=1 pid=… id=… version=dev
//! curl --http2-prior-knowledge 'http://127.0.0.1:3000/slow?ms=3000'
//! kill -USR2 <master pid>                               # a graceful restart
//! ```
//!
//! [`overseer::serve::serve_hyper`] accepts until the worker drains, then
//! closes HTTP/1 keep-alive connections after their next answer, sends
//! HTTP/2 clients GOAWAY, and returns once the requests in flight have
//! finished.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use overseer::{Config, Readiness, State};

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
    let id = state.id.get(..12).unwrap_or(&state.id);
    let body: Arc<str> = format!(
        "worker={} pid={} id={} version={}\n",
        state.worker,
        std::process::id(),
        if id.is_empty() { "unknown" } else { id },
        state.version.as_deref().unwrap_or("dev"),
    )
    .into();
    let service = service_fn(move |request| answer(request, body.clone()));
    let runtime = tokio::runtime::Runtime::new().expect("cannot build the tokio runtime");
    eprintln!(
        "worker {} serving (pid {})",
        state.worker,
        std::process::id()
    );
    if let Err(e) = runtime.block_on(overseer::serve::serve_hyper(&state, service)) {
        eprintln!("worker {}: {e}", state.worker);
    }
    eprintln!("worker {} done", state.worker);
}

/// `GET /`: the worker's line; `GET /slow?ms=N`: the same after N
/// milliseconds.
async fn answer(
    request: Request<Incoming>,
    body: Arc<str>,
) -> Result<Response<String>, Infallible> {
    match request.uri().path() {
        "/" => Ok(Response::new(body.to_string())),
        "/slow" => {
            let ms = request
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|pair| {
                    let value = pair.strip_prefix("ms=")?;
                    value.parse::<u64>().ok()
                });
            let Some(ms) = ms else {
                return Ok(status(
                    StatusCode::BAD_REQUEST,
                    "usage: /slow?ms=N (milliseconds)\n",
                ));
            };
            tokio::time::sleep(Duration::from_millis(ms.min(MAX_SLOW_MS))).await;
            Ok(Response::new(body.to_string()))
        }
        _ => Ok(status(StatusCode::NOT_FOUND, "not found\n")),
    }
}

fn status(code: StatusCode, text: &str) -> Response<String> {
    let mut response = Response::new(text.to_string());
    *response.status_mut() = code;
    response
}
