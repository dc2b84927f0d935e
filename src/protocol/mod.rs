//! Protocols: what a connection's frames mean, and how replies are encoded.
//!
//! A protocol decodes the frames [`crate::framing`] split off into
//! [`Command`]s, the protocol-neutral requests the shard core
//! ([`crate::shard::core`]) acts on, and encodes what the core queues for a
//! connection (deliveries, `PONG`, `-ERR`) in its own shape. Everything
//! behind the codec — the subject index, the mesh, the outbound queues — is
//! shared by every protocol.
//!
//! * [`line`] — tern's own line protocol (`docs/protocol.md`).
//! * [`nats`] — the NATS client protocol (the NATS front door).

pub mod line;
pub mod nats;

pub use line::ProtoError;

/// A client request, borrowing from the frame it was decoded from.
///
/// A publish is handed over as its parts (subject and payload), each a
/// slice of the read buffer: the core forwards them to other shards by
/// their place in that buffer, so no layer re-derives where a payload
/// starts from the protocol's syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// Subscribe to `subject` (wildcards allowed), in queue group `group`
    /// if given.
    Sub {
        subject: &'a [u8],
        group: Option<&'a [u8]>,
    },
    /// End the subscription `subject` (and `group`).
    Unsub {
        subject: &'a [u8],
        group: Option<&'a [u8]>,
    },
    /// Publish `payload` on `subject` (no wildcards).
    Pub {
        subject: &'a [u8],
        payload: &'a [u8],
    },
    /// Answer `PONG` once this connection's earlier subscription changes are
    /// in force on every shard.
    Ping,
    /// Nothing to do (an empty frame).
    Empty,
}
