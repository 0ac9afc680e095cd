//! Release download progress: a progress bar when stderr is a terminal,
//! plain log lines otherwise (at the start, at each quarter when the size is
//! known, and at the end with the size and time).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};
use overseer::{DownloadProgress, DownloadState};

/// Writes one line in the master's own log format (`[overseer PID] LEVEL: …`).
pub(crate) fn log(level: &str, message: &str) {
    let line = format!("[overseer {}] {level}: {message}\n", std::process::id());
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The hook for `Config::on_download_progress`.
pub(crate) fn reporter() -> impl Fn(&DownloadProgress) + Send + Sync + 'static {
    let tty = std::io::stderr().is_terminal();
    let state = Mutex::new(Shown::default());
    move |p: &DownloadProgress| {
        let mut shown = match state.lock() {
            Ok(s) => s,
            Err(e) => e.into_inner(),
        };
        if tty {
            shown.bar(p);
        } else {
            shown.lines(p);
        }
    }
}

#[derive(Default)]
struct Shown {
    bar: Option<ProgressBar>,
    /// The next quarter (1, 2, 3) to log, for plain lines.
    quarter: u64,
}

impl Shown {
    fn bar(&mut self, p: &DownloadProgress) {
        match p.state {
            DownloadState::Started => {
                let bar = match p.total {
                    Some(total) => {
                        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                            .with_style(
                            ProgressStyle::with_template(
                                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                            )
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                        )
                    }
                    None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                        .with_style(
                            ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        ),
                };
                bar.set_message("downloading");
                self.bar = Some(bar);
            }
            DownloadState::Running => {
                if let Some(bar) = &self.bar {
                    bar.set_position(p.bytes);
                }
            }
            DownloadState::Finished => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                finished(p);
            }
            _ => {
                // Failed: the master logs why.
                if let Some(bar) = self.bar.take() {
                    bar.abandon();
                }
            }
        }
    }

    fn lines(&mut self, p: &DownloadProgress) {
        match p.state {
            DownloadState::Started => {
                self.quarter = 1;
                let size = p
                    .total
                    .map_or_else(|| "size unknown".to_string(), |t| HumanBytes(t).to_string());
                // The master has just logged which release this is.
                log("info", &format!("download started ({size})"));
            }
            DownloadState::Running => {
                let Some(total) = p.total.filter(|t| *t > 0) else {
                    return;
                };
                let mut passed = None;
                while self.quarter < 4 && p.bytes * 4 >= total * self.quarter {
                    passed = Some(self.quarter);
                    self.quarter += 1;
                }
                if let Some(q) = passed {
                    log(
                        "info",
                        &format!(
                            "download: {}% ({} of {})",
                            q * 25,
                            HumanBytes(p.bytes),
                            HumanBytes(total)
                        ),
                    );
                }
            }
            DownloadState::Finished => finished(p),
            _ => {}
        }
    }
}

fn finished(p: &DownloadProgress) {
    let secs = p.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        format!(" ({}/s)", HumanBytes((p.bytes as f64 / secs) as u64))
    } else {
        String::new()
    };
    log(
        "info",
        &format!(
            "downloaded {} in {}{rate}",
            HumanBytes(p.bytes),
            if p.elapsed.as_secs() >= 1 {
                HumanDuration(p.elapsed).to_string()
            } else {
                format!("{} ms", p.elapsed.as_millis())
            }
        ),
    );
}
