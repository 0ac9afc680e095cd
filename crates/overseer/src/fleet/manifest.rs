//! The release manifest: what a publisher signs and every host of a fleet
//! polls. JSON, one minisign signature over its whole bytes (checked before
//! it is parsed), times as Unix seconds.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The manifest format this build reads and writes.
pub const FORMAT: u32 = 1;

/// The largest manifest read, in bytes: a few kilobytes in practice, even
/// with hundreds of releases.
pub const MAX_MANIFEST_SIZE: usize = 1024 * 1024;

/// A channel's releases, as the publisher signed them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The channel's name (`stable`, `beta`): releases are bucketed per
    /// channel too.
    pub channel: String,
    /// Grows with every edit: a host refuses a manifest whose serial is
    /// lower than one it has seen (a replay of an old manifest).
    pub serial: u64,
    /// Unix seconds after which the manifest is refused (a mirror or an
    /// attacker serving a stale one for ever: a freeze).
    pub expires: u64,
    /// Newest last or first, as the publisher likes: hosts compare versions.
    pub releases: Vec<Release>,
}

/// One release of the channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// A semantic version (`1.4.0`; a leading `v` is allowed).
    pub version: String,
    /// Per build target (`x86_64-unknown-linux-gnu`): the file to install.
    pub artifacts: BTreeMap<String, Artifact>,
    /// The waves: when each opens and the share of hosts that has the
    /// release from then on. Empty: every host at once.
    #[serde(default)]
    pub rollout: Vec<Wave>,
    /// Withdrawn: no host takes it, and a host running it moves to the
    /// newest release not withdrawn, older or not.
    #[serde(default)]
    pub yanked: bool,
    /// Every host takes it at once, whatever the waves say.
    #[serde(default)]
    pub critical: bool,
    /// Unix seconds at which the publisher halted the rollout: the share
    /// of hosts stays what it was then until it is resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<u64>,
}

/// The file of one release for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Relative to the manifest's location: no leading `/`, no `..`.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
    /// Patches that rebuild this file from earlier binaries, so a host
    /// running one of them downloads the difference (`overseer::delta`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<Patch>,
}

/// A patch that rebuilds an artifact from an earlier binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patch {
    /// The SHA-256 (lower-case hex) of the binary it applies to: the
    /// executable a host runs.
    pub base: String,
    /// Relative to the manifest's location, as an artifact's.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// One wave of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Wave {
    /// Unix seconds from which it applies.
    pub start: u64,
    /// The share of hosts, in (0, 1], that has the release from `start`
    /// on: cumulative, so it never shrinks from one wave to the next.
    pub fraction: f64,
}

/// Why a manifest is refused. Each names what it protects against.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not a manifest this build reads: too large, not JSON, a field
    /// missing or of the wrong type, another format.
    Malformed(String),
    /// Well-formed but contradictory: a version that is not semantic, a
    /// path leaving the manifest's directory, a hash that is not SHA-256,
    /// a shrinking wave, a version listed twice.
    Invalid(String),
    /// Past its expiry (a freeze attack, or a publisher that stopped
    /// re-signing).
    Expired {
        /// When it expired, Unix seconds.
        expires: u64,
        /// The host's time.
        now: u64,
    },
    /// Older than one already seen (a replay).
    Replayed {
        /// This manifest's serial.
        serial: u64,
        /// The highest this host has seen.
        seen: u64,
    },
    /// No release of it has an artifact for this host's target.
    NoTarget(String),
    /// Not signed by a trusted key: no signature, one that cannot be read,
    /// one by another key, or one that does not verify over these bytes
    /// (the manifest was changed after it was signed).
    Signature(String),
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::Malformed(why) => write!(f, "the manifest is malformed: {why}"),
            ManifestError::Invalid(why) => write!(f, "the manifest is invalid: {why}"),
            ManifestError::Expired { expires, now } => write!(
                f,
                "the manifest expired {} s ago (expires {expires}, now {now}): the publisher must sign it again, or something serves a stale copy",
                now.saturating_sub(*expires)
            ),
            ManifestError::Replayed { serial, seen } => write!(
                f,
                "the manifest's serial {serial} is lower than {seen}, already seen here: an old manifest served again"
            ),
            ManifestError::NoTarget(target) => {
                write!(f, "no release in the manifest has an artifact for {target}")
            }
            ManifestError::Signature(why) => write!(f, "the manifest's signature: {why}"),
        }
    }
}

impl std::error::Error for ManifestError {}

impl Manifest {
    /// Checks `signature` (a `.minisig`) over the manifest's `bytes` with
    /// the trusted `keys` (as [`crate::Config::public_key`] takes them), then
    /// parses them. Nothing of an unsigned manifest is read.
    #[cfg(feature = "signatures")]
    pub fn verify(
        bytes: &[u8],
        signature: &str,
        keys: &[String],
    ) -> Result<Manifest, ManifestError> {
        use minisign_verify::{Error as MsError, Signature};
        let bad = |why: String| ManifestError::Signature(why);
        if keys.is_empty() {
            return Err(bad("no trusted public key is configured".into()));
        }
        let sig =
            Signature::decode(signature).map_err(|e| bad(format!("it cannot be read: {e}")))?;
        let mut last =
            "signed by an unknown key: none of the trusted public keys made it".to_string();
        for key in keys {
            let pk = crate::keys::parse_public_key(key).map_err(bad)?;
            match pk.verify(bytes, &sig, false) {
                Ok(()) => return Manifest::parse(bytes),
                Err(MsError::UnexpectedKeyId) => {}
                Err(e) => {
                    last = format!(
                        "it does not verify over the manifest ({e}): changed after it was signed?"
                    )
                }
            }
        }
        Err(bad(last))
    }

    /// Parses and validates a manifest's bytes (whose signature the caller
    /// has checked: [`Manifest::verify`] does both).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(ManifestError::Malformed(format!(
                "{} bytes, more than the {MAX_MANIFEST_SIZE} read",
                bytes.len()
            )));
        }
        #[derive(Deserialize)]
        struct Header {
            format: u32,
        }
        let header: Header = serde_json::from_slice(bytes)
            .map_err(|e| ManifestError::Malformed(format!("no format number: {e}")))?;
        if header.format != FORMAT {
            return Err(ManifestError::Malformed(format!(
                "format {}, this build reads format {FORMAT}",
                header.format
            )));
        }
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The manifest as the publisher writes it (stable order, indented).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    fn validate(&self) -> Result<(), ManifestError> {
        let invalid = |why: String| Err(ManifestError::Invalid(why));
        if self.channel.is_empty() || self.channel.contains(['\0', '\n']) {
            return invalid(format!("channel {:?}", self.channel));
        }
        let mut versions = Vec::new();
        for r in &self.releases {
            let Some(version) = r.semver() else {
                return invalid(format!("version {:?} is not a semantic version", r.version));
            };
            if versions.contains(&version) {
                return invalid(format!("version {} is listed twice", r.version));
            }
            versions.push(version);
            if r.artifacts.is_empty() {
                return invalid(format!("version {} has no artifact", r.version));
            }
            for (target, a) in &r.artifacts {
                a.validate()
                    .or_else(|why| invalid(format!("version {} for {target}: {why}", r.version)))?;
            }
            let mut last = Wave {
                start: 0,
                fraction: 0.0,
            };
            for w in &r.rollout {
                if !(w.fraction > 0.0 && w.fraction <= 1.0) {
                    return invalid(format!(
                        "version {}: a wave's fraction {} is not in (0, 1]",
                        r.version, w.fraction
                    ));
                }
                if w.start < last.start || w.fraction < last.fraction {
                    return invalid(format!(
                        "version {}: waves must not go back in time nor shrink ({} at {} after {} at {})",
                        r.version, w.fraction, w.start, last.fraction, last.start
                    ));
                }
                last = *w;
            }
        }
        Ok(())
    }

    /// Whether this host may use the manifest at `now` (Unix seconds),
    /// having seen serials up to `seen`, for its `target`.
    pub fn check(&self, now: u64, seen: Option<u64>, target: &str) -> Result<(), ManifestError> {
        if now >= self.expires {
            return Err(ManifestError::Expired {
                expires: self.expires,
                now,
            });
        }
        if let Some(seen) = seen.filter(|&s| self.serial < s) {
            return Err(ManifestError::Replayed {
                serial: self.serial,
                seen,
            });
        }
        if !self
            .releases
            .iter()
            .any(|r| r.artifacts.contains_key(target))
        {
            return Err(ManifestError::NoTarget(target.to_string()));
        }
        Ok(())
    }
}

impl Release {
    /// The version, parsed.
    pub fn semver(&self) -> Option<semver::Version> {
        parse_version(&self.version)
    }

    /// The share of hosts that has this release at `now`: the last wave
    /// started by then (all of them without waves, none before the first),
    /// or by the time it was halted.
    pub fn fraction_at(&self, now: u64) -> f64 {
        if self.rollout.is_empty() {
            return 1.0;
        }
        let now = self.halted.map_or(now, |h| h.min(now));
        self.rollout
            .iter()
            .take_while(|w| w.start <= now)
            .last()
            .map_or(0.0, |w| w.fraction)
    }

    /// The wave in force at `now` (1 for the first), and how many there are.
    pub fn wave_at(&self, now: u64) -> (usize, usize) {
        let now = self.halted.map_or(now, |h| h.min(now));
        let started = self.rollout.iter().take_while(|w| w.start <= now).count();
        (started, self.rollout.len())
    }

    /// Halts the rollout at `now`: the share of hosts stays where it is.
    /// Already halted: nothing changes.
    pub fn halt(&mut self, now: u64) {
        self.halted.get_or_insert(now);
    }

    /// Resumes a halted rollout at `now`: the waves not yet started when it
    /// was halted open as much later as it stayed halted.
    pub fn resume(&mut self, now: u64) {
        if let Some(halted) = self.halted.take() {
            let paused = now.saturating_sub(halted);
            for w in self.rollout.iter_mut().filter(|w| w.start > halted) {
                w.start = w.start.saturating_add(paused);
            }
        }
    }
}

impl Artifact {
    fn validate(&self) -> Result<(), String> {
        check_file(&self.path, self.size, &self.sha256)?;
        for p in &self.patches {
            check_file(&p.path, p.size, &p.sha256).map_err(|e| format!("a patch's {e}"))?;
            if !is_sha256(&p.base) {
                return Err(format!(
                    "a patch's base {:?} is not 64 lower-case hex digits",
                    p.base
                ));
            }
        }
        let mut bases: Vec<&str> = self.patches.iter().map(|p| p.base.as_str()).collect();
        bases.sort_unstable();
        if bases.windows(2).any(|w| w[0] == w[1]) {
            return Err("two patches from the same base".into());
        }
        Ok(())
    }
}

/// Whether `text` is a SHA-256 as manifests write it: 64 lower-case hex digits.
fn is_sha256(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A file the manifest names: a relative path, a size, a SHA-256.
fn check_file(path: &str, size: u64, sha256: &str) -> Result<(), String> {
    let bad_path = path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path.contains('\0')
        || path.split('/').any(|part| part == ".." || part.is_empty());
    if bad_path {
        return Err(format!(
            "path {path:?} must be relative to the manifest, without `..` or empty parts"
        ));
    }
    if !is_sha256(sha256) {
        return Err(format!("sha256 {sha256:?} is not 64 lower-case hex digits"));
    }
    if size == 0 {
        return Err("size 0".into());
    }
    Ok(())
}

/// A semantic version, with an optional leading `v`.
pub(crate) fn parse_version(text: &str) -> Option<semver::Version> {
    semver::Version::parse(text.strip_prefix('v').unwrap_or(text)).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    const HASH: &str = "4f2b8c09a8d7e4a3f1c55cbbd0a69dcb5cbd2cf9e1ab0a9e1c4d63a2b9f2c1d0";
    const TARGET: &str = "x86_64-unknown-linux-gnu";

    pub(crate) fn release(version: &str, rollout: Vec<Wave>) -> Release {
        Release {
            version: version.into(),
            artifacts: [(
                TARGET.to_string(),
                Artifact {
                    path: format!("app-{version}"),
                    size: 100,
                    sha256: HASH.into(),
                    patches: Vec::new(),
                },
            )]
            .into(),
            rollout,
            yanked: false,
            critical: false,
            halted: None,
        }
    }

    fn manifest(releases: Vec<Release>) -> Manifest {
        Manifest {
            format: FORMAT,
            channel: "stable".into(),
            serial: 5,
            expires: 2_000,
            releases,
        }
    }

    #[test]
    fn a_manifest_crosses_its_bytes_whole() {
        let m = manifest(vec![
            release("1.0.0", vec![]),
            release(
                "v1.1.0",
                vec![Wave {
                    start: 10,
                    fraction: 0.5,
                }],
            ),
        ]);
        assert_eq!(Manifest::parse(&m.to_bytes()).unwrap(), m);
    }

    #[test]
    fn expired_replayed_and_foreign_manifests_are_refused() {
        let m = manifest(vec![release("1.0.0", vec![])]);
        assert_eq!(m.check(1_999, Some(5), TARGET), Ok(()));
        assert_eq!(m.check(1_999, None, TARGET), Ok(()));
        assert_eq!(
            m.check(2_000, Some(5), TARGET),
            Err(ManifestError::Expired {
                expires: 2_000,
                now: 2_000
            })
        );
        assert_eq!(
            m.check(1_000, Some(6), TARGET),
            Err(ManifestError::Replayed { serial: 5, seen: 6 })
        );
        assert_eq!(
            m.check(1_000, Some(5), "aarch64-apple-darwin"),
            Err(ManifestError::NoTarget("aarch64-apple-darwin".into()))
        );
    }

    #[test]
    fn hostile_manifests_are_refused_with_a_reason() {
        type Edit = Box<dyn Fn(&mut Manifest)>;
        let patch = |base: &str, path: &str| Patch {
            base: base.into(),
            path: path.into(),
            size: 10,
            sha256: HASH.into(),
        };
        let with = |patches: Vec<Patch>| -> Edit {
            Box::new(move |m: &mut Manifest| {
                m.releases[0].artifacts.get_mut(TARGET).unwrap().patches = patches.clone()
            })
        };
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|m| m.releases[0].version = "latest".into()),
                "not a semantic version",
            ),
            (with(vec![patch("nothex", "p")]), "a patch's base"),
            (with(vec![patch(HASH, "../../p")]), "a patch's path"),
            (
                with(vec![patch(HASH, "p1"), patch(HASH, "p2")]),
                "two patches from the same base",
            ),
            (
                Box::new(|m| m.releases.push(m.releases[0].clone())),
                "listed twice",
            ),
            (
                Box::new(|m| {
                    m.releases[0].artifacts.get_mut(TARGET).unwrap().path =
                        "../../etc/passwd".into()
                }),
                "relative",
            ),
            (
                Box::new(|m| {
                    m.releases[0].artifacts.get_mut(TARGET).unwrap().path = "/bin/sh".into()
                }),
                "relative",
            ),
            (
                Box::new(|m| {
                    m.releases[0].artifacts.get_mut(TARGET).unwrap().sha256 = HASH.to_uppercase()
                }),
                "hex",
            ),
            (
                Box::new(|m| m.releases[0].artifacts.get_mut(TARGET).unwrap().size = 0),
                "size 0",
            ),
            (Box::new(|m| m.releases[0].artifacts.clear()), "no artifact"),
            (
                Box::new(|m| {
                    m.releases[0].rollout = vec![Wave {
                        start: 1,
                        fraction: 1.5,
                    }]
                }),
                "(0, 1]",
            ),
            (
                Box::new(|m| {
                    m.releases[0].rollout = vec![
                        Wave {
                            start: 5,
                            fraction: 0.5,
                        },
                        Wave {
                            start: 6,
                            fraction: 0.2,
                        },
                    ]
                }),
                "shrink",
            ),
            (Box::new(|m| m.channel = String::new()), "channel"),
        ];
        for (edit, needle) in cases {
            let mut m = manifest(vec![release("1.0.0", vec![])]);
            edit(&mut m);
            let err = Manifest::parse(&m.to_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        for (bytes, needle) in [
            (&b"not json"[..], "no format number"),
            (br#"{"format": 2}"#, "format 2"),
            (br#"{"format": 1, "channel": "x"}"#, "missing field"),
        ] {
            let err = Manifest::parse(bytes).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        let big = vec![b' '; MAX_MANIFEST_SIZE + 1];
        assert!(matches!(
            Manifest::parse(&big),
            Err(ManifestError::Malformed(_))
        ));
    }

    #[test]
    fn the_fraction_is_the_last_wave_started() {
        let r = release(
            "1.0.0",
            vec![
                Wave {
                    start: 10,
                    fraction: 0.01,
                },
                Wave {
                    start: 20,
                    fraction: 0.5,
                },
                Wave {
                    start: 30,
                    fraction: 1.0,
                },
            ],
        );
        assert_eq!(r.fraction_at(9), 0.0);
        assert_eq!(r.fraction_at(10), 0.01);
        assert_eq!(r.fraction_at(25), 0.5);
        assert_eq!(r.fraction_at(u64::MAX), 1.0);
        assert_eq!(release("1.0.0", vec![]).fraction_at(0), 1.0);
    }

    #[test]
    fn a_halted_rollout_keeps_its_share_and_resumes_later_by_as_long() {
        let mut r = release(
            "1.0.0",
            vec![
                Wave {
                    start: 10,
                    fraction: 0.1,
                },
                Wave {
                    start: 20,
                    fraction: 0.5,
                },
                Wave {
                    start: 30,
                    fraction: 1.0,
                },
            ],
        );
        r.halt(15);
        r.halt(18);
        assert_eq!(r.fraction_at(100), 0.1);
        assert_eq!(r.wave_at(100), (1, 3));
        r.resume(115);
        assert_eq!(r.halted, None);
        let starts: Vec<u64> = r.rollout.iter().map(|w| w.start).collect();
        assert_eq!(starts, [10, 120, 130]);
        assert_eq!(r.fraction_at(119), 0.1);
        assert_eq!(r.fraction_at(120), 0.5);
        assert_eq!(r.wave_at(200), (3, 3));
    }

    #[cfg(feature = "signatures")]
    #[test]
    fn only_a_manifest_signed_by_a_trusted_key_over_its_very_bytes_is_read() {
        let sign = |keys: &minisign::KeyPair, bytes: &[u8]| {
            minisign::sign(Some(&keys.pk), &keys.sk, bytes, Some("serial:5"), None)
                .unwrap()
                .into_string()
        };
        let publisher = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let stranger = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let trusted = [publisher.pk.to_base64()];
        let m = manifest(vec![release("1.0.0", vec![])]);
        let bytes = m.to_bytes();
        let sig = sign(&publisher, &bytes);
        assert_eq!(Manifest::verify(&bytes, &sig, &trusted).unwrap(), m);
        // Rotation: any trusted key will do.
        let both = [stranger.pk.to_base64(), publisher.pk.to_base64()];
        assert!(Manifest::verify(&bytes, &sig, &both).is_ok());
        let mut edited = m.clone();
        edited.serial = 99;
        for (bytes, sig, keys, needle) in [
            (
                edited.to_bytes(),
                sig.clone(),
                &trusted[..],
                "does not verify",
            ),
            (
                bytes.clone(),
                sign(&stranger, &bytes),
                &trusted[..],
                "unknown key",
            ),
            (
                bytes.clone(),
                "garbage".to_string(),
                &trusted[..],
                "cannot be read",
            ),
            (bytes.clone(), sig.clone(), &[][..], "no trusted public key"),
        ] {
            let err = Manifest::verify(&bytes, &sig, keys).unwrap_err();
            assert!(matches!(err, ManifestError::Signature(_)), "{err}");
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }
}
