//! Self-upgrade (SPEC §5): good releases are installed and served with zero
//! failed requests; every kind of bad release leaves the binary on disk and
//! the serving worker untouched (or restored), reported once.
//!
//! Each test runs `upgrade-app` from its own temporary directory, polling a
//! real HTTP release server on loopback that publishes stamped, signed
//! copies of the same binary.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use overseer_harness::proc::{peak_rss_kb, Proc};
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
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("app");
        stamp(Path::new(APP), &bin, "version=1.0.0").expect("install v1");
        let original = std::fs::read(&bin).expect("read v1");
        let keys = Keys::generate();
        let server = ReleaseServer::start();
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
    std::thread::sleep(Duration::from_millis(300));
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
    // leave the master's signals to its signal thread too.
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

/// The staging files left beside the binary `app` in `dir`.
fn staging_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".app.overseer-") && n.ends_with(".staging"))
        .collect()
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
