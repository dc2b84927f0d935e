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
//! * [`protocol`] — a frame becomes a protocol-neutral
//!   [`protocol::Command`] ([`protocol::line`] decodes tern's line protocol);
//!   replies and deliveries are encoded there too.
//! * [`shard`] — one shard: its glommio tasks (`shard::tasks`: sockets,
//!   accept, the stop) around an I/O-free [`shard::core`] that decides,
//!   for each command, what is queued to whom and what goes to which shard.
//! * [`subject`] — subject and group validation, and the [`subject::Sublist`]
//!   index that matches a published subject against wildcard subscriptions.
//! * [`router`] — what a shard knows of the other shards' interest, and
//!   which receivers here and which other shards a publish goes to (no I/O;
//!   it fills match caches and moves queue groups' round-robin).
//! * [`leaf`] — tern as a leaf node of a NATS cluster: the links to hubs
//!   (owned by shard 0), the leaf protocol, and the relay-wide interest
//!   announced to them.
//! * [`mesh`] — the shard-to-shard paths: one crossbeam channel per ordered
//!   pair carrying batches of shared [`bytes::Bytes`], and a doorbell that
//!   wakes an idle shard without spinning.
//! * [`outbound`] — a connection's queue of unsent bytes, bounded by
//!   `--max-pending` (the slow-consumer rule), keeping the pending-bytes
//!   gauge.
//! * [`budget`] — the relay-wide memory budget (`--max-memory`) over every
//!   shard's input buffers and output queues.
//!
//! Around the data path:
//!
//! * [`relay`] — starts a set of shards (building their executors), supervises
//!   them and stops them; the library entry point used by the binary, the
//!   tests and the load generator.
//! * [`config`] — the relay's settings, their defaults and their validation.
//! * [`config_file`] — the TOML file of `--config`: flags as keys, and the
//!   users and permissions only the file holds.
//! * [`auth`] — who may connect (a token, or users with bcrypt or plain
//!   passwords), checked off the shard's thread, and what each user may
//!   publish and subscribe to.
//! * [`tls`] — the relay's certificate and key (reloadable), the client CA
//!   of mutual TLS, and the names a client certificate carries.
//! * [`units`] — the syntax of sizes, durations and CPU lists in flags:
//!   each parser beside its formatter, shared by both binaries.
//! * [`preflight`] — start-up findings (io_uring, locked memory, CPUs, ports,
//!   open files) that turn glommio's panics into errors a user can act on.
//! * [`sys`] — every operating-system call of the crate, in one place.
//! * [`logging`] — the log filters the binary accepts, and its logger
//!   (glommio's messages included).
//! * [`stats`] — per-shard counters, owned by their shard, summed by readers.
//! * [`metrics`] — the optional HTTP endpoint (`--metrics`): Prometheus
//!   counters, health, and the list of open connections.
//!
//! glommio is used by [`shard`] (the tasks) and [`relay`] (building and
//! joining the executors), nowhere else.

pub mod auth;
pub mod budget;
pub mod config;
pub mod config_file;
pub mod framing;
pub mod leaf;
pub mod logging;
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
pub mod tls;
pub mod units;

#[cfg(test)]
mod wake_counter;
