//! The soak harness's building blocks: a blocking client connection in
//! either protocol ([`client`]), the per-stream delivery check
//! ([`check`]), the relay's process as `/proc` shows it ([`procfs`]), its
//! `/metrics` counters ([`metrics`]), and a seeded random sequence
//! ([`rng`]).

pub mod check;
pub mod client;
pub mod metrics;
pub mod procfs;
pub mod rng;
