//! tern: a thread-per-core publish/subscribe relay.
//!
//! Clients speak a text protocol whose frames end with a terminator (see
//! `docs/protocol.md`). Each CPU core runs one shard: a pinned glommio
//! executor that owns its sockets, its connections' subscriptions and its
//! share of the queues. Shards talk only through lock-free channels.
//!
//! # Layout
//!
//! The modules follow a message through the relay:
//!
//! * [`framing`] — bytes read from a socket become frames: borrowed views into
//!   the read buffer, split at the terminator (asynchat's `set_terminator`).
//! * [`protocol`] — a frame becomes a [`protocol::Command`] (`SUB`, `PUB`, …);
//!   replies and deliveries are encoded here too.
//! * [`subject`] — subject and group validation, and the [`subject::Sublist`]
//!   index that matches a published subject against wildcard subscriptions.
//! * [`router`] — what a shard knows of the other shards' interest, and
//!   which shards (and which queue-group members) a publish goes to: pure
//!   functions of the subject, no I/O.
//! * [`mesh`] — the shard-to-shard paths: one crossbeam channel per ordered
//!   pair carrying batches of shared [`bytes::Bytes`], and a doorbell that
//!   wakes an idle shard without spinning.
//! * [`outbound`] — a connection's queue of unsent bytes, bounded by
//!   `--max-pending` (the slow-consumer rule).
//! * [`shard`] — the only module that touches glommio: executors, sockets,
//!   the per-connection read/write loops that drive everything above.
//! * [`relay`] — starts and stops a set of shards; the library entry point
//!   used by the binary, the tests and the load generator.
//! * [`config`] — the relay's settings, their defaults and their validation.
//! * [`units`] — the syntax of sizes, durations and CPU lists in flags:
//!   each parser beside its formatter, shared by both binaries.
//! * [`preflight`] — the start-up findings (settings, CPUs, ports, locked
//!   memory, io_uring, open files) that turn glommio's panics into errors a
//!   user can act on; `--check-config` prints them.
//! * [`sys`] — the Linux calls std does not wrap (affinity, rlimits, the
//!   io_uring probe, `/proc`), every `unsafe` of start-up in one place.
//! * [`stats`] — per-shard counters, owned by their shard, summed by readers.
//! * [`metrics`] — the optional HTTP endpoint (`--metrics`): Prometheus
//!   counters, health, and the list of open connections.

pub mod config;
pub mod framing;
pub mod mesh;
pub mod metrics;
pub mod outbound;
pub mod preflight;
pub mod protocol;
pub mod relay;
pub mod router;
pub mod shard;
pub mod stats;
pub mod subject;
pub mod sys;
pub mod units;
