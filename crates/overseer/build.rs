//! Records the target triple, so a signed release for another target is refused.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=OVERSEER_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
