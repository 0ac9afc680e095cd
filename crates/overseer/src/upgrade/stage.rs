//! Steps 1–2 of the pipeline: the streamed download into a private staging
//! file beside the binary (hashing on the way, with a size cap and a
//! deadline), then unpacking.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use super::Rejection;
use crate::progress::{DownloadState, Reporter};

const CHUNK: usize = 32 * 1024;

/// A file in the binary's directory holding a download (or what was
/// unpacked from it). Removed on drop unless swapped in.
pub(crate) struct Staged {
    pub file: NamedTempFile,
    pub sha256: String,
    pub size: u64,
}

/// Creates an empty private staging file in `dir`, named after the binary.
pub(crate) fn staging_file(dir: &Path, bin_name: &str) -> io::Result<NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!(".{bin_name}.overseer-"))
        .suffix(".staging")
        .tempfile_in(dir)
}

/// Whether a file name is one of our staging files (left behind by a master
/// killed mid-download).
pub(crate) fn is_staging_name(name: &str, bin_name: &str) -> bool {
    name.starts_with(&format!(".{bin_name}.overseer-")) && name.ends_with(".staging")
}

/// Copies `body` into a new staging file. The reading happens on a thread of
/// its own, so a source that stalls inside `read` cannot hold the pipeline
/// past `deadline`: the download is abandoned and the thread ends with its
/// next read.
pub(crate) fn download(
    body: Box<dyn Read + Send>,
    out: NamedTempFile,
    expected_size: Option<u64>,
    limits: (u64, Duration),
    mut progress: Reporter<'_>,
) -> Result<Staged, Rejection> {
    let mut size = 0;
    let result = copy(body, out, expected_size, limits, &mut progress, &mut size);
    let state = match result {
        Ok(_) => DownloadState::Finished,
        Err(_) => DownloadState::Failed,
    };
    progress.end(size, state);
    result
}

fn copy(
    body: Box<dyn Read + Send>,
    mut out: NamedTempFile,
    expected_size: Option<u64>,
    (max_size, timeout): (u64, Duration),
    progress: &mut Reporter<'_>,
    size: &mut u64,
) -> Result<Staged, Rejection> {
    let deadline = Instant::now() + timeout;
    // One chunk in flight is enough to overlap reading with hashing and
    // writing; each is sent at the size read, so the master holds at most
    // three chunks' worth (96 KiB) of a download at once, whatever the
    // source's speed.
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(1);
    let reader = std::thread::Builder::new()
        .name("overseer-download".into())
        .spawn(move || {
            let mut body = body;
            let mut buf = vec![0; CHUNK];
            loop {
                let chunk = match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => Ok(buf[..n].to_vec()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let failed = chunk.is_err();
                if tx.send(chunk).is_err() || failed {
                    break;
                }
            }
        });
    if let Err(e) = reader {
        return Err(Rejection::io("starting the download thread", e));
    }
    let mut hasher = Sha256::new();
    let limit = expected_size.map_or(max_size, |s| s.min(max_size));
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(chunk)) => {
                *size += chunk.len() as u64;
                progress.running(*size);
                if *size > limit {
                    return Err(match expected_size {
                        Some(s) if s <= max_size => Rejection::new(format!(
                            "download is longer than the announced {s} bytes"
                        )),
                        _ => Rejection::new(format!(
                            "download exceeds max_download_size ({max_size} bytes): abandoned"
                        )),
                    });
                }
                hasher.update(&chunk);
                out.write_all(&chunk)
                    .map_err(|e| Rejection::io("writing the staging file", e))?;
            }
            Ok(Err(e)) => {
                return Err(Rejection::new(match expected_size {
                    Some(s) => format!("download truncated at {size} of {s} bytes: {e}"),
                    None => format!("download failed after {size} bytes: {e}"),
                }))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(Rejection::new(format!(
                    "download not finished within download_timeout ({timeout:?}; {size} bytes so far): abandoned"
                )))
            }
        }
    }
    if let Some(expected) = expected_size {
        if *size != expected {
            return Err(Rejection::new(format!(
                "download truncated: {size} of {expected} bytes"
            )));
        }
    }
    if *size == 0 {
        return Err(Rejection::new("download is empty"));
    }
    out.flush()
        .map_err(|e| Rejection::io("writing the staging file", e))?;
    Ok(Staged {
        file: out,
        sha256: hex(&hasher.finalize()),
        size: *size,
    })
}

/// Lowercase hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

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
            sha256: hex(&w.hasher.finalize()),
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
        Format::Xz => lzma_rs::xz_decompress(&mut BufReader::new(input), w)
            .map_err(|e| io::Error::other(format!("{e:?}"))),
        #[cfg(feature = "zstd")]
        Format::Zstd => {
            let mut d = ruzstd::decoding::StreamingDecoder::new(input)
                .map_err(|e| io::Error::other(e.to_string()))?;
            io::copy(&mut d, w).map(drop)
        }
        #[cfg(feature = "tar")]
        Format::Tar => {
            // Tar is sequential: list the entries, then read the chosen one.
            let mut names = Vec::new();
            for entry in tar::Archive::new(&mut input).entries()? {
                let entry = entry?;
                let header = entry.header();
                let executable = header.mode().is_ok_and(|m| m & 0o111 != 0);
                let name = match header.entry_type().is_file() {
                    true => entry
                        .path()?
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    false => String::new(),
                };
                names.push((name, executable));
            }
            let index = choose(&names, how.wanted)?;
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
            let mut archive = zip::ZipArchive::new(input).map_err(io::Error::other)?;
            let mut names = Vec::new();
            for i in 0..archive.len() {
                let f = archive.by_index_raw(i).map_err(io::Error::other)?;
                let name = Path::new(f.name())
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let executable = f.is_file() && f.unix_mode().is_some_and(|m| m & 0o111 != 0);
                names.push((if f.is_file() { name } else { String::new() }, executable));
            }
            let index = choose(&names, how.wanted)?;
            let mut f = archive.by_index(index).map_err(io::Error::other)?;
            io::copy(&mut f, w).map(drop)
        }
        #[allow(unreachable_patterns)]
        other => Err(unsupported(other)),
    }
}

#[cfg_attr(not(any(feature = "tar", feature = "zip")), allow(dead_code))]
/// Picks the archive entry to install: the first wanted name present, else
/// the only executable file, else the only file.
fn choose(entries: &[(String, bool)], wanted: &[String]) -> io::Result<usize> {
    // Entries that are not files have no name here: an empty wanted name
    // (from a release named `.hidden`) must not pick one of them.
    for w in wanted.iter().filter(|w| !w.is_empty()) {
        if let Some(i) = entries.iter().position(|(n, _)| n == w) {
            return Ok(i);
        }
    }
    let files: Vec<usize> = (0..entries.len())
        .filter(|&i| !entries[i].0.is_empty())
        .collect();
    let executables: Vec<usize> = files.iter().copied().filter(|&i| entries[i].1).collect();
    match (executables.as_slice(), files.as_slice()) {
        ([only], _) | ([], [only]) => Ok(*only),
        _ => Err(io::Error::other(format!(
            "no entry named {} and no single executable among: {}",
            wanted.join(" or "),
            files
                .iter()
                .map(|&i| entries[i].0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::choose;

    #[test]
    fn an_empty_wanted_name_never_picks_a_directory_or_a_link() {
        // A directory and a symbolic link (no name: not files), then the binary.
        let entries = [
            (String::new(), false),
            (String::new(), false),
            ("app".to_string(), true),
        ];
        assert_eq!(choose(&entries, &[String::new()]).ok(), Some(2));
        assert_eq!(
            choose(&entries, &[String::new(), "app".to_string()]).ok(),
            Some(2)
        );
        let only_links = [(String::new(), false)];
        assert!(choose(&only_links, &[String::new()]).is_err());
    }
}
