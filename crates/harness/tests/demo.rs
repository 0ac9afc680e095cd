//! The README's demo (`cargo run --release --bin overseer-demo`) runs end to
//! end: live upgrades under load with zero failed requests, a broken release
//! rolled back, a tampered one rejected, and every process gone at the end.

use std::process::Command;
use std::time::Duration;

use overseer_harness::proc::{describe, send_signal, Proc};

/// The demo takes about 10 s (more with debug binaries); its own waits are
/// bounded too, so this is only a backstop.
const LIMIT: Duration = Duration::from_secs(180);

#[test]
fn demo_upgrades_live_with_zero_failures() {
    let mut demo = Proc::spawn_quiet(Command::new(env!("CARGO_BIN_EXE_overseer-demo")));
    let status = demo.wait_exit(LIMIT).or_else(|| {
        // SIGTERM lets the demo stop its master and clean up; then force it.
        demo.signal(nix::libc::SIGTERM);
        let status = demo.wait_exit(Duration::from_secs(45));
        if status.is_none() {
            kill_master(&demo.output());
        }
        status
    });
    let output = demo.output();
    let text = output.join("\n");
    let status = status.unwrap_or_else(|| panic!("the demo ran longer than {LIMIT:?}:\n{text}"));
    assert!(
        status.success(),
        "the demo ended with {}:\n{text}",
        describe(status)
    );
    let requests = output
        .iter()
        .find(|l| l.starts_with("  requests: "))
        .unwrap_or_else(|| panic!("no summary:\n{text}"));
    assert!(requests.contains(" ok, 0 failed"), "{requests}\n{text}");
    for line in [
        "failures by kind: non-2xx 0, other 0, refused 0, reset 0, timeout 0, truncated 0",
        "upgrade to version 4.0.0 rolled back",
        "rejected: bad signature",
        "binary on disk: version 3.0.0, byte for byte the published 3.0.0",
        "every process the demo started is gone",
        "demo ok",
    ] {
        assert!(text.contains(line), "missing {line:?}:\n{text}");
    }
    for version in ["1.0.0", "2.0.0", "3.0.0"] {
        let answered = output.iter().any(|l| {
            l.trim_start().starts_with(&format!("version {version} ")) && l.contains("worker")
        });
        assert!(answered, "version {version} did not answer:\n{text}");
    }
}

/// Ends the master of a demo that could not clean up (it runs in a process
/// group of its own, named in the demo's `master pid N` line).
fn kill_master(output: &[String]) {
    let pid = output
        .iter()
        .find_map(|l| l.split_once("master pid ")?.1.trim().parse::<i32>().ok());
    if let Some(pid) = pid {
        send_signal(-pid, nix::libc::SIGKILL);
    }
}
