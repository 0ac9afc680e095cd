//! The steps one release goes through, in order, from the download to the
//! swap (the diagram in `mod.rs`).

use std::sync::mpsc;

use super::download;
use super::probation::Installed;
use super::rejection::Rejection;
use super::sanity;
use super::swap;
use super::unpack;
use super::upgrader::Upgrader;
use super::verify;
use crate::fetcher::Release;
use crate::log;

impl Upgrader {
    pub(super) fn pipeline(
        &mut self,
        release: Release,
        named: &str,
        fetcher: &mut dyn crate::fetcher::Fetcher,
    ) -> Result<Step, Rejection> {
        // 0. The release the installed binary came from: its body is not read.
        if release.tag.is_some() && release.tag == self.installed_tag() {
            log::debug!("release {named} is the one installed; not downloaded");
            return Ok(Step::Same);
        }
        // Owned: the ledger is written (through `self`) half-way.
        let cfg = &self.config.clone();
        let t = &self.target.clone();
        // 1. Download into a private staging file beside the binary.
        let out = download::staging_file(&t.dir, &t.name).map_err(|e| {
            Rejection::io(
                &format!("creating a staging file in {}", t.dir.display()),
                e,
            )
        })?;
        let Release {
            body,
            size,
            name,
            sha256,
            signature,
            version,
            tag,
            vouched,
            ..
        } = release;
        let via = vouched.as_ref().and_then(|v| v.via.clone());
        // A fleet manifest's release: exactly the bytes it names.
        let size = match &vouched {
            Some(v) => Some(v.size),
            None => size,
        };
        log::info!("downloading release {named}");
        let progress = crate::progress::Reporter::start(cfg.progress.as_deref(), named, size);
        let limits = (cfg.max_download_size, cfg.download_timeout);
        let mut raw = download::download(body, out, size, limits, progress)?;
        let raw_sha = raw.sha256.clone();
        log::debug!("downloaded {} bytes, sha256 {raw_sha}", raw.size);
        if let Some(v) = &vouched {
            // Not remembered as the release's fault: a copy of the store
            // still under way heals at a later poll (retried with a growing
            // wait), while a swapped file is refused at each.
            if raw.size != v.size || raw_sha != v.sha256 {
                return Err(Rejection::new(format!(
                    "the artifact is not the one the signed manifest names: {} bytes with sha256 {raw_sha}, not {} bytes with sha256 {} (a file swapped, or changed or still being copied after publishing)",
                    raw.size, v.size, v.sha256
                )));
            }
        }
        if self.known.bad.contains(&raw_sha) {
            return Ok(Step::KnownBad(raw_sha));
        }
        // A compressed file or archive is checked against its signature
        // before any decoder reads it, when the signature is over the file
        // as published; else it may be over the executable inside, checked
        // after unpacking (step 5).
        let packed = unpack::sniff(raw.file.as_file_mut())
            .map_err(|e| Rejection::io("reading the staging file", e))?
            != unpack::Format::Plain;
        let mut verified = None;
        if packed && !cfg.public_keys.is_empty() && vouched.is_none() {
            verified = verify::signature_over_download(
                &cfg.public_keys,
                signature.as_deref(),
                raw.file.as_file_mut(),
            )?;
        }
        // 2. Unpack.
        let mut wanted = vec![cfg
            .executable_name
            .clone()
            .unwrap_or_else(|| t.name.clone())];
        // The release's name without its extensions (`app.tar.gz` → `app`);
        // none for a name that starts with a dot.
        if let Some(stem) = name.as_deref().and_then(|n| n.split('.').next()) {
            if !stem.is_empty() {
                wanted.push(stem.to_string());
            }
        }
        let unpack = unpack::Unpack {
            dir: &t.dir,
            bin_name: &t.name,
            wanted: &wanted,
            max_size: cfg.max_download_size,
        };
        let mut bin = match unpack::unpack(&mut raw, &unpack)? {
            Some(unpacked) => {
                drop(raw);
                unpacked
            }
            None => raw,
        };
        // 3. Same binary as the one installed?
        if bin.sha256 == self.binary.current() {
            return Ok(Step::Same);
        }
        if self.known.bad.contains(&bin.sha256) {
            return Ok(Step::KnownBad(bin.sha256));
        }
        // 4. Checksum.
        if let Some(expected) = &sha256 {
            verify::checksum(expected, &raw_sha, &bin.sha256)?;
        }
        // 5. Signature, version, target.
        let mut signed_version = None;
        if let Some(v) = &vouched {
            // Vouched for by the manifest's signature, checked by the fleet
            // source with these keys, and by its hash above.
            let floor = verify::version_floor(
                &v.version,
                self.version.as_ref(),
                self.known.highest.as_ref(),
            );
            if let (Some(floor), false) = (floor, v.downgrade || cfg.allow_downgrade) {
                return Err(Rejection::below_floor(format!(
                    "version {} from the manifest is not newer than {floor} (installed or seen before)",
                    v.version
                )));
            }
            let version = v.version.clone();
            if let Err(e) = self.update_ledger(|e| e.saw(&version)) {
                return Err(Rejection::new(format!("recording the version seen: {e}")));
            }
            signed_version = Some(v.version.to_string());
        } else if !cfg.public_keys.is_empty() {
            let signed = match &verified {
                // Verified over the file as published, before unpacking.
                Some(trusted) => trusted.signed()?,
                // Not over the file as published (or not packed): over the
                // executable, then.
                None => verify::signature(
                    &cfg.public_keys,
                    signature.as_deref(),
                    bin.file.as_file_mut(),
                )?,
            };
            let floor = verify::version_floor(
                &signed.version,
                self.version.as_ref(),
                self.known.highest.as_ref(),
            );
            if let Some(floor) = floor {
                if !cfg.allow_downgrade {
                    return Err(Rejection::below_floor(format!(
                        "signed version {} is not newer than {floor} (installed or seen before); set allow_downgrade to accept it",
                        signed.version
                    )));
                }
            }
            let version = signed.version.clone();
            if let Err(e) = self.update_ledger(|e| e.saw(&version)) {
                return Err(Rejection::new(format!("recording the version seen: {e}")));
            }
            signed_version = Some(signed.version.to_string());
        }
        // 6. A native executable?
        verify::native_executable(bin.file.as_file(), &t.path)?;
        swap::match_permissions(t, bin.file.as_file())
            .map_err(|e| Rejection::io("setting the new binary's permissions", e))?;
        bin.file
            .as_file()
            .sync_all()
            .map_err(|e| Rejection::io("writing the staging file", e))?;
        // Close the writable handle before running it (ETXTBSY otherwise).
        let staged_path = bin.file.path().to_path_buf();
        let temp_path = bin.file.into_temp_path();
        // 7. Sanity check.
        if cfg.sanity_check {
            sanity::check(
                &staged_path,
                cfg.sanity_args.as_deref(),
                cfg.sanity_timeout,
                &self.withheld,
            )?;
        }
        // 8. pre_upgrade veto.
        if let Some(hook) = &cfg.pre_upgrade {
            hook(&staged_path)
                .map_err(|e| Rejection::release(format!("vetoed by pre_upgrade: {e}")))?;
        }
        // 9. Still offered? A fleet's release withdrawn while it downloaded
        // is dropped. The source unreachable now: the offer stands.
        if let Some(t) = &tag {
            match fetcher.still_offered(t) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Rejection::new(
                        "withdrawn at its source while it was downloaded and checked; dropped",
                    ))
                }
                Err(e) => log::debug!("cannot ask whether {t} is still offered: {e}"),
            }
        }
        // 10. Swap.
        swap::install(t, temp_path).map_err(|e| {
            Rejection::io(
                &format!("swapping the new binary in at {}", t.path.display()),
                e,
            )
        })?;
        let version = signed_version.or(version);
        log::info!(
            "installed {}{} at {} (sha256 {}); the previous binary is kept as {}",
            version
                .as_deref()
                .map(|v| format!("version {v}"))
                .unwrap_or_else(|| "a new release".into()),
            via.as_deref().map(|v| format!(" {v}")).unwrap_or_default(),
            t.path.display(),
            bin.sha256.get(..12).unwrap_or(&bin.sha256),
            t.rollback_path().display()
        );
        Ok(Step::Installed(Installed {
            target: t.clone(),
            sha256: bin.sha256,
            version,
            tag,
            via,
            reply: mpsc::channel().0,
        }))
    }
}

/// Where the pipeline stopped short of installing.
pub(super) enum Step {
    Same,
    KnownBad(String),
    Installed(Installed),
}
