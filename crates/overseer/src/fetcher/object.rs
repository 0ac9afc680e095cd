//! What the object-store fetchers (`S3`, `Azure`, `Gcs`) share:
//! polling one object by ETag, the checksum and signature objects beside it,
//! and streaming its body, through Apache Arrow's `object_store`.
//!
//! `object_store` is async; the master's upgrade thread is not. A fetcher
//! owns a private current-thread tokio runtime, made on first use, and blocks
//! on it: for the request in [`Fetcher::fetch`](super::Fetcher::fetch), then
//! for each chunk as the master reads [`Release::body`], so a large object
//! streams through without ever being held in memory whole. Nothing runs on
//! that runtime between calls; it costs no thread of its own.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    Attribute, ClientConfigKey, GetOptions, ObjectStore, ObjectStoreExt, RetryConfig,
};
use tokio::runtime::Runtime;

use super::{FetchError, Object, Release};
use crate::log;

/// Sidecar objects (checksum, signature) are small text files; anything
/// bigger is a mistake in the key, not a checksum.
const SIDECAR_LIMIT: u64 = 64 * 1024;

/// The user-defined metadata entry (`x-amz-meta-version`,
/// `x-ms-meta-version`, `x-goog-meta-version`) read as [`Release::version`].
const VERSION_METADATA: &str = "version";

/// What differs from one store to another.
pub(super) trait Bucket {
    /// `s3://BUCKET`, `az://ACCOUNT/CONTAINER` or `gs://BUCKET`: an object's name in
    /// messages is this, a slash and its key.
    fn location(&self) -> String;
    /// The checked client (made once, on first use).
    fn build(&self) -> Result<Arc<dyn ObjectStore>, FetchError>;
    /// Whether a "not found" is about the bucket or container rather than
    /// the object.
    fn is_missing_container(&self, e: &object_store::Error) -> bool;
    /// The error, with what to do about it when the cause is a common one.
    fn explain(&self, what: &str, e: &object_store::Error) -> FetchError;
}

/// A checksum or signature object beside the release.
#[derive(Debug, Clone)]
pub(super) struct Sidecar {
    pub key: String,
    /// Set explicitly: a missing object is an error. Guessed by
    /// [`Poller::sidecars`]: a missing object is simply absent.
    pub required: bool,
}

#[derive(Clone)]
struct Conn {
    runtime: Arc<Runtime>,
    store: Arc<dyn ObjectStore>,
    key: Path,
    checksum: Option<(Path, bool)>,
    signature: Option<(Path, bool)>,
}

/// The polling of one object: what was last seen and taken.
pub(super) struct Poller {
    pub key: String,
    pub interval: Duration,
    pub checksum: Option<Sidecar>,
    pub signature: Option<Sidecar>,
    /// The store and its runtime, made on first use.
    conn: Option<Conn>,
    /// ETag of the last object returned, sent as `If-None-Match`.
    pub etag: Option<String>,
    /// Identity (ETag, or size and date) of the last object returned.
    taken: Option<String>,
    /// Set by the last returned body when reading it failed: that release is
    /// then offered again even though its ETag did not change.
    body_failed: Option<Arc<AtomicBool>>,
    /// A missing object was already reported once (debug), until it appears.
    missing_reported: bool,
}

impl Poller {
    /// Polls `key` every minute.
    pub fn new(key: String) -> Poller {
        Poller {
            key,
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

    pub fn checksum_key(&mut self, key: String) {
        self.checksum = Some(Sidecar {
            key,
            required: true,
        });
    }

    pub fn signature_key(&mut self, key: String) {
        self.signature = Some(Sidecar {
            key,
            required: true,
        });
    }

    /// `KEY.sha256` and `KEY.minisig`, when present, unless keys were set.
    pub fn sidecars(&mut self) {
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
    }

    /// Checks the settings and makes the client, so mistakes show at start.
    /// `installed` is the tag of the release the installed binary came from
    /// (`Context::installed_tag`): the first poll is then conditional on it.
    pub fn init(&mut self, store: &dyn Bucket, installed: Option<&str>) -> Result<(), FetchError> {
        if let Some(tag) = installed {
            self.taken = Some(tag.to_string());
            // An identity without an ETag is `size@date`.
            self.etag = super::is_entity_tag(tag).then(|| tag.to_string());
        }
        self.connect(store).map(drop)
    }

    /// Forgets the last object, so the next poll offers it again.
    pub fn retry(&mut self) {
        self.etag = None;
        self.taken = None;
    }

    /// The store and runtime, made on first use.
    fn connect(&mut self, store: &dyn Bucket) -> Result<Conn, FetchError> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let source = format!("{}/{}", store.location(), self.key);
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
        let client = store.build()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("{source}: cannot start the runtime for its requests: {e}"))?;
        let conn = Conn {
            runtime: Arc::new(runtime),
            store: client,
            key,
            checksum,
            signature,
        };
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// One poll: a conditional `GET` of the object.
    pub fn fetch(&mut self, store: &dyn Bucket) -> Result<Option<Release>, FetchError> {
        let source = format!("{}/{}", store.location(), self.key);
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(format!(
                "{source}: this fetcher blocks, and was called inside an async runtime; call it from a plain thread (as the master does)"
            )
            .into());
        }
        let conn = self.connect(store)?;
        // The last body broke off (network error): offer that release again.
        if let Some(failed) = self.body_failed.take() {
            if failed.load(Ordering::Relaxed) {
                self.retry();
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
            Err(e @ object_store::Error::NotFound { .. }) if !store.is_missing_container(&e) => {
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
            Err(e) => return Err(store.explain(&source, &e)),
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

        let (sha256, signature) = match self.sidecars_of(store, &conn) {
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

    /// Reads a small sidecar object as text; `None` when it is missing and
    /// was not asked for explicitly.
    fn sidecar(
        store: &dyn Bucket,
        conn: &Conn,
        path: &Path,
        required: bool,
        method: &str,
    ) -> Result<Option<String>, FetchError> {
        let what = format!("{}/{path}", store.location());
        let result = match conn.runtime.block_on(conn.store.get(path)) {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) if !required => return Ok(None),
            Err(e @ object_store::Error::NotFound { .. }) if !store.is_missing_container(&e) => {
                return Err(format!(
                    "{what} not found: upload it before the binary changes (it is read right after), or drop .{method}()"
                )
                .into())
            }
            Err(e) => return Err(store.explain(&what, &e)),
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
            .map_err(|e| store.explain(&what, &e))?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| format!("{what} is not text: check .{method}()").into())
    }

    /// The checksum (hex) and signature read from the sidecar objects.
    fn sidecars_of(
        &self,
        store: &dyn Bucket,
        conn: &Conn,
    ) -> Result<(Option<String>, Option<String>), FetchError> {
        let mut sha256 = None;
        if let Some((path, required)) = &conn.checksum {
            if let Some(text) = Self::sidecar(store, conn, path, *required, "checksum_key")? {
                match text.split_whitespace().next() {
                    Some(hex) => sha256 = Some(hex.to_string()),
                    None => {
                        return Err(format!(
                            "{}/{path} is empty; it should hold `HEX  NAME` as sha256sum writes it",
                            store.location()
                        )
                        .into())
                    }
                }
            }
        }
        let signature = match &conn.signature {
            Some((path, required)) => Self::sidecar(store, conn, path, *required, "signature_key")?,
            None => None,
        };
        Ok((sha256, signature))
    }
}

/// The objects of a [`Store`](super::Store) made of a bucket: `name` is
/// under the fetcher's key, taken as a prefix.
impl Poller {
    /// The key of `name` under the prefix.
    pub fn store_key(&self, name: &str) -> Result<String, FetchError> {
        super::store::check_name(name)?;
        let prefix = self.key.trim_matches('/');
        Ok(if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        })
    }

    /// The client and runtime, refusing to block inside another runtime.
    fn blocking(&mut self, bucket: &dyn Bucket, what: &str) -> Result<Conn, FetchError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(format!(
                "{what}: this store blocks, and was called inside an async runtime; call it from a plain thread"
            )
            .into());
        }
        self.connect(bucket)
    }

    pub fn store_read(
        &mut self,
        bucket: &dyn Bucket,
        name: &str,
        limit: u64,
        tag: Option<&str>,
    ) -> Result<Object, FetchError> {
        let key = self.store_key(name)?;
        let what = format!("{}/{key}", bucket.location());
        let conn = self.blocking(bucket, &what)?;
        let options = GetOptions {
            if_none_match: tag.map(str::to_string),
            ..GetOptions::default()
        };
        let result = match conn
            .runtime
            .block_on(conn.store.get_opts(&Path::from(key.as_str()), options))
        {
            Ok(r) => r,
            Err(object_store::Error::NotModified { .. }) => return Ok(Object::Unchanged),
            Err(e @ object_store::Error::NotFound { .. }) if !bucket.is_missing_container(&e) => {
                return Ok(Object::Missing)
            }
            Err(e) => return Err(bucket.explain(&what, &e)),
        };
        let found = result.meta.e_tag.clone();
        if found.is_some() && found.as_deref() == tag {
            // The store ignored If-None-Match.
            let _in_runtime = conn.runtime.enter();
            drop(result);
            return Ok(Object::Unchanged);
        }
        if result.meta.size > limit {
            let _in_runtime = conn.runtime.enter();
            drop(result);
            return Err(format!("{what}: larger than {limit} bytes").into());
        }
        let bytes = conn
            .runtime
            .block_on(result.bytes())
            .map_err(|e| bucket.explain(&what, &e))?;
        if bytes.len() as u64 > limit {
            return Err(format!("{what}: larger than {limit} bytes").into());
        }
        Ok(Object::Found {
            bytes: bytes.to_vec(),
            tag: found,
        })
    }

    pub fn store_open(
        &mut self,
        bucket: &dyn Bucket,
        name: &str,
    ) -> Result<Box<dyn Read + Send>, FetchError> {
        let key = self.store_key(name)?;
        let what = format!("{}/{key}", bucket.location());
        let conn = self.blocking(bucket, &what)?;
        let result = conn
            .runtime
            .block_on(conn.store.get(&Path::from(key.as_str())))
            .map_err(|e| bucket.explain(&what, &e))?;
        Ok(Box::new(Body {
            runtime: conn.runtime.clone(),
            stream: Some(result.into_stream().map(|c| c.map(Vec::from)).boxed()),
            chunk: Vec::new(),
            pos: 0,
            source: what,
            failed: Arc::new(AtomicBool::new(false)),
        }))
    }

    pub fn store_write(
        &mut self,
        bucket: &dyn Bucket,
        name: &str,
        bytes: &[u8],
    ) -> Result<(), FetchError> {
        let key = self.store_key(name)?;
        let what = format!("{}/{key}", bucket.location());
        let conn = self.blocking(bucket, &what)?;
        // A PUT replaces an object whole: readers see the old one or the new.
        conn.runtime
            .block_on(conn.store.put(
                &Path::from(key.as_str()),
                object_store::PutPayload::from(bytes.to_vec()),
            ))
            .map(drop)
            .map_err(|e| bucket.explain(&what, &e))
    }

    pub fn store_list(
        &mut self,
        bucket: &dyn Bucket,
        prefix: &str,
    ) -> Result<Vec<String>, FetchError> {
        let key = self.store_key(prefix)?;
        let what = format!("{}/{key}", bucket.location());
        let conn = self.blocking(bucket, &what)?;
        let base = self.store_key("x")?;
        let base = &base[..base.len() - 1];
        let listed: Vec<_> = conn.runtime.block_on(
            conn.store
                .list(Some(&Path::from(key.trim_end_matches('/'))))
                .collect::<Vec<_>>(),
        );
        let mut names = Vec::new();
        for meta in listed {
            let meta = meta.map_err(|e| bucket.explain(&what, &e))?;
            if let Some(name) = meta.location.as_ref().strip_prefix(base) {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Makes a bucket fetcher (`$fetcher { store: $bucket, poll: Poller }`) a
/// [`Store`](super::Store) under its key.
macro_rules! bucket_store {
    ($fetcher:ty) => {
        impl super::Store for $fetcher {
            fn locate(&self, name: &str) -> String {
                match self.poll.store_key(name) {
                    Ok(key) => format!("{}/{key}", self.store.location()),
                    Err(_) => format!("{}/{}/{name}", self.store.location(), self.poll.key),
                }
            }
            fn read(
                &mut self,
                name: &str,
                limit: u64,
                tag: Option<&str>,
            ) -> Result<super::Object, FetchError> {
                self.poll.store_read(&self.store, name, limit, tag)
            }
            fn open(&mut self, name: &str) -> Result<Box<dyn std::io::Read + Send>, FetchError> {
                self.poll.store_open(&self.store, name)
            }
            fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), FetchError> {
                self.poll.store_write(&self.store, name, bytes)
            }
            fn list(&mut self, prefix: &str) -> Result<Vec<String>, FetchError> {
                self.poll.store_list(&self.store, prefix)
            }
            fn credential_env(&self) -> Vec<String> {
                super::Fetcher::credential_env(self)
            }
        }
    };
}
pub(super) use bucket_store;

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
                    "{}: release body read inside an async runtime; read it from a plain thread",
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

/// The client settings every store gets: a stalled connection is noticed in
/// a minute; a slow but moving download of a large release is cut only after
/// an hour (the master bounds the size). Nothing drives the runtime between
/// polls, so a pooled connection never learns that the server closed it:
/// idle ones are dropped before a store would (S3 closes them after about
/// 20 s).
pub(super) const CLIENT_CONFIG: [(ClientConfigKey, &str); 4] = [
    (ClientConfigKey::ConnectTimeout, "10s"),
    (ClientConfigKey::ReadTimeout, "60s"),
    (ClientConfigKey::Timeout, "1h"),
    (ClientConfigKey::PoolIdleTimeout, "15s"),
];

/// Retries stay short: the next poll is the real retry.
pub(super) fn retry_config() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
        ..RetryConfig::default()
    }
}

/// The CA certificates of a PEM bundle, to trust besides the system's
/// (one or more `-----BEGIN CERTIFICATE-----` blocks).
pub(super) fn extra_roots(pem: &[u8]) -> Result<Vec<object_store::Certificate>, FetchError> {
    let blocks = String::from_utf8_lossy(pem)
        .matches("-----BEGIN CERTIFICATE-----")
        .count();
    if blocks == 0 {
        return Err("CA certificates: no certificate in it \
                    (expected -----BEGIN CERTIFICATE----- blocks)"
            .into());
    }
    object_store::Certificate::from_pem_bundle(pem)
        .map_err(|e| format!("CA certificates: not a valid PEM file: {e}").into())
}

/// Client options trusting `roots` besides the system's certificates, with
/// [`CLIENT_CONFIG`] applied by the caller as for every store.
pub(super) fn options_with_roots(
    roots: &[object_store::Certificate],
) -> object_store::ClientOptions {
    roots
        .iter()
        .fold(object_store::ClientOptions::new(), |o, c| {
            o.with_root_certificate(c.clone())
        })
}

/// The environment variables starting with `prefix`, names in lower case,
/// as the store builders' `from_env` read them.
pub(super) fn env_vars(prefix: &'static str) -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(move |(k, v)| {
        let (k, v) = (k.into_string().ok()?, v.into_string().ok()?);
        k.starts_with(prefix).then(|| (k.to_ascii_lowercase(), v))
    })
}

/// The hint for a refused TLS certificate.
pub(super) const TLS_HINT: &str = "the store's TLS certificate was refused: check the endpoint's host name, and for a private CA add it with add_root_certificates (or --ca-file)";

/// Whether an error is a refused TLS certificate.
pub(super) fn is_certificate_error(e: &object_store::Error) -> bool {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.contains("certificate") || text.contains("UnknownIssuer")
}

/// Checks an endpoint URL: `https://`, or `http://` as the network
/// fetchers' rule allows (loopback, or with consent). Returns whether it is
/// plain http.
pub(super) fn check_endpoint(
    location: &str,
    endpoint: &str,
    allow_http: bool,
) -> Result<bool, FetchError> {
    let url = url::Url::parse(endpoint)
        .ok()
        .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()));
    let Some(url) = url else {
        return Err(format!(
            "{location}: endpoint {endpoint:?} is not a URL; write it as https://host[:port]"
        )
        .into());
    };
    match url.scheme() {
        "https" => Ok(false),
        "http" => {
            super::plain_http::plain_http_rule(&format!("{location}: endpoint"), &url, allow_http)?;
            Ok(true)
        }
        _ => Err(format!(
            "{location}: endpoint {endpoint} must start with https:// (or http:// on loopback)"
        )
        .into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::PutPayload;

    /// A store in memory (which honours `If-None-Match`).
    struct Memory(Arc<InMemory>);

    impl Bucket for Memory {
        fn location(&self) -> String {
            "memory://test".into()
        }
        fn build(&self) -> Result<Arc<dyn ObjectStore>, FetchError> {
            Ok(self.0.clone())
        }
        fn is_missing_container(&self, _e: &object_store::Error) -> bool {
            false
        }
        fn explain(&self, what: &str, e: &object_store::Error) -> FetchError {
            format!("{what}: {e}").into()
        }
    }

    fn put(store: &Memory, bytes: &'static [u8]) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime
            .block_on(
                store
                    .0
                    .put(&Path::from("app"), PutPayload::from_static(bytes)),
            )
            .unwrap();
    }

    #[test]
    fn the_installed_release_is_not_offered_again_to_a_new_poller() {
        let store = Memory(Arc::new(InMemory::new()));
        put(&store, b"release one");
        let mut first = Poller::new("app".into());
        first.init(&store, None).unwrap();
        let release = first.fetch(&store).unwrap().expect("a release");
        let tag = release.tag.clone().expect("a tag");
        drop(release);
        assert!(first.fetch(&store).unwrap().is_none());

        // A restarted master's poller, told which release is installed.
        let mut second = Poller::new("app".into());
        second.init(&store, Some(&tag)).unwrap();
        assert!(second.fetch(&store).unwrap().is_none());
        put(&store, b"release two");
        let next = second.fetch(&store).unwrap().expect("the new release");
        assert_ne!(next.tag.as_deref(), Some(tag.as_str()));

        // Without an ETag the identity is size@date: remembered, not sent.
        let mut third = Poller::new("app".into());
        third
            .init(&store, Some("11@2026-01-01 00:00:00 UTC"))
            .unwrap();
        assert_eq!(third.etag, None);
        assert!(third.fetch(&store).unwrap().is_some());
    }

    #[test]
    fn endpoints() {
        let check = |e: &str, allow: bool| check_endpoint("s3://b", e, allow);
        assert!(!check("https://s3.example.com", false).unwrap());
        assert!(check("http://127.0.0.1:9000", false).unwrap());
        assert!(check("http://localhost:9000/", false).unwrap());
        assert!(check("http://minio.internal:9000", true).unwrap());
        let err = check("http://minio.internal:9000", false).unwrap_err();
        assert!(err.to_string().contains("allow_http"), "{err}");
        for bad in ["minio.internal:9000", "ftp://host", "nonsense", "http://"] {
            assert!(check(bad, true).is_err(), "{bad}");
        }
    }
}
