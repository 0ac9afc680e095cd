//! Delta patches between real builds: which format, how small, how fast,
//! how much memory to apply (docs/benchmarks.md, "Deltas").
//!
//! ```text
//! cargo bench -p overseer-cli --bench delta -- OLD NEW [OLD NEW …]
//! ```
//!
//! For each pair of builds: the new build's size, compressed (zstd -19),
//! and three patches from the old one: bidiff compressed with zstd -19 in an
//! 8 MiB window (what `overseer publish --delta-from` makes), qbsdiff
//! (bsdiff 4 with bzip2), and zstd's patch-from mode (the old build as the
//! prefix, a window spanning it). For each: its size, its ratio to the
//! compressed build, the time to make it, and the time and peak memory to
//! apply it, measured in a child process of its own (`VmHWM`). Without
//! arguments, a synthetic 50 MiB pair (the size the issue targets): a
//! pseudo-random base and a copy changed in 0.1 % of its bytes, 1 KiB
//! inserted.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The child's environment variable: `FORMAT:OLD:PATCH:SIZE`.
const CHILD: &str = "OVERSEER_DELTA_BENCH_CHILD";

fn main() {
    if let Ok(job) = std::env::var(CHILD) {
        child(&job);
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let pairs: Vec<(PathBuf, PathBuf)> = if args.len() >= 2 {
        args.chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (PathBuf::from(&c[0]), PathBuf::from(&c[1])))
            .collect()
    } else {
        println!("no OLD NEW pairs given: a synthetic 50 MiB pair");
        vec![synthetic(dir.path())]
    };
    for (old, new) in pairs {
        measure(&old, &new, dir.path());
    }
}

/// A 50 MiB pseudo-random base, and a copy with 0.1 % of its bytes changed
/// and 1 KiB inserted in the middle.
fn synthetic(dir: &Path) -> (PathBuf, PathBuf) {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut old = vec![0u8; 50 << 20];
    for chunk in old.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    let mut new = old.clone();
    for i in (0..new.len()).step_by(1000) {
        new[i] = new[i].wrapping_add(1);
    }
    let mid = new.len() / 2;
    new.splice(mid..mid, std::iter::repeat_n(0x5a, 1024));
    let (o, n) = (dir.join("old"), dir.join("new"));
    std::fs::write(&o, old).expect("write");
    std::fs::write(&n, new).expect("write");
    (o, n)
}

/// Makes a patch from an old build to a new one.
type Make = fn(&[u8], &[u8]) -> Vec<u8>;

fn mib(n: usize) -> f64 {
    n as f64 / (1 << 20) as f64
}

fn measure(old_path: &Path, new_path: &Path, dir: &Path) {
    let old = std::fs::read(old_path).expect("read OLD");
    let new = std::fs::read(new_path).expect("read NEW");
    let full = zstd::bulk::compress(&new, 19).expect("zstd");
    println!(
        "\n{} → {}: {:.2} MiB → {:.2} MiB; the new build compressed (zstd -19): {:.2} MiB",
        old_path.display(),
        new_path.display(),
        mib(old.len()),
        mib(new.len()),
        mib(full.len())
    );
    let formats: [(&str, Make); 3] = [
        ("bidiff+zstd", bidiff_zstd),
        ("qbsdiff", qbsdiff_patch),
        ("zstd-patch-from", zstd_patch_from),
    ];
    for (name, make) in formats {
        let t = Instant::now();
        let patch = make(&old, &new);
        let made = t.elapsed();
        let patch_path = dir.join(format!("{name}.patch"));
        std::fs::write(&patch_path, &patch).expect("write patch");
        let (applied, peak_kib) = apply_in_child(name, old_path, &patch_path, new.len(), &new);
        println!(
            "  {name:<16} patch {:>9.3} MiB = {:>5.1} % of the compressed build; made in {:>6.2} s; applied in {:>6.3} s, peak RSS {:>6.1} MiB",
            mib(patch.len()),
            patch.len() as f64 * 100.0 / full.len() as f64,
            made.as_secs_f64(),
            applied.as_secs_f64(),
            peak_kib as f64 / 1024.0
        );
    }
}

/// What `overseer publish --delta-from` makes.
fn bidiff_zstd(old: &[u8], new: &[u8]) -> Vec<u8> {
    let mut raw = Vec::new();
    bidiff::simple_diff(old, new, &mut raw).expect("bidiff");
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 19).expect("zstd");
    e.set_parameter(zstd::stream::raw::CParameter::WindowLog(23))
        .expect("window");
    e.write_all(&raw).expect("compress");
    e.finish().expect("compress")
}

fn qbsdiff_patch(old: &[u8], new: &[u8]) -> Vec<u8> {
    let mut patch = Vec::new();
    qbsdiff::Bsdiff::new(old, new)
        .compare(std::io::Cursor::new(&mut patch))
        .expect("qbsdiff");
    patch
}

/// The window log that spans `len` bytes (zstd's patch-from needs one).
fn window_log(len: usize) -> u32 {
    (usize::BITS - len.leading_zeros()).clamp(23, 31)
}

fn zstd_patch_from(old: &[u8], new: &[u8]) -> Vec<u8> {
    use zstd::stream::raw::{CParameter, InBuffer, Operation, OutBuffer};
    let mut e = zstd::stream::raw::Encoder::with_ref_prefix(19, old).expect("zstd");
    e.set_parameter(CParameter::WindowLog(window_log(old.len().max(new.len()))))
        .expect("window");
    e.set_parameter(CParameter::EnableLongDistanceMatching(true))
        .expect("long");
    let mut out = vec![0u8; new.len() + (1 << 20)];
    let mut input = InBuffer::around(new);
    let mut output = OutBuffer::around(&mut out[..]);
    while input.pos < new.len() {
        e.run(&mut input, &mut output).expect("compress");
    }
    while e.finish(&mut output, true).expect("finish") != 0 {}
    let n = output.pos();
    out.truncate(n);
    out
}

/// Applies a patch in a child process (this benchmark run again), which
/// checks the result and reports its peak RSS; returns the time and it.
fn apply_in_child(
    format: &str,
    old: &Path,
    patch: &Path,
    size: usize,
    new: &[u8],
) -> (Duration, u64) {
    use sha2::{Digest, Sha256};
    let want = format!("{:x}", Sha256::digest(new));
    let exe = std::env::current_exe().expect("this benchmark");
    let t = Instant::now();
    let out = Command::new(exe)
        .env(
            CHILD,
            format!(
                "{format}\n{}\n{}\n{size}\n{want}",
                old.display(),
                patch.display()
            ),
        )
        .output()
        .expect("the child");
    let took = t.elapsed();
    assert!(out.status.success(), "{format}: {out:?}");
    let peak = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the child's peak RSS");
    (took, peak)
}

/// The child: applies the patch as a host would, writing to a file, checks
/// its hash, prints its own peak RSS in KiB.
fn child(job: &str) {
    use sha2::{Digest, Sha256};
    let parts: Vec<&str> = job.split('\n').collect();
    let (format, old, patch, size, want) = (
        parts[0],
        Path::new(parts[1]),
        Path::new(parts[2]),
        parts[3].parse::<u64>().expect("size"),
        parts[4],
    );
    let out_path = patch.with_extension("out");
    let mut out = std::fs::File::create(&out_path).expect("output");
    match format {
        "bidiff+zstd" => {
            let mut p = std::fs::File::open(patch).expect("patch");
            let len = p.metadata().expect("patch").len();
            let base = std::fs::File::open(old).expect("old");
            let r = overseer::delta::apply(&mut p, base, &mut out, len, size).expect("apply");
            assert_eq!(r.sha256, want, "{format}: another result");
        }
        "qbsdiff" => {
            // qbsdiff applies from memory: the old build and the patch whole.
            let o = std::fs::read(old).expect("old");
            let p = std::fs::read(patch).expect("patch");
            qbsdiff::Bspatch::new(&p)
                .expect("patch")
                .apply(&o, &mut out)
                .expect("apply");
        }
        _ => {
            // zstd needs the whole prefix in memory, and a window that spans it.
            let o = std::fs::read(old).expect("old");
            let p = std::fs::File::open(patch).expect("patch");
            let mut d =
                zstd::stream::read::Decoder::with_ref_prefix(std::io::BufReader::new(p), &o)
                    .expect("decoder");
            d.window_log_max(31).expect("window");
            std::io::copy(&mut d, &mut out).expect("apply");
        }
    }
    drop(out);
    // The peak of applying, before the check below reads anything.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("0")
        .to_string();
    let mut hash = Sha256::new();
    let mut file = std::fs::File::open(&out_path).expect("read back");
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).expect("read back");
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    assert_eq!(format!("{:x}", hash.finalize()), want, "{format}");
    println!("{peak}");
}
