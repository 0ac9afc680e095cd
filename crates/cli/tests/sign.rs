//! `overseer keygen` and `overseer sign` write the `minisign` tool's formats:
//! the real tool verifies what they make.

use std::path::Path;
use std::process::{Command, Output};

const OVERSEER: &str = env!("CARGO_BIN_EXE_overseer");

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn minisign_tool() -> bool {
    if Command::new("minisign").arg("-v").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("OVERSEER_SKIP_MINISIGN").is_some(),
        "the minisign tool is missing: install it (apt-get install minisign) or set OVERSEER_SKIP_MINISIGN=1"
    );
    false
}

#[test]
fn keygen_and_sign_are_verified_by_the_minisign_tool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let out = run(Command::new(OVERSEER).args(["keygen", "--out"]).arg(d));
    assert!(out.status.success(), "{out:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.join("overseer.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A second keygen does not overwrite the keys.
    let again = run(Command::new(OVERSEER).args(["keygen", "--out"]).arg(d));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let file = d.join("app");
    std::fs::write(&file, b"release bytes").expect("write");
    let out = run(Command::new(OVERSEER)
        .args(["sign", "--key"])
        .arg(d.join("overseer.key"))
        .args([
            "--version",
            "v1.2.3",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .arg(&file));
    assert!(out.status.success(), "{out:?}");
    let sig = std::fs::read_to_string(d.join("app.minisig")).expect("signature");
    assert!(
        sig.contains("version:1.2.3\ttarget:x86_64-unknown-linux-gnu"),
        "{sig}"
    );

    if minisign_tool() {
        let out = run(Command::new("minisign")
            .arg("-Vm")
            .arg(&file)
            .arg("-p")
            .arg(d.join("overseer.pub")));
        assert!(out.status.success(), "minisign refused it: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("version:1.2.3"), "{text}");
        // And a changed file fails.
        std::fs::write(&file, b"tampered").expect("write");
        let out = run(Command::new("minisign")
            .arg("-Vm")
            .arg(&file)
            .arg("-p")
            .arg(d.join("overseer.pub")));
        assert!(!out.status.success());
    }
}

#[test]
fn bad_input_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let file = d.join("app");
    std::fs::write(&file, b"x").expect("write");
    let cases: [(&[&str], &str); 3] = [
        (&["--version", "banana"], "not a semantic version"),
        (&["--version", "1.0.0"], "cannot read the secret key"),
        (&["--version", "1.0.0", "--target", ""], "must be one word"),
    ];
    for (args, expected) in cases {
        let out = run(Command::new(OVERSEER)
            .args(["sign", "--key"])
            .arg(d.join("missing.key"))
            .args(args)
            .arg(&file));
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    assert!(!Path::new(&format!("{}.minisig", file.display())).exists());
    // A file name that could be read as a field of the signed comment.
    let tabbed = d.join("app\tversion:99.0.0");
    std::fs::write(&tabbed, b"x").expect("write");
    let out = run(Command::new(OVERSEER)
        .args(["sign", "--key"])
        .arg(d.join("missing.key"))
        .args(["--version", "1.0.0"])
        .arg(&tabbed));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("control character"), "{err}");
    let out = run(Command::new(OVERSEER).args(["sign", "--bogus"]));
    assert!(!out.status.success());
}
