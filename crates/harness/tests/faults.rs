//! Fault injection: the master SIGKILLed at random points of an upgrade, the
//! staging filesystem running full, a storm of restart signals, a thousand
//! handovers in a row, and connections that outlive a handover.
//!
//! Every process a test starts runs in its own process group (`Proc`), and
//! is ended by the test through that group's id. The summaries these tests
//! print (where kills landed, how long a thousand handovers took) go to
//! stderr directly, so `cargo test` shows them even when the test passes.

mod faults_support;
mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use faults_support::*;
use nix::libc::{SIGCONT, SIGKILL, SIGSTOP, SIGUSR2};
use overseer_harness::proc::{alive, open_fds, rss_kb, send_signal, Proc};
use overseer_harness::release::{stamp, stamp_padded, this_target, Keys, ReleaseServer};
use support::*;

const APP: &str = env!("CARGO_BIN_EXE_upgrade-app");
/// The kill test's seed unless `OVERSEER_FAULT_SEED` gives another.
const DEFAULT_SEED: u64 = 0x0f4a_0175_eed5;

// ---------------------------------------------------------------------------
// Upgrades: one stripped, stamped build of the app, signed releases of it,
// one release server for all iterations.
// ---------------------------------------------------------------------------

/// The builds an upgrade fault test installs and publishes.
struct Builds {
    dir: tempfile::TempDir,
    /// The app without its line tables and symbols (the test build is ~17 MB,
    /// two thirds of it those; stripped it runs the same).
    base: PathBuf,
    v1: Vec<u8>,
    keys: Keys,
    server: ReleaseServer,
}

impl Builds {
    fn new() -> Builds {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("upgrade-app");
        let stripped = Command::new("strip")
            .arg("-o")
            .arg(&base)
            .arg(APP)
            .status()
            .is_ok_and(|s| s.success());
        if !stripped {
            report("faults: `strip` is unavailable; using the unstripped app (slower)");
            std::fs::copy(APP, &base).expect("copy the app");
        }
        let v1_path = dir.path().join("v1");
        stamp(&base, &v1_path, "version=1.0.0").expect("stamp v1");
        let v1 = std::fs::read(&v1_path).expect("read v1");
        Builds {
            dir,
            base,
            v1,
            keys: Keys::generate(),
            server: ReleaseServer::start(),
        }
    }

    /// A stamped copy of the app, padded to `size` bytes when given.
    fn build(&self, fields: &str, size: Option<u64>) -> Vec<u8> {
        let tmp = self.dir.path().join("build.tmp");
        match size {
            Some(size) => stamp_padded(&self.base, &tmp, fields, size),
            None => stamp(&self.base, &tmp, fields),
        }
        .expect("stamp");
        let bytes = std::fs::read(&tmp).expect("read build");
        let _ = std::fs::remove_file(&tmp);
        bytes
    }

    fn sign(&self, bytes: &[u8], version: &str) -> Vec<u8> {
        self.keys.sign(bytes, version, &this_target()).into_bytes()
    }

    /// Publishes a release as `app` (signature first).
    fn publish(&self, bytes: &[u8], sig: &[u8]) {
        self.server.publish("app.minisig", sig.to_vec());
        self.server.publish("app", bytes.to_vec());
    }

    fn unpublish(&self) {
        self.server.unpublish("app");
        self.server.unpublish("app.minisig");
    }

    /// Installs version 1 as `app` in `dir`.
    fn install_v1(&self, dir: &Path) -> PathBuf {
        let bin = dir.join("app");
        std::fs::write(&bin, &self.v1).expect("install v1");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        bin
    }

    /// Starts the master at `bin` polling the release server.
    fn start(&self, bin: &Path, env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(bin);
        cmd.env("UA_FETCH_URL", self.server.url("app"))
            .env("UA_PUBKEYS", &self.keys.public)
            .envs(env.iter().copied());
        Proc::spawn_quiet(cmd)
    }
}

/// Our files beside a binary named `app`: staging files and private temporaries.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    (n.starts_with(".app.overseer-") && n.ends_with(".staging"))
                        || n.ends_with(".overseer-tmp")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The version a freshly started master at `bin` serves; its start must
/// also have removed every staging file a killed master left behind.
fn fresh_start_serves(b: &Builds, bin: &Path, what: &str) -> String {
    let dir = bin.parent().expect("dir");
    let p = b.start(
        bin,
        &[
            // Nothing is published there: this start must only clean up and serve.
            ("UA_FETCH_URL", &b.server.url("unpublished")),
            ("UA_INTERVAL_MS", "60000"),
        ],
    );
    if p.wait_for_nth("worker 1 ready", 0, T).is_none() {
        panic!("{what}: a fresh start does not serve:\n{}", tail(&p, 30));
    }
    let addr = p.listen_addr();
    let version = get(addr, "/")
        .field("version")
        .unwrap_or("none")
        .to_string();
    let left = leftovers(dir);
    assert!(
        left.is_empty(),
        "{what}: the next start left stale files: {left:?}"
    );
    let pgrp = p.pid;
    drop(p);
    expect_group_gone(pgrp, what);
    version
}

/// Where in the upgrade a kill landed, judged afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Landed {
    /// The old binary is on disk.
    BeforeSwap,
    /// The new binary is on disk, its worker was not ready yet.
    AfterSwap,
    /// Its worker was ready, probation had not ended.
    DuringProbation,
    /// The release had passed probation.
    AfterProbation,
}

#[test]
fn master_killed_at_random_points_of_an_upgrade_leaves_a_whole_binary() {
    const KILLS: usize = 100;
    let b = Builds::new();
    let v2 = b.build("version=2.0.0", Some(b.v1.len() as u64 + 4 * MIB));
    let sig2 = b.sign(&v2, "2.0.0");
    let env = [("UA_INTERVAL_MS", "50"), ("UA_PROBATION_MS", "150")];

    // How long a whole upgrade takes here, publication to probation passed.
    let window = {
        let dir = tempfile::tempdir_in(b.dir.path()).expect("tempdir");
        let bin = b.install_v1(dir.path());
        let p = b.start(&bin, &env);
        assert!(
            p.wait_for_nth("worker 1 ready", 0, T).is_some(),
            "{}",
            tail(&p, 30)
        );
        let t0 = Instant::now();
        b.publish(&v2, &sig2);
        assert!(
            p.wait_for_nth("version 2.0.0 passed probation", 0, T)
                .is_some(),
            "the calibration upgrade failed:\n{}",
            tail(&p, 30)
        );
        let window = t0.elapsed();
        assert!(std::fs::read(&bin).expect("read") == v2);
        b.unpublish();
        window
    };
    let seed = std::env::var("OVERSEER_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mut rng = Rng::new(seed);
    let mut landed: BTreeMap<Landed, usize> = BTreeMap::new();
    let (mut stale_files, mut ledger_ahead) = (0, 0);
    let started = Instant::now();
    for i in 0..KILLS {
        b.unpublish();
        let dir = tempfile::tempdir_in(b.dir.path()).expect("tempdir");
        let bin = b.install_v1(dir.path());
        let mut p = b.start(&bin, &env);
        if p.wait_for_nth("worker 1 ready", 0, T).is_none() {
            panic!("kill {i}: the master did not start:\n{}", tail(&p, 30));
        }
        let delay = Duration::from_micros(rng.below(window.as_micros() as u64));
        let what = format!("kill {i} at {delay:?} (seed {seed})");
        b.publish(&v2, &sig2);
        std::thread::sleep(delay);
        send_signal(-p.pid, SIGKILL);
        p.expect_exit(T);
        expect_group_gone(p.pid, &what);

        // The binary path holds one whole build, executable.
        let on_disk = std::fs::read(&bin).unwrap_or_else(|e| panic!("{what}: {e}"));
        let new = if on_disk == b.v1 {
            false
        } else if on_disk == v2 {
            true
        } else {
            panic!(
                "{what}: the binary is neither build ({} bytes; old {}, new {})",
                on_disk.len(),
                b.v1.len(),
                v2.len()
            );
        };
        let mode = std::fs::metadata(&bin).expect("stat").permissions().mode();
        assert!(mode & 0o111 != 0, "{what}: not executable: {mode:o}");
        if new {
            let previous = std::fs::read(dir.path().join(".app.overseer-previous"))
                .unwrap_or_else(|e| panic!("{what}: no rollback copy: {e}"));
            assert!(
                previous == b.v1,
                "{what}: the rollback copy is not the old build"
            );
        }
        // The log shows how far the upgrade went (its pipes are drained
        // once every writer is dead).
        std::thread::sleep(Duration::from_millis(20));
        let stage = if !new {
            Landed::BeforeSwap
        } else if p.count("version 2.0.0 passed probation") > 0 {
            Landed::AfterProbation
        } else if p.count("worker 2 ready") > 0 {
            Landed::DuringProbation
        } else {
            Landed::AfterSwap
        };
        *landed.entry(stage).or_default() += 1;
        if !leftovers(dir.path()).is_empty() {
            stale_files += 1;
        }
        let ledger =
            std::fs::read_to_string(dir.path().join(".app.overseer-state")).unwrap_or_default();
        if !new && ledger.contains("highest-version 2.0.0") {
            ledger_ahead += 1;
        }
        drop(p);

        // A fresh start from that path serves the build on disk.
        let serving = fresh_start_serves(&b, &bin, &what);
        let expected = if new { "2.0.0" } else { "1.0.0" };
        assert_eq!(
            serving, expected,
            "{what}: the fresh start serves another build"
        );
    }
    report(&format!(
        "faults: {KILLS} kills over a {window:?} upgrade window (seed {seed}) in {:?}: \
         {} before the swap ({ledger_ahead} of them after the new version was recorded as seen), \
         {} after the swap before the new worker was ready, {} during probation, {} after probation; \
         {stale_files} left staging files behind, all removed by the next start",
        started.elapsed(),
        landed.get(&Landed::BeforeSwap).unwrap_or(&0),
        landed.get(&Landed::AfterSwap).unwrap_or(&0),
        landed.get(&Landed::DuringProbation).unwrap_or(&0),
        landed.get(&Landed::AfterProbation).unwrap_or(&0),
    ));
    assert!(
        landed.len() >= 2,
        "the kills did not spread over the upgrade: {landed:?}"
    );
}

/// The first child of `master` running a staged file (a sanity check, in a
/// process group of its own).
fn sanity_check_running(master: i32) -> Option<i32> {
    all_processes().into_iter().find_map(|s| {
        let exe = std::fs::read_link(format!("/proc/{}/exe", s.pid)).ok()?;
        (s.ppid == master && exe.to_string_lossy().contains(".staging")).then_some(s.pid)
    })
}

#[test]
fn release_interrupted_between_its_signature_check_and_the_swap_installs_at_the_next_start() {
    let b = Builds::new();
    // Its sanity check takes a second: a kill lands between the signature
    // check (which records the version as seen) and the swap.
    let v2 = b.build("version=2.0.0 start_delay_ms=1000", None);
    let sig2 = b.sign(&v2, "2.0.0");
    let dir = tempfile::tempdir_in(b.dir.path()).expect("tempdir");
    let bin = b.install_v1(dir.path());
    let env = [("UA_INTERVAL_MS", "50"), ("UA_PROBATION_MS", "300")];
    let mut p = b.start(&bin, &env);
    assert!(
        p.wait_for_nth("worker 1 ready", 0, T).is_some(),
        "{}",
        tail(&p, 30)
    );
    b.publish(&v2, &sig2);
    let deadline = Instant::now() + T;
    while sanity_check_running(p.pid).is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let check = sanity_check_running(p.pid);
    let check = check.unwrap_or_else(|| panic!("no sanity check seen:\n{}", tail(&p, 30)));
    send_signal(-p.pid, SIGKILL);
    p.expect_exit(T);
    expect_group_gone(p.pid, "the killed master");
    // Its own group is not the master's: it dies with the master all the same.
    expect_group_gone(check, "the killed master's sanity check");
    assert!(
        std::fs::read(&bin).expect("read") == b.v1,
        "swapped already"
    );
    drop(p);

    // Started again with the release still published, it installs it.
    let p = b.start(&bin, &env);
    let installed = p.wait_for_nth("version 2.0.0 passed probation", 0, T);
    assert!(
        installed.is_some(),
        "the interrupted release was not installed at the next start:\n{}",
        tail(&p, 30)
    );
    assert!(std::fs::read(&bin).expect("read") == v2);
    assert_eq!(get(p.listen_addr(), "/").field("version"), Some("2.0.0"));
}

// ---------------------------------------------------------------------------
// A full filesystem under the staging file.
// ---------------------------------------------------------------------------

#[test]
fn staging_filesystem_full_leaves_everything_as_it_was_and_a_release_installs_once_there_is_room() {
    let b = Builds::new();
    let v1_len = b.v1.len() as u64;
    let v2 = b.build("version=2.0.0", Some(v1_len + 4 * MIB));
    let sig2 = b.sign(&v2, "2.0.0");
    // Room for both builds with 4 MiB to spare, until the ballast takes it.
    let Some(fs) = SmallFs::mount(v1_len + v2.len() as u64 + 4 * MIB) else {
        return;
    };
    let bin = b.install_v1(fs.path());
    let ballast = fs.path().join("ballast");
    let room = fs.free();
    // Leave half the new build's size free.
    let fill = room.saturating_sub(v2.len() as u64 / 2);
    std::fs::write(&ballast, vec![0u8; fill as usize]).expect("write the ballast");

    let p = b.start(&bin, &[("UA_INTERVAL_MS", "100")]);
    assert!(
        p.wait_for_nth("worker 1 ready", 0, T).is_some(),
        "{}",
        tail(&p, 30)
    );
    // Measured once the master runs (it keeps its lock file beside the binary).
    let free_before = fs.free();
    assert!(free_before < v2.len() as u64, "the release would fit");
    let addr = p.listen_addr();
    b.publish(&v2, &sig2);
    let line = p
        .wait_for_nth("No space left on device", 0, T)
        .unwrap_or_else(|| panic!("no disk-full error:\n{}", tail(&p, 30)));
    report(&format!(
        "faults: the full filesystem is reported as: {line}"
    ));
    assert!(line.contains("running binary is unchanged"), "{line}");
    // Ten more polls: said once.
    std::thread::sleep(Duration::from_millis(1_000));
    assert_eq!(p.count("No space left on device"), 1, "{}", tail(&p, 30));
    // Once the pipeline is idle (the next poll finds nothing published),
    // nothing is left behind and everything is as it was.
    b.unpublish();
    assert!(
        p.wait_for_nth("returned HTTP 404", 0, T).is_some(),
        "{}",
        tail(&p, 30)
    );
    assert!(
        std::fs::read(&bin).expect("read") == b.v1,
        "the binary changed"
    );
    let left = leftovers(fs.path());
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(fs.free(), free_before, "space still taken");
    assert_eq!(get(addr, "/").field("version"), Some("1.0.0"));
    assert_eq!(p.count("worker 2 started"), 0, "restarted for nothing");

    // With room again, the same release installs and serves.
    std::fs::remove_file(&ballast).expect("remove the ballast");
    b.publish(&v2, &sig2);
    assert!(
        p.wait_for_nth("version 2.0.0 passed probation", 0, T)
            .is_some(),
        "{}",
        tail(&p, 30)
    );
    assert!(std::fs::read(&bin).expect("read") == v2);
    assert_eq!(get(addr, "/").field("version"), Some("2.0.0"));
    let pgrp = p.pid;
    drop(p);
    expect_group_gone(pgrp, "the master on the small filesystem");
}

// ---------------------------------------------------------------------------
// Restart signals: a storm, and a thousand handovers in a row.
// ---------------------------------------------------------------------------

#[test]
fn storm_of_a_hundred_restart_signals_coalesces_and_leaks_nothing() {
    const START_MS: u64 = 200;
    let (p, addr) = start_ready(&[("TS_START_DELAY_MS", &START_MS.to_string())]);
    let fds_before = open_fds(p.pid).expect("fds");
    let load = load(addr, 4, true);
    let t0 = Instant::now();
    for _ in 0..99 {
        p.signal(SIGUSR2);
        std::thread::sleep(Duration::from_millis(10));
    }
    // The hundredth reaches a stopped master: every worker it starts from
    // then on is not among its children now.
    send_signal(p.pid, SIGSTOP);
    let deadline = Instant::now() + T;
    while !stopped(p.pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(stopped(p.pid), "the master did not stop");
    let before: Vec<i32> = children(p.pid).iter().map(|c| c.pid).collect();
    p.signal(SIGUSR2);
    send_signal(p.pid, SIGCONT);
    let storm = t0.elapsed();

    let (last, last_pid) = wait_idle(&p, Duration::from_millis(3 * START_MS));
    // A worker cannot start before the previous one is ready, which takes
    // START_MS: at most one start per START_MS during the storm, plus the
    // first worker, the one starting and the one queued when it ended.
    let bound = 4 + storm.as_millis() as u64 / START_MS;
    report(&format!(
        "faults: 100 restart signals in {storm:?} made {} handovers (bound {bound})",
        last - 1
    ));
    assert!(
        last <= bound && last < 50,
        "{last} workers for 100 signals in {storm:?}:\n{}",
        tail(&p, 60)
    );
    assert!(p.count("during a handover: queued") >= 1);
    assert!(
        !before.contains(&last_pid),
        "no worker started after the last signal (the newest, {last}, was already running)"
    );
    let zombies: Vec<Stat> = children(p.pid)
        .into_iter()
        .filter(|c| c.state == 'Z')
        .collect();
    assert!(zombies.is_empty(), "zombies: {zombies:?}");
    let fds_after = settled_fds(p.pid, fds_before);
    assert_eq!(fds_after, fds_before, "the master's descriptors changed");
    expect_answering(addr, last);
    let stats = load.stop();
    assert!(
        stats.failures.is_empty(),
        "{} failed requests: {:?}",
        stats.failures.len(),
        stats.failures.iter().take(10).collect::<Vec<_>>()
    );
    assert!(stats.ok > 0);
}

/// A rogue worker floods its notify socket while the master's service
/// manager reads slowly (the master relays the serving worker's `STATUS=`
/// lines to it): the master's memory stays bounded, the worker's readiness
/// and its restart request amid the flood still count, the flood is
/// reported once, and no request fails.
#[test]
fn a_worker_flooding_its_notify_socket_leaves_the_master_bounded_and_working() {
    use std::os::unix::net::UnixDatagram;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    /// Growth of the master's resident memory that fails the test (a
    /// queue of this many 4 KB messages is the defect).
    const LIMIT_KB: u64 = 48 * 1024;

    // The service manager's end, reading a datagram a millisecond at most.
    let dir = tempfile::tempdir().expect("tempdir");
    let manager_path = dir.path().join("notify.sock");
    let manager = UnixDatagram::bind(&manager_path).expect("bind the notify socket");
    manager
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                if manager.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testserver"));
    cmd.env("NOTIFY_SOCKET", &manager_path)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env("TS_NOTIFY_FLOOD", "1")
        .env("TS_NOTIFY_FLOOD_MS", "3000");
    let p = Proc::spawn_quiet(cmd);
    let addr = p.listen_addr();
    let base = rss_kb(p.pid).expect("the master's RSS");
    p.expect_line("worker=1 flooding its notify socket", T);
    p.expect_line("worker 1 ready", T);
    let load = load(addr, 2, true);
    // Until the flood is over and its worker gone, bounded in time; the
    // master's memory is watched throughout, and a runaway stops the test
    // before it can hurt the machine.
    let mut peak = base;
    let deadline = Instant::now() + T;
    let over = |p: &Proc| p.count("worker=1 flood thread") == 4 || p.count("worker 1 drained") > 0;
    while !over(&p) && Instant::now() < deadline {
        let now = rss_kb(p.pid).unwrap_or(0);
        peak = peak.max(now);
        assert!(
            now < base + LIMIT_KB,
            "the master grew from {base} kB to {now} kB under the flood:\n{}",
            tail(&p, 20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(over(&p), "the flood did not end:\n{}", tail(&p, 30));
    p.expect_line("worker=1 asked for a restart amid its flood", T);
    p.expect_line("worker 2 ready", T);
    expect_answering(addr, 2);
    let stats = load.stop();
    stop.store(true, Ordering::SeqCst);
    let _ = reader.join();
    report(&format!(
        "faults: notify flood: master RSS {base} kB, peak {peak} kB; {} datagrams reached the service manager",
        received.load(Ordering::SeqCst)
    ));
    assert_eq!(
        p.count("sends notify messages faster than"),
        1,
        "the flood is reported once:\n{}",
        tail(&p, 30)
    );
    assert!(
        stats.failures.is_empty(),
        "{} failed requests: {:?}",
        stats.failures.len(),
        stats.failures.iter().take(10).collect::<Vec<_>>()
    );
    assert!(stats.ok > 0);
}

#[test]
fn a_thousand_handovers_under_keepalive_load_leak_nothing_and_lose_nothing() {
    const HANDOVERS: u64 = 1000;
    /// Memory measured after these first handovers (allocator arenas and
    /// thread stacks of the first ones are not growth).
    const WARM_UP: u64 = 10;
    let p = Proc::spawn_quiet(Command::new(env!("CARGO_BIN_EXE_testserver")));
    let addr = p.listen_addr();
    assert!(
        p.wait_for_nth("worker 1 ready", 0, T).is_some(),
        "{}",
        tail(&p, 30)
    );
    let fds_before = open_fds(p.pid).expect("fds");
    let rss_start = rss_kb(p.pid).expect("rss");
    let mut rss_warm = rss_start;
    let load = load(addr, 4, true);
    let started = Instant::now();
    let mut from = 0;
    for n in 2..=HANDOVERS + 1 {
        p.signal(SIGUSR2);
        if !wait_after(&p, &mut from, &format!("worker {n} ready"), T) {
            let _ = load.stop();
            panic!("handover {} never completed:\n{}", n - 1, tail(&p, 40));
        }
        if n == WARM_UP + 1 {
            rss_warm = rss_kb(p.pid).expect("rss");
        }
    }
    let took = started.elapsed();
    let (last, _) = wait_idle(&p, Duration::from_millis(100));
    assert_eq!(last, HANDOVERS + 1, "extra workers were started");
    let fds_after = settled_fds(p.pid, fds_before);
    let rss_end = rss_kb(p.pid).expect("rss");
    let stats = load.stop();
    report(&format!(
        "faults: {HANDOVERS} handovers in {took:?} ({:?} each) under keep-alive load: \
         {} requests, {} failed; master fds {fds_before} -> {fds_after}; \
         RSS {rss_start} kB at start, {rss_warm} kB after {WARM_UP}, {rss_end} kB at the end",
        took / HANDOVERS as u32,
        stats.ok,
        stats.failures.len()
    ));
    assert!(
        stats.failures.is_empty(),
        "{} failed requests: {:?}",
        stats.failures.len(),
        stats.failures.iter().take(10).collect::<Vec<_>>()
    );
    assert_eq!(fds_after, fds_before, "the master's descriptors changed");
    assert!(
        rss_end < rss_warm + 1024,
        "the master grew from {rss_warm} kB to {rss_end} kB"
    );
    let zombies: Vec<Stat> = children(p.pid)
        .into_iter()
        .filter(|c| c.state == 'Z')
        .collect();
    assert!(zombies.is_empty(), "zombies: {zombies:?}");
}

// ---------------------------------------------------------------------------
// Connections that outlive a handover.
// ---------------------------------------------------------------------------

#[test]
fn a_stream_and_a_slow_client_finish_across_a_handover_within_terminate_timeout() {
    const STREAM_MS: u64 = 1_500;
    let (p, addr) = start_ready(&[
        ("TS_STREAM_ADDR", "127.0.0.1:0"),
        ("TS_TERMINATE_MS", "10000"),
    ]);
    let streams = stream_addr(&p);
    let load = load(addr, 3, true);
    let (started, streaming_now) = std::sync::mpsc::channel();
    let streaming = std::thread::spawn(move || stream(streams, STREAM_MS, started));
    streaming_now
        .recv_timeout(T)
        .expect("worker 1 streams before the handover");
    let slow = std::thread::spawn(move || slow_get(addr, Duration::from_millis(25)));
    // The slow client sends a byte every 25 ms; whichever worker it reached
    // must answer it (checked below).
    std::thread::sleep(Duration::from_millis(250));
    p.signal(SIGUSR2);
    p.expect_line("worker 2 ready", T);
    p.expect_line("worker 1 draining", T);
    expect_answering(addr, 2);

    let got = streaming.join().expect("stream client");
    assert!(
        got.complete && got.end == "eof",
        "the stream did not finish: {} chunks, ended by {}",
        got.chunks.len(),
        got.end
    );
    assert_eq!(got.chunks.len() as u64, STREAM_MS / 10, "chunks lost");
    for (i, c) in got.chunks.iter().enumerate() {
        assert_eq!(c, &format!("worker=1 chunk={i}"), "chunk {i}");
    }
    let (status, close, body) = slow.join().expect("slow client").expect("slow request");
    assert_eq!(status, 200, "{body}");
    if body.starts_with("worker=1 ") {
        // Answered while draining: the connection is closed after it.
        assert!(close, "a draining worker kept the connection open");
    }
    p.expect_line("worker 1 drained", T);
    assert_eq!(p.count("was killed"), 0, "{}", tail(&p, 30));
    report(&format!(
        "faults: a {STREAM_MS} ms stream finished intact across a handover; \
         the slow request was answered by {} (connection close: {close})",
        body.split_whitespace().next().unwrap_or("?")
    ));
    let stats = load.stop();
    assert!(
        stats.failures.is_empty(),
        "{} failed requests: {:?}",
        stats.failures.len(),
        stats.failures.iter().take(10).collect::<Vec<_>>()
    );
}

#[test]
fn a_stream_longer_than_terminate_timeout_is_cut_at_the_deadline_and_the_new_worker_serves() {
    const STREAM_MS: u64 = 6_000;
    let (p, addr) = start_ready(&[
        ("TS_STREAM_ADDR", "127.0.0.1:0"),
        ("TS_TERMINATE_MS", "1000"),
    ]);
    let streams = stream_addr(&p);
    let old = worker_pid(&p, 1);
    let keep_alive = load(addr, 2, true);
    let per_request = load(addr, 2, false);
    let (started, streaming_now) = std::sync::mpsc::channel();
    let streaming = std::thread::spawn(move || stream(streams, STREAM_MS, started));
    streaming_now
        .recv_timeout(T)
        .expect("worker 1 streams before the handover");
    p.signal(SIGUSR2);
    p.expect_line("worker 2 ready", T);

    let got = streaming.join().expect("stream client");
    assert!(
        !got.complete && (got.end == "eof" || got.end == "reset"),
        "the stream was not cut cleanly: {} chunks, complete {}, ended by {}",
        got.chunks.len(),
        got.complete,
        got.end
    );
    assert!(
        !got.chunks.is_empty() && (got.chunks.len() as u64) < STREAM_MS / 10,
        "{} chunks",
        got.chunks.len()
    );
    assert!(got.chunks.iter().all(|c| c.starts_with("worker=1 ")));
    p.expect_line("worker 1 was killed: still running", T);
    let deadline = Instant::now() + T;
    while alive(old) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!alive(old), "worker 1 (pid {old}) is still running");
    expect_answering(addr, 2);
    for (mode, stats) in [
        ("keep-alive", keep_alive.stop()),
        ("per-request", per_request.stop()),
    ] {
        assert!(
            stats.failures.is_empty(),
            "{mode}: {} failed requests: {:?}",
            stats.failures.len(),
            stats.failures.iter().take(10).collect::<Vec<_>>()
        );
        assert!(stats.ok > 0, "{mode}: no request answered");
    }
    report(&format!(
        "faults: a {STREAM_MS} ms stream was cut after {} chunks ({}) when worker 1 was killed",
        got.chunks.len(),
        got.end
    ));
}
