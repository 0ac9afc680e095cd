//! The release source's credentials, kept from the processes the master
//! starts: the workers, the sanity check of a new release and readiness
//! probes. The fetcher names the variables it reads
//! ([`Fetcher::credential_env`](crate::fetcher::Fetcher::credential_env));
//! those set in the master's environment are left out of theirs, except the
//! ones `Config::pass_env` names.

use std::ffi::{OsStr, OsString};
use std::process::Command;

/// The variables of the master's environment that its children do not get.
#[derive(Debug, Clone, Default)]
pub(crate) struct Withheld {
    names: Vec<OsString>,
}

impl Withheld {
    /// The variables of this process's environment that `patterns` name
    /// (`NAME`, or `PREFIX*`), except those in `pass`.
    pub fn from_env(patterns: &[String], pass: &[String]) -> Withheld {
        let names = std::env::vars_os().map(|(name, _)| name);
        Withheld::among(names, patterns, pass)
    }

    /// Those of `names` that `patterns` name, except those in `pass`, sorted.
    fn among(
        names: impl Iterator<Item = OsString>,
        patterns: &[String],
        pass: &[String],
    ) -> Withheld {
        let mut names: Vec<OsString> = names
            .filter(|name| patterns.iter().any(|p| matches(p, name)))
            .filter(|name| !pass.iter().any(|p| OsStr::new(p) == name))
            .collect();
        names.sort();
        names.dedup();
        Withheld { names }
    }

    /// Whether `name` is withheld.
    pub fn contains(&self, name: &OsStr) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// Leaves the withheld variables out of `cmd`'s environment.
    pub fn remove_from(&self, cmd: &mut Command) {
        for name in &self.names {
            cmd.env_remove(name);
        }
    }

    /// The names, for the log line that says which were withheld.
    pub fn names(&self) -> Vec<String> {
        self.names
            .iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect()
    }
}

/// Whether `pattern` (`NAME`, or `PREFIX*`) names the variable `name`.
fn matches(pattern: &str, name: &OsStr) -> bool {
    let name = name.as_encoded_bytes();
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix.as_bytes()),
        None => name == pattern.as_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes_except_those_passed() {
        let env = [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "MY_AWS_THING",
            "GITHUB_TOKEN",
            "GITHUB_TOKEN_OLD",
            "PATH",
        ]
        .map(OsString::from);
        let patterns = ["AWS_*".to_string(), "GITHUB_TOKEN".to_string()];
        let withheld = Withheld::among(env.into_iter(), &patterns, &["AWS_REGION".into()]);
        assert_eq!(withheld.names(), ["AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN"]);
        assert!(withheld.contains(OsStr::new("GITHUB_TOKEN")));
        assert!(!withheld.contains(OsStr::new("AWS_REGION")));
        assert!(!withheld.contains(OsStr::new("PATH")));
        let none = Withheld::among(["PATH".into()].into_iter(), &[], &[]);
        assert!(none.names().is_empty());
    }
}
