//! `s3s-fs`, a filesystem-backed S3 server that checks every request's
//! SigV4 signature, started on a free loopback port with one bucket. Shared
//! by the S3 fetcher's tests and the CLI's fleet tests.
//!
//! It is looked up in `OVERSEER_S3S_FS` (a path), then `PATH`, then
//! `$CARGO_HOME/bin`. Without it the tests fail and say how to install it,
//! unless `OVERSEER_SKIP_S3=1` is set.
#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BUCKET: &str = "releases";
pub const ACCESS_KEY: &str = "overseer-test";
pub const SECRET_KEY: &str = "s3cr3t-for-sigv4-checks";
pub const INSTALL: &str = "cargo install s3s-fs --version 0.14.1 --features binary --locked";

/// The `s3s-fs` process and its data directory; killed and removed on drop.
pub struct Server {
    pub bin: PathBuf,
    pub child: Child,
    pub port: u16,
    pub data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn launch(bin: &std::path::Path, port: u16, data: &std::path::Path) -> Child {
        Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()))
    }

    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                eprintln!("s3s-fs exited at start ({status})");
                return false;
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("s3s-fs did not listen on port {} within 20 s", self.port);
    }

    /// Kills the server (connections in flight break off).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::launch(&self.bin, self.port, self.data.path());
        assert!(self.wait_listening(), "s3s-fs did not restart");
    }
}

pub fn server_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("OVERSEER_S3S_FS") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
}

/// Starts `s3s-fs` with authentication on a free loopback port, with one
/// bucket; `None` (skip) only when the binary is missing and
/// `OVERSEER_SKIP_S3=1`.
pub fn start_server() -> Option<Server> {
    let Some(bin) = server_binary() else {
        if std::env::var("OVERSEER_SKIP_S3").as_deref() == Ok("1") {
            eprintln!("s3s-fs not found; skipped (OVERSEER_SKIP_S3=1)");
            return None;
        }
        panic!(
            "the S3 tests need the s3s-fs server binary, which was not found in \
             OVERSEER_S3S_FS, PATH or $CARGO_HOME/bin. Install it with\n    {INSTALL}\n\
             or set OVERSEER_SKIP_S3=1 to skip these tests."
        );
    };
    // The port is free when asked; another process could take it before the
    // server binds, so a server that exits at once is tried again.
    for _attempt in 0..3 {
        let data = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(data.path().join(BUCKET)).expect("bucket dir");
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Server::launch(&bin, port, data.path());
        let mut server = Server {
            bin: bin.clone(),
            child,
            port,
            data,
        };
        if server.wait_listening() {
            return Some(server);
        }
    }
    panic!("s3s-fs would not start (see its output above)");
}
