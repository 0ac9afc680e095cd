//! Closed-loop load from several client threads, with every failure counted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::client::{Client, Failure};

/// What the load threads saw.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Successful requests.
    pub ok: u64,
    /// Every failure, with when it happened (since the load started) and why.
    pub failures: Vec<(Duration, Failure)>,
    /// Successful requests per answering worker (the `worker=` field).
    pub by_worker: BTreeMap<u64, u64>,
    /// Latency of each successful request, with its start time since the load started.
    pub latencies: Vec<(Duration, Duration)>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.ok += other.ok;
        self.failures.extend(other.failures);
        for (w, n) in other.by_worker {
            *self.by_worker.entry(w).or_default() += n;
        }
        self.latencies.extend(other.latencies);
    }

    /// Failures grouped by kind.
    pub fn failure_kinds(&self) -> BTreeMap<&'static str, u64> {
        let mut kinds = BTreeMap::new();
        for (_, f) in &self.failures {
            *kinds.entry(f.kind()).or_default() += 1;
        }
        kinds
    }
}

/// Running load; stop it to get the figures.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Stats>>,
    /// The latest worker number seen by any thread.
    latest: Arc<Mutex<u64>>,
    /// Live counts of successful and failed requests.
    progress: Arc<(AtomicU64, AtomicU64)>,
}

/// How to load a server.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Server address.
    pub addr: SocketAddr,
    /// Concurrent client threads.
    pub clients: usize,
    /// Reuse connections (keep-alive) or open one per request.
    pub keep_alive: bool,
    /// Request path.
    pub path: String,
    /// Upper bound on the load's duration, whatever happens.
    pub max_duration: Duration,
    /// Pause between requests of one client.
    pub pause: Duration,
}

impl Load {
    /// Starts `spec.clients` threads sending requests until stopped or `max_duration`.
    pub fn start(spec: LoadSpec) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let latest = Arc::new(Mutex::new(0));
        let progress = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let origin = Instant::now();
        let threads = (0..spec.clients)
            .map(|_| {
                let stop = stop.clone();
                let latest = latest.clone();
                let progress = progress.clone();
                let spec = spec.clone();
                std::thread::spawn(move || {
                    let mut stats = Stats::default();
                    let mut client = Client::new(spec.addr, spec.keep_alive);
                    while !stop.load(Ordering::SeqCst) && origin.elapsed() < spec.max_duration {
                        let start = Instant::now();
                        match client.get(&spec.path) {
                            Ok(r) => {
                                stats.ok += 1;
                                progress.0.fetch_add(1, Ordering::Relaxed);
                                stats
                                    .latencies
                                    .push((start.duration_since(origin), start.elapsed()));
                                if let Some(w) = r.field("worker").and_then(|w| w.parse().ok()) {
                                    *stats.by_worker.entry(w).or_default() += 1;
                                    if let Ok(mut l) = latest.lock() {
                                        *l = (*l).max(w);
                                    }
                                }
                            }
                            Err(f) => {
                                progress.1.fetch_add(1, Ordering::Relaxed);
                                stats.failures.push((origin.elapsed(), f));
                            }
                        }
                        if !spec.pause.is_zero() {
                            std::thread::sleep(spec.pause);
                        }
                    }
                    stats
                })
            })
            .collect();
        Load {
            stop,
            threads,
            latest,
            progress,
        }
    }

    /// The highest worker number any response came from so far.
    pub fn latest_worker(&self) -> u64 {
        self.latest.lock().map(|l| *l).unwrap_or(0)
    }

    /// Live counts so far: (successful, failed) requests.
    pub fn progress(&self) -> (u64, u64) {
        (
            self.progress.0.load(Ordering::Relaxed),
            self.progress.1.load(Ordering::Relaxed),
        )
    }

    /// Stops the threads and returns the combined figures.
    pub fn stop(self) -> Stats {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = Stats::default();
        for t in self.threads {
            match t.join() {
                Ok(s) => total.merge(s),
                Err(_) => total.failures.push((
                    Duration::ZERO,
                    Failure::Other("load thread panicked".into()),
                )),
            }
        }
        total
    }
}
