//! Connection steering (`--steer-connections`): each worker accepts on a
//! socket of its own, new connections go to the newest ready worker, and a
//! replaced worker is told to drain only once it has taken every connection
//! sent to it. Real masters and workers (`worker.py`), real load, every
//! failed request counted.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use overseer_harness::client::Client;
use overseer_harness::load::Load;
use overseer_harness::proc::Proc;

mod support;

use support::{assert_no_failures, load, write_worker, WORKER};

const OVERSEER: &str = env!("CARGO_BIN_EXE_overseer");
/// A generous bound for anything that should take well under a second.
const T: Duration = Duration::from_secs(30);

/// Starts a steering master of `program` (worker.py by default) with a
/// control socket in `dir`.
fn start(dir: &Path, program: &Path) -> (Proc, SocketAddr) {
    let mut cmd = Command::new(OVERSEER);
    cmd.args([
        "run",
        "--listen",
        "127.0.0.1:0",
        "--ready",
        "notify",
        "--steer-connections",
    ])
    .arg("--control")
    .arg(dir.join("control.sock"))
    .arg("--")
    .arg("python3")
    .arg(program)
    .env("WORKER_READY", "notify");
    let p = Proc::spawn(cmd);
    let addr = p.listen_addr();
    p.expect_line("worker 1 ready", T);
    (p, addr)
}

/// The socket at a worker's fd 3 (`socket:[inode]`).
fn listening_socket(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/3"))
        .map(|l| l.display().to_string())
        .unwrap_or_else(|e| panic!("worker {pid}'s fd 3: {e}"))
}

/// The `pid=` of one answer.
fn answering_pid(addr: SocketAddr) -> i32 {
    let r = Client::new(addr, false)
        .get("/")
        .unwrap_or_else(|f| panic!("GET /: {f}"));
    r.field("pid")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid= in {:?}", r.body))
}

#[test]
fn steered_handovers_lose_nothing_and_alternate_two_sockets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (p, addr) = start(dir.path(), Path::new(WORKER));
    let loads = [
        ("keep-alive", load(addr, 3, true)),
        ("per-request", load(addr, 3, false)),
    ];
    let mut sockets = vec![listening_socket(p.worker_pid(1, T))];
    sockets.extend(steered_restarts(&p, addr, 2..=6, &loads));
    for (mode, load) in loads {
        let stats = load.stop();
        assert_no_failures(mode, &stats);
        assert_eq!(stats.by_worker.len(), 6, "{mode}: {:?}", stats.by_worker);
    }
    assert_two_sockets_alternate(&sockets);
    assert_eq!(p.count("restart failed"), 0);
}

#[test]
fn a_failed_start_under_steering_keeps_the_old_worker_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("app.py");
    write_worker(&app, "1");
    let (p, addr) = start(dir.path(), &app);
    let pid1 = p.worker_pid(1, T);
    let per_request = load(addr, 2, false);
    // A bad deploy: the new worker exits at start.
    std::fs::write(&app, "import sys\nsys.exit(3)\n").expect("write");
    p.signal(nix::libc::SIGUSR2);
    p.expect_line("restart failed", T);
    assert_eq!(answering_pid(addr), pid1);
    write_worker(&app, "1");
    p.signal(nix::libc::SIGUSR2);
    p.expect_line("worker 3 ready", T);
    let pid3 = p.worker_pid(3, T);
    assert_eq!(answering_pid(addr), pid3);
    let deadline = Instant::now() + T;
    while per_request.latest_worker() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_no_failures("per-request", &per_request.stop());
}

/// Restarts under `loads`, each checked: the old worker is steered away
/// from, the new one answers every new connection at once and the loads
/// reach it; returns the new workers' sockets.
fn steered_restarts(
    p: &Proc,
    addr: SocketAddr,
    numbers: std::ops::RangeInclusive<u64>,
    loads: &[(&str, Load)],
) -> Vec<String> {
    let mut sockets = Vec::new();
    for n in numbers {
        p.signal(nix::libc::SIGUSR2);
        p.expect_line(&format!("worker {n} ready"), T);
        p.expect_line(&format!("worker {} gets no new connections", n - 1), T);
        let pid = p.worker_pid(n, T);
        sockets.push(listening_socket(pid));
        assert_eq!(answering_pid(addr), pid, "worker {n} answers");
        p.expect_line(&format!("worker {} drained", n - 1), T);
        let deadline = Instant::now() + T;
        while loads.iter().any(|(_, l)| l.latest_worker() < n) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    sockets
}

/// Each worker had another socket than the one before it, and a socket
/// whose worker had ended was given to the next: two in all.
fn assert_two_sockets_alternate(sockets: &[String]) {
    for pair in sockets.windows(2) {
        assert_ne!(pair[0], pair[1], "{sockets:?}");
    }
    let mut distinct = sockets.to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 2, "{sockets:?}");
}

#[test]
fn steering_is_carried_across_a_re_exec_under_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (p, addr) = start(dir.path(), Path::new(WORKER));
    let loads = [
        ("keep-alive", load(addr, 2, true)),
        ("per-request", load(addr, 2, false)),
    ];
    let mut sockets = vec![listening_socket(p.worker_pid(1, T))];
    sockets.extend(steered_restarts(&p, addr, 2..=3, &loads));
    for round in 1..=3 {
        let out = Command::new(OVERSEER)
            .args(["reload", "--control"])
            .arg(dir.path().join("control.sock"))
            .output()
            .expect("run overseer reload");
        assert!(out.status.success(), "reload {round}: {out:?}");
        p.expect_nth("master re-executed in", round - 1, T);
    }
    // The same master, worker 3 still serving on its own socket, and
    // steering goes on: the next workers alternate the same two sockets.
    assert_eq!(answering_pid(addr), p.worker_pid(3, T));
    sockets.extend(steered_restarts(&p, addr, 4..=6, &loads));
    assert_two_sockets_alternate(&sockets);
    for (mode, load) in loads {
        assert_no_failures(mode, &load.stop());
    }
    assert_eq!(p.count("restart failed"), 0);
}

/// A replaced worker whose accept loop is stuck leaves the connections sent
/// to it before the switch in its socket's queue; once it is told to drain,
/// a worker is started on that socket at once and answers them.
#[test]
fn connections_left_by_a_stuck_worker_are_served_by_a_worker_started_on_its_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stall = dir.path().join("stall");
    let mut cmd = Command::new(OVERSEER);
    cmd.args([
        "run",
        "--listen",
        "127.0.0.1:0",
        "--ready",
        "notify",
        "--steer-connections",
    ])
    .args(["--no-control", "--", "python3", WORKER])
    .env("WORKER_READY", "notify")
    .env("WORKER_STALL_FILE", &stall);
    let p = Proc::spawn(cmd);
    let addr = p.listen_addr();
    p.expect_line("worker 1 ready", T);
    // Worker 1 stops accepting; connections opened now wait in its queue.
    std::fs::write(&stall, "1").expect("stall worker 1");
    let stalled = format!("worker.py 1 (pid {}): stalled", p.worker_pid(1, T));
    p.expect_line(&stalled, T);
    let waiting: Vec<_> = (0..4)
        .map(|i| {
            let mut client = Client::new(addr, false).timeout(T);
            client
                .connect()
                .unwrap_or_else(|f| panic!("connect {i}: {f}"));
            std::thread::spawn(move || client.get("/"))
        })
        .collect();
    p.signal(nix::libc::SIGUSR2);
    p.expect_line("worker 2 ready", T);
    p.expect_line(
        "worker 1 draining with 4 connection(s) still in its accept queue",
        T,
    );
    p.expect_line("whose workers will not take them", T);
    p.expect_line("worker 3 ready", T);
    for (i, w) in waiting.into_iter().enumerate() {
        let answer = w
            .join()
            .expect("client thread")
            .unwrap_or_else(|f| panic!("waiting request {i}: {f}"));
        assert_eq!(answer.field("worker"), Some("3"), "{:?}", answer.body);
    }
    // New connections went to worker 2 meanwhile, and go to worker 3 now.
    assert_eq!(answering_pid(addr), p.worker_pid(3, T));
}
