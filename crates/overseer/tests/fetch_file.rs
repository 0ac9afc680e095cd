//! The File fetcher against a real file: nothing before it exists, a change
//! taken only once it has settled, sidecars read, unchanged → nothing new.

use std::io::Read;
use std::time::{Duration, Instant};

use overseer::fetcher::{Fetcher, File};

/// Polls until a release comes (bounded).
fn next(f: &mut File) -> Option<overseer::fetcher::Release> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(r) = f.fetch().expect("fetch") {
            return Some(r);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn takes_a_settled_file_with_its_sidecars_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app");
    let mut f = File::new(&path).settle(Duration::from_millis(100));
    assert!(f.fetch().expect("fetch").is_none(), "nothing published yet");

    std::fs::write(dir.path().join("app.minisig"), "sig text").expect("write");
    std::fs::write(
        dir.path().join("app.sha256"),
        format!("{}  app\n", "ab".repeat(32)),
    )
    .expect("write");
    std::fs::write(&path, b"release one").expect("write");
    // The first sighting only starts the settle timer.
    assert!(f.fetch().expect("fetch").is_none());
    let mut r = next(&mut f).expect("a release");
    let mut body = Vec::new();
    r.body.read_to_end(&mut body).expect("read");
    assert_eq!(body, b"release one");
    assert_eq!(r.size, Some(11));
    assert_eq!(r.name.as_deref(), Some("app"));
    assert_eq!(r.signature.as_deref(), Some("sig text"));
    assert_eq!(r.sha256, Some("ab".repeat(32)));
    assert!(r.tag.is_some());

    std::thread::sleep(Duration::from_millis(150));
    assert!(
        f.fetch().expect("fetch").is_none(),
        "unchanged: nothing new"
    );

    std::fs::write(&path, b"release two, longer").expect("write");
    let mut r = next(&mut f).expect("the changed release");
    let mut body = Vec::new();
    r.body.read_to_end(&mut body).expect("read");
    assert_eq!(body, b"release two, longer");
}

#[test]
fn a_directory_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = File::new(dir.path());
    let e = f.fetch().expect_err("a directory");
    assert!(e.to_string().contains("not a regular file"), "{e}");
}
