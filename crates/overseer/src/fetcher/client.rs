//! The small blocking HTTP client behind the HTTP and GitHub fetchers, and
//! the helpers they share (URLs, checksum files, status messages).
//!
//! The client follows redirects itself rather than letting ureq do it, for
//! one reason: credentials. ureq drops only `Authorization` on a redirect, but
//! a token may travel in any header (`PRIVATE-TOKEN`, `X-Api-Key`), and a
//! release URL commonly redirects to a storage host that must not see it. So
//! each request has *private* headers, sent only to the origin (scheme, host
//! and port) they were meant for, and *public* ones (conditional requests,
//! `Accept`) sent on every hop.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ureq::http::{header, Response, StatusCode, Uri};
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::{Agent, Body};
use url::Url;

use super::plain_http::{plain_http_rule, shown};
use super::FetchError;

/// Redirects followed before giving up (curl's default is 50, browsers ~20).
const MAX_REDIRECTS: usize = 10;

/// The largest checksum or signature file read (they are a few hundred bytes).
pub(super) const SIDECAR_LIMIT: u64 = 64 * 1024;

/// Sent on every request, so a server's logs say who polls it.
const USER_AGENT: &str = concat!("overseer/", env!("CARGO_PKG_VERSION"));

/// A blocking HTTP client that follows redirects without leaking credentials.
#[derive(Debug)]
pub(super) struct Client {
    agent: Agent,
}

/// One GET request: where to, with which headers, and until when.
pub(super) struct Get<'a> {
    /// The URL asked for.
    pub url: &'a str,
    /// Headers sent on every hop (conditional requests, `Accept`).
    pub public: &'a [(&'a str, String)],
    /// Headers that may carry credentials: sent only to `trusted`'s origin.
    pub private: &'a [(String, String)],
    /// The URL whose origin may see `private` headers.
    pub trusted: &'a str,
    /// When the whole exchange, body included, must be over.
    pub deadline: Instant,
    /// Plain http to a host that is not loopback is allowed (see
    /// [`plain_http_rule`]); it is refused otherwise, for the URL asked
    /// for and for every redirect, before connecting.
    pub allow_http: bool,
}

/// A response, and the URL it finally came from (after redirects).
pub(super) struct Fetched {
    pub url: Url,
    pub response: Response<Body>,
}

impl Fetched {
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    /// The URL for messages: without any `user:password@`.
    pub fn shown_url(&self) -> String {
        shown(&self.url)
    }

    /// Reads a small text body (a checksum, a signature, API JSON).
    pub fn text(self, limit: u64) -> Result<String, FetchError> {
        let url = self.shown_url();
        let mut text = String::new();
        self.response
            .into_body()
            .into_reader()
            .take(limit + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("reading {url}: {e}"))?;
        if text.len() as u64 > limit {
            return Err(format!("{url} is larger than {limit} bytes: is it the right URL?").into());
        }
        Ok(text)
    }
}

/// Bytes read from the network at a time.
const INPUT_BUFFER: usize = 64 * 1024;
/// The largest response head (status line and headers) accepted.
const MAX_RESPONSE_HEAD: usize = 48 * 1024;
/// The largest request head (request line, URL and headers) sent.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// The certificates an HTTPS client trusts.
#[derive(Clone, Debug, Default)]
pub(super) enum Roots {
    /// The Mozilla roots bundled with the client.
    #[default]
    Bundled,
    /// Only these (a private CA).
    Only(std::sync::Arc<Vec<Certificate<'static>>>),
}

/// The crypto behind HTTPS (see the `tls-*` features).
fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    #[cfg(feature = "tls-aws-lc-rs")]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(all(feature = "tls-ring", not(feature = "tls-aws-lc-rs")))]
    let provider = rustls::crypto::ring::default_provider();
    std::sync::Arc::new(provider)
}

#[cfg(not(any(feature = "tls-ring", feature = "tls-aws-lc-rs")))]
compile_error!(
    "the HTTP and GitHub fetchers need a crypto provider for HTTPS: enable the feature \
     tls-ring (a default feature) or tls-aws-lc-rs"
);

/// ureq's resolver without its thread where there is no name to look up.
///
/// To bound a lookup by its timeout, ureq's resolver runs it on a new thread,
/// even for an address such as `127.0.0.1`, which needs no lookup at all:
/// a thread started and ended on every poll of a release server on the same
/// host or network. Addresses are answered here; names still go to ureq.
#[derive(Debug, Default)]
struct Resolver(DefaultResolver);

impl ureq::unversioned::resolver::Resolver for Resolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        match ip_address(uri) {
            Some(address) => {
                let mut addresses = self.empty();
                addresses.push(address);
                Ok(addresses)
            }
            None => self.0.resolve(uri, config, timeout),
        }
    }
}

/// The socket address of a URL whose host is an IP address (`[…]` for v6),
/// read by the same host parser as the URLs the client is given.
fn ip_address(uri: &Uri) -> Option<SocketAddr> {
    let ip = match url::Host::parse(uri.host()?).ok()? {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        url::Host::Domain(_) => return None,
    };
    let port = match (uri.port_u16(), uri.scheme_str()) {
        (Some(port), _) => port,
        (None, Some("http")) => 80,
        (None, Some("https")) => 443,
        (None, _) => return None,
    };
    Some(SocketAddr::new(ip, port))
}

impl Roots {
    /// Only the certificates of a PEM bundle: one or more `CERTIFICATE`
    /// blocks; other blocks (a private key left in the file) are ignored.
    pub fn from_pem(pem: &[u8]) -> Result<Roots, FetchError> {
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => return Err(format!("CA certificates: not a valid PEM file: {e}").into()),
            }
        }
        if certs.is_empty() {
            return Err("CA certificates: no certificate in it \
                        (expected -----BEGIN CERTIFICATE----- blocks)"
                .into());
        }
        Ok(Roots::Only(std::sync::Arc::new(certs)))
    }
}

impl Client {
    /// A client trusting `roots` for HTTPS.
    pub fn with_roots(connect_timeout: Duration, roots: &Roots) -> Client {
        let tls = TlsConfig::builder().unversioned_rustls_crypto_provider(crypto_provider());
        let tls = match roots {
            Roots::Bundled => tls,
            Roots::Only(certs) => tls.root_certs(RootCerts::Specific(certs.clone())),
        };
        let builder = Agent::config_builder().tls_config(tls.build());
        let config = builder
            // Statuses are ours to explain (with the URL and a fix).
            .http_status_as_error(false)
            // Redirects are ours to follow (see the module docs).
            .max_redirects(0)
            .timeout_resolve(Some(connect_timeout))
            .timeout_connect(Some(connect_timeout))
            .user_agent(USER_AGENT)
            // The client lives in the master, which should stay small: one
            // idle connection (reused by the next poll, which saves a TLS
            // handshake) and buffers sized for a poll rather than ureq's
            // 128 KiB each. A download streams to disk through 64 KiB reads.
            // The largest response head accepted must fit the input buffer
            // with room to spare, or ureq reports a disconnection instead.
            .max_idle_connections(1)
            .max_idle_connections_per_host(1)
            .input_buffer_size(INPUT_BUFFER)
            .max_response_header_size(MAX_RESPONSE_HEAD)
            .output_buffer_size(MAX_REQUEST_HEAD)
            .build();
        let agent = Agent::with_parts(config, DefaultConnector::default(), Resolver::default());
        Client { agent }
    }

    /// Sends a GET, following redirects (at most [`MAX_REDIRECTS`]), and
    /// returns the first response that is not a redirect, whatever its status.
    pub fn get(&self, get: &Get<'_>) -> Result<Fetched, FetchError> {
        let trusted = parse_url(get.trusted)?.origin();
        let mut url = parse_url(get.url)?;
        plain_http_rule("GET", &url, get.allow_http)?;
        for _ in 0..=MAX_REDIRECTS {
            let remaining = get.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(format!("GET {}: timed out (raise the timeout)", shown(&url)).into());
            }
            // The bytes as published: no transport compression to undo (and
            // no Content-Length that counts compressed bytes).
            let mut request = self
                .agent
                .get(url.as_str())
                .header("Accept-Encoding", "identity");
            for (name, value) in get.public {
                request = request.header(*name, value);
            }
            if url.origin() == trusted {
                for (name, value) in get.private {
                    request = request.header(name, value);
                }
            }
            let response = request
                .config()
                .timeout_global(Some(remaining))
                .build()
                .call()
                .map_err(|e| request_error(&url, &e))?;
            if !is_redirect(response.status()) {
                return Ok(Fetched { url, response });
            }
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    format!(
                        "{} redirected ({}) without a usable Location header: \
                         fix the server, or use the final URL",
                        shown(&url),
                        response.status()
                    )
                })?;
            let next = resolve(&url, location)?;
            if url.scheme() == "https" && next.scheme() != "https" {
                return Err(format!(
                    "{} redirected from https to plain http ({}): refused; \
                     serve releases over https",
                    shown(&url),
                    shown(&next)
                )
                .into());
            }
            plain_http_rule(
                &format!("{} redirected to", shown(&url)),
                &next,
                get.allow_http,
            )?;
            url = next;
        }
        Err(format!(
            "GET {}: more than {MAX_REDIRECTS} redirects: is there a redirect loop?",
            get.url
        )
        .into())
    }
}

/// What to check when the TLS handshake fails.
const TLS_HINT: &str = "check that the server's certificate names this host and is signed by \
                        a trusted CA (for a private CA: root_certificates, or --ca-file)";

fn request_error(url: &Url, e: &ureq::Error) -> String {
    let hint = match e {
        ureq::Error::Timeout(_) => "raise the timeout, or check the server",
        ureq::Error::HostNotFound => "check the host name in the URL",
        // A refused certificate surfaces as an I/O error from the handshake.
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) => TLS_HINT,
        ureq::Error::Io(io) if io.to_string().contains("certificate") => TLS_HINT,
        ureq::Error::LargeResponseHeader(..) => {
            "the server's status line and headers exceed 48 KiB: is it the right URL?"
        }
        // ureq does not export the protocol error's type; its text is stable.
        ureq::Error::Protocol(p) if p.to_string().starts_with("output too small") => {
            "the URL and the configured headers exceed 16 KiB: shorten them"
        }
        ureq::Error::Io(_) | ureq::Error::ConnectionFailed => {
            "check the URL and that the server is reachable"
        }
        _ => "check the URL and the configured headers",
    };
    format!("GET {}: {e}: {hint}", shown(url))
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Parses an absolute http(s) URL (which always has a host). Credentials
/// are scoped to its origin ([`Url::origin`]: scheme, host and port).
pub(super) fn parse_url(url: &str) -> Result<Url, FetchError> {
    let parsed = Url::parse(url).map_err(|e| format!("invalid URL '{url}': {e}"))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        _ => {
            Err(format!("invalid URL '{url}': expected http://HOST/... or https://HOST/...").into())
        }
    }
}

/// Resolves a `Location` header against the URL that sent it (RFC 3986 §5),
/// without its fragment, which is never sent.
fn resolve(base: &Url, location: &str) -> Result<Url, FetchError> {
    let unusable = |e: FetchError| -> FetchError {
        format!("{} redirected to an unusable location: {e}", shown(base)).into()
    };
    let mut next = base
        .join(location)
        .map_err(|e| unusable(format!("invalid URL '{location}': {e}").into()))?;
    next.set_fragment(None);
    parse_url(next.as_str()).map_err(unusable)
}

/// The hex digest for `name` in a `sha256sum`-style file: the line naming the
/// file, else the file's only digest (a file listing several others has none).
pub(super) fn parse_checksum(text: &str, name: Option<&str>) -> Option<String> {
    if let Some(hex) = name.and_then(|n| named_checksum(text, n)) {
        return Some(hex);
    }
    let mut digests = checksum_lines(text);
    match (digests.next(), digests.next()) {
        (Some((hex, _)), None) => Some(hex.to_string()),
        _ => None,
    }
}

/// The hex digest on the line of a `sha256sum`-style file naming `name`.
pub(super) fn named_checksum(text: &str, name: &str) -> Option<String> {
    checksum_lines(text)
        .find(|(_, file)| *file == Some(name))
        .map(|(hex, _)| hex.to_string())
}

/// The lines of a `sha256sum`-style file that start with a SHA-256 digest,
/// with the file name they give (binary-mode `*` and directories removed).
fn checksum_lines(text: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    text.lines().filter_map(|line| {
        let mut words = line.split_whitespace();
        let hex = words.next()?;
        let bare = hex.strip_prefix("sha256:").unwrap_or(hex);
        if bare.len() != 64 || !bare.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let file = words
            .next()
            .map(|f| f.trim_start_matches('*'))
            .map(|f| f.rsplit('/').next().unwrap_or(f));
        Some((hex, file))
    })
}

/// Explains a status that is neither a success nor a redirect.
pub(super) fn status_error(what: &str, url: &str, status: StatusCode) -> FetchError {
    let hint = match status.as_u16() {
        401 | 403 => "check the credentials (the token or headers set on the fetcher)",
        404 | 410 => "check the URL: nothing is published there",
        408 | 429 => "the server is busy; raise the poll interval",
        500..=599 => "the server failed; the next poll tries again",
        _ => "check the URL and the server",
    };
    format!("{what} {url} returned HTTP {status}: {hint}").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL")
    }

    #[test]
    fn addresses_need_no_lookup() {
        let uri = |s: &str| s.parse::<Uri>().expect("test URL");
        let address = |s: &str| ip_address(&uri(s)).map(|a| a.to_string());
        assert_eq!(
            address("http://127.0.0.1/a").as_deref(),
            Some("127.0.0.1:80")
        );
        assert_eq!(
            address("https://10.1.2.3/a").as_deref(),
            Some("10.1.2.3:443")
        );
        assert_eq!(
            address("http://[::1]:8080/a").as_deref(),
            Some("[::1]:8080")
        );
        assert_eq!(address("https://example.com/a"), None);
        assert_eq!(address("https://127.0.0.1.example.com/a"), None);
    }

    #[test]
    fn resolves_locations() {
        let base = url("http://a.example:8080/dir/file?q=1");
        let cases = [
            ("https://b.example/x", "https://b.example/x"),
            ("//c.example/y", "http://c.example/y"),
            ("/abs?z=2", "http://a.example:8080/abs?z=2"),
            ("rel", "http://a.example:8080/dir/rel"),
            ("?only=query", "http://a.example:8080/dir/file?only=query"),
            ("next#frag", "http://a.example:8080/dir/next"),
        ];
        for (location, want) in cases {
            let got = resolve(&base, location).expect("resolves");
            assert_eq!(got.to_string(), want, "{location}");
        }
        assert!(resolve(&base, "ftp://x/y").is_err());
    }

    #[test]
    fn origins_compare_scheme_host_port() {
        let a = url("http://Example.com/x").origin();
        assert_eq!(a, url("http://example.com:80/y").origin());
        assert_ne!(a, url("https://example.com/x").origin());
        assert_ne!(a, url("http://example.com:8080/x").origin());
        assert_ne!(a, url("http://other.example.com/x").origin());
    }

    #[test]
    fn hides_credentials() {
        assert_eq!(
            shown(&url("https://u:p@host.example/a?b=c")),
            "https://host.example/a?b=c"
        );
    }

    #[test]
    fn checksum_files() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        assert_eq!(parse_checksum(&format!("{a}\n"), None), Some(a.clone()));
        let sums = format!("{a}  other.tar.gz\n{b} *dist/app.tar.gz\n");
        assert_eq!(parse_checksum(&sums, Some("app.tar.gz")), Some(b.clone()));
        assert_eq!(parse_checksum(&sums, Some("missing")), None);
        let one = format!("{a}  renamed.tar.gz\n");
        assert_eq!(parse_checksum(&one, Some("app.tar.gz")), Some(a.clone()));
        assert_eq!(parse_checksum("not a digest\n", None), None);
    }
}
