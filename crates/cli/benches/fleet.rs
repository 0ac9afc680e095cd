//! Fleet benchmark: what a fleet's signed manifest costs a host, how soon a
//! rollout's first wave serves after `overseer publish` returns, and how
//! many requests an idle fleet makes of its store.
//!
//! `cargo bench -p overseer-cli --bench fleet [-- --hosts N --rounds N
//! --idle-secs N --iterations N]` (defaults: 10 hosts, 3 rounds, 30 s idle,
//! 2,000 verifications per manifest).
//!
//! 1. `Manifest::verify` (signature check, parse, validation) of a signed
//!    manifest with 1 release and with 100 releases: median and p99.
//! 2. N real `overseer run` masters (distinct host ids, a shell-script
//!    worker) poll a directory store and, when the `s3s-fs` server binary
//!    is installed, an S3 bucket, every second. Each round publishes a new
//!    version with `--waves 50%,100%@30d` and times, from `publish`
//!    returning, the first host of the first wave serving it, every host of
//!    that wave serving it, and every one of them reporting it as its
//!    version (which a master does once the release passed its probation).
//! 3. Over S3, each master reaches the bucket through a counting proxy of
//!    its own (loopback, in this process): the requests of an idle fleet,
//!    per host and poll, and how the hosts' polls spread out in time.
//!
//! Every process started here is ended by pid (`Proc` kills its process
//! group on drop); every wait is bounded.

#[path = "../../overseer/tests/support/s3s.rs"]
mod s3s;

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use overseer::fleet::{bucket, Artifact, Manifest, Release, Wave, FORMAT};
use overseer_harness::proc::Proc;

const OVERSEER: &str = env!("CARGO_BIN_EXE_overseer");
/// The first wave's share of hosts.
const WAVE: f64 = 0.5;
const WAVES: &str = "50%,100%@30d";
const CHANNEL: &str = "stable";
/// The longest wait for any state of the fleet.
const T: Duration = Duration::from_secs(60);

struct Opts {
    hosts: usize,
    rounds: usize,
    idle: Duration,
    iterations: usize,
}

impl Opts {
    fn parse() -> Opts {
        let mut opts = Opts {
            hosts: 10,
            rounds: 3,
            idle: Duration::from_secs(30),
            iterations: 2000,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut num = |max: u64| -> u64 {
                args.next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|&v| v >= 1 && v <= max)
                    .unwrap_or_else(|| {
                        eprintln!("{arg} takes a number from 1 to {max}");
                        std::process::exit(2)
                    })
            };
            match arg.as_str() {
                "--hosts" => opts.hosts = num(100) as usize,
                "--rounds" => opts.rounds = num(8) as usize,
                "--idle-secs" => opts.idle = Duration::from_secs(num(600)),
                "--iterations" => opts.iterations = num(1_000_000) as usize,
                // What cargo passes to every benchmark.
                "--bench" => {}
                other => {
                    eprintln!(
                        "unknown argument {other:?}; options: --hosts N, --rounds N, --idle-secs N, --iterations N"
                    );
                    std::process::exit(2)
                }
            }
        }
        opts
    }
}

fn main() {
    let opts = Opts::parse();
    verification(opts.iterations);
    println!();
    rollouts(&opts);
}

// ---------------------------------------------------------------------------
// 1. Manifest verification.

/// A channel's manifest with `releases` releases, each with one artifact
/// and three waves, as `overseer publish` writes it.
fn manifest(releases: usize) -> Manifest {
    let now = 1_750_000_000;
    let target = "x86_64-unknown-linux-gnu";
    Manifest {
        format: FORMAT,
        channel: CHANNEL.into(),
        serial: releases as u64 * 3,
        expires: now + 90 * 86_400,
        releases: (0..releases)
            .map(|i| {
                let version = format!("1.{i}.0");
                let artifact = Artifact {
                    path: format!("{version}/{target}/app"),
                    size: 16_000_000 + i as u64,
                    sha256: format!(
                        "{:064x}",
                        (i as u128 + 1) * 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835
                    ),
                    patches: Vec::new(),
                };
                Release {
                    version,
                    artifacts: [(target.to_string(), artifact)].into(),
                    rollout: vec![
                        Wave {
                            start: now,
                            fraction: 0.01,
                        },
                        Wave {
                            start: now + 3600,
                            fraction: 0.5,
                        },
                        Wave {
                            start: now + 86_400,
                            fraction: 1.0,
                        },
                    ],
                    yanked: false,
                    critical: false,
                    halted: None,
                }
            })
            .collect(),
    }
}

fn verification(iterations: usize) {
    let keys = minisign::KeyPair::generate_unencrypted_keypair().expect("a key pair");
    let public = vec![keys.pk.to_base64()];
    println!(
        "manifest verification (Manifest::verify: minisign signature, parse, validation), {iterations} iterations each:"
    );
    for releases in [1, 100] {
        let bytes = manifest(releases).to_bytes();
        let signature = minisign::sign(
            Some(&keys.pk),
            &keys.sk,
            &bytes[..],
            Some("channel:stable\tserial:1"),
            None,
        )
        .expect("signed")
        .to_string();
        let verify = time(iterations, || {
            Manifest::verify(&bytes, &signature, &public).expect("verifies")
        });
        let parse = time(iterations, || Manifest::parse(&bytes).expect("parses"));
        println!(
            "  {releases:>3} release{}: {:>6} bytes (signature {} bytes): verify median {:>7.1} µs, p99 {:>7.1} µs; of which parse and validation median {:>7.1} µs",
            if releases == 1 { " " } else { "s" },
            bytes.len(),
            signature.len(),
            us(verify.0),
            us(verify.1),
            us(parse.0),
        );
    }
}

/// Median and p99 of `iterations` calls of `f`, after a warm-up.
fn time<T>(iterations: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    for _ in 0..iterations.min(100) {
        std::hint::black_box(f());
    }
    let mut times: Vec<Duration> = (0..iterations)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    (quantile(&times, 0.5), quantile(&times, 0.99))
}

fn quantile<T: Copy>(sorted: &[T], q: f64) -> T {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------
// 2. Rollouts, and 3. an idle fleet's requests.

/// Where a fleet's store is, and how every command reaches it.
struct Store {
    what: &'static str,
    /// DEST of publish, and --fetch-fleet.
    dest: String,
    /// Extra arguments of publish.
    publish_args: Vec<String>,
    /// Extra arguments of `overseer run`, per host.
    run_args: Vec<Vec<String>>,
    /// Environment of every command.
    env: Vec<(String, String)>,
}

impl Store {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(OVERSEER);
        cmd.args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// `overseer publish` of `binary` as `version`; how long it took.
    fn publish(&self, key: &Path, version: &str, waves: Option<&str>, binary: &Path) -> Duration {
        let mut cmd = self.command(&["publish", "--key"]);
        cmd.arg(key).args(["--version", version]);
        if let Some(waves) = waves {
            cmd.args(["--waves", waves]);
        }
        cmd.arg(binary).args(&self.publish_args).arg(&self.dest);
        let t = Instant::now();
        let out = cmd.output().expect("overseer publish runs");
        let took = t.elapsed();
        assert!(out.status.success(), "publish {version}: {out:?}");
        took
    }
}

/// A worker of `version`: `--version` prints it; otherwise it sleeps until
/// stopped.
fn build(dir: &Path, version: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("build-{version}/app"));
    std::fs::create_dir_all(path.parent().expect("dir")).expect("build dir");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n# fleet benchmark worker {version}\n\
             if [ \"$1\" = --version ]; then echo {version}; exit 0; fi\n\
             exec sleep 600\n"
        ),
    )
    .expect("write build");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

struct Host {
    id: String,
    control: PathBuf,
    proc: Proc,
}

impl Host {
    fn status(&self) -> Option<overseer::control::Status> {
        overseer::control::status(&self.control, Duration::from_secs(2)).ok()
    }

    fn version(&self) -> Option<String> {
        self.status().and_then(|s| s.version)
    }
}

/// Starts host `i` of `store`, running version 1.0.0 from its own directory.
fn start_host(dir: &Path, store: &Store, i: usize, v1: &Path) -> Host {
    let id = format!("host-{i:02}");
    let home = dir.join(store.what).join(&id);
    std::fs::create_dir_all(&home).expect("host dir");
    let app = home.join("app");
    std::fs::copy(v1, &app).expect("install 1.0.0");
    let control = home.join("control.sock");
    let mut cmd = store.command(&["run", "--listen", "127.0.0.1:0", "--control"]);
    cmd.arg(&control)
        .args(["--app-version", "1.0.0", "--fetch-interval", "1s"])
        .args(["--ready", "started", "--probation", "1s"])
        .args(["--terminate-timeout", "2s"])
        .args(["--fetch-fleet", &store.dest, "--fleet-reports"])
        .args(["--host-id", &id, "--public-key"])
        .arg(dir.join("release.pub"))
        .args(&store.run_args[i])
        .arg("--")
        .arg(&app);
    let proc = Proc::spawn_quiet(cmd);
    Host { id, control, proc }
}

/// Waits until every host reports version `v` (bounded by [`T`]).
fn wait_all(hosts: &[Host], v: &str) -> bool {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if hosts.iter().all(|h| h.version().as_deref() == Some(v)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for h in hosts {
        eprintln!(
            "--- {}: {:?}\n{}",
            h.id,
            h.version(),
            h.proc.output().join("\n")
        );
    }
    false
}

/// One round's figures, from `publish` returning.
struct Round {
    version: String,
    wave: usize,
    publish: Duration,
    first_serving: Option<Duration>,
    all_serving: Option<Duration>,
    all_kept: Option<Duration>,
    moved_outside: usize,
    /// When each wave-1 host's new worker started (host, instant).
    serving_at: Vec<(usize, Instant)>,
    /// From the publish's start to the round's end, for the origin's log.
    span: (Instant, Instant),
}

fn rollouts(opts: &Opts) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(OVERSEER)
        .args(["keygen", "--name", "release", "--out"])
        .arg(dir.path())
        .output()
        .expect("keygen");
    assert!(out.status.success(), "{out:?}");
    let key = dir.path().join("release.key");
    let versions: Vec<String> = (1..=opts.rounds + 1).map(|n| format!("{n}.0.0")).collect();
    let builds: Vec<PathBuf> = versions.iter().map(|v| build(dir.path(), v)).collect();
    let n = opts.hosts;
    println!(
        "rollouts: {n} masters with --fetch-interval 1s (each interval drawn in 0.75–1.25 s), {} rounds, waves {WAVES}; \
         from `overseer publish` returning to the first wave's first host serving, every host of it serving, \
         and every host of it reporting the version (after its 1 s probation)",
        opts.rounds
    );
    for v in &versions[1..] {
        let wave = (0..n)
            .filter(|i| bucket(&format!("host-{i:02}"), CHANNEL, v) < WAVE)
            .count();
        print!("{v}: {wave} of {n} hosts in the first wave; ");
    }
    println!();

    // A directory.
    let store = Store {
        what: "directory",
        dest: dir.path().join("fleet").display().to_string(),
        publish_args: Vec::new(),
        run_args: vec![Vec::new(); n],
        env: Vec::new(),
    };
    store.publish(&key, "1.0.0", None, &builds[0]);
    let hosts: Vec<Host> = (0..n)
        .map(|i| start_host(dir.path(), &store, i, &builds[0]))
        .collect();
    if wait_all(&hosts, "1.0.0") {
        let rounds = run_rounds(&store, &hosts, &key, &versions, &builds);
        print_rounds("directory store", &rounds);
    } else {
        println!("directory store: the fleet did not start within {T:?}; skipped");
    }
    drop(hosts);

    // An S3 bucket, each host through a counting proxy of its own.
    if s3s::server_binary().is_none() {
        println!(
            "S3 (s3s-fs): skipped, the s3s-fs binary was not found (OVERSEER_S3S_FS, PATH, $CARGO_HOME/bin); \
             install it with `{}`. The origin request figures need it too.",
            s3s::INSTALL
        );
        return;
    }
    let Some(server) = s3s::start_server() else {
        println!("S3 (s3s-fs): skipped");
        return;
    };
    let origin = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port));
    let proxies: Vec<Proxy> = (0..n).map(|_| Proxy::start(origin)).collect();
    let store = Store {
        what: "s3",
        dest: format!("s3://{}/fleet/stable", s3s::BUCKET),
        publish_args: vec![
            "--endpoint".into(),
            server.url(),
            "--region".into(),
            "us-east-1".into(),
        ],
        run_args: proxies
            .iter()
            .map(|p| {
                vec![
                    "--s3-endpoint".into(),
                    format!("http://{}", p.addr),
                    "--s3-region".into(),
                    "us-east-1".into(),
                ]
            })
            .collect(),
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), s3s::ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), s3s::SECRET_KEY.into()),
        ],
    };
    store.publish(&key, "1.0.0", None, &builds[0]);
    let hosts: Vec<Host> = (0..n)
        .map(|i| start_host(dir.path(), &store, i, &builds[0]))
        .collect();
    if !wait_all(&hosts, "1.0.0") {
        println!("S3 store: the fleet did not start within {T:?}; skipped");
        return;
    }
    idle(&proxies, opts.idle);
    let rounds = run_rounds(&store, &hosts, &key, &versions, &builds);
    print_rounds("S3 store (s3s-fs, through the proxies)", &rounds);
    for r in &rounds {
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for p in &proxies {
            for x in p.log.between(r.span.0, r.span.1) {
                *kinds.entry(x.kind()).or_default() += 1;
            }
        }
        let kinds: Vec<String> = kinds.iter().map(|(k, c)| format!("{k} ×{c}")).collect();
        println!(
            "  origin requests while {} rolled out ({} hosts moving, all {n} polling): {}",
            r.version,
            r.wave,
            kinds.join(", ")
        );
    }
    // Each host's own part: from the poll that read the new manifest (the
    // last read of it before the new worker started) to that start.
    let mut own: Vec<Duration> = Vec::new();
    for r in &rounds {
        for &(i, at) in &r.serving_at {
            let polled = proxies[i]
                .log
                .between(r.span.0, at)
                .iter()
                .filter(|x| x.is_poll())
                .map(|x| x.at)
                .max();
            if let Some(polled) = polled {
                own.push(at.saturating_duration_since(polled));
            }
        }
    }
    own.sort();
    if !own.is_empty() {
        println!(
            "  a host's own part, from its poll that read the new manifest to its new worker started: \
             median {:.0} ms, max {:.0} ms ({} upgrades; the rest of the times above is waiting for the next poll)",
            ms(quantile(&own, 0.5)),
            ms(own[own.len() - 1]),
            own.len()
        );
    }
    let unparsed: u64 = proxies
        .iter()
        .map(|p| p.log.unparsed.load(Ordering::Relaxed))
        .sum();
    if unparsed > 0 {
        println!("  ({unparsed} connections the proxy could not follow: counts may be low)");
    }
    drop(hosts);
    drop(proxies);
    drop(server);
}

fn run_rounds(
    store: &Store,
    hosts: &[Host],
    key: &Path,
    versions: &[String],
    builds: &[PathBuf],
) -> Vec<Round> {
    let mut rounds = Vec::new();
    for (v, build) in versions.iter().zip(builds).skip(1) {
        let wave: Vec<usize> = (0..hosts.len())
            .filter(|&i| bucket(&hosts[i].id, CHANNEL, v) < WAVE)
            .collect();
        let before: Vec<(u64, Option<String>)> = hosts
            .iter()
            .map(|h| {
                let s = h.status();
                let number = s
                    .as_ref()
                    .and_then(|s| s.serving.as_ref())
                    .map_or(0, |w| w.number);
                (number, s.and_then(|s| s.version))
            })
            .collect();
        let begin = Instant::now();
        let publish = store.publish(key, v, Some(WAVES), build);
        let t0 = Instant::now();
        let mut serving: Vec<Option<Duration>> = vec![None; hosts.len()];
        let mut serving_at = Vec::new();
        let mut kept: Vec<Option<Duration>> = vec![None; hosts.len()];
        let upgraded = format!("version {v}");
        let deadline = t0 + T;
        while Instant::now() < deadline && wave.iter().any(|&i| kept[i].is_none()) {
            for &i in &wave {
                if kept[i].is_some() {
                    continue;
                }
                let Some(s) = hosts[i].status() else { continue };
                let now = Instant::now();
                if serving[i].is_none() {
                    if let Some(w) = &s.serving {
                        let installed = s
                            .last_upgrade
                            .as_deref()
                            .is_some_and(|u| u.contains(&upgraded));
                        if w.number > before[i].0 && installed {
                            // The worker's age says when it started (ready at
                            // once: `--ready started`), to the millisecond.
                            let at = now.checked_sub(w.age).unwrap_or(now);
                            serving[i] = Some(at.saturating_duration_since(t0));
                            serving_at.push((i, at));
                        }
                    }
                }
                if s.version.as_deref() == Some(v.as_str()) {
                    kept[i] = Some(now - t0);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let moved_outside = (0..hosts.len())
            .filter(|i| !wave.contains(i))
            .filter(|&i| hosts[i].version() != before[i].1)
            .count();
        let all = |times: &[Option<Duration>]| -> Option<Duration> {
            wave.iter()
                .map(|&i| times[i])
                .collect::<Option<Vec<_>>>()
                .and_then(|t| t.into_iter().max())
        };
        let first_serving = wave.iter().filter_map(|&i| serving[i]).min();
        let round = Round {
            version: v.clone(),
            wave: wave.len(),
            publish,
            first_serving,
            all_serving: all(&serving),
            all_kept: all(&kept),
            moved_outside,
            serving_at,
            span: (begin, Instant::now()),
        };
        if round.all_kept.is_none() && !wave.is_empty() {
            for &i in &wave {
                eprintln!(
                    "--- {} (not on {v} in {T:?}):\n{}",
                    hosts[i].id,
                    hosts[i].proc.output().join("\n")
                );
            }
        }
        rounds.push(round);
        // The reports of the probations just passed, written.
        std::thread::sleep(Duration::from_millis(500));
    }
    rounds
}

fn print_rounds(what: &str, rounds: &[Round]) {
    println!("{what}:");
    let s = |d: Option<Duration>| {
        d.map_or("not reached".to_string(), |d| {
            format!("{:.2} s", d.as_secs_f64())
        })
    };
    for r in rounds {
        println!(
            "  {}: {} hosts in wave 1; publish took {:.0} ms; then first host serving {}, every wave-1 host serving {}, \
             every wave-1 host reporting {} {}; hosts outside the wave that moved: {}",
            r.version,
            r.wave,
            ms(r.publish),
            s(r.first_serving),
            s(r.all_serving),
            r.version,
            s(r.all_kept),
            r.moved_outside
        );
    }
    let median = |f: fn(&Round) -> Option<Duration>| -> Option<Duration> {
        let mut v: Vec<Duration> = rounds.iter().filter_map(f).collect();
        v.sort();
        (!v.is_empty()).then(|| v[(v.len() - 1) / 2])
    };
    println!(
        "  median of {} rounds: publish {:.0} ms; first host serving {}, every wave-1 host serving {}, every wave-1 host reporting the version {}",
        rounds.len(),
        median(|r| Some(r.publish)).map_or(0.0, ms),
        s(median(|r| r.first_serving)),
        s(median(|r| r.all_serving)),
        s(median(|r| r.all_kept)),
    );
}

/// The idle fleet's requests at the origin, over `span` after every host's
/// first polls.
fn idle(proxies: &[Proxy], span: Duration) {
    // Every host has the manifest and polls it conditionally (If-None-Match
    // with the ETag it holds).
    let deadline = Instant::now() + T;
    while Instant::now() < deadline
        && !proxies
            .iter()
            .all(|p| p.log.all().iter().any(|x| x.is_poll() && x.conditional))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let from = Instant::now();
    std::thread::sleep(span);
    let to = Instant::now();
    let secs = (to - from).as_secs_f64();
    let n = proxies.len();

    let mut requests = 0usize;
    let mut polls = 0usize;
    let mut conditional = 0usize;
    let (mut up, mut down) = (0u64, 0u64);
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut gaps: Vec<Duration> = Vec::new();
    let mut all_polls: Vec<(Instant, usize)> = Vec::new();
    for (h, p) in proxies.iter().enumerate() {
        let seen = p.log.between(from, to);
        requests += seen.len();
        let times: Vec<Instant> = seen.iter().filter(|x| x.is_poll()).map(|x| x.at).collect();
        polls += times.len();
        gaps.extend(times.windows(2).map(|w| w[1] - w[0]));
        all_polls.extend(times.iter().map(|&t| (t, h)));
        for x in &seen {
            up += x.up;
            down += x.down;
            conditional += usize::from(x.is_poll() && x.conditional);
            *kinds.entry(x.kind()).or_default() += 1;
        }
    }
    println!(
        "idle fleet over S3: {n} masters polling an unchanged manifest (--fetch-interval 1s), {secs:.0} s, \
         counted at the origin (a proxy per host):"
    );
    if polls == 0 || gaps.is_empty() {
        println!("  no polls seen; skipped");
        return;
    }
    let per_poll = requests as f64 / polls as f64;
    let kinds: Vec<String> = kinds.iter().map(|(k, c)| format!("{k} ×{c}")).collect();
    println!(
        "  {requests} requests ({}), {polls} polls ({conditional} with If-None-Match): {:.3} requests per host per second, \
         {per_poll:.2} requests per poll; per poll {:.0} bytes sent and {:.0} bytes received",
        kinds.join(", "),
        requests as f64 / n as f64 / secs,
        up as f64 / polls as f64,
        down as f64 / polls as f64,
    );
    gaps.sort();
    let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
    println!(
        "  one host's consecutive polls: min {:.0} ms, median {:.0} ms, mean {:.0} ms, max {:.0} ms apart",
        ms(gaps[0]),
        ms(quantile(&gaps, 0.5)),
        ms(mean),
        ms(gaps[gaps.len() - 1])
    );
    // At 60 s, the draws scale: the mean interval is 60 s × the mean measured
    // here (in units of the 1 s set) with `--fetch-interval 60s`; 60 s
    // exactly with the default of 1 min.
    let scale = mean.as_secs_f64();
    let bytes = (up + down) as f64 / polls as f64;
    println!(
        "  per host per hour at 60 s: {:.0} requests ({:.0} KiB) with the default interval of 1 min (draws 45–75 s), \
         {:.0} requests with --fetch-interval 60s (draws 45–75 s); 10,000 hosts: {:.0} requests/s at the origin",
        per_poll * 60.0,
        bytes * 60.0 / 1024.0,
        per_poll * 60.0 / scale,
        per_poll * 10_000.0 / 60.0,
    );
    // The fleet's polls in time: how close two hosts' polls come, and the
    // busiest 100 ms.
    all_polls.sort();
    let mut apart: Vec<Duration> = all_polls
        .windows(2)
        .filter(|w| w[0].1 != w[1].1)
        .map(|w| w[1].0 - w[0].0)
        .collect();
    apart.sort();
    let near = Duration::from_millis(10);
    // Sorted: the polls within `near` of one are its neighbours.
    let close = (0..all_polls.len())
        .filter(|&i| {
            let (t, h) = all_polls[i];
            let before = all_polls[..i]
                .iter()
                .rev()
                .take_while(|&&(u, _)| t - u <= near)
                .any(|&(_, g)| g != h);
            let after = all_polls[i + 1..]
                .iter()
                .take_while(|&&(u, _)| u - t <= near)
                .any(|&(_, g)| g != h);
            before || after
        })
        .count();
    // Independent random times: n − 1 other hosts polling at `rate` each.
    let rate = polls as f64 / n as f64 / secs;
    let random = 1.0 - (-(n as f64 - 1.0) * rate * 2.0 * near.as_secs_f64()).exp();
    let window = Duration::from_millis(100);
    let mut busiest = 0;
    let mut j = 0;
    for i in 0..all_polls.len() {
        while all_polls[i].0 - all_polls[j].0 >= window {
            j += 1;
        }
        busiest = busiest.max(i - j + 1);
    }
    if !apart.is_empty() {
        println!(
            "  spread: two different hosts' successive polls min {:.1} ms, median {:.0} ms apart (evenly spread: {:.0} ms); \
             {:.0} % of polls within 10 ms of another host's (independent random times: {:.0} %); \
             the busiest 100 ms held {busiest} polls (evenly spread: {:.1})",
            ms(apart[0]),
            ms(quantile(&apart, 0.5)),
            1000.0 / (n as f64 * rate),
            100.0 * close as f64 / all_polls.len() as f64,
            100.0 * random,
            n as f64 * rate / 10.0
        );
    }
}

// ---------------------------------------------------------------------------
// The counting proxy: forwards bytes both ways and follows HTTP/1.1's framing
// to log each request (method, path, status, bytes each way).

#[derive(Clone, Debug)]
struct Exchange {
    /// When the request's head reached the proxy.
    at: Instant,
    method: String,
    path: String,
    status: Option<u16>,
    /// With `If-None-Match` or `If-Modified-Since`.
    conditional: bool,
    /// Request bytes (head and body).
    up: u64,
    /// Response bytes.
    down: u64,
}

impl Exchange {
    /// A read of the manifest: one per poll.
    fn is_poll(&self) -> bool {
        self.method == "GET" && self.path.ends_with("/manifest.json")
    }

    fn kind(&self) -> String {
        let what = if self.is_poll() {
            "manifest"
        } else if self.path.ends_with(".minisig") {
            "signature"
        } else if self.path.contains("/reports/") {
            "report"
        } else {
            "artifact"
        };
        let status = self.status.map_or("?".to_string(), |s| s.to_string());
        format!("{} {what} {status}", self.method)
    }
}

#[derive(Default)]
struct Log {
    exchanges: Mutex<Vec<Exchange>>,
    /// Connections whose framing was lost.
    unparsed: AtomicU64,
}

impl Log {
    fn all(&self) -> Vec<Exchange> {
        self.exchanges.lock().map(|x| x.clone()).unwrap_or_default()
    }

    fn between(&self, from: Instant, to: Instant) -> Vec<Exchange> {
        let mut x = self.all();
        x.retain(|x| x.at >= from && x.at < to);
        x
    }

    fn update(&self, i: usize, f: impl FnOnce(&mut Exchange)) {
        if let Ok(mut x) = self.exchanges.lock() {
            if let Some(x) = x.get_mut(i) {
                f(x);
            }
        }
    }
}

struct Proxy {
    addr: SocketAddr,
    log: Arc<Log>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and relays each connection to `origin`.
    fn start(origin: SocketAddr) -> Proxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("proxy port");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy address");
        let log = Arc::new(Log::default());
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut relays: Vec<JoinHandle<()>> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => relays.extend(relay(client, origin, &log, &stop)),
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                    relays.retain(|r| !r.is_finished());
                }
                for r in relays {
                    let _ = r.join();
                }
            })
        };
        Proxy {
            addr,
            log,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Relays `client` to `origin`: a thread each way, both ending when either
/// side closes or the proxy stops.
fn relay(
    client: TcpStream,
    origin: SocketAddr,
    log: &Arc<Log>,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    let Ok(server) = TcpStream::connect_timeout(&origin, Duration::from_secs(5)) else {
        return Vec::new();
    };
    let tick = Some(Duration::from_millis(200));
    for s in [&client, &server] {
        let _ = s.set_nonblocking(false);
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(tick);
    }
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return Vec::new();
    };
    // The requests in flight on this connection, oldest first.
    let pending = Arc::new(Mutex::new(VecDeque::new()));
    let requests = Requests {
        log: log.clone(),
        pending: pending.clone(),
        current: None,
    };
    let responses = Responses {
        log: log.clone(),
        pending,
        current: None,
    };
    let (stop1, stop2) = (stop.clone(), stop.clone());
    vec![
        std::thread::spawn(move || pump(client, server, requests, &stop1)),
        std::thread::spawn(move || pump(server2, client2, responses, &stop2)),
    ]
}

fn pump(mut from: TcpStream, mut to: TcpStream, mut side: impl Side, stop: &AtomicBool) {
    let mut framer = Framer::default();
    let mut buf = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // Logged before it is forwarded: a request is in `pending`
                // before its response can come.
                framer.feed(&buf[..n], &mut side);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// How a message's body is framed.
enum Body {
    None,
    Length(u64),
    Chunked,
    UntilClose,
    /// Not HTTP as expected: stop following this connection.
    Lost,
}

/// One direction of a connection: what a head means, and a message's end.
trait Side {
    fn head(&mut self, head: &[u8]) -> Body;
    fn end(&mut self, bytes: u64);
    fn lost(&mut self);
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The body's framing by the head's headers (requests and responses alike).
fn framing(head: &str) -> Body {
    if header(head, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return Body::Chunked;
    }
    match header(head, "content-length").map(str::parse::<u64>) {
        Some(Ok(0)) => Body::None,
        Some(Ok(n)) => Body::Length(n),
        Some(Err(_)) => Body::Lost,
        None => Body::UntilClose,
    }
}

struct Requests {
    log: Arc<Log>,
    pending: Arc<Mutex<VecDeque<(usize, bool)>>>,
    current: Option<usize>,
}

impl Side for Requests {
    fn head(&mut self, head: &[u8]) -> Body {
        let head = String::from_utf8_lossy(head);
        let mut first = head.split("\r\n").next().unwrap_or("").split(' ');
        let (Some(method), Some(target)) = (first.next(), first.next()) else {
            return Body::Lost;
        };
        if !["GET", "HEAD", "PUT", "POST", "DELETE"].contains(&method) {
            return Body::Lost;
        }
        let x = Exchange {
            at: Instant::now(),
            method: method.to_string(),
            path: target.split('?').next().unwrap_or("").to_string(),
            status: None,
            conditional: header(&head, "if-none-match").is_some()
                || header(&head, "if-modified-since").is_some(),
            up: 0,
            down: 0,
        };
        let Ok(mut all) = self.log.exchanges.lock() else {
            return Body::Lost;
        };
        all.push(x);
        let i = all.len() - 1;
        drop(all);
        self.current = Some(i);
        if let Ok(mut p) = self.pending.lock() {
            p.push_back((i, method == "HEAD"));
        }
        match framing(&head) {
            // A request without a length has no body.
            Body::UntilClose => Body::None,
            other => other,
        }
    }

    fn end(&mut self, bytes: u64) {
        if let Some(i) = self.current.take() {
            self.log.update(i, |x| x.up = bytes);
        }
    }

    fn lost(&mut self) {
        self.log.unparsed.fetch_add(1, Ordering::Relaxed);
    }
}

struct Responses {
    log: Arc<Log>,
    pending: Arc<Mutex<VecDeque<(usize, bool)>>>,
    current: Option<usize>,
}

impl Side for Responses {
    fn head(&mut self, head: &[u8]) -> Body {
        let head = String::from_utf8_lossy(head);
        let status = head
            .split("\r\n")
            .next()
            .filter(|l| l.starts_with("HTTP/"))
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse::<u16>().ok());
        let Some(status) = status else {
            return Body::Lost;
        };
        if (100..200).contains(&status) {
            return Body::None;
        }
        let Some((i, head_request)) = self.pending.lock().ok().and_then(|mut p| p.pop_front())
        else {
            return Body::Lost;
        };
        self.current = Some(i);
        self.log.update(i, |x| x.status = Some(status));
        if head_request || status == 204 || status == 304 {
            Body::None
        } else {
            framing(&head)
        }
    }

    fn end(&mut self, bytes: u64) {
        if let Some(i) = self.current.take() {
            self.log.update(i, |x| x.down = bytes);
        }
    }

    fn lost(&mut self) {
        self.log.unparsed.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, Default)]
enum State {
    #[default]
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailer,
    UntilClose,
    Lost,
}

/// HTTP/1.1 message framing over a byte stream, fed as it comes.
#[derive(Default)]
struct Framer {
    buf: Vec<u8>,
    state: State,
    /// Bytes of the message so far.
    size: u64,
}

/// The longest head followed; a longer one loses the connection.
const MAX_HEAD: usize = 64 * 1024;

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Framer {
    fn feed(&mut self, data: &[u8], side: &mut impl Side) {
        if matches!(self.state, State::Lost) {
            return;
        }
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        // Each turn consumes bytes or stops: bounded by the input.
        loop {
            let rest = &self.buf[pos..];
            match self.state {
                State::Head => {
                    let Some(i) = find(rest, b"\r\n\r\n") else {
                        if rest.len() > MAX_HEAD {
                            self.state = State::Lost;
                            side.lost();
                        }
                        break;
                    };
                    let body = side.head(&rest[..i + 4]);
                    pos += i + 4;
                    self.size += (i + 4) as u64;
                    self.state = match body {
                        Body::None => {
                            side.end(std::mem::take(&mut self.size));
                            State::Head
                        }
                        Body::Length(n) => State::Body(n),
                        Body::Chunked => State::ChunkSize,
                        Body::UntilClose => State::UntilClose,
                        Body::Lost => {
                            side.lost();
                            State::Lost
                        }
                    };
                }
                State::Body(n) | State::ChunkData(n) => {
                    let k = (rest.len() as u64).min(n);
                    if k == 0 {
                        break;
                    }
                    pos += k as usize;
                    self.size += k;
                    let chunked = matches!(self.state, State::ChunkData(_));
                    self.state = match (n - k, chunked) {
                        (0, false) => {
                            side.end(std::mem::take(&mut self.size));
                            State::Head
                        }
                        (0, true) => State::ChunkEnd,
                        (left, false) => State::Body(left),
                        (left, true) => State::ChunkData(left),
                    };
                }
                State::ChunkSize => {
                    let Some(i) = find(rest, b"\r\n") else { break };
                    let line = String::from_utf8_lossy(&rest[..i]);
                    let size = u64::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16);
                    pos += i + 2;
                    self.size += (i + 2) as u64;
                    self.state = match size {
                        Ok(0) => State::Trailer,
                        Ok(n) => State::ChunkData(n),
                        Err(_) => {
                            side.lost();
                            State::Lost
                        }
                    };
                }
                State::ChunkEnd => {
                    if rest.len() < 2 {
                        break;
                    }
                    pos += 2;
                    self.size += 2;
                    self.state = State::ChunkSize;
                }
                State::Trailer => {
                    let Some(i) = find(rest, b"\r\n") else { break };
                    pos += i + 2;
                    self.size += (i + 2) as u64;
                    if i == 0 {
                        side.end(std::mem::take(&mut self.size));
                        self.state = State::Head;
                    }
                }
                State::UntilClose => {
                    self.size += rest.len() as u64;
                    pos = self.buf.len();
                    break;
                }
                State::Lost => {
                    pos = self.buf.len();
                    break;
                }
            }
            if matches!(self.state, State::Lost) {
                pos = self.buf.len();
                break;
            }
        }
        self.buf.drain(..pos);
    }
}
