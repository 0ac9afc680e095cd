//! What an idle `overseer run` master costs: its RSS (and the anonymous part,
//! the memory that is its own rather than code pages mapped from files) and
//! CPU, without a fetcher and with the HTTP fetcher polling an unchanged
//! signed release on a loopback server every second.
//!
//! `cargo bench -p overseer-cli --bench idle` (set `IDLE_SECS` to change the
//! default of 20 s per master).
//!
//! The library's own master (`overseer::run` in the service's binary) is
//! measured by the proof benchmark in `overseer-harness`; this one is the
//! master of programs in any language.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use overseer_harness::proc::binary_summary;
use overseer_harness::release::{measure_idle, signed_release, IdleCost};

const OVERSEER: &str = env!("CARGO_BIN_EXE_overseer");
const RSS_TARGET_KIB: u64 = 4096;
const CPU_TARGET_PERCENT: f64 = 0.1;

fn main() {
    let secs = std::env::var("IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20u64)
        .clamp(1, 600);
    let span = Duration::from_secs(secs);
    let interval = Duration::from_secs(1);
    let dir = tempfile::tempdir().expect("a temporary directory");
    // The program: any long-running executable; `sleep` serves nothing, which
    // leaves the master's cost alone in the figures.
    let program = dir.path().join("app");
    let sleep = which::which("sleep").expect("sleep in PATH");
    std::fs::copy(&sleep, &program).expect("copy sleep");
    let bytes = std::fs::read(&program).expect("the program");
    println!(
        "overseer run master ({OVERSEER}, {}), idle for {secs} s each:",
        binary_summary(Path::new(OVERSEER))
    );

    let plain = measure_idle(master(&program, &[]), None, interval, span);
    report("no fetcher", &plain);

    let (server, keys) = signed_release(bytes, "1.0.0");
    let url = server.url("app");
    let fetching = measure_idle(
        master(
            &program,
            &[
                "--fetch-url",
                &url,
                "--fetch-interval",
                "1s",
                "--public-key",
                &keys.public,
                "--app-version",
                "1.0.0",
            ],
        ),
        Some((&server, "app")),
        interval,
        span,
    );
    report("HTTP fetcher, polling every 1 s", &fetching);
    println!(
        "  (requests to the release server: {} in {secs} s, {} full downloads; the rest 304 Not Modified)",
        fetching.requests, fetching.downloads
    );

    println!("targets:");
    for (what, cost) in [("no fetcher", &plain), ("HTTP fetcher", &fetching)] {
        let rss = cost.rss_kb.unwrap_or(u64::MAX);
        println!(
            "  [{}] master RSS < 4 MiB, {what}: {} KiB (anonymous {} KiB)",
            verdict(rss < RSS_TARGET_KIB),
            rss,
            cost.anon_kb.unwrap_or(0)
        );
    }
    println!(
        "  [{}] master idle CPU < {CPU_TARGET_PERCENT} % while polling every second: {:.3} %",
        verdict(fetching.cpu_percent < CPU_TARGET_PERCENT),
        fetching.cpu_percent
    );
}

/// `overseer run` on a loopback port with no control socket, then `args`.
fn master(program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(OVERSEER);
    cmd.args(["run", "--no-control", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--")
        .arg(program)
        .arg("3600");
    cmd
}

fn report(what: &str, cost: &IdleCost) {
    println!(
        "  {what:<32} RSS {:>6} KiB (anonymous {:>5} KiB), CPU {:.3} % ({:.1} ms)",
        cost.rss_kb.unwrap_or(0),
        cost.anon_kb.unwrap_or(0),
        cost.cpu_percent,
        cost.cpu.as_secs_f64() * 1e3
    );
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "FAIL"
    }
}
