//! The self-upgrade pipeline (SPEC §5), run on a thread of the master.
//!
//! ```text
//! fetcher ─► installed tag? ─► download ─► known bad? ─► signed as published?
//!   (poll)   (skip, unread)    (staging,   (skip)        (packed only: unsigned or
//!                              cap,                       unknown key refused here)
//!                              deadline)
//!        ─► unpack ─► same hash? ─► checksum ─► signature (version, target)
//!           (memory    (skip)
//!            bounded)
//!        ─► native executable ─► sanity check ─► pre_upgrade ─► swap
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
pub(crate) mod probation;
mod rejection;
mod sanity;
pub(crate) mod swap;
mod unpack;
mod verify;

use std::any::Any;
use std::collections::HashSet;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use crate::binary_id::BinaryId;
use crate::config::UpgradeConfig;
use crate::error::{Error, Result};
use crate::fetcher::{Context, Release};
use crate::log;
use crate::shutdown::Shutdown;
use crate::withheld::Withheld;
use ledger::{Entries, LedgerError, LedgerFile};
use lock::{BinaryLock, NotLocked};
use probation::{Installed, Verdict};
use rejection::Rejection;
use swap::Target;

pub(crate) use verify::parse_version;

/// What the upgrade thread tells the master's loop.
#[derive(Debug)]
pub(crate) enum Report {
    /// A release was swapped in; the loop answers on its `reply` once its
    /// first worker passed or failed probation (see [`probation`]).
    Installed(Installed),
    /// A release was turned down, or could not be considered (for the status).
    Rejected(String),
}

/// The upgrade thread's line to the master's loop, handed to it by the
/// master: sends a [`Report`], false once the loop is gone.
pub(crate) struct ToSupervisor(Box<dyn Fn(Report) -> bool + Send>);

impl ToSupervisor {
    /// A line that delivers reports with `send`.
    pub fn new(send: impl Fn(Report) -> bool + Send + 'static) -> Self {
        ToSupervisor(Box::new(send))
    }

    fn send(&self, report: Report) -> bool {
        (self.0)(report)
    }
}

/// Prepares the upgrade thread: `Ok(None)` without a fetcher; an error only
/// for a configuration that cannot work.
pub(crate) fn start(
    config: &UpgradeConfig,
    bin_path: &Path,
    installed_version: Option<String>,
    supervisor: ToSupervisor,
    stopping: Shutdown,
    withheld: Withheld,
) -> Result<()> {
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
        rejected_tags: HashSet::new(),
        below_floor_tags: HashSet::new(),
        offer_again: false,
        last_failure: None,
        retry_wanted: false,
        withheld,
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

/// The longest wait before retrying a release that failed for a passing
/// reason (unless the poll interval is longer).
const MAX_RETRY_WAIT: Duration = Duration::from_secs(300);

/// A panic's message, as `panic!` was given it.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// What makes two passing failures "the same" for the log: the message
/// without its numbers and without the random part of staging file names.
fn failure_key(reason: &str) -> String {
    let mut key = String::with_capacity(reason.len());
    let mut rest = reason;
    while let Some(at) = rest.find(".overseer-") {
        let (head, tail) = rest.split_at(at + ".overseer-".len());
        key.push_str(head);
        let end = tail
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    key.push_str(rest);
    key.retain(|c| !c.is_ascii_digit());
    key
}

struct Upgrader {
    config: UpgradeConfig,
    target: Target,
    binary: BinaryId,
    ledger: LedgerFile,
    /// The ledger as last read or written.
    known: Entries,
    /// Whether `known` is the ledger's content (false while it cannot be
    /// read: no release is considered then).
    ledger_readable: bool,
    /// The installed version (signed, or configured).
    version: Option<semver::Version>,
    /// Where reports go: the master's loop.
    supervisor: ToSupervisor,
    /// Fires once the master is stopping.
    stopping: Shutdown,
    /// Source tags of releases rejected for what they are.
    rejected_tags: HashSet<String>,
    /// Those of them rejected as not newer than the floor: considered again
    /// once the floor is reset by hand.
    below_floor_tags: HashSet<String>,
    /// The floor was reset: the fetcher is asked to offer its release again.
    offer_again: bool,
    /// The last passing failure, so a repeated one is logged once.
    last_failure: Option<String>,
    /// The release just considered failed for a passing reason: the
    /// fetcher is asked to offer it again.
    retry_wanted: bool,
    /// The release source's credentials, kept from the sanity check.
    withheld: Withheld,
    /// This master's hold on the binary path, for the thread's whole life.
    _lock: BinaryLock,
}

impl Upgrader {
    fn poll_loop(&mut self, fetcher: &mut dyn crate::fetcher::Fetcher) {
        // Releases that failed for a passing reason in a row: each retry
        // (a full download) waits twice as long as the one before.
        let mut retries: u32 = 0;
        loop {
            let interval = fetcher.interval().max(self.config.min_fetch_interval);
            let wait = if retries == 0 {
                interval
            } else {
                interval
                    .saturating_mul(1 << retries.min(16))
                    .min(MAX_RETRY_WAIT.max(interval))
            };
            // Sleeps the whole interval, unless the master stops meanwhile.
            if self.stopping.wait_timeout(wait) {
                return;
            }
            // No release is judged without the ledger's floor and memory.
            if !self.read_ledger() {
                continue;
            }
            if std::mem::take(&mut self.offer_again) {
                fetcher.retry();
            }
            let fetched = panic::catch_unwind(AssertUnwindSafe(|| fetcher.fetch()));
            let release = match fetched {
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) => {
                    retries = 0;
                    continue;
                }
                Ok(Err(e)) => {
                    self.passing_failure(format!("fetching failed: {e}"));
                    continue;
                }
                Err(p) => {
                    self.passing_failure(format!(
                        "fetching failed: the fetcher panicked: {}",
                        panic_message(&*p)
                    ));
                    continue;
                }
            };
            let carry_on = self.consider(release);
            // A download and its checks leave freed buffers behind.
            crate::sys::release_free_memory();
            if !carry_on {
                return;
            }
            if std::mem::take(&mut self.retry_wanted) {
                fetcher.retry();
                retries = retries.saturating_add(1);
            } else {
                retries = 0;
            }
        }
    }

    /// Reads the ledger again (an operator may have repaired it or reset
    /// the floor); false, said once while it lasts, when it cannot be read.
    fn read_ledger(&mut self) -> bool {
        match self.ledger.read() {
            Ok(entries) => {
                if !std::mem::replace(&mut self.ledger_readable, true) {
                    log::info!(
                        "{} can be read now; upgrades resume",
                        self.ledger.path.display()
                    );
                    self.last_failure = None;
                    // What it holds now is the starting point, not a change.
                    self.known = entries;
                } else {
                    self.adopt(entries);
                }
                true
            }
            Err(e) => {
                self.ledger_unreadable(&e);
                false
            }
        }
    }

    /// Says (once while it lasts) that upgrades wait for the ledger.
    fn ledger_unreadable(&mut self, e: &LedgerError) {
        self.ledger_readable = false;
        self.passing_failure(format!(
            "upgrades are paused: {e}; repair or remove it (removing it forgets the highest signed version seen and the releases that failed)"
        ));
    }

    /// Takes the ledger as read or written. A floor reset by hand since
    /// (`floor-resets` went up; a ledger removed is not a reset) also lowers
    /// the installed version this master remembers to the new floor (a
    /// release signed with a mistaken high version may be the one
    /// installed), and releases refused as not newer are considered again.
    fn adopt(&mut self, entries: Entries) {
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
    fn update_ledger(&mut self, change: impl FnOnce(&mut Entries)) -> Result<(), LedgerError> {
        let entries = self.ledger.update(change)?;
        self.adopt(entries);
        Ok(())
    }

    /// The source's tag for the binary now installed, when the ledger
    /// recorded one for this very file.
    fn installed_tag(&mut self) -> Option<String> {
        let (sha256, tag) = self.known.installed.as_ref()?;
        (*sha256 == self.binary.current()).then(|| tag.clone())
    }

    /// Records that the installed binary (`sha256`) is the release `tag`, so
    /// a restarted master recognises it without downloading it.
    fn remember_installed(&mut self, sha256: String, tag: Option<String>) {
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

    /// Logs a passing failure, once while it repeats.
    fn passing_failure(&mut self, reason: String) {
        let key = failure_key(&reason);
        if self.last_failure.as_deref() != Some(key.as_str()) {
            log::error!("{reason}; trying again at the next poll");
            let _ = self.supervisor.send(Report::Rejected(reason.clone()));
            self.last_failure = Some(key);
        } else {
            log::debug!("{reason} (again)");
        }
    }

    /// Runs the pipeline on one release; false once the master is gone.
    fn consider(&mut self, release: Release) -> bool {
        let source = release.source.clone();
        let tag = release.tag.clone();
        if let Some(t) = &tag {
            if self.rejected_tags.contains(t) {
                log::debug!("{source}: release {t} was rejected before; skipped");
                return true;
            }
        }
        let named = describe_release(&release);
        // A panic is a rejection of the release: unwinding has dropped (and
        // so removed) its staging files, and what is left of any is removed.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| self.pipeline(release, &named)))
            .unwrap_or_else(|p| {
                self.target.remove_stale_staging();
                Err(Rejection::release(format!(
                    "the upgrade pipeline panicked: {}",
                    panic_message(&*p)
                )))
            });
        match outcome {
            Ok(Step::Same) => {
                self.last_failure = None;
                log::debug!("{source}: same binary as the running one; nothing to do");
                let current = self.binary.current();
                self.remember_installed(current, tag);
            }
            Ok(Step::KnownBad(hash)) => {
                log::debug!("{source}: release {hash} failed before; skipped");
                if let Some(t) = tag {
                    self.rejected_tags.insert(t);
                }
            }
            Ok(Step::Installed(installed)) => {
                self.last_failure = None;
                let sha = installed.sha256.clone();
                let version = installed.version.clone();
                let (reply_tx, reply_rx) = mpsc::channel();
                let report = Report::Installed(Installed {
                    reply: reply_tx,
                    ..installed
                });
                if !self.supervisor.send(report) {
                    return false;
                }
                match reply_rx.recv() {
                    Ok(Verdict::Kept) => {
                        if let Some(v) = version.as_deref().and_then(verify::parse_version) {
                            self.version = Some(v);
                        }
                        self.remember_installed(sha, tag);
                    }
                    Ok(Verdict::RolledBack(reason)) => {
                        log::debug!("remembering release {sha} as bad: {reason}");
                        self.remember_bad(&sha, tag.as_deref());
                    }
                    Err(_) => return false,
                }
            }
            Err(r) if r.of_release => {
                self.last_failure = None;
                if r.below_floor {
                    if let Some(t) = &tag {
                        self.below_floor_tags.insert(t.clone());
                    }
                }
                log::error!(
                    "release {named} rejected: {}; the running binary is unchanged",
                    r.reason
                );
                let _ = self
                    .supervisor
                    .send(Report::Rejected(format!("{named} rejected: {}", r.reason)));
                if let Some(t) = tag {
                    self.rejected_tags.insert(t);
                }
            }
            Err(r) => {
                self.retry_wanted = true;
                self.passing_failure(format!(
                    "release {named} not installed: {}; the running binary is unchanged",
                    r.reason
                ))
            }
        }
        true
    }

    fn remember_bad(&mut self, sha256: &str, tag: Option<&str>) {
        if let Some(t) = tag {
            self.rejected_tags.insert(t.to_string());
        }
        if let Err(e) = self.update_ledger(|e| {
            e.bad.insert(sha256.to_string());
        }) {
            log::warning!("cannot record the failed release: {e}");
        }
    }

    fn pipeline(&mut self, release: Release, named: &str) -> Result<Step, Rejection> {
        // 0. The release the installed binary came from: its body is not read.
        if release.tag.is_some() && release.tag == self.installed_tag() {
            log::debug!("release {named} is the one installed; not downloaded");
            return Ok(Step::Same);
        }
        // Owned: the ledger is written (through `self`) half-way.
        let cfg = &self.config.clone();
        let t = &self.target.clone();
        // 1. Download into a private staging file beside the binary.
        let out = download::staging_file(&t.dir, &t.name).map_err(|e| {
            Rejection::io(
                &format!("creating a staging file in {}", t.dir.display()),
                e,
            )
        })?;
        let Release {
            body,
            size,
            name,
            sha256,
            signature,
            version,
            ..
        } = release;
        log::info!("downloading release {named}");
        let progress = crate::progress::Reporter::start(cfg.progress.as_deref(), named, size);
        let limits = (cfg.max_download_size, cfg.download_timeout);
        let mut raw = download::download(body, out, size, limits, progress)?;
        let raw_sha = raw.sha256.clone();
        log::debug!("downloaded {} bytes, sha256 {raw_sha}", raw.size);
        if self.known.bad.contains(&raw_sha) {
            return Ok(Step::KnownBad(raw_sha));
        }
        // A compressed file or archive is checked against its signature
        // before any decoder reads it, when the signature is over the file
        // as published; else it may be over the executable inside, checked
        // after unpacking (step 5).
        let packed = unpack::sniff(raw.file.as_file_mut())
            .map_err(|e| Rejection::io("reading the staging file", e))?
            != unpack::Format::Plain;
        let mut verified = None;
        if packed && !cfg.public_keys.is_empty() {
            verified = verify::signature_over_download(
                &cfg.public_keys,
                signature.as_deref(),
                raw.file.as_file_mut(),
            )?;
        }
        // 2. Unpack.
        let mut wanted = vec![cfg
            .executable_name
            .clone()
            .unwrap_or_else(|| t.name.clone())];
        // The release's name without its extensions (`app.tar.gz` → `app`);
        // none for a name that starts with a dot.
        if let Some(stem) = name.as_deref().and_then(|n| n.split('.').next()) {
            if !stem.is_empty() {
                wanted.push(stem.to_string());
            }
        }
        let unpack = unpack::Unpack {
            dir: &t.dir,
            bin_name: &t.name,
            wanted: &wanted,
            max_size: cfg.max_download_size,
        };
        let mut bin = match unpack::unpack(&mut raw, &unpack)? {
            Some(unpacked) => {
                drop(raw);
                unpacked
            }
            None => raw,
        };
        // 3. Same binary as the one installed?
        if bin.sha256 == self.binary.current() {
            return Ok(Step::Same);
        }
        if self.known.bad.contains(&bin.sha256) {
            return Ok(Step::KnownBad(bin.sha256));
        }
        // 4. Checksum.
        if let Some(expected) = &sha256 {
            verify::checksum(expected, &raw_sha, &bin.sha256)?;
        }
        // 5. Signature, version, target.
        let mut signed_version = None;
        if !cfg.public_keys.is_empty() {
            let signed = match &verified {
                // Verified over the file as published, before unpacking.
                Some(trusted) => trusted.signed()?,
                // Not over the file as published (or not packed): over the
                // executable, then.
                None => verify::signature(
                    &cfg.public_keys,
                    signature.as_deref(),
                    bin.file.as_file_mut(),
                )?,
            };
            let floor = verify::version_floor(
                &signed.version,
                self.version.as_ref(),
                self.known.highest.as_ref(),
            );
            if let Some(floor) = floor {
                if !cfg.allow_downgrade {
                    return Err(Rejection::below_floor(format!(
                        "signed version {} is not newer than {floor} (installed or seen before); set allow_downgrade to accept it",
                        signed.version
                    )));
                }
            }
            let version = signed.version.clone();
            if let Err(e) = self.update_ledger(|e| e.saw(&version)) {
                return Err(Rejection::new(format!("recording the version seen: {e}")));
            }
            signed_version = Some(signed.version.to_string());
        }
        // 6. A native executable?
        verify::native_executable(bin.file.as_file(), &t.path)?;
        swap::match_permissions(t, bin.file.as_file())
            .map_err(|e| Rejection::io("setting the new binary's permissions", e))?;
        bin.file
            .as_file()
            .sync_all()
            .map_err(|e| Rejection::io("writing the staging file", e))?;
        // Close the writable handle before running it (ETXTBSY otherwise).
        let staged_path = bin.file.path().to_path_buf();
        let temp_path = bin.file.into_temp_path();
        // 7. Sanity check.
        if cfg.sanity_check {
            sanity::check(
                &staged_path,
                cfg.sanity_args.as_deref(),
                cfg.sanity_timeout,
                &self.withheld,
            )?;
        }
        // 8. pre_upgrade veto.
        if let Some(hook) = &cfg.pre_upgrade {
            hook(&staged_path)
                .map_err(|e| Rejection::release(format!("vetoed by pre_upgrade: {e}")))?;
        }
        // 9. Swap.
        swap::install(t, temp_path).map_err(|e| {
            Rejection::io(
                &format!("swapping the new binary in at {}", t.path.display()),
                e,
            )
        })?;
        let version = signed_version.or(version);
        log::info!(
            "installed {} at {} (sha256 {}); the previous binary is kept as {}",
            version
                .as_deref()
                .map(|v| format!("version {v}"))
                .unwrap_or_else(|| "a new release".into()),
            t.path.display(),
            bin.sha256.get(..12).unwrap_or(&bin.sha256),
            t.rollback_path().display()
        );
        Ok(Step::Installed(Installed {
            target: t.clone(),
            sha256: bin.sha256,
            version,
            reply: mpsc::channel().0,
        }))
    }
}

/// Where the pipeline stopped short of installing.
enum Step {
    Same,
    KnownBad(String),
    Installed(Installed),
}

fn describe_release(r: &Release) -> String {
    match (&r.version, &r.tag) {
        (Some(v), _) => format!("{v} from {}", r.source),
        (None, Some(t)) => format!("{} ({t})", r.source),
        (None, None) => r.source.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::failure_key;

    #[test]
    fn repeated_failures_differing_in_staging_names_and_numbers_are_the_same() {
        let a = "writing the staging file: No space left (os error 28) at path \"/d/.app.overseer-E9zTSf.staging\"";
        let b = "writing the staging file: No space left (os error 28) at path \"/d/.app.overseer-6l6YvU.staging\"";
        assert_eq!(failure_key(a), failure_key(b));
        assert_ne!(
            failure_key(a),
            failure_key("download truncated at 10 of 20 bytes")
        );
    }
}
