//! # overseer
//!
//! Monitorable, gracefully restarting, self-upgrading network services.
//!
//! ```text
//!  process manager (systemd / docker / shell)
//!         │  stable PID, signals in, exit status out
//!         ▼
//!  ┌──────────────── master ────────────────┐
//!  │ binds + holds listening sockets        │
//!  │ forwards signals, proxies exit status  │
//!  └───┬──────────────────────────────┬─────┘
//!      │ fds 3.. + env (LISTEN_FDS…)  │ same fds, new env
//!      ▼                              ▼
//!   worker N (draining)           worker N+1 (serving)
//! ```
//!
//! The process you start becomes the **master**: it binds every configured
//! address once and keeps those sockets for its whole life, then re-executes
//! its own binary as a **worker** that runs your program. On a restart (the
//! restart signal, `SIGUSR2` by default, or [`restart`]) the master starts a
//! new worker with the same sockets, waits until it is ready, and only then
//! tells the old one to drain. Both accept from the same socket meanwhile, and
//! while no worker accepts, connections wait in the kernel backlog: none is
//! refused. The master forwards signals to the serving worker, exits with its
//! exit status (or dies by the same signal), and keeps one PID for the
//! process manager.
//!
//! ```no_run
//! use std::io::{Read, Write};
//!
//! fn main() {
//!     overseer::run(overseer::Config::new(program).address("127.0.0.1:3000"));
//! }
//!
//! // Runs in each worker.
//! fn program(state: overseer::State) {
//!     let listener = state.tcp_listener().expect("a TCP address");
//!     listener.set_nonblocking(false).ok();
//!     for stream in listener.incoming() {
//!         if state.shutdown.is_triggered() {
//!             break;
//!         }
//!         let Ok(mut stream) = stream else { continue };
//!         let mut buf = [0; 1024];
//!         let _ = stream.read(&mut buf);
//!         let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nhi\n");
//!     }
//! }
//! ```
//!
//! ## The worker protocol
//!
//! Workers speak only standard protocols, so any program can be one (see
//! [`protocol`]): sockets arrive by **systemd socket activation** (fds 3..,
//! `LISTEN_FDS`, `LISTEN_PID` set to the worker's own pid, `LISTEN_FDNAMES`);
//! readiness and status go back by **sd_notify** datagrams on a private
//! `NOTIFY_SOCKET`; stop means **SIGTERM**, then SIGKILL after
//! `terminate_timeout`. Workers die with the master (Linux parent-death
//! signal; elsewhere a watcher thread notices the master is gone).
//!
//! ## Readiness
//!
//! By default ([`Readiness::Started`]) a library worker is ready the moment
//! your program function is called: the sockets already listen, so early
//! connections queue in the backlog. A program with slow start-up should use
//! [`Readiness::Notify`] and call [`State::ready`] once it can serve; the old
//! worker keeps serving until then, and a worker not ready within
//! `ready_timeout` is killed while the old one carries on. For a command
//! that cannot send `READY=1`, [`Readiness::Alive`] (ready after staying up
//! a while) and [`Readiness::Command`] (a [`Probe`] that exits 0) are
//! fallbacks; the [`Readiness`] docs explain why a probe must not target the
//! shared listening address.
//!
//! ## Draining keep-alive connections
//!
//! When [`State::shutdown`] fires, stop accepting, answer each open
//! connection's next request with `Connection: close`, and close connections
//! that stay idle only after a short grace period. Closing an idle keep-alive
//! connection at once races with a client reusing it, which is where
//! restarts usually lose requests. The `http_std` example shows the pattern
//! with std alone; for tokio, axum and hyper, `serve` (features `tokio` and
//! `hyper`) does it in one call, HTTP/2 included (the `http_axum` and
//! `http_hyper` examples).
//!
//! ## Self-upgrade
//!
//! With a [`fetcher`] configured ([`Config::fetcher`]), the master polls for
//! new releases and runs each through the pipeline of `docs/design.md`
//! ("Self-upgrade"): a streamed, capped, time-limited download into a staging
//! file beside the binary; unpacking; a checksum; a minisign signature by a key
//! from [`Config::public_key`] whose signed trusted comment names a newer
//! version and this target (`version:1.4.0 target:x86_64-unknown-linux-gnu`); a
//! native-executable check; the sanity check; [`Config::pre_upgrade`]; then an
//! atomic, durable swap that keeps the previous binary. The worker started from
//! the new release is on probation ([`Config::probation`]): if it fails, the
//! previous binary is restored and served, and the release is remembered as
//! bad. The `overseer` command signs releases (`overseer sign`). The master's
//! memory of releases, with the highest signed version seen, is the [`ledger`],
//! which also offers the way out when a release was signed with a mistaken,
//! too-high version.
//!
//! ## Under systemd
//!
//! When the master's own environment has `NOTIFY_SOCKET`, it speaks for its
//! workers there (so a unit needs only `NotifyAccess=main`): `READY=1` once
//! the first worker is ready, `RELOADING=1` … `READY=1` around every
//! handover (for `Type=notify-reload`; a failed handover ends with `READY=1`
//! too), the serving worker's `STATUS=` lines, `STOPPING=1`, and `WATCHDOG=1`
//! when `WATCHDOG_USEC` asks for it (the watchdog variables are not passed on
//! to workers). Started by socket activation (`LISTEN_FDS`
//! and `LISTEN_PID` naming the master), it adopts the passed sockets instead
//! of binding: each serves the configured address with the same name
//! ([`Config::named_address`]) or, failing that, the same address; with no
//! address configured, every passed socket is served. The repository's
//! `deploy/` folder has unit files and a container example.
//!
//! ## Logging
//!
//! Through `tracing` when a subscriber is installed; otherwise info, warnings
//! and errors go to stderr prefixed `[overseer PID]` ([`Config::debug`] adds
//! debug lines, [`Config::no_warn`] drops warnings).
//!
//! ## Dependencies
//!
//! `nix` and `libc` for process and descriptor calls (libc only where the
//! new worker's process, sharing the master's memory until `execve`, must
//! avoid allocation), `signal-hook` to receive signals on a
//! thread with their origin, `socket2` to bind with a chosen backlog and
//! dual-stack control, `sha2` for the binary's ID, `tempfile` for the
//! master's private socket directory and staging files, `tracing` as the
//! logging facade. For upgrades: `minisign-verify` (signatures, pure Rust),
//! `semver` (signed versions), `object` (the native-executable check),
//! `flate2`/`lzma-rs`/`ruzstd`/`tar`/`zip` (unpacking, each behind a
//! feature), `ureq` (the HTTP and GitHub fetchers: small, blocking, rustls
//! with ring or, by the `tls-aws-lc-rs` feature, aws-lc-rs) and
//! `object_store` (S3, Azure Blob Storage and Google Cloud Storage, on a
//! private runtime; it brings aws-lc-rs).
#![deny(missing_docs)]

mod accept;
pub mod address;
mod binary_id;
mod config;
#[cfg(unix)]
pub mod control;
#[cfg(feature = "delta")]
pub mod delta;
mod error;
pub mod fetcher;
pub mod fleet;
#[cfg(unix)]
pub mod ledger;
mod listener;
mod log;
mod progress;
pub mod protocol;
#[cfg(all(unix, feature = "tokio"))]
pub mod serve;
mod shutdown;
#[cfg(unix)]
mod sockets;
mod state;
#[cfg(any(feature = "zstd", feature = "delta"))]
mod zstd_window;

#[cfg(unix)]
mod child_registry;
mod fallback;
#[cfg(unix)]
mod keys;
#[cfg(unix)]
mod master;
#[cfg(unix)]
mod notify;
#[cfg(unix)]
mod sys;
#[cfg(unix)]
mod upgrade;
#[cfg(unix)]
mod withheld;
#[cfg(unix)]
mod worker;

pub use accept::Incoming;
pub use config::{Config, PreUpgradeFn, Probe, Program, ProgramFn, Readiness};
#[cfg(unix)]
pub use config::{SIGUSR1, SIGUSR2};
pub use error::{Error, Result};
pub use listener::Listener;
pub use progress::{DownloadProgress, DownloadState, ProgressFn};
pub use shutdown::{Notified, Shutdown};
pub use state::State;

/// Whether this platform can run a master and workers (Unix: Linux, macOS,
/// the BSDs). Elsewhere [`run`] runs the program directly.
pub fn is_supported() -> bool {
    cfg!(unix)
}

/// Runs the service under overseer.
///
/// In the process you started, this becomes the master and does not return:
/// it ends the process the way the last serving worker ended. In a worker it
/// runs the program and exits when the program returns. If overseer is
/// unsupported or cannot start (say, an address cannot be bound) it logs why
/// and runs the program directly with its listeners bound in-process, then
/// returns — unless [`Config::required`] is set, in which case it exits with
/// status 1.
pub fn run(config: Config) {
    let Err(failed) = start(&config) else { return };
    let e = failed.error;
    if config.required {
        log::error!("{e}");
        std::process::exit(1);
    }
    log::warning!("{e}; running the program directly");
    if let Err(e) = fallback::run(&config, failed.sockets) {
        log::error!("{e}");
        std::process::exit(1);
    }
}

/// Like [`run`], but returns the error instead of falling back.
pub fn run_err(config: Config) -> Result<()> {
    start(&config).map_err(|failed| failed.error)
}

fn start(config: &Config) -> std::result::Result<(), fallback::Failed> {
    sanity_check();
    log::configure(config.debug, config.no_warn);
    if !is_supported() {
        return Err(Error::Unsupported.into());
    }
    #[cfg(unix)]
    {
        if let Program::Function(program) = &config.program {
            if worker::is_worker() {
                worker::run(config, program.as_ref());
            }
        }
        match master::run(config) {
            Ok(never) => match never {},
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    Err(Error::Unsupported.into())
}

/// Asks the master to re-execute itself in place, from the master or from a
/// worker: the binary now at the master's path runs as the master in the
/// same process (same pid), takes over the sockets and workers, and its
/// own `Config` (keys, release source, addresses, timeouts) applies from
/// then on. The workers see nothing, unless the socket set changed (then a
/// handover gives the next worker the new set).
///
/// The new binary is checked first; one that fails the check, or cannot
/// take over, leaves the previous master in charge and the failure in the
/// log and the status. Returns once the request is made, not done;
/// [`control::reload`] waits for the outcome. Returns [`Error::NotRunning`]
/// outside a master and its workers.
pub fn reload() -> Result<()> {
    #[cfg(unix)]
    {
        if master::is_master() {
            return master::request_reload();
        }
        worker::request_reload()
    }
    #[cfg(not(unix))]
    Err(Error::NotRunning)
}

/// For a `main` that cannot reach [`run`] in a new image of a master that
/// re-executed itself (see [`reload`]), say because its configuration
/// cannot be read: runs the previous image of the master again, with the
/// master's state, so the service goes on, and the failure (`reason`) is
/// reported there. Returns at once in any other process, which is the
/// case unless a re-exec is under way.
pub fn reexec_failed(reason: &str) {
    #[cfg(unix)]
    master::give_way(reason);
    #[cfg(not(unix))]
    let _ = reason;
}

/// In the previous image of a master run again because the new image could
/// not take over (see [`reload`]): the text this image gave
/// [`Config::config_text`] before the re-exec. Build the configuration from
/// it rather than from the file, which may by then hold keys only the new
/// build knows; the service then goes on as it was. `None` in any other
/// process.
pub fn fallback_config_text() -> Option<String> {
    #[cfg(unix)]
    return master::fallback_config_text();
    #[cfg(not(unix))]
    None
}

/// Triggers a graceful restart, from the master or from a worker.
///
/// In a worker it asks the master over the notify socket; in the master it
/// wakes the supervisor directly. Returns [`Error::NotRunning`] elsewhere.
/// With [`Config::no_restart`] this stops the service gracefully instead.
pub fn restart() -> Result<()> {
    #[cfg(unix)]
    {
        if master::is_master() {
            return master::request_restart();
        }
        worker::request_restart()
    }
    #[cfg(not(unix))]
    Err(Error::NotRunning)
}

/// Answers the master's sanity check: when this process runs with
/// `OVERSEER_BIN_CHECK` set, prints its value on a line of its own and exits 0.
///
/// [`run`] calls this first; call it earlier in `main` to skip expensive
/// set-up when a new build is only being checked.
pub fn sanity_check() {
    if let Some(token) = std::env::var_os(protocol::OVERSEER_BIN_CHECK) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "\n{}", token.to_string_lossy());
        let _ = out.flush();
        std::process::exit(0);
    }
}
