//! The scenarios: the example under overseer with handovers, the same binary
//! run directly, self-upgrades, and closed-loop capacity; and a server's log
//! with the time each line was seen.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use overseer_harness::client::wait_serving;
use overseer_harness::load::{Load, LoadSpec};
use overseer_harness::openloop::{percentile, OpenLoop, OpenLoopSpec};
use overseer_harness::ports::free_port;
use overseer_harness::proc::{anon_kb, cpu_time, parse_ready_after, rss_kb, send_signal, Proc};
use overseer_harness::release::{
    idle_cost, signed_release, stamp, this_target, IdleCost, Keys, ReleaseServer,
};

use crate::run::{Handover, MasterFigures, Run};
use crate::{Mode, Options, APP, CAPACITY_ROUNDS, EXAMPLE, READY_TIMEOUT, UPGRADE_TIMEOUT};

/// `TMPDIR` for a server run directly: with no place for its private
/// runtime directory, the master cannot start and overseer runs the program
/// in-process.
const DIRECT_TMPDIR: &str = "/nonexistent/overseer-proof-direct";

/// How long a freshly started server may take to answer.
const SERVING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The CPUs every server runs on (`--server-cpus`), when set.
pub static SERVER_CPUS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A command for a server `program`: started through `taskset`, which sets
/// the CPUs and then executes the program in its own process (same pid), when
/// `--server-cpus` is given. The master's threads and workers inherit them.
fn server_command(program: &Path) -> Command {
    match SERVER_CPUS.get() {
        Some(cpus) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("--cpu-list").arg(cpus).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

pub fn load_spec(opts: &Options, mode: Mode, addr: SocketAddr, bound: Duration) -> OpenLoopSpec {
    OpenLoopSpec {
        addr,
        rate: opts.rate,
        connections: opts.connections,
        keep_alive: mode == Mode::KeepAlive,
        path: "/".into(),
        timeout: opts.timeout,
        max_duration: bound,
    }
}

/// Starts the example under overseer and waits until it answers.
pub fn start_overseer() -> (Proc, SocketAddr) {
    let mut cmd = server_command(Path::new(EXAMPLE));
    cmd.arg("127.0.0.1:0");
    let proc = Proc::spawn_quiet(cmd);
    let addr = proc.listen_addr();
    proc.expect_line("worker 1 ready after", Duration::from_secs(20));
    wait_serving(addr, SERVING_TIMEOUT);
    (proc, addr)
}

/// Starts the example directly (overseer's fallback mode) on a free port.
pub fn start_direct() -> (Proc, SocketAddr, Duration) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("an address");
    let mut cmd = server_command(Path::new(EXAMPLE));
    // No private runtime directory for a master: overseer runs the program directly.
    cmd.arg(addr.to_string()).env("TMPDIR", DIRECT_TMPDIR);
    let spawned = Instant::now();
    let proc = Proc::spawn_quiet(cmd);
    proc.expect_line("running the program directly", Duration::from_secs(20));
    wait_serving(addr, SERVING_TIMEOUT);
    (proc, addr, spawned.elapsed())
}

pub fn run_overseer(opts: &Options, mode: Mode) -> Run {
    let (proc, addr) = start_overseer();
    let before = MasterFigures::of(proc.pid);
    let bound = opts.steady * 2 + (opts.every + READY_TIMEOUT) * opts.handovers as u32;
    let load = OpenLoop::start(load_spec(opts, mode, addr, bound + Duration::from_secs(30)));
    let mut t = Tracker::new(&proc, load.origin());
    t.wait_until(opts.steady);
    let mut handovers = Vec::new();
    for k in 0..opts.handovers {
        let planned = opts.steady + opts.every * k as u32;
        t.wait_until(planned.max(t.now()));
        let number = k as u64 + 2;
        let trigger = t.now();
        proc.signal(overseer::SIGUSR2);
        let needle = format!("worker {number} ready after");
        let ready = t.wait_for(|l| l.contains(&needle), READY_TIMEOUT);
        handovers.push(Handover {
            number,
            trigger,
            program_start: None,
            ready,
            drained: None,
        });
        if ready.is_none() {
            println!(
                "[{}] worker {number} not ready within {READY_TIMEOUT:?}; stopping early",
                mode.key()
            );
            break;
        }
    }
    finish(t, load, handovers, before, opts.steady, |l, start| {
        l.starts_with(start)
    })
}

/// The example run directly for `span`, with a neighbour (see
/// [`neighbour`]) started and stopped beside it on the handover schedule.
pub fn run_direct(opts: &Options, mode: Mode, span: Duration) -> Run {
    let (proc, addr, _) = start_direct();
    let load = OpenLoop::start(load_spec(opts, mode, addr, span));
    let mut t = Tracker::new(&proc, load.origin());
    let mut neighbours = Vec::new();
    for k in 0..opts.handovers {
        let planned = opts.steady + opts.every * k as u32;
        if planned + opts.steady > span {
            break;
        }
        t.wait_until(planned.max(t.now()));
        neighbours.push(neighbour(k as u64 + 2, t.origin));
    }
    t.wait_until(span);
    let span = t.now();
    let samples = load.stop();
    t.pump();
    let output: Vec<String> = t.lines.iter().map(|(_, l)| l.clone()).collect();
    Run {
        samples,
        span,
        handovers: neighbours,
        before: MasterFigures::default(),
        after: MasterFigures::default(),
        rss_peak_kb: None,
        anon_at_peak_kb: None,
        ready_after_ms: Vec::new(),
        complaints: complaints(&output)
            .into_iter()
            .filter(|l| !l.contains("running the program directly"))
            .collect(),
    }
}

/// The control for handover windows: a second process of the example,
/// started beside the direct server (on a port of its own, also run
/// directly), stopped with SIGTERM as soon as it says it serves, and waited
/// for. Its window, from the start to its exit, is what a process of this
/// binary starting and ending costs a busy server next to it, with no
/// handover: no sockets passed, no clients moving over, no master.
/// `program_start` and `ready` are both its first line (`… serving on …`).
fn neighbour(number: u64, origin: Instant) -> Handover {
    let mut cmd = server_command(Path::new(EXAMPLE));
    cmd.arg("127.0.0.1:0")
        .env("TMPDIR", DIRECT_TMPDIR)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut h = Handover {
        number,
        trigger: origin.elapsed(),
        program_start: None,
        ready: None,
        drained: None,
    };
    let Ok(mut child) = cmd.spawn() else {
        return h;
    };
    let (tx, rx) = mpsc::channel();
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.contains(" serving on ") {
            h.program_start = Some(origin.elapsed());
            h.ready = h.program_start;
            break;
        }
    }
    let pid = child.id() as i32;
    let stop = if h.ready.is_some() {
        nix::libc::SIGTERM
    } else {
        nix::libc::SIGKILL
    };
    send_signal(pid, stop);
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => {
                h.drained = Some(origin.elapsed());
                break;
            }
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(100));
            }
            _ => {
                send_signal(pid, nix::libc::SIGKILL);
                let _ = child.wait();
                break;
            }
        }
    }
    h
}

/// Self-upgrades under load: `upgrade-app` polls a local release server every
/// 50 ms; a new signed build (a stamped copy of the same binary) is published
/// every `--upgrade-every`, or as soon as the one before has passed probation
/// if that takes longer. The trigger is the moment the release is published,
/// so the window includes download, verification, sanity check and swap.
pub fn run_upgrades(opts: &Options, mode: Mode) -> Run {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let bin = dir.path().join("app");
    stamp(Path::new(APP), &bin, "version=1.0.0").expect("install version 1.0.0");
    let keys = Keys::generate();
    let server = ReleaseServer::start();
    let mut cmd = server_command(&bin);
    cmd.env("UA_FETCH_URL", server.url("app"))
        .env("UA_PUBKEYS", &keys.public)
        .env("UA_INTERVAL_MS", "50")
        .env("UA_PROBATION_MS", "200");
    let proc = Proc::spawn_quiet(cmd);
    let addr = proc.listen_addr();
    proc.expect_line("worker 1 ready after", Duration::from_secs(20));
    wait_serving(addr, SERVING_TIMEOUT);
    let before = MasterFigures::of(proc.pid);
    let bound = opts.steady * 2 + (opts.upgrade_every + UPGRADE_TIMEOUT) * opts.upgrades as u32;
    let load = OpenLoop::start(load_spec(opts, mode, addr, bound + Duration::from_secs(30)));
    let mut t = Tracker::new(&proc, load.origin());
    let mut handovers = Vec::new();
    for k in 0..opts.upgrades {
        let version = format!("{}.0.0", k + 2);
        let file = dir.path().join("release.tmp");
        stamp(Path::new(APP), &file, &format!("version={version}")).expect("a build");
        let bytes = std::fs::read(&file).expect("the build");
        let signature = keys.sign(&bytes, &version, &this_target()).into_bytes();
        let planned = opts.steady + opts.upgrade_every * k as u32;
        t.wait_until(planned.max(t.now()));
        server.publish("app.minisig", signature);
        let trigger = t.now();
        server.publish("app", bytes);
        let number = k as u64 + 2;
        let needle = format!("version {version} passed probation");
        let passed = t.wait_for(|l| l.contains(&needle), UPGRADE_TIMEOUT);
        let ready = format!("worker {number} ready after");
        handovers.push(Handover {
            number,
            trigger,
            program_start: None,
            ready: t.find(|l| l.contains(&ready)),
            drained: None,
        });
        if passed.is_none() {
            println!("[{}] version {version} did not pass probation within {UPGRADE_TIMEOUT:?}; stopping early", mode.key());
            break;
        }
    }
    finish(t, load, handovers, before, opts.steady, |l, start| {
        l.contains(start) && l.contains("starting")
    })
}

/// Ends a run: waits for the last drain and a steady stretch, stops the
/// load, and dates each handover's new program start (a line containing
/// `worker=N pid=` that `is_start` accepts) and the old worker's drain.
fn finish(
    mut t: Tracker<'_>,
    load: OpenLoop,
    mut handovers: Vec<Handover>,
    before: MasterFigures,
    steady: Duration,
    is_start: impl Fn(&str, &str) -> bool,
) -> Run {
    if let Some(last) = handovers.last().filter(|h| h.ready.is_some()) {
        let needle = format!("worker {} drained (", last.number - 1);
        t.wait_for(|l| l.contains(&needle), Duration::from_secs(5));
    }
    t.wait_until(t.now() + steady);
    let span = t.now();
    let samples = load.stop();
    t.pump();
    for h in &mut handovers {
        let (start, drained) = (
            format!("worker={} pid=", h.number),
            format!("worker {} drained (", h.number - 1),
        );
        h.program_start = t.find(|l| is_start(l, &start));
        h.drained = t.find(|l| l.contains(&drained));
    }
    let after = MasterFigures::of(t.proc.pid);
    let output: Vec<String> = t.lines.iter().map(|(_, l)| l.clone()).collect();
    Run {
        samples,
        span,
        handovers,
        before,
        after,
        rss_peak_kb: t.rss_peak_kb,
        anon_at_peak_kb: t.anon_at_peak_kb,
        ready_after_ms: parse_ready_after(&output),
        complaints: complaints(&output),
    }
}

/// The master's idle cost with a fetcher: `upgrade-app` polling an unchanged
/// signed release every second, measured for `--idle-seconds`.
pub fn idle(opts: &Options) -> IdleCost {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let bin = dir.path().join("app");
    stamp(Path::new(APP), &bin, "version=1.0.0").expect("install version 1.0.0");
    let bytes = std::fs::read(&bin).expect("the build");
    let (server, keys) = signed_release(bytes, "1.0.0");
    idle_cost(
        &bin,
        &server,
        &keys.public,
        Duration::from_secs(1),
        opts.idle,
    )
}

/// Closed-loop capacity of one mode, both servers measured in turns.
pub struct Capacity {
    pub mode: Mode,
    /// Mean answered requests per second over every turn.
    pub overseer_rps: f64,
    pub direct_rps: f64,
    /// Overseer / direct per round (sorted); the verdict takes the median.
    pub ratios: Vec<f64>,
    /// The servers' own CPU time per answered request, in microseconds, over
    /// every turn (under overseer: master and worker together).
    pub overseer_cpu_us: f64,
    pub direct_cpu_us: f64,
    /// Direct / overseer CPU per request, per round (sorted): the capacity
    /// ratio the servers' own cost implies, whatever the load generator got.
    pub cpu_ratios: Vec<f64>,
    /// A second direct server / the direct one, per round (sorted): the same
    /// server against itself, so the spread this machine gives any ratio.
    pub control_ratios: Vec<f64>,
    pub failures: usize,
}

impl Capacity {
    pub fn median_ratio(&self) -> f64 {
        percentile(&self.ratios, 50.0).unwrap_or(0.0)
    }

    pub fn median_cpu_ratio(&self) -> f64 {
        percentile(&self.cpu_ratios, 50.0).unwrap_or(0.0)
    }

    pub fn median_control_ratio(&self) -> f64 {
        percentile(&self.control_ratios, 50.0).unwrap_or(0.0)
    }
}

/// The CPU time of processes, together.
fn cpu_of(pids: &[i32]) -> Duration {
    pids.iter().filter_map(|&pid| cpu_time(pid)).sum()
}

/// Saturates each server with closed-loop load (no pause between requests).
/// The servers run side by side (an idle one costs nothing) and are
/// measured in `CAPACITY_ROUNDS` rounds of A B C C B A, so a neighbour's load
/// drifting during the measurement biases none; single measurements on a
/// shared machine swing by ±8 %. A is overseer, B the server run directly,
/// C a second direct server: C / B is a control, the same server measured
/// against itself, which shows how far apart this machine puts equals.
pub fn capacity(opts: &Options) -> Vec<Capacity> {
    let turn = opts.capacity_secs / (2 * CAPACITY_ROUNDS as u32);
    // Answered requests per second, CPU seconds per answered request, failures.
    let measure = |addr: SocketAddr, pids: &[i32], mode: Mode| {
        let cpu = cpu_of(pids);
        let load = Load::start(LoadSpec {
            addr,
            clients: opts.connections,
            keep_alive: mode == Mode::KeepAlive,
            path: "/".into(),
            max_duration: turn + Duration::from_secs(30),
            pause: Duration::ZERO,
        });
        let started = Instant::now();
        std::thread::sleep(turn);
        let stats = load.stop();
        (
            stats.ok as f64 / started.elapsed().as_secs_f64(),
            cpu_of(pids).saturating_sub(cpu).as_secs_f64() / stats.ok.max(1) as f64,
            stats.failures.len(),
        )
    };
    opts.modes
        .iter()
        .map(|&mode| {
            println!(
                "[{}] capacity (closed loop, {} clients, {:?} per server in {CAPACITY_ROUNDS} rounds)",
                mode.key(),
                opts.connections,
                opts.capacity_secs
            );
            let (p1, ours) = start_overseer();
            let ours_pids = [p1.pid, p1.worker_pid(1, READY_TIMEOUT)];
            let (p2, theirs, _) = start_direct();
            let (p3, control, _) = start_direct();
            let servers: [(SocketAddr, &[i32]); 3] = [
                (ours, &ours_pids),
                (theirs, &[p2.pid]),
                (control, &[p3.pid]),
            ];
            let mut cap = Capacity {
                mode,
                overseer_rps: 0.0,
                direct_rps: 0.0,
                ratios: Vec::new(),
                overseer_cpu_us: 0.0,
                direct_cpu_us: 0.0,
                cpu_ratios: Vec::new(),
                control_ratios: Vec::new(),
                failures: 0,
            };
            let rounds = CAPACITY_ROUNDS as f64;
            for _ in 0..CAPACITY_ROUNDS {
                // Per server: mean rate and CPU per request over its two turns.
                let (mut rate, mut cpu) = ([0.0; 3], [0.0; 3]);
                for i in [0, 1, 2, 2, 1, 0] {
                    let (addr, pids) = servers[i];
                    let (r, c, failed) = measure(addr, pids, mode);
                    rate[i] += r / 2.0;
                    cpu[i] += c / 2.0;
                    cap.failures += failed;
                }
                cap.overseer_rps += rate[0] / rounds;
                cap.direct_rps += rate[1] / rounds;
                cap.ratios.push(rate[0] / rate[1].max(1e-9));
                cap.control_ratios.push(rate[2] / rate[1].max(1e-9));
                cap.overseer_cpu_us += cpu[0] * 1e6 / rounds;
                cap.direct_cpu_us += cpu[1] * 1e6 / rounds;
                cap.cpu_ratios.push(cpu[1] / cpu[0].max(1e-12));
            }
            for ratios in [&mut cap.ratios, &mut cap.cpu_ratios, &mut cap.control_ratios] {
                ratios.sort_by(f64::total_cmp);
            }
            drop((p1, p2, p3));
            cap
        })
        .collect()
}

pub fn complaints(output: &[String]) -> Vec<String> {
    let said = |l: &&String| l.contains("error:") || l.contains("warn:");
    output.iter().filter(said).cloned().collect()
}

/// A server's output with the time each line was first seen (polled every
/// millisecond while waiting), and the master's RSS sampled on the way.
pub struct Tracker<'a> {
    pub proc: &'a Proc,
    pub origin: Instant,
    pub lines: Vec<(Duration, String)>,
    pub rss_peak_kb: Option<u64>,
    pub anon_at_peak_kb: Option<u64>,
    pub last_rss: Instant,
}

impl<'a> Tracker<'a> {
    pub fn new(proc: &'a Proc, origin: Instant) -> Tracker<'a> {
        Tracker {
            proc,
            origin,
            lines: Vec::new(),
            rss_peak_kb: None,
            anon_at_peak_kb: None,
            last_rss: origin,
        }
    }

    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub fn pump(&mut self) {
        let now = self.now();
        for line in self.proc.output_from(self.lines.len()) {
            self.lines.push((now, line));
        }
        if self.last_rss.elapsed() >= Duration::from_millis(50) {
            self.last_rss = Instant::now();
            let rss = rss_kb(self.proc.pid);
            if rss > self.rss_peak_kb {
                self.rss_peak_kb = rss;
                self.anon_at_peak_kb = anon_kb(self.proc.pid);
            }
        }
    }

    /// Polls until `at` (since the origin).
    pub fn wait_until(&mut self, at: Duration) {
        loop {
            self.pump();
            if self.now() >= at {
                return;
            }
            std::thread::sleep(Duration::from_millis(1).min(at.saturating_sub(self.now())));
        }
    }

    /// When the first line matching `pred` was seen.
    pub fn find(&self, pred: impl Fn(&str) -> bool) -> Option<Duration> {
        self.lines.iter().find(|(_, l)| pred(l)).map(|(t, _)| *t)
    }

    /// Polls (bounded) for a line matching `pred`.
    pub fn wait_for(&mut self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<Duration> {
        let deadline = self.now() + timeout;
        loop {
            self.pump();
            if let Some(t) = self.find(&pred) {
                return Some(t);
            }
            if self.now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
