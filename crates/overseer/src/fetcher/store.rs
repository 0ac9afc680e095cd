//! A place that holds named objects: a directory, a bucket under a prefix.
//! A fleet's manifest, its artifacts and its hosts' reports live in one
//! ([`Fleet`](super::Fleet), and `overseer publish` writes there).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::FetchError;

/// What [`Store::read`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// The object has the tag the read was conditional on: unchanged.
    Unchanged,
    /// There is no such object (yet).
    Missing,
    /// The object, whole, and its tag (an ETag, or size and modification
    /// time) for the next conditional read.
    Found {
        /// Its bytes.
        bytes: Vec<u8>,
        /// Its tag, when the store gives one.
        tag: Option<String>,
    },
}

/// Named objects in one place: a directory ([`Directory`]), or a bucket
/// under a prefix ([`S3`](super::S3), [`Gcs`](super::Gcs),
/// [`Azure`](super::Azure), whose key is then the prefix).
///
/// Names are relative, `/`-separated, without `..` or empty parts; each
/// store refuses others. Every call blocks (the master calls them on its
/// upgrade thread, `overseer publish` on its main thread).
pub trait Store: Send + 'static {
    /// Where `name` is, for messages: `s3://bucket/prefix/name`, a path.
    fn locate(&self, name: &str) -> String;

    /// Reads a small object whole, refusing one over `limit` bytes. With
    /// `tag`, the read is conditional: [`Object::Unchanged`] when the
    /// object still has that tag (one small request, no body).
    fn read(&mut self, name: &str, limit: u64, tag: Option<&str>) -> Result<Object, FetchError>;

    /// Opens an object to stream it (a release's artifact).
    fn open(&mut self, name: &str) -> Result<Box<dyn Read + Send>, FetchError>;

    /// Writes an object whole: readers see the old one or the new one,
    /// never a part.
    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), FetchError>;

    /// The names of the objects under `prefix` (a name ending in `/`), at
    /// any depth.
    fn list(&mut self, prefix: &str) -> Result<Vec<String>, FetchError>;

    /// The environment variables the store reads credentials from, kept
    /// from the processes the master starts (as [`Fetcher::credential_env`](super::Fetcher::credential_env)).
    fn credential_env(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A store chosen at run time (a directory or a bucket, by a URL).
impl Store for Box<dyn Store> {
    fn locate(&self, name: &str) -> String {
        (**self).locate(name)
    }
    fn read(&mut self, name: &str, limit: u64, tag: Option<&str>) -> Result<Object, FetchError> {
        (**self).read(name, limit, tag)
    }
    fn open(&mut self, name: &str) -> Result<Box<dyn Read + Send>, FetchError> {
        (**self).open(name)
    }
    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), FetchError> {
        (**self).write(name, bytes)
    }
    fn list(&mut self, prefix: &str) -> Result<Vec<String>, FetchError> {
        (**self).list(prefix)
    }
    fn credential_env(&self) -> Vec<String> {
        (**self).credential_env()
    }
}

/// Whether `name` is a name every store accepts: relative, `/`-separated,
/// without `.`, `..` or empty parts, control characters or backslashes.
pub fn check_name(name: &str) -> Result<(), FetchError> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.chars().any(|c| c.is_control() || c == '\\')
        || name
            .trim_end_matches('/')
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        return Err(format!(
            "{name:?} is not a usable object name: relative, `/`-separated, without `.`, `..` or empty parts"
        )
        .into());
    }
    Ok(())
}

/// A directory as a [`Store`]: what `overseer publish` writes to, or a copy
/// of the bucket a fleet uses (a mounted volume, an `rsync` target).
#[derive(Debug, Clone)]
pub struct Directory {
    root: PathBuf,
}

impl Directory {
    /// The store rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Directory {
        Directory { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> Result<PathBuf, FetchError> {
        check_name(name)?;
        Ok(self.root.join(name))
    }
}

/// A file's tag: its size and modification time, to the nanosecond.
fn file_tag(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{}@{}.{:09}", meta.len(), meta.mtime(), meta.mtime_nsec())
}

impl Store for Directory {
    fn locate(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }

    fn read(&mut self, name: &str, limit: u64, tag: Option<&str>) -> Result<Object, FetchError> {
        let path = self.path(name)?;
        let what = path.display();
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Object::Missing),
            Err(e) => return Err(format!("{what}: {e}").into()),
        };
        // Not a FIFO or a device, whose open or read would never end.
        if !meta.is_file() {
            return Err(format!("{what}: not a regular file").into());
        }
        let found = file_tag(&meta);
        if tag == Some(found.as_str()) {
            return Ok(Object::Unchanged);
        }
        let file = std::fs::File::open(&path).map_err(|e| format!("{what}: {e}"))?;
        let mut bytes = Vec::new();
        file.take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{what}: {e}"))?;
        if bytes.len() as u64 > limit {
            return Err(format!("{what}: larger than {limit} bytes").into());
        }
        Ok(Object::Found {
            bytes,
            tag: Some(found),
        })
    }

    fn open(&mut self, name: &str) -> Result<Box<dyn Read + Send>, FetchError> {
        let path = self.path(name)?;
        let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{}: not a regular file", path.display()).into());
        }
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Box::new(file))
    }

    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), FetchError> {
        let path = self.path(name)?;
        let dir = path
            .parent()
            .ok_or_else(|| format!("{}: no directory", path.display()))?;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // A temporary file in the same directory, renamed over the name
        // once on disk: a reader sees the old object or the new one.
        let mut file = tempfile::Builder::new()
            .prefix(".overseer-")
            .tempfile_in(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.as_file().sync_all())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        // The mode a file gets by default (tempfile makes it 0600): others
        // read the store (a web server, a synchronising job).
        {
            use std::os::unix::fs::PermissionsExt;
            file.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        file.persist(&path)
            .map_err(|e| format!("{}: {}", path.display(), e.error))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<String>, FetchError> {
        let dir = self.path(prefix)?;
        let mut names = Vec::new();
        // Bounded: a store's tree is a few levels deep.
        let mut todo = vec![(dir, prefix.trim_end_matches('/').to_string(), 0)];
        while let Some((dir, name, depth)) = todo.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("{}: {e}", dir.display()).into()),
            };
            for entry in entries {
                let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
                let Ok(file) = entry.file_name().into_string() else {
                    continue;
                };
                if file.starts_with(".overseer-") {
                    continue;
                }
                let kind = entry
                    .file_type()
                    .map_err(|e| format!("{}: {e}", entry.path().display()))?;
                let child = format!("{name}/{file}");
                if kind.is_dir() && depth < 8 {
                    todo.push((entry.path(), child, depth + 1));
                } else if kind.is_file() {
                    names.push(child);
                }
            }
        }
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_reads_conditionally_writes_whole_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Directory::new(dir.path());
        assert_eq!(store.read("a/b.json", 10, None).unwrap(), Object::Missing);
        store.write("a/b.json", b"{}").unwrap();
        let Object::Found { bytes, tag } = store.read("a/b.json", 10, None).unwrap() else {
            panic!("not found");
        };
        assert_eq!(bytes, b"{}");
        assert_eq!(
            store.read("a/b.json", 10, tag.as_deref()).unwrap(),
            Object::Unchanged
        );
        store.write("a/c/d", b"0123456789ab").unwrap();
        let err = store.read("a/c/d", 10, None).unwrap_err();
        assert!(err.to_string().contains("larger than 10"), "{err}");
        assert_eq!(store.list("a/").unwrap(), ["a/b.json", "a/c/d"]);
        assert!(store.list("none/").unwrap().is_empty());
        let mut text = String::new();
        store
            .open("a/b.json")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "{}");
        for bad in ["../x", "/etc/passwd", "a//b", "a/./b", "", "a\\b"] {
            assert!(store.read(bad, 10, None).is_err(), "{bad}");
            assert!(store.write(bad, b"").is_err(), "{bad}");
        }
        // Nothing but the objects is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }
}
