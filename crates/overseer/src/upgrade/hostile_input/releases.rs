//! Releases for the hostile-input tests: every format's normal use, and
//! what an attacker would publish instead (bombs, huge windows and
//! dictionaries, oversized metadata, lying headers), made with the formats'
//! own libraries or, where they would refuse, by hand.

#![allow(clippy::unwrap_used)]

use std::io::{Cursor, Write};

/// What a case must come to.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expect {
    /// Already plain: nothing to unpack.
    Plain,
    /// Unpacks to exactly the payload.
    Payload(usize),
    /// Refused, for a reason mentioning this.
    Refused(String),
    /// Either, as long as a refusal is a clean error of the release.
    Clean,
}

impl Expect {
    pub(super) fn encode(&self) -> String {
        match self {
            Expect::Plain => "plain".into(),
            Expect::Payload(n) => format!("payload {n}"),
            Expect::Refused(why) => format!("refused {why}"),
            Expect::Clean => "clean".into(),
        }
    }

    pub(super) fn decode(s: &str) -> Expect {
        match s.split_once(' ') {
            Some(("payload", n)) => Expect::Payload(n.parse().expect("payload size")),
            Some(("refused", why)) => Expect::Refused(why.to_string()),
            _ if s == "plain" => Expect::Plain,
            _ => Expect::Clean,
        }
    }
}

/// The binary the archives carry: pseudo-random bytes behind an ELF magic
/// number (they compress badly, so an archive of them is no bomb).
pub(super) fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = b"\x7fELF".to_vec();
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push((x >> 24) as u8);
    }
    out
}

fn refused(why: &str) -> Expect {
    Expect::Refused(why.to_string())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Writes `len` zero bytes into `w`, a MiB at a time.
fn zeros(w: &mut impl Write, len: u64) {
    let chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64);
        w.write_all(&chunk[..n as usize]).unwrap();
        left -= n;
    }
}

fn gzip_zeros(len: u64) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    zeros(&mut e, len);
    e.finish().unwrap()
}

fn xz(bytes: &[u8]) -> Vec<u8> {
    let mut w =
        lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1)).unwrap();
    w.write_all(bytes).unwrap();
    w.finish().unwrap()
}

fn xz_zeros(len: u64) -> Vec<u8> {
    let mut w =
        lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1)).unwrap();
    zeros(&mut w, len);
    w.finish().unwrap()
}

fn skip_varint(buf: &[u8], at: &mut usize) {
    while buf[*at] & 0x80 != 0 {
        *at += 1;
    }
    *at += 1;
}

/// An xz file with its first block's LZMA2 dictionary size property set to
/// `prop` (37: 1.5 GiB, 40: 4 GiB), the block header's CRC32 fixed.
fn xz_with_dictionary(xz: &[u8], prop: u8) -> Vec<u8> {
    let mut out = xz.to_vec();
    let start = 12;
    let size = (usize::from(out[start]) + 1) * 4;
    let flags = out[start + 1];
    assert_eq!(flags & 3, 0, "one filter, LZMA2");
    let mut at = start + 2;
    if flags & 0x40 != 0 {
        skip_varint(&out, &mut at);
    }
    if flags & 0x80 != 0 {
        skip_varint(&out, &mut at);
    }
    assert_eq!(&out[at..at + 2], &[0x21, 1], "LZMA2 with one property byte");
    out[at + 2] = prop;
    let mut crc = flate2::Crc::new();
    crc.update(&out[start..start + size - 4]);
    out[start + size - 4..start + size].copy_from_slice(&crc.sum().to_le_bytes());
    out
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
}

/// A zstd frame of `blocks` RLE blocks of 128 KiB of zeros, after a header
/// declaring a window of `2^window_log` bytes, or (`window_log` 0) a single
/// segment of `content` bytes.
fn zstd_rle(window_log: u8, content: u64, blocks: usize) -> Vec<u8> {
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd];
    if window_log == 0 {
        out.push(0xe0); // 8-byte content size, single segment
        out.extend_from_slice(&content.to_le_bytes());
    } else {
        out.push(0);
        out.push((window_log - 10) << 3);
    }
    for i in 0..blocks {
        let header = u32::from(i + 1 == blocks) | (1 << 1) | ((128 * 1024) << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}

fn tar_header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h
}

/// A tar of `(name, bytes, mode)` files.
fn tar(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, bytes, mode) in files {
        let mut h = tar_header(tar::EntryType::Regular, bytes.len() as u64, *mode);
        b.append_data(&mut h, name, *bytes).unwrap();
    }
    b.into_inner().unwrap()
}

/// A tar opening with a metadata entry (`kind`) that declares `size` bytes
/// and carries `present` of them.
fn tar_metadata(kind: tar::EntryType, size: u64, present: usize) -> Vec<u8> {
    let mut h = tar_header(kind, size, 0o644);
    h.set_path("././@LongLink").unwrap();
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend(std::iter::repeat_n(b'a', present));
    out.resize(out.len().next_multiple_of(512) + 1024, 0);
    out
}

fn zip(files: &[(&str, &[u8], u32)], method: zip::CompressionMethod) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes, mode) in files {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(method)
            .unix_permissions(*mode);
        z.start_file(*name, options).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap().into_inner()
}

fn zip_zeros(len: u64) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(len >= u64::from(u32::MAX));
    z.start_file("app", options).unwrap();
    zeros(&mut z, len);
    z.finish().unwrap().into_inner()
}

/// A zip whose central directory holds `records` records, all naming the
/// one empty file it has: the directory is what takes memory.
fn zip_directory(records: u16) -> Vec<u8> {
    let mut out = b"PK\x03\x04".to_vec();
    // version, flags, method, time, date, crc, sizes, name length, extra length
    for field in [20u16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.push(b'a');
    let start = out.len() as u32;
    for _ in 0..records {
        out.extend_from_slice(b"PK\x01\x02");
        // made by (Unix), needed, flags, method, time, date, crc, sizes,
        // name, extra and comment lengths, disk, internal attributes
        for field in [0x031eu16, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(&(0o100755u32 << 16).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.push(b'a');
    }
    let size = out.len() as u32 - start;
    out.extend_from_slice(b"PK\x05\x06");
    for field in [0u16, 0, records, records] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle")
}

/// A zip of the payload whose headers claim 4 GiB unpacked.
fn zip_claiming(bin: &[u8]) -> Vec<u8> {
    let mut z = zip(&[("app", bin, 0o755)], zip::CompressionMethod::Deflated);
    let huge = u32::MAX - 1;
    let local = find(&z, b"PK\x03\x04");
    z[local + 22..local + 26].copy_from_slice(&huge.to_le_bytes());
    let central = find(&z, b"PK\x01\x02");
    z[central + 24..central + 28].copy_from_slice(&huge.to_le_bytes());
    z
}

/// The cases with a known outcome: every format's normal use, then what an
/// attacker would publish.
pub(super) fn adversarial_cases() -> Vec<(String, Vec<u8>, Expect)> {
    let bin = payload(48 * 1024);
    let n = bin.len();
    let readme: &[u8] = b"not the binary";
    let files: &[(&str, &[u8], u32)] = &[("README", readme, 0o644), ("app", &bin, 0o755)];
    let tar_ = tar(files);
    let zip_ = zip(files, zip::CompressionMethod::Deflated);
    let mut cases: Vec<(String, Vec<u8>, Expect)> = vec![
        ("plain".into(), bin.clone(), Expect::Plain),
        ("gzip".into(), gzip(&bin), Expect::Payload(n)),
        ("xz".into(), xz(&bin), Expect::Payload(n)),
        ("zstd".into(), zstd(&bin), Expect::Payload(n)),
        ("tar".into(), tar_.clone(), Expect::Payload(n)),
        ("zip".into(), zip_.clone(), Expect::Payload(n)),
        ("tar.gz".into(), gzip(&tar_), Expect::Payload(n)),
        ("tar.xz".into(), xz(&tar_), Expect::Payload(n)),
        ("tar.zst".into(), zstd(&tar_), Expect::Payload(n)),
        (
            "zip of a tar.gz (three layers)".into(),
            zip(
                &[("app.tar.gz", &gzip(&tar_), 0o644)],
                zip::CompressionMethod::Stored,
            ),
            refused("layers deep"),
        ),
        (
            "gzip in gzip in gzip in gzip".into(),
            gzip(&gzip(&gzip(&gzip(&bin)))),
            refused("layers deep"),
        ),
        // Bombs: each stops at the cap on the unpacked size, in bounded memory.
        (
            "gzip bomb".into(),
            gzip_zeros(64 << 20),
            refused("exceeds max_download_size"),
        ),
        (
            "gzip bomb in gzip".into(),
            gzip(&gzip_zeros(64 << 20)),
            refused("exceeds max_download_size"),
        ),
        (
            "a hundred gzip members".into(),
            gzip_zeros(1 << 20).repeat(100),
            refused("exceeds max_download_size"),
        ),
        (
            "xz bomb".into(),
            xz_zeros(128 << 20),
            refused("exceeds max_download_size"),
        ),
        (
            "xz with a 1.5 GiB dictionary".into(),
            xz_with_dictionary(&xz(&bin), 37),
            refused("dictionary"),
        ),
        (
            "xz bomb with a 4 GiB dictionary".into(),
            xz_with_dictionary(&xz_zeros(128 << 20), 40),
            refused("dictionary"),
        ),
        (
            "2 MiB of zstd declaring a 64 GiB window".into(),
            zstd_rle(36, 0, (2 << 20) / 4 - 2),
            refused("declares a 64 GiB window"),
        ),
        (
            "zstd single segment of 2^60 bytes".into(),
            zstd_rle(0, 1 << 60, 64),
            refused("window"),
        ),
        (
            "zstd bomb with a 1 MiB window".into(),
            zstd_rle(20, 0, (2 << 20) / 4 - 2),
            refused("exceeds max_download_size"),
        ),
        (
            "tar long name declaring 8 GiB".into(),
            tar_metadata(tar::EntryType::GNULongName, 8 << 30, 4096),
            refused("metadata entry"),
        ),
        (
            "tar pax header of 2 MiB".into(),
            tar_metadata(tar::EntryType::XHeader, 2 << 20, 2 << 20),
            refused("metadata entry"),
        ),
        (
            "tar sparse file".into(),
            tar_metadata(tar::EntryType::GNUSparse, 0, 0),
            refused("sparse"),
        ),
        (
            "tar.gz bomb".into(),
            gzip(&tar(&[("app", &vec![0; 64 << 20], 0o755)])),
            refused("exceeds max_download_size"),
        ),
        (
            "tar of 3000 files and the binary".into(),
            {
                let many: Vec<(String, &[u8], u32)> = (0..3000)
                    .map(|i| (format!("doc/{i}"), readme, 0o644))
                    .chain([("app".to_string(), &bin[..], 0o755)])
                    .collect();
                let refs: Vec<(&str, &[u8], u32)> =
                    many.iter().map(|(a, b, c)| (a.as_str(), *b, *c)).collect();
                tar(&refs)
            },
            Expect::Payload(n),
        ),
        (
            "tar of 30 files, none the binary".into(),
            {
                let many: Vec<(String, &[u8], u32)> = (0..30)
                    .map(|i| (format!("doc/{i}"), readme, 0o644))
                    .collect();
                let refs: Vec<(&str, &[u8], u32)> =
                    many.iter().map(|(a, b, c)| (a.as_str(), *b, *c)).collect();
                tar(&refs)
            },
            refused("and 10 more"),
        ),
        (
            "zip bomb".into(),
            zip_zeros(64 << 20),
            refused("exceeds max_download_size"),
        ),
        (
            "zip claiming 4 GiB".into(),
            zip_claiming(&bin),
            Expect::Clean,
        ),
        (
            "zip with a directory of 65535 records".into(),
            zip_directory(u16::MAX),
            refused("central directory"),
        ),
    ];
    // Truncated: every format cut short at a few places.
    let whole: Vec<(String, Vec<u8>)> = cases
        .iter()
        .filter(|(_, _, e)| matches!(e, Expect::Payload(_)))
        .map(|(name, bytes, _)| (name.clone(), bytes.clone()))
        .collect();
    for (name, bytes) in whole {
        for cut in [10, bytes.len() / 3, bytes.len() * 2 / 3, bytes.len() - 1] {
            cases.push((
                format!("{name} cut at {cut} of {}", bytes.len()),
                bytes[..cut].to_vec(),
                Expect::Clean,
            ));
        }
    }
    cases
}

/// Small releases for the random cases to mutate: every format, small
/// bombs, and bare magic numbers.
pub(super) fn random_bases() -> Vec<Vec<u8>> {
    let bin = payload(4096);
    let files: &[(&str, &[u8], u32)] = &[("README", b"hello", 0o644), ("app", &bin, 0o755)];
    let tar_ = tar(files);
    vec![
        gzip(&bin),
        xz(&bin),
        zstd(&bin),
        tar_.clone(),
        zip(files, zip::CompressionMethod::Deflated),
        zip(files, zip::CompressionMethod::Stored),
        gzip(&tar_),
        xz(&tar_),
        zstd(&tar_),
        gzip(&gzip(&bin)),
        gzip_zeros(16 << 20),
        xz_zeros(16 << 20),
        zstd_rle(20, 0, 256),
        zstd_rle(23, 0, 16),
        tar_metadata(tar::EntryType::GNULongName, 600, 600),
        zip_directory(64),
        b"\x1f\x8b".to_vec(),
        b"\xfd7zXZ\x00".to_vec(),
        b"\x28\xb5\x2f\xfd".to_vec(),
        b"PK\x03\x04".to_vec(),
    ]
}
