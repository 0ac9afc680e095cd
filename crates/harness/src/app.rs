//! A self-upgrading HTTP server: the `http_std` example's HTTP code under an
//! overseer master with a fetcher. The `upgrade-app` binary (run by the
//! upgrade tests and benchmark) and the demo's app mode (`overseer-demo app`)
//! are both just [`main_from_env`].
//!
//! Its behaviour comes from its *build stamp* (see [`crate::release`]), so
//! each published copy can be a different version or a broken build:
//!
//! | stamp word | effect |
//! |---|---|
//! | `version=V` | the program's version (default `1.0.0`) |
//! | `exit_at_start=1` | every worker exits with status 7 before ready |
//! | `never_ready=1` | every worker hangs before ready |
//! | `crash_after_ms=M` | every worker exits with status 3, M ms after ready |
//! | `start_delay_ms=M` | every process of the build, its sanity check included, sleeps M ms first |
//! | `sanity_child=hang` | its sanity check starts a child that keeps the check's output open, then hangs |
//! | `sanity_child=exit` | the same child, then the check answers and exits 0 |
//! | `pubkeys=K1,K2` | the build trusts these minisign public keys (instead of `UA_PUBKEYS`) |
//! | `master_says=W` | the build, when it runs a master (started, or re-executed into), says `master says W` |
//! | `reexec_check_hold=PATH` | the master's re-exec check of this build waits while PATH exists (at most 60 s) |
//!
//! The master's settings come from the environment:
//!
//! | variable | setting |
//! |---|---|
//! | `UA_ADDR` | the address to serve (default `127.0.0.1:0`) |
//! | `UA_FLEET_DIR` | poll the fleet manifest in this directory (before any other source), as host `UA_HOST_ID` |
//! | `UA_FETCH_URL` | poll this URL (HTTP fetcher, `.minisig`/`.sha256` beside it) |
//! | `UA_FETCH_FILE` | or watch this file |
//! | `UA_FETCH_GITHUB` | or poll this repository's latest GitHub release (`OWNER/REPO`; the asset named like the binary, the token from `GITHUB_TOKEN`) |
//! | `UA_GITHUB_API` | the GitHub API's base URL |
//! | `UA_ALLOW_HTTP=1` | allow plain http to a host that is not loopback |
//! | `UA_PASS_ENV` | variables passed to the workers although the fetcher reads them, comma-separated |
//! | `UA_CHECK_ENV` | the sanity check writes the names of its environment variables to this file |
//! | `UA_INTERVAL_MS` | poll interval (default 200) |
//! | `UA_PUBKEYS` | trusted minisign public keys, comma-separated |
//! | `UA_PROBATION_MS`, `UA_READY_MS`, `UA_DOWNLOAD_TIMEOUT_MS`, `UA_SANITY_TIMEOUT_MS` | timings |
//! | `UA_MAX_DOWNLOAD` | max_download_size in bytes |
//! | `UA_NO_RESTART_AFTER_FETCH=1` | install without restarting |
//! | `UA_CONTROL` | the control socket's path |
//! | `UA_REQUIRED=1` | exit instead of running directly when the master cannot start |
//! | `UA_VETO=W` | a `pre_upgrade` hook vetoes builds whose stamp has the word `W` |
//! | `UA_PANIC=W` | the `pre_upgrade` hook panics on builds whose stamp has the word `W` (a bug in user code) |
//! | `UA_DEBUG=1` | debug lines |
//!
//! `/` and `/slow?ms=N` answer `version=V worker=N pid=P id=…`; a slow
//! request says `version=V worker=N … slow request started` first.

#[path = "../../overseer/examples/http_std.rs"]
mod http_std;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use overseer::{Config, Readiness, State};

use crate::release::{own_stamp, read_stamp};

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn millis(name: &str, default: u64) -> Duration {
    Duration::from_millis(var(name).and_then(|v| v.parse().ok()).unwrap_or(default))
}

/// Runs the app: answers a sanity check, or starts the master (or, in a
/// worker, the program) configured from the build stamp and the `UA_*`
/// environment variables. Returns only if the service does.
pub fn main_from_env() {
    if let Some(ms) = own_stamp()
        .get("start_delay_ms")
        .and_then(|m| m.parse().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
    if let Some(hold) = own_stamp().get("reexec_check_hold") {
        if std::env::var_os("OVERSEER_MASTER_CHECK").is_some() {
            let hold = std::path::Path::new(hold);
            for _ in 0..6_000 {
                if !hold.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    if let Some(how) = own_stamp().get("sanity_child") {
        if std::env::var_os("OVERSEER_BIN_CHECK").is_some() {
            sanity_child(how);
        }
    }
    if let (Some(path), Some(_)) = (var("UA_CHECK_ENV"), std::env::var_os("OVERSEER_BIN_CHECK")) {
        let names: Vec<String> = std::env::vars_os()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        let _ = std::fs::write(path, names.join("\n"));
    }
    overseer::sanity_check();
    let stamp = own_stamp();
    let is_master = std::env::var_os("OVERSEER_WORKER").is_none()
        && std::env::var_os("OVERSEER_MASTER_CHECK").is_none();
    if let Some(word) = stamp.get("master_says").filter(|_| is_master) {
        say(&format!("master says {word}"));
    }
    let version = stamp
        .get("version")
        .cloned()
        .unwrap_or_else(|| "1.0.0".into());
    let interval = millis("UA_INTERVAL_MS", 200);
    let mut config = Config::new(program)
        .address(var("UA_ADDR").unwrap_or_else(|| "127.0.0.1:0".into()))
        .readiness(Readiness::Notify)
        .ready_timeout(millis("UA_READY_MS", 10_000))
        .terminate_timeout(Duration::from_secs(10))
        .probation(millis("UA_PROBATION_MS", 1_000))
        .download_timeout(millis("UA_DOWNLOAD_TIMEOUT_MS", 30_000))
        .sanity_timeout(millis("UA_SANITY_TIMEOUT_MS", 10_000))
        .min_fetch_interval(Duration::from_millis(50))
        .no_restart_after_fetch(var("UA_NO_RESTART_AFTER_FETCH").is_some())
        .version(version)
        .required(var("UA_REQUIRED").is_some())
        .debug(var("UA_DEBUG").is_some());
    if let Some(max) = var("UA_MAX_DOWNLOAD").and_then(|v| v.parse().ok()) {
        config = config.max_download_size(max);
    }
    if let Some(path) = var("UA_CONTROL") {
        config = config.control_socket(path);
    }
    let (veto, panic) = (var("UA_VETO"), var("UA_PANIC"));
    if veto.is_some() || panic.is_some() {
        // Reads the verified new binary where it is staged, as a real hook
        // would (e.g. to check its build metadata against a policy).
        config = config.pre_upgrade(move |staged: &std::path::Path| {
            let stamp = read_stamp(staged);
            if let Some(word) = panic.as_ref().filter(|w| stamp.contains_key(*w)) {
                panic!("pre_upgrade hook bug: cannot handle a build marked {word}");
            }
            match veto.as_ref().filter(|w| stamp.contains_key(*w)) {
                Some(word) => Err(format!("the build is marked {word}")),
                None => Ok(()),
            }
        });
    }
    for name in var("UA_PASS_ENV").iter().flat_map(|n| n.split(',')) {
        config = config.pass_env(name);
    }
    let keys = stamp.get("pubkeys").cloned().or_else(|| var("UA_PUBKEYS"));
    for key in keys.iter().flat_map(|k| k.split(',')) {
        config = config.public_key(key);
    }
    if let Some(dir) = var("UA_FLEET_DIR") {
        let mut fleet = overseer::fetcher::Fleet::new(dir).interval(interval);
        if let Some(id) = var("UA_HOST_ID") {
            fleet = fleet.host_id(id);
        }
        config = config.fetcher(fleet);
    } else if let Some(repo) = var("UA_FETCH_GITHUB") {
        let mut fetcher = overseer::fetcher::GitHub::new(repo)
            .token_env("GITHUB_TOKEN")
            .allow_http(var("UA_ALLOW_HTTP").is_some())
            .interval(interval);
        if let Some(api) = var("UA_GITHUB_API") {
            fetcher = fetcher.api_url(api);
        }
        let exe = std::env::current_exe().unwrap_or_default();
        if let Some(name) = exe.file_name() {
            fetcher = fetcher.asset(name.to_string_lossy());
        }
        config = config.fetcher(fetcher);
    } else if let Some(url) = var("UA_FETCH_URL") {
        config = config.fetcher(
            overseer::fetcher::Http::new(url)
                .interval(interval)
                .allow_http(var("UA_ALLOW_HTTP").is_some())
                .sidecars(),
        );
    } else if let Some(path) = var("UA_FETCH_FILE") {
        config = config.fetcher(
            overseer::fetcher::File::new(path)
                .interval(interval)
                .settle(Duration::from_millis(100)),
        );
    }
    overseer::run(config);
}

/// A misbehaving sanity check: starts `sleep 3600` sharing its stdout and
/// stderr, writes `PID PGID CHILD_PID` to [`SANITY_CHILD_FILE`] beside the
/// binary (so a test can find both processes), then hangs (`hang`) or goes
/// on to answer the check (`exit`).
// The child is left running on purpose: the test checks that the master ends it.
#[allow(clippy::zombie_processes)]
fn sanity_child(how: &str) {
    let child = std::process::Command::new("sleep")
        .arg("3600")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start the child");
    let exe = std::env::current_exe().expect("own path");
    let dir = exe.parent().expect("own directory");
    let line = format!(
        "{} {} {}\n",
        std::process::id(),
        nix::unistd::getpgrp(),
        child.id()
    );
    // Written whole, then renamed: a reader never sees half of it.
    let tmp = dir.join(format!("{SANITY_CHILD_FILE}.tmp"));
    std::fs::write(&tmp, line).expect("write the pid file");
    std::fs::rename(&tmp, dir.join(SANITY_CHILD_FILE)).expect("rename the pid file");
    if how == "hang" {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The file `sanity_child` writes beside the binary it runs from.
pub const SANITY_CHILD_FILE: &str = "sanity-child.pid";

/// Runs in each worker.
fn program(state: State) {
    let stamp = own_stamp();
    let n = state.worker;
    let tag = format!(
        "version={} worker={n} pid={} id={}",
        state.version.as_deref().unwrap_or("none"),
        std::process::id(),
        state.id.get(..12).unwrap_or("none"),
    );
    say(&format!("{tag} starting"));
    if stamp.contains_key("exit_at_start") {
        say(&format!("{tag} exiting at start (a broken build)"));
        std::process::exit(7);
    }
    if stamp.contains_key("never_ready") {
        say(&format!("{tag} never getting ready (a broken build)"));
        std::thread::sleep(Duration::from_secs(3600));
    }
    let listener = state.tcp_listener().expect("a TCP address");
    state.ready().expect("readiness reported");
    if let Some(ms) = stamp.get("crash_after_ms").and_then(|m| m.parse().ok()) {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            say(&format!("worker={n} crashing (a broken build)"));
            std::process::exit(3);
        });
    }
    let handler: http_std::Handler = Arc::new(move |path: &str| {
        if let Some(ms) = path.strip_prefix("/slow?ms=") {
            let ms = ms.parse::<u64>().unwrap_or(0).min(60_000);
            say(&format!("{tag} slow request started"));
            std::thread::sleep(Duration::from_millis(ms));
        }
        (200, format!("{tag}\n"))
    });
    http_std::serve(&listener, &state.shutdown, handler);
}

/// Prints a line on stderr in one write: the master and every worker share
/// the pipe, and a line written in pieces could interleave with theirs.
fn say(line: &str) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}
