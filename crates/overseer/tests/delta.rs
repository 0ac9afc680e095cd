//! Applying a delta patch to a 50 MiB binary, in a child process of its
//! own (this test binary run again), whose peak memory is read from the
//! kernel (`VmHWM`): it stays far below the binary's size, as the base is
//! read where the patch points and the output streamed to a file.
#![cfg(all(target_os = "linux", feature = "delta"))]

use std::io::Write;
use std::process::Command;

use sha2::{Digest, Sha256};

/// Set in the child: `BASE\nPATCH\nOUT\nPATCH_SIZE\nMAX_SIZE`.
const JOB: &str = "OVERSEER_DELTA_TEST_JOB";
const BASE_SIZE: usize = 50 << 20;
const APPENDED: &[u8] = b"appended by the patch";

fn uvarint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A zstd block header: last block or not, type (0 raw, 1 RLE), size.
fn block(last: bool, kind: u32, size: usize) -> [u8; 3] {
    let h = u32::from(last) | (kind << 1) | ((size as u32) << 3);
    let b = h.to_le_bytes();
    [b[0], b[1], b[2]]
}

/// A patch that keeps the whole base (its 50 MiB added to zeros, as RLE
/// blocks) and appends a few bytes: one zstd frame with an 8 MiB window.
fn patch() -> Vec<u8> {
    let mut head = Vec::new();
    head.extend_from_slice(&0xB1DFu32.to_le_bytes());
    head.extend_from_slice(&0x1000u32.to_le_bytes());
    uvarint(BASE_SIZE as u64, &mut head);
    let mut tail = Vec::new();
    uvarint(APPENDED.len() as u64, &mut tail);
    tail.extend_from_slice(APPENDED);
    tail.push(0); // seek 0
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 13 << 3];
    frame.extend_from_slice(&block(false, 0, head.len()));
    frame.extend_from_slice(&head);
    let mut left = BASE_SIZE;
    while left > 0 {
        let n = left.min(128 << 10);
        frame.extend_from_slice(&block(false, 1, n));
        frame.push(0);
        left -= n;
    }
    frame.extend_from_slice(&block(true, 0, tail.len()));
    frame.extend_from_slice(&tail);
    frame
}

/// The child's work, when it is the child: apply, then say the peak.
#[test]
fn child() {
    let Ok(job) = std::env::var(JOB) else {
        return;
    };
    let parts: Vec<&str> = job.split('\n').collect();
    let mut patch = std::fs::File::open(parts[1]).expect("patch");
    let base = std::fs::File::open(parts[0]).expect("base");
    let mut out = std::fs::File::create(parts[2]).expect("out");
    let rebuilt = overseer::delta::apply(
        &mut patch,
        base,
        &mut out,
        parts[3].parse().expect("size"),
        parts[4].parse().expect("size"),
    )
    .expect("apply");
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("VmHWM");
    println!("RESULT {} {} {peak}", rebuilt.size, rebuilt.sha256);
}

#[test]
fn applying_a_patch_to_a_50_mib_binary_stays_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // The base, written and hashed a megabyte at a time.
    let mut want = Sha256::new();
    let mut base = std::fs::File::create(d.join("base")).expect("base");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..BASE_SIZE / chunk.len() {
        for b in chunk.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        base.write_all(&chunk).expect("write");
        want.update(&chunk);
    }
    drop(base);
    want.update(APPENDED);
    let want = format!("{:x}", want.finalize());
    let patch = patch();
    std::fs::write(d.join("patch"), &patch).expect("patch");
    let size = BASE_SIZE + APPENDED.len();
    let job = [
        d.join("base").display().to_string(),
        d.join("patch").display().to_string(),
        d.join("out").display().to_string(),
        patch.len().to_string(),
        size.to_string(),
    ]
    .join("\n");
    let out = Command::new(std::env::current_exe().expect("this test"))
        .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(JOB, job)
        .output()
        .expect("the child");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let result: Vec<&str> = text
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no result: {text}"))
        .split(' ')
        .collect();
    assert_eq!(result[0], size.to_string());
    assert_eq!(result[1], want);
    let peak_kib: u64 = result[2].parse().expect("peak");
    eprintln!(
        "applying a {}-byte patch to a 50 MiB binary: peak RSS {:.1} MiB",
        patch.len(),
        peak_kib as f64 / 1024.0
    );
    // The base and the output are 50 MiB each: neither is held.
    assert!(peak_kib < 32 * 1024, "peak RSS {peak_kib} KiB");
    let written = std::fs::metadata(d.join("out")).expect("out").len();
    assert_eq!(written, size as u64);
}
