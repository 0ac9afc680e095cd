//! A worker that knows nothing of overseer: it takes its socket with the
//! `listenfd` crate (systemd socket activation, which checks `LISTEN_PID`),
//! TCP or Unix, and answers each connection with one HTTP response.

use std::io::{Read, Write};
use std::time::Duration;

fn main() {
    let mut fds = listenfd::ListenFd::from_env();
    let worker = std::env::var("OVERSEER_WORKER").unwrap_or_default();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let body = |kind: &str| {
        format!(
            "worker={worker} pid={} listenfd=ok kind={kind} names={names}\n",
            std::process::id()
        )
    };
    if let Ok(Some(listener)) = fds.take_tcp_listener(0) {
        eprintln!("listenfd-worker {worker} serving tcp");
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            answer(stream, &body("tcp"));
        }
    } else if let Ok(Some(listener)) = fds.take_unix_listener(0) {
        eprintln!("listenfd-worker {worker} serving unix");
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            answer(stream, &body("unix"));
        }
    } else {
        eprintln!("listenfd-worker: no socket passed (LISTEN_FDS/LISTEN_PID not for us)");
        std::process::exit(2);
    }
}

fn answer(mut stream: impl Read + Write, body: &str) {
    let mut buf = [0u8; 2048];
    let _ = stream.read(&mut buf);
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
