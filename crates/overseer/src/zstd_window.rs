//! The window a zstd frame declares, read before any decoder sees the
//! frame: a decoder takes it on trust and grows a buffer to it. Shared by
//! the unpacking of compressed releases and the application of patches.

/// The window a zstd frame declares (RFC 8878, 3.1.1.1), from its first
/// bytes: the window descriptor, or the content size of a single-segment
/// frame (whose window is its whole content).
pub(crate) fn zstd_window(head: &[u8]) -> Result<u64, String> {
    let short = || "the zstd frame header is truncated".to_string();
    let descriptor = *head.get(4).ok_or_else(short)?;
    if descriptor & 0x20 == 0 {
        let window = *head.get(5).ok_or_else(short)?;
        let base = 1u64 << (10 + (window >> 3));
        return Ok(base + (base / 8) * u64::from(window & 7));
    }
    let dictionary_id_len = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let content_size_len = [1, 2, 4, 8][usize::from(descriptor >> 6)];
    let at = 5 + dictionary_id_len;
    let bytes = head.get(at..at + content_size_len).ok_or_else(short)?;
    let mut le = [0u8; 8];
    le[..content_size_len].copy_from_slice(bytes);
    let size = u64::from_le_bytes(le);
    Ok(if content_size_len == 2 {
        size + 256
    } else {
        size
    })
}
