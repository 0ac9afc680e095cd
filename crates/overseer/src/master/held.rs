//! What the master holds for the service's whole life (its sockets, its
//! runtime directory, its control socket, how to execute itself again), and
//! what a new image of it resumes after a re-exec: shared by the set-up
//! (`mod.rs`), the loop (`supervisor.rs`) and the take-over (`adopt.rs`).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use super::carried;
use super::child;
use super::control;
use super::reexec;
use super::run_dir::RunDir;
use crate::config::{Config, Program};
use crate::error::{Error, Result};
use crate::listener::{self, Socket};
use crate::upgrade;

/// What the master holds for the service's whole life, across re-execs:
/// its sockets, its runtime directory, its control socket, and how to
/// execute itself again.
pub(crate) struct Held {
    pub sockets: Vec<Socket>,
    /// Sockets no longer configured, kept until the workers started with
    /// them (numbers below `retire_before`) are gone.
    pub retired: Vec<Socket>,
    pub retire_before: u64,
    pub run_dir: RunDir,
    pub control: Option<control::ControlSocket>,
    /// `None` when this executable cannot be found again: no re-exec then.
    pub plan: Option<reexec::Plan>,
}

impl Held {
    /// Removes what the master created on disk; called as it ends.
    pub(crate) fn clean_up(self) {
        listener::remove_socket_files(&self.sockets);
        listener::remove_socket_files(&self.retired);
        if let Some(c) = &self.control {
            c.remove();
        }
        self.run_dir.close();
    }
}

/// The program workers run: `(program, arg0, args)`.
pub(crate) fn program_of(config: &Config) -> Result<(PathBuf, OsString, Vec<OsString>)> {
    Ok(match &config.program {
        Program::Function(_) => {
            let exe = std::env::current_exe().map_err(Error::BinaryPath)?;
            let mut argv = std::env::args_os();
            let arg0 = argv.next().unwrap_or_else(|| exe.clone().into_os_string());
            (exe, arg0, argv.collect::<Vec<OsString>>())
        }
        Program::Command { path, args } => {
            let resolved = resolve_command(path)?;
            (resolved, path.clone().into_os_string(), args.clone())
        }
    })
}

/// What a new image of the master takes over, besides what it holds.
pub(crate) struct Resumed {
    pub state: carried::Carried,
    /// The release on probation, and its verdict's receiving end for the
    /// upgrade thread.
    pub probation: Option<(crate::upgrade::probation::Probation, upgrade::Pending)>,
    /// The carried workers, their relays started again.
    pub workers: Vec<child::Worker>,
    /// The control client waiting for the re-exec's outcome.
    pub client: Option<std::os::unix::net::UnixStream>,
    /// Milliseconds the re-exec took.
    pub gap_ms: u64,
    pub sockets_changed: bool,
    /// This image is the previous one run again: why the new one failed.
    pub fallback: Option<String>,
    /// When this image took over.
    pub at: std::time::Instant,
    /// Carried connection steering, going on.
    pub steering: Option<super::steer::Steering>,
}

/// Finds a command the way a shell would: a path with a slash as given (an
/// executable file there), otherwise the first executable file of that name
/// in `PATH`.
fn resolve_command(path: &Path) -> Result<PathBuf> {
    match which::which(path) {
        // `which` makes a relative path absolute; it is kept as given.
        Ok(_) if path.components().count() > 1 => Ok(path.to_path_buf()),
        Ok(found) => Ok(found),
        Err(_) => Err(Error::Spawn {
            program: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such executable"),
        }),
    }
}
