//! Which of a release's files is built for this platform: the OS and CPU
//! in the spellings release names use (Rust target triples, `linux-amd64`,
//! `Darwin_arm64`, `windows-x64`…), and among several matches the archive
//! format this build unpacks best.
//!
//! [`Platform`] says what this binary runs on; [`choose`] picks a file
//! name for it, or for a pattern the user gave.

/// What this binary runs on, as release file names spell it.
#[derive(Debug)]
pub(super) struct Platform {
    triple: String,
    /// The spellings of this OS (a line of [`OSES`]).
    os: String,
    /// The spellings of this CPU (a line of [`ARCHES`]).
    arch: String,
    env: Option<String>,
    bin_name: Option<String>,
}

/// Operating systems and their spellings in asset names; the first word is
/// `std::env::consts::OS`.
const OSES: &[&str] = &[
    "linux",
    "macos darwin apple osx mac macosx",
    "windows win win64 win32",
    "freebsd",
    "netbsd",
    "openbsd",
    "dragonfly",
    "illumos",
    "solaris sunos",
    "android",
    "ios",
];

/// CPUs and their spellings; the first word is `std::env::consts::ARCH`.
/// `x86_64` and `x86-64` are rewritten `amd64` before matching.
const ARCHES: &[&str] = &[
    "x86_64 amd64 x64",
    "aarch64 arm64 armv8",
    "x86 i386 i486 i586 i686 386 ia32",
    "arm armv6 armv6l armv7 armv7l armv7a armhf armel",
    "riscv64 riscv64gc",
    "powerpc64 ppc64 ppc64le powerpc64le",
    "powerpc ppc",
    "s390x",
    "loongarch64 loong64",
    "mips64 mips64el",
    "mips mipsel",
    "sparc64",
];

/// The C library / ABI part of target triples.
const ENVS: &str = "gnu musl msvc gnueabihf musleabihf gnueabi musleabi androideabi";

/// Builds that run on any CPU of their OS (macOS universal binaries).
const ANY_ARCH: &str = "universal universal2 fat";

/// Endings of names never chosen as the release: checksums, signatures,
/// documents, scripts, installers and archive formats the pipeline cannot read.
const SKIPPED: &str = "\
    .sha256 .sha256sum .sha512 .sha512sum .sha1 .md5 .minisig .sig .asc .gpg .pem .crt .cert \
    .pub .key .sbom .spdx .cdx .sigstore .bundle .intoto .jsonl .att .txt .md .json .yaml .yml \
    .toml .xml .html .pdf .sh .ps1 .bat .cmd .deb .rpm .apk .msi .msix .dmg .pkg .snap \
    .flatpak .appx .7z .rar .bz2 .tbz .tbz2 .lz .lz4 .jar .whl .nupkg .vsix .zsync";

const TAR_GZ: bool = cfg!(all(feature = "gzip", feature = "tar"));
const TAR_XZ: bool = cfg!(all(feature = "xz", feature = "tar"));
const TAR_ZST: bool = cfg!(all(feature = "zstd", feature = "tar"));

/// Archive formats in order of preference, whether this build unpacks them,
/// and the features that would.
const FORMATS: &[(&str, bool, &str)] = &[
    (".tar.gz", TAR_GZ, "gzip, tar"),
    (".tgz", TAR_GZ, "gzip, tar"),
    (".tar.xz", TAR_XZ, "xz, tar"),
    (".txz", TAR_XZ, "xz, tar"),
    (".tar.zst", TAR_ZST, "zstd, tar"),
    (".zip", cfg!(feature = "zip"), "zip"),
    (".gz", cfg!(feature = "gzip"), "gzip"),
    (".xz", cfg!(feature = "xz"), "xz"),
    (".zst", cfg!(feature = "zstd"), "zstd"),
    (".tar", cfg!(feature = "tar"), "tar"),
];

impl Platform {
    /// The platform of `target`, running on `os` and `arch` (as
    /// `std::env::consts` names them); `bin_name`, the binary's own name,
    /// breaks ties between names that start with it and others.
    pub(super) fn new(target: &str, os: &str, arch: &str, bin_name: Option<&str>) -> Platform {
        let line = |table: &[&str], name: &str| {
            let first = |l: &&str| l.split_whitespace().next() == Some(name);
            table
                .iter()
                .copied()
                .find(first)
                .unwrap_or(name)
                .to_string()
        };
        let parts: Vec<&str> = target.split('-').collect();
        let env = parts
            .get(3)
            .or_else(|| parts.get(2).filter(|e| words(ENVS).any(|v| v == **e)))
            .map(|e| e.to_string());
        Platform {
            triple: target.to_ascii_lowercase(),
            os: line(OSES, os),
            arch: line(ARCHES, arch),
            env,
            bin_name: bin_name.map(str::to_ascii_lowercase),
        }
    }

    /// How well an asset name fits this platform; `None` when it is for
    /// another OS or CPU.
    fn score(&self, name: &str) -> Option<i32> {
        let lower = name.to_ascii_lowercase();
        let mut score = if lower.contains(&self.triple) {
            100
        } else {
            let name = lower.replace("x86_64", "amd64").replace("x86-64", "amd64");
            let has = |w: &str| has_word(&name, w);
            let windows = self.os.starts_with("windows");
            let exe = lower.ends_with(".exe");
            let os = words(&self.os).any(has) || (exe && windows);
            let other_os = OSES.iter().any(|l| words(l).any(has)) || exe;
            let universal = self.os.starts_with("macos") && words(ANY_ARCH).any(has);
            let arch = words(&self.arch).any(has) || universal;
            let other_arch = ARCHES.iter().any(|l| words(l).any(has));
            if (other_os && !os) || (other_arch && !arch) {
                return None;
            }
            match (os, arch) {
                (true, true) => 40,
                (true, false) => 20,
                (false, true) => 10,
                (false, false) => 1,
            }
        };
        if let Some(found) = words(ENVS).find(|e| has_word(&lower, e)) {
            score += match self.env.as_deref() {
                Some(env) if env == found => 2,
                // A glibc build does not run on a musl system.
                Some(env) if env.starts_with("musl") => -10,
                _ => -2,
            };
        }
        if let Some(bin) = &self.bin_name {
            score += i32::from(lower.starts_with(bin.as_str()));
        }
        Some(score)
    }
}

fn words(line: &str) -> std::str::SplitWhitespace<'_> {
    line.split_whitespace()
}

/// Whether `word` occurs in `name` between non-alphanumeric characters.
fn has_word(name: &str, word: &str) -> bool {
    name.match_indices(word).any(|(i, _)| {
        let before = name[..i].chars().next_back();
        let after = name[i + word.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

fn skipped(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    words(SKIPPED).any(|ext| lower.ends_with(ext))
        || ["checksums", "sha256sums", "sha512sums"]
            .iter()
            .any(|w| lower.contains(w))
}

/// The archive format of a name: its rank and whether this build unpacks
/// it (a bare executable ranks last).
fn archive_format(name: &str) -> (usize, bool, &'static str) {
    let lower = name.to_ascii_lowercase();
    FORMATS
        .iter()
        .enumerate()
        .find(|(_, (ext, ..))| lower.ends_with(ext))
        .map_or((FORMATS.len(), true, ""), |(i, (_, ok, features))| {
            (i, *ok, *features)
        })
}

/// Picks the file for `platform` among a release's file `names`, or the one
/// `pattern` names: its index in `names`. The error says why none fits,
/// listing the names, for a message about the release.
pub(super) fn choose(
    names: &[&str],
    platform: &Platform,
    pattern: Option<&str>,
) -> Result<usize, String> {
    let listed = || {
        if names.is_empty() {
            "it has no assets (yet)".to_string()
        } else {
            format!("its assets are {}", names.join(", "))
        }
    };
    let mut candidates: Vec<(usize, &str)> = names
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, name)| !skipped(name))
        .collect();
    if let Some(pattern) = pattern {
        if let Some(exact) = names.iter().position(|name| *name == pattern) {
            return Ok(exact);
        }
        let p = pattern.to_ascii_lowercase();
        candidates.retain(|(_, name)| name.to_ascii_lowercase().contains(&p));
        match candidates.as_slice() {
            [] => return Err(format!("no asset matches '{pattern}': {}", listed())),
            [(one, _)] => return Ok(*one),
            _ => {}
        }
    }
    let mut scored: Vec<(i32, usize, &str)> = candidates
        .iter()
        .filter_map(|&(i, name)| platform.score(name).map(|s| (s, i, name)))
        .collect();
    // The best match among those this build cannot unpack (the first of equals).
    let unreadable = scored
        .iter()
        .filter(|(_, _, name)| !archive_format(name).1)
        .min_by_key(|(score, ..)| std::cmp::Reverse(*score))
        .map(|(_, _, name)| (*name, archive_format(name).2));
    scored.retain(|(_, _, name)| archive_format(name).1);
    let best = scored.iter().max_by(|(sa, _, a), (sb, _, b)| {
        sa.cmp(sb)
            .then(archive_format(b).0.cmp(&archive_format(a).0))
    });
    if let Some((_, index, _)) = best {
        return Ok(*index);
    }
    let wanted = format!(
        "{} ({} {})",
        platform.triple,
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    if let Some((name, features)) = unreadable {
        return Err(format!(
            "the asset for {wanted} is {name}, which this build cannot unpack: \
             enable overseer's cargo features {features}"
        ));
    }
    let fix = "name one with .asset(\"NAME\"), or publish one with the target triple in its name";
    match pattern {
        Some(p) => Err(format!(
            "several assets match '{p}' but none is for {wanted}: {}; {fix}",
            listed()
        )),
        None => Err(format!("no asset is for {wanted}: {}; {fix}", listed())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name `choose` picks for a platform among space-separated names.
    fn pick(platform: &str, names: &str) -> Result<String, String> {
        let mut parts = platform.split(' ');
        let (target, os, arch) = (parts.next(), parts.next(), parts.next());
        let (target, os, arch) = (target.unwrap_or(""), os.unwrap_or(""), arch.unwrap_or(""));
        let platform = Platform::new(target, os, arch, Some("app"));
        let names: Vec<&str> = names.split_whitespace().collect();
        choose(&names, &platform, None).map(|i| names[i].to_string())
    }

    // Written for the default formats (gzip, tar): the cases prefer archives.
    #[cfg(all(feature = "gzip", feature = "tar"))]
    #[test]
    fn common_spellings() {
        let cases = [
            (
                "app-linux-amd64.tar.gz app-darwin-amd64.tar.gz app-linux-arm64.tar.gz",
                0,
            ),
            (
                "app_Linux_x86_64.tar.gz app_Darwin_x86_64.tar.gz app_Linux_arm64.tar.gz",
                0,
            ),
            (
                "app-x86_64-apple-darwin.tar.gz app-x86_64-unknown-linux-gnu.tar.gz",
                1,
            ),
            (
                "app-x86_64-unknown-linux-musl.zip app-x86_64-unknown-linux-gnu.zip",
                1,
            ),
            ("app-win-x64.exe app-linux-x64", 1),
            ("app-linux-x86.tar.gz app-linux-x86-64.tar.gz", 1),
            (
                "app-linux-amd64.tar.gz.sha256 checksums.txt app-linux-amd64.tar.gz",
                2,
            ),
            ("app-linux-amd64 app-linux-amd64.tar.gz", 1),
            ("app-linux-amd64.deb app-linux.tar.gz", 1),
            ("app.exe app", 1),
            ("app-darwin-arm64.tgz app-amd64.tar.gz", 1),
        ];
        for (names, want) in cases {
            let want = names.split(' ').nth(want).unwrap_or_default();
            let got = pick("x86_64-unknown-linux-gnu linux x86_64", names);
            if !archive_format(want).1 {
                // A format this build leaves out: the error names the asset.
                let error = got.expect_err(names);
                assert!(error.contains(want), "{names}: {error}");
                continue;
            }
            assert_eq!(got.as_deref(), Ok(want), "{names}");
        }
        let mac = "aarch64-apple-darwin macos aarch64";
        let names = "app-macos-x86_64.zip app-linux-arm64.tar.gz app-macos-aarch64.tar.gz";
        assert_eq!(pick(mac, names).as_deref(), Ok("app-macos-aarch64.tar.gz"));
        let names = "app-linux-arm64.tar.gz app-darwin-universal.tar.gz";
        assert_eq!(
            pick(mac, names).as_deref(),
            Ok("app-darwin-universal.tar.gz")
        );
        let win = "i686-pc-windows-msvc windows x86";
        let names = "app-windows-x64.exe app-darwin-386 app-win32-x86.exe";
        assert_eq!(pick(win, names).as_deref(), Ok("app-win32-x86.exe"));
    }

    // Written for the default formats (gzip, tar): the cases prefer archives.
    #[cfg(all(feature = "gzip", feature = "tar"))]
    #[test]
    fn musl_prefers_musl() {
        let names = "app-x86_64-linux-gnu.tar.gz app-x86_64-linux-musl.tar.gz";
        let musl = "x86_64-unknown-linux-musl linux x86_64";
        assert_eq!(
            pick(musl, names).as_deref(),
            Ok("app-x86_64-linux-musl.tar.gz")
        );
    }

    #[test]
    fn no_match_lists_assets() {
        let names = "app-darwin-arm64.tar.gz app.sha256";
        let err = pick("x86_64-unknown-linux-gnu linux x86_64", names).expect_err("no match");
        assert!(err.contains("app-darwin-arm64.tar.gz, app.sha256"), "{err}");
        assert!(err.contains(".asset("), "{err}");
    }

    #[test]
    fn words_respect_boundaries() {
        assert!(has_word("app-darwin-arm64", "darwin"));
        assert!(!has_word("app-darwin-arm64", "win"));
        assert!(!has_word("app-arm64", "arm"));
        assert!(has_word("app_linux_amd64.tar.gz", "amd64"));
    }
}
