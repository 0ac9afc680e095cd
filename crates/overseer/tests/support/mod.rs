//! A real HTTP server on loopback for the fetcher tests, recording what it saw.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Child;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Router;

/// What a test server saw of one request.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub headers: HeaderMap,
    pub status: StatusCode,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A real HTTP server on 127.0.0.1, answering with `handler`.
pub struct Server {
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    pub fn start(handler: impl Fn(&Parts) -> Response + Send + Sync + 'static) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let hits = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let log = hits.clone();
        let app = Router::new().fallback(move |request: Request| {
            let (handler, log) = (handler.clone(), log.clone());
            async move {
                let (parts, _) = request.into_parts();
                let response = handler(&parts);
                lock(&log).push(Hit {
                    path: parts.uri.to_string(),
                    headers: parts.headers.clone(),
                    status: response.status(),
                });
                response
            }
        });
        runtime.spawn(async move { axum::serve(listener, app).await });
        Server {
            addr,
            hits,
            _runtime: runtime,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> Vec<Hit> {
        lock(&self.hits).clone()
    }
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Body>) -> Response {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    response.body(body.into()).expect("response")
}

pub fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// A file of the test PKI in `tests/tls`: a throwaway CA (`ca.pem`, its key
/// discarded) and a certificate for 127.0.0.1 and localhost that it signed
/// (`server.pem`, `server.key`), valid until 2126. Made with
/// `openssl req -x509 -newkey ec …` and `openssl x509 -req … -CA ca.pem`.
pub fn tls_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls")
        .join(name)
}

/// An HTTPS answer: status, headers (besides `Content-Length`) and body.
pub type TlsReply = (u16, Vec<(&'static str, String)>, Vec<u8>);

/// An HTTPS server on 127.0.0.1 with the test certificate, answering each
/// request (keep-alive) with `handler(host, path)`, where `host` is the
/// request's `Host` header; returns its port. Its threads end with the test
/// process.
pub fn https_server(handler: impl Fn(&str, &str) -> TlsReply + Send + Sync + 'static) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(tls_file("server.pem"))
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .expect("the server certificate");
    let key = PrivateKeyDer::from_pem_file(tls_file("server.key")).expect("the server key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("a server configuration");
    let config = Arc::new(config);
    let handler = Arc::new(handler);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (config, handler) = (config.clone(), handler.clone());
            std::thread::spawn(move || serve_tls(stream, config, &*handler));
        }
    });
    port
}

/// Answers each request on one TLS connection, until the client goes (or
/// the handshake fails: the client refused the certificate).
fn serve_tls(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    handler: &dyn Fn(&str, &str) -> TlsReply,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match tls.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
        pending.drain(..end);
        let path = head.split(' ').nth(1).unwrap_or("/");
        let host = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("host").then(|| value.trim())
            })
            .unwrap_or_default();
        let (status, headers, body) = handler(host, path);
        let mut out = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
        for (name, value) in headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        if tls
            .write_all(out.as_bytes())
            .and_then(|()| tls.write_all(&body))
            .is_err()
        {
            return;
        }
        let _ = tls.flush();
    }
}

/// Waits (`within` at most) until a server process accepts connections on
/// loopback `port`; `false` when it exited instead (its port may have been
/// taken: the caller tries another).
pub fn wait_listening(child: &mut Child, port: u16, name: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("{name} exited at start ({status})");
            return false;
        }
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{name} did not listen on port {port} within {within:?}");
}

/// A store of a fleet's objects under the prefix `fleet/stable`, located
/// as `location`, whose bucket's files are in `root` (its server's data):
/// writes whole, conditional reads, listing, streaming, a missing object,
/// names that would leave the prefix refused, and nothing written outside it.
#[allow(dead_code, clippy::unwrap_used)]
pub fn store_round_trip(
    store: &mut dyn overseer::fetcher::Store,
    location: &str,
    root: &std::path::Path,
) {
    use overseer::fetcher::Object;
    use std::io::Read;
    assert_eq!(
        store.locate("manifest.json"),
        format!("{location}/manifest.json")
    );
    assert_eq!(
        store.read("manifest.json", 100, None).unwrap(),
        Object::Missing
    );
    store.write("manifest.json", b"{\"serial\": 1}").unwrap();
    let Object::Found { bytes, tag } = store.read("manifest.json", 100, None).unwrap() else {
        panic!("the object written is not found");
    };
    assert_eq!(bytes, b"{\"serial\": 1}");
    let tag = tag.expect("an ETag");
    assert_eq!(
        store.read("manifest.json", 100, Some(&tag)).unwrap(),
        Object::Unchanged
    );
    let err = store.read("manifest.json", 5, None).unwrap_err();
    assert!(err.to_string().contains("larger than 5 bytes"), "{err}");
    store.write("manifest.json", b"{\"serial\": 2}").unwrap();
    assert!(matches!(
        store.read("manifest.json", 100, Some(&tag)).unwrap(),
        Object::Found { .. }
    ));
    store.write("reports/1.0.0/host-a.json", b"{}").unwrap();
    store.write("reports/1.0.0/host-b.json", b"{}").unwrap();
    store.write("2.0.0/x/app", &[7u8; 100_000]).unwrap();
    assert_eq!(
        store.list("reports/").unwrap(),
        ["reports/1.0.0/host-a.json", "reports/1.0.0/host-b.json"]
    );
    let mut body = Vec::new();
    store
        .open("2.0.0/x/app")
        .unwrap()
        .read_to_end(&mut body)
        .unwrap();
    assert_eq!(body, vec![7u8; 100_000]);
    assert!(store.open("2.0.0/x/none").is_err());
    for bad in ["../escape", "/abs", "a//b"] {
        assert!(store.write(bad, b"x").is_err(), "{bad}");
    }
    // Nothing landed outside the prefix.
    if root.is_dir() {
        let top: Vec<_> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(top, ["fleet"], "{top:?}");
    }
}
