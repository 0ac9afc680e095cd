//! `overseer run`'s release source: which one (the flags, else the config
//! file's `[upgrade]` table), checked, and built into the library's fetcher.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use overseer::{fetcher, Config};

use crate::config_file::UpgradeFile;
use crate::failure::Failure;

/// Where releases come from and how to reach it (the "Upgrades" flags that
/// name a source). Taken whole from the flags when they name a source, else
/// from the file; the options beside a source each from the flag, else the
/// file.
#[derive(Args, Debug, Default)]
pub(crate) struct SourceArgs {
    /// Upgrade from a file, taken once it stops changing; FILE.minisig and
    /// FILE.sha256 beside it are read when present. Example:
    /// --fetch-file /srv/releases/myapp
    #[arg(long, value_name = "PATH", help_heading = "Upgrades")]
    pub(crate) fetch_file: Option<PathBuf>,

    /// Upgrade from a fleet's signed manifest (written by `overseer
    /// publish`) in a directory, or in a bucket under a prefix:
    /// s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX] or
    /// az://ACCOUNT/CONTAINER[/PREFIX], with the --s3-*, --gcs-*,
    /// --azure-* options; or read through a web server or CDN in front of
    /// one: https://HOST/PATH (no reports then). The release this host is due by its wave,
    /// verified with --public-key (required). Example: --fetch-fleet
    /// s3://acme-releases/fleet/stable
    #[arg(long, value_name = "DIR|URL", help_heading = "Upgrades")]
    pub(crate) fetch_fleet: Option<String>,

    /// This host's id in the fleet's waves [default: /etc/machine-id].
    #[arg(long, value_name = "ID", help_heading = "Upgrades")]
    pub(crate) host_id: Option<String>,

    /// After each probation, write a report (host, version, kept or rolled
    /// back and why) under reports/ in the fleet's store, for `overseer
    /// rollout status` and `advance`.
    #[arg(long, help_heading = "Upgrades")]
    pub(crate) fleet_reports: bool,

    /// Upgrade from an HTTP(S) URL (conditional requests; URL.minisig and
    /// URL.sha256 beside it when present). Example:
    /// --fetch-url https://releases.example.com/myapp
    #[arg(long, value_name = "URL", help_heading = "Upgrades")]
    pub(crate) fetch_url: Option<String>,

    /// CA certificates (a PEM file) for a release source with a private CA:
    /// an https --fetch-url or --fetch-github (GitHub Enterprise) trusts only
    /// them instead of the bundled Mozilla roots; --fetch-s3, --fetch-azure
    /// and --fetch-gcs trust them besides the system's.
    /// Example: --ca-file /etc/myapp/releases-ca.pem
    #[arg(long, value_name = "PATH", help_heading = "Upgrades")]
    pub(crate) ca_file: Option<PathBuf>,

    /// Upgrade from the latest GitHub release of OWNER/REPO (the asset for
    /// this OS and CPU, or --asset). Example: --fetch-github acme/myapp
    #[arg(long, value_name = "OWNER/REPO", help_heading = "Upgrades")]
    pub(crate) fetch_github: Option<String>,

    /// Environment variable holding a GitHub token (private repositories,
    /// higher rate limit) [default: GITHUB_TOKEN, when set].
    #[arg(long, value_name = "VAR", help_heading = "Upgrades")]
    pub(crate) github_token_env: Option<String>,

    /// GitHub API base URL, for GitHub Enterprise: https://HOST/api/v3
    /// [default: https://api.github.com].
    #[arg(long, value_name = "URL", help_heading = "Upgrades")]
    pub(crate) github_api_url: Option<String>,

    /// The release asset's name (or a part of it) instead of the one chosen
    /// by OS and CPU.
    #[arg(long, value_name = "NAME", help_heading = "Upgrades")]
    pub(crate) asset: Option<String>,

    /// Upgrade from an S3 object (credentials from the environment or the
    /// instance metadata; KEY.minisig and KEY.sha256 beside it when
    /// present). Example: --fetch-s3 s3://acme-releases/myapp/linux-x86_64
    #[arg(long, value_name = "s3://BUCKET/KEY", help_heading = "Upgrades")]
    pub(crate) fetch_s3: Option<String>,

    /// An S3-compatible endpoint (MinIO, R2, …), e.g. https://minio.internal:9000.
    #[arg(long, value_name = "URL", help_heading = "Upgrades")]
    pub(crate) s3_endpoint: Option<String>,

    /// The bucket's region [default: AWS_REGION, else us-east-1].
    #[arg(long, value_name = "REGION", help_heading = "Upgrades")]
    pub(crate) s3_region: Option<String>,

    /// Path-style requests (true) or virtual-hosted ones (false) [default: true].
    #[arg(long, value_name = "BOOL", help_heading = "Upgrades")]
    pub(crate) s3_path_style: Option<bool>,

    /// Upgrade from an Azure Blob Storage blob (credentials from
    /// AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN, a service
    /// principal or the managed identity; BLOB.minisig and BLOB.sha256 beside
    /// it when present). Example: --fetch-azure az://acmereleases/myapp/linux-x86_64
    #[arg(
        long,
        value_name = "az://ACCOUNT/CONTAINER/BLOB",
        help_heading = "Upgrades"
    )]
    pub(crate) fetch_azure: Option<String>,

    /// The blob service's URL, for Azurite, Azure Stack or a sovereign cloud
    /// [default: https://ACCOUNT.blob.core.windows.net].
    #[arg(long, value_name = "URL", help_heading = "Upgrades")]
    pub(crate) azure_endpoint: Option<String>,

    /// Upgrade from a Google Cloud Storage object (credentials from
    /// GOOGLE_SERVICE_ACCOUNT (a key file) or GOOGLE_SERVICE_ACCOUNT_KEY,
    /// application default credentials, or the metadata server;
    /// OBJECT.minisig and OBJECT.sha256 beside it when present).
    /// Example: --fetch-gcs gs://acme-releases/myapp/linux-x86_64
    #[arg(long, value_name = "gs://BUCKET/OBJECT", help_heading = "Upgrades")]
    pub(crate) fetch_gcs: Option<String>,

    /// The XML API's URL, for a private endpoint or a server speaking the
    /// same protocol [default: https://storage.googleapis.com].
    #[arg(long, value_name = "URL", help_heading = "Upgrades")]
    pub(crate) gcs_endpoint: Option<String>,

    /// Allow a release source over plain http:// on a host that is not
    /// loopback (--fetch-url, --github-api-url, --s3-endpoint,
    /// --azure-endpoint, --gcs-endpoint); refused otherwise, as anyone on
    /// the path could read the credentials or replace the release. Only for a
    /// network you trust, with --public-key.
    #[arg(long, help_heading = "Upgrades")]
    pub(crate) allow_http: bool,
}

impl SourceArgs {
    /// The same settings from the config file's `[upgrade]` table (taken out
    /// of it).
    pub(crate) fn from_file(u: &mut UpgradeFile) -> SourceArgs {
        SourceArgs {
            fetch_file: u.fetch_file.take(),
            fetch_fleet: u.fetch_fleet.take(),
            host_id: u.host_id.take(),
            fleet_reports: u.fleet_reports,
            fetch_url: u.fetch_url.take(),
            ca_file: u.ca_file.take(),
            fetch_github: u.fetch_github.take(),
            github_token_env: u.github_token_env.take(),
            github_api_url: u.github_api_url.take(),
            asset: u.asset.take(),
            fetch_s3: u.fetch_s3.take(),
            s3_endpoint: u.s3_endpoint.take(),
            s3_region: u.s3_region.take(),
            s3_path_style: u.s3_path_style.take(),
            fetch_azure: u.fetch_azure.take(),
            azure_endpoint: u.azure_endpoint.take(),
            fetch_gcs: u.fetch_gcs.take(),
            gcs_endpoint: u.gcs_endpoint.take(),
            allow_http: u.allow_http,
        }
    }

    /// Which sources are named, in flag order (the local ones first).
    fn named(&self) -> [bool; 7] {
        [
            self.fetch_file.is_some(),
            self.fetch_fleet.is_some(),
            self.fetch_url.is_some(),
            self.fetch_github.is_some(),
            self.fetch_s3.is_some(),
            self.fetch_azure.is_some(),
            self.fetch_gcs.is_some(),
        ]
    }

    /// These flags over the file's: the source as a whole (flags naming one
    /// replace the file's, so the two never add up to two sources), each
    /// option beside it on its own.
    pub(crate) fn or(self, file: SourceArgs) -> SourceArgs {
        let (a, f) = (self, file);
        let flags = a.named().contains(&true);
        SourceArgs {
            fetch_file: if flags { a.fetch_file } else { f.fetch_file },
            fetch_fleet: if flags { a.fetch_fleet } else { f.fetch_fleet },
            host_id: a.host_id.or(f.host_id),
            fleet_reports: a.fleet_reports || f.fleet_reports,
            fetch_url: if flags { a.fetch_url } else { f.fetch_url },
            fetch_github: if flags {
                a.fetch_github
            } else {
                f.fetch_github
            },
            fetch_s3: if flags { a.fetch_s3 } else { f.fetch_s3 },
            fetch_azure: if flags { a.fetch_azure } else { f.fetch_azure },
            fetch_gcs: if flags { a.fetch_gcs } else { f.fetch_gcs },
            ca_file: a.ca_file.or(f.ca_file),
            github_token_env: a.github_token_env.or(f.github_token_env),
            github_api_url: a.github_api_url.or(f.github_api_url),
            asset: a.asset.or(f.asset),
            s3_endpoint: a.s3_endpoint.or(f.s3_endpoint),
            s3_region: a.s3_region.or(f.s3_region),
            s3_path_style: a.s3_path_style.or(f.s3_path_style),
            azure_endpoint: a.azure_endpoint.or(f.azure_endpoint),
            gcs_endpoint: a.gcs_endpoint.or(f.gcs_endpoint),
            allow_http: a.allow_http || f.allow_http,
        }
    }

    /// Adds the fetcher for the source named, if any, to `config`, and says
    /// whether there was one. Everything is checked first (one source at
    /// most, its URL's form, the CA file read and parsed), so bad input
    /// stops the command before anything starts.
    pub(crate) fn add_to(
        self,
        mut config: Config,
        interval: Option<Duration>,
        has_keys: bool,
    ) -> Result<(Config, bool), Failure> {
        let usage = Failure::Usage;
        let sources = self.named();
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(usage(
                "more than one release source: choose one of --fetch-file, --fetch-fleet, --fetch-url, --fetch-github, --fetch-s3, --fetch-azure, --fetch-gcs".into(),
            ));
        }
        let networked = sources[2..].iter().any(|s| *s);
        if self.host_id.is_some() && self.fetch_fleet.is_none() {
            return Err(usage("--host-id applies to --fetch-fleet".into()));
        }
        if self.fleet_reports && self.fetch_fleet.is_none() {
            return Err(usage("--fleet-reports applies to --fetch-fleet".into()));
        }
        let fleet_over_network = self
            .fetch_fleet
            .as_deref()
            .is_some_and(|f| f.contains("://"));
        let networked = networked || fleet_over_network;
        if self.fetch_fleet.is_some() && !has_keys {
            return Err(usage(
                "--fetch-fleet needs --public-key: a fleet's manifest is trusted only when signed by it"
                    .into(),
            ));
        }
        if self.ca_file.is_some() && !networked {
            return Err(usage(
                "--ca-file applies to a release source over the network: --fetch-url, --fetch-github, --fetch-s3, --fetch-azure or --fetch-gcs".into(),
            ));
        }
        if self.allow_http && !networked {
            return Err(usage(
                "--allow-http applies to a release source over the network: --fetch-url, --fetch-github, --fetch-s3, --fetch-azure or --fetch-gcs".into(),
            ));
        }
        let allow_http = self.allow_http;
        // Plain http where it is not allowed stops everything too, before a
        // request could be sent.
        for (flag, url) in [
            ("--fetch-url", &self.fetch_url),
            ("--fetch-fleet", &self.fetch_fleet),
            ("--github-api-url", &self.github_api_url),
            ("--s3-endpoint", &self.s3_endpoint),
            ("--azure-endpoint", &self.azure_endpoint),
            ("--gcs-endpoint", &self.gcs_endpoint),
        ] {
            if let Some(url) = url.as_deref().filter(|u| u.starts_with("http://")) {
                fetcher::check_plain_http(url, allow_http)
                    .map_err(|e| usage(format!("{flag}: {e}")))?;
            }
        }
        // Read now, so that a bad file stops everything before it starts.
        let ca = match &self.ca_file {
            Some(path) => {
                let shown = path.display();
                let pem = std::fs::read(path)
                    .map_err(|e| usage(format!("--ca-file {shown}: cannot read it: {e}")))?;
                Some((shown.to_string(), pem))
            }
            None => None,
        };
        let ca_error =
            |shown: &str, e: fetcher::FetchError| usage(format!("--ca-file {shown}: {e}"));
        let fetching = sources.contains(&true);
        if let Some(path) = self.fetch_file {
            let mut fetcher = fetcher::File::new(path);
            if let Some(i) = interval {
                fetcher = fetcher.interval(i);
            }
            config = config.fetcher(fetcher);
        } else if let Some(dest) = self.fetch_fleet.clone() {
            let net = Net {
                s3_endpoint: self.s3_endpoint.clone(),
                s3_region: self.s3_region.clone(),
                s3_path_style: self.s3_path_style,
                azure_endpoint: self.azure_endpoint.clone(),
                gcs_endpoint: self.gcs_endpoint.clone(),
                allow_http,
                ca: ca.clone(),
            };
            let store = net
                .store(&dest)
                .map_err(|e| usage(format!("--fetch-fleet {dest}: {e}")))?;
            let mut fetcher = fetcher::Fleet::over(store).reports(self.fleet_reports);
            if let Some(id) = self.host_id {
                fetcher = fetcher.host_id(id);
            }
            if let Some(i) = interval {
                fetcher = fetcher.interval(i);
            }
            config = config.fetcher(fetcher);
        } else if let Some(url) = self.fetch_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(usage(format!(
                    "bad --fetch-url '{url}': expected an http:// or https:// URL"
                )));
            }
            let mut fetcher = fetcher::Http::new(url).sidecars().allow_http(allow_http);
            if let Some((shown, pem)) = &ca {
                fetcher = fetcher
                    .root_certificates(pem)
                    .map_err(|e| ca_error(shown, e))?;
            }
            if let Some(i) = interval {
                fetcher = fetcher.interval(i);
            }
            config = config.fetcher(fetcher);
        } else if let Some(repo) = self.fetch_github {
            let valid = repo
                .split_once('/')
                .is_some_and(|(o, r)| !o.is_empty() && !r.is_empty() && !r.contains('/'));
            if !valid {
                return Err(usage(format!(
                    "bad --fetch-github '{repo}': expected OWNER/REPO, e.g. acme/myapp"
                )));
            }
            // The token's variable is kept from the workers (GitHub::token_env).
            let var = match self.github_token_env {
                Some(var) if std::env::var(&var).is_err() => {
                    return Err(usage(format!(
                        "--github-token-env {var}: the variable {var} is not set"
                    )))
                }
                Some(var) => var,
                None => "GITHUB_TOKEN".into(),
            };
            let mut fetcher = fetcher::GitHub::new(repo)
                .token_env(var)
                .allow_http(allow_http);
            if let Some(api) = self.github_api_url {
                fetcher = fetcher.api_url(api);
            }
            if let Some((shown, pem)) = &ca {
                fetcher = fetcher
                    .root_certificates(pem)
                    .map_err(|e| ca_error(shown, e))?;
            }
            if let Some(asset) = self.asset {
                fetcher = fetcher.asset(asset);
            }
            if let Some(i) = interval {
                fetcher = fetcher.interval(i);
            }
            config = config.fetcher(fetcher);
        } else if let Some(url) = self.fetch_s3 {
            let (bucket, key) = bucket_and_object(&url, "s3://").ok_or_else(|| {
                    usage(format!(
                        "bad --fetch-s3 '{url}': expected s3://BUCKET/KEY, e.g. s3://acme-releases/myapp"
                    ))
                })?;
            let mut fetcher = fetcher::S3::new(bucket, key)
                .sidecars()
                .allow_http(allow_http);
            if let Some((shown, pem)) = &ca {
                fetcher = fetcher
                    .add_root_certificates(pem)
                    .map_err(|e| ca_error(shown, e))?;
            }
            if let Some(e) = self.s3_endpoint {
                fetcher = fetcher.endpoint(e);
            }
            if let Some(r) = self.s3_region {
                fetcher = fetcher.region(r);
            }
            if let Some(p) = self.s3_path_style {
                fetcher = fetcher.path_style(p);
            }
            if let Some(i) = interval {
                fetcher = fetcher.interval(i);
            }
            config = config.fetcher(fetcher);
        } else if let Some(url) = self.fetch_azure {
            let parts: Option<(&str, &str, &str)> = url.strip_prefix("az://").and_then(|rest| {
                let (account, rest) = rest.split_once('/')?;
                let (container, blob) = rest.split_once('/')?;
                Some((account, container, blob))
            });
            let Some((account, container, blob)) =
                parts.filter(|(a, c, b)| !a.is_empty() && !c.is_empty() && !b.is_empty())
            else {
                return Err(usage(format!(
                    "bad --fetch-azure '{url}': expected az://ACCOUNT/CONTAINER/BLOB, e.g. az://acmereleases/myapp/linux-x86_64"
                )));
            };
            let mut fetcher = fetcher::Azure::new(account, container, blob)
                .sidecars()
                .allow_http(allow_http);
            if let Some((shown, pem)) = &ca {
                fetcher = fetcher
                    .add_root_certificates(pem)
                    .map_err(|e| ca_error(shown, e))?;
            }
            if let Some(e) = self.azure_endpoint {
                fetcher = fetcher.endpoint(e);
            }
            if let Some(i) = interval {
                fetcher = fetcher.interval(i);
            }
            config = config.fetcher(fetcher);
        } else if let Some(url) = self.fetch_gcs {
            let (bucket, object) = bucket_and_object(&url, "gs://").ok_or_else(|| {
                    usage(format!(
                        "bad --fetch-gcs '{url}': expected gs://BUCKET/OBJECT, e.g. gs://acme-releases/myapp/linux-x86_64"
                    ))
                })?;
            let mut fetcher = fetcher::Gcs::new(bucket, object)
                .sidecars()
                .allow_http(allow_http);
            if let Some((shown, pem)) = &ca {
                fetcher = fetcher
                    .add_root_certificates(pem)
                    .map_err(|e| ca_error(shown, e))?;
            }
            if let Some(e) = self.gcs_endpoint {
                fetcher = fetcher.endpoint(e);
            }
            if let Some(i) = interval {
                fetcher = fetcher.interval(i);
            }
            config = config.fetcher(fetcher);
        }
        Ok((config, fetching))
    }
}

/// Where a fleet's store is and how to reach it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Net {
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_path_style: Option<bool>,
    pub azure_endpoint: Option<String>,
    pub gcs_endpoint: Option<String>,
    pub allow_http: bool,
    /// A CA file's name and PEM text, trusted besides the system's.
    pub ca: Option<(String, Vec<u8>)>,
}

impl Net {
    /// The store at `dest`: s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX],
    /// az://ACCOUNT/CONTAINER[/PREFIX], or a directory. Credentials come
    /// from the environment, as the fetchers read them.
    pub(crate) fn store(&self, dest: &str) -> Result<Box<dyn fetcher::Store>, String> {
        let ca = |e: fetcher::FetchError| match &self.ca {
            Some((shown, _)) => format!("--ca-file {shown}: {e}"),
            None => e.to_string(),
        };
        let split = |rest: &str| -> (String, String) {
            match rest.split_once('/') {
                Some((a, b)) => (a.to_string(), b.trim_matches('/').to_string()),
                None => (rest.to_string(), String::new()),
            }
        };
        if let Some(rest) = dest.strip_prefix("s3://") {
            let (bucket, prefix) = split(rest);
            if bucket.is_empty() {
                return Err("expected s3://BUCKET[/PREFIX]".into());
            }
            let mut s3 = fetcher::S3::new(bucket, prefix).allow_http(self.allow_http);
            if let Some((_, pem)) = &self.ca {
                s3 = s3.add_root_certificates(pem).map_err(ca)?;
            }
            if let Some(e) = &self.s3_endpoint {
                s3 = s3.endpoint(e);
            }
            if let Some(r) = &self.s3_region {
                s3 = s3.region(r);
            }
            if let Some(p) = self.s3_path_style {
                s3 = s3.path_style(p);
            }
            Ok(Box::new(s3))
        } else if let Some(rest) = dest.strip_prefix("gs://") {
            let (bucket, prefix) = split(rest);
            if bucket.is_empty() {
                return Err("expected gs://BUCKET[/PREFIX]".into());
            }
            let mut gcs = fetcher::Gcs::new(bucket, prefix).allow_http(self.allow_http);
            if let Some((_, pem)) = &self.ca {
                gcs = gcs.add_root_certificates(pem).map_err(ca)?;
            }
            if let Some(e) = &self.gcs_endpoint {
                gcs = gcs.endpoint(e);
            }
            Ok(Box::new(gcs))
        } else if let Some(rest) = dest.strip_prefix("az://") {
            let (account, rest) = split(rest);
            let (container, prefix) = split(&rest);
            if account.is_empty() || container.is_empty() {
                return Err("expected az://ACCOUNT/CONTAINER[/PREFIX]".into());
            }
            let mut azure =
                fetcher::Azure::new(account, container, prefix).allow_http(self.allow_http);
            if let Some((_, pem)) = &self.ca {
                azure = azure.add_root_certificates(pem).map_err(ca)?;
            }
            if let Some(e) = &self.azure_endpoint {
                azure = azure.endpoint(e);
            }
            Ok(Box::new(azure))
        } else if dest.starts_with("http://") || dest.starts_with("https://") {
            // Read-only: a web server or CDN in front of the store.
            let mut http =
                fetcher::Http::new(dest.trim_end_matches('/')).allow_http(self.allow_http);
            if let Some((_, pem)) = &self.ca {
                http = http.root_certificates(pem).map_err(ca)?;
            }
            Ok(Box::new(http))
        } else if dest.contains("://") {
            Err(format!(
                "{dest}: not a store a fleet polls: a directory, s3://, gs://, az://, or http(s):// to read one"
            ))
        } else {
            Ok(Box::new(fetcher::Directory::new(dest)))
        }
    }
}

/// The bucket and object of `SCHEME://BUCKET/OBJECT`, both non-empty.
fn bucket_and_object<'a>(url: &'a str, scheme: &str) -> Option<(&'a str, &'a str)> {
    url.strip_prefix(scheme)
        .and_then(|rest| rest.split_once('/'))
        .filter(|(bucket, object)| !bucket.is_empty() && !object.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> SourceArgs {
        SourceArgs {
            fetch_s3: Some("s3://acme/app".into()),
            s3_region: Some("eu-west-1".into()),
            ca_file: Some("/etc/app/ca.pem".into()),
            ..SourceArgs::default()
        }
    }

    #[test]
    fn a_source_given_as_a_flag_replaces_the_files_source_whole() {
        let flags = SourceArgs {
            fetch_url: Some("https://releases.example.com/app".into()),
            ..SourceArgs::default()
        };
        let merged = flags.or(file());
        assert_eq!(
            merged.named(),
            [false, false, true, false, false, false, false]
        );
        // The options beside a source still come from the file unless a flag sets them.
        assert_eq!(merged.ca_file, Some(PathBuf::from("/etc/app/ca.pem")));
    }

    #[test]
    fn without_a_source_flag_the_files_source_stands_and_flags_set_its_options() {
        let flags = SourceArgs {
            s3_region: Some("us-east-2".into()),
            ..SourceArgs::default()
        };
        let merged = flags.or(file());
        assert_eq!(merged.fetch_s3.as_deref(), Some("s3://acme/app"));
        assert_eq!(merged.s3_region.as_deref(), Some("us-east-2"));
        assert_eq!(
            merged.named(),
            [false, false, false, false, true, false, false]
        );
    }
}
