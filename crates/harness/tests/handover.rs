//! Graceful restarts under load: nothing refused, reset or cut, ever.

mod support;

use std::time::{Duration, Instant};

use overseer_harness::client::Client;
use support::*;

use overseer::SIGUSR2;

#[test]
fn twenty_handovers_under_keepalive_and_per_request_load_lose_nothing() {
    let (p, addr) = start_ready(&[]);
    let keep_alive = load(addr, 4, true);
    let per_request = load(addr, 4, false);
    for n in 2..=21u64 {
        p.signal(SIGUSR2);
        p.expect_line(&format!("worker {n} ready"), T);
        p.expect_line(&format!("worker {} drained", n - 1), T);
        // Both kinds of client must have reached the new worker.
        let deadline = Instant::now() + T;
        while (keep_alive.latest_worker() < n || per_request.latest_worker() < n)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let ka = keep_alive.stop();
    let pr = per_request.stop();
    for (mode, stats) in [("keep-alive", &ka), ("per-request", &pr)] {
        assert!(
            stats.failures.is_empty(),
            "{mode}: {} failures: {:?}",
            stats.failures.len(),
            stats.failures.iter().take(10).collect::<Vec<_>>()
        );
        assert!(stats.ok > 100, "{mode}: only {} requests", stats.ok);
        let workers: Vec<u64> = stats.by_worker.keys().copied().collect();
        assert_eq!(
            workers,
            (1..=21).collect::<Vec<_>>(),
            "{mode}: every handover switched worker"
        );
    }
    assert_eq!(p.count("restart failed"), 0);
}

#[test]
fn slow_request_finishes_on_old_worker_while_new_requests_reach_new_one() {
    let (p, addr) = start_ready(&[]);
    // The request is answered once `release` exists.
    let dir = tempfile::tempdir().expect("tempdir");
    let release = dir.path().join("release");
    let path = format!("/hold?file={}", release.display());
    let slow = std::thread::spawn(move || {
        Client::new(addr, false)
            .timeout(T)
            .get(&path)
            .map(|r| r.field("worker").map(str::to_string))
    });
    p.expect_line("worker=1 holding a request", T);
    p.signal(SIGUSR2);
    p.expect_line("worker 2 ready", T);
    p.expect_line("worker 1 draining", T);
    expect_answering(addr, 2);
    assert!(
        !slow.is_finished(),
        "the held request is still in flight on worker 1"
    );
    assert_eq!(p.count("worker 1 drained"), 0, "worker 1 left a request");
    std::fs::write(&release, "").expect("release the request");
    let served_by = slow.join().expect("slow client");
    assert_eq!(
        served_by,
        Ok(Some("1".to_string())),
        "the slow request completes on worker 1"
    );
    p.expect_line("worker 1 drained", T);
}

#[test]
fn restart_requested_by_the_worker_itself() {
    let (p, addr) = start_ready(&[]);
    get(addr, "/restart");
    p.expect_line("restart requested by worker 1", T);
    p.expect_line("worker 2 ready", T);
    expect_answering(addr, 2);
}

#[test]
fn triggers_during_a_handover_coalesce_into_one_follow_up() {
    let (p, addr) = start_ready(&[("TS_START_DELAY_MS", "1500")]);
    p.signal(SIGUSR2);
    p.expect_line("worker 2 started", T);
    // Worker 2 takes 1.5 s to start: a burst of triggers meanwhile (signals
    // sent while the master's signal thread waits for a CPU merge into one,
    // so the burst goes on until one is queued).
    for _ in 0..100 {
        if p.count("during a handover: queued") > 0 || p.count("worker 2 ready") > 0 {
            break;
        }
        for _ in 0..5 {
            p.signal(SIGUSR2);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(
        p.count("during a handover: queued") >= 1,
        "no trigger was queued: {:?}",
        p.output()
    );
    p.expect_line("worker 2 ready", T);
    p.expect_line("worker 3 ready", T);
    // No further generation: give a third one ample time to appear.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(p.count("worker 4 started"), 0, "at most one queued restart");
    expect_answering(addr, 3);
}

#[test]
fn default_readiness_hands_over_without_failures() {
    let (p, addr) = start_ready(&[("TS_READINESS", "started")]);
    let load = load(addr, 4, true);
    for n in 2..=4u64 {
        p.signal(SIGUSR2);
        p.expect_line(&format!("worker {n} ready"), T);
        p.expect_line(&format!("worker {} drained", n - 1), T);
    }
    expect_answering(addr, 4);
    let stats = load.stop();
    assert!(stats.failures.is_empty(), "{:?}", stats.failures);
}

#[test]
fn restart_called_in_the_master() {
    let (p, addr) = start_ready(&[("TS_MASTER_RESTART_MS", "300")]);
    p.expect_line("restart requested by restart()", T);
    p.expect_line("worker 2 ready", T);
    expect_answering(addr, 2);
}
