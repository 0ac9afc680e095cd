//! Every handover transition, without processes: the effects are recorded
//! and the time is given.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::upgrade::probation::{Installed, Verdict};
use crate::upgrade::swap::Target;
use std::sync::mpsc;

const TERM: Duration = Duration::from_secs(5);
const READY: Duration = Duration::from_secs(10);
const PROBATION: Duration = Duration::from_secs(30);

/// Records every effect, in order; worker N gets pid 100 + N, unless
/// its start is to fail.
#[derive(Default)]
struct Recorder {
    done: Vec<String>,
    failing_spawns: Vec<u64>,
    now: Option<Instant>,
    /// Connections in each worker's accept queue (steering).
    queued: Vec<(u64, u32)>,
}

impl Recorder {
    fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.done)
    }
}

impl Effects for Recorder {
    fn spawn(&mut self, number: u64, probation: Option<&Probation>) -> Result<Spawned, String> {
        let on = if probation.is_some() {
            " on probation"
        } else {
            ""
        };
        if self.failing_spawns.contains(&number) {
            self.done.push(format!("spawn {number}{on} failed"));
            return Err(format!("cannot start worker {number}"));
        }
        self.done.push(format!("spawn {number}{on}"));
        Ok(Spawned {
            pid: 100 + number as i32,
            at: self.now.unwrap(),
        })
    }
    fn signal(&mut self, pid: i32, signal: i32) {
        let name = match signal {
            libc::SIGTERM => "TERM".to_string(),
            libc::SIGKILL => "KILL".to_string(),
            other => other.to_string(),
        };
        self.done.push(format!("{name} {pid}"));
    }
    fn ready(&mut self, number: u64, _pid: i32, _after: Duration, handover: bool) {
        let how = if handover { " (handover)" } else { "" };
        self.done.push(format!("ready {number}{how}"));
    }
    fn handover_failed(&mut self, number: Option<u64>, reason: &str) {
        self.done.push(format!("failed {number:?}: {reason}"));
    }
    fn restart_failed(&mut self, why: &str) {
        self.done.push(format!("systemd: {why}"));
    }
    fn stopping(&mut self) {
        self.done.push("stopping".into());
    }
    fn probation_passed(&mut self, probation: Probation) {
        self.done.push("probation passed".into());
        probation.abandon();
    }
    fn probation_failed(&mut self, probation: Probation, reason: &str) {
        self.done.push(format!("rolled back: {reason}"));
        probation.abandon();
    }
    fn steer(&mut self, number: u64) {
        self.done.push(format!("steer {number}"));
    }
    fn queued(&mut self, number: u64) -> u32 {
        self.queued
            .iter()
            .find(|(n, _)| *n == number)
            .map_or(0, |(_, q)| *q)
    }
}

fn rules() -> Rules {
    Rules {
        terminate_timeout: TERM,
        ready_timeout: READY,
        ready_on_spawn: false,
        no_restart: false,
        settle: None,
    }
}

fn exit(code: i32) -> Ended {
    Ended {
        how: format!("exit status {code}"),
        outcome: Outcome::Exit(code),
        clean: code == 0,
    }
}

fn killed_by(signal: i32) -> Ended {
    Ended {
        how: format!("signal {signal}"),
        outcome: Outcome::Signal(signal),
        clean: false,
    }
}

/// A handover with worker 1 serving (pid 101), at `t0`.
fn serving(rules: Rules) -> (Handover, Recorder, Instant) {
    let t0 = Instant::now();
    let mut fx = Recorder {
        now: Some(t0),
        ..Recorder::default()
    };
    let steering = rules.settle.is_some();
    let mut h = Handover::new(rules);
    assert!(h.start(&mut fx));
    h.ready(1, t0, &mut fx);
    let mut expected = vec!["spawn 1", "ready 1"];
    if steering {
        expected.push("steer 1");
    }
    assert_eq!(fx.take(), expected);
    (h, fx, t0)
}

fn release() -> (Installed, mpsc::Receiver<Verdict>) {
    let (reply, verdict) = mpsc::channel();
    let installed = Installed {
        target: Target {
            path: "/nonexistent/app".into(),
            dir: "/nonexistent".into(),
            name: "app".into(),
        },
        sha256: "ab".repeat(32),
        version: Some("2.0.0".into()),
        tag: None,
        via: None,
        reply,
    };
    (installed, verdict)
}

/// Worker 1 serving, worker 2 started from a release on probation.
fn on_probation() -> (Handover, Recorder, Instant) {
    let (mut h, mut fx, t0) = serving(rules());
    let (installed, _) = release();
    h.begin_probation(installed.on_probation(h.next_number(), PROBATION));
    h.restart("the upgrade", t0, &mut fx);
    assert_eq!(fx.take(), ["spawn 2 on probation"]);
    (h, fx, t0)
}

fn numbers(h: &Handover) -> (Option<u64>, Option<u64>, Vec<u64>) {
    (
        h.serving().map(|w| w.number),
        h.starting().map(|w| w.number),
        h.draining().iter().map(|w| w.number).collect(),
    )
}

#[test]
fn the_first_worker_serves_once_ready_and_its_exit_ends_the_master() {
    let (mut h, mut fx, t0) = serving(rules());
    assert_eq!(numbers(&h), (Some(1), None, vec![]));
    assert_eq!(h.finished(), None);
    h.exited(101, &exit(3), t0, &mut fx);
    assert!(fx.take().is_empty());
    assert_eq!(h.finished(), Some(Outcome::Exit(3)));
}

#[test]
fn a_first_worker_that_cannot_start_ends_the_master_with_status_1() {
    let mut fx = Recorder {
        failing_spawns: vec![1],
        now: Some(Instant::now()),
        ..Recorder::default()
    };
    let mut h = Handover::new(rules());
    assert!(!h.start(&mut fx));
    assert_eq!(
        fx.take(),
        ["spawn 1 failed", "failed None: cannot start worker 1"]
    );
    assert_eq!(h.outcome(), Some(Outcome::Exit(1)));
    assert_eq!(h.finished(), Some(Outcome::Exit(1)));
}

#[test]
fn a_trigger_starts_a_worker_and_its_ready_drains_the_old_one() {
    let (mut h, mut fx, t0) = serving(rules());
    h.restart("SIGUSR2", t0, &mut fx);
    assert_eq!(fx.take(), ["spawn 2"]);
    assert_eq!(numbers(&h), (Some(1), Some(2), vec![]));
    let t1 = t0 + Duration::from_millis(300);
    h.ready(2, t1, &mut fx);
    assert_eq!(fx.take(), ["ready 2 (handover)", "TERM 101"]);
    assert_eq!(numbers(&h), (Some(2), None, vec![1]));
    assert_eq!(h.next_deadline(), Some(t1 + TERM));
    h.exited(101, &exit(0), t1, &mut fx);
    assert!(fx.take().is_empty());
    assert_eq!(numbers(&h), (Some(2), None, vec![]));
    assert_eq!(h.finished(), None);
}

#[test]
fn triggers_during_a_handover_coalesce_into_one_more() {
    let (mut h, mut fx, t0) = serving(rules());
    h.restart("SIGUSR2", t0, &mut fx);
    h.restart("SIGUSR2", t0, &mut fx);
    h.restart("restart()", t0, &mut fx);
    h.restart("worker 1", t0, &mut fx);
    assert_eq!(fx.take(), ["spawn 2"]);
    h.ready(2, t0, &mut fx);
    assert_eq!(fx.take(), ["ready 2 (handover)", "TERM 101", "spawn 3"]);
    h.ready(3, t0, &mut fx);
    assert_eq!(fx.take(), ["ready 3 (handover)", "TERM 102"]);
    assert_eq!(numbers(&h), (Some(3), None, vec![1, 2]));
}

#[test]
fn a_queued_trigger_runs_after_a_failed_handover_too() {
    let (mut h, mut fx, t0) = serving(rules());
    h.restart("SIGUSR2", t0, &mut fx);
    h.restart("SIGUSR2", t0, &mut fx);
    fx.take();
    h.exited(102, &exit(1), t0, &mut fx);
    assert_eq!(
        fx.take(),
        [
            "failed Some(2): worker 2 exited with exit status 1 before becoming ready",
            "systemd: restart failed: worker 2 exited with exit status 1 before becoming ready; worker 1 keeps serving",
            "spawn 3",
        ]
    );
    assert_eq!(numbers(&h), (Some(1), Some(3), vec![]));
}

#[test]
fn ready_from_a_stale_or_unknown_worker_changes_nothing() {
    let (mut h, mut fx, t0) = serving(rules());
    h.ready(1, t0, &mut fx);
    h.ready(7, t0, &mut fx);
    h.restart("SIGUSR2", t0, &mut fx);
    fx.take();
    h.ready(1, t0, &mut fx);
    assert!(fx.take().is_empty());
    assert_eq!(numbers(&h), (Some(1), Some(2), vec![]));
}

#[test]
fn a_worker_not_ready_in_time_is_killed_and_the_old_one_keeps_serving() {
    let (mut h, mut fx, t0) = serving(rules());
    h.restart("SIGUSR2", t0, &mut fx);
    fx.take();
    assert_eq!(h.next_deadline(), Some(t0 + READY));
    h.deadlines(t0 + READY - Duration::from_millis(1), &mut fx);
    assert!(fx.take().is_empty());
    h.deadlines(t0 + READY, &mut fx);
    assert_eq!(fx.take(), ["KILL 102"]);
    // Killed once; and a READY that arrives now is too late.
    h.deadlines(t0 + READY * 2, &mut fx);
    h.ready(2, t0 + READY, &mut fx);
    assert!(fx.take().is_empty());
    assert_eq!(h.next_deadline(), None);
    h.exited(102, &killed_by(9), t0 + READY, &mut fx);
    assert_eq!(
        fx.take(),
        [
            "failed Some(2): worker 2 was not ready within 10s",
            "systemd: restart failed: worker 2 was not ready within 10s; worker 1 keeps serving",
        ]
    );
    assert_eq!(numbers(&h), (Some(1), None, vec![]));
    assert_eq!(h.finished(), None);
}

#[test]
fn a_draining_worker_still_running_after_the_timeout_is_killed() {
    let (mut h, mut fx, t0) = serving(rules());
    h.restart("SIGUSR2", t0, &mut fx);
    h.ready(2, t0, &mut fx);
    fx.take();
    h.deadlines(t0 + TERM, &mut fx);
    assert_eq!(fx.take(), ["KILL 101"]);
    h.deadlines(t0 + TERM * 2, &mut fx);
    assert!(fx.take().is_empty());
    h.exited(101, &killed_by(9), t0 + TERM, &mut fx);
    assert_eq!(numbers(&h), (Some(2), None, vec![]));
}

#[test]
fn a_failed_spawn_during_a_restart_keeps_the_old_worker() {
    let (mut h, mut fx, t0) = serving(rules());
    fx.failing_spawns = vec![2];
    h.restart("SIGUSR2", t0, &mut fx);
    assert_eq!(
        fx.take(),
        [
            "spawn 2 failed",
            "failed None: cannot start worker 2",
            "systemd: restart failed: cannot start worker 2; the current worker keeps serving",
        ]
    );
    assert_eq!(numbers(&h), (Some(1), None, vec![]));
    h.restart("SIGUSR2", t0, &mut fx);
    assert_eq!(fx.take(), ["spawn 3"]);
}

#[test]
fn the_serving_worker_exiting_mid_handover_leaves_it_to_the_new_one() {
    let (mut h, mut fx, t0) = serving(rules());
    h.restart("SIGUSR2", t0, &mut fx);
    fx.take();
    h.exited(101, &exit(4), t0, &mut fx);
    assert!(fx.take().is_empty());
    assert!(!h.is_stopping());
    assert_eq!(numbers(&h), (None, Some(2), vec![]));
    h.ready(2, t0, &mut fx);
    assert_eq!(fx.take(), ["ready 2"]);
    assert_eq!(numbers(&h), (Some(2), None, vec![]));
    assert_eq!(h.finished(), None);
}

#[test]
fn the_serving_worker_exiting_mid_handover_ends_the_master_if_the_new_one_fails() {
    let (mut h, mut fx, t0) = serving(rules());
    h.restart("SIGUSR2", t0, &mut fx);
    h.restart("SIGUSR2", t0, &mut fx);
    fx.take();
    h.exited(101, &exit(4), t0, &mut fx);
    h.exited(102, &exit(1), t0, &mut fx);
    assert_eq!(
        fx.take(),
        ["failed Some(2): worker 2 exited with exit status 1 before becoming ready"]
    );
    // The master ends with the serving worker's status, and the queued
    // restart is dropped.
    assert_eq!(h.finished(), Some(Outcome::Exit(4)));
}

#[test]
fn a_starting_worker_failing_with_none_serving_ends_the_master_once_the_draining_end() {
    let (mut h, mut fx, t0) = serving(rules());
    h.restart("SIGUSR2", t0, &mut fx);
    h.ready(2, t0, &mut fx);
    h.restart("SIGUSR2", t0, &mut fx);
    fx.take();
    h.exited(102, &exit(0), t0, &mut fx);
    let t1 = t0 + Duration::from_secs(1);
    h.exited(103, &killed_by(11), t1, &mut fx);
    assert_eq!(
        fx.take(),
        ["failed Some(3): worker 3 exited with signal 11 before becoming ready"]
    );
    assert!(h.is_stopping());
    assert_eq!(h.outcome(), Some(Outcome::Exit(0)));
    assert_eq!(h.finished(), None);
    assert_eq!(h.next_deadline(), Some(t0 + TERM));
    h.deadlines(t0 + TERM, &mut fx);
    assert_eq!(fx.take(), ["KILL 101"]);
    h.exited(101, &killed_by(9), t0 + TERM, &mut fx);
    assert_eq!(h.finished(), Some(Outcome::Exit(0)));
}

#[test]
fn a_starting_worker_failing_alone_gives_its_status_or_1_if_killed() {
    let (mut h, mut fx, t0) = serving(rules());
    h.restart("SIGUSR2", t0, &mut fx);
    h.exited(101, &exit(0), t0, &mut fx);
    // The serving worker's status was recorded; a killed starting worker
    // does not replace it.
    h.deadlines(t0 + READY, &mut fx);
    h.exited(102, &killed_by(9), t0 + READY, &mut fx);
    assert_eq!(h.finished(), Some(Outcome::Exit(0)));
}

#[test]
fn sigterm_drains_every_worker_and_the_master_ends_with_the_serving_ones_status() {
    let (mut h, mut fx, t0) = serving(rules());
    h.restart("SIGUSR2", t0, &mut fx);
    h.restart("SIGUSR2", t0, &mut fx);
    fx.take();
    h.signal(libc::SIGTERM, false, t0, &mut fx);
    assert_eq!(fx.take(), ["stopping", "TERM 101", "TERM 102"]);
    // Restarts are ignored now, and the queued one is gone.
    h.restart("SIGUSR2", t0, &mut fx);
    h.ready(2, t0, &mut fx);
    assert!(fx.take().is_empty());
    h.exited(102, &exit(0), t0, &mut fx);
    assert!(fx.take().is_empty(), "no failed handover while stopping");
    assert_eq!(h.finished(), None);
    h.exited(101, &exit(143 - 128), t0, &mut fx);
    assert_eq!(h.finished(), Some(Outcome::Exit(15)));
}

#[test]
fn with_restarts_off_a_trigger_stops_the_service() {
    let (mut h, mut fx, t0) = serving(Rules {
        no_restart: true,
        ..rules()
    });
    h.restart("SIGUSR2", t0, &mut fx);
    assert_eq!(fx.take(), ["stopping", "TERM 101"]);
    assert!(h.is_stopping());
}

#[test]
fn a_command_ready_on_spawn_serves_at_once() {
    let t0 = Instant::now();
    let mut fx = Recorder {
        now: Some(t0),
        ..Recorder::default()
    };
    let mut h = Handover::new(Rules {
        ready_on_spawn: true,
        ..rules()
    });
    assert!(h.start(&mut fx));
    h.restart("SIGUSR2", t0, &mut fx);
    assert_eq!(
        fx.take(),
        [
            "spawn 1",
            "ready 1",
            "spawn 2",
            "ready 2 (handover)",
            "TERM 101"
        ]
    );
}

#[test]
fn signals_are_forwarded_to_the_serving_worker_else_the_starting_one() {
    let (mut h, mut fx, t0) = serving(rules());
    h.signal(libc::SIGUSR1, false, t0, &mut fx);
    h.signal(libc::SIGWINCH, true, t0, &mut fx);
    assert_eq!(fx.take(), [format!("{} 101", libc::SIGUSR1)]);
    h.restart("SIGUSR2", t0, &mut fx);
    h.exited(101, &exit(0), t0, &mut fx);
    fx.take();
    h.signal(libc::SIGHUP, false, t0, &mut fx);
    assert_eq!(fx.take(), [format!("{} 102", libc::SIGHUP)]);
}

#[test]
fn an_exit_after_the_operators_stop_signal_is_a_stop_not_a_failure() {
    let (mut h, mut fx, t0) = serving(rules());
    h.signal(libc::SIGINT, false, t0, &mut fx);
    fx.take();
    h.exited(101, &killed_by(libc::SIGINT), t0 + TERM, &mut fx);
    assert_eq!(fx.take(), ["stopping"]);
    assert_eq!(h.finished(), Some(Outcome::Signal(libc::SIGINT)));
}

#[test]
fn a_stop_signal_from_the_terminal_is_not_forwarded_but_counts() {
    let (mut h, mut fx, t0) = serving(rules());
    h.signal(libc::SIGINT, true, t0, &mut fx);
    assert!(fx.take().is_empty());
    h.exited(101, &exit(130), t0, &mut fx);
    assert_eq!(fx.take(), ["stopping"]);
    assert_eq!(h.finished(), Some(Outcome::Exit(130)));
}

#[test]
fn a_stop_signal_long_ago_does_not_excuse_an_exit() {
    let (mut h, mut fx, t0) = serving(rules());
    h.signal(libc::SIGHUP, false, t0, &mut fx);
    fx.take();
    // Ended long after the signal: the worker simply exited.
    h.exited(101, &exit(1), t0 + TERM * 2, &mut fx);
    assert!(fx.take().is_empty());
    assert_eq!(h.finished(), Some(Outcome::Exit(1)));
}

#[test]
fn exits_of_unknown_processes_are_ignored() {
    let (mut h, mut fx, t0) = serving(rules());
    h.exited(999, &exit(1), t0, &mut fx);
    assert!(fx.take().is_empty());
    assert_eq!(numbers(&h), (Some(1), None, vec![]));
}

#[test]
fn a_release_passes_probation_a_period_after_its_worker_is_ready() {
    let (mut h, mut fx, t0) = on_probation();
    h.ready(2, t0, &mut fx);
    assert_eq!(fx.take(), ["ready 2 (handover)", "TERM 101"]);
    h.exited(101, &exit(0), t0, &mut fx);
    assert_eq!(h.next_deadline(), Some(t0 + PROBATION));
    h.deadlines(t0 + PROBATION, &mut fx);
    assert_eq!(fx.take(), ["probation passed"]);
    assert_eq!(h.next_deadline(), None);
}

#[test]
fn a_release_whose_worker_fails_to_start_is_rolled_back() {
    let (mut h, mut fx, t0) = on_probation();
    h.exited(102, &exit(2), t0, &mut fx);
    assert_eq!(
        fx.take(),
        [
            "failed Some(2): worker 2 exited with exit status 2 before becoming ready",
            "rolled back: its worker 2 exited with exit status 2 before becoming ready",
            "systemd: restart failed: worker 2 exited with exit status 2 before becoming ready; worker 1 keeps serving",
        ]
    );
    assert_eq!(numbers(&h), (Some(1), None, vec![]));
}

#[test]
fn a_release_whose_worker_cannot_be_spawned_is_rolled_back() {
    let (mut h, mut fx, t0) = serving(rules());
    fx.failing_spawns = vec![2];
    let (installed, _) = release();
    h.begin_probation(installed.on_probation(h.next_number(), PROBATION));
    h.restart("the upgrade", t0, &mut fx);
    assert_eq!(
        fx.take(),
        [
            "spawn 2 on probation failed",
            "failed None: cannot start worker 2",
            "rolled back: its worker could not be started: cannot start worker 2",
            "systemd: restart failed: cannot start worker 2; the current worker keeps serving",
        ]
    );
}

#[test]
fn a_release_whose_worker_fails_within_probation_is_rolled_back_and_replaced() {
    let (mut h, mut fx, t0) = on_probation();
    h.ready(2, t0, &mut fx);
    h.exited(101, &exit(0), t0, &mut fx);
    fx.take();
    h.exited(102, &killed_by(11), t0 + PROBATION / 2, &mut fx);
    assert_eq!(
        fx.take(),
        [
            "rolled back: its worker 2 failed within the 30s probation (signal 11)",
            "spawn 3",
        ]
    );
    assert!(!h.is_stopping());
}

#[test]
fn a_release_whose_worker_exits_cleanly_within_probation_stays() {
    let (mut h, mut fx, t0) = on_probation();
    h.ready(2, t0, &mut fx);
    h.exited(101, &exit(0), t0, &mut fx);
    fx.take();
    h.exited(102, &exit(0), t0 + PROBATION / 2, &mut fx);
    assert!(fx.take().is_empty());
    assert_eq!(h.finished(), Some(Outcome::Exit(0)));
}

#[test]
fn a_release_replaced_by_a_newer_worker_before_probation_ends_passes() {
    let (mut h, mut fx, t0) = on_probation();
    h.ready(2, t0, &mut fx);
    h.restart("SIGUSR2", t0, &mut fx);
    fx.take();
    h.ready(3, t0, &mut fx);
    assert_eq!(
        fx.take(),
        ["ready 3 (handover)", "probation passed", "TERM 102"]
    );
}

#[test]
fn a_release_whose_worker_fails_after_the_previous_one_ended_restarts_from_the_restored_binary() {
    let (mut h, mut fx, t0) = on_probation();
    h.exited(101, &exit(0), t0, &mut fx);
    h.exited(102, &exit(1), t0, &mut fx);
    assert_eq!(
        fx.take(),
        [
            "failed Some(2): worker 2 exited with exit status 1 before becoming ready",
            "rolled back: its worker 2 exited with exit status 1 before becoming ready",
            "spawn 3",
        ]
    );
    assert_eq!(numbers(&h), (None, Some(3), vec![]));
    assert!(!h.is_stopping());
}

#[test]
fn a_release_whose_worker_is_stopped_by_the_operator_is_not_to_blame() {
    let (mut h, mut fx, t0) = on_probation();
    h.ready(2, t0, &mut fx);
    h.signal(libc::SIGQUIT, false, t0, &mut fx);
    fx.take();
    h.exited(102, &killed_by(libc::SIGQUIT), t0, &mut fx);
    // Worker 1 is draining already.
    assert_eq!(fx.take(), ["stopping"]);
    // What is left of the probation is abandoned by the loop, not failed.
    assert!(h.take_probation().is_some());
}

#[test]
fn a_carried_handover_goes_on_where_it_stopped() {
    // Worker 2 (a release on probation) serving, worker 1 draining with 5 s
    // to go, worker 3 starting and a restart queued: carried at t1, taken
    // over 40 ms later.
    let (mut h, mut fx, t0) = on_probation();
    let t1 = t0 + Duration::from_millis(100);
    h.ready(2, t1, &mut fx);
    fx.take();
    h.restart("SIGUSR2", t1, &mut fx);
    h.restart("SIGUSR2", t1, &mut fx);
    fx.take();
    let carried = h.carry(t1, |n| Some(n as i32 + 10));
    assert_eq!(carried.next_number, 4);
    assert!(carried.restart_queued);
    assert_eq!(
        carried.serving.as_ref().map(|w| (w.number, w.notify_fd)),
        Some((2, Some(12)))
    );
    assert_eq!(
        carried.draining[0].kill_deadline_in_ms,
        Some(TERM.as_millis() as i64)
    );
    let later = t1 + Duration::from_millis(40);
    let probation = h.take_probation();
    let mut adopted = Handover::adopt(rules(), &carried, probation, later, 40);
    assert_eq!(numbers(&adopted), (Some(2), Some(3), vec![1]));
    assert!(adopted.probation().is_some_and(|p| p.is_worker(2)));
    // The draining worker's deadline is where it was: 5 s after t1.
    assert_eq!(adopted.next_deadline(), Some(t1 + TERM));
    fx.now = Some(later);
    adopted.deadlines(t1 + TERM, &mut fx);
    assert_eq!(fx.take(), ["KILL 101"]);
    // Worker 3 replaces the release's worker before its probation ended
    // (it passes), and the queued restart follows.
    adopted.ready(3, t1 + TERM, &mut fx);
    assert_eq!(
        fx.take(),
        [
            "ready 3 (handover)",
            "probation passed",
            "TERM 102",
            "spawn 4"
        ]
    );
}

const SETTLE: Duration = Duration::from_secs(1);

fn steering() -> Rules {
    Rules {
        settle: Some(SETTLE),
        ..rules()
    }
}

#[test]
fn with_steering_the_old_worker_drains_after_the_settle_time_once_its_queue_is_empty() {
    let (mut h, mut fx, t0) = serving(steering());
    h.restart("SIGUSR2", t0, &mut fx);
    h.ready(2, t0, &mut fx);
    assert_eq!(fx.take(), ["spawn 2", "ready 2 (handover)", "steer 2"]);
    assert_eq!(h.next_deadline(), Some(t0 + SETTLE));
    // Not before the settle time, and not while connections wait for it.
    h.deadlines(t0 + SETTLE / 2, &mut fx);
    fx.queued = vec![(1, 3)];
    h.deadlines(t0 + SETTLE, &mut fx);
    assert!(fx.take().is_empty());
    let poll = h.next_deadline().unwrap();
    assert!(poll > t0 + SETTLE && poll < t0 + SETTLE + Duration::from_millis(50));
    fx.queued.clear();
    h.deadlines(poll, &mut fx);
    assert_eq!(fx.take(), ["TERM 101"]);
    assert_eq!(
        h.next_deadline(),
        Some(poll + TERM),
        "the kill deadline now"
    );
    h.exited(101, &exit(0), poll, &mut fx);
    assert_eq!(numbers(&h), (Some(2), None, vec![]));
}

#[test]
fn with_steering_a_queue_that_never_empties_delays_sigterm_by_queue_wait_at_most() {
    let (mut h, mut fx, t0) = serving(steering());
    h.restart("SIGUSR2", t0, &mut fx);
    h.ready(2, t0, &mut fx);
    fx.take();
    fx.queued = vec![(1, 1)];
    let mut now = t0 + SETTLE;
    for _ in 0..10_000 {
        h.deadlines(now, &mut fx);
        if !fx.done.is_empty() {
            break;
        }
        now = h.next_deadline().unwrap();
    }
    assert_eq!(fx.take(), ["TERM 101"]);
    assert!(now >= t0 + SETTLE + QUEUE_WAIT);
    assert!(now < t0 + SETTLE + QUEUE_WAIT + Duration::from_millis(50));
}

#[test]
fn with_steering_a_stop_drains_a_worker_still_settling_at_once() {
    let (mut h, mut fx, t0) = serving(steering());
    h.restart("SIGUSR2", t0, &mut fx);
    h.ready(2, t0, &mut fx);
    fx.take();
    h.stop(t0, &mut fx);
    assert_eq!(fx.take(), ["stopping", "TERM 102", "TERM 101"]);
}

#[test]
fn with_steering_a_failed_handover_steers_nothing() {
    let (mut h, mut fx, t0) = serving(steering());
    h.restart("SIGUSR2", t0, &mut fx);
    h.exited(102, &exit(1), t0, &mut fx);
    let done = fx.take();
    assert!(done.iter().all(|d| !d.starts_with("steer")), "{done:?}");
    assert_eq!(numbers(&h), (Some(1), None, vec![]));
}
