//! The server the integration tests run under overseer: the `http_std`
//! example's HTTP code, plus misbehaviours switched on by environment
//! variables (each names the worker number it applies to, so a test can make
//! only the *new* worker misbehave):
//!
//! | variable | effect |
//! |---|---|
//! | `TS_ADDR` | address to listen on (default `127.0.0.1:0`; `none`: no address, serve the sockets socket activation passed) |
//! | `TS_READY_MS`, `TS_TERMINATE_MS` | the master's ready and terminate timeouts |
//! | `TS_START_DELAY_MS` | sleep before reporting ready |
//! | `TS_EXIT_AT_START=N` | worker N exits with status 7 before becoming ready |
//! | `TS_NEVER_READY=N` | worker N never becomes ready and never accepts |
//! | `TS_IGNORE_TERM=N` | worker N keeps running after SIGTERM |
//! | `TS_HUP_EXIT=C` | on SIGHUP, the worker exits with status C |
//! | `TS_READINESS=started` | ready when the program starts (the default of the library) instead of `state.ready()` |
//! | `TS_MASTER_RESTART_MS=M` | the master calls `overseer::restart()` itself after M ms |
//! | `TS_RELOAD_SIGNAL=N` | the master re-executes itself on signal N (`Config::reload_signal`) |
//! | `TS_RUN_ON_THREAD=1` | `overseer::run` is called on a thread the main thread started (the master's loop is not the main thread) |
//! | `TS_COUNT_INT=1` | workers log each SIGINT and exit 0 half a second after the first |
//! | `TS_DEBUG=1` | the master prints its debug lines |
//! | `TS_STEER=1` | the master steers connections (`Config::steer_connections`) |
//! | `TS_ORPHANS=1` | each worker leaves two short-lived orphan processes behind |
//! | `TS_STATUS=S` | each worker, once ready, publishes the status `S (worker N)` |
//! | `TS_STREAM_ADDR` | a second address, for long-lived streamed responses (below) |
//! | `TS_CONTROL=PATH` | the master's control socket |
//! | `TS_NOTIFY_FLOOD=N` | worker N floods its notify socket from four threads with 4000-byte `STATUS=` datagrams for `TS_NOTIFY_FLOOD_MS` (default 3000) ms; it becomes ready 300 ms into the flood and asks for a restart 2 s later |
//!
//! Requests: `/` and `/slow?ms=N` answer `worker=N pid=P …` (a slow one
//! says `worker=N slow request started` first); `/hold?file=PATH` answers
//! once PATH exists (at most 60 s), having said `worker=N holding a
//! request`; `/restart`
//! calls `overseer::restart()` from the worker, `/reload`
//! `overseer::reload()`. On `TS_STREAM_ADDR`,
//! `GET /stream?ms=N` answers with a chunked body, one line
//! `worker=W chunk=I` every 10 ms for N ms, then the final empty chunk; a
//! draining worker finishes its open streams before it ends.

#[path = "../../../overseer/examples/http_std.rs"]
mod http_std;

/// A line on stderr in one write: the master and the other workers share
/// it (a terminal, in the signal tests), and a line written piece by piece,
/// as `eprintln!` does, interleaves with theirs.
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = format!("{}\n", format_args!($($arg)*));
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }};
}

use std::sync::Arc;
use std::time::Duration;

use overseer::{Config, Readiness, State};

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn millis(name: &str, default: u64) -> Duration {
    Duration::from_millis(var(name).and_then(|v| v.parse().ok()).unwrap_or(default))
}

fn applies(name: &str, worker: u64) -> bool {
    var(name).and_then(|v| v.parse::<u64>().ok()) == Some(worker)
}

fn main() {
    if let Some(delay) = var("TS_MASTER_RESTART_MS").and_then(|v| v.parse().ok()) {
        // Only in the master: workers carry OVERSEER_WORKER.
        if var("OVERSEER_WORKER").is_none() {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(delay));
                if let Err(e) = overseer::restart() {
                    say!("restart() in the master failed: {e}");
                }
            });
        }
    }
    let readiness = match var("TS_READINESS").as_deref() {
        Some("started") => Readiness::Started,
        _ => Readiness::Notify,
    };
    let addresses = match var("TS_ADDR") {
        Some(a) if a == "none" => Vec::new(),
        a => vec![a.unwrap_or_else(|| "127.0.0.1:0".into())],
    };
    let addresses: Vec<String> = addresses.into_iter().chain(var("TS_STREAM_ADDR")).collect();
    let mut config = Config::new(program)
        .addresses(addresses)
        .readiness(readiness)
        .ready_timeout(millis("TS_READY_MS", 10_000))
        .terminate_timeout(millis("TS_TERMINATE_MS", 10_000))
        .version("test")
        .debug(var("TS_DEBUG").is_some())
        .steer_connections(var("TS_STEER").is_some());
    if let Some(path) = var("TS_CONTROL") {
        config = config.control_socket(path);
    }
    if let Some(signal) = var("TS_RELOAD_SIGNAL").and_then(|s| s.parse().ok()) {
        config = config.reload_signal(signal);
    }
    if var("TS_RUN_ON_THREAD").is_some() {
        let run = std::thread::spawn(move || overseer::run(config));
        let _ = run.join();
        return;
    }
    overseer::run(config);
}

fn program(state: State) {
    let n = state.worker;
    let tag = format!(
        "worker={n} pid={} id={} version={}",
        std::process::id(),
        state.id.get(..12).unwrap_or("none"),
        state.version.as_deref().unwrap_or("none"),
    );
    say!("{tag} starting");
    if applies("TS_EXIT_AT_START", n) {
        say!("worker={n} exiting at start as asked");
        std::process::exit(7);
    }
    if applies("TS_NEVER_READY", n) {
        say!("worker={n} hanging before ready as asked");
        std::thread::sleep(Duration::from_secs(3600));
    }
    if let Some(code) = var("TS_HUP_EXIT").and_then(|c| c.parse::<i32>().ok()) {
        exit_on_hup(n, code);
    }
    if var("TS_COUNT_INT").is_some() {
        count_sigint(n);
    }
    if var("TS_ORPHANS").is_some() {
        // The shell exits at once; its two children are reparented to the
        // nearest reaper (the master, when it is PID 1) and exit shortly after.
        let status = std::process::Command::new("sh")
            .args(["-c", "sleep 0.3 & sleep 0.3 & exit 0"])
            .status();
        say!("worker={n} left orphans behind: {status:?}");
    }
    let flood = applies("TS_NOTIFY_FLOOD", n);
    if flood {
        flood_notify(n, millis("TS_NOTIFY_FLOOD_MS", 3000));
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(millis("TS_START_DELAY_MS", 0));
    let listener = state.tcp_listener().expect("a TCP address");
    if var("TS_READINESS").as_deref() != Some("started") {
        state.ready().expect("readiness reported");
    }
    if flood {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2000));
            match overseer::restart() {
                Ok(()) => say!("worker={n} asked for a restart amid its flood"),
                Err(e) => say!("worker={n} could not ask for a restart: {e}"),
            }
        });
    }
    if let Some(status) = var("TS_STATUS") {
        state
            .status(&format!("{status} (worker {n})"))
            .expect("status reported");
    }
    let handler: http_std::Handler = Arc::new(move |path: &str| {
        if let Some(ms) = path.strip_prefix("/slow?ms=") {
            let ms = ms.parse::<u64>().unwrap_or(0).min(60_000);
            say!("worker={n} slow request started");
            std::thread::sleep(Duration::from_millis(ms));
        } else if let Some(file) = path.strip_prefix("/hold?file=") {
            say!("worker={n} holding a request");
            let file = std::path::Path::new(file);
            for _ in 0..6_000 {
                if file.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        } else if path == "/restart" {
            if let Err(e) = overseer::restart() {
                return (500, format!("restart failed: {e}\n"));
            }
        } else if path == "/reload" {
            if let Err(e) = overseer::reload() {
                return (500, format!("reload failed: {e}\n"));
            }
        }
        (200, format!("{tag}\n"))
    });
    if applies("TS_IGNORE_TERM", n) {
        let shutdown = overseer::Shutdown::new();
        std::thread::spawn(move || http_std::serve(&listener, &shutdown, handler));
        state.shutdown.wait();
        say!("worker={n} ignoring SIGTERM as asked");
        std::thread::sleep(Duration::from_secs(3600));
        std::process::exit(1);
    }
    let streams = var("TS_STREAM_ADDR").map(|_| {
        let listener = state
            .listeners
            .get(1)
            .and_then(overseer::Listener::as_tcp)
            .expect("the stream address is the second one")
            .try_clone()
            .expect("stream listener");
        let shutdown = state.shutdown.clone();
        std::thread::spawn(move || serve_streams(&listener, &shutdown, n))
    });
    http_std::serve(&listener, &state.shutdown, handler);
    if let Some(streams) = streams {
        let _ = streams.join();
    }
    say!("worker={n} drained");
}

/// Sends 4000-byte `STATUS=` datagrams to the worker's notify socket as fast
/// as four threads can, for `duration` (a worker gone rogue).
fn flood_notify(n: u64, duration: Duration) {
    let target = var("NOTIFY_SOCKET").expect("a notify socket");
    let message = format!("STATUS={}", "x".repeat(3993));
    let deadline = std::time::Instant::now() + duration;
    say!("worker={n} flooding its notify socket");
    for thread in 0..4 {
        let (target, message) = (target.clone(), message.clone());
        std::thread::spawn(move || {
            let socket = std::os::unix::net::UnixDatagram::unbound().expect("a datagram socket");
            let mut sent = 0u64;
            while std::time::Instant::now() < deadline {
                if socket.send_to(message.as_bytes(), &target).is_ok() {
                    sent += 1;
                }
            }
            say!("worker={n} flood thread {thread} over: {sent} datagrams sent");
        });
    }
}

/// Serves `GET /stream?ms=N` until shutdown, then waits for open streams.
fn serve_streams(listener: &std::net::TcpListener, shutdown: &overseer::Shutdown, n: u64) {
    let open = Arc::new(());
    for stream in shutdown.incoming(listener) {
        let Ok(stream) = stream else { continue };
        let token = open.clone();
        std::thread::spawn(move || {
            let _open = token;
            if let Err(e) = stream_one(stream, n) {
                say!("worker={n} stream ended early: {e}");
            }
        });
    }
    while Arc::strong_count(&open) > 1 {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads one request head and streams the answer: a chunk every 10 ms.
fn stream_one(stream: std::net::TcpStream, n: u64) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim_end().is_empty() {
            break;
        }
    }
    let ms: u64 = request
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.strip_prefix("/stream?ms="))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
        .min(60_000);
    let mut out = stream;
    out.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    for i in 0..ms / 10 {
        let line = format!("worker={n} chunk={i}\n");
        write!(out, "{:x}\r\n{line}\r\n", line.len())?;
        std::thread::sleep(Duration::from_millis(10));
    }
    out.write_all(b"0\r\n\r\n")?;
    out.shutdown(std::net::Shutdown::Write)
}

fn exit_on_hup(n: u64, code: i32) {
    let mut signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP]).expect("SIGHUP handler");
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            say!("worker={n} got SIGHUP, exiting with {code}");
            std::process::exit(code);
        }
    });
}

fn count_sigint(n: u64) {
    let mut signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT]).expect("SIGINT handler");
    std::thread::spawn(move || {
        let mut count = 0;
        for _ in signals.forever() {
            count += 1;
            say!("worker={n} got SIGINT #{count}");
            if count == 1 {
                std::thread::spawn(|| {
                    std::thread::sleep(Duration::from_millis(500));
                    std::process::exit(0);
                });
            }
        }
    });
}
