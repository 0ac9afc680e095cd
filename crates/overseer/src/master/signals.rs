//! The master's signal thread: every signal of interest becomes an [`Event`].

use std::sync::mpsc::Sender;

use signal_hook::consts::*;
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::iterator::SignalsInfo;
use signal_hook::low_level::siginfo::Cause;

use super::event::Event;
use crate::error::{Error, Result};

/// Signals the master forwards to the serving worker (the restart signal is
/// taken out of this set and handled by the master).
pub(crate) const FORWARDED: &[i32] = &[
    SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH, SIGALRM,
];

/// Signals a terminal sends to its whole foreground process group, which the
/// workers are part of: these already reached them and are not forwarded again.
const FROM_TERMINAL: &[i32] = &[SIGINT, SIGQUIT, SIGWINCH, SIGHUP];

/// The forwarded signals that ask a program to stop (SIGTERM, the master's
/// own stop, is handled apart): a worker that ends soon after one of them
/// reached it was stopped by the operator, not failing.
pub(crate) const STOP: &[i32] = &[SIGINT, SIGQUIT, SIGHUP];

/// Every signal the master handles: the forwarded ones, the restart and
/// reload signals and `SIGCHLD`.
pub(crate) fn handled(restart_signal: i32, reload_signal: Option<i32>) -> Vec<i32> {
    let mut wanted: Vec<i32> = FORWARDED.to_vec();
    wanted.push(SIGCHLD);
    for signal in std::iter::once(restart_signal).chain(reload_signal) {
        if !wanted.contains(&signal) {
            wanted.push(signal);
        }
    }
    wanted
}

/// Starts the signal thread. The master's other threads block the signals
/// it handles (`sys::block_signals`); this one unblocks them, so the kernel
/// delivers them here.
pub(crate) fn spawn(
    restart_signal: i32,
    reload_signal: Option<i32>,
    tx: Sender<Event>,
) -> Result<()> {
    let wanted = handled(restart_signal, reload_signal);
    let mut signals = SignalsInfo::<WithOrigin>::new(&wanted)
        .map_err(|e| Error::io("installing signal handlers", e))?;
    std::thread::Builder::new()
        .name("overseer-signals".into())
        .spawn(move || {
            if let Err(e) = crate::sys::unblock_signals(&wanted) {
                // Signals then wait until the master ends; say so once.
                crate::log::warning!("cannot unblock signals in the signal thread: {e}");
            }
            for origin in signals.forever() {
                let signal = origin.signal;
                let event = if signal == SIGCHLD {
                    Event::Child
                } else {
                    let from_terminal =
                        matches!(origin.cause, Cause::Kernel) && FROM_TERMINAL.contains(&signal);
                    Event::Signal {
                        signal,
                        from_terminal,
                    }
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| Error::io("starting the signal thread", e))?;
    Ok(())
}

/// A signal's name for logs.
pub(crate) fn name(signal: i32) -> String {
    signal_hook::low_level::signal_name(signal)
        .map(str::to_string)
        .unwrap_or_else(|| format!("signal {signal}"))
}
