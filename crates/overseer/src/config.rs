//! What the master is told to do: the program, its addresses, timeouts and policies.

use std::ffi::OsString;
use std::fmt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::address::{Address, Named};
use crate::error::{Error, Result};
use crate::fetcher::Fetcher;
use crate::progress::{DownloadProgress, ProgressFn};
use crate::state::State;

/// `SIGUSR1`, for [`Config::restart_signal`].
#[cfg(unix)]
pub const SIGUSR1: i32 = libc::SIGUSR1;
/// `SIGUSR2`, the default restart signal.
#[cfg(unix)]
pub const SIGUSR2: i32 = libc::SIGUSR2;
#[cfg(not(unix))]
const SIGUSR2: i32 = 0;

/// A `pre_upgrade` hook: gets the path of the verified new binary (still in
/// its staging place) and may veto the upgrade by returning an error.
pub type PreUpgradeFn = dyn Fn(&Path) -> std::result::Result<(), String> + Send + Sync + 'static;

/// The program function run in each worker.
pub type ProgramFn = dyn Fn(State) + Send + Sync + 'static;

/// What each worker runs.
#[derive(Clone)]
pub enum Program {
    /// Library mode: the current binary re-executed, calling this function.
    Function(Arc<ProgramFn>),
    /// Any executable (the CLI's mode): receives sockets by socket activation.
    Command {
        /// The executable to run (looked up in `PATH` when it has no slash).
        path: PathBuf,
        /// Its arguments.
        args: Vec<OsString>,
    },
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Program::Function(_) => f.write_str("Program::Function(..)"),
            Program::Command { path, args } => f
                .debug_struct("Program::Command")
                .field("path", path)
                .field("args", args)
                .finish(),
        }
    }
}

/// When a new worker counts as ready, so that the old one may drain.
///
/// The best judge is the program itself ([`Readiness::Notify`]): only it
/// knows when it can serve. For programs that cannot say so, [`Alive`]
/// and [`Command`] are fallbacks. In every mode an sd_notify `READY=1` from
/// the worker counts as well, and `ready_timeout` applies: a worker not
/// ready by then is killed and the old one keeps serving.
///
/// # Why not probe the service's own address?
///
/// A TCP connect or an HTTP request to the *shared* listening address cannot
/// tell the new worker from the old one. The master holds that socket for its
/// whole life, so the kernel completes the handshake from the backlog whether
/// or not any worker accepts; and while the old worker still serves, it may be
/// the one that answers. Such a probe succeeds at once and proves nothing
/// about the new worker. A probe must reach something private to the new
/// worker — an admin endpoint on a Unix socket whose path holds its pid, a
/// file it writes once it can serve, its own health command — which is why
/// a [`Probe`] gets the worker's pid and number (`{pid}`, `{worker}`).
///
/// [`Alive`]: Readiness::Alive
/// [`Command`]: Readiness::Command
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Readiness {
    /// Ready as soon as the program starts: in library mode just before the
    /// program function is called (the listeners are already open, so early
    /// connections wait in the kernel backlog); in command mode once the
    /// process is running. The default, and what the Go reference does.
    #[default]
    Started,
    /// Ready when the worker says so: [`State::ready`] in library mode, an
    /// sd_notify `READY=1` datagram in command mode. `ready_timeout` applies.
    Notify,
    /// Ready once the worker has stayed alive this long. A worker that
    /// crashes at start-up (a bad configuration, a missing file) is caught
    /// and the old one keeps serving; a worker that is merely slow is not.
    /// Must be shorter than `ready_timeout`.
    Alive(Duration),
    /// Ready when a probe command, run repeatedly, exits 0 (see [`Probe`]).
    Command(Probe),
}

/// A readiness probe: a command run every `interval` (default 100 ms) while
/// a new worker starts, until it exits 0.
///
/// The command is run directly, without a shell. In its arguments `{pid}`
/// becomes the new worker's pid and `{worker}` its number; its environment
/// also has `OVERSEER_WORKER_PID` and `OVERSEER_WORKER`. Each attempt may take
/// `attempt_timeout` (default 5 s) before it is killed and counted as a
/// failure. Probe a place only the new worker answers (see [`Readiness`]):
///
/// ```no_run
/// use overseer::{Config, Probe, Readiness};
/// // The service opens an admin socket named after its pid.
/// let probe = Probe::new("curl")
///     .args(["-fsS", "--unix-socket", "/run/myapp/admin-{pid}.sock", "http://admin/health"]);
/// overseer::run(Config::command("/usr/local/bin/myapp").readiness(Readiness::Command(probe)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    pub(crate) interval: Duration,
    pub(crate) attempt_timeout: Duration,
}

impl Probe {
    /// A probe running `program` (looked up in `PATH` when it has no slash).
    pub fn new(program: impl Into<OsString>) -> Self {
        Probe {
            program: program.into(),
            args: Vec::new(),
            interval: Duration::from_millis(100),
            attempt_timeout: Duration::from_secs(5),
        }
    }

    /// Adds an argument (`{pid}` and `{worker}` are substituted).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The pause between the end of one attempt and the start of the next
    /// (default 100 ms).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How long one attempt may run before it is killed (default 5 s).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }
}

/// The master's configuration. Build it with [`Config::new`] (library mode)
/// or [`Config::command`] (any program) and the chained setters.
///
/// ```no_run
/// use std::time::Duration;
/// overseer::run(
///     overseer::Config::new(|state| { /* serve state.listeners */ })
///         .address(":3000")
///         .terminate_timeout(Duration::from_secs(10)),
/// );
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) program: Program,
    /// The listening addresses, in the program's order, with their names.
    pub(crate) addresses: Vec<Named<String>>,
    pub(crate) backlog: i32,
    pub(crate) steer_connections: bool,
    pub(crate) restart_signal: i32,
    pub(crate) reload_signal: Option<i32>,
    pub(crate) reexec_after_upgrade: bool,
    pub(crate) terminate_timeout: Duration,
    pub(crate) ready_timeout: Duration,
    pub(crate) readiness: Readiness,
    pub(crate) required: bool,
    pub(crate) no_restart: bool,
    pub(crate) debug: bool,
    pub(crate) no_warn: bool,
    pub(crate) version: Option<String>,
    pub(crate) control_socket: Option<PathBuf>,
    pub(crate) pass_env: Vec<String>,
    pub(crate) upgrade: UpgradeConfig,
    /// What this configuration was built from, carried across a re-exec.
    pub(crate) config_text: Option<String>,
}

/// The self-upgrade settings (`docs/design.md`, "Self-upgrade"), filled by
/// `Config`'s setters.
#[derive(Clone)]
pub(crate) struct UpgradeConfig {
    pub fetcher: Option<Arc<Mutex<Box<dyn Fetcher>>>>,
    pub min_fetch_interval: Duration,
    pub pre_upgrade: Option<Arc<PreUpgradeFn>>,
    pub public_keys: Vec<String>,
    pub allow_downgrade: bool,
    pub no_restart_after_fetch: bool,
    pub probation: Duration,
    pub max_download_size: u64,
    pub download_timeout: Duration,
    pub sanity_check: bool,
    pub sanity_timeout: Duration,
    /// Arguments replacing the token check: the new binary must exit 0.
    pub sanity_args: Option<Vec<OsString>>,
    pub executable_name: Option<String>,
    pub progress: Option<Arc<ProgressFn>>,
}

impl Default for UpgradeConfig {
    fn default() -> Self {
        UpgradeConfig {
            fetcher: None,
            min_fetch_interval: Duration::from_secs(1),
            pre_upgrade: None,
            public_keys: Vec::new(),
            allow_downgrade: false,
            no_restart_after_fetch: false,
            probation: Duration::from_secs(10),
            max_download_size: 512 << 20,
            download_timeout: Duration::from_secs(300),
            sanity_check: true,
            sanity_timeout: Duration::from_secs(10),
            sanity_args: None,
            executable_name: None,
            progress: None,
        }
    }
}

impl fmt::Debug for UpgradeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpgradeConfig")
            .field("fetcher", &self.fetcher.is_some())
            .field("min_fetch_interval", &self.min_fetch_interval)
            .field("pre_upgrade", &self.pre_upgrade.is_some())
            .field("public_keys", &self.public_keys)
            .field("allow_downgrade", &self.allow_downgrade)
            .field("no_restart_after_fetch", &self.no_restart_after_fetch)
            .field("probation", &self.probation)
            .field("max_download_size", &self.max_download_size)
            .field("download_timeout", &self.download_timeout)
            .field("sanity_check", &self.sanity_check)
            .field("sanity_timeout", &self.sanity_timeout)
            .field("sanity_args", &self.sanity_args)
            .field("executable_name", &self.executable_name)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// Defaults shared by both constructors.
const DEFAULT_BACKLOG: i32 = 1024;
const DEFAULT_TERMINATE_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

impl Config {
    /// Library mode: every worker is this binary, re-executed, running `program`.
    pub fn new(program: impl Fn(State) + Send + Sync + 'static) -> Self {
        Self::with_program(Program::Function(Arc::new(program)))
    }

    /// Command mode: every worker runs `path` (any program that reads
    /// `LISTEN_FDS`, e.g. with systemd's `sd_listen_fds` or the `listenfd` crate).
    pub fn command(path: impl Into<PathBuf>) -> Self {
        Self::with_program(Program::Command {
            path: path.into(),
            args: Vec::new(),
        })
    }

    fn with_program(program: Program) -> Self {
        let upgrade = UpgradeConfig {
            // A program that is not built with overseer cannot answer the token.
            sanity_check: matches!(program, Program::Function(_)),
            ..UpgradeConfig::default()
        };
        Config {
            upgrade,
            program,
            addresses: Vec::new(),
            backlog: DEFAULT_BACKLOG,
            steer_connections: false,
            restart_signal: SIGUSR2,
            reload_signal: None,
            reexec_after_upgrade: true,
            terminate_timeout: DEFAULT_TERMINATE_TIMEOUT,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            readiness: Readiness::Started,
            required: false,
            no_restart: false,
            debug: false,
            no_warn: false,
            version: None,
            control_socket: None,
            pass_env: Vec::new(),
            config_text: None,
        }
    }

    /// Adds an argument for a [`Config::command`] program (ignored in library mode).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        if let Program::Command { args, .. } = &mut self.program {
            args.push(arg.into());
        }
        self
    }

    /// Adds a listening address (see [`crate::address`] for the forms).
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.addresses.push(Named {
            name: None,
            address: address.into(),
        });
        self
    }

    /// Adds several listening addresses, in order.
    pub fn addresses<I, S>(mut self, addresses: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for a in addresses {
            self = self.address(a);
        }
        self
    }

    /// Adds a listening address with a name for `LISTEN_FDNAMES` (no `:` allowed).
    pub fn named_address(mut self, name: impl Into<String>, address: impl Into<String>) -> Self {
        self.addresses.push(Named {
            name: Some(name.into()),
            address: address.into(),
        });
        self
    }

    /// The listen backlog for stream sockets (default 1024). Connections that
    /// arrive while no worker is accepting wait here.
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Steers new TCP connections to the newest ready worker (Linux; off by
    /// default).
    ///
    /// Without it, the workers share each listening socket, and a worker
    /// that is replaced goes on taking connections from it until it stops
    /// accepting at SIGTERM; a server that then drops the connections it
    /// accepted but has not read yet (uvicorn, gunicorn's gthread workers)
    /// loses requests at every restart, whatever its own settings. With it,
    /// each worker accepts on a socket of its own in one `SO_REUSEPORT`
    /// group per TCP address, and once a new worker is ready the group sends
    /// every new connection to it (a one-instruction classic BPF program; no
    /// privilege needed). The old worker goes on accepting what was sent to
    /// it before; it gets SIGTERM one second later, once its accept queue is
    /// empty (or 2 s after that at the latest: a worker that has not taken
    /// them by then is stuck, and a new one is started on its socket at
    /// once to take them).
    ///
    /// What it changes: the master's TCP sockets are bound with
    /// `SO_REUSEPORT`, so another process of the same user could bind the
    /// same address beside them; each handover's SIGTERM comes a second
    /// later; a socket passed by socket activation is steered only if it has
    /// `SO_REUSEPORT` already (systemd's `ReusePort=yes`), and is shared
    /// otherwise, as are UDP and Unix sockets. Steering is carried across
    /// the master's re-exec (state format 2, so the new build must read
    /// it), goes on until the service restarts even if the new
    /// configuration turns it off, and needs every steered address to stay
    /// configured (otherwise the new image gives way to the previous one).
    pub fn steer_connections(mut self, on: bool) -> Self {
        self.steer_connections = on;
        self
    }

    /// The signal that triggers a graceful restart (default `SIGUSR2`).
    pub fn restart_signal(mut self, signal: i32) -> Self {
        self.restart_signal = signal;
        self
    }

    /// A signal that makes the master re-execute itself in place (same pid,
    /// sockets and workers), like [`crate::reload`]; none by default. It
    /// must differ from the restart signal, and is then no longer forwarded
    /// to the workers.
    pub fn reload_signal(mut self, signal: i32) -> Self {
        self.reload_signal = Some(signal);
        self
    }

    /// The text this configuration was built from (a config file's
    /// contents), kept by the master across a re-exec. When the new image
    /// cannot take over, the previous one runs again: it finds the text in
    /// [`crate::fallback_config_text`] and should build its configuration
    /// from that, not from the file, which may by then hold what only the
    /// new build understands. `overseer run --config` does this.
    pub fn config_text(mut self, text: impl Into<String>) -> Self {
        self.config_text = Some(text.into());
        self
    }

    /// Whether the master re-executes itself into a new release once it
    /// passed probation (default on), so that the release's own `Config`
    /// (keys, release source, addresses, timeouts) and the master's code in
    /// it take effect. Only for a program run as a function of this binary
    /// ([`Config::new`]); a command's releases are the command's.
    pub fn reexec_after_upgrade(mut self, on: bool) -> Self {
        self.reexec_after_upgrade = on;
        self
    }

    /// How long a draining worker may take before SIGKILL (default 30 s).
    pub fn terminate_timeout(mut self, timeout: Duration) -> Self {
        self.terminate_timeout = timeout;
        self
    }

    /// How long a new worker may take to become ready (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// When a new worker counts as ready (default [`Readiness::Started`]).
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// Never fall back to running the program directly: `run` exits with an
    /// error instead.
    pub fn required(mut self, required: bool) -> Self {
        self.required = required;
        self
    }

    /// Turns restarts off: the restart signal then stops the service gracefully.
    pub fn no_restart(mut self, no_restart: bool) -> Self {
        self.no_restart = no_restart;
        self
    }

    /// Prints overseer's debug messages (when no `tracing` subscriber is set).
    pub fn debug(mut self, debug: bool) -> Self {
        self.debug = debug;
        self
    }

    /// Silences overseer's warnings (when no `tracing` subscriber is set).
    pub fn no_warn(mut self, no_warn: bool) -> Self {
        self.no_warn = no_warn;
        self
    }

    /// The program's version, passed to workers as `State::version`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Listens for control requests on a Unix socket at `path`: a handover
    /// with its real outcome, or the master's status (see [`crate::control`];
    /// `overseer restart` and `overseer status` use it). Only the master's
    /// user and root may connect: the file is made `0600` and each peer's
    /// credentials are checked. The directory is created `0700` when
    /// missing; an existing one must be a real directory (not a symbolic
    /// link) of this user or root that no one else may write in, or the
    /// master does not start. A stale socket file (this user's, refusing
    /// connections) is replaced; one a live master answers on, or any other,
    /// is an error. Off by default.
    pub fn control_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.control_socket = Some(path.into());
        self
    }

    /// Polls `fetcher` for new releases and upgrades the binary (see `docs/design.md`):
    /// each release is downloaded, verified, swapped in atomically and
    /// restarted into, and rolled back if the new worker fails.
    pub fn fetcher(mut self, fetcher: impl Fetcher) -> Self {
        self.upgrade.fetcher = Some(Arc::new(Mutex::new(Box::new(fetcher))));
        self
    }

    /// Passes the environment variable `name` to the workers, the sanity
    /// check and readiness probes although the fetcher reads it for
    /// credentials ([`Fetcher::credential_env`]): by default the master
    /// keeps those from every process it starts, and says which at start.
    /// Repeatable; a name only, no `*`.
    pub fn pass_env(mut self, name: impl Into<String>) -> Self {
        self.pass_env.push(name.into());
        self
    }

    /// The shortest time between two polls, whatever the fetcher asks
    /// (default 1 s).
    pub fn min_fetch_interval(mut self, interval: Duration) -> Self {
        self.upgrade.min_fetch_interval = interval;
        self
    }

    /// A last check on a verified new binary before it is swapped in; an
    /// error vetoes the upgrade (it is logged and the release remembered as
    /// rejected).
    pub fn pre_upgrade(
        mut self,
        hook: impl Fn(&Path) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.upgrade.pre_upgrade = Some(Arc::new(hook));
        self
    }

    /// Trusts releases signed by this minisign public key (the base64 line
    /// of a `minisign.pub` file, or the whole file). Call it again to trust
    /// several keys, e.g. while rotating. With at least one key, an unsigned
    /// release, or one signed for another target or an older version, is
    /// refused.
    pub fn public_key(mut self, key: impl Into<String>) -> Self {
        self.upgrade.public_keys.push(key.into());
        self
    }

    /// Accepts signed releases whose version is not newer than the installed
    /// one (default: refused, so an old signed build cannot be replayed).
    pub fn allow_downgrade(mut self, allow: bool) -> Self {
        self.upgrade.allow_downgrade = allow;
        self
    }

    /// Installs new releases without restarting into them; the next restart
    /// (signal or [`crate::restart`]) runs the new binary.
    pub fn no_restart_after_fetch(mut self, no_restart: bool) -> Self {
        self.upgrade.no_restart_after_fetch = no_restart;
        self
    }

    /// How long a worker started from a new release must keep running after
    /// becoming ready; if it ends with a failure within this window the
    /// previous binary is restored and served again (default 10 s).
    pub fn probation(mut self, probation: Duration) -> Self {
        self.upgrade.probation = probation;
        self
    }

    /// The largest release accepted, compressed or not (default 512 MiB): a
    /// longer download is abandoned, and so is unpacking once what it writes
    /// would pass this size.
    ///
    /// It also bounds the memory unpacking may take, before the release is
    /// known to be good: a zstd window or xz dictionary over twice this size
    /// (at least 8 MiB, and never over 128 MiB, the reference zstd decoder's
    /// own default limit; `xz -9` uses 64 MiB) is refused before decoding.
    /// Gzip and zip's deflate use a fixed 32 KiB window; a zip's central
    /// directory and a tar entry's long name or pax header may take 1 MiB.
    pub fn max_download_size(mut self, bytes: u64) -> Self {
        self.upgrade.max_download_size = bytes;
        self
    }

    /// How long a download may take before it is abandoned (default 5 min).
    pub fn download_timeout(mut self, timeout: Duration) -> Self {
        self.upgrade.download_timeout = timeout;
        self
    }

    /// Whether a new binary must pass the sanity check (run with a token in
    /// `OVERSEER_BIN_CHECK`, it must print it and exit 0) before it is
    /// swapped in. On by default in library mode; off in command mode, where
    /// the program is not built with overseer.
    pub fn sanity_check(mut self, check: bool) -> Self {
        self.upgrade.sanity_check = check;
        self
    }

    /// How long the sanity check may take (default 10 s): its own time,
    /// running or sleeping. The time it waits for a CPU on a busy host
    /// (it runs at the lowest priority) does not count, up to six times
    /// this in all; a check starved beyond that is tried again at the next
    /// poll rather than held against the release (Linux; elsewhere the
    /// timeout is wall-clock time).
    pub fn sanity_timeout(mut self, timeout: Duration) -> Self {
        self.upgrade.sanity_timeout = timeout;
        self
    }

    /// A sanity check for programs not built with overseer: the new binary
    /// is run with these arguments (e.g. `--version`) instead of the token,
    /// and must exit 0 within `sanity_timeout`. Turns the sanity check on.
    ///
    /// It runs with stdin closed, no sockets and no `NOTIFY_SOCKET`, so a
    /// binary that ignores the arguments and starts serving cannot touch the
    /// running service; it is killed at the timeout and the release refused.
    pub fn sanity_check_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.upgrade.sanity_args = Some(args.into_iter().map(Into::into).collect());
        self.upgrade.sanity_check = true;
        self
    }

    /// Called while a release downloads: at the start, at most every 100 ms
    /// while bytes arrive, and once at the end (finished or failed). For
    /// progress bars and logs; it runs on the download's thread, so keep it
    /// quick.
    pub fn on_download_progress(
        mut self,
        hook: impl Fn(&DownloadProgress) + Send + Sync + 'static,
    ) -> Self {
        self.upgrade.progress = Some(Arc::new(hook));
        self
    }

    /// The executable's name inside release archives (default: the running
    /// binary's file name).
    pub fn executable_name(mut self, name: impl Into<String>) -> Self {
        self.upgrade.executable_name = Some(name.into());
        self
    }

    /// Checks the configuration and parses its addresses.
    pub(crate) fn validate(&self) -> Result<Vec<Named<Address>>> {
        if self.terminate_timeout.is_zero() {
            return Err(Error::Config("terminate_timeout must be above zero".into()));
        }
        if self.ready_timeout.is_zero() {
            return Err(Error::Config("ready_timeout must be above zero".into()));
        }
        if self.backlog <= 0 {
            return Err(Error::Config("backlog must be above zero".into()));
        }
        if self.reload_signal == Some(self.restart_signal) {
            return Err(Error::Config(
                "the reload signal must differ from the restart signal".into(),
            ));
        }
        match &self.readiness {
            Readiness::Alive(d) if *d >= self.ready_timeout => {
                return Err(Error::Config(format!(
                    "Readiness::Alive({d:?}) must be shorter than ready_timeout ({:?})",
                    self.ready_timeout
                )));
            }
            Readiness::Command(p) if p.program.is_empty() => {
                return Err(Error::Config("the readiness probe has no program".into()));
            }
            Readiness::Command(p) if p.interval.is_zero() || p.attempt_timeout.is_zero() => {
                return Err(Error::Config(
                    "the readiness probe's interval and attempt_timeout must be above zero".into(),
                ));
            }
            _ => {}
        }
        let u = &self.upgrade;
        #[cfg(unix)]
        crate::keys::check_keys(&u.public_keys).map_err(Error::Config)?;
        if u.fetcher.is_some() {
            if u.download_timeout.is_zero() || u.sanity_timeout.is_zero() {
                return Err(Error::Config(
                    "download_timeout and sanity_timeout must be above zero".into(),
                ));
            }
            if u.max_download_size == 0 {
                return Err(Error::Config("max_download_size must be above zero".into()));
            }
        }
        for name in &self.pass_env {
            if name.is_empty() || name.contains(['=', '*', '\0']) {
                return Err(Error::Config(format!(
                    "pass_env {name:?}: expected an environment variable's name (no '=', '*' or NUL)"
                )));
            }
        }
        for name in self.addresses.iter().filter_map(|a| a.name.as_ref()) {
            if name.is_empty() || name.contains(':') || name.len() > 255 {
                return Err(Error::Config(format!(
                    "listener name {name:?} must be 1-255 characters without ':'"
                )));
            }
        }
        self.addresses
            .iter()
            .map(|a| {
                Ok(Named {
                    name: a.name.clone(),
                    address: Address::parse(&a.address)?,
                })
            })
            .collect()
    }
}
