//! `overseer run`: any program under overseer (flags, the config file, and
//! the library's `Config` built from both).
//!
//! Everything the user gave is checked here, before the library binds a
//! socket or starts a process: the values (`parse`: addresses with the
//! library's own parser, durations, sizes, the signal, public keys), the
//! release source (`source`) and the program itself. Bad input exits with
//! status 2 and a message naming the flag (or the file and line) and what
//! would be right.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use overseer::{Config, Probe, Readiness};

use crate::config_file::{self, FileConfig};
use crate::control_socket;
use crate::failure::Failure;
use crate::parse::{self, Ready, Sanity};
use crate::program::{find_program, interpreter_name};
use crate::source::SourceArgs;

/// Examples shown after `overseer run --help`.
pub(crate) const EXAMPLES: &str = "\
Examples:
  # A Python service that reads LISTEN_FDS and sends READY=1 on NOTIFY_SOCKET:
  overseer run --listen :8080 --ready notify -- python3 app.py

  # Any server, ready once it has stayed up 2 s; restart with kill -HUP <pid>:
  overseer run -l 127.0.0.1:8080 --ready after=2s --restart-signal HUP -- ./server

  # Self-upgrading from signed releases on a web server (keys: overseer keygen):
  overseer run --listen :443 --app-version 1.4.0 --public-key /etc/myapp/overseer.pub \\
      --fetch-url https://releases.example.com/myapp --fetch-interval 5m \\
      --sanity-check version -- /opt/myapp/bin/myapp

  # Everything from a file (flags given here win over it):
  overseer run --config /etc/myapp/overseer.toml";

/// `overseer run` flags. None has a clap default: a flag that is absent
/// leaves the config file's value (or the library's default) in place.
#[derive(Args, Debug)]
#[command(
    override_usage = "overseer run [OPTIONS] [--] PROGRAM [ARGS]...\n       overseer run --config FILE [OPTIONS] [-- PROGRAM [ARGS]...]"
)]
pub(crate) struct RunArgs {
    /// Address to listen on; repeat for several (fds 3, 4, … in this order).
    ///
    /// Forms: HOST:PORT (127.0.0.1:8080, [::1]:8080, localhost:8080), :PORT
    /// (every interface, dual-stack), udp:HOST:PORT, udp::PORT,
    /// unix:/path/to.sock. Prefix NAME= to name it in LISTEN_FDNAMES
    /// (admin=unix:/run/app/admin.sock); unnamed ones are listener0, listener1, …
    #[arg(long, short = 'l', value_name = "[NAME=]ADDR")]
    listen: Vec<String>,

    /// Read options from this TOML file (keys: the long flag names, upgrade
    /// options under [upgrade]); flags given here win over it.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,

    /// When a new worker counts as ready, so the old one may drain:
    /// started, notify, after=DUR or cmd=COMMAND [default: started]
    ///
    ///   started      as soon as the process runs (like the Go reference;
    ///                fine for programs that listen at once, as connections
    ///                wait in the kernel backlog meanwhile)
    ///   notify       when it sends READY=1 on NOTIFY_SOCKET (sd_notify).
    ///                Recommended: only the program knows when it can serve
    ///   after=DUR    once it has stayed alive DUR (after=2s): a worker that
    ///                crashes at start-up is caught, the old one keeps serving
    ///   cmd=COMMAND  when COMMAND exits 0; run every 100 ms, without a shell
    ///                (quotes group words), {pid} and {worker} replaced by the
    ///                new worker's pid and number (also in OVERSEER_WORKER_PID
    ///                and OVERSEER_WORKER), e.g.
    ///                cmd='curl -fsS --unix-socket /run/app/{pid}.sock http://app/health'
    ///
    /// In every mode a READY=1 from the worker counts too, and --ready-timeout
    /// applies. Do not probe the shared --listen address: the master holds
    /// that socket, the kernel accepts connections into its backlog, and the
    /// old worker may answer, so it cannot tell the new worker from the old.
    /// Probe something only the new worker has (a socket or file with its pid).
    #[arg(long, value_name = "MODE", value_parser = Ready::parse, verbatim_doc_comment)]
    ready: Option<Ready>,

    /// A new worker not ready within this is killed; the old one keeps
    /// serving [default: 30s]. Durations: 500ms, 30s, 2m, 1h.
    #[arg(long, value_name = "DUR", value_parser = parse::positive_duration)]
    ready_timeout: Option<Duration>,

    /// How long a draining worker may take after SIGTERM before SIGKILL
    /// [default: 30s].
    #[arg(long, value_name = "DUR", value_parser = parse::positive_duration)]
    terminate_timeout: Option<Duration>,

    /// The signal that triggers a graceful restart: a name (USR2, SIGHUP) or
    /// a number [default: USR2]. Every other signal but SIGCHLD is forwarded
    /// to the worker; SIGTERM stops.
    #[arg(long, value_name = "SIG", value_parser = parse::signal)]
    restart_signal: Option<i32>,

    /// A signal that makes the master re-execute itself in place, as
    /// `overseer reload` does (the config file read again, the overseer
    /// binary now at the master's path run, same pid, sockets and workers)
    /// [default: none]. It is then not forwarded to the worker.
    #[arg(long, value_name = "SIG", value_parser = parse::signal)]
    reload_signal: Option<i32>,

    /// Turn restarts off: the restart signal then stops the service
    /// gracefully (and a fetched release is installed for the next start).
    #[arg(long)]
    no_restart: bool,

    /// Steer new TCP connections to the newest ready worker (Linux): each
    /// worker accepts on a socket of its own (one SO_REUSEPORT group per
    /// address), and the old one gets SIGTERM only once it has accepted every
    /// connection sent to it, a second after the new one is ready. For
    /// servers that drop connections they accepted but had not read yet
    /// when they stop. Carried across `overseer reload`, which must then
    /// keep every steered address.
    #[arg(long)]
    steer_connections: bool,

    /// The installed program's version (e.g. 1.4.0): signed releases not
    /// newer are refused; workers see it in OVERSEER_VERSION.
    #[arg(long, value_name = "VERSION")]
    app_version: Option<String>,

    /// The service's name, for `overseer restart/status --name NAME`
    /// [default: PROGRAM's file name]. Its control socket is
    /// `$XDG_RUNTIME_DIR/overseer/NAME.sock`, or `/run/overseer/NAME.sock`
    /// for root, or `/tmp/overseer-UID/NAME.sock`.
    #[arg(long, short = 'n', value_name = "NAME")]
    name: Option<String>,

    /// The control socket's path, instead of the one derived from --name.
    /// `overseer restart` and `overseer status` talk to it; only this
    /// user and root may connect.
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,

    /// No control socket.
    #[arg(long, conflicts_with_all = ["control", "name"])]
    no_control: bool,

    /// Listen backlog of stream sockets [default: 1024].
    #[arg(long, value_name = "N")]
    backlog: Option<i32>,

    /// Print the master's debug messages.
    #[arg(long)]
    debug: bool,

    #[command(flatten)]
    source: SourceArgs,

    /// How often to poll the release source [default: 1s for files and URLs,
    /// 1m for S3, Azure and GCS, 5m for GitHub].
    #[arg(long, value_name = "DUR", value_parser = parse::positive_duration, help_heading = "Upgrades")]
    fetch_interval: Option<Duration>,

    /// Trust releases signed by this minisign public key: the key itself
    /// (RWQ…) or a .pub file (from overseer keygen). Repeat to trust several
    /// (rotation). With a key, unsigned releases are refused.
    #[arg(long, value_name = "KEY", help_heading = "Upgrades")]
    public_key: Vec<String>,

    /// Accept signed releases that are not newer than the installed one.
    #[arg(long, help_heading = "Upgrades")]
    allow_downgrade: bool,

    /// Pass this environment variable to the program, the sanity check and
    /// the readiness probe although the release source reads it for
    /// credentials (AWS_* for --fetch-s3, AZURE_* for --fetch-azure,
    /// GOOGLE_* for --fetch-gcs, GITHUB_TOKEN and GH_TOKEN for
    /// --fetch-github): those are kept from them otherwise. Repeatable.
    #[arg(long, value_name = "VAR", help_heading = "Upgrades")]
    pass_env: Vec<String>,

    /// A new release's worker failing within this after becoming ready is
    /// rolled back to the previous binary [default: 10s].
    #[arg(long, value_name = "DUR", value_parser = parse::duration, help_heading = "Upgrades")]
    probation: Option<Duration>,

    /// Install new releases without restarting; they run from the next restart.
    #[arg(long, help_heading = "Upgrades")]
    no_restart_after_fetch: bool,

    /// The largest release accepted: bytes, or with K, M, G (KiB, MiB, GiB;
    /// KB, MB, GB are powers of 1000) [default: 512MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse::size, help_heading = "Upgrades")]
    max_download_size: Option<u64>,

    /// A download still running after this is abandoned [default: 5m].
    #[arg(long, value_name = "DUR", value_parser = parse::positive_duration, help_heading = "Upgrades")]
    download_timeout: Option<Duration>,

    /// Run the verified new binary before swapping it in: none, version,
    /// args=ARGS or token [default: none]
    ///
    ///   none      no check (PROGRAM is not built with overseer)
    ///   version   run NEW --version: it must exit 0 within --sanity-timeout
    ///   args=ARGS run NEW ARGS (e.g. args='--check-config /etc/app.conf'),
    ///             exit 0 required
    ///   token     the overseer library's token check, for programs built
    ///             with the overseer library
    ///
    /// The check runs without the sockets or NOTIFY_SOCKET, so it cannot
    /// disturb the running service; a binary that hangs is killed and refused.
    #[arg(long, value_name = "MODE", value_parser = Sanity::parse, help_heading = "Upgrades", verbatim_doc_comment)]
    sanity_check: Option<Sanity>,

    /// How long the sanity check may take [default: 10s]; the time it waits
    /// for a CPU on a busy host does not count (up to 6 times this in all).
    #[arg(long, value_name = "DUR", value_parser = parse::positive_duration, help_heading = "Upgrades")]
    sanity_timeout: Option<Duration>,

    /// The executable's name inside release archives [default: PROGRAM's file name].
    #[arg(long, value_name = "NAME", help_heading = "Upgrades")]
    executable_name: Option<String>,

    /// The program and its arguments (after --). Found in PATH when it has
    /// no slash. Upgrades replace this file (after following symlinks): for
    /// an interpreted service, make the script itself PROGRAM (with a #!
    /// line), not the interpreter.
    #[arg(value_name = "PROGRAM [ARGS]", trailing_var_arg = true)]
    command: Vec<OsString>,
}

/// Runs `overseer run`: returns only on an error.
pub(crate) fn run(args: RunArgs) -> Result<(), Failure> {
    let (file, text) = match &args.config {
        Some(path) => {
            // The previous image, run again because the new one could not
            // take over, goes on with the text it had: the file may hold
            // what only the new build understands.
            let text = match overseer::fallback_config_text() {
                Some(text) => text,
                None => config_file::read(path)?,
            };
            (config_file::parse(path, &text)?, Some(text))
        }
        None => (FileConfig::default(), None),
    };
    let mut config = build(args, file)?;
    if let Some(text) = text {
        config = config.config_text(text);
    }
    match overseer::run_err(config) {
        Ok(()) => Ok(()),
        Err(e) => Err(match e {
            overseer::Error::InvalidAddress { .. }
            | overseer::Error::Config(_)
            | overseer::Error::PathInUse { .. } => Failure::Usage(e.to_string()),
            _ => Failure::Runtime(e.to_string()),
        }),
    }
}

/// The control socket: the path given, else the default directory's
/// `NAME.sock`, the name defaulting to the program's file name.
fn control_path(
    path: Option<PathBuf>,
    name: Option<String>,
    program: &Path,
) -> Result<PathBuf, Failure> {
    if let Some(path) = path {
        return Ok(path);
    }
    let name = match name {
        Some(n) => n,
        None => program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "overseer".into()),
    };
    control_socket::check_name(&name).map_err(Failure::Usage)?;
    let dir = control_socket::default_dir();
    control_socket::check_dir(&dir)?;
    Ok(control_socket::socket_for(&dir, &name))
}

/// Merges flags over the file and checks everything; builds the library's
/// configuration.
fn build(a: RunArgs, f: FileConfig) -> Result<Config, Failure> {
    let usage = Failure::Usage;
    // The program: the command line's, else the file's.
    let (program, program_args): (OsString, Vec<OsString>) = match a.command.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => match f.program {
            Some(p) => (p.into(), f.args.into_iter().map(Into::into).collect()),
            None => {
                return Err(usage(
                    "no PROGRAM to run: give it after the options (overseer run [OPTIONS] -- PROGRAM [ARGS...]) or as program = \"...\" in the config file".into(),
                ))
            }
        },
    };
    let resolved = find_program(Path::new(&program)).map_err(usage)?;

    let mut config = Config::command(&program).required(true);
    if !(a.no_control || f.no_control) {
        config = config.control_socket(control_path(
            a.control.or(f.control),
            a.name.or(f.name),
            &resolved,
        )?);
    }
    for arg in program_args {
        config = config.arg(arg);
    }

    let listen = if a.listen.is_empty() {
        f.listen
    } else {
        a.listen
    };
    for entry in &listen {
        let (name, address) = parse::listen(entry).map_err(usage)?;
        config = match name {
            Some(n) => config.named_address(n, address),
            None => config.address(address),
        };
    }

    let ready_timeout = a.ready_timeout.or(f.ready_timeout);
    if let Some(t) = ready_timeout {
        config = config.ready_timeout(t);
    }
    let ready = a.ready.or(f.ready).unwrap_or(Ready::Started);
    let ready_limit = ready_timeout.unwrap_or(Duration::from_secs(30));
    config = config.readiness(match ready {
        Ready::Started => Readiness::Started,
        Ready::Notify => Readiness::Notify,
        Ready::After(d) if d >= ready_limit => {
            return Err(usage(format!(
                "--ready after={} must be shorter than --ready-timeout ({}): the worker would be killed first",
                humantime::format_duration(d),
                humantime::format_duration(ready_limit)
            )))
        }
        Ready::After(d) => Readiness::Alive(d),
        Ready::Cmd(words) => {
            let (first, rest) = words
                .split_first()
                .ok_or_else(|| usage("--ready cmd= needs a command".into()))?;
            find_program(Path::new(first))
                .map_err(|e| usage(format!("--ready cmd=: the probe's {e}")))?;
            Readiness::Command(Probe::new(first).args(rest))
        }
    });
    if let Some(t) = a.terminate_timeout.or(f.terminate_timeout) {
        config = config.terminate_timeout(t);
    }
    if let Some(s) = a.restart_signal.or(f.restart_signal) {
        config = config.restart_signal(s);
    }
    if let Some(s) = a.reload_signal.or(f.reload_signal) {
        config = config.reload_signal(s);
    }
    if let Some(v) = a.app_version.or(f.app_version) {
        config = config.version(v);
    }
    if let Some(b) = a.backlog.or(f.backlog) {
        if b <= 0 {
            return Err(usage(format!("--backlog {b}: must be above zero")));
        }
        config = config.backlog(b);
    }
    config = config
        .no_restart(a.no_restart || f.no_restart)
        .steer_connections(a.steer_connections || f.steer_connections)
        .debug(a.debug || f.debug);

    // Upgrades.
    let mut u = f.upgrade;
    let interval = a.fetch_interval.or(u.fetch_interval);
    let keys = if a.public_key.is_empty() {
        std::mem::take(&mut u.public_key)
    } else {
        a.public_key
    };
    for key in &keys {
        config = config.public_key(parse::public_key(key).map_err(usage)?);
    }
    let pass_env = if a.pass_env.is_empty() {
        std::mem::take(&mut u.pass_env)
    } else {
        a.pass_env
    };
    for name in pass_env {
        parse::env_name(&name).map_err(usage)?;
        config = config.pass_env(name);
    }
    let from_file = SourceArgs::from_file(&mut u);
    let (mut config, fetching) =
        a.source
            .or(from_file)
            .add_to(config, interval, !keys.is_empty())?;
    if let Some(i) = interval {
        // The user's interval counts, even below the library's 1 s floor;
        // a fleet's polls are drawn from 3/4 to 5/4 of it, so the floor is
        // 3/4 of it (the other sources poll at exactly the interval).
        config = config.min_fetch_interval(i.mul_f64(0.75));
    }
    config = config
        .allow_downgrade(a.allow_downgrade || u.allow_downgrade)
        .no_restart_after_fetch(a.no_restart_after_fetch || u.no_restart_after_fetch);
    if let Some(p) = a.probation.or(u.probation) {
        config = config.probation(p);
    }
    if let Some(s) = a.max_download_size.or(u.max_download_size) {
        config = config.max_download_size(s);
    }
    if let Some(t) = a.download_timeout.or(u.download_timeout) {
        config = config.download_timeout(t);
    }
    if let Some(t) = a.sanity_timeout.or(u.sanity_timeout) {
        config = config.sanity_timeout(t);
    }
    if let Some(n) = a.executable_name.or(u.executable_name) {
        config = config.executable_name(n);
    }
    config = match a.sanity_check.or(u.sanity_check).unwrap_or(Sanity::None) {
        Sanity::None => config.sanity_check(false),
        Sanity::Token => config.sanity_check(true),
        Sanity::Version => config.sanity_check_args(["--version"]),
        Sanity::Args(args) => config.sanity_check_args(args),
    };
    if fetching {
        let target = std::fs::canonicalize(&resolved).unwrap_or_else(|_| resolved.clone());
        if let Some(name) = interpreter_name(&target) {
            return Err(usage(format!(
                "PROGRAM is the interpreter '{name}' ({}): upgrades replace PROGRAM's own file, \
                 so they would overwrite the interpreter, not your service; make the script \
                 PROGRAM instead (a #! line and chmod +x), or a release source is not for this \
                 service",
                target.display()
            )));
        }
        crate::progress::log(
            "info",
            &format!("upgrades replace {} (PROGRAM's own file)", target.display()),
        );
        config = config.on_download_progress(crate::progress::reporter());
    }
    Ok(config)
}
