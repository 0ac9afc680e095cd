//! A worker that knows nothing of overseer: it takes its socket with the
//! `listenfd` crate (systemd socket activation, which checks `LISTEN_PID`),
//! answers each connection with one HTTP response, and stops on SIGTERM.

use std::io::{Read, Write};
use std::time::Duration;

fn main() {
    let mut fds = listenfd::ListenFd::from_env();
    let listener = match fds.take_tcp_listener(0) {
        Ok(Some(l)) => l,
        Ok(None) => {
            eprintln!("listenfd-worker: no socket passed (LISTEN_FDS/LISTEN_PID not for us)");
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("listenfd-worker: {e}");
            std::process::exit(2);
        }
    };
    let worker = std::env::var("OVERSEER_WORKER").unwrap_or_default();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    eprintln!("listenfd-worker {worker} serving");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut buf = [0u8; 2048];
        let _ = stream.read(&mut buf);
        let body = format!(
            "worker={worker} pid={} listenfd=ok names={names}\n",
            std::process::id()
        );
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
