//! Tools shared by overseer's integration tests, benchmark and demo: a strict
//! HTTP client, a load generator that counts every failure, and process
//! control for masters under test.

pub mod client;
pub mod load;
pub mod proc;
