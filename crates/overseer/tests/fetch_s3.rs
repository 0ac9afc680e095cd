//! The S3 fetcher against a real S3-protocol server on loopback: `s3s-fs`, a
//! filesystem-backed S3 server that checks every request's SigV4 signature
//! when given an access key and a secret key.
//!
//! Install the server once (about 2½ minutes on two cores):
//!
//! ```text
//! cargo install s3s-fs --version 0.14.1 --features binary --locked
//! ```
//!
//! It is looked up in `OVERSEER_S3S_FS` (a path), then `PATH`, then
//! `$CARGO_HOME/bin`. Without it the tests fail and say how to install it,
//! unless `OVERSEER_SKIP_S3=1` is set.
//!
//! Run with `cargo test -p overseer --features fetch-s3 --test fetch_s3`.
#![cfg(unix)]

#[path = "support/s3s.rs"]
mod s3s;
mod support;

use s3s::{start_server, Server, ACCESS_KEY, BUCKET, SECRET_KEY};

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Stdio};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{Attribute, Attributes, ObjectStore, PutOptions, PutPayload};
use overseer::fetcher::{Fetcher, Release, S3};
use sha2::{Digest, Sha256};

const KEY: &str = "myapp/linux-x86_64/myapp";

/// Uploads through the S3 protocol itself (signed with the right key).
struct Uploader {
    runtime: tokio::runtime::Runtime,
    store: AmazonS3,
}

impl Uploader {
    fn new(server: &Server) -> Self {
        let store = AmazonS3Builder::new()
            .with_endpoint(server.url())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(BUCKET)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .expect("uploader");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Uploader { runtime, store }
    }

    /// Puts `bytes` at `key` (with `x-amz-meta-version` when given) and
    /// returns the ETag the server reports.
    fn put(&self, key: &str, bytes: &[u8], version: Option<&str>) -> String {
        let mut attributes = Attributes::new();
        if let Some(v) = version {
            attributes.insert(Attribute::Metadata("version".into()), v.to_string().into());
        }
        let options = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        let payload = PutPayload::from(bytes.to_vec());
        let path = Path::from(key);
        let put = self.store.put_opts(&path, payload, options);
        let result = self.runtime.block_on(put).expect("upload");
        result.e_tag.expect("the server reports an ETag")
    }
}

fn fetcher(server: &Server, key: &str) -> S3 {
    S3::new(BUCKET, key)
        .endpoint(server.url())
        .region("us-east-1")
        .credentials(ACCESS_KEY, SECRET_KEY)
}

/// Reads the body in small, odd-sized pieces, the way a pipeline would.
fn read_all(release: Release) -> Vec<u8> {
    let mut body = release.body;
    let mut out = Vec::new();
    let mut buf = [0u8; 7001];
    for _ in 0..100_000 {
        let n = body.read(&mut buf).expect("reading the body");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
    panic!("body did not end");
}

/// Bytes that are not all alike, so a misplaced chunk would show.
fn content(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn error_text(result: Result<Option<Release>, overseer::fetcher::FetchError>) -> String {
    match result {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => {
            let text = e.to_string();
            eprintln!("expected error: {text}");
            text
        }
    }
}

#[test]
fn fetches_from_a_real_s3_server() {
    let Some(server) = start_server() else { return };
    let up = Uploader::new(&server);
    let mut f = fetcher(&server, KEY);

    // Not published yet: nothing new, no error.
    assert!(f.fetch().expect("missing object").is_none());
    assert!(f.fetch().expect("missing object").is_none());

    // First release: 1.5 MiB, several chunks.
    let v1 = content(1_500_000, 1);
    let etag1 = up.put(KEY, &v1, Some("1.0.0"));
    let r = f.fetch().expect("fetch").expect("a release");
    assert_eq!(r.tag.as_deref(), Some(etag1.as_str()));
    assert_eq!(r.source, format!("s3://{BUCKET}/{KEY}"));
    assert_eq!(r.name.as_deref(), Some("myapp"));
    assert_eq!(r.size, Some(v1.len() as u64));
    assert_eq!(r.version.as_deref(), Some("1.0.0"));
    assert_eq!(r.sha256, None);
    assert_eq!(r.signature, None);
    assert!(read_all(r) == v1, "body differs from the upload");

    // Unchanged: nothing new (s3s-fs ignores If-None-Match, so this is the
    // fetcher's own ETag comparison).
    assert!(f.fetch().expect("unchanged").is_none());
    assert!(f.fetch().expect("unchanged").is_none());

    // A new upload is a new release; its body outlives the fetcher.
    let v2 = content(200_000, 2);
    let etag2 = up.put(KEY, &v2, None);
    assert_ne!(etag1, etag2);
    let r = f.fetch().expect("fetch").expect("the new release");
    assert_eq!(r.tag.as_deref(), Some(etag2.as_str()));
    assert_eq!(r.version, None);
    drop(f);
    assert!(read_all(r) == v2, "body differs from the second upload");

    // A body dropped unread does not disturb the next fetcher.
    let mut f = fetcher(&server, KEY);
    drop(f.fetch().expect("fetch").expect("release"));
    assert!(f.fetch().expect("unchanged").is_none());

    // Sidecars asked for but not there: simply absent.
    let r = fetcher(&server, KEY)
        .sidecars()
        .fetch()
        .expect("fetch")
        .expect("release");
    assert_eq!((r.sha256.as_deref(), r.signature.as_deref()), (None, None));

    // Sidecars present.
    let hex: String = Sha256::digest(&v2)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let minisig = "untrusted comment: signature from minisign secret key\n\
                   RUQf6LRCGA9i559r3g7V1qNyJDApGip8MfqcadIgT9CuhV3EMhHoN1mGTkUidF/z7SrlQgXdy8ofjb7bNJJylDOocrCo8KLzZwo=\n\
                   trusted comment: timestamp:1555779966\tfile:test\n\
                   QtKMXWyYcwdpZAlPF7tE2ENJkRd1ujvKjlj1m9RtHTBnZPa5WKU5uWRs5GoP5M/VqE81QFuMKI5k/SfNQUaOAA==\n";
    up.put(
        &format!("{KEY}.sha256"),
        format!("{hex}  myapp\n").as_bytes(),
        None,
    );
    up.put(&format!("{KEY}.minisig"), minisig.as_bytes(), None);
    let r = fetcher(&server, KEY)
        .sidecars()
        .fetch()
        .expect("fetch")
        .expect("release");
    assert_eq!(r.sha256.as_deref(), Some(hex.as_str()));
    assert_eq!(r.signature.as_deref(), Some(minisig));

    // An explicitly named sidecar must exist.
    let err = error_text(
        fetcher(&server, KEY)
            .checksum_key("myapp/linux-x86_64/SHA256SUMS")
            .fetch(),
    );
    assert!(
        err.contains("SHA256SUMS not found") && err.contains("checksum_key"),
        "{err}"
    );

    // The server checks signatures: a wrong secret key is refused, and the
    // error says what to check.
    let err = error_text(
        S3::new(BUCKET, KEY)
            .endpoint(server.url())
            .credentials(ACCESS_KEY, "not-the-secret")
            .fetch(),
    );
    assert!(
        err.contains("SignatureDoesNotMatch") && err.contains("check the credentials"),
        "{err}"
    );
    let err = error_text(
        S3::new(BUCKET, KEY)
            .endpoint(server.url())
            .credentials("nobody", SECRET_KEY)
            .fetch(),
    );
    assert!(
        err.contains("does not know this access key id") && err.contains("check the credentials"),
        "{err}"
    );
}

#[test]
fn unreachable_endpoint_is_a_clear_error() {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let err = error_text(
        S3::new(BUCKET, KEY)
            .endpoint(format!("http://127.0.0.1:{port}"))
            .credentials(ACCESS_KEY, SECRET_KEY)
            .fetch(),
    );
    assert!(err.contains("cannot reach the store"), "{err}");
}

/// Credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`: set only
/// in a child process (this test binary, running `env_credentials_child`),
/// since tests share the process environment.
#[test]
fn credentials_from_the_environment() {
    let Some(server) = start_server() else { return };
    let up = Uploader::new(&server);
    let body = content(50_000, 3);
    up.put(KEY, &body, None);
    let exe = std::env::current_exe().expect("test binary");
    for (secret, expect) in [(SECRET_KEY, "ok"), ("wrong-secret", "denied")] {
        let mut cmd = Command::new(&exe);
        cmd.args(["env_credentials_child", "--exact", "--nocapture"]);
        cmd.args(["--test-threads", "1"]);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(name);
            }
        }
        let out = cmd
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_REGION", "us-east-1")
            .env("OVERSEER_S3_CHILD_ENDPOINT", server.url())
            .env("OVERSEER_S3_CHILD_EXPECT", expect)
            .env("OVERSEER_S3_CHILD_LEN", body.len().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("running the child test");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains(&format!("CHILD-{expect}")),
            "child ({expect}) failed: {}\n{stdout}\n{stderr}",
            out.status
        );
    }
}

/// The child half of `credentials_from_the_environment`; does nothing in a
/// normal run.
#[test]
fn env_credentials_child() {
    let Ok(endpoint) = std::env::var("OVERSEER_S3_CHILD_ENDPOINT") else {
        return;
    };
    let expect = std::env::var("OVERSEER_S3_CHILD_EXPECT").expect("expectation");
    let mut f = S3::new(BUCKET, KEY).endpoint(endpoint);
    match expect.as_str() {
        "ok" => {
            let len: usize = std::env::var("OVERSEER_S3_CHILD_LEN")
                .expect("length")
                .parse()
                .expect("length");
            let r = f.fetch().expect("fetch").expect("release");
            assert_eq!(read_all(r).len(), len);
        }
        _ => {
            let err = error_text(f.fetch());
            assert!(err.contains("SignatureDoesNotMatch"), "{err}");
        }
    }
    println!("CHILD-{expect}");
}

/// A download that breaks off (server gone mid-body) is an error on read, and
/// the same release is offered again at the next poll, although its ETag did
/// not change.
#[test]
fn broken_download_is_offered_again() {
    let Some(mut server) = start_server() else {
        return;
    };
    let up = Uploader::new(&server);
    // Far more than loopback socket buffers hold, so the break is seen.
    let big = content(48 << 20, 4);
    let etag = up.put(KEY, &big, None);
    drop(up);
    let mut f = fetcher(&server, KEY);
    let r = f.fetch().expect("fetch").expect("release");
    let mut body = r.body;
    let mut buf = vec![0u8; 64 * 1024];
    assert!(body.read(&mut buf).expect("first read") > 0);
    server.kill();
    let mut broke = false;
    for _ in 0..10_000 {
        match body.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) => {
                eprintln!("expected error: {e}");
                broke = true;
                break;
            }
        }
    }
    assert!(
        broke,
        "the body read to its end though the server was killed"
    );
    drop(body);
    server.restart();
    let r = f.fetch().expect("fetch").expect("the same release again");
    assert_eq!(r.tag.as_deref(), Some(etag.as_str()));
    assert!(read_all(r) == big, "body differs from the upload");
    assert!(f.fetch().expect("unchanged").is_none());
}

/// An S3-compatible endpoint over HTTPS whose certificate a private CA
/// signed (a loopback TLS server answering like S3; the protocol itself is
/// tested against s3s-fs above): trusted with `add_root_certificates`,
/// refused without, with the fix in the error.
#[test]
fn a_private_ca_is_trusted_when_added() {
    let port = support::https_server(|_, path| {
        if path.starts_with("/releases/app") {
            let headers = vec![
                ("ETag", "\"v1\"".to_string()),
                ("Last-Modified", "Sun, 22 Nov 2026 05:00:00 GMT".to_string()),
            ];
            return (200, headers, b"binary over TLS".to_vec());
        }
        (
            404,
            Vec::new(),
            b"<Error><Code>NoSuchKey</Code></Error>".to_vec(),
        )
    });
    let endpoint = format!("https://localhost:{port}");
    let ca = std::fs::read(support::tls_file("ca.pem")).expect("the test CA");
    let s3 = || {
        S3::new(BUCKET, "app")
            .endpoint(&endpoint)
            .credentials(ACCESS_KEY, SECRET_KEY)
    };
    let mut trusting = s3().add_root_certificates(&ca).expect("a CA certificate");
    let release = trusting.fetch().expect("poll").expect("the release");
    assert_eq!(read_all(release), b"binary over TLS");

    let err = error_text(s3().fetch());
    assert!(
        err.contains("TLS certificate was refused") && err.contains("add_root_certificates"),
        "{err}"
    );

    let err = s3()
        .add_root_certificates(b"not PEM")
        .expect_err("no certificate")
        .to_string();
    assert!(err.contains("no certificate"), "{err}");
}

/// The fetcher as a store of a fleet's objects under its key (the prefix).
#[test]
fn a_bucket_prefix_is_a_store_of_named_objects() {
    let Some(server) = start_server() else { return };
    let mut store = fetcher(&server, "fleet/stable");
    support::store_round_trip(
        &mut store,
        &format!("s3://{BUCKET}/fleet/stable"),
        &server.data.path().join(BUCKET),
    );
}

/// A store that counts what it is asked, around a real one.
struct Counting {
    inner: S3,
    reads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    bodies: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl overseer::fetcher::Store for Counting {
    fn locate(&self, name: &str) -> String {
        self.inner.locate(name)
    }
    fn read(
        &mut self,
        name: &str,
        limit: u64,
        tag: Option<&str>,
    ) -> Result<overseer::fetcher::Object, overseer::fetcher::FetchError> {
        use std::sync::atomic::Ordering::Relaxed;
        self.reads.fetch_add(1, Relaxed);
        let got = self.inner.read(name, limit, tag)?;
        if matches!(got, overseer::fetcher::Object::Found { .. }) {
            self.bodies.fetch_add(1, Relaxed);
        }
        Ok(got)
    }
    fn open(&mut self, name: &str) -> Result<Box<dyn Read + Send>, overseer::fetcher::FetchError> {
        self.inner.open(name)
    }
    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), overseer::fetcher::FetchError> {
        self.inner.write(name, bytes)
    }
    fn list(&mut self, prefix: &str) -> Result<Vec<String>, overseer::fetcher::FetchError> {
        self.inner.list(prefix)
    }
}

/// An idle fleet: 20 hosts polling an unchanged manifest 100 times each
/// cost the bucket one conditional read per host per poll, with no body
/// after the first; and their polls are spread, never in lockstep (each
/// interval is drawn anew around the one set).
#[test]
fn an_idle_fleet_costs_one_conditional_read_per_host_per_poll_and_never_polls_in_lockstep() {
    use overseer::fetcher::{Context, Fleet, Poll, Store};
    use overseer::fleet::{Manifest, Wave, FORMAT};
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;
    let Some(server) = start_server() else { return };
    let keys = minisign::KeyPair::generate_unencrypted_keypair().expect("keys");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // One release, not yet rolling out: every poll only reads the manifest.
    let manifest = Manifest {
        format: FORMAT,
        channel: "stable".into(),
        serial: 1,
        expires: now + 3600,
        releases: vec![overseer::fleet::Release {
            version: "2.0.0".into(),
            artifacts: [(
                overseer::fetcher::Context::new("/x").target.to_string(),
                overseer::fleet::Artifact {
                    path: "2.0.0/app".into(),
                    size: 10,
                    sha256: "0".repeat(64),
                    patches: Vec::new(),
                },
            )]
            .into(),
            rollout: vec![Wave {
                start: now + 3600,
                fraction: 1.0,
            }],
            yanked: false,
            critical: false,
            halted: None,
        }],
    };
    let bytes = manifest.to_bytes();
    let sig = minisign::sign(Some(&keys.pk), &keys.sk, &bytes[..], None, None).expect("sign");
    let mut publisher = fetcher(&server, "fleet");
    publisher
        .write("manifest.json.minisig", sig.to_string().as_bytes())
        .expect("signature");
    publisher.write("manifest.json", &bytes).expect("manifest");

    const HOSTS: usize = 20;
    const POLLS: usize = 100;
    let every = std::time::Duration::from_secs(60);
    let reads = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(AtomicUsize::new(0));
    let mut times: Vec<Vec<f64>> = Vec::new();
    for h in 0..HOSTS {
        let store = Counting {
            inner: fetcher(&server, "fleet"),
            reads: reads.clone(),
            bodies: bodies.clone(),
        };
        let mut fleet = Fleet::over(store)
            .host_id(format!("host-{h}"))
            .interval(every);
        let mut context = Context::new("/srv/app/bin");
        context.public_keys = vec![keys.pk.to_base64()];
        fleet.init(&context).expect("init");
        let mut at = 0.0;
        let mut polls = Vec::new();
        for _ in 0..POLLS {
            let wait = Fetcher::interval(&fleet);
            assert!(
                wait >= every.mul_f64(0.75) && wait <= every.mul_f64(1.25),
                "{wait:?}"
            );
            at += wait.as_secs_f64();
            polls.push(at);
            let mut poll = Poll::default();
            poll.installed = Some("1.0.0".into());
            assert!(fleet.poll(&mut poll).expect("poll").is_none());
            assert!(poll
                .rollout
                .as_deref()
                .is_some_and(|r| r.contains("2.0.0 waits")));
        }
        times.push(polls);
    }
    // One read a poll; bodies only on each host's first (manifest and signature).
    assert_eq!(reads.load(Relaxed), HOSTS * POLLS + HOSTS);
    assert_eq!(bodies.load(Relaxed), 2 * HOSTS);
    // No two hosts poll within a second of each other at most of their polls.
    for a in 0..HOSTS {
        for b in a + 1..HOSTS {
            let close = times[a]
                .iter()
                .zip(&times[b])
                .filter(|(x, y)| (*x - *y).abs() < 1.0)
                .count();
            assert!(
                close < POLLS / 4,
                "hosts {a} and {b}: {close} of {POLLS} polls together"
            );
        }
    }
    // The intervals average the one set.
    let mean = times
        .iter()
        .map(|t| t[POLLS - 1] / POLLS as f64)
        .sum::<f64>()
        / HOSTS as f64;
    assert!((mean - 60.0).abs() < 3.0, "mean interval {mean} s");
}
