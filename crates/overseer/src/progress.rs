//! Download progress, reported to [`Config::on_download_progress`](crate::Config::on_download_progress).

use std::time::Duration;

/// A download progress hook.
pub type ProgressFn = dyn Fn(&DownloadProgress) + Send + Sync + 'static;

/// Where a release download is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownloadState {
    /// The download starts (no byte read yet).
    Started,
    /// Bytes are arriving.
    Running,
    /// Every byte arrived; verification follows.
    Finished,
    /// The download was abandoned (network error, size cap, deadline); the
    /// reason is logged separately.
    Failed,
}

/// One progress report of a release download.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DownloadProgress {
    /// The release, as named in the master's log (its version or source).
    pub release: String,
    /// Bytes downloaded so far.
    pub bytes: u64,
    /// The announced size, when the source gave one.
    pub total: Option<u64>,
    /// Time since the download started.
    pub elapsed: Duration,
    /// Where the download is.
    pub state: DownloadState,
}

/// Calls a hook at the start, at most every `EVERY` while bytes arrive, and
/// at the end; nothing at all when no hook is set.
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) struct Reporter<'a> {
    hook: Option<&'a ProgressFn>,
    release: &'a str,
    total: Option<u64>,
    started: std::time::Instant,
    last: std::time::Instant,
}

const EVERY: Duration = Duration::from_millis(100);

#[cfg_attr(not(unix), allow(dead_code))]
impl<'a> Reporter<'a> {
    /// Reports the start.
    pub fn start(hook: Option<&'a ProgressFn>, release: &'a str, total: Option<u64>) -> Self {
        let now = std::time::Instant::now();
        let r = Reporter {
            hook,
            release,
            total,
            started: now,
            last: now,
        };
        r.report(0, DownloadState::Started);
        r
    }

    /// Reports `bytes` so far if the last report is old enough.
    pub fn running(&mut self, bytes: u64) {
        if self.hook.is_none() || self.last.elapsed() < EVERY {
            return;
        }
        self.last = std::time::Instant::now();
        self.report(bytes, DownloadState::Running);
    }

    /// Reports the end.
    pub fn end(&self, bytes: u64, state: DownloadState) {
        self.report(bytes, state);
    }

    fn report(&self, bytes: u64, state: DownloadState) {
        if let Some(hook) = self.hook {
            hook(&DownloadProgress {
                release: self.release.to_string(),
                bytes,
                total: self.total,
                elapsed: self.started.elapsed(),
                state,
            });
        }
    }
}
