//! Shared by the `overseer run` tests: load that must not fail, and the
//! non-Rust worker `worker.py` written at a given version.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use overseer_harness::load::{Load, LoadSpec, Stats};

/// The non-Rust worker of these tests.
pub const WORKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/worker.py");

/// Load from `clients` threads, bounded to four minutes whatever happens.
pub fn load(addr: SocketAddr, clients: usize, keep_alive: bool) -> Load {
    Load::start(LoadSpec {
        addr,
        clients,
        keep_alive,
        path: "/".into(),
        max_duration: Duration::from_secs(240),
        pause: Duration::ZERO,
    })
}

/// No failed request, and more than 20 that succeeded.
pub fn assert_no_failures(mode: &str, stats: &Stats) {
    assert!(
        stats.failures.is_empty(),
        "{mode}: {} failures: {:?}",
        stats.failures.len(),
        stats.failures.iter().take(10).collect::<Vec<_>>()
    );
    assert!(stats.ok > 20, "{mode}: only {} requests", stats.ok);
}

/// Writes `worker.py` with `VERSION = "v"` to `path`, executable.
pub fn write_worker(path: &Path, version: &str) {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(WORKER).expect("worker.py");
    assert!(text.contains("VERSION = \"1\""));
    let text = text.replace("VERSION = \"1\"", &format!("VERSION = \"{version}\""));
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Runs `cmd`, which must succeed.
pub fn run_ok(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}
