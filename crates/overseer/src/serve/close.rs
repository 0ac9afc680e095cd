//! `Connection: close` on HTTP/1 responses once the worker drains.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderValue, CONNECTION};
use http::{Request, Response, Version};

use crate::shutdown::Shutdown;

/// A tower layer that adds `Connection: close` to every HTTP/1 response
/// once the worker's [`Shutdown`] has fired, so the server closes each
/// keep-alive connection right after answering on it and the client's next
/// request opens a connection to the new worker.
///
/// [`serve`](super::serve) applies it already; add it yourself when you run
/// your own server loop:
///
/// ```no_run
/// # fn f(state: overseer::State, router: axum::Router) {
/// use overseer::serve::CloseWhenDrainingLayer;
/// let router = router.layer(CloseWhenDrainingLayer::new(state.shutdown.clone()));
/// # }
/// ```
///
/// HTTP/2 responses are left alone (the header is not allowed there); an
/// HTTP/2 connection is drained by GOAWAY instead.
#[derive(Debug, Clone)]
pub struct CloseWhenDrainingLayer {
    shutdown: Shutdown,
}

impl CloseWhenDrainingLayer {
    /// A layer that closes connections once `shutdown` fires.
    pub fn new(shutdown: Shutdown) -> Self {
        Self { shutdown }
    }
}

impl<S> tower_layer::Layer<S> for CloseWhenDrainingLayer {
    type Service = CloseWhenDraining<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CloseWhenDraining::new(inner, self.shutdown.clone())
    }
}

/// The service [`CloseWhenDrainingLayer`] makes: `inner`, with
/// `Connection: close` on its HTTP/1 responses once draining. It is a tower
/// service when `inner` is one, and a hyper service when `inner` is one.
#[derive(Debug, Clone)]
pub struct CloseWhenDraining<S> {
    inner: S,
    shutdown: Shutdown,
    /// Set once a request arrives over HTTP/2 (one connection's service).
    saw_http2: Option<Arc<AtomicBool>>,
}

impl<S> CloseWhenDraining<S> {
    /// `inner`, closing connections once `shutdown` fires.
    pub fn new(inner: S, shutdown: Shutdown) -> Self {
        Self {
            inner,
            shutdown,
            saw_http2: None,
        }
    }

    /// The same, for one connection: `saw_http2` is set by its first HTTP/2
    /// request, so the connection's driver knows to send GOAWAY at once.
    pub(super) fn for_connection(inner: S, shutdown: Shutdown, saw_http2: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            shutdown,
            saw_http2: Some(saw_http2),
        }
    }

    /// Looks at a request before it is passed on: whether its response is
    /// to be marked (HTTP/1), and which protocol its connection speaks.
    fn observe<B>(&self, request: &Request<B>) -> bool {
        let http1 = request.version() < Version::HTTP_2;
        if !http1 {
            if let Some(flag) = &self.saw_http2 {
                flag.store(true, Ordering::Relaxed);
            }
        }
        http1
    }
}

/// Adds `Connection: close` when the worker is draining.
fn mark<B>(response: &mut Response<B>, shutdown: &Shutdown) {
    if shutdown.is_triggered() {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
}

/// The response future of [`CloseWhenDraining`].
pub type Marked<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// The future of one call, marking the response if it is HTTP/1.
fn marked<F, B, E>(future: F, http1: bool, shutdown: Shutdown) -> Marked<Response<B>, E>
where
    F: Future<Output = Result<Response<B>, E>> + Send + 'static,
{
    Box::pin(async move {
        let mut response = future.await?;
        if http1 {
            mark(&mut response, &shutdown);
        }
        Ok(response)
    })
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for CloseWhenDraining<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Marked<Response<ResBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let http1 = self.observe(&request);
        marked(self.inner.call(request), http1, self.shutdown.clone())
    }
}

impl<S, ReqBody, ResBody> hyper::service::Service<Request<ReqBody>> for CloseWhenDraining<S>
where
    S: hyper::service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Marked<Response<ResBody>, S::Error>;

    fn call(&self, request: Request<ReqBody>) -> Self::Future {
        let http1 = self.observe(&request);
        marked(self.inner.call(request), http1, self.shutdown.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// Answers every request with an empty response.
    #[derive(Clone)]
    struct Empty;

    impl hyper::service::Service<Request<()>> for Empty {
        type Response = Response<()>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<()>, Infallible>>;

        fn call(&self, _: Request<()>) -> Self::Future {
            std::future::ready(Ok(Response::new(())))
        }
    }

    fn service(shutdown: &Shutdown, saw_http2: &Arc<AtomicBool>) -> CloseWhenDraining<Empty> {
        CloseWhenDraining::for_connection(Empty, shutdown.clone(), saw_http2.clone())
    }

    fn connection_header(
        service: &CloseWhenDraining<Empty>,
        version: Version,
    ) -> Option<HeaderValue> {
        let request = Request::builder().version(version).body(()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let response = runtime
            .block_on(hyper::service::Service::call(service, request))
            .unwrap();
        response.headers().get(CONNECTION).cloned()
    }

    #[test]
    fn http1_responses_close_only_once_draining() {
        let shutdown = Shutdown::new();
        let saw_http2 = Arc::new(AtomicBool::new(false));
        let service = service(&shutdown, &saw_http2);
        assert_eq!(connection_header(&service, Version::HTTP_11), None);
        shutdown.trigger();
        for version in [Version::HTTP_10, Version::HTTP_11] {
            assert_eq!(connection_header(&service, version).unwrap(), "close");
        }
        assert!(!saw_http2.load(Ordering::Relaxed));
    }

    #[test]
    fn http2_responses_are_left_alone_and_the_connection_is_told() {
        let shutdown = Shutdown::new();
        shutdown.trigger();
        let saw_http2 = Arc::new(AtomicBool::new(false));
        let service = service(&shutdown, &saw_http2);
        assert_eq!(connection_header(&service, Version::HTTP_2), None);
        assert!(saw_http2.load(Ordering::Relaxed));
    }
}
