//! Releases for tests and the demo: distinct builds made from one compiled
//! binary (a *build stamp* appended to a copy), minisign keys and signatures
//! in the format of the `minisign` tool, and a small HTTP release server on
//! loopback that can also misbehave (truncate, trickle, stream forever).
//!
//! An ELF executable ignores bytes appended after its last section, so a
//! stamped copy runs exactly like the original but hashes differently, and
//! the program can read its stamp (a version, a misbehaviour) at start.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const STAMP_MARK: &[u8] = b"\n#overseer-build-stamp ";
/// A stamp is at most this far from the end of the file.
const TAIL: usize = 1024;

/// Copies `exe` to `dst` with a build stamp (`key=value` words) appended.
pub fn stamp(exe: &Path, dst: &Path, fields: &str) -> std::io::Result<()> {
    let mut bytes = std::fs::read(exe)?;
    // Drop a stamp the source may already carry (only its tail is searched:
    // the mark itself is also a constant inside the program).
    let tail_start = bytes.len().saturating_sub(TAIL);
    if let Some(i) = find_last(&bytes[tail_start..], STAMP_MARK) {
        bytes.truncate(tail_start + i);
    }
    bytes.extend_from_slice(STAMP_MARK);
    bytes.extend_from_slice(fields.as_bytes());
    bytes.push(b'\n');
    std::fs::write(dst, bytes)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755))
}

/// Like [`stamp`], padded with zeros before the stamp to `size` bytes (a
/// large release, for measuring download, hashing and swap).
pub fn stamp_padded(exe: &Path, dst: &Path, fields: &str, size: u64) -> std::io::Result<()> {
    stamp(exe, dst, "")?;
    let mut bytes = std::fs::read(dst)?;
    let room = size.saturating_sub(bytes.len() as u64 + fields.len() as u64 + 32);
    bytes.resize(bytes.len() + room as usize, 0);
    bytes.extend_from_slice(STAMP_MARK);
    bytes.extend_from_slice(fields.as_bytes());
    bytes.push(b'\n');
    std::fs::write(dst, bytes)
}

/// The build stamp of the running binary (`key=value` words), if any.
pub fn own_stamp() -> HashMap<String, String> {
    match std::env::current_exe() {
        Ok(exe) => read_stamp(&exe),
        Err(_) => HashMap::new(),
    }
}

/// The build stamp of the binary at `path` (`key=value` words), if any.
pub fn read_stamp(path: &Path) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    let Ok(mut f) = std::fs::File::open(path) else {
        return fields;
    };
    use std::io::{Seek, SeekFrom};
    let len = f.seek(SeekFrom::End(0)).unwrap_or(0);
    let tail = len.min(TAIL as u64);
    let mut buf = vec![0; tail as usize];
    if f.seek(SeekFrom::Start(len - tail)).is_err() || f.read_exact(&mut buf).is_err() {
        return fields;
    }
    if let Some(i) = find_last(&buf, STAMP_MARK) {
        let text = String::from_utf8_lossy(&buf[i + STAMP_MARK.len()..]).into_owned();
        for word in text.split_whitespace() {
            if let Some((k, v)) = word.split_once('=') {
                fields.insert(k.to_string(), v.to_string());
            }
        }
    }
    fields
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// A minisign key pair (unencrypted, for tests and the demo).
pub struct Keys {
    /// The public key, as the base64 line of a `minisign.pub` file.
    pub public: String,
    /// The whole `minisign.pub` file.
    pub public_file: String,
    secret: minisign::SecretKey,
    pk: minisign::PublicKey,
}

impl Keys {
    /// A fresh key pair.
    pub fn generate() -> Keys {
        let kp = minisign::KeyPair::generate_unencrypted_keypair().expect("key generation");
        let public_file = kp.pk.to_box().expect("public key box").to_string();
        Keys {
            public: kp.pk.to_base64(),
            public_file,
            secret: kp.sk,
            pk: kp.pk,
        }
    }

    /// A `.minisig` over `data`, vouching for `version` and `target` in its
    /// trusted comment (what `minisign -S -t 'version:… target:…'` makes).
    pub fn sign(&self, data: &[u8], version: &str, target: &str) -> String {
        let comment = format!("version:{version}\ttarget:{target}");
        self.sign_with_comment(data, &comment)
    }

    /// A `.minisig` over `data` with any trusted comment.
    pub fn sign_with_comment(&self, data: &[u8], trusted_comment: &str) -> String {
        minisign::sign(
            Some(&self.pk),
            &self.secret,
            data,
            Some(trusted_comment),
            Some("signature from overseer's test keys"),
        )
        .expect("signing")
        .into_string()
    }
}

/// This build's target triple, as releases are signed for it.
pub fn this_target() -> String {
    // The tests run on the machine they were built for.
    let arch = std::env::consts::ARCH;
    match std::env::consts::OS {
        "linux" => format!("{arch}-unknown-linux-gnu"),
        "macos" => format!("{arch}-apple-darwin"),
        os => format!("{os}-{arch}"),
    }
}

/// A zstd decompression bomb made by hand (RFC 8878): one frame declaring a
/// window of `2^window_log` bytes, then `blocks` RLE blocks of 128 KiB of
/// zeros each. It is `6 + 4 * blocks` bytes long and unpacks to
/// `blocks * 128 KiB` (2 MiB of it, 524,287 blocks, unpack to 64 GiB).
pub fn zstd_bomb(window_log: u8, blocks: usize) -> Vec<u8> {
    assert!((10..=41).contains(&window_log) && blocks > 0);
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd];
    // Frame header descriptor: no content size, not single-segment, no
    // checksum, no dictionary; then the window descriptor (exponent only).
    out.push(0);
    out.push((window_log - 10) << 3);
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        // Block header: last flag, type 1 (RLE), size 128 KiB; then the byte.
        let header = last | (1 << 1) | ((128 * 1024) << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}

/// How the release server answers downloads of the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Correct answers.
    Normal,
    /// Announces the full length, sends half, closes.
    Truncate,
    /// Sends bytes forever (no length).
    Endless,
    /// Sends one byte every 50 ms; a download under way ends (the
    /// connection closed short) once the mode changes.
    Trickle,
}

/// What the server publishes.
#[derive(Default)]
struct Published {
    files: HashMap<String, (Vec<u8>, String)>,
    generation: u64,
}

/// A real HTTP/1.1 server on 127.0.0.1 publishing releases from memory, with
/// ETags (and 304 answers to `If-None-Match`).
pub struct ReleaseServer {
    /// Where it listens.
    pub addr: SocketAddr,
    published: Arc<Mutex<Published>>,
    mode: Arc<Mutex<Mode>>,
    /// Full downloads served (200 with a body), by path.
    downloads: Arc<Mutex<HashMap<String, usize>>>,
    /// Requests answered, of any kind.
    pub requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl ReleaseServer {
    /// Starts the server on a free loopback port.
    pub fn start() -> ReleaseServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind release server");
        let addr = listener.local_addr().expect("local addr");
        let server = ReleaseServer {
            addr,
            published: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Normal)),
            downloads: Arc::default(),
            requests: Arc::default(),
            stop: Arc::default(),
        };
        let (published, mode, downloads, requests, stop) = (
            server.published.clone(),
            server.mode.clone(),
            server.downloads.clone(),
            server.requests.clone(),
            server.stop.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (published, mode, downloads, requests, stop) = (
                    published.clone(),
                    mode.clone(),
                    downloads.clone(),
                    requests.clone(),
                    stop.clone(),
                );
                std::thread::spawn(move || {
                    let _ = serve(stream, &published, &mode, &downloads, &requests, &stop);
                });
            }
        });
        server
    }

    /// The URL of a published path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Publishes (or replaces) a file; its ETag changes with its content.
    pub fn publish(&self, path: &str, bytes: Vec<u8>) {
        let mut p = self.published.lock().expect("lock");
        p.generation += 1;
        let etag = format!("\"g{}-{}\"", p.generation, bytes.len());
        p.files
            .insert(path.trim_start_matches('/').to_string(), (bytes, etag));
    }

    /// Publishes a file under a new ETag without changing its content.
    pub fn touch(&self, path: &str) {
        let mut p = self.published.lock().expect("lock");
        p.generation += 1;
        let g = p.generation;
        if let Some((bytes, etag)) = p.files.get_mut(path.trim_start_matches('/')) {
            *etag = format!("\"g{g}-{}\"", bytes.len());
        }
    }

    /// Removes a published file (404 afterwards).
    pub fn unpublish(&self, path: &str) {
        self.published
            .lock()
            .expect("lock")
            .files
            .remove(path.trim_start_matches('/'));
    }

    /// Sets how downloads are answered.
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }

    /// Full downloads of `path` so far.
    pub fn downloads(&self, path: &str) -> usize {
        let d = self.downloads.lock().expect("lock");
        d.get(path.trim_start_matches('/')).copied().unwrap_or(0)
    }
}

impl Drop for ReleaseServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    stream: TcpStream,
    published: &Mutex<Published>,
    mode: &Mutex<Mode>,
    downloads: &Mutex<HashMap<String, usize>>,
    requests: &AtomicUsize,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .trim_start_matches('/')
            .to_string();
        let head = line.starts_with("HEAD ");
        let mut if_none_match = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("if-none-match") {
                    if_none_match = Some(v.trim().to_string());
                }
            }
        }
        requests.fetch_add(1, Ordering::Relaxed);
        let file = published.lock().expect("lock").files.get(&path).cloned();
        let Some((bytes, etag)) = file else {
            out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        };
        if if_none_match.as_deref() == Some(etag.as_str()) {
            write!(out, "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\n\r\n")?;
            continue;
        }
        if head {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nETag: {etag}\r\nContent-Length: {}\r\n\r\n",
                bytes.len()
            )?;
            continue;
        }
        let is_binary = !path.ends_with(".minisig") && !path.ends_with(".sha256");
        let m = if is_binary {
            *mode.lock().expect("lock")
        } else {
            Mode::Normal
        };
        *downloads
            .lock()
            .expect("lock")
            .entry(path.clone())
            .or_default() += 1;
        match m {
            Mode::Normal => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nETag: {etag}\r\nContent-Length: {}\r\n\r\n",
                    bytes.len()
                )?;
                out.write_all(&bytes)?;
            }
            Mode::Truncate => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nETag: {etag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    bytes.len()
                )?;
                out.write_all(&bytes[..bytes.len() / 2])?;
                return Ok(());
            }
            Mode::Endless => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nETag: {etag}\r\nConnection: close\r\n\r\n"
                )?;
                let chunk = vec![0x7fu8; 64 * 1024];
                // Bounded: 4 GiB at most, or until the client goes away.
                for _ in 0..65_536 {
                    if stop.load(Ordering::Relaxed) || out.write_all(&chunk).is_err() {
                        break;
                    }
                }
                return Ok(());
            }
            Mode::Trickle => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nETag: {etag}\r\nContent-Length: {}\r\n\r\n",
                    bytes.len()
                )?;
                // Bounded: at most 10 minutes, until the client goes away,
                // or until the mode changes.
                for b in bytes.iter().take(12_000) {
                    if stop.load(Ordering::Relaxed)
                        || *mode.lock().expect("lock") != Mode::Trickle
                        || out.write_all(&[*b]).is_err()
                    {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                return Ok(());
            }
        }
    }
}

/// What a master costs while it polls an unchanged release.
#[derive(Debug, Clone, Copy)]
pub struct IdleCost {
    /// How long it was measured.
    pub span: Duration,
    /// Its poll interval.
    pub interval: Duration,
    /// The master's CPU time (all its threads, to the nanosecond) over `span`.
    pub cpu: Duration,
    /// `cpu` in percent of one core over `span`.
    pub cpu_percent: f64,
    /// Requests the release server answered meanwhile.
    pub requests: usize,
    /// Of those, full downloads of the release (the rest: `304 Not Modified`).
    pub downloads: usize,
    /// The master's RSS and its anonymous part at the end, in KiB.
    pub rss_kb: Option<u64>,
    /// See `rss_kb`.
    pub anon_kb: Option<u64>,
}

/// A release server with `bytes` published as `app` and signed for
/// `version` (`app.minisig`) with fresh keys, returned beside it.
pub fn signed_release(bytes: Vec<u8>, version: &str) -> (ReleaseServer, Keys) {
    let keys = Keys::generate();
    let server = ReleaseServer::start();
    server.publish(
        "app.minisig",
        keys.sign(&bytes, version, &this_target()).into_bytes(),
    );
    server.publish("app", bytes);
    (server, keys)
}

/// Starts an `upgrade-app` master at `bin` polling `server`'s `app` every
/// `interval` (the installed binary must be the published one, signed for
/// `public_key`), lets its first poll pass, then measures it for `span`.
/// The master is stopped before this returns.
pub fn idle_cost(
    bin: &Path,
    server: &ReleaseServer,
    public_key: &str,
    interval: Duration,
    span: Duration,
) -> IdleCost {
    let mut cmd = std::process::Command::new(bin);
    cmd.env("UA_FETCH_URL", server.url("app"))
        .env("UA_PUBKEYS", public_key)
        .env("UA_INTERVAL_MS", interval.as_millis().to_string());
    measure_idle(cmd, Some((server, "app")), interval, span)
}

/// Starts the master `cmd`, waits for its first worker to be ready and, when
/// it polls `path` on a release server every `interval`, for its first polls
/// to pass (a master new to the release downloads it once and finds the
/// running binary; one restarted beside its ledger asks only whether it
/// changed); then
/// measures it for `span`. The master is stopped before this returns.
pub fn measure_idle(
    cmd: std::process::Command,
    polled: Option<(&ReleaseServer, &str)>,
    interval: Duration,
    span: Duration,
) -> IdleCost {
    use crate::proc::{anon_kb, cpu_time, rss_kb, Proc};
    let p = Proc::spawn_quiet(cmd);
    p.expect_line("worker 1 ready", Duration::from_secs(60));
    std::thread::sleep(interval * 3);
    let counts = || {
        polled.map_or((0, 0), |(server, path)| {
            (
                server.requests.load(Ordering::Relaxed),
                server.downloads(path),
            )
        })
    };
    let (c0, (r0, d0)) = (cpu_time(p.pid).unwrap_or_default(), counts());
    std::thread::sleep(span);
    let (c1, (r1, d1)) = (cpu_time(p.pid).unwrap_or_default(), counts());
    let cpu = c1.saturating_sub(c0);
    IdleCost {
        span,
        interval,
        cpu,
        cpu_percent: cpu.as_secs_f64() / span.as_secs_f64().max(1e-9) * 100.0,
        requests: r1.saturating_sub(r0),
        downloads: d1.saturating_sub(d0),
        rss_kb: rss_kb(p.pid),
        anon_kb: anon_kb(p.pid),
    }
}
