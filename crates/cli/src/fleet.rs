//! `overseer publish` and `overseer rollout`: a release added to a fleet's
//! signed manifest (`overseer::fleet`), and its rollout watched and steered,
//! in the store the fleet's hosts poll: a directory, or a bucket under a
//! prefix (`s3://`, `gs://`, `az://`).
//!
//! The store holds `manifest.json`, its signature `manifest.json.minisig`,
//! each artifact at `VERSION/TARGET/NAME`, and the hosts' reports under
//! `reports/`. The artifact is written first and the manifest last, each
//! whole (a directory's files renamed into place, an object PUT at once),
//! so a host never sees a manifest naming a file not there yet.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use overseer::fetcher::{Object, Store, MANIFEST, SIGNATURE};
use overseer::fleet::{
    advance, tally, Advance, Artifact, Manifest, Release, Report, Wave, FORMAT, MAX_MANIFEST_SIZE,
    MAX_REPORT_SIZE, REPORTS,
};
use sha2::{Digest, Sha256};

use crate::parse;
use crate::publish::{secret_key, this_target};
use crate::source::Net;

/// A signature is a few hundred bytes.
const MAX_SIGNATURE_SIZE: u64 = 16 * 1024;
/// The most reports read (a fleet of thousands, a few releases each).
const MAX_REPORTS: usize = 100_000;

/// Where the fleet's store is: DEST and how to reach a bucket.
#[derive(Args, Debug)]
pub(crate) struct StoreArgs {
    /// The store's endpoint, for S3-compatible stores (MinIO, R2, …), a
    /// private GCS or Azure endpoint, or an emulator.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// The S3 bucket's region [default: AWS_REGION, else us-east-1].
    #[arg(long)]
    region: Option<String>,
    /// CA certificates (PEM) to trust besides the system's.
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// Allow a plain http:// endpoint that is not on loopback.
    #[arg(long)]
    allow_http: bool,
    /// The store the fleet polls: a directory (created if missing),
    /// s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX] or
    /// az://ACCOUNT/CONTAINER[/PREFIX]. Credentials come from the
    /// environment (AWS_*, GOOGLE_*, AZURE_*), as `overseer run` reads them.
    dest: String,
}

impl StoreArgs {
    /// The store, checked.
    fn open(&self) -> Result<Box<dyn Store>, String> {
        let ca = match &self.ca_file {
            Some(path) => Some((
                path.display().to_string(),
                std::fs::read(path)
                    .map_err(|e| format!("--ca-file {}: cannot read it: {e}", path.display()))?,
            )),
            None => None,
        };
        if self.dest.starts_with("http://") || self.dest.starts_with("https://") {
            return Err(format!(
                "{}: a web server is read-only here: publish to the directory or bucket it serves",
                self.dest
            ));
        }
        if let Some(url) = self
            .endpoint
            .as_deref()
            .filter(|u| u.starts_with("http://"))
        {
            overseer::fetcher::check_plain_http(url, self.allow_http)
                .map_err(|e| format!("--endpoint: {e}"))?;
        }
        let net = Net {
            s3_endpoint: self.endpoint.clone(),
            s3_region: self.region.clone(),
            s3_path_style: None,
            azure_endpoint: self.endpoint.clone(),
            gcs_endpoint: self.endpoint.clone(),
            allow_http: self.allow_http,
            ca,
        };
        net.store(&self.dest)
    }
}

/// `overseer publish`.
#[derive(Args, Debug)]
pub(crate) struct PublishArgs {
    /// The secret key (from `overseer keygen`); the manifest in DEST, if
    /// any, must be signed by it.
    #[arg(long, short = 'k')]
    key: PathBuf,
    /// The password is in this environment variable (for encrypted keys).
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// The release's version (semantic versioning: 1.4.0, v2.0.0-rc.1).
    #[arg(long)]
    version: String,
    /// The Rust target triple BINARY runs on [default: this machine's].
    /// Publish a release's targets one at a time; each adds its artifact.
    #[arg(long)]
    target: Option<String>,
    /// The channel of a new manifest (an existing one keeps its own).
    #[arg(long, default_value = "stable")]
    channel: String,
    /// The waves, from now: cumulative shares of hosts with the time each
    /// opens, like 1%,10%@2h,50%@6h,100%@24h [default: every host at once].
    #[arg(long, value_name = "WAVES")]
    waves: Option<String>,
    /// How long the signed manifest stays valid: hosts refuse it afterwards
    /// (so a stale copy cannot be served for ever). Publish or edit again
    /// before then.
    #[arg(long, default_value = "30d", value_parser = parse::duration)]
    expires: Duration,
    /// Every host takes this release at once, whatever the waves.
    #[arg(long)]
    critical: bool,
    /// An earlier build of the program (repeatable): a patch from it to
    /// BINARY is published beside the artifact, and a host running it
    /// downloads the patch instead of the whole binary (falling back to
    /// the whole binary if anything about the patch fails).
    #[arg(long, value_name = "OLD_BINARY")]
    delta_from: Vec<PathBuf>,
    /// The executable to publish.
    binary: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

/// Runs `overseer publish`.
pub(crate) fn publish(a: PublishArgs) -> Result<(), String> {
    let mut store = a.store.open()?;
    let now = unix_now()?;
    let rollout = match &a.waves {
        Some(text) => waves(text, now)?,
        None => Vec::new(),
    };
    let version = a.version.strip_prefix('v').unwrap_or(&a.version);
    semver::Version::parse(version).map_err(|e| {
        format!(
            "--version {:?} is not a semantic version (like 1.4.0): {e}",
            a.version
        )
    })?;
    let target = a.target.clone().unwrap_or_else(this_target);
    if target.is_empty() || target.contains(['/', '\\', ' ', '\t', ':']) {
        return Err(format!(
            "--target {target:?} must be one word, like x86_64-unknown-linux-gnu"
        ));
    }
    let name = a
        .binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && !n.contains(['/', '\\']) && !n.chars().any(char::is_control))
        .ok_or_else(|| format!("{}: not a file name to publish under", a.binary.display()))?;
    let (sk, pk) = keys(&a.key, a.password_env.as_deref())?;

    // The manifest as it stands, which must be this key's, unedited.
    let mut manifest = current(&mut *store, &pk.to_base64())?.unwrap_or(Manifest {
        format: FORMAT,
        channel: a.channel.clone(),
        serial: 0,
        expires: 0,
        releases: Vec::new(),
    });

    // The artifact, first.
    let bytes =
        std::fs::read(&a.binary).map_err(|e| format!("cannot read {}: {e}", a.binary.display()))?;
    if bytes.is_empty() {
        return Err(format!("{} is empty", a.binary.display()));
    }
    let path = format!("{version}/{target}/{name}");
    store
        .write(&path, &bytes)
        .map_err(|e| format!("cannot write the artifact: {e}"))?;
    let sha256 = format!("{:x}", Sha256::digest(&bytes));
    let mut patches = Vec::new();
    for old in &a.delta_from {
        if let Some(patch) = delta(
            &mut *store,
            old,
            &bytes,
            &sha256,
            &format!("{version}/{target}"),
        )? {
            patches.push(patch);
        }
    }
    let artifact = Artifact {
        path: path.clone(),
        size: bytes.len() as u64,
        sha256,
        patches,
    };
    match manifest.releases.iter_mut().find(|r| r.version == version) {
        Some(release) => {
            release.artifacts.insert(target.clone(), artifact);
            if a.waves.is_some() {
                release.rollout = rollout;
            }
            release.critical |= a.critical;
        }
        None => manifest.releases.push(Release {
            version: version.to_string(),
            artifacts: [(target.clone(), artifact)].into(),
            rollout,
            yanked: false,
            critical: a.critical,
            halted: None,
        }),
    }
    let what = format!("published {version} for {target}: {path}");
    sign_and_write(&mut *store, &mut manifest, &sk, &pk, now, a.expires, &what)
}

/// The patch from the build at `old` to `new` (whose SHA-256 is
/// `new_sha256`), written to the store under `dir/patches/`: bidiff's
/// format, compressed with zstd at level 19 in an 8 MiB window (the most a
/// host decodes), and applied here first as hosts will, so a patch that
/// would not rebuild `new` exactly is never published. `None`, said, when
/// the patch saves nothing.
fn delta(
    store: &mut dyn Store,
    old: &std::path::Path,
    new: &[u8],
    new_sha256: &str,
    dir: &str,
) -> Result<Option<overseer::fleet::Patch>, String> {
    use std::io::Write;
    let base_bytes =
        std::fs::read(old).map_err(|e| format!("--delta-from {}: {e}", old.display()))?;
    let base = format!("{:x}", Sha256::digest(&base_bytes));
    if base == new_sha256 {
        println!("--delta-from {}: the same binary; no patch", old.display());
        return Ok(None);
    }
    let mut raw = Vec::new();
    bidiff::simple_diff(&base_bytes, new, &mut raw)
        .map_err(|e| format!("--delta-from {}: cannot make the patch: {e}", old.display()))?;
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 19)
        .and_then(|mut e| {
            e.set_parameter(zstd::stream::raw::CParameter::WindowLog(23))?;
            Ok(e)
        })
        .map_err(|e| format!("cannot compress the patch: {e}"))?;
    encoder
        .write_all(&raw)
        .map_err(|e| format!("cannot compress the patch: {e}"))?;
    let patch = encoder
        .finish()
        .map_err(|e| format!("cannot compress the patch: {e}"))?;
    drop(raw);
    // Applied as a host will, before anything is written.
    let rebuilt = overseer::delta::apply(
        &mut &patch[..],
        std::io::Cursor::new(&base_bytes),
        &mut std::io::sink(),
        patch.len() as u64,
        new.len() as u64,
    )
    .map_err(|e| {
        format!(
            "--delta-from {}: the patch does not apply: {e}",
            old.display()
        )
    })?;
    if rebuilt.sha256 != new_sha256 {
        return Err(format!(
            "--delta-from {}: the patch does not rebuild the binary",
            old.display()
        ));
    }
    if patch.len() >= new.len() {
        println!(
            "--delta-from {}: a patch of {} bytes saves nothing on {}; none published",
            old.display(),
            patch.len(),
            new.len()
        );
        return Ok(None);
    }
    let path = format!("{dir}/patches/{base}.bidiff.zst");
    store
        .write(&path, &patch)
        .map_err(|e| format!("cannot write the patch: {e}"))?;
    println!(
        "patch from {} ({}): {} bytes, {:.1} % of the binary",
        old.display(),
        base.get(..12).unwrap_or(&base),
        patch.len(),
        patch.len() as f64 * 100.0 / new.len() as f64
    );
    Ok(Some(overseer::fleet::Patch {
        base,
        size: patch.len() as u64,
        sha256: format!("{:x}", Sha256::digest(&patch)),
        path,
    }))
}

/// Raises the serial, sets the expiry, checks the result as hosts will,
/// signs it and writes it (the signature first, then the manifest), then
/// says `what` was done.
fn sign_and_write(
    store: &mut dyn Store,
    manifest: &mut Manifest,
    sk: &minisign::SecretKey,
    pk: &minisign::PublicKey,
    now: u64,
    expires: Duration,
    what: &str,
) -> Result<(), String> {
    manifest.serial += 1;
    manifest.expires = now.saturating_add(expires.as_secs());
    let bytes = manifest.to_bytes();
    // What hosts will check, checked here first.
    Manifest::parse(&bytes).map_err(|e| format!("the new manifest would be refused: {e}"))?;
    let comment = format!("channel:{}\tserial:{}", manifest.channel, manifest.serial);
    let signature = minisign::sign(Some(pk), sk, &bytes[..], Some(&comment), None)
        .map_err(|e| format!("cannot sign the manifest: {e}"))?;
    // The signature is written before the manifest it signs: a host that
    // reads them between the two renames sees the old manifest with the new
    // signature, refuses it and reads both again at its next poll.
    store
        .write(SIGNATURE, signature.to_string().as_bytes())
        .map_err(|e| format!("cannot write the signature: {e}"))?;
    store
        .write(MANIFEST, &bytes)
        .map_err(|e| format!("cannot write the manifest: {e}"))?;
    println!(
        "{what} ({}: serial {}, valid until {})",
        store.locate(MANIFEST),
        manifest.serial,
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(manifest.expires)),
    );
    Ok(())
}

/// The time now, in Unix seconds.
fn unix_now() -> Result<u64, String> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| format!("the clock is before 1970: {e}"))?
        .as_secs())
}

/// The secret key at `key` and its public key.
fn keys(
    key: &std::path::Path,
    password_env: Option<&str>,
) -> Result<(minisign::SecretKey, minisign::PublicKey), String> {
    let sk = secret_key(key, password_env)?;
    let pk = minisign::PublicKey::from_secret_key(&sk)
        .map_err(|e| format!("cannot derive the public key of {}: {e}", key.display()))?;
    Ok((sk, pk))
}

/// The manifest in `store`, verified with `public_key`, or `None` when
/// there is none yet.
fn current(store: &mut dyn Store, public_key: &str) -> Result<Option<Manifest>, String> {
    let bytes = match store
        .read(MANIFEST, MAX_MANIFEST_SIZE as u64, None)
        .map_err(|e| format!("cannot read the manifest: {e}"))?
    {
        Object::Found { bytes, .. } => bytes,
        _ => return Ok(None),
    };
    let path = store.locate(MANIFEST);
    let signature = match store
        .read(SIGNATURE, MAX_SIGNATURE_SIZE, None)
        .map_err(|e| format!("cannot read the signature: {e}"))?
    {
        Object::Found { bytes, .. } => String::from_utf8_lossy(&bytes).into_owned(),
        _ => {
            return Err(format!(
            "{path} has no signature {} (restore it, or move the manifest away to start a new one)",
            store.locate(SIGNATURE)
        ))
        }
    };
    Manifest::verify(&bytes, &signature, &[public_key.to_string()])
        .map(Some)
        .map_err(|e| {
            format!(
                "{path} is not one this key signed as it is: {e}. Publish with the key that signed it; a manifest edited by hand must be restored (hosts refuse it too)"
            )
        })
}

/// `overseer rollout`.
#[derive(Args, Debug)]
pub(crate) struct RolloutArgs {
    #[command(subcommand)]
    action: Rollout,
}

/// What `overseer rollout` does.
#[derive(clap::Subcommand, Debug)]
enum Rollout {
    /// Shows each release of the manifest in DEST: its waves, the share of
    /// hosts it has now, whether it is halted, withdrawn or critical, and
    /// what the hosts' reports say of it (expected, upgraded, rolled back,
    /// silent).
    Status {
        /// Check the manifest's signature with this public key (the
        /// `.pub` file, or its base64 line).
        #[arg(long, value_name = "PUB")]
        public_key: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Halts a release's rollout: the share of hosts that have it stays
    /// where it is until `resume`.
    Halt(Edit),
    /// Resumes a halted rollout: the waves still to come open as much
    /// later as it stayed halted.
    Resume(Edit),
    /// Withdraws a release: no host takes it, and hosts running it move to
    /// the newest release not withdrawn, even an older one.
    Yank(Edit),
    /// Opens the next wave of a release now if the hosts' reports allow it
    /// (every host expected in the current wave reported, at most
    /// --max-rollbacks rolled back); halts the rollout when more rolled
    /// back. For a cron or CI job: health-gated waves with no server.
    Advance {
        /// The most hosts of the release that may have rolled it back.
        #[arg(long, value_name = "N")]
        max_rollbacks: usize,
        #[command(flatten)]
        edit: Edit,
    },
}

/// An edit of the manifest: signed again, its serial raised.
#[derive(Args, Debug)]
struct Edit {
    /// The publisher's secret key (the manifest must verify with it).
    #[arg(long, short = 'k')]
    key: PathBuf,
    /// The password is in this environment variable (for encrypted keys).
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// The release [default for halt and resume: the newest].
    #[arg(long)]
    version: Option<String>,
    /// How long the manifest signed again stays valid.
    #[arg(long, default_value = "30d", value_parser = parse::duration)]
    expires: Duration,
    #[command(flatten)]
    store: StoreArgs,
}

/// Runs `overseer rollout`.
pub(crate) fn rollout(a: RolloutArgs) -> Result<(), String> {
    let now = unix_now()?;
    let (edit, change) = match a.action {
        Rollout::Status { public_key, store } => {
            return status(&mut *store.open()?, public_key.as_deref(), now)
        }
        Rollout::Halt(e) => (e, Change::Halt),
        Rollout::Resume(e) => (e, Change::Resume),
        Rollout::Yank(e) => (e, Change::Yank),
        Rollout::Advance {
            max_rollbacks,
            edit,
        } => (edit, Change::Advance(max_rollbacks)),
    };
    let mut store = edit.store.open()?;
    let (sk, pk) = keys(&edit.key, edit.password_env.as_deref())?;
    let mut manifest = current(&mut *store, &pk.to_base64())?.ok_or_else(|| {
        format!(
            "no manifest at {}: publish a release there first",
            store.locate(MANIFEST)
        )
    })?;
    let reports = match change {
        Change::Advance(_) => reports(&mut *store)?,
        _ => Vec::new(),
    };
    let before = manifest.clone();
    let release = match &edit.version {
        Some(v) => {
            let wanted = v.strip_prefix('v').unwrap_or(v);
            manifest
                .releases
                .iter_mut()
                .find(|r| r.version.strip_prefix('v').unwrap_or(&r.version) == wanted)
                .ok_or_else(|| {
                    format!("no release {v} in the manifest (overseer rollout status lists them)")
                })?
        }
        None if change == Change::Yank => {
            return Err("yank needs --version: the release to withdraw".into())
        }
        None => manifest
            .releases
            .iter_mut()
            .max_by_key(|r| r.semver())
            .ok_or("the manifest has no release")?,
    };
    let v = release.version.clone();
    let what = match change {
        Change::Halt if release.halted.is_some() => return Err(format!("{v} is halted already")),
        Change::Resume if release.halted.is_none() => return Err(format!("{v} is not halted")),
        Change::Yank if release.yanked => return Err(format!("{v} is withdrawn already")),
        Change::Halt => {
            release.halt(now);
            format!(
                "halted {v} at {:.1} % of hosts",
                release.fraction_at(now) * 100.0
            )
        }
        Change::Resume => {
            release.resume(now);
            format!("resumed {v}")
        }
        Change::Yank => {
            release.yanked = true;
            format!("withdrew {v}")
        }
        Change::Advance(max) => {
            let Some(old) = before.releases.iter().find(|r| r.version == v) else {
                return Err(format!("no release {v}"));
            };
            let t = tally(&before, old, &reports, now);
            match advance(release, &t, max, now) {
                Advance::Opened { wave, fraction } => format!(
                    "{v}: wave {wave} opened, {:.1} % of hosts ({} kept, {} rolled back in wave {})",
                    fraction * 100.0,
                    t.kept.len(),
                    t.rolled_back.len(),
                    t.wave.0
                ),
                Advance::Halted { rolled_back } => {
                    for (host, why) in &t.rolled_back {
                        println!("{v}: {host} rolled back: {why}");
                    }
                    format!(
                        "{v}: halted at {:.1} % of hosts: {rolled_back} rolled back, more than {max}",
                        release.fraction_at(now) * 100.0
                    )
                }
                Advance::Stay(why) => {
                    println!("{v}: nothing to do: {why}");
                    return Ok(());
                }
            }
        }
    };
    sign_and_write(
        &mut *store,
        &mut manifest,
        &sk,
        &pk,
        now,
        edit.expires,
        &what,
    )
}

/// A change `overseer rollout` makes to one release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Halt,
    Resume,
    Yank,
    /// With the most rollbacks allowed.
    Advance(usize),
}

/// Every report in `store`; one that cannot be read is said and skipped.
fn reports(store: &mut dyn Store) -> Result<Vec<Report>, String> {
    let names = store
        .list(REPORTS)
        .map_err(|e| format!("cannot list the reports: {e}"))?;
    let mut reports = Vec::new();
    for name in names
        .iter()
        .filter(|n| n.ends_with(".json"))
        .take(MAX_REPORTS)
    {
        match store.read(name, MAX_REPORT_SIZE, None) {
            Ok(Object::Found { bytes, .. }) => match Report::parse(&bytes) {
                Ok(r) => reports.push(r),
                Err(e) => eprintln!("{}: skipped: {e}", store.locate(name)),
            },
            Ok(_) => {}
            Err(e) => eprintln!("{}: skipped: {e}", store.locate(name)),
        }
    }
    Ok(reports)
}

/// `overseer rollout status`.
fn status(store: &mut dyn Store, public_key: Option<&str>, now: u64) -> Result<(), String> {
    let path = store.locate(MANIFEST);
    let (manifest, verified) = match public_key {
        Some(key) => {
            let key = match std::fs::read_to_string(key) {
                Ok(text) => text,
                Err(_) => key.to_string(),
            };
            (
                current(store, &key)?.ok_or_else(|| format!("no manifest at {path}"))?,
                true,
            )
        }
        None => {
            let bytes = match store
                .read(MANIFEST, MAX_MANIFEST_SIZE as u64, None)
                .map_err(|e| format!("cannot read the manifest: {e}"))?
            {
                Object::Found { bytes, .. } => bytes,
                _ => return Err(format!("no manifest at {path}")),
            };
            (
                Manifest::parse(&bytes).map_err(|e| format!("{path}: {e}"))?,
                false,
            )
        }
    };
    let reports = reports(store)?;
    let when =
        |t: u64| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t)).to_string();
    println!(
        "channel {}, serial {}, valid until {}{}{}",
        manifest.channel,
        manifest.serial,
        when(manifest.expires),
        if manifest.expires <= now {
            " (EXPIRED: hosts refuse it)"
        } else {
            ""
        },
        if verified {
            ", signature verified"
        } else {
            ", signature not checked (--public-key)"
        },
    );
    let mut releases: Vec<&Release> = manifest.releases.iter().collect();
    releases.sort_by_key(|r| r.semver());
    for r in releases {
        let (wave, waves) = r.wave_at(now);
        let mut flags = Vec::new();
        if r.yanked {
            flags.push("withdrawn".to_string());
        }
        if r.critical {
            flags.push("critical".to_string());
        }
        if let Some(h) = r.halted {
            flags.push(format!("halted since {}", when(h)));
        }
        let targets: Vec<&str> = r.artifacts.keys().map(String::as_str).collect();
        println!(
            "{}: {:.1} % of hosts{}{} [{}]",
            r.version,
            r.fraction_at(now) * 100.0,
            if waves > 0 {
                format!(", wave {wave} of {waves}")
            } else {
                String::new()
            },
            if flags.is_empty() {
                String::new()
            } else {
                format!(", {}", flags.join(", "))
            },
            targets.join(", ")
        );
        for w in &r.rollout {
            println!("    {:>5.1} % from {}", w.fraction * 100.0, when(w.start));
        }
        let t = tally(&manifest, r, &reports, now);
        if !reports.is_empty() {
            println!(
                "    reports: {} expected, {} upgraded, {} rolled back, {} silent",
                t.expected.len(),
                t.kept.len(),
                t.rolled_back.len(),
                t.silent.len()
            );
            for (host, why) in &t.rolled_back {
                println!("    rolled back on {host}: {why}");
            }
        }
    }
    Ok(())
}

/// `1%,10%@2h,50%@6h,100%@24h`: shares of hosts, each from now plus its
/// delay (none: now).
fn waves(text: &str, now: u64) -> Result<Vec<Wave>, String> {
    let bad = |why: String| format!("--waves {text:?}: {why} (like 1%,10%@2h,50%@6h,100%@24h)");
    let mut waves = Vec::new();
    for part in text.split(',') {
        let (share, delay) = match part.trim().split_once('@') {
            Some((share, delay)) => (share, parse::duration(delay).map_err(bad)?),
            None => (part.trim(), Duration::ZERO),
        };
        let percent: f64 = share
            .strip_suffix('%')
            .ok_or_else(|| bad(format!("{share:?} is not a percentage")))?
            .parse()
            .map_err(|_| bad(format!("{share:?} is not a percentage")))?;
        if !(percent > 0.0 && percent <= 100.0) {
            return Err(bad(format!("{share} is not above 0 % and at most 100 %")));
        }
        waves.push(Wave {
            start: now.saturating_add(delay.as_secs()),
            fraction: percent / 100.0,
        });
    }
    for pair in waves.windows(2) {
        if pair[1].start < pair[0].start || pair[1].fraction < pair[0].fraction {
            return Err(bad(
                "each wave must start no earlier and reach no fewer hosts than the one before"
                    .into(),
            ));
        }
    }
    Ok(waves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_are_shares_from_now() {
        let w = waves("1%,10%@2h, 50%@6h,100%@1d", 1000).expect("valid waves");
        let got: Vec<(u64, f64)> = w.iter().map(|w| (w.start, w.fraction)).collect();
        assert_eq!(got, [(1000, 0.01), (8200, 0.1), (22600, 0.5), (87400, 1.0)]);
        for bad in [
            "",
            "10",
            "0%",
            "101%",
            "50%,10%@1h",
            "10%@1h,20%",
            "x%",
            "10%@soon",
        ] {
            assert!(waves(bad, 0).is_err(), "{bad:?}");
        }
    }
}
