//! A fleet's signed manifest as the release source (`overseer::fleet`):
//! the manifest and its signature read from a directory (where `overseer
//! publish` writes them, or one synchronised from the bucket the fleet
//! uses), verified, checked, and the release this host takes now opened.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Context, FetchError, Fetcher, Release, Vouched};
use crate::fleet::{choose, Choice, Manifest, MAX_MANIFEST_SIZE};
use crate::log;

/// The manifest's file name.
const MANIFEST: &str = "manifest.json";
/// Its signature's.
const SIGNATURE: &str = "manifest.json.minisig";
/// Where the host id is read by default.
const MACHINE_ID: &str = "/etc/machine-id";

/// Polls a fleet's signed manifest in a directory and takes the release
/// this host is due (docs/design.md, "Fleets").
///
/// Each poll reads `manifest.json` and `manifest.json.minisig`. The
/// manifest is used only when a key of [`crate::Config::public_key`] signed
/// it (one is required), when it has not expired, when its serial is not
/// below the highest this master has seen, and when it has an artifact for
/// this target. The host then takes the newest newer release whose wave
/// has reached its bucket (from its host id: `/etc/machine-id` by default),
/// a critical one at once, or, when its installed version was withdrawn,
/// the newest one not withdrawn. The artifact must have the manifest's
/// size and SHA-256; it needs no signature of its own.
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
#[derive(Debug, Clone)]
pub struct Fleet {
    dir: PathBuf,
    interval: Duration,
    host_id: Option<String>,
    keys: Vec<String>,
    target: &'static str,
    /// The highest serial seen.
    seen: Option<u64>,
    /// What the last poll said, so it is logged once.
    said: Option<String>,
}

impl Fleet {
    /// Polls the manifest in `dir` every minute by default.
    pub fn new(dir: impl Into<PathBuf>) -> Fleet {
        Fleet {
            dir: dir.into(),
            interval: Duration::from_secs(60),
            host_id: None,
            keys: Vec::new(),
            target: crate::binary_id::TARGET,
            seen: None,
            said: None,
        }
    }

    /// How often to read the manifest (default 1 min).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// This host's id, which places it in the waves (default: the contents
    /// of `/etc/machine-id`).
    pub fn host_id(mut self, id: impl Into<String>) -> Self {
        self.host_id = Some(id.into());
        self
    }

    /// Logs `what` unless the last poll said the same.
    fn say(&mut self, what: String) {
        if self.said.as_deref() != Some(&what) {
            log::info!("{what}");
            self.said = Some(what);
        }
    }
}

impl Fetcher for Fleet {
    fn interval(&self) -> Duration {
        self.interval
    }

    fn init(&mut self, context: &Context) -> Result<(), FetchError> {
        if context.public_keys.is_empty() {
            return Err("a fleet's manifest is trusted only when signed: set Config::public_key (overseer run: --public-key)".into());
        }
        self.keys = context.public_keys.clone();
        self.target = context.target;
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
        Ok(())
    }

    fn fetch(&mut self) -> Result<Option<Release>, FetchError> {
        self.fetch_installed(None)
    }

    fn fetch_installed(&mut self, installed: Option<&str>) -> Result<Option<Release>, FetchError> {
        let bytes = read_small(&self.dir.join(MANIFEST))?;
        let signature = String::from_utf8(read_small(&self.dir.join(SIGNATURE))?)
            .map_err(|_| format!("{}: not text", self.dir.join(SIGNATURE).display()))?;
        let manifest = Manifest::verify(&bytes, &signature, &self.keys)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| format!("the clock is before 1970: {e}"))?
            .as_secs();
        manifest.check(now, self.seen, self.target)?;
        self.seen = Some(
            self.seen
                .map_or(manifest.serial, |s| s.max(manifest.serial)),
        );
        let host = self.host_id.clone().unwrap_or_default();
        let (release, why, downgrade) = match choose(&manifest, installed, self.target, &host, now)
        {
            Choice::Take {
                release,
                why,
                downgrade,
            } => (release, why, downgrade),
            Choice::Wait { release, why } => {
                self.say(format!(
                    "fleet manifest {} (serial {}): {} {why}",
                    self.dir.display(),
                    manifest.serial,
                    release.version
                ));
                return Ok(None);
            }
            Choice::UpToDate => return Ok(None),
        };
        let Some(artifact) = release.artifacts.get(self.target) else {
            return Ok(None);
        };
        let version = release
            .semver()
            .ok_or_else(|| format!("version {:?} is not semantic", release.version))?;
        let path = self.dir.join(&artifact.path);
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.say(format!(
            "fleet manifest {} (serial {}): taking {} ({why})",
            self.dir.display(),
            manifest.serial,
            release.version
        ));
        let mut taken = Release::new(file, path.display().to_string())
            .tag(format!("fleet:{}:{}", release.version, artifact.sha256))
            .size(artifact.size)
            .sha256(artifact.sha256.clone())
            .version(release.version.clone());
        if let Some(name) = Path::new(&artifact.path).file_name() {
            taken = taken.name(name.to_string_lossy().into_owned());
        }
        taken.vouched = Some(Vouched {
            version,
            size: artifact.size,
            sha256: artifact.sha256.clone(),
            downgrade,
        });
        Ok(Some(taken))
    }
}

/// Reads a small file whole (a manifest or its signature), refusing one
/// larger than a manifest may be.
fn read_small(path: &Path) -> Result<Vec<u8>, FetchError> {
    use std::io::Read;
    // Not a FIFO or a device, whose open or read would never end.
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()).into());
    }
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() > MAX_MANIFEST_SIZE {
        return Err(format!("{}: larger than {MAX_MANIFEST_SIZE} bytes", path.display()).into());
    }
    Ok(bytes)
}
