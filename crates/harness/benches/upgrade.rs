//! Upgrade benchmark: how long from a 50 MiB release becoming visible at its
//! source to the new version serving (download, hashing, signature check,
//! sanity run, swap, restart and readiness), and what the master costs while
//! it polls an unchanged release.
//!
//! `cargo bench -p overseer-harness --bench upgrade` (set `UPGRADE_ROUNDS`,
//! `UPGRADE_MIB` to change the defaults of 5 rounds and 50 MiB).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use overseer_harness::client::Client;
use overseer_harness::proc::{anon_kb, cpu_ticks, rss_kb, Proc};
use overseer_harness::release::{stamp_padded, this_target, Keys, ReleaseServer};

const APP: &str = env!("CARGO_BIN_EXE_upgrade-app");
const POLL_MS: u64 = 50;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn version(addr: std::net::SocketAddr) -> Option<String> {
    let r = Client::new(addr, false).get("/").ok()?;
    r.field("version").map(str::to_string)
}

/// CPU time (user + system) of a process, in clock ticks.
fn main() {
    let rounds = env_num("UPGRADE_ROUNDS", 5);
    let mib = env_num("UPGRADE_MIB", 50);
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("app");
    stamp_padded(Path::new(APP), &bin, "version=1.0.0", mib << 20).expect("install");
    let keys = Keys::generate();
    let server = ReleaseServer::start();

    println!(
        "upgrade benchmark: {rounds} upgrades of a {mib} MiB release, polled every {POLL_MS} ms"
    );
    let mut cmd = Command::new(&bin);
    cmd.env("UA_FETCH_URL", server.url("app"))
        .env("UA_PUBKEYS", &keys.public)
        .env("UA_INTERVAL_MS", POLL_MS.to_string())
        .env("UA_PROBATION_MS", "200");
    let p = Proc::spawn_quiet(cmd);
    let addr = p.listen_addr();
    p.expect_line("worker 1 ready", Duration::from_secs(60));

    let mut times = Vec::new();
    for round in 0..rounds {
        let v = format!("{}.0.0", round + 2);
        let file = dir.path().join("release.tmp");
        stamp_padded(Path::new(APP), &file, &format!("version={v}"), mib << 20).expect("build");
        let bytes = std::fs::read(&file).expect("read");
        let sig = keys.sign(&bytes, &v, &this_target());
        server.publish("app.minisig", sig.into_bytes());
        let visible = Instant::now();
        server.publish("app", bytes);
        let deadline = visible + Duration::from_secs(120);
        while version(addr).as_deref() != Some(v.as_str()) {
            assert!(
                Instant::now() < deadline,
                "version {v} never served: {:?}",
                p.output()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let t = visible.elapsed();
        println!("  {v}: visible → serving {:>7.1} ms", t.as_secs_f64() * 1e3);
        times.push(t);
        p.expect_line(
            &format!("version {v} passed probation"),
            Duration::from_secs(30),
        );
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "visible → new version serving: median {:.1} ms, max {:.1} ms (includes up to {POLL_MS} ms of poll wait)",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    drop(p);

    // Idle cost: an unchanged release polled every second.
    let mut cmd = Command::new(&bin);
    // The installed binary is already the latest release.
    cmd.env("UA_FETCH_URL", server.url("app"))
        .env("UA_PUBKEYS", &keys.public)
        .env("UA_INTERVAL_MS", "1000");
    let p = Proc::spawn_quiet(cmd);
    p.expect_line("worker 1 ready", Duration::from_secs(60));
    // Let the first poll (which downloads and finds the same binary) pass.
    std::thread::sleep(Duration::from_secs(3));
    let (c0, r0) = (
        cpu_ticks(p.pid).unwrap_or(0),
        server.requests.load(std::sync::atomic::Ordering::Relaxed),
    );
    let span = Duration::from_secs(env_num("UPGRADE_IDLE_SECS", 20));
    std::thread::sleep(span);
    let (c1, r1) = (
        cpu_ticks(p.pid).unwrap_or(0),
        server.requests.load(std::sync::atomic::Ordering::Relaxed),
    );
    let tick = 100.0; // USER_HZ on Linux
    let cpu = (c1 - c0) as f64 / tick / span.as_secs_f64() * 100.0;
    println!(
        "idle, polling an unchanged release every 1 s for {:?}: master CPU {cpu:.3} %, {} requests ({:.2}/s, all 304), master RSS {} KiB (anonymous {} KiB)",
        span,
        r1 - r0,
        (r1 - r0) as f64 / span.as_secs_f64(),
        rss_kb(p.pid).unwrap_or(0),
        anon_kb(p.pid).unwrap_or(0)
    );
}
