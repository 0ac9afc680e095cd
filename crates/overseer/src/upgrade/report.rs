//! What the upgrade thread tells the master's loop, and the line it tells it
//! through.

use super::probation::Installed;

/// What the upgrade thread tells the master's loop.
#[derive(Debug)]
pub(crate) enum Report {
    /// A release was swapped in; the loop answers on its `reply` once its
    /// first worker passed or failed probation (see [`probation`](super::probation)).
    Installed(Installed),
    /// A release was turned down, or could not be considered (for the status).
    Rejected(String),
}

/// The upgrade thread's line to the master's loop, handed to it by the
/// master: sends a [`Report`], false once the loop is gone.
pub(crate) struct ToSupervisor(Box<dyn Fn(Report) -> bool + Send>);

impl ToSupervisor {
    /// A line that delivers reports with `send`.
    pub fn new(send: impl Fn(Report) -> bool + Send + 'static) -> Self {
        ToSupervisor(Box::new(send))
    }

    pub(super) fn send(&self, report: Report) -> bool {
        (self.0)(report)
    }
}
