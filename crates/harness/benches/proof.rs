//! Proof benchmark: open-loop, constant-rate load against the `http_std`
//! example under overseer while the master is told to restart (SIGUSR2) at a
//! fixed pace, then the same binary run directly (no master) at the same
//! rate, with PASS/FAIL against the project's targets.
//!
//! ```text
//! cargo bench -p overseer-harness --bench proof
//! cargo bench -p overseer-harness --bench proof -- --rate 5000 --handovers 50 --handover-every 200ms
//! cargo bench -p overseer-harness --bench proof -- --mode close --upgrades 3 --upgrade-every 2s --max-throughput
//! ```
//!
//! Requests are due at fixed intervals (`--rate`), spread over
//! `--connections` threads that each own a client; latency counts from the
//! scheduled time, so a stall's queueing is measured, not omitted (see
//! `overseer_harness::openloop`). The direct run is the same example binary in
//! overseer's fallback mode: the master cannot create its private runtime
//! directory (`TMPDIR` points nowhere), so `overseer::run` runs the program
//! in-process on a listener it binds itself — the same HTTP code, no master,
//! no socket passing. While it runs, a second process of the same binary is
//! started beside it and stopped on the handover schedule: the windows of
//! those starts are the control for the handover windows (what a process
//! starting and ending costs the busy server next to it). Results go to
//! `target/proof/results.json` and `target/proof/latency.svg` (or `--out
//! DIR`). Every wait is bounded; each server is killed by process group at
//! the end of its run, each neighbour by its pid.

#[path = "proof/chart.rs"]
mod chart;
#[path = "proof/report.rs"]
mod report;
#[path = "proof/run.rs"]
mod run;
#[path = "proof/scenario.rs"]
mod scenario;

use std::path::{Path, PathBuf};
use std::time::Duration;

use overseer_harness::openloop::percentile;
use overseer_harness::proc::binary_summary;
use overseer_harness::release::IdleCost;
use serde_json::{json, Value};

use report::{report, Report};
use run::Run;
use scenario::{capacity, idle, run_direct, run_overseer, run_upgrades, Capacity};

const EXAMPLE: &str = env!("CARGO_BIN_EXE_example-http-std");
const APP: &str = env!("CARGO_BIN_EXE_upgrade-app");
/// Rounds of A B C C B A in the capacity measurement (overseer, direct, control).
const CAPACITY_ROUNDS: usize = 5;
/// How long one handover may take before it counts as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an upgrade may take, from publishing to the new version's probation passing.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(60);
/// Failure kinds, in report order.
const KINDS: [&str; 6] = [
    "refused",
    "reset",
    "timeout",
    "truncated",
    "non-2xx",
    "other",
];
/// Chart bucket: one p50/p99 point per this much schedule.
const BUCKET: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    KeepAlive,
    Close,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keep-alive",
            Mode::Close => "connection per request",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keepalive",
            Mode::Close => "close",
        }
    }
}

struct Options {
    rate: f64,
    connections: usize,
    handovers: usize,
    every: Duration,
    upgrades: usize,
    /// How often a new build is published (at most: one at a time).
    upgrade_every: Duration,
    steady: Duration,
    timeout: Duration,
    modes: Vec<Mode>,
    max_throughput: bool,
    capacity_secs: Duration,
    /// How long to measure an idle master with a fetcher (zero: not at all).
    idle: Duration,
    /// CPUs for the servers (every master, worker and direct server) and for
    /// this process, the load generator: empty, the same as everything.
    server_cpus: Vec<usize>,
    load_cpus: Vec<usize>,
    out: PathBuf,
}

fn main() {
    let mut opts = parse_args();
    if !opts.load_cpus.is_empty() && opts.server_cpus.is_empty() {
        // Servers would inherit the generator's CPUs: give them all of ours.
        opts.server_cpus = own_cpus();
    }
    if !opts.load_cpus.is_empty() {
        pin_load(&opts.load_cpus);
    }
    if !opts.server_cpus.is_empty() {
        let list: Vec<String> = opts.server_cpus.iter().map(usize::to_string).collect();
        // Set once, before any server starts.
        let _ = scenario::SERVER_CPUS.set(list.join(","));
        println!(
            "servers on CPUs {}, load generator on CPUs {}",
            list.join(","),
            if opts.load_cpus.is_empty() {
                "any".to_string()
            } else {
                format!("{:?}", opts.load_cpus)
            }
        );
    }
    println!(
        "proof bench: {} req/s open loop over {} connections, {} handovers every {} ms, {} upgrades every {} ms, modes {}",
        opts.rate,
        opts.connections,
        opts.handovers,
        opts.every.as_millis(),
        opts.upgrades,
        opts.upgrade_every.as_millis(),
        opts.modes.iter().map(|m| m.key()).collect::<Vec<_>>().join(",")
    );
    println!(
        "binaries: example-http-std {}; upgrade-app {}",
        binary_summary(Path::new(EXAMPLE)),
        binary_summary(Path::new(APP))
    );
    let mut results = Vec::new();
    for &mode in &opts.modes {
        println!(
            "[{}] under overseer, {} handovers",
            mode.key(),
            opts.handovers
        );
        let ours = run_overseer(&opts, mode);
        println!(
            "[{}] direct, same rate for {:.1} s",
            mode.key(),
            ours.span.as_secs_f64()
        );
        let direct = run_direct(&opts, mode, ours.span);
        let upgrades = (opts.upgrades > 0).then(|| {
            println!(
                "[{}] under overseer, {} upgrades, one every {} ms at most",
                mode.key(),
                opts.upgrades,
                opts.upgrade_every.as_millis()
            );
            run_upgrades(&opts, mode)
        });
        results.push((mode, ours, direct, upgrades));
    }
    let capacity = opts.max_throughput.then(|| capacity(&opts));
    let idle = (!opts.idle.is_zero()).then(|| {
        println!(
            "idle master with a fetcher, polling every 1 s, for {:?}",
            opts.idle
        );
        idle(&opts)
    });
    let report = report(&opts, &results, capacity.as_ref(), idle.as_ref());
    print!("{}", report.text);
    write_outputs(&opts, &results, capacity.as_ref(), idle.as_ref(), &report);
    // Timing targets only print FAIL; a failed request or handover is an error.
    let broken = results.iter().any(|(_, ours, direct, upgrades)| {
        let failed_upgrades = upgrades
            .as_ref()
            .map_or(0, |u| u.failed() + u.failed_handovers());
        ours.failed() + ours.failed_handovers() + direct.failed() + failed_upgrades > 0
    });
    if broken {
        std::process::exit(1);
    }
}

fn parse_args() -> Options {
    let mut opts = Options {
        rate: 5000.0,
        connections: 16,
        handovers: 20,
        every: Duration::from_millis(200),
        upgrades: 0,
        upgrade_every: Duration::from_secs(1),
        steady: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
        modes: vec![Mode::KeepAlive, Mode::Close],
        max_throughput: false,
        capacity_secs: Duration::from_secs(10),
        idle: Duration::from_secs(20),
        server_cpus: Vec::new(),
        load_cpus: Vec::new(),
        out: default_out(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        let number = |v: String| -> f64 {
            v.parse()
                .ok()
                .filter(|n: &f64| n.is_finite() && *n >= 0.0)
                .unwrap_or_else(|| usage(&format!("{arg}: bad number {v:?}")))
        };
        match arg.as_str() {
            "--rate" => opts.rate = number(value()).clamp(1.0, 1e6),
            "--connections" => opts.connections = number(value()).clamp(1.0, 1024.0) as usize,
            "--handovers" => opts.handovers = number(value()).min(10_000.0) as usize,
            "--handover-every" => opts.every = duration(&arg, &value()),
            "--upgrades" => opts.upgrades = number(value()).min(100.0) as usize,
            "--upgrade-every" => opts.upgrade_every = duration(&arg, &value()),
            "--steady" => opts.steady = duration(&arg, &value()),
            "--timeout" => opts.timeout = duration(&arg, &value()),
            "--capacity-seconds" => opts.capacity_secs = duration(&arg, &format!("{}s", value())),
            "--idle-seconds" => opts.idle = duration(&arg, &format!("{}s", value())),
            "--max-throughput" => opts.max_throughput = true,
            "--server-cpus" => opts.server_cpus = cpu_list(&arg, &value()),
            "--load-cpus" => opts.load_cpus = cpu_list(&arg, &value()),
            "--out" => opts.out = PathBuf::from(value()),
            "--mode" => {
                opts.modes = match value().as_str() {
                    "keepalive" | "keep-alive" => vec![Mode::KeepAlive],
                    "close" => vec![Mode::Close],
                    "both" => vec![Mode::KeepAlive, Mode::Close],
                    other => usage(&format!("--mode keepalive|close|both, not {other:?}")),
                }
            }
            // `cargo bench` passes `--bench`.
            "--bench" => {}
            "--help" | "-h" => usage("options"),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    opts
}

/// CPU numbers as `taskset --cpu-list` takes them: `0`, `0,2`, `0-3`.
fn cpu_list(name: &str, v: &str) -> Vec<usize> {
    let bad = || usage(&format!("{name}: bad CPU list {v:?} (say 1, 0,2 or 0-3)"));
    let mut cpus = Vec::new();
    for part in v.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (lo, hi): (usize, usize) = match (lo.trim().parse(), hi.trim().parse()) {
            (Ok(lo), Ok(hi)) if lo <= hi && hi < 1024 => (lo, hi),
            _ => bad(),
        };
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

/// The CPUs this process may run on.
fn own_cpus() -> Vec<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    match sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
        Err(e) => usage(&format!(
            "--load-cpus: cannot read this process's CPUs: {e}"
        )),
    }
}

/// Pins this thread, and so the threads and processes it starts afterwards
/// (the load generator's; servers go through `taskset`), to `cpus`.
fn pin_load(cpus: &[usize]) {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    for &cpu in cpus {
        if set.set(cpu).is_err() {
            usage(&format!("--load-cpus: CPU {cpu} is out of range"));
        }
    }
    if let Err(e) = sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
        usage(&format!("--load-cpus {cpus:?}: {e}"));
    }
}

/// `200ms`, `1.5s` or a bare number of milliseconds.
fn duration(name: &str, v: &str) -> Duration {
    let (num, unit) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else {
        (v, 1e-3)
    };
    match num.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 && n * unit <= 3600.0 => {
            Duration::from_secs_f64(n * unit)
        }
        _ => usage(&format!("{name}: bad duration {v:?} (say 200ms or 1.5s)")),
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("proof bench: {problem}");
    eprintln!(
        "usage: [--rate R] [--connections N] [--handovers N] [--handover-every 200ms] \
         [--upgrades N] [--upgrade-every 1s] [--mode keepalive|close|both] [--steady 1s] [--timeout 5s] \
         [--max-throughput] [--capacity-seconds S] [--idle-seconds S] \
         [--server-cpus 1] [--load-cpus 0] [--out DIR]"
    );
    std::process::exit(2);
}

/// `target/proof`, found from this benchmark's own path (`target/<profile>/deps/proof-…`).
fn default_out() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    match exe.ancestors().nth(3) {
        Some(target) if target.ends_with("target") || target.join("CACHEDIR.TAG").exists() => {
            target.join("proof")
        }
        _ => PathBuf::from("target/proof"),
    }
}

fn write_outputs(
    opts: &Options,
    results: &[(Mode, Run, Run, Option<Run>)],
    capacity: Option<&Vec<Capacity>>,
    idle: Option<&IdleCost>,
    report: &Report,
) {
    if let Err(e) = std::fs::create_dir_all(&opts.out) {
        eprintln!("proof bench: cannot create {}: {e}", opts.out.display());
        return;
    }
    let modes: Vec<Value> = results
        .iter()
        .map(|(mode, ours, direct, upgrades)| {
            json!({"mode": mode.key(), "overseer": ours.json(), "direct": direct.json(),
                   "upgrades": upgrades.as_ref().map(Run::json)})
        })
        .collect();
    let capacity: Option<Vec<Value>> = capacity.map(|c| {
        c.iter()
            .map(|c| {
                json!({"mode": c.mode.key(), "overseer_rps": c.overseer_rps, "direct_rps": c.direct_rps,
                       "ratios": c.ratios, "median_ratio": c.median_ratio(), "failures": c.failures,
                       "overseer_cpu_us_per_request": c.overseer_cpu_us, "direct_cpu_us_per_request": c.direct_cpu_us,
                       "cpu_ratios": c.cpu_ratios, "median_cpu_ratio": c.median_cpu_ratio(),
                       "control_ratios": c.control_ratios, "median_control_ratio": c.median_control_ratio()})
            })
            .collect()
    });
    let doc = json!({
        "options": {
            "rate": opts.rate, "connections": opts.connections, "handovers": opts.handovers,
            "handover_every_ms": opts.every.as_millis() as u64, "upgrades": opts.upgrades,
            "upgrade_every_ms": opts.upgrade_every.as_millis() as u64,
            "server_cpus": opts.server_cpus, "load_cpus": opts.load_cpus,
            "steady_ms": opts.steady.as_millis() as u64, "timeout_ms": opts.timeout.as_millis() as u64,
        },
        "definitions": {
            "latency": "from the scheduled send time to the complete answer (open loop)",
            "window": "from the trigger to the old worker's exit; a request is in a window if [scheduled, answered] overlaps it",
            "handover_overhead": "trigger to the new program's first line",
        },
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).ok()},
        "binaries": {"example_http_std": binary_summary(Path::new(EXAMPLE)),
                     "upgrade_app": binary_summary(Path::new(APP))},
        "modes": modes,
        "capacity": capacity,
        "idle": idle.map(|i| json!({
            "interval_s": i.interval.as_secs_f64(), "span_s": i.span.as_secs_f64(),
            "cpu_percent": i.cpu_percent, "cpu_ms": i.cpu.as_secs_f64() * 1000.0,
            "requests": i.requests, "downloads": i.downloads, "rss_kb": i.rss_kb, "anon_kb": i.anon_kb,
        })),
        "targets": report.targets,
        "all_pass": report.all_pass,
    });
    let json_path = opts.out.join("results.json");
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    match std::fs::write(&json_path, text) {
        Ok(()) => println!("results: {}", json_path.display()),
        Err(e) => eprintln!("proof bench: cannot write {}: {e}", json_path.display()),
    }
    let panels: Vec<chart::Panel<'_>> = results
        .iter()
        .map(|(mode, ours, direct, _)| chart::Panel {
            title: format!(
                "{}: {} req/s open loop, {} handovers every {} ms",
                mode.name(),
                opts.rate,
                ours.handovers.len(),
                opts.every.as_millis()
            ),
            overseer: &ours.samples,
            direct: &direct.samples,
            windows: ours.windows(),
        })
        .chain(results.iter().filter_map(|(mode, _, _, upgrades)| {
            let run = upgrades.as_ref()?;
            Some(chart::Panel {
                title: format!(
                    "{}: {} req/s open loop, {} self-upgrades (window from publishing the release)",
                    mode.name(),
                    opts.rate,
                    run.handovers.len(),
                ),
                overseer: &run.samples,
                direct: &[],
                windows: run.windows(),
            })
        }))
        .collect();
    let caption = "Latency from the scheduled send time, per 100 ms of schedule (log scale). \
                   Shaded: from the trigger (signal, or publishing a release) to the old worker's exit.";
    let svg_path = opts.out.join("latency.svg");
    match std::fs::write(&svg_path, chart::svg(&panels, BUCKET, caption)) {
        Ok(()) => println!("chart: {}", svg_path.display()),
        Err(e) => eprintln!("proof bench: cannot write {}: {e}", svg_path.display()),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3} ms"))
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or("?".into(), |v| v.to_string())
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("x{:.3}", a / b)
    } else {
        "-".into()
    }
}

fn ratio_opt(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => ratio(a, b),
        _ => "-".into(),
    }
}

fn min_med_max(sorted: &[f64]) -> String {
    match (sorted.first(), percentile(sorted, 50.0), sorted.last()) {
        (Some(a), Some(b), Some(c)) => format!("{a:.1} / {b:.1} / {c:.1} ms"),
        _ => "-".into(),
    }
}
