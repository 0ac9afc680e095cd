//! The configured public keys of release signatures: read once when the
//! configuration is checked (so a key that cannot be read stops the start),
//! and again by each signature check.

/// Reads a minisign public key: the base64 line alone, or the whole `.pub`
/// file with its comment line.
#[cfg(feature = "signatures")]
pub(crate) fn parse_public_key(key: &str) -> Result<minisign_verify::PublicKey, String> {
    use minisign_verify::PublicKey;
    let key = key.trim();
    let parsed = if key.contains('\n') {
        PublicKey::decode(key)
    } else {
        PublicKey::from_base64(key)
    };
    parsed.map_err(|e| format!("configured public key {key:?} cannot be read: {e}"))
}

/// Checks that every configured key can be read (reported at start).
pub(crate) fn check_keys(keys: &[String]) -> Result<(), String> {
    #[cfg(feature = "signatures")]
    for key in keys {
        parse_public_key(key)?;
    }
    #[cfg(not(feature = "signatures"))]
    if !keys.is_empty() {
        return Err(
            "public keys are configured but signature support is not compiled in (enable the `signatures` feature)".into(),
        );
    }
    Ok(())
}
