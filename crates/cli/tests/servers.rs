//! The recipes of `examples/servers/`: each third-party server, started by
//! its own `run` script under `overseer run`, loses no request across 20
//! restarts under load, with keep-alive connections and with a connection
//! per request. `cargo bench -p overseer-cli --bench servers` runs the same
//! beside each server's baseline (without the recipe) and prints the matrix.

#[path = "support/servers.rs"]
mod servers;

use std::path::Path;

use servers::{assert_no_failures, restarts_under_load, Recipe, SERVERS};

/// The recipe's server is installed; it loses no request.
fn recipe_loses_nothing(name: &str) {
    Recipe::named(name).require();
    let figures = restarts_under_load(&Path::new(SERVERS).join(name), &[]);
    assert_no_failures(name, &figures);
}

#[test]
fn node_http_loses_no_request_across_restarts() {
    recipe_loses_nothing("node-http");
}

#[test]
fn gunicorn_loses_no_request_across_restarts() {
    recipe_loses_nothing("gunicorn");
}

#[test]
fn uvicorn_loses_no_request_across_restarts() {
    recipe_loses_nothing("uvicorn");
}

/// gthread workers keep connections alive: `draining.py`'s worker class
/// drains them.
#[test]
fn gunicorn_gthread_loses_no_request_across_restarts() {
    recipe_loses_nothing("gunicorn-gthread");
}

#[test]
fn go_http_loses_no_request_across_restarts() {
    recipe_loses_nothing("go-http");
}

/// Puma's own graceful stop closes idle keep-alive connections: `draining.rb`
/// drains them.
#[test]
fn puma_loses_no_request_across_restarts() {
    recipe_loses_nothing("puma");
}

/// Plain `uvicorn --fd 3` drops the connections it accepted but had not
/// read when it stops, so it loses requests per request at most restarts
/// (its baseline); with connections steered to the newest ready worker, the
/// old one is told to stop only once it has taken everything sent to it.
/// (Its keep-alive losses are uvicorn closing idle connections: steering
/// cannot help those; the recipe does.)
#[test]
fn plain_uvicorn_steered_loses_no_request_per_request() {
    let name = "uvicorn";
    Recipe::named(name).require();
    let baseline = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/servers/uvicorn");
    let [_, (mode, stats)] = restarts_under_load(&baseline, &[("STEER", "1")]);
    assert_no_failures(&format!("{name} (plain, steered)"), &[(mode, stats)]);
}
