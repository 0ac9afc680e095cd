//! What the fault-injection tests need beyond the shared support: process
//! state from `/proc`, waiting on long logs, a small mounted filesystem, and
//! raw clients for a streamed response and a request sent byte by byte.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use overseer_harness::proc::{alive, open_fds, Proc};

use crate::support::T;

/// A mebibyte.
pub const MIB: u64 = 1 << 20;

/// Prints a summary line that `cargo test` shows even for a passing test
/// (its capture only takes what the print macros write).
pub fn report(text: &str) {
    let _ = std::io::stderr().write_all(format!("{text}\n").as_bytes());
}

/// A small seeded generator (xorshift64*): a seed replays the same sequence.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// One line of `/proc/PID/stat`: state, parent and process group.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

/// Process `pid`'s state, parent and group, if it exists.
pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(Stat {
        pid,
        state,
        ppid,
        pgrp,
    })
}

/// Every process visible in `/proc`.
pub fn all_processes() -> Vec<Stat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter_map(stat)
        .collect()
}

/// The children of `pid`, zombies included.
pub fn children(pid: i32) -> Vec<Stat> {
    all_processes()
        .into_iter()
        .filter(|s| s.ppid == pid)
        .collect()
}

/// Waits until no live process is left in process group `pgrp`; panics
/// naming the survivors.
pub fn expect_group_gone(pgrp: i32, what: &str) {
    let survivors = || -> Vec<i32> {
        all_processes()
            .into_iter()
            .filter(|s| s.pgrp == pgrp && s.state != 'Z' && alive(s.pid))
            .map(|s| s.pid)
            .collect()
    };
    let deadline = Instant::now() + T;
    while !survivors().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = survivors();
    assert!(left.is_empty(), "{what}: processes survived: {left:?}");
}

/// Whether every thread of `pid` is stopped (SIGSTOP took effect).
pub fn stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut any = false;
    for task in tasks.flatten() {
        any = true;
        let text = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let state = text
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if state != Some('T') {
            return false;
        }
    }
    any
}

/// Worker numbers and pids from the master's `worker N started (pid P)` lines.
pub fn started_workers(p: &Proc) -> BTreeMap<u64, i32> {
    p.output()
        .iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once("worker ")?;
            let (n, rest) = rest.split_once(" started (pid ")?;
            Some((n.parse().ok()?, rest.trim_end_matches(')').parse().ok()?))
        })
        .collect()
}

/// The last `n` lines of a master's output, for failure messages.
pub fn tail(p: &Proc, n: usize) -> String {
    let out = p.output();
    out[out.len().saturating_sub(n)..].join("\n")
}

/// Waits for a line containing `needle` at index `*from` or later, then
/// moves `*from` past it (cheap on a log of thousands of lines).
pub fn wait_after(p: &Proc, from: &mut usize, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let lines = p.output_from(*from);
        if let Some(i) = lines.iter().position(|l| l.contains(needle)) {
            *from += i + 1;
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until the master is idle: its newest worker ready, no other child
/// left, and no newer worker started for `settle`. Returns the newest worker.
pub fn wait_idle(p: &Proc, settle: Duration) -> (u64, i32) {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        let workers = started_workers(p);
        let Some((&last, &pid)) = workers.iter().next_back() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let others = children(p.pid).iter().filter(|c| c.pid != pid).count();
        if p.count(&format!("worker {last} ready")) == 0 || others > 0 {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        std::thread::sleep(settle);
        if started_workers(p).len() == workers.len() {
            return (last, pid);
        }
    }
    panic!("the master never became idle:\n{}", tail(p, 40));
}

/// Waits until the master holds `expected` descriptors (a worker's notify
/// socket is closed a moment after it is reaped); returns the last count.
pub fn settled_fds(pid: i32, expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = open_fds(pid).expect("the master's fds");
        if n == expected || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small filesystem mounted for one test (tmpfs, else a loop-mounted ext4
/// image), unmounted when dropped, also when the test panics.
pub struct SmallFs {
    point: tempfile::TempDir,
    _image: Option<tempfile::NamedTempFile>,
}

impl SmallFs {
    /// `None` only when mounting is impossible and `OVERSEER_SKIP_MOUNT=1`.
    pub fn mount(size: u64) -> Option<SmallFs> {
        let point = tempfile::tempdir().expect("mount point");
        let tmpfs = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(point.path())
            .output();
        let tmpfs_error = match tmpfs {
            Ok(out) if out.status.success() => {
                return Some(SmallFs {
                    point,
                    _image: None,
                })
            }
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        // A loop-mounted ext4 image (with room for its own metadata).
        let image = tempfile::NamedTempFile::new().expect("image file");
        image.as_file().set_len(size + 8 * MIB).expect("image size");
        let loop_error = match Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(image.path())
            .output()
        {
            Ok(out) if out.status.success() => match Command::new("mount")
                .args(["-o", "loop"])
                .arg(image.path())
                .arg(point.path())
                .output()
            {
                Ok(out) if out.status.success() => {
                    return Some(SmallFs {
                        point,
                        _image: Some(image),
                    })
                }
                Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            },
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(e) => format!("mkfs.ext4: {e}"),
        };
        if std::env::var("OVERSEER_SKIP_MOUNT").as_deref() == Ok("1") {
            report(&format!(
                "faults: cannot mount a small filesystem; skipped (OVERSEER_SKIP_MOUNT=1): \
                 tmpfs: {tmpfs_error}; loop ext4: {loop_error}"
            ));
            return None;
        }
        panic!(
            "the full-filesystem test mounts a small filesystem and could not:\n  \
             tmpfs: {tmpfs_error}\n  loop-mounted ext4: {loop_error}\n\
             run the tests as root (or with CAP_SYS_ADMIN), or set OVERSEER_SKIP_MOUNT=1 to skip it"
        );
    }

    pub fn path(&self) -> &Path {
        self.point.path()
    }

    /// Bytes available to us.
    pub fn free(&self) -> u64 {
        let out = Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(self.path())
            .output()
            .expect("stat -f");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut words = text.split_whitespace().map(|w| w.parse::<u64>().ok());
        match (words.next().flatten(), words.next().flatten()) {
            (Some(blocks), Some(size)) => blocks * size,
            _ => panic!("unexpected `stat -f` output {text:?}"),
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.point.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy for a moment (a process being reaped): detach it.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.point.path())
                .status();
        }
    }
}

/// The second address the master listens on (the test server's stream address).
pub fn stream_addr(p: &Proc) -> SocketAddr {
    let line = p.expect_nth("listening on", 1, T);
    line.rsplit_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
}

/// What a client of `/stream` received.
#[derive(Debug)]
pub struct Streamed {
    pub chunks: Vec<String>,
    /// The final empty chunk arrived.
    pub complete: bool,
    /// How the connection ended: "eof", "reset", "timeout" or another error.
    pub end: String,
}

/// Requests `/stream?ms=N` and reads the chunked answer to its end; says
/// on `started` once the answer's head has arrived (a worker took the
/// connection and streams).
pub fn stream(addr: SocketAddr, ms: u64, started: std::sync::mpsc::Sender<()>) -> Streamed {
    let conn = TcpStream::connect(addr).expect("connect to the stream address");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut out = conn.try_clone().expect("clone");
    write!(out, "GET /stream?ms={ms} HTTP/1.1\r\nHost: test\r\n\r\n").expect("request");
    let mut reader = BufReader::new(conn);
    let mut got = Streamed {
        chunks: Vec::new(),
        complete: false,
        end: String::new(),
    };
    let end = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::ConnectionReset => "reset".to_string(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timeout".to_string(),
        _ => e.to_string(),
    };
    let mut line = String::new();
    // The status line and headers.
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => {
                got.end = "eof".into();
                return got;
            }
            Ok(_) if line.trim_end().is_empty() => break,
            Ok(_) => {}
            Err(e) => {
                got.end = end(e);
                return got;
            }
        }
    }
    let _ = started.send(());
    // Chunks (each of our chunks is one line).
    for _ in 0..100_000 {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => {
                got.end = "eof".into();
                return got;
            }
            Ok(_) => {}
            Err(e) => {
                got.end = end(e);
                return got;
            }
        }
        let size = usize::from_str_radix(line.trim_end(), 16).unwrap_or(usize::MAX);
        if size == 0 {
            line.clear();
            let _ = reader.read_line(&mut line);
            got.complete = line == "\r\n";
            let mut rest = Vec::new();
            got.end = match reader.read_to_end(&mut rest) {
                Ok(_) if rest.is_empty() => "eof".into(),
                Ok(_) => format!("{} bytes after the last chunk", rest.len()),
                Err(e) => end(e),
            };
            return got;
        }
        let mut data = vec![0u8; size.min(1 << 16) + 2];
        if let Err(e) = reader.read_exact(&mut data) {
            got.end = end(e);
            return got;
        }
        got.chunks.push(
            String::from_utf8_lossy(&data[..size])
                .trim_end()
                .to_string(),
        );
    }
    got.end = "too many chunks".into();
    got
}

/// Sends `GET /` one byte every `pause` and reads the answer: (status,
/// `Connection: close`, body).
pub fn slow_get(addr: SocketAddr, pause: Duration) -> Result<(u16, bool, String), String> {
    let conn = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut out = conn.try_clone().map_err(|e| e.to_string())?;
    for byte in b"GET / HTTP/1.1\r\nHost: slow.client\r\n\r\n" {
        out.write_all(&[*byte])
            .map_err(|e| format!("sending: {e}"))?;
        std::thread::sleep(pause);
    }
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("status line: {e}"))?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let (mut length, mut close) = (0, false);
    for _ in 0..100 {
        line.clear();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("headers: {e}"))?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.trim().eq_ignore_ascii_case("close");
            }
        }
    }
    let mut body = vec![0u8; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("body: {e}"))?;
    Ok((status, close, String::from_utf8_lossy(&body).into_owned()))
}
