//! The environment a worker receives: systemd socket activation plus a few
//! `OVERSEER_*` facts. Any program that reads `LISTEN_FDS` can be a worker.
//!
//! | variable | meaning |
//! |---|---|
//! | `LISTEN_FDS` | number of sockets, at fds 3, 4, … in configured order |
//! | `LISTEN_PID` | the worker's own pid (standard readers ignore the fds otherwise) |
//! | `LISTEN_FDNAMES` | `:`-separated names, one per socket |
//! | `NOTIFY_SOCKET` | private sd_notify socket of the master: `READY=1`, `STATUS=…`, `OVERSEER_RESTART=1` |
//! | `OVERSEER_MASTER_PID` | the master's pid |
//! | `OVERSEER_WORKER` | this worker's number: 1 for the first, then 2, 3, … |
//! | `OVERSEER_BIN_ID` | SHA-256 (hex) of the binary the worker runs |
//! | `OVERSEER_BIN_PATH` | path of that binary |
//! | `OVERSEER_ADDRESSES` | the configured addresses, newline-separated, in fd order |
//! | `OVERSEER_VERSION` | the configured version, when set |
//! | `OVERSEER_BIN_CHECK` | set only for a sanity check: print the value on a line of its own and exit 0 |

/// Number of passed sockets.
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// Pid the passed sockets are meant for.
pub const LISTEN_PID: &str = "LISTEN_PID";
/// Names of the passed sockets.
pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// The master's pid.
pub const OVERSEER_MASTER_PID: &str = "OVERSEER_MASTER_PID";
/// The worker number.
pub const OVERSEER_WORKER: &str = "OVERSEER_WORKER";
/// SHA-256 of the worker's binary.
pub const OVERSEER_BIN_ID: &str = "OVERSEER_BIN_ID";
/// Path of the worker's binary.
pub const OVERSEER_BIN_PATH: &str = "OVERSEER_BIN_PATH";
/// Configured addresses, newline-separated.
pub const OVERSEER_ADDRESSES: &str = "OVERSEER_ADDRESSES";
/// Configured version.
pub const OVERSEER_VERSION: &str = "OVERSEER_VERSION";
/// Sanity-check token.
pub const OVERSEER_BIN_CHECK: &str = "OVERSEER_BIN_CHECK";
/// Set only when a master checks a new master binary before re-executing
/// into it: an overseer binary prints the state formats it reads and exits.
pub(crate) const OVERSEER_MASTER_CHECK: &str = "OVERSEER_MASTER_CHECK";
/// The descriptor of the state a master carries across its re-exec.
pub(crate) const OVERSEER_MASTER_STATE: &str = "OVERSEER_MASTER_STATE";
/// The descriptor of the executable a master's previous image ran, open:
/// executed again if the new image cannot take over.
pub(crate) const OVERSEER_MASTER_PREVIOUS: &str = "OVERSEER_MASTER_PREVIOUS";
/// Set when a master's new image could not take over and the previous
/// image runs again: why.
pub(crate) const OVERSEER_MASTER_FALLBACK: &str = "OVERSEER_MASTER_FALLBACK";
/// The first passed descriptor.
pub const LISTEN_FDS_START: i32 = 3;

/// The sd_notify key a worker sends to ask the master for a restart.
pub const NOTIFY_RESTART: &str = "OVERSEER_RESTART";

/// The sd_notify key a worker sends to ask the master to re-execute itself.
pub const NOTIFY_RELOAD: &str = "OVERSEER_RELOAD";

/// Variables the master sets for its workers and never passes on from its
/// own environment. systemd's watchdog variables are the master's contract
/// (it sends the keep-alives), so a worker does not see them either.
#[cfg(unix)]
pub(crate) const WORKER_VARS: &[&str] = &[
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    LISTEN_FDS,
    LISTEN_PID,
    LISTEN_FDNAMES,
    crate::notify::NOTIFY_SOCKET,
    OVERSEER_MASTER_PID,
    OVERSEER_WORKER,
    OVERSEER_BIN_ID,
    OVERSEER_BIN_PATH,
    OVERSEER_ADDRESSES,
    OVERSEER_VERSION,
    OVERSEER_BIN_CHECK,
    OVERSEER_MASTER_CHECK,
    OVERSEER_MASTER_STATE,
    OVERSEER_MASTER_PREVIOUS,
    OVERSEER_MASTER_FALLBACK,
];
