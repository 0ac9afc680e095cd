//! Library mode: a release that passed probation also runs the master. The
//! master re-executes itself into it (same pid, the serving worker kept),
//! so the release's own code and `Config` take effect: a line only its
//! master prints, and its key set (key rotation end to end).
//!
//! Each master runs in its own process group and is killed with it when
//! its `Proc` is dropped; traffic stays on 127.0.0.1; every wait is bounded.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use overseer_harness::proc::Proc;
use overseer_harness::release::{stamp, this_target, Keys, ReleaseServer};
use support::{get, load, stop_without_failures, T};

const APP: &str = env!("CARGO_BIN_EXE_upgrade-app");

/// A self-upgrading app polling a release server, started as version 1.0.0
/// trusting `trusted`.
struct Rig {
    dir: tempfile::TempDir,
    server: ReleaseServer,
    proc: Proc,
    addr: std::net::SocketAddr,
}

impl Rig {
    fn start(trusted: &Keys) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("app");
        stamp(
            Path::new(APP),
            &bin,
            &format!("version=1.0.0 pubkeys={}", trusted.public),
        )
        .expect("install v1");
        let server = ReleaseServer::start();
        let mut cmd = Command::new(&bin);
        cmd.env("UA_FETCH_URL", server.url("app"))
            .env("UA_INTERVAL_MS", "100")
            .env("UA_PROBATION_MS", "300")
            .env("UA_CONTROL", dir.path().join("control.sock"));
        let proc = Proc::spawn(cmd);
        let addr = proc.listen_addr();
        proc.expect_line("worker 1 ready", T);
        Rig {
            dir,
            server,
            proc,
            addr,
        }
    }

    fn control(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    /// Publishes a build with stamp `fields`, signed by `keys` for `version`.
    fn publish(&self, fields: &str, version: &str, keys: &Keys) {
        let tmp = self.dir.path().join("build.tmp");
        stamp(Path::new(APP), &tmp, fields).expect("stamp");
        let bytes = std::fs::read(&tmp).expect("read build");
        let _ = std::fs::remove_file(&tmp);
        let sig = keys.sign(&bytes, version, &this_target());
        self.server.publish("app.minisig", sig.into_bytes());
        self.server.publish("app", bytes);
    }

    fn serving(&self) -> (String, String) {
        let r = get(self.addr, "/");
        (
            r.field("version").unwrap_or("none").to_string(),
            r.field("pid").unwrap_or("none").to_string(),
        )
    }

    /// Waits until `version` answers (a draining worker may still answer
    /// a few requests) and returns the pid that answered.
    fn expect_serving(&self, version: &str) -> String {
        let deadline = std::time::Instant::now() + T;
        loop {
            let (v, pid) = self.serving();
            if v == version {
                return pid;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "version {version} never answered (last: {v})"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_release_that_passed_probation_runs_the_master_too() {
    let a = Keys::generate();
    let rig = Rig::start(&a);
    let keep_alive = load(rig.addr, 2, true);
    let per_request = load(rig.addr, 2, false);
    rig.publish(
        &format!("version=2.0.0 master_says=two pubkeys={}", a.public),
        "2.0.0",
        &a,
    );
    rig.proc.expect_line("version 2.0.0 passed probation", T);
    let line = rig.proc.expect_line("master re-executed", T);
    assert!(
        line.starts_with(&format!("[overseer {}]", rig.proc.pid)),
        "{line}"
    );
    rig.proc.expect_line("master says two", T);
    assert_eq!(rig.proc.count("master says"), 1, "{:?}", rig.proc.output());
    // The worker that passed probation serves on, untouched.
    let worker_2 = rig.proc.worker_pid(2, T).to_string();
    assert_eq!(rig.expect_serving("2.0.0"), worker_2);
    let status = overseer::control::status(&rig.control(), T).expect("status");
    assert_eq!(status.master_pid, rig.proc.pid as u32);
    assert_eq!(status.reexecs, 1);
    assert_eq!(status.version.as_deref(), Some("2.0.0"));
    assert!(status.serving.is_some_and(|w| w.number == 2));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        rig.proc.count("worker 3"),
        0,
        "a handover after the re-exec"
    );
    stop_without_failures(keep_alive, per_request);
}

#[test]
fn key_rotation_takes_effect_once_the_master_runs_the_release_that_rotates() {
    let (a, b) = (Keys::generate(), Keys::generate());
    let rig = Rig::start(&a);
    // Release 2, signed by A, trusts B only.
    rig.publish(&format!("version=2.0.0 pubkeys={}", b.public), "2.0.0", &a);
    rig.proc.expect_line("version 2.0.0 passed probation", T);
    rig.proc.expect_line("master re-executed", T);
    // Signed by A alone: refused now.
    rig.publish(
        &format!("version=3.0.0 pubkeys={} by=a", b.public),
        "3.0.0",
        &a,
    );
    rig.proc.expect_line("unknown key", T);
    rig.expect_serving("2.0.0");
    // Signed by B: accepted.
    rig.publish(
        &format!("version=3.0.0 pubkeys={} by=b", b.public),
        "3.0.0",
        &b,
    );
    rig.proc.expect_line("version 3.0.0 passed probation", T);
    rig.expect_serving("3.0.0");
}
