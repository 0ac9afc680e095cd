//! The values given to `overseer run`, as flags or in the config file:
//! durations, sizes, signals, readiness and sanity-check modes, public keys,
//! `NAME=ADDR` listen entries, environment variable names.
//!
//! Each parser takes the text as written and returns the value or a message
//! saying what would be right; the flags (clap's value parsers) and the
//! config file (its deserializers) share them, so the two accept the same
//! forms and report the same mistakes.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// `--ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ready {
    Started,
    Notify,
    After(Duration),
    Cmd(Vec<String>),
}

impl Ready {
    /// Parses `started`, `notify`, `after=DUR` or `cmd=COMMAND`.
    pub(crate) fn parse(s: &str) -> Result<Ready, String> {
        let usage = "expected started, notify, after=DUR or cmd=COMMAND";
        match s.trim() {
            "started" => return Ok(Ready::Started),
            "notify" => return Ok(Ready::Notify),
            _ => {}
        }
        if let Some(d) = s.strip_prefix("after=") {
            return duration(d).map(Ready::After);
        }
        if let Some(c) = s.strip_prefix("cmd=") {
            return split_words(c, "cmd=").map(Ready::Cmd);
        }
        Err(format!("unknown readiness {s:?}: {usage}"))
    }
}

/// `--sanity-check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sanity {
    None,
    Token,
    Version,
    Args(Vec<String>),
}

impl Sanity {
    /// Parses `none`, `token`, `version` or `args=ARGS`.
    pub(crate) fn parse(s: &str) -> Result<Sanity, String> {
        match s.trim() {
            "none" => Ok(Sanity::None),
            "token" => Ok(Sanity::Token),
            "version" => Ok(Sanity::Version),
            _ => match s.strip_prefix("args=") {
                Some(a) => split_words(a, "args=").map(Sanity::Args),
                None => Err(format!(
                    "unknown sanity check {s:?}: expected none, version, args=ARGS or token"
                )),
            },
        }
    }
}

/// Splits a command line into words, quotes grouping, no shell involved.
fn split_words(s: &str, what: &str) -> Result<Vec<String>, String> {
    let words = shlex::split(s)
        .ok_or_else(|| format!("{what}{s}: unbalanced quotes or a trailing backslash"))?;
    if words.is_empty() {
        return Err(format!(
            "{what} needs a command, e.g. {what}'test -e /run/app/{{pid}}.ready'"
        ));
    }
    Ok(words)
}

/// A duration like `30s`, `500ms`, `2m`, `1h 30m`.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); write it like 500ms, 30s or 2m"))
}

/// A duration above zero.
pub(crate) fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be above zero"));
    }
    Ok(d)
}

/// A size in bytes: `1048576`, `64M`, `64MiB`, `1.5G`, `100MB`.
///
/// A bare K, M, G (and T, P, E) is binary here, as in dd(1): `64M` is
/// 64 MiB, while `64MB` is 64,000,000. `parse_size` reads a bare prefix as
/// decimal, so it is given one with the `i` of a binary unit (and a
/// leading `0` to a fraction written `.5G`).
pub(crate) fn size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let mut text = String::with_capacity(t.len() + 2);
    if t.starts_with('.') {
        text.push('0');
    }
    text.push_str(t);
    if t.ends_with(['k', 'K', 'm', 'M', 'g', 'G', 't', 'T', 'p', 'P', 'e', 'E']) {
        text.push('i');
    }
    match parse_size::parse_size(&text) {
        Ok(0) => Err(format!("{s:?}: must be at least one byte")),
        Ok(n) => Ok(n),
        Err(parse_size::Error::PosOverflow) => Err(format!("{s:?} is too large")),
        Err(_) => Err(format!(
            "{s:?} is not a size; write it like 64MiB, 512M, 1G or 1048576"
        )),
    }
}

/// A signal by name (`USR2`, `SIGHUP`, case-insensitive) or number, usable
/// as the restart signal.
pub(crate) fn signal(s: &str) -> Result<i32, String> {
    use nix::sys::signal::Signal;
    let t = s.trim();
    let signal = match t.parse::<i32>() {
        Ok(n) => Signal::try_from(n).map_err(|_| format!("{n} is not a signal number here"))?,
        Err(_) => {
            let upper = t.to_ascii_uppercase();
            let name = if upper.starts_with("SIG") {
                upper
            } else {
                format!("SIG{upper}")
            };
            Signal::from_str(&name)
                .map_err(|_| format!("unknown signal {s:?}; try USR2, USR1, HUP or a number"))?
        }
    };
    match signal {
        Signal::SIGKILL | Signal::SIGSTOP => Err(format!(
            "{signal} cannot be caught; choose USR2, USR1 or HUP"
        )),
        Signal::SIGCHLD => Err("the master needs SIGCHLD to watch its workers".into()),
        Signal::SIGTERM => Err("SIGTERM stops the service; choose USR2, USR1 or HUP".into()),
        _ => Ok(signal as i32),
    }
}

/// Splits `NAME=ADDR`; a plain address (whose text before `=` is no name,
/// like `unix:/tmp/a=b.sock`) is returned whole.
pub(crate) fn split_name(entry: &str) -> (Option<&str>, &str) {
    match entry.split_once('=') {
        Some((name, address))
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) =>
        {
            (Some(name), address)
        }
        _ => (None, entry),
    }
}

/// A `--listen` entry, `[NAME=]ADDR`, checked with the library's address
/// parser; split into its name and address.
pub(crate) fn listen(entry: &str) -> Result<(Option<&str>, &str), String> {
    let (name, address) = split_name(entry);
    overseer::address::Address::parse(address).map_err(|e| {
        let reason = match e {
            overseer::Error::InvalidAddress { reason, .. } => reason,
            other => other.to_string(),
        };
        format!("bad --listen address '{entry}': {reason}")
    })?;
    Ok((name, address))
}

/// A `--pass-env` value: an environment variable's name (no pattern).
pub(crate) fn env_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['=', '*', '\0']) {
        return Err(format!(
            "bad --pass-env {name:?}: expected an environment variable's name, e.g. AWS_REGION"
        ));
    }
    Ok(())
}

/// Whether `value` is a minisign public key itself (rather than a file's path).
pub(crate) fn is_public_key(value: &str) -> bool {
    minisign::PublicKey::from_base64(value.trim()).is_ok()
}

/// A `--public-key` value: a `.pub` file's path, or the key itself; checked
/// here so that a typo is reported before anything starts.
pub(crate) fn public_key(value: &str) -> Result<String, String> {
    let path = Path::new(value);
    let (text, from_file) = if path.is_file() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("bad --public-key '{value}': cannot read it: {e}"))?;
        (text, true)
    } else {
        (value.to_string(), false)
    };
    let parsed = if text.trim().contains('\n') {
        minisign::PublicKeyBox::from_string(&text).and_then(|b| b.into_public_key())
    } else {
        minisign::PublicKey::from_base64(text.trim())
    };
    match parsed {
        Ok(_) => Ok(text),
        Err(e) if from_file => Err(format!(
            "bad --public-key '{value}': the file is not a minisign public key ({e})"
        )),
        Err(e) => Err(format!(
            "bad --public-key '{value}': neither a minisign public key (RWQ…: {e}) nor a readable .pub file"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_sizes_and_signals() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert!(duration("30").is_err());
        assert!(positive_duration("0s").is_err());
        assert_eq!(size("64MiB"), Ok(64 << 20));
        assert_eq!(size("512M"), Ok(512 << 20));
        assert_eq!(size("1.5G"), Ok(3 << 29));
        assert_eq!(size("100MB"), Ok(100_000_000));
        assert_eq!(size("1024"), Ok(1024));
        assert!(size("lots").is_err());
        assert!(size("0").is_err());
        assert_eq!(signal("USR2"), Ok(nix::libc::SIGUSR2));
        assert_eq!(signal("sighup"), Ok(nix::libc::SIGHUP));
        assert_eq!(signal("10"), Ok(10));
        assert!(signal("KILL").is_err());
        assert!(signal("TERM").is_err());
        assert!(signal("BANANA").is_err());
    }

    #[test]
    fn sizes_in_every_form() {
        for (text, bytes) in [
            ("1", 1),
            ("0.5", 1),
            ("1024b", 1024),
            (" 64 MiB ", 64 << 20),
            ("64mib", 64 << 20),
            ("64k", 64 << 10),
            ("64 K", 64 << 10),
            ("64KiB", 64 << 10),
            ("64kb", 64_000),
            ("64KB", 64_000),
            ("2g", 2 << 30),
            ("2GB", 2_000_000_000),
            (".5G", 1 << 29),
            ("5.M", 5 << 20),
        ] {
            assert_eq!(size(text), Ok(bytes), "{text}");
        }
        for text in ["", "M", "0.4", "-1", "1.2.3", "64 kg", "64 bytes", "1 MiBB"] {
            assert!(size(text).is_err(), "{text}");
        }
        let e = size("lots").expect_err("not a size");
        assert!(e.contains("is not a size; write it like 64MiB"), "{e}");
        let e = size("0").expect_err("zero");
        assert!(e.contains("must be at least one byte"), "{e}");
        let e = size("99999999999G").expect_err("too large");
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn readiness_modes() {
        assert_eq!(Ready::parse("notify"), Ok(Ready::Notify));
        assert_eq!(
            Ready::parse("after=1s"),
            Ok(Ready::After(Duration::from_secs(1)))
        );
        assert_eq!(
            Ready::parse("cmd=test -e '/run/a b/{pid}'"),
            Ok(Ready::Cmd(vec![
                "test".into(),
                "-e".into(),
                "/run/a b/{pid}".into()
            ]))
        );
        assert!(Ready::parse("cmd=").is_err());
        assert!(Ready::parse("later").is_err());
        assert_eq!(
            Sanity::parse("args=--check x"),
            Ok(Sanity::Args(vec!["--check".into(), "x".into()]))
        );
    }

    #[test]
    fn names_are_split_from_addresses() {
        assert_eq!(split_name("web=:80"), (Some("web"), ":80"));
        assert_eq!(split_name(":80"), (None, ":80"));
        assert_eq!(
            split_name("unix:/tmp/a=b.sock"),
            (None, "unix:/tmp/a=b.sock")
        );
    }
}
