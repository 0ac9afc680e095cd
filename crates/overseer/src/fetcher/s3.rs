//! A release published as an object in Amazon S3 or an S3-compatible store
//! (MinIO, Ceph, Garage, R2, …), through Apache Arrow's `object_store` (see
//! `fetcher/object.rs` for the polling and streaming every store shares).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::ObjectStore;

use super::object::{
    check_endpoint, env_vars, extra_roots, is_certificate_error, options_with_roots, retry_config,
    Bucket, Poller, CLIENT_CONFIG, TLS_HINT,
};
use super::{Context, FetchError, Fetcher, Release};

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
/// service (`object_store`'s default chain). When they come from the
/// environment, the master keeps every `AWS_*` variable from the processes
/// it starts ([`Fetcher::credential_env`]).
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
    store: S3Store,
    poll: Poller,
}

/// Where the bucket is and how to sign requests to it.
struct S3Store {
    bucket: String,
    region: Option<String>,
    endpoint: Option<String>,
    path_style: Option<bool>,
    allow_http: bool,
    credentials: Option<(String, String)>,
    session_token: Option<String>,
    /// CA certificates trusted besides the system's.
    roots: Vec<object_store::Certificate>,
}

impl S3 {
    /// Watches `key` in `bucket` (polled every minute by default).
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> Self {
        S3 {
            store: S3Store {
                bucket: bucket.into(),
                region: None,
                endpoint: None,
                path_style: None,
                allow_http: false,
                credentials: None,
                session_token: None,
                roots: Vec::new(),
            },
            poll: Poller::new(key.into()),
        }
    }

    /// The bucket's region, e.g. `eu-west-1` (default: `AWS_REGION` or
    /// `AWS_DEFAULT_REGION` when no credentials are given here, else
    /// `us-east-1`). S3-compatible stores mostly accept any value.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.store.region = Some(region.into());
        self
    }

    /// The URL of an S3-compatible service, without the bucket, e.g.
    /// `https://minio.internal:9000` or `https://ACCOUNT.r2.cloudflarestorage.com`.
    ///
    /// Plain `http://` is accepted for loopback addresses (`127.0.0.0/8`,
    /// `[::1]`, `localhost`); anywhere else it needs [`S3::allow_http`].
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.store.endpoint = Some(url.into());
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
        self.store.path_style = Some(path_style);
        self
    }

    /// Allows a plain `http://` endpoint that is not a loopback address.
    ///
    /// Request signatures do not reveal the secret key, but anyone on the path
    /// can read the session token and replace the release in transit: only
    /// for a network you trust, and preferably with release signatures on.
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.store.allow_http = allow;
        self
    }

    /// Also trusts the CA certificates in `pem` (one or more `-----BEGIN
    /// CERTIFICATE-----` blocks), besides the system's: for an S3-compatible
    /// store whose certificate a private CA signed. An error names what is
    /// wrong with the PEM data.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let pem = std::fs::read("/etc/ssl/internal-ca.pem")?;
    /// let fetcher = overseer::fetcher::S3::new("releases", "myapp")
    ///     .endpoint("https://minio.internal:9000")
    ///     .add_root_certificates(&pem)?;
    /// # Ok(()) }
    /// ```
    pub fn add_root_certificates(mut self, pem: &[u8]) -> Result<Self, FetchError> {
        self.store.roots.extend(extra_roots(pem)?);
        Ok(self)
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
        self.store.credentials = Some((access_key_id.into(), secret_access_key.into()));
        self
    }

    /// A session token, for temporary credentials (STS).
    pub fn session_token(mut self, token: impl Into<String>) -> Self {
        self.store.session_token = Some(token.into());
        self
    }

    /// How often to look at the object (default 1 min). Each unchanged poll
    /// is one small request; S3 bills it as a GET.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.poll.interval = interval;
        self
    }

    /// A checksum object in the same bucket, `sha256sum` format (the first
    /// word is the hex digest). It must exist whenever the binary changes.
    pub fn checksum_key(mut self, key: impl Into<String>) -> Self {
        self.poll.checksum_key(key.into());
        self
    }

    /// A minisign signature object (the text of a `.minisig` file) in the
    /// same bucket. It must exist whenever the binary changes.
    pub fn signature_key(mut self, key: impl Into<String>) -> Self {
        self.poll.signature_key(key.into());
        self
    }

    /// Reads `KEY.sha256` and `KEY.minisig` beside the object when they exist
    /// (a missing one is simply absent). Keys set with
    /// [`S3::checksum_key`] / [`S3::signature_key`] are kept.
    pub fn sidecars(mut self) -> Self {
        self.poll.sidecars();
        self
    }
}

impl S3Store {
    fn location(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    fn build_store(&self) -> Result<Arc<dyn ObjectStore>, FetchError> {
        let source = self.location();
        // Explicit credentials: take nothing from the environment, so that a
        // stray AWS_SESSION_TOKEN cannot pair with the wrong key.
        let mut b = AmazonS3Builder::new();
        if !self.roots.is_empty() {
            // Before the environment's settings, which go on top of these.
            b = b.with_client_options(options_with_roots(&self.roots));
        }
        b = match &self.credentials {
            Some((id, secret)) => b.with_access_key_id(id).with_secret_access_key(secret),
            // What AmazonS3Builder::from_env reads.
            None => env_vars("AWS_")
                .filter_map(|(k, v)| Some((k.parse::<AmazonS3ConfigKey>().ok()?, v)))
                .fold(b, |b, (key, value)| b.with_config(key, value)),
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
            if check_endpoint(&source, endpoint, self.allow_http)? {
                b = b.with_allow_http(true);
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
        for (key, value) in CLIENT_CONFIG {
            b = b.with_config(AmazonS3ConfigKey::Client(key), value);
        }
        b = b.with_retry(retry_config());
        match b.build() {
            Ok(store) => Ok(Arc::new(store)),
            Err(e) => Err(format!("{source}: invalid S3 settings: {e}").into()),
        }
    }
}

impl Bucket for S3Store {
    fn location(&self) -> String {
        S3Store::location(self)
    }

    fn build(&self) -> Result<Arc<dyn ObjectStore>, FetchError> {
        self.build_store()
    }

    fn is_missing_container(&self, e: &object_store::Error) -> bool {
        is_no_such_bucket(e)
    }

    fn explain(&self, what: &str, e: &object_store::Error) -> FetchError {
        explain(what, e)
    }
}

impl fmt::Debug for S3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let store = &self.store;
        f.debug_struct("S3")
            .field("bucket", &store.bucket)
            .field("key", &self.poll.key)
            .field("region", &store.region)
            .field("endpoint", &store.endpoint)
            .field("path_style", &store.path_style)
            .field("allow_http", &store.allow_http)
            // The access key id is no secret and tells which one is in use.
            .field("access_key_id", &store.credentials.as_ref().map(|c| &c.0))
            .field("interval", &self.poll.interval)
            .field("checksum", &self.poll.checksum)
            .field("signature", &self.poll.signature)
            .field("etag", &self.poll.etag)
            .finish_non_exhaustive()
    }
}

super::object::bucket_store!(S3);

impl Fetcher for S3 {
    fn interval(&self) -> Duration {
        self.poll.interval
    }

    /// `AWS_*`, unless credentials were given to [`S3::credentials`] (then
    /// none is read).
    fn credential_env(&self) -> Vec<String> {
        match self.store.credentials {
            Some(_) => Vec::new(),
            None => vec!["AWS_*".into()],
        }
    }

    /// Checks the settings and makes the client, so mistakes show at start.
    fn init(&mut self, context: &Context) -> Result<(), FetchError> {
        self.poll
            .init(&self.store, context.installed_tag.as_deref())
    }

    fn retry(&mut self) {
        self.poll.retry();
    }

    fn fetch(&mut self) -> Result<Option<Release>, FetchError> {
        self.poll.fetch(&self.store)
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
    } else if is_certificate_error(e) {
        TLS_HINT
    } else {
        match e {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                "access denied: check the credentials, and that the bucket policy (or IAM policy) allows this request (s3:GetObject to poll; s3:PutObject and s3:ListBucket to publish or report)"
            }
            // No credentials anywhere: object_store asked the instance
            // metadata service last.
            _ if has("credential") || has("Credential") || has("169.254.169.254") => {
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
            .store
            .build_store()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("allow_http"), "{err}");
        assert!(S3::new("b", "k")
            .endpoint("http://minio.internal:9000")
            .allow_http(true)
            .credentials("a", "s")
            .store
            .build_store()
            .is_ok());
        assert!(S3::new("b", "k")
            .endpoint("http://127.0.0.1:9000")
            .credentials("a", "s")
            .store
            .build_store()
            .is_ok());
    }

    #[test]
    fn bad_keys_are_refused_at_init() {
        let mut s3 = S3::new("b", "dir//app").credentials("a", "s");
        let err = s3
            .poll
            .init(&s3.store, None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("not a usable object key"), "{err}");
    }

    #[test]
    fn the_environment_is_withheld_only_when_read() {
        assert_eq!(S3::new("b", "k").credential_env(), ["AWS_*"]);
        assert!(S3::new("b", "k")
            .credentials("id", "secret")
            .credential_env()
            .is_empty());
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
