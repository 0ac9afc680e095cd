//! A release published as an object in Amazon S3 or an S3-compatible store
//! (MinIO, Ceph, Garage, R2, …), through Apache Arrow's `object_store`.
//!
//! `object_store` is async; the master's upgrade thread is not. The fetcher
//! owns a private current-thread tokio runtime, made on first use, and blocks
//! on it: for the request in [`Fetcher::fetch`], then for each chunk as the
//! master reads [`Release::body`], so a large object streams through without
//! ever being held in memory whole. Nothing runs on that runtime between
//! calls; it costs no thread of its own.

use std::fmt;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{
    Attribute, ClientConfigKey, GetOptions, ObjectStore, ObjectStoreExt, RetryConfig,
};
use tokio::runtime::Runtime;

use super::{Context, FetchError, Fetcher, Release};
use crate::log;

/// Sidecar objects (checksum, signature) are small text files; anything
/// bigger is a mistake in the key, not a checksum.
const SIDECAR_LIMIT: u64 = 64 * 1024;

/// The user-defined metadata entry (`x-amz-meta-version`) read as
/// [`Release::version`].
const VERSION_METADATA: &str = "version";

/// Polls one object in an S3 bucket and takes it whenever its ETag changes.
///
/// Each poll is one conditional `GET` (`If-None-Match` with the ETag last
/// returned): an unchanged object costs one request and no body. Stores that
/// ignore the condition and answer in full are handled too: the ETag is
/// compared and the body dropped unread.
///
/// A missing object is not an error: before the first release is published
/// there is simply nothing to take, so the fetch answers "nothing new" (one
/// debug line) and looks again at the next poll. A missing *bucket* is an
/// error, as it almost always means a wrong name, region or endpoint.
///
/// Credentials, in order: those given to [`S3::credentials`]; otherwise the
/// usual environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, and also `AWS_REGION`, `AWS_ENDPOINT`, …); otherwise
/// a web identity token, the ECS task role or the EC2 instance metadata
/// service (`object_store`'s default chain).
///
/// Checksum and signature files are read beside the object when asked for
/// ([`S3::sidecars`], [`S3::checksum_key`], [`S3::signature_key`]). They are
/// read right after a changed object is found, so upload them *before* the
/// binary.
///
/// ```no_run
/// use std::time::Duration;
/// let fetcher = overseer::fetcher::S3::new("acme-releases", "myapp/x86_64-linux/myapp")
///     .region("eu-west-1")
///     .sidecars() // myapp.sha256 and myapp.minisig, when present
///     .interval(Duration::from_secs(300));
/// overseer::run(overseer::Config::new(|_| {}).fetcher(fetcher));
/// ```
///
/// An S3-compatible store on the same machine, path-style, fixed keys:
///
/// ```no_run
/// let fetcher = overseer::fetcher::S3::new("releases", "myapp")
///     .endpoint("http://127.0.0.1:9000")
///     .credentials("minio-user", "minio-secret");
/// # let _ = fetcher;
/// ```
pub struct S3 {
    bucket: String,
    key: String,
    region: Option<String>,
    endpoint: Option<String>,
    path_style: Option<bool>,
    allow_http: bool,
    credentials: Option<(String, String)>,
    session_token: Option<String>,
    interval: Duration,
    checksum: Option<Sidecar>,
    signature: Option<Sidecar>,
    /// The store and its runtime, made on first use.
    conn: Option<Conn>,
    /// ETag of the last object returned, sent as `If-None-Match`.
    etag: Option<String>,
    /// Identity (ETag, or size and date) of the last object returned.
    taken: Option<String>,
    /// Set by the last returned body when reading it failed: that release is
    /// then offered again even though its ETag did not change.
    body_failed: Option<Arc<AtomicBool>>,
    /// A missing object was already reported once (debug), until it appears.
    missing_reported: bool,
}

#[derive(Debug, Clone)]
struct Sidecar {
    key: String,
    /// Set explicitly: a missing object is an error. Guessed by
    /// [`S3::sidecars`]: a missing object is simply absent.
    required: bool,
}

#[derive(Clone)]
struct Conn {
    runtime: Arc<Runtime>,
    store: AmazonS3,
    key: Path,
    checksum: Option<(Path, bool)>,
    signature: Option<(Path, bool)>,
}

impl S3 {
    /// Watches `key` in `bucket` (polled every minute by default).
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> Self {
        S3 {
            bucket: bucket.into(),
            key: key.into(),
            region: None,
            endpoint: None,
            path_style: None,
            allow_http: false,
            credentials: None,
            session_token: None,
            interval: Duration::from_secs(60),
            checksum: None,
            signature: None,
            conn: None,
            etag: None,
            taken: None,
            body_failed: None,
            missing_reported: false,
        }
    }

    /// The bucket's region, e.g. `eu-west-1` (default: `AWS_REGION` or
    /// `AWS_DEFAULT_REGION` when no credentials are given here, else
    /// `us-east-1`). S3-compatible stores mostly accept any value.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// The URL of an S3-compatible service, without the bucket, e.g.
    /// `https://minio.internal:9000` or `https://ACCOUNT.r2.cloudflarestorage.com`.
    ///
    /// Plain `http://` is accepted for loopback addresses (`127.0.0.0/8`,
    /// `[::1]`, `localhost`); anywhere else it needs [`S3::allow_http`].
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Path-style requests (`https://endpoint/bucket/key`, `true`) or
    /// virtual-hosted ones (`https://bucket.endpoint/key`, `false`).
    ///
    /// The default is path-style (or `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` when
    /// no credentials are given here), which AWS and S3-compatible stores
    /// accept; some stores, and AWS for some newer features, want
    /// virtual-hosted requests.
    pub fn path_style(mut self, path_style: bool) -> Self {
        self.path_style = Some(path_style);
        self
    }

    /// Allows a plain `http://` endpoint that is not a loopback address.
    ///
    /// Request signatures do not reveal the secret key, but anyone on the path
    /// can read the session token and replace the release in transit: only
    /// for a network you trust, and preferably with release signatures on.
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// The access key id and secret access key to sign requests with.
    ///
    /// Without this call, credentials come from the environment or the
    /// instance metadata service (see [`S3`]).
    pub fn credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.credentials = Some((access_key_id.into(), secret_access_key.into()));
        self
    }

    /// A session token, for temporary credentials (STS).
    pub fn session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }

    /// How often to look at the object (default 1 min). Each unchanged poll
    /// is one small request; S3 bills it as a GET.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// A checksum object in the same bucket, `sha256sum` format (the first
    /// word is the hex digest). It must exist whenever the binary changes.
    pub fn checksum_key(mut self, key: impl Into<String>) -> Self {
        self.checksum = Some(Sidecar {
            key: key.into(),
            required: true,
        });
        self
    }

    /// A minisign signature object (the text of a `.minisig` file) in the
    /// same bucket. It must exist whenever the binary changes.
    pub fn signature_key(mut self, key: impl Into<String>) -> Self {
        self.signature = Some(Sidecar {
            key: key.into(),
            required: true,
        });
        self
    }

    /// Reads `KEY.sha256` and `KEY.minisig` beside the object when they exist
    /// (a missing one is simply absent). Keys set with
    /// [`S3::checksum_key`] / [`S3::signature_key`] are kept.
    pub fn sidecars(mut self) -> Self {
        if self.checksum.is_none() {
            self.checksum = Some(Sidecar {
                key: format!("{}.sha256", self.key),
                required: false,
            });
        }
        if self.signature.is_none() {
            self.signature = Some(Sidecar {
                key: format!("{}.minisig", self.key),
                required: false,
            });
        }
        self
    }

    fn source(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// The store and runtime, made on first use.
    fn connect(&mut self) -> Result<Conn, FetchError> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let source = self.source();
        let path = |key: &str| {
            Path::parse(key).map_err(|e| {
                format!("{source}: {key:?} is not a usable object key ({e}); keys are written `dir/name`, without empty or `.` segments")
            })
        };
        let key = path(&self.key)?;
        let checksum = match &self.checksum {
            Some(s) => Some((path(&s.key)?, s.required)),
            None => None,
        };
        let signature = match &self.signature {
            Some(s) => Some((path(&s.key)?, s.required)),
            None => None,
        };
        let store = self.build_store()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("{source}: cannot start the runtime for S3 requests: {e}"))?;
        let conn = Conn {
            runtime: Arc::new(runtime),
            store,
            key,
            checksum,
            signature,
        };
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    fn build_store(&self) -> Result<AmazonS3, FetchError> {
        let source = self.source();
        // Explicit credentials: take nothing from the environment, so that a
        // stray AWS_SESSION_TOKEN cannot pair with the wrong key.
        let mut b = match &self.credentials {
            Some((id, secret)) => AmazonS3Builder::new()
                .with_access_key_id(id)
                .with_secret_access_key(secret),
            None => AmazonS3Builder::from_env(),
        };
        b = b.with_bucket_name(&self.bucket);
        if let Some(token) = &self.session_token {
            b = b.with_token(token);
        }
        if let Some(region) = &self.region {
            b = b.with_region(region);
        }
        if let Some(path_style) = self.path_style {
            b = b.with_virtual_hosted_style_request(!path_style);
        }
        if let Some(endpoint) = &self.endpoint {
            let endpoint = endpoint.trim_end_matches('/');
            let Some((scheme, _)) = endpoint.split_once("://") else {
                return Err(format!(
                    "{source}: endpoint {endpoint:?} is not a URL; write it as https://host[:port]"
                )
                .into());
            };
            if scheme.eq_ignore_ascii_case("http") {
                if !self.allow_http && !is_loopback(endpoint) {
                    return Err(format!(
                        "{source}: endpoint {endpoint} is plain http on a non-loopback address; use https, or call .allow_http(true) for a network you trust"
                    )
                    .into());
                }
                b = b.with_allow_http(true);
            } else if !scheme.eq_ignore_ascii_case("https") {
                return Err(format!(
                    "{source}: endpoint {endpoint} must start with https:// (or http:// on loopback)"
                )
                .into());
            }
            // object_store wants the bucket inside a virtual-hosted endpoint;
            // ours is always the service's, as for path-style.
            let endpoint = if self.path_style == Some(false) {
                virtual_hosted(endpoint, &self.bucket)
            } else {
                endpoint.to_string()
            };
            b = b.with_endpoint(endpoint);
        } else if self.allow_http {
            b = b.with_allow_http(true);
        }
        // A stalled connection is noticed in a minute; a slow but moving
        // download of a large release is cut only after an hour (the master
        // bounds the size). Retries stay short: the next poll is the real
        // retry.
        b = b
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "10s",
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ReadTimeout),
                "60s",
            )
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "1h")
            // Nothing drives the runtime between polls, so a pooled connection
            // never learns that the server closed it: drop idle ones before
            // the store would (S3 closes them after about 20 s).
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::PoolIdleTimeout),
                "15s",
            )
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            });
        b.build()
            .map_err(|e| format!("{source}: invalid S3 settings: {e}").into())
    }

    /// Reads a small sidecar object as text; `None` when it is missing and
    /// was not asked for explicitly.
    fn sidecar(
        &self,
        conn: &Conn,
        path: &Path,
        required: bool,
        method: &str,
    ) -> Result<Option<String>, FetchError> {
        let what = format!("s3://{}/{}", self.bucket, path);
        let result = match conn.runtime.block_on(conn.store.get(path)) {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) if !required => return Ok(None),
            Err(e @ object_store::Error::NotFound { .. }) if !is_no_such_bucket(&e) => {
                return Err(format!(
                    "{what} not found: upload it before the binary changes (it is read right after), or drop .{method}()"
                )
                .into())
            }
            Err(e) => return Err(explain(&what, &e)),
        };
        if result.meta.size > SIDECAR_LIMIT {
            return Err(format!(
                "{what} is {} bytes, far too big for a checksum or signature file: check .{method}()",
                result.meta.size
            )
            .into());
        }
        let bytes = conn
            .runtime
            .block_on(result.bytes())
            .map_err(|e| explain(&what, &e))?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| format!("{what} is not text: check .{method}()").into())
    }

    /// The checksum (hex) and signature read from the sidecar objects.
    fn sidecars_of(&self, conn: &Conn) -> Result<(Option<String>, Option<String>), FetchError> {
        let mut sha256 = None;
        if let Some((path, required)) = &conn.checksum {
            if let Some(text) = self.sidecar(conn, path, *required, "checksum_key")? {
                match text.split_whitespace().next() {
                    Some(hex) => sha256 = Some(hex.to_string()),
                    None => {
                        return Err(format!(
                            "s3://{}/{path} is empty; it should hold `HEX  NAME` as sha256sum writes it",
                            self.bucket
                        )
                        .into())
                    }
                }
            }
        }
        let signature = match &conn.signature {
            Some((path, required)) => self.sidecar(conn, path, *required, "signature_key")?,
            None => None,
        };
        Ok((sha256, signature))
    }
}

impl fmt::Debug for S3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3")
            .field("bucket", &self.bucket)
            .field("key", &self.key)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            // The access key id is no secret and tells which one is in use.
            .field("access_key_id", &self.credentials.as_ref().map(|c| &c.0))
            .field("interval", &self.interval)
            .field("checksum", &self.checksum)
            .field("signature", &self.signature)
            .field("etag", &self.etag)
            .finish_non_exhaustive()
    }
}

impl Fetcher for S3 {
    fn interval(&self) -> Duration {
        self.interval
    }

    /// Checks the settings and makes the client, so mistakes show at start.
    fn init(&mut self, _context: &Context) -> Result<(), FetchError> {
        self.connect().map(drop)
    }

    fn retry(&mut self) {
        self.etag = None;
        self.taken = None;
    }

    fn fetch(&mut self) -> Result<Option<Release>, FetchError> {
        let source = self.source();
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(format!(
                "{source}: the S3 fetcher blocks, and was called inside an async runtime; call it from a plain thread (as the master does)"
            )
            .into());
        }
        let conn = self.connect()?;
        // The last body broke off (network error): offer that release again.
        if let Some(failed) = self.body_failed.take() {
            if failed.load(Ordering::Relaxed) {
                self.etag = None;
                self.taken = None;
            } else {
                self.body_failed = Some(failed);
            }
        }
        let options = GetOptions {
            if_none_match: self.etag.clone(),
            ..GetOptions::default()
        };
        let result = match conn
            .runtime
            .block_on(conn.store.get_opts(&conn.key, options))
        {
            Ok(r) => r,
            Err(object_store::Error::NotModified { .. }) => return Ok(None),
            Err(e @ object_store::Error::NotFound { .. }) if !is_no_such_bucket(&e) => {
                // Not published yet (or being replaced): the normal state of a
                // fresh deployment, so nothing new rather than an error.
                if !self.missing_reported {
                    self.missing_reported = true;
                    log::debug!(
                        "{source}: no such object (yet); looking again every {:?}",
                        self.interval
                    );
                }
                return Ok(None);
            }
            Err(e) => return Err(explain(&source, &e)),
        };
        self.missing_reported = false;
        let meta = &result.meta;
        let identity = match &meta.e_tag {
            Some(etag) => etag.clone(),
            None => format!("{}@{}", meta.size, meta.last_modified),
        };
        if self.taken.as_deref() == Some(identity.as_str()) {
            // The store ignored If-None-Match: same object, body unread.
            let _in_runtime = conn.runtime.enter();
            drop(result);
            return Ok(None);
        }
        let etag = meta.e_tag.clone();
        let size = meta.size;
        let version = result
            .attributes
            .get(&Attribute::Metadata(VERSION_METADATA.into()))
            .map(|v| v.as_ref().to_string());

        let (sha256, signature) = match self.sidecars_of(&conn) {
            Ok(found) => found,
            Err(e) => {
                let _in_runtime = conn.runtime.enter();
                drop(result);
                return Err(e);
            }
        };

        let failed = Arc::new(AtomicBool::new(false));
        let body = Body {
            runtime: conn.runtime.clone(),
            stream: Some(result.into_stream().map(|c| c.map(Vec::from)).boxed()),
            chunk: Vec::new(),
            pos: 0,
            source: source.clone(),
            failed: failed.clone(),
        };
        let mut release = Release::new(body, source).tag(identity.clone()).size(size);
        if let Some(name) = self.key.rsplit('/').next().filter(|n| !n.is_empty()) {
            release = release.name(name);
        }
        if let Some(hex) = sha256 {
            release = release.sha256(hex);
        }
        if let Some(sig) = signature {
            release = release.signature(sig);
        }
        if let Some(version) = version {
            release = release.version(version);
        }
        self.etag = etag;
        self.taken = Some(identity);
        self.body_failed = Some(failed);
        Ok(Some(release))
    }
}

/// The object's bytes as a blocking reader: each `read` past the current
/// chunk waits for the next one on the fetcher's runtime.
struct Body {
    runtime: Arc<Runtime>,
    stream: Option<BoxStream<'static, object_store::Result<Vec<u8>>>>,
    chunk: Vec<u8>,
    pos: usize,
    source: String,
    failed: Arc<AtomicBool>,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos == self.chunk.len() {
            let Some(stream) = self.stream.as_mut() else {
                return Ok(0);
            };
            if tokio::runtime::Handle::try_current().is_ok() {
                return Err(io::Error::other(format!(
                    "{}: S3 release body read inside an async runtime; read it from a plain thread",
                    self.source
                )));
            }
            match self.runtime.block_on(stream.next()) {
                Some(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Some(Err(e)) => {
                    self.failed.store(true, Ordering::Relaxed);
                    self.close();
                    return Err(io::Error::other(format!(
                        "{}: download broke off: {e}",
                        self.source
                    )));
                }
                None => {
                    self.close();
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Body {
    /// Drops the response inside the runtime, whose I/O it belongs to.
    fn close(&mut self) {
        let _in_runtime = self.runtime.enter();
        self.stream = None;
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.close();
    }
}

/// Whether a 404 is about the bucket rather than the object.
fn is_no_such_bucket(e: &object_store::Error) -> bool {
    e.to_string().contains("NoSuchBucket")
}

/// The error, with what to do about it when the cause is a common one.
fn explain(what: &str, e: &object_store::Error) -> FetchError {
    let text = e.to_string();
    let has = |code: &str| text.contains(code);
    let hint = if has("SignatureDoesNotMatch") {
        "the request signature was refused: the secret key does not match the access key id; check the credentials"
    } else if has("InvalidAccessKeyId") || has("NotSignedUp") {
        "the store does not know this access key id: check the credentials, and that they belong to this endpoint"
    } else if has("ExpiredToken") || has("TokenRefreshRequired") {
        "the session token has expired: renew the credentials"
    } else if has("AuthorizationHeaderMalformed")
        || has("PermanentRedirect")
        || has("incorrectly configured region")
    {
        "the bucket is in another region: set .region() (or AWS_REGION) to the bucket's region"
    } else if has("NoSuchBucket") {
        "no such bucket: check the bucket name, the region and the endpoint"
    } else {
        match e {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                "access denied: check the credentials, and that the bucket policy (or IAM policy) allows s3:GetObject on this key"
            }
            _ if has("credential") || has("Credential") => {
                "no usable credentials: pass .credentials(..), set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with an instance or task role"
            }
            _ if has("error sending request") || has("onnect") => {
                "cannot reach the store: check the endpoint (or region) and the network"
            }
            _ => "",
        }
    };
    if hint.is_empty() {
        format!("{what}: {text}").into()
    } else {
        format!("{what}: {hint} ({text})").into()
    }
}

/// Whether an `http://` URL names a loopback host.
fn is_loopback(url: &str) -> bool {
    let Some(host) = authority(url) else {
        return false;
    };
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The `host[:port]` part of a URL.
fn authority(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    rest.split(['/', '?', '#']).next()
}

/// `scheme://host/p` with the bucket put in front of the host.
fn virtual_hosted(endpoint: &str, bucket: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{bucket}.{rest}"),
        None => format!("{bucket}.{endpoint}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_endpoints() {
        for url in [
            "http://127.0.0.1:9000",
            "http://127.1.2.3",
            "http://localhost:9000/",
            "http://[::1]:9000",
            "http://user@127.0.0.1:1/x",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "http://10.0.0.1:9000",
            "http://minio.internal",
            "http://[::2]:9000",
            "http://localhost.example.com",
            "nonsense",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn virtual_hosted_endpoint() {
        assert_eq!(
            virtual_hosted("https://minio.internal:9000", "rel"),
            "https://rel.minio.internal:9000"
        );
    }

    #[test]
    fn plain_http_needs_loopback_or_consent() {
        let err = S3::new("b", "k")
            .endpoint("http://minio.internal:9000")
            .credentials("a", "s")
            .build_store()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("allow_http"), "{err}");
        assert!(S3::new("b", "k")
            .endpoint("http://minio.internal:9000")
            .allow_http(true)
            .credentials("a", "s")
            .build_store()
            .is_ok());
        assert!(S3::new("b", "k")
            .endpoint("http://127.0.0.1:9000")
            .credentials("a", "s")
            .build_store()
            .is_ok());
    }

    #[test]
    fn bad_keys_are_refused_at_init() {
        let mut s3 = S3::new("b", "dir//app").credentials("a", "s");
        let err = s3
            .connect()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("not a usable object key"), "{err}");
    }

    #[test]
    fn debug_hides_the_secret() {
        let s3 = S3::new("b", "k")
            .credentials("AKIDEXAMPLE", "very-secret")
            .session_token("token-secret");
        let text = format!("{s3:?}");
        assert!(text.contains("AKIDEXAMPLE"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
