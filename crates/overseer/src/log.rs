//! Logging: through `tracing` when the application installed a subscriber,
//! otherwise straight to stderr, so a newcomer running an example sees
//! restarts and failures without setting anything up.

use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);
static NO_WARN: AtomicBool = AtomicBool::new(false);

/// Applies `Config::debug` / `Config::no_warn` to the stderr fallback.
pub(crate) fn configure(debug: bool, no_warn: bool) {
    DEBUG.store(debug, Ordering::Relaxed);
    NO_WARN.store(no_warn, Ordering::Relaxed);
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

pub(crate) fn emit(level: Level, args: std::fmt::Arguments<'_>) {
    if tracing::dispatcher::has_been_set() {
        match level {
            Level::Debug => tracing::debug!(target: "overseer", "{args}"),
            Level::Info => tracing::info!(target: "overseer", "{args}"),
            Level::Warn => tracing::warn!(target: "overseer", "{args}"),
            Level::Error => tracing::error!(target: "overseer", "{args}"),
        }
        return;
    }
    let shown = match level {
        Level::Debug => DEBUG.load(Ordering::Relaxed),
        Level::Warn => !NO_WARN.load(Ordering::Relaxed),
        Level::Info | Level::Error => true,
    };
    if shown {
        let tag = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        // One write per line: master and workers share stderr, and a line
        // written piecemeal would interleave with theirs.
        let line = format!("[overseer {}] {tag}: {args}\n", std::process::id());
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }
}

macro_rules! debug { ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Debug, format_args!($($t)*)) } }
macro_rules! info { ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Info, format_args!($($t)*)) } }
macro_rules! warning { ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Warn, format_args!($($t)*)) } }
macro_rules! error { ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Error, format_args!($($t)*)) } }
pub(crate) use {debug, error, info, warning};
