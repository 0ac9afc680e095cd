//! What the master's loop reacts to: the messages its threads (signals,
//! notify relays, readiness watchers, the control socket) and the upgrade
//! thread send it.

use std::os::unix::net::UnixStream;
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
    /// A re-exec of the master was asked for by `source`; `client` is the
    /// control client waiting for its outcome.
    Reload {
        source: String,
        client: Option<UnixStream>,
    },
    /// The check of the new master binary for a re-exec ended: `Ok`, or
    /// why not, and whether it is the request's input that is wrong.
    Checked(Result<(), Refusal>),
}

/// Why a re-exec was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub reason: String,
    /// The request's input is wrong (a configuration file with an error):
    /// answered `refused:`, not `error:`.
    pub bad_input: bool,
}

/// What a control client asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    Restart,
    Status,
}

/// The whole answer to one control request, as sent on the wire.
pub(crate) type Answer = String;
