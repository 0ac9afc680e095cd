//! `overseer restart` and `overseer status`: clients of a running master's
//! control socket, and where that socket lives by default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::failure::Failure;

/// How to find a running master: by name, by path, or the only one there is.
#[derive(Args, Debug, Clone)]
pub(crate) struct Target {
    /// The service's name, as given to `overseer run --name` (default there:
    /// the program's file name). The socket is then
    /// `$XDG_RUNTIME_DIR/overseer/NAME.sock`, or `/run/overseer/NAME.sock`
    /// for root, or `/tmp/overseer-UID/NAME.sock`.
    #[arg(long, short = 'n', conflicts_with = "control")]
    name: Option<String>,
    /// The control socket's path, as given to `overseer run --control`.
    /// Without --name or --control, the only master of this user found in
    /// the default directory is used.
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct RestartArgs {
    #[command(flatten)]
    target: Target,
    /// How long to wait for the new worker to become ready (the master's own
    /// ready timeout ends a handover earlier if it is shorter).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Prints `key=value` lines (stable, for scripts) instead of the summary.
    #[arg(long)]
    raw: bool,
}

/// Help text shared by both subcommands.
pub(crate) const EXIT_STATUS: &str = "\
Exit status: 0 on success; 1 when the handover failed (the old worker keeps
serving); 2 when no master answers or the input is wrong.";

pub(crate) fn restart(args: RestartArgs) -> Result<(), Failure> {
    let path = args.target.resolve()?;
    match overseer::control::restart(&path, args.timeout) {
        Ok(h) => {
            println!(
                "restarted: worker {} (pid {}) is serving; ready after {} ms",
                h.worker,
                h.pid,
                h.ready_after.as_millis()
            );
            Ok(())
        }
        Err(overseer::control::Error::Failed(reason)) => Err(Failure::Runtime(format!(
            "restart failed: {reason}; the previous worker keeps serving"
        ))),
        Err(e) => Err(Failure::Usage(e.to_string())),
    }
}

pub(crate) fn status(args: StatusArgs) -> Result<(), Failure> {
    let path = args.target.resolve()?;
    let status = overseer::control::status(&path, Duration::from_secs(10))
        .map_err(|e| Failure::Usage(e.to_string()))?;
    if args.raw {
        print!("{}", raw(&status));
    } else {
        println!("{status}");
    }
    Ok(())
}

/// The status as `key=value` lines.
fn raw(s: &overseer::control::Status) -> String {
    let worker =
        |w: &overseer::control::WorkerInfo| format!("{} {} {}", w.number, w.pid, w.age.as_millis());
    let mut out = format!(
        "master_pid={}\nuptime_ms={}\nversion={}\nbinary_id={}\nbinary_path={}\n",
        s.master_pid,
        s.uptime.as_millis(),
        s.version.as_deref().unwrap_or(""),
        s.binary_id,
        s.binary_path.display()
    );
    for (key, w) in [("serving", &s.serving), ("starting", &s.starting)] {
        if let Some(w) = w {
            out.push_str(&format!("{key}={}\n", worker(w)));
        }
    }
    for w in &s.draining {
        out.push_str(&format!("draining={}\n", worker(w)));
    }
    out.push_str(&format!(
        "handovers={}\nfailed_handovers={}\nlast_handover={}\nlast_upgrade={}\n",
        s.handovers,
        s.failed_handovers,
        s.last_handover.as_deref().unwrap_or(""),
        s.last_upgrade.as_deref().unwrap_or("")
    ));
    out
}

impl Target {
    fn resolve(&self) -> Result<PathBuf, Failure> {
        if let Some(path) = &self.control {
            return Ok(path.clone());
        }
        let dir = default_dir();
        check_dir(&dir)?;
        if let Some(name) = &self.name {
            return Ok(socket_for(&dir, name));
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(Failure::Usage(format!(
                "no running master found in {} (start one with `overseer run`, or give --name or --control)",
                dir.display()
            ))),
            _ => Err(Failure::Usage(format!(
                "several masters run here; choose one with --name: {}",
                found
                    .iter()
                    .filter_map(|p| p.file_stem())
                    .map(|n| n.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

/// Where control sockets go by default: the user's runtime directory, or
/// `/run/overseer` for root, or a private directory in `/tmp`.
pub(crate) fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute() && d.is_dir())
    {
        return dir.join("overseer");
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        PathBuf::from("/run/overseer")
    } else {
        std::env::temp_dir().join(format!("overseer-{uid}"))
    }
}

/// Refuses a default directory that someone else could tamper with: it
/// must belong to this user (or root) and be writable by no one else.
/// (A missing one is created `0700` by the master.)
pub(crate) fn check_dir(dir: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return Ok(());
    };
    let uid = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || (meta.uid() != uid && meta.uid() != 0) || meta.mode() & 0o022 != 0 {
        return Err(Failure::Usage(format!(
            "{} is not a private directory of this user (owner uid {}, mode {:o}); remove it, or give --control PATH",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// The socket path for a service name.
pub(crate) fn socket_for(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sock"))
}

/// Checks a service name: it becomes a file name.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad service name {name:?}: use letters, digits, '-', '_', '.', '@' (not starting with '.')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_file_names() {
        assert!(check_name("myapp@2").is_ok());
        assert!(check_name("../x").is_err());
        assert!(check_name("").is_err());
        assert!(check_name(".hidden").is_err());
    }
}
