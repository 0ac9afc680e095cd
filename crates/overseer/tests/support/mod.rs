//! A real HTTP server on loopback for the fetcher tests, recording what it saw.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Router;

/// What a test server saw of one request.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub headers: HeaderMap,
    pub status: StatusCode,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A real HTTP server on 127.0.0.1, answering with `handler`.
pub struct Server {
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    pub fn start(handler: impl Fn(&Parts) -> Response + Send + Sync + 'static) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let hits = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let log = hits.clone();
        let app = Router::new().fallback(move |request: Request| {
            let (handler, log) = (handler.clone(), log.clone());
            async move {
                let (parts, _) = request.into_parts();
                let response = handler(&parts);
                lock(&log).push(Hit {
                    path: parts.uri.to_string(),
                    headers: parts.headers.clone(),
                    status: response.status(),
                });
                response
            }
        });
        runtime.spawn(async move { axum::serve(listener, app).await });
        Server {
            addr,
            hits,
            _runtime: runtime,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> Vec<Hit> {
        lock(&self.hits).clone()
    }
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Body>) -> Response {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    response.body(body.into()).expect("response")
}

pub fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}
