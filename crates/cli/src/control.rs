//! `overseer restart` and `overseer status`: clients of a running master's
//! control socket.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::control_socket::{check_dir, default_dir, socket_for};
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
pub(crate) struct ReloadArgs {
    #[command(flatten)]
    target: Target,
    /// How long to wait for the new master to take over.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
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

/// Help text of `reload`.
pub(crate) const RELOAD_EXIT_STATUS: &str = "\
Exit status: 0 once the new master took over; 1 when the re-exec failed (the
previous master keeps supervising); 2 when no master answers, or the input is
wrong (a config file with an error: nothing changed).";

pub(crate) fn reload(args: ReloadArgs) -> Result<(), Failure> {
    let path = args.target.resolve()?;
    match overseer::control::reload(&path, args.timeout) {
        Ok(r) => {
            println!(
                "reloaded: the master (pid {}) runs {}; took over in {} ms{}",
                r.master_pid,
                r.binary.display(),
                r.took.as_millis(),
                if r.sockets_changed {
                    "; the socket set changed, a handover gives it to the workers"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Err(overseer::control::Error::Failed(reason)) => {
            Err(Failure::Runtime(format!("reload failed: {reason}")))
        }
        Err(overseer::control::Error::Refused(reason)) => Err(Failure::Usage(format!(
            "reload refused, nothing changed: {reason}"
        ))),
        Err(e) => Err(Failure::Usage(e.to_string())),
    }
}

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
    out.push_str(&format!(
        "reexecs={}\nfailed_reexecs={}\nlast_reexec={}\nrollout={}\n",
        s.reexecs,
        s.failed_reexecs,
        s.last_reexec.as_deref().unwrap_or(""),
        s.rollout.as_deref().unwrap_or("")
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
