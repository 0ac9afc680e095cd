//! The control socket: ask a running master for a handover and get its real
//! outcome, or read its status, from another process.
//!
//! A master started with [`Config::control_socket`](crate::Config::control_socket)
//! listens on a Unix stream socket that only its own user (and root) may
//! use: the file is created `0600` in a directory the master creates `0700`
//! when missing and otherwise requires to be private (this user's or
//! root's, not a symbolic link, writable by no one else), and every peer's
//! credentials are checked. `overseer restart`
//! and `overseer status` are clients of it; so can be any program:
//!
//! ```no_run
//! use std::time::Duration;
//! let path = std::path::Path::new("/run/myapp/control.sock");
//! match overseer::control::restart(path, Duration::from_secs(60)) {
//!     Ok(h) => println!("worker {} (pid {}) serves", h.worker, h.pid),
//!     Err(e) => eprintln!("restart failed: {e}"),
//! }
//! ```
//!
//! The protocol is one request line (`restart`, `reload` or `status`) and an
//! answer of lines: `ok`, `error: REASON` or (for input the master turns
//! down before doing anything, such as a configuration file with an error)
//! `refused: REASON`, then `key=value` lines, then end of stream.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A handover that completed: the new worker is ready and serving.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Handover {
    /// The new worker's number (1 for the master's first worker, then 2, 3, …).
    pub worker: u64,
    /// Its process id.
    pub pid: u32,
    /// From its start to its readiness.
    pub ready_after: Duration,
}

/// A re-exec of the master that completed: a new image of the master runs
/// in the same process and took over the sockets and workers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reexec {
    /// The master's process id (the same before and after).
    pub master_pid: u32,
    /// The executable the master runs now.
    pub binary: PathBuf,
    /// From the moment the old image executed the new one to the new
    /// image's taking over.
    pub took: Duration,
    /// How many re-execs the master made since it started, this one included.
    pub reexecs: u64,
    /// Whether the socket set changed, so that a handover was started to
    /// give the workers the new one.
    pub sockets_changed: bool,
}

/// One worker as the master sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The worker's number.
    pub number: u64,
    /// Its process id.
    pub pid: u32,
    /// Time since it was started.
    pub age: Duration,
}

/// A running master's state, as `overseer status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The master's process id (stable for the service's whole life).
    pub master_pid: u32,
    /// Time since the master started.
    pub uptime: Duration,
    /// The running version, when known (configured, or signed by the last upgrade).
    pub version: Option<String>,
    /// SHA-256 of the binary workers are started from.
    pub binary_id: String,
    /// Path of that binary.
    pub binary_path: PathBuf,
    /// The worker serving traffic.
    pub serving: Option<WorkerInfo>,
    /// A new worker not ready yet (a handover in progress).
    pub starting: Option<WorkerInfo>,
    /// Old workers finishing their connections.
    pub draining: Vec<WorkerInfo>,
    /// Handovers that completed since the master started.
    pub handovers: u64,
    /// Handovers that failed (the old worker kept serving).
    pub failed_handovers: u64,
    /// The last handover's outcome and how long ago it ended.
    pub last_handover: Option<String>,
    /// The last upgrade's outcome: installed, in probation, kept, rolled
    /// back or rejected, with the reason.
    pub last_upgrade: Option<String>,
    /// Re-execs of the master that completed since it started.
    pub reexecs: u64,
    /// Re-execs that failed (the master's previous image kept supervising).
    pub failed_reexecs: u64,
    /// The last re-exec's outcome and how long ago it ended.
    pub last_reexec: Option<String>,
    /// What the release source says of this host (a fleet's manifest: the
    /// wave, this host's bucket, what it waits for).
    pub rollout: Option<String>,
}

/// Why a control request did not succeed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No master answers at the path.
    Connect {
        /// The control socket path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The master answered that the request failed (for `restart`: the new
    /// worker never became ready; the old one keeps serving).
    Failed(String),
    /// The master turned the request down before doing anything: its input
    /// is wrong (for `reload`: the configuration file has an error).
    Refused(String),
    /// No complete answer within the time allowed, or a broken connection.
    Io(io::Error),
    /// The answer could not be understood.
    Protocol(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect { path, source } => write!(
                f,
                "no master answers on {}: {source} (is the service running, with this control socket?)",
                path.display()
            ),
            Error::Failed(reason) | Error::Refused(reason) => f.write_str(reason),
            Error::Io(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
                write!(f, "the master did not answer in time: {e}")
            }
            Error::Io(e) => write!(f, "talking to the master: {e}"),
            Error::Protocol(m) => write!(f, "unexpected answer from the master: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect { source, .. } | Error::Io(source) => Some(source),
            _ => None,
        }
    }
}

/// Asks the master for a handover and waits up to `timeout` for its outcome.
pub fn restart(path: &Path, timeout: Duration) -> Result<Handover, Error> {
    let fields = request(path, "restart", timeout)?;
    Ok(Handover {
        worker: number(&fields, "worker")?,
        pid: number(&fields, "pid")?,
        ready_after: Duration::from_millis(number(&fields, "ready_ms")?),
    })
}

/// Asks the master to re-execute itself (in the same process, keeping its
/// sockets and workers) and waits up to `timeout` for the new image to take
/// over. Under `overseer run`, the configuration file is read again and the
/// `overseer` binary now at the master's path is executed.
pub fn reload(path: &Path, timeout: Duration) -> Result<Reexec, Error> {
    let fields = request(path, "reload", timeout)?;
    Ok(Reexec {
        master_pid: number(&fields, "master_pid")?,
        binary: field(&fields, "binary")
            .map(PathBuf::from)
            .unwrap_or_default(),
        took: Duration::from_millis(number(&fields, "took_ms")?),
        reexecs: number(&fields, "reexecs")?,
        sockets_changed: field(&fields, "sockets_changed") == Some("true"),
    })
}

/// Reads the master's status.
pub fn status(path: &Path, timeout: Duration) -> Result<Status, Error> {
    let fields = request(path, "status", timeout)?;
    let get = |k: &str| field(&fields, k).map(str::to_string);
    let worker = |k: &str| field(&fields, k).map(parse_worker).transpose();
    Ok(Status {
        master_pid: number(&fields, "master_pid")?,
        uptime: Duration::from_millis(number(&fields, "uptime_ms")?),
        version: get("version"),
        binary_id: get("binary_id").unwrap_or_default(),
        binary_path: get("binary_path").map(PathBuf::from).unwrap_or_default(),
        serving: worker("serving")?,
        starting: worker("starting")?,
        draining: fields
            .iter()
            .filter(|(k, _)| k == "draining")
            .map(|(_, v)| parse_worker(v))
            .collect::<Result<_, _>>()?,
        handovers: number(&fields, "handovers")?,
        failed_handovers: number(&fields, "failed_handovers")?,
        last_handover: get("last_handover"),
        last_upgrade: get("last_upgrade"),
        // Absent from masters older than re-execs.
        reexecs: number(&fields, "reexecs").unwrap_or(0),
        failed_reexecs: number(&fields, "failed_reexecs").unwrap_or(0),
        last_reexec: get("last_reexec"),
        rollout: get("rollout"),
    })
}

fn request(path: &Path, what: &str, timeout: Duration) -> Result<Vec<(String, String)>, Error> {
    let mut stream = UnixStream::connect(path).map_err(|source| Error::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    stream
        .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(Error::Io)?;
    stream
        .write_all(format!("{what}\n").as_bytes())
        .map_err(Error::Io)?;
    let mut lines = BufReader::new(stream).lines();
    let head = match lines.next() {
        Some(line) => line.map_err(Error::Io)?,
        None => {
            return Err(Error::Protocol(
                "the connection closed without an answer".into(),
            ))
        }
    };
    if let Some(reason) = head.strip_prefix("error: ") {
        return Err(Error::Failed(reason.to_string()));
    }
    if let Some(reason) = head.strip_prefix("refused: ") {
        return Err(Error::Refused(reason.to_string()));
    }
    if head != "ok" {
        return Err(Error::Protocol(head));
    }
    let mut fields = Vec::new();
    for line in lines {
        let line = line.map_err(Error::Io)?;
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| Error::Protocol(line.clone()))?;
        fields.push((k.to_string(), v.to_string()));
    }
    Ok(fields)
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn number<T: std::str::FromStr>(fields: &[(String, String)], key: &str) -> Result<T, Error> {
    field(fields, key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Protocol(format!("no number for {key}")))
}

/// `NUMBER PID AGE_MS`
fn parse_worker(v: &str) -> Result<WorkerInfo, Error> {
    let bad = || Error::Protocol(format!("bad worker entry {v:?}"));
    let mut it = v.split(' ').map(|p| p.parse::<u64>().map_err(|_| bad()));
    let (Some(number), Some(pid), Some(age)) = (it.next(), it.next(), it.next()) else {
        return Err(bad());
    };
    Ok(WorkerInfo {
        number: number?,
        pid: u32::try_from(pid?).map_err(|_| bad())?,
        age: Duration::from_millis(age?),
    })
}

/// The wire form of a worker entry.
pub(crate) fn worker_field(w: &WorkerInfo) -> String {
    format!("{} {} {}", w.number, w.pid, w.age.as_millis())
}

/// A value on one line: newlines become spaces.
pub(crate) fn one_line(v: &str) -> String {
    v.replace(['\n', '\r'], " ")
}

impl Status {
    /// The wire form (after the `ok` line).
    pub(crate) fn to_fields(&self) -> String {
        let mut out = String::new();
        let mut put = |k: &str, v: &str| {
            out.push_str(k);
            out.push('=');
            out.push_str(&one_line(v));
            out.push('\n');
        };
        put("master_pid", &self.master_pid.to_string());
        put("uptime_ms", &self.uptime.as_millis().to_string());
        if let Some(v) = &self.version {
            put("version", v);
        }
        put("binary_id", &self.binary_id);
        put("binary_path", &self.binary_path.to_string_lossy());
        if let Some(w) = &self.serving {
            put("serving", &worker_field(w));
        }
        if let Some(w) = &self.starting {
            put("starting", &worker_field(w));
        }
        for w in &self.draining {
            put("draining", &worker_field(w));
        }
        put("handovers", &self.handovers.to_string());
        put("failed_handovers", &self.failed_handovers.to_string());
        if let Some(v) = &self.last_handover {
            put("last_handover", v);
        }
        if let Some(v) = &self.last_upgrade {
            put("last_upgrade", v);
        }
        put("reexecs", &self.reexecs.to_string());
        put("failed_reexecs", &self.failed_reexecs.to_string());
        if let Some(v) = &self.last_reexec {
            put("last_reexec", v);
        }
        if let Some(v) = &self.rollout {
            put("rollout", v);
        }
        out
    }
}

/// Durations the way people read them: `3d 4h`, `5m 12s`, `850ms`.
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let worker =
            |w: &WorkerInfo| format!("worker {} (pid {}, up {})", w.number, w.pid, human(w.age));
        writeln!(
            f,
            "master      pid {}, up {}",
            self.master_pid,
            human(self.uptime)
        )?;
        writeln!(
            f,
            "version     {}",
            self.version.as_deref().unwrap_or("(not set)")
        )?;
        writeln!(
            f,
            "binary      {} (sha256 {})",
            self.binary_path.display(),
            self.binary_id.get(..16).unwrap_or(&self.binary_id)
        )?;
        match &self.serving {
            Some(w) => writeln!(f, "serving     {}", worker(w))?,
            None => writeln!(f, "serving     nothing")?,
        }
        if let Some(w) = &self.starting {
            writeln!(f, "starting    {}", worker(w))?;
        }
        for w in &self.draining {
            writeln!(f, "draining    {}", worker(w))?;
        }
        writeln!(
            f,
            "handovers   {} done, {} failed{}",
            self.handovers,
            self.failed_handovers,
            self.last_handover
                .as_ref()
                .map(|l| format!("; last: {l}"))
                .unwrap_or_default()
        )?;
        writeln!(
            f,
            "upgrade     {}",
            self.last_upgrade.as_deref().unwrap_or("none yet")
        )?;
        write!(
            f,
            "re-execs    {} done, {} failed{}",
            self.reexecs,
            self.failed_reexecs,
            self.last_reexec
                .as_ref()
                .map(|l| format!("; last: {l}"))
                .unwrap_or_default()
        )?;
        if let Some(rollout) = &self.rollout {
            write!(f, "\nrollout     {rollout}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn worker_entries_round_trip() {
        let w = WorkerInfo {
            number: 3,
            pid: 4242,
            age: Duration::from_millis(1500),
        };
        assert_eq!(parse_worker(&worker_field(&w)).unwrap(), w);
        assert!(parse_worker("3 x 1").is_err());
        assert!(parse_worker("3 4").is_err());
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_secs(312)), "5m 12s");
        assert_eq!(human(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d 4h");
    }
}
