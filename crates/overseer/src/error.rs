//! The library's one error type.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in overseer, with the context needed to act on it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An address in the configuration could not be understood.
    InvalidAddress {
        /// The address as configured.
        address: String,
        /// Why it was refused.
        reason: String,
    },
    /// An address could not be bound.
    Bind {
        /// The address as configured.
        address: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A Unix socket path exists, is not a socket, and was left alone.
    PathInUse {
        /// The path that is in the way.
        path: PathBuf,
    },
    /// The configuration is contradictory or incomplete.
    Config(String),
    /// This platform cannot run a master and workers.
    Unsupported,
    /// `restart()` was called outside a running overseer.
    NotRunning,
    /// The path of the running binary could not be determined.
    BinaryPath(io::Error),
    /// The inherited socket-activation environment is malformed.
    Protocol(String),
    /// Spawning a worker failed.
    Spawn {
        /// The program that was started.
        program: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A version is not a semantic version (`1.4.0`, `v2.0.0-rc.1`).
    InvalidVersion(String),
    /// Any other operating-system error, with what was being done.
    Io {
        /// What overseer was doing.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidAddress { address, reason } => {
                write!(f, "invalid address {address:?}: {reason}")
            }
            Error::Bind { address, source } => write!(f, "cannot bind {address:?}: {source}"),
            Error::PathInUse { path } => write!(
                f,
                "{} exists and is not a socket; remove it or choose another path",
                path.display()
            ),
            Error::Config(msg) => write!(f, "invalid configuration: {msg}"),
            Error::Unsupported => write!(f, "overseer is not supported on this platform"),
            Error::NotRunning => write!(f, "not running under an overseer master"),
            Error::BinaryPath(e) => write!(f, "cannot find the running binary: {e}"),
            Error::Protocol(msg) => write!(f, "bad socket-activation environment: {msg}"),
            Error::Spawn { program, source } => {
                write!(f, "cannot start worker {}: {source}", program.display())
            }
            Error::InvalidVersion(v) => write!(
                f,
                "{v:?} is not a version: expected semantic versioning such as 1.4.0"
            ),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. } | Error::Spawn { source, .. } | Error::Io { source, .. } => {
                Some(source)
            }
            Error::BinaryPath(e) => Some(e),
            _ => None,
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
