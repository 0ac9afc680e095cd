//! The `overseer run --config FILE` file: the same options as the flags, in
//! TOML.
//!
//! Keys are the long flag names in kebab-case (`ready-timeout`, not
//! `ready_timeout`); the upgrade options sit in an `[upgrade]` table. Values
//! are written as on the command line (durations `"30s"`, sizes `"512MiB"`,
//! signals `"USR2"` or `12`), lists as TOML arrays. An unknown key is an
//! error that names it and its line, so a typo never silently falls back to
//! a default. Relative paths are relative to the working directory, as for
//! the flags. A list given by flags (`--listen`, `--public-key`) replaces the
//! file's list, a release source given by a flag replaces the file's, and a
//! PROGRAM on the command line replaces both `program` and `args`; boolean
//! flags can only turn an option on.
//!
//! ```toml
//! program = "/opt/myapp/bin/myapp"
//! args = ["--config", "/etc/myapp.toml"]
//! listen = ["127.0.0.1:8080", "admin=unix:/run/myapp/admin.sock"]
//! ready = "notify"
//! ready-timeout = "1m"
//! terminate-timeout = "30s"
//! restart-signal = "USR2"
//! app-version = "1.4.0"
//!
//! [upgrade]
//! fetch-url = "https://releases.example.com/myapp"
//! fetch-interval = "5m"
//! public-key = ["/etc/myapp/overseer.pub"]
//! sanity-check = "version"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::run::{self, Ready, Sanity};
use crate::Failure;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct FileConfig {
    pub program: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub listen: Vec<String>,
    #[serde(default, deserialize_with = "signal")]
    pub restart_signal: Option<i32>,
    #[serde(default, deserialize_with = "positive_duration")]
    pub terminate_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "positive_duration")]
    pub ready_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "ready")]
    pub ready: Option<Ready>,
    pub app_version: Option<String>,
    pub backlog: Option<i32>,
    pub name: Option<String>,
    pub control: Option<PathBuf>,
    #[serde(default)]
    pub no_control: bool,
    #[serde(default)]
    pub no_restart: bool,
    #[serde(default)]
    pub debug: bool,
    #[serde(default)]
    pub upgrade: UpgradeFile,
}

/// The `[upgrade]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct UpgradeFile {
    pub fetch_file: Option<PathBuf>,
    pub fetch_url: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub fetch_github: Option<String>,
    pub github_token_env: Option<String>,
    pub github_api_url: Option<String>,
    pub asset: Option<String>,
    pub fetch_s3: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_path_style: Option<bool>,
    #[serde(default, deserialize_with = "positive_duration")]
    pub fetch_interval: Option<Duration>,
    #[serde(default)]
    pub public_key: Vec<String>,
    #[serde(default)]
    pub allow_downgrade: bool,
    #[serde(default, deserialize_with = "duration")]
    pub probation: Option<Duration>,
    #[serde(default)]
    pub no_restart_after_fetch: bool,
    #[serde(default, deserialize_with = "size")]
    pub max_download_size: Option<u64>,
    #[serde(default, deserialize_with = "positive_duration")]
    pub download_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "sanity")]
    pub sanity_check: Option<Sanity>,
    #[serde(default, deserialize_with = "positive_duration")]
    pub sanity_timeout: Option<Duration>,
    pub executable_name: Option<String>,
}

/// Reads and checks a config file; errors name the file (and the line).
pub(crate) fn load(path: &Path) -> Result<FileConfig, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::Usage(format!(
            "cannot read the config file {}: {e}",
            path.display()
        ))
    })?;
    toml::from_str(&text).map_err(|e| {
        Failure::Usage(format!(
            "bad config file {}: {}",
            path.display(),
            e.to_string().trim_end()
        ))
    })
}

/// A string, or for some keys a number, parsed like the flag.
#[derive(Deserialize)]
#[serde(untagged)]
enum Text {
    Str(String),
    Int(i64),
}

fn with<'de, D, T>(d: D, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
{
    let s = String::deserialize(d)?;
    parse(&s).map(Some).map_err(serde::de::Error::custom)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    with(d, run::parse_duration)
}

fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    with(d, run::parse_positive_duration)
}

fn ready<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ready>, D::Error> {
    with(d, Ready::parse)
}

fn sanity<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Sanity>, D::Error> {
    with(d, Sanity::parse)
}

fn signal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    let text = match Text::deserialize(d)? {
        Text::Str(s) => s,
        Text::Int(n) => n.to_string(),
    };
    run::parse_signal(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = match Text::deserialize(d)? {
        Text::Str(s) => s,
        Text::Int(n) => n.to_string(),
    };
    run::parse_size(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_every_kind_of_value() {
        let c = parse(
            r#"
            program = "app"
            args = ["-v"]
            listen = [":8080", "admin=unix:/tmp/a.sock"]
            restart-signal = "HUP"
            ready-timeout = "1m"
            ready = "after=2s"
            [upgrade]
            fetch-file = "/srv/app"
            max-download-size = "64MiB"
            sanity-check = "version"
            public-key = ["k.pub"]
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.program.as_deref(), Some("app"));
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.restart_signal, Some(nix::libc::SIGHUP));
        assert_eq!(c.ready_timeout, Some(Duration::from_secs(60)));
        assert_eq!(c.ready, Some(Ready::After(Duration::from_secs(2))));
        assert_eq!(c.upgrade.max_download_size, Some(64 << 20));
        assert_eq!(c.upgrade.sanity_check, Some(Sanity::Version));
        let numeric = parse("restart-signal = 10\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(numeric.restart_signal, Some(10));
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let e = parse("program = \"x\"\nlisten_on = [\":1\"]\n").expect_err("unknown key");
        assert!(e.contains("listen_on") && e.contains("line 2"), "{e}");
        let e = parse("[upgrade]\nfetch-intervall = \"1s\"\n").expect_err("unknown key");
        assert!(e.contains("fetch-intervall"), "{e}");
        let e = parse("ready-timeout = \"soon\"\n").expect_err("bad duration");
        assert!(e.contains("not a duration") && e.contains("line 1"), "{e}");
    }
}
