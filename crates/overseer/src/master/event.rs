//! What the master's loop reacts to: the messages its threads (signals,
//! notify relays, readiness watchers, the control socket) and the upgrade
//! thread send it.

use std::sync::mpsc::Sender;

use crate::upgrade::Report;

/// What the master's loop reacts to.
#[derive(Debug)]
pub(crate) enum Event {
    /// A signal other than SIGCHLD.
    Signal { signal: i32, from_terminal: bool },
    /// SIGCHLD: some child changed state.
    Child,
    /// An sd_notify datagram from a worker.
    Notify { worker: u64, message: String },
    /// `restart()` called in the master process.
    Restart,
    /// News from the upgrade thread: a release installed, or turned down.
    Upgrade(Report),
    /// A request on the control socket, with where to send the answer.
    Control(Request, Sender<Answer>),
}

/// What a control client asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    Restart,
    Status,
}

/// The whole answer to one control request, as sent on the wire.
pub(crate) type Answer = String;
