//! A release published at an HTTP(S) URL, polled with conditional requests.

use std::fmt;
use std::io::Read;
use std::time::{Duration, Instant};

use percent_encoding::percent_decode_str;
use ureq::http::{header, StatusCode};
use url::Url;

use super::client::{
    parse_checksum, parse_url, status_error, Client, Fetched, Get, Roots, SIDECAR_LIMIT,
};
use super::plain_http::{plain_http_rule, shown};
use super::{FetchError, Fetcher, Release};

/// The validators of a response, kept to make the next request conditional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
    length: Option<u64>,
}

impl Validators {
    fn of(fetched: &Fetched) -> Validators {
        Validators {
            etag: fetched.header(header::ETAG).map(str::to_string),
            last_modified: fetched.header(header::LAST_MODIFIED).map(str::to_string),
            length: fetched
                .header(header::CONTENT_LENGTH)
                .and_then(|v| v.parse().ok()),
        }
    }

    /// The validators behind a release tag: its ETag (always quoted, maybe
    /// weak) or else its Last-Modified date.
    fn of_tag(tag: &str) -> Validators {
        let etag = super::is_entity_tag(tag);
        Validators {
            etag: etag.then(|| tag.to_string()),
            last_modified: (!etag).then(|| tag.to_string()),
            length: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }

    /// Whether a full response is the release already returned: for a server
    /// that ignores conditional requests but still sends validators.
    fn same_release(&self, other: &Validators) -> bool {
        match (&self.etag, &other.etag) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.last_modified.is_some() && self == other,
            _ => false,
        }
    }
}

/// Where a checksum or signature file is, and whether it must exist.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sidecar {
    None,
    /// Set by [`Http::sidecars`]: absent when the server says 404 (or 403,
    /// which S3-style stores answer for a missing key).
    Optional(String),
    /// Set explicitly: a 404 is an error.
    Required(String),
}

/// Polls an HTTP(S) URL for a release, downloading it only when it changed.
///
/// Each poll is a conditional `GET` (`If-None-Match` with the last ETag,
/// `If-Modified-Since` with the last `Last-Modified`), so an unchanged release
/// costs one small request answered `304 Not Modified`. The validators are
/// remembered only once a release is returned; a release the pipeline then
/// rejects is recognised by its [`tag`](Release::tag) (the ETag, else the
/// `Last-Modified` date) and not downloaded again.
///
/// A server that ignores conditional requests but sends an ETag (or a
/// `Last-Modified` date) is still cheap: a response with the same ETag is
/// closed without reading its body. A server that sends neither has no way
/// to say "unchanged": the release is returned, and downloaded in full, at
/// every poll. That is harmless — the pipeline recognises the running binary
/// by its hash and skips it — but costly, so raise the interval for such a
/// server.
///
/// Plain `http://` is accepted to a loopback host (`127.0.0.0/8`, `[::1]`,
/// `localhost`); to any other it needs [`allow_http`](Http::allow_http),
/// and is otherwise refused before anything is sent, at start and for every
/// URL a redirect leads to.
///
/// Redirects are followed (up to 10; never from https to plain http). The
/// headers set with [`header`](Http::header) may carry credentials, so they
/// are sent only to the origin (scheme, host, port) of the configured URL, not
/// to a host a redirect leads to (a CDN or a storage bucket with a signed URL).
///
/// Beside the binary, a checksum (`sha256sum` format) and a minisign
/// signature can be fetched; see [`sidecars`](Http::sidecars). They are read
/// when the binary has changed, so publish them *before* the binary.
///
/// ```no_run
/// use std::time::Duration;
/// let fetcher = overseer::fetcher::Http::new("https://releases.example.com/myapp-linux-amd64.gz")
///     .header("Authorization", "Bearer s3cr3t")
///     .interval(Duration::from_secs(30))
///     .sidecars();
/// overseer::run(overseer::Config::new(|_| {}).fetcher(fetcher));
/// ```
///
/// Proxies are taken from `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and
/// `NO_PROXY`, as curl does.
pub struct Http {
    url: String,
    interval: Duration,
    headers: Vec<(String, String)>,
    connect_timeout: Duration,
    timeout: Duration,
    checksum: Sidecar,
    signature: Sidecar,
    roots: Roots,
    allow_http: bool,
    /// The validators of the last release returned.
    returned: Option<Validators>,
    client: Option<Client>,
}

impl Http {
    /// Polls `url` (http or https), every second by default.
    pub fn new(url: impl Into<String>) -> Self {
        Http {
            url: url.into(),
            interval: Duration::from_secs(1),
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(300),
            checksum: Sidecar::None,
            signature: Sidecar::None,
            roots: Roots::Bundled,
            allow_http: false,
            returned: None,
            client: None,
        }
    }

    /// Allows plain `http://` to a host that is not loopback, for the release
    /// URL, its sidecars and redirects (default: refused, naming this): only
    /// on a network you trust, and with release signatures on, as anyone on
    /// the path can read the headers sent and replace the release.
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Trusts only the CA certificates in `pem` (one or more `-----BEGIN
    /// CERTIFICATE-----` blocks) for HTTPS, instead of the Mozilla roots
    /// bundled with the client: for a release server whose certificate a
    /// private CA signed. An error names what is wrong with the PEM data.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let pem = std::fs::read("/etc/myapp/releases-ca.pem")?;
    /// let fetcher = overseer::fetcher::Http::new("https://releases.internal/myapp")
    ///     .root_certificates(&pem)?;
    /// # Ok(()) }
    /// ```
    pub fn root_certificates(mut self, pem: &[u8]) -> Result<Self, FetchError> {
        self.roots = Roots::from_pem(pem)?;
        self.client = None;
        Ok(self)
    }

    /// How often to poll (default 1 s; an unchanged release costs one small
    /// request).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Adds a header to every request, e.g. `("Authorization", "Bearer …")`.
    /// Repeatable. Sent only to the configured URLs' own origins, never to
    /// another host a redirect leads to; never shown in logs.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// How long to wait for a connection (DNS included; default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self.client = None;
        self
    }

    /// The limit on a whole request, redirects and body included (default 5
    /// minutes): a download still running then fails, and the next poll
    /// starts again.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where to read the release's SHA-256 (`sha256sum` format: the line
    /// naming the file, else the only digest there). A 404 there is an error.
    pub fn checksum_url(mut self, url: impl Into<String>) -> Self {
        self.checksum = Sidecar::Required(url.into());
        self
    }

    /// Where to read the release's minisign signature (a `.minisig` file).
    /// A 404 there is an error.
    pub fn signature_url(mut self, url: impl Into<String>) -> Self {
        self.signature = Sidecar::Required(url.into());
        self
    }

    /// Looks for `URL.sha256` and `URL.minisig` beside the release (unless
    /// [`checksum_url`](Http::checksum_url) or
    /// [`signature_url`](Http::signature_url) named them already). A missing
    /// one (404, or the 403 S3-style stores answer) is simply absent.
    pub fn sidecars(mut self) -> Self {
        if self.checksum == Sidecar::None {
            self.checksum = Sidecar::Optional(format!("{}.sha256", self.url));
        }
        if self.signature == Sidecar::None {
            self.signature = Sidecar::Optional(format!("{}.minisig", self.url));
        }
        self
    }
}

/// Reads a sidecar file: `None` when it is optional and missing.
fn read_sidecar(
    client: &Client,
    headers: &[(String, String)],
    sidecar: &Sidecar,
    (what, setter): (&str, &str),
    deadline: Instant,
    allow_http: bool,
) -> Result<Option<String>, FetchError> {
    let (url, required) = match sidecar {
        Sidecar::None => return Ok(None),
        Sidecar::Optional(url) => (url, false),
        Sidecar::Required(url) => (url, true),
    };
    let fetched = client.get(&Get {
        url,
        public: &[],
        private: headers,
        trusted: url,
        deadline,
        allow_http,
    })?;
    let status = fetched.status();
    if status.is_success() {
        return fetched.text(SIDECAR_LIMIT).map(Some);
    }
    let missing = matches!(status.as_u16(), 404 | 410);
    if !required && (missing || status == StatusCode::FORBIDDEN) {
        return Ok(None);
    }
    if missing {
        return Err(format!(
            "the {what} URL {} returned HTTP {status}: publish the {what} there, \
             or remove .{setter}() (or use .sidecars(), which makes it optional)",
            fetched.shown_url()
        )
        .into());
    }
    Err(status_error(
        &format!("the {what} URL"),
        &fetched.shown_url(),
        status,
    ))
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may be credentials: names only.
        let headers: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Http")
            .field("url", &self.url)
            .field("interval", &self.interval)
            .field("headers", &headers)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("checksum", &self.checksum)
            .field("signature", &self.signature)
            .field("private_roots", &matches!(self.roots, Roots::Only(_)))
            .field("allow_http", &self.allow_http)
            .finish_non_exhaustive()
    }
}

impl Fetcher for Http {
    fn interval(&self) -> Duration {
        self.interval
    }

    /// Checks the URLs, so that a mistake, or plain http where it is not
    /// allowed, shows at start.
    fn init(&mut self, context: &super::Context) -> Result<(), FetchError> {
        let url = parse_url(&self.url)?;
        plain_http_rule("the release URL", &url, self.allow_http)?;
        for (what, sidecar) in [
            ("the checksum URL", &self.checksum),
            ("the signature URL", &self.signature),
        ] {
            if let Sidecar::Optional(url) | Sidecar::Required(url) = sidecar {
                plain_http_rule(what, &parse_url(url)?, self.allow_http)?;
            }
        }
        // The installed binary's release: the first poll asks whether it changed.
        if let Some(tag) = &context.installed_tag {
            self.returned = Some(Validators::of_tag(tag));
        }
        Ok(())
    }

    fn retry(&mut self) {
        self.returned = None;
    }

    fn fetch(&mut self) -> Result<Option<Release>, FetchError> {
        let deadline = Instant::now() + self.timeout;
        let mut conditional = Vec::new();
        if let Some(seen) = &self.returned {
            if let Some(etag) = &seen.etag {
                conditional.push(("If-None-Match", etag.clone()));
            }
            if let Some(date) = &seen.last_modified {
                conditional.push(("If-Modified-Since", date.clone()));
            }
        }
        let (timeout, roots) = (self.connect_timeout, &self.roots);
        let client = &*self
            .client
            .get_or_insert_with(|| Client::with_roots(timeout, roots));
        let fetched = client.get(&Get {
            url: &self.url,
            public: &conditional,
            private: &self.headers,
            trusted: &self.url,
            deadline,
            allow_http: self.allow_http,
        })?;
        let status = fetched.status();
        if status == StatusCode::NOT_MODIFIED && !conditional.is_empty() {
            return Ok(None);
        }
        if !status.is_success() || matches!(status.as_u16(), 204..=206) {
            return Err(status_error("GET", &fetched.shown_url(), status));
        }
        let validators = Validators::of(&fetched);
        if let Some(seen) = &self.returned {
            if seen.same_release(&validators) {
                // The server ignored the conditional request; the body is not
                // read (dropping the response closes the connection).
                return Ok(None);
            }
        }
        let name = fetched
            .header(header::CONTENT_DISPOSITION)
            .and_then(disposition_filename)
            .or_else(|| last_segment(&fetched.url));
        let encoded = fetched
            .header(header::CONTENT_ENCODING)
            .is_some_and(|e| !e.eq_ignore_ascii_case("identity"));
        let size = fetched
            .response
            .body()
            .content_length()
            .filter(|_| !encoded);
        let source = shown(&parse_url(&self.url)?);
        let mut release = Release::new(fetched.response.into_body().into_reader(), source);
        release.name = name;
        release.size = size;
        release.tag = validators
            .etag
            .clone()
            .or_else(|| validators.last_modified.clone());
        let checksum = ("checksum", "checksum_url");
        let allow = self.allow_http;
        if let Some(text) = read_sidecar(
            client,
            &self.headers,
            &self.checksum,
            checksum,
            deadline,
            allow,
        )? {
            let name = release.name.as_deref();
            let hex = parse_checksum(&text, name).ok_or_else(|| {
                format!(
                    "the checksum file for {} holds no SHA-256 digest for {}: \
                     publish `sha256sum` output for it",
                    release.source,
                    name.unwrap_or("it")
                )
            })?;
            release.sha256 = Some(hex);
        }
        let signature = ("signature", "signature_url");
        release.signature = read_sidecar(
            client,
            &self.headers,
            &self.signature,
            signature,
            deadline,
            allow,
        )?;
        self.returned = (!validators.is_empty()).then_some(validators);
        Ok(Some(release))
    }
}

/// A web server or CDN as a read-only [`Store`](super::Store): the URL
/// given to [`Http::new`] is the base, and `name` is fetched at
/// `URL/name` (with the same headers, certificates and plain-http rule).
/// Reads are conditional: `If-None-Match` with the ETag, else
/// `If-Modified-Since` with the `Last-Modified` date (one-second
/// granularity: a server without ETags may answer "unchanged" for an object
/// replaced within the same second as the one read). Writing and listing
/// are refused: publish to the directory or bucket the server serves.
impl super::Store for Http {
    fn locate(&self, name: &str) -> String {
        format!("{}/{name}", self.url.trim_end_matches('/'))
    }

    fn read(
        &mut self,
        name: &str,
        limit: u64,
        tag: Option<&str>,
    ) -> Result<super::Object, FetchError> {
        super::store::check_name(name)?;
        let url = self.locate(name);
        let mut conditional = Vec::new();
        match tag {
            Some(t) if super::is_entity_tag(t) => {
                conditional.push(("If-None-Match", t.to_string()))
            }
            Some(t) => conditional.push(("If-Modified-Since", t.to_string())),
            None => {}
        }
        let fetched = self.store_get(&url, &conditional)?;
        let status = fetched.status();
        if status == StatusCode::NOT_MODIFIED && tag.is_some() {
            return Ok(super::Object::Unchanged);
        }
        if matches!(status.as_u16(), 404 | 410) {
            return Ok(super::Object::Missing);
        }
        if !status.is_success() || matches!(status.as_u16(), 204..=206) {
            return Err(status_error("GET", &fetched.shown_url(), status));
        }
        let validators = Validators::of(&fetched);
        let found = validators.etag.clone().or(validators.last_modified.clone());
        if found.is_some() && found.as_deref() == tag {
            return Ok(super::Object::Unchanged);
        }
        let shown_url = fetched.shown_url();
        let mut bytes = Vec::new();
        fetched
            .response
            .into_body()
            .into_reader()
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| format!("reading {shown_url}: {e}"))?;
        if bytes.len() as u64 > limit {
            return Err(format!("{shown_url}: larger than {limit} bytes").into());
        }
        Ok(super::Object::Found { bytes, tag: found })
    }

    fn open(&mut self, name: &str) -> Result<Box<dyn std::io::Read + Send>, FetchError> {
        super::store::check_name(name)?;
        let url = self.locate(name);
        let fetched = self.store_get(&url, &[])?;
        let status = fetched.status();
        if !status.is_success() || matches!(status.as_u16(), 204..=206) {
            return Err(status_error("GET", &fetched.shown_url(), status));
        }
        Ok(Box::new(fetched.response.into_body().into_reader()))
    }

    fn write(&mut self, name: &str, _bytes: &[u8]) -> Result<(), FetchError> {
        Err(format!(
            "{}: a web server is read-only here: write to the directory or bucket it serves",
            self.locate(name)
        )
        .into())
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<String>, FetchError> {
        Err(format!(
            "{}: a web server cannot be listed: read the directory or bucket it serves",
            self.locate(prefix)
        )
        .into())
    }
}

impl Http {
    /// One GET of `url` for the store, with the fetcher's settings.
    fn store_get(
        &mut self,
        url: &str,
        conditional: &[(&str, String)],
    ) -> Result<Fetched, FetchError> {
        let deadline = Instant::now() + self.timeout;
        let (timeout, roots) = (self.connect_timeout, &self.roots);
        let client = &*self
            .client
            .get_or_insert_with(|| Client::with_roots(timeout, roots));
        client.get(&Get {
            url,
            public: conditional,
            private: &self.headers,
            trusted: url,
            deadline,
            allow_http: self.allow_http,
        })
    }
}

/// The `filename` of a `Content-Disposition` header, when it is a plain name.
fn disposition_filename(value: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|param| {
        let (key, name) = param.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("filename") {
            return None;
        }
        let name = name.trim();
        let name = name
            .strip_prefix('"')
            .and_then(|n| n.strip_suffix('"'))
            .unwrap_or(name);
        plain_name(name).then(|| name.to_string())
    })
}

/// The last segment of a URL's path, percent-decoded, when it is a plain name.
fn last_segment(url: &Url) -> Option<String> {
    let segment = url.path_segments()?.next_back()?;
    let decoded = percent_decode_str(segment)
        .decode_utf8()
        .map_or_else(|_| segment.to_string(), |d| d.into_owned());
    plain_name(&decoded).then_some(decoded)
}

/// A file name with no path in it, nothing hidden and nothing odd.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c.is_control() || matches!(c, '/' | '\\' | '"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL")
    }

    #[test]
    fn file_names() {
        assert_eq!(
            disposition_filename("attachment; filename=\"app-1.2.tar.gz\"").as_deref(),
            Some("app-1.2.tar.gz")
        );
        assert_eq!(
            disposition_filename("attachment; filename=app.gz").as_deref(),
            Some("app.gz")
        );
        assert_eq!(disposition_filename("attachment; filename=\"../x\""), None);
        assert_eq!(disposition_filename("inline"), None);
        assert_eq!(
            last_segment(&url("http://h/a/my%20app.gz?x=1")).as_deref(),
            Some("my app.gz")
        );
        assert_eq!(last_segment(&url("http://h/dir/")), None);
        assert_eq!(last_segment(&url("http://h/a/x%2Fy")), None);
    }
}
