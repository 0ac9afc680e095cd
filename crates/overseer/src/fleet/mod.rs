//! Fleet rollouts through the object store (docs/design.md, "Fleets"): the
//! signed release manifest a fleet polls instead of a bare binary, and the
//! decisions every host makes from it on its own, with no coordinator:
//! which release it takes now, by the wave its sticky bucket falls in.
//!
//! Decisions only, like the handover: the manifest as data and its checks
//! ([`Manifest`]), the bucket of a host for a release ([`bucket`]), and what
//! a host does with a manifest at a given time ([`choose`]). Fetching,
//! verifying the signature over the manifest's bytes, downloading and
//! installing are the pipeline's.
//!
//! ```
//! use overseer::fleet::{choose, Choice, Manifest};
//!
//! let manifest = Manifest::parse(br#"{
//!   "format": 1, "channel": "stable", "serial": 7, "expires": 4102444800,
//!   "releases": [{
//!     "version": "1.5.0",
//!     "artifacts": {"x86_64-unknown-linux-gnu": {
//!       "path": "app-1.5.0", "size": 1234,
//!       "sha256": "4f2b8c09a8d7e4a3f1c55cbbd0a69dcb5cbd2cf9e1ab0a9e1c4d63a2b9f2c1d0"}},
//!     "rollout": [{"start": 1767225600, "fraction": 0.1}, {"start": 1767312000, "fraction": 1.0}]
//!   }]
//! }"#).unwrap();
//! let now = 1767230000; // within the first wave: 10 % of hosts
//! manifest.check(now, Some(6), "x86_64-unknown-linux-gnu").unwrap();
//! match choose(&manifest, Some("1.4.0"), "x86_64-unknown-linux-gnu", "host-17", now) {
//!     Choice::Take { release, .. } => println!("installing {}", release.version),
//!     Choice::Wait { why, .. } => println!("not yet: {why}"),
//!     Choice::UpToDate => {}
//! }
//! ```

mod manifest;
mod report;
mod wave;

pub use manifest::{
    Artifact, Manifest, ManifestError, Patch, Release, Wave, FORMAT, MAX_MANIFEST_SIZE,
};
pub use report::{advance, tally, Advance, Outcome, Report, Tally, MAX_REPORT_SIZE, REPORTS};
pub use wave::{bucket, choose, Choice};
