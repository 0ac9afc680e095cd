//! Host reports: the small object a host writes beside the manifest when
//! its master starts (what it serves) and after each probation, and what a
//! publisher makes of them: per wave, the hosts expected, upgraded, rolled
//! back and silent, and whether the next wave may open.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::manifest::{Manifest, Release};
use super::wave::bucket;

/// Where reports live, beside the manifest.
pub const REPORTS: &str = "reports/";

/// The largest report read, in bytes (one is about 200).
pub const MAX_REPORT_SIZE: u64 = 4096;

/// How a probation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The release passed probation and serves.
    Kept,
    /// It failed probation and the previous binary serves again.
    RolledBack,
    /// The host serves the release: said when its master starts, so that a
    /// publisher knows every host before any probation.
    Serving,
}

/// What one host says of one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The host id (as the waves use it).
    pub host: String,
    /// The manifest's channel.
    pub channel: String,
    /// The release's version.
    pub version: String,
    /// How its probation ended.
    pub outcome: Outcome,
    /// Why it was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// Unix seconds.
    pub time: u64,
}

impl Report {
    /// Where this report goes: `reports/VERSION/HOST.json`, the host id
    /// kept when it is a plain name, else replaced by its SHA-256.
    pub fn name(&self) -> String {
        let plain = !self.host.is_empty()
            && self.host.len() <= 128
            && !self.host.starts_with('.')
            && self
                .host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        let host = if plain {
            self.host.clone()
        } else {
            use sha2::{Digest, Sha256};
            let digest = Sha256::digest(self.host.as_bytes());
            digest.iter().map(|b| format!("{b:02x}")).collect()
        };
        let version = match super::manifest::parse_version(&self.version) {
            Some(v) => v.to_string(),
            None => "unknown".to_string(),
        };
        format!("{REPORTS}{version}/{host}.json")
    }

    /// The report as written.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Reads a report, refusing one larger than [`MAX_REPORT_SIZE`].
    pub fn parse(bytes: &[u8]) -> Result<Report, String> {
        if bytes.len() as u64 > MAX_REPORT_SIZE {
            return Err(format!("larger than {MAX_REPORT_SIZE} bytes"));
        }
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// A release's rollout as the reports show it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tally {
    /// The wave in force (1 for the first; 0 before it) and how many.
    pub wave: (usize, usize),
    /// The share of hosts the wave gives the release.
    pub fraction: f64,
    /// How many hosts are known: any report of the channel.
    pub known: usize,
    /// The hosts known whose bucket is inside the fraction.
    pub expected: BTreeSet<String>,
    /// Hosts that kept the release, or serve it since they started.
    pub kept: BTreeSet<String>,
    /// Hosts that rolled it back, and why.
    pub rolled_back: BTreeMap<String, String>,
    /// Expected hosts with no report of it.
    pub silent: BTreeSet<String>,
}

/// What the reports say of `release` at `now`. Hosts are known from their
/// reports of any release of the channel; the last report of a host for
/// this release counts.
pub fn tally(manifest: &Manifest, release: &Release, reports: &[Report], now: u64) -> Tally {
    let version = release
        .semver()
        .map_or(release.version.clone(), |v| v.to_string());
    let fraction = release.fraction_at(now);
    let known: BTreeSet<&str> = reports
        .iter()
        .filter(|r| r.channel == manifest.channel)
        .map(|r| r.host.as_str())
        .collect();
    let known_count = known.len();
    let expected: BTreeSet<String> = known
        .into_iter()
        .filter(|h| release.critical || bucket(h, &manifest.channel, &version) < fraction)
        .map(str::to_string)
        .collect();
    let mut last: BTreeMap<&str, &Report> = BTreeMap::new();
    for r in reports.iter().filter(|r| {
        r.channel == manifest.channel
            && super::manifest::parse_version(&r.version).map(|v| v.to_string())
                == Some(version.clone())
    }) {
        if last.get(r.host.as_str()).is_none_or(|l| l.time <= r.time) {
            last.insert(&r.host, r);
        }
    }
    let mut tally = Tally {
        wave: release.wave_at(now),
        fraction,
        known: known_count,
        ..Tally::default()
    };
    for (host, r) in last {
        match r.outcome {
            Outcome::Kept | Outcome::Serving => {
                tally.kept.insert(host.to_string());
            }
            Outcome::RolledBack => {
                tally
                    .rolled_back
                    .insert(host.to_string(), r.why.clone().unwrap_or_default());
            }
        }
    }
    tally.silent = expected
        .iter()
        .filter(|h| !tally.kept.contains(*h) && !tally.rolled_back.contains_key(*h))
        .cloned()
        .collect();
    tally.expected = expected;
    tally
}

/// What `overseer rollout advance` does.
#[derive(Debug, Clone, PartialEq)]
pub enum Advance {
    /// The next wave opened now.
    Opened {
        /// Its number (1 for the first).
        wave: usize,
        /// Its share of hosts.
        fraction: f64,
    },
    /// Too many hosts rolled back: the rollout is halted.
    Halted {
        /// How many rolled back.
        rolled_back: usize,
    },
    /// Nothing changes: why.
    Stay(String),
}

/// Decides on `release` from its `tally` at `now`, and applies it: halts the
/// rollout when more than `max_rollbacks` hosts rolled back; otherwise, once
/// every expected host of the current wave has reported, opens the next
/// wave now (the later waves keep their spacing). With no host known at all
/// nothing opens: no report is not good news.
pub fn advance(release: &mut Release, tally: &Tally, max_rollbacks: usize, now: u64) -> Advance {
    if release.yanked {
        return Advance::Stay(format!("{} is withdrawn", release.version));
    }
    if release.halted.is_some() {
        return Advance::Stay(format!(
            "the rollout of {} is halted: `overseer rollout resume` first",
            release.version
        ));
    }
    if tally.rolled_back.len() > max_rollbacks {
        release.halt(now);
        return Advance::Halted {
            rolled_back: tally.rolled_back.len(),
        };
    }
    if tally.known == 0 {
        return Advance::Stay(
            "no host has reported in this channel: hosts say what they serve when their master starts with reports on (overseer run --fleet-reports)".into(),
        );
    }
    if !tally.silent.is_empty() {
        return Advance::Stay(format!(
            "{} of the {} hosts expected in wave {} have not reported yet",
            tally.silent.len(),
            tally.expected.len(),
            tally.wave.0
        ));
    }
    let Some(next) = release.rollout.iter().position(|w| w.start > now) else {
        return Advance::Stay(format!("every wave of {} is open", release.version));
    };
    let early = release.rollout[next].start - now;
    for w in &mut release.rollout[next..] {
        w.start -= early;
    }
    Advance::Opened {
        wave: next + 1,
        fraction: release.rollout[next].fraction,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::manifest::{tests::release, Wave, FORMAT};
    use super::*;

    fn report(host: &str, version: &str, outcome: Outcome, time: u64) -> Report {
        Report {
            host: host.into(),
            channel: "stable".into(),
            version: version.into(),
            outcome,
            why: (outcome == Outcome::RolledBack).then(|| "worker exited 3".into()),
            time,
        }
    }

    #[test]
    fn reports_cross_whole_and_hostile_host_ids_stay_one_name() {
        let r = report("host-1", "v1.2.0", Outcome::RolledBack, 5);
        assert_eq!(Report::parse(&r.to_bytes()).unwrap(), r);
        assert_eq!(r.name(), "reports/1.2.0/host-1.json");
        let odd = report("../../etc/x", "1.2.0", Outcome::Kept, 5);
        let name = odd.name();
        assert!(
            name.starts_with("reports/1.2.0/") && !name.contains(".."),
            "{name}"
        );
        assert_eq!(name.matches('/').count(), 2, "{name}");
        assert!(Report::parse(&vec![b' '; 5000]).is_err());
        assert!(Report::parse(b"{\"host\": 1}").is_err());
    }

    #[test]
    fn hosts_are_known_from_their_start_and_an_unknown_fleet_opens_nothing() {
        let hosts: Vec<String> = (0..40).map(|i| format!("host-{i}")).collect();
        let mut rel = release(
            "2.0.0",
            vec![
                Wave {
                    start: 100,
                    fraction: 0.25,
                },
                Wave {
                    start: 1000,
                    fraction: 1.0,
                },
            ],
        );
        let manifest = Manifest {
            format: FORMAT,
            channel: "stable".into(),
            serial: 1,
            expires: u64::MAX,
            releases: vec![rel.clone()],
        };
        // No report at all: nothing is known, and no report is no news.
        let t = tally(&manifest, &rel, &[], 200);
        assert_eq!((t.known, t.expected.len()), (0, 0));
        match advance(&mut rel.clone(), &t, 0, 200) {
            Advance::Stay(why) => assert!(why.contains("no host has reported"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Every host said it serves 1.0.0 when it started: the first wave's
        // hosts are expected, and silent until they report on 2.0.0. A host
        // that started on 2.0.0 counts as upgraded.
        let mut reports: Vec<Report> = hosts
            .iter()
            .map(|h| report(h, "1.0.0", Outcome::Serving, 1))
            .collect();
        let inside: Vec<&String> = hosts
            .iter()
            .filter(|h| bucket(h, "stable", "2.0.0") < 0.25)
            .collect();
        let t = tally(&manifest, &rel, &reports, 200);
        assert_eq!(t.known, hosts.len());
        assert_eq!(t.silent.len(), inside.len());
        assert!(matches!(
            advance(&mut rel.clone(), &t, 0, 200),
            Advance::Stay(_)
        ));
        reports.extend(
            inside
                .iter()
                .map(|h| report(h, "2.0.0", Outcome::Serving, 150)),
        );
        let t = tally(&manifest, &rel, &reports, 200);
        assert_eq!(t.kept.len(), inside.len());
        assert!(matches!(
            advance(&mut rel, &t, 0, 200),
            Advance::Opened { wave: 2, .. }
        ));
        let serving = report("host-1", "2.0.0", Outcome::Serving, 3);
        assert_eq!(Report::parse(&serving.to_bytes()).unwrap(), serving);
        assert!(String::from_utf8_lossy(&serving.to_bytes()).contains("\"serving\""));
    }

    #[test]
    fn a_wave_is_tallied_and_advanced_only_when_healthy() {
        let hosts: Vec<String> = (0..40).map(|i| format!("host-{i}")).collect();
        let mut rel = release(
            "2.0.0",
            vec![
                Wave {
                    start: 100,
                    fraction: 0.25,
                },
                Wave {
                    start: 1000,
                    fraction: 0.5,
                },
                Wave {
                    start: 2000,
                    fraction: 1.0,
                },
            ],
        );
        let manifest = Manifest {
            format: FORMAT,
            channel: "stable".into(),
            serial: 1,
            expires: u64::MAX,
            releases: vec![rel.clone()],
        };
        // Every host known from its report of 1.0.0.
        let mut reports: Vec<Report> = hosts
            .iter()
            .map(|h| report(h, "1.0.0", Outcome::Kept, 1))
            .collect();
        let inside: Vec<&String> = hosts
            .iter()
            .filter(|h| bucket(h, "stable", "2.0.0") < 0.25)
            .collect();
        assert!(!inside.is_empty());
        let t = tally(&manifest, &rel, &reports, 200);
        assert_eq!(t.wave, (1, 3));
        assert_eq!(t.expected.len(), inside.len());
        assert_eq!(t.silent.len(), inside.len());
        assert!(matches!(advance(&mut rel, &t, 0, 200), Advance::Stay(_)));

        // All report kept: the second wave opens now, the third as much earlier.
        reports.extend(
            inside
                .iter()
                .map(|h| report(h, "2.0.0", Outcome::Kept, 150)),
        );
        let t = tally(&manifest, &rel, &reports, 200);
        assert!(t.silent.is_empty() && t.kept.len() == inside.len());
        assert_eq!(
            advance(&mut rel, &t, 0, 200),
            Advance::Opened {
                wave: 2,
                fraction: 0.5
            }
        );
        assert_eq!((rel.rollout[1].start, rel.rollout[2].start), (200, 1200));

        // One rolls back in the second wave: over 0 allowed, halted.
        let second = hosts
            .iter()
            .find(|h| {
                let b = bucket(h, "stable", "2.0.0");
                (0.25..0.5).contains(&b)
            })
            .unwrap();
        reports.push(report(second, "2.0.0", Outcome::RolledBack, 250));
        let t = tally(&manifest, &rel, &reports, 300);
        assert_eq!(t.rolled_back.len(), 1);
        let mut tolerant = rel.clone();
        assert!(!matches!(
            advance(&mut tolerant, &t, 1, 300),
            Advance::Halted { .. }
        ));
        assert_eq!(
            advance(&mut rel, &t, 0, 300),
            Advance::Halted { rolled_back: 1 }
        );
        assert_eq!(rel.halted, Some(300));
        assert!(matches!(advance(&mut rel, &t, 0, 400), Advance::Stay(_)));
    }
}
