//! What the master remembers about releases across restarts: the highest
//! signed version seen (so an older signed build cannot be replayed after a
//! restart), the hashes of releases that failed (so they are not tried
//! again), and which release at the source the installed binary came from
//! (so a restarted master does not download it again to recognise it).
//! Kept in a small text file beside the binary, `.NAME.overseer-state`:
//!
//! ```text
//! highest-version 3.0.0
//! bad 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! installed 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae "g42-1234"
//! floor-resets 1
//! manifest-serial 42
//! ```
//!
//! A ledger that exists but cannot be read or parsed is an error, never an
//! empty ledger: forgetting it would forget the floor that refuses older
//! signed releases. Every line must be one of these (or a `#` comment, or
//! blank), each at most once except `bad`.
//!
//! The file is replaced whole, never edited in place: a write takes the
//! ledger's lock (see `lock.rs`), reads the file again, applies its change
//! to what it read, writes a uniquely named temporary file in the same
//! directory, `fsync`s it, renames it over the ledger and `fsync`s the
//! directory. A reader sees the old file or the new one, and two writers
//! (the master, an operator resetting the floor) never lose an update.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::lock;
use super::swap::{self, Target};

/// A ledger larger than this is not one overseer wrote.
const MAX_SIZE: u64 = 1 << 20;

/// What the ledger says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Entries {
    /// The highest signed version seen: the floor for signed releases.
    pub highest: Option<semver::Version>,
    /// SHA-256s of releases that failed (rolled back).
    pub bad: BTreeSet<String>,
    /// The installed binary's SHA-256 and the source's tag (`Release::tag`)
    /// of the release it came from or was found identical to.
    pub installed: Option<(String, String)>,
    /// How many times the floor was reset by hand (`overseer ledger
    /// reset-floor`, `overseer::ledger::reset_floor`): a running master that
    /// sees it change lowers the installed version it remembers as well.
    pub floor_resets: u64,
    /// The highest serial of a fleet manifest accepted (`fetcher::Fleet`):
    /// an older manifest replayed after a restart is refused.
    pub serial: Option<u64>,
}

impl Entries {
    /// Raises the highest version seen.
    pub fn saw(&mut self, version: &semver::Version) {
        // Precedence, as the pipeline compares: build metadata does not count.
        if self
            .highest
            .as_ref()
            .is_none_or(|h| version.cmp_precedence(h).is_gt())
        {
            self.highest = Some(version.clone());
        }
    }
}

/// The ledger file of one binary.
#[derive(Debug, Clone)]
pub(crate) struct LedgerFile {
    pub path: PathBuf,
    lock_path: PathBuf,
    dir: PathBuf,
    name: String,
    binary: PathBuf,
}

/// Why the ledger cannot be used.
#[derive(Debug)]
pub(crate) enum LedgerError {
    /// It exists but cannot be read, or is not a ledger.
    Unreadable { path: PathBuf, reason: String },
    /// It cannot be locked or written.
    Write { path: PathBuf, error: io::Error },
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerError::Unreadable { path, reason } => {
                write!(f, "the ledger {} cannot be read: {reason}", path.display())
            }
            LedgerError::Write { path, error } => {
                write!(f, "cannot write the ledger {}: {error}", path.display())
            }
        }
    }
}

impl LedgerFile {
    /// The ledger of `target`.
    pub fn of(target: &Target) -> LedgerFile {
        LedgerFile {
            path: target.state_path(),
            lock_path: target.state_lock_path(),
            dir: target.dir.clone(),
            name: target.name.clone(),
            binary: target.path.clone(),
        }
    }

    /// Reads the ledger: empty when there is none yet, an error when it
    /// exists but cannot be read or parsed.
    pub fn read(&self) -> Result<Entries, LedgerError> {
        let unreadable = |reason: String| LedgerError::Unreadable {
            path: self.path.clone(),
            reason,
        };
        // Non-blocking: a FIFO put in its place must not hang the master.
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&self.path);
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Entries::default()),
            Err(e) => return Err(unreadable(e.to_string())),
        };
        let meta = file.metadata().map_err(|e| unreadable(e.to_string()))?;
        if !meta.is_file() {
            return Err(unreadable("not a regular file".into()));
        }
        if meta.len() > MAX_SIZE {
            return Err(unreadable(format!(
                "{} bytes, more than a ledger ever holds",
                meta.len()
            )));
        }
        let mut bytes = Vec::new();
        file.take(MAX_SIZE)
            .read_to_end(&mut bytes)
            .map_err(|e| unreadable(e.to_string()))?;
        parse(&bytes).map_err(unreadable)
    }

    /// Under the ledger's lock: reads it again, applies `change` to what it
    /// holds now, and writes the result (only when it changed). Returns the
    /// ledger as written. An unreadable ledger is left as it is.
    pub fn update(&self, change: impl FnOnce(&mut Entries)) -> Result<Entries, LedgerError> {
        let _lock = self.lock()?;
        let before = self.read()?;
        let mut after = before.clone();
        change(&mut after);
        if after != before {
            self.write(&after).map_err(|error| LedgerError::Write {
                path: self.path.clone(),
                error,
            })?;
        }
        Ok(after)
    }

    /// Takes the ledger's lock (a bounded wait); dropping the file releases it.
    pub fn lock(&self) -> Result<File, LedgerError> {
        lock::ledger_lock(&self.lock_path, self.owner_like()).map_err(|error| LedgerError::Write {
            path: self.path.clone(),
            error,
        })
    }

    /// The file whose owner new files beside the binary take (when root
    /// makes them): the ledger, else the binary.
    fn owner_like(&self) -> &Path {
        if self.path.exists() {
            &self.path
        } else {
            &self.binary
        }
    }

    /// Replaces the ledger durably: a unique temporary file, `fsync`,
    /// rename, `fsync` the directory. The new file keeps the old one's mode
    /// (and owner, when root writes it); a first one is 0644.
    fn write(&self, entries: &Entries) -> io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.state.", self.name))
            .suffix(".overseer-tmp")
            .rand_bytes(swap::TMP_RANDOM)
            .tempfile_in(&self.dir)?;
        tmp.write_all(render(entries).as_bytes())?;
        let mode = fs::metadata(&self.path)
            .map(|m| m.mode() & 0o777)
            .unwrap_or(0o644);
        lock::give_owner_of(tmp.as_file(), self.owner_like())?;
        tmp.as_file()
            .set_permissions(Permissions::from_mode(mode))?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        swap::sync_dir(&self.dir)
    }
}

/// Whether `s` is a SHA-256 as the ledger writes it: 64 lowercase hex digits.
fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parses a ledger; the error names the first line that is not right.
fn parse(bytes: &[u8]) -> Result<Entries, String> {
    let mut entries = Entries::default();
    let (mut highest, mut installed, mut resets, mut serial) = (false, false, false, false);
    let once = |seen: &mut bool, n: usize, key: &str| {
        if std::mem::replace(seen, true) {
            Err(format!("line {n}: a second {key} line"))
        } else {
            Ok(())
        }
    };
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let n = i + 1;
        let line = std::str::from_utf8(line).map_err(|_| format!("line {n}: not valid UTF-8"))?;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(' ') else {
            return Err(format!("line {n}: {line:?} is not an entry (KEY VALUE)"));
        };
        match key {
            "highest-version" => {
                once(&mut highest, n, key)?;
                let v = super::verify::parse_version(value).ok_or_else(|| {
                    format!("line {n}: highest-version {value:?} is not a version")
                })?;
                entries.highest = Some(v);
            }
            "bad" => {
                if !is_sha256(value) {
                    return Err(format!(
                        "line {n}: bad {value:?} is not a SHA-256 (64 lowercase hex digits)"
                    ));
                }
                entries.bad.insert(value.to_string());
            }
            "installed" => {
                once(&mut installed, n, key)?;
                match value.split_once(' ') {
                    Some((sha, tag)) if is_sha256(sha) && !tag.is_empty() => {
                        entries.installed = Some((sha.to_string(), tag.to_string()));
                    }
                    _ => {
                        return Err(format!(
                            "line {n}: installed {value:?} is not a SHA-256 and a tag"
                        ))
                    }
                }
            }
            "floor-resets" => {
                once(&mut resets, n, key)?;
                entries.floor_resets = value
                    .parse()
                    .map_err(|_| format!("line {n}: floor-resets {value:?} is not a count"))?;
            }
            "manifest-serial" => {
                once(&mut serial, n, key)?;
                entries.serial = Some(value.parse().map_err(|_| {
                    format!("line {n}: manifest-serial {value:?} is not a serial number")
                })?);
            }
            _ => return Err(format!("line {n}: unknown entry {key:?}")),
        }
    }
    Ok(entries)
}

fn render(entries: &Entries) -> String {
    let mut text = String::from(
        "# overseer's memory of releases; deleting it forgets rejected releases\n\
         # and the highest signed version seen (see `overseer ledger`)\n",
    );
    if let Some(v) = &entries.highest {
        text.push_str(&format!("highest-version {v}\n"));
    }
    for h in &entries.bad {
        text.push_str(&format!("bad {h}\n"));
    }
    if let Some((sha, tag)) = &entries.installed {
        text.push_str(&format!("installed {sha} {tag}\n"));
    }
    if entries.floor_resets > 0 {
        text.push_str(&format!("floor-resets {}\n", entries.floor_resets));
    }
    if let Some(serial) = entries.serial {
        text.push_str(&format!("manifest-serial {serial}\n"));
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SHA_A: &str = "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12";
    const SHA_B: &str = "cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34";

    /// A binary `app` in `dir`, as the upgrade target.
    fn binary_in(dir: &std::path::Path) -> Target {
        let bin = dir.join("app");
        fs::write(&bin, b"binary").unwrap();
        Target::resolve(&bin).unwrap()
    }

    #[test]
    fn what_is_written_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let target = binary_in(dir.path());
        let ledger = LedgerFile::of(&target);
        assert_eq!(ledger.read().unwrap(), Entries::default());
        // A Last-Modified date as the tag: spaces included.
        let tag = "Sun, 22 Nov 2026 10:00:00 GMT".to_string();
        let written = ledger
            .update(|e| {
                e.saw(&semver::Version::new(1, 2, 3));
                e.bad.insert(SHA_A.into());
                e.installed = Some((SHA_B.into(), tag.clone()));
                e.floor_resets = 2;
                e.serial = Some(u64::MAX);
            })
            .unwrap();

        let again = ledger.read().unwrap();
        assert_eq!(again, written);
        assert_eq!(again.highest, Some(semver::Version::new(1, 2, 3)));
        assert_eq!(again.bad.iter().collect::<Vec<_>>(), [SHA_A]);
        assert_eq!(again.installed, Some((SHA_B.to_string(), tag)));
        assert_eq!(again.floor_resets, 2);
        assert_eq!(again.serial, Some(u64::MAX));
        let mode = fs::metadata(&ledger.path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o644);
        // Nothing but the ledger and its lock is left beside the binary.
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [".app.overseer-state", ".app.overseer-state-lock", "app"]
        );
    }

    #[test]
    fn every_line_that_is_not_right_is_refused_with_its_number() {
        let good = format!("# a comment\n\nhighest-version 1.0.0\nbad {SHA_A}\n");
        assert!(parse(good.as_bytes()).is_ok());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"# caf\xe9\n".to_vec(), "line 1: not valid UTF-8"),
            (
                format!("{good}nonsense\n").into_bytes(),
                "line 5: \"nonsense\" is not an entry",
            ),
            (
                format!("{good}something else\n").into_bytes(),
                "line 5: unknown entry \"something\"",
            ),
            (
                format!("{good}highest-version x\n").into_bytes(),
                "line 5: a second highest-version line",
            ),
            (
                b"highest-version x\n".to_vec(),
                "line 1: highest-version \"x\" is not a version",
            ),
            (
                b"highest-version \n".to_vec(),
                "line 1: highest-version \"\" is not a version",
            ),
            (
                format!("{good}bad ef56\n").into_bytes(),
                "line 5: bad \"ef56\" is not a SHA-256",
            ),
            (
                format!("bad {}\n", SHA_A.to_uppercase()).into_bytes(),
                "line 1: bad",
            ),
            (format!("bad {SHA_A} x\n").into_bytes(), "line 1: bad"),
            (
                b"installed cd34\n".to_vec(),
                "line 1: installed \"cd34\" is not a SHA-256 and a tag",
            ),
            (
                format!("installed {SHA_B}\n").into_bytes(),
                "line 1: installed",
            ),
            (
                format!("installed {SHA_B} \n").into_bytes(),
                "line 1: installed",
            ),
            (
                format!("installed nothex {SHA_B}\n").into_bytes(),
                "line 1: installed",
            ),
            (
                format!("installed {SHA_B} a\ninstalled {SHA_B} b\n").into_bytes(),
                "line 2: a second installed line",
            ),
            (
                b"floor-resets -1\n".to_vec(),
                "line 1: floor-resets \"-1\" is not a count",
            ),
            (
                b"floor-resets 1\nfloor-resets 2\n".to_vec(),
                "line 2: a second floor-resets line",
            ),
        ];
        for (text, expected) in cases {
            let got = parse(&text).expect_err(&String::from_utf8_lossy(&text));
            assert!(
                got.starts_with(expected),
                "{got:?} for {:?}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    #[test]
    fn a_ledger_that_cannot_be_read_is_an_error_and_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let target = binary_in(dir.path());
        let ledger = LedgerFile::of(&target);
        let spoilt = b"highest-version 3.0.0\n# caf\xe9\n";
        fs::write(&ledger.path, spoilt).unwrap();
        let e = ledger.read().unwrap_err().to_string();
        assert!(e.contains("cannot be read: line 2: not valid UTF-8"), "{e}");
        let e = ledger.update(|e| {
            e.bad.insert(SHA_A.into());
        });
        assert!(e.is_err());
        assert_eq!(fs::read(&ledger.path).unwrap(), spoilt);

        fs::remove_file(&ledger.path).unwrap();
        nix::unistd::mkfifo(&ledger.path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = ledger.read().unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn writers_in_turn_keep_each_others_updates() {
        let dir = tempfile::tempdir().unwrap();
        let target = binary_in(dir.path());
        let (a, b) = (LedgerFile::of(&target), LedgerFile::of(&target));
        let threads: Vec<_> = [(a, SHA_A), (b, SHA_B)]
            .into_iter()
            .map(|(ledger, sha)| {
                std::thread::spawn(move || {
                    for i in 0..20u64 {
                        ledger
                            .update(|e| {
                                e.bad.insert(format!("{}{:02}", &sha[..62], i));
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(LedgerFile::of(&target).read().unwrap().bad.len(), 40);
    }
}
