//! Workers speak standard protocols; overseer degrades to running directly.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use overseer_harness::ports::free_port;
use overseer_harness::proc::{describe, Proc};
use support::*;

#[test]
fn a_plain_listenfd_worker_receives_the_sockets_unchanged() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_command-master"));
    cmd.args(["127.0.0.1:0", env!("CARGO_BIN_EXE_listenfd-worker")]);
    let p = Proc::spawn(cmd);
    let addr = p.listen_addr();
    p.expect_line("worker 1 ready", T);
    let r = get(addr, "/");
    assert_eq!(r.field("listenfd"), Some("ok"), "{}", r.body);
    assert_eq!(r.field("names"), Some("web"), "LISTEN_FDNAMES arrives");
    assert_eq!(r.field("worker"), Some("1"));
    p.signal(overseer::SIGUSR2);
    p.expect_line("worker 2 ready", T);
    p.expect_line("worker 1 drained", T);
    expect_answering(addr, 2);
}

#[test]
fn fallback_serves_on_the_configured_address_when_the_master_cannot_start() {
    // The master needs a private runtime directory; make that impossible.
    fallback_serves(
        ("TMPDIR", "/nonexistent/overseer-test"),
        "creating a runtime directory",
    );
}

#[test]
fn fallback_after_a_late_set_up_failure_serves_and_stops_on_sigterm() {
    // The control socket's path is taken by a file: the master fails once
    // it has bound its sockets and blocked its signals; the program it then
    // runs directly must get those signals again (SIGTERM stops it).
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = dir.path().join("taken");
    std::fs::write(&taken, "a file, not a socket").expect("write a file");
    let mut p = fallback_serves(
        ("TS_CONTROL", taken.to_str().expect("utf-8 path")),
        "exists and is not a socket",
    );
    p.signal(15);
    assert_eq!(describe(p.expect_exit(T)), "exit 0");
    assert!(taken.is_file(), "the file in the way is kept");
}

/// Starts the test server with `env`, which makes its master fail for
/// `cause`; checks that the program then serves directly on its address.
fn fallback_serves(env: (&str, &str), cause: &str) -> Proc {
    // The port is checked free before the server binds it; if something
    // takes it in between, the server says so and the test tries another.
    for _attempt in 0..5 {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut p = start(&[("TS_ADDR", &addr), env]);
        let line = p.expect_line("running the program directly", T);
        assert!(line.contains(cause), "{line}");
        let deadline = Instant::now() + T;
        while p.count("worker=0") == 0 && p.count("cannot bind") == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if p.count("cannot bind") > 0 {
            p.expect_exit(T);
            continue;
        }
        p.expect_line("worker=0", Duration::ZERO);
        let r = get(addr.parse().expect("address"), "/");
        assert_eq!(r.field("worker"), Some("0"), "{}", r.body);
        assert_eq!(p.count("worker 1 started"), 0);
        return p;
    }
    panic!("five free ports were all taken before the server could bind them");
}

#[test]
fn sanity_check_token_is_printed_on_its_own_line_and_nothing_starts() {
    let out = Command::new(env!("CARGO_BIN_EXE_testserver"))
        .env("OVERSEER_BIN_CHECK", "token-5f3a")
        .output()
        .expect("testserver runs");
    assert!(out.status.success(), "{}", describe(out.status));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l == "token-5f3a"), "{stdout:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("listening"));
}

#[test]
fn unix_socket_address_is_served_and_its_file_removed_on_exit() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let dir = std::env::temp_dir().join(format!("overseer-unix-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("app.sock");
    // A stale socket file from a dead process is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("stale socket"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_command-master"));
    cmd.args([
        &format!("unix:{}", path.display()),
        env!("CARGO_BIN_EXE_listenfd-worker"),
    ]);
    let mut p = Proc::spawn(cmd);
    p.expect_line("worker 1 ready", T);
    p.expect_line("serving unix", T);
    let mut stream = UnixStream::connect(&path).expect("connect to the socket file");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.contains("kind=unix"), "{response}");
    p.signal(15);
    let status = p.expect_exit(T);
    assert!(
        !path.exists(),
        "socket file removed on exit ({})",
        describe(status)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The device and inode of the file at `path` (not following a link), and its owner.
fn identity(path: &std::path::Path) -> (u64, u64, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).expect("the file is there");
    (m.dev(), m.ino(), m.uid())
}

/// A command-mode master serving `unix:PATH`, run as user `uid` when given.
fn unix_master(path: &std::path::Path, uid: Option<u32>) -> Proc {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_command-master"));
    cmd.args([
        &format!("unix:{}", path.display()),
        env!("CARGO_BIN_EXE_listenfd-worker"),
    ])
    .env_remove("XDG_RUNTIME_DIR");
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    Proc::spawn(cmd)
}

/// Expects the master to refuse the address, saying `needle` about `path`.
fn expect_left_alone(mut p: Proc, path: &std::path::Path, needle: &str) {
    let status = p.expect_exit(T);
    assert!(!status.success(), "the master started: {:?}", p.output());
    let line = p.expect_line("is left alone", T);
    assert!(
        line.contains(needle) && line.contains(&path.display().to_string()),
        "{line}"
    );
    assert_eq!(p.count("worker 1 started"), 0, "{:?}", p.output());
}

#[test]
fn a_stale_unix_socket_file_of_another_user_is_left_alone() {
    if !root() {
        eprintln!("skipped: giving a socket file to another user needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.sock");
    // Nothing listens on it (a connection is refused), but it is not ours.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    std::os::unix::fs::chown(&path, Some(OTHER_UID), Some(OTHER_UID)).expect("chown");
    let before = identity(&path);
    expect_left_alone(
        unix_master(&path, None),
        &path,
        &format!("belongs to uid {OTHER_UID}"),
    );
    assert_eq!(identity(&path), before, "the file was replaced");
}

#[test]
fn a_live_unix_socket_the_master_cannot_connect_to_is_left_alone() {
    use std::os::unix::fs::PermissionsExt;
    if !root() {
        eprintln!("skipped: running a master as another user needs root");
        return;
    }
    // The master runs as another user whose directory holds root's live
    // socket, which refuses that user (EACCES): not proof that it is stale.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let run = dir.path().join("run");
    std::fs::create_dir(&run).expect("mkdir");
    std::os::unix::fs::chown(&run, Some(OTHER_UID), Some(OTHER_UID)).expect("chown");
    let path = run.join("app.sock");
    let live = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let before = identity(&path);
    expect_left_alone(
        unix_master(&path, Some(OTHER_UID)),
        &path,
        "Permission denied",
    );
    assert_eq!(
        identity(&path),
        before,
        "the live socket's file was replaced"
    );
    live.set_nonblocking(true).expect("nonblocking");
    let _client = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    let deadline = Instant::now() + T;
    while live.accept().is_err() {
        assert!(Instant::now() < deadline, "the live socket never accepted");
        std::thread::sleep(Duration::from_millis(10));
    }
}
