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
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| format!("the clock is before 1970: {e}"))?
        .as_secs();
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
    let sk = secret_key(&a.key, a.password_env.as_deref())?;
    let pk = minisign::PublicKey::from_secret_key(&sk)
        .map_err(|e| format!("cannot derive the public key of {}: {e}", a.key.display()))?;

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
        }),
    }
    manifest.serial += 1;
    manifest.expires = now.saturating_add(a.expires.as_secs());
    let bytes = manifest.to_bytes();
    // What hosts will check, checked here first.
    Manifest::parse(&bytes).map_err(|e| format!("the new manifest would be refused: {e}"))?;
    let comment = format!("channel:{}\tserial:{}", manifest.channel, manifest.serial);
    let signature = minisign::sign(Some(&pk), &sk, &bytes[..], Some(&comment), None)
        .map_err(|e| format!("cannot sign the manifest: {e}"))?;
    // The signature is written before the manifest it signs: a host that
    // reads them between the two renames sees the old manifest with the new
    // signature, refuses it and reads both again at its next poll.
    write_atomically(&a.dest.join(SIGNATURE), signature.to_string().as_bytes())?;
    write_atomically(&a.dest.join(MANIFEST), &bytes)?;
    println!(
        "published {version} for {target} in {} (serial {}, valid until {}): {path}",
        a.dest.display(),
        manifest.serial,
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(manifest.expires)),
    );
    Ok(())
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
