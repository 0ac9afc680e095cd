//! Shared by the integration tests: starting the test server under overseer.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use overseer_harness::client::{Client, Response};
use overseer_harness::load::{Load, LoadSpec, Stats};
use overseer_harness::proc::{thread_signal_masks, Proc};

/// A generous bound for anything that should take milliseconds.
pub const T: Duration = Duration::from_secs(20);

/// Starts the test server's master with extra environment variables.
pub fn start(envs: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testserver"));
    cmd.envs(envs.iter().copied());
    Proc::spawn(cmd)
}

/// Starts it and waits for the first worker to be ready; returns the address.
pub fn start_ready(envs: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let p = start(envs);
    let addr = p.listen_addr();
    p.expect_line("worker 1 ready", T);
    (p, addr)
}

/// One request that must succeed.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    Client::new(addr, false)
        .get(path)
        .unwrap_or_else(|f| panic!("GET {path}: {f}"))
}

/// The worker number that answers `/` now.
pub fn answering(addr: SocketAddr) -> u64 {
    get(addr, "/")
        .field("worker")
        .and_then(|w| w.parse().ok())
        .unwrap_or(0)
}

/// Waits until worker `n` answers `/` (the draining worker may still accept
/// for a moment after the new one is ready: both serve, nothing is lost).
pub fn expect_answering(addr: SocketAddr, n: u64) {
    let deadline = std::time::Instant::now() + T;
    let mut last = 0;
    while std::time::Instant::now() < deadline {
        last = answering(addr);
        if last == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("worker {n} never answered (last: worker {last})");
}

/// The pid of worker `n`, from the master's log.
pub fn worker_pid(p: &Proc, n: u64) -> i32 {
    p.worker_pid(n, T)
}

/// Load from `clients` threads, bounded to two minutes whatever happens.
pub fn load(addr: SocketAddr, clients: usize, keep_alive: bool) -> Load {
    Load::start(LoadSpec {
        addr,
        clients,
        keep_alive,
        path: "/".into(),
        max_duration: Duration::from_secs(120),
        pause: Duration::ZERO,
    })
}

/// Stops both loads (`keep_alive`, `per_request`) and asserts that neither
/// had a failed request and that each made more than 20; returns their
/// figures.
pub fn stop_without_failures(keep_alive: Load, per_request: Load) -> [Stats; 2] {
    let stats = [keep_alive.stop(), per_request.stop()];
    for (mode, s) in ["keep-alive", "per-request"].iter().zip(&stats) {
        assert!(
            s.failures.is_empty(),
            "{mode}: {} failures: {:?}",
            s.failures.len(),
            s.failures.iter().take(5).collect::<Vec<_>>()
        );
        assert!(s.ok > 20, "{mode}: only {} requests", s.ok);
    }
    stats
}

/// Signals every master handles: SIGHUP, SIGINT, SIGTERM, SIGUSR2 (the
/// default restart signal) and SIGCHLD.
pub const MASTER_SIGNALS: [i32; 5] = [1, 2, 15, 12, 17];

/// Asserts that of the master's threads, only its signal thread takes the
/// signals it handles (every other thread blocks them all), and that a
/// worker's threads block no signal at all.
pub fn expect_signals_only_to_the_signal_thread(master: i32, worker: i32) {
    let handled = MASTER_SIGNALS
        .iter()
        .fold(0u64, |mask, &signal| mask | 1 << (signal - 1));
    let threads = thread_signal_masks(master);
    let takers: Vec<&str> = threads
        .iter()
        .filter(|(_, blocked)| blocked & handled == 0)
        .map(|(name, _)| name.as_str())
        .collect();
    // Thread names are cut to 15 bytes.
    assert_eq!(
        takers,
        ["overseer-signal"],
        "threads of the master that take its signals: {threads:x?}"
    );
    for (name, blocked) in &threads {
        assert!(
            blocked & handled == handled || name == "overseer-signal",
            "thread {name} of the master takes some of its signals: {threads:x?}"
        );
    }
    let worker_threads = thread_signal_masks(worker);
    assert!(!worker_threads.is_empty(), "worker {worker} is gone");
    for (name, blocked) in &worker_threads {
        assert_eq!(*blocked, 0, "worker thread {name} blocks {blocked:#x}");
    }
}

/// Whether the tests run as root (some set up files of another user).
pub fn root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The user (and group) tests run masters as when they need one that is not
/// root: `nobody` on most systems.
pub const OTHER_UID: u32 = 65534;
