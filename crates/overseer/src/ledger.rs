//! A self-upgrading binary's ledger, and the way out of a mistaken version.
//!
//! Beside a binary that upgrades itself, the master keeps a small file,
//! `.NAME.overseer-state`: the highest signed version it has seen, the
//! releases that failed probation, and which release the installed binary
//! came from. The highest version seen is a **floor**: a signed release
//! that is not newer is refused ("signed version 1.0.2 is not newer than
//! 99.0.0"), so an old, validly signed build cannot be replayed, even after
//! a restart.
//!
//! A release signed with a wrong, too-high version (a typo in the version
//! given to `overseer sign`, a forged trusted comment) raises that floor on
//! every host that sees it, and every correctly versioned release after it
//! is refused. [`reset_floor`] (the command `overseer ledger reset-floor
//! --bin PATH --to VERSION`) sets the floor back; [`show`] (`overseer
//! ledger show --bin PATH`) prints the ledger. The ledger also keeps the
//! highest serial of a fleet's manifest accepted; [`reset_serial`]
//! (`overseer ledger reset-serial --bin PATH`) forgets it after a manifest
//! was started over.
//!
//! ```no_run
//! // The release signed 99.0.0 by mistake was really 1.0.1: the floor goes
//! // back to 1.0.1, and 1.0.2 (already published or not) installs.
//! let ledger = overseer::ledger::reset_floor("/usr/local/bin/myapp", Some("1.0.1"))?;
//! assert_eq!(ledger.highest_version.as_deref(), Some("1.0.1"));
//! # Ok::<(), overseer::Error>(())
//! ```
//!
//! **While a master runs on that binary** a reset needs no restart: the
//! master reads the ledger again at every poll, sees the reset (each one is
//! counted in the file), lowers the installed version it remembers to the
//! new floor too (the binary installed may itself be the mis-versioned
//! one), and asks its fetcher for the releases it refused as not newer
//! again. The ledger is rewritten atomically under a lock the master also
//! takes for its own writes, so neither loses the other's update; the
//! master's next write starts from the reset ledger.
//!
//! Pick the version the mis-versioned release really was (or the one now
//! installed): older signed releases stay refused. Without a version the
//! floor is removed altogether, and the next validly signed release
//! installs whatever its version (a master started later still refuses
//! releases not newer than its configured [`Config::version`]). Failed
//! releases and the installed release's tag are kept. A ledger that cannot
//! be read is not reset: repair or remove it by hand (see `show`).
//!
//! [`Config::version`]: crate::Config::version

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::upgrade::ledger::{Entries, LedgerError, LedgerFile};
use crate::upgrade::swap::Target;

/// What a binary's ledger holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ledger {
    /// The ledger file: `.NAME.overseer-state` beside the binary (beside a
    /// symlink's target).
    pub path: PathBuf,
    /// Whether the file exists (a binary that has seen no release has none).
    pub exists: bool,
    /// The highest signed version seen: the floor below which, and at
    /// which, signed releases are refused.
    pub highest_version: Option<String>,
    /// The SHA-256s of releases that failed probation: not tried again.
    pub bad_releases: Vec<String>,
    /// The release the installed binary came from, when it was recorded.
    pub installed: Option<InstalledRelease>,
    /// How many times the floor was reset by hand.
    pub floor_resets: u64,
    /// The highest serial of a fleet's manifest accepted (`fetcher::Fleet`):
    /// an older manifest is refused as a replay.
    pub manifest_serial: Option<u64>,
}

/// The release at the source the installed binary came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstalledRelease {
    /// The installed binary's SHA-256 (hex).
    pub sha256: String,
    /// The release's tag at its source (an ETag, asset id or file date).
    pub tag: String,
}

/// Reads the ledger of the binary at `binary`.
///
/// [`Error::Io`] when the binary cannot be found, or when its ledger exists
/// but cannot be read or parsed (the error names the line); a binary
/// without a ledger yet has an empty one ([`Ledger::exists`] is false).
pub fn show(binary: impl AsRef<Path>) -> Result<Ledger> {
    let file = ledger_of(binary.as_ref())?;
    let entries = file.read().map_err(ledger_error)?;
    Ok(snapshot(&file, entries))
}

/// Sets the floor of the binary at `binary` to `to`, or removes it (`None`),
/// and returns the ledger as written. See the [module docs](self) for what
/// a running master does with it.
///
/// [`Error::InvalidVersion`] when `to` is not a version; [`Error::Io`] when
/// the binary cannot be found, or its ledger cannot be read (it is left as
/// it is) or written.
pub fn reset_floor(binary: impl AsRef<Path>, to: Option<&str>) -> Result<Ledger> {
    let floor = match to {
        Some(v) => Some(
            crate::upgrade::parse_version(v).ok_or_else(|| Error::InvalidVersion(v.to_string()))?,
        ),
        None => None,
    };
    let file = ledger_of(binary.as_ref())?;
    let entries = file
        .update(|e| {
            e.highest = floor;
            e.floor_resets = e.floor_resets.saturating_add(1);
        })
        .map_err(ledger_error)?;
    Ok(snapshot(&file, entries))
}

/// Forgets the highest fleet manifest serial seen by the binary at
/// `binary`, after a fleet's manifest was started over (its serial back at
/// 1): a master running it accepts the manifest at its next poll. Returns
/// the ledger as written; errors as [`reset_floor`]'s.
pub fn reset_serial(binary: impl AsRef<Path>) -> Result<Ledger> {
    let file = ledger_of(binary.as_ref())?;
    let entries = file.update(|e| e.serial = None).map_err(ledger_error)?;
    Ok(snapshot(&file, entries))
}

fn ledger_of(binary: &Path) -> Result<LedgerFile> {
    let target = Target::resolve(binary)
        .map_err(|e| Error::io(format!("finding the binary {}", binary.display()), e))?;
    Ok(LedgerFile::of(&target))
}

/// As [`Error::Io`]: `the ledger PATH cannot be read: line 2: …`.
fn ledger_error(e: LedgerError) -> Error {
    match e {
        LedgerError::Unreadable { path, reason } => Error::io(
            format!("the ledger {} cannot be read", path.display()),
            std::io::Error::other(reason),
        ),
        LedgerError::Write { path, error } => {
            Error::io(format!("cannot write the ledger {}", path.display()), error)
        }
    }
}

fn snapshot(file: &LedgerFile, entries: Entries) -> Ledger {
    Ledger {
        path: file.path.clone(),
        exists: file.path.exists(),
        highest_version: entries.highest.map(|v| v.to_string()),
        bad_releases: entries.bad.into_iter().collect(),
        installed: entries
            .installed
            .map(|(sha256, tag)| InstalledRelease { sha256, tag }),
        floor_resets: entries.floor_resets,
        manifest_serial: entries.serial,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_sets_the_floor_counts_itself_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("app");
        std::fs::write(&bin, b"binary").unwrap();
        let empty = show(&bin).unwrap();
        assert!(!empty.exists && empty.highest_version.is_none());
        let sha = "ab".repeat(32);
        std::fs::write(
            dir.path().join(".app.overseer-state"),
            format!("highest-version 99.0.0\nbad {sha}\ninstalled {sha} \"g1\"\n"),
        )
        .unwrap();

        let reset = reset_floor(&bin, Some("v1.0.1")).unwrap();
        assert_eq!(reset.highest_version.as_deref(), Some("1.0.1"));
        assert_eq!(reset.floor_resets, 1);
        assert_eq!(reset.bad_releases, std::slice::from_ref(&sha));
        assert_eq!(reset.installed.as_ref().unwrap().tag, "\"g1\"");
        assert_eq!(show(&bin).unwrap(), reset);

        let none = reset_floor(&bin, None).unwrap();
        assert!(none.highest_version.is_none());
        assert_eq!(none.floor_resets, 2);

        assert!(matches!(
            reset_floor(&bin, Some("one")),
            Err(Error::InvalidVersion(v)) if v == "one"
        ));
        assert!(reset_floor(dir.path().join("missing"), None).is_err());

        // The manifest serial is reset on its own, and kept by the floor's.
        let path = dir.path().join(".app.overseer-state");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("manifest-serial 40\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(show(&bin).unwrap().manifest_serial, Some(40));
        assert_eq!(reset_floor(&bin, None).unwrap().manifest_serial, Some(40));
        let cleared = reset_serial(&bin).unwrap();
        assert_eq!(cleared.manifest_serial, None);
        assert_eq!(cleared.floor_resets, 3);
    }

    #[test]
    fn a_ledger_that_cannot_be_read_is_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("app");
        std::fs::write(&bin, b"binary").unwrap();
        let path = dir.path().join(".app.overseer-state");
        std::fs::write(&path, "highest-version 99.0.0\nhighest-version 98.0.0\n").unwrap();
        let e = reset_floor(&bin, Some("1.0.1")).unwrap_err().to_string();
        assert!(e.contains("line 2: a second highest-version line"), "{e}");
        assert!(show(&bin).is_err());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "highest-version 99.0.0\nhighest-version 98.0.0\n"
        );
    }
}
