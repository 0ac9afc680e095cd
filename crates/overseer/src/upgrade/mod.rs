//! The self-upgrade pipeline (docs/design.md, "Self-upgrade"), run on a
//! thread of the master.
//!
//! ```text
//! fetcher ─► installed tag? ─► download ─► known bad? ─► signed as published?
//!   (poll)   (skip, unread)    (staging,   (skip)        (packed only: unsigned or
//!                              cap,                       unknown key refused here)
//!                              deadline)
//!        ─► unpack ─► same hash? ─► checksum ─► signature (version, target)
//!           (memory    (skip)
//!            bounded)
//!        ─► native executable ─► sanity check ─► pre_upgrade ─► still offered? ─► swap
//!                                                                (a fleet's release
//!                                                                 withdrawn meanwhile
//!                                                                 is dropped)
//!        ─► Report::Installed to the supervisor: restart + probation
//!             └─ failure: restore the previous binary, remember the release
//! ```
//!
//! Every step before the swap works on a private staging file in the
//! binary's directory; the running binary is untouched until the one
//! `rename`, and the staging file is removed on any failure.
//!
//! One master upgrades a binary path at a time (`lock.rs`); the ledger is
//! read again at every poll, so a repaired ledger or a floor reset by hand
//! takes effect without a restart, and an unreadable one pauses upgrades.
//!
//! A compressed file or archive is checked against its signature before any
//! decoder reads it, when the signature is over the file as published; one
//! signed over the executable inside is unpacked first, by decoders whose
//! memory is bounded (`unpack.rs`), and checked after. A panic in any step
//! (a decoder's bug, a `pre_upgrade` hook's, a fetcher's) is caught on the
//! upgrade thread: the release is rejected like any other, the staging files
//! are removed, and polling goes on.

mod download;
#[cfg(all(
    test,
    feature = "signatures",
    feature = "gzip",
    feature = "xz",
    feature = "zstd",
    feature = "tar",
    feature = "zip"
))]
mod hostile_input;
pub(crate) mod ledger;
mod lock;
mod pipeline;
mod poll;
pub(crate) mod probation;
mod rejection;
mod report;
mod sanity;
pub(crate) mod swap;
mod unpack;
mod upgrader;
mod verify;

use std::collections::HashSet;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use crate::binary_id::BinaryId;
use crate::config::UpgradeConfig;
use crate::error::{Error, Result};
use crate::fetcher::Context;
use crate::log;
use crate::shutdown::Shutdown;
use crate::withheld::Withheld;
use ledger::LedgerFile;
use lock::{BinaryLock, NotLocked};
use poll::panic_message;
use swap::Target;
use upgrader::Upgrader;

pub(crate) use report::{Gate, Pending, Report, ToSupervisor};
pub(crate) use sanity::run_bounded;
pub(crate) use verify::parse_version;

/// The upgrade thread's links with the master's loop.
pub(crate) struct Links {
    /// Where its reports go.
    pub supervisor: ToSupervisor,
    /// Fires once the master is stopping.
    pub stopping: Shutdown,
    /// Held by the thread while it changes files (see [`Gate`]).
    pub gate: Gate,
}

/// Starts the upgrade thread when a fetcher is configured. Upgrades that
/// cannot run here (the binary unresolvable or not writable, another master
/// on the same path) are turned off with a message; an error only when the
/// thread cannot be started. A release still on probation when the master
/// re-executed itself is `pending`: its verdict is awaited and recorded
/// before the first poll.
pub(crate) fn start(
    config: &UpgradeConfig,
    bin_path: &Path,
    installed_version: Option<String>,
    links: Links,
    withheld: Withheld,
    pending: Option<Pending>,
) -> Result<()> {
    let Links {
        supervisor,
        stopping,
        gate,
    } = links;
    let Some(fetcher) = config.fetcher.clone() else {
        return Ok(());
    };
    let target = match Target::resolve(bin_path) {
        Ok(t) => t,
        Err(e) => {
            log::error!(
                "upgrades are off: cannot resolve the binary {}: {e}",
                bin_path.display()
            );
            return Ok(());
        }
    };
    if let Err(e) = target.check_writable() {
        log::error!(
            "upgrades are off: cannot write beside the binary in {} ({e}); give the service's user write access to that directory, or install the binary in a writable place",
            target.dir.display()
        );
        return Ok(());
    }
    let binary_lock = match BinaryLock::take(&target.lock_path(), &target.path) {
        Ok(lock) => lock,
        Err(NotLocked::Held { lock, pid }) => {
            let who = pid.map_or("another master".to_string(), |p| {
                format!("another master (pid {p})")
            });
            log::error!(
                "upgrades are off: {who} upgrades {} (it holds {}); this master serves without upgrading it, and runs what that one installs from its next restart",
                target.path.display(),
                lock.display()
            );
            return Ok(());
        }
        Err(NotLocked::Failed { lock, error }) => {
            log::error!(
                "upgrades are off: cannot lock {} ({error}), so another master on the same binary could not be kept out",
                lock.display()
            );
            return Ok(());
        }
    };
    let ledger = LedgerFile::of(&target);
    // Only with both locks held: no other master, and no ledger writer
    // (whose temporary file is live while it holds the ledger's lock).
    match ledger.lock() {
        Ok(_ledger_lock) => target.remove_stale_staging(),
        Err(e) => log::debug!("stale files are left for the next start: {e}"),
    }
    let (known, unreadable) = match ledger.read() {
        Ok(entries) => (Some(entries), None),
        Err(e) => (None, Some(e)),
    };
    let version = installed_version.as_deref().and_then(verify::parse_version);
    let highest = known.as_ref().and_then(|k| k.highest.as_ref());
    if config.public_keys.is_empty() {
        log::warning!(
            "releases are not verified by signature: no public key is set, so whoever can change what the release source serves can run code as this service, starting with the sanity check that runs each new download; set Config::public_key (overseer run: --public-key) and sign releases"
        );
    } else if version.is_none() && unreadable.is_none() && highest.is_none() {
        log::warning!(
            "releases are verified by signature but the installed version is unknown: set Config::version so older signed releases are refused"
        );
    }
    let mut context = Context::new(target.path.clone());
    context.version = installed_version;
    context.public_keys = config.public_keys.clone();
    let mut upgrader = Upgrader {
        config: config.clone(),
        binary: BinaryId::new(target.path.clone()),
        target,
        ledger,
        ledger_readable: known.is_some(),
        known: known.unwrap_or_default(),
        version,
        supervisor,
        stopping,
        gate,
        rejected_tags: HashSet::new(),
        below_floor_tags: HashSet::new(),
        offer_again: false,
        last_failure: None,
        retry_wanted: false,
        withheld,
        settled: None,
        rollout: None,
        _lock: binary_lock,
    };
    if let Some(e) = unreadable {
        upgrader.ledger_unreadable(&e);
    }
    std::thread::Builder::new()
        .name("overseer-upgrade".into())
        .spawn(move || {
            let mut fetcher = match fetcher.lock() {
                Ok(f) => f,
                Err(e) => e.into_inner(),
            };
            context.installed_tag = upgrader.installed_tag();
            match panic::catch_unwind(AssertUnwindSafe(|| fetcher.init(&context))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    log::error!("upgrades are off: the fetcher cannot start: {e}");
                    return;
                }
                Err(p) => {
                    log::error!(
                        "upgrades are off: the fetcher panicked as it started: {}",
                        panic_message(&*p)
                    );
                    return;
                }
            }
            // A release on probation across a re-exec: its verdict first.
            if let Some(p) = pending {
                if !upgrader.settle(p) {
                    return;
                }
                if let Some(settled) = upgrader.settled.take() {
                    fetcher.settled(&settled);
                }
            }
            let polled = panic::catch_unwind(AssertUnwindSafe(|| {
                upgrader.poll_loop(&mut **fetcher);
            }));
            if let Err(p) = polled {
                // Every step that runs others' code or reads a release is
                // caught in the loop; this is the loop's own bug, said aloud.
                log::error!(
                    "upgrades are off: the upgrade thread panicked: {}",
                    panic_message(&*p)
                );
            }
        })
        .map_err(|e| Error::io("starting the upgrade thread", e))?;
    Ok(())
}
