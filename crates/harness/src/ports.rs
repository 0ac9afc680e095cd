//! Free loopback ports for servers that bind an address they are given.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// A loopback port that was free a moment ago, below Linux's ephemeral range
/// (32768-60999), so no client's local port is likely to take it between
/// this check and the server's bind. Successive calls in one process give
/// different ports; processes start at different points (by pid).
///
/// The window between check and bind cannot be closed from outside the
/// server, so a test whose server reports "address in use" should retry
/// with another port.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id() % 12_000;
    (0..2_000)
        .map(|_| 20_000 + (base + NEXT.fetch_add(7, Ordering::Relaxed)) % 12_000)
        .map(|p| p as u16)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .unwrap_or_else(|| panic!("no free loopback port in 20000-31999"))
}
