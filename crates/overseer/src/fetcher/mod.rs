//! Where new releases come from (docs/design.md, "Release sources").
//!
//! A [`Fetcher`] is polled by the master on a thread of its own. When it finds
//! a release it returns a [`Release`]: a byte stream plus what the source says
//! about it (name, size, expected checksum, signature). The master does
//! everything else — download limits, unpacking, verification, the swap and
//! the restart — so a fetcher only has to know its source.
//!
//! Built-in fetchers, each behind its own cargo feature:
//!
//! | fetcher | feature | change detection |
//! |---|---|---|
//! | `File` | `fetch-file` (default) | size and mtime, taken once stable |
//! | `Http` | `fetch-http` | ETag / Last-Modified conditional GET |
//! | `S3` | `fetch-s3` | ETag (`If-None-Match`, or compared when the store ignores it) |
//! | `GitHub` | `fetch-github` | release ETag, asset id and date |
//! | `Azure` | `fetch-azure` | ETag (`If-None-Match`) |
//! | `Gcs` | `fetch-gcs` | ETag (`If-None-Match`) |
//!
//! HTTPS in `Http` and `GitHub` uses ring (`tls-ring`, a default feature) or
//! aws-lc-rs (`tls-aws-lc-rs`, which wins when both are on). `fetch-s3`
//! brings aws-lc-rs anyway, so a build with S3 can leave ring out with
//! `default-features = false` and `tls-aws-lc-rs`.
//!
//! Writing one is a matter of implementing [`Fetcher`], or wrapping a closure
//! with [`from_fn`]:
//!
//! ```
//! use std::time::Duration;
//! use overseer::fetcher::{self, Release};
//!
//! let mut seen = false;
//! let f = fetcher::from_fn(Duration::from_secs(60), move || {
//!     if seen {
//!         return Ok(None); // nothing new
//!     }
//!     seen = true;
//!     let body = std::fs::File::open("/srv/releases/app")?;
//!     Ok(Some(Release::new(body, "/srv/releases/app")))
//! });
//! # let _ = f;
//! ```

use std::fmt;
use std::io::Read;
use std::time::Duration;

// A place of named objects (a directory, a bucket under a prefix): what a
// fleet's manifest, artifacts and reports live in.
mod store;
pub use store::{check_name, Directory, Object, Store};
#[cfg(feature = "fetch-file")]
mod file;
#[cfg(feature = "fetch-file")]
pub use file::File;
#[cfg(feature = "signatures")]
mod fleet;
#[cfg(feature = "signatures")]
pub use fleet::{Fleet, MANIFEST, SIGNATURE};
#[cfg(feature = "fetch-azure")]
mod azure;
#[cfg(feature = "fetch-azure")]
pub use azure::Azure;
#[cfg(feature = "fetch-gcs")]
mod gcs;
#[cfg(feature = "fetch-gcs")]
pub use gcs::Gcs;
#[cfg(any(feature = "fetch-s3", feature = "fetch-azure", feature = "fetch-gcs"))]
mod object;
#[cfg(feature = "fetch-s3")]
mod s3;
#[cfg(feature = "fetch-s3")]
pub use s3::S3;
// The HTTP client is shared: the GitHub fetcher downloads through it too.
#[cfg(any(feature = "fetch-http", feature = "fetch-github"))]
mod client;
#[cfg(feature = "fetch-github")]
mod github;
#[cfg(feature = "fetch-github")]
pub use github::GitHub;
// Which release file is for this OS and CPU (the GitHub fetcher's asset choice).
#[cfg(feature = "fetch-http")]
mod http;
#[cfg(feature = "fetch-github")]
mod platform;
#[cfg(feature = "fetch-http")]
pub use http::Http;

#[cfg(any(
    feature = "fetch-http",
    feature = "fetch-github",
    feature = "fetch-s3",
    feature = "fetch-azure",
    feature = "fetch-gcs"
))]
mod plain_http;
#[cfg(any(
    feature = "fetch-http",
    feature = "fetch-github",
    feature = "fetch-s3",
    feature = "fetch-azure",
    feature = "fetch-gcs"
))]
pub use plain_http::check_plain_http;

/// Whether a release tag is an HTTP entity tag (`"…"` or `W/"…"`), which
/// can be sent back in `If-None-Match`, rather than a date or another identity.
#[cfg(any(
    feature = "fetch-http",
    feature = "fetch-s3",
    feature = "fetch-azure",
    feature = "fetch-gcs"
))]
fn is_entity_tag(tag: &str) -> bool {
    tag.starts_with('"') || tag.starts_with("W/\"")
}

/// The error a fetcher returns: anything that explains what went wrong.
/// It is logged (once per distinct message) and the next poll tries again.
pub type FetchError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A release found by a fetcher: its bytes and what the source says about it.
///
/// Only `body` and `source` are required; every other field makes the
/// pipeline stricter or cheaper when the source can provide it.
#[non_exhaustive]
pub struct Release {
    /// The bytes as published: the executable itself, or a compressed file
    /// or archive holding it (gzip, xz, zstd, tar, zip; recognised by content).
    pub body: Box<dyn Read + Send>,
    /// Where it came from, for log lines (a URL, a path, `s3://bucket/key`).
    pub source: String,
    /// A stable identifier of this release at its source (an ETag, an asset
    /// id, size and mtime). A release rejected once is not downloaded again
    /// while its identifier stays the same.
    pub tag: Option<String>,
    /// The published file name; picks the executable inside an archive when
    /// the binary's own name is not found there.
    pub name: Option<String>,
    /// The size announced by the source, when known: a download that ends
    /// short of it, or runs past it, is refused.
    pub size: Option<u64>,
    /// The expected SHA-256 (hex) of the bytes as published, or of the
    /// executable inside.
    pub sha256: Option<String>,
    /// A minisign signature (the text of a `.minisig` file).
    pub signature: Option<String>,
    /// The version as the source names it (for log lines; with signatures
    /// on, only the signed version counts).
    pub version: Option<String>,
    /// Set only by this crate's fleet source, once a trusted key's signature
    /// over the manifest verified: what the manifest says of these bytes.
    pub(crate) vouched: Option<Vouched>,
}

/// What a verified fleet manifest says of a release's bytes: they are
/// exactly these, of this version (the pipeline checks both), and whether
/// taking them is the one downgrade a manifest signs (its installed version
/// was withdrawn).
#[derive(Debug, Clone)]
pub(crate) struct Vouched {
    pub version: semver::Version,
    pub size: u64,
    pub sha256: String,
    pub downgrade: bool,
    /// How the bytes came, when not downloaded whole (`as a delta: …`),
    /// for the log and the status.
    pub via: Option<String>,
}

impl Release {
    /// A release with just a body and a description of where it came from.
    pub fn new(body: impl Read + Send + 'static, source: impl Into<String>) -> Self {
        Release {
            body: Box::new(body),
            source: source.into(),
            tag: None,
            name: None,
            size: None,
            sha256: None,
            signature: None,
            version: None,
            vouched: None,
        }
    }

    /// Sets [`Release::tag`].
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// Sets [`Release::name`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets [`Release::size`].
    pub fn size(mut self, size: u64) -> Self {
        self.size = Some(size);
        self
    }

    /// Sets [`Release::sha256`] (hex; a `sha256:` prefix is accepted).
    pub fn sha256(mut self, hex: impl Into<String>) -> Self {
        self.sha256 = Some(hex.into());
        self
    }

    /// Sets [`Release::signature`] (the text of a `.minisig` file).
    pub fn signature(mut self, minisig: impl Into<String>) -> Self {
        self.signature = Some(minisig.into());
        self
    }

    /// Sets [`Release::version`].
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }
}

impl fmt::Debug for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Release")
            .field("source", &self.source)
            .field("tag", &self.tag)
            .field("name", &self.name)
            .field("size", &self.size)
            .field("sha256", &self.sha256)
            .field("signature", &self.signature.as_ref().map(|_| ".."))
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// What a fetcher may want to know about the binary it upgrades.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Context {
    /// The binary that an upgrade replaces (after resolving symlinks).
    pub bin_path: std::path::PathBuf,
    /// The Rust target triple this binary was built for, e.g.
    /// `x86_64-unknown-linux-gnu`.
    pub target: &'static str,
    /// The installed version, when known.
    pub version: Option<String>,
    /// The tag ([`Release::tag`]) of the release the installed binary came
    /// from, when this master or an earlier one saw it: a fetcher can make
    /// its first poll conditional on it rather than download that release
    /// again. (The master also skips, without reading its body, a release
    /// with this tag.)
    pub installed_tag: Option<String>,
    /// The trusted minisign public keys ([`crate::Config::public_key`]): a
    /// fleet's manifest is verified with them.
    pub public_keys: Vec<String>,
}

impl Context {
    /// The context for upgrading the binary at `bin_path`, built for the
    /// target this library was compiled for, with no version or installed
    /// tag known. The master builds one itself; this is for testing a
    /// [`Fetcher::init`] of your own.
    pub fn new(bin_path: impl Into<std::path::PathBuf>) -> Context {
        Context {
            bin_path: bin_path.into(),
            target: crate::binary_id::TARGET,
            version: None,
            installed_tag: None,
            public_keys: Vec::new(),
        }
    }

    /// Sets [`Context::version`].
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Sets [`Context::installed_tag`].
    pub fn installed_tag(mut self, tag: impl Into<String>) -> Self {
        self.installed_tag = Some(tag.into());
        self
    }
}

/// A source of new releases, polled by the master.
///
/// `fetch` runs on the master's upgrade thread, never on its main loop, so it
/// may block (it should still bound its own network calls with timeouts).
pub trait Fetcher: Send + 'static {
    /// How long to wait between polls (the master never polls more often
    /// than its `min_fetch_interval`).
    fn interval(&self) -> Duration;

    /// Called once before the first poll.
    fn init(&mut self, _context: &Context) -> Result<(), FetchError> {
        Ok(())
    }

    /// Looks for a release: `Ok(None)` when there is nothing new since the
    /// last call. Returning the release the binary already runs is harmless
    /// (it is recognised by its hash and skipped), but costs a download.
    fn fetch(&mut self) -> Result<Option<Release>, FetchError>;

    /// Like [`Fetcher::fetch`], told what the master knows at this poll
    /// ([`Poll`]) and able to tell it back what the source says of this
    /// host. A source that chooses among releases (a fleet's manifest)
    /// uses it; the default calls `fetch`.
    fn poll(&mut self, poll: &mut Poll) -> Result<Option<Release>, FetchError> {
        let _ = poll;
        self.fetch()
    }

    /// The release `fetch` returned last was installed and its probation is
    /// over: kept, or rolled back and why. A fleet's source reports it to
    /// the store when asked to. The default does nothing.
    fn settled(&mut self, settled: &Settled) {
        let _ = settled;
    }

    /// Asked right before the release with this [`Release::tag`] replaces
    /// the binary, once it is downloaded and checked: whether the source
    /// still offers it. A fleet's source says no for a release withdrawn
    /// meanwhile, which is then dropped. An error lets the offer stand. The
    /// default says yes.
    fn still_offered(&mut self, tag: &str) -> Result<bool, FetchError> {
        let _ = tag;
        Ok(true)
    }

    /// The release `fetch` returned last could not be installed for a
    /// passing reason (a full disk, a download that broke off, a swap that
    /// failed): the next `fetch` should offer it again even though it has
    /// not changed. A release refused for what it is (a bad signature, an
    /// older version, a build that was rolled back) is not retried; the
    /// master remembers it. The default does nothing.
    fn retry(&mut self) {}

    /// The environment variables this fetcher reads credentials or settings
    /// from: names, or prefixes ending in `*` (`AWS_*`). The master keeps
    /// them from every process it starts — the workers, the sanity check,
    /// readiness probes — as a program that faces the network has no use for
    /// the release source's keys; [`Config::pass_env`](crate::Config::pass_env)
    /// passes one on purpose. The default lists none.
    fn credential_env(&self) -> Vec<String> {
        Vec::new()
    }
}

impl fmt::Debug for dyn Fetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fetcher(every {:?})", self.interval())
    }
}

/// What the master knows at a poll ([`Fetcher::poll`]), and what a
/// source tells it back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Poll {
    /// The version installed now, as far as the master knows (it changes as
    /// releases are installed).
    pub installed: Option<String>,
    /// The highest serial of signed metadata (a fleet's manifest) accepted
    /// so far, kept in the ledger across restarts: a source refuses an
    /// older one (a replay) and raises this when it accepts a newer one.
    pub serial: Option<u64>,
    /// What the source says of this host now, for `overseer status` (a
    /// fleet: the wave, the host's bucket, what it waits for).
    pub rollout: Option<String>,
}

/// The end of an installed release's probation ([`Fetcher::settled`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settled {
    /// The release's [`Release::tag`].
    pub tag: Option<String>,
    /// Its version, when known.
    pub version: Option<String>,
    /// `None` when it was kept; why it was rolled back otherwise.
    pub rolled_back: Option<String>,
}

impl Settled {
    /// A release's probation settled: kept until `rolled_back` is set.
    pub(crate) fn default_for(tag: Option<String>, version: Option<String>) -> Settled {
        Settled {
            tag,
            version,
            rolled_back: None,
        }
    }
}

/// A fetcher made of a closure, polled every `interval`.
pub fn from_fn<F>(interval: Duration, fetch: F) -> FnFetcher<F>
where
    F: FnMut() -> Result<Option<Release>, FetchError> + Send + 'static,
{
    FnFetcher { interval, fetch }
}

/// The fetcher returned by [`from_fn`].
pub struct FnFetcher<F> {
    interval: Duration,
    fetch: F,
}

impl<F> fmt::Debug for FnFetcher<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnFetcher")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl<F> Fetcher for FnFetcher<F>
where
    F: FnMut() -> Result<Option<Release>, FetchError> + Send + 'static,
{
    fn interval(&self) -> Duration {
        self.interval
    }

    fn fetch(&mut self) -> Result<Option<Release>, FetchError> {
        (self.fetch)()
    }
}
