//! Step 7 of the pipeline: run the new binary with a random token in
//! `OVERSEER_BIN_CHECK`; an overseer binary prints the token on a line of its
//! own and exits 0 without starting the program. For programs not built with
//! overseer, `Config::sanity_check_args` runs it with given arguments (say
//! `--version`) instead, and exit status 0 is the pass.
//!
//! The new binary runs without the master's sockets (they are close-on-exec)
//! and without `NOTIFY_SOCKET` or `LISTEN_*`, so it cannot disturb the running
//! service or talk to systemd, whatever it does. It runs in a process group
//! of its own, killed whole at the timeout and once the binary has exited, so
//! nothing it starts outlives the check (and the binary dies with the master,
//! by the parent-death signal, as workers do); one that still holds the check's
//! output after the binary exited gets the release refused. No wait is
//! unbounded: the upgrade thread is back within the timeout and a second.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::rejection::Rejection;
use crate::child_registry;
use crate::log;
use crate::protocol::OVERSEER_BIN_CHECK;
use crate::sys::CpuUse;
use crate::withheld::Withheld;

/// Output kept from the check, at most.
const MAX_OUTPUT: usize = 64 * 1024;

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
    let Ran { status, out, err } = run_bounded(cmd, timeout, "the new binary").map_err(|e| {
        let reason = format!("sanity check: {}", e.reason);
        if e.starved {
            // Not the release's doing: the next poll tries again.
            Rejection::new(format!("{reason}; tried again at the next poll"))
        } else {
            Rejection::release(reason)
        }
    })?;
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

/// How a bounded run ended: its exit status (a signal as its negative;
/// `None` when unknown) and what it printed (at most `MAX_OUTPUT` of each).
#[derive(Debug)]
pub(crate) struct Ran {
    pub status: Option<i32>,
    pub out: String,
    pub err: String,
}

/// Why a bounded run has no outcome.
#[derive(Debug)]
pub(crate) struct Unfinished {
    pub reason: String,
    /// It ran out of time waiting for a CPU, not in its own work: no fault
    /// of the binary's (it runs at the lowest priority, so a busy host
    /// starves it).
    pub starved: bool,
}

impl Unfinished {
    fn of_binary(reason: String) -> Unfinished {
        Unfinished {
            reason,
            starved: false,
        }
    }
}

/// How many times its timeout a bounded run may last in all, however long
/// it waited for a CPU.
const STARVED_LIMIT: u32 = 6;

/// Where a bounded run still going stands.
#[derive(Debug, PartialEq)]
enum Clock {
    /// Within its time: judged again at `until` after its start.
    Running { until: Duration },
    /// Its own time (running or sleeping, not waiting for a CPU) is spent.
    TooLong,
    /// Within its own time, but [`STARVED_LIMIT`] times its timeout has gone
    /// by, most of it waiting for a CPU.
    Starved,
}

/// Judges a run going on for `elapsed`, which has used the CPUs as `cpu`
/// says (`None` where that is not known: the timeout is then wall-clock
/// time). The timeout counts the binary's own time only, so a check starved
/// by the serving workers (it runs at nice 19) is not blamed for their load:
/// - it is too long once a thread of it ran for a whole timeout (a busy
///   binary), or once its time neither running nor waiting for a CPU
///   reaches the timeout while it is not ready to run (asleep or blocked:
///   a hanging binary);
/// - a run ready to run now may be waiting for a CPU since a while that
///   the kernel has not counted yet: it is looked at again shortly;
/// - past [`STARVED_LIMIT`] times the timeout, it was starved.
fn judge(elapsed: Duration, cpu: Option<CpuUse>, timeout: Duration) -> Clock {
    let Some(cpu) = cpu else {
        return if elapsed >= timeout {
            Clock::TooLong
        } else {
            Clock::Running { until: timeout }
        };
    };
    let own = elapsed.saturating_sub(cpu.waited);
    if cpu.ran >= timeout || (own >= timeout && !cpu.runnable) {
        return Clock::TooLong;
    }
    let limit = timeout * STARVED_LIMIT;
    if elapsed >= limit {
        return Clock::Starved;
    }
    let until = if own >= timeout {
        elapsed + REJUDGE
    } else {
        timeout + cpu.waited
    };
    Clock::Running {
        until: until.min(limit),
    }
}

/// How often, at least, a run past its timeout is judged again.
const REJUDGE: Duration = Duration::from_millis(50);

/// Runs `cmd` (`what`, for messages) with its output collected, at the
/// lowest CPU priority, in a process group of its own killed at `timeout`
/// of its own time (the time it waited for a CPU does not count, up to
/// [`STARVED_LIMIT`] times `timeout` in all) and once it has exited, and
/// dying with the master (parent-death signal). An error when it cannot be
/// started, does not finish in time, or leaves a process holding its
/// output.
pub(crate) fn run_bounded(
    mut cmd: Command,
    timeout: Duration,
    what: &str,
) -> Result<Ran, Unfinished> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A process group of its own: whatever it starts is killed with it.
        .process_group(0);
    // Out of the master's group, it would outlive a master killed outright.
    crate::sys::die_with_parent(&mut cmd);
    // Another thread may fork while the staging file was still open for
    // writing in this process; exec then fails with ETXTBSY for a moment.
    let mut attempts = 0;
    let mut child = loop {
        match child_registry::spawn(&mut cmd) {
            Ok(c) => break c,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 40 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(e) => {
                return Err(Unfinished::of_binary(format!(
                    "{what} cannot be started: {e}"
                )))
            }
        }
    };
    // Executed (spawn returns once it has): beside the serving workers, it
    // takes only the CPU they leave.
    crate::sys::lowest_priority(child.id());
    let pid = child.id() as i32;
    let out = Output::default();
    let err = Output::default();
    let readers = [
        child.stdout.take().map(|s| collect(s, out.clone())),
        child.stderr.take().map(|s| collect(s, err.clone())),
    ];
    let started = Instant::now();
    let mut deadline = started + timeout;
    let mut said_waiting = false;
    let status = loop {
        if let Some(status) = child_registry::try_wait(&mut child, pid) {
            break Ok(status);
        }
        let now = Instant::now();
        if now >= deadline {
            let elapsed = now - started;
            let cpu = crate::sys::cpu_use(pid as u32);
            let waited = cpu.map(|c| c.waited).unwrap_or_default();
            let clock = judge(elapsed, cpu, timeout);
            if let Clock::Running { until } = clock {
                if !said_waiting && waited >= REJUDGE {
                    said_waiting = true;
                    log::info!(
                        "{what} has waited {waited:.1?} for a CPU so far (the host is busy, and checks run at the lowest priority): that time does not count against its {timeout:?}"
                    );
                }
                deadline = (started + until).max(now + REJUDGE);
            } else {
                kill_group(pid);
                let _ = child_registry::wait(&mut child, pid);
                break Err((clock, elapsed, waited));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    child_registry::forget(pid);
    // Once the binary has exited its output ends at once, unless a process
    // it started still holds it. Either way the group is killed: nothing the
    // check started outlives it. Every wait here is bounded, and readers
    // still blocked at the end (a process that left the group holds the
    // pipes) are left behind with what they read so far.
    let held_open = status.is_ok() && !finished(&readers, Instant::now() + OUTPUT_GRACE);
    kill_group(pid);
    let closed = finished(&readers, Instant::now() + OUTPUT_GRACE);
    let (out, err) = (out.text(), err.text());
    let status = match status {
        Ok(status) => status,
        Err((Clock::Starved, elapsed, waited)) => {
            return Err(Unfinished {
                reason: format!(
                    "{what} did not finish in {elapsed:.1?}, {waited:.1?} of which it waited for a CPU: the host is too busy (checks run at the lowest priority, beside the serving workers)"
                ),
                starved: true,
            })
        }
        Err((_, _, waited)) => {
            let besides = if waited >= REJUDGE {
                format!(" (besides {waited:.1?} waiting for a CPU)")
            } else {
                String::new()
            };
            return Err(Unfinished::of_binary(format!(
                "{what} did not finish within {timeout:?}{besides}"
            )));
        }
    };
    if held_open {
        return Err(Unfinished::of_binary(format!(
            "{what} exited but a process it started kept its output open{}",
            if closed {
                " (its process group was killed)"
            } else {
                " (and left its process group)"
            }
        )));
    }
    Ok(Ran { status, out, err })
}

/// How long output may stay open after the binary exited, and how long the
/// readers get once its group is killed.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// A child's output as read so far (shared with the thread reading it, which
/// may be left behind).
#[derive(Debug, Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl Output {
    fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Reads a child's output on a thread until end of file, keeping at most
/// `MAX_OUTPUT` bytes and draining the rest (so the child never blocks on a
/// full pipe).
fn collect(mut stream: impl Read + Send + 'static, output: Output) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    let mut kept = output.0.lock().unwrap_or_else(|e| e.into_inner());
                    let room = MAX_OUTPUT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })
}

/// Whether every reader reached the end of its stream by `deadline`.
fn finished(readers: &[Option<JoinHandle<()>>], deadline: Instant) -> bool {
    loop {
        if readers.iter().flatten().all(JoinHandle::is_finished) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILLs the check's process group (its leader's pid); a group already
/// gone is no error.
fn kill_group(pid: i32) {
    match killpg(Pid::from_raw(pid), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => log::debug!("sanity check: killing process group {pid}: {e}"),
    }
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
    format!("overseer-check-{:032x}", u128::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    /// A run that ran `ran` and waited `waited`, ready to run or not.
    fn used(ran: u64, waited: u64, runnable: bool) -> Option<CpuUse> {
        Some(CpuUse {
            ran: S(ran),
            waited: S(waited),
            runnable,
        })
    }

    #[test]
    fn the_timeout_counts_the_binarys_own_time_only() {
        // No wait for a CPU: the timeout as set.
        assert_eq!(judge(S(10), used(0, 0, false), S(10)), Clock::TooLong);
        assert_eq!(
            judge(S(3), used(0, 0, false), S(10)),
            Clock::Running { until: S(10) }
        );
        // 7 s of 12 spent waiting: 5 s of its own, judged again at 17 s.
        assert_eq!(
            judge(S(12), used(1, 7, true), S(10)),
            Clock::Running { until: S(17) }
        );
        // A binary that hangs (asleep, not waiting) is blamed at 10 s of
        // its own however long it waited before.
        assert_eq!(judge(S(30), used(1, 20, false), S(10)), Clock::TooLong);
        // A busy one, once a thread of it ran for a whole timeout.
        assert_eq!(judge(S(25), used(10, 15, true), S(10)), Clock::TooLong);
        // Where the kernel does not say, the timeout is wall-clock time.
        assert_eq!(judge(S(10), None, S(10)), Clock::TooLong);
    }

    #[test]
    fn a_run_ready_to_run_is_not_blamed_for_a_wait_not_counted_yet() {
        // 12 s gone, 1 s counted as waiting, but ready to run now (waiting
        // since long ago, perhaps): looked at again shortly.
        assert_eq!(
            judge(S(12), used(1, 1, true), S(10)),
            Clock::Running {
                until: S(12) + REJUDGE
            }
        );
        // The same, asleep: its own time is up.
        assert_eq!(judge(S(12), used(1, 1, false), S(10)), Clock::TooLong);
    }

    #[test]
    fn a_starved_run_ends_at_the_limit_without_blame() {
        let limit = S(10) * STARVED_LIMIT;
        assert_eq!(
            judge(S(55), used(1, 52, true), S(10)),
            Clock::Running { until: limit }
        );
        assert_eq!(judge(limit, used(1, 20, true), S(10)), Clock::Starved);
        // Past the limit with its own time spent asleep: the binary's fault.
        assert_eq!(judge(limit, used(1, 0, false), S(10)), Clock::TooLong);
    }
}
