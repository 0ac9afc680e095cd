//! Tools shared by overseer's integration tests, benchmark and demo: a strict
//! HTTP client, a load generator that counts every failure, process control
//! for masters under test, releases to upgrade them with, and the
//! self-upgrading app they upgrade.

pub mod app;
pub mod client;
pub mod h2load;
pub mod load;
pub mod openloop;
pub mod ports;
pub mod proc;
pub mod release;
