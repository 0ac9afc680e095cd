//! Why a command failed, and so the exit status of `overseer`.

/// Why a command failed, and so its exit status.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Bad input: flags, the config file, the program (exit status 2).
    Usage(String),
    /// Anything else (exit status 1).
    Runtime(String),
}
