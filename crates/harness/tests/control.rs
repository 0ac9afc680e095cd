//! The control socket: `restart` answers with the real outcome of the
//! handover, `status` with the master's state; only the master's user may
//! connect, two masters cannot share one socket, the socket's directory must
//! be private to the master's user, and a socket file is replaced only when
//! it is this user's and nothing listens on it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use overseer::control::{self, Error};
use overseer_harness::proc::{alive, Proc};
use overseer_harness::release::stamp;
use support::{answering, expect_answering, get, load, root, OTHER_UID, T};

const APP: &str = env!("CARGO_BIN_EXE_upgrade-app");

/// `upgrade-app` (version 1.0.0, no fetcher) with a control socket, run
/// from its own directory so its binary can be replaced.
struct Rig {
    dir: tempfile::TempDir,
    proc: Proc,
    addr: std::net::SocketAddr,
}

impl Rig {
    fn start(env: &[(&str, &str)]) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        stamp(Path::new(APP), &dir.path().join("app"), "version=1.0.0").expect("install");
        let proc = spawn(dir.path(), env);
        let addr = proc.listen_addr();
        proc.expect_line("worker 1 ready", T);
        Rig { dir, proc, addr }
    }

    fn socket(&self) -> PathBuf {
        socket_in(self.dir.path())
    }
}

fn socket_in(dir: &Path) -> PathBuf {
    dir.join("run/control.sock")
}

fn spawn(dir: &Path, env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(dir.join("app"));
    cmd.env("UA_CONTROL", socket_in(dir))
        .envs(env.iter().copied());
    Proc::spawn(cmd)
}

#[test]
fn restart_reports_the_new_worker_and_status_follows() {
    let rig = Rig::start(&[]);
    let before = control::status(&rig.socket(), T).expect("status");
    assert_eq!(before.master_pid, rig.proc.pid as u32);
    assert_eq!(before.version.as_deref(), Some("1.0.0"));
    let serving = before.serving.clone().expect("a serving worker");
    assert_eq!(serving.number, 1);
    assert_eq!(before.handovers, 0);
    assert!(before.binary_path.ends_with("app"), "{before:?}");
    assert_eq!(before.binary_id.len(), 64, "{before:?}");

    let load = load(rig.addr, 4, true);
    let handover = control::restart(&rig.socket(), T).expect("restart");
    assert_eq!(handover.worker, 2);
    assert_ne!(handover.pid, serving.pid);
    // The answer came once worker 2 was ready: it serves (the draining
    // worker may still take a connection for a moment; nothing is lost).
    expect_answering(rig.addr, 2);
    // Worker 1 learns of its SIGTERM on its own time, so a new connection
    // may still reach it just after the handover; ask until worker 2 answers.
    let deadline = std::time::Instant::now() + T;
    let r = loop {
        let r = get(rig.addr, "/");
        if r.field("worker") == Some("2") || std::time::Instant::now() >= deadline {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(
        r.body.contains(&format!("pid={}", handover.pid)),
        "{}",
        r.body
    );
    let stats = load.stop();
    assert!(stats.failures.is_empty(), "{:?}", stats.failures);

    let after = control::status(&rig.socket(), T).expect("status");
    assert_eq!(
        after.serving.as_ref().map(|w| (w.number, w.pid)),
        Some((2, handover.pid))
    );
    assert_eq!((after.handovers, after.failed_handovers), (1, 0));
    let last = after.last_handover.expect("last handover");
    assert!(last.contains("worker 2"), "{last}");
    // The human form names the same facts.
    let text = control::status(&rig.socket(), T)
        .expect("status")
        .to_string();
    assert!(text.contains("worker 2 (pid"), "{text}");
}

#[test]
fn restart_reports_a_failed_handover_and_the_old_worker_keeps_serving() {
    let rig = Rig::start(&[("UA_READY_MS", "1500")]);
    // The next worker comes from a build that never becomes ready.
    let broken = rig.dir.path().join("broken");
    stamp(Path::new(APP), &broken, "version=2.0.0 never_ready=1").expect("stamp");
    std::fs::rename(&broken, rig.dir.path().join("app")).expect("swap");

    let load = load(rig.addr, 4, true);
    match control::restart(&rig.socket(), T) {
        Err(Error::Failed(reason)) => {
            assert!(reason.contains("worker 2 was not ready within"), "{reason}")
        }
        other => panic!("expected a failed handover, got {other:?}"),
    }
    assert_eq!(answering(rig.addr), 1);
    let stats = load.stop();
    assert!(stats.failures.is_empty(), "{:?}", stats.failures);
    let status = control::status(&rig.socket(), T).expect("status");
    assert_eq!(status.serving.as_ref().map(|w| w.number), Some(1));
    assert_eq!((status.handovers, status.failed_handovers), (0, 1));
    assert!(status.starting.is_none(), "{status:?}");
}

#[test]
fn requests_during_a_handover_wait_for_the_next_one() {
    let rig = Rig::start(&[]);
    let socket = rig.socket();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || control::restart(&socket, T))
        })
        .collect();
    let mut workers: Vec<u64> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread").expect("restart").worker)
        .collect();
    workers.sort();
    // Each answer names a worker started after its request; requests that
    // arrived during one handover share the next (at most one is queued).
    assert!(workers.iter().all(|&w| (2..=4).contains(&w)), "{workers:?}");
    let status = control::status(&socket, T).expect("status");
    let last = *workers.last().expect("three answers");
    assert_eq!(
        status.serving.as_ref().map(|w| w.number),
        Some(last),
        "{workers:?}"
    );
    assert!(status.handovers >= 1 && status.handovers <= 3, "{status:?}");
}

#[test]
fn unknown_requests_get_an_error_answer() {
    use std::io::{Read, Write};
    let rig = Rig::start(&[]);
    let mut s = std::os::unix::net::UnixStream::connect(rig.socket()).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    s.write_all(b"reboot\n").expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    assert!(
        answer.starts_with("error: unknown request \"reboot\""),
        "{answer}"
    );
    // The master is unaffected.
    assert_eq!(answering(rig.addr), 1);
}

#[test]
fn a_second_master_cannot_take_a_live_socket_and_a_stale_one_is_replaced() {
    let mut rig = Rig::start(&[]);
    let mut second = spawn(rig.dir.path(), &[("UA_REQUIRED", "1")]);
    let status = second.expect_exit(T);
    assert!(!status.success());
    second.expect_line("another master answers on the control socket", T);
    // The first one still answers.
    control::status(&rig.socket(), T).expect("status");

    // A master killed outright leaves its socket file; the next one replaces it.
    rig.proc.signal(nix::libc::SIGKILL);
    rig.proc.expect_exit(T);
    assert!(rig.socket().exists(), "the killed master's socket file");
    // Its worker dies with it (parent-death signal); wait until it is gone.
    let mut next = spawn(rig.dir.path(), &[]);
    next.expect_line("worker 1 ready", T);
    let status = control::status(&rig.socket(), T).expect("status of the new master");
    assert_eq!(status.master_pid, next.pid as u32);
    next.signal(nix::libc::SIGTERM);
    next.expect_exit(T);
    assert!(!rig.socket().exists(), "the socket file is removed at exit");
}

#[test]
fn the_socket_is_private_to_the_masters_user() {
    use std::os::unix::fs::PermissionsExt;
    let rig = Rig::start(&[]);
    let mode = std::fs::metadata(rig.socket())
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let dir_mode = std::fs::metadata(rig.socket().parent().expect("dir"))
        .expect("dir")
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700, "directory mode {dir_mode:o}");
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if root {
        // Another user who can reach the directory still cannot connect.
        for dir in [
            rig.dir.path().to_path_buf(),
            rig.socket().with_file_name(""),
        ] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                .expect("open the directories");
        }
        let out = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(concat!(
                "import socket,sys\n",
                "s=socket.socket(socket.AF_UNIX)\n",
                "try:\n    s.connect(sys.argv[1]); print('connected')\n",
                "except Exception as e: print(type(e).__name__)\n",
            ))
            .arg(rig.socket())
            .uid(65534)
            .output()
            .expect("python3 as user 65534");
        let said = String::from_utf8_lossy(&out.stdout);
        assert_eq!(said.trim(), "PermissionError", "{out:?}");
    }
    assert!(alive(rig.proc.pid));
}

/// A master of `upgrade-app` installed in `dir`, its control socket at
/// `socket`, required to start (no fallback to running directly); run as
/// user `uid` when given.
fn spawn_required(dir: &Path, socket: &Path, uid: Option<u32>) -> Proc {
    use std::os::unix::process::CommandExt;
    stamp(Path::new(APP), &dir.join("app"), "version=1.0.0").expect("install");
    let mut cmd = Command::new(dir.join("app"));
    cmd.env("UA_CONTROL", socket)
        .env("UA_REQUIRED", "1")
        .env_remove("XDG_RUNTIME_DIR");
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    Proc::spawn(cmd)
}

/// Expects a master to refuse to start, saying `needle` (and `path`), with
/// no worker started.
fn expect_refused(mut p: Proc, path: &Path, needle: &str) {
    let status = p.expect_exit(T);
    assert!(!status.success(), "the master started: {:?}", p.output());
    let line = p.expect_line(needle, T);
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert_eq!(p.count("worker 1 started"), 0, "{:?}", p.output());
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The device and inode of the file at `path` (not following a link), and its owner.
fn identity(path: &Path) -> (u64, u64, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).expect("the file is there");
    (m.dev(), m.ino(), m.uid())
}

#[test]
fn a_control_directory_others_may_write_in_is_refused() {
    for mode in [0o777, 0o770, 0o1777] {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path().join("run");
        std::fs::create_dir(&run).expect("mkdir");
        chmod(&run, mode);
        let socket = run.join("control.sock");
        let p = spawn_required(dir.path(), &socket, None);
        expect_refused(p, &run, "lets others write in it");
        assert!(!socket.exists(), "no socket in a shared directory");
    }
}

#[test]
fn a_control_directory_that_is_a_symbolic_link_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The link's target is private, but the link could be swapped at any time.
    let real = dir.path().join("real");
    std::fs::create_dir(&real).expect("mkdir");
    chmod(&real, 0o700);
    let run = dir.path().join("run");
    std::os::unix::fs::symlink(&real, &run).expect("symlink");
    let socket = run.join("control.sock");
    let p = spawn_required(dir.path(), &socket, None);
    expect_refused(p, &run, "is a symbolic link");
    assert!(!real.join("control.sock").exists());
}

#[test]
fn a_control_directory_of_another_user_is_refused() {
    if !root() {
        eprintln!("skipped: giving a directory to another user needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    std::fs::create_dir(&run).expect("mkdir");
    chmod(&run, 0o700);
    std::os::unix::fs::chown(&run, Some(OTHER_UID), Some(OTHER_UID)).expect("chown");
    let socket = run.join("control.sock");
    let p = spawn_required(dir.path(), &socket, None);
    expect_refused(p, &run, &format!("it belongs to uid {OTHER_UID}"));
    assert!(!socket.exists());
}

#[test]
fn a_stale_control_socket_of_another_user_is_left_alone() {
    if !root() {
        eprintln!("skipped: giving a socket file to another user needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    std::fs::create_dir(&run).expect("mkdir");
    chmod(&run, 0o700);
    let socket = run.join("control.sock");
    // Nothing listens on it (a connection is refused), but it is not ours.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    std::os::unix::fs::chown(&socket, Some(OTHER_UID), Some(OTHER_UID)).expect("chown");
    let before = identity(&socket);
    let p = spawn_required(dir.path(), &socket, None);
    expect_refused(p, &socket, &format!("belongs to uid {OTHER_UID}"));
    assert_eq!(identity(&socket), before, "the file was replaced");
}

#[test]
fn a_live_control_socket_the_master_cannot_connect_to_is_left_alone() {
    if !root() {
        eprintln!("skipped: running a master as another user needs root");
        return;
    }
    // The master runs as another user, in a directory of its own; the
    // socket in it is root's, live, and refuses that user (EACCES).
    let dir = tempfile::tempdir().expect("tempdir");
    chmod(dir.path(), 0o755);
    let run = dir.path().join("run");
    std::fs::create_dir(&run).expect("mkdir");
    chmod(&run, 0o700);
    std::os::unix::fs::chown(&run, Some(OTHER_UID), Some(OTHER_UID)).expect("chown");
    let socket = run.join("control.sock");
    let live = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    chmod(&socket, 0o700);
    let before = identity(&socket);
    let p = spawn_required(dir.path(), &socket, Some(OTHER_UID));
    expect_refused(p, &socket, "Permission denied");
    assert_eq!(
        identity(&socket),
        before,
        "the live socket's file was replaced"
    );
    // Still the test's own socket, answering.
    live.set_nonblocking(true).expect("nonblocking");
    let _client = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    let deadline = std::time::Instant::now() + T;
    while live.accept().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the live socket never accepted"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
