//! What one run measured: its samples, its handovers and the master's figures,
//! and the figures derived from them.

use std::collections::BTreeMap;
use std::time::Duration;

use overseer_harness::openloop::{latencies_ms, percentile, Sample};
use overseer_harness::proc::{anon_kb, cpu_time, open_fds, rss_kb};
use serde_json::{json, Value};

use crate::chart;
use crate::{ms, sorted, BUCKET, KINDS, READY_TIMEOUT};

/// How many milliseconds after each trigger the latency profile covers.
pub const PROFILE_MS: usize = 20;

/// One restart (a signal or an upgrade), as offsets since the load started.
pub struct Handover {
    /// The new worker's number.
    pub number: u64,
    pub trigger: Duration,
    /// The program in the new worker printed its first line.
    pub program_start: Option<Duration>,
    /// The master logged the new worker ready.
    pub ready: Option<Duration>,
    /// The master logged the old worker drained (exited).
    pub drained: Option<Duration>,
}

impl Handover {
    /// The window: from the trigger to the old worker's exit (or, if that was
    /// never seen, to the trigger plus [`READY_TIMEOUT`]).
    pub fn window(&self) -> (Duration, Duration) {
        (
            self.trigger,
            self.drained.unwrap_or(self.trigger + READY_TIMEOUT),
        )
    }
}

/// What the master looked like.
#[derive(Default, Clone, Copy)]
pub struct MasterFigures {
    pub rss_kb: Option<u64>,
    pub anon_kb: Option<u64>,
    pub fds: Option<usize>,
    pub cpu: Option<Duration>,
}

impl MasterFigures {
    pub fn of(pid: i32) -> MasterFigures {
        MasterFigures {
            rss_kb: rss_kb(pid),
            anon_kb: anon_kb(pid),
            fds: open_fds(pid),
            cpu: cpu_time(pid),
        }
    }
}

/// One open-loop run against one server.
pub struct Run {
    pub samples: Vec<Sample>,
    /// The schedule's length (from the start to the stop).
    pub span: Duration,
    pub handovers: Vec<Handover>,
    /// Master figures before the load, after the last drain, and the RSS peak sampled in between.
    pub before: MasterFigures,
    pub after: MasterFigures,
    pub rss_peak_kb: Option<u64>,
    /// The master's anonymous memory at the time of the RSS peak.
    pub anon_at_peak_kb: Option<u64>,
    /// The master's own `worker N ready after M ms` figures (N ≥ 2).
    pub ready_after_ms: Vec<f64>,
    /// Log lines with `error:` or `warn:` (none expected).
    pub complaints: Vec<String>,
}

impl Run {
    pub fn windows(&self) -> Vec<(Duration, Duration)> {
        self.handovers.iter().map(Handover::window).collect()
    }

    pub fn in_window(&self, s: &Sample) -> bool {
        self.handovers.iter().any(|h| {
            let (a, b) = h.window();
            s.overlaps(a, b)
        })
    }

    pub fn ok(&self) -> usize {
        self.samples.iter().filter(|s| s.failure.is_none()).count()
    }

    pub fn failures(&self, keep: impl Fn(&Sample) -> bool) -> BTreeMap<&'static str, usize> {
        let mut kinds: BTreeMap<&'static str, usize> = KINDS.iter().map(|k| (*k, 0)).collect();
        for s in self.samples.iter().filter(|s| keep(s)) {
            if let Some(f) = &s.failure {
                *kinds.entry(f.kind()).or_default() += 1;
            }
        }
        kinds
    }

    pub fn failed(&self) -> usize {
        self.samples.iter().filter(|s| s.failure.is_some()).count()
    }

    /// Successful answers per second, over the schedule or, when the server
    /// fell behind, until the last answer.
    pub fn throughput(&self) -> f64 {
        let last = self.samples.iter().map(|s| s.scheduled + s.latency).max();
        let span = last.unwrap_or_default().max(self.span);
        self.ok() as f64 / span.as_secs_f64().max(1e-9)
    }

    pub fn steady_ms(&self) -> Vec<f64> {
        latencies_ms(&self.samples, |s| !self.in_window(s))
    }

    pub fn window_ms(&self) -> Vec<f64> {
        latencies_ms(&self.samples, |s| self.in_window(s))
    }

    pub fn failed_handovers(&self) -> usize {
        self.handovers.iter().filter(|h| h.ready.is_none()).count()
    }

    pub fn trigger_to_ready_ms(&self) -> Vec<f64> {
        let ms = |h: &Handover| h.ready.map(|r| ms(r.saturating_sub(h.trigger)));
        sorted(self.handovers.iter().filter_map(ms).collect())
    }

    /// Trigger → ready minus the program's own start → ready: the part of a
    /// handover that is overseer's (the master's reaction, fork and exec, the
    /// worker's set-up before the program runs).
    pub fn overhead_ms(&self) -> Vec<f64> {
        let ms = |h: &Handover| Some(ms(h.program_start?.saturating_sub(h.trigger)));
        sorted(self.handovers.iter().filter_map(ms).collect())
    }

    pub fn program_ms(&self) -> Vec<f64> {
        let ms = |h: &Handover| Some(ms(h.ready?.saturating_sub(h.program_start?)));
        sorted(self.handovers.iter().filter_map(ms).collect())
    }

    pub fn window_len_ms(&self) -> Vec<f64> {
        let ms = |h: &Handover| Some(ms(h.drained?.saturating_sub(h.trigger)));
        sorted(self.handovers.iter().filter_map(ms).collect())
    }

    /// Where in a handover the latency goes: for each millisecond after the
    /// trigger (up to `span_ms`), the p99 latency of the successful requests
    /// scheduled in it, over all handovers.
    pub fn p99_after_trigger_ms(&self, span_ms: usize) -> Vec<Option<f64>> {
        let mut buckets = vec![Vec::new(); span_ms];
        let triggers: Vec<Duration> = self.handovers.iter().map(|h| h.trigger).collect();
        for s in self.samples.iter().filter(|s| s.failure.is_none()) {
            // The latest trigger at or before the request was due.
            let Some(k) = triggers
                .partition_point(|t| *t <= s.scheduled)
                .checked_sub(1)
            else {
                continue;
            };
            let after = s.scheduled.saturating_sub(triggers[k]).as_millis() as usize;
            if let Some(bucket) = buckets.get_mut(after) {
                bucket.push(ms(s.latency));
            }
        }
        buckets
            .into_iter()
            .map(|b| percentile(&sorted(b), 99.0))
            .collect()
    }

    /// Requests sent more than 1 ms after their scheduled time, in percent:
    /// the generator (or the server) fell behind the schedule.
    pub fn late_percent(&self) -> f64 {
        let late = self.samples.iter();
        let late = late.filter(|s| s.send_delay > Duration::from_millis(1));
        100.0 * late.count() as f64 / self.samples.len().max(1) as f64
    }

    pub fn cpu_percent(&self) -> Option<f64> {
        let cpu = self.after.cpu?.checked_sub(self.before.cpu?)?;
        Some(100.0 * cpu.as_secs_f64() / self.span.as_secs_f64().max(1e-9))
    }

    pub fn json(&self) -> Value {
        let pct = |v: &[f64]| {
            json!({"p50": percentile(v, 50.0), "p99": percentile(v, 99.0),
                   "p99_9": percentile(v, 99.9), "max": v.last(), "count": v.len()})
        };
        let handovers: Vec<Value> = self
            .handovers
            .iter()
            .map(|h| {
                json!({"worker": h.number, "trigger_s": h.trigger.as_secs_f64(),
                       "program_start_s": h.program_start.map(|d| d.as_secs_f64()),
                       "ready_s": h.ready.map(|d| d.as_secs_f64()),
                       "old_worker_exit_s": h.drained.map(|d| d.as_secs_f64())})
            })
            .collect();
        let series: Vec<Value> = chart::series(&self.samples, BUCKET)
            .into_iter()
            .map(|b| json!([b.at, b.p50, b.p99, b.max, b.failed]))
            .collect();
        json!({
            "requests": self.samples.len(),
            "ok": self.ok(),
            "span_s": self.span.as_secs_f64(),
            "throughput_rps": self.throughput(),
            "sent_late_over_1ms_percent": self.late_percent(),
            "failures": self.failures(|_| true),
            "failures_in_windows": self.failures(|s| self.in_window(s)),
            "latency_ms_steady": pct(&self.steady_ms()),
            "latency_ms_windows": pct(&self.window_ms()),
            "p99_ms_by_ms_after_trigger": self.p99_after_trigger_ms(PROFILE_MS),
            "handovers": handovers,
            "failed_handovers": self.failed_handovers(),
            "trigger_to_ready_ms": self.trigger_to_ready_ms(),
            "master_ready_after_ms": self.ready_after_ms,
            "master": {
                "rss_kb_before": self.before.rss_kb, "rss_kb_peak": self.rss_peak_kb,
                "anon_kb_before": self.before.anon_kb, "anon_kb_at_peak": self.anon_at_peak_kb,
                "anon_kb_after": self.after.anon_kb,
                "rss_kb_after": self.after.rss_kb, "fds_before": self.before.fds,
                "fds_after": self.after.fds, "cpu_percent": self.cpu_percent(),
            },
            "series_100ms": {"columns": ["t_s", "p50_ms", "p99_ms", "max_ms", "failed"], "rows": series},
        })
    }
}
