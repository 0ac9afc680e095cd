//! The shipped examples drain in-flight requests and lose nothing across restarts.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use overseer_harness::client::Client;
use overseer_harness::proc::{describe, Proc};
use support::*;

fn example_survives_handovers(binary: &str) {
    let mut cmd = Command::new(binary);
    cmd.arg("127.0.0.1:0");
    let mut p = Proc::spawn(cmd);
    let addr = p.listen_addr();
    p.expect_line("worker 1 ready", T);
    let keep_alive = load(addr, 3, true);
    let per_request = load(addr, 3, false);
    let slow = std::thread::spawn(move || Client::new(addr, false).get("/slow?ms=2000"));
    std::thread::sleep(Duration::from_millis(300));
    for n in 2..=4u64 {
        p.signal(overseer::SIGUSR2);
        p.expect_line(&format!("worker {n} ready"), T);
        let deadline = Instant::now() + T;
        while keep_alive.latest_worker() < n && Instant::now() < deadline {
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
    p.signal(15);
    let status = p.expect_exit(T);
    assert_eq!(status.code(), Some(0), "{}", describe(status));
}

#[test]
fn std_example_loses_nothing_and_drains_slow_requests() {
    example_survives_handovers(env!("CARGO_BIN_EXE_example-http-std"));
}

#[test]
fn axum_example_loses_nothing_and_drains_slow_requests() {
    example_survives_handovers(env!("CARGO_BIN_EXE_example-http-axum"));
}
