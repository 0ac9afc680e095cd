//! `overseer publish`: a release added to a fleet's signed manifest
//! (`overseer::fleet`), in a directory that the fleet's hosts poll (or that
//! is synchronised to the bucket or CDN they poll).
//!
//! The directory holds `manifest.json`, its signature
//! `manifest.json.minisig`, and each artifact at `VERSION/TARGET/NAME`.
//! The artifact is written first and the manifest last, each to a
//! temporary name renamed into place, so a host never sees a manifest
//! naming a file not there yet.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use overseer::fleet::{Artifact, Manifest, Release, Wave, FORMAT};
use sha2::{Digest, Sha256};

use crate::parse;
use crate::publish::{secret_key, this_target};

/// The manifest's file name in the destination.
const MANIFEST: &str = "manifest.json";
/// Its signature's.
const SIGNATURE: &str = "manifest.json.minisig";

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
    /// The executable to publish.
    binary: PathBuf,
    /// The directory the fleet polls (created if missing).
    dest: PathBuf,
}

/// Runs `overseer publish`.
pub(crate) fn publish(a: PublishArgs) -> Result<(), String> {
    let dest = a.dest.to_string_lossy();
    if ["s3://", "gs://", "az://", "http://", "https://"]
        .iter()
        .any(|p| dest.starts_with(p))
    {
        return Err(format!(
            "{dest}: publishing straight to an object store is not supported yet; publish to a directory and copy it there (artifacts first, manifest.json and its .minisig last)"
        ));
    }
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
    std::fs::create_dir_all(&a.dest)
        .map_err(|e| format!("cannot create {}: {e}", a.dest.display()))?;
    let mut manifest = current(&a.dest, &pk.to_base64())?.unwrap_or(Manifest {
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
    write_atomically(&a.dest.join(&path), &bytes)?;
    let artifact = Artifact {
        path: path.clone(),
        size: bytes.len() as u64,
        sha256: format!("{:x}", Sha256::digest(&bytes)),
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
    sign_and_write(&a.dest, &mut manifest, &sk, &pk, now, a.expires, &what)
}

/// Raises the serial, sets the expiry, checks the result as hosts will,
/// signs it and writes it (the signature first, then the manifest), then
/// says `what` was done.
fn sign_and_write(
    dest: &Path,
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
    write_atomically(&dest.join(SIGNATURE), signature.to_string().as_bytes())?;
    write_atomically(&dest.join(MANIFEST), &bytes)?;
    println!(
        "{what} ({}: serial {}, valid until {})",
        dest.display(),
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
    key: &Path,
    password_env: Option<&str>,
) -> Result<(minisign::SecretKey, minisign::PublicKey), String> {
    let sk = secret_key(key, password_env)?;
    let pk = minisign::PublicKey::from_secret_key(&sk)
        .map_err(|e| format!("cannot derive the public key of {}: {e}", key.display()))?;
    Ok((sk, pk))
}

/// The manifest in `dest`, verified with `public_key`, or `None` when there
/// is none yet.
fn current(dest: &Path, public_key: &str) -> Result<Option<Manifest>, String> {
    let path = dest.join(MANIFEST);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let sig_path = dest.join(SIGNATURE);
    let signature = std::fs::read_to_string(&sig_path).map_err(|e| {
        format!(
            "{} has no readable signature {}: {e} (restore it, or move the manifest away to start a new one)",
            path.display(),
            sig_path.display()
        )
    })?;
    Manifest::verify(&bytes, &signature, &[public_key.to_string()])
        .map(Some)
        .map_err(|e| {
            format!(
                "{} is not one this key signed as it is: {e}. Publish with the key that signed it; a manifest edited by hand must be restored (hosts refuse it too)",
                path.display()
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
    /// hosts it has now, and whether it is halted, withdrawn or critical.
    Status {
        /// Check the manifest's signature with this public key (the
        /// `.pub` file, or its base64 line).
        #[arg(long, value_name = "PUB")]
        public_key: Option<String>,
        /// The directory the fleet polls.
        dest: PathBuf,
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
    /// The directory the fleet polls.
    dest: PathBuf,
}

/// Runs `overseer rollout`.
pub(crate) fn rollout(a: RolloutArgs) -> Result<(), String> {
    let now = unix_now()?;
    let (edit, change) = match a.action {
        Rollout::Status { public_key, dest } => return status(&dest, public_key.as_deref(), now),
        Rollout::Halt(e) => (e, Change::Halt),
        Rollout::Resume(e) => (e, Change::Resume),
        Rollout::Yank(e) => (e, Change::Yank),
    };
    let (sk, pk) = keys(&edit.key, edit.password_env.as_deref())?;
    let mut manifest = current(&edit.dest, &pk.to_base64())?.ok_or_else(|| {
        format!(
            "no {MANIFEST} in {}: publish a release there first",
            edit.dest.display()
        )
    })?;
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
    };
    sign_and_write(
        &edit.dest,
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
}

/// `overseer rollout status`.
fn status(dest: &Path, public_key: Option<&str>, now: u64) -> Result<(), String> {
    let path = dest.join(MANIFEST);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (manifest, verified) = match public_key {
        Some(key) => {
            let key = match std::fs::read_to_string(key) {
                Ok(text) => text,
                Err(_) => key.to_string(),
            };
            (
                current(dest, &key)?
                    .ok_or_else(|| format!("no {MANIFEST} in {}", dest.display()))?,
                true,
            )
        }
        None => (
            Manifest::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?,
            false,
        ),
    };
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

/// Writes `bytes` to `path` through a temporary file in the same
/// directory, renamed into place once synced.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
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
