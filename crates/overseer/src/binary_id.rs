//! The binary's identity: the SHA-256 of its file (`State::id`), kept up to
//! date by [`BinaryId`] as the file is replaced, and the target it was built
//! for.

use std::fs::File;
use std::io::{self, Read};
#[cfg(unix)]
use std::os::unix::fs::MetadataExt;
use std::path::Path;
#[cfg(unix)]
use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// The target triple this binary was built for.
pub(crate) const TARGET: &str = env!("OVERSEER_TARGET");

/// The SHA-256 of the worker binary, recomputed only when the file changes.
#[cfg(unix)]
#[derive(Debug)]
pub(crate) struct BinaryId {
    path: PathBuf,
    fingerprint: Option<(u64, u64, u64, i64, i64)>,
    id: String,
}

#[cfg(unix)]
impl BinaryId {
    /// Hashes lazily, at the first `current()`.
    pub fn new(path: PathBuf) -> Self {
        BinaryId {
            path,
            fingerprint: None,
            id: String::new(),
        }
    }

    /// The ID of the file now at the path (hashing again if it changed).
    pub fn current(&mut self) -> String {
        let fingerprint = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()));
        if fingerprint.is_none() || fingerprint != self.fingerprint {
            match sha256_file(&self.path) {
                Ok(id) => self.id = id,
                Err(e) => crate::log::warning!("cannot hash {}: {e}", self.path.display()),
            }
            self.fingerprint = fingerprint;
        }
        self.id.clone()
    }
}

/// The hex SHA-256 of a file.
pub(crate) fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}
