//! Step 2 of the pipeline: unpacking a staged download by content, until a
//! plain file remains.
//!
//! Unpacking reads what anyone could have published, before it is known to
//! be good, so its memory is bounded, not only its output: every layer is
//! written to a file capped at `max_download_size`, and each decoder is held
//! to `window_limit` — a zstd frame's declared window is read and refused
//! before the decoder sees it, xz blocks are refused by their dictionary
//! before it is allocated, gzip and zip's deflate keep a fixed 32 KiB
//! window, and the archive formats' own metadata (a zip's directory, tar's
//! long names and pax headers) is bounded before it is read into memory.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use super::download::{staging_file, Staged};
use super::rejection::Rejection;

/// What a staged file holds, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Plain,
    Gzip,
    Xz,
    Zstd,
    Zip,
    Tar,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Plain => "plain",
            Format::Gzip => "gzip",
            Format::Xz => "xz",
            Format::Zstd => "zstd",
            Format::Zip => "zip",
            Format::Tar => "tar",
        }
    }
}

/// Recognises compressed files and archives by content.
pub(crate) fn sniff(file: &mut File) -> io::Result<Format> {
    let mut head = [0u8; 512];
    file.seek(SeekFrom::Start(0))?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    file.seek(SeekFrom::Start(0))?;
    let head = &head[..n];
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Format::Gzip
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Format::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Format::Zstd
    } else if head.starts_with(b"PK\x03\x04") {
        Format::Zip
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Format::Tar
    } else {
        Format::Plain
    })
}

/// The smallest window or dictionary a decoder may always use: what
/// `zstd -19` and `xz -6` use for a release of any size.
const MIN_WINDOW: u64 = 8 << 20;
/// The largest window or dictionary a decoder may use: the reference zstd
/// decoder's own default limit (larger needs `--memory`); `xz -9` needs 64 MiB.
const MAX_WINDOW: u64 = 128 << 20;
/// The most metadata an archive may make the unpacker hold in memory: a zip's
/// central directory (the zip library keeps every record), a tar entry's long
/// name, long link or pax header.
#[cfg_attr(not(any(feature = "tar", feature = "zip")), allow(dead_code))]
const MAX_ARCHIVE_METADATA: u64 = 1 << 20;

/// The largest window (zstd) or dictionary (xz) a decoder may use for a
/// release capped at `max_size`: twice the cap (a window beyond everything
/// unpacked is never used, and compressors round windows up to a power of
/// two), at least 8 MiB and at most 128 MiB.
pub(crate) fn window_limit(max_size: u64) -> u64 {
    max_size.saturating_mul(2).clamp(MIN_WINDOW, MAX_WINDOW)
}

/// A byte count for messages: `64 GiB`, `1.5 MiB`, `700 bytes`.
#[cfg_attr(
    not(any(feature = "xz", feature = "zstd", feature = "tar", feature = "zip")),
    allow(dead_code)
)]
fn human(bytes: u64) -> String {
    for (unit, scale) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= scale {
            return if bytes.is_multiple_of(scale) {
                format!("{} {unit}", bytes / scale)
            } else {
                format!("{:.1} {unit}", bytes as f64 / scale as f64)
            };
        }
    }
    format!("{bytes} bytes")
}

/// The window limit for a cap, as messages say it.
#[cfg_attr(not(any(feature = "xz", feature = "zstd")), allow(dead_code))]
fn window_note(max_size: u64) -> String {
    format!(
        "{} a decoder may use here (twice max_download_size, between {} and {})",
        human(window_limit(max_size)),
        human(MIN_WINDOW),
        human(MAX_WINDOW)
    )
}

/// Reads up to `buf.len()` bytes from the start of `input`, then rewinds it.
#[cfg_attr(not(feature = "zstd"), allow(dead_code))]
fn peek<R: Read + Seek>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    input.seek(SeekFrom::Start(0))?;
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    input.seek(SeekFrom::Start(0))?;
    Ok(n)
}

/// Writes into a staging file, hashing, refusing to grow past a cap (a
/// decompression bomb is abandoned like an endless download).
struct CappedWriter {
    out: NamedTempFile,
    hasher: Sha256,
    size: u64,
    max: u64,
}

impl Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size + buf.len() as u64 > self.max {
            return Err(io::Error::other(format!(
                "unpacked size exceeds max_download_size ({} bytes)",
                self.max
            )));
        }
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// What unpacking needs to know.
pub(crate) struct Unpack<'a> {
    pub dir: &'a Path,
    pub bin_name: &'a str,
    /// Names to look for inside an archive, best first.
    #[cfg_attr(not(any(feature = "tar", feature = "zip")), allow(dead_code))]
    pub wanted: &'a [String],
    pub max_size: u64,
}

/// Unpacks a staged download until a plain file remains (at most a few
/// layers: `.tar.gz` is two). `None` when the download is already plain.
pub(crate) fn unpack(raw: &mut Staged, how: &Unpack<'_>) -> Result<Option<Staged>, Rejection> {
    let mut layer: Option<Staged> = None;
    for _ in 0..3 {
        let src = match layer.as_mut() {
            Some(l) => l,
            None => &mut *raw,
        };
        let format = sniff(src.file.as_file_mut())
            .map_err(|e| Rejection::io("reading the staging file", e))?;
        if format == Format::Plain {
            return Ok(layer);
        }
        let out = staging_file(how.dir, how.bin_name)
            .map_err(|e| Rejection::io("creating a staging file", e))?;
        let mut w = CappedWriter {
            out,
            hasher: Sha256::new(),
            size: 0,
            max: how.max_size,
        };
        let input = BufReader::new(src.file.as_file_mut());
        unpack_one(format, input, &mut w, how).map_err(|e| {
            Rejection::release(format!("cannot unpack the {} release: {e}", format.name()))
        })?;
        w.flush()
            .map_err(|e| Rejection::io("writing the staging file", e))?;
        layer = Some(Staged {
            file: w.out,
            sha256: format!("{:x}", w.hasher.finalize()),
            size: w.size,
        });
    }
    Err(Rejection::release(
        "the release is packed more than three layers deep",
    ))
}

fn unsupported(format: Format) -> io::Error {
    io::Error::other(format!(
        "support for {} is not compiled in (enable the `{}` cargo feature)",
        format.name(),
        format.name()
    ))
}

fn unpack_one<R: Read + Seek>(
    format: Format,
    mut input: R,
    w: &mut CappedWriter,
    how: &Unpack<'_>,
) -> io::Result<()> {
    let _ = (&mut input, &w, how); // unused when no unpacker is compiled in
    match format {
        Format::Plain => Ok(()),
        #[cfg(feature = "gzip")]
        Format::Gzip => io::copy(&mut flate2::read::MultiGzDecoder::new(input), w).map(drop),
        #[cfg(feature = "xz")]
        Format::Xz => {
            // The limit covers the dictionary and the decoder's own buffers
            // (about 100 KiB); a block needing more is refused before its
            // dictionary is allocated, and the dictionary grows only with
            // what is decoded.
            let limit_kb = (window_limit(how.max_size) >> 10) + 1024;
            let limit_kb = u32::try_from(limit_kb).unwrap_or(u32::MAX - 1);
            let mut d = lzma_rust2::XzReader::new_mem_limit(input, true, limit_kb);
            io::copy(&mut d, w).map(drop).map_err(|e| {
                if e.kind() == io::ErrorKind::OutOfMemory {
                    io::Error::other(format!(
                        "the xz stream needs a dictionary over the {}: compress with a smaller one",
                        window_note(how.max_size)
                    ))
                } else {
                    e
                }
            })
        }
        #[cfg(feature = "zstd")]
        Format::Zstd => {
            // The decoder would take the declared window on trust and grow
            // a buffer to it: read the frame header first (it decodes that
            // one frame only).
            let mut head = [0u8; 18];
            let n = peek(&mut input, &mut head)?;
            let window = crate::zstd_window::zstd_window(&head[..n]).map_err(io::Error::other)?;
            if window > window_limit(how.max_size) {
                return Err(io::Error::other(format!(
                    "the frame declares a {} window, over the {}: compress with a smaller window",
                    human(window),
                    window_note(how.max_size)
                )));
            }
            let mut d = ruzstd::decoding::StreamingDecoder::new(input)
                .map_err(|e| io::Error::other(e.to_string()))?;
            io::copy(&mut d, w).map(drop)
        }
        #[cfg(feature = "tar")]
        Format::Tar => {
            // The tar library reads long names, long links and pax headers
            // into memory, and keeps a record per sparse chunk: look at the
            // raw headers first.
            for entry in tar::Archive::new(&mut input).entries()?.raw(true) {
                let entry = entry?;
                let kind = entry.header().entry_type();
                if kind.is_gnu_sparse() {
                    return Err(io::Error::other("sparse files are not supported"));
                }
                let metadata = kind.is_gnu_longname()
                    || kind.is_gnu_longlink()
                    || kind.is_pax_local_extensions()
                    || kind.is_pax_global_extensions();
                if metadata && entry.size() > MAX_ARCHIVE_METADATA {
                    return Err(io::Error::other(format!(
                        "a metadata entry (long name or pax header) of {}, over the {} read",
                        human(entry.size()),
                        human(MAX_ARCHIVE_METADATA)
                    )));
                }
            }
            // Tar is sequential: go through the entries, then read the chosen one.
            input.seek(SeekFrom::Start(0))?;
            let mut chooser = Chooser::new(how.wanted);
            for (i, entry) in tar::Archive::new(&mut input).entries()?.enumerate() {
                let entry = entry?;
                let header = entry.header();
                let executable = header.mode().is_ok_and(|m| m & 0o111 != 0);
                if header.entry_type().is_file() {
                    let path = entry.path()?;
                    let name = path.file_name().unwrap_or_default().to_string_lossy();
                    chooser.file(i, &name, executable);
                }
            }
            let index = chooser.choose()?;
            input.seek(SeekFrom::Start(0))?;
            let mut archive = tar::Archive::new(input);
            let mut entry = archive
                .entries()?
                .nth(index)
                .ok_or_else(|| io::Error::other("archive changed while reading"))??;
            io::copy(&mut entry, w).map(drop)
        }
        #[cfg(feature = "zip")]
        Format::Zip => {
            // The zip library keeps a record of every entry in its central
            // directory (several times the bytes it reads): the directory
            // is read within a budget.
            let budget = std::rc::Rc::new(std::cell::Cell::new(MAX_ARCHIVE_METADATA));
            let metered = Metered {
                inner: input,
                budget: budget.clone(),
            };
            let mut archive = zip::ZipArchive::new(metered).map_err(|e| match e {
                zip::result::ZipError::Io(e) => e,
                e => io::Error::other(e),
            })?;
            budget.set(u64::MAX);
            let mut chooser = Chooser::new(how.wanted);
            for i in 0..archive.len() {
                let f = archive.by_index_raw(i).map_err(io::Error::other)?;
                if f.is_file() {
                    let name = Path::new(f.name()).file_name().unwrap_or_default();
                    let executable = f.unix_mode().is_some_and(|m| m & 0o111 != 0);
                    chooser.file(i, &name.to_string_lossy(), executable);
                }
            }
            let index = chooser.choose()?;
            let mut f = archive.by_index(index).map_err(io::Error::other)?;
            io::copy(&mut f, w).map(drop)
        }
        #[allow(unreachable_patterns)]
        other => Err(unsupported(other)),
    }
}

/// Reads through to `inner` while a byte budget lasts (lifted by setting it
/// to `u64::MAX`), then fails.
#[cfg(feature = "zip")]
struct Metered<R> {
    inner: R,
    budget: std::rc::Rc<std::cell::Cell<u64>>,
}

#[cfg(feature = "zip")]
impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.budget.get();
        if left == 0 {
            return Err(io::Error::other(format!(
                "the zip archive's central directory was not read within {} (it is larger, or missing)",
                human(MAX_ARCHIVE_METADATA)
            )));
        }
        let n = self.inner.read(buf)?;
        if left != u64::MAX {
            self.budget.set(left.saturating_sub(n as u64));
        }
        Ok(n)
    }
}

#[cfg(feature = "zip")]
impl<R: Seek> Seek for Metered<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// How many names an error message lists.
#[cfg_attr(not(any(feature = "tar", feature = "zip")), allow(dead_code))]
const NAMES_SHOWN: usize = 20;

/// Picks the archive entry to install as the entries go by: the first
/// wanted name present, else the only executable file, else the only file.
/// It keeps only what that choice needs, however many entries there are.
#[cfg_attr(not(any(feature = "tar", feature = "zip")), allow(dead_code))]
struct Chooser<'a> {
    wanted: &'a [String],
    /// Per wanted name, the first entry with it.
    named: Vec<Option<usize>>,
    /// The first executable file and how many there are.
    executables: (Option<usize>, usize),
    /// The first file and how many there are.
    files: (Option<usize>, usize),
    /// The first few file names, for the error message.
    shown: Vec<String>,
}

#[cfg_attr(not(any(feature = "tar", feature = "zip")), allow(dead_code))]
impl<'a> Chooser<'a> {
    fn new(wanted: &'a [String]) -> Self {
        Chooser {
            wanted,
            named: vec![None; wanted.len()],
            executables: (None, 0),
            files: (None, 0),
            shown: Vec::new(),
        }
    }

    /// A regular file at `index`, named `name` (its last path component).
    fn file(&mut self, index: usize, name: &str, executable: bool) {
        if name.is_empty() {
            return;
        }
        for (w, slot) in self.wanted.iter().zip(&mut self.named) {
            if slot.is_none() && w == name {
                *slot = Some(index);
            }
        }
        if executable {
            self.executables.0.get_or_insert(index);
            self.executables.1 += 1;
        }
        self.files.0.get_or_insert(index);
        self.files.1 += 1;
        if self.shown.len() < NAMES_SHOWN {
            self.shown.push(name.to_string());
        }
    }

    fn choose(self) -> io::Result<usize> {
        if let Some(i) = self.named.iter().flatten().next() {
            return Ok(*i);
        }
        match (self.executables, self.files) {
            ((Some(only), 1), _) | ((_, 0), (Some(only), 1)) => Ok(only),
            (_, (_, files)) => {
                let mut among = self.shown.join(", ");
                if files > self.shown.len() {
                    among.push_str(&format!(" and {} more", files - self.shown.len()));
                }
                Err(io::Error::other(format!(
                    "no entry named {} and no single executable among: {among}",
                    self.wanted.join(" or "),
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Chooser;

    #[test]
    fn an_empty_wanted_name_never_picks_a_directory_or_a_link() {
        // From a release named `.hidden`: its stem is empty. Directories and
        // links (entries 0 and 1) are offered with no name.
        let wanted = [String::new()];
        let mut c = Chooser::new(&wanted);
        c.file(0, "", false);
        c.file(1, "", false);
        c.file(2, "app", true);
        assert_eq!(c.choose().ok(), Some(2));
        let mut only_links = Chooser::new(&wanted);
        only_links.file(0, "", false);
        assert!(only_links.choose().is_err());
    }
}
