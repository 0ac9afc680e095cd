//! A service of a fleet: it upgrades itself from a signed manifest in a
//! store the whole fleet polls (a directory here; a bucket with
//! `fetcher::S3`, `Gcs` or `Azure` under a prefix), taking each release when
//! its wave reaches this host, and reporting how its probation went.
//!
//! ```text
//! overseer keygen --out keys                       # keys/overseer.key, keys/overseer.pub
//! cargo build -p overseer --example fleet
//! cp target/debug/examples/fleet /tmp/app
//! /tmp/app 127.0.0.1:3000 /tmp/fleet keys/overseer.pub host-1 &
//! curl localhost:3000/                             # … version=1.0.0
//!
//! # Version 1.1.0, to half the hosts now and the rest in an hour:
//! FLEET_EXAMPLE_VERSION=1.1.0 cargo build -p overseer --example fleet
//! overseer publish --key keys/overseer.key --version 1.1.0 --waves 50%,100%@1h \
//!     --delta-from /tmp/app target/debug/examples/fleet /tmp/fleet
//! curl localhost:3000/                             # version=1.1.0 once taken
//! overseer rollout status /tmp/fleet               # waves and the hosts' reports
//! ```
//!
//! Whether `host-1` is in the first half is its bucket for the release (try
//! other host ids). The version is fixed when the example is built
//! (`FLEET_EXAMPLE_VERSION`, default 1.0.0), as a release's version is.

#[path = "http_std.rs"]
#[allow(dead_code)]
mod http_std;

use std::sync::Arc;
use std::time::Duration;

use overseer::fetcher::Fleet;
use overseer::{Config, Readiness, State};

/// This build's version: what it signs as and reports.
const VERSION: &str = match option_env!("FLEET_EXAMPLE_VERSION") {
    Some(v) => v,
    None => "1.0.0",
};

fn main() {
    let mut config = Config::new(program)
        .readiness(Readiness::Notify)
        .version(VERSION)
        .probation(Duration::from_secs(5));
    // Run without its arguments (as the upgrade's check of a new build runs
    // it), it serves alone, polling nothing.
    let args: Vec<String> = std::env::args().skip(1).collect();
    match &args[..] {
        [addr, store, public_key, host] => {
            let key = std::fs::read_to_string(public_key).unwrap_or_else(|e| {
                eprintln!("{public_key}: {e}");
                std::process::exit(2);
            });
            let fleet = Fleet::new(store)
                .host_id(host.as_str())
                .reports(true)
                .interval(Duration::from_secs(5));
            config = config.address(addr.as_str()).public_key(key).fetcher(fleet);
        }
        _ => {
            eprintln!("usage: fleet ADDRESS STORE_DIR PUBLIC_KEY_FILE HOST_ID (serving 127.0.0.1:3000 alone)");
            config = config.address("127.0.0.1:3000");
        }
    }
    overseer::run(config);
}

/// Runs in each worker: answers who served it, of which version.
fn program(state: State) {
    let listener = state.tcp_listener().expect("a TCP address is configured");
    let tag = format!(
        "worker={} pid={} version={}",
        state.worker,
        std::process::id(),
        state.version.as_deref().unwrap_or(VERSION),
    );
    if let Err(e) = state.ready() {
        eprintln!("cannot report readiness: {e}");
    }
    let handler: http_std::Handler = Arc::new(move |path| match path {
        "/" => (200, format!("{tag}\n")),
        _ => (404, "not found\n".to_string()),
    });
    http_std::serve(&listener, &state.shutdown, handler);
}
