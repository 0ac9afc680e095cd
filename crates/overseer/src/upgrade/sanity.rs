//! Step 7 of the pipeline: run the new binary with a random token in
//! `OVERSEER_BIN_CHECK`; an overseer binary prints the token on a line of its
//! own and exits 0 without starting the program. For programs not built with
//! overseer, `Config::sanity_check_args` runs it with given arguments (say
//! `--version`) instead, and exit status 0 is the pass.
//!
//! The new binary runs without the master's sockets (they are close-on-exec)
//! and without `NOTIFY_SOCKET` or `LISTEN_*`, so it cannot disturb the running
//! service or talk to systemd, whatever it does.

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Rejection;
use crate::master::others;
use crate::master::withheld::Withheld;
use crate::protocol::OVERSEER_BIN_CHECK;

/// Output kept from the check, at most.
const MAX_OUTPUT: u64 = 64 * 1024;

/// Runs the sanity check on `path`: the token check, or with `args` the
/// exit-status check.
pub(crate) fn check(
    path: &Path,
    args: Option<&[OsString]>,
    timeout: Duration,
    withheld: &Withheld,
) -> Result<(), Rejection> {
    let token = token();
    let mut cmd = Command::new(path);
    match args {
        Some(args) => cmd.args(args),
        None => cmd.env(OVERSEER_BIN_CHECK, &token),
    };
    for var in [
        crate::notify::NOTIFY_SOCKET,
        crate::protocol::LISTEN_FDS,
        crate::protocol::LISTEN_PID,
        crate::protocol::LISTEN_FDNAMES,
    ] {
        cmd.env_remove(var);
    }
    withheld.remove_from(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Another thread may fork while the staging file was still open for
    // writing in this process; exec then fails with ETXTBSY for a moment.
    let mut attempts = 0;
    let mut child = loop {
        match others::spawn(&mut cmd) {
            Ok(c) => break c,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 40 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(e) => {
                return Err(Rejection::release(format!(
                    "sanity check: the new binary cannot be started: {e}"
                )))
            }
        }
    };
    let pid = child.id() as i32;
    let readers = [
        child.stdout.take().map(|s| collect(Box::new(s))),
        child.stderr.take().map(|s| collect(Box::new(s))),
    ];
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = others::try_wait(&mut child, pid) {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = others::wait(&mut child, pid);
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    others::forget(pid);
    let [out, err] = readers.map(|r| r.and_then(|h| h.join().ok()).unwrap_or_default());
    let Some(status) = status else {
        return Err(Rejection::release(format!(
            "sanity check: the new binary did not finish within {timeout:?}"
        )));
    };
    let printed = out.lines().any(|l| l.trim_end_matches('\r') == token);
    if status == Some(0) && (printed || args.is_some()) {
        return Ok(());
    }
    let last = err
        .lines()
        .chain(out.lines())
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| {
            format!(
                " (its last words: {:?})",
                l.chars().take(200).collect::<String>()
            )
        })
        .unwrap_or_default();
    let how = match status {
        Some(0) => "exited 0 without printing the token".to_string(),
        Some(code) if code >= 0 => format!("exited with status {code}"),
        Some(code) => format!("was killed by signal {}", -code),
        None => "ended in an unknown way".to_string(),
    };
    let hint = match args {
        Some(args) => format!(
            "run with {:?}",
            args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>()
        ),
        None => "is it built with overseer?".into(),
    };
    Err(Rejection::release(format!(
        "sanity check: the new binary {how}; {hint}{last}"
    )))
}

/// Reads a child's output on a thread, keeping at most `MAX_OUTPUT` bytes.
fn collect(stream: Box<dyn Read + Send>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut limited = stream.take(MAX_OUTPUT);
        let _ = limited.read_to_end(&mut buf);
        // Drain the rest so the child never blocks on a full pipe.
        let _ = std::io::copy(&mut limited.into_inner(), &mut std::io::sink());
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A random token (no extra dependency: the OS's random bytes).
fn token() -> String {
    let mut bytes = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !ok {
        // Unpredictability matters little here; uniqueness does.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = (t ^ u128::from(std::process::id())).to_le_bytes();
    }
    format!("overseer-check-{}", super::stage::hex(&bytes))
}
