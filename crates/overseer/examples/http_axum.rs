//! An axum 0.8 HTTP service under overseer that restarts without failing a
//! single request, keep-alive and HTTP/2 clients included.
//!
//! Run it (the library's `hyper` feature serves it):
//!
//! ```text
//! cargo run -p overseer --features hyper --example http_axum -- 127.0.0.1:3000
//! curl http://127.0.0.1:3000/              # worker=1 pid=… id=… version=dev
//! curl 'http://127.0.0.1:3000/slow?ms=3000' # the same, after three seconds
//! curl --http2-prior-knowledge http://127.0.0.1:3000/
//! ```
//!
//! The process you started is the master; it holds the listening socket and
//! runs this binary again as a worker, which serves the router on its own
//! tokio runtime. Trigger a graceful restart with `kill -USR2 <master pid>`:
//! a new worker starts, reports ready once it listens, and only then the old
//! one drains. [`overseer::serve::serve`] does the draining: it stops
//! accepting, closes HTTP/1 keep-alive connections after their next answer
//! (`Connection: close`), sends HTTP/2 clients GOAWAY, and returns once the
//! requests in flight (a `/slow` one, say) have finished.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State as Shared};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
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
    let body = describe(&state);
    let router = Router::new()
        .route("/", get(root))
        .route("/slow", get(slow))
        .with_state(body);
    let runtime = tokio::runtime::Runtime::new().expect("cannot build the tokio runtime");
    eprintln!(
        "worker {} serving (pid {})",
        state.worker,
        std::process::id()
    );
    if let Err(e) = runtime.block_on(overseer::serve::serve(&state, router)) {
        eprintln!("worker {}: {e}", state.worker);
    }
    eprintln!("worker {} done", state.worker);
}

/// The answer to `GET /`, fixed for this worker.
fn describe(state: &State) -> Arc<str> {
    let id = state.id.get(..12).unwrap_or(&state.id);
    format!(
        "worker={} pid={} id={} version={}\n",
        state.worker,
        std::process::id(),
        if id.is_empty() { "unknown" } else { id },
        state.version.as_deref().unwrap_or("dev"),
    )
    .into()
}

async fn root(Shared(body): Shared<Arc<str>>) -> String {
    body.to_string()
}

/// `GET /slow?ms=N`: the same answer after N milliseconds.
async fn slow(
    Shared(body): Shared<Arc<str>>,
    RawQuery(query): RawQuery,
) -> Result<String, (StatusCode, &'static str)> {
    let ms = query.as_deref().unwrap_or("").split('&').find_map(|pair| {
        let value = pair.strip_prefix("ms=")?;
        value.parse::<u64>().ok()
    });
    let Some(ms) = ms else {
        return Err((
            StatusCode::BAD_REQUEST,
            "usage: /slow?ms=N (milliseconds)\n",
        ));
    };
    tokio::time::sleep(Duration::from_millis(ms.min(MAX_SLOW_MS))).await;
    Ok(body.to_string())
}
