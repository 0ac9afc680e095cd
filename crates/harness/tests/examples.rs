//! The shipped examples drain in-flight requests and lose nothing across restarts.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use overseer_harness::client::Client;
use overseer_harness::h2load::H2Load;
use overseer_harness::proc::{describe, Proc};
use support::*;

/// Four workers in turn under HTTP/1.1 keep-alive and per-request load (and
/// HTTP/2 load where the example speaks it), with a slow request in flight
/// across the first handover: nothing fails, and the slow request is
/// answered by the worker that took it.
fn example_survives_handovers(binary: &str, http2: bool) {
    let mut cmd = Command::new(binary);
    cmd.arg("127.0.0.1:0");
    let mut p = Proc::spawn(cmd);
    let addr = p.listen_addr();
    p.expect_line("worker 1 ready", T);
    let keep_alive = load(addr, 3, true);
    let per_request = load(addr, 3, false);
    let h2 = http2.then(|| H2Load::start(addr, 4, Duration::from_secs(120)));
    // The slow request is sent before anything else on a fresh connection,
    // and a request on a later connection answered by worker 1 shows that
    // worker 1 took it (the accept queue is first in, first out).
    let mut slow = Client::new(addr, false).timeout(T);
    slow.send("/slow?ms=2000")
        .unwrap_or_else(|f| panic!("send the slow request: {f}"));
    let slow = std::thread::spawn(move || slow.receive());
    let after = Client::new(addr, false)
        .timeout(T)
        .get("/")
        .unwrap_or_else(|f| panic!("a request after the slow one: {f}"));
    assert_eq!(after.field("worker"), Some("1"), "{}", after.body);
    for n in 2..=4u64 {
        p.signal(overseer::SIGUSR2);
        p.expect_line(&format!("worker {n} ready"), T);
        let deadline = Instant::now() + T;
        let reached = |latest: u64| latest >= n || Instant::now() >= deadline;
        while !(reached(keep_alive.latest_worker())
            && reached(per_request.latest_worker())
            && reached(h2.as_ref().map_or(n, H2Load::latest_worker)))
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let slow = slow
        .join()
        .expect("slow client")
        .expect("slow request completes");
    assert_eq!(
        slow.field("worker"),
        Some("1"),
        "served to the end by the old worker"
    );
    for (mode, stats) in [
        ("keep-alive", keep_alive.stop()),
        ("per-request", per_request.stop()),
    ] {
        assert!(stats.failures.is_empty(), "{mode}: {:?}", stats.failures);
        assert!(
            stats.by_worker.contains_key(&4),
            "{mode}: reached the last worker"
        );
    }
    if let Some(h2) = h2 {
        let stats = h2.stop();
        eprintln!(
            "HTTP/2: {} ok, {} failed, {} sent again unwritten",
            stats.ok,
            stats.failures.len(),
            stats.resent
        );
        assert!(stats.failures.is_empty(), "HTTP/2: {:?}", stats.failures);
        assert!(stats.ok > 0, "HTTP/2: no request served");
        assert!(
            stats.by_worker.contains_key(&4),
            "HTTP/2: reached the last worker: {:?}",
            stats.by_worker
        );
    }
    p.signal(15);
    let status = p.expect_exit(T);
    assert_eq!(status.code(), Some(0), "{}", describe(status));
}

#[test]
fn std_example_loses_nothing_and_drains_slow_requests() {
    example_survives_handovers(env!("CARGO_BIN_EXE_example-http-std"), false);
}

#[test]
fn axum_example_loses_nothing_and_drains_slow_requests() {
    example_survives_handovers(env!("CARGO_BIN_EXE_example-http-axum"), true);
}

#[test]
fn hyper_example_loses_nothing_over_http1_and_http2() {
    example_survives_handovers(env!("CARGO_BIN_EXE_example-http-hyper"), true);
}
