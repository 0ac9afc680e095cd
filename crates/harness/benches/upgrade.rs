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
use overseer_harness::proc::Proc;
use overseer_harness::release::{idle_cost, stamp_padded, this_target, Keys, ReleaseServer};

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

/// Times `UPGRADE_ROUNDS` upgrades of an `UPGRADE_MIB` release, then an idle master.
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
    let span = Duration::from_secs(env_num("UPGRADE_IDLE_SECS", 20));
    let idle = idle_cost(&bin, &server, &keys.public, Duration::from_secs(1), span);
    println!(
        "idle, polling an unchanged release every 1 s for {:?}: master CPU {:.3} % ({:.1} ms), {} requests ({:.2}/s, {} full downloads), master RSS {} KiB (anonymous {} KiB)",
        idle.span,
        idle.cpu_percent,
        idle.cpu.as_secs_f64() * 1000.0,
        idle.requests,
        idle.requests as f64 / idle.span.as_secs_f64(),
        idle.downloads,
        idle.rss_kb.unwrap_or(0),
        idle.anon_kb.unwrap_or(0)
    );
}
