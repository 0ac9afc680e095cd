//! A plain-`std` HTTP/1.1 server under overseer, with zero-downtime restarts.
//!
//! Run it:
//!
//! ```text
//! cargo run --example http_std -- 127.0.0.1:3000
//! curl localhost:3000/              # worker=1 pid=… id=… version=dev
//! kill -USR2 <pid printed above>    # graceful restart: worker=2 answers next
//! curl 'localhost:3000/slow?ms=3000' & kill -USR2 <pid>   # the slow one still finishes
//! ```
//!
//! It shows the draining pattern that keeps keep-alive clients from ever
//! seeing a reset: when the shutdown notification fires the worker stops
//! accepting, answers each open connection's next request with
//! `Connection: close`, closes connections that stay idle only after a grace
//! period, and returns once every connection is done. It uses no async
//! runtime, only threads.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown as Direction, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use overseer::{Config, Readiness, Shutdown, State};

/// While draining, a connection idle this long is closed.
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// An idle keep-alive connection is closed after this long anyway.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a blocked read looks at the shutdown notification.
const POLL: Duration = Duration::from_millis(50);
/// A thread with no connection to serve ends after this long.
const THREAD_IDLE: Duration = Duration::from_secs(10);

/// Answers a request path with a status and a body.
pub type Handler = Arc<dyn Fn(&str) -> (u16, String) + Send + Sync>;

#[allow(dead_code)]
fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_string());
    overseer::run(
        Config::new(program)
            .address(addr)
            .readiness(Readiness::Notify)
            .terminate_timeout(Duration::from_secs(10)),
    );
}

/// Runs in each worker.
fn program(state: State) {
    let listener = state.tcp_listener().expect("a TCP address is configured");
    let tag = format!(
        "worker={} pid={} id={} version={}",
        state.worker,
        std::process::id(),
        state.id.get(..12).unwrap_or("none"),
        state.version.as_deref().unwrap_or("dev"),
    );
    eprintln!("{tag} serving on {}", state.addresses.join(", "));
    if let Err(e) = state.ready() {
        eprintln!("cannot report readiness: {e}");
    }
    let handler: Handler = Arc::new(move |path| answer(&tag, path));
    serve(&listener, &state.shutdown, handler);
    eprintln!("worker={} drained", state.worker);
}

/// `/` answers who served it; `/slow?ms=N` does so after N milliseconds.
fn answer(tag: &str, path: &str) -> (u16, String) {
    if let Some(ms) = path.strip_prefix("/slow?ms=") {
        let ms = ms.parse::<u64>().unwrap_or(0).min(60_000);
        std::thread::sleep(Duration::from_millis(ms));
        return (200, format!("{tag}\n"));
    }
    match path {
        "/" => (200, format!("{tag}\n")),
        _ => (404, "not found\n".to_string()),
    }
}

/// Serves until `shutdown` fires, then drains and returns once every
/// connection is closed (the master kills the worker after its
/// `terminate_timeout` should a connection never finish).
pub fn serve(listener: &TcpListener, shutdown: &Shutdown, handler: Handler) {
    let open = Arc::new(Open::default());
    let threads = Threads::default();
    for stream in shutdown.incoming(listener) {
        let Ok(stream) = stream else { continue };
        let (shutdown, handler, token) = (shutdown.clone(), handler.clone(), Open::enter(&open));
        threads.run(move || {
            let _open = token;
            let _ = connection(stream, &shutdown, &handler);
        });
    }
    open.wait_until_none();
}

/// Counts open connections, so draining can wait for the last one.
#[derive(Default)]
struct Open {
    count: Mutex<usize>,
    none: Condvar,
}

/// One open connection; dropping it counts the connection as closed.
struct OpenToken(Arc<Open>);

impl Open {
    fn enter(open: &Arc<Open>) -> OpenToken {
        *open.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        OpenToken(open.clone())
    }

    /// Returns once no connection is open.
    fn wait_until_none(&self) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        while *count > 0 {
            count = self
                .none
                .wait(count)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for OpenToken {
    fn drop(&mut self) {
        let mut count = self.0.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count -= 1;
        if *count == 0 {
            self.0.none.notify_all();
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread per connection, but threads are reused: starting and ending a
/// thread costs more than a short request, so with a connection per request
/// a fresh thread each time would halve throughput.
struct Threads {
    jobs: mpsc::Sender<Job>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    /// Idle threads minus jobs queued for them: a job is sent only after
    /// claiming one, and a thread leaves only if it can take one back, so no
    /// job waits in the queue without a thread to run it.
    idle: Arc<AtomicUsize>,
}

impl Default for Threads {
    fn default() -> Threads {
        let (jobs, queue) = mpsc::channel();
        Threads {
            jobs,
            queue: Arc::new(Mutex::new(queue)),
            idle: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Threads {
    /// Runs `job` on an idle thread, or on a new one if none is idle.
    fn run(&self, job: impl FnOnce() + Send + 'static) {
        let claimed = self
            .idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        let mut job: Job = Box::new(job);
        if claimed {
            match self.jobs.send(job) {
                Ok(()) => return,
                Err(mpsc::SendError(back)) => job = back,
            }
        }
        let (queue, idle) = (self.queue.clone(), self.idle.clone());
        std::thread::spawn(move || loop {
            job();
            idle.fetch_add(1, Ordering::AcqRel);
            job = match next_job(&queue, &idle) {
                Some(next) => next,
                None => return,
            };
        });
    }
}

/// Waits for a job; gives up after `THREAD_IDLE` unless one was claimed for
/// this thread meanwhile.
fn next_job(queue: &Mutex<mpsc::Receiver<Job>>, idle: &AtomicUsize) -> Option<Job> {
    let Ok(queue) = queue.lock() else { return None };
    loop {
        match queue.recv_timeout(THREAD_IDLE) {
            Ok(job) => return Some(job),
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let left = idle
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok();
                if left {
                    return None;
                }
            }
        }
    }
}

/// Serves one connection, request after request.
fn connection(stream: TcpStream, shutdown: &Shutdown, handler: &Handler) -> io::Result<()> {
    stream.set_read_timeout(Some(POLL))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let idle_since = Instant::now();
        let mut line = String::new();
        // Between requests: wait, but while draining only for the grace period.
        let idle_limit = || {
            if shutdown.is_triggered() {
                DRAIN_GRACE.min(IDLE_TIMEOUT)
            } else {
                IDLE_TIMEOUT
            }
        };
        if !read_line(&mut reader, &mut line, || {
            idle_since.elapsed() < idle_limit()
        })? {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut client_close = line.ends_with("HTTP/1.0\r\n");
        let mut body_len = 0usize;
        let started = Instant::now();
        loop {
            let mut header = String::new();
            if !read_line(&mut reader, &mut header, || {
                started.elapsed() < IDLE_TIMEOUT
            })? {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("connection") {
                    client_close = value.eq_ignore_ascii_case("close");
                } else if name.eq_ignore_ascii_case("content-length") {
                    body_len = value.parse().unwrap_or(0);
                }
            }
        }
        io::copy(&mut (&mut reader).take(body_len as u64), &mut io::sink())?;
        let (status, body) = handler(&path);
        // Once draining, every answer closes its connection, so keep-alive
        // clients reconnect — to the new worker.
        let close = client_close || shutdown.is_triggered();
        let reason = if status == 200 { "OK" } else { "Not Found" };
        // One write, so one packet: `write!` straight to the socket would
        // make a system call per piece.
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
            body.len(),
            if close { "close" } else { "keep-alive" },
        );
        writer.write_all(response.as_bytes())?;
        if close {
            return linger(writer, reader);
        }
    }
}

/// Reads one line, waiting while `keep_waiting` holds. Returns false when the
/// peer closed or the wait ended before a complete line.
fn read_line(
    reader: &mut BufReader<TcpStream>,
    line: &mut String,
    keep_waiting: impl Fn() -> bool,
) -> io::Result<bool> {
    loop {
        match reader.read_line(line) {
            Ok(0) => return Ok(false),
            Ok(_) if line.ends_with('\n') => return Ok(true),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // A partial line stays in `line`: keep waiting for the rest.
                if line.is_empty() && !keep_waiting() {
                    return Ok(false);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Closes gracefully: send FIN first and read what the client still sends,
/// so the kernel never answers unread data with a reset that could destroy
/// the response in flight.
fn linger(writer: TcpStream, mut reader: BufReader<TcpStream>) -> io::Result<()> {
    writer.shutdown(Direction::Write)?;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut sink = [0u8; 1024];
    while Instant::now() < deadline {
        match reader.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    Ok(())
}
