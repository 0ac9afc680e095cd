//! Releases published on GitHub Releases (or GitHub Enterprise Server).

use std::fmt;
use std::time::{Duration, Instant};

use serde::Deserialize;
use ureq::http::{header, StatusCode};
use url::Url;

use super::client::{
    named_checksum, parse_checksum, parse_url, status_error, Client, Fetched, Get, Roots,
    SIDECAR_LIMIT,
};
use super::plain_http::{plain_http_rule, shown};
use super::platform::{choose, Platform};
use super::{Context, FetchError, Fetcher, Release};

/// The version of the REST API the requests are written for.
const API_VERSION: &str = "2022-11-28";

/// The largest release JSON read (a release with hundreds of assets is ~1 MB).
const JSON_LIMIT: u64 = 16 * 1024 * 1024;

/// The limit on one API request (the download has its own, [`GitHub::timeout`]).
const API_TIMEOUT: Duration = Duration::from_secs(60);

/// Polls a GitHub repository's latest release and downloads the asset built
/// for this OS and CPU.
///
/// Each poll is one conditional request for the latest release
/// (`If-None-Match` with the last ETag); an unchanged release is answered
/// `304 Not Modified`, which GitHub does not count against the rate limit of
/// an authenticated client. The download happens only when the chosen asset
/// changed (its id and upload date, and those of its signature and checksum).
///
/// **Rate limits.** Without a token GitHub allows 60 API requests per hour per
/// IP address — shared by every process behind the same address — so the
/// default interval is 5 minutes (12 requests an hour). With a
/// [`token`](GitHub::token) the limit is 5,000 an hour. When it is exhausted
/// the poll fails with a message saying so, and later polls try again.
///
/// **The token and the workers.** The master keeps `GITHUB_TOKEN`, `GH_TOKEN`
/// and the variable named by [`token_env`](GitHub::token_env) from the
/// processes it starts ([`Fetcher::credential_env`]).
///
/// **Which asset.** Unless [`asset`](GitHub::asset) names one, the asset is
/// chosen by name: this binary's Rust target triple
/// (`x86_64-unknown-linux-gnu`), or its OS and CPU in the common spellings
/// (`linux-amd64`, `Linux_x86_64`, `darwin-arm64`, `macos-aarch64`,
/// `windows-x64`, `macos-universal`…), case-insensitive. Checksums,
/// signatures, text files and installers (`.deb`, `.msi`…) are never chosen.
/// Among several matches an archive this build can unpack is preferred, in
/// the order `.tar.gz`, `.tar.xz`, `.tar.zst`, `.zip`, `.gz`, `.xz`, `.zst`,
/// `.tar`, then a bare executable.
///
/// **Checksum and signature.** GitHub's own `digest` of the asset is the
/// expected SHA-256; for older assets without one, an asset `NAME.sha256` or a
/// checksums file (`SHA256SUMS`, `*checksums.txt`) is read. An asset
/// `NAME.minisig` is the release's signature. Upload them *before* publishing
/// the release (or publish a draft and undraft it last), so a poll never sees
/// the binary without them.
///
/// **Plain http.** An `http://` API URL, or a download redirected to plain
/// http, is accepted only to a loopback host (a test server) unless
/// [`allow_http`](GitHub::allow_http) is set; otherwise it is refused before
/// anything is sent.
///
/// ```no_run
/// let fetcher = overseer::fetcher::GitHub::new("owner/myapp").token_env("GITHUB_TOKEN");
/// overseer::run(overseer::Config::new(|_| {}).fetcher(fetcher));
/// ```
pub struct GitHub {
    repo: String,
    api: String,
    token: Option<String>,
    /// The environment variable the token was read from.
    token_var: Option<String>,
    interval: Duration,
    timeout: Duration,
    asset: Option<String>,
    prereleases: bool,
    target: String,
    bin_name: Option<String>,
    /// The ETag of the release JSON last seen unchanged or returned.
    etag: Option<String>,
    /// The tag of the last release returned.
    returned: Option<String>,
    roots: Roots,
    allow_http: bool,
    client: Option<Client>,
}

#[derive(Debug, Deserialize)]
struct ApiRelease {
    tag_name: String,
    #[serde(default)]
    draft: bool,
    #[serde(default)]
    assets: Vec<Asset>,
}

#[derive(Debug, Clone, Deserialize)]
struct Asset {
    id: u64,
    name: String,
    /// The API URL (`Accept: application/octet-stream` downloads it).
    url: String,
    browser_download_url: String,
    #[serde(default)]
    size: Option<u64>,
    /// `sha256:<hex>`, on assets uploaded since mid-2025.
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
    /// `uploaded`, or `open` while an upload is in progress.
    #[serde(default)]
    state: Option<String>,
}

impl GitHub {
    /// Polls the latest release of `repo` (`"owner/name"`) every 5 minutes.
    /// A malformed name is reported by [`Fetcher::init`] and every poll.
    pub fn new(repo: impl Into<String>) -> Self {
        GitHub {
            repo: repo.into(),
            api: "https://api.github.com".into(),
            token: None,
            token_var: None,
            interval: Duration::from_secs(300),
            timeout: Duration::from_secs(300),
            asset: None,
            prereleases: false,
            target: env!("OVERSEER_TARGET").into(),
            bin_name: None,
            etag: None,
            returned: None,
            roots: Roots::Bundled,
            allow_http: false,
            client: None,
        }
    }

    /// A token (`Authorization: Bearer`), for private repositories and the
    /// higher rate limit; it needs read access to the repository's contents.
    /// It is sent to the API host only, never to the storage host downloads
    /// are redirected to. An empty token is ignored.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.token = (!token.trim().is_empty()).then(|| token.trim().to_string());
        self
    }

    /// Reads the token (see [`token`](GitHub::token)) from the environment
    /// variable `var` now; unset or empty, there is none. The variable is
    /// then kept from the workers, like `GITHUB_TOKEN` and `GH_TOKEN`.
    pub fn token_env(mut self, var: impl Into<String>) -> Self {
        let var = var.into();
        self = self.token(std::env::var(&var).unwrap_or_default());
        self.token_var = Some(var);
        self
    }

    /// The API base URL (default `https://api.github.com`); for GitHub
    /// Enterprise Server, `https://HOST/api/v3`.
    pub fn api_url(mut self, base: impl Into<String>) -> Self {
        self.api = base.into().trim_end_matches('/').to_string();
        self
    }

    /// Allows a plain `http://` API URL, and downloads redirected to plain
    /// http, on a host that is not loopback (default: refused, naming this):
    /// only on a network you trust, as anyone on the path can read the token
    /// and replace the release.
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Trusts only the CA certificates in `pem` (one or more `-----BEGIN
    /// CERTIFICATE-----` blocks) for HTTPS, instead of the Mozilla roots
    /// bundled with the client: for GitHub Enterprise Server behind a private
    /// CA. They are the only roots for the API host *and* for the hosts
    /// downloads are redirected to; if those use a public CA, add its
    /// certificate to the bundle (e.g. the system's
    /// `/etc/ssl/certs/ca-certificates.crt`). An error names what is wrong
    /// with the PEM data.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let pem = std::fs::read("/etc/ssl/github-enterprise-ca.pem")?;
    /// let fetcher = overseer::fetcher::GitHub::new("platform/myapp")
    ///     .api_url("https://github.example.com/api/v3")
    ///     .root_certificates(&pem)?;
    /// # Ok(()) }
    /// ```
    pub fn root_certificates(mut self, pem: &[u8]) -> Result<Self, FetchError> {
        self.roots = Roots::from_pem(pem)?;
        self.client = None;
        Ok(self)
    }

    /// How often to poll (default 5 minutes; see the rate limits above).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The limit on downloading the asset, redirects included (default 5
    /// minutes).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Chooses the asset by name instead of by platform: the asset with
    /// exactly this name, else the assets whose name contains it
    /// (case-insensitive; among several, the one for this platform).
    pub fn asset(mut self, pattern: impl Into<String>) -> Self {
        self.asset = Some(pattern.into());
        self
    }

    /// Also takes pre-releases (default false: only the release GitHub marks
    /// "latest"). Drafts are never taken.
    pub fn include_prereleases(mut self, yes: bool) -> Self {
        self.prereleases = yes;
        self
    }

    /// The repository's owner and name, checked.
    fn owner_and_name(&self) -> Result<(&str, &str), FetchError> {
        let valid = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        match self.repo.split_once('/') {
            Some((owner, name)) if valid(owner) && valid(name) => Ok((owner, name)),
            _ => Err(format!(
                "invalid GitHub repository '{}': expected 'owner/name', as in github.com/owner/name",
                self.repo
            )
            .into()),
        }
    }

    /// The API URL polled: the latest release, or with pre-releases the
    /// newest few releases.
    fn releases_url(&self) -> Result<Url, FetchError> {
        let (owner, name) = self.owner_and_name()?;
        let mut url = parse_url(&self.api)?;
        {
            let not_a_base = |()| format!("invalid GitHub API URL '{}'", self.api);
            let mut path = url.path_segments_mut().map_err(not_a_base)?;
            path.pop_if_empty()
                .extend(["repos", owner, name, "releases"]);
            if !self.prereleases {
                path.push("latest");
            }
        }
        if self.prereleases {
            url.query_pairs_mut().append_pair("per_page", "10");
        }
        Ok(url)
    }

    /// GETs a URL with the token sent to the API's origin only.
    fn get(
        &mut self,
        url: &str,
        accept: &str,
        etag: Option<&str>,
        deadline: Instant,
    ) -> Result<Fetched, FetchError> {
        let client = self
            .client
            .get_or_insert_with(|| Client::with_roots(Duration::from_secs(10), &self.roots));
        let mut public = vec![("Accept", accept.to_string())];
        public.push(("X-GitHub-Api-Version", API_VERSION.to_string()));
        if let Some(etag) = etag {
            public.push(("If-None-Match", etag.to_string()));
        }
        let private: Vec<(String, String)> = self
            .token
            .iter()
            .map(|t| ("Authorization".to_string(), format!("Bearer {t}")))
            .collect();
        client.get(&Get {
            url,
            public: &public,
            private: &private,
            trusted: &self.api,
            deadline,
            allow_http: self.allow_http,
        })
    }

    /// Explains an API error status, with the fix.
    fn api_error(&self, fetched: &Fetched) -> FetchError {
        let status = fetched.status();
        let repo = &self.repo;
        let exhausted =
            fetched.header(header::HeaderName::from_static("x-ratelimit-remaining")) == Some("0");
        let msg = match status.as_u16() {
            403 | 429 if exhausted => {
                let reset = fetched
                    .header(header::HeaderName::from_static("x-ratelimit-reset"))
                    .map(|t| format!(" (it resets at Unix time {t})"))
                    .unwrap_or_default();
                let fix = if self.token.is_some() {
                    "raise the interval"
                } else {
                    "set a token (5,000 requests an hour instead of 60) or raise the interval"
                };
                format!("GitHub API rate limit exhausted polling {repo}{reset}: {fix}")
            }
            403 | 429 if fetched.header(header::RETRY_AFTER).is_some() => format!(
                "GitHub's secondary rate limit hit polling {repo}: raise the interval"
            ),
            401 => format!(
                "GitHub rejected the token for {repo} (401): check it has not expired or been revoked"
            ),
            403 => format!(
                "GitHub API refused access to {repo} (403): check the token can read the repository's contents"
            ),
            404 if self.prereleases => format!(
                "GitHub API returned 404 for {repo}: check the repository name, \
                 or set a token for a private repository"
            ),
            404 => format!(
                "GitHub API returned 404 for {repo}'s latest release: check the repository name, \
                 set a token for a private repository, or publish a release \
                 (pre-releases and drafts are not 'latest'; see include_prereleases)"
            ),
            _ => return status_error("GitHub API", &fetched.shown_url(), status),
        };
        msg.into()
    }

    /// Reads a small asset (a signature or a checksum file).
    fn read_asset(&mut self, asset: &Asset, deadline: Instant) -> Result<String, FetchError> {
        let fetched = self.download(asset, deadline)?;
        fetched.text(SIDECAR_LIMIT)
    }

    /// Starts downloading an asset: through the API with a token (the only
    /// way for a private repository), else from its public download URL.
    fn download(&mut self, asset: &Asset, deadline: Instant) -> Result<Fetched, FetchError> {
        let url = if self.token.is_some() {
            &asset.url
        } else {
            &asset.browser_download_url
        };
        let fetched = self.get(url, "application/octet-stream", None, deadline)?;
        let status = fetched.status();
        if !status.is_success() {
            let what = format!("downloading {} from", asset.name);
            return Err(status_error(&what, &fetched.shown_url(), status));
        }
        Ok(fetched)
    }

    /// The expected SHA-256 of `asset`: GitHub's digest, else a checksum
    /// asset beside it.
    fn checksum(
        &mut self,
        asset: &Asset,
        assets: &[Asset],
        deadline: Instant,
    ) -> Result<Option<String>, FetchError> {
        if let Some(hex) = asset
            .digest
            .as_deref()
            .and_then(|d| d.strip_prefix("sha256:"))
        {
            return Ok(Some(hex.to_string()));
        }
        let Some(sums) = checksum_asset(asset, assets) else {
            return Ok(None);
        };
        let text = self.read_asset(sums, deadline)?;
        // A file for this asset alone may hold just the digest; a shared
        // one must name the asset.
        let own = sums.name.starts_with(&asset.name);
        if !own {
            return Ok(named_checksum(&text, &asset.name));
        }
        match parse_checksum(&text, Some(&asset.name)) {
            Some(hex) => Ok(Some(hex)),
            None => Err(format!(
                "{} holds no SHA-256 digest: publish `sha256sum` output",
                sums.name
            )
            .into()),
        }
    }
}

impl fmt::Debug for GitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHub")
            .field("repo", &self.repo)
            .field("api", &self.api)
            .field("token", &self.token.as_ref().map(|_| ".."))
            .field("interval", &self.interval)
            .field("asset", &self.asset)
            .field("prereleases", &self.prereleases)
            .field("private_roots", &matches!(self.roots, Roots::Only(_)))
            .field("allow_http", &self.allow_http)
            .finish_non_exhaustive()
    }
}

impl Fetcher for GitHub {
    fn interval(&self) -> Duration {
        self.interval
    }

    fn init(&mut self, context: &Context) -> Result<(), FetchError> {
        self.owner_and_name()?;
        plain_http_rule(
            "the GitHub API URL",
            &parse_url(&self.api)?,
            self.allow_http,
        )?;
        self.target = context.target.to_string();
        self.bin_name = context
            .bin_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        Ok(())
    }

    fn retry(&mut self) {
        self.returned = None;
        self.etag = None;
    }

    /// `GITHUB_TOKEN` and `GH_TOKEN`, the usual homes of a GitHub token, and
    /// the variable given to [`token_env`](GitHub::token_env).
    fn credential_env(&self) -> Vec<String> {
        let mut names = vec!["GITHUB_TOKEN".to_string(), "GH_TOKEN".to_string()];
        if let Some(var) = self.token_var.as_ref().filter(|v| !names.contains(v)) {
            names.push(var.clone());
        }
        names
    }

    fn fetch(&mut self) -> Result<Option<Release>, FetchError> {
        let url = self.releases_url()?;
        let api_deadline = Instant::now() + API_TIMEOUT.min(self.timeout);
        let etag = self.etag.clone();
        let fetched = self.get(
            url.as_str(),
            "application/vnd.github+json",
            etag.as_deref(),
            api_deadline,
        )?;
        let status = fetched.status();
        if status == StatusCode::NOT_MODIFIED && etag.is_some() {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.api_error(&fetched));
        }
        let new_etag = fetched.header(header::ETAG).map(str::to_string);
        let shown_url = fetched.shown_url();
        let json = fetched.text(JSON_LIMIT)?;
        let bad_json = |e: serde_json::Error| {
            format!("{shown_url} is not a GitHub release ({e}): check the API URL")
        };
        let release = if self.prereleases {
            let list: Vec<ApiRelease> = serde_json::from_str(&json).map_err(bad_json)?;
            list.into_iter().find(|r| !r.draft).ok_or_else(|| {
                format!(
                    "{} has no published release: publish one (drafts are not taken)",
                    self.repo
                )
            })?
        } else {
            serde_json::from_str(&json).map_err(bad_json)?
        };
        let assets: Vec<Asset> = release
            .assets
            .into_iter()
            .filter(|a| a.state.as_deref().is_none_or(|s| s == "uploaded"))
            .collect();
        let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
        let platform = Platform::new(&self.target, os, arch, self.bin_name.as_deref());
        let names: Vec<&str> = assets.iter().map(|a| a.name.as_str()).collect();
        let chosen = choose(&names, &platform, self.asset.as_deref())
            .map_err(|e| format!("{} release {}: {e}", self.repo, release.tag_name))?;
        let asset = assets[chosen].clone();
        let signature = assets
            .iter()
            .find(|a| a.name == format!("{}.minisig", asset.name));
        let sums = checksum_asset(&asset, &assets);
        let mut tag = format!("{}@{}", asset.id, asset.updated_at.as_deref().unwrap_or(""));
        for extra in [signature, sums].into_iter().flatten() {
            tag.push_str(&format!(
                "+{}@{}",
                extra.id,
                extra.updated_at.as_deref().unwrap_or("")
            ));
        }
        if self.returned.as_deref() == Some(tag.as_str()) {
            // The JSON changed (download counts do), the asset did not.
            self.etag = new_etag;
            return Ok(None);
        }
        let deadline = Instant::now() + self.timeout;
        let signature = match signature.cloned() {
            Some(sig) => Some(self.read_asset(&sig, deadline)?),
            None => None,
        };
        let sha256 = self.checksum(&asset, &assets, deadline)?;
        let fetched = self.download(&asset, deadline)?;
        let size = asset
            .size
            .or_else(|| fetched.response.body().content_length());
        let source = parse_url(&asset.browser_download_url)
            .map_or(asset.browser_download_url.clone(), |u| shown(&u));
        let mut out = Release::new(fetched.response.into_body().into_reader(), source)
            .name(&asset.name)
            .version(&release.tag_name)
            .tag(&tag);
        out.size = size;
        out.sha256 = sha256;
        out.signature = signature;
        self.returned = Some(tag);
        self.etag = new_etag;
        Ok(Some(out))
    }
}

/// The checksum asset for `asset`: `NAME.sha256`, else a shared checksums file.
fn checksum_asset<'a>(asset: &Asset, assets: &'a [Asset]) -> Option<&'a Asset> {
    let own = [
        format!("{}.sha256", asset.name),
        format!("{}.sha256sum", asset.name),
    ];
    assets.iter().find(|a| own.contains(&a.name)).or_else(|| {
        assets.iter().find(|a| {
            let n = a.name.to_ascii_lowercase();
            n.contains("sha256sums")
                || (n.contains("checksums")
                    && !n.ends_with(".sig")
                    && !n.ends_with(".minisig")
                    && !n.ends_with(".asc")
                    && !n.ends_with(".pem"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tokens_variables_are_withheld() {
        let names = GitHub::new("o/r").credential_env();
        assert_eq!(names, ["GITHUB_TOKEN", "GH_TOKEN"]);
        let names = GitHub::new("o/r")
            .token_env("OVERSEER_TEST_UNSET_TOKEN")
            .credential_env();
        assert_eq!(
            names,
            ["GITHUB_TOKEN", "GH_TOKEN", "OVERSEER_TEST_UNSET_TOKEN"]
        );
    }
}
