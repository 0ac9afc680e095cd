//! The effects of a master's re-exec (docs/design.md, "The master
//! re-executes itself"): checking the new binary, executing it with the
//! state ([`carried`](super::carried)) and, in the new image, finding that
//! state or falling back to the previous image.
//!
//! The old image runs the new binary in check mode first
//! ([`spawn_check`]); only a binary that answers and reads this state format
//! is executed. `execve` is called by the thread that started the workers
//! (the supervisor's): Linux sends the parent-death signal when the thread
//! that started a child ends, and `execve` ends every other thread. The
//! executable the old image ran stays open across the exec
//! (`OVERSEER_MASTER_PREVIOUS`), so a new image that cannot take over runs
//! it again with the same state ([`fall_back`]), whatever its path holds by
//! then.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc::Sender;
use std::time::Duration;

use super::carried::{self, Carried};
use super::event::{Event, Refusal};
use crate::config::Config;
use crate::log;
use crate::protocol::{
    LISTEN_FDNAMES, LISTEN_FDS, LISTEN_PID, OVERSEER_MASTER_CHECK, OVERSEER_MASTER_FALLBACK,
    OVERSEER_MASTER_PREVIOUS, OVERSEER_MASTER_STATE,
};
use crate::sys;
use crate::withheld::Withheld;

/// How long the new binary's check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// How to execute the master again: the executable at the path it was
/// first started from, with its first command line; and what this image's
/// configuration was built from, for this image run again as a fallback.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub exe: PathBuf,
    pub argv: Vec<OsString>,
    /// [`Config::config_text`](crate::Config::config_text).
    pub config_text: Option<String>,
}

impl Plan {
    /// The plan of a master started now: this executable and command line.
    pub fn first(config: &Config) -> std::io::Result<Plan> {
        let exe = std::env::current_exe()?;
        let argv: Vec<OsString> = std::env::args_os().collect();
        Ok(Plan {
            exe,
            argv,
            config_text: config.config_text.clone(),
        })
    }

    /// The master's environment for its next image: its own, less the
    /// variables of socket activation (its sockets cross in the state) and
    /// of an earlier re-exec, plus `extra`.
    fn env(extra: &[(&str, String)]) -> Vec<(OsString, OsString)> {
        let dropped = [
            LISTEN_FDS,
            LISTEN_PID,
            LISTEN_FDNAMES,
            OVERSEER_MASTER_CHECK,
            OVERSEER_MASTER_STATE,
            OVERSEER_MASTER_PREVIOUS,
            OVERSEER_MASTER_FALLBACK,
        ];
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| !dropped.iter().any(|d| k == d))
            .collect();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        );
        env
    }
}

/// Which file a path names, and its version: a file replaced (renamed
/// over), or written in place, has another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileId {
    /// The file at `path` now (following symbolic links), if it can be read.
    pub fn of(path: &std::path::Path) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// In check mode (`OVERSEER_MASTER_CHECK` set) answers with the state
/// formats this build reads and exits 0, or exits 2 with the reason when
/// `config` is not valid; otherwise returns.
pub(crate) fn answer_check_if_asked(config: &Config) {
    if std::env::var_os(OVERSEER_MASTER_CHECK).is_none() {
        return;
    }
    use std::io::Write;
    if let Err(e) = config.validate() {
        eprintln!("{e}");
        std::process::exit(2);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\n{}", carried::check_answer());
    let _ = out.flush();
    std::process::exit(0);
}

/// Runs the new master binary in check mode on a thread of its own, and
/// sends the loop the outcome as [`Event::Checked`].
pub(crate) fn spawn_check(plan: &Plan, format: u32, withheld: &Withheld, tx: Sender<Event>) {
    let mut cmd = Command::new(&plan.exe);
    if let Some(arg0) = plan.argv.first() {
        std::os::unix::process::CommandExt::arg0(&mut cmd, arg0);
    }
    cmd.args(plan.argv.iter().skip(1))
        .env_clear()
        .envs(Plan::env(&[(OVERSEER_MASTER_CHECK, "1".into())]))
        // Its messages about systemd would reach systemd.
        .env_remove(crate::notify::NOTIFY_SOCKET);
    withheld.remove_from(&mut cmd);
    let exe = plan.exe.clone();
    let spawned = std::thread::Builder::new()
        .name("overseer-reexec-check".into())
        .spawn(move || {
            let outcome = check(cmd, &exe, format);
            let _ = tx.send(Event::Checked(outcome));
        });
    if let Err(e) = spawned {
        log::debug!("cannot start the re-exec check's thread: {e}");
    }
}

/// Runs the check and judges its answer: the new build must read state
/// `format`.
fn check(cmd: Command, exe: &std::path::Path, format: u32) -> Result<(), Refusal> {
    let failed = |reason: String| Refusal {
        reason,
        bad_input: false,
    };
    let what = format!("the new master binary {}", exe.display());
    let ran =
        crate::upgrade::run_bounded(cmd, CHECK_TIMEOUT, &what).map_err(|e| failed(e.reason))?;
    if ran.status == Some(0) && carried::check_accepts(&ran.out, format) {
        return Ok(());
    }
    let last_words = |text: &str| {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = &lines[lines.len().saturating_sub(3)..];
        tail.join(" / ").chars().take(600).collect::<String>()
    };
    match ran.status {
        Some(0) => Err(failed(format!(
            "{what} does not answer the master's check (it must be built with an overseer that re-executes masters, and read state format {format}{})",
            if format == 2 { ": connection steering's" } else { "" }
        ))),
        // The configuration is wrong: the CLI's usage errors and the
        // library's check of its `Config` exit 2.
        Some(2) => Err(Refusal {
            reason: format!(
                "{what} refused its configuration: {}",
                ran.err
                    .lines()
                    .map(str::trim_end)
                    .filter(|l| !l.trim().is_empty())
                    .collect::<Vec<_>>()
                    .join(" / ")
                    .chars()
                    .take(1000)
                    .collect::<String>()
            ),
            bad_input: true,
        }),
        Some(code) if code > 0 => Err(failed(format!(
            "{what} exited with status {code} in its check: {}",
            last_words(&format!("{}\n{}", ran.out, ran.err))
        ))),
        Some(code) => Err(failed(format!(
            "{what} was killed by signal {} in its check",
            -code
        ))),
        None => Err(failed(format!("{what} ended in an unknown way in its check"))),
    }
}

/// Executes the new image with `state`. Returns only on failure, with the
/// descriptors as they were (close-on-exec again).
pub(crate) fn exec(plan: &Plan, state: &Carried) -> String {
    let file = match state.to_file() {
        Ok(f) => f,
        Err(e) => return format!("cannot write the state for the new image: {e}"),
    };
    let previous = match sys::open_own_executable() {
        Ok(f) => f,
        Err(e) => return format!("cannot keep the running executable open for a fallback: {e}"),
    };
    let fds: Vec<RawFd> = state
        .descriptors()
        .into_iter()
        .chain([file.as_raw_fd(), previous.as_raw_fd()])
        .collect();
    let mut marked = Vec::with_capacity(fds.len());
    let mut error = None;
    for &fd in &fds {
        match sys::set_inherited(fd, true) {
            Ok(()) => marked.push(fd),
            Err(e) => {
                error = Some(format!(
                    "cannot keep descriptor {fd} across the re-exec: {e}"
                ));
                break;
            }
        }
    }
    let error = error.unwrap_or_else(|| {
        let env = Plan::env(&[
            (OVERSEER_MASTER_STATE, file.as_raw_fd().to_string()),
            (OVERSEER_MASTER_PREVIOUS, previous.as_raw_fd().to_string()),
        ]);
        let e = sys::exec(&plan.exe, &plan.argv, &env);
        format!("cannot execute {}: {e}", plan.exe.display())
    });
    for fd in marked {
        let _ = sys::set_inherited(fd, false);
    }
    error
}

/// The state a previous image of this master left for this one, if this
/// process is such a new image.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// The state file's descriptor (not owned: a fallback passes it on).
    state_fd: RawFd,
    /// The previous image's executable, open (not owned either).
    previous_fd: Option<RawFd>,
    /// Set when this image is the previous one, run again because the new
    /// one could not take over: why.
    pub fallback: Option<String>,
}

impl Incoming {
    /// Finds the state in the environment.
    pub fn from_env() -> Option<Incoming> {
        let fd = |key: &str| -> Option<RawFd> {
            std::env::var(key)
                .ok()?
                .parse::<RawFd>()
                .ok()
                .filter(|fd| *fd > 2)
        };
        let state_fd = fd(OVERSEER_MASTER_STATE)?;
        Some(Incoming {
            state_fd,
            previous_fd: fd(OVERSEER_MASTER_PREVIOUS),
            fallback: std::env::var(OVERSEER_MASTER_FALLBACK).ok(),
        })
    }

    /// In the previous image run again after a failed take-over: the
    /// configuration text it carried. `None` in any other process, or when
    /// it carried none.
    pub fn fallback_config_text() -> Option<String> {
        let incoming = Incoming::from_env()?;
        incoming.fallback.as_ref()?;
        match incoming.read() {
            Ok(state) => state.config_text,
            Err(e) => {
                log::debug!("no carried configuration: {e}");
                None
            }
        }
    }

    /// Reads the state, through a copy of its descriptor (the original
    /// stays open across a fallback).
    pub fn read(&self) -> Result<Carried, String> {
        let mut file = sys::dup_fd(self.state_fd)
            .map(File::from)
            .map_err(|e| format!("cannot read the state (descriptor {}): {e}", self.state_fd))?;
        Carried::from_file(&mut file)
    }

    /// The state and the previous executable are no longer needed: this
    /// image took over.
    pub fn close(self) {
        for fd in [Some(self.state_fd), self.previous_fd]
            .into_iter()
            .flatten()
        {
            if let Ok(owned) = sys::adopt_fd(fd) {
                drop(owned);
            }
        }
    }

    /// This image cannot take over for `reason`: runs the previous image
    /// again with the same state (its descriptors were not touched), which
    /// reports the failure. When this image is that previous one already,
    /// or it cannot be run, nothing can supervise the workers: the process
    /// ends, and they with it.
    pub fn fall_back(&self, argv: &[OsString], reason: &str) -> ! {
        log::error!("the new master image cannot take over: {reason}");
        if let Some(first) = &self.fallback {
            log::error!(
                "this is the previous image, run again after \"{first}\", and it cannot take over either: the service stops"
            );
            std::process::exit(1);
        }
        let Some(previous) = self.previous_fd else {
            log::error!("the previous master image is not known: the service stops");
            std::process::exit(1);
        };
        let env = Plan::env(&[
            (OVERSEER_MASTER_STATE, self.state_fd.to_string()),
            (OVERSEER_MASTER_PREVIOUS, previous.to_string()),
            (OVERSEER_MASTER_FALLBACK, reason.to_string()),
        ]);
        let e = sys::exec_fd(previous, argv, &env);
        log::error!("cannot run the previous master image again ({e}): the service stops");
        std::process::exit(1);
    }
}
