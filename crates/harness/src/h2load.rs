//! Closed-loop HTTP/2 load (by prior knowledge, over plain TCP), with every
//! failure counted.
//!
//! The client is hyper's pooled one, told never to retry on its own. A
//! request it reports as canceled was never written (it was queued for a
//! connection the server had just ended with GOAWAY): HTTP/2 lets a client
//! send such a request again, since the server cannot have processed it
//! (RFC 9113, 8.7), and every HTTP/2 client does. This load does so too, at
//! most [`MAX_RESENDS`] times, and counts them in [`H2Stats::resent`]; any
//! other error, and a fourth cancellation, is a failure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How many times a request that was never written is sent again.
pub const MAX_RESENDS: u32 = 3;

/// The longest one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the HTTP/2 streams saw.
#[derive(Debug, Default)]
pub struct H2Stats {
    /// Successful requests (status 200, answered over HTTP/2).
    pub ok: u64,
    /// Every failure, with why.
    pub failures: Vec<String>,
    /// Requests sent again because the client had not written them before
    /// their connection ended.
    pub resent: u64,
    /// Successful requests per answering worker (the `worker=` field).
    pub by_worker: BTreeMap<u64, u64>,
}

/// Running HTTP/2 load; stop it to get the figures.
#[derive(Debug)]
pub struct H2Load {
    stop: Arc<AtomicBool>,
    latest: Arc<AtomicU64>,
    thread: JoinHandle<H2Stats>,
}

impl H2Load {
    /// Starts `streams` concurrent request loops against `addr`, sharing the
    /// client's connections, until stopped or `max_duration`.
    pub fn start(addr: SocketAddr, streams: usize, max_duration: Duration) -> H2Load {
        let stop = Arc::new(AtomicBool::new(false));
        let latest = Arc::new(AtomicU64::new(0));
        let (stop_, latest_) = (stop.clone(), latest.clone());
        let thread = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    return H2Stats {
                        failures: vec![format!("no tokio runtime: {e}")],
                        ..H2Stats::default()
                    }
                }
            };
            runtime.block_on(run(addr, streams, max_duration, stop_, latest_))
        });
        H2Load {
            stop,
            latest,
            thread,
        }
    }

    /// The highest worker number any response came from so far.
    pub fn latest_worker(&self) -> u64 {
        self.latest.load(Ordering::SeqCst)
    }

    /// Stops the load and returns its figures.
    pub fn stop(self) -> H2Stats {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_else(|_| H2Stats {
            failures: vec!["the HTTP/2 load thread panicked".into()],
            ..H2Stats::default()
        })
    }
}

async fn run(
    addr: SocketAddr,
    streams: usize,
    max_duration: Duration,
    stop: Arc<AtomicBool>,
    latest: Arc<AtomicU64>,
) -> H2Stats {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .retry_canceled_requests(false)
        .build_http::<Empty<Bytes>>();
    let origin = Instant::now();
    let uri: hyper::Uri = match format!("http://{addr}/").parse() {
        Ok(uri) => uri,
        Err(e) => {
            return H2Stats {
                failures: vec![format!("bad address {addr}: {e}")],
                ..H2Stats::default()
            }
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let (client, uri, stop, latest) =
            (client.clone(), uri.clone(), stop.clone(), latest.clone());
        tasks.spawn(async move {
            let mut stats = H2Stats::default();
            while !stop.load(Ordering::SeqCst) && origin.elapsed() < max_duration {
                let outcome = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    get_resending(&client, &uri, &mut stats.resent),
                )
                .await;
                match outcome {
                    Ok(Ok(worker)) => {
                        stats.ok += 1;
                        *stats.by_worker.entry(worker).or_default() += 1;
                        latest.fetch_max(worker, Ordering::SeqCst);
                    }
                    Ok(Err(e)) => stats.failures.push(format!("{:?}: {e}", origin.elapsed())),
                    Err(_) => stats.failures.push(format!(
                        "{:?}: no answer within {REQUEST_TIMEOUT:?}",
                        origin.elapsed()
                    )),
                }
            }
            stats
        });
    }
    let mut total = H2Stats::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(stats) => {
                total.ok += stats.ok;
                total.failures.extend(stats.failures);
                total.resent += stats.resent;
                for (worker, n) in stats.by_worker {
                    *total.by_worker.entry(worker).or_default() += n;
                }
            }
            Err(e) => total.failures.push(format!("a stream task ended: {e}")),
        }
    }
    total
}

type H2Client = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// One request, sent again (counted in `resent`) if it was never written.
async fn get_resending(
    client: &H2Client,
    uri: &hyper::Uri,
    resent: &mut u64,
) -> Result<u64, String> {
    let mut resends = 0;
    loop {
        let request = Request::get(uri.clone())
            .body(Empty::new())
            .map_err(|e| format!("cannot build the request: {e}"))?;
        match get(client, request).await {
            Ok(worker) => return Ok(worker),
            Err(Sent::Not(_)) if resends < MAX_RESENDS => {
                resends += 1;
                *resent += 1;
            }
            Err(Sent::Not(e)) => {
                return Err(format!("never written, after {resends} resends: {e}"))
            }
            Err(Sent::Failed(e)) => return Err(e),
        }
    }
}

/// Why a request failed.
enum Sent {
    /// The client canceled it before writing it.
    Not(String),
    /// Anything else.
    Failed(String),
}

/// One request: the answering worker's number, or why it failed.
async fn get(client: &H2Client, request: Request<Empty<Bytes>>) -> Result<u64, Sent> {
    let response = client.request(request).await.map_err(|e| {
        let canceled = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<hyper::Error>())
            .is_some_and(hyper::Error::is_canceled);
        if canceled {
            Sent::Not(format!("{e:?}"))
        } else {
            Sent::Failed(format!("{e:?}"))
        }
    })?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| Sent::Failed(format!("reading the body: {e}")))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    if parts.status != 200 {
        return Err(Sent::Failed(format!("status {}: {text}", parts.status)));
    }
    if parts.version != Version::HTTP_2 {
        return Err(Sent::Failed(format!("answered over {:?}", parts.version)));
    }
    text.split_whitespace()
        .find_map(|field| field.strip_prefix("worker=")?.parse().ok())
        .ok_or_else(|| Sent::Failed(format!("no worker= field in {text:?}")))
}
