//! `overseer publish`: a release added to a fleet's signed manifest in a
//! directory, which the library's own check (`Manifest::verify`) accepts;
//! a manifest edited by hand, or signed by another key, stops it with
//! nothing changed.

use std::path::Path;
use std::process::{Command, Output};

use overseer::fleet::Manifest;
use overseer_harness::client::Client;
use overseer_harness::proc::Proc;

mod support;

use support::{assert_no_failures, load, write_worker};

const OVERSEER: &str = env!("CARGO_BIN_EXE_overseer");
const TARGET: &str = "x86_64-unknown-linux-gnu";

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn keygen(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let out = run(Command::new(OVERSEER)
        .args(["keygen", "--name", name, "--out"])
        .arg(dir));
    assert!(out.status.success(), "{out:?}");
    let public = std::fs::read_to_string(dir.join(format!("{name}.pub"))).expect("public key");
    (dir.join(format!("{name}.key")), public)
}

/// `overseer publish --key KEY --version V --target T ARGS… BINARY DEST`.
fn publish(
    key: &Path,
    version: &str,
    target: &str,
    args: &[&str],
    binary: &Path,
    dest: &Path,
) -> Output {
    run(Command::new(OVERSEER)
        .arg("publish")
        .arg("--key")
        .arg(key)
        .args(["--version", version, "--target", target])
        .args(args)
        .arg(binary)
        .arg(dest))
}

/// The manifest in `dest`, verified with `public`.
fn manifest(dest: &Path, public: &str) -> Manifest {
    let bytes = std::fs::read(dest.join("manifest.json")).expect("manifest.json");
    let sig = std::fs::read_to_string(dest.join("manifest.json.minisig")).expect("its signature");
    Manifest::verify(&bytes, &sig, &[public.to_string()]).expect("a manifest the hosts accept")
}

#[test]
fn publish_builds_a_signed_manifest_release_by_release_and_target_by_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (key, public) = keygen(d, "release");
    let dest = d.join("fleet");
    let app = d.join("app");
    std::fs::write(&app, b"version one").expect("app");

    let out = publish(&key, "1.0.0", TARGET, &[], &app, &dest);
    assert!(out.status.success(), "{out:?}");
    let m = manifest(&dest, &public);
    assert_eq!(
        (m.channel.as_str(), m.serial, m.releases.len()),
        ("stable", 1, 1)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(m.expires > now + 29 * 86_400 && m.expires <= now + 30 * 86_400 + 60);
    let artifact = &m.releases[0].artifacts[TARGET];
    assert_eq!(artifact.path, format!("1.0.0/{TARGET}/app"));
    assert_eq!(
        std::fs::read(dest.join(&artifact.path)).expect("artifact"),
        b"version one"
    );
    assert_eq!(artifact.size, 11);
    assert_eq!(artifact.sha256, sha256_hex(b"version one"));
    assert!(m.releases[0].rollout.is_empty());

    // A second release in waves, then its second target.
    std::fs::write(&app, b"version two").expect("app");
    let out = publish(
        &key,
        "1.1.0",
        TARGET,
        &["--waves", "10%,100%@1h", "--channel", "beta"],
        &app,
        &dest,
    );
    assert!(out.status.success(), "{out:?}");
    let out = publish(&key, "1.1.0", "aarch64-unknown-linux-gnu", &[], &app, &dest);
    assert!(out.status.success(), "{out:?}");
    let m = manifest(&dest, &public);
    assert_eq!(m.serial, 3);
    assert_eq!(
        m.channel, "stable",
        "an existing manifest keeps its channel"
    );
    let r = m
        .releases
        .iter()
        .find(|r| r.version == "1.1.0")
        .expect("1.1.0");
    assert_eq!(r.artifacts.len(), 2);
    let waves: Vec<f64> = r.rollout.iter().map(|w| w.fraction).collect();
    assert_eq!(waves, [0.1, 1.0]);
    assert_eq!(r.rollout[1].start - r.rollout[0].start, 3600);
}

#[test]
fn a_manifest_edited_by_hand_or_another_key_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (key, _) = keygen(d, "release");
    let (stranger, _) = keygen(d, "stranger");
    let dest = d.join("fleet");
    let app = d.join("app");
    std::fs::write(&app, b"app").expect("app");
    assert!(publish(&key, "1.0.0", TARGET, &[], &app, &dest)
        .status
        .success());

    let signed = std::fs::read(dest.join("manifest.json")).expect("manifest");
    let snapshot = || {
        (
            std::fs::read(dest.join("manifest.json")).expect("manifest"),
            std::fs::read(dest.join("manifest.json.minisig")).expect("signature"),
            dest.join("2.0.0").exists(),
        )
    };
    // Another key: refused, nothing written.
    let before = snapshot();
    let out = publish(&stranger, "2.0.0", TARGET, &[], &app, &dest);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Publish with the key that signed it"), "{err}");
    assert_eq!(snapshot(), before);

    // Edited by hand (a serial raised): refused, nothing written.
    let edited = String::from_utf8_lossy(&signed).replace("\"serial\": 1", "\"serial\": 9");
    std::fs::write(dest.join("manifest.json"), edited).expect("edit");
    let before = snapshot();
    let out = publish(&key, "2.0.0", TARGET, &[], &app, &dest);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not verify") && err.contains("restored"),
        "{err}"
    );
    assert_eq!(snapshot(), before);

    // Bad input is refused before anything is written.
    std::fs::write(dest.join("manifest.json"), &signed).expect("restore");
    for args in [&["--waves", "50%,10%@1h"][..], &["--waves", "120%"][..]] {
        let out = publish(&key, "2.0.0", TARGET, args, &app, &dest);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--waves"),
            "{out:?}"
        );
    }
    let out = publish(&key, "two", TARGET, &[], &app, &dest);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a semantic version"),
        "{out:?}"
    );
    let out = publish(
        &key,
        "2.0.0",
        TARGET,
        &[],
        &app,
        Path::new("https://cdn.example/fleet"),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a web server is read-only here"),
        "{out:?}"
    );
    assert!(!dest.join("2.0.0").exists());
    assert_eq!(
        std::fs::read(dest.join("manifest.json")).expect("manifest"),
        signed
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}

/// `overseer rollout ARGS…`.
fn rollout(args: &[&str]) -> Output {
    run(Command::new(OVERSEER).arg("rollout").args(args))
}

#[test]
fn rollout_halts_resumes_and_withdraws_releases_in_the_signed_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (key, public) = keygen(d, "release");
    let key_arg = key.to_string_lossy().into_owned();
    let dest = d.join("fleet");
    let dest_arg = dest.to_string_lossy().into_owned();
    let app = d.join("app");
    std::fs::write(&app, b"app").expect("app");
    assert!(publish(&key, "1.0.0", TARGET, &[], &app, &dest)
        .status
        .success());
    let waves = ["--waves", "10%,50%@1h,100%@2h"];
    assert!(publish(&key, "1.1.0", TARGET, &waves, &app, &dest)
        .status
        .success());

    // Halt the newest: its share stays, and hosts see it halted.
    let out = rollout(&["halt", "--key", &key_arg, &dest_arg]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("halted 1.1.0 at 10.0 % of hosts"),
        "{out:?}"
    );
    let m = manifest(&dest, &public);
    assert_eq!(m.serial, 3);
    let r = m
        .releases
        .iter()
        .find(|r| r.version == "1.1.0")
        .expect("1.1.0");
    assert!(r.halted.is_some());
    assert_eq!(
        r.fraction_at(u64::MAX),
        0.1,
        "halted: never beyond its share"
    );
    let again = rollout(&["halt", "--key", &key_arg, &dest_arg]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("halted already"),
        "{again:?}"
    );

    // Status, with the signature checked.
    let pub_path = d.join("release.pub").to_string_lossy().into_owned();
    let out = rollout(&["status", "--public-key", &pub_path, &dest_arg]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("serial 3") && text.contains("signature verified"),
        "{text}"
    );
    assert!(
        text.contains("1.1.0: 10.0 % of hosts, wave 1 of 3, halted since"),
        "{text}"
    );
    assert!(text.contains("1.0.0: 100.0 % of hosts"), "{text}");

    // Resume, then withdraw 1.1.0.
    assert!(rollout(&["resume", "--key", &key_arg, &dest_arg])
        .status
        .success());
    let out = rollout(&["yank", "--key", &key_arg, "--version", "1.1.0", &dest_arg]);
    assert!(out.status.success(), "{out:?}");
    let m = manifest(&dest, &public);
    assert_eq!(m.serial, 5);
    let r = m
        .releases
        .iter()
        .find(|r| r.version == "1.1.0")
        .expect("1.1.0");
    assert!(r.yanked && r.halted.is_none());
    // A host on the withdrawn 1.1.0 goes back to 1.0.0.
    match overseer::fleet::choose(&m, Some("1.1.0"), TARGET, "host-1", 0) {
        overseer::fleet::Choice::Take {
            release, downgrade, ..
        } => {
            assert_eq!(release.version, "1.0.0");
            assert!(downgrade);
        }
        other => panic!("{other:?}"),
    }

    // Mistakes change nothing.
    let before = std::fs::read(dest.join("manifest.json")).expect("manifest");
    for args in [
        &["yank", "--key", &key_arg, &dest_arg][..],
        &["yank", "--key", &key_arg, "--version", "9.9.9", &dest_arg][..],
        &["resume", "--key", &key_arg, "--version", "1.0.0", &dest_arg][..],
    ] {
        let out = rollout(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
    }
    assert_eq!(
        std::fs::read(dest.join("manifest.json")).expect("manifest"),
        before
    );
}

/// The whole path: `overseer run --fetch-fleet` polls the directory that
/// `overseer publish` writes, and the release it publishes replaces the
/// program under load without a failed request.
#[test]
fn a_master_polling_the_fleet_directory_takes_what_publish_puts_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (key, _) = keygen(d, "release");
    let fleet = d.join("fleet");
    std::fs::create_dir_all(d.join("bin")).expect("bin");
    std::fs::create_dir_all(d.join("build")).expect("build");
    let app = d.join("bin/app");
    write_worker(&app, "1");
    let master = || {
        let mut cmd = Command::new(OVERSEER);
        cmd.args([
            "run",
            "--no-control",
            "--listen",
            "127.0.0.1:0",
            "--ready",
            "notify",
        ])
        .args([
            "--app-version",
            "1.0.0",
            "--fetch-interval",
            "100ms",
            "--probation",
            "1s",
        ])
        .arg("--fetch-fleet")
        .arg(&fleet)
        .args(["--host-id", "host-1", "--public-key"])
        .arg(d.join("release.pub"))
        .args(["--sanity-check", "version", "--"])
        .arg(&app)
        .env("WORKER_READY", "notify");
        Proc::spawn(cmd)
    };
    let p = master();
    let addr = p.listen_addr();
    p.expect_line("worker 1 ready", T);
    let keep_alive = load(addr, 2, true);

    let build = d.join("build/app");
    write_worker(&build, "2");
    let out = run(Command::new(OVERSEER)
        .args(["publish", "--key"])
        .arg(&key)
        .args(["--version", "2.0.0"])
        .arg(&build)
        .arg(&fleet));
    assert!(out.status.success(), "{out:?}");
    p.expect_line("taking 2.0.0", T);
    p.expect_line("installed version 2.0.0", T);
    let deadline = std::time::Instant::now() + T;
    loop {
        let answer = Client::new(addr, false).get("/").expect("GET /");
        if answer.field("version") == Some("2") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "version 2 never served"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_no_failures("keep-alive", &keep_alive.stop());

    // The highest serial seen outlives the master: a restarted one refuses
    // the older manifest served again (a replay).
    let old_manifest = std::fs::read(fleet.join("manifest.json")).expect("manifest");
    let old_signature = std::fs::read(fleet.join("manifest.json.minisig")).expect("signature");
    let out = rollout(&[
        "halt",
        "--key",
        &key.to_string_lossy(),
        &fleet.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let ledger = d.join("bin/.app.overseer-state");
    wait_for_line(&ledger, "manifest-serial 2");
    drop(p);
    std::fs::write(fleet.join("manifest.json.minisig"), old_signature).expect("replay");
    std::fs::write(fleet.join("manifest.json"), old_manifest).expect("replay");
    let again = master();
    again.expect_line("worker 1 ready", T);
    again.expect_line("serial 1 is lower than 2", T);

    // The manifest started over on purpose: forgotten by hand, the running
    // master takes it at its next poll and records its serial.
    let out = run(Command::new(OVERSEER)
        .args(["ledger", "reset-serial", "--bin"])
        .arg(&app));
    assert!(out.status.success(), "{out:?}");
    again.expect_line("reset by hand", T);
    wait_for_line(&ledger, "manifest-serial 1");
}

const T: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits (at most [`T`]) until the file at `path` holds `line`.
fn wait_for_line(path: &Path, line: &str) {
    let deadline = std::time::Instant::now() + T;
    while !std::fs::read_to_string(path)
        .unwrap_or_default()
        .contains(line)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{line:?} never written to {}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `publish --delta-from` between real binaries (the system's `ls` and
/// `dir`, `true` and `false`: builds of one source that differ a little):
/// the patch listed in the manifest, applied as hosts apply it, rebuilds
/// the new binary byte for byte, and is a small part of it.
#[test]
fn publish_makes_patches_between_real_binaries_that_rebuild_them_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (key, public) = keygen(d, "release");
    let dest = d.join("fleet");
    for (i, (old, new)) in [("/bin/ls", "/bin/dir"), ("/bin/true", "/bin/false")]
        .into_iter()
        .enumerate()
    {
        let (old, new) = (Path::new(old), Path::new(new));
        if !old.is_file() || !new.is_file() {
            eprintln!(
                "{} or {} missing; pair skipped",
                old.display(),
                new.display()
            );
            continue;
        }
        let version = format!("{}.0.0", i + 1);
        let out = publish(
            &key,
            &version,
            TARGET,
            &["--delta-from", old.to_str().expect("utf-8")],
            new,
            &dest,
        );
        assert!(out.status.success(), "{out:?}");
        let m = manifest(&dest, &public);
        let release = m
            .releases
            .iter()
            .find(|r| r.version == version)
            .expect("the release");
        let artifact = &release.artifacts[TARGET];
        let old_bytes = std::fs::read(old).expect("old");
        let new_bytes = std::fs::read(new).expect("new");
        let patch = &artifact.patches[0];
        assert_eq!(patch.base, sha256_hex(&old_bytes));
        assert!(
            patch.size * 4 < new_bytes.len() as u64,
            "{}: a patch of {} bytes for {}",
            new.display(),
            patch.size,
            new_bytes.len()
        );
        let mut file = std::fs::File::open(dest.join(&patch.path)).expect("the patch");
        let mut rebuilt = Vec::new();
        let r = overseer::delta::apply(
            &mut file,
            std::io::Cursor::new(&old_bytes),
            &mut rebuilt,
            patch.size,
            artifact.size,
        )
        .expect("the patch applies");
        assert_eq!(rebuilt, new_bytes, "{}", new.display());
        assert_eq!(
            (r.sha256.as_str(), r.patch_sha256.as_str()),
            (artifact.sha256.as_str(), patch.sha256.as_str())
        );
    }
}
