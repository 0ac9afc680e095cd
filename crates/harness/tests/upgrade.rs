//! Self-upgrade (docs/design.md, "Self-upgrade"): good releases are installed
//! and served with zero failed requests; every kind of bad release leaves the
//! binary on disk and the serving worker untouched (or restored), reported
//! once.
//!
//! Each test runs `upgrade-app` from its own temporary directory, polling a
//! real HTTP release server on loopback that publishes stamped, signed
//! copies of the same binary.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use overseer_harness::app::SANITY_CHILD_FILE;
use overseer_harness::proc::{alive, env_names, group_members, peak_rss_kb, send_signal, Proc};
use overseer_harness::release::{stamp, this_target, zstd_bomb, Keys, Mode, ReleaseServer};
use support::{expect_signals_only_to_the_signal_thread, get, load, T};

const APP: &str = env!("CARGO_BIN_EXE_upgrade-app");

/// A master under test with its release source.
struct Rig {
    dir: tempfile::TempDir,
    keys: Keys,
    server: ReleaseServer,
    proc: Proc,
    addr: std::net::SocketAddr,
    original: Vec<u8>,
}

impl Rig {
    fn start(env: &[(&str, &str)]) -> Rig {
        Rig::start_with(env, |cmd| cmd)
    }

    fn start_with(env: &[(&str, &str)], wrap: impl FnOnce(Command) -> Command) -> Rig {
        Rig::start_on(ReleaseServer::start(), env, wrap)
    }

    /// Starts a master polling `server` (at `UA_FETCH_URL` unless `env` sets
    /// another source).
    fn start_on(
        server: ReleaseServer,
        env: &[(&str, &str)],
        wrap: impl FnOnce(Command) -> Command,
    ) -> Rig {
        Rig::start_full(server, env, |_| {}, wrap)
    }

    /// Like [`Rig::start_with`], with `prepare` run on the binary's
    /// directory (the binary in it) before the master starts.
    fn start_prepared(
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Path),
        wrap: impl FnOnce(Command) -> Command,
    ) -> Rig {
        Rig::start_full(ReleaseServer::start(), env, prepare, wrap)
    }

    fn start_full(
        server: ReleaseServer,
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Path),
        wrap: impl FnOnce(Command) -> Command,
    ) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("app");
        stamp(Path::new(APP), &bin, "version=1.0.0").expect("install v1");
        let original = std::fs::read(&bin).expect("read v1");
        prepare(dir.path());
        let keys = Keys::generate();
        let mut cmd = wrap(Command::new(&bin));
        cmd.env("UA_FETCH_URL", server.url("app"))
            .env("UA_PUBKEYS", &keys.public)
            .env("UA_INTERVAL_MS", "100")
            .envs(env.iter().copied());
        let mut proc = Proc::spawn(cmd);
        if let Some(status) = proc.wait_exit(Duration::from_millis(300)) {
            panic!("the master ended at once: {status:?}: {:?}", proc.output());
        }
        let addr = proc.listen_addr();
        proc.expect_line("worker 1 ready", T);
        Rig {
            dir,
            keys,
            server,
            proc,
            addr,
            original,
        }
    }

    /// Starts a new master at the same binary, polling the same server (the
    /// last one must have exited).
    fn start_again(&mut self) {
        let mut cmd = Command::new(self.bin());
        cmd.env("UA_FETCH_URL", self.server.url("app"))
            .env("UA_PUBKEYS", &self.keys.public)
            .env("UA_INTERVAL_MS", "100");
        self.proc = Proc::spawn(cmd);
        self.addr = self.proc.listen_addr();
        self.proc.expect_line("worker 1 ready", T);
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("app")
    }

    /// A stamped copy of the app, as bytes.
    fn build(&self, fields: &str) -> Vec<u8> {
        let tmp = self.dir.path().join("build.tmp");
        stamp(Path::new(APP), &tmp, fields).expect("stamp");
        let bytes = std::fs::read(&tmp).expect("read build");
        let _ = std::fs::remove_file(&tmp);
        bytes
    }

    /// Publishes `bytes` signed for `version` (signature first, so a poll
    /// never sees the new binary with the old signature).
    fn publish_signed(&self, bytes: Vec<u8>, version: &str) {
        let sig = self.keys.sign(&bytes, version, &this_target());
        self.server.publish("app.minisig", sig.into_bytes());
        self.server.publish("app", bytes);
    }

    fn publish_version(&self, version: &str, extra: &str) {
        let bytes = self.build(&format!("version={version} {extra}"));
        self.publish_signed(bytes, version);
    }

    /// The version that answers `/`.
    fn serving_version(&self) -> String {
        get(self.addr, "/")
            .field("version")
            .unwrap_or("none")
            .to_string()
    }

    fn expect_version(&self, version: &str) {
        let deadline = Instant::now() + T;
        while Instant::now() < deadline {
            if self.serving_version() == version {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("version {version} never served");
    }

    /// Waits for a log line, then a few more polls, and checks it was
    /// reported exactly once; the binary on disk and worker 1 are untouched.
    fn expect_rejected_once(&self, needle: &str) {
        self.proc.expect_line(needle, T);
        // Ten more polls: the same release must not be reported again.
        std::thread::sleep(Duration::from_millis(1_000));
        assert_eq!(
            self.proc.count(needle),
            1,
            "reported more than once: {needle}"
        );
        self.expect_untouched();
    }

    /// `bytes` as `app` in a `.tar.gz` beside a README, packed by the tar tool.
    fn tar_gz(&self, bytes: &[u8]) -> Vec<u8> {
        let stage = self.dir.path().join("pack");
        std::fs::create_dir_all(&stage).expect("mkdir");
        std::fs::write(stage.join("app"), bytes).expect("write");
        std::fs::write(stage.join("README"), b"not the binary").expect("write");
        let archive = self.dir.path().join("app.tar.gz");
        let ok = Command::new("tar")
            .arg("czf")
            .arg(&archive)
            .arg("-C")
            .arg(&stage)
            .args(["app", "README"])
            .status()
            .expect("tar");
        assert!(ok.success());
        let packed = std::fs::read(&archive).expect("archive");
        std::fs::remove_dir_all(&stage).expect("rm pack");
        std::fs::remove_file(&archive).expect("rm archive");
        packed
    }

    fn expect_untouched(&self) {
        assert!(
            std::fs::read(self.bin()).expect("read binary") == self.original,
            "the binary on disk changed"
        );
        let r = get(self.addr, "/");
        assert_eq!(r.field("version"), Some("1.0.0"), "{}", r.body);
    }
}

#[test]
fn upgrades_under_load_with_zero_failures_and_a_slow_request_finishing() {
    let rig = Rig::start(&[]);
    let l1 = load(rig.addr, 3, true);
    let l2 = load(rig.addr, 2, false);
    rig.publish_version("2.0.0", "");
    rig.expect_version("2.0.0");
    rig.proc.expect_line("version 2.0.0 passed probation", T);
    // A slow request on version 2 spans the upgrade to version 3.
    let addr = rig.addr;
    let slow = std::thread::spawn(move || get(addr, "/slow?ms=1500"));
    rig.proc.expect_line("slow request started", T);
    rig.publish_version("3.0.0", "");
    rig.expect_version("3.0.0");
    let slow = slow.join().expect("slow request");
    assert_eq!(slow.field("version"), Some("2.0.0"), "{}", slow.body);
    rig.proc.expect_line("version 3.0.0 passed probation", T);
    let (s1, s2) = (l1.stop(), l2.stop());
    for s in [&s1, &s2] {
        assert!(
            s.failures.is_empty(),
            "failed requests: {:?}",
            s.failure_kinds()
        );
        assert!(s.ok > 0);
    }
    assert_eq!(rig.serving_version(), "3.0.0");
    let installed = std::fs::read(rig.bin()).expect("read");
    assert!(installed != rig.original);
    assert!(rig.proc.count("rolled back") == 0 && rig.proc.count("rejected") == 0);
    // The fetch, staging and sanity-check threads (and the HTTP client's)
    // leave the master's signals to its signal thread too: looked at once
    // the master re-executed after 3.0.0 passed its probation (asked for by
    // 3.0.0, or by 2.0.0 when that request was still waiting, 3.0.0 having
    // been installed during its check) and every re-exec started is over,
    // not while a new image is still setting up its threads.
    let deadline = Instant::now() + T;
    let reexec_after_3 = || {
        let out = rig.proc.output();
        let passed = out
            .iter()
            .position(|l| l.contains("version 3.0.0 passed probation"));
        let last = out
            .iter()
            .rposition(|l| l.contains("re-executing the master: "));
        passed.zip(last).is_some_and(|(p, r)| r > p)
    };
    while !reexec_after_3()
        || rig.proc.count("master re-executed in") < rig.proc.count("re-executing the master: ")
    {
        assert!(Instant::now() < deadline, "{:?}", rig.proc.output());
        std::thread::sleep(Duration::from_millis(10));
    }
    let worker = rig.proc.worker_pid(3, T);
    expect_signals_only_to_the_signal_thread(rig.proc.pid, worker);
}

#[test]
fn truncated_download_is_refused() {
    let rig = Rig::start(&[]);
    rig.server.set_mode(Mode::Truncate);
    rig.publish_version("2.0.0", "");
    rig.expect_rejected_once("download truncated");
}

#[test]
fn wrong_checksum_is_refused() {
    let rig = Rig::start(&[]);
    rig.server.publish(
        "app.sha256",
        format!("{}  app\n", "0".repeat(64)).into_bytes(),
    );
    rig.publish_version("2.0.0", "");
    rig.expect_rejected_once("checksum mismatch");
}

#[test]
fn missing_signature_is_refused() {
    let rig = Rig::start(&[]);
    rig.server.publish("app", rig.build("version=2.0.0"));
    rig.expect_rejected_once("is not signed");
}

#[test]
fn bad_signature_is_refused() {
    let rig = Rig::start(&[]);
    let other = rig.build("version=2.0.0 other=1");
    let sig = rig.keys.sign(&other, "2.0.0", &this_target());
    rig.server.publish("app.minisig", sig.into_bytes());
    rig.server.publish("app", rig.build("version=2.0.0"));
    rig.expect_rejected_once("bad signature");
}

#[test]
fn signature_by_an_unknown_key_is_refused() {
    let rig = Rig::start(&[]);
    let stranger = Keys::generate();
    let bytes = rig.build("version=2.0.0");
    let sig = stranger.sign(&bytes, "2.0.0", &this_target());
    rig.server.publish("app.minisig", sig.into_bytes());
    rig.server.publish("app", bytes);
    rig.expect_rejected_once("unknown key");
}

#[test]
fn validly_signed_older_version_is_refused() {
    let rig = Rig::start(&[]);
    rig.publish_version("0.9.0", "");
    rig.expect_rejected_once("signed version 0.9.0 is not newer than 1.0.0");
}

#[test]
fn build_for_another_cpu_is_refused() {
    let rig = Rig::start(&[]);
    let mut bytes = rig.build("version=2.0.0");
    // ELF e_machine (offset 18, little-endian): pretend to be another CPU.
    let foreign: u16 = if cfg!(target_arch = "aarch64") {
        62
    } else {
        183
    };
    bytes[18..20].copy_from_slice(&foreign.to_le_bytes());
    rig.publish_signed(bytes, "2.0.0");
    rig.expect_rejected_once("built for");
}

#[test]
fn program_that_is_not_an_overseer_binary_is_refused() {
    let rig = Rig::start(&[]);
    let bytes = std::fs::read("/bin/true").expect("/bin/true");
    rig.publish_signed(bytes, "2.0.0");
    rig.expect_rejected_once("sanity check");
}

/// The processes of a misbehaving sanity check, as it wrote them down: its
/// own pid and process group, and its child's pid. Both are SIGKILLed by pid
/// when this is dropped, whatever the test's outcome.
struct SanityProcs {
    pid: i32,
    pgid: i32,
    child: i32,
}

impl SanityProcs {
    /// Waits (bounded) for the file the check writes beside the binary.
    fn read(dir: &Path) -> SanityProcs {
        let path = dir.join(SANITY_CHILD_FILE);
        let deadline = Instant::now() + T;
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                let n: Vec<i32> = text
                    .split_whitespace()
                    .map(|v| v.parse().expect("a pid"))
                    .collect();
                return SanityProcs {
                    pid: n[0],
                    pgid: n[1],
                    child: n[2],
                };
            }
            assert!(
                Instant::now() < deadline,
                "the sanity check never wrote {}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SanityProcs {
    fn drop(&mut self) {
        for pid in [self.child, self.pid] {
            if alive(pid) {
                send_signal(pid, nix::libc::SIGKILL);
            }
        }
    }
}

/// A release whose sanity check starts a child that keeps the check's output
/// open is refused (with `needle`), and neither the check nor its child is
/// left running: they ran in a process group of their own, killed whole.
fn sanity_check_with_a_child_holding_its_output(how: &str, needle: &str) {
    let rig = Rig::start(&[("UA_SANITY_TIMEOUT_MS", "2000")]);
    rig.publish_version("2.0.0", &format!("sanity_child={how}"));
    let procs = SanityProcs::read(rig.dir.path());
    rig.expect_rejected_once(needle);
    assert_eq!(
        procs.pgid, procs.pid,
        "the sanity check runs in a process group of its own"
    );
    let deadline = Instant::now() + T;
    while !group_members(procs.pgid).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        group_members(procs.pgid),
        Vec::<i32>::new(),
        "processes of the sanity check's group still run"
    );
    assert!(
        !alive(procs.child),
        "the check's child {} runs",
        procs.child
    );
    assert!(!alive(procs.pid), "the check {} runs", procs.pid);
    // The upgrade thread is free: a good release after it is installed.
    rig.publish_version("3.0.0", "");
    rig.expect_version("3.0.0");
}

#[test]
fn sanity_check_that_hangs_with_a_child_holding_its_output_is_ended_at_the_timeout() {
    sanity_check_with_a_child_holding_its_output("hang", "did not finish within 2s");
}

#[test]
fn sanity_check_that_exits_leaving_a_child_holding_its_output_is_refused() {
    sanity_check_with_a_child_holding_its_output("exit", "kept its output open");
}

#[test]
fn sanity_check_dies_with_a_master_killed_outright() {
    let mut rig = Rig::start(&[("UA_SANITY_TIMEOUT_MS", "60000")]);
    rig.publish_version("2.0.0", "sanity_child=hang");
    let procs = SanityProcs::read(rig.dir.path());
    assert!(alive(procs.pid), "the sanity check is running");
    // The master's whole group, as a terminal or a test would: the check is
    // not in it, but dies by the parent-death signal.
    send_signal(-rig.proc.pid, nix::libc::SIGKILL);
    rig.proc.expect_exit(T);
    let deadline = Instant::now() + T;
    while alive(procs.pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(procs.pid), "the sanity check outlived its master");
}

#[test]
fn release_vetoed_by_pre_upgrade_is_refused_and_a_later_one_installed() {
    let rig = Rig::start(&[("UA_VETO", "embargoed")]);
    rig.publish_version("2.0.0", "embargoed=1");
    rig.expect_rejected_once("vetoed by pre_upgrade: the build is marked embargoed");
    // The veto is about that release only: the next one goes through.
    rig.publish_version("3.0.0", "");
    rig.expect_version("3.0.0");
    rig.proc.expect_line("installed version 3.0.0", T);
}

#[test]
fn build_that_crashes_at_start_is_rolled_back() {
    let rig = Rig::start(&[]);
    rig.publish_version("2.0.0", "exit_at_start=1");
    rig.expect_rejected_once("rolled back");
    rig.proc.expect_line(
        "worker 2 exited with exit status 7 before becoming ready",
        T,
    );
}

#[test]
fn build_that_never_becomes_ready_is_rolled_back() {
    let rig = Rig::start(&[("UA_READY_MS", "1500")]);
    rig.publish_version("2.0.0", "never_ready=1");
    rig.expect_rejected_once("rolled back");
    rig.proc.expect_line("was not ready within", T);
}

#[test]
fn build_that_crashes_within_probation_is_rolled_back_and_the_old_one_serves() {
    let rig = Rig::start(&[("UA_PROBATION_MS", "3000")]);
    rig.publish_version("2.0.0", "crash_after_ms=300");
    rig.proc.expect_line("rolled back", T);
    // A worker from the restored binary takes over.
    rig.proc.expect_line("worker 3 ready", T);
    rig.expect_rejected_once("rolled back");
    assert!(rig.proc.count("failed within the") == 1);
}

/// SIGINT, SIGHUP (forwarded by the master) or ^C (the whole process group)
/// while a release is on probation stop the service: the worker's exit is
/// not the release failing, so nothing is rolled back, the release stays
/// installed and is not remembered as bad, and no other worker starts.
#[test]
fn stop_signals_during_probation_stop_the_service_and_keep_the_release() {
    use nix::sys::signal::{killpg, Signal};
    use std::os::unix::process::ExitStatusExt;
    let cases = [
        (Signal::SIGINT, false),
        (Signal::SIGHUP, false),
        (Signal::SIGINT, true),
    ];
    for (signal, whole_group) in cases {
        let what = format!(
            "{signal} to the {}",
            if whole_group { "group" } else { "master" }
        );
        let mut rig = Rig::start(&[("UA_PROBATION_MS", "60000")]);
        let release = rig.build("version=2.0.0");
        rig.publish_signed(release.clone(), "2.0.0");
        rig.proc.expect_line("installed version 2.0.0", T);
        rig.expect_version("2.0.0");
        let pid = rig.proc.pid;
        if whole_group {
            killpg(nix::unistd::Pid::from_raw(pid), signal).expect("killpg");
        } else {
            rig.proc.signal(signal as i32);
        }
        let status = rig.proc.expect_exit(T);
        // The master ends as its worker did: by the same signal.
        assert_eq!(status.signal(), Some(signal as i32), "{what}: {status:?}");
        let log = rig.proc.output().join("\n");
        assert!(!log.contains("rolled back"), "{what}: {log}");
        assert!(!log.contains("worker 3 started"), "{what}: {log}");
        assert!(
            std::fs::read(rig.bin()).expect("read binary") == release,
            "{what}: the release is no longer installed"
        );
        let ledger =
            std::fs::read_to_string(rig.dir.path().join(".app.overseer-state")).unwrap_or_default();
        assert!(!ledger.contains("bad "), "{what}: {ledger}");
    }
}

#[test]
fn endless_stream_is_abandoned_at_the_size_cap() {
    let max = (std::fs::metadata(APP).expect("app").len() * 2).to_string();
    let rig = Rig::start(&[("UA_MAX_DOWNLOAD", &max)]);
    rig.server.set_mode(Mode::Endless);
    rig.publish_version("2.0.0", "");
    rig.expect_rejected_once("exceeds max_download_size");
}

#[test]
fn trickling_stream_is_abandoned_at_the_deadline() {
    let rig = Rig::start(&[("UA_DOWNLOAD_TIMEOUT_MS", "1000")]);
    rig.server.set_mode(Mode::Trickle);
    rig.publish_version("2.0.0", "");
    rig.proc.expect_line("download_timeout", T);
    // Passing failures are tried again, but reported only once while they repeat.
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(rig.proc.count("download_timeout"), 1);
    rig.expect_untouched();
    // Once the source answers properly, the same release (not published
    // again, its ETag unchanged) is installed at a later poll.
    rig.server.set_mode(Mode::Normal);
    rig.expect_version("2.0.0");
}

#[test]
fn changed_etag_with_identical_binary_changes_nothing() {
    let rig = Rig::start(&[]);
    rig.publish_signed(rig.original.clone(), "1.0.0");
    let deadline = Instant::now() + T;
    while rig.server.downloads("app") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    rig.server.touch("app");
    let seen = rig.server.downloads("app");
    while rig.server.downloads("app") == seen && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(rig.server.downloads("app") >= 2);
    assert_eq!(
        rig.proc.count("worker 2 started"),
        0,
        "restarted for an identical binary"
    );
    for word in ["rejected", "not installed", "rolled back"] {
        assert_eq!(rig.proc.count(word), 0, "{word}: {:?}", rig.proc.output());
    }
    rig.expect_untouched();
}

#[test]
fn read_only_binary_directory_is_reported_at_start() {
    // A read-only bind mount in a private mount namespace (the test runs as
    // root in CI, where permissions alone would not stop writes).
    let rig = Rig::start_with(&[], |cmd| {
        let bin = cmd.get_program().to_string_lossy().into_owned();
        let dir = Path::new(&bin)
            .parent()
            .expect("dir")
            .to_string_lossy()
            .into_owned();
        let mut wrapped = Command::new("unshare");
        wrapped.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            r#"mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && exec "$2""#,
            "sh",
            &dir,
            &bin,
        ]);
        wrapped
    });
    rig.proc
        .expect_line("upgrades are off: cannot write beside the binary", T);
    rig.publish_version("2.0.0", "");
    std::thread::sleep(Duration::from_millis(1_000));
    assert_eq!(rig.server.downloads("app"), 0);
    rig.expect_untouched();
}

#[test]
fn release_signed_with_the_minisign_tool_is_installed() {
    if Command::new("minisign").arg("-v").output().is_err() {
        assert!(
            std::env::var_os("OVERSEER_SKIP_MINISIGN").is_some(),
            "the minisign tool is missing: install it (apt-get install minisign) or set OVERSEER_SKIP_MINISIGN=1"
        );
        return;
    }
    let keys = tempfile::tempdir().expect("tempdir");
    let (pk, sk) = (keys.path().join("k.pub"), keys.path().join("k.key"));
    let ok = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&pk)
        .arg("-s")
        .arg(&sk)
        .output()
        .expect("minisign -G");
    assert!(ok.status.success(), "{ok:?}");
    let public = std::fs::read_to_string(&pk).expect("pub");
    // Trust the tool's key (the whole minisign.pub file is accepted).
    let rig = Rig::start(&[("UA_PUBKEYS", public.lines().nth(1).expect("key line"))]);
    let bytes = rig.build("version=2.0.0");
    let file = keys.path().join("app");
    std::fs::write(&file, &bytes).expect("write");
    let comment = format!("version:2.0.0 target:{}", this_target());
    let ok = Command::new("minisign")
        .arg("-S")
        .arg("-s")
        .arg(&sk)
        .arg("-m")
        .arg(&file)
        .args(["-t", &comment])
        .output()
        .expect("minisign -S");
    assert!(ok.status.success(), "{ok:?}");
    let sig = std::fs::read(keys.path().join("app.minisig")).expect("sig");
    rig.server.publish("app.minisig", sig);
    rig.server.publish("app", bytes);
    rig.expect_version("2.0.0");
    rig.proc.expect_line("version 2.0.0 passed probation", T);
}

#[test]
fn release_in_a_tar_gz_archive_is_unpacked_and_checked() {
    let rig = Rig::start(&[]);
    let bytes = rig.build("version=2.0.0");
    let packed = rig.tar_gz(&bytes);
    // Signed over the executable inside; the checksum names the archive.
    let sig = rig.keys.sign(&bytes, "2.0.0", &this_target());
    let sum = {
        use std::io::Write;
        let mut child = Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sha256sum");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&packed)
            .expect("pipe");
        String::from_utf8(child.wait_with_output().expect("sha256sum").stdout).expect("utf8")
    };
    rig.server.publish("app.sha256", sum.into_bytes());
    rig.server.publish("app.minisig", sig.into_bytes());
    rig.server.publish("app", packed);
    rig.expect_version("2.0.0");
    assert!(
        std::fs::read(rig.bin()).expect("read") == bytes,
        "the unpacked binary is installed"
    );
}

#[test]
fn zstd_declaring_a_64_gib_window_is_refused_in_bounded_memory_and_a_later_release_installed() {
    // The master in a 4 GiB address space: a decoder that trusted the
    // declared window would grow its buffer until an allocation failed.
    let rig = Rig::start_with(&[], |cmd| {
        let mut wrapped = Command::new("sh");
        wrapped
            .args(["-c", r#"ulimit -v 4194304 && exec "$0""#])
            .arg(cmd.get_program());
        wrapped
    });
    let before = peak_rss_kb(rig.proc.pid).expect("VmHWM");
    // 2 MiB on the wire, 64 GiB unpacked, signed by the trusted key over the
    // file as published: the signature passes, the decoder must refuse it.
    let bomb = zstd_bomb(36, (2 << 20) / 4 - 2);
    assert!(bomb.len() <= 2 << 20);
    rig.publish_signed(bomb, "2.0.0");
    rig.expect_rejected_once("declares a 64 GiB window");
    let peak = peak_rss_kb(rig.proc.pid).expect("VmHWM");
    assert!(
        peak < before + 64 * 1024,
        "the master's peak RSS grew from {before} kB to {peak} kB"
    );
    assert!(staging_files(rig.dir.path()).is_empty());
    // The upgrade thread is still polling: a good release goes in.
    rig.publish_version("3.0.0", "");
    rig.expect_version("3.0.0");
}

#[test]
fn a_forged_bomb_signed_by_an_unknown_key_is_refused_before_unpacking() {
    let rig = Rig::start(&[("UA_MAX_DOWNLOAD", &(64u64 << 20).to_string())]);
    // 64 GiB of zeros in 2 MiB, with a modest window: a decoder would run
    // until the unpacked size reached the cap.
    let bomb = zstd_bomb(20, (2 << 20) / 4 - 2);
    let stranger = Keys::generate();
    let sig = stranger.sign(&bomb, "2.0.0", &this_target());
    rig.server.publish("app.minisig", sig.into_bytes());
    rig.server.publish("app", bomb);
    rig.expect_rejected_once("signed by an unknown key");
    // No decoder ran: nothing was unpacked, or refused while unpacking.
    assert_eq!(rig.proc.count("unpack"), 0, "{:?}", rig.proc.output());
    assert!(staging_files(rig.dir.path()).is_empty());
}

#[test]
fn release_in_an_archive_signed_as_published_is_installed_and_found_again_quietly() {
    let rig = Rig::start(&[("UA_DEBUG", "1")]);
    let bytes = rig.build("version=2.0.0");
    // Signed over the archive itself: checked before it is unpacked.
    rig.publish_signed(rig.tar_gz(&bytes), "2.0.0");
    rig.expect_version("2.0.0");
    rig.proc.expect_line("version 2.0.0 passed probation", T);
    assert!(std::fs::read(rig.bin()).expect("read") == bytes);
    // The same archive under a new tag: the installed binary, skipped
    // quietly (its signed version is no downgrade to refuse).
    rig.server.touch("app");
    rig.proc
        .expect_line("same binary as the running one; nothing to do", T);
    for word in ["rejected", "not installed", "rolled back"] {
        assert_eq!(rig.proc.count(word), 0, "{word}: {:?}", rig.proc.output());
    }
}

#[test]
fn a_panic_in_the_pipeline_is_reported_once_and_a_later_release_installed() {
    let control = tempfile::tempdir().expect("tempdir");
    let socket = control.path().join("control.sock");
    let rig = Rig::start(&[
        ("UA_PANIC", "buggy"),
        ("UA_CONTROL", socket.to_str().expect("utf-8 path")),
    ]);
    rig.publish_version("2.0.0", "buggy=1");
    rig.expect_rejected_once("pipeline panicked");
    rig.proc.expect_line("pre_upgrade hook bug", T);
    // Reported to the supervisor like any rejection, the staged binary removed.
    let status = overseer::control::status(&socket, T).expect("status");
    let last = status.last_upgrade.unwrap_or_default();
    assert!(last.contains("panicked"), "{last}");
    assert!(staging_files(rig.dir.path()).is_empty());
    // Polling goes on: the next release is installed.
    rig.publish_version("3.0.0", "");
    rig.expect_version("3.0.0");
    rig.proc.expect_line("installed version 3.0.0", T);
}

#[test]
fn no_restart_after_fetch_installs_and_waits_for_the_next_restart() {
    let rig = Rig::start(&[("UA_NO_RESTART_AFTER_FETCH", "1")]);
    let bytes = rig.build("version=2.0.0");
    rig.publish_signed(bytes.clone(), "2.0.0");
    rig.proc.expect_line("it runs from the next restart", T);
    assert!(std::fs::read(rig.bin()).expect("read") == bytes);
    assert_eq!(rig.serving_version(), "1.0.0");
    rig.proc.signal(nix::libc::SIGUSR2);
    rig.expect_version("2.0.0");
}

#[test]
fn highest_version_seen_survives_a_restart_of_the_master() {
    let mut rig = Rig::start(&[]);
    rig.publish_version("3.0.0", "");
    rig.proc.expect_line("version 3.0.0 passed probation", T);
    rig.proc.signal(nix::libc::SIGTERM);
    rig.proc.expect_exit(T);
    // An operator puts the old build back and starts it again: a validly
    // signed 2.0.0 (older than the 3.0.0 seen) must still be refused.
    std::fs::write(rig.bin(), &rig.original).expect("reinstall v1");
    let server = std::mem::replace(&mut rig.server, ReleaseServer::start());
    drop(server);
    rig.start_again();
    rig.publish_version("2.0.0", "");
    rig.expect_rejected_once("signed version 2.0.0 is not newer than 3.0.0");
}

#[test]
fn a_restarted_master_does_not_download_the_installed_release_again() {
    let mut rig = Rig::start(&[]);
    rig.publish_signed(rig.original.clone(), "1.0.0");
    // Found identical to the installed binary, once; a few more polls are
    // conditional (304) and download nothing.
    wait_installed_recorded(rig.dir.path());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rig.server.downloads("app"), 1);
    rig.proc.signal(nix::libc::SIGTERM);
    rig.proc.expect_exit(T);

    let polls = |rig: &Rig, n: usize| {
        let seen = rig
            .server
            .requests
            .load(std::sync::atomic::Ordering::Relaxed);
        let deadline = Instant::now() + T;
        while rig
            .server
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
            < seen + n
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // Restarted, the master knows the release by its ETag: no download.
    rig.start_again();
    polls(&rig, 5);
    assert_eq!(
        rig.server.downloads("app"),
        1,
        "downloaded again: {:?}",
        rig.proc.output()
    );
    rig.expect_untouched();
    rig.proc.signal(nix::libc::SIGTERM);
    rig.proc.expect_exit(T);

    // A binary put in place by other means is not that release any more:
    // the next master downloads the release to compare.
    let other = rig.build("version=1.0.0 other=1");
    std::fs::write(rig.bin(), &other).expect("install another build");
    rig.start_again();
    polls(&rig, 5);
    assert_eq!(rig.server.downloads("app"), 2, "{:?}", rig.proc.output());
    // Still refused (not newer) and the new binary is left alone.
    rig.proc.expect_line("is not newer than 1.0.0", T);
    assert!(std::fs::read(rig.bin()).expect("read binary") == other);

    // A new release is still found and installed.
    rig.publish_version("2.0.0", "");
    rig.expect_version("2.0.0");
}

#[test]
fn a_restarted_master_skips_the_installed_release_without_reading_it() {
    // The file fetcher has no conditional request: the master itself knows
    // the release by its tag and does not read it.
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("app");
    stamp(Path::new(APP), &bin, "version=1.0.0").expect("install v1");
    let release = dir.path().join("release");
    std::fs::copy(&bin, &release).expect("publish the same build");
    let start = || {
        let mut cmd = Command::new(&bin);
        cmd.env("UA_FETCH_FILE", &release)
            .env("UA_INTERVAL_MS", "100")
            .env("UA_DEBUG", "1");
        let proc = Proc::spawn(cmd);
        proc.expect_line("worker 1 ready", T);
        proc
    };
    let mut first = start();
    first.expect_line("same binary as the running one", T);
    wait_installed_recorded(dir.path());
    assert_eq!(first.count("downloading release"), 1);
    assert_eq!(first.count("is the one installed; not downloaded"), 0);
    first.signal(nix::libc::SIGTERM);
    first.expect_exit(T);

    let mut second = start();
    second.expect_line("is the one installed; not downloaded", T);
    assert_eq!(
        second.count("downloading release"),
        0,
        "{:?}",
        second.output()
    );
    second.signal(nix::libc::SIGTERM);
    second.expect_exit(T);
}

/// Waits until the ledger beside the binary `app` in `dir` records which
/// release is installed (written after the comparison, which for a large
/// debug binary takes a while).
fn wait_installed_recorded(dir: &Path) {
    let ledger = dir.join(".app.overseer-state");
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(&ledger).unwrap_or_default();
        if text.lines().any(|l| l.starts_with("installed ")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} never recorded the installed release", ledger.display());
}

/// The warning a master logs at start when releases are not verified.
const UNSIGNED: &str = "releases are not verified by signature";

#[test]
fn without_a_public_key_the_master_warns_once_at_start() {
    let rig = Rig::start(&[("UA_PUBKEYS", "")]);
    let line = rig.proc.expect_line(UNSIGNED, T);
    assert!(line.contains("public_key"), "{line}");
    // Polls come and go; the warning is not repeated.
    std::thread::sleep(Duration::from_millis(1_000));
    assert_eq!(rig.proc.count(UNSIGNED), 1);
    // With a key there is nothing to warn about.
    let signed = Rig::start(&[]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(signed.proc.count(UNSIGNED), 0, "{:?}", signed.proc.output());
}

/// Plain http to a host that is not loopback is refused at start, naming the
/// opt-in, before a request is sent; the binary and the serving worker are
/// untouched. With the opt-in (`Http::allow_http`) the same URL serves the
/// upgrade. The host is `0.0.0.0`: not loopback by the rule (`127.0.0.0/8`,
/// `[::1]`, `localhost`), yet Linux connects to it locally, so the release
/// server counts whatever reaches it and no packet leaves the machine.
#[test]
fn plain_http_to_a_host_that_is_not_loopback_needs_consent() {
    let server = ReleaseServer::start();
    let far = format!("http://0.0.0.0:{}/app", server.addr.port());
    let rig = Rig::start_on(server, &[("UA_FETCH_URL", &far)], |cmd| cmd);
    let worker = rig.proc.worker_pid(1, T);
    rig.publish_version("2.0.0", "");
    rig.expect_rejected_once("allow_http");
    let line = rig.proc.expect_line("allow_http", T);
    assert!(line.contains("plain http") && line.contains(&far), "{line}");
    assert_eq!(
        rig.server
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a request reached the release server"
    );
    let pid = get(rig.addr, "/").field("pid").map(str::to_string);
    assert_eq!(pid, Some(worker.to_string()), "worker 1 no longer serves");
    drop(rig);

    let server = ReleaseServer::start();
    let far = format!("http://0.0.0.0:{}/app", server.addr.port());
    let env = [("UA_FETCH_URL", far.as_str()), ("UA_ALLOW_HTTP", "1")];
    let rig = Rig::start_on(server, &env, |cmd| cmd);
    rig.publish_version("2.0.0", "");
    rig.expect_version("2.0.0");
    assert_eq!(rig.proc.count("allow_http"), 0);
}

/// Publishes `version` as the latest GitHub release of acme/app on the
/// release server (the assets first, the release JSON last).
fn publish_github(rig: &Rig, version: &str, id: u64) {
    let bytes = rig.build(&format!("version={version}"));
    let sig = rig.keys.sign(&bytes, version, &this_target());
    rig.server.publish("app.minisig", sig.into_bytes());
    rig.server.publish("app", bytes);
    let asset = |id: u64, name: &str| {
        let url = rig.server.url(name);
        format!(
            r#"{{"id": {id}, "name": "{name}", "url": "{url}", "browser_download_url": "{url}",
                "updated_at": "2026-01-0{id}T00:00:00Z", "state": "uploaded"}}"#
        )
    };
    let json = format!(
        r#"{{"tag_name": "v{version}", "draft": false, "assets": [{}, {}]}}"#,
        asset(id, "app"),
        asset(id + 1, "app.minisig")
    );
    rig.server
        .publish("repos/acme/app/releases/latest", json.into_bytes());
}

/// The GitHub fetcher reads its token from `GITHUB_TOKEN`: the master keeps
/// it (and `GH_TOKEN`) from its workers and from the sanity check of a new
/// release, says so once by name (never the value), and passes what
/// `pass_env` names. Variables the fetcher does not read (`AWS_*` here)
/// reach the workers as before.
#[test]
fn the_release_sources_credentials_reach_neither_workers_nor_the_sanity_check() {
    let server = ReleaseServer::start();
    let api = server.url("").trim_end_matches('/').to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let check_env = dir.path().join("check-env");
    let check_env_s = check_env.to_string_lossy().into_owned();
    let env = [
        ("UA_FETCH_GITHUB", "acme/app"),
        ("UA_GITHUB_API", api.as_str()),
        ("GITHUB_TOKEN", "ghp-s3cr3t-token"),
        ("GH_TOKEN", "gh-passed-on-purpose"),
        ("UA_PASS_ENV", "GH_TOKEN"),
        ("AWS_SECRET_ACCESS_KEY", "not-read-by-this-fetcher"),
        ("UA_CHECK_ENV", check_env_s.as_str()),
    ];
    let rig = Rig::start_on(server, &env, |cmd| cmd);
    let worker = env_names(rig.proc.worker_pid(1, T));
    assert!(!worker.contains(&"GITHUB_TOKEN".to_string()), "{worker:?}");
    assert!(worker.contains(&"GH_TOKEN".to_string()), "{worker:?}");
    assert!(worker.contains(&"AWS_SECRET_ACCESS_KEY".to_string()));
    let line = rig.proc.expect_line("withheld", T);
    assert!(
        line.contains("GITHUB_TOKEN") && !line.contains("GH_TOKEN"),
        "{line}"
    );

    publish_github(&rig, "2.0.0", 1);
    rig.expect_version("2.0.0");
    let checked = std::fs::read_to_string(&check_env).expect("the sanity check's environment");
    let checked: Vec<&str> = checked.lines().collect();
    assert!(checked.contains(&"OVERSEER_BIN_CHECK"), "{checked:?}");
    assert!(!checked.contains(&"GITHUB_TOKEN"), "{checked:?}");
    assert!(checked.contains(&"GH_TOKEN"), "{checked:?}");
    let worker = env_names(rig.proc.worker_pid(2, T));
    assert!(!worker.contains(&"GITHUB_TOKEN".to_string()), "{worker:?}");
    assert!(worker.contains(&"GH_TOKEN".to_string()), "{worker:?}");

    assert_eq!(rig.proc.count("withheld"), 1);
    let output = rig.proc.output();
    assert!(
        !output.iter().any(|l| l.contains("s3cr3t")),
        "a value was logged"
    );
}

/// The ledger beside the binary `app`.
const LEDGER: &str = ".app.overseer-state";

/// A ledger the master cannot use (made so by `spoil`, given its path)
/// stops upgrades with one clear error naming `needle`: the binary and the
/// serving worker stay as they are, and a validly signed 2.0.0 — older than
/// the floor of 3.0.0 the ledger holds — is neither downloaded nor
/// installed. Once the ledger is repaired, its floor holds.
fn unusable_ledger_stops_upgrades(spoil: impl FnOnce(&Path), needle: &str) {
    let rig = Rig::start_prepared(&[], |dir| spoil(&dir.join(LEDGER)), |cmd| cmd);
    rig.publish_version("2.0.0", "");
    rig.expect_rejected_once(needle);
    rig.proc.expect_line("upgrades are paused", T);
    assert_eq!(rig.server.downloads("app"), 0, "{:?}", rig.proc.output());

    let ledger = rig.dir.path().join(LEDGER);
    let _ = std::fs::remove_dir(&ledger);
    let _ = std::fs::remove_file(&ledger);
    std::fs::write(&ledger, "highest-version 3.0.0\n").expect("repair the ledger");
    rig.expect_rejected_once("signed version 2.0.0 is not newer than 3.0.0");
    assert_eq!(rig.proc.count(needle), 1);
}

#[test]
fn a_ledger_with_a_byte_that_is_not_utf8_stops_upgrades() {
    unusable_ledger_stops_upgrades(
        |ledger| {
            std::fs::write(ledger, b"highest-version 3.0.0\n# caf\xe9\n").expect("write ledger")
        },
        "cannot be read: line 2: not valid UTF-8",
    );
}

#[test]
fn a_ledger_in_the_shape_of_a_directory_stops_upgrades() {
    unusable_ledger_stops_upgrades(
        |ledger| std::fs::create_dir(ledger).expect("mkdir"),
        "cannot be read: not a regular file",
    );
}

#[test]
fn a_ledger_the_master_may_not_read_stops_upgrades() {
    // EACCES for real: a ledger of mode 000. Root reads it all the same, so
    // as root the master runs as `nobody`, in a directory it owns (the
    // ledger stays root's).
    let root = nix::unistd::geteuid().is_root();
    const NOBODY: u32 = 65_534;
    let prepare = |dir: &Path| {
        let ledger = dir.join(LEDGER);
        std::fs::write(&ledger, "highest-version 3.0.0\n").expect("write ledger");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ledger, std::fs::Permissions::from_mode(0o000)).expect("chmod");
        if root {
            let run = dir.join("run");
            std::fs::create_dir(&run).expect("mkdir run");
            for p in [dir, &dir.join("app"), &run] {
                std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).expect("chown");
            }
        }
    };
    let rig = Rig::start_prepared(&[], prepare, |mut cmd| {
        if root {
            use std::os::unix::process::CommandExt;
            let dir = Path::new(cmd.get_program())
                .parent()
                .expect("dir")
                .to_path_buf();
            cmd.uid(NOBODY)
                .gid(NOBODY)
                .env("XDG_RUNTIME_DIR", dir.join("run"));
        }
        cmd
    });
    rig.publish_version("2.0.0", "");
    rig.expect_rejected_once("cannot be read: Permission denied");
    assert_eq!(rig.server.downloads("app"), 0, "{:?}", rig.proc.output());
}

/// The staging files beside the binary `app` in `dir`.
fn staging_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(".app.overseer-") && name.ends_with(".staging")
        })
        .collect()
}

/// Starts another master at the rig's binary, polling the same server.
fn start_another_master(rig: &Rig) -> Proc {
    let mut cmd = Command::new(rig.bin());
    cmd.env("UA_FETCH_URL", rig.server.url("app"))
        .env("UA_PUBKEYS", &rig.keys.public)
        .env("UA_INTERVAL_MS", "100");
    let other = Proc::spawn(cmd);
    other.expect_line("worker 1 ready", T);
    other
}

/// A release installed while the master re-executes itself into the one
/// before: the re-exec waits, the new release starts and is judged, and the
/// binary the master executes is the one it checked. Here 3.0.0 is
/// installed while 2.0.0's re-exec check is held, and its own sanity check
/// (1.5 s) holds the upgrade thread when the master goes to execute.
#[test]
fn a_release_installed_during_a_re_exec_is_started_and_the_binary_checked_again() {
    let rig = Rig::start(&[]);
    let l1 = load(rig.addr, 2, true);
    let hold = rig.dir.path().join("hold-check");
    std::fs::write(&hold, "").expect("hold the re-exec check");
    rig.publish_version("2.0.0", &format!("reexec_check_hold={}", hold.display()));
    rig.proc.expect_line("version 2.0.0 passed probation", T);
    rig.proc.expect_line(
        "re-exec asked for by version 2.0.0, which passed probation",
        T,
    );
    rig.publish_version("3.0.0", "start_delay_ms=1500");
    // 3.0.0's download (2.0.0's was the first): its pipeline holds the
    // upgrade thread's gate from here to the swap.
    rig.proc.expect_nth("downloading release", 1, T);
    std::fs::remove_file(&hold).expect("end the re-exec check");
    rig.expect_version("3.0.0");
    rig.proc.expect_line("version 3.0.0 passed probation", T);
    rig.proc.expect_line(
        "re-exec asked for by version 2.0.0, which passed probation waits",
        T,
    );
    rig.proc.expect_line("master re-executed", T);
    assert_eq!(
        rig.proc
            .count("restart requested by the upgrade to version 3.0.0"),
        1
    );
    let s = l1.stop();
    assert!(
        s.failures.is_empty(),
        "failed requests: {:?}",
        s.failure_kinds()
    );
}

#[test]
fn two_masters_on_one_binary_path_leave_each_other_alone() {
    // The first master is downloading a release (a trickle, until the
    // server's mode changes), so it has a staging file beside the binary.
    let mut rig = Rig::start(&[("UA_DOWNLOAD_TIMEOUT_MS", "60000")]);
    rig.server.set_mode(Mode::Trickle);
    rig.publish_version("2.0.0", "");
    let deadline = Instant::now() + T;
    let staging = loop {
        if let Some(p) = staging_files(rig.dir.path()).pop() {
            break p;
        }
        assert!(Instant::now() < deadline, "no download started");
        std::thread::sleep(Duration::from_millis(20));
    };

    // A second master on the same path (a second instance of a template
    // unit): it serves, but leaves upgrades to the first, and says so once.
    let mut other = start_another_master(&rig);
    let other_addr = other.listen_addr();
    assert!(
        staging.exists(),
        "the second master removed the first one's staging file"
    );
    other.expect_line(
        &format!("upgrades are off: another master (pid {})", rig.proc.pid),
        T,
    );

    // The first master installs the release; the rollback copy is the old
    // build, and the second master downloaded nothing.
    rig.server.set_mode(Mode::Normal);
    rig.expect_version("2.0.0");
    rig.proc.expect_line("version 2.0.0 passed probation", T);
    let previous = std::fs::read(rig.dir.path().join(".app.overseer-previous")).expect("previous");
    assert!(
        previous == rig.original,
        "the rollback copy is not the old build"
    );
    assert_eq!(
        other.count("downloading release"),
        0,
        "{:?}",
        other.output()
    );
    assert_eq!(other.count("upgrades are off"), 1);
    let r = get(other_addr, "/");
    assert_eq!(r.field("version"), Some("1.0.0"), "{}", r.body);
    other.signal(nix::libc::SIGTERM);
    other.expect_exit(T);

    // The lock goes with its master: once the first one ends, the next
    // master on the path upgrades it.
    rig.proc.signal(nix::libc::SIGTERM);
    rig.proc.expect_exit(T);
    let next = start_another_master(&rig);
    rig.publish_version("3.0.0", "");
    next.expect_line("installed version 3.0.0", T);
    assert_eq!(next.count("upgrades are off"), 0, "{:?}", next.output());
}

#[test]
fn a_floor_raised_by_a_mistaken_version_is_reset_while_the_master_runs() {
    let rig = Rig::start(&[]);
    // Build 1.0.1, signed 99.0.0 by mistake: installed, and the floor of
    // every later release.
    rig.publish_signed(rig.build("version=1.0.1"), "99.0.0");
    rig.proc.expect_line("version 99.0.0 passed probation", T);
    assert_eq!(rig.serving_version(), "1.0.1");
    rig.publish_version("1.0.2", "");
    rig.proc
        .expect_line("signed version 1.0.2 is not newer than 99.0.0", T);
    let shown = overseer::ledger::show(rig.bin()).expect("show");
    assert_eq!(shown.highest_version.as_deref(), Some("99.0.0"));

    let reset = overseer::ledger::reset_floor(rig.bin(), Some("1.0.1")).expect("reset");
    assert_eq!(reset.highest_version.as_deref(), Some("1.0.1"));
    // The running master takes the reset at its next poll, and the 1.0.2 it
    // refused (not published again) installs.
    rig.proc.expect_line("version floor of", T);
    rig.expect_version("1.0.2");
    rig.proc.expect_line("version 1.0.2 passed probation", T);
    assert_eq!(
        overseer::ledger::show(rig.bin())
            .expect("show")
            .highest_version
            .as_deref(),
        Some("1.0.2")
    );
    // Older signed releases are still refused.
    rig.publish_version("1.0.1", "again=1");
    rig.proc
        .expect_line("signed version 1.0.1 is not newer than 1.0.2", T);
    assert_eq!(rig.serving_version(), "1.0.2");
}

/// A fleet's manifest in a directory, signed with the rig's key: each
/// release's artifact written from its bytes (or `swapped` bytes in its
/// place, the manifest still naming the real ones).
struct FleetRelease<'a> {
    version: &'a str,
    bytes: &'a [u8],
    swapped: Option<&'a [u8]>,
    rollout: Vec<overseer::fleet::Wave>,
    yanked: bool,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn publish_fleet(rig: &Rig, dir: &Path, serial: u64, expires: u64, releases: &[FleetRelease<'_>]) {
    use overseer::fleet::{Artifact, Manifest, Release};
    use sha2::{Digest, Sha256};
    let target = this_target();
    let mut manifest = Manifest {
        format: overseer::fleet::FORMAT,
        channel: "stable".into(),
        serial,
        expires,
        releases: Vec::new(),
    };
    for r in releases {
        let path = format!("{}/{target}/app", r.version);
        std::fs::create_dir_all(dir.join(format!("{}/{target}", r.version))).expect("artifact dir");
        std::fs::write(dir.join(&path), r.swapped.unwrap_or(r.bytes)).expect("artifact");
        manifest.releases.push(Release {
            version: r.version.into(),
            artifacts: [(
                target.clone(),
                Artifact {
                    path,
                    size: r.bytes.len() as u64,
                    sha256: format!("{:x}", Sha256::digest(r.bytes)),
                    patches: Vec::new(),
                },
            )]
            .into(),
            rollout: r.rollout.clone(),
            yanked: r.yanked,
            critical: false,
            halted: None,
        });
    }
    let bytes = manifest.to_bytes();
    let sig = rig
        .keys
        .sign_with_comment(&bytes, &format!("serial:{serial}"));
    std::fs::write(dir.join("manifest.json.minisig.tmp"), sig).expect("signature");
    std::fs::write(dir.join("manifest.json.tmp"), &bytes).expect("manifest");
    std::fs::rename(
        dir.join("manifest.json.minisig.tmp"),
        dir.join("manifest.json.minisig"),
    )
    .expect("rename");
    std::fs::rename(dir.join("manifest.json.tmp"), dir.join("manifest.json")).expect("rename");
}

/// A master polling a fleet's manifest takes releases by their waves,
/// refuses a swapped artifact, a replayed or expired manifest and one
/// signed by another key (the serving worker and the binary untouched),
/// moves back to the previous release when the running one is withdrawn,
/// and takes an artifact that matches the manifest only once it is copied
/// whole.
#[test]
fn a_fleet_manifest_upgrades_by_wave_refuses_tampering_and_moves_off_a_withdrawn_release() {
    let fleet = tempfile::tempdir().expect("fleet dir");
    let fleet_dir = fleet.path().to_string_lossy().into_owned();
    let rig = Rig::start(&[("UA_FLEET_DIR", &fleet_dir), ("UA_HOST_ID", "host-17")]);
    let d = fleet.path();
    let now = unix_now();
    let all_now = vec![overseer::fleet::Wave {
        start: now - 10,
        fraction: 1.0,
    }];
    let v1 = rig.original.clone();
    let v2 = rig.build("version=2.0.0");
    let v3 = rig.build("version=3.0.0");
    let release = |version, bytes, rollout| FleetRelease {
        version,
        bytes,
        swapped: None,
        rollout,
        yanked: false,
    };

    // 2.0.0 to every host: installed.
    publish_fleet(
        &rig,
        d,
        1,
        now + 3600,
        &[release("2.0.0", &v2, all_now.clone())],
    );
    rig.proc.expect_line("installed version 2.0.0", T);
    rig.expect_version("2.0.0");
    rig.proc.expect_line("version 2.0.0 passed probation", T);

    // 3.0.0 whose rollout starts in an hour: not taken.
    let later = vec![overseer::fleet::Wave {
        start: now + 3600,
        fraction: 1.0,
    }];
    publish_fleet(
        &rig,
        d,
        2,
        now + 3600,
        &[
            release("2.0.0", &v2, all_now.clone()),
            release("3.0.0", &v3, later),
        ],
    );
    rig.proc.expect_line("3.0.0 its rollout has not started", T);

    // Refused, each once, with 2.0.0 serving and on disk throughout.
    let swapped = FleetRelease {
        swapped: Some(&v1),
        ..release("3.0.0", &v3, all_now.clone())
    };
    publish_fleet(&rig, d, 3, now + 3600, &[swapped]);
    let needle = "not the one the signed manifest names";
    rig.proc.expect_line(needle, T);
    std::thread::sleep(Duration::from_millis(1_000));
    assert_eq!(
        rig.proc.count(needle),
        1,
        "reported once: {:?}",
        rig.proc.output()
    );
    publish_fleet(
        &rig,
        d,
        2,
        now + 3600,
        &[release("3.0.0", &v3, all_now.clone())],
    );
    rig.proc.expect_line("serial 2 is lower than 3", T);
    publish_fleet(
        &rig,
        d,
        4,
        now - 1,
        &[release("3.0.0", &v3, all_now.clone())],
    );
    rig.proc.expect_line("the manifest expired", T);
    let stranger = Keys::generate();
    let bytes = std::fs::read(d.join("manifest.json")).expect("manifest");
    std::fs::write(
        d.join("manifest.json.minisig"),
        stranger.sign_with_comment(&bytes, "serial:4"),
    )
    .expect("sig");
    rig.proc.expect_line("signed by an unknown key", T);
    std::fs::remove_file(d.join("manifest.json.minisig")).expect("unsign");
    rig.proc.expect_line("is not signed", T);
    // Signed, but with nothing for this host's target.
    let mut foreign = overseer::fleet::Manifest::parse(&bytes).expect("manifest");
    foreign.expires = now + 3600;
    for r in &mut foreign.releases {
        r.artifacts = std::mem::take(&mut r.artifacts)
            .into_values()
            .map(|a| ("riscv64gc-unknown-none-elf".to_string(), a))
            .collect();
    }
    let foreign = foreign.to_bytes();
    std::fs::write(
        d.join("manifest.json.minisig"),
        rig.keys.sign_with_comment(&foreign, "serial:4"),
    )
    .expect("sig");
    std::fs::write(d.join("manifest.json"), &foreign).expect("manifest");
    rig.proc.expect_line("has an artifact for", T);
    // Each refusal said once, however many polls saw it.
    std::thread::sleep(Duration::from_millis(1_000));
    for needle in [
        "serial 2 is lower than 3",
        "the manifest expired",
        "signed by an unknown key",
        "is not signed",
        "has an artifact for",
    ] {
        let said = rig
            .proc
            .output()
            .iter()
            .filter(|l| l.contains(needle) && l.contains("fetching failed"))
            .count();
        assert_eq!(said, 1, "{needle}: {:?}", rig.proc.output());
    }
    assert_eq!(rig.serving_version(), "2.0.0");
    assert_eq!(std::fs::read(rig.bin()).expect("binary"), v2);

    // 2.0.0 withdrawn: the host goes back to 1.0.0, a downgrade the signed
    // manifest allows.
    let yanked = FleetRelease {
        yanked: true,
        ..release("2.0.0", &v2, all_now.clone())
    };
    publish_fleet(
        &rig,
        d,
        5,
        now + 3600,
        &[release("1.0.0", &v1, all_now.clone()), yanked],
    );
    rig.proc
        .expect_line("taking 1.0.0 (2.0.0 was withdrawn)", T);
    rig.expect_version("1.0.0");
    rig.proc.expect_line("version 1.0.0 passed probation", T);

    // An artifact still being copied (shorter than the manifest says) is
    // taken once it is whole: the mismatch is not held against the release.
    let partial = FleetRelease {
        swapped: Some(&v3[..v3.len() / 2]),
        ..release("3.0.0", &v3, all_now.clone())
    };
    publish_fleet(
        &rig,
        d,
        6,
        now + 3600,
        &[release("1.0.0", &v1, all_now.clone()), partial],
    );
    // Shorter than the manifest says: the download stops there.
    rig.proc.expect_line("download truncated", T);
    std::fs::write(d.join(format!("3.0.0/{}/app", this_target())), &v3).expect("copy completed");
    rig.proc.expect_line("installed version 3.0.0", T);
    rig.expect_version("3.0.0");
}
