//! The Azure fetcher against Azurite, Microsoft's Azure Storage emulator, on
//! loopback: a real server for the Blob protocol that checks every request's
//! SharedKey signature.
//!
//! Install it once (about 40 seconds):
//!
//! ```text
//! npm install -g azurite@3.37.0
//! ```
//!
//! `azurite-blob` is looked up in `OVERSEER_AZURITE` (a path), then `PATH`.
//! Without it the tests fail and say how to install it, unless
//! `OVERSEER_SKIP_AZURE=1` is set.
//!
//! Run with `cargo test -p overseer --features fetch-azure --test fetch_azure`.
#![cfg(unix)]

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::path::Path;
use object_store::{Attribute, Attributes, ObjectStore, PutOptions, PutPayload};
use overseer::fetcher::{Azure, Fetcher, Release};
use sha2::Sha256;

/// Azurite's well-known development account and its key.
const ACCOUNT: &str = "devstoreaccount1";
const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const CONTAINER: &str = "releases";
const BLOB: &str = "myapp/linux-x86_64/myapp";
const INSTALL: &str = "npm install -g azurite@3.37.0";

/// The Azurite process and its data directory; killed and removed on drop.
struct Server {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The blob service's URL for the account (path-style, as Azurite serves it).
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    fn wait_listening(&mut self) -> bool {
        support::wait_listening(
            &mut self.child,
            self.port,
            "azurite-blob",
            Duration::from_secs(30),
        )
    }

    /// Creates a container through the Blob REST API, signed with the
    /// account key (object_store has no call for it).
    fn create_container(&self, name: &str) {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        let resource = format!("/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container");
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}"
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(ACCOUNT_KEY)
            .expect("the account key is base64");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC key");
        mac.update(to_sign.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let request = format!(
            "PUT /{ACCOUNT}/{name}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
             x-ms-date: {date}\r\nx-ms-version: {version}\r\n\
             Authorization: SharedKey {ACCOUNT}:{signature}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(request.as_bytes()).expect("send");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 201"),
            "creating container {name}: {answer}"
        );
    }
}

fn server_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("OVERSEER_AZURITE") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("azurite-blob"))
        .find(|p| p.is_file())
}

/// Starts Azurite's blob service on a free loopback port, with one
/// container; `None` (skip) only when it is missing and
/// `OVERSEER_SKIP_AZURE=1`.
fn start_server() -> Option<Server> {
    let Some(bin) = server_binary() else {
        if std::env::var("OVERSEER_SKIP_AZURE").as_deref() == Ok("1") {
            eprintln!("azurite-blob not found; skipped (OVERSEER_SKIP_AZURE=1)");
            return None;
        }
        panic!(
            "the Azure tests need Azurite's azurite-blob, which was not found in \
             OVERSEER_AZURITE or PATH. Install it with\n    {INSTALL}\n\
             or set OVERSEER_SKIP_AZURE=1 to skip these tests."
        );
    };
    // The port is free when asked; another process could take it before the
    // server binds, so a server that exits at once is tried again.
    for _attempt in 0..3 {
        let data = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(data.path())
            // object_store may speak a newer API version than this Azurite knows.
            .args(["--silent", "--skipApiVersionCheck"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut server = Server {
            child,
            port,
            _data: data,
        };
        if server.wait_listening() {
            server.create_container(CONTAINER);
            return Some(server);
        }
    }
    panic!("azurite-blob would not start (see its output above)");
}

/// Uploads through the Blob protocol itself (signed with the account key).
struct Uploader {
    runtime: tokio::runtime::Runtime,
    store: MicrosoftAzure,
}

impl Uploader {
    fn new(server: &Server) -> Self {
        let store = MicrosoftAzureBuilder::new()
            .with_account(ACCOUNT)
            .with_access_key(ACCOUNT_KEY)
            .with_container_name(CONTAINER)
            .with_endpoint(server.endpoint())
            .with_allow_http(true)
            .build()
            .expect("uploader");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Uploader { runtime, store }
    }

    /// Puts `bytes` at `blob` (with `x-ms-meta-version` when given).
    fn put(&self, blob: &str, bytes: &[u8], version: Option<&str>) {
        let mut attributes = Attributes::new();
        if let Some(v) = version {
            attributes.insert(Attribute::Metadata("version".into()), v.to_string().into());
        }
        let options = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        let path = Path::from(blob);
        let put = self
            .store
            .put_opts(&path, PutPayload::from(bytes.to_vec()), options);
        self.runtime.block_on(put).expect("upload");
    }
}

fn fetcher(server: &Server, blob: &str) -> Azure {
    Azure::new(ACCOUNT, CONTAINER, blob)
        .endpoint(server.endpoint())
        .access_key(ACCOUNT_KEY)
}

fn read_all(release: Release) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut body = release.body;
    body.read_to_end(&mut bytes).expect("read the body");
    bytes
}

fn error_text(result: Result<Option<Release>, overseer::fetcher::FetchError>) -> String {
    match result {
        Ok(r) => panic!("expected an error, got {:?}", r.map(|r| r.source)),
        Err(e) => e.to_string(),
    }
}

#[test]
fn fetches_from_azurite() {
    let Some(server) = start_server() else {
        return;
    };
    let up = Uploader::new(&server);
    let mut f = fetcher(&server, BLOB).sidecars();

    // Nothing published yet: nothing new, not an error.
    assert!(f.fetch().expect("an empty container is fine").is_none());

    // A release with its checksum and signature beside it (uploaded first).
    let v1: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    up.put(&format!("{BLOB}.sha256"), b"abc123  myapp\n", None);
    up.put(
        &format!("{BLOB}.minisig"),
        b"untrusted comment: sig\nRWQ=\n",
        None,
    );
    up.put(BLOB, &v1, Some("1.0.0"));
    let release = f.fetch().expect("poll").expect("the release");
    assert_eq!(release.version.as_deref(), Some("1.0.0"));
    assert_eq!(release.sha256.as_deref(), Some("abc123"));
    assert_eq!(
        release.signature.as_deref(),
        Some("untrusted comment: sig\nRWQ=\n")
    );
    assert_eq!(release.size, Some(v1.len() as u64));
    assert_eq!(release.name.as_deref(), Some("myapp"));
    assert_eq!(release.source, format!("az://{ACCOUNT}/{CONTAINER}/{BLOB}"));
    assert_eq!(read_all(release), v1, "the body streams through whole");

    // Unchanged: nothing new, poll after poll.
    for _ in 0..3 {
        assert!(f.fetch().expect("poll").is_none());
    }

    // A new upload is a new release.
    up.put(BLOB, b"version two", Some("2.0.0"));
    let release = f.fetch().expect("poll").expect("the new release");
    assert_eq!(release.version.as_deref(), Some("2.0.0"));
    assert_eq!(read_all(release), b"version two");
    assert!(f.fetch().expect("poll").is_none());
}

#[test]
fn mistakes_are_clear_errors() {
    let Some(server) = start_server() else {
        return;
    };
    Uploader::new(&server).put(BLOB, b"app", None);

    let mut wrong_container = Azure::new(ACCOUNT, "no-such-container", BLOB)
        .endpoint(server.endpoint())
        .access_key(ACCOUNT_KEY);
    let err = error_text(wrong_container.fetch());
    assert!(err.contains("no such container"), "{err}");

    // A valid base64 key that is not the account's (Azure answers
    // AuthenticationFailed, Azurite AuthorizationFailure).
    let other_key = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
    let mut wrong_key = fetcher(&server, BLOB).access_key(other_key);
    let err = error_text(wrong_key.fetch());
    assert!(
        err.contains(&format!("az://{ACCOUNT}/{CONTAINER}/{BLOB}"))
            && (err.contains("authorisation was refused") || err.contains("access denied")),
        "{err}"
    );

    // An explicit checksum blob that is missing names the blob and the fix.
    let mut missing = fetcher(&server, BLOB).checksum_key("myapp.sha256");
    let err = error_text(missing.fetch());
    assert!(
        err.contains("myapp.sha256 not found") && err.contains("checksum_key"),
        "{err}"
    );

    // Nothing listens there: a clear error, not a hang.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut unreachable = Azure::new(ACCOUNT, CONTAINER, BLOB)
        .endpoint(format!("http://127.0.0.1:{port}/{ACCOUNT}"))
        .access_key(ACCOUNT_KEY);
    let err = error_text(unreachable.fetch());
    assert!(err.contains("cannot reach the store"), "{err}");
}

/// An endpoint over HTTPS whose certificate a private CA signed (a loopback
/// TLS server answering like Blob Storage; the protocol itself is tested
/// against Azurite above): trusted with `add_root_certificates`, refused
/// without, with the fix in the error.
#[test]
fn a_private_ca_is_trusted_when_added() {
    let port = support::https_server(|_, path| {
        if path.starts_with("/devstoreaccount1/releases/app") {
            let headers = vec![
                ("ETag", "\"0x8D1\"".to_string()),
                ("Last-Modified", "Sun, 22 Nov 2026 05:00:00 GMT".to_string()),
                ("x-ms-meta-version", "3.1.0".to_string()),
            ];
            return (200, headers, b"blob over TLS".to_vec());
        }
        (
            404,
            Vec::new(),
            b"<Error><Code>BlobNotFound</Code></Error>".to_vec(),
        )
    });
    let endpoint = format!("https://localhost:{port}/{ACCOUNT}");
    let ca = std::fs::read(support::tls_file("ca.pem")).expect("the test CA");
    let azure = || {
        Azure::new(ACCOUNT, CONTAINER, "app")
            .endpoint(&endpoint)
            .access_key(ACCOUNT_KEY)
    };
    let mut trusting = azure()
        .add_root_certificates(&ca)
        .expect("a CA certificate");
    let release = trusting.fetch().expect("poll").expect("the release");
    assert_eq!(release.version.as_deref(), Some("3.1.0"));
    assert_eq!(read_all(release), b"blob over TLS");

    let err = error_text(azure().fetch());
    assert!(
        err.contains("TLS certificate was refused") && err.contains("add_root_certificates"),
        "{err}"
    );
}

/// The fetcher as a store of a fleet's objects under its blob name (the
/// prefix), against Azurite.
#[test]
fn a_container_prefix_is_a_store_of_named_objects() {
    let Some(server) = start_server() else { return };
    let mut store = fetcher(&server, "fleet/stable");
    // Azurite keeps blobs in its own database: nothing to look at on disk.
    support::store_round_trip(
        &mut store,
        &format!("az://{ACCOUNT}/{CONTAINER}/fleet/stable"),
        std::path::Path::new("/nonexistent"),
    );
}
