//! Parsing the configured listening addresses.
//!
//! Accepted forms, the same in the library and the CLI:
//!
//! | form | meaning |
//! |---|---|
//! | `host:port`, `127.0.0.1:8080`, `[::1]:8080` | TCP on that address (names are resolved once, first result wins) |
//! | `:port` | TCP on all interfaces (IPv6 dual-stack where available, else IPv4) |
//! | `tcp:…` | the same, spelled out |
//! | `udp:host:port`, `udp::port` | a UDP socket |
//! | `unix:/path/to.sock` | a Unix stream socket (a stale socket file — this user's, refusing connections — is replaced; removed on exit) |

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use crate::error::{Error, Result};

/// What to bind, parsed from an address string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// TCP on a resolved socket address.
    Tcp(SocketAddr),
    /// TCP on every interface at `port` (`:port`).
    TcpAny(u16),
    /// UDP on a resolved socket address.
    Udp(SocketAddr),
    /// UDP on every interface at `port`.
    UdpAny(u16),
    /// A Unix stream socket at a path.
    Unix(PathBuf),
}

/// One configured address: the text the user wrote and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The address exactly as configured.
    pub text: String,
    /// What it asks for.
    pub bind: Bind,
}

/// A listening address as configured, with the name given to it for
/// `LISTEN_FDNAMES` (if any): as written (`Named<String>`, in the
/// configuration) or parsed (`Named<Address>`, to be bound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Named<A> {
    /// The name, set with `Config::named_address`.
    pub name: Option<String>,
    /// The address.
    pub address: A,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Address {
    /// Parses an address in any of the forms listed in the module docs.
    pub fn parse(text: &str) -> Result<Address> {
        let bad = |reason: &str| Error::InvalidAddress {
            address: text.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(bad("empty address"));
        }
        let bind = if let Some(path) = trimmed.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("unix: needs a path, e.g. unix:/run/app.sock"));
            }
            Bind::Unix(PathBuf::from(path))
        } else if let Some(rest) = trimmed.strip_prefix("udp:") {
            match parse_inet(rest).map_err(|r| bad(&r))? {
                Inet::Any(port) => Bind::UdpAny(port),
                Inet::Addr(addr) => Bind::Udp(addr),
            }
        } else {
            let rest = trimmed.strip_prefix("tcp:").unwrap_or(trimmed);
            match parse_inet(rest).map_err(|r| bad(&r))? {
                Inet::Any(port) => Bind::TcpAny(port),
                Inet::Addr(addr) => Bind::Tcp(addr),
            }
        };
        Ok(Address {
            text: text.to_string(),
            bind,
        })
    }
}

enum Inet {
    Any(u16),
    Addr(SocketAddr),
}

fn parse_inet(text: &str) -> std::result::Result<Inet, String> {
    if !text.starts_with('[') && text.matches(':').count() > 1 {
        return Err("IPv6 addresses need brackets, e.g. [::1]:8080".into());
    }
    if let Some(port) = text.strip_prefix(':') {
        return parse_port(port).map(Inet::Any);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Inet::Addr(addr));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("expected host:port, :port, unix:/path or udp:host:port".into());
    };
    let port = parse_port(port)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut resolved = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?;
    resolved
        .next()
        .map(Inet::Addr)
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

fn parse_port(text: &str) -> std::result::Result<u16, String> {
    text.parse::<u16>()
        .map_err(|_| format!("{text:?} is not a port number (0-65535)"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bind(text: &str) -> Bind {
        Address::parse(text)
            .map(|a| a.bind)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn forms() {
        assert_eq!(bind(":3000"), Bind::TcpAny(3000));
        assert_eq!(bind("tcp::3000"), Bind::TcpAny(3000));
        assert_eq!(
            bind("127.0.0.1:80"),
            Bind::Tcp("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(bind("[::1]:80"), Bind::Tcp("[::1]:80".parse().unwrap()));
        assert_eq!(
            bind("udp:127.0.0.1:53"),
            Bind::Udp("127.0.0.1:53".parse().unwrap())
        );
        assert_eq!(bind("udp::53"), Bind::UdpAny(53));
        assert_eq!(bind("unix:/tmp/x.sock"), Bind::Unix("/tmp/x.sock".into()));
        assert!(matches!(bind("localhost:1"), Bind::Tcp(a) if a.ip().is_loopback()));
    }

    #[test]
    fn errors_name_the_problem() {
        for (text, needle) in [
            ("", "empty"),
            ("8080", "expected host:port"),
            (":http", "not a port"),
            (":70000", "not a port"),
            ("::1:80", "brackets"),
            ("unix:", "needs a path"),
        ] {
            let err = Address::parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
