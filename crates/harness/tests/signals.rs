//! Signals reach the worker; the worker's end becomes the master's.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use overseer_harness::proc::{alive, describe, send_signal, Proc};
use support::*;

const SIGHUP: i32 = 1;
const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;
const SIGTERM: i32 = 15;

#[test]
fn sighup_reaches_the_worker_and_its_exit_status_becomes_the_masters() {
    let (mut p, _addr) = start_ready(&[("TS_HUP_EXIT", "3")]);
    p.signal(SIGHUP);
    p.expect_line("worker=1 got SIGHUP, exiting with 3", T);
    let status = p.expect_exit(T);
    assert_eq!(status.code(), Some(3), "{}", describe(status));
}

#[test]
fn sigterm_drains_the_worker_and_exits_with_its_status() {
    let (mut p, addr) = start_ready(&[]);
    let slow = std::thread::spawn(move || {
        overseer_harness::client::Client::new(addr, false).get("/slow?ms=1500")
    });
    std::thread::sleep(Duration::from_millis(300));
    p.signal(SIGTERM);
    let status = p.expect_exit(T);
    assert_eq!(status.code(), Some(0), "{}", describe(status));
    assert!(
        slow.join().expect("client").is_ok(),
        "in-flight request completed"
    );
    assert!(p.count("worker=1 drained") == 1);
}

fn dies_by(signal: i32) {
    // No core files from the deliberate crash.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "ulimit -c 0; exec \"$0\"",
        env!("CARGO_BIN_EXE_testserver"),
    ]);
    let mut p = Proc::spawn(cmd);
    p.expect_line("worker 1 ready", T);
    let worker = worker_pid(&p, 1);
    send_signal(worker, signal);
    if signal == SIGSEGV {
        // Rust's runtime catches the first SIGSEGV (stack-overflow detection),
        // restores the default action and returns when it was not a fault:
        // the second one kills, as a real crash would.
        std::thread::sleep(Duration::from_millis(200));
        send_signal(worker, signal);
    }
    let status = p.expect_exit(T);
    assert_eq!(status.signal(), Some(signal), "{}", describe(status));
}

#[test]
fn worker_killed_by_sigkill_makes_the_master_die_by_sigkill() {
    dies_by(SIGKILL);
}

#[test]
fn worker_killed_by_sigsegv_makes_the_master_die_by_sigsegv() {
    dies_by(SIGSEGV);
}

#[test]
fn master_killed_with_sigkill_leaves_no_worker_alive() {
    let (mut p, _addr) = start_ready(&[]);
    p.signal(SIGUSR2_FOR_TWO_WORKERS);
    p.expect_line("worker 2 ready", T);
    let workers = [worker_pid(&p, 1), worker_pid(&p, 2)];
    p.signal(SIGKILL);
    p.expect_exit(T);
    let deadline = Instant::now() + T;
    while workers.iter().any(|&w| alive(w)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for w in workers {
        assert!(!alive(w), "worker {w} outlived its master");
    }
}

const SIGUSR2_FOR_TWO_WORKERS: i32 = 12;
