//! Steps 4–6 of the pipeline: checksum, signature with its signed version
//! and target, and the native-executable check.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use super::rejection::Rejection;
use crate::binary_id::TARGET;
#[cfg(feature = "signatures")]
use crate::keys::parse_public_key;

/// Normalises a published SHA-256: hex, lowercase, without a `sha256:` prefix.
pub(crate) fn normalise_sha256(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s.strip_prefix("sha256:").unwrap_or(s).to_ascii_lowercase();
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then_some(s)
}

/// Step 4: the published checksum must match the download as published or
/// the executable unpacked from it.
pub(crate) fn checksum(expected: &str, download: &str, binary: &str) -> Result<(), Rejection> {
    let Some(expected) = normalise_sha256(expected) else {
        return Err(Rejection::release(format!(
            "the published checksum {expected:?} is not a SHA-256 in hex"
        )));
    };
    if expected == download || expected == binary {
        return Ok(());
    }
    Err(Rejection::release(format!(
        "checksum mismatch: the source publishes {expected}, the download hashes to {download}"
    )))
}

/// What a valid signature vouches for, from its trusted comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signed {
    pub version: semver::Version,
    pub target: String,
}

/// Parses a version leniently: `v1.2.3`, `1.2`, `1` are accepted.
pub(crate) fn parse_version(s: &str) -> Option<semver::Version> {
    let s = s.trim();
    let s = s
        .strip_prefix('v')
        .or_else(|| s.strip_prefix('V'))
        .unwrap_or(s);
    if let Ok(v) = semver::Version::parse(s) {
        return Some(v);
    }
    // Pad a short numeric core (`1.2` → `1.2.0`) and try again.
    let (core, rest) = match s.find(['-', '+']) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let dots = core.matches('.').count();
    if dots < 2 && !core.is_empty() {
        let padded = format!("{core}{}{rest}", ".0".repeat(2 - dots));
        return semver::Version::parse(&padded).ok();
    }
    None
}

/// The version a signed release must be newer than, if it is not: the
/// installed version when the signed one is not above it, or the highest
/// version seen when the signed one is below it (a replay after a restart).
/// The highest seen itself is not refused: a master stopped between
/// recording it and the swap must install that release at its next start.
///
/// Versions compare by semantic-version precedence: build metadata does
/// not count, so `1.4.0+f00d` is not newer than `1.4.0+0bad`.
pub(crate) fn version_floor<'a>(
    signed: &semver::Version,
    installed: Option<&'a semver::Version>,
    highest_seen: Option<&'a semver::Version>,
) -> Option<&'a semver::Version> {
    let installed = installed.filter(|v| signed.cmp_precedence(v).is_le());
    let seen = highest_seen.filter(|h| signed.cmp_precedence(h).is_lt());
    installed
        .into_iter()
        .chain(seen)
        .max_by(|a, b| a.cmp_precedence(b))
}

#[cfg_attr(not(feature = "signatures"), allow(dead_code))]
/// The `key:value` (or `key=value`) fields of a trusted comment.
///
/// Two forms are read, exactly:
/// - with a tab anywhere, fields are separated by tabs only, as `overseer
///   sign` and the `minisign` tool write them (`timestamp:…\tfile:NAME\t…`):
///   a value may then hold spaces (a file name), and is never split;
/// - without a tab, a comment written by hand for `minisign -t` (`version:1.4.0
///   target:x86_64-unknown-linux-gnu`): fields are separated by spaces.
///
/// Words without `:` or `=` (minisign's `hashed`) are not fields. A key
/// given twice is refused, so no part of a comment can override another.
pub(crate) fn comment_fields(comment: &str) -> Result<Vec<(&str, &str)>, String> {
    let parts: Vec<&str> = if comment.contains('\t') {
        comment.split('\t').collect()
    } else {
        comment.split(' ').collect()
    };
    let mut fields: Vec<(&str, &str)> = Vec::new();
    for part in parts {
        let Some((key, value)) = part.split_once([':', '=']) else {
            continue;
        };
        if key.is_empty() {
            continue;
        }
        if fields.iter().any(|(k, _)| *k == key) {
            return Err(format!("the trusted comment names {key:?} more than once"));
        }
        fields.push((key, value));
    }
    Ok(fields)
}

#[cfg_attr(not(feature = "signatures"), allow(dead_code))]
/// One field of a trusted comment (see [`comment_fields`]); `Ok(None)` when
/// it is missing or empty.
pub(crate) fn metadata(comment: &str, key: &str) -> Result<Option<String>, String> {
    Ok(comment_fields(comment)?
        .into_iter()
        .find(|(k, v)| *k == key && !v.is_empty())
        .map(|(_, v)| v.to_string()))
}

#[cfg_attr(not(feature = "signatures"), allow(dead_code))]
/// Whether a signed target names this build: its exact triple, or the
/// `os-arch` forms release tools use (`linux-amd64`, `linux-x86_64`).
pub(crate) fn target_matches(signed: &str) -> bool {
    if signed == TARGET {
        return true;
    }
    let os = std::env::consts::OS;
    let arch = std::env::consts::ARCH;
    let go_arch = match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    let signed = signed.to_ascii_lowercase();
    [
        format!("{os}-{arch}"),
        format!("{os}-{go_arch}"),
        format!("{os}_{arch}"),
        format!("{os}_{go_arch}"),
    ]
    .contains(&signed)
}

/// A release's signature, read, with the configured keys that may have made
/// it (those with its key id), before any file is checked against it.
#[cfg(feature = "signatures")]
pub(crate) struct Trusted {
    sig: minisign_verify::Signature,
    keys: Vec<minisign_verify::PublicKey>,
}

/// Reads a release's signature and finds the trusted keys with its key id.
/// A release that is not signed, a signature that cannot be read and one by
/// an unknown key are refused here, without reading the release.
#[cfg(feature = "signatures")]
fn trusted(keys: &[String], signature: Option<&str>) -> Result<Trusted, Rejection> {
    use minisign_verify::{Error as MsError, Signature};
    let Some(text) = signature else {
        return Err(Rejection::release(
            "the release is not signed, and public keys are configured: publish a .minisig beside it",
        ));
    };
    let sig = Signature::decode(text)
        .map_err(|e| Rejection::release(format!("the release's signature cannot be read: {e}")))?;
    let mut matching = Vec::new();
    for key in keys {
        let pk = match parse_public_key(key) {
            Ok(pk) => pk,
            Err(e) => return Err(Rejection::release(e)),
        };
        match pk.verify_stream(&sig) {
            Ok(_) => matching.push(pk),
            Err(MsError::UnexpectedKeyId) => {}
            Err(MsError::UnsupportedLegacyMode) => {
                return Err(Rejection::release(
                    "legacy (not pre-hashed) signature: sign with minisign 0.10 or later",
                ))
            }
            Err(e) => return Err(Rejection::release(format!("bad signature: {e}"))),
        }
    }
    if matching.is_empty() {
        return Err(Rejection::release(
            "signed by an unknown key: none of the configured public keys made this signature",
        ));
    }
    Ok(Trusted {
        sig,
        keys: matching,
    })
}

#[cfg(feature = "signatures")]
impl Trusted {
    /// Checks the signature over `file` with each matching key: `Ok(Ok(()))`
    /// when one verifies, `Ok(Err(why))` when none does.
    fn over(&self, file: &mut File) -> Result<Result<(), minisign_verify::Error>, Rejection> {
        let mut last_error = None;
        for pk in &self.keys {
            let mut verifier = pk
                .verify_stream(&self.sig)
                .map_err(|e| Rejection::release(format!("bad signature: {e}")))?;
            stream(file, |chunk| verifier.update(chunk))
                .map_err(|e| Rejection::io("reading the staging file", e))?;
            match verifier.finalize() {
                Ok(()) => return Ok(Ok(())),
                Err(e) => last_error = Some(e),
            }
        }
        Ok(Err(
            last_error.unwrap_or(minisign_verify::Error::InvalidSignature)
        ))
    }

    /// What a signature that verified vouches for (its trusted comment).
    pub(crate) fn signed(&self) -> Result<Signed, Rejection> {
        signed_metadata(self.sig.trusted_comment())
    }
}

/// Step 5, before unpacking: whether the signature, by a trusted key (else
/// refused), is over the file as published. `Some` when it is (its trusted
/// comment is read later, at step 5 proper); `None` when it is not: an
/// archive may be signed over the executable inside instead, which is
/// checked after unpacking.
#[cfg(feature = "signatures")]
pub(crate) fn signature_over_download(
    keys: &[String],
    signature: Option<&str>,
    download: &mut File,
) -> Result<Option<Trusted>, Rejection> {
    let trusted = trusted(keys, signature)?;
    Ok(trusted.over(download)?.is_ok().then_some(trusted))
}

/// Step 5: checks a minisign signature over the executable by one of the
/// trusted keys, and returns what it vouches for. (For an archive, one over
/// the file as published was looked for before unpacking, with
/// [`signature_over_download`].)
#[cfg(feature = "signatures")]
pub(crate) fn signature(
    keys: &[String],
    signature: Option<&str>,
    binary: &mut File,
) -> Result<Signed, Rejection> {
    let trusted = trusted(keys, signature)?;
    match trusted.over(binary)? {
        Ok(()) => trusted.signed(),
        Err(e) => Err(Rejection::release(format!("bad signature: {e}"))),
    }
}

#[cfg_attr(not(feature = "signatures"), allow(dead_code))]
/// The version and target a verified trusted comment carries.
fn signed_metadata(comment: &str) -> Result<Signed, Rejection> {
    let hint = "sign with a trusted comment like 'version:1.2.3 target:x86_64-unknown-linux-gnu'";
    let field =
        |key| metadata(comment, key).map_err(|e| Rejection::release(format!("{e}: refused")));
    let version = field("version")?
        .ok_or_else(|| Rejection::release(format!("the signature names no version: {hint}")))?;
    let version = parse_version(&version).ok_or_else(|| {
        Rejection::release(format!(
            "the signed version {version:?} is not a semantic version"
        ))
    })?;
    let target = field("target")?
        .ok_or_else(|| Rejection::release(format!("the signature names no target: {hint}")))?;
    if !target_matches(&target) {
        return Err(Rejection::release(format!(
            "signed for target {target}, this binary runs on {TARGET}"
        )));
    }
    Ok(Signed { version, target })
}

#[cfg(not(feature = "signatures"))]
fn no_signatures() -> Rejection {
    Rejection::release("signature support is not compiled in (enable the `signatures` feature)")
}

/// Without signature support there is nothing to verify with.
#[cfg(not(feature = "signatures"))]
pub(crate) struct Trusted;

#[cfg(not(feature = "signatures"))]
impl Trusted {
    pub(crate) fn signed(&self) -> Result<Signed, Rejection> {
        Err(no_signatures())
    }
}

#[cfg(not(feature = "signatures"))]
pub(crate) fn signature_over_download(
    _keys: &[String],
    _signature: Option<&str>,
    _download: &mut File,
) -> Result<Option<Trusted>, Rejection> {
    Err(no_signatures())
}

#[cfg(not(feature = "signatures"))]
pub(crate) fn signature(
    _keys: &[String],
    _signature: Option<&str>,
    _binary: &mut File,
) -> Result<Signed, Rejection> {
    Err(no_signatures())
}

#[cfg_attr(not(feature = "signatures"), allow(dead_code))]
/// Reads a file from the start in chunks.
pub(crate) fn stream(file: &mut File, mut f: impl FnMut(&[u8])) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0; 64 * 1024];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(()),
            n => f(&buf[..n]),
        }
    }
}

/// Whether a file starts with `#!` (an interpreted script).
fn is_script(file: &mut impl Read) -> bool {
    let mut head = [0u8; 2];
    file.read_exact(&mut head).is_ok() && &head == b"#!"
}

/// Step 6: the file is an executable for this OS and CPU.
///
/// A `#!` script passes only when the installed program is a script too: in
/// command mode a service may be an interpreted program (`overseer run --
/// ./app.py`), and its releases are scripts; a native program is never
/// replaced by one.
pub(crate) fn native_executable(file: &File, installed: &std::path::Path) -> Result<(), Rejection> {
    use object::{Architecture, BinaryFormat, Object, ObjectKind};
    let mut head = file;
    let script = head.seek(SeekFrom::Start(0)).is_ok() && is_script(&mut head);
    if script {
        let installed_script = File::open(installed).is_ok_and(|mut f| is_script(&mut f));
        return if installed_script {
            Ok(())
        } else {
            Err(Rejection::release(
                "a #! script, and the installed program is a native executable: refused",
            ))
        };
    }
    let cache = object::ReadCache::new(file);
    let parsed = object::File::parse(&cache).map_err(|e| {
        Rejection::release(format!("not an executable program for this system ({e})"))
    })?;
    let format = match std::env::consts::OS {
        "macos" | "ios" => BinaryFormat::MachO,
        "windows" => BinaryFormat::Pe,
        _ => BinaryFormat::Elf,
    };
    if parsed.format() != format {
        return Err(Rejection::release(format!(
            "a {:?} file, this system runs {format:?} executables",
            parsed.format()
        )));
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => Architecture::X86_64,
        "x86" => Architecture::I386,
        "aarch64" => Architecture::Aarch64,
        "arm" => Architecture::Arm,
        "riscv64" => Architecture::Riscv64,
        "powerpc64" => Architecture::PowerPc64,
        "s390x" => Architecture::S390x,
        "loongarch64" => Architecture::LoongArch64,
        _ => Architecture::Unknown,
    };
    if arch != Architecture::Unknown && parsed.architecture() != arch {
        return Err(Rejection::release(format!(
            "built for {:?}, this CPU is {}",
            parsed.architecture(),
            std::env::consts::ARCH
        )));
    }
    if !matches!(parsed.kind(), ObjectKind::Executable | ObjectKind::Dynamic) {
        return Err(Rejection::release(format!(
            "not an executable program ({:?} object file)",
            parsed.kind()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_leniently() {
        assert_eq!(
            parse_version("v1.2.3"),
            semver::Version::parse("1.2.3").ok()
        );
        assert_eq!(parse_version("1.2"), semver::Version::parse("1.2.0").ok());
        assert_eq!(parse_version("3"), semver::Version::parse("3.0.0").ok());
        assert_eq!(
            parse_version("1.2-rc.1"),
            semver::Version::parse("1.2.0-rc.1").ok()
        );
        assert_eq!(parse_version("banana"), None);
    }

    #[test]
    fn comments_are_read_as_the_signer_and_the_minisign_tool_write_them() {
        let field = |c: &str, k: &str| metadata(c, k).expect("readable");
        // `overseer sign`: tab-separated, a file name may hold spaces.
        let c = "timestamp:1700000000\tversion:2.0.1\ttarget:x86_64-unknown-linux-gnu\tfile:my app";
        assert_eq!(field(c, "version").as_deref(), Some("2.0.1"));
        assert_eq!(
            field(c, "target").as_deref(),
            Some("x86_64-unknown-linux-gnu")
        );
        assert_eq!(field(c, "file").as_deref(), Some("my app"));
        assert_eq!(field(c, "missing"), None);
        // minisign's own default comment, and a hand-written `-t` one.
        let c = "timestamp:1700000000\tfile:app\thashed";
        assert_eq!(field(c, "file").as_deref(), Some("app"));
        assert_eq!(field(c, "version"), None);
        let c = "version:1.4.0 target=x86_64-unknown-linux-gnu";
        assert_eq!(field(c, "version").as_deref(), Some("1.4.0"));
        assert_eq!(
            field(c, "target").as_deref(),
            Some("x86_64-unknown-linux-gnu")
        );
    }

    #[test]
    fn a_file_name_cannot_forge_a_field() {
        // What an earlier signer wrote for a file named `svc version=99.0.0`.
        let c = "timestamp:1700000000\tfile:svc version=99.0.0\tversion:1.0.1\ttarget:x86_64-unknown-linux-gnu";
        assert_eq!(
            metadata(c, "version").expect("readable").as_deref(),
            Some("1.0.1")
        );
        // A key twice, in either form, is refused rather than chosen.
        for c in [
            "version:1.0.1\tversion:99.0.0\ttarget:x",
            "version:1.0.1 target:x version=99.0.0",
            "file:a\tversion=99.0.0\tversion:1.0.1",
        ] {
            let e = metadata(c, "version").expect_err(c);
            assert!(e.contains("\"version\" more than once"), "{e}");
        }
        // A value that swallowed a field is not a version.
        let c = "timestamp:1\tversion:1.0.1 version=99.0.0\ttarget:x";
        let v = metadata(c, "version").expect("readable").expect("present");
        assert_eq!(parse_version(&v), None);
    }

    #[test]
    fn newer_is_by_precedence_not_build_metadata() {
        let v = |s: &str| semver::Version::parse(s).expect("version");
        let floor = |signed: &str, installed: Option<&str>, seen: Option<&str>| {
            let (installed, seen) = (installed.map(v), seen.map(v));
            version_floor(&v(signed), installed.as_ref(), seen.as_ref()).map(|f| f.to_string())
        };
        // Build metadata alone never makes a release newer.
        assert_eq!(
            floor("1.4.0+f00d", Some("1.4.0+0bad"), None).as_deref(),
            Some("1.4.0+0bad")
        );
        assert_eq!(
            floor("1.4.0+0bad", Some("1.4.0+f00d"), None).as_deref(),
            Some("1.4.0+f00d")
        );
        assert_eq!(floor("1.4.1+0", Some("1.4.0+f00d"), None), None);
        // Pre-releases come before their release.
        assert!(floor("1.4.0-rc.1", Some("1.4.0"), None).is_some());
        assert_eq!(floor("1.4.0", Some("1.4.0-rc.1"), None), None);
        // The highest seen: below it is a replay; equal (any build) is the
        // release a stopped master had recorded but not yet installed.
        assert_eq!(
            floor("1.5.0", Some("1.4.0"), Some("1.6.0")).as_deref(),
            Some("1.6.0")
        );
        assert_eq!(floor("1.6.0+b", Some("1.4.0"), Some("1.6.0+a")), None);
        assert_eq!(floor("2.0.0", None, None), None);
    }

    #[test]
    fn targets_match_triples_and_aliases() {
        assert!(target_matches(TARGET));
        let os = std::env::consts::OS;
        assert!(target_matches(&format!("{os}-{}", std::env::consts::ARCH)));
        assert!(!target_matches("sparc64-unknown-netbsd"));
        assert!(!target_matches(&format!("{os}-mips")));
    }

    #[test]
    fn checksums_accept_prefix_and_case() {
        let h = "ab".repeat(32);
        assert!(checksum(&format!("sha256:{}", h.to_uppercase()), &h, "x").is_ok());
        assert!(checksum(&h, "y", &h).is_ok());
        assert!(checksum(&h, "y", "z").is_err());
        assert!(checksum("nothex", &h, &h).is_err());
    }

    #[test]
    fn this_test_binary_is_native() {
        let exe = std::env::current_exe().expect("test exe");
        let f = File::open(&exe).expect("open");
        assert!(native_executable(&f, &exe).is_ok());
        let sh = File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).expect("open");
        assert!(native_executable(&sh, &exe).is_err());
    }

    #[test]
    fn scripts_replace_scripts_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = dir.path().join("old");
        let new = dir.path().join("new");
        std::fs::write(&old, "#!/bin/sh\necho 1\n").expect("write");
        std::fs::write(&new, "#!/bin/sh\necho 2\n").expect("write");
        let f = File::open(&new).expect("open");
        assert!(native_executable(&f, &old).is_ok());
        let exe = std::env::current_exe().expect("test exe");
        let err = native_executable(&f, &exe).expect_err("script over a native binary");
        assert!(err.reason.contains("#! script"), "{}", err.reason);
        // A native binary may replace a script.
        assert!(native_executable(&File::open(&exe).expect("open"), &old).is_ok());
    }
}
