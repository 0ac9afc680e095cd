//! `overseer run` with a worker that is not Rust (`worker.py`, plain Python 3
//! reading `LISTEN_FDS` and speaking sd_notify): handovers under load with
//! every readiness mode, flags over the config file, bad input refused before
//! anything starts, a signed self-upgrade of the program's own file (and
//! `overseer ledger reset-floor` undoing a mistaken signed version), and
//! the download's progress bar on a pseudo-terminal.
//!
//! Every master runs in its own process group and is killed with it (workers
//! and probes included) when its `Proc` is dropped; traffic stays on
//! 127.0.0.1; every wait is bounded.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use overseer_harness::client::Client;
use overseer_harness::ports::free_port;
use overseer_harness::proc::{env_names, Proc};
use overseer_harness::release::ReleaseServer;

mod support;

use support::{assert_no_failures, load, run_ok, write_worker, WORKER};

/// The GCS-shaped server of the library's fetcher tests.
#[path = "../../overseer/tests/support/gcs.rs"]
mod gcs;

const OVERSEER: &str = env!("CARGO_BIN_EXE_overseer");
/// A generous bound for anything that should take milliseconds.
const T: Duration = Duration::from_secs(30);

/// `overseer run ARGS`; without a control socket unless the test names
/// one (by default every master of `python3` would share one name).
fn overseer(args: &[&str]) -> Command {
    let mut cmd = Command::new(OVERSEER);
    cmd.arg("run");
    if !args.iter().any(|a| *a == "--control" || *a == "--name") {
        cmd.arg("--no-control");
    }
    cmd.args(args);
    cmd
}

/// Fails clearly when the machine has no Python 3 for `worker.py`.
fn require_python() {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "python3 runs the non-Rust worker of these tests: install it (apt-get install python3)"
    );
}

/// Starts a master running `worker.py` and returns it with its address.
fn start(args: &[&str], envs: &[(&str, &str)]) -> (Proc, SocketAddr) {
    require_python();
    let mut cmd = overseer(args);
    cmd.args(["--", "python3", WORKER])
        .envs(envs.iter().copied());
    let p = Proc::spawn(cmd);
    let addr = p.listen_addr();
    p.expect_line("worker 1 ready", T);
    (p, addr)
}

/// One response's `key=` field (the request must succeed).
fn field(addr: SocketAddr, key: &str) -> String {
    let r = Client::new(addr, false)
        .get("/")
        .unwrap_or_else(|f| panic!("GET /: {f}"));
    r.field(key)
        .unwrap_or_else(|| panic!("no {key}= in {:?}", r.body))
        .to_string()
}

/// The pid of worker `n`, from the master's log.
fn worker_pid(p: &Proc, n: u64) -> String {
    p.worker_pid(n, T).to_string()
}

/// Waits until the response's `key` is `value`.
fn expect_field(addr: SocketAddr, key: &str, value: &str) {
    let deadline = Instant::now() + T;
    let mut last = String::new();
    while Instant::now() < deadline {
        last = field(addr, key);
        if last == value {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{key}={value} never answered (last: {last})");
}

/// The milliseconds in the master's `worker N ready after MS ms` line.
fn ready_ms(p: &Proc, n: u64) -> u64 {
    let line = p.expect_line(&format!("worker {n} ready after "), T);
    line.rsplit_once("ready after ")
        .and_then(|(_, r)| r.trim_end_matches(" ms").parse().ok())
        .unwrap_or_else(|| panic!("no time in {line:?}"))
}

/// Stops the master with SIGTERM; it must exit 0 like its worker.
fn stop(mut p: Proc) {
    p.signal(nix::libc::SIGTERM);
    let status = p.expect_exit(T);
    assert_eq!(status.code(), Some(0), "{:?}", p.output());
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn python_worker_hands_over_under_load_without_failures() {
    let (p, addr) = start(
        &["--listen", "127.0.0.1:0", "--ready", "notify"],
        &[("WORKER_READY", "notify")],
    );
    assert_eq!(field(addr, "pid"), worker_pid(&p, 1));
    let keep_alive = load(addr, 3, true);
    let per_request = load(addr, 3, false);
    for n in 2..=5u64 {
        p.signal(nix::libc::SIGUSR2);
        p.expect_line(&format!("worker {n} ready"), T);
        p.expect_line(&format!("worker {} drained", n - 1), T);
        // The new worker answers, with its own pid.
        expect_field(addr, "pid", &worker_pid(&p, n));
        let deadline = Instant::now() + T;
        while (keep_alive.latest_worker() < n || per_request.latest_worker() < n)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    for (mode, stats) in [
        ("keep-alive", keep_alive.stop()),
        ("per-request", per_request.stop()),
    ] {
        assert_no_failures(mode, &stats);
        let workers: Vec<u64> = stats.by_worker.keys().copied().collect();
        assert_eq!(workers, (1..=5).collect::<Vec<_>>(), "{mode}");
    }
    assert_eq!(p.count("restart failed"), 0);
    stop(p);
}

#[test]
fn ready_after_a_time_alive_hands_over_then() {
    let (p, addr) = start(&["--listen", "127.0.0.1:0", "--ready", "after=700ms"], &[]);
    assert!(ready_ms(&p, 1) >= 700);
    let keep_alive = load(addr, 2, true);
    p.signal(nix::libc::SIGUSR2);
    assert!(ready_ms(&p, 2) >= 700);
    p.expect_line("worker 1 drained", T);
    expect_field(addr, "pid", &worker_pid(&p, 2));
    assert_no_failures("keep-alive", &keep_alive.stop());
    stop(p);
}

#[test]
fn ready_by_probe_command_hands_over_when_it_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = format!("cmd=test -e '{}/{{pid}}.ready'", dir.path().display());
    let marker_dir = dir.path().to_string_lossy().into_owned();
    let envs = [
        ("WORKER_DELAY", "0.6"),
        ("WORKER_MARKER_DIR", marker_dir.as_str()),
    ];
    let (p, addr) = start(&["--listen", "127.0.0.1:0", "--ready", &probe], &envs);
    assert!(ready_ms(&p, 1) >= 600);
    let keep_alive = load(addr, 2, true);
    p.signal(nix::libc::SIGUSR2);
    // Ready only once the new worker (not the old one) made its marker.
    assert!(ready_ms(&p, 2) >= 600);
    let pid2 = worker_pid(&p, 2);
    assert!(dir.path().join(format!("{pid2}.ready")).exists());
    p.expect_line("worker 1 drained", T);
    expect_field(addr, "pid", &pid2);
    assert_no_failures("keep-alive", &keep_alive.stop());
    stop(p);
}

#[test]
fn a_probe_that_never_passes_keeps_the_old_worker_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Passes for worker 1 only.
    std::fs::write(dir.path().join("1.ok"), b"").expect("write");
    let probe = format!("cmd=test -e '{}/{{worker}}.ok'", dir.path().display());
    let (p, addr) = start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--ready",
            &probe,
            "--ready-timeout",
            "1500ms",
        ],
        &[],
    );
    let pid1 = worker_pid(&p, 1);
    p.signal(nix::libc::SIGUSR2);
    p.expect_line("worker 2 was not ready within", T);
    p.expect_line("restart failed", T);
    assert_eq!(field(addr, "pid"), pid1);
    assert_eq!(p.count("worker 2 ready"), 0);
    stop(p);
}

#[test]
fn a_restart_that_cannot_run_the_program_keeps_the_old_worker_serving() {
    use std::os::unix::fs::PermissionsExt;
    require_python();
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("app");
    write_worker(&app, "1");
    let mut cmd = overseer(&["--listen", "127.0.0.1:0", "--ready", "notify", "--"]);
    cmd.arg(&app).env("WORKER_READY", "notify");
    let p = Proc::spawn(cmd);
    let addr = p.listen_addr();
    p.expect_line("worker 1 ready", T);
    let pid1 = worker_pid(&p, 1);
    // A bad deploy: the program loses its execute bit, so execve fails in
    // the new worker's process, after the master has started it.
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    p.signal(nix::libc::SIGUSR2);
    let why = p.expect_line("cannot start worker", T);
    assert!(why.contains("Permission denied"), "{why}");
    p.expect_line("restart failed", T);
    assert_eq!(field(addr, "pid"), pid1);
    // The failed child was reaped: the master has no child but worker 1.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", p.pid)).expect("the master's threads");
    let children: Vec<String> = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(children, std::slice::from_ref(&pid1));
    // Fixed, the next restart goes through.
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p.signal(nix::libc::SIGUSR2);
    let pid3 = worker_pid(&p, 3);
    expect_field(addr, "pid", &pid3);
    stop(p);
}

#[test]
fn flags_win_over_the_config_file() {
    require_python();
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (free_port(), free_port());
    let file = dir.path().join("overseer.toml");
    std::fs::write(
        &file,
        format!(
            "program = \"python3\"\nargs = [\"{WORKER}\"]\nlisten = [\"127.0.0.1:{a}\"]\n\
             ready = \"after=20s\"\nready-timeout = \"25s\"\nterminate-timeout = \"5s\"\n"
        ),
    )
    .expect("write");
    let b_addr = format!("127.0.0.1:{b}");
    let cmd = {
        let mut c = overseer(&["--config"]);
        c.arg(&file)
            .args(["--listen", &b_addr, "--ready", "notify"])
            .env("WORKER_READY", "notify");
        c
    };
    let p = Proc::spawn(cmd);
    assert_eq!(p.listen_addr().port(), b);
    // `notify` from the flag, not the file's 20 s.
    assert!(ready_ms(&p, 1) < 15_000);
    let addr: SocketAddr = b_addr.parse().expect("addr");
    assert_eq!(field(addr, "worker"), "1");
    assert!(!listening(a), "the file's address is not bound");
    stop(p);
}

/// Relative paths in a config file are taken from the file's directory, not
/// from the working directory (often `/` under a service manager).
#[test]
fn relative_paths_in_the_config_file_are_taken_from_its_directory() {
    let dir = signing_workspace(&["bin", "releases", "run", "elsewhere"]);
    let d = dir.path();
    write_worker(&d.join("bin/app"), "1");
    let file = d.join("overseer.toml");
    let config = r#"
        program = "bin/app"
        listen = ["127.0.0.1:0", "admin=unix:run/admin.sock"]
        control = "run/control.sock"
        ready = "notify"
        [upgrade]
        fetch-file = "releases/app"
        fetch-interval = "100ms"
        public-key = ["keys/overseer.pub"]
        "#;
    std::fs::write(&file, config).expect("write the config file");
    // The file names the control socket, so no --no-control here.
    let mut cmd = Command::new(OVERSEER);
    cmd.args(["run", "--config"])
        .arg(&file)
        .current_dir(d.join("elsewhere"))
        .env("WORKER_READY", "notify");
    let p = Proc::spawn(cmd);
    let addr = p.listen_addr();
    p.expect_line("worker 1 ready", T);
    assert_eq!(field(addr, "version"), "1");
    for socket in ["run/admin.sock", "run/control.sock"] {
        assert!(
            d.join(socket).exists(),
            "{socket} is beside the config file"
        );
    }
    let stray = std::fs::read_dir(d.join("elsewhere"))
        .expect("read_dir")
        .count();
    assert_eq!(stray, 0, "nothing is created in the working directory");

    publish(d, "2", "2.0.0", false);
    p.expect_line("downloaded", T);
    expect_field(addr, "version", "2");
    let program = std::fs::read_to_string(d.join("bin/app")).expect("the program");
    assert!(program.contains("VERSION = \"2\""));
    stop(p);
}

#[test]
fn bad_input_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unknown_key = dir.path().join("typo.toml");
    std::fs::write(&unknown_key, "ready = \"notify\"\nlisten_on = [\":1\"]\n").expect("write");
    let missing = dir.path().join("missing.toml");
    let unknown_key_s = unknown_key.to_string_lossy().into_owned();
    let missing_s = missing.to_string_lossy().into_owned();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (vec!["--bogus"], &["unexpected argument '--bogus'"]),
        (
            vec!["--listen", "127.0.0.1:99999"],
            &["bad --listen address '127.0.0.1:99999'", "not a port"],
        ),
        (
            vec!["--config", &missing_s],
            &["cannot read the config file", "missing.toml"],
        ),
        (
            vec!["--config", &unknown_key_s],
            &["typo.toml", "listen_on", "line 2"],
        ),
        (vec!["--ready-timeout", "soon"], &["not a duration"]),
        (vec!["--ready", "whenever"], &["unknown readiness"]),
        (vec!["--public-key", "RWQnotakey"], &["bad --public-key"]),
        (vec!["--restart-signal", "BANANA"], &["unknown signal"]),
        (vec!["--fetch-github", "nope"], &["expected OWNER/REPO"]),
        (
            vec!["--fetch-azure", "az://account/container"],
            &["expected az://ACCOUNT/CONTAINER/BLOB"],
        ),
        (
            vec!["--fetch-gcs", "gs://bucket"],
            &["expected gs://BUCKET/OBJECT"],
        ),
        (
            vec![
                "--fetch-gcs",
                "gs://bucket/app",
                "--fetch-s3",
                "s3://bucket/app",
            ],
            &["more than one release source"],
        ),
        (
            vec!["--ca-file", &missing_s],
            &["--ca-file applies to a release source over the network"],
        ),
        (
            vec!["--fetch-s3", "s3://bucket/app", "--ca-file", &unknown_key_s],
            &[
                "--ca-file",
                "typo.toml: CA certificates: no certificate in it",
            ],
        ),
        (
            vec!["--fetch-github", "acme/app", "--ca-file", &unknown_key_s],
            &[
                "--ca-file",
                "typo.toml: CA certificates: no certificate in it",
            ],
        ),
        (
            vec![
                "--fetch-url",
                "https://127.0.0.1:1/app",
                "--ca-file",
                &missing_s,
            ],
            &["--ca-file", "missing.toml: cannot read it"],
        ),
        (
            vec![
                "--fetch-url",
                "https://127.0.0.1:1/app",
                "--ca-file",
                &unknown_key_s,
            ],
            &[
                "--ca-file",
                "typo.toml: CA certificates: no certificate in it",
            ],
        ),
        // Plain http to a host that is not loopback (0.0.0.0 is not, by the
        // rule; were it ever tried, it would stay on this machine).
        (
            vec!["--fetch-url", "http://0.0.0.0:1/app"],
            &[
                "--fetch-url",
                "http://0.0.0.0:1/app",
                "plain http",
                "--allow-http",
            ],
        ),
        (
            vec![
                "--fetch-github",
                "acme/app",
                "--github-api-url",
                "http://0.0.0.0:1/api/v3",
            ],
            &["--github-api-url", "plain http", "--allow-http"],
        ),
        (
            vec![
                "--fetch-s3",
                "s3://bucket/app",
                "--s3-endpoint",
                "http://0.0.0.0:1",
            ],
            &["--s3-endpoint", "plain http", "--allow-http"],
        ),
        (
            vec!["--allow-http"],
            &["--allow-http applies to a release source over the network"],
        ),
        (vec!["--pass-env", "AWS_*"], &["bad --pass-env \"AWS_*\""]),
        // A fleet's manifest is trusted only when signed.
        (
            vec!["--fetch-fleet", "/srv/fleet"],
            &["--fetch-fleet needs --public-key"],
        ),
        (
            vec!["--fleet-reports", "--fetch-file", "/srv/app"],
            &["--fleet-reports applies to --fetch-fleet"],
        ),
        (
            vec![
                "--fetch-fleet",
                "ftp://host/fleet",
                "--public-key",
                "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3",
            ],
            &[
                "--fetch-fleet ftp://host/fleet",
                "not a store a fleet polls",
            ],
        ),
        (
            vec![
                "--fetch-fleet",
                "http://0.0.0.0:1/fleet",
                "--public-key",
                "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3",
            ],
            &["--fetch-fleet", "plain http", "--allow-http"],
        ),
    ];
    for (args, needles) in cases {
        let mut cmd = overseer(&["--listen", &listen]);
        cmd.args(&args).args(["--", "python3", WORKER]);
        expect_refused(cmd, &args, needles, port);
    }
    // A release source for an interpreter: upgrades would overwrite it.
    let release = dir.path().join("release");
    let release_s = release.to_string_lossy().into_owned();
    let mut cmd = overseer(&["--listen", &listen, "--fetch-file", &release_s]);
    cmd.args(["--", "python3", WORKER]);
    expect_refused(
        cmd,
        &["--fetch-file", "--", "python3"],
        &[
            "PROGRAM is the interpreter 'python3",
            "make the script PROGRAM",
        ],
        port,
    );
    // A program that is not there.
    let mut cmd = overseer(&["--listen", &listen]);
    cmd.args(["--", "no-such-program-for-overseer"]);
    expect_refused(
        cmd,
        &["no-such-program-for-overseer"],
        &["PROGRAM not found: 'no-such-program-for-overseer' is not in PATH"],
        port,
    );
    // A program that is not executable.
    let script = dir.path().join("app.py");
    std::fs::write(&script, "print(1)\n").expect("write");
    let mut cmd = overseer(&["--listen", &listen, "--"]);
    cmd.arg(&script);
    expect_refused(cmd, &["app.py"], &["PROGRAM not executable"], port);
}

/// Runs `cmd`, which must exit 2 with every needle on stderr, having bound
/// nothing and left no process behind.
fn expect_refused(cmd: Command, what: &[&str], needles: &[&str], port: u16) {
    let mut p = Proc::spawn_quiet(cmd);
    let status = p.expect_exit(T);
    // The output is collected by threads: wait for it (bounded).
    for needle in needles {
        let seen = p.wait_for_nth(needle, 0, Duration::from_secs(5));
        assert!(
            seen.is_some(),
            "{what:?}: {needle:?} not in {:?}",
            p.output()
        );
    }
    let output = p.output().join("\n");
    assert_eq!(status.code(), Some(2), "{what:?}: {output}");
    assert!(!output.contains("listening on"), "{what:?}: {output}");
    assert!(!output.contains("worker 1 started"), "{what:?}: {output}");
    assert!(!listening(port), "{what:?}: port {port} is bound");
    // Nothing is left in the process group it led.
    let group = nix::unistd::Pid::from_raw(-p.pid);
    assert_eq!(
        nix::sys::signal::kill(group, None),
        Err(nix::errno::Errno::ESRCH),
        "{what:?}: a process was left behind"
    );
}

/// Publishes `version` of the worker at `releases/app`, signed (the
/// signature first, then the file renamed into place).
/// A temporary directory with these subdirectories and a key pair in
/// `keys/` (`overseer keygen`), for tests that publish signed releases.
fn signing_workspace(subdirs: &[&str]) -> tempfile::TempDir {
    require_python();
    let dir = tempfile::tempdir().expect("tempdir");
    for sub in subdirs {
        std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
    }
    run_ok(
        Command::new(OVERSEER)
            .args(["keygen", "--out"])
            .arg(dir.path().join("keys")),
    );
    dir
}

fn publish(d: &Path, version: &str, semver: &str, tamper: bool) {
    let staging = d.join("releases/app.new");
    write_worker(&staging, version);
    run_ok(
        Command::new(OVERSEER)
            .args(["sign", "--key"])
            .arg(d.join("keys/overseer.key"))
            .args(["--version", semver, "--output"])
            .arg(d.join("releases/app.minisig"))
            .arg(&staging),
    );
    if tamper {
        let mut text = std::fs::read_to_string(&staging).expect("read");
        text.push_str("# changed after signing\n");
        std::fs::write(&staging, text).expect("write");
    }
    std::fs::rename(&staging, d.join("releases/app")).expect("rename");
}

/// Starts `overseer run` on `bin/app` of the signing workspace `d` (worker
/// version 1, installed as 1.0.0), upgrading from the signed file release
/// at `release`; returns it once worker 1 is ready, with its address.
fn start_file_upgrades(d: &Path, release: &Path) -> (Proc, SocketAddr) {
    start_file_upgrades_on(d, release, None, &[])
}

/// [`start_file_upgrades`] with `extra` options, on the CPUs `cpus` alone
/// (the master, its workers and its checks) when given.
fn start_file_upgrades_on(
    d: &Path,
    release: &Path,
    cpus: Option<&str>,
    extra: &[&str],
) -> (Proc, SocketAddr) {
    let app = d.join("bin/app");
    write_worker(&app, "1");
    let release = release.to_string_lossy().into_owned();
    let key = d.join("keys/overseer.pub").to_string_lossy().into_owned();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--ready",
        "notify",
        "--app-version",
        "1.0.0",
        "--fetch-file",
        &release,
        "--fetch-interval",
        "100ms",
        "--public-key",
        &key,
        "--sanity-check",
        "version",
        "--probation",
        "1s",
    ];
    args.extend_from_slice(extra);
    args.push("--");
    let mut cmd = match cpus {
        Some(cpus) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["--cpu-list", cpus, OVERSEER, "run", "--no-control"])
                .args(&args);
            cmd
        }
        None => overseer(&args),
    };
    cmd.arg(&app).env("WORKER_READY", "notify");
    let p = Proc::spawn(cmd);
    let addr = p.listen_addr();
    p.expect_line("worker 1 ready", T);
    (p, addr)
}

/// Programs that keep one CPU busy each, at normal priority, until dropped
/// (killed by pid and reaped).
struct Busy(Vec<std::process::Child>);

impl Busy {
    fn on(cpu: &str, count: usize) -> Busy {
        Busy(
            (0..count)
                .map(|_| {
                    Command::new("taskset")
                        .args(["--cpu-list", cpu, "sh", "-c", "while :; do :; done"])
                        .spawn()
                        .expect("start a busy loop (taskset, from util-linux)")
                })
                .collect(),
        )
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A host so busy that the sanity check (at the lowest priority) gets well
/// under 1 % of a CPU: the time it waits for one does not count against
/// its timeout, so a good release is installed, not refused as too slow.
#[test]
fn a_sanity_check_starved_by_a_busy_host_does_not_refuse_a_good_release() {
    let dir = signing_workspace(&["bin", "releases"]);
    let d = dir.path();
    let (p, addr) = start_file_upgrades_on(
        d,
        &d.join("releases/app"),
        Some("0"),
        &["--sanity-timeout", "2s"],
    );
    let busy = Busy::on("0", 6);
    publish(d, "2", "2.0.0", false);
    // The check (python3 app --version: tens of ms of CPU) waits for
    // seconds; the master says that this time is not counted.
    p.expect_line("for a CPU so far", T);
    drop(busy);
    p.expect_line("installed version 2.0.0", T);
    expect_field(addr, "version", "2");
    assert_eq!(p.count("rejected"), 0, "{:?}", p.output());
    stop(p);
}

#[test]
fn upgrade_from_a_signed_file_release_replaces_the_program() {
    let dir = signing_workspace(&["bin", "releases"]);
    let d = dir.path();
    let app: PathBuf = d.join("bin/app");
    let (p, addr) = start_file_upgrades(d, &d.join("releases/app"));
    assert_eq!(field(addr, "version"), "1");
    let keep_alive = load(addr, 2, true);

    publish(d, "2", "2.0.0", false);
    p.expect_line("installed version 2.0.0", T);
    expect_field(addr, "version", "2");
    assert_eq!(field(addr, "pid"), worker_pid(&p, 2));
    p.expect_line("version 2.0.0 passed probation", T);
    let installed = std::fs::read_to_string(&app).expect("read");
    assert!(installed.contains("VERSION = \"2\""));
    // Progress lines (stderr is not a terminal here).
    let started = p.expect_line("download started (", T);
    assert!(started.ends_with(" KiB)"), "{started}");
    p.expect_line("downloaded", T);

    // A release changed after signing is refused; version 2 keeps serving.
    publish(d, "3", "3.0.0", true);
    p.expect_line("bad signature", T);
    assert_eq!(field(addr, "version"), "2");
    assert_no_failures("keep-alive", &keep_alive.stop());
    stop(p);
}

/// A file name cannot forge the signed version: a release in a file named
/// `app version=99.0.0`, signed by `overseer sign` as 1.0.1, installs as
/// 1.0.1, and the next release, 1.0.2, still installs after it.
#[test]
fn a_file_name_cannot_raise_the_signed_version() {
    let dir = signing_workspace(&["bin", "releases"]);
    let d = dir.path();
    let published = d.join("releases/app version=99.0.0");
    let (p, addr) = start_file_upgrades(d, &published);

    // Signed under its own name, so the name is in the signed comment; the
    // signature is written first and the file renamed into place last.
    let publish_as = |worker_version: &str, semver: &str| {
        let staging = d.join("staging").join("app version=99.0.0");
        std::fs::create_dir_all(staging.parent().expect("parent")).expect("mkdir");
        write_worker(&staging, worker_version);
        let mut sig = published.as_os_str().to_owned();
        sig.push(".minisig");
        run_ok(
            Command::new(OVERSEER)
                .args(["sign", "--key"])
                .arg(d.join("keys/overseer.key"))
                .args(["--version", semver, "--output"])
                .arg(&sig)
                .arg(&staging),
        );
        std::fs::rename(&staging, &published).expect("rename");
    };
    publish_as("2", "1.0.1");
    p.expect_line("installed version 1.0.1", T);
    p.expect_line("version 1.0.1 passed probation", T);
    expect_field(addr, "version", "2");
    let ledger = std::fs::read_to_string(d.join("bin/.app.overseer-state")).expect("ledger");
    assert!(ledger.contains("highest-version 1.0.1\n"), "{ledger}");

    publish_as("3", "1.0.2");
    p.expect_line("installed version 1.0.2", T);
    expect_field(addr, "version", "3");
    let log = p.output().join("\n");
    assert!(!log.contains("version 99"), "{log}");
    stop(p);
}

/// `overseer ledger ARGS --bin BIN`, which must succeed; its stdout.
fn ledger_command(args: &[&str], bin: &Path) -> String {
    let out = Command::new(OVERSEER)
        .arg("ledger")
        .args(args)
        .arg("--bin")
        .arg(bin)
        .output()
        .expect("run overseer ledger");
    assert!(out.status.success(), "ledger {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_floor_raised_by_a_mistaken_version_is_reset_with_overseer_ledger() {
    let dir = signing_workspace(&["bin", "releases"]);
    let d = dir.path();
    let app: PathBuf = d.join("bin/app");
    let (p, addr) = start_file_upgrades(d, &d.join("releases/app"));

    // Worker version 2 is signed 99.0.0 by mistake (meant: 1.0.1): it is
    // installed, and the next release, 1.0.2, is refused as not newer.
    publish(d, "2", "99.0.0", false);
    p.expect_line("version 99.0.0 passed probation", T);
    expect_field(addr, "version", "2");
    publish(d, "3", "1.0.2", false);
    p.expect_line("signed version 1.0.2 is not newer than 99.0.0", T);
    let shown = ledger_command(&["show"], &app);
    assert!(shown.contains("(the floor): 99.0.0"), "{shown}");

    // The way out, while the master runs: 1.0.2 installs without being
    // published again, and the floor is 1.0.2 afterwards.
    let said = ledger_command(&["reset-floor", "--to", "1.0.1"], &app);
    assert!(said.contains("is now 1.0.1 (was 99.0.0)"), "{said}");
    p.expect_line("version 1.0.2 passed probation", T);
    expect_field(addr, "version", "3");
    let shown = ledger_command(&["show"], &app);
    assert!(shown.contains("(the floor): 1.0.2"), "{shown}");
    assert!(shown.contains("floor resets: 1"), "{shown}");
    stop(p);
}

/// A release server over HTTPS with Python's standard library: serves
/// DIR on 127.0.0.1:PORT with CERT and KEY (arguments: PORT DIR CERT KEY).
const HTTPS_SERVER: &str = r#"
import functools, http.server, ssl, sys
port, directory, cert, key = sys.argv[1:5]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("serving", flush=True)
server.serve_forever()
"#;

/// A file of the test PKI (a throwaway CA and a certificate it signed for
/// 127.0.0.1 and localhost; see the library's HTTPS tests).
fn tls_file(name: &str) -> String {
    format!(
        "{}/../overseer/tests/tls/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Starts `cmd`, a master of worker version 1 at `app` whose release source
/// holds version 2; checks that version 2 is downloaded, serves and replaced
/// the file, then stops the master.
fn expect_upgrade_to_version_2(cmd: Command, app: &Path) {
    let p = Proc::spawn(cmd);
    let addr = p.listen_addr();
    p.expect_line("worker 1 ready", T);
    p.expect_line("downloaded", T);
    expect_field(addr, "version", "2");
    let program = std::fs::read_to_string(app).expect("the program");
    assert!(program.contains("VERSION = \"2\""));
    stop(p);
}

#[test]
fn an_https_release_signed_by_a_private_ca_is_taken_with_ca_file() {
    https_release_with_a_private_ca(false);
}

/// The same for GitHub Enterprise Server behind a private CA: the release
/// JSON at the API path, the asset beside it, both over HTTPS.
#[test]
fn a_github_enterprise_release_behind_a_private_ca_is_taken_with_ca_file() {
    https_release_with_a_private_ca(true);
}

fn https_release_with_a_private_ca(github: bool) {
    require_python();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir(d.join("releases")).expect("mkdir");
    let app = d.join("app");
    write_worker(&app, "1");
    write_worker(&d.join("releases/app"), "2");
    let port = free_port().to_string();
    let api = d.join("releases/api/v3/repos/acme/app/releases");
    std::fs::create_dir_all(&api).expect("mkdir");
    let asset = format!(
        r#"{{"id": 1, "name": "app", "url": "https://localhost:{port}/api/v3/repos/acme/app/releases/assets/1",
            "browser_download_url": "https://localhost:{port}/app", "state": "uploaded"}}"#
    );
    let latest = format!(r#"{{"tag_name": "v2", "draft": false, "assets": [{asset}]}}"#);
    std::fs::write(api.join("latest"), latest).expect("write the release JSON");
    let mut server = Command::new("python3");
    server
        .args(["-c", HTTPS_SERVER, &port])
        .arg(d.join("releases"))
        .args([tls_file("server.pem"), tls_file("server.key")]);
    let server = Proc::spawn(server);
    server.expect_line("serving", T);
    let url = format!("https://localhost:{port}/app");
    let api_url = format!("https://localhost:{port}/api/v3");
    let source: &[&str] = if github {
        &[
            "--fetch-github",
            "acme/app",
            "--github-api-url",
            &api_url,
            "--asset",
            "app",
        ]
    } else {
        &["--fetch-url", &url]
    };
    let ca = tls_file("ca.pem");
    let mut cmd = overseer(&["--listen", "127.0.0.1:0", "--ready", "notify"]);
    cmd.args(source)
        .args(["--ca-file", &ca, "--fetch-interval", "100ms", "--"])
        .arg(&app)
        .env("WORKER_READY", "notify")
        .env_remove("GITHUB_TOKEN");
    expect_upgrade_to_version_2(cmd, &app);
    drop(server);
}

/// Publishes a file as a blob in Azurite through the Blob REST API, signed
/// with the development account's key (Python's standard library only):
/// creates the container `releases`, then puts the blob `app`.
const AZURITE_PUBLISH: &str = r#"
import base64, email.utils, hashlib, hmac, sys, urllib.request
port, path = sys.argv[1:3]
account = "devstoreaccount1"
key = base64.b64decode(sys.argv[3])
def put(resource, query, body, headers):
    h = {"x-ms-date": email.utils.formatdate(usegmt=True), "x-ms-version": "2021-08-06",
         "Content-Type": "application/octet-stream", **headers}
    ms = "".join(f"{k}:{v}\n" for k, v in sorted(h.items()) if k.startswith("x-ms-"))
    canonical = f"/{account}/{account}/{resource}" + "".join(f"\n{k}:{v}" for k, v in sorted(query.items()))
    length = str(len(body)) if body else ""
    to_sign = f"PUT\n\n\n{length}\n\napplication/octet-stream\n\n\n\n\n\n\n{ms}{canonical}"
    signature = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest()).decode()
    h["Authorization"] = f"SharedKey {account}:{signature}"
    query_string = "&".join(f"{k}={v}" for k, v in query.items())
    url = f"http://127.0.0.1:{port}/{account}/{resource}" + (f"?{query_string}" if query_string else "")
    urllib.request.urlopen(urllib.request.Request(url, data=body, method="PUT", headers=h)).read()
put("releases", {"restype": "container"}, b"", {})
put("releases/app", {}, open(path, "rb").read(), {"x-ms-blob-type": "BlockBlob"})
print("published")
"#;

/// Azurite's development account key (public, the same everywhere).
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// `overseer run --fetch-azure` takes a release from Azurite (Microsoft's
/// Azure Storage emulator, `npm install -g azurite`), with the account key
/// from the environment; skipped only with OVERSEER_SKIP_AZURE=1.
#[test]
fn upgrade_from_an_azure_blob() {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("azurite-blob"))
            .find(|p| p.is_file())
    });
    let Some(azurite) = found else {
        if std::env::var("OVERSEER_SKIP_AZURE").as_deref() == Ok("1") {
            return;
        }
        panic!("this test needs azurite-blob: npm install -g azurite@3.37.0 (or OVERSEER_SKIP_AZURE=1)");
    };
    require_python();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let app = d.join("app");
    write_worker(&app, "1");
    write_worker(&d.join("release"), "2");
    let port = free_port().to_string();
    let mut server = Command::new(azurite);
    server
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port, "--location"])
        .arg(d.join("azurite"))
        .args(["--skipApiVersionCheck"]);
    let server = Proc::spawn(server);
    server.expect_line("successfully listens", T);
    let publish = Command::new("python3")
        .args(["-c", AZURITE_PUBLISH, &port])
        .arg(d.join("release"))
        .arg(AZURITE_KEY)
        .output()
        .expect("python3");
    assert!(publish.status.success(), "publishing: {publish:?}");

    let endpoint = format!("http://127.0.0.1:{port}/devstoreaccount1");
    let mut cmd = overseer(&[
        "--listen",
        "127.0.0.1:0",
        "--ready",
        "notify",
        "--fetch-azure",
        "az://devstoreaccount1/releases/app",
        "--azure-endpoint",
        &endpoint,
        "--fetch-interval",
        "100ms",
        "--",
    ]);
    cmd.arg(&app)
        .env("WORKER_READY", "notify")
        .env("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY);
    expect_upgrade_to_version_2(cmd, &app);
    drop(server);
}

/// A temporary directory with worker version 1 at `app` and version 2 at
/// `release`, and a GCS-shaped server for the bucket `acme-releases` that
/// trusts a service account made for it, whose key (JSON) comes back too.
fn gcs_workspace() -> (tempfile::TempDir, String, gcs::GcsServer) {
    require_python();
    let dir = tempfile::tempdir().expect("tempdir");
    write_worker(&dir.path().join("app"), "1");
    write_worker(&dir.path().join("release"), "2");
    let account = gcs::ServiceAccount::generate("deployer");
    let key = account.key_json.clone();
    let server = gcs::GcsServer::start("acme-releases", account);
    (dir, key, server)
}

/// `overseer run --fetch-gcs` takes a release from a server on loopback
/// that speaks GCS's XML API and verifies every request's token, signed by
/// the service account key given in GOOGLE_SERVICE_ACCOUNT_KEY.
#[test]
fn upgrade_from_a_gcs_object() {
    let (dir, key, server) = gcs_workspace();
    let d = dir.path();
    let app = d.join("app");
    let release = std::fs::read(d.join("release")).expect("the release");
    server.put("myapp/app", &release, Some("2"));

    let endpoint = server.endpoint();
    let mut cmd = overseer(&[
        "--listen",
        "127.0.0.1:0",
        "--ready",
        "notify",
        "--fetch-gcs",
        "gs://acme-releases/myapp/app",
        "--gcs-endpoint",
        &endpoint,
        "--fetch-interval",
        "100ms",
        "--",
    ]);
    cmd.arg(&app)
        .env("WORKER_READY", "notify")
        .env("GOOGLE_SERVICE_ACCOUNT_KEY", key);
    expect_upgrade_to_version_2(cmd, &app);
    let hits = server.hits();
    assert!(hits
        .iter()
        .any(|h| h.status == 200 && h.object == "myapp/app"));
    assert!(hits.iter().all(|h| h.status != 401), "{hits:?}");
}

/// With --allow-http a release server over plain http on a host that is not
/// loopback is used (`0.0.0.0`: not loopback by the rule, yet local on
/// Linux, so nothing leaves the machine). Without --public-key the master
/// says once, at start, that releases are not verified.
#[test]
fn allow_http_takes_a_plain_http_source_on_a_host_that_is_not_loopback() {
    require_python();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let app = d.join("app");
    write_worker(&app, "1");
    write_worker(&d.join("release"), "2");
    let server = ReleaseServer::start();
    server.publish(
        "app",
        std::fs::read(d.join("release")).expect("the release"),
    );
    let url = format!("http://0.0.0.0:{}/app", server.addr.port());
    let mut cmd = overseer(&[
        "--listen",
        "127.0.0.1:0",
        "--ready",
        "notify",
        "--fetch-url",
        &url,
        "--allow-http",
        "--fetch-interval",
        "100ms",
        "--",
    ]);
    cmd.arg(&app).env("WORKER_READY", "notify");
    let p = Proc::spawn(cmd);
    let addr = p.listen_addr();
    expect_field(addr, "version", "2");
    let warning = "releases are not verified by signature";
    let line = p.expect_line(warning, T);
    assert!(line.contains("--public-key"), "{line}");
    assert_eq!(p.count(warning), 1);
    stop(p);
}

/// The release source's credentials (the service account key in
/// GOOGLE_SERVICE_ACCOUNT_KEY, read by --fetch-gcs) reach neither the
/// workers, nor the readiness probe, nor the sanity check of a new release;
/// the master names them once (never their values).
#[test]
fn the_release_sources_credentials_reach_neither_workers_probes_nor_the_sanity_check() {
    let (dir, key, server) = gcs_workspace();
    let d = dir.path();
    let app = d.join("app");

    let probe_env = d.join("probe-env");
    let check_env = d.join("check-env");
    let probe = format!("cmd=sh -c 'env > {}'", probe_env.display());
    let sanity = format!("args=--env-names-to {}", check_env.display());
    let endpoint = server.endpoint();
    let mut cmd = overseer(&[
        "--listen",
        "127.0.0.1:0",
        "--ready",
        &probe,
        "--fetch-gcs",
        "gs://acme-releases/myapp/app",
        "--gcs-endpoint",
        &endpoint,
        "--fetch-interval",
        "100ms",
        "--sanity-check",
        &sanity,
        "--pass-env",
        "GOOGLE_CLOUD_PROJECT",
        "--",
    ]);
    cmd.arg(&app)
        .env("GOOGLE_SERVICE_ACCOUNT_KEY", &key)
        .env("GOOGLE_CLOUD_PROJECT", "acme-prod")
        .env("AWS_SECRET_ACCESS_KEY", "not-read-by-this-fetcher");
    let p = Proc::spawn(cmd);
    let addr = p.listen_addr();
    p.expect_line("worker 1 ready", T);
    // Ready by a probe that passes at once: the worker may not have
    // executed its program yet (its environment is the master's until then,
    // and empty during the exec). Once it answers, it has.
    expect_field(addr, "version", "1");
    let worker = env_names(p.worker_pid(1, T));
    assert!(
        worker.contains(&"AWS_SECRET_ACCESS_KEY".to_string()),
        "{worker:?}"
    );
    assert!(!worker.contains(&"GOOGLE_SERVICE_ACCOUNT_KEY".to_string()));
    assert!(
        worker.contains(&"GOOGLE_CLOUD_PROJECT".to_string()),
        "{worker:?}"
    );
    let line = p.expect_line("withheld", T);
    assert!(
        line.contains("GOOGLE_SERVICE_ACCOUNT_KEY") && !line.contains("GOOGLE_CLOUD_PROJECT"),
        "{line}"
    );
    let probed = std::fs::read_to_string(&probe_env).expect("the probe's environment");
    assert!(probed.contains("OVERSEER_WORKER_PID="), "{probed}");
    assert!(!probed.contains("GOOGLE_SERVICE_ACCOUNT_KEY"), "{probed}");
    assert!(
        probed.contains("GOOGLE_CLOUD_PROJECT=acme-prod"),
        "{probed}"
    );

    let release = std::fs::read(d.join("release")).expect("the release");
    server.put("myapp/app", &release, Some("2"));
    expect_field(addr, "version", "2");
    let checked = std::fs::read_to_string(&check_env).expect("the sanity check's environment");
    assert!(checked.lines().any(|l| l == "PATH"), "{checked}");
    assert!(!checked.contains("GOOGLE_SERVICE_ACCOUNT_KEY"), "{checked}");
    assert!(
        checked.lines().any(|l| l == "GOOGLE_CLOUD_PROJECT"),
        "{checked}"
    );
    let worker = env_names(p.worker_pid(2, T));
    assert!(
        !worker.contains(&"GOOGLE_SERVICE_ACCOUNT_KEY".to_string()),
        "{worker:?}"
    );
    assert!(key.contains("PRIVATE KEY"));
    let output = p.output();
    assert!(
        !output.iter().any(|l| l.contains("PRIVATE KEY")),
        "a value was logged"
    );
    stop(p);
}

/// On a terminal a download draws a progress bar instead of the plain
/// progress lines (which the test above reads off a pipe).
#[test]
fn a_download_on_a_terminal_draws_a_progress_bar() {
    use std::io::{Read, Write};
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};
    require_python();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let app = d.join("app");
    write_worker(&app, "1");
    // A release big enough to take a while: the worker padded with comments.
    let release = d.join("release");
    write_worker(&release, "2");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&release)
        .expect("open the release");
    let line = format!("#{}\n", "x".repeat(1023));
    for _ in 0..64 * 1024 {
        f.write_all(line.as_bytes()).expect("pad the release");
    }
    drop(f);
    let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
    let release = release.to_string_lossy().into_owned();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut cmd = overseer(&["--listen", &listen, "--fetch-file", &release, "--"]);
    cmd.arg(&app)
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(pty.slave))
        .process_group(0);
    let mut child = cmd.spawn().expect("start overseer");
    // Only the master and its workers hold the terminal now: reading ends
    // when they are gone.
    drop(cmd);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let seen = seen.clone();
        let mut terminal = std::fs::File::from(pty.master);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = terminal.read(&mut buf) {
                seen.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        })
    };
    let text = || String::from_utf8_lossy(&seen.lock().expect("lock")).into_owned();
    let deadline = Instant::now() + T;
    while !text().contains("downloaded 64.") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
    let _ = reader.join();
    let out = text();
    assert!(out.contains("downloaded 64."), "no end of download: {out}");
    assert!(out.contains("downloading ["), "no progress bar: {out}");
    assert!(out.contains("B/64."), "no total in the bar: {out}");
    assert!(
        !out.contains("download started"),
        "plain lines on a terminal: {out}"
    );
}

/// `overseer ARGS` (restart, status) with the same runtime directory.
fn client(runtime: &Path, args: &[&str]) -> std::process::Output {
    Command::new(OVERSEER)
        .args(args)
        .env("XDG_RUNTIME_DIR", runtime)
        .output()
        .expect("run overseer")
}

#[test]
fn restart_and_status_report_the_real_outcome_over_the_control_socket() {
    let runtime = tempfile::tempdir().expect("tempdir");
    let probes = tempfile::tempdir().expect("tempdir");
    // Workers 1 and 2 pass the readiness probe; worker 3 never does.
    for n in [1, 2] {
        std::fs::write(probes.path().join(format!("{n}.ok")), b"").expect("write");
    }
    let probe = format!("cmd=test -e '{}/{{worker}}.ok'", probes.path().display());
    let runtime_s = runtime.path().to_string_lossy().into_owned();
    let (p, addr) = start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--name",
            "web",
            "--ready",
            &probe,
            "--ready-timeout",
            "1500ms",
            "--app-version",
            "1.2.3",
        ],
        &[("XDG_RUNTIME_DIR", &runtime_s)],
    );
    let pid1 = worker_pid(&p, 1);

    // The only master in the directory is found without --name.
    let out = client(runtime.path(), &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains(&format!("pid {}", p.pid)), "{text}");
    assert!(text.contains("1.2.3"), "{text}");
    assert!(text.contains(&format!("worker 1 (pid {pid1}")), "{text}");

    // A handover that succeeds: exit 0, the new worker's pid, which serves.
    let out = client(runtime.path(), &["restart", "--name", "web"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let pid2 = worker_pid(&p, 2);
    assert!(
        said.contains(&format!("worker 2 (pid {pid2}) is serving")),
        "{said}"
    );
    expect_field(addr, "pid", &pid2);

    // One that fails: exit 1, the reason, and worker 2 still serving.
    let out = client(runtime.path(), &["restart", "--name", "web"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(said.contains("restart failed"), "{said}");
    assert!(said.contains("worker 3 was not ready within"), "{said}");
    assert_eq!(field(addr, "pid"), pid2);

    let out = client(runtime.path(), &["status", "--name", "web", "--raw"]);
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(raw.contains(&format!("serving=2 {pid2} ")), "{raw}");
    assert!(raw.contains("handovers=1\nfailed_handovers=1"), "{raw}");

    // No master by that name: exit 2 and what to do.
    let out = client(runtime.path(), &["restart", "--name", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no master answers on"), "{said}");
    stop(p);
    assert!(
        !runtime.path().join("overseer/web.sock").exists(),
        "the socket is removed when the master exits"
    );
}
