//! Which release a host takes, and when: its sticky bucket for a release,
//! against the release's waves.

use sha2::{Digest, Sha256};

use super::manifest::{parse_version, Manifest, Release};

/// Where `host` falls, in [0, 1), for `version` of `channel`: the first 8
/// bytes of a SHA-256 over the three, as a fraction. The same host and
/// release always give the same bucket, so a growing fraction keeps the
/// hosts it had; another release gives an independent one, so the first
/// wave is not always the same hosts.
pub fn bucket(host: &str, channel: &str, version: &str) -> f64 {
    let mut hash = Sha256::new();
    for part in ["overseer-rollout", host, channel, version] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits: every value exactly representable, and below 1.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// What a host does with a manifest.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice<'m> {
    /// Install `release`.
    Take {
        /// The release to install.
        release: &'m Release,
        /// Why now: `critical`, `in wave (bucket 0.04 < 0.10)`, or
        /// `1.4.0 was withdrawn`.
        why: String,
        /// An older version than the one running: allowed only because the
        /// running one was withdrawn in the signed manifest.
        downgrade: bool,
    },
    /// A newer release exists that this host does not take yet.
    Wait {
        /// The newest release this host will take once its wave comes.
        release: &'m Release,
        /// Why not yet: the rollout has not started, or the host's bucket is
        /// outside the current wave.
        why: String,
    },
    /// Nothing newer for this host.
    UpToDate,
}

/// What the host `host`, running `current` (if known) on `target`, does
/// with `manifest` at `now` (Unix seconds). The manifest must have passed
/// [`Manifest::check`].
pub fn choose<'m>(
    manifest: &'m Manifest,
    current: Option<&str>,
    target: &str,
    host: &str,
    now: u64,
) -> Choice<'m> {
    let current_version = current.and_then(parse_version);
    let mut candidates: Vec<(semver::Version, &Release)> = manifest
        .releases
        .iter()
        .filter(|r| !r.yanked && r.artifacts.contains_key(target))
        .filter_map(|r| Some((r.semver()?, r)))
        .collect();
    candidates.sort_by(|a, b| a.0.cmp(&b.0));
    // A withdrawn running version: the newest release not withdrawn, now,
    // whatever the waves say and even if older.
    let yanked = manifest
        .releases
        .iter()
        .any(|r| r.yanked && r.semver().is_some() && r.semver() == current_version);
    if yanked {
        let current = current.unwrap_or_default();
        return match candidates.last() {
            Some((version, release)) => Choice::Take {
                release,
                why: format!("{current} was withdrawn"),
                downgrade: current_version.as_ref().is_some_and(|c| version < c),
            },
            None => Choice::UpToDate,
        };
    }
    let newer = |v: &semver::Version| current_version.as_ref().is_none_or(|c| v > c);
    // The newest newer release this host may take: critical ones at once,
    // others when the host's bucket is inside their current wave.
    let mut waiting = None;
    for (version, release) in candidates.iter().rev().filter(|(v, _)| newer(v)) {
        if release.critical {
            return Choice::Take {
                release,
                why: "critical".into(),
                downgrade: false,
            };
        }
        let fraction = release.fraction_at(now);
        let b = bucket(host, &manifest.channel, &version.to_string());
        if b < fraction {
            return Choice::Take {
                release,
                why: format!("in its wave (bucket {b:.4} < {fraction})"),
                downgrade: false,
            };
        }
        waiting.get_or_insert(Choice::Wait {
            release,
            why: if fraction == 0.0 {
                "its rollout has not started".to_string()
            } else {
                format!("not in its wave yet (bucket {b:.4} ≥ {fraction})")
            },
        });
    }
    waiting.unwrap_or(Choice::UpToDate)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::manifest::tests::release;
    use super::super::manifest::{Wave, FORMAT};
    use super::*;

    const TARGET: &str = "x86_64-unknown-linux-gnu";

    fn manifest(releases: Vec<Release>) -> Manifest {
        Manifest {
            format: FORMAT,
            channel: "stable".into(),
            serial: 1,
            expires: u64::MAX,
            releases,
        }
    }

    fn hosts() -> Vec<String> {
        (0..10_000).map(|i| format!("host-{i:05}")).collect()
    }

    #[test]
    fn buckets_follow_the_plan_within_1_5_percent_at_every_step_and_stick() {
        let hosts = hosts();
        let mut chosen_before: Vec<bool> = vec![false; hosts.len()];
        for fraction in [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0] {
            let chosen: Vec<bool> = hosts
                .iter()
                .map(|h| bucket(h, "stable", "1.5.0") < fraction)
                .collect();
            let share = chosen.iter().filter(|&&c| c).count() as f64 / hosts.len() as f64;
            assert!((share - fraction).abs() <= 0.015, "{fraction}: {share}");
            // A host chosen at a smaller fraction stays chosen.
            for (before, now) in chosen_before.iter().zip(&chosen) {
                assert!(!before || *now);
            }
            chosen_before = chosen;
        }
        assert!(hosts.iter().all(|h| bucket(h, "stable", "1.5.0") < 1.0));
    }

    #[test]
    fn another_release_or_channel_picks_other_first_hosts() {
        let hosts = hosts();
        let first = |channel: &str, version: &str| -> Vec<bool> {
            hosts
                .iter()
                .map(|h| bucket(h, channel, version) < 0.1)
                .collect()
        };
        let a = first("stable", "1.5.0");
        for other in [first("stable", "1.6.0"), first("beta", "1.5.0")] {
            let both = a.iter().zip(&other).filter(|(x, y)| **x && **y).count() as f64;
            // Independent: about 10 % of the first wave is in the other's too.
            let overlap = both / a.iter().filter(|&&x| x).count() as f64;
            assert!((overlap - 0.1).abs() < 0.04, "{overlap}");
        }
    }

    #[test]
    fn a_host_takes_a_release_once_its_wave_reaches_its_bucket() {
        let m = manifest(vec![
            release("1.4.0", vec![]),
            release(
                "1.5.0",
                vec![
                    Wave {
                        start: 100,
                        fraction: 0.25,
                    },
                    Wave {
                        start: 200,
                        fraction: 1.0,
                    },
                ],
            ),
        ]);
        let hosts = hosts();
        let takes = |now| {
            hosts
                .iter()
                .filter(|h| {
                    matches!(
                        choose(&m, Some("1.4.0"), TARGET, h, now),
                        Choice::Take { .. }
                    )
                })
                .count()
        };
        assert_eq!(takes(99), 0);
        let wave1 = takes(150);
        assert!((wave1 as f64 / 10_000.0 - 0.25).abs() <= 0.015, "{wave1}");
        assert_eq!(takes(200), 10_000);
        match choose(&m, Some("1.4.0"), TARGET, "host-00001", 50) {
            Choice::Wait { release, why } => {
                assert_eq!(release.version, "1.5.0");
                assert!(why.contains("not started"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            choose(&m, Some("1.5.0"), TARGET, "host-00001", 300),
            Choice::UpToDate
        );
    }

    #[test]
    fn critical_skips_the_waves_and_yanked_moves_hosts_back() {
        let mut critical = release(
            "1.6.0",
            vec![Wave {
                start: 1_000,
                fraction: 0.01,
            }],
        );
        critical.critical = true;
        let m = manifest(vec![release("1.4.0", vec![]), critical]);
        assert!(matches!(
            choose(&m, Some("1.4.0"), TARGET, "any", 0),
            Choice::Take { release, downgrade: false, .. } if release.version == "1.6.0"
        ));

        let mut bad = release("1.5.0", vec![]);
        bad.yanked = true;
        let m = manifest(vec![release("1.4.0", vec![]), bad]);
        match choose(&m, Some("1.5.0"), TARGET, "any", 0) {
            Choice::Take {
                release,
                why,
                downgrade,
            } => {
                assert_eq!(release.version, "1.4.0");
                assert!(downgrade);
                assert!(why.contains("withdrawn"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // Nobody on 1.4.0 takes the withdrawn 1.5.0.
        assert_eq!(
            choose(&m, Some("1.4.0"), TARGET, "any", 0),
            Choice::UpToDate
        );
        // Another target's artifacts are not this host's.
        assert_eq!(
            choose(&m, None, "aarch64-apple-darwin", "any", 0),
            Choice::UpToDate
        );
    }
}
