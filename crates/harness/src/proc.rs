//! Starting a master under test, reading its output, signalling it, and
//! always ending it (and its workers) by pid.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running master in its own process group, with its output collected.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    /// The master's pid.
    pub pid: i32,
    lines: Arc<Mutex<Vec<String>>>,
    status: Option<ExitStatus>,
}

fn collect(
    stream: impl Read + Send + 'static,
    lines: Arc<Mutex<Vec<String>>>,
    tag: Option<&'static str>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(tag) = tag {
                eprintln!("{tag} {line}");
            }
            if let Ok(mut l) = lines.lock() {
                l.push(line);
            }
        }
    });
}

impl Proc {
    /// Starts `cmd` in a new process group with stdout and stderr collected
    /// (and echoed to our stderr, prefixed `  |` and `  !`).
    pub fn spawn(cmd: Command) -> Proc {
        Proc::spawn_with(cmd, true)
    }

    /// Like [`Proc::spawn`], but collects the output without echoing it.
    pub fn spawn_quiet(cmd: Command) -> Proc {
        Proc::spawn_with(cmd, false)
    }

    fn spawn_with(mut cmd: Command, echo: bool) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // A binary this process has just written can be "busy" for a moment:
        // a child that another thread is starting holds a copy of the write
        // descriptor until its exec. Retried, a bounded number of times.
        let mut busy = 0;
        let mut child = loop {
            match cmd.spawn() {
                Ok(child) => break child,
                Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && busy < 100 => {
                    busy += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("cannot start {cmd:?}: {e}"),
            }
        };
        let lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            collect(out, lines.clone(), echo.then_some("  |"));
        }
        if let Some(err) = child.stderr.take() {
            collect(err, lines.clone(), echo.then_some("  !"));
        }
        Proc {
            pid: child.id() as i32,
            child,
            lines,
            status: None,
        }
    }

    /// Everything printed so far.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The lines printed after the first `from` ones (cheap to poll on a long log).
    pub fn output_from(&self, from: usize) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| l.get(from..).map(<[String]>::to_vec).unwrap_or_default())
            .unwrap_or_default()
    }

    /// How many printed lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.output().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits up to `timeout` for the `nth` (0-based) line containing `needle`.
    pub fn wait_for_nth(&self, needle: &str, nth: usize, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .output()
                .into_iter()
                .filter(|l| l.contains(needle))
                .nth(nth)
            {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The pid of worker `n`, from a master's `worker N started (pid P)`
    /// line (waited for), or panics.
    pub fn worker_pid(&self, n: u64, timeout: Duration) -> i32 {
        let line = self.expect_line(&format!("worker {n} started (pid "), timeout);
        line.rsplit_once("(pid ")
            .and_then(|(_, r)| r.trim_end_matches(')').parse().ok())
            .unwrap_or_else(|| panic!("no pid in {line:?}"))
    }

    /// Waits for a line containing `needle`, or panics with the output so far.
    pub fn expect_line(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_nth(needle, 0, timeout)
            .unwrap_or_else(|| panic!("no line with {needle:?} within {timeout:?}"))
    }

    /// Waits for the `nth` line containing `needle`, or panics.
    pub fn expect_nth(&self, needle: &str, nth: usize, timeout: Duration) -> String {
        self.wait_for_nth(needle, nth, timeout)
            .unwrap_or_else(|| panic!("no line #{nth} with {needle:?} within {timeout:?}"))
    }

    /// The address the master bound first, read from its `listening on` log line.
    pub fn listen_addr(&self) -> SocketAddr {
        let line = self.expect_line("listening on", Duration::from_secs(20));
        let inner = line
            .rsplit_once('(')
            .and_then(|(_, rest)| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        inner
            .parse()
            .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"))
    }

    /// Sends `signal` to the master.
    pub fn signal(&self, signal: i32) {
        send_signal(self.pid, signal);
    }

    /// Waits up to `timeout` for the master to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
                return self.status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Waits for the master to exit, or panics.
    pub fn expect_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.wait_exit(timeout)
            .unwrap_or_else(|| panic!("master {} still running after {timeout:?}", self.pid))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The master and every worker share the process group we created.
        send_signal(-self.pid, nix::libc::SIGKILL);
        if self.status.is_none() {
            let _ = self.child.wait();
        }
    }
}

/// Sends a signal to a pid (or, negative, a process group).
pub fn send_signal(pid: i32, signal: i32) {
    if let Ok(sig) = nix::sys::signal::Signal::try_from(signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The live (not zombie) processes whose process group is `pgid`, from
/// `/proc` (Linux only).
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            // After the `)` closing the command name: state, ppid, pgrp, …
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let mut fields = stat
                    .rsplit_once(')')
                    .map(|(_, rest)| rest)
                    .unwrap_or("")
                    .split_whitespace();
                let state = fields.next();
                let pgrp = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
                state != Some("Z") && pgrp == Some(pgid)
            })
        })
        .collect()
}

/// Describes an exit status for assertions.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (_, Some(s)) => format!("signal {s}"),
        _ => format!("{status:?}"),
    }
}

/// A process's resident memory in kB (`VmRSS` in `/proc/PID/status`; Linux only).
pub fn rss_kb(pid: i32) -> Option<u64> {
    status_kb(pid, "VmRSS:")
}

/// The most resident memory a process has had in its life, in kB (`VmHWM`
/// in `/proc/PID/status`; Linux only): what an allocation spike costs even
/// after it has been freed.
pub fn peak_rss_kb(pid: i32) -> Option<u64> {
    status_kb(pid, "VmHWM:")
}

/// The part of a process's resident memory that is its own (`RssAnon`: heap,
/// stacks, written data), without the code pages it maps from files and
/// shares with other processes running the same binary or libc.
pub fn anon_kb(pid: i32) -> Option<u64> {
    status_kb(pid, "RssAnon:")
}

/// The CPU time a process (all its threads, past and present) has used, to
/// the nanosecond: its CPU-time clock (`clock_getcpuclockid`), which Linux
/// lets any process in the same PID namespace read.
pub fn cpu_time(pid: i32) -> Option<Duration> {
    use nix::time::{clock_getcpuclockid, clock_gettime};
    let clock = clock_getcpuclockid(nix::unistd::Pid::from_raw(pid)).ok()?;
    clock_gettime(clock).ok().map(Duration::from)
}

fn status_kb(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A binary's size and linking, for benchmark headers: `5.4 MB, dynamically
/// linked` when its ELF program headers ask for an interpreter (the dynamic
/// loader, which then maps the C library), else `statically linked`. A
/// master's resident code pages depend on both.
pub fn binary_summary(path: &std::path::Path) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return "unreadable".to_string();
    };
    let size = format!("{:.1} MB", bytes.len() as f64 / 1e6);
    let linking = match elf_has_interpreter(&bytes) {
        Some(true) => "dynamically linked",
        Some(false) => "statically linked",
        None => "not a 64-bit little-endian ELF file",
    };
    format!("{size}, {linking}")
}

/// Whether a 64-bit little-endian ELF file has a `PT_INTERP` program header.
fn elf_has_interpreter(bytes: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    let le = |at: usize, n: usize| -> Option<u64> {
        let field = bytes.get(at..at.checked_add(n)?)?;
        Some(field.iter().rev().fold(0, |v, &b| v << 8 | u64::from(b)))
    };
    if bytes.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = usize::try_from(le(0x20, 8)?).ok()?;
    let entry_size = usize::try_from(le(0x36, 2)?).ok()?;
    let count = usize::try_from(le(0x38, 2)?).ok()?;
    (0..count)
        .map(|i| le(phoff.checked_add(i.checked_mul(entry_size)?)?, 4))
        .try_fold(false, |found, kind| {
            Some(found || kind? == u64::from(PT_INTERP))
        })
}

/// Each thread of a process as its name and its blocked signals (`SigBlk`
/// in `/proc/PID/task/TID/status`, bit `n - 1` for signal `n`; Linux only).
pub fn thread_signal_masks(pid: i32) -> Vec<(String, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            let field = |key: &str| status.lines().find_map(|l| l.strip_prefix(key));
            let name = field("Name:")?.trim().to_string();
            let blocked = u64::from_str_radix(field("SigBlk:")?.trim(), 16).ok()?;
            Some((name, blocked))
        })
        .collect()
}

/// The names of the environment variables a process was started with
/// (`/proc/PID/environ`; Linux only); empty when it cannot be read.
pub fn env_names(pid: i32) -> Vec<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    bytes
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            entry.split_once('=').map(|(name, _)| name.to_string())
        })
        .collect()
}

/// How many descriptors a process has open (entries of `/proc/PID/fd`; Linux only).
pub fn open_fds(pid: i32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The master's own `worker K ready after X ms` figures for handovers (K ≥ 2).
pub fn parse_ready_after(output: &[String]) -> Vec<f64> {
    let parse = |l: &String| {
        let (number, rest) = l
            .split_once("info: worker ")?
            .1
            .split_once(" ready after ")?;
        let ms = rest.strip_suffix(" ms")?.parse().ok()?;
        (number.parse::<u64>().ok()? >= 2).then_some(ms)
    };
    output.iter().filter_map(parse).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn binary_summary_tells_static_from_dynamic() {
        // Independent evidence: a dynamically linked process has the
        // dynamic loader mapped.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let dynamic = maps.lines().any(|l| {
            l.rsplit('/')
                .next()
                .is_some_and(|name| name.starts_with("ld-"))
        });
        let exe = std::env::current_exe().unwrap();
        let summary = super::binary_summary(&exe);
        let expected = if dynamic {
            "dynamically linked"
        } else {
            "statically linked"
        };
        assert!(summary.ends_with(expected), "{summary}");
        assert!(summary.contains(" MB, "), "{summary}");

        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("script");
        std::fs::write(&text, "#!/bin/sh\n").unwrap();
        assert_eq!(
            super::binary_summary(&text),
            "0.0 MB, not a 64-bit little-endian ELF file"
        );
        assert_eq!(
            super::binary_summary(&dir.path().join("none")),
            "unreadable"
        );
    }
}
