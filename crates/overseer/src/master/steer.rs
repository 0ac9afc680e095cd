//! Connection steering (`Config::steer_connections`): each worker
//! generation accepts on a listening socket of its own in one `SO_REUSEPORT`
//! group per TCP address, and a one-instruction classic BPF program sends
//! every new connection to the newest ready worker's socket. The worker it
//! replaces then takes no new connection before it is told to drain, and
//! the master tells it only once its own accept queue is empty: a server
//! that drops connections it accepted but has not read yet (at SIGTERM)
//! has none.
//!
//! The group's sockets are numbered by the order in which they started
//! listening, and closing one renumbers the last; so the master never closes
//! one while it runs. A socket whose workers have all ended is given to the
//! next worker instead of a new one (its queue is empty: no connection has
//! been sent to it since its worker stopped being the newest). The master's
//! own socket (number 0) is the first worker's; the group exists from the
//! start, as the master binds its sockets with `SO_REUSEPORT` when steering
//! is on (a socket passed by socket activation must have it already:
//! systemd's `ReusePort=yes`; without it, that address is shared as usual).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, SockRef, Socket as RawSocket, Type};

use super::carried::{GroupState, SteeringState};
use crate::listener::Socket;
use crate::log;
use crate::sys;

/// Which socket number (slot) each live worker accepts on: the decisions,
/// apart from the sockets.
#[derive(Debug)]
pub(crate) struct Slots {
    /// How many slots exist (0 and up).
    count: usize,
    /// Live workers and their slots.
    users: Vec<(u64, usize)>,
}

impl Slots {
    /// Slot 0 only: the master's own sockets.
    pub fn new() -> Slots {
        Slots {
            count: 1,
            users: Vec::new(),
        }
    }

    /// The slot for worker `number`: `wanted` if it exists and no live
    /// worker uses it (or `share`: whoever uses it), else the lowest that
    /// none uses, or a new one (then `count` grew).
    pub fn assign(&mut self, number: u64, wanted: Option<usize>, share: bool) -> usize {
        self.users.retain(|(n, _)| *n != number);
        let slot = wanted
            .filter(|&w| w < self.count && (share || self.is_free(w)))
            .or_else(|| (0..self.count).find(|&s| self.is_free(s)))
            .unwrap_or(self.count);
        self.count = self.count.max(slot + 1);
        self.users.push((number, slot));
        slot
    }

    /// Whether no live worker uses `slot`.
    pub fn is_free(&self, slot: usize) -> bool {
        !self.users.iter().any(|(_, used)| *used == slot)
    }

    /// The slot of worker `number`, while it lives.
    pub fn of(&self, number: u64) -> Option<usize> {
        self.users
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, s)| *s)
    }

    /// Worker `number` has ended: its slot is free for a later one.
    pub fn release(&mut self, number: u64) {
        self.users.retain(|(n, _)| *n != number);
    }

    /// How many slots exist.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.count
    }
}

/// One steered address: its socket per slot.
#[derive(Debug)]
struct Group {
    /// Where the address's socket sits among the workers' fds.
    position: usize,
    /// Where the sockets are bound.
    local: SocketAddr,
    only_v6: bool,
    /// Slot `i`'s socket, the master's own copy.
    sockets: Vec<OwnedFd>,
}

/// The steered addresses, and which worker accepts on which slot.
#[derive(Debug)]
pub(crate) struct Steering {
    groups: Vec<Group>,
    slots: Slots,
    backlog: i32,
}

impl Steering {
    /// Steering for the TCP sockets among `sockets` that can be steered, or
    /// `None` when none can (each that cannot is logged). New connections go
    /// to the master's own sockets (slot 0) until a later worker is ready.
    pub fn new(sockets: &[Socket], backlog: i32) -> Option<Steering> {
        let mut groups = Vec::new();
        for (position, socket) in sockets.iter().enumerate() {
            let Some(tcp) = socket.listener.as_tcp() else {
                continue;
            };
            let steered = group(position, tcp.as_fd()).and_then(|g| {
                // Every new connection to the master's own socket until a
                // later worker is ready (and before a second socket listens).
                // Fails (EINVAL) when the socket started listening before it
                // had SO_REUSEPORT: it is in no group, and none can be made.
                sys::steer_group(g.sockets[0].as_raw_fd(), 0)?;
                Ok(g)
            });
            match steered {
                Ok(g) => groups.push(g),
                Err(e) => log::warning!(
                    "connections to {} are not steered (its socket is shared by every worker, as without steering): {e}",
                    socket.address
                ),
            }
        }
        if groups.is_empty() {
            return None;
        }
        Some(Steering {
            groups,
            slots: Slots::new(),
            backlog,
        })
    }

    /// Gives worker `number` a slot and puts that slot's sockets at the
    /// steered positions of `fds` (the worker's fds 3..): `rescue` (shared
    /// with the worker that left connections there), or a free one, one
    /// with connections waiting first. A new slot's sockets are opened here;
    /// new connections are not sent to them yet.
    pub fn place(
        &mut self,
        number: u64,
        fds: &mut [RawFd],
        rescue: Option<usize>,
    ) -> io::Result<()> {
        let slot = match rescue {
            Some(slot) => self.slots.assign(number, Some(slot), true),
            None => self.slots.assign(number, self.stranded(|_| false), false),
        };
        for g in &mut self.groups {
            // In slot order, so each socket's number is its place in the
            // group (one that failed to open before is opened now first).
            while g.sockets.len() <= slot {
                match open_member(g.local, g.only_v6, self.backlog) {
                    Ok(fd) => g.sockets.push(fd),
                    Err(e) => {
                        self.slots.release(number);
                        return Err(e);
                    }
                }
            }
        }
        for g in &self.groups {
            if let (Some(fd), Some(socket)) = (fds.get_mut(g.position), g.sockets.get(slot)) {
                *fd = socket.as_raw_fd();
            }
        }
        Ok(())
    }

    /// Sends every new connection to worker `number`'s sockets.
    pub fn steer_to(&mut self, number: u64) {
        let Some(slot) = self.slots.of(number) else {
            return;
        };
        for g in &self.groups {
            if let Err(e) = sys::steer_group(g.sockets[0].as_raw_fd(), slot as u32) {
                log::warning!(
                    "cannot steer connections to {} to worker {number}: {e}",
                    g.local
                );
            }
        }
    }

    /// Connections waiting in worker `number`'s accept queues (0 once it
    /// has taken all that were sent to it; an unreadable queue counts 0).
    pub fn queued(&self, number: u64) -> u32 {
        let Some(slot) = self.slots.of(number) else {
            return 0;
        };
        self.groups
            .iter()
            .filter_map(|g| g.sockets.get(slot))
            .map(|fd| sys::accept_queue(fd.as_raw_fd()).unwrap_or(0))
            .sum()
    }

    /// A slot with connections waiting in its queue and no worker that
    /// will take them: none uses it, or none of its users is `accepting`
    /// (they were told to drain, or stopped accepting before).
    pub fn stranded(&self, accepting: impl Fn(u64) -> bool) -> Option<usize> {
        (0..self.slots.count).find(|&slot| {
            !self
                .slots
                .users
                .iter()
                .any(|(n, s)| *s == slot && accepting(*n))
                && self
                    .groups
                    .iter()
                    .filter_map(|g| g.sockets.get(slot))
                    .any(|fd| sys::accept_queue(fd.as_raw_fd()).unwrap_or(0) > 0)
        })
    }

    /// Worker `number` has ended: its slot goes to a later worker.
    pub fn forget(&mut self, number: u64) {
        self.slots.release(number);
    }

    /// What a new image needs to go on steering: each group's sockets
    /// beyond slot 0 (named by the address of the master's socket in
    /// `sockets`, the held ones), and the slots' users.
    pub fn carry(&self, sockets: &[Socket]) -> SteeringState {
        SteeringState {
            groups: self
                .groups
                .iter()
                .map(|g| GroupState {
                    address: sockets
                        .get(g.position)
                        .map(|s| s.address.clone())
                        .unwrap_or_default(),
                    fds: g.sockets[1..].iter().map(|s| s.as_raw_fd()).collect(),
                })
                .collect(),
            slots: self.slots.count,
            users: self.slots.users.clone(),
        }
    }

    /// Goes on steering as carried, over `sockets` (this image's), on copies
    /// of the carried descriptors; the group's program stays as it is. Every
    /// steered address must still be configured: a steered socket cannot be
    /// retired while workers may accept on its group.
    pub fn adopt(
        state: &SteeringState,
        sockets: &[Socket],
        backlog: i32,
    ) -> Result<Steering, String> {
        let mut groups = Vec::new();
        for carried in &state.groups {
            let position = sockets
                .iter()
                .position(|s| s.address == carried.address && s.listener.as_tcp().is_some())
                .ok_or_else(|| {
                    format!(
                        "connections to {} are steered, and it is no longer configured: steering cannot follow that across a re-exec (restart the service to change its steered addresses)",
                        carried.address
                    )
                })?;
            let Some(tcp) = sockets[position].listener.as_tcp() else {
                continue;
            };
            let mut g = group(position, tcp.as_fd())
                .map_err(|e| format!("steering {}: {e}", carried.address))?;
            for &fd in &carried.fds {
                g.sockets.push(
                    sys::dup_fd(fd).map_err(|e| {
                        format!("steering {}: descriptor {fd}: {e}", carried.address)
                    })?,
                );
            }
            groups.push(g);
        }
        Ok(Steering {
            groups,
            slots: Slots {
                count: state.slots.max(1),
                users: state.users.clone(),
            },
            backlog,
        })
    }
}

/// The steered group of the master's socket at `position`: its address,
/// and a copy of it as slot 0.
fn group(position: usize, socket: std::os::fd::BorrowedFd<'_>) -> io::Result<Group> {
    let sock = SockRef::from(&socket);
    if !sock.reuse_port()? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "its socket has no SO_REUSEPORT (a socket passed by systemd needs ReusePort=yes; one bound before a re-exec turned steering on, a restart of the service)",
        ));
    }
    let local = sock
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))?;
    let only_v6 = local.is_ipv6() && sock.only_v6()?;
    let own = sys::dup_fd(socket.as_raw_fd())?;
    Ok(Group {
        position,
        local,
        only_v6,
        sockets: vec![own],
    })
}

/// A new member of the group at `local`: bound there with `SO_REUSEPORT`,
/// listening (it joins the group last, so the slot numbers of the others do
/// not change).
fn open_member(local: SocketAddr, only_v6: bool, backlog: i32) -> io::Result<OwnedFd> {
    let socket = RawSocket::new(
        Domain::for_address(local),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if local.is_ipv6() {
        socket.set_only_v6(only_v6)?;
    }
    socket.bind(&local.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_slots_are_reused_lowest_first_and_new_ones_added_only_when_all_are_taken() {
        let mut slots = Slots::new();
        assert_eq!(slots.assign(1, None, false), 0);
        assert_eq!(slots.assign(2, None, false), 1, "worker 1 still lives");
        assert_eq!(slots.count(), 2);
        slots.release(1);
        assert_eq!(
            slots.assign(3, None, false),
            0,
            "worker 1's slot is free again"
        );
        assert_eq!(slots.assign(4, None, false), 2, "both taken: a new one");
        slots.release(2);
        slots.release(3);
        assert_eq!(slots.assign(5, None, false), 0);
        assert_eq!(slots.of(4), Some(2));
        assert_eq!(slots.of(2), None);
        assert_eq!(slots.count(), 3);
    }

    #[test]
    fn a_worker_assigned_again_keeps_one_slot() {
        let mut slots = Slots::new();
        assert_eq!(slots.assign(7, None, false), 0);
        assert_eq!(slots.assign(7, None, false), 0);
        assert_eq!(slots.of(7), Some(0));
    }

    #[test]
    fn a_wanted_slot_is_taken_only_when_free_and_existing() {
        let mut slots = Slots::new();
        assert_eq!(slots.assign(1, None, false), 0);
        assert_eq!(slots.assign(2, None, false), 1);
        assert_eq!(slots.assign(3, None, false), 2);
        slots.release(1);
        slots.release(2);
        assert_eq!(slots.assign(4, Some(1), false), 1, "free: the wanted one");
        assert_eq!(
            slots.assign(5, Some(2), false),
            0,
            "in use: the lowest free"
        );
        assert_eq!(
            slots.assign(6, Some(9), false),
            3,
            "no such slot, none free: a new one"
        );
    }
}
