//! The Google Cloud Storage fetcher against a server on loopback speaking
//! the part of GCS's XML API a download uses (`support/gcs.rs`), which
//! verifies every request's token: a JWT that a service account key,
//! generated here, signed.
//!
//! Run with `cargo test -p overseer --features fetch-gcs --test fetch_gcs`.
#![cfg(unix)]

#[path = "support/gcs.rs"]
mod gcs;
mod support;

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};

use gcs::{GcsServer, ServiceAccount};
use overseer::fetcher::{Context, Fetcher, Gcs, Release};

const BUCKET: &str = "acme-releases";
const OBJECT: &str = "myapp/linux-x86_64/myapp";

fn start() -> (GcsServer, String) {
    let account = ServiceAccount::generate("releases-reader");
    let key = account.key_json.clone();
    (GcsServer::start(BUCKET, account), key)
}

fn fetcher(server: &GcsServer, key: &str, object: &str) -> Gcs {
    Gcs::new(BUCKET, object)
        .endpoint(server.endpoint())
        .service_account_key(key)
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
fn fetches_with_a_service_account_key() {
    let (server, key) = start();
    let mut f = fetcher(&server, &key, OBJECT).sidecars();

    // Nothing published yet: nothing new, not an error.
    assert!(f.fetch().expect("an empty bucket is fine").is_none());

    // A release with its checksum and signature beside it (uploaded first).
    let v1: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    server.put(&format!("{OBJECT}.sha256"), b"abc123  myapp\n", None);
    server.put(
        &format!("{OBJECT}.minisig"),
        b"untrusted comment: sig\nRWQ=\n",
        None,
    );
    server.put(OBJECT, &v1, Some("1.0.0"));
    let release = f.fetch().expect("poll").expect("the release");
    assert_eq!(release.version.as_deref(), Some("1.0.0"));
    assert_eq!(release.sha256.as_deref(), Some("abc123"));
    assert_eq!(
        release.signature.as_deref(),
        Some("untrusted comment: sig\nRWQ=\n")
    );
    assert_eq!(release.size, Some(v1.len() as u64));
    assert_eq!(release.name.as_deref(), Some("myapp"));
    assert_eq!(release.source, format!("gs://{BUCKET}/{OBJECT}"));
    let tag = release.tag.clone().expect("a tag");
    assert_eq!(read_all(release), v1, "the body streams through whole");

    // Unchanged: nothing new, poll after poll, each a conditional GET
    // answered 304 without a body.
    let before = server.hits().len();
    for _ in 0..3 {
        assert!(f.fetch().expect("poll").is_none());
    }
    let polls: Vec<_> = server.hits().into_iter().skip(before).collect();
    assert_eq!(polls.len(), 3, "{polls:?}");
    for hit in &polls {
        assert_eq!(hit.object, OBJECT);
        assert_eq!(hit.status, 304, "{hit:?}");
        assert_eq!(hit.if_none_match.as_deref(), Some(tag.as_str()));
    }

    // A new upload is a new release.
    server.put(OBJECT, b"version two", Some("2.0.0"));
    let release = f.fetch().expect("poll").expect("the new release");
    assert_eq!(release.version.as_deref(), Some("2.0.0"));
    assert_eq!(read_all(release), b"version two");
    assert!(f.fetch().expect("poll").is_none());

    // Every request carried a token the server verified.
    assert!(server.hits().iter().all(|h| h.status != 401));
}

#[test]
fn an_installed_tag_makes_the_first_poll_conditional() {
    let (server, key) = start();
    server.put(OBJECT, b"installed", None);
    let mut first = fetcher(&server, &key, OBJECT);
    let tag = first
        .fetch()
        .expect("poll")
        .and_then(|r| r.tag)
        .expect("a tag");

    // A master restarted over the installed release: nothing to download.
    let bin = std::env::temp_dir().join("app");
    let mut again = fetcher(&server, &key, OBJECT);
    again
        .init(&Context::new(bin.clone()).installed_tag(tag.clone()))
        .expect("init");
    assert!(again.fetch().expect("poll").is_none());
    let last = server.hits().pop().expect("a request");
    assert_eq!((last.status, last.if_none_match), (304, Some(tag)));

    // Without the tag, the same object is a release.
    let mut fresh = fetcher(&server, &key, OBJECT);
    fresh.init(&Context::new(bin)).expect("init");
    assert!(fresh.fetch().expect("poll").is_some());
}

#[test]
fn mistakes_are_clear_errors() {
    let (server, key) = start();
    server.put(OBJECT, b"app", None);

    let mut wrong_bucket = Gcs::new("no-such-bucket", OBJECT)
        .endpoint(server.endpoint())
        .service_account_key(&key);
    let err = error_text(wrong_bucket.fetch());
    assert!(err.contains("no such bucket"), "{err}");

    // A well-formed key with the account's name and key id but another
    // private key (a revoked key, say): its tokens' signatures are refused.
    let stranger = ServiceAccount::generate("releases-reader");
    let mut wrong_key = fetcher(&server, &stranger.key_json, OBJECT);
    let err = error_text(wrong_key.fetch());
    assert!(
        err.contains(&format!("gs://{BUCKET}/{OBJECT}"))
            && err.contains("credentials were refused"),
        "{err}"
    );

    // An explicit checksum object that is missing names the object and the fix.
    let mut missing = fetcher(&server, &key, OBJECT).checksum_key("myapp.sha256");
    let err = error_text(missing.fetch());
    assert!(
        err.contains("myapp.sha256 not found") && err.contains("checksum_key"),
        "{err}"
    );

    // A key file that is not one: refused when the fetcher starts.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key.json");
    std::fs::write(&path, "{\"client_email\": \"a@b\"}").expect("write");
    let mut broken = Gcs::new(BUCKET, OBJECT)
        .endpoint(server.endpoint())
        .service_account_path(path.to_string_lossy());
    let err = broken
        .init(&Context::new(dir.path().join("app")))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("JSON key file"), "{err}");

    // Nothing listens there: a clear error, not a hang.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut unreachable = Gcs::new(BUCKET, OBJECT)
        .endpoint(format!("http://127.0.0.1:{port}"))
        .service_account_key(&key);
    let err = error_text(unreachable.fetch());
    assert!(err.contains("cannot reach the store"), "{err}");

    // No request reached the server without a valid token but the stranger's.
    let refused = server.hits().iter().filter(|h| h.status == 401).count();
    assert!(refused >= 1);
}

/// The fetcher as a store of a fleet's objects under its object name (the
/// prefix): what `overseer publish gs://…` and the hosts' reports use.
#[test]
fn a_bucket_prefix_is_a_store_of_named_objects() {
    let (server, key) = start();
    let mut store = fetcher(&server, &key, "fleet/stable");
    // The server keeps its objects in memory: nothing to look at on disk.
    support::store_round_trip(
        &mut store,
        &format!("gs://{BUCKET}/fleet/stable"),
        std::path::Path::new("/nonexistent"),
    );
}
