//! `overseer keygen` and `overseer sign`: publishing signed releases.
//!
//! The files are the `minisign` tool's formats; `sign` is the same as
//! `minisign -S -s KEY -m FILE -t 'version:1.4.0 target:x86_64-unknown-linux-gnu'`.

use std::path::{Path, PathBuf};

use clap::Args;

/// `overseer keygen`.
#[derive(Args, Debug)]
pub(crate) struct KeygenArgs {
    /// Directory to write NAME.key and NAME.pub into (created if missing).
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Base name of the two files.
    #[arg(long, default_value = "overseer")]
    name: String,
    /// Protect the secret key with the password in this environment
    /// variable (default: no password, for release pipelines that keep
    /// the key in a secret store).
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// Overwrite existing key files.
    #[arg(long)]
    force: bool,
}

/// `overseer sign`.
#[derive(Args, Debug)]
pub(crate) struct SignArgs {
    /// The secret key (from `overseer keygen` or `minisign -G`).
    #[arg(long, short = 'k')]
    key: PathBuf,
    /// The release's version (semantic versioning: 1.4.0, v2.0.0-rc.1).
    #[arg(long)]
    version: String,
    /// The Rust target triple the release runs on (default: this
    /// machine's, e.g. x86_64-unknown-linux-gnu).
    #[arg(long)]
    target: Option<String>,
    /// The password is in this environment variable (for encrypted keys).
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// Where to write the signature (default: FILE.minisig).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// The file to sign.
    file: PathBuf,
}

/// Runs `overseer keygen`.
pub(crate) fn run_keygen(a: KeygenArgs) -> Result<(), String> {
    keygen(&a.out, &a.name, a.password_env.as_deref(), a.force)
}

/// Runs `overseer sign`.
pub(crate) fn run_sign(a: SignArgs) -> Result<(), String> {
    sign(
        &a.key,
        &a.version,
        a.target.as_deref(),
        a.password_env.as_deref(),
        a.output,
        &a.file,
    )
}

fn password(var: Option<&str>) -> Result<Option<String>, String> {
    match var {
        None => Ok(None),
        Some(v) => std::env::var(v)
            .map(Some)
            .map_err(|_| format!("the password variable {v} is not set")),
    }
}

fn keygen(out: &Path, name: &str, password_env: Option<&str>, force: bool) -> Result<(), String> {
    let sk_path = out.join(format!("{name}.key"));
    let pk_path = out.join(format!("{name}.pub"));
    for p in [&sk_path, &pk_path] {
        if p.exists() && !force {
            return Err(format!(
                "{} exists; pass --force to replace it (a replaced key cannot sign for services that trust the old one)",
                p.display()
            ));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let kp = match password(password_env)? {
        Some(pw) => minisign::KeyPair::generate_encrypted_keypair(Some(pw)),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| format!("cannot generate a key pair: {e}"))?;
    let sk_box = kp
        .sk
        .to_box(None)
        .map_err(|e| format!("cannot encode the secret key: {e}"))?;
    let pk_box = kp
        .pk
        .to_box()
        .map_err(|e| format!("cannot encode the public key: {e}"))?;
    write_private(&sk_path, sk_box.to_string().as_bytes())?;
    std::fs::write(&pk_path, pk_box.to_string())
        .map_err(|e| format!("cannot write {}: {e}", pk_path.display()))?;
    println!("secret key: {} (keep it private)", sk_path.display());
    println!("public key: {}", pk_path.display());
    println!(
        "trust it with: Config::public_key(\"{}\")",
        kp.pk.to_base64()
    );
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// This machine's target triple, as Rust names it.
/// The secret key at `key`, opened with the password in `password_env`.
pub(crate) fn secret_key(
    key: &Path,
    password_env: Option<&str>,
) -> Result<minisign::SecretKey, String> {
    let sk_text = std::fs::read_to_string(key)
        .map_err(|e| format!("cannot read the secret key {}: {e}", key.display()))?;
    let sk_box = minisign::SecretKeyBox::from_string(&sk_text)
        .map_err(|e| format!("{} is not a minisign secret key: {e}", key.display()))?;
    match password(password_env)? {
        Some(pw) => sk_box.into_secret_key(Some(pw)),
        None => sk_box.into_unencrypted_secret_key(),
    }
    .map_err(|e| {
        format!(
            "cannot open the secret key {}: {e} (an encrypted key needs --password-env)",
            key.display()
        )
    })
}

pub(crate) fn this_target() -> String {
    let arch = std::env::consts::ARCH;
    match std::env::consts::OS {
        "linux" if cfg!(target_env = "musl") => format!("{arch}-unknown-linux-musl"),
        "linux" => format!("{arch}-unknown-linux-gnu"),
        "macos" => format!("{arch}-apple-darwin"),
        "freebsd" => format!("{arch}-unknown-freebsd"),
        os => format!("{arch}-unknown-{os}"),
    }
}

fn sign(
    key: &Path,
    version: &str,
    target: Option<&str>,
    password_env: Option<&str>,
    output: Option<PathBuf>,
    file: &Path,
) -> Result<(), String> {
    let v = version.trim_start_matches(['v', 'V']);
    if v.is_empty()
        || !v.starts_with(|c: char| c.is_ascii_digit())
        || v.contains(|c: char| c.is_whitespace() || c.is_control() || c == ':' || c == '=')
    {
        return Err(format!(
            "--version {version:?} is not a semantic version (like 1.4.0)"
        ));
    }
    let target = target.map(str::to_string).unwrap_or_else(this_target);
    if target.is_empty() || target.contains(|c: char| c.is_whitespace() || c == ':' || c == '=') {
        return Err(format!(
            "--target {target:?} must be one word, like x86_64-unknown-linux-gnu"
        ));
    }
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Fields are tab-separated and the verifier refuses a key given twice;
    // the file name, the one part not chosen by the signer's flags, goes
    // last and may not hold a tab or any other control character, so it
    // can never be read as a field of its own.
    if name.chars().any(char::is_control) {
        return Err(format!(
            "the file name {name:?} holds a control character (a tab or a line break): rename the file before signing it"
        ));
    }
    let sk = secret_key(key, password_env)?;
    let data =
        std::fs::File::open(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let comment = format!("timestamp:{timestamp}\tversion:{v}\ttarget:{target}\tfile:{name}");
    let sig = minisign::sign(None, &sk, data, Some(&comment), None)
        .map_err(|e| format!("cannot sign {}: {e}", file.display()))?;
    let out = output.unwrap_or_else(|| {
        let mut p = file.as_os_str().to_owned();
        p.push(".minisig");
        PathBuf::from(p)
    });
    std::fs::write(&out, sig.to_string())
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!(
        "signed {} as version {v} for {target}: {}",
        file.display(),
        out.display()
    );
    Ok(())
}
