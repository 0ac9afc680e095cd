//! The recipes of `examples/servers/`: each third-party server, started by
//! its own `run` script under `overseer run`, loses no request across 20
//! restarts under load, with keep-alive connections and with a connection
//! per request.
//!
//! Every master runs in its own process group and is killed with it (workers
//! included) when its `Proc` is dropped; traffic stays on 127.0.0.1; every
//! wait is bounded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use overseer_harness::client::Client;
use overseer_harness::load::{Load, LoadSpec, Stats};
use overseer_harness::ports::free_port;
use overseer_harness::proc::Proc;

const OVERSEER: &str = env!("CARGO_BIN_EXE_overseer");
/// The repository's `examples/servers/`.
const SERVERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/servers");
/// Where `scripts/test` installs the Python servers (a virtual environment).
const VENV_BIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/servers-venv/bin");
/// Restarts per recipe.
const RESTARTS: u64 = 20;
/// Client threads per load mode.
const CLIENTS: usize = 4;
/// A generous bound for anything that should take well under a second.
const T: Duration = Duration::from_secs(30);

/// PATH for a `run` script: the `overseer` under test first, then the
/// servers' virtual environment, then the inherited PATH.
fn path_var() -> std::ffi::OsString {
    let overseer_dir = Path::new(OVERSEER)
        .parent()
        .expect("the overseer binary has a directory")
        .to_path_buf();
    let mut dirs = vec![overseer_dir, PathBuf::from(VENV_BIN)];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).expect("PATH")
}

/// Fails clearly when `program ARGS` does not run (and exit 0) with that PATH.
fn require(program: &str, args: &[&str], install: &str) {
    let ok = Command::new(program)
        .args(args)
        .env("PATH", path_var())
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "`{program} {}` failed, and this recipe needs it: {install} (scripts/test does it)",
        args.join(" ")
    );
}

/// Starts `examples/servers/NAME/run 127.0.0.1:PORT`, runs both load modes
/// through `RESTARTS` restarts, and returns the figures per mode.
fn restarts_under_load(name: &str) -> [(&'static str, Stats); 2] {
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let mut cmd = Command::new(Path::new(SERVERS).join(name).join("run"));
    cmd.arg(addr.to_string()).env("PATH", path_var());
    let p = Proc::spawn_quiet(cmd);
    p.expect_line("worker 1 ready", T);
    let first = Client::new(addr, false)
        .get("/")
        .expect("GET / from worker 1");
    assert_eq!(first.field("worker"), Some("1"), "{:?}", first.body);

    let loads = [
        ("keep-alive", load(addr, true)),
        ("per-request", load(addr, false)),
    ];
    for n in 2..=RESTARTS + 1 {
        p.signal(nix::libc::SIGUSR2);
        p.expect_line(&format!("worker {n} ready"), T);
        // Each handover happens under traffic: both loads reach the new
        // worker before the next restart.
        let deadline = Instant::now() + T;
        while loads.iter().any(|(_, l)| l.latest_worker() < n) {
            assert!(
                Instant::now() < deadline,
                "{name}: worker {n} never answered the load"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let figures = loads.map(|(mode, l)| (mode, l.stop()));
    assert_eq!(p.count("restart failed"), 0, "{:?}", p.output());
    // Ends the master and its workers (the process group), by pid.
    drop(p);
    figures
}

fn load(addr: std::net::SocketAddr, keep_alive: bool) -> Load {
    Load::start(LoadSpec {
        addr,
        clients: CLIENTS,
        keep_alive,
        path: "/".into(),
        max_duration: Duration::from_secs(90),
        pause: Duration::ZERO,
    })
}

/// Prints the figures, then asserts that no request failed.
fn assert_no_failures(name: &str, figures: &[(&str, Stats)]) {
    for (mode, stats) in figures {
        eprintln!(
            "{name} × {mode}: {} requests, {} failed {:?}",
            stats.ok + stats.failures.len() as u64,
            stats.failures.len(),
            stats.failure_kinds()
        );
    }
    for (mode, stats) in figures {
        assert!(
            stats.failures.is_empty(),
            "{name} × {mode}: {} failed: {:?}",
            stats.failures.len(),
            stats.failures.iter().take(10).collect::<Vec<_>>()
        );
        let workers = stats.by_worker.len() as u64;
        assert_eq!(
            workers,
            RESTARTS + 1,
            "{name} × {mode}: {:?}",
            stats.by_worker
        );
    }
}

#[test]
fn node_http_loses_no_request_across_restarts() {
    require("node", &["--version"], "apt-get install nodejs");
    require("curl", &["--version"], "apt-get install curl");
    let figures = restarts_under_load("node-http");
    assert_no_failures("node-http", &figures);
}

#[test]
fn gunicorn_loses_no_request_across_restarts() {
    require(
        "gunicorn",
        &["--version"],
        "python3 -m venv target/servers-venv && target/servers-venv/bin/pip install gunicorn==23.0.0",
    );
    let figures = restarts_under_load("gunicorn");
    assert_no_failures("gunicorn", &figures);
}

#[test]
fn uvicorn_loses_no_request_across_restarts() {
    require(
        "python3",
        &["-c", "import uvicorn"],
        "python3 -m venv target/servers-venv && target/servers-venv/bin/pip install uvicorn==0.32.1",
    );
    let figures = restarts_under_load("uvicorn");
    assert_no_failures("uvicorn", &figures);
}

/// gthread workers keep connections alive: `draining.py`'s worker class
/// drains them.
#[test]
fn gunicorn_gthread_loses_no_request_across_restarts() {
    require(
        "gunicorn",
        &["--version"],
        "python3 -m venv target/servers-venv && target/servers-venv/bin/pip install gunicorn==23.0.0",
    );
    let figures = restarts_under_load("gunicorn-gthread");
    assert_no_failures("gunicorn-gthread", &figures);
}

#[test]
fn go_http_loses_no_request_across_restarts() {
    require("go", &["version"], "apt-get install golang-go");
    let figures = restarts_under_load("go-http");
    assert_no_failures("go-http", &figures);
}

/// Puma's own graceful stop closes idle keep-alive connections: `draining.rb`
/// drains them.
#[test]
fn puma_loses_no_request_across_restarts() {
    require("puma", &["--version"], "apt-get install puma");
    let figures = restarts_under_load("puma");
    assert_no_failures("puma", &figures);
}
