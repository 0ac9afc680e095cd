//! The `overseer run --config FILE` file: the same options as the flags, in
//! TOML.
//!
//! Keys are the long flag names in kebab-case (`ready-timeout`, not
//! `ready_timeout`); the upgrade options sit in an `[upgrade]` table. Values
//! are written as on the command line (durations `"30s"`, sizes `"512MiB"`,
//! signals `"USR2"` or `12`), lists as TOML arrays. An unknown key is an
//! error that names it and its line, so a typo never silently falls back to
//! a default. Relative paths in the file are relative to the file's own
//! directory (not the working directory, which under a service manager is
//! often `/`): `program` when it has a slash (a bare name is looked up in
//! `PATH`), `control`, `unix:` addresses in `listen`, and in `[upgrade]`
//! `fetch-file`, `ca-file` and the `public-key` entries that are files.
//! `args` are passed to the program as written. A list given by flags
//! (`--listen`, `--public-key`, `--pass-env`) replaces the file's list, a
//! release source given by a flag replaces the file's, and a PROGRAM on the
//! command line replaces both `program` and `args`; boolean flags can only
//! turn an option on.
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

use crate::failure::Failure;
use crate::parse::{self, Ready, Sanity};

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
    #[serde(default, deserialize_with = "signal")]
    pub reload_signal: Option<i32>,
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
    pub steer_connections: bool,
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
    pub fetch_fleet: Option<String>,
    pub host_id: Option<String>,
    #[serde(default)]
    pub fleet_reports: bool,
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
    pub fetch_azure: Option<String>,
    pub azure_endpoint: Option<String>,
    pub fetch_gcs: Option<String>,
    pub gcs_endpoint: Option<String>,
    #[serde(default)]
    pub allow_http: bool,
    #[serde(default)]
    pub pass_env: Vec<String>,
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

/// The config file's text.
pub(crate) fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| {
        Failure::Usage(format!(
            "cannot read the config file {}: {e}",
            path.display()
        ))
    })
}

/// Checks the config file at `path`, whose text is `text`; errors name the
/// file (and the line). Relative paths in it are made relative to its
/// directory.
pub(crate) fn parse(path: &Path, text: &str) -> Result<FileConfig, Failure> {
    let mut file: FileConfig = toml::from_str(text).map_err(|e| {
        Failure::Usage(format!(
            "bad config file {}: {}",
            path.display(),
            e.to_string().trim_end()
        ))
    })?;
    file.resolve_paths(path.parent().unwrap_or(Path::new("")));
    Ok(file)
}

impl FileConfig {
    /// Makes the relative paths in the file relative to `dir`, the file's
    /// directory (see the module docs for which values are paths).
    fn resolve_paths(&mut self, dir: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = dir.join(&*p);
            }
        };
        let join_text = |s: &mut String| {
            let mut p = PathBuf::from(&*s);
            join(&mut p);
            *s = p.to_string_lossy().into_owned();
        };
        // A bare name is looked up in PATH, like a shell does.
        if let Some(program) = self.program.as_mut().filter(|p| p.contains('/')) {
            join_text(program);
        }
        if let Some(control) = &mut self.control {
            join(control);
        }
        for entry in &mut self.listen {
            let (name, address) = parse::split_name(entry);
            if let Some(path) = address.strip_prefix("unix:") {
                let mut path = path.to_string();
                join_text(&mut path);
                *entry = match name {
                    Some(name) => format!("{name}=unix:{path}"),
                    None => format!("unix:{path}"),
                };
            }
        }
        let upgrade = &mut self.upgrade;
        // A fleet's store is a directory, or a bucket's URL.
        if let Some(fleet) = upgrade.fetch_fleet.as_mut().filter(|f| !f.contains("://")) {
            join_text(fleet);
        }
        for path in [&mut upgrade.fetch_file, &mut upgrade.ca_file]
            .into_iter()
            .flatten()
        {
            join(path);
        }
        // An entry is a key itself (one line, or a whole `.pub` file's
        // text), or the path of a `.pub` file.
        for key in &mut upgrade.public_key {
            if !key.trim().contains('\n') && !parse::is_public_key(key) {
                join_text(key);
            }
        }
    }
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
    with(d, parse::duration)
}

fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    with(d, parse::positive_duration)
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
    parse::signal(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = match Text::deserialize(d)? {
        Text::Str(s) => s,
        Text::Int(n) => n.to_string(),
    };
    parse::size(&text)
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
            allow-http = true
            pass-env = ["AWS_REGION"]
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
        assert!(c.upgrade.allow_http);
        assert_eq!(c.upgrade.pass_env, ["AWS_REGION"]);
        let numeric = parse("restart-signal = 10\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(numeric.restart_signal, Some(10));
    }

    #[test]
    fn relative_paths_are_taken_from_the_file_directory() {
        let key = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";
        let mut c = parse(&format!(
            r#"
            program = "bin/app"
            listen = [":8080", "unix:a.sock", "admin=unix:run/b.sock", "x=unix:/abs.sock"]
            control = "run/ctl.sock"
            [upgrade]
            fetch-file = "releases/app"
            ca-file = "/etc/ca.pem"
            public-key = ["keys/a.pub", "{key}"]
            "#
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        c.resolve_paths(Path::new("/etc/app"));
        assert_eq!(c.program.as_deref(), Some("/etc/app/bin/app"));
        assert_eq!(
            c.listen,
            [
                ":8080",
                "unix:/etc/app/a.sock",
                "admin=unix:/etc/app/run/b.sock",
                "x=unix:/abs.sock"
            ]
        );
        assert_eq!(c.control, Some(PathBuf::from("/etc/app/run/ctl.sock")));
        let u = &c.upgrade;
        assert_eq!(u.fetch_file, Some(PathBuf::from("/etc/app/releases/app")));
        assert_eq!(u.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(u.public_key, ["/etc/app/keys/a.pub", key]);

        // A fleet's store: a directory is a path, a bucket's URL is not.
        for (given, resolved) in [
            ("fleet", "/etc/app/fleet"),
            ("/srv/fleet", "/srv/fleet"),
            ("s3://acme/fleet/stable", "s3://acme/fleet/stable"),
        ] {
            let text = format!("[upgrade]\nfetch-fleet = \"{given}\"\nfleet-reports = true\n");
            let mut c = parse(&text).unwrap_or_else(|e| panic!("{e}"));
            c.resolve_paths(Path::new("/etc/app"));
            assert_eq!(c.upgrade.fetch_fleet.as_deref(), Some(resolved));
            assert!(c.upgrade.fleet_reports);
        }

        // A bare program name is looked up in PATH.
        let mut c = parse("program = \"python3\"\n").unwrap_or_else(|e| panic!("{e}"));
        c.resolve_paths(Path::new("/etc/app"));
        assert_eq!(c.program.as_deref(), Some("python3"));
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
