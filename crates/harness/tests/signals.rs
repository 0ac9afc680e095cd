//! Signals reach the worker; the worker's end becomes the master's.

mod support;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;
use std::time::{Duration, Instant};

use overseer_harness::proc::{alive, describe, send_signal, thread_signal_masks, Proc};
use support::*;

const SIGHUP: i32 = 1;
const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;
const SIGTERM: i32 = 15;
use overseer::SIGUSR2;

#[test]
fn sighup_reaches_the_worker_and_its_exit_status_becomes_the_masters() {
    let (mut p, _addr) = start_ready(&[("TS_HUP_EXIT", "3")]);
    p.signal(SIGHUP);
    p.expect_line("worker=1 got SIGHUP, exiting with 3", T);
    let status = p.expect_exit(T);
    assert_eq!(status.code(), Some(3), "{}", describe(status));
}

#[test]
fn sigterm_drains_the_worker_and_exits_with_its_status() {
    let (mut p, addr) = start_ready(&[]);
    let slow = std::thread::spawn(move || {
        overseer_harness::client::Client::new(addr, false).get("/slow?ms=1500")
    });
    p.expect_line("worker=1 slow request started", T);
    p.signal(SIGTERM);
    let status = p.expect_exit(T);
    assert_eq!(status.code(), Some(0), "{}", describe(status));
    assert!(
        slow.join().expect("client").is_ok(),
        "in-flight request completed"
    );
    p.expect_line("worker=1 drained", T);
    assert_eq!(p.count("worker=1 drained"), 1);
}

fn dies_by(signal: i32) {
    // No core files from the deliberate crash.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "ulimit -c 0; exec \"$0\"",
        env!("CARGO_BIN_EXE_testserver"),
    ]);
    let mut p = Proc::spawn(cmd);
    p.expect_line("worker 1 ready", T);
    let worker = worker_pid(&p, 1);
    send_signal(worker, signal);
    if signal == SIGSEGV {
        // Rust's runtime catches the first SIGSEGV (stack-overflow detection),
        // restores the default action and returns when it was not a fault:
        // the second one kills, as a real crash would. Two sent before the
        // worker ran would merge into one, so it is sent again until the
        // master ends.
        for _ in 0..300 {
            if p.wait_exit(Duration::from_millis(100)).is_some() {
                break;
            }
            send_signal(worker, signal);
        }
    }
    let status = p.expect_exit(T);
    assert_eq!(status.signal(), Some(signal), "{}", describe(status));
}

#[test]
fn worker_killed_by_sigkill_makes_the_master_die_by_sigkill() {
    dies_by(SIGKILL);
}

#[test]
fn worker_killed_by_sigsegv_makes_the_master_die_by_sigsegv() {
    dies_by(SIGSEGV);
}

#[test]
fn master_killed_with_sigkill_leaves_no_worker_alive() {
    let (mut p, _addr) = start_ready(&[]);
    p.signal(SIGUSR2);
    p.expect_line("worker 2 ready", T);
    let workers = [worker_pid(&p, 1), worker_pid(&p, 2)];
    p.signal(SIGKILL);
    p.expect_exit(T);
    let deadline = Instant::now() + T;
    while workers.iter().any(|&w| alive(w)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for w in workers {
        assert!(!alive(w), "worker {w} outlived its master");
    }
}

/// Children of `pid` as (pid, state letter), from /proc.
fn children(pid: i32) -> Vec<(i32, char)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let child: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?.chars().next()?;
            let ppid: i32 = fields.next()?.parse().ok()?;
            (ppid == pid).then_some((child, state))
        })
        .collect()
}

#[test]
fn as_pid_1_the_master_reaps_orphans_and_stops_on_sigterm() {
    if Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        eprintln!("skipped: cannot create a PID namespace here (needs root and unshare)");
        return;
    }
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--mount-proc",
        env!("CARGO_BIN_EXE_testserver"),
    ])
    .env("TS_ORPHANS", "1")
    .env("TS_DEBUG", "1");
    let mut p = Proc::spawn(cmd);
    p.expect_line("worker 1 ready", T);
    // unshare's only child is the master, PID 1 in its namespace.
    let master = children(p.pid)
        .first()
        .map(|&(pid, _)| pid)
        .expect("the master under unshare");
    send_signal(master, SIGUSR2);
    p.expect_line("worker 2 ready", T);
    p.expect_nth("left orphans behind", 1, T);
    // Four orphans were reparented to the master and exited after 0.3 s; as
    // PID 1 it must reap them, leaving no zombie among its children.
    let deadline = Instant::now() + T;
    while p.count("reaped orphan pid") < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        p.count("reaped orphan pid") >= 4,
        "the orphans were reaped by the master"
    );
    let zombies: Vec<_> = children(master)
        .into_iter()
        .filter(|&(_, state)| state == 'Z')
        .collect();
    assert!(zombies.is_empty(), "zombies left under PID 1: {zombies:?}");
    // Signals still work for PID 1, which the kernel shields from default actions.
    send_signal(master, SIGTERM);
    let status = p.expect_exit(T);
    assert!(
        status.code().is_some() || status.signal().is_some(),
        "{}",
        describe(status)
    );
    assert!(!alive(master));
}

#[test]
fn ctrl_c_in_a_terminal_reaches_each_worker_once() {
    use std::io::Write;
    // `script` gives the master a pseudo-terminal; ^C typed there makes the
    // kernel signal the whole foreground process group, workers included.
    let Ok(mut child) = Command::new("script")
        .args(["-qfec", env!("CARGO_BIN_EXE_testserver"), "/dev/null"])
        .env("TS_COUNT_INT", "1")
        .env("TS_DEBUG", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
    else {
        eprintln!("skipped: `script` (util-linux) is not installed");
        return;
    };
    let pid = child.id() as i32;
    let mut out = child.stdout.take().expect("stdout");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut s) = sink.lock() {
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    let text = || lines.lock().map(|s| s.clone()).unwrap_or_default();
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + T;
        while !text().contains(needle) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        text().contains(needle)
    };
    assert!(wait_for("worker 1 ready"), "{}", text());
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"\x03").expect("typing ^C");
    stdin.flush().expect("flush");
    // The worker exits 0 half a second after its first SIGINT: a stop, which
    // the master follows.
    let exited = wait_for("ended after a stop signal");
    send_signal(-pid, SIGKILL);
    let _ = child.wait();
    let out = text();
    assert!(exited, "{out}");
    assert_eq!(out.matches("got SIGINT #1").count(), 1, "{out}");
    assert_eq!(
        out.matches("got SIGINT #2").count(),
        0,
        "received twice: {out}"
    );
    assert!(
        out.contains("from the terminal already reached the workers")
            || !out.contains("forwarding SIGINT"),
        "{out}"
    );
}

#[test]
fn the_masters_signals_reach_only_its_signal_thread_and_workers_start_with_none_blocked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let control = dir.path().join("control.sock");
    let control = control.to_str().expect("utf-8 path");
    let (mut p, addr) = start_ready(&[("TS_CONTROL", control)]);
    // A handover first, so the master has started every kind of thread it
    // has here: the control socket's, the notify relays, the readiness wait.
    p.signal(SIGUSR2);
    p.expect_line("worker 2 ready", T);
    expect_answering(addr, 2);
    assert!(thread_signal_masks(p.pid).len() >= 3);
    expect_signals_only_to_the_signal_thread(p.pid, worker_pid(&p, 2));
    // And they still arrive: SIGTERM drains the worker, whose status the
    // master takes.
    p.signal(SIGTERM);
    let status = p.expect_exit(T);
    assert_eq!(status.code(), Some(0), "{}", describe(status));
}
