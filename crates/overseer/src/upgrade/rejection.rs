//! Why a release was not installed, and whether that is the release's fault.

use std::io;

/// Why a release was not installed.
#[derive(Debug)]
pub(crate) struct Rejection {
    pub reason: String,
    /// About the release itself (remembered, not tried again) rather than a
    /// passing failure (network, disk) that the next poll may not meet.
    pub of_release: bool,
    /// Signed with a version not newer than the floor: tried again if the
    /// floor is reset by hand.
    pub below_floor: bool,
}

impl Rejection {
    /// A passing failure: the next poll tries again.
    pub fn new(reason: impl Into<String>) -> Self {
        Rejection {
            reason: reason.into(),
            of_release: false,
            below_floor: false,
        }
    }

    /// A fault of the release: remembered and not tried again.
    pub fn release(reason: impl Into<String>) -> Self {
        Rejection {
            reason: reason.into(),
            of_release: true,
            below_floor: false,
        }
    }

    /// A release signed with a version not newer than the floor: remembered
    /// until the floor is reset.
    pub fn below_floor(reason: impl Into<String>) -> Self {
        Rejection {
            below_floor: true,
            ..Rejection::release(reason)
        }
    }

    pub fn io(context: &str, e: io::Error) -> Self {
        Rejection::new(format!("{context}: {e}"))
    }
}
