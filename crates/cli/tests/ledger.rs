//! `overseer ledger show` and `overseer ledger reset-floor` on a binary's
//! ledger file: what they print, bad input refused with status 2, and a
//! ledger that cannot be read refused with status 1 and left as it is.
//! (The reset applied by a running master is in `run.rs`.)

use std::path::Path;
use std::process::{Command, Output};

const OVERSEER: &str = env!("CARGO_BIN_EXE_overseer");

fn ledger(args: &[&str], bin: &Path) -> Output {
    Command::new(OVERSEER)
        .arg("ledger")
        .args(args)
        .arg("--bin")
        .arg(bin)
        .output()
        .expect("run overseer ledger")
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: &Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
}

#[test]
fn show_and_reset_floor_report_what_they_did_and_refuse_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("app");
    std::fs::write(&bin, b"binary").expect("write");
    let path = dir.path().join(".app.overseer-state");

    let shown = stdout(&ledger(&["show"], &bin));
    assert!(shown.contains("(none yet: no release seen)"), "{shown}");
    let sha = "ab".repeat(32);
    std::fs::write(&path, format!("highest-version 99.0.0\nbad {sha}\n")).expect("write");
    let shown = stdout(&ledger(&["show"], &bin));
    assert!(shown.contains("(the floor): 99.0.0"), "{shown}");
    assert!(
        shown.contains(&format!("not tried again: 1\n  {sha}")),
        "{shown}"
    );

    // Bad input: status 2, the ledger untouched.
    refused(
        &ledger(&["reset-floor", "--to", "nope"], &bin),
        2,
        "--to: \"nope\" is not a version",
    );
    refused(
        &ledger(&["show"], &dir.path().join("missing")),
        2,
        "no such file",
    );
    assert!(std::fs::read_to_string(&path)
        .expect("read")
        .starts_with("highest-version 99.0.0"));

    // Without --to the floor is removed; failed releases are kept.
    let said = stdout(&ledger(&["reset-floor"], &bin));
    assert!(said.contains("is now none (was 99.0.0)"), "{said}");
    let shown = stdout(&ledger(&["show"], &bin));
    assert!(shown.contains("(the floor): none"), "{shown}");
    assert!(shown.contains(&sha), "{shown}");

    // A ledger that cannot be read: status 1, named line, left as it is.
    let spoilt = b"highest-version 99.0.0\n# caf\xe9\n";
    std::fs::write(&path, spoilt).expect("write");
    refused(&ledger(&["show"], &bin), 1, "line 2: not valid UTF-8");
    refused(
        &ledger(&["reset-floor", "--to", "1.0.1"], &bin),
        1,
        "line 2: not valid UTF-8",
    );
    assert_eq!(std::fs::read(&path).expect("read"), spoilt);
}
