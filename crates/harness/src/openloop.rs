//! Open-loop, constant-rate load: request `i` is due at `i / rate` seconds
//! after the start, whatever happened to the requests before it.
//!
//! A closed-loop generator (like [`crate::load`]) sends the next request only
//! after the previous answer, so a server that stalls simply receives fewer
//! requests and the stall hides in a handful of slow samples ("coordinated
//! omission"). Here the schedule is fixed: the due requests are spread
//! round-robin over `connections` threads, each owning one client; a thread
//! whose previous request is still running sends the next one late, and every
//! latency is measured from the request's *scheduled* time, so queueing
//! behind a stall counts in full.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::client::{Client, Failure};

/// How to load a server.
#[derive(Debug, Clone)]
pub struct OpenLoopSpec {
    /// Server address.
    pub addr: SocketAddr,
    /// Requests per second, over all connections.
    pub rate: f64,
    /// Threads, each owning one client (with keep-alive, one persistent connection).
    pub connections: usize,
    /// Reuse connections (keep-alive) or open one per request.
    pub keep_alive: bool,
    /// Request path.
    pub path: String,
    /// Per-request timeout (connect, write, read).
    pub timeout: Duration,
    /// Upper bound on the schedule, whatever happens.
    pub max_duration: Duration,
}

/// One scheduled request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was due, since the load started.
    pub scheduled: Duration,
    /// From `scheduled` to the complete answer (or the failure).
    pub latency: Duration,
    /// How late it was sent (its thread was busy with earlier requests).
    pub send_delay: Duration,
    /// Why it failed; `None` for a 2xx answer read in full.
    pub failure: Option<Failure>,
}

impl Sample {
    /// Whether `[scheduled, scheduled + latency]` overlaps `[from, to]`.
    pub fn overlaps(&self, from: Duration, to: Duration) -> bool {
        self.scheduled <= to && self.scheduled + self.latency >= from
    }
}

/// Running open-loop load; stop it to get the samples.
#[derive(Debug)]
pub struct OpenLoop {
    origin: Instant,
    /// Microseconds since `origin` from which no request is due any more.
    stop_at: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Vec<Sample>>>,
}

impl OpenLoop {
    /// Starts the schedule now.
    pub fn start(spec: OpenLoopSpec) -> OpenLoop {
        let origin = Instant::now();
        let stop_at = Arc::new(AtomicU64::new(u64::MAX));
        let done = Arc::new(AtomicU64::new(0));
        let connections = spec.connections.max(1);
        let interval = Duration::from_secs_f64(1.0 / spec.rate.max(0.001));
        let threads = (0..connections)
            .map(|k| {
                let (stop_at, done, spec) = (stop_at.clone(), done.clone(), spec.clone());
                std::thread::spawn(move || {
                    let mut client = Client::new(spec.addr, spec.keep_alive).timeout(spec.timeout);
                    let mut samples = Vec::new();
                    for i in (k..).step_by(connections) {
                        let scheduled = interval.mul_f64(i as f64);
                        let stop = Duration::from_micros(stop_at.load(Ordering::Relaxed));
                        if scheduled >= stop || scheduled >= spec.max_duration {
                            break;
                        }
                        let due = origin + scheduled;
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                            // The schedule may have ended during the sleep.
                            let stop = stop_at.load(Ordering::Relaxed);
                            if scheduled >= Duration::from_micros(stop) {
                                break;
                            }
                        }
                        let send_delay = Instant::now().saturating_duration_since(due);
                        let failure = client.get(&spec.path).err();
                        samples.push(Sample {
                            scheduled,
                            latency: Instant::now().saturating_duration_since(due),
                            send_delay,
                            failure,
                        });
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    samples
                })
            })
            .collect();
        OpenLoop {
            origin,
            stop_at,
            done,
            threads,
        }
    }

    /// The instant the schedule started (every [`Sample::scheduled`] is relative to it).
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// Requests completed so far (answered or failed).
    pub fn completed(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Ends the schedule now: requests due before now are still sent and
    /// waited for (a late thread catches up), later ones are not. Returns
    /// every sample, in schedule order.
    pub fn stop(self) -> Vec<Sample> {
        let now = self.origin.elapsed().as_micros() as u64;
        self.stop_at.store(now, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.threads {
            match t.join() {
                Ok(s) => all.extend(s),
                Err(_) => all.push(Sample {
                    scheduled: Duration::ZERO,
                    latency: Duration::ZERO,
                    send_delay: Duration::ZERO,
                    failure: Some(Failure::Other("load thread panicked".into())),
                }),
            }
        }
        all.sort_by_key(|s| s.scheduled);
        all
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    sorted
        .get(((last as f64) * p / 100.0).round() as usize)
        .copied()
}

/// Latencies in milliseconds of the successful samples `keep` selects, sorted.
pub fn latencies_ms(samples: &[Sample], keep: impl Fn(&Sample) -> bool) -> Vec<f64> {
    let mut v: Vec<f64> = samples
        .iter()
        .filter(|s| s.failure.is_none() && keep(s))
        .map(|s| s.latency.as_secs_f64() * 1e3)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}
