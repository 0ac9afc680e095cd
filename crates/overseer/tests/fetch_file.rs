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

/// Hostile sidecars are refused without reading them whole or blocking:
/// a link to `/dev/zero`, a FIFO, an oversized file. Each fails the poll
/// with a clear error; the release is offered once the sidecar is fixed.
#[test]
fn hostile_sidecars_are_refused_and_the_release_is_offered_once_fixed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app");
    let sig = dir.path().join("app.minisig");
    std::fs::write(&path, b"release").expect("write");
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let huge = dir.path().join("huge");
    std::fs::write(&huge, vec![b'a'; 1 << 20]).expect("write");
    let cases = [
        (std::path::Path::new("/dev/zero"), "not a regular file"),
        (fifo.as_path(), "not a regular file"),
        (huge.as_path(), "is larger than"),
    ];
    for (target, expected) in cases {
        let _ = std::fs::remove_file(&sig);
        std::os::unix::fs::symlink(target, &sig).expect("symlink");
        // Each case on a thread of its own, so a blocking read fails the
        // test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let mut f = File::new(&p).settle(Duration::from_millis(50));
            let deadline = Instant::now() + Duration::from_secs(5);
            let result = loop {
                match f.fetch() {
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Ok(r) => break Ok(r.is_some()),
                    Err(e) => break Err(e.to_string()),
                }
            };
            let _ = tx.send(result);
        });
        let result = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("reading a sidecar linked to {target:?} blocked"));
        let e = result.expect_err("a hostile sidecar is an error");
        assert!(
            e.contains(expected) && e.contains("app.minisig"),
            "{target:?}: {e}"
        );
    }
    // Fixed: the same release is offered at the next poll.
    let mut f = File::new(&path).settle(Duration::from_millis(50));
    std::fs::remove_file(&sig).expect("rm");
    std::fs::rename(&huge, &sig).expect("rename");
    let deadline = Instant::now() + Duration::from_secs(5);
    let e = loop {
        match f.fetch() {
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(_) => panic!("an oversized sidecar was taken"),
            Err(e) => break e.to_string(),
        }
    };
    assert!(e.contains("is larger than"), "{e}");
    std::fs::write(&sig, "sig text").expect("write");
    let r = next(&mut f).expect("the release, once its sidecar is fixed");
    assert_eq!(r.signature.as_deref(), Some("sig text"));
}
