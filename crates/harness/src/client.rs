//! A deliberately strict HTTP/1.1 client for counting failures.
//!
//! General-purpose clients retry a request whose reused keep-alive connection
//! was closed under them, which hides exactly the failures a restart causes.
//! This one never retries: every refused, reset, truncated or timed-out
//! request is reported, classified.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Failure {
    /// The connection was refused.
    Refused,
    /// The connection was reset.
    Reset,
    /// No complete answer within the timeout.
    Timeout,
    /// The connection closed before a complete response (an "empty reply" or a cut body).
    Truncated,
    /// A response with a status other than 2xx.
    Status(u16),
    /// Anything else.
    Other(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused => f.write_str("refused"),
            Failure::Reset => f.write_str("reset"),
            Failure::Timeout => f.write_str("timeout"),
            Failure::Truncated => f.write_str("truncated"),
            Failure::Status(s) => write!(f, "status {s}"),
            Failure::Other(e) => write!(f, "other: {e}"),
        }
    }
}

impl Failure {
    /// A short label for tables: refused, reset, timeout, truncated, non-2xx, other.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::Reset => "reset",
            Failure::Timeout => "timeout",
            Failure::Truncated => "truncated",
            Failure::Status(_) => "non-2xx",
            Failure::Other(_) => "other",
        }
    }

    fn from_io(e: &io::Error) -> Failure {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Failure::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Failure::Reset,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
            io::ErrorKind::UnexpectedEof => Failure::Truncated,
            _ => Failure::Other(e.to_string()),
        }
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Whether the server asked to close the connection.
    pub close: bool,
    /// The body.
    pub body: String,
}

impl Response {
    /// The value of `key=` in the body's first line (`worker=3 pid=42 …`).
    pub fn field(&self, key: &str) -> Option<&str> {
        let first = self.body.lines().next()?;
        first
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }
}

/// One client connection; with keep-alive it is reused until the server closes it.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    keep_alive: bool,
    timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    /// A client for `addr`; `keep_alive` reuses connections.
    pub fn new(addr: SocketAddr, keep_alive: bool) -> Client {
        Client {
            addr,
            keep_alive,
            timeout: Duration::from_secs(10),
            conn: None,
        }
    }

    /// Sets the per-request timeout (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Sends `GET path` and reads the whole response. Never retries.
    pub fn get(&mut self, path: &str) -> Result<Response, Failure> {
        let result = self.try_get(path);
        match &result {
            Ok(r) if self.keep_alive && !r.close => {}
            _ => self.conn = None,
        }
        result
    }

    /// Opens the connection now, if none is open, without sending anything:
    /// once this returns, the connection is in the server's accept queue.
    pub fn connect(&mut self) -> Result<(), Failure> {
        if self.conn.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, self.timeout)
                .map_err(|e| Failure::from_io(&e))?;
            stream
                .set_read_timeout(Some(self.timeout))
                .and_then(|_| stream.set_write_timeout(Some(self.timeout)))
                .and_then(|_| stream.set_nodelay(true))
                .map_err(|e| Failure::from_io(&e))?;
            self.conn = Some(BufReader::new(stream));
        }
        Ok(())
    }

    /// Sends `GET path` without waiting for the answer: [`Client::receive`]
    /// reads it. `get` is the two in one.
    pub fn send(&mut self, path: &str) -> Result<(), Failure> {
        let result = self.try_send(path);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Reads the answer to the request [`Client::send`] sent.
    pub fn receive(&mut self) -> Result<Response, Failure> {
        let result = match self.conn.as_mut() {
            Some(conn) => read_response(conn),
            None => Err(Failure::Other("no connection".into())),
        };
        match &result {
            Ok(r) if self.keep_alive && !r.close => {}
            _ => self.conn = None,
        }
        result
    }

    fn try_get(&mut self, path: &str) -> Result<Response, Failure> {
        self.try_send(path)?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::Other("no connection".into()));
        };
        read_response(conn)
    }

    fn try_send(&mut self, path: &str) -> Result<(), Failure> {
        self.connect()?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::Other("no connection".into()));
        };
        let connection = if self.keep_alive {
            "keep-alive"
        } else {
            "close"
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: {connection}\r\n\r\n",
            self.addr
        );
        conn.get_mut()
            .write_all(request.as_bytes())
            .map_err(|e| Failure::from_io(&e))
    }
}

/// Waits until the server at `addr` answers `GET /` with a 2xx, polling
/// every 5 ms; panics after `timeout`.
pub fn wait_serving(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut client = Client::new(addr, false).timeout(Duration::from_secs(2));
        if client.get("/").is_ok() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("the server at {addr} never answered within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn read_line(conn: &mut BufReader<TcpStream>) -> Result<String, Failure> {
    let mut line = String::new();
    match conn.read_line(&mut line) {
        Ok(0) => Err(Failure::Truncated),
        Ok(_) if !line.ends_with('\n') => Err(Failure::Truncated),
        Ok(_) => Ok(line.trim_end().to_string()),
        Err(e) => Err(Failure::from_io(&e)),
    }
}

fn read_response(conn: &mut BufReader<TcpStream>) -> Result<Response, Failure> {
    let status_line = read_line(conn)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| Failure::Other(format!("bad status line {status_line:?}")))?;
    let mut length: Option<usize> = None;
    let mut close = false;
    loop {
        let line = read_line(conn)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(Failure::Other(format!("bad header {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Failure::Other("chunked responses are not expected".into()));
        }
    }
    let length = length.ok_or_else(|| Failure::Other("no Content-Length".into()))?;
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body)
        .map_err(|e| Failure::from_io(&e))?;
    if !(200..300).contains(&status) {
        return Err(Failure::Status(status));
    }
    Ok(Response {
        status,
        close,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
