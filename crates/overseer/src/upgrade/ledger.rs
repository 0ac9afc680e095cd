//! What the master remembers about releases across restarts: the highest
//! signed version seen (so an older signed build cannot be replayed after a
//! restart), the hashes of releases that failed (so they are not tried
//! again), and which release at the source the installed binary came from
//! (so a restarted master does not download it again to recognise it).
//! Kept in a small text file beside the binary, replaced atomically.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use super::swap::{self, Target};

#[derive(Debug, Default)]
pub(crate) struct Ledger {
    path: PathBuf,
    tmp: PathBuf,
    dir: PathBuf,
    pub highest: Option<semver::Version>,
    pub bad: BTreeSet<String>,
    /// The installed binary's SHA-256 and the source's tag (`Release::tag`)
    /// of the release it came from or was found identical to.
    pub installed: Option<(String, String)>,
}

impl Ledger {
    /// Loads the ledger for `target` (empty when there is none yet; lines it
    /// cannot read are ignored).
    pub fn load(target: &Target) -> Ledger {
        let mut ledger = Ledger {
            path: target.state_path(),
            tmp: target.tmp_path("state"),
            dir: target.dir.clone(),
            ..Ledger::default()
        };
        if let Ok(text) = fs::read_to_string(&ledger.path) {
            for line in text.lines() {
                match line.split_once(' ') {
                    Some(("highest-version", v)) => {
                        ledger.highest = super::verify::parse_version(v)
                    }
                    Some(("bad", h)) => {
                        ledger.bad.insert(h.trim().to_string());
                    }
                    Some(("installed", entry)) => {
                        if let Some((sha, tag)) = entry.split_once(' ') {
                            if !tag.is_empty() {
                                ledger.installed = Some((sha.to_string(), tag.to_string()));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        ledger
    }

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

    /// Writes the ledger durably (write, fsync, rename, fsync the directory).
    pub fn save(&self) -> io::Result<()> {
        let mut text = String::from(
            "# overseer's memory of releases; deleting it forgets rejected releases\n\
             # and the highest signed version seen\n",
        );
        if let Some(v) = &self.highest {
            text.push_str(&format!("highest-version {v}\n"));
        }
        for h in &self.bad {
            text.push_str(&format!("bad {h}\n"));
        }
        if let Some((sha, tag)) = &self.installed {
            text.push_str(&format!("installed {sha} {tag}\n"));
        }
        let mut f = fs::File::create(&self.tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&self.tmp, &self.path)?;
        swap::sync_dir(&self.dir)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A binary `app` in `dir`, as the upgrade target.
    fn binary_in(dir: &std::path::Path) -> Target {
        let bin = dir.join("app");
        fs::write(&bin, b"binary").unwrap();
        Target::resolve(&bin).unwrap()
    }

    #[test]
    fn what_is_saved_is_loaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let target = binary_in(dir.path());
        let mut ledger = Ledger::load(&target);
        assert!(ledger.highest.is_none() && ledger.bad.is_empty() && ledger.installed.is_none());
        ledger.saw(&semver::Version::new(1, 2, 3));
        ledger.bad.insert("ab12".into());
        // A Last-Modified date as the tag: spaces included.
        let tag = "Sun, 22 Nov 2026 10:00:00 GMT".to_string();
        ledger.installed = Some(("cd34".into(), tag.clone()));
        ledger.save().unwrap();

        let again = Ledger::load(&target);
        assert_eq!(again.highest, Some(semver::Version::new(1, 2, 3)));
        assert_eq!(again.bad.iter().collect::<Vec<_>>(), ["ab12"]);
        assert_eq!(again.installed, Some(("cd34".to_string(), tag)));
    }

    #[test]
    fn lines_it_cannot_read_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let target = binary_in(dir.path());
        fs::write(
            target.state_path(),
            "installed cd34\nhighest-version x\nsomething else\nbad ef56\n",
        )
        .unwrap();
        let ledger = Ledger::load(&target);
        assert!(ledger.installed.is_none());
        assert!(ledger.highest.is_none());
        assert_eq!(ledger.bad.iter().collect::<Vec<_>>(), ["ef56"]);
    }
}
