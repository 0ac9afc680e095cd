//! Hostile input through unpacking and verification: random and adversarial
//! bytes — truncated and nested archives, decompression bombs in gzip, xz,
//! zstd, tar and zip, hostile trusted comments, corrupt ledgers. Nothing may
//! panic, every rejection must be a clean error of the release, and
//! unpacking may not take more memory than `max_download_size` allows.
//!
//! Releases are unpacked in a child process — this test binary run again,
//! `OVERSEER_HOSTILE_CHILD` naming the cases — whose peak RSS (`VmHWM`) is
//! measured. The child also limits its own address space, only so that a
//! regression fails the test rather than filling the machine's memory.
//! The cases are made by the parent and handed over as files, so the child's
//! memory is the unpacking's alone.
//!
//! Random cases come from a fixed seed: every run tries the same ones.
//!
//! Needs every archive format and signatures; `cargo test --workspace`
//! builds the library with them (the test harness crate asks for all).

#![allow(clippy::unwrap_used)]

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use sha2::{Digest, Sha256};

mod releases;

use super::download::{self, Staged};
use super::ledger::LedgerFile;
use super::swap::Target;
use super::unpack::{self, Unpack};
use super::verify;
use releases::{adversarial_cases, payload, random_bases, Expect};

/// `max_download_size` in every case.
const CAP: u64 = 4 << 20;
/// Names the cases a child process runs.
const CHILD: &str = "OVERSEER_HOSTILE_CHILD";
/// The directory the parent wrote them to.
const CASES: &str = "OVERSEER_HOSTILE_CASES";
/// Starts the child's report line: `REPORT cases growth_kb`.
const REPORT: &str = "hostile-input report:";
/// Random and mutated releases tried in a run.
const RANDOM_CASES: u32 = 10_000;
/// Signatures and ledgers tried in a run.
const PROPERTY_CASES: u32 = 2048;
/// How long a child may take.
const CHILD_DEADLINE: Duration = Duration::from_secs(240);

/// What unpacking may add to the child's peak RSS: the decoders' window
/// limit for `CAP`, and 16 MiB for buffers and the cases' own bookkeeping
/// (the test binary, its allocator, proptest).
fn memory_bound_kb() -> u64 {
    (unpack::window_limit(CAP) + (16 << 20)) >> 10
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

// --- The child: unpacking the cases ----------------------------------------

/// This test's name as the test harness knows it (without the crate's).
fn test_name(function: &str) -> String {
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, m)| m);
    format!("{module}::{function}")
}

/// The cases' directory, when this process is the child for `group`.
fn child_for(group: &str) -> Option<PathBuf> {
    if std::env::var(CHILD).ok()? != group {
        return None;
    }
    std::env::var_os(CASES).map(PathBuf::from)
}

/// A field of `/proc/self/status`, in kB.
fn status_kb(field: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Starts the child's measurement: limits the address space to 1 GiB over
/// what is mapped now (a guard for the machine, not the measure), resets
/// the peak RSS, and returns the RSS now.
fn start_measuring() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let limit = (status_kb("VmSize:") << 10) + (1 << 30);
    let (_, hard) = getrlimit(Resource::RLIMIT_AS).unwrap();
    setrlimit(Resource::RLIMIT_AS, limit.min(hard), hard).unwrap();
    // Writing 5 to clear_refs resets VmHWM to the current RSS.
    let _ = fs::write("/proc/self/clear_refs", "5");
    status_kb("VmRSS:")
}

/// Ends it: prints the report the parent reads.
fn report(cases: usize, baseline_kb: u64) {
    let growth = status_kb("VmHWM:").saturating_sub(baseline_kb);
    println!("\n{REPORT} {cases} {growth}");
}

/// Copies `bytes` into a staging file in `work`, as a download would be.
fn staged(work: &Path, bytes: &mut impl Read) -> Staged {
    let mut file = download::staging_file(work, "app").unwrap();
    let size = io::copy(bytes, &mut file).unwrap();
    file.flush().unwrap();
    Staged {
        file,
        sha256: String::new(),
        size,
    }
}

/// Unpacks one release as the pipeline does and checks that the outcome is
/// clean: a plain file within the cap, or a rejection of the release. Then
/// the files are dropped and nothing may be left behind.
fn unpack_case(work: &Path, bytes: &mut impl Read) -> Result<Option<(String, u64)>, String> {
    let wanted = ["app".to_string()];
    let how = Unpack {
        dir: work,
        bin_name: "app",
        wanted: &wanted,
        max_size: CAP,
    };
    let mut raw = staged(work, bytes);
    let outcome = match unpack::unpack(&mut raw, &how) {
        Ok(None) => Ok(None),
        Ok(Some(bin)) => {
            assert!(bin.size <= CAP, "unpacked {} bytes, over the cap", bin.size);
            let on_disk = bin.file.as_file().metadata().unwrap().len();
            assert_eq!(on_disk, bin.size);
            // The next steps read it too: no panic on hostile executables.
            let _ = verify::native_executable(bin.file.as_file(), raw.file.path());
            Ok(Some((bin.sha256.clone(), bin.size)))
        }
        Err(r) => {
            assert!(r.of_release, "not a rejection of the release: {}", r.reason);
            assert!(!r.reason.is_empty());
            Err(r.reason)
        }
    };
    drop(raw);
    let left: Vec<_> = fs::read_dir(work).unwrap().flatten().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    outcome
}

fn adversarial_child(dir: &Path) {
    let manifest = fs::read_to_string(dir.join("manifest")).unwrap();
    let work = dir.join("work");
    fs::create_dir_all(&work).unwrap();
    let baseline = start_measuring();
    let payload_sha = |n: usize| sha256(&payload(n));
    let mut count = 0;
    for line in manifest.lines() {
        let (file, rest) = line.split_once('\t').unwrap();
        let (name, expect) = rest.split_once('\t').unwrap();
        let expect = Expect::decode(expect);
        let mut input = File::open(dir.join(file)).unwrap();
        let outcome = unpack_case(&work, &mut input);
        match (&expect, &outcome) {
            (Expect::Plain, Ok(None)) | (Expect::Clean, _) => {}
            (Expect::Payload(n), Ok(Some((sha, _)))) if *sha == payload_sha(*n) => {}
            (Expect::Refused(why), Err(reason)) if reason.contains(why.as_str()) => {}
            _ => panic!("{name}: expected {expect:?}, got {outcome:?}"),
        }
        eprintln!("{name}: {outcome:?}");
        count += 1;
    }
    report(count, baseline);
}

/// A change to a release.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR a byte (at an index taken modulo the length).
    Flip(usize, u8),
    /// Keep only this much (modulo the length plus one).
    Truncate(usize),
    /// Insert bytes.
    Insert(usize, Vec<u8>),
    /// Overwrite bytes.
    Overwrite(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let bytes = || prop::collection::vec(any::<u8>(), 1..64);
    prop_oneof![
        4 => (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), bytes()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<usize>(), bytes()).prop_map(|(i, b)| Mutation::Overwrite(i, b)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation], tail: &[u8]) -> Vec<u8> {
    bytes.extend_from_slice(tail);
    for m in mutations {
        let len = bytes.len();
        match m {
            Mutation::Flip(i, x) if len > 0 => bytes[i % len] ^= x,
            Mutation::Truncate(n) => bytes.truncate(n % (len + 1)),
            Mutation::Insert(i, b) => {
                let at = i % (len + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Overwrite(i, b) if len > 0 => {
                let at = i % len;
                let end = (at + b.len()).min(len);
                bytes[at..end].copy_from_slice(&b[..end - at]);
            }
            _ => {}
        }
    }
    bytes
}

fn fixed_seed_runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

fn random_child(dir: &Path) {
    let mut bases = Vec::new();
    for i in 0.. {
        match fs::read(dir.join(format!("base-{i}"))) {
            Ok(b) => bases.push(b),
            Err(_) => break,
        }
    }
    assert!(!bases.is_empty());
    let work = dir.join("work");
    fs::create_dir_all(&work).unwrap();
    let baseline = start_measuring();
    let strategy = (
        0..bases.len(),
        prop::collection::vec(mutation(), 0..6),
        prop::collection::vec(any::<u8>(), 0..512),
    );
    let mut runner = fixed_seed_runner(RANDOM_CASES);
    let count = std::cell::Cell::new(0);
    let result = runner.run(&strategy, |(base, mutations, tail)| {
        let bytes = mutate(bases[base].clone(), &mutations, &tail);
        // Anything goes, as long as it is clean (checked inside).
        let _ = unpack_case(&work, &mut &bytes[..]);
        count.set(count.get() + 1);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    report(count.get(), baseline);
}

// --- The parent ------------------------------------------------------------

/// Runs `function`'s `group` of cases from `dir` in a child process; returns
/// how many it ran and how much its peak RSS grew meanwhile (kB).
fn run_child(function: &str, group: &str, dir: &Path) -> (usize, u64) {
    let out = dir.join("child.out");
    let err = dir.join("child.err");
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            &test_name(function),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, group)
        .env(CASES, dir)
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + CHILD_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            // Ended by its pid.
            let _ = child.kill();
            let _ = child.wait();
            panic!("the {group} cases did not finish within {CHILD_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = fs::read_to_string(&out).unwrap_or_default();
    let stderr = fs::read_to_string(&err).unwrap_or_default();
    assert!(
        status.success(),
        "the {group} cases failed ({status}):\n{stdout}\n{stderr}"
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once(REPORT).map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no report from the {group} cases:\n{stdout}\n{stderr}"));
    let mut fields = line.split_whitespace().map(|f| f.parse::<u64>().unwrap());
    let (cases, growth) = (fields.next().unwrap(), fields.next().unwrap());
    eprintln!(
        "{group}: {cases} cases, peak RSS grew {growth} kB (bound {} kB)",
        memory_bound_kb()
    );
    (cases as usize, growth)
}

#[test]
fn bombs_and_truncated_archives_in_every_format_are_refused_in_bounded_memory() {
    if let Some(dir) = child_for("adversarial") {
        return adversarial_child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let cases = adversarial_cases();
    let mut manifest = String::new();
    for (i, (name, bytes, expect)) in cases.iter().enumerate() {
        assert!(bytes.len() as u64 <= CAP, "{name} is over the download cap");
        fs::write(dir.path().join(format!("case-{i}")), bytes).unwrap();
        manifest.push_str(&format!("case-{i}\t{name}\t{}\n", expect.encode()));
    }
    fs::write(dir.path().join("manifest"), manifest).unwrap();
    let (ran, growth) = run_child(
        "bombs_and_truncated_archives_in_every_format_are_refused_in_bounded_memory",
        "adversarial",
        dir.path(),
    );
    assert_eq!(ran, cases.len());
    assert!(
        growth <= memory_bound_kb(),
        "unpacking took {growth} kB at its peak, over {} kB",
        memory_bound_kb()
    );
}

#[test]
fn random_and_mutated_releases_unpack_cleanly_in_bounded_memory() {
    if let Some(dir) = child_for("random") {
        return random_child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    for (i, base) in random_bases().iter().enumerate() {
        fs::write(dir.path().join(format!("base-{i}")), base).unwrap();
    }
    let (ran, growth) = run_child(
        "random_and_mutated_releases_unpack_cleanly_in_bounded_memory",
        "random",
        dir.path(),
    );
    assert_eq!(ran, RANDOM_CASES as usize);
    assert!(
        growth <= memory_bound_kb(),
        "unpacking took {growth} kB at its peak, over {} kB",
        memory_bound_kb()
    );
}

// --- Signatures and ledgers (in this process: nothing to measure) -------

/// A trusted comment an attacker might sign with a key of their own, or a
/// careless publisher with the trusted one.
fn trusted_comment() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        "[0-9a-zA-Z.+_-]{0,40}",
        any::<String>(),
        Just(crate::binary_id::TARGET.to_string()),
        Just("99999999999999999999999.0.0".to_string()),
        Just("1.0.0-".to_string() + &"a.".repeat(2000)),
    ];
    let key = prop_oneof![
        Just("version".to_string()),
        Just("target".to_string()),
        Just("timestamp".to_string()),
        Just("file".to_string()),
        "[a-z]{0,8}",
    ];
    let field = (key, prop_oneof![Just(":"), Just("="), Just("")], value)
        .prop_map(|(k, sep, v)| format!("{k}{sep}{v}"));
    prop_oneof![
        prop::collection::vec(field, 0..8).prop_flat_map(|fields| {
            prop_oneof![Just("\t"), Just(" "), Just("  "), Just("\u{a0}")]
                .prop_map(move |sep| fields.join(sep))
        }),
        any::<String>(),
        "[\t :=]{0,64}",
    ]
}

#[test]
fn hostile_trusted_comments_and_signatures_are_clean_errors() {
    let keys = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let trusted = [keys.pk.to_base64()];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("release");
    let strategy = (
        trusted_comment(),
        prop::collection::vec(any::<u8>(), 0..2048),
        prop::collection::vec(mutation(), 0..3),
    );
    let mut runner = fixed_seed_runner(PROPERTY_CASES);
    let result = runner.run(&strategy, |(comment, data, mutations)| {
        let Ok(sig) = minisign::sign(
            Some(&keys.pk),
            &keys.sk,
            &data[..],
            Some(&comment),
            Some("untrusted"),
        ) else {
            // The signer refuses it (a newline): nothing to publish.
            return Ok(());
        };
        let sig = sig.into_string();
        fs::write(&path, &data).unwrap();
        let mut file = File::open(&path).unwrap();
        // Over the file as published, before unpacking, and over the
        // executable after: the same verdict either way.
        let early = verify::signature_over_download(&trusted, Some(&sig), &mut file)
            .map(|t| t.map(|t| t.signed()));
        let late = verify::signature(&trusted, Some(&sig), &mut file);
        match (early, &late) {
            (Ok(Some(Ok(a))), Ok(b)) => prop_assert_eq!(&a, b),
            (Ok(Some(Err(a))), Err(b)) => prop_assert_eq!(&a.reason, &b.reason),
            (early, late) => prop_assert!(false, "{:?} but {:?}", early.map(|_| ()), late),
        }
        match &late {
            Ok(signed) => prop_assert!(verify::target_matches(&signed.target)),
            Err(r) => prop_assert!(r.of_release && !r.reason.is_empty()),
        }
        for key in ["version", "target", "file", ""] {
            let _ = verify::metadata(&comment, key);
        }
        // A damaged signature file: refused, or (the untrusted comment
        // line) still good; never a panic.
        let damaged = mutate(sig.into_bytes(), &mutations, &[]);
        let damaged = String::from_utf8_lossy(&damaged);
        match verify::signature(&trusted, Some(&damaged), &mut file) {
            Ok(_) => {}
            Err(r) => prop_assert!(r.of_release && !r.reason.is_empty()),
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn corrupt_ledgers_load_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("app");
    fs::write(&bin, b"binary").unwrap();
    let target = Target::resolve(&bin).unwrap();
    let line = prop_oneof![
        (
            prop_oneof![
                Just("highest-version".to_string()),
                Just("bad".to_string()),
                Just("installed".to_string()),
                "[a-z-]{0,16}"
            ],
            prop_oneof![Just(" "), Just("\t"), Just("")],
            any::<String>(),
        )
            .prop_map(|(k, sep, v)| format!("{k}{sep}{v}").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..128),
    ];
    let strategy = prop::collection::vec(line, 0..16);
    let mut runner = fixed_seed_runner(PROPERTY_CASES);
    let file = LedgerFile::of(&target);
    let result = runner.run(&strategy, |lines| {
        fs::write(target.state_path(), lines.join(&b'\n')).unwrap();
        // Understood, or refused with an error naming the problem: never a
        // panic, and nothing is read as something else.
        let entries = match file.read() {
            Ok(entries) => entries,
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                return Ok(());
            }
        };
        // What was understood is written back and read the same way.
        fs::remove_file(target.state_path()).unwrap();
        let written = file.update(|e| *e = entries.clone()).unwrap();
        prop_assert_eq!(&written, &entries);
        let again = file.read().unwrap();
        prop_assert_eq!(&again, &entries);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
