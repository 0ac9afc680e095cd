//! What a master carries across its re-exec (docs/design.md, "The master
//! re-executes itself"): everything the new image needs to go on as if
//! nothing happened, as data only.
//!
//! The state travels as JSON in an unlinked file the new image inherits;
//! its descriptors (sockets, the runtime directory's lock, the control
//! socket, the workers' notify sockets) are inherited too, by number. The
//! first field is the format's [`VERSION`]: a build reads only the versions
//! it knows ([`readable`]) and refuses any other before it changes
//! anything, and a build's check mode says which it reads, so the old image
//! never executes one that cannot read its state.
//!
//! Times cannot cross as `Instant`s: each is carried as milliseconds
//! relative to [`Carried::at_ns`], a reading of the system's monotonic
//! clock, which is the same clock on both sides of `execve`.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The newest format this build writes: format 2 is format 1 and the
/// steering of connections ([`SteeringState`]). A state without steering is
/// written as format 1, so a build that reads only that can still take it.
pub(crate) const VERSION: u32 = 2;

/// The formats this build reads.
pub(crate) fn readable(version: u32) -> bool {
    version == 1 || version == 2
}

/// The largest state file read: a few kilobytes in practice.
const MAX_SIZE: u64 = 16 * 1024 * 1024;

/// The master's whole state at the moment of a re-exec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Carried {
    /// [`VERSION`] when written.
    pub version: u32,
    /// The monotonic clock (ns) when the state was gathered.
    pub at_ns: u64,
    /// The executable the master was first started from, found there again
    /// at each re-exec (its path, not the file that runs: a new build
    /// installed there is what a re-exec runs).
    pub master_exe: OsString,
    /// The master's command line, as first started.
    pub argv: Vec<OsString>,
    /// The signals blocked before the master blocked its own: what workers
    /// start with.
    pub program_mask: Vec<i32>,
    pub sockets: Vec<SocketState>,
    pub run_dir: RunDirState,
    pub control: Option<ControlState>,
    pub handover: HandoverState,
    pub probation: Option<ProbationState>,
    pub outcomes: OutcomesState,
    pub systemd: SystemdState,
    /// The version of the binary workers start from, if known.
    pub version_label: Option<String>,
    /// The control client that asked for this re-exec, waiting for its
    /// answer.
    pub client_fd: Option<RawFd>,
    /// What asked for the re-exec, for the log.
    pub source: String,
    /// The steered addresses' sockets and which worker accepts on which
    /// (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steering: Option<SteeringState>,
    /// What the old image's configuration was built from
    /// ([`Config::config_text`](crate::Config::config_text)), for that
    /// image run again after a failed take-over. Builds that do not know
    /// the field ignore it: it needs no new format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_text: Option<String>,
}

/// Connection steering: per steered address, its group's sockets of slot 1
/// and up (slot 0 is the address's socket in [`Carried::sockets`]), and the
/// slot of each live worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SteeringState {
    pub groups: Vec<GroupState>,
    /// How many slots exist.
    pub slots: usize,
    /// `(worker number, slot)`.
    pub users: Vec<(u64, usize)>,
}

/// One steered address's sockets beyond slot 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct GroupState {
    /// As configured, as in [`SocketState::address`].
    pub address: String,
    /// Slot 1's socket, slot 2's, …
    pub fds: Vec<RawFd>,
}

/// A listening socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SocketState {
    pub name: String,
    /// As configured (`127.0.0.1:8080`, `unix:/run/app.sock`).
    pub address: String,
    /// The socket file this master created, removed when it ends.
    pub unix_path: Option<String>,
    pub fd: RawFd,
    /// No longer configured: kept until the workers started with it are
    /// gone, then closed.
    pub retired: bool,
}

/// The private runtime directory and its lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunDirState {
    pub path: OsString,
    pub lock_fd: Option<RawFd>,
}

/// The control socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ControlState {
    /// As configured.
    pub path: OsString,
    pub listener_fd: RawFd,
    /// The verified directory the socket file is in, and the file's name.
    pub dir_fd: RawFd,
    pub name: String,
}

/// The handover: the workers and what is queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct HandoverState {
    pub next_number: u64,
    pub restart_queued: bool,
    /// How the master ends, as far as known: `exit N` or `signal N`.
    pub outcome: Option<OutcomeState>,
    pub serving: Option<WorkerState>,
    pub starting: Option<WorkerState>,
    pub draining: Vec<WorkerState>,
}

/// How the master will end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum OutcomeState {
    Exit(i32),
    Signal(i32),
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PhaseState {
    Starting,
    Serving,
    Draining,
}

/// One worker. Times are in milliseconds relative to [`Carried::at_ns`]:
/// `_ago` in the past, `_in` in the future (negative once passed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WorkerState {
    pub number: u64,
    pub pid: i32,
    pub phase: PhaseState,
    pub started_ago_ms: u64,
    pub ready_deadline_in_ms: i64,
    pub kill_deadline_in_ms: Option<i64>,
    pub killed: Option<String>,
    pub stop_signalled_ago_ms: Option<u64>,
    /// The master's end of its notify socket.
    pub notify_fd: Option<RawFd>,
}

/// A release on probation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ProbationState {
    /// The binary path it was installed at.
    pub path: OsString,
    pub sha256: String,
    pub version: Option<String>,
    pub tag: Option<String>,
    /// The worker started from it.
    pub worker: u64,
    pub period_ms: u64,
    /// When its worker became ready, if it did.
    pub ready_ago_ms: Option<u64>,
}

/// The history control clients see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OutcomesState {
    pub uptime_ms: u64,
    pub handovers: u64,
    pub failed_handovers: u64,
    /// `(ms ago, what)`.
    pub last_handover: Option<(u64, String)>,
    pub last_upgrade: Option<(u64, String)>,
    pub reexecs: u64,
    pub failed_reexecs: u64,
    pub last_reexec: Option<(u64, String)>,
}

/// What the service manager was told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SystemdState {
    pub ready_sent: bool,
    pub serving: Option<u64>,
}

/// Only the version, read first: a state of another format is refused by
/// its number, not by whatever field it lacks.
#[derive(Deserialize)]
struct Header {
    version: u32,
}

impl Carried {
    /// Milliseconds from `at_ns` to `now_ns` (the time the re-exec took).
    pub fn gap_ms(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.at_ns) / 1_000_000
    }

    /// Writes the state to a new unlinked file, rewound for the reader.
    pub fn to_file(&self) -> std::io::Result<File> {
        let mut file = tempfile::tempfile()?;
        serde_json::to_writer(&mut file, self)?;
        file.flush()?;
        file.seek(SeekFrom::Start(0))?;
        Ok(file)
    }

    /// Reads a state from `file` (from its start): refused, with the
    /// reason, when it is not a format this build reads.
    pub fn from_file(file: &mut File) -> Result<Carried, String> {
        file.seek(SeekFrom::Start(0))
            .map_err(|e| format!("cannot read the state: {e}"))?;
        let mut text = Vec::new();
        file.take(MAX_SIZE + 1)
            .read_to_end(&mut text)
            .map_err(|e| format!("cannot read the state: {e}"))?;
        Self::parse(&text)
    }

    /// Parses a state: its version first.
    pub fn parse(text: &[u8]) -> Result<Carried, String> {
        if text.len() as u64 > MAX_SIZE {
            return Err(format!("the state is larger than {MAX_SIZE} bytes"));
        }
        let header: Header = serde_json::from_slice(text)
            .map_err(|e| format!("the state has no readable version: {e}"))?;
        if !readable(header.version) {
            return Err(format!(
                "the state is of format {}, this build reads formats 1 and {VERSION}",
                header.version
            ));
        }
        serde_json::from_slice(text).map_err(|e| format!("the state is malformed: {e}"))
    }

    /// Every descriptor the state names, for the new image to keep open.
    pub fn descriptors(&self) -> Vec<RawFd> {
        let h = &self.handover;
        let workers = h.serving.iter().chain(&h.starting).chain(&h.draining);
        self.sockets
            .iter()
            .map(|s| s.fd)
            .chain(self.run_dir.lock_fd)
            .chain(self.control.iter().flat_map(|c| [c.listener_fd, c.dir_fd]))
            .chain(workers.filter_map(|w| w.notify_fd))
            .chain(self.client_fd)
            .chain(
                self.steering
                    .iter()
                    .flat_map(|s| s.groups.iter().flat_map(|g| g.fds.iter().copied())),
            )
            .collect()
    }

    /// The format this state is written in: 2 with steering, else 1.
    pub fn format(&self) -> u32 {
        if self.steering.is_some() {
            2
        } else {
            1
        }
    }
}

/// Milliseconds from `t` to `now` (0 for a time not yet passed).
pub(crate) fn ago_ms(now: Instant, t: Instant) -> u64 {
    now.saturating_duration_since(t).as_millis() as u64
}

/// Milliseconds from `now` to `t`, negative once `t` passed.
pub(crate) fn in_ms(now: Instant, t: Instant) -> i64 {
    if t >= now {
        t.duration_since(now).as_millis() as i64
    } else {
        -(now.duration_since(t).as_millis() as i64)
    }
}

/// The time `ms` before `now`, `gap_ms` more in the new image (the re-exec
/// took that long).
pub(crate) fn instant_ago(now: Instant, ms: u64, gap_ms: u64) -> Instant {
    let back = Duration::from_millis(ms.saturating_add(gap_ms));
    now.checked_sub(back).unwrap_or(now)
}

/// The time `ms` after `now` (before it, when negative), `gap_ms` less.
pub(crate) fn instant_in(now: Instant, ms: i64, gap_ms: u64) -> Instant {
    let ms = ms.saturating_sub(gap_ms.min(i64::MAX as u64) as i64);
    if ms >= 0 {
        now + Duration::from_millis(ms as u64)
    } else {
        now.checked_sub(Duration::from_millis(ms.unsigned_abs()))
            .unwrap_or(now)
    }
}

/// The answer of a build's check mode: the state formats it reads.
pub(crate) fn check_answer() -> String {
    format!("overseer-master-check formats=1,{VERSION}")
}

/// Whether a check mode's output says the build reads `format`.
pub(crate) fn check_accepts(output: &str, format: u32) -> bool {
    output.lines().any(|line| {
        line.strip_prefix("overseer-master-check formats=")
            .is_some_and(|formats| {
                formats
                    .split(',')
                    .any(|f| f.trim().parse::<u32>() == Ok(format))
            })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> Carried {
        let worker = WorkerState {
            number: 3,
            pid: 4242,
            phase: PhaseState::Serving,
            started_ago_ms: 1500,
            ready_deadline_in_ms: -1000,
            kill_deadline_in_ms: None,
            killed: None,
            stop_signalled_ago_ms: None,
            notify_fd: Some(9),
        };
        Carried {
            version: VERSION,
            at_ns: 5_000_000_000,
            master_exe: "/usr/bin/overseer".into(),
            argv: vec!["overseer".into(), "run".into()],
            program_mask: vec![],
            sockets: vec![SocketState {
                name: "http".into(),
                address: "127.0.0.1:8080".into(),
                unix_path: None,
                fd: 5,
                retired: false,
            }],
            run_dir: RunDirState {
                path: "/run/user/1000/overseer-abc123".into(),
                lock_fd: Some(6),
            },
            control: Some(ControlState {
                path: "/run/user/1000/overseer/app.sock".into(),
                listener_fd: 7,
                dir_fd: 8,
                name: "app.sock".into(),
            }),
            handover: HandoverState {
                next_number: 4,
                restart_queued: false,
                outcome: None,
                serving: Some(worker.clone()),
                starting: None,
                draining: vec![WorkerState {
                    number: 2,
                    phase: PhaseState::Draining,
                    kill_deadline_in_ms: Some(20_000),
                    notify_fd: Some(10),
                    ..worker
                }],
            },
            probation: None,
            outcomes: OutcomesState {
                uptime_ms: 10_000,
                handovers: 2,
                failed_handovers: 0,
                last_handover: Some((1000, "worker 3 (pid 4242) ready after 5 ms".into())),
                last_upgrade: None,
                reexecs: 0,
                failed_reexecs: 0,
                last_reexec: None,
            },
            systemd: SystemdState {
                ready_sent: true,
                serving: Some(3),
            },
            version_label: Some("1.2.0".into()),
            client_fd: Some(11),
            source: "the control socket".into(),
            steering: None,
            config_text: Some("listen = [\"127.0.0.1:8080\"]\n".into()),
        }
    }

    #[test]
    fn a_state_crosses_a_file_whole() {
        let state = sample();
        let mut file = state.to_file().unwrap();
        assert_eq!(Carried::from_file(&mut file).unwrap(), state);
        assert_eq!(state.descriptors(), vec![5, 6, 7, 8, 9, 10, 11]);
    }

    #[test]
    fn the_configuration_text_is_optional_and_unknown_fields_are_ignored() {
        // A state written by a build without the text reads as none; one
        // with fields this build does not know (a later build's additions
        // that need no new format) reads as the fields it knows.
        let mut value = serde_json::to_value(sample()).unwrap();
        value.as_object_mut().unwrap().remove("config_text");
        value["added_later"] = serde_json::json!({"anything": [1, 2]});
        let state = Carried::parse(&serde_json::to_vec(&value).unwrap()).unwrap();
        assert_eq!(state.config_text, None);
        assert_eq!(
            Carried {
                config_text: sample().config_text,
                ..state
            },
            sample()
        );
    }

    #[test]
    fn another_format_is_refused_by_its_number() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["version"] = serde_json::json!(VERSION + 1);
        value["sockets"] = serde_json::json!("changed beyond recognition");
        let text = serde_json::to_vec(&value).unwrap();
        let err = Carried::parse(&text).unwrap_err();
        assert!(err.contains(&format!("format {}", VERSION + 1)), "{err}");
    }

    #[test]
    fn garbage_and_missing_fields_are_refused_with_a_reason() {
        let err = Carried::parse(b"\x00\xffnot json").unwrap_err();
        assert!(err.contains("no readable version"), "{err}");
        let err = Carried::parse(format!("{{\"version\":{VERSION}}}").as_bytes()).unwrap_err();
        assert!(err.contains("malformed"), "{err}");
        let big = vec![b' '; MAX_SIZE as usize + 1];
        assert!(Carried::parse(&big).unwrap_err().contains("larger"));
    }

    #[test]
    fn times_cross_as_offsets_less_the_time_the_re_exec_took() {
        let now = Instant::now() + Duration::from_secs(100);
        let past = now - Duration::from_millis(1500);
        let future = now + Duration::from_millis(2000);
        assert_eq!(ago_ms(now, past), 1500);
        assert_eq!(in_ms(now, future), 2000);
        assert_eq!(in_ms(now, past), -1500);
        // The new image reads them 20 ms later.
        let later = now + Duration::from_millis(20);
        assert_eq!(instant_ago(later, 1500, 20), past);
        assert_eq!(instant_in(later, 2000, 20), future);
        assert_eq!(instant_in(later, -1500, 20), past);
    }

    #[test]
    fn the_check_answer_names_the_formats_read() {
        for format in [1, VERSION] {
            assert!(check_accepts(
                &format!("noise\n{}\n", check_answer()),
                format
            ));
        }
        assert!(check_accepts("overseer-master-check formats=0, 1,7", 1));
        assert!(!check_accepts("overseer-master-check formats=0, 1,7", 2));
        assert!(!check_accepts(
            &format!("overseer-master-check formats={}", VERSION + 1),
            VERSION
        ));
        assert!(!check_accepts("hello", 1));
    }

    #[test]
    fn steering_is_format_2_and_its_sockets_are_carried() {
        let mut state = sample();
        assert_eq!(state.format(), 1);
        state.steering = Some(SteeringState {
            groups: vec![GroupState {
                address: "127.0.0.1:8080".into(),
                fds: vec![12, 13],
            }],
            slots: 3,
            users: vec![(3, 1), (4, 2)],
        });
        assert_eq!(state.format(), 2);
        let mut file = state.to_file().unwrap();
        assert_eq!(Carried::from_file(&mut file).unwrap(), state);
        assert_eq!(state.descriptors(), vec![5, 6, 7, 8, 9, 10, 11, 12, 13]);
        // A format-1 state (no steering field) is read too.
        let mut value = serde_json::to_value(sample()).unwrap();
        value["version"] = serde_json::json!(1);
        let text = serde_json::to_vec(&value).unwrap();
        assert_eq!(Carried::parse(&text).unwrap().steering, None);
    }
}
