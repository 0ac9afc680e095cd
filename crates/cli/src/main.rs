//! `overseer`: the command-line companion of the overseer library.
//!
//! ## Any program: `overseer run`
//!
//! ```text
//! overseer run --listen :8080 --ready notify -- python3 app.py
//! ```
//!
//! `overseer` becomes the master: it binds every `--listen` address once,
//! keeps those sockets for its whole life, and runs PROGRAM as its worker.
//! The worker receives the sockets by systemd socket activation (fds 3..,
//! `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), so anything that reads
//! `sd_listen_fds`, Python's `socket.socket(fileno=3)` or Rust's `listenfd`
//! works unchanged. On the restart signal (`SIGUSR2` by default) the master
//! starts a new worker, waits until it is ready (`--ready`), and only then
//! sends the old one SIGTERM to drain. Other signals are forwarded to the
//! worker, and `overseer` exits with the worker's exit status (or dies by the
//! same signal), so a process manager sees one well-behaved process.
//!
//! Readiness (`--ready`): `started` (the default, as soon as the process
//! runs), `notify` (an sd_notify `READY=1` on `NOTIFY_SOCKET`: recommended),
//! `after=DUR` (alive that long) or `cmd=COMMAND` (a probe that exits 0).
//! A probe must reach something private to the new worker: the shared
//! listening address is held by the master and may be answered by the old
//! worker, so it proves nothing.
//!
//! With a release source (`--fetch-file`, `--fetch-url`, `--fetch-github`,
//! `--fetch-s3`) and `--public-key`, the master also upgrades PROGRAM's own
//! file: download (a progress bar on a terminal), signature with a newer
//! signed version, optional sanity run (`--sanity-check version`), atomic
//! swap, restart, and rollback if the new worker fails.
//!
//! Every option can also come from a TOML file (`--config FILE`; keys are the
//! long flag names in kebab-case, upgrade options under `[upgrade]`); flags
//! given on the command line win. Bad input (an unknown flag or key, a bad
//! address, duration or key, a missing program) exits with status 2 before
//! anything is bound or started; a failure to start (an address in use)
//! exits with status 1.
//!
//! ## Publishing signed releases
//!
//! ```text
//! overseer keygen --out keys/                 # keys/overseer.key, keys/overseer.pub
//! overseer sign --key keys/overseer.key --version 1.4.0 target/release/myapp
//!                                             # writes target/release/myapp.minisig
//! ```
//!
//! The files are the `minisign` tool's formats; `sign` is the same as
//! `minisign -S -s KEY -m FILE -t 'version:1.4.0 target:x86_64-unknown-linux-gnu'`.
//!
//! ## The ledger
//!
//! ```text
//! overseer ledger show --bin /usr/local/bin/myapp
//! overseer ledger reset-floor --bin /usr/local/bin/myapp --to 1.0.1
//! ```
//!
//! The master refuses signed releases not newer than the highest version
//! it has seen. When a release was signed with a wrong, too-high version,
//! `reset-floor` sets that floor back (a running master applies it at its
//! next poll).
//!
//! ## Modules
//!
//! From the top down; a module uses only modules named after it:
//!
//! - `main.rs`: the command line's top level, dispatch, exit status.
//! - The commands: `run.rs` (`run`: flags, merged over the file, built into
//!   the library's `Config`), `control.rs` (`restart`, `status`),
//!   `publish.rs` (`keygen`, `sign`), `ledger.rs` (`ledger show`,
//!   `ledger reset-floor`).
//! - What they are made of: `source.rs` (`run`'s release source, which takes
//!   the file's `[upgrade]` table), `config_file.rs` (the TOML file),
//!   `program.rs` (PROGRAM found in `PATH`, interpreters told apart),
//!   `progress.rs` (download progress), `control_socket.rs` (where a
//!   master's control socket lives: `run` puts it there, `restart` and
//!   `status` find it there).
//! - At the bottom: `parse.rs` (the values of flags and file alike:
//!   durations, sizes, signals, modes, keys, addresses), `failure.rs` (why a
//!   command failed, and so its exit status).

mod config_file;
mod control;
mod control_socket;
mod failure;
mod fleet;
mod ledger;
mod parse;
mod program;
mod progress;
mod publish;
mod run;
mod source;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::failure::Failure;

#[derive(Parser)]
#[command(
    name = "overseer",
    version,
    about = "Monitorable, gracefully restarting, self-upgrading services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs any program under overseer: sockets held by a master, graceful
    /// restarts, signals forwarded, exit status proxied, self-upgrade.
    ///
    /// PROGRAM receives the listening sockets by systemd socket activation
    /// (fds 3.., LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES) and may report
    /// readiness with sd_notify (READY=1 on NOTIFY_SOCKET). Send the restart
    /// signal (SIGUSR2) to overseer's pid for a graceful restart; SIGTERM
    /// drains and stops. Exit status: the worker's; 2 for bad input (nothing
    /// is started); 1 when the master cannot start (e.g. an address in use).
    #[command(after_help = run::EXAMPLES)]
    Run(Box<run::RunArgs>),
    /// Asks a running master for a graceful restart and reports its outcome.
    ///
    /// Waits until the new worker is ready and serving (then prints its
    /// number and pid) or the handover failed (then prints why; the old
    /// worker keeps serving). Talks to the master's control socket, which
    /// only the master's user and root may use.
    #[command(after_help = control::EXIT_STATUS)]
    Restart(control::RestartArgs),
    /// Asks a running master to re-execute itself in place and reports the
    /// outcome.
    ///
    /// The master checks the overseer binary now at its path (with the
    /// config file read again) and executes it in the same process: same
    /// pid, same sockets, same workers, which see nothing. New settings
    /// apply from then on; a changed address list is given to the workers
    /// by a handover. A binary or config file that fails the check changes
    /// nothing, and a new master that cannot take over gives way to the
    /// previous one.
    #[command(after_help = control::RELOAD_EXIT_STATUS)]
    Reload(control::ReloadArgs),
    /// Shows a running master's state: version and binary, worker pids,
    /// uptime, handovers and the last upgrade with its result.
    #[command(after_help = control::EXIT_STATUS)]
    Status(control::StatusArgs),
    /// Creates a key pair for signing releases (minisign format).
    ///
    /// The public key goes into the service's configuration
    /// (`Config::public_key`, or `overseer run --public-key`); keep the
    /// secret key with whoever publishes.
    Keygen(publish::KeygenArgs),
    /// Signs a release for a version and target: writes FILE.minisig.
    ///
    /// The signature covers the file and, in its trusted comment, the version
    /// and target, so a master refuses an older or foreign build even when it
    /// is validly signed. Sign the executable itself (an archive holding it is
    /// accepted too).
    Sign(publish::SignArgs),
    /// Adds a release to a fleet's signed manifest in a directory: the
    /// binary as the artifact for its target, its waves (share of hosts
    /// over time), the serial raised and the manifest signed again.
    ///
    /// Hosts polling the manifest refuse one that expired, one older than
    /// they have seen, or one not signed by a trusted key; the manifest in
    /// DEST must verify with KEY, or nothing is changed.
    Publish(fleet::PublishArgs),
    /// Steers a fleet's rollout in the manifest `publish` wrote: status,
    /// halt, resume, yank. Each edit signs the manifest again and raises its
    /// serial.
    Rollout(fleet::RolloutArgs),
    /// Shows a self-upgrading binary's ledger, or resets its version floor
    /// after a release was signed with a mistaken, too-high version.
    ///
    /// The ledger (`.NAME.overseer-state` beside the binary) holds the
    /// highest signed version seen: signed releases not newer are refused.
    Ledger(ledger::LedgerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(*args).inspect_err(|e| {
            // A new image of a running master that cannot start gives way
            // to the previous one (nothing happens otherwise).
            let (Failure::Usage(reason) | Failure::Runtime(reason)) = e;
            overseer::reexec_failed(reason);
        }),
        Command::Restart(args) => control::restart(args),
        Command::Reload(args) => control::reload(args),
        Command::Status(args) => control::status(args),
        Command::Keygen(args) => publish::run_keygen(args).map_err(Failure::Runtime),
        Command::Sign(args) => publish::run_sign(args).map_err(Failure::Runtime),
        Command::Publish(args) => fleet::publish(args).map_err(Failure::Runtime),
        Command::Rollout(args) => fleet::rollout(args).map_err(Failure::Runtime),
        Command::Ledger(args) => ledger::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("overseer: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("overseer: {e}");
            ExitCode::FAILURE
        }
    }
}
