//! Async workers that drain without failing a request: tokio, hyper, axum.
//!
//! A worker that is told to drain (its [`Shutdown`](crate::Shutdown) fires)
//! must do three things for no client to see an error:
//!
//! 1. stop accepting at once, so new connections wait in the shared kernel
//!    backlog for the new worker ([`DrainingListener`], feature `tokio`);
//! 2. close each HTTP/1 keep-alive connection *after* answering on it, with
//!    `Connection: close` on the response ([`CloseWhenDraining`], feature
//!    `hyper`), and only after a grace period close the ones that stayed idle:
//!    closing an idle connection at once races with a client that is reusing
//!    it, which then sees a reset or an empty reply;
//! 3. end each HTTP/2 connection with GOAWAY (hyper's graceful shutdown:
//!    streams already started finish, the client opens its next ones
//!    elsewhere), then wait for every connection to finish.
//!
//! [`serve`] (feature `hyper`) does all of it in one call, for an axum
//! `Router` or any tower service, and [`serve_hyper`] for a hyper service:
//!
//! ```no_run
//! # #[cfg(feature = "hyper")]
//! # mod example {
//! use std::convert::Infallible;
//! use hyper::body::Incoming;
//! use hyper::{Request, Response};
//!
//! async fn hello(_: Request<Incoming>) -> Result<Response<String>, Infallible> {
//!     Ok(Response::new("hello\n".to_string()))
//! }
//!
//! fn program(state: overseer::State) {
//!     let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
//!     let served = runtime.block_on(overseer::serve::serve_hyper(
//!         &state,
//!         hyper::service::service_fn(hello),
//!     ));
//!     if let Err(e) = served {
//!         eprintln!("{e}");
//!     }
//! }
//! # }
//! ```
//!
//! None of this is needed by a std worker ([`Shutdown::incoming`](crate::Shutdown::incoming)
//! stops accepting; its HTTP layer does the rest), and none of these crates
//! is built without the features.

#[cfg(feature = "tokio")]
mod listener;
#[cfg(feature = "tokio")]
pub use listener::DrainingListener;

#[cfg(feature = "hyper")]
mod close;
#[cfg(feature = "hyper")]
pub use close::{CloseWhenDraining, CloseWhenDrainingLayer};

#[cfg(feature = "hyper")]
mod http;
#[cfg(feature = "hyper")]
pub use self::http::{serve, serve_hyper, Server, DEFAULT_IDLE_GRACE};
