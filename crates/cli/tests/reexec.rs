//! The master re-executes itself in place (`overseer reload`): the same pid,
//! sockets and workers across 50 re-execs under load with no failed
//! request; the config file's changes applied (an address added, then
//! removed; the readiness mode; the release source); a binary or config
//! that fails the check, and a new image that cannot take over, leaving the
//! old code in charge (with the configuration it had, when the file gained
//! a key only the new build knows); a draining worker and a release on probation handled
//! by the new image; systemd's datagrams around a re-exec; and SIGKILL at
//! varied points of a re-exec leaving no worker behind.
//!
//! The master runs from a copy of the `overseer` binary in a temporary
//! directory, so a test can put another build (or a broken one) at its
//! path. Every master runs in its own process group and is killed with it
//! when its `Proc` is dropped; traffic stays on 127.0.0.1; every wait and
//! loop is bounded.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use overseer_harness::client::Client;
use overseer_harness::ports::free_port;
use overseer_harness::proc::{open_fds, rss_kb, Proc};

mod support;

use support::{assert_no_failures, run_ok, write_worker, WORKER};

const OVERSEER: &str = env!("CARGO_BIN_EXE_overseer");
/// A generous bound for anything that should take milliseconds.
const T: Duration = Duration::from_secs(30);

/// A service's directory: the master's binary (`bin/overseer`, a copy),
/// its config file and its control socket.
struct Service {
    dir: tempfile::TempDir,
}

impl Service {
    /// A directory with a copy of `overseer` and `config` as its file.
    fn new(config: &str) -> Service {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("bin")).expect("mkdir bin");
        let s = Service { dir };
        s.install(OVERSEER.as_ref(), b"");
        s.write_config(config);
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Installs `from` (with `extra` bytes appended: another build of the
    /// same program) at `bin/overseer`, atomically.
    fn install(&self, from: &Path, extra: &[u8]) {
        let mut bytes = std::fs::read(from).expect("read the binary");
        bytes.extend_from_slice(extra);
        let staged = self.path("bin/.overseer.new");
        std::fs::write(&staged, bytes).expect("write the binary");
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&staged, self.path("bin/overseer")).expect("rename");
    }

    /// Installs a shell script at `bin/overseer`.
    fn install_script(&self, script: &str) {
        let staged = self.path("bin/.overseer.new");
        std::fs::write(&staged, format!("#!/bin/sh\n{script}\n")).expect("write the script");
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&staged, self.path("bin/overseer")).expect("rename");
    }

    fn write_config(&self, config: &str) {
        let control = self.path("control.sock");
        let text = format!("control = \"{}\"\n{config}", control.display());
        std::fs::write(self.path("overseer.toml"), text).expect("write the config");
    }

    /// Starts `bin/overseer run --config overseer.toml`.
    fn start(&self, envs: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(self.path("bin/overseer"));
        cmd.arg("run")
            .arg("--config")
            .arg(self.path("overseer.toml"))
            .envs(envs.iter().copied());
        let p = Proc::spawn(cmd);
        p.expect_line("worker 1 ready", T);
        p
    }

    /// `overseer reload` (the test's own binary, whatever is installed).
    fn reload(&self) -> Output {
        Command::new(OVERSEER)
            .args(["reload", "--control"])
            .arg(self.path("control.sock"))
            .output()
            .expect("run overseer reload")
    }

    /// `overseer status --raw`, as `key=value` pairs.
    fn status(&self) -> Vec<(String, String)> {
        let out = Command::new(OVERSEER)
            .args(["status", "--raw", "--control"])
            .arg(self.path("control.sock"))
            .output()
            .expect("run overseer status");
        assert!(out.status.success(), "status: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn status_field(&self, key: &str) -> String {
        self.status()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .unwrap_or_default()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn expect_reloaded(s: &Service) -> String {
    let out = s.reload();
    assert!(out.status.success(), "reload failed: {}", text(&out));
    text(&out)
}

fn worker_py(port: u16) -> String {
    format!(
        "program = \"python3\"\nargs = [\"{WORKER}\"]\nlisten = [\"127.0.0.1:{port}\"]\nready = \"notify\"\n"
    )
}

/// The `pid=` a request answers with.
fn answering_pid(addr: SocketAddr) -> String {
    let r = Client::new(addr, false)
        .get("/")
        .unwrap_or_else(|f| panic!("GET /: {f}"));
    r.field("pid")
        .unwrap_or_else(|| panic!("no pid= in {:?}", r.body))
        .to_string()
}

/// The master's children that are zombies (ended, not reaped).
fn zombie_children(pid: i32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // After the command's closing parenthesis: state, then ppid.
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                return false;
            };
            let mut fields = rest.split(' ');
            let state = fields.next();
            let ppid = fields.next().and_then(|p| p.parse::<i32>().ok());
            state == Some("Z") && ppid == Some(pid)
        })
        .count()
}

#[test]
fn fifty_reexecs_under_load_keep_the_pid_the_sockets_and_the_worker() {
    let port = free_port();
    let s = Service::new(&worker_py(port));
    let p = s.start(&[("WORKER_READY", "notify")]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let worker = p.worker_pid(1, T).to_string();
    assert_eq!(answering_pid(addr), worker);
    let keep_alive = support::load(addr, 3, true);
    let per_request = support::load(addr, 3, false);
    // Two builds of the same program, alternating at the master's path.
    let build_b = s.path("overseer-b");
    let mut bytes = std::fs::read(OVERSEER).expect("read overseer");
    bytes.extend_from_slice(b"\0build b");
    std::fs::write(&build_b, bytes).expect("write build b");
    let (mut fds_after_first, mut rss_after_first) = (None, None);
    for n in 1..=50u32 {
        if n % 2 == 0 {
            s.install(OVERSEER.as_ref(), b"");
        } else {
            s.install(&build_b, b"");
        }
        let said = expect_reloaded(&s);
        assert!(said.contains(&format!("pid {}", p.pid)), "{said}");
        if n == 1 {
            fds_after_first = open_fds(p.pid);
            rss_after_first = rss_kb(p.pid);
        }
    }
    let fds_after_last = open_fds(p.pid);
    let rss_after_last = rss_kb(p.pid);
    let (keep_alive, per_request) = (keep_alive.stop(), per_request.stop());
    assert_no_failures("keep-alive", &keep_alive);
    assert_no_failures("per-request", &per_request);
    // The workers saw nothing: worker 1 served it all, and still does.
    for stats in [&keep_alive, &per_request] {
        assert_eq!(stats.by_worker.keys().copied().collect::<Vec<_>>(), [1]);
    }
    assert_eq!(answering_pid(addr), worker);
    assert_eq!(
        p.count("worker 2"),
        0,
        "a handover happened: {:?}",
        p.output()
    );
    assert_eq!(s.status_field("master_pid"), p.pid.to_string());
    assert_eq!(s.status_field("reexecs"), "50");
    assert_eq!(s.status_field("failed_reexecs"), "0");
    assert!(s
        .status_field("serving")
        .starts_with(&format!("1 {worker} ")));
    assert_eq!(
        fds_after_last, fds_after_first,
        "the master's descriptors leak"
    );
    let (first, last) = (
        rss_after_first.unwrap_or_default(),
        rss_after_last.unwrap_or_default(),
    );
    eprintln!("master RSS after the first re-exec {first} KiB, after the 50th {last} KiB");
    assert!(
        last < first + 16 * 1024,
        "the master's memory grows: {first} -> {last} KiB"
    );
    assert_eq!(zombie_children(p.pid), 0, "zombies left");
}

/// Worker `pid`'s environment variable `key`.
fn worker_env(pid: i32, key: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|b| *b == 0).find_map(|entry| {
        let entry = String::from_utf8_lossy(entry);
        entry.strip_prefix(&format!("{key}=")).map(str::to_string)
    })
}

#[test]
fn a_reload_binds_an_added_address_and_closes_a_removed_one() {
    let (a, b) = (free_port(), free_port());
    let config = |ports: &[u16]| {
        let listen: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        worker_py(a).replace(
            &format!("listen = [\"127.0.0.1:{a}\"]"),
            &format!("listen = [{}]", listen.join(", ")),
        )
    };
    let s = Service::new(&config(&[a]));
    let p = s.start(&[("WORKER_READY", "notify")]);
    assert!(TcpStream::connect(("127.0.0.1", b)).is_err());
    s.write_config(&config(&[a, b]));
    let said = expect_reloaded(&s);
    assert!(said.contains("socket set changed"), "{said}");
    // A handover gives the next worker both sockets.
    p.expect_line("worker 2 ready", T);
    let second = p.worker_pid(2, T);
    assert_eq!(worker_env(second, "LISTEN_FDS").as_deref(), Some("2"));
    assert_eq!(
        worker_env(second, "LISTEN_FDNAMES").as_deref(),
        Some("listener0:listener1")
    );
    assert!(
        TcpStream::connect(("127.0.0.1", b)).is_ok(),
        "the added address is not bound"
    );
    // Removed: closed once no worker started with it is left.
    s.write_config(&config(&[a]));
    expect_reloaded(&s);
    p.expect_line("worker 3 ready", T);
    p.expect_line(&format!("closed 127.0.0.1:{b} (no longer configured)"), T);
    let deadline = Instant::now() + T;
    while TcpStream::connect(("127.0.0.1", b)).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        TcpStream::connect(("127.0.0.1", b)).is_err(),
        "the removed address still listens"
    );
    let third = p.worker_pid(3, T);
    assert_eq!(worker_env(third, "LISTEN_FDS").as_deref(), Some("1"));
    let addr_a: SocketAddr = format!("127.0.0.1:{a}").parse().expect("address");
    assert_eq!(answering_pid(addr_a), third.to_string());
    assert_eq!(s.status_field("master_pid"), p.pid.to_string());
    assert_eq!(s.status_field("reexecs"), "2");
}

#[test]
fn a_reload_applies_a_new_readiness_mode() {
    let port = free_port();
    // The worker never says READY=1: it is ready once alive long enough.
    let alive = |ms: u64| {
        worker_py(port).replace("ready = \"notify\"", &format!("ready = \"after={ms}ms\""))
    };
    let s = Service::new(&alive(200));
    let p = s.start(&[]);
    s.write_config(&alive(2000));
    expect_reloaded(&s);
    p.signal(nix::libc::SIGUSR2);
    let line = p.expect_line("worker 2 ready after ", T);
    let ms: u64 = line
        .rsplit_once("ready after ")
        .and_then(|(_, r)| r.trim_end_matches(" ms").parse().ok())
        .unwrap_or_else(|| panic!("no time in {line:?}"));
    assert!(
        ms >= 1500,
        "ready after {ms} ms: the old readiness mode is still used"
    );
}

#[test]
fn a_reload_that_fails_its_check_or_cannot_take_over_changes_nothing() {
    let port = free_port();
    let s = Service::new(&worker_py(port));
    let p = s.start(&[("WORKER_READY", "notify")]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let worker = p.worker_pid(1, T).to_string();
    let keep_alive = support::load(addr, 3, true);
    let per_request = support::load(addr, 3, false);
    let good = s.path("bin/overseer.good");
    std::fs::copy(OVERSEER, &good).expect("keep a good copy");

    // A config file with an error: exit 2, with the file, line and reason.
    std::fs::write(s.path("overseer.toml"), "listen = [\n").expect("write");
    let out = s.reload();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("overseer.toml") && said.contains("line 1"),
        "no file and line in: {said}"
    );
    s.write_config(&worker_py(port));

    // A binary that exits at start.
    s.install_script("echo broken >&2; exit 1");
    let out = s.reload();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("exited with status 1"),
        "{}",
        text(&out)
    );

    // A binary that cannot read this master's state (another format).
    s.install_script("echo 'overseer-master-check formats=99'; exit 0");
    let out = s.reload();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("does not answer the master's check"),
        "{}",
        text(&out)
    );

    // A new image that passes the check but cannot take over (an added
    // address is taken): the previous image runs again.
    s.install(&good, b"");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("address").port();
    s.write_config(&worker_py(port).replace(
        &format!("listen = [\"127.0.0.1:{port}\"]"),
        &format!("listen = [\"127.0.0.1:{port}\", \"127.0.0.1:{taken_port}\"]"),
    ));
    let out = s.reload();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("could not take over") && text(&out).contains(&taken_port.to_string()),
        "{}",
        text(&out)
    );
    drop(taken);

    // Through all of it the old worker served, with no failure.
    let (keep_alive, per_request) = (keep_alive.stop(), per_request.stop());
    assert_no_failures("keep-alive", &keep_alive);
    assert_no_failures("per-request", &per_request);
    assert_eq!(answering_pid(addr), worker);
    assert_eq!(s.status_field("master_pid"), p.pid.to_string());
    assert_eq!(s.status_field("reexecs"), "0");
    assert_eq!(s.status_field("failed_reexecs"), "4");
    assert!(p.count("not made") >= 3, "{:?}", p.output());
    // And the master still re-executes once the input is right.
    s.write_config(&worker_py(port));
    expect_reloaded(&s);
    assert_eq!(s.status_field("reexecs"), "1");
}

/// The double failure: the config file gains a key only the new build
/// knows, and the new image then cannot take over. The previous image, run
/// again, goes on with the configuration text it carried instead of
/// reading a file it does not understand, and the service does not stop.
#[test]
fn a_config_only_the_new_build_reads_does_not_stop_the_service_when_the_take_over_fails() {
    let port = free_port();
    let s = Service::new(&worker_py(port));
    let p = s.start(&[("WORKER_READY", "notify")]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let worker = p.worker_pid(1, T).to_string();
    let keep_alive = support::load(addr, 2, true);
    let per_request = support::load(addr, 2, false);
    let good = s.path("bin/overseer.good");
    std::fs::copy(OVERSEER, &good).expect("keep a good copy");

    // A newer build, as far as this master can tell: its check is the real
    // check of everything but the key it added, and it passes; run, it is
    // the real overseer, which refuses the file and gives way.
    let config = s.path("overseer.toml");
    let checked = s.path("checked.toml");
    s.install_script(&format!(
        "if [ -n \"$OVERSEER_MASTER_CHECK\" ]; then\n  grep -v '^added-later' '{config}' > '{checked}'\n  exec '{good}' run --config '{checked}'\nfi\nexec '{good}' \"$@\"",
        config = config.display(),
        checked = checked.display(),
        good = good.display(),
    ));
    s.write_config(&format!("{}added-later = true\n", worker_py(port)));
    let out = s.reload();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("could not take over") && text(&out).contains("added-later"),
        "{}",
        text(&out)
    );
    // The previous image is in charge, with the configuration it had.
    assert_eq!(s.status_field("master_pid"), p.pid.to_string());
    assert_eq!(s.status_field("reexecs"), "0");
    assert_eq!(s.status_field("failed_reexecs"), "1");
    assert_eq!(p.count("the service stops"), 0, "{:?}", p.output());
    assert_eq!(answering_pid(addr), worker);
    // It goes on working: a restart, then a re-exec once the input is right.
    let out = Command::new(OVERSEER)
        .args(["restart", "--control"])
        .arg(s.path("control.sock"))
        .output()
        .expect("run overseer restart");
    assert!(out.status.success(), "restart: {}", text(&out));
    s.install(&good, b"");
    s.write_config(&worker_py(port));
    expect_reloaded(&s);
    assert_eq!(s.status_field("reexecs"), "1");
    let (keep_alive, per_request) = (keep_alive.stop(), per_request.stop());
    assert_no_failures("keep-alive", &keep_alive);
    assert_no_failures("per-request", &per_request);
}

#[test]
fn systemd_hears_reloading_then_ready_around_a_reexec() {
    let dir = tempfile::tempdir().expect("temp dir");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let port = free_port();
    let s = Service::new(&worker_py(port));
    let notify_env = notify_path.to_string_lossy().into_owned();
    let p = s.start(&[("WORKER_READY", "notify"), ("NOTIFY_SOCKET", &notify_env)]);
    let received = |until: &str| -> Vec<String> {
        let mut got = Vec::new();
        let deadline = Instant::now() + T;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = notify.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = m.contains(until);
                got.push(m);
                if done {
                    return got;
                }
            }
        }
        panic!("no {until:?} within {T:?}; got {got:?}");
    };
    let first = received("READY=1");
    assert!(
        first.iter().all(|m| !m.contains("RELOADING=1")),
        "{first:?}"
    );
    expect_reloaded(&s);
    let around = received("READY=1");
    // The worker's own STATUS= lines may come in between.
    let reloading = around
        .iter()
        .position(|m| m.starts_with("RELOADING=1\nMONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no RELOADING=1: {around:?}"));
    assert_eq!(reloading + 2, around.len(), "{around:?}");
    assert!(
        around
            .last()
            .is_some_and(|m| m.contains("master re-executed")),
        "{around:?}"
    );
    assert!(around.iter().all(|m| !m.contains("MAINPID")), "{around:?}");
    assert_eq!(s.status_field("master_pid"), p.pid.to_string());
}

#[test]
fn sigkill_during_a_reexec_leaves_no_worker_and_a_fresh_start_serves() {
    let port = free_port();
    let s = Service::new(&worker_py(port));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    // Deterministic, varied points in the re-exec: 0 to 29 ms after asking.
    for round in 0..50u64 {
        let mut p = s.start(&[("WORKER_READY", "notify")]);
        let worker = p.worker_pid(1, T);
        let mut client = Command::new(OVERSEER)
            .args(["reload", "--control"])
            .arg(s.path("control.sock"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start overseer reload");
        std::thread::sleep(Duration::from_millis((round * 7) % 30));
        // The master alone: its workers must go with it.
        overseer_harness::proc::send_signal(p.pid, nix::libc::SIGKILL);
        p.expect_exit(T);
        let deadline = Instant::now() + T;
        while overseer_harness::proc::alive(worker) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !overseer_harness::proc::alive(worker),
            "round {round}: worker {worker} outlived its master"
        );
        // A child the master was starting (the new binary's check) closes
        // the master's sockets first thing, but between its fork and that
        // it holds them: wait until nothing answers on them any more.
        let control = s.path("control.sock");
        while (std::os::unix::net::UnixStream::connect(&control).is_ok()
            || TcpStream::connect(addr).is_ok())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = client.wait();
        drop(p);
    }
    // A fresh start serves.
    let p = s.start(&[("WORKER_READY", "notify")]);
    assert_eq!(answering_pid(addr), p.worker_pid(1, T).to_string());
}

/// A service whose program is `bin/app` (`worker.py`, version 1) with a
/// key pair in `keys/` (`overseer keygen`) and the directories `dirs`.
fn signing_service(dirs: &[&str]) -> Service {
    let s = Service::new("");
    let d = s.dir.path();
    for sub in dirs {
        std::fs::create_dir(d.join(sub)).expect("mkdir");
    }
    run_ok(
        Command::new(OVERSEER)
            .args(["keygen", "--out"])
            .arg(d.join("keys")),
    );
    write_worker(&d.join("bin/app"), "1");
    s
}

/// The config of a [`signing_service`] on `port`, upgrading from the
/// signed file release `source/app`, with `extra` lines at the top and
/// the probation `probation`.
fn upgrading(s: &Service, port: u16, source: &str, extra: &str, probation: &str) -> String {
    let d = s.dir.path();
    format!(
        "program = \"{app}\"\nlisten = [\"127.0.0.1:{port}\"]\nready = \"notify\"\napp-version = \"1.0.0\"\n{extra}\n[upgrade]\nfetch-file = \"{release}\"\nfetch-interval = \"100ms\"\npublic-key = [\"{key}\"]\nsanity-check = \"version\"\nprobation = \"{probation}\"\n",
        app = d.join("bin/app").display(),
        release = d.join(source).join("app").display(),
        key = d.join("keys/overseer.pub").display(),
    )
}

/// Publishes `worker.py` version `version` (its source changed by `patch`),
/// signed as `semver`, at `source/app` of a [`signing_service`]: the
/// signature first, then the file renamed into place.
fn publish(s: &Service, source: &str, version: &str, semver: &str, patch: fn(String) -> String) {
    let d = s.dir.path();
    let staging = d.join(source).join("app.new");
    write_worker(&staging, version);
    let text = std::fs::read_to_string(&staging).expect("read");
    std::fs::write(&staging, patch(text)).expect("write");
    run_ok(
        Command::new(OVERSEER)
            .args(["sign", "--key"])
            .arg(d.join("keys/overseer.key"))
            .args(["--version", semver, "--output"])
            .arg(d.join(source).join("app.minisig"))
            .arg(&staging),
    );
    std::fs::rename(&staging, d.join(source).join("app")).expect("rename");
}

/// Waits until a request is answered by `version` (during a handover the
/// old worker may still answer a few, until it drains).
fn expect_version(addr: SocketAddr, version: &str) {
    let deadline = Instant::now() + T;
    let mut last = String::new();
    while Instant::now() < deadline {
        last = Client::new(addr, false)
            .get("/")
            .ok()
            .and_then(|r| r.field("version").map(str::to_string))
            .unwrap_or_default();
        if last == version {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("version {version} never answered (last: {last:?})");
}

#[test]
fn a_draining_worker_and_a_release_on_probation_are_handled_by_the_new_master() {
    let port = free_port();
    let s = signing_service(&["releases"]);
    let d = s.dir.path();
    // Nothing here depends on time: worker 1 drains, and release 2
    // crashes, when the test says, both well inside these bounds.
    s.write_config(&upgrading(
        &s,
        port,
        "releases",
        "terminate-timeout = \"60s\"",
        "60s",
    ));
    let hold = d.join("hold");
    let crash = d.join("crash");
    let p = s.start(&[
        ("WORKER_READY", "notify"),
        ("WORKER_HOLD_FILE", hold.to_str().expect("utf-8 path")),
        ("WORKER_EXIT_FILE", crash.to_str().expect("utf-8 path")),
    ]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    // An idle keep-alive connection keeps worker 1 draining until `hold`.
    let mut idle = Client::new(addr, true).timeout(T);
    let first = idle
        .get("/")
        .unwrap_or_else(|f| panic!("a request on the idle connection: {f}"));
    assert_eq!(first.field("worker"), Some("1"), "{}", first.body);
    // Release 2, signed, crashes once `crash` exists: within its probation.
    publish(&s, "releases", "2", "2.0.0", |text| {
        text.replace(
            "\nmain()\n",
            "
def exit_when_told():
    while not os.path.exists(os.environ[\"WORKER_EXIT_FILE\"]):
        time.sleep(0.05)
    os._exit(3)


threading.Thread(target=exit_when_told, daemon=True).start()
main()
",
        )
    });
    p.expect_line("worker 1 draining", T);
    let installed = p.expect_line("installed version 2.0.0", T);
    let sha = installed
        .split_once("(sha256 ")
        .and_then(|(_, r)| r.get(..12))
        .expect("a sha256 in the install line")
        .to_string();
    // Now: worker 1 draining, worker 2 on probation.
    expect_reloaded(&s);
    let line = |needle: &str| {
        p.output()
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?}"))
    };
    let reexec = line("master re-executed");
    std::fs::write(&hold, "").expect("end worker 1's drain");
    std::fs::write(&crash, "").expect("crash release 2");
    // The new image reaps the draining worker and judges the probation
    // (failed: rolled back), and its upgrade thread records the verdict.
    p.expect_line("worker 1 drained", T);
    p.expect_line("upgrade to version 2.0.0 rolled back", T);
    assert!(
        reexec < line("worker 1 drained"),
        "drained before the re-exec"
    );
    assert!(reexec < line("rolled back"), "judged before the re-exec");
    let ledger = || {
        let out = Command::new(OVERSEER)
            .args(["ledger", "show", "--bin"])
            .arg(d.join("bin/app"))
            .output()
            .expect("ledger show");
        text(&out)
    };
    let remembered_bad = |text: &str| {
        text.lines()
            .any(|l| l.starts_with("  ") && l.trim().starts_with(&sha))
    };
    let deadline = Instant::now() + T;
    while !remembered_bad(&ledger()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        remembered_bad(&ledger()),
        "release {sha} not remembered as bad: {}",
        ledger()
    );
    // Not installed again, and version 1 serves.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(p.count("installed version 2.0.0"), 1, "{:?}", p.output());
    expect_version(addr, "1");
    assert!(s.status_field("last_upgrade").contains("rolled back"));
    assert_eq!(s.status_field("master_pid"), p.pid.to_string());
    drop(idle);
}

#[test]
fn a_reload_applies_a_new_release_source() {
    let port = free_port();
    let s = signing_service(&["old", "new"]);
    let d = s.dir.path();
    s.write_config(&upgrading(&s, port, "old", "", "200ms"));
    let p = s.start(&[("WORKER_READY", "notify")]);
    s.write_config(&upgrading(&s, port, "new", "", "200ms"));
    expect_reloaded(&s);
    // Published at the new source only: installed.
    publish(&s, "new", "2", "2.0.0", |text| text);
    p.expect_line("installed version 2.0.0", T);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    expect_version(addr, "2");
    assert!(
        p.output().iter().any(|l| l.contains(&format!(
            "downloading release {}",
            d.join("new/app").display()
        ))),
        "{:?}",
        p.output()
    );
    assert_eq!(s.status_field("master_pid"), p.pid.to_string());
}
