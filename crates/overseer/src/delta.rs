//! Delta upgrades (docs/design.md, "Deltas"): a release rebuilt from the
//! installed binary and a patch, instead of downloaded whole.
//!
//! A patch is a bsdiff-family patch (`bidiff`'s format, applied by
//! `bipatch`) compressed as one zstd frame. The format was chosen by
//! measurement on this workspace's own binaries (docs/benchmarks.md,
//! "Deltas"): against zstd's patch-from mode, whose window must span the
//! whole base (so its decoder holds a buffer the size of the binary), a
//! bsdiff patch is applied in a stream: the base is read where the patch
//! points, 4 KiB at a time, and the zstd frame's window is refused above
//! [`MAX_PATCH_WINDOW`] before a byte is decoded. Memory stays the same
//! whatever the size of the binary, the patch or what it claims.
//!
//! [`apply`] reads at most the patch's listed size and writes at most the
//! release's size, and says what it made (its size and SHA-256) for the
//! caller to compare with the signed manifest before anything else sees
//! the bytes.

use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::rc::Rc;

use sha2::{Digest, Sha256};

/// The largest zstd window a patch may declare: what `overseer publish`
/// compresses with (a window log of 23).
pub const MAX_PATCH_WINDOW: u64 = 8 << 20;

/// What a patch made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// Bytes written.
    pub size: u64,
    /// Their SHA-256 (lower-case hex).
    pub sha256: String,
    /// Bytes of patch read.
    pub patch_size: u64,
    /// Their SHA-256.
    pub patch_sha256: String,
}

/// The patch as read: counted, hashed, and cut at its listed size.
struct Counted<R> {
    inner: R,
    limit: u64,
    seen: Rc<RefCell<(u64, Sha256)>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut seen = self.seen.borrow_mut();
        seen.0 += n as u64;
        seen.1.update(&buf[..n]);
        if seen.0 > self.limit {
            return Err(io::Error::other(format!(
                "the patch is longer than the {} bytes listed",
                self.limit
            )));
        }
        Ok(n)
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rebuilds into `out` what `patch` makes of `base` (the installed
/// binary), reading at most `patch_size` bytes of patch and writing at
/// most `max_size` bytes. Any malformed, truncated, oversized or foreign
/// patch is an error; a base other than the one the patch was made from
/// makes other bytes, which the caller's hash comparison refuses.
pub fn apply(
    patch: &mut dyn Read,
    base: impl Read + Seek,
    out: &mut impl Write,
    patch_size: u64,
    max_size: u64,
) -> Result<Rebuilt, String> {
    let seen = Rc::new(RefCell::new((0u64, Sha256::new())));
    let counted = Counted {
        inner: &mut *patch,
        limit: patch_size,
        seen: seen.clone(),
    };
    let mut input = BufReader::with_capacity(64 * 1024, counted);
    let head = input
        .fill_buf()
        .map_err(|e| format!("reading the patch: {e}"))?;
    if !head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err("not a patch: no zstd frame".into());
    }
    let window = crate::zstd_window::zstd_window(head)?;
    if window > MAX_PATCH_WINDOW {
        return Err(format!(
            "the patch declares a {window}-byte window, over {MAX_PATCH_WINDOW}"
        ));
    }
    let decoder =
        ruzstd::decoding::StreamingDecoder::new(input).map_err(|e| format!("not a patch: {e}"))?;
    let mut rebuilt =
        bipatch::Reader::new(decoder, base).map_err(|e| format!("not a patch: {e}"))?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match rebuilt.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("applying the patch: {e}")),
        };
        size += n as u64;
        if size > max_size {
            return Err(format!(
                "the patch makes more than the {max_size} bytes of the release"
            ));
        }
        hash.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| format!("writing the rebuilt binary: {e}"))?;
    }
    drop(rebuilt);
    // The rest of the patch, if the frame ended before it: hashed too, so
    // trailing bytes make the patch's hash differ from the one listed.
    let mut rest = Counted {
        inner: patch,
        limit: patch_size,
        seen: seen.clone(),
    };
    io::copy(&mut rest, &mut io::sink()).map_err(|e| format!("reading the patch: {e}"))?;
    let (patch_size, patch_hash) = {
        let seen = seen.borrow();
        (seen.0, seen.1.clone())
    };
    Ok(Rebuilt {
        size,
        sha256: hex(&hash.finalize()),
        patch_size,
        patch_sha256: hex(&patch_hash.finalize()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn uvarint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn svarint(v: i64, out: &mut Vec<u8>) {
        uvarint(((v << 1) ^ (v >> 63)) as u64, out);
    }

    /// A raw patch in bipatch's format: per step, bytes added to the
    /// base's, bytes taken from the patch, and a seek in the base.
    fn raw(steps: &[(&[u8], &[u8], i64)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xB1DFu32.to_le_bytes());
        out.extend_from_slice(&0x1000u32.to_le_bytes());
        for (add, extra, seek) in steps {
            uvarint(add.len() as u64, &mut out);
            out.extend_from_slice(add);
            uvarint(extra.len() as u64, &mut out);
            out.extend_from_slice(extra);
            svarint(*seek, &mut out);
        }
        out
    }

    fn zst(raw: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(raw, ruzstd::encoding::CompressionLevel::Fastest)
    }

    pub(crate) fn sha(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// A base of 100 KB, and a release made of it: its first half changed
    /// here and there, 8 bytes inserted, its second half as it was.
    pub(crate) fn fixture() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let base: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut new = base[..50_000].to_vec();
        for i in (0..50_000).step_by(997) {
            new[i] = new[i].wrapping_add(7);
        }
        let diff: Vec<u8> = new
            .iter()
            .zip(&base)
            .map(|(n, b)| n.wrapping_sub(*b))
            .collect();
        new.extend_from_slice(b"INSERTED");
        new.extend_from_slice(&base[50_000..]);
        let zeros = vec![0u8; 50_000];
        let patch = zst(&raw(&[(&diff, b"INSERTED", 0), (&zeros, b"", 0)]));
        (base, new, patch)
    }

    fn run(
        patch: &[u8],
        base: &[u8],
        patch_size: u64,
        max: u64,
    ) -> Result<(Rebuilt, Vec<u8>), String> {
        let mut out = Vec::new();
        let r = apply(
            &mut &patch[..],
            io::Cursor::new(base),
            &mut out,
            patch_size,
            max,
        )?;
        Ok((r, out))
    }

    #[test]
    fn a_patch_rebuilds_the_release_and_says_what_it_read_and_made() {
        let (base, new, patch) = fixture();
        assert!(
            patch.len() < new.len() / 10,
            "{} of {}",
            patch.len(),
            new.len()
        );
        let (r, out) = run(&patch, &base, patch.len() as u64, new.len() as u64).unwrap();
        assert_eq!(out, new);
        assert_eq!(r.sha256, sha(&new));
        assert_eq!(r.size, new.len() as u64);
        assert_eq!(
            (r.patch_size, r.patch_sha256),
            (patch.len() as u64, sha(&patch))
        );
        // Another base makes other bytes: the caller's hash check refuses them.
        let mut other = base.clone();
        other[60_000] ^= 1;
        let (r, _) = run(&patch, &other, patch.len() as u64, new.len() as u64).unwrap();
        assert_ne!(r.sha256, sha(&new));
        // Trailing bytes are read and hashed: the patch's hash tells.
        let mut longer = patch.clone();
        longer.extend_from_slice(b"tail");
        let (r, out) = run(&longer, &base, longer.len() as u64, new.len() as u64).unwrap();
        assert_eq!(out, new);
        assert_ne!(r.patch_sha256, sha(&patch));
    }

    #[test]
    fn bad_patches_are_errors_within_their_limits() {
        let (base, new, patch) = fixture();
        let (p, n) = (patch.len() as u64, new.len() as u64);
        let err = |patch: &[u8], base: &[u8], p: u64, n: u64| run(patch, base, p, n).unwrap_err();
        assert!(err(&patch[..patch.len() / 2], &base, p, n).contains("patch"));
        assert!(err(&patch, &base, p - 1, n).contains("longer than"));
        assert!(err(&patch, &base, p, n - 1).contains("more than"));
        assert!(err(b"not a patch at all", &base, p, n).contains("no zstd frame"));
        assert!(err(b"", &base, p, n).contains("no zstd frame"));
        // A frame that declares a 2 GiB window: refused before decoding.
        let huge = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 31 << 3, 0, 0, 0];
        assert!(err(&huge, &base, p, n).contains("window"));
        // A seek before the base's start, a read past its end.
        let before = zst(&raw(&[(b"", b"x", -1_000_000), (b"ab", b"", 0)]));
        assert!(run(&before, &base, 1 << 20, 1 << 20).is_err());
        let past = zst(&raw(&[(b"", b"", 200_000), (b"ab", b"", 0)]));
        assert!(run(&past, &base, 1 << 20, 1 << 20).is_err());
        // Not bipatch's format inside the frame.
        let foreign = zst(b"BSDIFF40 and the rest of another format");
        assert!(err(&foreign, &base, 1 << 20, n).contains("not a patch"));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        /// However a patch is damaged, applying it never panics, stays in
        /// its limits, and reports the hashes of what it really read and
        /// made: the caller's comparison with the signed manifest is sound.
        #[test]
        fn damaged_patches_are_refused_or_reported_truthfully(
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            how in 0u8..3,
        ) {
            let (base, new, patch) = fixture();
            let mut bad = patch.clone();
            let i = at.index(bad.len());
            match how {
                0 => bad[i] ^= flip,
                1 => bad.truncate(i),
                _ => bad.insert(i, flip),
            }
            let limit = patch.len() as u64 + 1;
            let mut out = Vec::new();
            if let Ok(r) = apply(&mut &bad[..], io::Cursor::new(&base), &mut out, limit, new.len() as u64) {
                prop_assert_eq!(&r.patch_sha256, &sha(&bad));
                prop_assert_ne!(&r.patch_sha256, &sha(&patch));
                prop_assert_eq!(&r.sha256, &sha(&out));
                prop_assert!(out.len() <= new.len());
            }
        }
    }
}
