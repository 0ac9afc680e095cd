//! Step 1 of the pipeline: the streamed download into a private staging
//! file beside the binary, hashing on the way, with a size cap and a
//! deadline (unpacking is `unpack.rs`).

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use super::rejection::Rejection;
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
        sha256: format!("{:x}", hasher.finalize()),
        size: *size,
    })
}
