//! A release published as an object in Google Cloud Storage, through Apache
//! Arrow's `object_store` (see `fetcher/object.rs` for the polling and
//! streaming every store shares).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::ObjectStore;

use super::object::{
    check_endpoint, env_vars, extra_roots, is_certificate_error, options_with_roots, retry_config,
    Bucket, Poller, CLIENT_CONFIG, TLS_HINT,
};
use super::{Context, FetchError, Fetcher, Release};

/// Where Google Cloud Storage's XML API answers.
const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

/// Polls one object in a Google Cloud Storage bucket and takes it whenever
/// its ETag changes.
///
/// Each poll is one conditional `GET` (`If-None-Match` with the ETag last
/// returned): an unchanged object costs one request and no body. A missing
/// object is not an error (nothing is published yet: the fetch answers
/// "nothing new" and looks again at the next poll); a missing *bucket* is,
/// as it almost always means a wrong name. The object's custom metadata
/// entry `version` (`x-goog-meta-version`, set with `gcloud storage
/// objects update --custom-metadata=version=1.2.3`) becomes
/// [`Release::version`].
///
/// Credentials, in order: a service account key given to
/// [`Gcs::service_account_key`] or [`Gcs::service_account_path`], or a
/// token given to [`Gcs::bearer_token`]; otherwise the environment, as
/// `object_store` reads it: `GOOGLE_SERVICE_ACCOUNT` (a key file's path) or
/// `GOOGLE_SERVICE_ACCOUNT_KEY` (its JSON), then application default
/// credentials (`GOOGLE_APPLICATION_CREDENTIALS`, or the file `gcloud auth
/// application-default login` writes), then the metadata server of the VM
/// or container (GCE, GKE, Cloud Run). The identity needs read access to the
/// objects (the "Storage Object Viewer" role on the bucket). When they come
/// from the environment, the master keeps every `GOOGLE_*` variable from the
/// processes it starts ([`Fetcher::credential_env`]).
///
/// Checksum and signature objects are read beside the release when asked for
/// ([`Gcs::sidecars`], [`Gcs::checksum_key`], [`Gcs::signature_key`]),
/// right after a changed object is found, so upload them *before* the binary.
///
/// ```no_run
/// use std::time::Duration;
/// let fetcher = overseer::fetcher::Gcs::new("acme-releases", "myapp/linux-x86_64")
///     .sidecars() // myapp/linux-x86_64.sha256 and .minisig, when present
///     .interval(Duration::from_secs(300));
/// overseer::run(overseer::Config::new(|_| {}).fetcher(fetcher));
/// ```
pub struct Gcs {
    store: GcsStore,
    poll: Poller,
}

/// Where the bucket is and how to authorise requests to it.
struct GcsStore {
    bucket: String,
    service_account_key: Option<String>,
    service_account_path: Option<String>,
    bearer_token: Option<String>,
    endpoint: Option<String>,
    allow_http: bool,
    /// CA certificates trusted besides the system's.
    roots: Vec<object_store::Certificate>,
}

impl Gcs {
    /// Watches `object` (its name in the bucket, e.g. `myapp/linux-x86_64`)
    /// in `bucket` (polled every minute by default).
    pub fn new(bucket: impl Into<String>, object: impl Into<String>) -> Self {
        Gcs {
            store: GcsStore {
                bucket: bucket.into(),
                service_account_key: None,
                service_account_path: None,
                bearer_token: None,
                endpoint: None,
                allow_http: false,
                roots: Vec::new(),
            },
            poll: Poller::new(object.into()),
        }
    }

    /// A service account key: the JSON text of the key file the console or
    /// `gcloud iam service-accounts keys create` makes. Requests are then
    /// authorised with tokens signed by that key. Without this, the path,
    /// or a token, credentials come from the environment (see [`Gcs`]).
    pub fn service_account_key(mut self, json: impl Into<String>) -> Self {
        self.store.service_account_key = Some(json.into());
        self
    }

    /// A service account key file, read when the fetcher starts.
    pub fn service_account_path(mut self, path: impl Into<String>) -> Self {
        self.store.service_account_path = Some(path.into());
        self
    }

    /// An OAuth 2.0 access token sent as is with every request. Google's
    /// access tokens expire within an hour and this one is never refreshed:
    /// for a proxy or a test server rather than for Google itself, where a
    /// service account or the metadata server keeps tokens fresh.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.store.bearer_token = Some(token.into());
        self
    }

    /// The XML API's URL, without the bucket (default
    /// `https://storage.googleapis.com`): for a private endpoint
    /// (`https://storage-xyz.p.googleapis.com`) or a server speaking the same
    /// protocol.
    ///
    /// Plain `http://` is accepted for loopback addresses; anywhere else it
    /// needs [`Gcs::allow_http`].
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.store.endpoint = Some(url.into());
        self
    }

    /// Allows a plain `http://` endpoint that is not a loopback address:
    /// only for a network you trust, and preferably with release signatures
    /// on (anyone on the path can replace the release in transit).
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.store.allow_http = allow;
        self
    }

    /// Also trusts the CA certificates in `pem` (one or more `-----BEGIN
    /// CERTIFICATE-----` blocks), besides the system's: for an endpoint (a
    /// proxy) whose certificate a private CA signed. An error names what is
    /// wrong with the PEM data.
    pub fn add_root_certificates(mut self, pem: &[u8]) -> Result<Self, FetchError> {
        self.store.roots.extend(extra_roots(pem)?);
        Ok(self)
    }

    /// How often to look at the object (default 1 min). Each unchanged poll
    /// is one small request.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.poll.interval = interval;
        self
    }

    /// A checksum object in the same bucket, `sha256sum` format (the first
    /// word is the hex digest). It must exist whenever the binary changes.
    pub fn checksum_key(mut self, object: impl Into<String>) -> Self {
        self.poll.checksum_key(object.into());
        self
    }

    /// A minisign signature object (the text of a `.minisig` file) in the
    /// same bucket. It must exist whenever the binary changes.
    pub fn signature_key(mut self, object: impl Into<String>) -> Self {
        self.poll.signature_key(object.into());
        self
    }

    /// Reads `OBJECT.sha256` and `OBJECT.minisig` beside the object when they
    /// exist (a missing one is simply absent). Objects set with
    /// [`Gcs::checksum_key`] / [`Gcs::signature_key`] are kept.
    pub fn sidecars(mut self) -> Self {
        self.poll.sidecars();
        self
    }
}

impl GcsStore {
    fn location(&self) -> String {
        format!("gs://{}", self.bucket)
    }

    fn explicit_credentials(&self) -> bool {
        self.service_account_key.is_some()
            || self.service_account_path.is_some()
            || self.bearer_token.is_some()
    }

    fn build_store(&self) -> Result<Arc<dyn ObjectStore>, FetchError> {
        let source = self.location();
        if self.service_account_key.is_some() && self.service_account_path.is_some() {
            return Err(format!(
                "{source}: both a service account key and a key file were given; pass one"
            )
            .into());
        }
        let mut b = GoogleCloudStorageBuilder::new();
        if !self.roots.is_empty() {
            // Before the environment's settings, which go on top of these.
            b = b.with_client_options(options_with_roots(&self.roots));
        }
        // Explicit credentials: take none from the environment, so that a
        // stray variable cannot pair with the wrong project.
        if !self.explicit_credentials() {
            // What GoogleCloudStorageBuilder::from_env reads.
            b = env_vars("GOOGLE_")
                .filter_map(|(k, v)| Some((k.parse::<GoogleConfigKey>().ok()?, v)))
                .fold(b, |b, (key, value)| b.with_config(key, value));
        }
        b = b.with_bucket_name(&self.bucket);
        if let Some(key) = &self.service_account_key {
            b = b.with_service_account_key(key);
        }
        if let Some(path) = &self.service_account_path {
            b = b.with_service_account_path(path);
        }
        if let Some(token) = &self.bearer_token {
            b = b.with_bearer_token(token);
        }
        // The builder allows plain http by default; this fetcher does not.
        let endpoint = self.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT);
        let endpoint = endpoint.trim_end_matches('/');
        let http = check_endpoint(&source, endpoint, self.allow_http)?;
        b = b.with_base_url(endpoint).with_config(
            GoogleConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
            http.to_string(),
        );
        for (key, value) in CLIENT_CONFIG {
            b = b.with_config(GoogleConfigKey::Client(key), value);
        }
        b = b.with_retry(retry_config());
        match b.build() {
            Ok(store) => Ok(Arc::new(store)),
            Err(e) => Err(self.explain(
                &format!("{source}: invalid Google Cloud Storage settings"),
                &e,
            )),
        }
    }
}

impl Bucket for GcsStore {
    fn location(&self) -> String {
        GcsStore::location(self)
    }

    fn build(&self) -> Result<Arc<dyn ObjectStore>, FetchError> {
        self.build_store()
    }

    fn is_missing_container(&self, e: &object_store::Error) -> bool {
        e.to_string().contains("NoSuchBucket")
    }

    fn explain(&self, what: &str, e: &object_store::Error) -> FetchError {
        let text = e.to_string();
        let has = |code: &str| text.contains(code);
        let hint = if has("NoSuchBucket") {
            "no such bucket: check the bucket name and the endpoint"
        } else if is_certificate_error(e) {
            TLS_HINT
        } else if has("open service account file") || has("open application credentials file") {
            "cannot read the key file: check its path and permissions"
        } else if has("decode service account")
            || has("decode application credentials")
            || has("private key")
            || text.to_ascii_lowercase().contains("pem")
        {
            "the service account key is not usable: pass the whole JSON key file the console or gcloud made"
        } else {
            match e {
                object_store::Error::PermissionDenied { .. } => {
                    "access denied: the identity needs read access to the bucket's objects (Storage Object Viewer)"
                }
                object_store::Error::Unauthenticated { .. } => {
                    "the credentials were refused: check the service account key (or token) and that it has not been deleted or expired"
                }
                _ if has("metadata") || has("credential") || has("Credential") => {
                    "no usable credentials: pass .service_account_key(..), set GOOGLE_APPLICATION_CREDENTIALS, or run where the metadata server answers"
                }
                _ if has("error sending request") || has("onnect") => {
                    "cannot reach the store: check the endpoint and the network"
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
}

impl fmt::Debug for Gcs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let store = &self.store;
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "..");
        f.debug_struct("Gcs")
            .field("bucket", &store.bucket)
            .field("object", &self.poll.key)
            .field("endpoint", &store.endpoint)
            .field("allow_http", &store.allow_http)
            .field("service_account_key", &hidden(&store.service_account_key))
            .field("service_account_path", &store.service_account_path)
            .field("bearer_token", &hidden(&store.bearer_token))
            .field("interval", &self.poll.interval)
            .field("checksum", &self.poll.checksum)
            .field("signature", &self.poll.signature)
            .field("etag", &self.poll.etag)
            .finish_non_exhaustive()
    }
}

super::object::bucket_store!(Gcs);

impl Fetcher for Gcs {
    fn interval(&self) -> Duration {
        self.poll.interval
    }

    /// `GOOGLE_*`, unless credentials were given explicitly (then none is
    /// read).
    fn credential_env(&self) -> Vec<String> {
        if self.store.explicit_credentials() {
            Vec::new()
        } else {
            vec!["GOOGLE_*".into()]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_needs_loopback_or_consent() {
        let build = |gcs: Gcs| gcs.bearer_token("t").store.build_store().err();
        let err = build(Gcs::new("b", "o").endpoint("http://storage.internal"))
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("allow_http"), "{err}");
        let remote = Gcs::new("b", "o").endpoint("http://storage.internal");
        assert!(build(remote.allow_http(true)).is_none());
        let local = Gcs::new("b", "o").endpoint("http://127.0.0.1:4443");
        assert!(build(local).is_none());
        assert!(build(Gcs::new("b", "o")).is_none());
    }

    #[test]
    fn a_key_and_a_key_file_together_are_refused() {
        let err = Gcs::new("b", "o")
            .service_account_key("{}")
            .service_account_path("/etc/key.json")
            .store
            .build_store()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("pass one"), "{err}");
    }

    #[test]
    fn a_broken_key_is_refused_at_start_with_a_hint() {
        let err = Gcs::new("b", "o")
            .service_account_key("{\"not\": \"a key\"}")
            .store
            .build_store()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("gs://b"), "{err}");
        assert!(err.contains("JSON key file"), "{err}");
    }

    #[test]
    fn a_missing_key_file_or_a_bad_private_key_is_named() {
        let err = |gcs: Gcs| {
            gcs.store
                .build_store()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let missing = err(Gcs::new("b", "o").service_account_path("/nonexistent/key.json"));
        assert!(missing.contains("check its path"), "{missing}");
        let bad_pem = err(Gcs::new("b", "o").service_account_key(
            r#"{"private_key": "not a key", "private_key_id": "1", "client_email": "a@b"}"#,
        ));
        assert!(bad_pem.contains("JSON key file"), "{bad_pem}");
    }

    #[test]
    fn the_environment_is_withheld_only_when_read() {
        assert_eq!(Gcs::new("b", "o").credential_env(), ["GOOGLE_*"]);
        assert!(Gcs::new("b", "o")
            .bearer_token("t")
            .credential_env()
            .is_empty());
    }

    #[test]
    fn debug_hides_the_secrets() {
        let gcs = Gcs::new("b", "o")
            .service_account_key("{\"private_key\": \"very-secret\"}")
            .bearer_token("also-secret");
        let text = format!("{gcs:?}");
        assert!(text.contains("\"b\""), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
