//! The demo: `cargo run --release --bin overseer-demo`.
//!
//! A live self-upgrade under load, told step by step (the story of the Go
//! reference's `example.sh`):
//!
//! 1. In a private temporary directory it makes a minisign key pair,
//!    installs "version 1.0.0" of an app — a copy of this very executable
//!    with the build stamp `version=1.0.0` (see `overseer_harness::release`)
//!    — and starts a release server on 127.0.0.1 with nothing published.
//! 2. It starts the installed copy with the argument `app`, which makes it
//!    an overseer master (`overseer_harness::app`): an HTTP fetcher polls the
//!    release server every 250 ms, only releases signed by the demo's key are
//!    accepted, a new version is on probation for 2 s, and each worker serves
//!    the `http_std` example answering `version=V worker=N pid=P`.
//! 3. Keep-alive and connection-per-request clients load it throughout.
//!    Every request is counted; a progress line says which version answers.
//! 4. A slow request starts on 1.0.0; 2.0.0 is published (signature first,
//!    then the binary) and takes over, and the slow request still completes,
//!    answered by 1.0.0.
//! 5. 3.0.0 is published and takes over.
//! 6. A signed but broken 4.0.0 (it exits at start) is rolled back, and a
//!    tampered 5.0.0 (changed after signing) is rejected before it ever runs;
//!    3.0.0 serves throughout.
//! 7. The load stops, a summary is printed, the master gets SIGTERM and the
//!    demo checks that every process it started is gone.
//!
//! Lines marked `master |` are the overseer master's own log (its stderr),
//! `worker |` the app's workers. The exit status is 0 only if no request
//! failed and every step happened as expected. It needs nothing but cargo
//! and loopback networking, and takes about 20 seconds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use overseer_harness::client::{Client, Failure, Response};
use overseer_harness::load::{Load, LoadSpec, Stats};
use overseer_harness::proc::{alive, describe, Proc};
use overseer_harness::release::{read_stamp, stamp, this_target, Keys, ReleaseServer};

/// Every wait is bounded by this.
const WAIT: Duration = Duration::from_secs(30);
/// The slow request must outlast the upgrade to 2.0.0, which downloads,
/// hashes and verifies the whole binary: it takes 3 s, plus 1 s for every
/// 25 MB of binary (a test build is some 18 MB, a release build 6 MB).
const SLOW_BASE_MS: u64 = 3_000;
const SLOW_MS_PER_25_MB: u64 = 1_000;
const KEEP_ALIVE_CLIENTS: usize = 3;
const PER_REQUEST_CLIENTS: usize = 2;
/// Each client pauses this long between requests: thousands of requests a
/// second, yet CPU to spare. (Saturating every core starves the kernel's
/// writeback, so the fsyncs of an upgrade then take seconds instead of
/// milliseconds; the benchmark is the place for full-speed load.)
const CLIENT_PAUSE: Duration = Duration::from_millis(1);
/// A progress line this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// One request asks who answers this often.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// The installed binary's file name, also the release's path on the server.
const APP: &str = "demo-app";

fn main() {
    // Every release of the app is this executable: answer the master's
    // sanity check of a new build first, and be the app when asked to.
    overseer::sanity_check();
    if std::env::args_os().nth(1).is_some_and(|a| a == "app") {
        overseer_harness::app::main_from_env();
        return;
    }
    let ok = run();
    std::process::exit(if ok { 0 } else { 1 });
}

/// Tells the whole story; true if everything went as expected.
fn run() -> bool {
    println!(
        "overseer live upgrade demo: an HTTP service upgrades itself from a release \
         server\nwhile clients keep it busy; every request is counted.\n\
         (`==>` the demo's steps, `master |` the overseer master's log, `worker |` its \
         workers,\n`->` which version answers the demo's probe requests)\n"
    );
    // Ctrl-C (or SIGTERM) ends the demo through its clean-up below: the
    // master runs in its own process group and would otherwise outlive it.
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [nix::libc::SIGINT, nix::libc::SIGTERM, nix::libc::SIGHUP] {
        let _ = signal_hook::flag::register(signal, interrupted.clone());
    }
    let mut demo = match Demo::start(interrupted) {
        Ok(demo) => demo,
        Err(e) => {
            println!("\ndemo FAILED: {e}");
            return false;
        }
    };
    let story = demo.story();
    if let Err(e) = &story {
        demo.step(&format!("FAILED: {e}"));
    }
    let mut problems = demo.finish(story.is_ok());
    if let Err(e) = story {
        problems.insert(0, e);
    }
    let dir = demo.dir.path().display().to_string();
    drop(demo);
    println!("removed {dir}");
    if problems.is_empty() {
        println!(
            "\ndemo ok: zero failed requests; 2.0.0 and 3.0.0 upgraded live, \
             4.0.0 rolled back, 5.0.0 rejected"
        );
        true
    } else {
        println!("\ndemo FAILED:");
        for p in &problems {
            println!("  - {p}");
        }
        false
    }
}

/// Requests sent by the demo itself (probes and the slow request).
#[derive(Default)]
struct Own {
    ok: u64,
    failures: Vec<Failure>,
    by_version: BTreeMap<String, u64>,
}

/// A worker, as its lines and the master's tell.
#[derive(Default)]
struct Worker {
    version: Option<String>,
    pid: Option<i32>,
}

struct Demo {
    origin: Instant,
    interrupted: Arc<AtomicBool>,
    dir: tempfile::TempDir,
    /// This executable: the source of every release.
    exe: PathBuf,
    /// The installed app.
    bin: PathBuf,
    keys: Keys,
    server: ReleaseServer,
    master: Proc,
    addr: Option<SocketAddr>,
    /// Master output lines printed so far.
    printed: usize,
    workers: BTreeMap<u64, Worker>,
    loads: Vec<(&'static str, Load)>,
    load_started: Option<Instant>,
    own: Own,
    /// The version that answered the latest probe.
    answering: String,
    /// When each version first answered a probe.
    first_answer: BTreeMap<String, Instant>,
    last_probe: Option<Instant>,
    next_progress: Instant,
    /// The published 3.0.0, expected on disk at the end.
    v3: Vec<u8>,
    /// Problems that do not stop the story.
    problems: Vec<String>,
}

impl Demo {
    /// Step 1, and the start of step 2.
    fn start(interrupted: Arc<AtomicBool>) -> Result<Demo, String> {
        let origin = Instant::now();
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find the demo's own executable: {e}"))?;
        let dir = tempfile::Builder::new()
            .prefix("overseer-demo-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let bin = dir.path().join(APP);
        let say = |what: &str| println!("{:6.2}s  {what}", origin.elapsed().as_secs_f64());
        say(&format!("==> setting up in {}", dir.path().display()));
        let keys = Keys::generate();
        say(&format!(
            "    a fresh minisign key pair; the app trusts only its public key {}",
            keys.public
        ));
        stamp(&exe, &bin, "version=1.0.0")
            .map_err(|e| format!("cannot install version 1.0.0 at {}: {e}", bin.display()))?;
        say(&format!(
            "    installed version 1.0.0 at {} (this executable, stamped version=1.0.0)",
            bin.display()
        ));
        // The release server starts with the installed release: polling it
        // finds the same binary, which changes nothing.
        let server = ReleaseServer::start();
        let url = server.url(APP);
        let v1 = std::fs::read(&bin).map_err(|e| format!("cannot read {}: {e}", bin.display()))?;
        let signature = keys.sign(&v1, "1.0.0", &this_target());
        server.publish(&format!("{APP}.minisig"), signature.into_bytes());
        server.publish(APP, v1);
        say(&format!(
            "    release server at {url} (signature at {url}.minisig), publishing 1.0.0"
        ));
        say("    (the master's first poll downloads it, sees the binary it runs and does nothing)");
        say(&format!(
            "==> starting version 1.0.0 as an overseer master: {} app",
            bin.display()
        ));
        say("    it polls the release server every 250 ms; a new version is on probation for 2 s");
        // The app's settings (see `overseer_harness::app`); none inherited.
        let mut cmd = Command::new(&bin);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("UA_") {
                cmd.env_remove(name);
            }
        }
        cmd.arg("app")
            .env("UA_FETCH_URL", &url)
            .env("UA_PUBKEYS", &keys.public)
            .env("UA_INTERVAL_MS", "250")
            .env("UA_PROBATION_MS", "2000")
            .env("UA_ADDR", "127.0.0.1:0");
        let master = Proc::spawn_quiet(cmd);
        say(&format!("    master pid {}", master.pid));
        Ok(Demo {
            origin,
            interrupted,
            dir,
            exe,
            bin,
            keys,
            server,
            master,
            addr: None,
            printed: 0,
            workers: BTreeMap::new(),
            loads: Vec::new(),
            load_started: None,
            own: Own::default(),
            answering: String::new(),
            first_answer: BTreeMap::new(),
            last_probe: None,
            next_progress: Instant::now(),
            v3: Vec::new(),
            problems: Vec::new(),
        })
    }

    /// Steps 2 to 6; an error ends the story early.
    fn story(&mut self) -> Result<(), String> {
        let addr = self.wait_until("the master to listen", |d| {
            d.master
                .output()
                .iter()
                .find(|l| l.contains("listening on"))
                .and_then(|l| parse_listen_addr(l))
        })?;
        self.addr = Some(addr);
        self.wait_until("version 1.0.0 to answer", |d| d.answers("1.0.0"))?;

        // Step 3.
        self.step(&format!(
            "starting the load: {KEEP_ALIVE_CLIENTS} keep-alive clients and \
             {PER_REQUEST_CLIENTS} clients opening a connection per request"
        ));
        for (name, clients, keep_alive) in [
            ("keep-alive", KEEP_ALIVE_CLIENTS, true),
            ("connection per request", PER_REQUEST_CLIENTS, false),
        ] {
            let load = Load::start(LoadSpec {
                addr,
                clients,
                keep_alive,
                path: "/".into(),
                max_duration: Duration::from_secs(120),
                pause: CLIENT_PAUSE,
            });
            self.loads.push((name, load));
        }
        self.load_started = Some(Instant::now());
        self.next_progress = Instant::now() + Duration::from_secs(1);
        self.pause(Duration::from_millis(1_500))?;

        // Step 4: 2.0.0 takes over while a slow request runs on 1.0.0.
        let size = std::fs::metadata(&self.exe).map_or(0, |m| m.len());
        let slow_ms = SLOW_BASE_MS + size / (25 << 20) * SLOW_MS_PER_25_MB;
        self.step(&format!(
            "a slow request (GET /slow?ms={slow_ms}) starts on version 1.0.0"
        ));
        let slow = slow_request(addr, slow_ms);
        self.pause(Duration::from_millis(300))?;
        self.publish("2.0.0", "", "")?;
        self.wait_until("version 2.0.0 to answer", |d| d.answers("2.0.0"))?;
        let (result, finished) =
            self.wait_until("the slow request to finish", |_| slow.try_recv().ok())?;
        self.check_slow(result, finished);
        self.wait_logged("version 2.0.0 passed probation")?;

        // Step 5.
        self.publish("3.0.0", "", "")?;
        self.wait_until("version 3.0.0 to answer", |d| d.answers("3.0.0"))?;
        self.wait_logged("version 3.0.0 passed probation")?;

        // Step 6: a broken build, then a tampered one.
        self.publish(
            "4.0.0",
            "exit_at_start=1",
            " (signed with the right key, but broken: it exits as soon as it starts)",
        )?;
        self.wait_logged("upgrade to version 4.0.0 rolled back")?;
        self.wait_until("version 3.0.0 to answer after the rollback", |d| {
            d.answers("3.0.0")
        })?;
        self.step("4.0.0 was rolled back: version 3.0.0 kept serving");

        self.step(
            "publishing version 5.0.0 (tampered: the binary was changed after it was signed)",
        );
        let mut bytes = self.build("version=5.0.0")?;
        let signature = self.keys.sign(&bytes, "5.0.0", &this_target());
        bytes.extend_from_slice(b"\n#injected by an attacker\n");
        self.server
            .publish(&format!("{APP}.minisig"), signature.into_bytes());
        self.server.publish(APP, bytes);
        self.wait_logged("rejected: bad signature")?;
        // A few more polls: nothing else happens.
        self.pause(Duration::from_millis(1_000))?;
        self.wait_until("version 3.0.0 to answer", |d| d.answers("3.0.0"))?;
        self.step("5.0.0 was rejected before it ever ran: version 3.0.0 kept serving");
        self.pause(Duration::from_millis(500))?;
        Ok(())
    }

    /// A stamped copy of the app, as bytes.
    fn build(&self, fields: &str) -> Result<Vec<u8>, String> {
        let tmp = self.dir.path().join("build.tmp");
        stamp(&self.exe, &tmp, fields)
            .and_then(|()| std::fs::read(&tmp))
            .and_then(|bytes| std::fs::remove_file(&tmp).map(|()| bytes))
            .map_err(|e| format!("cannot build {fields}: {e}"))
    }

    /// Publishes a build of `version`, signed: the signature first, then
    /// the binary, so a poll never sees the new binary with the old signature.
    fn publish(&mut self, version: &str, extra: &str, note: &str) -> Result<(), String> {
        self.step(&format!("publishing version {version}{note}"));
        let bytes = self.build(format!("version={version} {extra}").trim())?;
        if version == "3.0.0" {
            self.v3 = bytes.clone();
        }
        let signature = self.keys.sign(&bytes, version, &this_target());
        self.server
            .publish(&format!("{APP}.minisig"), signature.into_bytes());
        self.server.publish(APP, bytes);
        Ok(())
    }

    /// Some(()) once `version` answered the latest probe.
    fn answers(&self, version: &str) -> Option<()> {
        (self.answering == version).then_some(())
    }

    /// Checks the slow request: answered by 1.0.0, after 2.0.0 took over.
    fn check_slow(&mut self, result: Result<Response, Failure>, finished: Instant) {
        let at = |t: Instant| t.duration_since(self.origin).as_secs_f64();
        let took_over = self.first_answer.get("2.0.0").copied();
        match result {
            Ok(r) => {
                let version = r.field("version").unwrap_or("?").to_string();
                self.own.ok += 1;
                *self.own.by_version.entry(version.clone()).or_default() += 1;
                let after = took_over.map_or(String::new(), |t| {
                    format!(
                        ", {:.2} s after version 2.0.0 took over",
                        finished.saturating_duration_since(t).as_secs_f64()
                    )
                });
                self.step(&format!(
                    "the slow request finished at {:.2}s{after}; it was answered by {}",
                    at(finished),
                    r.body.trim()
                ));
                if version != "1.0.0" {
                    self.problems.push(format!(
                        "the slow request was answered by version {version}, not 1.0.0"
                    ));
                }
            }
            Err(f) => {
                self.step(&format!("the slow request FAILED: {f}"));
                self.own.failures.push(f);
            }
        }
        if took_over.is_none_or(|t| t >= finished) {
            self.problems
                .push("the slow request finished before version 2.0.0 took over".into());
        }
    }

    /// Waits (bounded) until `done` yields, printing what happens meanwhile.
    fn wait_until<T>(
        &mut self,
        what: &str,
        mut done: impl FnMut(&mut Demo) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + WAIT;
        loop {
            self.pump();
            if let Some(t) = done(self) {
                return Ok(t);
            }
            if self.interrupted.load(Ordering::Relaxed) {
                return Err(format!("interrupted while waiting for {what}"));
            }
            // Also the loop's pause.
            if let Some(status) = self.master.wait_exit(Duration::from_millis(10)) {
                self.pump();
                return Err(format!(
                    "the master ended ({}) while waiting for {what}",
                    describe(status)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!("waited {} s for {what} in vain", WAIT.as_secs()));
            }
        }
    }

    /// Waits for a line of the master's log containing `needle`.
    fn wait_logged(&mut self, needle: &str) -> Result<(), String> {
        self.wait_until(&format!("the master to log {needle:?}"), |d| {
            (d.master.count(needle) > 0).then_some(())
        })
    }

    /// Lets time pass, printing what happens meanwhile.
    fn pause(&mut self, duration: Duration) -> Result<(), String> {
        let until = Instant::now() + duration;
        self.wait_until("a pause", |_| (Instant::now() >= until).then_some(()))
    }

    fn say(&self, what: &str) {
        println!("{:6.2}s  {what}", self.origin.elapsed().as_secs_f64());
    }

    fn step(&self, what: &str) {
        self.say(&format!("==> {what}"));
    }

    /// Prints the master's and workers' new lines, asks who answers, and
    /// prints a progress line when one is due.
    fn pump(&mut self) {
        let output = self.master.output();
        for line in output.iter().skip(self.printed) {
            // Master and workers share one stderr pipe: a worker's line
            // written in pieces can hold a master line.
            let (worker, overseer) = match line.find("[overseer ") {
                Some(i) => (&line[..i], Some(&line[i..])),
                None => (line.as_str(), None),
            };
            if !worker.trim().is_empty() {
                if let Some((n, version, pid)) = parse_worker_line(worker) {
                    let w = self.workers.entry(n).or_default();
                    w.version = Some(version);
                    w.pid = Some(pid);
                }
                self.say(&format!("    worker | {}", worker.trim()));
            }
            if let Some((pid, msg)) = overseer.and_then(parse_overseer_line) {
                if let Some((n, pid)) = parse_started(msg) {
                    self.workers.entry(n).or_default().pid = Some(pid);
                }
                let who = if pid == self.master.pid {
                    "master"
                } else {
                    "worker"
                };
                let msg = msg.strip_prefix("info: ").unwrap_or(msg);
                self.say(&format!("    {who} | {msg}"));
            }
        }
        self.printed = output.len();
        if self.last_probe.is_none_or(|t| t.elapsed() >= PROBE_EVERY) {
            self.probe();
        }
        if !self.loads.is_empty() && Instant::now() >= self.next_progress {
            self.next_progress = Instant::now() + PROGRESS_EVERY;
            self.progress();
        }
    }

    /// One request: which version answers now?
    fn probe(&mut self) {
        let Some(addr) = self.addr else { return };
        self.last_probe = Some(Instant::now());
        match Client::new(addr, false)
            .timeout(Duration::from_secs(10))
            .get("/")
        {
            Ok(r) => {
                let version = r.field("version").unwrap_or("?").to_string();
                let worker = r.field("worker").unwrap_or("?").to_string();
                self.own.ok += 1;
                *self.own.by_version.entry(version.clone()).or_default() += 1;
                if version != self.answering {
                    self.first_answer
                        .entry(version.clone())
                        .or_insert_with(Instant::now);
                    self.say(&format!(
                        "    -> version {version} answers now (worker {worker})"
                    ));
                    self.answering = version;
                }
            }
            Err(f) => {
                self.say(&format!("    a probe request FAILED: {f}"));
                self.own.failures.push(f);
            }
        }
    }

    fn progress(&self) {
        let (mut ok, mut failed) = (self.own.ok, self.own.failures.len() as u64);
        for (_, load) in &self.loads {
            let (o, f) = load.progress();
            ok += o;
            failed += f;
        }
        self.say(&format!(
            "    [load] {} requests ok, {failed} failed; version {} answers",
            thousands(ok),
            self.answering
        ));
    }

    /// Step 7: stops the load, prints the summary, stops the master and
    /// checks every process is gone. Returns the problems found (and, if the
    /// story ran to its end, whether each step left its mark).
    fn finish(&mut self, story_ended: bool) -> Vec<String> {
        let mut problems = std::mem::take(&mut self.problems);
        // No more probes: the master is about to stop.
        self.addr = None;
        let elapsed = self.load_started.map_or(Duration::ZERO, |t| t.elapsed());
        if !self.loads.is_empty() {
            self.step("stopping the load");
        }
        let loads: Vec<(&str, Stats)> = self
            .loads
            .drain(..)
            .map(|(name, load)| (name, load.stop()))
            .collect();
        self.pump();

        println!("\nsummary");
        let mut kinds: BTreeMap<&str, u64> = [
            "refused",
            "reset",
            "timeout",
            "truncated",
            "non-2xx",
            "other",
        ]
        .into_iter()
        .map(|k| (k, 0))
        .collect();
        let mut by_version: BTreeMap<String, u64> = self.own.by_version.clone();
        let (mut ok, mut failed) = (self.own.ok, self.own.failures.len() as u64);
        for f in &self.own.failures {
            *kinds.entry(f.kind()).or_default() += 1;
        }
        let mut lines = Vec::new();
        for (name, stats) in &loads {
            ok += stats.ok;
            failed += stats.failures.len() as u64;
            for (kind, n) in stats.failure_kinds() {
                *kinds.entry(kind).or_default() += n;
            }
            for (worker, n) in &stats.by_worker {
                let version = self
                    .workers
                    .get(worker)
                    .and_then(|w| w.version.clone())
                    .unwrap_or_else(|| format!("? (worker {worker})"));
                *by_version.entry(version).or_default() += n;
            }
            lines.push(format!(
                "    {name:<24} {:>10} ok, {} failed",
                thousands(stats.ok),
                stats.failures.len()
            ));
        }
        lines.push(format!(
            "    {:<24} {:>10} ok, {} failed",
            "probes, slow request",
            thousands(self.own.ok),
            self.own.failures.len()
        ));
        println!(
            "  requests: {} ok, {failed} failed, in {:.1} s ({}/s)",
            thousands(ok),
            elapsed.as_secs_f64(),
            thousands(((ok + failed) as f64 / elapsed.as_secs_f64().max(0.001)) as u64)
        );
        lines.iter().for_each(|l| println!("{l}"));
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("  failures by kind: {}", kinds.join(", "));
        for (_, stats) in &loads {
            for (at, f) in stats.failures.iter().take(5) {
                println!("    at {:.3} s into the load: {f}", at.as_secs_f64());
            }
        }
        if failed > 0 {
            problems.push(format!("{failed} requests failed"));
        }

        println!("  answered by:");
        for (version, n) in &by_version {
            let workers: Vec<String> = self
                .workers
                .iter()
                .filter(|(_, w)| w.version.as_deref() == Some(version.as_str()))
                .map(|(n, w)| match w.pid {
                    Some(pid) => format!("worker {n} (pid {pid})"),
                    None => format!("worker {n}"),
                })
                .collect();
            println!(
                "    version {version:<8} {:>10} requests   {}",
                thousands(*n),
                workers.join(", ")
            );
        }
        let rolled_back = self.master.count("upgrade to version 4.0.0 rolled back") > 0;
        let rejected = self.master.count("rejected: bad signature") > 0;
        if rolled_back && !by_version.contains_key("4.0.0") {
            let ran = self
                .workers
                .iter()
                .find(|(_, w)| w.version.as_deref() == Some("4.0.0"))
                .map_or("it never started".into(), |(n, _)| {
                    format!("its worker {n} exited at start")
                });
            println!(
                "    version {:<8} {:>10} requests   (rolled back: {ran})",
                "4.0.0", 0
            );
        }
        if rejected && !by_version.contains_key("5.0.0") {
            println!(
                "    version {:<8} {:>10} requests   (rejected: it never ran)",
                "5.0.0", 0
            );
        }
        let on_disk = read_stamp(&self.bin)
            .get("version")
            .cloned()
            .unwrap_or_else(|| "unknown".into());
        let identical =
            !self.v3.is_empty() && std::fs::read(&self.bin).is_ok_and(|bytes| bytes == self.v3);
        let same = if identical {
            ", byte for byte the published 3.0.0"
        } else {
            ""
        };
        println!(
            "  binary on disk: version {on_disk}{same} ({})",
            self.bin.display()
        );

        if story_ended {
            let versions_ok = ["1.0.0", "2.0.0", "3.0.0"]
                .iter()
                .all(|v| by_version.contains_key(*v))
                && !by_version.contains_key("4.0.0")
                && !by_version.contains_key("5.0.0");
            if !versions_ok {
                problems.push(format!(
                    "expected answers from 1.0.0, 2.0.0 and 3.0.0 only, got {:?}",
                    by_version.keys().collect::<Vec<_>>()
                ));
            }
            if !rolled_back {
                problems.push("the master never rolled 4.0.0 back".into());
            }
            if !rejected {
                problems.push("the master never rejected 5.0.0".into());
            }
            let ran_5 = self
                .workers
                .values()
                .any(|w| w.version.as_deref() == Some("5.0.0"));
            if ran_5 {
                problems.push("a worker of the tampered version 5.0.0 started".into());
            }
            if !identical {
                problems.push(format!(
                    "the binary on disk is version {on_disk}, not the published 3.0.0"
                ));
            }
        }
        println!();

        if let Some(problem) = self.stop_master() {
            problems.push(problem);
        }
        problems
    }

    /// Stops the master with SIGTERM (by pid) and checks that it and every
    /// worker are gone.
    fn stop_master(&mut self) -> Option<String> {
        let mut problem = None;
        let status: Option<ExitStatus> = match self.master.wait_exit(Duration::from_millis(1)) {
            Some(status) => Some(status),
            None => {
                self.step(&format!(
                    "stopping the master: SIGTERM to pid {}",
                    self.master.pid
                ));
                self.master.signal(nix::libc::SIGTERM);
                let deadline = Instant::now() + WAIT;
                loop {
                    self.pump();
                    if let Some(status) = self.master.wait_exit(Duration::from_millis(10)) {
                        break Some(status);
                    }
                    if Instant::now() >= deadline {
                        break None;
                    }
                }
            }
        };
        self.pump();
        match status {
            Some(status) if status.success() => {
                self.say(&format!("    master exited: {}", describe(status)));
            }
            Some(status) => {
                self.say(&format!("    master exited: {}", describe(status)));
                problem = Some(format!("the master exited with {}", describe(status)));
            }
            None => {
                problem = Some(format!(
                    "the master was still running {} s after SIGTERM (killed)",
                    WAIT.as_secs()
                ));
            }
        }
        // Whatever happened, end the master's whole process group.
        overseer_harness::proc::send_signal(-self.master.pid, nix::libc::SIGKILL);
        let pids: Vec<i32> = std::iter::once(self.master.pid)
            .chain(self.workers.values().filter_map(|w| w.pid))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut left: Vec<i32> = pids.clone();
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            left.retain(|&pid| alive(pid));
        }
        if left.is_empty() {
            let list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
            self.say(&format!(
                "    every process the demo started is gone (pids {})",
                list.join(", ")
            ));
        } else {
            problem.get_or_insert(format!("processes still running: {left:?}"));
        }
        problem
    }
}

/// Sends `GET /slow?ms=…` on a thread; the answer arrives on the channel.
fn slow_request(addr: SocketAddr, ms: u64) -> mpsc::Receiver<(Result<Response, Failure>, Instant)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = Client::new(addr, false)
            .timeout(Duration::from_millis(ms) + WAIT)
            .get(&format!("/slow?ms={ms}"));
        let _ = tx.send((result, Instant::now()));
    });
    rx
}

/// `… listening on 127.0.0.1:0 (127.0.0.1:43121)` → the bound address.
fn parse_listen_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.rsplit_once('(')?;
    rest.strip_suffix(')')?.parse().ok()
}

/// `[overseer 123] info: …` → (123, `info: …`).
fn parse_overseer_line(line: &str) -> Option<(i32, &str)> {
    let rest = line.strip_prefix("[overseer ")?;
    let (pid, msg) = rest.split_once("] ")?;
    Some((pid.parse().ok()?, msg))
}

/// `info: worker 3 started (pid 123)` → (3, 123).
fn parse_started(msg: &str) -> Option<(u64, i32)> {
    let rest = msg.strip_prefix("info: worker ")?;
    let (n, rest) = rest.split_once(" started (pid ")?;
    Some((n.parse().ok()?, rest.strip_suffix(')')?.parse().ok()?))
}

/// `version=2.0.0 worker=3 pid=123 id=… starting` → (3, "2.0.0", 123).
fn parse_worker_line(line: &str) -> Option<(u64, String, i32)> {
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    };
    Some((
        field("worker")?.parse().ok()?,
        field("version")?.to_string(),
        field("pid")?.parse().ok()?,
    ))
}

/// 1234567 → "1,234,567".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
