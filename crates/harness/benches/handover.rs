//! Handover benchmark: closed-loop load against the `http_std` example under
//! overseer while the master is told to restart (SIGUSR2) again and again.
//!
//! ```text
//! cargo bench -p overseer-harness --bench handover
//! cargo bench -p overseer-harness --bench handover -- --handovers 10 --clients 4 --interval-ms 100 --mode close
//! cargo bench -p overseer-harness --bench handover -- --testserver          # the same server as the test server
//! cargo bench -p overseer-harness --bench handover -- --testserver --steer  # …with connection steering
//! ```
//!
//! Prints one table (requests, failures by kind, latency in steady state and
//! within handover windows, trigger-to-ready times, the master's memory and
//! descriptors) and exits non-zero if any request or handover failed. Traffic
//! stays on loopback; every wait is bounded; the master and its workers are
//! killed by process group at the end of each run.

use std::process::Command;
use std::time::{Duration, Instant};

use overseer_harness::client::wait_serving;
use overseer_harness::load::{Load, LoadSpec, Stats};
use overseer_harness::proc::{open_fds, parse_ready_after, rss_kb, Proc};

/// How long a freshly started server may take to answer.
const SERVING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

const EXAMPLE: &str = env!("CARGO_BIN_EXE_example-http-std");
/// The same server with switches (`TS_STEER=1`: connection steering).
const TESTSERVER: &str = env!("CARGO_BIN_EXE_testserver");
/// How long one handover may take before it counts as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// A handover window lasts from the trigger until this long after the ready line.
const WINDOW_TAIL: Duration = Duration::from_millis(500);
/// Steady state measured before the first and after the last handover window.
const STEADY: Duration = Duration::from_secs(1);
/// The report's rows, in the order of [`Run::values`].
const LABELS: [&str; 18] = [
    "requests",
    "req/s",
    "failures: refused",
    "failures: reset",
    "failures: timeout",
    "failures: truncated",
    "failures: non-2xx",
    "failures: other",
    "requests steady / in windows",
    "latency p50 steady",
    "latency p99 steady",
    "latency p50 handover windows",
    "latency p99 handover windows",
    "handovers ok / failed",
    "trigger→ready min/med/max",
    "master 'ready after' min/med/max",
    "master RSS start → end",
    "master open fds start → end",
];

struct Options {
    clients: usize,
    handovers: usize,
    interval: Duration,
    modes: Vec<&'static str>,
    /// Run the test server instead of the example.
    testserver: bool,
    /// … with connection steering.
    steer: bool,
}

/// One handover, as offsets since the load started.
struct Handover {
    trigger: Duration,
    ready: Option<Duration>,
}

/// What one mode's run measured.
struct Run {
    mode: &'static str,
    stats: Stats,
    elapsed: Duration,
    handovers: Vec<Handover>,
    ready_after_ms: Vec<f64>,
    restart_failed: usize,
    /// The master's (RSS kB, open fds) before the load and after the last drain.
    start: (String, String),
    end: (String, String),
}

impl Run {
    fn requests(&self) -> u64 {
        self.stats.ok + self.stats.failures.len() as u64
    }

    /// Whether a request running from `start` for `len` overlaps a handover window.
    fn in_window(&self, start: Duration, len: Duration) -> bool {
        self.handovers.iter().any(|h| {
            let end = h
                .ready
                .map_or(h.trigger + READY_TIMEOUT, |r| r + WINDOW_TAIL);
            start <= end && start + len >= h.trigger
        })
    }

    fn trigger_to_ready_ms(&self) -> Vec<f64> {
        let ms = |h: &Handover| h.ready.map(|r| (r - h.trigger).as_secs_f64() * 1e3);
        self.handovers.iter().filter_map(ms).collect()
    }

    fn failed_handovers(&self) -> usize {
        self.handovers.iter().filter(|h| h.ready.is_none()).count() + self.restart_failed
    }

    /// The report's values for this run, one per [`LABELS`] entry.
    fn values(&self) -> Vec<String> {
        let (mut steady, mut window) = (Vec::new(), Vec::new());
        for &(start, len) in &self.stats.latencies {
            let in_window = self.in_window(start, len);
            [&mut steady, &mut window][usize::from(in_window)].push(len.as_secs_f64() * 1e3);
        }
        let (steady, window) = (sorted(steady), sorted(window));
        let kinds = self.stats.failure_kinds();
        let rate = self.requests() as f64 / self.elapsed.as_secs_f64();
        let mut v = vec![self.requests().to_string(), format!("{rate:.0}")];
        for label in &LABELS[2..8] {
            let kind = label.trim_start_matches("failures: ");
            v.push(kinds.get(kind).copied().unwrap_or(0).to_string());
        }
        v.extend([
            format!("{} / {}", steady.len(), window.len()),
            ms(percentile(&steady, 50.0)),
            ms(percentile(&steady, 99.0)),
            ms(percentile(&window, 50.0)),
            ms(percentile(&window, 99.0)),
            format!(
                "{} / {}",
                self.trigger_to_ready_ms().len(),
                self.failed_handovers()
            ),
            min_med_max(self.trigger_to_ready_ms()),
            min_med_max(self.ready_after_ms.clone()),
            format!("{} → {} kB", self.start.0, self.end.0),
            format!("{} → {}", self.start.1, self.end.1),
        ]);
        v
    }
}

fn main() {
    let opts = parse_args();
    println!(
        "handover bench: {} clients, {} handovers every {} ms, modes {}",
        opts.clients,
        opts.handovers,
        opts.interval.as_millis(),
        opts.modes.join(",")
    );
    let run = |&mode: &&'static str| run_mode(&opts, mode);
    let runs: Vec<Run> = opts.modes.iter().map(run).collect();
    print_report(&runs);
    let handovers: usize = runs.iter().map(|r| r.trigger_to_ready_ms().len()).sum();
    let requests: u64 = runs.iter().map(Run::requests).sum();
    let failures: usize = runs.iter().map(|r| r.stats.failures.len()).sum();
    let failed_handovers: usize = runs.iter().map(Run::failed_handovers).sum();
    if failed_handovers > 0 {
        println!("{failed_handovers} handover(s) failed or timed out");
    }
    println!("handover bench: {handovers} handovers, {requests} requests, {failures} failures");
    if failures > 0 || failed_handovers > 0 {
        std::process::exit(1);
    }
}

fn parse_args() -> Options {
    let mut opts = Options {
        clients: 8,
        handovers: 20,
        interval: Duration::from_millis(250),
        modes: vec!["keepalive", "close"],
        testserver: false,
        steer: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> u64 {
            let v = args.next().unwrap_or_default();
            let bad = |_| usage(&format!("{name}: bad number {v:?}"));
            v.parse().unwrap_or_else(bad)
        };
        match arg.as_str() {
            "--clients" => opts.clients = number(&arg).clamp(1, 1024) as usize,
            "--handovers" => opts.handovers = number(&arg).min(10_000) as usize,
            "--interval-ms" | "--seconds-between" => {
                opts.interval = Duration::from_millis(number(&arg).min(60_000));
            }
            "--mode" => {
                opts.modes = match args.next().as_deref() {
                    Some("keepalive") => vec!["keepalive"],
                    Some("close") => vec!["close"],
                    Some("both") => vec!["keepalive", "close"],
                    other => usage(&format!("--mode keepalive|close|both, not {other:?}")),
                }
            }
            "--testserver" => opts.testserver = true,
            "--steer" => {
                opts.testserver = true;
                opts.steer = true;
            }
            // `cargo bench` passes `--bench`.
            "--bench" => {}
            other => eprintln!("handover bench: ignoring argument {other:?}"),
        }
    }
    opts
}

fn usage(problem: &str) -> ! {
    eprintln!("handover bench: {problem}");
    eprintln!("usage: [--clients N] [--handovers N] [--interval-ms MS] [--mode M]");
    std::process::exit(2);
}

fn run_mode(opts: &Options, mode: &'static str) -> Run {
    let server = if opts.testserver { TESTSERVER } else { EXAMPLE };
    println!(
        "[{mode}] starting {server}{}",
        if opts.steer { " (steering)" } else { "" }
    );
    let mut cmd = Command::new(server);
    cmd.arg("127.0.0.1:0");
    if opts.steer {
        cmd.env("TS_STEER", "1");
    }
    let proc = Proc::spawn_quiet(cmd);
    let addr = proc.listen_addr();
    proc.expect_line("worker 1 ready after", Duration::from_secs(20));
    wait_serving(addr, SERVING_TIMEOUT);
    let start = master_figures(proc.pid);

    let bound = (opts.interval + READY_TIMEOUT) * opts.handovers as u32 + Duration::from_secs(30);
    let origin = Instant::now();
    let load = Load::start(LoadSpec {
        addr,
        clients: opts.clients,
        keep_alive: mode == "keepalive",
        path: "/".into(),
        max_duration: bound,
        pause: Duration::ZERO,
    });
    std::thread::sleep(STEADY);
    let mut handovers = Vec::with_capacity(opts.handovers);
    for number in 2..opts.handovers + 2 {
        if number > 2 {
            std::thread::sleep(opts.interval);
        }
        let trigger = origin.elapsed();
        proc.signal(overseer::SIGUSR2);
        let needle = format!("worker {number} ready after");
        let ready = wait_line(&proc, &needle, READY_TIMEOUT).then(|| origin.elapsed());
        handovers.push(Handover { trigger, ready });
        if ready.is_none() {
            println!("[{mode}] worker {number} not ready within {READY_TIMEOUT:?}; stopping early");
            break;
        }
    }
    std::thread::sleep(WINDOW_TAIL + STEADY);
    let stats = load.stop();
    let elapsed = origin.elapsed();

    // Let the last replaced worker finish draining before the closing figures.
    if handovers.last().is_some_and(|h| h.ready.is_some()) {
        let needle = format!("worker {} drained (", handovers.len());
        wait_line(&proc, &needle, Duration::from_secs(5));
    }
    let end = master_figures(proc.pid);
    let output = proc.output();
    let said = |l: &&String| l.contains("error:") || l.contains("warn:");
    for line in output.iter().filter(said) {
        println!("[{mode}] output: {line}");
    }
    Run {
        mode,
        ready_after_ms: parse_ready_after(&output),
        restart_failed: output
            .iter()
            .filter(|l| l.contains("restart failed"))
            .count(),
        stats,
        elapsed,
        handovers,
        start,
        end,
    }
}

/// Polls the output every millisecond for a line containing `needle`.
fn wait_line(proc: &Proc, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if proc.count(needle) > 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// The master's RSS (kB) and open descriptor count, "?" where unreadable.
fn master_figures(pid: i32) -> (String, String) {
    let show = |v: Option<String>| v.unwrap_or_else(|| "?".into());
    let rss = show(rss_kb(pid).map(|v| v.to_string()));
    (rss, show(open_fds(pid).map(|v| v.to_string())))
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    sorted
        .get(((last as f64) * p / 100.0).round() as usize)
        .copied()
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3} ms"))
}

fn min_med_max(v: Vec<f64>) -> String {
    let v = sorted(v);
    match (v.first(), percentile(&v, 50.0), v.last()) {
        (Some(a), Some(b), Some(c)) => format!("{a:.1} / {b:.1} / {c:.1} ms"),
        _ => "-".into(),
    }
}

fn print_report(runs: &[Run]) {
    println!();
    for r in runs {
        let list: Vec<String> = r
            .trigger_to_ready_ms()
            .iter()
            .map(|v| format!("{v:.1}"))
            .collect();
        println!(
            "[{}] trigger→ready per handover (ms): {}",
            r.mode,
            list.join(" ")
        );
        for (at, f) in r.stats.failures.iter().take(10) {
            println!("[{}] failure at {:.3} s: {f}", r.mode, at.as_secs_f64());
        }
    }
    let columns: Vec<Vec<String>> = runs.iter().map(Run::values).collect();
    let width = LABELS.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let col = columns.iter().flatten().map(|v| v.chars().count()).max();
    let col = col.unwrap_or(0);
    let header: Vec<String> = runs.iter().map(|r| format!("{:>col$}", r.mode)).collect();
    println!("\n{:width$}  {}", "", header.join("  "));
    for (i, label) in LABELS.iter().enumerate() {
        let cells: Vec<String> = columns.iter().map(|c| format!("{:>col$}", c[i])).collect();
        println!("{label:width$}  {}", cells.join("  "));
    }
    println!();
}
