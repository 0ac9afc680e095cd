//! `--help` is complete for every subcommand: it succeeds, and documents
//! the options a user reaches for first.

use std::process::Command;

const OVERSEER: &str = env!("CARGO_BIN_EXE_overseer");

fn help(args: &[&str]) -> String {
    let out = Command::new(OVERSEER)
        .args(args)
        .arg("--help")
        .output()
        .expect("run overseer");
    assert!(out.status.success(), "{args:?} --help: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_subcommand_has_complete_help() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &[],
            &["run", "restart", "status", "keygen", "sign", "ledger"],
        ),
        (&["ledger"], &["show", "reset-floor"]),
        (&["ledger", "show"], &["--bin"]),
        (
            &["ledger", "reset-floor"],
            &["--bin", "--to", "Example", "Exit status"],
        ),
        (
            &["run"],
            &[
                "--listen",
                "--config",
                "--ready",
                "--ready-timeout",
                "--terminate-timeout",
                "--restart-signal",
                "--name",
                "--control",
                "--fetch-url",
                "--fetch-github",
                "--fetch-s3",
                "--fetch-azure",
                "--fetch-gcs",
                "--gcs-endpoint",
                "--public-key",
                "--sanity-check",
                "Examples",
            ],
        ),
        (
            &["restart"],
            &["--name", "--control", "--timeout", "Exit status"],
        ),
        (
            &["status"],
            &["--name", "--control", "--raw", "Exit status"],
        ),
        (&["keygen"], &["--out", "--password-env"]),
        (&["sign"], &["--key", "--version", "--target"]),
    ];
    for (args, needles) in cases {
        let text = help(args);
        for needle in *needles {
            assert!(
                text.contains(needle),
                "`overseer {} --help` does not mention {needle}:\n{text}",
                args.join(" ")
            );
        }
    }
}

#[test]
fn no_subcommand_is_a_usage_error() {
    let out = Command::new(OVERSEER).output().expect("run overseer");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
