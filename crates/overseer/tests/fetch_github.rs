//! The GitHub fetcher against a real HTTP server shaped like GitHub's API
//! (and a second one, on another host name, standing for its storage host).

mod support;

use std::io::Read;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use overseer::fetcher::{Context, Fetcher, GitHub, Release};
use serde_json::json;
use support::*;

#[derive(Debug, Clone)]
struct Asset {
    id: u64,
    name: String,
    bytes: Vec<u8>,
    digest: Option<String>,
    updated_at: String,
}

/// A repository's release as the fake API serves it.
#[derive(Debug, Default)]
struct Repo {
    tag: String,
    etag: String,
    assets: Vec<Asset>,
    /// Changes the JSON (and so the ETag) without changing any asset, as
    /// GitHub's download counters do.
    downloads: u64,
    /// `localhost:PORT` of the storage server downloads redirect to.
    storage: String,
}

impl Repo {
    fn asset(&self, id: u64) -> Option<&Asset> {
        self.assets.iter().find(|a| a.id == id)
    }

    fn release_json(&self, host: &str, prerelease: bool) -> serde_json::Value {
        let assets: Vec<_> = self
            .assets
            .iter()
            .map(|a| {
                json!({
                    "id": a.id,
                    "name": a.name,
                    "url": format!("http://{host}/repos/acme/app/releases/assets/{}", a.id),
                    "browser_download_url": format!("http://{host}/download/{}/{}", self.tag, a.name),
                    "size": a.bytes.len(),
                    "digest": a.digest,
                    "updated_at": a.updated_at,
                    "state": "uploaded",
                    "download_count": self.downloads,
                })
            })
            .collect();
        json!({
            "tag_name": self.tag,
            "name": format!("Release {}", self.tag),
            "draft": false,
            "prerelease": prerelease,
            "assets": assets,
        })
    }
}

/// The asset name for this machine in the common `OS-ARCH` style.
fn ours() -> String {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        os => os,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        arch => arch,
    };
    format!("app-{os}-{arch}.tar.gz")
}

/// A release with builds for several platforms, this one's in the middle,
/// and checksum and signature files beside it.
fn assets(tag: &str, first_id: u64) -> Vec<Asset> {
    let ours = ours();
    let mut names: Vec<String> = ["linux", "darwin", "windows"]
        .iter()
        .flat_map(|os| ["amd64", "arm64"].map(|arch| format!("app-{os}-{arch}.tar.gz")))
        .filter(|n| *n != ours)
        .collect();
    names.insert(2, ours.clone());
    names.push(format!("{ours}.sha256"));
    names.push(format!("{ours}.minisig"));
    names.push("checksums.txt".into());
    names
        .into_iter()
        .zip(first_id..)
        .map(|(name, id)| Asset {
            id,
            bytes: if name.ends_with(".minisig") {
                format!("untrusted comment: signature of {tag}\nRWQ=\n").into_bytes()
            } else {
                format!("{name} {tag}").into_bytes()
            },
            digest: Some(format!("sha256:{id:064x}")),
            updated_at: format!("2025-01-01T00:00:{:02}Z", id % 60),
            name,
        })
        .collect()
}

/// The fake API and storage servers for `acme/app`, plus a few broken
/// repositories.
fn github(repo: Repo) -> (Server, Server, Arc<Mutex<Repo>>) {
    let repo = Arc::new(Mutex::new(repo));
    let r = repo.clone();
    let storage = Server::start(move |parts| {
        let id = parts.uri.path().trim_start_matches("/blob/").parse();
        match id.ok().and_then(|id| lock(&r).asset(id).cloned()) {
            Some(asset) => reply(200, &[], asset.bytes),
            None => reply(404, &[], "no such blob"),
        }
    });
    lock(&repo).storage = format!("localhost:{}", storage.addr.port());
    let r = repo.clone();
    let api = Server::start(move |parts| {
        let repo = lock(&r);
        let host = header(parts, "host").unwrap_or_default().to_string();
        let path = parts.uri.path();
        let to_storage = |id: u64| format!("http://{}/blob/{id}?signed=1", repo.storage);
        if path == "/repos/acme/app/releases/latest" {
            if header(parts, "if-none-match") == Some(repo.etag.as_str()) {
                return reply(304, &[("etag", &repo.etag)], "");
            }
            let json = repo.release_json(&host, false).to_string();
            return reply(200, &[("etag", &repo.etag)], json);
        }
        if path == "/repos/acme/app/releases" {
            let draft = json!({"tag_name": "v9-draft", "draft": true, "assets": []});
            let list = json!([draft, repo.release_json(&host, true)]).to_string();
            return reply(200, &[("etag", &repo.etag)], list);
        }
        if let Some(id) = path.strip_prefix("/repos/acme/app/releases/assets/") {
            let id = id.parse().unwrap_or(0);
            let Some(asset) = repo.asset(id) else {
                return reply(404, &[], "{}");
            };
            if header(parts, "accept") != Some("application/octet-stream") {
                return reply(200, &[], json!({"id": asset.id}).to_string());
            }
            return reply(302, &[("location", &to_storage(id))], "");
        }
        if let Some(rest) = path.strip_prefix("/download/") {
            let name = rest.rsplit('/').next().unwrap_or_default();
            return match repo.assets.iter().find(|a| a.name == name) {
                Some(a) => reply(302, &[("location", &to_storage(a.id))], ""),
                None => reply(404, &[], "Not Found"),
            };
        }
        if path == "/repos/limited/app/releases/latest" {
            let headers = [
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1700000000"),
            ];
            return reply(403, &headers, r#"{"message":"API rate limit exceeded"}"#);
        }
        reply(404, &[], r#"{"message":"Not Found"}"#)
    });
    (api, storage, repo)
}

fn acme(tag: &str) -> Repo {
    Repo {
        tag: tag.into(),
        etag: "W/\"r1\"".into(),
        assets: assets(tag, 100),
        ..Repo::default()
    }
}

fn poll(fetcher: &mut GitHub) -> Option<Release> {
    fetcher.fetch().expect("poll succeeds")
}

fn read(release: Release) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut body = release.body;
    body.read_to_end(&mut bytes).expect("read the body");
    bytes
}

#[test]
fn latest_release_with_a_token() {
    let (api, storage, repo) = github(acme("v1.2.3"));
    let mut fetcher = GitHub::new("acme/app").api_url(api.url("")).token("t0ken");
    let release = poll(&mut fetcher).expect("the latest release");
    let ours = ours();
    let asset = lock(&repo)
        .assets
        .iter()
        .find(|a| a.name == ours)
        .cloned()
        .expect("our asset");
    assert_eq!(release.name.as_deref(), Some(ours.as_str()));
    assert_eq!(release.version.as_deref(), Some("v1.2.3"));
    assert_eq!(release.size, Some(asset.bytes.len() as u64));
    let digest = asset.digest.clone().unwrap_or_default();
    assert_eq!(release.sha256.as_deref(), digest.strip_prefix("sha256:"));
    assert_eq!(
        release.signature.as_deref(),
        Some("untrusted comment: signature of v1.2.3\nRWQ=\n")
    );
    assert!(release
        .tag
        .as_deref()
        .is_some_and(|t| t.contains(&asset.id.to_string())));
    assert!(release
        .source
        .ends_with(&format!("/download/v1.2.3/{ours}")));
    assert_eq!(read(release), asset.bytes);

    // The API saw the token and GitHub's headers; the storage host saw no token.
    let hits = api.hits();
    let latest = &hits[0];
    assert_eq!(latest.path, "/repos/acme/app/releases/latest");
    assert_eq!(latest.header("authorization"), Some("Bearer t0ken"));
    assert_eq!(latest.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(latest.header("x-github-api-version"), Some("2022-11-28"));
    assert!(latest
        .header("user-agent")
        .is_some_and(|ua| ua.starts_with("overseer/")));
    let downloads: Vec<&Hit> = hits
        .iter()
        .filter(|h| h.path.contains("/assets/"))
        .collect();
    assert_eq!(downloads.len(), 2, "the signature and the binary: {hits:?}");
    for hit in &downloads {
        assert_eq!(hit.header("authorization"), Some("Bearer t0ken"));
        assert_eq!(hit.header("accept"), Some("application/octet-stream"));
    }
    let stored = storage.hits();
    assert_eq!(stored.len(), 2);
    assert!(
        stored.iter().all(|h| h.header("authorization").is_none()),
        "{stored:?}"
    );
    assert!(stored
        .iter()
        .any(|h| h.path == format!("/blob/{}?signed=1", asset.id)));

    // Unchanged: a conditional request answered 304, nothing downloaded.
    assert!(poll(&mut fetcher).is_none());
    let hits = api.hits();
    let last = hits.last().expect("a request");
    assert_eq!(last.header("if-none-match"), Some("W/\"r1\""));
    assert_eq!(last.status, StatusCode::NOT_MODIFIED);

    // The JSON changes (download counts) but the asset does not: no download,
    // and the new ETag makes the next poll a 304 again.
    {
        let mut repo = lock(&repo);
        repo.downloads += 1;
        repo.etag = "W/\"r2\"".into();
    }
    assert!(poll(&mut fetcher).is_none());
    assert!(poll(&mut fetcher).is_none());
    let statuses: Vec<u16> = api.hits()[hits.len()..]
        .iter()
        .map(|h| h.status.as_u16())
        .collect();
    assert_eq!(statuses, [200, 304]);
    assert_eq!(storage.hits().len(), 2, "nothing downloaded again");

    // A new release is found and downloaded.
    {
        let mut repo = lock(&repo);
        repo.tag = "v1.3.0".into();
        repo.assets = assets("v1.3.0", 200);
        repo.etag = "W/\"r3\"".into();
    }
    let release = poll(&mut fetcher).expect("the new release");
    assert_eq!(release.version.as_deref(), Some("v1.3.0"));
    assert_eq!(read(release), format!("{ours} v1.3.0").into_bytes());
}

#[test]
fn without_a_token_the_public_download_url_is_used() {
    let (api, storage, _repo) = github(acme("v1.0.0"));
    let mut fetcher = GitHub::new("acme/app").api_url(format!("{}/", api.url("")));
    let release = poll(&mut fetcher).expect("release");
    assert_eq!(read(release), format!("{} v1.0.0", ours()).into_bytes());
    let hits = api.hits();
    assert!(hits.iter().all(|h| h.header("authorization").is_none()));
    assert!(hits
        .iter()
        .any(|h| h.path == format!("/download/v1.0.0/{}", ours())));
    assert_eq!(storage.hits().len(), 2);
}

#[test]
fn a_checksum_asset_stands_in_for_a_missing_digest() {
    let mut repo = acme("v1.0.0");
    let ours = ours();
    let sum = "ef".repeat(32);
    for asset in &mut repo.assets {
        asset.digest = None;
        if asset.name == format!("{ours}.sha256") {
            asset.bytes = format!("{sum}  {ours}\n").into_bytes();
        }
    }
    let (api, _storage, _repo) = github(repo);
    let mut fetcher = GitHub::new("acme/app").api_url(api.url(""));
    let release = poll(&mut fetcher).expect("release");
    assert_eq!(release.sha256.as_deref(), Some(sum.as_str()));
}

#[test]
fn asset_and_prerelease_overrides() {
    let (api, _storage, _repo) = github(acme("v2.0.0-rc.1"));
    let mut fetcher = GitHub::new("acme/app")
        .api_url(api.url(""))
        .include_prereleases(true)
        .asset("windows-arm64");
    let release = poll(&mut fetcher).expect("the pre-release");
    assert_eq!(release.version.as_deref(), Some("v2.0.0-rc.1"));
    assert_eq!(release.name.as_deref(), Some("app-windows-arm64.tar.gz"));
    assert_eq!(api.hits()[0].path, "/repos/acme/app/releases?per_page=10");
}

#[test]
fn unknown_repository_explains_the_fix() {
    let (api, _storage, _repo) = github(acme("v1"));
    let err = GitHub::new("nobody/none")
        .api_url(api.url(""))
        .fetch()
        .expect_err("404");
    let msg = err.to_string();
    for part in ["404", "nobody/none", "check the repository name", "token"] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
}

#[test]
fn rate_limit_explains_the_fix() {
    let (api, _storage, _repo) = github(acme("v1"));
    let err = GitHub::new("limited/app")
        .api_url(api.url(""))
        .fetch()
        .expect_err("403");
    let msg = err.to_string();
    assert!(
        msg.contains("rate limit") && msg.contains("set a token"),
        "{msg}"
    );
}

#[test]
fn no_matching_asset_lists_the_names() {
    let mut repo = acme("v1");
    let names = [
        "app-plan9-sparc64.tar.gz",
        "app-solaris-sparc64.tar.gz",
        "SHA256SUMS",
    ];
    repo.assets.truncate(names.len());
    for (asset, name) in repo.assets.iter_mut().zip(names) {
        asset.name = name.into();
    }
    let (api, _storage, _repo) = github(repo);
    let err = GitHub::new("acme/app")
        .api_url(api.url(""))
        .fetch()
        .expect_err("no asset for this platform");
    let msg = err.to_string();
    assert!(msg.contains(&names.join(", ")), "{msg}");
    assert!(msg.contains(".asset("), "{msg}");
    assert!(
        api.hits().iter().all(|h| !h.path.contains("/assets/")),
        "nothing downloaded"
    );
}

#[test]
fn a_malformed_repository_is_refused_without_a_request() {
    for bad in ["acme", "acme/app/extra", "/app", "acme/", "ac me/app"] {
        let err = GitHub::new(bad)
            .api_url("http://127.0.0.1:9")
            .fetch()
            .expect_err("malformed");
        assert!(err.to_string().contains("owner/name"), "{err}");
    }
}

/// GitHub Enterprise Server behind a private CA: the API and the download
/// over HTTPS, trusted through `root_certificates` and refused without it.
#[test]
fn enterprise_server_behind_a_private_ca() {
    let name = ours();
    let port = https_server(move |host, path| {
        let json = |v: serde_json::Value| {
            let headers = vec![("Content-Type", "application/json".to_string())];
            (200, headers, v.to_string().into_bytes())
        };
        if path == "/api/v3/repos/acme/app/releases/latest" {
            let asset = json!({
                "id": 7,
                "name": name,
                "url": format!("https://{host}/api/v3/repos/acme/app/releases/assets/7"),
                "browser_download_url": format!("https://{host}/download/v2.0.0/{name}"),
                "size": 12,
                "state": "uploaded",
            });
            return json(json!({"tag_name": "v2.0.0", "draft": false, "assets": [asset]}));
        }
        if path == format!("/download/v2.0.0/{name}") {
            return (200, Vec::new(), b"build v2.0.0".to_vec());
        }
        (404, Vec::new(), br#"{"message":"Not Found"}"#.to_vec())
    });
    let api = format!("https://localhost:{port}/api/v3");
    let ca = std::fs::read(tls_file("ca.pem")).expect("the test CA");
    let mut fetcher = GitHub::new("acme/app")
        .api_url(&api)
        .root_certificates(&ca)
        .expect("a CA certificate");
    let release = poll(&mut fetcher).expect("the release");
    assert_eq!(release.version.as_deref(), Some("v2.0.0"));
    assert_eq!(read(release), b"build v2.0.0");

    // The bundled roots do not know the private CA: a clear error, with the fix.
    let err = GitHub::new("acme/app")
        .api_url(&api)
        .fetch()
        .expect_err("an untrusted certificate")
        .to_string();
    assert!(
        err.contains("localhost") && err.contains("UnknownIssuer") && err.contains("--ca-file"),
        "{err}"
    );

    let err = GitHub::new("acme/app")
        .root_certificates(b"not PEM")
        .expect_err("no certificate")
        .to_string();
    assert!(err.contains("no certificate"), "{err}");
}

/// The API over plain http to a host that is not loopback, or a download
/// redirected to one, is refused before connecting (`0.0.0.0`: not loopback
/// by the rule, yet local on Linux, so the servers count what reaches them).
#[test]
fn plain_http_to_a_host_that_is_not_loopback_is_refused() {
    let (api, storage, repo) = github(acme("v1.2.3"));
    let far_api = format!("http://0.0.0.0:{}", api.addr.port());
    let mut fetcher = GitHub::new("acme/app").api_url(&far_api);
    let err = fetcher
        .init(&Context::new("/srv/app"))
        .expect_err("refused at start");
    assert!(err.to_string().contains("allow_http"), "{err}");
    let err = fetcher.fetch().expect_err("refused at every poll");
    assert!(err.to_string().contains("allow_http"), "{err}");
    assert!(api.hits().is_empty(), "a request was sent");

    // The API on loopback, its downloads redirected to such a host.
    lock(&repo).storage = format!("0.0.0.0:{}", storage.addr.port());
    let mut fetcher = GitHub::new("acme/app").api_url(api.url(""));
    fetcher.init(&Context::new("/srv/app")).expect("loopback");
    let err = fetcher.fetch().expect_err("the redirect is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("redirected") && msg.contains("allow_http"),
        "{msg}"
    );
    assert!(storage.hits().is_empty(), "the redirect was followed");

    // With consent, the same release is taken.
    let mut fetcher = GitHub::new("acme/app").api_url(&far_api).allow_http(true);
    fetcher.init(&Context::new("/srv/app")).expect("consent");
    let release = poll(&mut fetcher).expect("the latest release");
    assert!(!read(release).is_empty());
    assert!(!storage.hits().is_empty());
}
