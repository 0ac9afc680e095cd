//! A release published as a file on a local (or mounted) filesystem.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{FetchError, Fetcher, Release};

/// Watches a path and takes the file there once it has stopped changing.
///
/// A publisher may write the file in place: a change is taken only after two
/// polls `settle` apart see the same size and modification time. Beside the
/// file, `NAME.minisig` (a minisign signature) and `NAME.sha256` (a checksum,
/// `sha256sum` format) are read when present; write them before the binary
/// (or rename the binary into place last).
///
/// ```no_run
/// use std::time::Duration;
/// let fetcher = overseer::fetcher::File::new("/srv/releases/myapp")
///     .interval(Duration::from_secs(2));
/// overseer::run(overseer::Config::new(|_| {}).fetcher(fetcher));
/// ```
#[derive(Debug, Clone)]
pub struct File {
    path: PathBuf,
    interval: Duration,
    settle: Duration,
    /// Size and mtime of the last file returned (or skipped as unchanged).
    taken: Option<(u64, SystemTime)>,
    /// Size and mtime seen at the previous poll, and when.
    seen: Option<((u64, SystemTime), std::time::Instant)>,
}

impl File {
    /// Watches `path`, polling every second by default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        File {
            path: path.into(),
            interval: Duration::from_secs(1),
            settle: Duration::from_millis(500),
            taken: None,
            seen: None,
        }
    }

    /// How often to look at the file (default 1 s).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How long the file must stay unchanged before it is taken (default
    /// 500 ms; the master also waits for at least one poll interval).
    pub fn settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// Reads the sidecar `PATH.EXT`: `Ok(None)` when there is none. It must
    /// be a regular file of at most [`MAX_SIDECAR`] bytes of text; anything
    /// else (a link to `/dev/zero`, a FIFO, a huge file) is refused
    /// unread, without blocking.
    fn sidecar(path: &Path, ext: &str) -> Result<Option<String>, FetchError> {
        use std::io::Read;
        let mut p = path.as_os_str().to_owned();
        p.push(ext);
        let p = PathBuf::from(p);
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        #[cfg(unix)]
        {
            // A FIFO would block the open until someone writes to it.
            use std::os::unix::fs::OpenOptionsExt;
            options.custom_flags(libc::O_NONBLOCK);
        }
        let file = match options.open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", p.display()).into()),
        };
        let meta = file
            .metadata()
            .map_err(|e| format!("{}: {e}", p.display()))?;
        if !meta.is_file() {
            return Err(format!("{} is not a regular file: refused", p.display()).into());
        }
        let mut bytes = Vec::new();
        file.take(MAX_SIDECAR + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        if bytes.len() as u64 > MAX_SIDECAR {
            return Err(format!(
                "{} is larger than {MAX_SIDECAR} bytes (a signature or a checksum is far smaller): refused",
                p.display()
            )
            .into());
        }
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| format!("{} is not text: refused", p.display()).into())
    }
}

/// The most a `.minisig` or `.sha256` sidecar may hold (a signature is
/// about 300 bytes, a checksum line about 100).
const MAX_SIDECAR: u64 = 64 * 1024;

impl Fetcher for File {
    fn interval(&self) -> Duration {
        self.interval
    }

    fn retry(&mut self) {
        self.taken = None;
    }

    fn fetch(&mut self) -> Result<Option<Release>, FetchError> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            // Not published yet (or being replaced): nothing new.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", self.path.display()).into()),
        };
        if !meta.is_file() {
            return Err(format!("{} is not a regular file", self.path.display()).into());
        }
        let stamp = (meta.len(), meta.modified()?);
        if self.taken == Some(stamp) {
            return Ok(None);
        }
        let now = std::time::Instant::now();
        match self.seen {
            Some((s, since)) if s == stamp => {
                if now.duration_since(since) < self.settle {
                    return Ok(None);
                }
            }
            _ => {
                self.seen = Some((stamp, now));
                return Ok(None);
            }
        }
        // Sidecars first: a refused one fails this poll, and the release is
        // offered again (not taken) at the next.
        let signature = Self::sidecar(&self.path, ".minisig")?;
        let checksum = Self::sidecar(&self.path, ".sha256")?;
        let body =
            std::fs::File::open(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.taken = Some(stamp);
        let mut release = Release::new(body, self.path.display().to_string())
            .tag(tag(stamp))
            .size(stamp.0);
        if let Some(name) = self.path.file_name() {
            release = release.name(name.to_string_lossy());
        }
        if let Some(sig) = signature {
            release = release.signature(sig);
        }
        if let Some(sum) = checksum {
            if let Some(hex) = sum.split_whitespace().next() {
                release = release.sha256(hex);
            }
        }
        Ok(Some(release))
    }
}

/// A readable tag for a file's size and modification time:
/// `2048 bytes, modified 1763769600.123456789` (seconds since 1970).
fn tag((size, modified): (u64, SystemTime)) -> String {
    match modified.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => format!(
            "{size} bytes, modified {}.{:09}",
            d.as_secs(),
            d.subsec_nanos()
        ),
        Err(_) => format!("{size} bytes, modified before 1970"),
    }
}
