//! The service's listening sockets, opened once by the master (or by fallback
//! mode, when the master failed before it opened them): adopted from socket
//! activation when the process was started that way (a systemd `.socket`
//! unit, `systemd-socket-activate`), bound otherwise.
//!
//! A passed socket serves the configured address whose name (set with
//! [`Config::named_address`](crate::Config::named_address)) equals its `LISTEN_FDNAMES` entry, else the
//! configured address it is bound to (`host:port`, `:port` for a socket on
//! every interface, `unix:/path`). Configured addresses left over are bound
//! as usual. With no configured address at all, the master serves every
//! passed socket, in order; otherwise passed sockets no address asks for are
//! closed, with a warning.
//!
//! The worker environment is built without the master's `LISTEN_*`
//! variables, so the workers never see them; the descriptors themselves are
//! adopted once (close-on-exec) and passed on at 3.. like bound ones. The
//! socket file of an adopted Unix socket belongs to whoever passed it and is
//! not removed when the master exits.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::address::{Address, Bind, Named};
use crate::error::Result;
use crate::listener::{self, Listener, Socket};
use crate::log;
use crate::protocol::{LISTEN_FDNAMES, LISTEN_FDS_START};

/// Adopts the sockets passed to this process by socket activation, and binds
/// the configured `addresses` (each with its configured name, if any) none
/// of them serves, with `backlog`. On error nothing this function
/// bound stays bound. Used by the master, and by fallback mode when the
/// master could not start before it opened its sockets.
///
/// The sockets come in the program's order (worker fds 3, 4, …).
pub(crate) fn open(
    addresses: &[Named<Address>],
    backlog: i32,
    reuse_port: bool,
) -> Result<Vec<Socket>> {
    let passed = match listener::passed_count() {
        // Taken by a master whose set-up then failed before it could hand
        // them over: they are closed, and the addresses are bound instead.
        Ok(Some(n)) if n > 0 && listener::adopted() => {
            log::debug!("the {n} passed socket(s) were taken and closed already");
            Vec::new()
        }
        Ok(Some(n)) if n > 0 => listener::adopt_passed(n)?,
        Ok(_) => Vec::new(),
        Err(e) => {
            log::debug!("not adopting passed sockets: {e}");
            Vec::new()
        }
    };
    let fd_names = passed_names(passed.len());
    if addresses.is_empty() && !passed.is_empty() {
        return Ok(take_all(passed, &fd_names));
    }
    let described: Vec<(Local, Option<&str>)> = passed
        .iter()
        .zip(&fd_names)
        .map(|(l, n)| (Local::of(l), n.as_deref()))
        .collect();
    let configured: Vec<(&Bind, Option<&str>)> = addresses
        .iter()
        .map(|a| (&a.address.bind, a.name.as_deref()))
        .collect();
    let plan = assign(&configured, &described);
    let mut passed: Vec<Option<Listener>> = passed.into_iter().map(Some).collect();
    let mut bound: Vec<Socket> = Vec::with_capacity(addresses.len());
    for (i, (Named { name, address }, slot)) in addresses.iter().zip(plan).enumerate() {
        let name = listener::fd_name(name.as_deref(), i);
        match slot.and_then(|j| Some((j, passed.get_mut(j)?.take()?))) {
            Some((j, listener)) => {
                let local = listener.local_addr_string();
                let wanted = if local == address.text {
                    String::new()
                } else {
                    format!(" for {address}")
                };
                log::info!(
                    "adopted {local} from socket activation (fd {}){wanted}",
                    fd(j)
                );
                bound.push(Socket {
                    name,
                    address: address.text.clone(),
                    listener,
                    unix_path: None,
                });
            }
            None => match listener::bind_one(address, name, backlog, reuse_port) {
                Ok(b) => {
                    log::info!(
                        "listening on {address} ({})",
                        b.listener.local_addr_string()
                    );
                    bound.push(b);
                }
                Err(e) => {
                    listener::remove_socket_files(&bound);
                    return Err(e);
                }
            },
        }
    }
    let unused: Vec<String> = passed
        .iter()
        .enumerate()
        .filter_map(|(j, l)| {
            Some(format!(
                "{} (fd {})",
                l.as_ref()?.local_addr_string(),
                fd(j)
            ))
        })
        .collect();
    if !unused.is_empty() {
        log::warning!(
            "socket activation passed sockets no configured address asks for; closing {}",
            unused.join(", ")
        );
    }
    Ok(bound)
}

/// With no configured address, every passed socket is served, in order.
fn take_all(passed: Vec<Listener>, fd_names: &[Option<String>]) -> Vec<Socket> {
    passed
        .into_iter()
        .enumerate()
        .map(|(j, listener)| {
            let address = listener.local_addr_string();
            log::info!("adopted {address} from socket activation (fd {})", fd(j));
            Socket {
                name: listener::fd_name(fd_names.get(j).and_then(Option::as_deref), j),
                address,
                listener,
                unix_path: None,
            }
        })
        .collect()
}

/// The descriptor number of the `j`-th passed socket.
fn fd(j: usize) -> i32 {
    LISTEN_FDS_START + j as i32
}

/// The `LISTEN_FDNAMES` entry of each passed socket (`None` where missing or empty).
fn passed_names(count: usize) -> Vec<Option<String>> {
    let all = std::env::var(LISTEN_FDNAMES).unwrap_or_default();
    let mut names = all
        .split(':')
        .map(|n| (!n.is_empty()).then(|| n.to_string()));
    (0..count).map(|_| names.next().flatten()).collect()
}

/// Where a passed socket is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Local {
    Tcp(SocketAddr),
    Udp(SocketAddr),
    Unix(PathBuf),
    Unknown,
}

impl Local {
    fn of(listener: &Listener) -> Local {
        if let Some(l) = listener.as_tcp() {
            return l.local_addr().map_or(Local::Unknown, Local::Tcp);
        }
        if let Some(s) = listener.as_udp() {
            return s.local_addr().map_or(Local::Unknown, Local::Udp);
        }
        if let Some(l) = listener.as_unix() {
            let path = l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(PathBuf::from));
            return path.map_or(Local::Unknown, Local::Unix);
        }
        Local::Unknown
    }
}

/// Whether a socket of this kind can serve a configured address at all.
fn same_kind(bind: &Bind, local: &Local) -> bool {
    matches!(
        (bind, local),
        (Bind::Tcp(_) | Bind::TcpAny(_), Local::Tcp(_))
            | (Bind::Udp(_) | Bind::UdpAny(_), Local::Udp(_))
            | (Bind::Unix(_), Local::Unix(_))
    )
}

/// Whether a passed socket is bound where the configured address asks.
fn serves(bind: &Bind, local: &Local) -> bool {
    match (bind, local) {
        (Bind::Tcp(want), Local::Tcp(got)) | (Bind::Udp(want), Local::Udp(got)) => want == got,
        (Bind::TcpAny(port), Local::Tcp(got)) | (Bind::UdpAny(port), Local::Udp(got)) => {
            got.ip().is_unspecified() && got.port() == *port
        }
        (Bind::Unix(want), Local::Unix(got)) => want == got,
        _ => false,
    }
}

/// For each configured address (with its name, if any), the passed socket
/// that serves it: first by name (a socket of the same kind), then by where
/// it is bound. Each passed socket serves at most one address.
fn assign(
    configured: &[(&Bind, Option<&str>)],
    passed: &[(Local, Option<&str>)],
) -> Vec<Option<usize>> {
    let mut taken = vec![false; passed.len()];
    let mut plan = vec![None; configured.len()];
    for (i, (bind, name)) in configured.iter().enumerate() {
        if let Some(name) = name {
            plan[i] = first_free(&mut taken, |j| {
                passed[j].1 == Some(*name) && same_kind(bind, &passed[j].0)
            });
        }
    }
    for (i, (bind, _)) in configured.iter().enumerate() {
        if plan[i].is_none() {
            plan[i] = first_free(&mut taken, |j| serves(bind, &passed[j].0));
        }
    }
    plan
}

/// Takes the first index not yet taken for which `ok` holds.
fn first_free(taken: &mut [bool], ok: impl Fn(usize) -> bool) -> Option<usize> {
    let j = (0..taken.len()).find(|&j| !taken[j] && ok(j))?;
    taken[j] = true;
    Some(j)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bind(text: &str) -> Bind {
        Address::parse(text).unwrap().bind
    }

    fn tcp(text: &str) -> Local {
        Local::Tcp(text.parse().unwrap())
    }

    #[test]
    fn addresses_match_where_the_socket_is_bound() {
        let cases = [
            ("127.0.0.1:8080", tcp("127.0.0.1:8080"), true),
            ("127.0.0.1:8080", tcp("127.0.0.1:8081"), false),
            ("127.0.0.1:8080", tcp("0.0.0.0:8080"), false),
            ("[::1]:8080", tcp("[::1]:8080"), true),
            (":8080", tcp("0.0.0.0:8080"), true),
            (":8080", tcp("[::]:8080"), true),
            (":8080", tcp("127.0.0.1:8080"), false),
            (":8080", Local::Udp("0.0.0.0:8080".parse().unwrap()), false),
            ("udp::53", Local::Udp("[::]:53".parse().unwrap()), true),
            ("udp:127.0.0.1:53", tcp("127.0.0.1:53"), false),
            (
                "unix:/run/app.sock",
                Local::Unix("/run/app.sock".into()),
                true,
            ),
            (
                "unix:/run/app.sock",
                Local::Unix("/run/other.sock".into()),
                false,
            ),
            ("unix:/run/app.sock", Local::Unknown, false),
        ];
        for (text, local, expected) in cases {
            assert_eq!(serves(&bind(text), &local), expected, "{text} vs {local:?}");
        }
    }

    #[test]
    fn names_win_then_addresses_and_each_socket_serves_once() {
        let web = bind(":8080");
        let admin = bind("127.0.0.1:9000");
        let metrics = bind("127.0.0.1:9100");
        let passed = [
            (tcp("127.0.0.1:9000"), None),
            // systemd chose the port; the name says which address it is for.
            (tcp("[::]:80"), Some("web")),
            (tcp("127.0.0.1:9000"), None),
            (Local::Unix("/run/x.sock".into()), Some("metrics")),
        ];
        let plan = assign(
            &[
                (&web, Some("web")),
                (&admin, None),
                (&admin, None),
                (&admin, None),
                // Named, but the socket with that name is of another kind:
                // it is bound instead.
                (&metrics, Some("metrics")),
            ],
            &passed,
        );
        assert_eq!(plan, [Some(1), Some(0), Some(2), None, None]);
    }

    #[test]
    fn no_passed_sockets_means_every_address_is_bound() {
        let web = bind(":8080");
        assert_eq!(assign(&[(&web, Some("web"))], &[]), [None]);
        assert!(assign(&[], &[(tcp("127.0.0.1:1"), None)]).is_empty());
    }
}
