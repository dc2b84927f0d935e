//! Protocols: what a connection's frames mean, and how replies are encoded.
//!
//! A protocol decodes the frames [`crate::framing`] split off into
//! [`Command`]s, the protocol-neutral requests the shard core
//! ([`crate::shard::core`]) acts on, and encodes what the core queues for a
//! connection (deliveries, `PONG`, `-ERR`) in its own shape. Everything
//! behind the codec — the subject index, the mesh, the outbound queues — is
//! shared by every protocol.
//!
//! * [`line`](mod@line) — tern's own line protocol (`docs/protocol.md`).
//! * [`nats`] — the NATS client protocol (the NATS front door).

pub mod line;
pub mod nats;

pub use line::ProtoError;

/// A client request, borrowing from the frame it was decoded from.
///
/// A publish is handed over as its parts (subject, reply, headers,
/// payload), each a slice of the read buffer: the core forwards them to
/// other shards by their place in that buffer, so no layer re-derives where
/// a payload starts from the protocol's syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// Subscribe to `subject` (wildcards allowed), in queue group `group`
    /// if given. The line protocol's subscriptions are a set per connection,
    /// named by subject and group, and a message reaches the connection once
    /// however many of them match.
    Sub {
        subject: &'a [u8],
        group: Option<&'a [u8]>,
    },
    /// End the subscription `subject` (and `group`).
    Unsub {
        subject: &'a [u8],
        group: Option<&'a [u8]>,
    },
    /// Subscribe under the client's id `sid` (NATS): each such subscription
    /// that matches gets its own delivery, tagged with its sid.
    SubSid {
        subject: &'a [u8],
        group: Option<&'a [u8]>,
        sid: &'a [u8],
    },
    /// End subscription `sid` now (`max_msgs: None`), or once it has had
    /// `max_msgs` deliveries in all (NATS).
    UnsubSid {
        sid: &'a [u8],
        max_msgs: Option<u64>,
    },
    /// Publish a message.
    Pub(Message<'a>),
    /// Answer `PONG` once this connection's earlier subscription changes are
    /// in force on every shard.
    Ping,
    /// The client answered the server's `PING` (NATS).
    Pong,
    /// Nothing to do (an empty frame).
    Empty,
}

/// A published message, as slices of what the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// Where it is published (no wildcards).
    pub subject: &'a [u8],
    /// Where answers go (NATS request/reply), if anywhere.
    pub reply: Option<&'a [u8]>,
    /// A NATS header block (`NATS/1.0…\r\n\r\n`), if any.
    pub headers: Option<&'a [u8]>,
    /// The payload (after the headers).
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// A message with no reply subject and no headers (all the line
    /// protocol has).
    pub const fn plain(subject: &'a [u8], payload: &'a [u8]) -> Message<'a> {
        Message {
            subject,
            reply: None,
            headers: None,
            payload,
        }
    }
}
