//! What the master remembers about releases across restarts: the highest
//! signed version seen (so an older signed build cannot be replayed after a
//! restart) and the hashes of releases that failed (so they are not tried
//! again). Kept in a small text file beside the binary, replaced atomically.

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
                    _ => {}
                }
            }
        }
        ledger
    }

    /// Raises the highest version seen.
    pub fn saw(&mut self, version: &semver::Version) {
        if self.highest.as_ref().is_none_or(|h| version > h) {
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
        let mut f = fs::File::create(&self.tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&self.tmp, &self.path)?;
        swap::sync_dir(&self.dir)
    }
}
