//! PROGRAM (and a `--ready cmd=` probe): found the way a shell finds a
//! command, and told apart from a script interpreter, whose file an upgrade
//! must never replace.

use std::path::{Path, PathBuf};

/// Finds PROGRAM like a shell: as given when it has a slash, else in `PATH`;
/// it must be an executable file (by this user: the `which` crate's check).
pub(crate) fn find_program(program: &Path) -> Result<PathBuf, String> {
    let shown = program.display();
    if program.as_os_str().is_empty() {
        return Err("PROGRAM is empty".into());
    }
    let found = which::which(program);
    if program.components().count() > 1 || program.is_absolute() {
        return found.map_err(|_| {
            if program.exists() {
                format!(
                    "PROGRAM not executable: '{shown}' is not an executable file (chmod +x it, or run it through its interpreter)"
                )
            } else {
                format!("PROGRAM not found: '{shown}' does not exist")
            }
        });
    }
    found.map_err(|_| {
        format!("PROGRAM not found: '{shown}' is not in PATH / not executable (give a path like ./{shown})")
    })
}

/// The name of a well-known script interpreter or launcher (`python3.11`,
/// `node`, `env`, …), which a release must never replace.
pub(crate) fn interpreter_name(path: &Path) -> Option<String> {
    const INTERPRETERS: [&str; 20] = [
        "python", "pypy", "node", "nodejs", "deno", "bun", "ruby", "perl", "php", "bash", "sh",
        "dash", "zsh", "java", "lua", "luajit", "pwsh", "dotnet", "env", "busybox",
    ];
    let name = path.file_name()?.to_str()?;
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    INTERPRETERS.contains(&stem).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreters_are_recognised_by_file_name() {
        for name in [
            "python3.11",
            "python3",
            "node",
            "bash",
            "env",
            "perl5.36",
            "java",
        ] {
            assert!(
                interpreter_name(Path::new("/usr/bin").join(name).as_path()).is_some(),
                "{name}"
            );
        }
        for name in ["myapp", "python-api", "nodeserver", "app.py", "shop2"] {
            assert!(
                interpreter_name(Path::new("/srv").join(name).as_path()).is_none(),
                "{name}"
            );
        }
    }

    #[test]
    fn programs_are_found_in_path_or_as_given() {
        let found = find_program(Path::new("sh")).unwrap_or_else(|e| panic!("{e}"));
        assert!(found.is_absolute() && found.ends_with("sh"), "{found:?}");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let script = dir.path().join("app.py");
        std::fs::write(&script, "print(1)\n").unwrap_or_else(|e| panic!("{e}"));
        let e = find_program(&script).expect_err("not executable");
        assert!(e.starts_with("PROGRAM not executable"), "{e}");
        let e = find_program(&dir.path().join("missing")).expect_err("missing");
        assert!(e.contains("does not exist"), "{e}");
        let e = find_program(Path::new("no-such-program-for-overseer")).expect_err("missing");
        assert!(e.contains("is not in PATH"), "{e}");
        assert!(find_program(Path::new("")).is_err());
    }
}
