//! The master under systemd (docs/design.md, "Service managers and
//! containers"): the sd_notify datagrams it sends to its own `NOTIFY_SOCKET`
//! (here a socket the test owns), the watchdog, and socket activation of the
//! master itself.
//!
//! The socket-activation tests run the master under `systemd-socket-activate`
//! (Debian package `systemd`; `scripts/test` installs it). Without it they
//! fail and say how to install it, unless `OVERSEER_SKIP_SYSTEMD=1` is set.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use overseer_harness::client::Client;
use overseer_harness::ports::free_port;
use overseer_harness::proc::{describe, Proc};
use support::*;

use overseer::SIGUSR2;
const SIGTERM: i32 = 15;

/// The service manager's end: a datagram socket the master sends to.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket {
            _dir: dir,
            path,
            socket,
        }
    }

    /// The next datagram within `timeout`.
    fn recv(&self, timeout: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The next datagram, or a panic naming what was expected.
    fn expect(&self, what: &str) -> String {
        self.recv(T)
            .unwrap_or_else(|| panic!("no datagram within {T:?}; expected {what}"))
    }

    /// Asserts that the next datagram is a reload start, sent between `before`
    /// and now (CLOCK_MONOTONIC, µs).
    fn expect_reloading(&self, before: u64) {
        let got = self.expect("RELOADING=1");
        let after = monotonic_usec();
        let usec: u64 = got
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("not a reload start: {got:?}"));
        assert!(
            (before..=after).contains(&usec),
            "MONOTONIC_USEC={usec} outside [{before}, {after}]"
        );
    }
}

fn monotonic_usec() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1_000
}

/// The test server's master with `NOTIFY_SOCKET` pointing at `notify`.
fn start_notified(notify: &NotifySocket, envs: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testserver"));
    cmd.env("NOTIFY_SOCKET", &notify.path)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .envs(envs.iter().copied());
    Proc::spawn(cmd)
}

fn serving(p: &Proc, n: u64) -> String {
    format!(
        "READY=1\nSTATUS=serving version test (worker {n}, pid {})",
        worker_pid(p, n)
    )
}

#[test]
fn notify_sequence_for_start_handovers_failed_handovers_and_stop() {
    let notify = NotifySocket::new();
    let mut p = start_notified(
        &notify,
        &[
            ("TS_EXIT_AT_START", "3"),
            ("TS_NEVER_READY", "4"),
            ("TS_READY_MS", "2000"),
            ("TS_STATUS", "warm"),
        ],
    );
    // Start: READY=1 once the first worker is, then the worker's own status.
    assert_eq!(notify.expect("READY=1"), serving(&p, 1));
    assert_eq!(notify.expect("STATUS="), "STATUS=warm (worker 1)");

    // A handover by signal is a reload.
    let before = monotonic_usec();
    p.signal(SIGUSR2);
    notify.expect_reloading(before);
    assert_eq!(notify.expect("READY=1"), serving(&p, 2));
    assert_eq!(notify.expect("STATUS="), "STATUS=warm (worker 2)");

    // A new worker that exits at start: the reload still ends.
    let before = monotonic_usec();
    p.signal(SIGUSR2);
    notify.expect_reloading(before);
    assert_eq!(
        notify.expect("READY=1 after a failed restart"),
        "READY=1\nSTATUS=restart failed: worker 3 exited with exit status 7 \
         before becoming ready; worker 2 keeps serving"
    );

    // A new worker that never becomes ready: killed, and the reload ends.
    let before = monotonic_usec();
    p.signal(SIGUSR2);
    notify.expect_reloading(before);
    assert_eq!(
        notify.expect("READY=1 after a ready timeout"),
        "READY=1\nSTATUS=restart failed: worker 4 was not ready within 2s; \
         worker 2 keeps serving"
    );

    p.signal(SIGTERM);
    assert_eq!(notify.expect("STOPPING=1"), "STOPPING=1\nSTATUS=stopping");
    let status = p.expect_exit(T);
    assert_eq!(describe(status), "exit 0");
    assert_eq!(notify.recv(Duration::from_millis(200)), None);
}

#[test]
fn serving_worker_exit_sends_stopping() {
    let notify = NotifySocket::new();
    let mut p = start_notified(&notify, &[("TS_HUP_EXIT", "3")]);
    assert_eq!(notify.expect("READY=1"), serving(&p, 1));
    // SIGHUP is forwarded; the worker exits 3 and the master with it.
    p.signal(1);
    assert_eq!(notify.expect("STOPPING=1"), "STOPPING=1\nSTATUS=stopping");
    assert_eq!(describe(p.expect_exit(T)), "exit 3");
}

#[test]
fn watchdog_keep_alives_arrive_while_the_master_runs() {
    let notify = NotifySocket::new();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testserver"));
    cmd.env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID");
    let p = Proc::spawn(cmd);
    let worker = worker_pid(&p, 1);
    p.expect_line("worker 1 ready", T);
    // The watchdog is the master's: the worker's environment has none of it,
    // and its NOTIFY_SOCKET is the master's relay, not systemd's.
    let environ =
        std::fs::read(format!("/proc/{worker}/environ")).expect("the worker's environment");
    let vars: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(!vars.iter().any(|v| v.starts_with("WATCHDOG_")), "{vars:?}");
    let notify_path = format!("NOTIFY_SOCKET={}", notify.path.display());
    assert!(
        vars.iter().any(|v| v.starts_with("NOTIFY_SOCKET=")),
        "{vars:?}"
    );
    assert!(!vars.contains(&notify_path), "{vars:?}");
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut keep_alives = 0;
    let mut others = Vec::new();
    while Instant::now() < deadline && keep_alives < 50 {
        match notify.recv(Duration::from_millis(100)) {
            Some(m) if m == "WATCHDOG=1" => keep_alives += 1,
            Some(m) => others.push(m),
            None => {}
        }
    }
    assert!(
        keep_alives >= 2,
        "{keep_alives} keep-alives in 2 s (other datagrams: {others:?})"
    );
    assert!(
        others.iter().any(|m| m.starts_with("READY=1")),
        "{others:?}"
    );
}

/// `systemd-socket-activate`, or `None` when it is missing and
/// `OVERSEER_SKIP_SYSTEMD=1` (otherwise a missing tool fails the test).
fn socket_activate() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|dir| dir.join("systemd-socket-activate"))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("OVERSEER_SKIP_SYSTEMD").as_deref() == Ok("1") {
            eprintln!("systemd-socket-activate not found; skipped (OVERSEER_SKIP_SYSTEMD=1)");
            return None;
        }
        panic!(
            "the socket-activation tests need systemd-socket-activate, which was \
             not found in PATH. Install it with\n    apt-get install -y systemd\n\
             or set OVERSEER_SKIP_SYSTEMD=1 to skip these tests."
        );
    }
    found
}

/// How many sockets listen on `port` (TCP, IPv4 and IPv6), from `/proc/net`.
fn listening_sockets(port: u16) -> usize {
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|l| {
                    let fields: Vec<&str> = l.split_whitespace().collect();
                    fields.len() > 3 && fields[1].ends_with(&port) && fields[3] == "0A"
                })
                .count()
        })
        .sum()
}

/// The testserver under `systemd-socket-activate` on `addr` (also its
/// `TS_ADDR`), with more `NAME=VALUE` variables, once the activator listens.
fn activate_testserver(activate: &Path, addr: SocketAddr, envs: &[&str]) -> Proc {
    let mut cmd = Command::new(activate);
    // The activator passes on only the variables named with -E.
    cmd.arg("-l")
        .arg(addr.to_string())
        .arg("-E")
        .arg(format!("TS_ADDR={addr}"));
    for env in envs {
        cmd.arg("-E").arg(env);
    }
    cmd.arg(env!("CARGO_BIN_EXE_testserver"));
    let p = Proc::spawn(cmd);
    activator_listening(&p, 1);
    p
}

/// The worker number in the first answer on `addr` (which starts the
/// activated program).
fn first_worker(addr: SocketAddr, context: &str) -> String {
    let first = Client::new(addr, false)
        .timeout(T)
        .get("/")
        .unwrap_or_else(|f| panic!("{context}first request: {f}"));
    first
        .field("worker")
        .unwrap_or_else(|| panic!("{context}no worker in {}", first.body))
        .to_string()
}

/// The socket on `addr` was adopted at fd 3, nothing was bound, and exactly
/// one socket listens on its port.
fn assert_adopted_only(p: &Proc, addr: SocketAddr, context: &str) {
    let line = p.expect_line("from socket activation", T);
    assert!(
        line.ends_with(&format!("adopted {addr} from socket activation (fd 3)")),
        "{context}{line}"
    );
    assert_eq!(p.count("listening on"), 0, "{context}nothing was bound");
    let port = addr.port();
    assert_eq!(listening_sockets(port), 1, "{context}one socket on {port}");
}

/// Waits until the socket activator is listening (it says so on stderr).
fn activator_listening(p: &Proc, sockets: usize) {
    p.expect_nth("Listening on", sockets - 1, T);
}

#[test]
fn socket_activated_master_adopts_the_socket_and_hands_over_without_failures() {
    let Some(activate) = socket_activate() else {
        return;
    };
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let mut p = activate_testserver(&activate, addr, &[]);
    // The activator starts the master at the first connection; that request
    // waits in the backlog and is served by the first worker.
    assert_eq!(first_worker(addr, ""), "1");
    assert_adopted_only(&p, addr, "");

    let load = load(addr, 4, true);
    std::thread::sleep(Duration::from_millis(200));
    p.signal(SIGUSR2);
    p.expect_line("worker 2 ready", T);
    p.expect_line("worker 1 drained", T);
    std::thread::sleep(Duration::from_millis(200));
    let stats = load.stop();
    assert!(stats.failures.is_empty(), "failures: {:?}", stats.failures);
    assert!(stats.ok > 0);
    expect_answering(addr, 2);
    assert_eq!(listening_sockets(port), 1);

    p.signal(SIGTERM);
    assert_eq!(describe(p.expect_exit(T)), "exit 0");
}

/// Steering asked for, on a socket passed without `SO_REUSEPORT` (the
/// activator, like systemd without `ReusePort=yes`, does not set it): that
/// address is shared by the workers as without steering, said once, and a
/// handover under load loses nothing; no second socket is opened.
#[test]
fn steering_falls_back_to_the_shared_socket_on_a_passed_socket_without_reuseport() {
    let Some(activate) = socket_activate() else {
        return;
    };
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let mut p = activate_testserver(&activate, addr, &["TS_STEER=1"]);
    assert_eq!(first_worker(addr, ""), "1");
    let warning = p.expect_line("are not steered", T);
    assert!(warning.contains("SO_REUSEPORT"), "{warning}");
    let load = load(addr, 4, true);
    std::thread::sleep(Duration::from_millis(200));
    p.signal(SIGUSR2);
    p.expect_line("worker 2 ready", T);
    p.expect_line("worker 1 drained", T);
    let stats = load.stop();
    assert!(stats.failures.is_empty(), "failures: {:?}", stats.failures);
    expect_answering(addr, 2);
    assert_eq!(listening_sockets(port), 1);
    assert_eq!(p.count("gets no new connections"), 0, "{:?}", p.output());
    p.signal(SIGTERM);
    assert_eq!(describe(p.expect_exit(T)), "exit 0");
}

/// A socket-activated master that cannot start runs the program directly
/// on the passed socket, whether it failed before adopting it (no runtime
/// directory) or after (its control socket's path is a file): the address
/// systemd holds is never bound a second time.
#[test]
fn a_socket_activated_master_that_cannot_start_serves_the_passed_socket_directly() {
    let Some(activate) = socket_activate() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let taken = dir.path().join("taken");
    std::fs::write(&taken, "a file, not a socket").expect("write a file");
    let cases = [
        (
            "before adopting",
            format!("TMPDIR={}", dir.path().join("missing").display()),
            "creating a runtime directory",
        ),
        (
            "after adopting",
            format!("TS_CONTROL={}", taken.display()),
            "exists and is not a socket",
        ),
    ];
    for (when, env, cause) in cases {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let mut p = activate_testserver(&activate, addr, &[&env]);
        let context = format!("{when}: ");
        assert_eq!(first_worker(addr, &context), "0");
        let line = p.expect_line("running the program directly", T);
        assert!(line.contains(cause), "{context}{line}");
        assert_adopted_only(&p, addr, &context);
        expect_answering(addr, 0);
        assert!(taken.is_file(), "{when}: the file in the way is kept");
        p.signal(SIGTERM);
        assert_eq!(describe(p.expect_exit(T)), "exit 0", "{when}");
    }
}

#[test]
fn socket_activated_master_without_addresses_serves_every_passed_socket() {
    let Some(activate) = socket_activate() else {
        return;
    };
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let mut cmd = Command::new(activate);
    cmd.arg("-l")
        .arg(addr.to_string())
        .args(["-E", "TS_ADDR=none"])
        .arg(env!("CARGO_BIN_EXE_testserver"));
    let mut p = Proc::spawn(cmd);
    activator_listening(&p, 1);
    let first = Client::new(addr, false)
        .timeout(T)
        .get("/")
        .unwrap_or_else(|f| panic!("first request: {f}"));
    assert_eq!(first.field("worker"), Some("1"), "{}", first.body);
    let line = p.expect_line("from socket activation", T);
    assert!(
        line.ends_with(&format!("adopted {addr} from socket activation (fd 3)")),
        "{line}"
    );
    assert_eq!(
        p.count("configures 0 addresses"),
        0,
        "no warning in the worker"
    );
    p.signal(SIGTERM);
    assert_eq!(describe(p.expect_exit(T)), "exit 0");
}

/// One request over a Unix socket to the `listenfd-worker`.
fn unix_get(path: &Path) -> String {
    let mut stream = UnixStream::connect(path).expect("connect to the socket file");
    stream.set_read_timeout(Some(T)).expect("timeout");
    stream
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

#[test]
fn passed_sockets_match_by_name_strays_are_closed_and_socket_files_kept() {
    let Some(activate) = socket_activate() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("app.sock");
    let stray_port = free_port();
    let stray = format!("127.0.0.1:{stray_port}");
    // command-master names its address "web"; the activator names its
    // sockets "web" (the Unix socket) and "stray" (nobody asked for it).
    let mut cmd = Command::new(activate);
    cmd.arg("-l")
        .arg(&path)
        .arg("-l")
        .arg(&stray)
        .arg("--fdname=web:stray")
        .arg(env!("CARGO_BIN_EXE_command-master"))
        .arg(format!("unix:{}", path.display()))
        .arg(env!("CARGO_BIN_EXE_listenfd-worker"));
    let mut p = Proc::spawn(cmd);
    activator_listening(&p, 2);
    let response = unix_get(&path);
    assert!(response.contains("kind=unix"), "{response}");
    assert!(response.contains("names=web"), "{response}");
    let line = p.expect_line("from socket activation", T);
    assert!(
        line.ends_with(&format!(
            "adopted unix:{} from socket activation (fd 3)",
            path.display()
        )),
        "{line}"
    );
    let warning = p.expect_line("no configured address asks for", T);
    assert!(warning.contains(&format!("{stray} (fd 4)")), "{warning}");
    // The master closed the stray socket, and it was the only holder.
    assert_eq!(listening_sockets(stray_port), 0);
    assert!(TcpStream::connect(&stray).is_err(), "{stray} is closed");

    p.signal(SIGUSR2);
    p.expect_line("worker 2 ready", T);
    // Worker 1 may still take a connection until its SIGTERM, and this
    // worker knows nothing of draining (it dies at SIGTERM): ask once it
    // is gone.
    p.expect_line("worker 1 drained", T);
    let response = unix_get(&path);
    assert!(response.contains("worker=2"), "{response}");
    p.signal(SIGTERM);
    let status = p.expect_exit(T);
    assert!(
        path.exists(),
        "the socket file belongs to the activator and is kept ({})",
        describe(status)
    );
}
