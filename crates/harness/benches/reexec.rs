//! Re-exec benchmark: closed-loop load (keep-alive and a connection per
//! request) against the test server under overseer while the master
//! re-executes itself again and again (`overseer::control::reload`, which
//! answers once the new image took over).
//!
//! ```text
//! cargo bench -p overseer-harness --bench reexec
//! cargo bench -p overseer-harness --bench reexec -- --reexecs 20 --clients 4
//! ```
//!
//! Prints: request → taken over (the client's view, the new binary's check
//! included) and the master's own exec → take-over time (min, median,
//! max); requests and failures during the run; latency p50/p99 in steady
//! state and inside re-exec windows; the master's RSS and open descriptors
//! before and after. Exits non-zero if a request or a re-exec failed.
//! Traffic stays on loopback; every wait is bounded; the master and its
//! workers are killed by process group at the end.

use std::process::Command;
use std::time::{Duration, Instant};

use overseer_harness::load::{Load, LoadSpec};
use overseer_harness::proc::{open_fds, rss_kb, Proc};

const SERVER: &str = env!("CARGO_BIN_EXE_testserver");
/// How long one re-exec may take before it counts as failed.
const TIMEOUT: Duration = Duration::from_secs(30);
/// A re-exec window lasts from the request until this long after the answer.
const WINDOW_TAIL: Duration = Duration::from_millis(100);
/// Steady state measured before the first re-exec.
const STEADY: Duration = Duration::from_secs(2);

fn main() {
    let mut reexecs = 100usize;
    let mut clients = 2usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&format!("{name} needs a number")))
        };
        match a.as_str() {
            "--reexecs" => reexecs = value("--reexecs").clamp(1, 10_000),
            "--clients" => clients = value("--clients").clamp(1, 64),
            "--bench" => {}
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let control = dir.path().join("control.sock");
    let mut cmd = Command::new(SERVER);
    cmd.env("TS_CONTROL", &control);
    let proc = Proc::spawn_quiet(cmd);
    let addr = proc.listen_addr();
    proc.expect_line("worker 1 ready", TIMEOUT);
    let spec = |keep_alive| LoadSpec {
        addr,
        clients,
        keep_alive,
        path: "/".into(),
        max_duration: Duration::from_secs(600),
        pause: Duration::ZERO,
    };
    let started = Instant::now();
    let loads = [Load::start(spec(true)), Load::start(spec(false))];
    std::thread::sleep(STEADY);
    let (rss_before, fds_before) = (rss_kb(proc.pid), open_fds(proc.pid));
    let mut windows = Vec::with_capacity(reexecs);
    let mut client_ms = Vec::with_capacity(reexecs);
    let mut master_ms = Vec::with_capacity(reexecs);
    let mut failed = 0;
    for _ in 0..reexecs {
        let at = Instant::now();
        match overseer::control::reload(&control, TIMEOUT) {
            Ok(r) => {
                let took = at.elapsed();
                client_ms.push(took.as_secs_f64() * 1000.0);
                master_ms.push(r.took.as_secs_f64() * 1000.0);
                windows.push((at - started, took + WINDOW_TAIL));
            }
            Err(e) => {
                eprintln!("re-exec failed: {e}");
                failed += 1;
            }
        }
    }
    std::thread::sleep(WINDOW_TAIL);
    let (rss_after, fds_after) = (rss_kb(proc.pid), open_fds(proc.pid));
    let [a, b] = loads;
    let (keep_alive, per_request) = (a.stop(), b.stop());
    drop(proc);
    let in_window = |start: Duration| {
        windows
            .iter()
            .any(|(w, len)| start >= *w && start < *w + *len)
    };
    let mut steady = Vec::new();
    let mut during = Vec::new();
    let mut requests = 0;
    let mut failures = 0;
    for stats in [&keep_alive, &per_request] {
        requests += stats.ok;
        failures += stats.failures.len();
        for (start, latency) in &stats.latencies {
            let ms = latency.as_secs_f64() * 1000.0;
            if *start < STEADY {
                steady.push(ms);
            } else if in_window(*start) {
                during.push(ms);
            }
        }
    }
    let rows = [
        (
            "re-execs ok / failed",
            format!("{} / {failed}", client_ms.len()),
        ),
        ("request→taken over min/med/max", min_med_max(client_ms)),
        ("master exec→taken over min/med/max", min_med_max(master_ms)),
        ("requests / failures", format!("{requests} / {failures}")),
        ("latency p50 / p99 steady", p50_p99(steady)),
        ("latency p50 / p99 in re-exec windows", p50_p99(during)),
        (
            "master RSS before → after",
            format!("{} → {} KiB", show(rss_before), show(rss_after)),
        ),
        (
            "master open fds before → after",
            format!("{} → {}", show(fds_before), show(fds_after)),
        ),
    ];
    println!("re-exec benchmark: {reexecs} re-execs, {clients} keep-alive + {clients} per-request clients");
    for (label, value) in rows {
        println!("  {label:<40} {value}");
    }
    for (mode, stats) in [("keep-alive", &keep_alive), ("per-request", &per_request)] {
        for (at, f) in stats.failures.iter().take(5) {
            println!("  {mode} failure at {at:?}: {f:?}");
        }
    }
    if failed > 0 || failures > 0 {
        std::process::exit(1);
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: reexec [--reexecs N] [--clients N]");
    std::process::exit(2)
}

fn show<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("?".into(), |v| v.to_string())
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied()
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2} ms"))
}

fn min_med_max(v: Vec<f64>) -> String {
    let v = sorted(v);
    format!(
        "{} / {} / {}",
        ms(v.first().copied()),
        ms(percentile(&v, 0.5)),
        ms(v.last().copied())
    )
}

fn p50_p99(v: Vec<f64>) -> String {
    let v = sorted(v);
    format!(
        "{} / {} ({} requests)",
        ms(percentile(&v, 0.5)),
        ms(percentile(&v, 0.99)),
        v.len()
    )
}
