//! The recipes of `examples/servers/` under load: each server started by a
//! `run` script, restarted 20 times while keep-alive and per-request clients
//! count every failed request. Shared by the recipes' test and the server
//! matrix benchmark (which runs the baselines of `benches/servers/` too).
//!
//! Every master runs in its own process group and is killed with it (workers
//! included) when its `Proc` is dropped; traffic stays on 127.0.0.1; every
//! wait is bounded.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use overseer_harness::client::Client;
use overseer_harness::load::{Load, LoadSpec, Stats};
use overseer_harness::ports::free_port;
use overseer_harness::proc::Proc;

const OVERSEER: &str = env!("CARGO_BIN_EXE_overseer");
/// The repository's `examples/servers/`.
pub const SERVERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/servers");
/// Where `scripts/test` installs the Python servers (a virtual environment).
const VENV_BIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/servers-venv/bin");
/// Restarts per run.
pub const RESTARTS: u64 = 20;
/// Client threads per load mode.
const CLIENTS: usize = 4;
/// A generous bound for anything that should take well under a second.
const T: Duration = Duration::from_secs(30);

/// A recipe: its folder's name, and the command that shows its server is
/// installed.
#[derive(Debug, Clone, Copy)]
pub struct Recipe {
    /// The folder under `examples/servers/` (and `benches/servers/`).
    pub name: &'static str,
    /// Commands that must run and exit 0 with the recipes' PATH.
    needs: &'static [&'static [&'static str]],
    /// How to install what is missing.
    install: &'static str,
}

const PIP: &str = "python3 -m venv target/servers-venv && target/servers-venv/bin/pip install gunicorn==23.0.0 uvicorn==0.32.1";

/// Every recipe of `examples/servers/`.
pub const RECIPES: &[Recipe] = &[
    Recipe {
        name: "node-http",
        needs: &[&["node", "--version"], &["curl", "--version"]],
        install: "apt-get install nodejs curl",
    },
    Recipe {
        name: "gunicorn",
        needs: &[&["gunicorn", "--version"]],
        install: PIP,
    },
    Recipe {
        name: "gunicorn-gthread",
        needs: &[&["gunicorn", "--version"]],
        install: PIP,
    },
    Recipe {
        name: "go-http",
        needs: &[&["go", "version"]],
        install: "apt-get install golang-go",
    },
    Recipe {
        name: "uvicorn",
        needs: &[&["python3", "-c", "import uvicorn"]],
        install: PIP,
    },
    Recipe {
        name: "puma",
        needs: &[&["puma", "--version"]],
        install: "apt-get install puma",
    },
];

impl Recipe {
    /// The recipe called `name`.
    pub fn named(name: &str) -> Recipe {
        match RECIPES.iter().find(|r| r.name == name) {
            Some(recipe) => *recipe,
            None => panic!("no recipe {name} in RECIPES"),
        }
    }

    /// Whether its server is installed, or what is missing and how to
    /// install it.
    pub fn installed(&self) -> Result<(), String> {
        for command in self.needs {
            let ok = Command::new(command[0])
                .args(&command[1..])
                .env("PATH", path_var())
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                return Err(format!(
                    "`{}` failed, and the {} recipe needs it: {} (scripts/test does it)",
                    command.join(" "),
                    self.name,
                    self.install
                ));
            }
        }
        Ok(())
    }

    /// Panics clearly when its server is not installed.
    pub fn require(&self) {
        if let Err(missing) = self.installed() {
            panic!("{missing}");
        }
    }
}

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

/// Starts `DIR/run 127.0.0.1:PORT` (with `env` added to its environment),
/// runs both load modes through `RESTARTS` restarts, and returns the
/// figures per mode.
pub fn restarts_under_load(dir: &Path, env: &[(&str, &str)]) -> [(&'static str, Stats); 2] {
    let name = dir.display();
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let mut cmd = Command::new(dir.join("run"));
    cmd.arg(addr.to_string())
        .env("PATH", path_var())
        .envs(env.iter().copied());
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
pub fn assert_no_failures(name: &str, figures: &[(&str, Stats)]) {
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
