//! A shard: one pinned glommio executor serving its share of the clients.
//!
//! A shard owns, for life, the connections it accepted, their
//! subscriptions (in its [`crate::router::Router`]), their
//! [`crate::outbound::Outbound`] queues, and its ends of the
//! [`crate::mesh`]. It is built in three layers:
//!
//! * [`tasks`] — the glommio tasks (accept loops, one task per connection,
//!   the mesh task): sockets, wakers, the stop and the wait for every task;
//! * [`core`] — the I/O-free core: given a command from connection C, what
//!   is queued to whom and what goes to which shard;
//! * [`conns`] — the connection table the core keeps.
//!
//! [`socket`] is a client's stream, clear or inside TLS. [`shutdown`] is
//! the stop signal the tasks share. Nothing here is
//! shared with another thread except through the mesh's channels and the
//! [`Control`] channel from the relay.

pub mod conns;
pub mod core;
pub mod shutdown;
pub mod socket;
pub mod tasks;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use crate::budget::MemoryBudget;
use crate::config::Config;
use crate::mesh::{Endpoint, ShardId};
use crate::stats::ShardStats;

pub use self::core::MAX_MESH_BACKLOG;
pub use tasks::{run, SHUTDOWN_FLUSH};

/// A request from outside the shards (the relay, the metrics endpoint),
/// answered by the shard's mesh task between batches: the data path takes
/// no lock for it.
pub enum Control {
    /// Describe every open connection.
    Connections(crossbeam_channel::Sender<Vec<ConnectionInfo>>),
    /// Stop: accept nothing more, let clients take what they are owed for
    /// at most [`SHUTDOWN_FLUSH`], close everything, and end the shard.
    Stop,
}

/// One open connection, as [`Control::Connections`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub shard: ShardId,
    /// Its id, unique in the process.
    pub cid: u64,
    pub peer: SocketAddr,
    /// The protocol it speaks, and what a NATS client said of itself.
    pub client: ClientInfo,
    /// Time since it was accepted.
    pub age: Duration,
    pub subscriptions: usize,
    /// `PUB`s it sent.
    pub msgs_in: u64,
    /// `MSG`s queued to it.
    pub msgs_out: u64,
    /// Bytes queued to it and not yet written.
    pub pending_bytes: usize,
    /// The user it authenticated as, if the relay has users.
    pub user: Option<String>,
}

/// A listening socket and the protocol spoken on it.
pub struct Listener {
    pub fd: OwnedFd,
    pub protocol: Protocol,
    /// The address it is bound to (NATS `INFO` names it).
    pub addr: SocketAddr,
}

/// The protocols a listener can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// tern's line protocol (`docs/protocol.md`).
    Line,
    /// The NATS client protocol.
    Nats,
}

/// The relay as NATS clients see it: the constant part of `INFO`.
#[derive(Debug, Clone)]
pub struct NatsIdentity {
    /// Random per process, in nats-server's format.
    pub server_id: String,
    pub server_name: String,
    /// Largest payload a publish may carry (`--max-frame`).
    pub max_payload: usize,
}

/// A connection's protocol, as monitoring shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientInfo {
    Line,
    /// A NATS client, with the `name`, `lang` and `version` of its
    /// `CONNECT` (empty until then).
    Nats {
        name: String,
        lang: String,
        version: String,
    },
    /// A leaf-node link to the hub at `remote`.
    Leaf {
        remote: String,
    },
}

/// Everything a shard needs, built by [`crate::relay`] on the main thread.
pub struct ShardSpec {
    pub id: ShardId,
    pub shards: usize,
    pub config: Arc<Config>,
    /// Bound, listening sockets this shard accepts on.
    pub listeners: Vec<Listener>,
    pub endpoint: Endpoint,
    pub stats: Arc<ShardStats>,
    /// Open connections on the whole relay, for `--max-connections`.
    pub open: Arc<AtomicUsize>,
    /// The relay-wide memory budget (`--max-memory`).
    pub budget: Arc<MemoryBudget>,
    /// The next connection id (`cid`), shared by every shard.
    pub next_cid: Arc<AtomicU64>,
    /// What every NATS client is told of this server.
    pub nats: Arc<NatsIdentity>,
    /// Requests from the relay and its [`crate::relay::Monitor`].
    pub control: crossbeam_channel::Receiver<Control>,
    /// The TLS server side, if the relay speaks TLS (shared by every
    /// shard, reloaded on SIGHUP).
    pub tls: Option<Arc<crate::tls::TlsAcceptor>>,
    /// The leaf links this shard keeps (shard 0 keeps them all).
    pub links: Vec<LinkSpec>,
}

/// A leaf link to keep to a hub.
pub struct LinkSpec {
    pub remote: crate::leaf::Remote,
    /// Its state and counters, which monitoring reads.
    pub status: Arc<crate::leaf::RemoteStatus>,
    /// The TLS client side, if the remote names a CA for its hub.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}
