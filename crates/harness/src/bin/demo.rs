//! The demo: `cargo run --release --bin overseer-demo`.
//!
//! Starts the `http_std` example under overseer on a loopback port, keeps four
//! keep-alive clients busy, restarts the service gracefully four times
//! (SIGUSR2 to the master) and narrates who answers, then stops the master
//! with SIGTERM. Every request is counted; the demo exits non-zero if any
//! failed. It takes about ten seconds.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use overseer_harness::client::Client;
use overseer_harness::load::{Load, LoadSpec};
use overseer_harness::proc::{describe, Proc};

const EXAMPLE: &str = "example-http-std";
const CLIENTS: usize = 4;
const RESTARTS: u32 = 4;
/// Restarts happen every `RESTART_EVERY`; the load runs for `RUN_FOR`.
const RESTART_EVERY: Duration = Duration::from_millis(1500);
const RUN_FOR: Duration = Duration::from_secs(8);

fn main() {
    let example = locate_example();
    println!(
        "overseer demo: {EXAMPLE} under overseer, {CLIENTS} keep-alive clients, \
         {RESTARTS} graceful restarts (SIGUSR2) over {} s\n",
        RUN_FOR.as_secs()
    );
    let mut cmd = Command::new(&example);
    cmd.arg("127.0.0.1:0");
    let mut proc = Proc::spawn_quiet(cmd);
    let mut narrator = Narrator::new(proc.pid);
    let addr = proc.listen_addr();
    narrator.say(&format!("master pid {} listening on {addr}", proc.pid));
    if !wait_serving(&proc, addr, &mut narrator) {
        eprintln!("the example never answered on {addr}; its output:");
        proc.output().iter().for_each(|l| eprintln!("  {l}"));
        std::process::exit(1);
    }

    let load = Load::start(LoadSpec {
        addr,
        clients: CLIENTS,
        keep_alive: true,
        path: "/".into(),
        max_duration: RUN_FOR + Duration::from_secs(10),
        pause: Duration::ZERO,
    });
    let start = Instant::now();
    let mut restarts = 0;
    while start.elapsed() < RUN_FOR {
        if restarts < RESTARTS && start.elapsed() >= RESTART_EVERY * (restarts + 1) {
            restarts += 1;
            narrator.say(&format!(
                ">>> SIGUSR2 to the master (restart {restarts} of {RESTARTS})"
            ));
            proc.signal(overseer::SIGUSR2);
        }
        narrator.tick(&proc, &load);
        std::thread::sleep(Duration::from_millis(5));
    }
    // The last worker should answer by now; give it a bounded moment if not.
    let last = u64::from(RESTARTS) + 1;
    let deadline = Instant::now() + Duration::from_secs(5);
    while load.latest_worker() < last && Instant::now() < deadline {
        narrator.tick(&proc, &load);
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = start.elapsed();
    let stats = load.stop();
    narrator.tick_log(&proc);

    let failed = stats.failures.len() as u64;
    let total = stats.ok + failed;
    println!("\nsummary");
    println!(
        "  requests   {total} in {:.1} s ({:.0}/s), {failed} failed",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    for (kind, n) in stats.failure_kinds() {
        println!("    {kind}: {n}");
    }
    for (at, f) in stats.failures.iter().take(10) {
        println!("    at {:.3} s: {f}", at.as_secs_f64());
    }
    for (worker, n) in &stats.by_worker {
        let pid = narrator
            .pids
            .get(worker)
            .map_or("?".into(), |p| p.to_string());
        println!("  worker {worker} (pid {pid:>7})  served {n:>8} requests");
    }
    let all_served = (1..=last).all(|w| stats.by_worker.contains_key(&w));
    if !all_served {
        println!("  not every worker 1..={last} answered: a restart did not complete");
    }

    println!("\nstopping: SIGTERM to the master (pid {})", proc.pid);
    proc.signal(nix::libc::SIGTERM);
    let status = proc.wait_exit(Duration::from_secs(15));
    narrator.tick_log(&proc);
    match status {
        Some(status) => println!("master exited: {}", describe(status)),
        None => println!("master still running after 15 s; killing it"),
    }
    drop(proc);
    if failed > 0 || !all_served || status.is_none() {
        println!("\ndemo FAILED: {failed} failed requests");
        std::process::exit(1);
    }
    println!("\ndemo ok: {total} requests across {RESTARTS} restarts, none failed");
}

/// The example lives next to this binary. Under `cargo run` (which builds
/// only the binary it runs) build it first, in the same profile.
fn locate_example() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| {
        eprintln!("cannot find the demo's own path: {e}");
        std::process::exit(2);
    });
    let dir = exe.parent().unwrap_or(Path::new("."));
    let path = dir.join(EXAMPLE);
    if let Some(cargo) = std::env::var_os("CARGO") {
        build_example(cargo, dir);
    }
    if !path.is_file() {
        eprintln!(
            "the example server is missing: {}\n\
             run the demo with `cargo run --release --bin overseer-demo` (it builds the \
             example itself), or build it first with \
             `cargo build --release -p overseer-harness --bin {EXAMPLE}`",
            path.display()
        );
        std::process::exit(2);
    }
    path
}

fn build_example(cargo: OsString, dir: &Path) {
    // target/debug holds the dev profile; any other directory is named after its profile.
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => "release",
    };
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let args = [
        "build",
        "--profile",
        profile,
        "-p",
        "overseer-harness",
        "--bin",
        EXAMPLE,
    ];
    println!("building the example server: cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .args(["--manifest-path", manifest])
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("building {EXAMPLE} failed ({}); trying anyway", describe(s)),
        Err(e) => eprintln!("cannot run cargo to build {EXAMPLE}: {e}; trying anyway"),
    }
}

/// Waits (bounded) until the example answers.
fn wait_serving(proc: &Proc, addr: std::net::SocketAddr, narrator: &mut Narrator) -> bool {
    for _ in 0..100 {
        narrator.tick_log(proc);
        if Client::new(addr, false)
            .timeout(Duration::from_secs(2))
            .get("/")
            .is_ok()
        {
            narrator.tick_log(proc);
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Prints what happens, with times since the demo started.
struct Narrator {
    origin: Instant,
    master: String,
    printed: usize,
    answering: u64,
    pids: BTreeMap<u64, i32>,
}

impl Narrator {
    fn new(master_pid: i32) -> Narrator {
        Narrator {
            origin: Instant::now(),
            master: format!("[overseer {master_pid}] "),
            printed: 0,
            answering: 0,
            pids: BTreeMap::new(),
        }
    }

    fn say(&self, what: &str) {
        println!("  +{:6.3}s  {what}", self.origin.elapsed().as_secs_f64());
    }

    /// Prints new output lines: the master's log, and the workers' own lines.
    fn tick_log(&mut self, proc: &Proc) {
        let output = proc.output();
        for line in output.iter().skip(self.printed) {
            // Master and workers share one stderr pipe and write a line in
            // several pieces, so a worker's fragment can precede a master line.
            let (worker, master) = match line.split_once(&self.master) {
                Some((worker, master)) => (worker, Some(master)),
                None => (line.as_str(), None),
            };
            if let Some((n, pid)) = parse_worker_line(worker) {
                self.pids.entry(n).or_insert(pid);
            }
            if !worker.is_empty() {
                self.say(&format!("        {worker}"));
            }
            if let Some(msg) = master {
                if let Some((n, pid)) = parse_started(msg) {
                    self.pids.insert(n, pid);
                }
                self.say(&format!("master: {msg}"));
            }
        }
        self.printed = output.len();
    }

    /// Prints new output, and a line whenever a new worker starts answering.
    fn tick(&mut self, proc: &Proc, load: &Load) {
        self.tick_log(proc);
        let latest = load.latest_worker();
        if latest != self.answering {
            self.answering = latest;
            let (ok, failed) = load.progress();
            let pid = self.pids.get(&latest).map_or("?".into(), |p| p.to_string());
            self.say(&format!(
                "worker {latest} (pid {pid}) now answering — {} requests so far, {failed} failed",
                ok + failed
            ));
        }
    }
}

/// `info: worker 3 started (pid 123)` → (3, 123).
fn parse_started(msg: &str) -> Option<(u64, i32)> {
    let rest = msg.strip_prefix("info: worker ")?;
    let (n, rest) = rest.split_once(" started (pid ")?;
    Some((n.parse().ok()?, rest.strip_suffix(')')?.parse().ok()?))
}

/// `worker=3 pid=123 id=… serving on …` → (3, 123).
fn parse_worker_line(line: &str) -> Option<(u64, i32)> {
    let mut fields = line.split_whitespace();
    let n = fields.next()?.strip_prefix("worker=")?.parse().ok()?;
    let pid = fields.next()?.strip_prefix("pid=")?.parse().ok()?;
    Some((n, pid))
}
