//! The graceful-shutdown notification a worker receives when it must drain.
//!
//! It is deliberately runtime-free: a flag, a condition variable for blocking
//! waiters and a list of wakers for `async` ones, so the same handle serves a
//! thread-per-connection server and `axum::serve(..).with_graceful_shutdown(..)`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Inner {
    triggered: AtomicBool,
    wakers: Mutex<Wakers>,
    cond: Condvar,
}

/// Wakers of pending futures, each under the id of its future, so a dropped
/// future takes its waker out (a server may create one per connection).
#[derive(Debug, Default)]
struct Wakers {
    next_id: u64,
    waiting: Vec<(u64, Waker)>,
}

/// A cloneable, one-shot "time to drain" notification.
///
/// Overseer triggers it when the worker receives SIGTERM (a handover finished
/// or the service is stopping). Stop accepting, finish in-flight work and
/// return from the program; the master kills the worker if it is still alive
/// after `terminate_timeout`.
///
/// ```
/// let shutdown = overseer::Shutdown::new();
/// let waiter = shutdown.clone();
/// let handle = std::thread::spawn(move || waiter.wait());
/// shutdown.trigger();
/// handle.join().unwrap();
/// assert!(shutdown.is_triggered());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

impl Shutdown {
    /// A notification that has not fired yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn wakers(&self) -> MutexGuard<'_, Wakers> {
        self.inner
            .wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Fires the notification; later calls do nothing.
    pub fn trigger(&self) {
        let mut wakers = self.wakers();
        self.inner.triggered.store(true, Ordering::SeqCst);
        for (_, waker) in wakers.waiting.drain(..) {
            waker.wake();
        }
        self.inner.cond.notify_all();
    }

    /// Whether the notification has fired.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Blocks the calling thread until the notification fires.
    pub fn wait(&self) {
        let mut guard = self.wakers();
        while !self.is_triggered() {
            guard = self
                .inner
                .cond
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Blocks for at most `timeout`; returns whether the notification fired.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.wakers();
        while !self.is_triggered() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = self
                .inner
                .cond
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// A future that completes when the notification fires.
    ///
    /// It needs no particular runtime and is `Send + 'static`, so it plugs
    /// straight into `axum::serve(..).with_graceful_shutdown(state.shutdown.notified())`.
    pub fn notified(&self) -> Notified {
        Notified {
            shutdown: self.clone(),
            id: None,
        }
    }
}

/// The future returned by [`Shutdown::notified`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Notified {
    shutdown: Shutdown,
    /// The id under which this future's waker is registered, once polled.
    id: Option<u64>,
}

impl Future for Notified {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.shutdown.is_triggered() {
            return Poll::Ready(());
        }
        let mut wakers = this.shutdown.wakers();
        // Checked again under the lock: `trigger` sets the flag while holding it.
        if this.shutdown.is_triggered() {
            return Poll::Ready(());
        }
        let registered = this
            .id
            .and_then(|id| wakers.waiting.iter_mut().find(|(i, _)| *i == id));
        match registered {
            Some((_, waker)) => {
                if !waker.will_wake(cx.waker()) {
                    *waker = cx.waker().clone();
                }
            }
            None => {
                let id = wakers.next_id;
                wakers.next_id += 1;
                wakers.waiting.push((id, cx.waker().clone()));
                this.id = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.shutdown.wakers().waiting.retain(|(i, _)| *i != id);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn future_wakes_once_triggered() {
        let shutdown = Shutdown::new();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = shutdown.notified();
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        shutdown.trigger();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_ready());
    }

    #[test]
    fn dropped_futures_leave_no_waker_behind() {
        let shutdown = Shutdown::new();
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..100 {
            let mut fut = shutdown.notified();
            assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        }
        assert!(shutdown.wakers().waiting.is_empty());
    }

    #[test]
    fn wait_timeout_reports_state() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.wait_timeout(Duration::from_millis(10)));
        shutdown.trigger();
        assert!(shutdown.wait_timeout(Duration::from_secs(0)));
        shutdown.wait();
    }
}
