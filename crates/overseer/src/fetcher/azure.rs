//! A release published as a blob in Azure Blob Storage (or a store speaking
//! its protocol: Azurite, Azure Stack), through Apache Arrow's
//! `object_store` (see `fetcher/object.rs` for the polling and streaming every
//! store shares).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::ObjectStore;

use super::object::{
    check_endpoint, env_vars, extra_roots, is_certificate_error, options_with_roots, retry_config,
    Bucket, Poller, CLIENT_CONFIG, TLS_HINT,
};
use super::{Context, FetchError, Fetcher, Release};

/// Polls one blob in an Azure Blob Storage container and takes it whenever
/// its ETag changes.
///
/// Each poll is one conditional `GET` (`If-None-Match` with the ETag last
/// returned): an unchanged blob costs one request and no body. A missing
/// blob is not an error (nothing is published yet: the fetch answers
/// "nothing new" and looks again at the next poll); a missing *container* is,
/// as it almost always means a wrong name or account. The blob's metadata
/// entry `version` (`x-ms-meta-version`) becomes [`Release::version`].
///
/// Credentials, in order: a shared key given to [`Azure::access_key`], or a
/// SAS token given to [`Azure::sas_token`]; otherwise the environment, as
/// `object_store` reads it: `AZURE_STORAGE_ACCOUNT_KEY` (or
/// `AZURE_STORAGE_SAS_TOKEN`), a service principal (`AZURE_CLIENT_ID`,
/// `AZURE_CLIENT_SECRET`, `AZURE_TENANT_ID`), workload identity
/// (`AZURE_FEDERATED_TOKEN_FILE`), then the managed identity of the VM or
/// container. With managed identity or a service principal, the identity
/// needs the "Storage Blob Data Reader" role on the container. When they
/// come from the environment, the master keeps every `AZURE_*` variable, and
/// the managed identity's `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`, from
/// the processes it starts ([`Fetcher::credential_env`]).
///
/// Checksum and signature blobs are read beside the release when asked for
/// ([`Azure::sidecars`], [`Azure::checksum_key`], [`Azure::signature_key`]),
/// right after a changed blob is found, so upload them *before* the binary.
///
/// ```no_run
/// use std::time::Duration;
/// let fetcher = overseer::fetcher::Azure::new("acmereleases", "myapp", "linux-x86_64/myapp")
///     .sidecars() // myapp.sha256 and myapp.minisig, when present
///     .interval(Duration::from_secs(300));
/// overseer::run(overseer::Config::new(|_| {}).fetcher(fetcher));
/// ```
///
/// Azurite, the local emulator, with its well-known development account:
///
/// ```no_run
/// let fetcher = overseer::fetcher::Azure::new("devstoreaccount1", "releases", "myapp")
///     .endpoint("http://127.0.0.1:10000/devstoreaccount1")
///     .access_key("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==");
/// # let _ = fetcher;
/// ```
pub struct Azure {
    store: AzureStore,
    poll: Poller,
}

/// Where the container is and how to authorise requests to it.
struct AzureStore {
    account: String,
    container: String,
    access_key: Option<String>,
    sas_token: Option<String>,
    endpoint: Option<String>,
    allow_http: bool,
    /// CA certificates trusted besides the system's.
    roots: Vec<object_store::Certificate>,
}

impl Azure {
    /// Watches `blob` in `container` of the storage account `account`
    /// (polled every minute by default).
    pub fn new(
        account: impl Into<String>,
        container: impl Into<String>,
        blob: impl Into<String>,
    ) -> Self {
        Azure {
            store: AzureStore {
                account: account.into(),
                container: container.into(),
                access_key: None,
                sas_token: None,
                endpoint: None,
                allow_http: false,
                roots: Vec::new(),
            },
            poll: Poller::new(blob.into()),
        }
    }

    /// The storage account's shared key (base64, as the portal shows it) to
    /// sign requests with. Without this or [`Azure::sas_token`], credentials
    /// come from the environment (see [`Azure`]).
    pub fn access_key(mut self, key: impl Into<String>) -> Self {
        self.store.access_key = Some(key.into());
        self
    }

    /// A shared access signature: its query string (`sv=…&sig=…`, with or
    /// without the leading `?`), e.g. a read-only SAS on the container.
    pub fn sas_token(mut self, token: impl Into<String>) -> Self {
        self.store.sas_token = Some(token.into());
        self
    }

    /// The blob service's URL, without the container (default
    /// `https://ACCOUNT.blob.core.windows.net`): for a sovereign cloud, Azure
    /// Stack, or Azurite (`http://127.0.0.1:10000/devstoreaccount1`).
    ///
    /// Plain `http://` is accepted for loopback addresses; anywhere else it
    /// needs [`Azure::allow_http`].
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
    /// CERTIFICATE-----` blocks), besides the system's: for an endpoint (Azure
    /// Stack, a proxy) whose certificate a private CA signed. An error names
    /// what is wrong with the PEM data.
    pub fn add_root_certificates(mut self, pem: &[u8]) -> Result<Self, FetchError> {
        self.store.roots.extend(extra_roots(pem)?);
        Ok(self)
    }

    /// How often to look at the blob (default 1 min). Each unchanged poll is
    /// one small request.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.poll.interval = interval;
        self
    }

    /// A checksum blob in the same container, `sha256sum` format (the first
    /// word is the hex digest). It must exist whenever the binary changes.
    pub fn checksum_key(mut self, blob: impl Into<String>) -> Self {
        self.poll.checksum_key(blob.into());
        self
    }

    /// A minisign signature blob (the text of a `.minisig` file) in the same
    /// container. It must exist whenever the binary changes.
    pub fn signature_key(mut self, blob: impl Into<String>) -> Self {
        self.poll.signature_key(blob.into());
        self
    }

    /// Reads `BLOB.sha256` and `BLOB.minisig` beside the blob when they exist
    /// (a missing one is simply absent). Blobs set with
    /// [`Azure::checksum_key`] / [`Azure::signature_key`] are kept.
    pub fn sidecars(mut self) -> Self {
        self.poll.sidecars();
        self
    }
}

impl AzureStore {
    fn location(&self) -> String {
        format!("az://{}/{}", self.account, self.container)
    }

    fn build_store(&self) -> Result<Arc<dyn ObjectStore>, FetchError> {
        let source = self.location();
        // Explicit credentials: take nothing from the environment, so that a
        // stray variable cannot pair with the wrong account.
        let mut b = MicrosoftAzureBuilder::new();
        if !self.roots.is_empty() {
            // Before the environment's settings, which go on top of these.
            b = b.with_client_options(options_with_roots(&self.roots));
        }
        if self.access_key.is_none() && self.sas_token.is_none() {
            // What MicrosoftAzureBuilder::from_env reads.
            b = env_vars("AZURE_")
                .filter_map(|(k, v)| Some((k.parse::<AzureConfigKey>().ok()?, v)))
                .fold(b, |b, (key, value)| b.with_config(key, value));
            if let Ok(endpoint) = std::env::var("IDENTITY_ENDPOINT") {
                b = b.with_msi_endpoint(endpoint);
            }
        }
        b = b
            .with_account(&self.account)
            .with_container_name(&self.container);
        if let Some(key) = &self.access_key {
            b = b.with_access_key(key);
        }
        if let Some(sas) = &self.sas_token {
            let sas = sas.trim().trim_start_matches('?');
            b = b.with_config(AzureConfigKey::SasKey, sas);
        }
        if let Some(endpoint) = &self.endpoint {
            let endpoint = endpoint.trim_end_matches('/');
            if check_endpoint(&source, endpoint, self.allow_http)? {
                b = b.with_allow_http(true);
            }
            b = b.with_endpoint(endpoint.to_string());
        } else if self.allow_http {
            b = b.with_allow_http(true);
        }
        for (key, value) in CLIENT_CONFIG {
            b = b.with_config(AzureConfigKey::Client(key), value);
        }
        b = b.with_retry(retry_config());
        match b.build() {
            Ok(store) => Ok(Arc::new(store)),
            Err(e) => Err(format!("{source}: invalid Azure settings: {e}").into()),
        }
    }
}

impl Bucket for AzureStore {
    fn location(&self) -> String {
        AzureStore::location(self)
    }

    fn build(&self) -> Result<Arc<dyn ObjectStore>, FetchError> {
        self.build_store()
    }

    fn is_missing_container(&self, e: &object_store::Error) -> bool {
        e.to_string().contains("ContainerNotFound")
    }

    fn explain(&self, what: &str, e: &object_store::Error) -> FetchError {
        let text = e.to_string();
        let has = |code: &str| text.contains(code);
        let hint = if has("ContainerNotFound") {
            "no such container: check the container name, the account and the endpoint"
        } else if has("AuthenticationFailed") || has("InvalidAuthenticationInfo") {
            "the request's authorisation was refused: check the access key (or SAS token) belongs to this account, and that a SAS token has not expired"
        } else if is_certificate_error(e) {
            TLS_HINT
        } else if has("AuthorizationPermissionMismatch") {
            "access denied: the identity needs the Storage Blob Data Reader role on the container"
        } else if has("AuthorizationFailure") || has("AuthorizationResourceTypeMismatch") {
            "access denied: check that the access key (or SAS token) belongs to this account and may read blobs, the identity's role on the container, and the account's network rules"
        } else {
            match e {
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. } => {
                    "access denied: check the credentials and the identity's role on the container"
                }
                _ if has("credential") || has("Credential") || has("token") => {
                    "no usable credentials: pass .access_key(..) or .sas_token(..), set AZURE_STORAGE_ACCOUNT_KEY, or run with a managed identity"
                }
                _ if has("error sending request") || has("onnect") => {
                    "cannot reach the store: check the account name (or endpoint) and the network"
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

impl fmt::Debug for Azure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let store = &self.store;
        f.debug_struct("Azure")
            .field("account", &store.account)
            .field("container", &store.container)
            .field("blob", &self.poll.key)
            .field("endpoint", &store.endpoint)
            .field("allow_http", &store.allow_http)
            .field("access_key", &store.access_key.as_ref().map(|_| ".."))
            .field("sas_token", &store.sas_token.as_ref().map(|_| ".."))
            .field("interval", &self.poll.interval)
            .field("checksum", &self.poll.checksum)
            .field("signature", &self.poll.signature)
            .field("etag", &self.poll.etag)
            .finish_non_exhaustive()
    }
}

super::object::bucket_store!(Azure);

impl Fetcher for Azure {
    fn interval(&self) -> Duration {
        self.poll.interval
    }

    /// `AZURE_*`, `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`, unless an
    /// access key or SAS token was given (then none is read).
    fn credential_env(&self) -> Vec<String> {
        if self.store.access_key.is_some() || self.store.sas_token.is_some() {
            return Vec::new();
        }
        ["AZURE_*", "IDENTITY_ENDPOINT", "IDENTITY_HEADER"]
            .map(String::from)
            .to_vec()
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
        let key = "a2V5";
        let build = |azure: Azure| azure.access_key(key).store.build_store().err();
        let err = build(Azure::new("acct", "c", "b").endpoint("http://blobs.internal/acct"))
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("allow_http"), "{err}");
        let remote = Azure::new("acct", "c", "b").endpoint("http://blobs.internal/acct");
        assert!(build(remote.allow_http(true)).is_none());
        let local = Azure::new("acct", "c", "b").endpoint("http://127.0.0.1:10000/acct");
        assert!(build(local).is_none());
    }

    #[test]
    fn the_environment_is_withheld_only_when_read() {
        let env = Azure::new("a", "c", "b").credential_env();
        assert_eq!(env, ["AZURE_*", "IDENTITY_ENDPOINT", "IDENTITY_HEADER"]);
        let keyed = Azure::new("a", "c", "b").access_key("a2V5");
        assert!(keyed.credential_env().is_empty());
    }

    #[test]
    fn debug_hides_the_secrets() {
        let azure = Azure::new("acct", "c", "b")
            .access_key("very-secret")
            .sas_token("sig=also-secret");
        let text = format!("{azure:?}");
        assert!(text.contains("acct"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
