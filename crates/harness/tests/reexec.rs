//! The master re-executes itself from the thread that started its workers
//! (Linux kills a child with its parent-death signal when the *thread* that
//! started it ends, and `execve` ends every other thread): re-execs by
//! signal and by `overseer::reload()` from a worker never touch the
//! workers; with the master's loop on a thread other than the main one,
//! the workers a previous image started (whose thread became the main one)
//! are replaced by a handover first, and no worker is ever killed.
//!
//! Each master runs in its own process group and is killed with it when
//! its `Proc` is dropped; traffic stays on 127.0.0.1; every wait is bounded.

mod support;

use std::time::Duration;

use overseer_harness::proc::alive;
use support::{get, load, start_ready, stop_without_failures, T};

#[test]
fn reexecs_by_signal_and_by_reload_from_a_worker_leave_the_workers_alone() {
    let reload = nix::libc::SIGUSR1.to_string();
    let (p, addr) = start_ready(&[("TS_RELOAD_SIGNAL", &reload)]);
    let worker = p.worker_pid(1, T);
    let keep_alive = load(addr, 2, true);
    let per_request = load(addr, 2, false);
    for n in 0..20 {
        if n % 2 == 0 {
            p.signal(nix::libc::SIGUSR1);
        } else {
            // From the worker, over its notify socket.
            let r = get(addr, "/reload");
            assert!(r.body.contains("worker=1"), "{}", r.body);
        }
        p.expect_nth("master re-executed", n, T);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(worker), "worker 1 got killed");
    assert_eq!(
        p.count("worker 2"),
        0,
        "a handover happened: {:?}",
        p.output()
    );
    assert_eq!(p.count("not made"), 0, "{:?}", p.output());
    for stats in stop_without_failures(keep_alive, per_request) {
        assert_eq!(stats.by_worker.keys().copied().collect::<Vec<_>>(), [1]);
    }
    let r = get(addr, "/");
    assert!(r.body.contains(&format!("pid={worker}")), "{}", r.body);
}

#[test]
fn a_master_off_the_main_thread_replaces_older_workers_before_a_reexec() {
    let reload = nix::libc::SIGUSR1.to_string();
    let (p, addr) = start_ready(&[
        ("TS_RUN_ON_THREAD", "1"),
        ("TS_RELOAD_SIGNAL", &reload),
        ("TS_TERMINATE_MS", "3000"),
    ]);
    let keep_alive = load(addr, 2, true);
    let per_request = load(addr, 2, false);
    // The first: worker 1 was started by the thread that calls execve.
    p.signal(nix::libc::SIGUSR1);
    p.expect_nth("master re-executed", 0, T);
    // The next ones: the worker carried is replaced first, then the re-exec.
    for n in 1..4 {
        p.signal(nix::libc::SIGUSR1);
        p.expect_nth("master re-executed", n, T);
        p.expect_line(&format!("worker {} ready", n + 1), T);
    }
    assert_eq!(
        p.count("SIGKILL"),
        0,
        "a worker was killed: {:?}",
        p.output()
    );
    assert_eq!(p.count("not made"), 0, "{:?}", p.output());
    stop_without_failures(keep_alive, per_request);
}
