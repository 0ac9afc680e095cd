//! Failed restarts never take the service down.

mod support;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use overseer_harness::proc::alive;
use support::*;

use overseer::SIGUSR2;

#[test]
fn new_worker_that_exits_at_start_leaves_old_one_serving() {
    let (p, addr) = start_ready(&[("TS_EXIT_AT_START", "2")]);
    let load = load(addr, 4, true);
    std::thread::sleep(Duration::from_millis(200));
    p.signal(SIGUSR2);
    let line = p.expect_line("restart failed", T);
    assert!(
        line.contains("worker 2 exited with exit status 7 before becoming ready"),
        "{line}"
    );
    assert!(line.contains("worker 1 keeps serving"), "{line}");
    std::thread::sleep(Duration::from_millis(300));
    let stats = load.stop();
    assert!(stats.failures.is_empty(), "failures: {:?}", stats.failures);
    assert_eq!(stats.by_worker.keys().copied().collect::<Vec<_>>(), [1]);
    expect_answering(addr, 1);
    // The master is up and restarts work again.
    p.signal(SIGUSR2);
    p.expect_line("worker 3 ready", T);
    expect_answering(addr, 3);
}

#[test]
fn new_worker_never_ready_is_killed_and_old_one_keeps_serving() {
    let (p, addr) = start_ready(&[("TS_NEVER_READY", "2"), ("TS_READY_MS", "1000")]);
    let load = load(addr, 4, false);
    p.signal(SIGUSR2);
    let pid = worker_pid(&p, 2);
    let line = p.expect_line("restart failed", T);
    assert!(line.contains("worker 2 was not ready within 1s"), "{line}");
    let stats = load.stop();
    assert!(stats.failures.is_empty(), "failures: {:?}", stats.failures);
    assert_eq!(stats.by_worker.keys().copied().collect::<Vec<_>>(), [1]);
    assert!(!alive(pid), "the unready worker {pid} was killed");
    expect_answering(addr, 1);
}

#[test]
fn worker_ignoring_sigterm_is_killed_after_terminate_timeout() {
    let (p, addr) = start_ready(&[("TS_IGNORE_TERM", "1"), ("TS_TERMINATE_MS", "1000")]);
    let old = worker_pid(&p, 1);
    p.signal(SIGUSR2);
    p.expect_line("worker 2 ready", T);
    p.expect_line("worker=1 ignoring SIGTERM", T);
    let line = p.expect_line("worker 1 was killed", T);
    // Alive until the timeout: killed after it said it ignores SIGTERM (one
    // pipe, so the lines keep their order), and still running then.
    assert!(line.contains("still running 1s after SIGTERM"), "{line}");
    let at = |needle: &str| p.output().iter().position(|l| l.contains(needle));
    assert!(
        at("worker=1 ignoring SIGTERM") < at("worker 1 was killed"),
        "{:?}",
        p.output()
    );
    let deadline = std::time::Instant::now() + T;
    while alive(old) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!alive(old));
    expect_answering(addr, 2);
}

/// A master's runtime directory (its workers' notify sockets) is private. A
/// killed master cannot remove it; the next master started in the same place
/// removes it, and no live master's.
#[test]
fn a_killed_masters_runtime_directory_is_removed_by_the_next_master() {
    const SIGKILL: i32 = 9;
    const SIGTERM: i32 = 15;
    let base = tempfile::tempdir().expect("temp dir");
    let base_str = base.path().to_str().expect("a UTF-8 temp dir");
    let envs = [("TMPDIR", base_str), ("XDG_RUNTIME_DIR", base_str)];
    let dirs = || -> Vec<std::path::PathBuf> {
        let mut dirs: Vec<_> = std::fs::read_dir(base.path())
            .expect("read the temp dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        dirs
    };

    let (mut killed, _) = start_ready(&envs);
    let killed_dir = match dirs().as_slice() {
        [one] => one.clone(),
        other => panic!("one runtime directory expected: {other:?}"),
    };
    let mode = std::fs::metadata(&killed_dir).expect("stat").mode() & 0o777;
    assert_eq!(
        mode, 0o700,
        "the runtime directory is not private: {mode:o}"
    );
    let (mut live, _) = start_ready(&envs);
    let live_dir = dirs()
        .into_iter()
        .find(|d| *d != killed_dir)
        .expect("the second master's directory");

    let worker = worker_pid(&killed, 1);
    killed.signal(SIGKILL);
    killed.expect_exit(T);
    let deadline = std::time::Instant::now() + T;
    while alive(worker) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!alive(worker), "worker {worker} outlived its master");
    assert!(
        killed_dir.is_dir(),
        "nothing removes it before the next start"
    );

    let (mut next, _) = start_ready(&envs);
    assert!(!killed_dir.exists(), "the dead master's directory is left");
    assert!(live_dir.is_dir(), "the live master's directory was removed");
    expect_answering(live.listen_addr(), 1);

    for p in [&mut live, &mut next] {
        p.signal(SIGTERM);
        p.expect_exit(T);
    }
    assert_eq!(dirs(), Vec::<std::path::PathBuf>::new(), "left behind");
}
