//! Upgrader: the upgrade thread's state from one poll to the next — its
//! settings, the ledger as last read, the installed version, the releases it
//! turned down — and what it records in the ledger.

use std::collections::HashSet;

use super::ledger::{Entries, LedgerError, LedgerFile};
use super::lock::BinaryLock;
use super::report::Gate;
use super::report::ToSupervisor;
use super::swap::Target;
use crate::binary_id::BinaryId;
use crate::config::UpgradeConfig;
use crate::log;
use crate::shutdown::Shutdown;
use crate::withheld::Withheld;

/// The upgrade thread: made by `start`, run by `poll_loop` (`poll.rs`),
/// taking one release through `pipeline` (`pipeline.rs`).
pub(super) struct Upgrader {
    pub(super) config: UpgradeConfig,
    pub(super) target: Target,
    pub(super) binary: BinaryId,
    pub(super) ledger: LedgerFile,
    /// The ledger as last read or written.
    pub(super) known: Entries,
    /// Whether `known` is the ledger's content (false while it cannot be
    /// read: no release is considered then).
    pub(super) ledger_readable: bool,
    /// The installed version (signed, or configured).
    pub(super) version: Option<semver::Version>,
    /// Where reports go: the master's loop.
    pub(super) supervisor: ToSupervisor,
    /// Fires once the master is stopping.
    pub(super) stopping: Shutdown,
    /// Held while files change (see [`Gate`]).
    pub(super) gate: Gate,
    /// Source tags of releases rejected for what they are.
    pub(super) rejected_tags: HashSet<String>,
    /// Those of them rejected as not newer than the floor: considered again
    /// once the floor is reset by hand.
    pub(super) below_floor_tags: HashSet<String>,
    /// The floor was reset: the fetcher is asked to offer its release again.
    pub(super) offer_again: bool,
    /// The last passing failure, so a repeated one is logged once.
    pub(super) last_failure: Option<String>,
    /// The release just considered failed for a passing reason: the
    /// fetcher is asked to offer it again.
    pub(super) retry_wanted: bool,
    /// The release source's credentials, kept from the sanity check.
    pub(super) withheld: Withheld,
    /// The probation just over, for the fetcher ([`crate::fetcher::Fetcher::settled`]).
    pub(super) settled: Option<crate::fetcher::Settled>,
    /// What the source said of this host last (for the status).
    pub(super) rollout: Option<String>,
    /// This master's hold on the binary path, for the thread's whole life.
    pub(super) _lock: BinaryLock,
}

impl Upgrader {
    /// Takes the ledger as read or written. A floor reset by hand since
    /// (`floor-resets` went up; a ledger removed is not a reset) also lowers
    /// the installed version this master remembers to the new floor (a
    /// release signed with a mistaken high version may be the one
    /// installed), and releases refused as not newer are considered again.
    pub(super) fn adopt(&mut self, entries: Entries) {
        if entries.floor_resets > self.known.floor_resets {
            self.version = match (self.version.take(), &entries.highest) {
                (Some(v), Some(floor)) if v.cmp_precedence(floor).is_gt() => Some(floor.clone()),
                (Some(v), Some(_)) => Some(v),
                _ => None,
            };
            log::info!(
                "the version floor of {} was reset to {}; releases refused as not newer are considered again",
                self.target.path.display(),
                entries
                    .highest
                    .as_ref()
                    .map_or("nothing".to_string(), |v| v.to_string())
            );
            for tag in self.below_floor_tags.drain() {
                self.rejected_tags.remove(&tag);
            }
            self.offer_again = true;
        }
        self.known = entries;
    }

    /// Applies `change` to the ledger on disk (read again under its lock,
    /// so no other writer's update is lost) and takes the result.
    pub(super) fn update_ledger(
        &mut self,
        change: impl FnOnce(&mut Entries),
    ) -> Result<(), LedgerError> {
        let entries = self.ledger.update(change)?;
        self.adopt(entries);
        Ok(())
    }

    /// The source's tag for the binary now installed, when the ledger
    /// recorded one for this very file.
    pub(super) fn installed_tag(&mut self) -> Option<String> {
        let (sha256, tag) = self.known.installed.as_ref()?;
        (*sha256 == self.binary.current()).then(|| tag.clone())
    }

    /// Records that the installed binary (`sha256`) is the release `tag`, so
    /// a restarted master recognises it without downloading it.
    pub(super) fn remember_installed(&mut self, sha256: String, tag: Option<String>) {
        let Some(tag) = tag.filter(|t| !t.is_empty() && !t.chars().any(char::is_control)) else {
            return;
        };
        let entry = Some((sha256, tag));
        if self.known.installed != entry {
            if let Err(e) = self.update_ledger(|e| e.installed = entry) {
                log::debug!("cannot record which release is installed: {e}");
            }
        }
    }

    pub(super) fn remember_bad(&mut self, sha256: &str, tag: Option<&str>) {
        if let Some(t) = tag {
            self.rejected_tags.insert(t.to_string());
        }
        if let Err(e) = self.update_ledger(|e| {
            e.bad.insert(sha256.to_string());
        }) {
            log::warning!("cannot record the failed release: {e}");
        }
    }
}
