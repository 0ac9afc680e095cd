//! The HTTP fetcher against real HTTP servers on loopback.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use overseer::fetcher::{Context, Fetcher, Http, Release};
use support::*;

fn body(release: Release) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut body = release.body;
    body.read_to_end(&mut bytes).expect("read the body");
    bytes
}

fn poll(fetcher: &mut Http) -> Option<Release> {
    fetcher.fetch().expect("poll succeeds")
}

#[test]
fn etag_round_trip_downloads_once() {
    let server = Server::start(|parts| {
        if header(parts, "if-none-match") == Some("\"v1\"") {
            return reply(304, &[("etag", "\"v1\"")], "");
        }
        reply(200, &[("etag", "\"v1\"")], "binary v1")
    });
    let mut fetcher = Http::new(server.url("/dl/app"));
    let release = poll(&mut fetcher).expect("the first poll finds the release");
    assert_eq!(release.tag.as_deref(), Some("\"v1\""));
    assert_eq!(release.name.as_deref(), Some("app"));
    assert_eq!(release.size, Some(9));
    assert_eq!(release.source, server.url("/dl/app"));
    assert_eq!(release.sha256, None);
    assert_eq!(body(release), b"binary v1");
    for _ in 0..3 {
        assert!(poll(&mut fetcher).is_none(), "unchanged: nothing new");
    }
    let hits = server.hits();
    let statuses: Vec<u16> = hits.iter().map(|h| h.status.as_u16()).collect();
    assert_eq!(statuses, [200, 304, 304, 304]);
    assert_eq!(hits[0].header("if-none-match"), None);
    assert!(hits[0]
        .header("user-agent")
        .is_some_and(|ua| ua.starts_with("overseer/")));
}

#[test]
fn an_installed_tag_makes_the_first_poll_conditional() {
    let server = Server::start(|parts| match header(parts, "if-none-match") {
        Some("\"v1\"") => reply(304, &[("etag", "\"v1\"")], ""),
        _ => reply(200, &[("etag", "\"v1\"")], "binary v1"),
    });
    // A context as the master builds it once a release with this ETag is
    // installed: the first poll asks whether it changed, and it has not.
    let context = Context::new("/srv/app")
        .version("1.0.0")
        .installed_tag("\"v1\"");
    assert_eq!(context.bin_path, std::path::Path::new("/srv/app"));
    assert_eq!(context.version.as_deref(), Some("1.0.0"));
    let mut fetcher = Http::new(server.url("/app"));
    fetcher.init(&context).expect("init");
    assert!(
        poll(&mut fetcher).is_none(),
        "the installed release is not new"
    );
    // Without the tag, the same fetcher downloads the release.
    let mut fresh = Http::new(server.url("/app"));
    fresh.init(&Context::new("/srv/app")).expect("init");
    assert_eq!(body(poll(&mut fresh).expect("a release")), b"binary v1");
    let hits = server.hits();
    let statuses: Vec<u16> = hits.iter().map(|h| h.status.as_u16()).collect();
    assert_eq!(statuses, [304, 200]);
    assert_eq!(hits[0].header("if-none-match"), Some("\"v1\""));
    assert_eq!(hits[1].header("if-none-match"), None);
}

#[test]
fn last_modified_round_trip_and_change() {
    let version = Arc::new(Mutex::new(1));
    let v = version.clone();
    let server = Server::start(move |parts| {
        let v = *lock(&v);
        let date = format!("Mon, 0{v} Jan 2024 00:00:00 GMT");
        if header(parts, "if-modified-since") == Some(date.as_str()) {
            return reply(304, &[], "");
        }
        reply(200, &[("last-modified", &date)], format!("binary v{v}"))
    });
    let mut fetcher = Http::new(server.url("/app"));
    let first = poll(&mut fetcher).expect("first release");
    assert_eq!(first.tag.as_deref(), Some("Mon, 01 Jan 2024 00:00:00 GMT"));
    assert_eq!(body(first), b"binary v1");
    assert!(poll(&mut fetcher).is_none());
    *lock(&version) = 2;
    let second = poll(&mut fetcher).expect("the changed release");
    assert_eq!(body(second), b"binary v2");
    assert!(poll(&mut fetcher).is_none());
    let statuses: Vec<u16> = server.hits().iter().map(|h| h.status.as_u16()).collect();
    assert_eq!(statuses, [200, 304, 200, 304]);
}

#[test]
fn a_server_ignoring_conditional_requests() {
    // With an ETag: the repeated 200 is recognised, its body left unread.
    let server = Server::start(|_| reply(200, &[("etag", "\"same\"")], "binary"));
    let mut fetcher = Http::new(server.url("/app"));
    assert!(poll(&mut fetcher).is_some());
    assert!(poll(&mut fetcher).is_none());
    assert_eq!(
        server.hits()[1].header("if-none-match"),
        Some("\"same\""),
        "the request was conditional"
    );
    // Without validators there is no way to tell: every poll is a release.
    let server = Server::start(|_| reply(200, &[], "binary"));
    let mut fetcher = Http::new(server.url("/app"));
    for _ in 0..2 {
        let release = poll(&mut fetcher).expect("returned again");
        assert_eq!(release.tag, None);
        assert_eq!(body(release), b"binary");
    }
}

#[test]
fn custom_headers_arrive() {
    let server = Server::start(|_| reply(200, &[], "x"));
    let mut fetcher = Http::new(server.url("/app"))
        .header("Authorization", "Bearer t0ken")
        .header("X-Api-Key", "k3y");
    assert!(poll(&mut fetcher).is_some());
    let hit = &server.hits()[0];
    assert_eq!(hit.header("authorization"), Some("Bearer t0ken"));
    assert_eq!(hit.header("x-api-key"), Some("k3y"));
    let debug = format!("{fetcher:?}");
    assert!(
        !debug.contains("t0ken") && !debug.contains("k3y"),
        "{debug}"
    );
}

#[test]
fn redirects_are_followed_with_headers_on_the_same_origin() {
    let server = Server::start(|parts| match parts.uri.path() {
        "/latest" => reply(302, &[("location", "/files/app-2.0.gz")], ""),
        "/files/app-2.0.gz" if header(parts, "if-none-match") == Some("\"2\"") => {
            reply(304, &[], "")
        }
        "/files/app-2.0.gz" => reply(200, &[("etag", "\"2\"")], "gz bytes"),
        _ => reply(404, &[], ""),
    });
    let mut fetcher = Http::new(server.url("/latest")).header("X-Api-Key", "k3y");
    let release = poll(&mut fetcher).expect("release");
    assert_eq!(
        release.name.as_deref(),
        Some("app-2.0.gz"),
        "the final URL names it"
    );
    assert_eq!(release.source, server.url("/latest"));
    assert_eq!(body(release), b"gz bytes");
    let hits = server.hits();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[1].path, "/files/app-2.0.gz");
    assert_eq!(hits[1].header("x-api-key"), Some("k3y"));
    // The ETag of the final response makes the next poll conditional.
    assert!(poll(&mut fetcher).is_none());
    let hits = server.hits();
    assert_eq!(hits.len(), 4);
    assert_eq!(hits[3].header("if-none-match"), Some("\"2\""));
    assert_eq!(hits[3].status, StatusCode::NOT_MODIFIED);
}

#[test]
fn credentials_do_not_follow_a_redirect_to_another_host() {
    let storage = Server::start(|_| {
        reply(
            200,
            &[(
                "content-disposition",
                "attachment; filename=\"app-linux.tar.gz\"",
            )],
            "stored",
        )
    });
    // The same port number under another host name is another origin.
    let target = format!("http://localhost:{}/blob?sig=abc", storage.addr.port());
    let api = Server::start(move |_| reply(302, &[("location", target.as_str())], ""));
    let mut fetcher = Http::new(api.url("/download"))
        .header("Authorization", "Bearer t0ken")
        .header("X-Api-Key", "k3y");
    let release = poll(&mut fetcher).expect("release");
    assert_eq!(release.name.as_deref(), Some("app-linux.tar.gz"));
    assert_eq!(body(release), b"stored");
    let first = &api.hits()[0];
    assert_eq!(first.header("authorization"), Some("Bearer t0ken"));
    let stored = storage.hits();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].path, "/blob?sig=abc");
    assert_eq!(stored[0].header("authorization"), None);
    assert_eq!(stored[0].header("x-api-key"), None);
}

#[test]
fn error_statuses_name_the_status_and_url() {
    let server = Server::start(|parts| match parts.uri.path() {
        "/missing" => reply(404, &[], "no"),
        "/private" => reply(401, &[], "no"),
        _ => reply(503, &[], "busy"),
    });
    for (path, status, hint) in [
        ("/missing", "404", "check the URL"),
        ("/private", "401", "credentials"),
        ("/down", "503", "tries again"),
    ] {
        let url = server.url(path);
        let err = Http::new(&url).fetch().expect_err("an error status");
        let msg = err.to_string();
        assert!(
            msg.contains(status) && msg.contains(&url) && msg.contains(hint),
            "{msg}"
        );
    }
}

#[test]
fn a_closed_port_fails_fast() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let start = Instant::now();
    let mut fetcher = Http::new(format!("http://127.0.0.1:{port}/app"))
        .connect_timeout(Duration::from_millis(500));
    let err = fetcher.fetch().expect_err("nothing listens");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn connect_timeout_bounds_an_unanswered_connect() {
    // A listener with a full accept queue leaves further SYNs unanswered.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    socket.listen(0).expect("listen");
    let addr = socket
        .local_addr()
        .expect("address")
        .as_socket()
        .expect("inet");
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => fillers.push(s),
            Err(_) => break, // the queue is full
        }
    }
    let start = Instant::now();
    let mut fetcher =
        Http::new(format!("http://{addr}/app")).connect_timeout(Duration::from_millis(300));
    let result = fetcher.fetch();
    let elapsed = start.elapsed();
    let err = result.expect_err("no response can come");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    if cfg!(target_os = "linux") {
        // Linux drops SYNs to a full queue: a genuine connect timeout.
        assert!(err.to_string().contains("timeout"), "{err}");
    }
}

#[test]
fn timeout_covers_a_trickling_body() {
    // A raw server announcing 1000 bytes and sending one every 100 ms.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        for _ in 0..100 {
            if stream.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // 2 s: the headers come at once, even on a loaded machine; the whole
    // body would take 100 s, and the server gives up after 10 s.
    let start = Instant::now();
    let mut fetcher = Http::new(format!("http://{addr}/app")).timeout(Duration::from_secs(2));
    let release = poll(&mut fetcher).expect("the headers arrive in time");
    let mut bytes = Vec::new();
    let mut body = release.body;
    let result = body.read_to_end(&mut bytes);
    assert!(result.is_err(), "the body outlives the timeout");
    // Ended by the timeout, not by the server closing at 10 s.
    assert!(start.elapsed() < Duration::from_secs(8));
    assert!(bytes.len() < 1000);
}

#[test]
fn sidecars_present_and_absent() {
    let sum = "ab".repeat(32);
    let sum_file = format!("{sum}  app.gz\n");
    let server = Server::start(move |parts| match parts.uri.path() {
        "/with/app.gz" | "/without/app.gz" => reply(200, &[("etag", "\"1\"")], "bytes"),
        "/with/app.gz.sha256" => reply(200, &[], sum_file.clone()),
        "/with/app.gz.minisig" => reply(200, &[], "untrusted comment: sig\nRWQ=\n"),
        _ => reply(404, &[], ""),
    });
    let mut with = Http::new(server.url("/with/app.gz")).sidecars();
    let release = poll(&mut with).expect("release");
    assert_eq!(release.sha256.as_deref(), Some(sum.as_str()));
    assert_eq!(
        release.signature.as_deref(),
        Some("untrusted comment: sig\nRWQ=\n")
    );
    let mut without = Http::new(server.url("/without/app.gz")).sidecars();
    let release = poll(&mut without).expect("release without sidecars");
    assert_eq!(release.sha256, None);
    assert_eq!(release.signature, None);
}

#[test]
fn a_missing_explicit_sidecar_is_an_error_and_nothing_is_remembered() {
    let published = Arc::new(Mutex::new(false));
    let p = published.clone();
    let sum = "cd".repeat(32);
    let sum_file = sum.clone();
    let server = Server::start(move |parts| match parts.uri.path() {
        "/app" if header(parts, "if-none-match") == Some("\"1\"") => reply(304, &[], ""),
        "/app" => reply(200, &[("etag", "\"1\"")], "bytes"),
        "/sums" if *lock(&p) => reply(200, &[], sum_file.clone()),
        _ => reply(404, &[], ""),
    });
    let mut fetcher = Http::new(server.url("/app")).checksum_url(server.url("/sums"));
    let err = fetcher.fetch().expect_err("the checksum is missing");
    let msg = err.to_string();
    assert!(
        msg.contains("404") && msg.contains("/sums") && msg.contains("checksum_url"),
        "{msg}"
    );
    *lock(&published) = true;
    let release = poll(&mut fetcher).expect("the failed poll remembered no ETag");
    assert_eq!(release.sha256.as_deref(), Some(sum.as_str()));
    assert!(poll(&mut fetcher).is_none());
}

#[test]
fn large_heads_and_bodies_pass_through() {
    let long = "v".repeat(40 * 1024);
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (served, sent) = (payload.clone(), long.clone());
    let server = Server::start(move |_| reply(200, &[("x-long", sent.as_str())], served.clone()));
    let token = "t".repeat(12 * 1024);
    let mut fetcher = Http::new(server.url("/app")).header("X-Token", &token);
    let release = poll(&mut fetcher).expect("the release");
    assert_eq!(body(release), payload);
    assert_eq!(server.hits()[0].header("x-token"), Some(token.as_str()));
}

#[test]
fn oversized_heads_are_clear_errors() {
    let server = Server::start(move |_| reply(200, &[], "x"));
    let mut fetcher = Http::new(server.url("/app")).header("X-Token", "t".repeat(20 * 1024));
    let err = fetcher
        .fetch()
        .expect_err("a 20 KiB request head")
        .to_string();
    assert!(
        err.contains("/app") && err.contains("headers exceed 16 KiB"),
        "{err}"
    );
    assert!(server.hits().is_empty(), "nothing was sent");

    let long = "v".repeat(70 * 1024);
    let server = Server::start(move |_| reply(200, &[("x-long", long.as_str())], "x"));
    let mut fetcher = Http::new(server.url("/app"));
    let err = fetcher
        .fetch()
        .expect_err("a 70 KiB response head")
        .to_string();
    assert!(
        err.contains("/app") && err.contains("headers exceed 48 KiB"),
        "{err}"
    );
}

#[test]
fn https_with_a_private_ca_is_trusted_only_when_given() {
    let port = https_server(|_, _| {
        (
            200,
            vec![("ETag", "\"tls\"".into())],
            b"binary over TLS".to_vec(),
        )
    });
    let ca = std::fs::read(tls_file("ca.pem")).expect("the test CA");
    for host in ["127.0.0.1", "localhost"] {
        let url = format!("https://{host}:{port}/app");
        let mut fetcher = Http::new(&url)
            .root_certificates(&ca)
            .expect("a CA certificate");
        let release = poll(&mut fetcher).expect("the release");
        assert_eq!(body(release), b"binary over TLS", "{url}");
        assert!(poll(&mut fetcher).is_none(), "{url}: unchanged, same ETag");
    }
    // The bundled roots do not know the private CA.
    let url = format!("https://127.0.0.1:{port}/app");
    let err = Http::new(&url)
        .fetch()
        .expect_err("an untrusted certificate")
        .to_string();
    assert!(
        err.contains("127.0.0.1") && err.contains("UnknownIssuer") && err.contains("--ca-file"),
        "{err}"
    );
}

#[test]
fn root_certificates_must_be_pem_certificates() {
    let key = std::fs::read(tls_file("server.key")).expect("the test key");
    let broken = b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n";
    let cases: [(&[u8], &str); 3] = [
        (b"not PEM at all", "no certificate"),
        (&key, "no certificate"),
        (broken, "not a valid PEM file"),
    ];
    for (pem, needle) in cases {
        let err = Http::new("https://127.0.0.1/app")
            .root_certificates(pem)
            .expect_err("not CA certificates")
            .to_string();
        assert!(
            err.starts_with("CA certificates: ") && err.contains(needle),
            "{err}"
        );
    }
}

/// A URL to `server` through `0.0.0.0`: not a loopback address by the rule
/// (`127.0.0.0/8`, `[::1]`, `localhost`), yet Linux delivers a connection to
/// it locally. So a refusal can be checked against a real server that counts
/// requests, and consent can be shown working, without a packet leaving the
/// machine.
fn not_loopback(server: &Server, path: &str) -> String {
    format!("http://0.0.0.0:{}{path}", server.addr.port())
}

#[test]
fn plain_http_to_a_host_that_is_not_loopback_is_refused_before_connecting() {
    let server = Server::start(|_| reply(200, &[("etag", "\"1\"")], "release"));
    let url = not_loopback(&server, "/app");
    let mut fetcher = Http::new(&url).sidecars();
    let err = fetcher
        .init(&Context::new("/srv/app"))
        .expect_err("refused at start");
    let msg = err.to_string();
    assert!(
        msg.contains("plain http") && msg.contains(&url) && msg.contains("allow_http"),
        "{msg}"
    );
    let err = fetcher.fetch().expect_err("refused at every poll");
    assert!(err.to_string().contains("allow_http"), "{err}");
    assert!(server.hits().is_empty(), "a request was sent");
    // TEST-NET-1 (RFC 5737) and a reserved name: refused by `init`, which
    // never connects, so nothing here can leave the machine.
    for url in [
        "http://192.0.2.1/app",
        "http://releases.example.invalid/app",
    ] {
        let err = Http::new(url)
            .init(&Context::new("/srv/app"))
            .expect_err("refused");
        assert!(err.to_string().contains("allow_http"), "{url}: {err}");
    }
    // A sidecar URL on such a host is refused too, the release's own being fine.
    let err = Http::new(server.url("/app"))
        .checksum_url(not_loopback(&server, "/app.sha256"))
        .init(&Context::new("/srv/app"))
        .expect_err("refused");
    assert!(err.to_string().contains("app.sha256"), "{err}");
    assert!(server.hits().is_empty(), "a request was sent");
}

#[test]
fn a_redirect_to_plain_http_on_a_host_that_is_not_loopback_is_refused() {
    let storage = Server::start(|_| reply(200, &[], "stored"));
    let target = not_loopback(&storage, "/blob");
    let api = Server::start(move |_| reply(302, &[("location", target.as_str())], ""));
    let err = Http::new(api.url("/download"))
        .fetch()
        .expect_err("the redirect is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("redirected") && msg.contains("0.0.0.0") && msg.contains("allow_http"),
        "{msg}"
    );
    assert_eq!(api.hits().len(), 1);
    assert!(storage.hits().is_empty(), "the redirect was followed");
}

#[test]
fn plain_http_to_a_host_that_is_not_loopback_is_taken_with_consent() {
    let storage = Server::start(|_| reply(200, &[("etag", "\"1\"")], "stored"));
    let target = not_loopback(&storage, "/blob");
    let api = Server::start(move |_| reply(302, &[("location", target.as_str())], ""));
    let mut fetcher = Http::new(api.url("/download")).allow_http(true);
    fetcher.init(&Context::new("/srv/app")).expect("consent");
    assert_eq!(body(poll(&mut fetcher).expect("release")), b"stored");
    let mut direct = Http::new(not_loopback(&storage, "/blob")).allow_http(true);
    direct.init(&Context::new("/srv/app")).expect("consent");
    assert_eq!(body(poll(&mut direct).expect("release")), b"stored");
    assert_eq!(storage.hits().len(), 2);

    // A redirect from https down to plain http stays refused, consent or not.
    let to_http = not_loopback(&storage, "/blob");
    let port = https_server(move |_, _| (302, vec![("Location", to_http.clone())], Vec::new()));
    let ca = std::fs::read(tls_file("ca.pem")).expect("the test CA");
    let err = Http::new(format!("https://127.0.0.1:{port}/app"))
        .root_certificates(&ca)
        .expect("a CA certificate")
        .allow_http(true)
        .fetch()
        .expect_err("refused")
        .to_string();
    assert!(err.contains("from https to plain http"), "{err}");
    assert_eq!(storage.hits().len(), 2, "the redirect was followed");
}
