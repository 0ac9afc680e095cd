//! A fleet's signed manifest as the release source (`overseer::fleet`):
//! the manifest and its signature read from a [`Store`] (a directory, a
//! bucket under a prefix), verified, checked, and the release this host
//! takes now opened; after its probation, a report written beside them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::store::{Directory, Object, Store};
use super::{Context, FetchError, Fetcher, Poll, Release, Settled, Vouched};
use crate::fleet::{choose, Choice, Manifest, Outcome, Report, MAX_MANIFEST_SIZE};
use crate::log;

/// The manifest's object name.
pub const MANIFEST: &str = "manifest.json";
/// Its signature's.
pub const SIGNATURE: &str = "manifest.json.minisig";
/// A signature is a few hundred bytes.
const MAX_SIGNATURE_SIZE: u64 = 16 * 1024;
/// Where the host id is read by default.
const MACHINE_ID: &str = "/etc/machine-id";

/// Polls a fleet's signed manifest and takes the release this host is due
/// (docs/design.md, "Fleets").
///
/// The manifest (`manifest.json`) and its signature
/// (`manifest.json.minisig`) are read from a [`Store`]: a directory
/// ([`Fleet::new`]) or a bucket under a prefix ([`Fleet::over`] with an
/// [`S3`](super::S3), [`Gcs`](super::Gcs) or [`Azure`](super::Azure)
/// fetcher, whose key is the prefix). Each poll is one conditional read of
/// the manifest; an unchanged one costs no body, and is checked again
/// (its expiry, the waves that opened since).
///
/// The manifest is used only when a key of [`crate::Config::public_key`]
/// signed it (one is required), when it has not expired, when its serial
/// is not below the highest this binary has seen (kept in its ledger), and
/// when it has an artifact for this target. The host then takes the newest
/// newer release whose wave has reached its bucket (from its host id:
/// `/etc/machine-id` by default), a critical one at once, or, when its
/// installed version was withdrawn, the newest one not withdrawn. The
/// artifact must have the manifest's size and SHA-256; it needs no
/// signature of its own.
///
/// Polls are spread: each interval is drawn anew between 3/4 and 5/4 of
/// the one set, so hosts started together do not poll together.
///
/// ```no_run
/// use std::time::Duration;
/// let fleet = overseer::fetcher::Fleet::new("/srv/fleet").interval(Duration::from_secs(60));
/// overseer::run(
///     overseer::Config::new(|_| {})
///         .version("1.4.0")
///         .public_key("RWQ…")
///         .fetcher(fleet),
/// );
/// ```
///
/// From S3, writing a report after each probation:
///
/// ```no_run
/// let bucket = overseer::fetcher::S3::new("acme-releases", "fleet/stable").region("eu-west-1");
/// let fleet = overseer::fetcher::Fleet::over(bucket).reports(true);
/// # let _ = fleet;
/// ```
pub struct Fleet {
    store: Box<dyn Store>,
    every: Duration,
    /// This poll's interval, drawn around `every`.
    next: Duration,
    /// The state of the draw.
    seed: u64,
    host_id: Option<String>,
    keys: Vec<String>,
    target: &'static str,
    reports: bool,
    /// The highest serial seen.
    seen: Option<u64>,
    /// The serial the master's ledger gave at the last poll: one lower now
    /// was reset by hand (`overseer ledger reset-serial`).
    ledger_serial: Option<u64>,
    /// The last manifest accepted, and its store tag.
    current: Option<(Manifest, Option<String>)>,
    /// What the last poll said, so it is logged once.
    said: Option<String>,
    /// The tag of the release handed to the pipeline last: not offered
    /// again (the master remembers how it went) until it asks ([`Fetcher::retry`]).
    offered: Option<String>,
    /// The binary upgraded (its hash picks a patch).
    binary: Option<std::path::PathBuf>,
    /// Take a release as a patch when one applies to the binary.
    deltas: bool,
    /// This master said what the host serves ([`Fleet::announce`]).
    announced: bool,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("manifest", &self.store.locate(MANIFEST))
            .field("interval", &self.every)
            .field("host_id", &self.host_id)
            .field("reports", &self.reports)
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Polls the manifest in the directory `dir` every minute by default.
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Fleet {
        Fleet::over(Directory::new(dir))
    }

    /// Polls the manifest in `store` every minute by default.
    pub fn over(store: impl Store) -> Fleet {
        Fleet {
            store: Box::new(store),
            every: Duration::from_secs(60),
            next: Duration::from_secs(60),
            seed: 0,
            host_id: None,
            keys: Vec::new(),
            target: crate::binary_id::TARGET,
            reports: false,
            seen: None,
            ledger_serial: None,
            current: None,
            said: None,
            offered: None,
            binary: None,
            deltas: true,
            announced: false,
        }
    }

    /// How often to read the manifest, on average (default 1 min).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.every = interval;
        self.next = interval;
        self
    }

    /// This host's id, which places it in the waves (default: the contents
    /// of `/etc/machine-id`).
    pub fn host_id(mut self, id: impl Into<String>) -> Self {
        self.host_id = Some(id.into());
        self
    }

    /// After each probation, write a report (`reports/VERSION/HOST.json`:
    /// host, version, kept or rolled back and why, time) to the store, for
    /// `overseer rollout status` and `advance`; and once when the master
    /// starts, at its first manifest, what the host serves (`serving`), so
    /// that every host is known before its first probation. The store's
    /// credentials need write access to `reports/` only. Off by default.
    pub fn reports(mut self, on: bool) -> Self {
        self.reports = on;
        self
    }

    /// Whether to take a release as a patch from the binary installed, when
    /// the manifest lists one for its hash (default: yes, with the `delta`
    /// feature). The patch is applied and its result checked against the
    /// manifest's size and SHA-256 before anything else sees it; any
    /// failure falls back to the whole artifact.
    pub fn deltas(mut self, on: bool) -> Self {
        self.deltas = on;
        self
    }

    /// Logs `what` unless the last poll said the same.
    fn say(&mut self, what: String) {
        if self.said.as_deref() != Some(&what) {
            log::info!("{what}");
            self.said = Some(what);
        }
    }

    /// The next interval: uniform in [3/4, 5/4] of the one set (xorshift).
    fn draw(&mut self) -> Duration {
        let mut x = self.seed.max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
        self.every.mul_f64(0.75 + unit / 2.0)
    }

    /// The manifest to act on now: read again unless unchanged, verified
    /// and checked either way. `None` when none is published yet.
    fn manifest(&mut self, seen: Option<u64>, now: u64) -> Result<Option<Manifest>, FetchError> {
        let tag = self.current.as_ref().and_then(|(_, t)| t.clone());
        let manifest = match self
            .store
            .read(MANIFEST, MAX_MANIFEST_SIZE as u64, tag.as_deref())?
        {
            Object::Unchanged => match &self.current {
                Some((m, _)) => m.clone(),
                None => return Ok(None),
            },
            Object::Missing => {
                self.current = None;
                let what = format!("fleet: no manifest at {} yet", self.store.locate(MANIFEST));
                self.say(what);
                return Ok(None);
            }
            Object::Found { bytes, tag } => {
                let signature = match self.store.read(SIGNATURE, MAX_SIGNATURE_SIZE, None)? {
                    Object::Found { bytes, .. } => String::from_utf8(bytes).map_err(|_| {
                        format!(
                            "{}: not a signature (not text)",
                            self.store.locate(SIGNATURE)
                        )
                    })?,
                    _ => {
                        return Err(format!(
                            "{} is not signed: no {} beside it",
                            self.store.locate(MANIFEST),
                            self.store.locate(SIGNATURE)
                        )
                        .into())
                    }
                };
                let manifest = Manifest::verify(&bytes, &signature, &self.keys)
                    .map_err(|e| format!("{} refused: {e}", self.store.locate(MANIFEST)))?;
                manifest
                    .check(now, seen, self.target)
                    .map_err(|e| format!("{} refused: {e}", self.store.locate(MANIFEST)))?;
                self.current = Some((manifest.clone(), tag));
                manifest
            }
        };
        manifest
            .check(now, seen, self.target)
            .map_err(|e| format!("{} refused: {e}", self.store.locate(MANIFEST)))?;
        Ok(Some(manifest))
    }

    /// Writes a report of a probation's end, when asked to.
    fn report(&mut self, settled: &Settled) {
        let Some(version) = settled.tag.as_deref().and_then(tagged_version) else {
            return;
        };
        let Some((manifest, _)) = &self.current else {
            return;
        };
        let report = Report {
            host: self.host_id.clone().unwrap_or_default(),
            channel: manifest.channel.clone(),
            version: version.to_string(),
            outcome: match settled.rolled_back {
                None => Outcome::Kept,
                Some(_) => Outcome::RolledBack,
            },
            why: settled.rolled_back.clone(),
            time: unix_now().unwrap_or(0),
        };
        self.write_report(&report);
    }

    /// Says once, at the first manifest this master accepts, what this host
    /// serves, so that a publisher knows it before any probation.
    fn announce(&mut self, manifest: &Manifest, installed: Option<&str>) {
        if !self.reports || self.announced {
            return;
        }
        self.announced = true;
        let report = Report {
            host: self.host_id.clone().unwrap_or_default(),
            channel: manifest.channel.clone(),
            version: installed.unwrap_or("unknown").to_string(),
            outcome: Outcome::Serving,
            why: None,
            time: unix_now().unwrap_or(0),
        };
        self.write_report(&report);
    }

    fn write_report(&mut self, report: &Report) {
        let version = &report.version;
        let name = report.name();
        match self.store.write(&name, &report.to_bytes()) {
            Ok(()) => log::info!("fleet: reported {version} to {}", self.store.locate(&name)),
            Err(e) => log::warning!(
                "fleet: cannot write the report {}: {e}",
                self.store.locate(&name)
            ),
        }
    }
}

impl Fleet {
    /// The release rebuilt from the installed binary and a patch the
    /// manifest lists for its hash, checked against the artifact's size and
    /// SHA-256: the file, the patch's name, and what it saved. `None` (said
    /// once when something failed) to download the whole artifact.
    #[cfg(feature = "delta")]
    fn rebuild(
        &mut self,
        version: &str,
        artifact: &crate::fleet::Artifact,
    ) -> Option<(std::fs::File, String, String)> {
        if !self.deltas || artifact.patches.is_empty() {
            return None;
        }
        let binary = self.binary.clone()?;
        let base = match crate::binary_id::sha256_file(&binary) {
            Ok(hash) => hash,
            Err(e) => {
                self.say(format!(
                    "fleet: no delta to {version}: cannot hash {}: {e}; downloading the whole artifact",
                    binary.display()
                ));
                return None;
            }
        };
        let Some(patch) = artifact.patches.iter().find(|p| p.base == base) else {
            self.say(format!(
                "fleet: no patch to {version} from this binary ({}); downloading the whole artifact",
                base.get(..12).unwrap_or(&base)
            ));
            return None;
        };
        match rebuild_from(&mut *self.store, &binary, patch, artifact) {
            Ok(file) => {
                let saved = artifact.size.saturating_sub(patch.size);
                let note = format!(
                    "as a delta: {} bytes of patch instead of {} ({saved} saved, {:.0} %)",
                    patch.size,
                    artifact.size,
                    saved as f64 * 100.0 / artifact.size.max(1) as f64
                );
                Some((file, patch.path.clone(), note))
            }
            Err(why) => {
                self.say(format!(
                    "fleet: the delta to {version} from {} failed: {why}; downloading the whole artifact",
                    base.get(..12).unwrap_or(&base)
                ));
                None
            }
        }
    }

    #[cfg(not(feature = "delta"))]
    fn rebuild(
        &mut self,
        _version: &str,
        _artifact: &crate::fleet::Artifact,
    ) -> Option<(std::fs::File, String, String)> {
        None
    }
}

/// Applies `patch` to `binary` into an unnamed temporary file and checks the
/// patch and the result against the manifest.
#[cfg(feature = "delta")]
fn rebuild_from(
    store: &mut dyn Store,
    binary: &std::path::Path,
    patch: &crate::fleet::Patch,
    artifact: &crate::fleet::Artifact,
) -> Result<std::fs::File, String> {
    use std::io::{Seek, SeekFrom};
    let mut body = store
        .open(&patch.path)
        .map_err(|e| format!("cannot open the patch: {e}"))?;
    let base = std::fs::File::open(binary).map_err(|e| format!("{}: {e}", binary.display()))?;
    // Beside the binary, where the pipeline stages releases anyway: not in
    // a /tmp that may be memory.
    let dir = binary
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut out = tempfile::tempfile_in(dir)
        .map_err(|e| format!("cannot make a temporary file in {}: {e}", dir.display()))?;
    let rebuilt = crate::delta::apply(&mut body, base, &mut out, patch.size, artifact.size)?;
    if rebuilt.patch_size != patch.size || rebuilt.patch_sha256 != patch.sha256 {
        return Err(format!(
            "the patch is not the one the manifest lists ({} bytes, sha256 {})",
            rebuilt.patch_size, rebuilt.patch_sha256
        ));
    }
    if rebuilt.size != artifact.size || rebuilt.sha256 != artifact.sha256 {
        return Err(format!(
            "it rebuilt {} bytes with sha256 {}, not the release the manifest signs (did the binary change on disk?)",
            rebuilt.size, rebuilt.sha256
        ));
    }
    out.seek(SeekFrom::Start(0))
        .map_err(|e| format!("rewinding the rebuilt binary: {e}"))?;
    Ok(out)
}

/// The tag of a release handed to the pipeline: `fleet:VERSION:SHA256`.
fn release_tag(version: &str, sha256: &str) -> String {
    format!("fleet:{version}:{sha256}")
}

/// The version in a tag [`release_tag`] made; `None` for another source's.
fn tagged_version(tag: &str) -> Option<&str> {
    tag.strip_prefix("fleet:")?.split(':').next()
}

fn unix_now() -> Result<u64, FetchError> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| format!("the clock is before 1970: {e}"))?
        .as_secs())
}

impl Fetcher for Fleet {
    fn interval(&self) -> Duration {
        self.next
    }

    fn credential_env(&self) -> Vec<String> {
        self.store.credential_env()
    }

    fn init(&mut self, context: &Context) -> Result<(), FetchError> {
        if context.public_keys.is_empty() {
            return Err("a fleet's manifest is trusted only when signed: set Config::public_key (overseer run: --public-key)".into());
        }
        self.keys = context.public_keys.clone();
        self.target = context.target;
        self.binary = Some(context.bin_path.clone());
        if self.host_id.is_none() {
            let id = std::fs::read_to_string(MACHINE_ID).map_err(|e| {
                format!("no host id for the fleet's waves: {MACHINE_ID}: {e} (set Fleet::host_id)")
            })?;
            let id = id.trim();
            if id.is_empty() {
                return Err(format!(
                    "no host id for the fleet's waves: {MACHINE_ID} is empty (set Fleet::host_id)"
                )
                .into());
            }
            self.host_id = Some(id.to_string());
        }
        // Each master its own draw: the host, the process, the time.
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        self.seed = crate::fleet::bucket(
            self.host_id.as_deref().unwrap_or_default(),
            &std::process::id().to_string(),
            &clock.to_string(),
        )
        .to_bits();
        self.next = self.draw();
        Ok(())
    }

    fn fetch(&mut self) -> Result<Option<Release>, FetchError> {
        self.poll(&mut Poll::default())
    }

    fn retry(&mut self) {
        self.offered = None;
    }

    fn still_offered(&mut self, tag: &str) -> Result<bool, FetchError> {
        let Some(version) = tagged_version(tag) else {
            return Ok(true);
        };
        let now = unix_now()?;
        let Some(manifest) = self.manifest(self.seen, now)? else {
            return Ok(false);
        };
        self.seen = self.seen.max(Some(manifest.serial));
        let offered = manifest.releases.iter().any(|r| {
            r.version == version
                && !r.yanked
                && r.artifacts
                    .get(self.target)
                    .is_some_and(|a| tag.ends_with(&format!(":{}", a.sha256)))
        });
        if !offered {
            log::info!(
                "fleet manifest {} (serial {}): {version} was withdrawn meanwhile; not installed",
                self.store.locate(MANIFEST),
                manifest.serial
            );
        }
        Ok(offered)
    }

    fn settled(&mut self, settled: &Settled) {
        if self.reports {
            self.report(settled);
        }
    }

    fn poll(&mut self, poll: &mut Poll) -> Result<Option<Release>, FetchError> {
        self.next = self.draw();
        let now = unix_now()?;
        if poll.serial < self.ledger_serial {
            log::info!(
                "fleet: the manifest serial seen was reset by hand (now {}); an older manifest is accepted",
                poll.serial.map_or("none".to_string(), |s| s.to_string())
            );
            self.seen = poll.serial;
        }
        self.ledger_serial = poll.serial;
        let seen = self.seen.max(poll.serial);
        let Some(manifest) = self.manifest(seen, now)? else {
            poll.rollout = None;
            return Ok(None);
        };
        self.seen = seen.max(Some(manifest.serial));
        poll.serial = self.seen;
        self.announce(&manifest, poll.installed.as_deref());
        let host = self.host_id.clone().unwrap_or_default();
        let installed = poll.installed.as_deref();
        let (release, why, downgrade) = match choose(&manifest, installed, self.target, &host, now)
        {
            Choice::Take {
                release,
                why,
                downgrade,
            } => (release, why, downgrade),
            Choice::Wait { release, why } => {
                let (wave, waves) = release.wave_at(now);
                poll.rollout = Some(format!(
                    "serial {}: {} waits, {why} (wave {wave} of {waves})",
                    manifest.serial, release.version
                ));
                self.say(format!(
                    "fleet manifest {} (serial {}): {} {why}",
                    self.store.locate(MANIFEST),
                    manifest.serial,
                    release.version
                ));
                return Ok(None);
            }
            Choice::UpToDate => {
                poll.rollout = Some(format!(
                    "serial {}: up to date ({})",
                    manifest.serial,
                    installed.unwrap_or("version unknown")
                ));
                return Ok(None);
            }
        };
        let Some(artifact) = release.artifacts.get(self.target) else {
            return Ok(None);
        };
        let version = release
            .semver()
            .ok_or_else(|| format!("version {:?} is not semantic", release.version))?;
        let tag = release_tag(&release.version, &artifact.sha256);
        if self.offered.as_deref() == Some(tag.as_str()) {
            // Handed over already: installed and rolled back, or refused.
            poll.rollout = Some(format!(
                "serial {}: {} was tried here and not kept",
                manifest.serial, release.version
            ));
            return Ok(None);
        }
        poll.rollout = Some(format!(
            "serial {}: taking {} ({why})",
            manifest.serial, release.version
        ));
        let (body, source, delta): (Box<dyn std::io::Read + Send>, String, String) =
            match self.rebuild(&release.version, artifact) {
                Some((file, patch, note)) => (Box::new(file), self.store.locate(&patch), note),
                None => (
                    self.store.open(&artifact.path)?,
                    self.store.locate(&artifact.path),
                    String::new(),
                ),
            };
        if !delta.is_empty() {
            poll.rollout = Some(format!(
                "serial {}: taking {} ({why}) {delta}",
                manifest.serial, release.version
            ));
        }
        self.say(format!(
            "fleet manifest {} (serial {}): taking {} ({why}){}",
            self.store.locate(MANIFEST),
            manifest.serial,
            release.version,
            if delta.is_empty() {
                String::new()
            } else {
                format!(" {delta}")
            }
        ));
        let mut taken = Release::new(body, source)
            .tag(tag.clone())
            .size(artifact.size)
            .sha256(artifact.sha256.clone())
            .version(release.version.clone());
        if let Some(name) = artifact.path.rsplit('/').next() {
            taken = taken.name(name.to_string());
        }
        self.offered = Some(tag);
        taken.vouched = Some(Vouched {
            version,
            size: artifact.size,
            sha256: artifact.sha256.clone(),
            downgrade,
            via: (!delta.is_empty()).then(|| delta.clone()),
        });
        Ok(Some(taken))
    }
}

#[cfg(all(test, feature = "delta"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::delta::tests::{fixture, sha};
    use crate::fleet::{Artifact, Patch};
    use proptest::prelude::*;

    /// A store holding `patch`, the base binary on disk, and the manifest's
    /// entries for both.
    fn setup(patch: &[u8]) -> (tempfile::TempDir, Directory, std::path::PathBuf, Artifact) {
        let (base, new, good) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let mut store = Directory::new(dir.path().join("store"));
        store.write("p.zst", patch).unwrap();
        let binary = dir.path().join("app");
        std::fs::write(&binary, &base).unwrap();
        let artifact = Artifact {
            path: "app".into(),
            size: new.len() as u64,
            sha256: sha(&new),
            patches: vec![Patch {
                base: sha(&base),
                path: "p.zst".into(),
                size: good.len() as u64,
                sha256: sha(&good),
            }],
        };
        (dir, store, binary, artifact)
    }

    #[test]
    fn the_listed_patch_rebuilds_the_release_and_a_changed_base_does_not() {
        let (_, new, good) = fixture();
        let (_dir, mut store, binary, artifact) = setup(&good);
        let mut file = rebuild_from(&mut store, &binary, &artifact.patches[0], &artifact).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
        assert_eq!(bytes, new);
        // The binary changed on disk after it was hashed.
        let mut changed = std::fs::read(&binary).unwrap();
        changed[70_000] ^= 0xff;
        std::fs::write(&binary, &changed).unwrap();
        let err = rebuild_from(&mut store, &binary, &artifact.patches[0], &artifact).unwrap_err();
        assert!(err.contains("not the release the manifest signs"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]
        /// No damage to a patch yields a release: every damaged patch is
        /// refused before the pipeline would see a byte.
        #[test]
        fn a_damaged_patch_never_yields_a_release(
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            how in 0u8..3,
        ) {
            let (_, _, good) = fixture();
            let mut bad = good.clone();
            let i = at.index(bad.len());
            match how {
                0 => bad[i] ^= flip,
                1 => bad.truncate(i),
                _ => bad.insert(i, flip),
            }
            let (_dir, mut store, binary, artifact) = setup(&bad);
            prop_assert!(rebuild_from(&mut store, &binary, &artifact.patches[0], &artifact).is_err());
        }
    }
}
