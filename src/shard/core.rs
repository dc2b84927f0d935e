//! The shard core: what a command does, with no I/O.
//!
//! Given a [`Command`] from connection C, the core decides what is queued
//! to whom (in each receiver's [`Outbound`]) and what goes to which other
//! shard (in the mesh [`Outlet`]s), and applies what other shards sent
//! ([`Core::apply`]). It owns the shard's [`ConnTable`], its [`Router`]
//! and its ends of the mesh, and never touches a socket, an executor or a
//! clock: the glommio tasks in [`super::tasks`] feed it commands, write out
//! the connections it [touched](ConnTable::take_touched), and wake the
//! tasks whose wakers it stores. Unit tests drive it directly (see the
//! tests at the end of this file).
//!
//! Both protocols share it. Commands arrive decoded; routing is per
//! [`SubRef`], so the line protocol (one delivery per connection, all its
//! subscriptions filed under `sub` 0) and NATS (one delivery per matching
//! subscription, numbered from 1) share one subject index; only the last
//! step, encoding a delivery or a reply, looks at the receiver's [`Wire`].
//! A line receiver gets `MSG <subject> <payload>` without reply subject or
//! headers, and nothing at all for a message its protocol cannot frame
//! (counted as `undeliverable_to_line`).

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use rustc_hash::FxHashMap;

use super::conns::{Conn, ConnPermissions, ConnTable, LeafConn, NatsSub, Wire};
use super::{ClientInfo, ConnectionInfo};
use crate::auth::{Grant, Refusal};
use crate::budget::{self, MemoryBudget};
use crate::config::Config;
use crate::leaf::interest::Interest;
use crate::leaf::wire::{self as leaf_wire, HubOp};
use crate::leaf::RemoteStatus;
use crate::mesh::{self, Forward, MeshMsg, Outlet, Place, ShardId, Span};
use crate::outbound::{Outbound, SlowConsumer, SHARED_PAYLOAD_MIN};
use crate::protocol::nats::{self, ConnectOptions, NatsError};
use crate::protocol::{Command, Message, ProtoError};
use crate::router::{hub_group, ConnId, Plan, RemoteTarget, Router, SubRef, HUB_GROUP_MARK};
use crate::stats::ShardStats;
use crate::subject::{is_valid_subject, pattern_matches};

/// Messages queued towards one shard beyond which readers pause.
pub const MAX_MESH_BACKLOG: usize = 16 * 1024;

/// A frame that makes the shard panic when [`Config::panic_frame`] is set:
/// how tests check that the relay notices a dead shard.
pub const PANIC_FRAME: &[u8] = b"TERN-TEST-PANIC";

/// Server `PING`s a NATS client may leave unanswered; one more and it is
/// stale (nats-server's default `ping_max`).
pub const MAX_PINGS_OUT: u8 = 2;

/// Whether a connection with `permissions` may subscribe to `subject`.
#[inline]
fn may_subscribe(permissions: &Option<Box<ConnPermissions>>, subject: &[u8]) -> bool {
    permissions
        .as_ref()
        .is_none_or(|p| p.rules.subscribe.permits(subject))
}

/// What a connection's permissions refused.
enum Denied<'a> {
    Publish(&'a [u8]),
    Subscribe(&'a [u8], Option<&'a [u8]>),
}

impl Denied<'_> {
    /// nats-server's `-ERR` text for it.
    fn nats_text(&self) -> String {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self {
            Denied::Publish(subject) => {
                format!("Permissions Violation for Publish to \"{}\"", s(subject))
            }
            Denied::Subscribe(subject, None) => {
                format!(
                    "Permissions Violation for Subscription to \"{}\"",
                    s(subject)
                )
            }
            Denied::Subscribe(subject, Some(queue)) => format!(
                "Permissions Violation for Subscription to \"{}\" using queue \"{}\"",
                s(subject),
                s(queue)
            ),
        }
    }
}

/// What a connection task does after the core handled a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Go on: handle the next frame, or read more.
    Read,
    /// A `PING` waits for the other shards; handle nothing more until the
    /// core wakes the connection.
    WaitBarrier,
    /// A path to another shard is full: handle nothing more (and read
    /// nothing) until it drains.
    WaitMesh,
    /// A receiver this connection just delivered to is more than half way
    /// to being a slow consumer: read nothing more from it until the
    /// receivers catch up, for at most `--max-stall` (see
    /// [`Core::stalled`]).
    Stall,
    /// The task has used its time slice (the executor wants to preempt
    /// it): let the shard's other tasks run, then handle the rest of what
    /// is buffered before reading more. Keeps one client's expensive
    /// frames (a publish matching thousands of patterns, a storm of
    /// subscription changes) from stalling everyone else on the shard.
    Yield,
    /// Stop serving this connection.
    Close,
}

/// A batch from another shard and how far it has been applied (see
/// [`Core::apply`]).
pub struct InboundBatch {
    /// The shard that sent it.
    from: ShardId,
    msgs: mesh::Batch,
    /// The first message not fully applied.
    next: usize,
    /// Within `msgs[next]`, if it is a run of forwards, the first not
    /// applied.
    next_item: usize,
}

impl InboundBatch {
    /// `msgs`, from shard `from`, none applied yet.
    pub fn new(from: ShardId, msgs: mesh::Batch) -> Self {
        InboundBatch {
            from,
            msgs,
            next: 0,
            next_item: 0,
        }
    }
}

/// A `PING` waiting for the other shards.
struct Barrier {
    conn: ConnId,
    generation: u64,
    /// Shards that have not acknowledged yet.
    remaining: usize,
}

/// Limits the core enforces, from [`Config`].
#[derive(Debug, Clone)]
struct Limits {
    max_pending: usize,
    /// A receiver with more than this queued is congested (half of
    /// `max_pending`; never, when `--max-stall` is 0).
    congested_above: usize,
    /// ... and stops being so at this (a quarter of `max_pending`).
    congested_until: usize,
    max_subs: usize,
    /// Whether [`PANIC_FRAME`] panics the shard (tests only).
    panic_frame: bool,
}

/// A message on its way to this shard's receivers.
struct Delivery<'a> {
    /// Tells this message from the one before (see [`NatsHeads`]).
    serial: u64,
    msg: Message<'a>,
    /// The read chunk the message lies in, if it does: a large payload is
    /// then queued to each receiver by reference.
    chunk: Option<&'a Bytes>,
    /// The local connection that published it (for NATS `echo: false`).
    publisher: Option<ConnId>,
    /// It came from a hub over a leaf link: no link is sent it (a hub
    /// never gets back what a hub sent).
    from_hub: bool,
    /// Whether a line receiver may be sent it: known up front for a line
    /// publish, worked out at the first line receiver otherwise.
    line_ok: Cell<Option<bool>>,
}

impl Delivery<'_> {
    /// The payload as a shared slice of its chunk, if it is large enough to
    /// be queued by reference ([`SHARED_PAYLOAD_MIN`]) and lies in one.
    #[inline]
    fn shared_payload(&self) -> Option<Bytes> {
        if self.msg.payload.len() < SHARED_PAYLOAD_MIN {
            return None;
        }
        let chunk = self.chunk?;
        let span = Span::of(chunk, self.msg.payload)?;
        Some(chunk.slice(span.start as usize..span.end as usize))
    }

    fn line_ok(&self, terminator: &[u8]) -> bool {
        if let Some(ok) = self.line_ok.get() {
            return ok;
        }
        let ok = is_valid_subject(self.msg.subject, false)
            && memchr::memmem::find(self.msg.payload, terminator).is_none();
        self.line_ok.set(Some(ok));
        ok
    }
}

/// The NATS heads of the message being delivered ([`nats::MsgHead`]):
/// each form is built at the message's first receiver of that form and
/// reused for the others.
#[derive(Debug, Default)]
struct NatsHeads {
    /// `MSG`: the payload alone (also for a receiver without headers).
    msg: nats::MsgHead,
    /// `HMSG`: headers and payload.
    hmsg: nats::MsgHead,
    /// The [`Delivery::serial`] each was built for (0: none yet).
    msg_for: u64,
    hmsg_for: u64,
}

impl NatsHeads {
    /// The head of `d` in the form a receiver gets `headers` in.
    #[inline]
    fn of(&mut self, d: &Delivery<'_>, headers: Option<&[u8]>) -> &nats::MsgHead {
        let m = &d.msg;
        match headers {
            None => {
                if self.msg_for != d.serial {
                    self.msg.build(m.subject, m.reply, None, m.payload.len());
                    self.msg_for = d.serial;
                }
                &self.msg
            }
            Some(h) => {
                if self.hmsg_for != d.serial {
                    let total = h.len() + m.payload.len();
                    self.hmsg.build(m.subject, m.reply, Some(h.len()), total);
                    self.hmsg_for = d.serial;
                }
                &self.hmsg
            }
        }
    }
}

/// One shard's state; see the module docs.
pub struct Core {
    id: ShardId,
    shards: usize,
    limits: Limits,
    /// The line protocol's terminator, for every line frame queued.
    terminator: Box<[u8]>,
    stats: Arc<ShardStats>,
    /// The relay-wide memory budget, checked before a receiver's queue
    /// grows past [`budget::CHECK_ABOVE`].
    budget: Arc<MemoryBudget>,
    conns: ConnTable,
    router: Router,
    /// Indexed by target shard; `None` for this shard.
    outlets: Vec<Option<Outlet>>,
    /// Where the message being published goes (reused).
    plan: Plan,
    /// Where the forwarded message being applied goes (reused).
    forward_plan: Plan,
    /// `PING`s waiting for other shards, by token.
    barriers: FxHashMap<u64, Barrier>,
    next_token: u64,
    /// Reused key buffer for subscription lookups.
    key: Vec<u8>,
    /// The last [`Delivery::serial`] given out.
    serial: u64,
    /// The NATS heads of the message being delivered.
    nats_heads: NatsHeads,
    /// Shutdown has begun: connections are served only until they have
    /// taken what they are owed.
    stopping: bool,
    /// Other shards that have stopped ([`MeshMsg::Stopped`]): once all
    /// have, nothing more can arrive over the mesh.
    peers_stopped: usize,
    /// Receivers that are congested and not stuck (see [`Conn::congested`]):
    /// while there are any, the shard is [`stalled`](Self::stalled).
    congested: Vec<ConnId>,
    /// The frame just handled delivered to a congested receiver that is not
    /// stuck: its publisher is told to [`Next::Stall`].
    stall_publisher: bool,
    /// Tasks waiting for the congestion to clear.
    stall_waiters: Vec<Waker>,
    /// The leaf links' side of the shard that owns them (shard 0 of a relay
    /// with `--leafnode-remote`s), `None` elsewhere.
    leaf: Option<Box<LeafSide>>,
}

/// What the shard that owns the leaf links keeps for them.
struct LeafSide {
    /// The relay's client interest, announced to every hub.
    interest: Interest,
    /// The open links.
    links: Vec<ConnId>,
    /// This relay's loop-detection subject (`$LDS.` and a random id),
    /// announced to every hub.
    loop_subject: Box<[u8]>,
    /// Where a message from a hub goes (reused).
    plan: Plan,
    /// A message's control line towards a hub (reused).
    head: Vec<u8>,
}

impl Core {
    /// A core for shard `id` of `shards`, sending to the others through
    /// `outlets` (indexed by shard; `None` for `id`).
    pub fn new(
        id: ShardId,
        shards: usize,
        config: &Config,
        stats: Arc<ShardStats>,
        budget: Arc<MemoryBudget>,
        outlets: Vec<Option<Outlet>>,
    ) -> Core {
        Core {
            id,
            shards,
            limits: Limits {
                max_pending: config.max_pending,
                congested_above: if config.max_stall.is_zero() {
                    usize::MAX
                } else {
                    config.max_pending / 2
                },
                congested_until: config.max_pending / 4,
                max_subs: config.max_subs,
                panic_frame: config.panic_frame,
            },
            terminator: config.terminator.as_bytes().into(),
            stats,
            budget,
            conns: ConnTable::default(),
            router: Router::new(),
            outlets,
            plan: Plan::default(),
            forward_plan: Plan::default(),
            barriers: FxHashMap::default(),
            next_token: 0,
            key: Vec::new(),
            serial: 0,
            nats_heads: NatsHeads::default(),
            stopping: false,
            peers_stopped: 0,
            congested: Vec::new(),
            stall_publisher: false,
            stall_waiters: Vec::new(),
            leaf: (id == 0 && !config.leaf_remotes.is_empty()).then(|| {
                Box::new(LeafSide {
                    interest: Interest::default(),
                    links: Vec::new(),
                    loop_subject: format!(
                        "{}{}",
                        crate::leaf::LOOP_DETECTION_PREFIX,
                        nats::new_server_id()
                    )
                    .into_bytes()
                    .into(),
                    plan: Plan::default(),
                    head: Vec::new(),
                })
            }),
        }
    }

    /// The shard this core serves.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// The open connections.
    pub fn conns(&self) -> &ConnTable {
        &self.conns
    }

    /// The open connections, for the I/O layer (wakers, writes).
    pub fn conns_mut(&mut self) -> &mut ConnTable {
        &mut self.conns
    }

    /// A connection from `peer`, speaking `wire`, with process-wide id
    /// `cid`, was accepted at `now` (logged at `debug`).
    pub fn open(&mut self, peer: SocketAddr, cid: u64, wire: Wire, now: Instant) -> ConnId {
        let out = Outbound::new(self.limits.max_pending, self.stats.clone());
        let protocol = wire.name();
        let id = self.conns.insert(Conn::new(peer, cid, wire, out, now));
        self.stats.connections_accepted.add(1);
        self.stats.connections_open.add(1);
        tracing::debug!(%peer, cid, shard = self.id, protocol, "connection opened");
        id
    }

    /// Tears a connection down: its subscriptions leave every shard's
    /// index, and what it was still owed is dropped (logged at `debug`,
    /// with what it sent and received).
    pub fn close(&mut self, id: ConnId) {
        let Some(conn) = self.conns.remove(id) else {
            return;
        };
        if conn.congested {
            self.uncongest(id);
        }
        match &conn.wire {
            Wire::Line { subs } => {
                for key in subs.iter() {
                    let (pattern, group) = split_key(key);
                    self.withdraw(SubRef::whole(id), pattern, group);
                }
            }
            Wire::Nats(n) => {
                for (number, sub) in n.subs.iter() {
                    let to = SubRef {
                        conn: id,
                        sub: number,
                    };
                    self.withdraw(to, &sub.subject, sub.queue.as_deref());
                }
            }
            Wire::Leaf(link) => {
                self.close_link(id, &conn, link);
                return;
            }
        }
        self.router.trim();
        self.stats.subscriptions.sub(conn.subscriptions() as u64);
        self.stats.connections_open.sub(1);
        self.stats.connections_closed.add(1);
        tracing::debug!(
            peer = %conn.peer,
            cid = conn.cid,
            shard = self.id,
            protocol = conn.wire.name(),
            msgs_in = conn.msgs_in,
            msgs_out = conn.msgs_out,
            seconds = conn.since.elapsed().as_secs_f64(),
            "connection closed"
        );
    }

    /// Whether connection `id` may handle frames now, before any is
    /// handled: `Read` if so, else what to do instead. `eof`: the client
    /// half-closed (its buffered frames are still handled during shutdown).
    pub fn readiness(&self, id: ConnId, eof: bool) -> Next {
        match self.conns.get(id) {
            None => Next::Close,
            Some(c) if c.leaving() => Next::Close,
            Some(c) if c.waiting_barrier => Next::WaitBarrier,
            Some(_) if self.stopping && !eof => Next::Close,
            Some(_) => Next::Read,
        }
    }

    /// What connection `id` does after a frame was handled with `next`:
    /// stop if it was closed, pause if a mesh path filled up.
    #[inline]
    pub fn after_frame(&mut self, id: ConnId, next: Next) -> Next {
        let stall = std::mem::take(&mut self.stall_publisher);
        if next != Next::Read {
            return next;
        }
        if self.conns.get(id).is_none_or(Conn::leaving) {
            return Next::Close;
        }
        if self.mesh_full() {
            return Next::WaitMesh;
        }
        if stall {
            self.stats.stalls.add(1);
            return Next::Stall;
        }
        Next::Read
    }

    /// Whether a receiver on this shard is congested (more than half of
    /// `--max-pending` queued, not yet back under a quarter) and not stuck:
    /// publishers that delivered to one are paused, and the shard takes
    /// nothing from the mesh, until it catches up or `--max-stall` passes.
    /// Never during shutdown.
    pub fn stalled(&self) -> bool {
        !self.congested.is_empty() && !self.stopping
    }

    /// `Ready` once the shard is not [`stalled`](Self::stalled); until
    /// then the task is woken when it stops being so.
    pub fn poll_stall(&mut self, cx: &Context<'_>) -> Poll<()> {
        if !self.stalled() {
            return Poll::Ready(());
        }
        if !self.stall_waiters.iter().any(|w| w.will_wake(cx.waker())) {
            self.stall_waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// A whole `--max-stall` passed while stalled: every receiver still
    /// congested is stuck (publishers stop waiting for it; it is closed as
    /// a slow consumer if it reaches `--max-pending`).
    pub fn stall_timed_out(&mut self) {
        for id in std::mem::take(&mut self.congested) {
            if let Some(conn) = self.conns.get_mut(id) {
                conn.stuck = true;
            }
        }
        self.wake_stalled();
    }

    /// Output of `id` was written: a congested receiver that got back
    /// under a quarter of `--max-pending` is not congested any more.
    #[inline]
    pub fn after_write(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.congested && conn.out.pending() <= self.limits.congested_until {
            conn.congested = false;
            conn.stuck = false;
            self.uncongest(id);
        }
    }

    /// `id` leaves the congested list (caught up, or closed).
    fn uncongest(&mut self, id: ConnId) {
        if let Some(i) = self.congested.iter().position(|&c| c == id) {
            self.congested.swap_remove(i);
            if self.congested.is_empty() {
                self.wake_stalled();
            }
        }
    }

    fn wake_stalled(&mut self) {
        self.stall_waiters.drain(..).for_each(Waker::wake);
    }

    /// Handles one command of connection `id`. `chunk` is the read buffer
    /// the command's slices point into: forwarded publishes share it.
    #[inline]
    pub fn handle(&mut self, id: ConnId, command: Command<'_>, chunk: &Bytes) -> Next {
        let next = match command {
            Command::Pub(msg) => {
                self.publish(id, msg, chunk);
                return Next::Read;
            }
            Command::Sub { subject, group } => {
                self.subscribe(id, subject, group);
                Next::Read
            }
            Command::Unsub { subject, group } => {
                self.unsubscribe(id, subject, group);
                Next::Read
            }
            Command::SubSid {
                subject,
                group,
                sid,
            } => {
                if !self.subscribe_sid(id, subject, group, sid) {
                    return Next::Read;
                }
                Next::Read
            }
            Command::UnsubSid { sid, max_msgs } => {
                self.unsubscribe_sid(id, sid, max_msgs);
                Next::Read
            }
            Command::Ping => return self.ping(id),
            Command::Pong => {
                if let Some(n) = self.conns.nats_mut(id) {
                    n.pings_out = 0;
                }
                return Next::Read;
            }
            Command::Empty => return Next::Read,
        };
        // NATS `verbose`: every accepted `SUB` and `UNSUB` is acknowledged
        // (a refused `SUB` got its `-ERR` instead, and returned above).
        if self.verbose(id) {
            self.reply_ok(id);
        }
        next
    }

    /// Refuses a frame of line connection `id` with `-ERR <reason>`
    /// (counted); the connection stays open. `frame` is the refused frame,
    /// if it was read (the test-only panic hook looks at it).
    pub fn refuse(&mut self, id: ConnId, err: ProtoError, frame: &[u8]) {
        if self.limits.panic_frame && err == ProtoError::UnknownVerb && frame == PANIC_FRAME {
            panic!("shard {} was asked to panic (test hook)", self.id);
        }
        self.stats.count_error(err);
        self.reply(id, |out, t| out.push_err(err, t));
    }

    /// Answers a NATS error of connection `id` as nats-server does: `-ERR`
    /// with its text (if it has one), and the connection closes after it if
    /// the error closes.
    pub fn refuse_nats(&mut self, id: ConnId, err: NatsError) {
        self.stats.nats_errors.add(1);
        if let Some(text) = err.text() {
            self.reply_nats_err(id, text);
        }
        if err.closes() {
            self.close_after_replies(id);
        }
    }

    /// Queues `-ERR '<text>'` for NATS connection `id`.
    fn reply_nats_err(&mut self, id: ConnId, text: &str) {
        self.reply(id, |out, _| {
            out.push(nats::err_len(text), |b| nats::encode_err(b, text))
        });
    }

    /// Connection `id` reads no more and leaves once its replies are
    /// written.
    fn close_after_replies(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(id) {
            conn.closing = true;
            conn.wake();
        }
    }

    /// Connection `id` holds a partial frame past the read size while the
    /// relay is over its memory budget: it is refused as a frame too long
    /// (line) or a payload too large (NATS, which closes), and closed, so
    /// its buffer is freed instead of grown.
    pub fn refuse_for_memory(&mut self, id: ConnId) {
        self.stats.memory_refusals.add(1);
        if self.conns.nats(id).is_some() {
            self.refuse_nats(id, NatsError::MaxPayload);
            return;
        }
        self.refuse(id, ProtoError::FrameTooLong, &[]);
        self.close_after_replies(id);
    }

    /// Queues `INFO` (or any other greeting) for `id`: the first bytes a
    /// NATS client reads.
    pub fn greet(&mut self, id: ConnId, info: &[u8]) {
        self.reply(id, |out, _| {
            out.push(info.len(), |b| b.extend_from_slice(info))
        });
    }

    /// A NATS `CONNECT` was accepted: `options` (merged by the decoder) are
    /// in force from now on.
    pub fn connect(&mut self, id: ConnId, options: &ConnectOptions) {
        let Some(n) = self.conns.nats_mut(id) else {
            return;
        };
        n.options = options.clone();
        if n.options.verbose {
            self.reply_ok(id);
        }
    }

    /// Connection `id` authenticated: it gets `grant`'s user and
    /// permissions.
    pub fn authenticated(&mut self, id: ConnId, grant: Grant) {
        if let Some(conn) = self.conns.get_mut(id) {
            conn.user = grant.user;
            conn.permissions = grant.permissions.map(|p| Box::new(ConnPermissions::new(p)));
        }
    }

    /// Connection `id` failed to authenticate (`why`): counted, logged with
    /// its address (never with what it sent), answered in its protocol and
    /// closed.
    pub fn refuse_login(&mut self, id: ConnId, why: Refusal) {
        self.stats.count_auth_failure(why);
        let Some(conn) = self.conns.get(id) else {
            return;
        };
        tracing::warn!(peer = %conn.peer, shard = self.id, reason = why.label(), "authentication failed");
        if conn.is_nats() {
            let err = match why {
                Refusal::Timeout => NatsError::AuthenticationTimeout,
                _ => NatsError::AuthorizationViolation,
            };
            // Counted above, not as a protocol error.
            if let Some(text) = err.text() {
                self.reply_nats_err(id, text);
            }
        } else {
            let err = match why {
                Refusal::Timeout => ProtoError::AuthorizationTimeout,
                Refusal::NoCredentials => ProtoError::AuthorizationRequired,
                _ => ProtoError::AuthorizationFailed,
            };
            self.reply(id, |out, t| out.push_err(err, t));
        }
        self.close_after_replies(id);
    }

    /// Refuses what connection `id`'s permissions do not allow: `-ERR
    /// permission denied` (line) or nats-server's `Permissions Violation`
    /// text (NATS). The connection stays open.
    #[cold]
    fn deny(&mut self, id: ConnId, what: Denied<'_>) {
        let Some(conn) = self.conns.get(id) else {
            return;
        };
        if !conn.is_nats() {
            // Counts the denial too.
            self.refuse(id, ProtoError::PermissionDenied, &[]);
            return;
        }
        self.stats.permission_denials.add(1);
        self.stats.nats_errors.add(1);
        self.reply_nats_err(id, &what.nats_text());
    }

    /// One round of the NATS keep-alive (NATS clients and leaf links): one with
    /// [`MAX_PINGS_OUT`] `PING`s unanswered is stale (`-ERR 'Stale
    /// Connection'`, closed); every other NATS client is sent a `PING`.
    pub fn ping_nats_clients(&mut self) {
        let mut stale = Vec::new();
        let mut ping = Vec::new();
        for (id, conn) in self.conns.iter() {
            let pings_out = match &conn.wire {
                Wire::Nats(n) => n.pings_out,
                Wire::Leaf(l) => l.pings_out,
                Wire::Line { .. } => continue,
            };
            if conn.leaving() {
                continue;
            }
            if pings_out >= MAX_PINGS_OUT {
                stale.push(id);
            } else {
                ping.push(id);
            }
        }
        for id in stale {
            match self.conns.get_mut(id) {
                Some(conn) if conn.is_leaf() => {
                    // A hub that stopped answering: the link is made again.
                    if let Wire::Leaf(l) = &conn.wire {
                        tracing::warn!(remote = %l.status.url, "the hub stopped answering PINGs");
                    }
                    conn.dead = true;
                    conn.wake();
                }
                _ => self.refuse_nats(id, NatsError::StaleConnection),
            }
        }
        for id in ping {
            match self.conns.get_mut(id).map(|c| &mut c.wire) {
                Some(Wire::Nats(n)) => n.pings_out += 1,
                Some(Wire::Leaf(l)) => l.pings_out += 1,
                _ => {}
            }
            self.reply(id, |out, _| {
                out.push(nats::PING.len(), |b| b.extend_from_slice(nats::PING))
            });
        }
    }

    /// A link to a hub was established (its `CONNECT` sent), as
    /// connection `cid` to `peer`: it is told this relay's loop-detection
    /// subject and all of the relay's interest, and from now on gets what
    /// the hub's interest asks for. `headers`: the hub takes `HMSG`.
    pub fn open_leaf(
        &mut self,
        peer: SocketAddr,
        cid: u64,
        status: Arc<RemoteStatus>,
        headers: bool,
        now: Instant,
    ) -> ConnId {
        let out = Outbound::new(self.limits.max_pending, self.stats.clone());
        let link = LeafConn {
            status: status.clone(),
            headers,
            subs: FxHashMap::default(),
            groups: FxHashMap::default(),
            last_group: 0,
            pings_out: 0,
            looped: false,
            last_error: None,
        };
        let wire = Wire::Leaf(Box::new(link));
        let id = self.conns.insert(Conn::new(peer, cid, wire, out, now));
        let mut hello = Vec::new();
        if let Some(side) = self.leaf.as_deref_mut() {
            leaf_wire::encode_sub(&mut hello, &side.loop_subject, None);
            side.interest.announce_all(&mut hello);
            side.links.push(id);
        }
        self.reply(id, |out, _| {
            out.push(hello.len(), |b| b.extend_from_slice(&hello))
        });
        status.connected.store(true, Ordering::Relaxed);
        status.connects.fetch_add(1, Ordering::Relaxed);
        id
    }

    /// Whether the link `id` ended because of a loop (the next attempt
    /// waits longer).
    pub fn link_looped(&self, id: ConnId) -> bool {
        matches!(self.conns.get(id).map(|c| &c.wire), Some(Wire::Leaf(l)) if l.looped)
    }

    /// Handles one operation the hub sent over link `id`.
    pub fn handle_hub(&mut self, id: ConnId, op: HubOp<'_>) -> Next {
        match op {
            HubOp::Info(_) => {}
            HubOp::Ping => self.reply(id, |out, _| {
                out.push(nats::PONG.len(), |b| b.extend_from_slice(nats::PONG))
            }),
            HubOp::Pong => {
                if let Some(link) = self.conns.leaf_mut(id) {
                    link.pings_out = 0;
                }
            }
            HubOp::Err(text) => {
                let text = String::from_utf8_lossy(text);
                let Some(link) = self.conns.leaf_mut(id) else {
                    return Next::Close;
                };
                // Each new text once: a hub that refuses something per
                // message (a permission) must not flood the log.
                if link.last_error.as_deref() != Some(&*text) {
                    tracing::warn!(remote = %link.status.url, "the hub reports: {text}");
                    link.last_error = Some(text.clone().into_owned());
                } else {
                    tracing::debug!(remote = %link.status.url, "the hub reports: {text}");
                }
                // Anything else that is fatal, the hub closes the link for.
                if text.contains("Loop detected") {
                    link.looped = true;
                    return Next::Close;
                }
            }
            HubOp::Sub { subject, queue, .. } => return self.link_subscribe(id, subject, queue),
            HubOp::Unsub { subject, queue } => self.link_unsubscribe(id, subject, queue),
            HubOp::Msg { msg, queues, chunk } => {
                self.publish_from_hub(id, msg, |name| queues.contains(name), chunk)
            }
        }
        Next::Read
    }

    /// The hub is interested in `subject` (for its queue group `queue`):
    /// the link subscribes to it, on every shard.
    fn link_subscribe(&mut self, id: ConnId, subject: &[u8], queue: Option<&[u8]>) -> Next {
        let loop_subject = self.leaf.as_deref().map(|side| &*side.loop_subject);
        let Some(Conn {
            wire: Wire::Leaf(link),
            ..
        }) = self.conns.get_mut(id)
        else {
            return Next::Close;
        };
        if loop_subject == Some(subject) {
            tracing::error!(
                remote = %link.status.url,
                "loop detected: the hub sent back this relay's own loop-detection subject \
                 (are two remotes of this relay joined to the same cluster?); retrying in {:?}",
                crate::leaf::LOOP_BACKOFF
            );
            link.looped = true;
            return Next::Close;
        }
        if !crate::subject::is_index_pattern(subject) || queue.is_some_and(<[u8]>::is_empty) {
            tracing::warn!(remote = %link.status.url, subject = %String::from_utf8_lossy(subject), "the hub's interest in a malformed subject is ignored");
            return Next::Read;
        }
        let key = (subject.into(), queue.map(Into::into));
        if link.subs.contains_key(&key) {
            // A queue group's new weight: the relay serves it all the same.
            return Next::Read;
        }
        let number = match queue {
            None => 0,
            Some(q) => {
                link.last_group += 1;
                link.groups.insert(link.last_group, q.into());
                link.last_group
            }
        };
        link.subs.insert(key, number);
        self.file_hub_interest(true, id, number, subject, queue);
        Next::Read
    }

    /// The hub's interest in `subject` (for `queue`) is gone.
    fn link_unsubscribe(&mut self, id: ConnId, subject: &[u8], queue: Option<&[u8]>) {
        let Some(link) = self.conns.leaf_mut(id) else {
            return;
        };
        let key = (subject.into(), queue.map(Into::into));
        let Some(number) = link.subs.remove(&key) else {
            return;
        };
        link.groups.remove(&number);
        self.file_hub_interest(false, id, number, subject, queue);
    }

    /// Files (`add`) or withdraws the hub's interest in `subject` (for its
    /// group `queue`) as link `id`'s subscription `number`, in this
    /// shard's index and the others': a hub group under its marked name
    /// ([`hub_group`]).
    fn file_hub_interest(
        &mut self,
        add: bool,
        id: ConnId,
        number: u32,
        subject: &[u8],
        queue: Option<&[u8]>,
    ) {
        let group = queue.map(hub_group);
        let to = SubRef {
            conn: id,
            sub: number,
        };
        if add {
            self.router.subscribe(to, subject, group.as_deref());
        } else {
            self.router.unsubscribe(to, subject, group.as_deref());
        }
        broadcast_interest(&mut self.outlets, add, subject, group.as_deref());
    }

    /// Link `id` (taken out of the table) closed: the hub's interest
    /// leaves every shard's index, and what was queued for it is dropped
    /// and counted.
    fn close_link(&mut self, id: ConnId, conn: &Conn, link: &LeafConn) {
        for ((pattern, queue), &number) in &link.subs {
            self.file_hub_interest(false, id, number, pattern, queue.as_deref());
        }
        self.router.trim();
        if let Some(side) = self.leaf.as_deref_mut() {
            side.links.retain(|&l| l != id);
        }
        let status = &link.status;
        status.connected.store(false, Ordering::Relaxed);
        status.disconnects.fetch_add(1, Ordering::Relaxed);
        status
            .dropped_bytes
            .fetch_add(conn.out.pending() as u64, Ordering::Relaxed);
        tracing::debug!(remote = %status.url, msgs_in = conn.msgs_in, msgs_out = conn.msgs_out, "leaf link closed");
    }

    /// A message the hub sent over link `id`: routed like a local publish,
    /// to plain subscribers and the client queue groups `chosen` names,
    /// and never to a link.
    fn publish_from_hub(
        &mut self,
        id: ConnId,
        msg: Message<'_>,
        chosen: impl Fn(&[u8]) -> bool,
        chunk: &Bytes,
    ) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.msgs_in += 1;
        if let Wire::Leaf(link) = &conn.wire {
            link.status
                .messages_received
                .fetch_add(1, Ordering::Relaxed);
        }
        // Not checked further, as a NATS client's publish is not (unless
        // pedantic): the hub checked its clients' subjects by its rules.
        let Some(side) = self.leaf.as_deref_mut() else {
            return;
        };
        let mut plan = std::mem::take(&mut side.plan);
        self.count_in(&msg);
        self.router.route_from_hub(msg.subject, chosen, &mut plan);
        let delivery = Delivery {
            serial: self.next_serial(),
            msg,
            chunk: Some(chunk),
            publisher: Some(id),
            from_hub: true,
            line_ok: Cell::new(None),
        };
        self.deliver_each(&plan.local, &delivery);
        if !plan.remote.is_empty() {
            self.forward(&mut plan.remote, &msg, false, chunk);
        }
        if let Some(side) = self.leaf.as_deref_mut() {
            side.plan = plan;
        }
    }

    /// The relay gained (`add`) or lost a client subscription to `pattern`
    /// (in `group`): the hubs are told if that changes what they know.
    fn tell_hubs(&mut self, add: bool, pattern: &[u8], group: Option<&[u8]>) {
        let Some(side) = self.leaf.as_deref_mut() else {
            return;
        };
        if group.is_some_and(|g| g.first() == Some(&HUB_GROUP_MARK)) {
            return;
        }
        let line = if add {
            side.interest.add(pattern, group)
        } else {
            side.interest.remove(pattern, group)
        };
        let Some(line) = line else {
            return;
        };
        for link in side.links.clone() {
            self.reply(link, |out, _| {
                out.push(line.len(), |b| b.extend_from_slice(&line))
            });
        }
    }

    /// Delivers `d` to each of `receivers`, sorted so that a connection's
    /// subscriptions are side by side: a leaf link gets one message however
    /// many of its subscriptions match, naming the hub's queue groups among
    /// them.
    #[inline]
    fn deliver_each(&mut self, receivers: &[SubRef], d: &Delivery<'_>) {
        if self.leaf.is_none() {
            for &to in receivers {
                self.deliver(to, d);
            }
            return;
        }
        let mut i = 0;
        while let Some(&to) = receivers.get(i) {
            if self.conns.get(to.conn).is_some_and(Conn::is_leaf) {
                let run = receivers[i..]
                    .iter()
                    .take_while(|r| r.conn == to.conn)
                    .count();
                self.deliver_to_link(to.conn, &receivers[i..i + run], d);
                i += run;
            } else {
                self.deliver(to, d);
                i += 1;
            }
        }
    }

    /// Queues `d` for the hub of link `id`, whose subscriptions `subs`
    /// matched: an `LMSG` (or `HMSG`) naming the hub's queue groups among
    /// them. Nothing that came from a hub goes back to one.
    fn deliver_to_link(&mut self, id: ConnId, subs: &[SubRef], d: &Delivery<'_>) {
        if d.from_hub {
            return;
        }
        let (Some(side), Some(conn)) = (self.leaf.as_deref_mut(), self.conns.get_mut(id)) else {
            return;
        };
        let Wire::Leaf(link) = &conn.wire else {
            return;
        };
        if conn.dead || conn.closing {
            return;
        }
        let msg = &d.msg;
        let headers = if link.headers { msg.headers } else { None };
        let queues = subs
            .iter()
            .filter_map(|s| link.groups.get(&s.sub))
            .map(|q| &**q);
        let total = headers.map_or(0, <[u8]>::len) + msg.payload.len();
        side.head.clear();
        leaf_wire::encode_msg_head(
            &mut side.head,
            msg.subject,
            msg.reply,
            queues,
            headers.map(<[u8]>::len),
            total,
        );
        let head = &side.head;
        let pushed = conn.out.push(head.len() + total + nats::CRLF.len(), |b| {
            b.extend_from_slice(head);
            b.extend_from_slice(headers.unwrap_or_default());
            b.extend_from_slice(msg.payload);
            b.extend_from_slice(nats::CRLF);
        });
        match pushed {
            Ok(()) => {
                link.status.messages_sent.fetch_add(1, Ordering::Relaxed);
                conn.msgs_out += 1;
                let pending = conn.out.pending();
                self.delivered(id, pending, d);
            }
            Err(refused) => self.slow_consumer(id, refused),
        }
    }

    fn verbose(&self, id: ConnId) -> bool {
        self.conns.nats(id).is_some_and(|n| n.options.verbose)
    }

    fn reply_ok(&mut self, id: ConnId) {
        self.reply(id, |out, _| {
            out.push(nats::OK.len(), |b| b.extend_from_slice(nats::OK))
        });
    }

    #[inline]
    fn publish(&mut self, id: ConnId, msg: Message<'_>, chunk: &Bytes) {
        let (from_line, verbose, no_responders) = match self.conns.get_mut(id) {
            Some(c) => {
                if let Some(p) = c.permissions.as_deref_mut() {
                    if !p.may_publish(msg.subject) {
                        self.deny(id, Denied::Publish(msg.subject));
                        return;
                    }
                }
                c.msgs_in += 1;
                match &c.wire {
                    Wire::Line { .. } | Wire::Leaf(_) => (true, false, false),
                    Wire::Nats(n) => (
                        false,
                        n.options.verbose,
                        n.options.no_responders && n.options.headers,
                    ),
                }
            }
            None => (true, false, false),
        };
        // A verbose client's `+OK` comes before anything its publish
        // delivers to itself (nats-server's order).
        if verbose {
            self.reply_ok(id);
        }
        self.count_in(&msg);
        let mut plan = std::mem::take(&mut self.plan);
        self.router.route_publish(msg.subject, &mut plan);
        let delivery = Delivery {
            serial: self.next_serial(),
            msg,
            chunk: Some(chunk),
            publisher: Some(id),
            from_hub: false,
            line_ok: Cell::new(from_line.then_some(true)),
        };
        self.deliver_each(&plan.local, &delivery);
        if !plan.remote.is_empty() {
            self.forward(&mut plan.remote, &msg, from_line, chunk);
        } else if plan.local.is_empty() && no_responders {
            if let Some(reply) = msg.reply {
                self.no_responders(id, reply);
            }
        }
        self.plan = plan;
    }

    /// A request nobody can answer: the requester's subscription that
    /// matches the reply subject gets nats-server's `503` status message.
    fn no_responders(&mut self, id: ConnId, reply: &[u8]) {
        let Some(n) = self.conns.nats(id) else {
            return;
        };
        let Some(sid) = n
            .subs
            .iter()
            .find(|(_, s)| pattern_matches(&s.subject, reply))
            .map(|(_, s)| s.sid.clone())
        else {
            return;
        };
        self.reply(id, |out, _| {
            out.push(nats::no_responders_len(reply, &sid), |b| {
                nats::encode_no_responders(b, reply, &sid)
            })
        });
    }

    /// Queues a publish for other shards, as places in `chunk` when its
    /// parts lie in it (the usual case: they are slices of what was read),
    /// else in a chunk of its own.
    fn forward(
        &mut self,
        targets: &mut [RemoteTarget],
        msg: &Message<'_>,
        from_line: bool,
        chunk: &Bytes,
    ) {
        let own;
        let (chunk, place) = match Place::of(chunk, msg) {
            Some(place) => (chunk, place),
            None => {
                // Not all in the chunk (a NATS control line read apart
                // from its payload), or past what a `u32` offset reaches
                // (a huge --max-frame): copy this message.
                own = copy_message(msg).expect("a message under 4 GiB");
                (&own.0, own.1)
            }
        };
        for t in targets.iter_mut() {
            if let Some(out) = self.outlets[usize::from(t.shard)].as_mut() {
                out.push_forward(
                    chunk,
                    Forward {
                        place,
                        from_line,
                        plain: t.plain,
                        groups: std::mem::take(&mut t.groups),
                    },
                );
                self.stats.forwarded.add(1);
            }
        }
    }

    /// A new [`Delivery::serial`].
    #[inline]
    fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// Queues a delivery for `to` in its protocol's shape, closing it if it
    /// is too far behind.
    #[inline]
    fn deliver(&mut self, to: SubRef, d: &Delivery<'_>) {
        let Some(conn) = self.conns.get_mut(to.conn) else {
            return;
        };
        if conn.leaving() {
            return;
        }
        let msg = &d.msg;
        if let Some(p) = &conn.permissions {
            // A wildcard subscription the user was allowed may still match
            // a subject its deny list names.
            if p.rules.filters_deliveries() && !p.rules.may_receive(msg.subject) {
                self.stats.permission_denials.add(1);
                return;
            }
        }
        let (pushed, ended) = match &mut conn.wire {
            // Sent by `deliver_each`, which sees all of a link's
            // subscriptions at once.
            Wire::Leaf(_) => return,
            Wire::Line { .. } => {
                if !d.line_ok(&self.terminator) {
                    self.stats.undeliverable_to_line.add(1);
                    return;
                }
                let shared = d.shared_payload();
                let pushed = conn
                    .out
                    .push_msg(msg.subject, msg.payload, shared, &self.terminator);
                (pushed, false)
            }
            Wire::Nats(n) => {
                if !n.options.echo && d.publisher == Some(to.conn) {
                    return;
                }
                let headers = if n.options.headers { msg.headers } else { None };
                let Some(sub) = n.subs.get_mut(to.sub) else {
                    return;
                };
                let head = self.nats_heads.of(d, headers);
                let pushed = push_nats_msg(
                    &mut conn.out,
                    head,
                    &sub.sid,
                    headers,
                    msg.payload,
                    d.shared_payload(),
                );
                if pushed.is_ok() {
                    sub.delivered += 1;
                }
                let ended = sub.max.is_some_and(|max| sub.delivered >= max);
                (pushed, ended)
            }
        };
        match pushed {
            Ok(()) => {
                conn.msgs_out += 1;
                let pending = conn.out.pending();
                self.delivered(to.conn, pending, d);
            }
            Err(refused) => self.slow_consumer(to.conn, refused),
        }
        if ended {
            self.end_nats_sub(to);
        }
    }

    /// A message received to publish: counted with its size (headers
    /// included).
    #[inline]
    fn count_in(&self, msg: &Message<'_>) {
        self.stats.msgs_in.add(1);
        let size = msg.payload.len() + msg.headers.map_or(0, <[u8]>::len);
        self.stats.bytes_in.add(size as u64);
    }

    /// `d` was queued for `id`, which now has `pending` bytes unsent:
    /// counted, and `id` is written at the next flush; a queue grown past
    /// what a receiver that keeps up holds is looked at
    /// ([`Self::queue_grew`]).
    #[inline]
    fn delivered(&mut self, id: ConnId, pending: usize, d: &Delivery<'_>) {
        self.stats.msgs_out.add(1);
        self.stats.bytes_out.add(d.msg.payload.len() as u64);
        self.conns.touch(id);
        if pending > self.limits.congested_above.min(budget::CHECK_ABOVE) {
            self.queue_grew(id, pending, d.publisher.is_some());
        }
    }

    /// A delivery left `pending` bytes queued for `id`, more than a
    /// receiver that keeps up holds: over the relay's memory budget a
    /// queue past [`budget::CHECK_ABOVE`] is closed rather than grown;
    /// past half of `--max-pending` the receiver is congested, and a local
    /// publisher (`local`) is stalled for it.
    #[cold]
    fn queue_grew(&mut self, id: ConnId, pending: usize, local: bool) {
        if pending > budget::CHECK_ABOVE && self.budget.exceeded() {
            self.stats.memory_refusals.add(1);
            let over = SlowConsumer {
                pending,
                max_pending: self.budget.limit(),
            };
            self.slow_consumer(id, over);
            return;
        }
        if pending <= self.limits.congested_above {
            return;
        }
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if !conn.congested {
            conn.congested = true;
            self.congested.push(id);
        }
        // A forwarded message's shard waits in its mesh task instead (see
        // `stalled`).
        if !conn.stuck && local {
            self.stall_publisher = true;
        }
    }

    /// Closes `id` as a slow consumer, refused a push as `refused` says:
    /// what it can still be sent is cut to a well-formed end (a line client
    /// also gets `-ERR slow consumer`; a NATS client nothing more, as
    /// nats-server does), and it is counted and logged once. The log gives
    /// the size that crossed the limit, not what is left after the cut.
    fn slow_consumer(&mut self, id: ConnId, refused: SlowConsumer) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.dead {
            return;
        }
        conn.dead = true;
        conn.wake();
        let congested = std::mem::take(&mut conn.congested);
        match conn.wire {
            Wire::Line { .. } => conn.out.farewell(&self.terminator),
            Wire::Nats(_) | Wire::Leaf(_) => {
                conn.out.clear();
            }
        }
        self.stats.count_error(ProtoError::SlowConsumer);
        tracing::warn!(
            peer = %conn.peer,
            shard = self.id,
            pending = refused.pending,
            limit = refused.max_pending,
            "slow consumer closed"
        );
        self.conns.touch(id);
        if congested {
            self.uncongest(id);
        }
    }

    /// Queues a reply built by `push` (given the line terminator) for
    /// `id`; a reply that does not fit closes it as a slow consumer.
    fn reply(
        &mut self,
        id: ConnId,
        push: impl FnOnce(&mut Outbound, &[u8]) -> Result<(), SlowConsumer>,
    ) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        match push(&mut conn.out, &self.terminator) {
            Ok(()) => self.conns.touch(id),
            Err(refused) => self.slow_consumer(id, refused),
        }
    }

    fn pong(&mut self, id: ConnId) {
        if self.conns.nats(id).is_some() {
            self.reply(id, |out, _| {
                out.push(nats::PONG.len(), |b| b.extend_from_slice(nats::PONG))
            });
        } else {
            self.reply(id, Outbound::push_pong);
        }
    }

    /// A new subscription `to`: into this shard's index, and announced to
    /// the others.
    fn enlist(&mut self, to: SubRef, subject: &[u8], group: Option<&[u8]>) {
        self.router.subscribe(to, subject, group);
        broadcast_interest(&mut self.outlets, true, subject, group);
        self.tell_hubs(true, subject, group);
        self.stats.subscriptions.add(1);
        if let Some(conn) = self.conns.get_mut(to.conn) {
            conn.dirty_subs = true;
        }
    }

    /// The subscription `to` ends: out of this shard's index, and the
    /// others are told. (The caller updates the connection's own table.)
    fn withdraw(&mut self, to: SubRef, subject: &[u8], group: Option<&[u8]>) {
        self.router.unsubscribe(to, subject, group);
        broadcast_interest(&mut self.outlets, false, subject, group);
        self.tell_hubs(false, subject, group);
    }

    fn subscribe(&mut self, id: ConnId, subject: &[u8], group: Option<&[u8]>) {
        make_key(&mut self.key, subject, group);
        let Some(Conn {
            wire: Wire::Line { subs },
            permissions: conn_permissions,
            ..
        }) = self.conns.get_mut(id)
        else {
            return;
        };
        if subs.contains(&self.key[..]) {
            return;
        }
        if !may_subscribe(conn_permissions, subject) {
            self.deny(id, Denied::Subscribe(subject, group));
            return;
        }
        if subs.len() >= self.limits.max_subs {
            self.refuse(id, ProtoError::TooManySubscriptions, &[]);
            return;
        }
        subs.insert(self.key.as_slice().into());
        self.enlist(SubRef::whole(id), subject, group);
    }

    fn unsubscribe(&mut self, id: ConnId, subject: &[u8], group: Option<&[u8]>) {
        make_key(&mut self.key, subject, group);
        let Some(Conn {
            wire: Wire::Line { subs },
            dirty_subs,
            ..
        }) = self.conns.get_mut(id)
        else {
            return;
        };
        if !subs.remove(&self.key[..]) {
            return;
        }
        *dirty_subs = true;
        self.withdraw(SubRef::whole(id), subject, group);
        self.stats.subscriptions.sub(1);
    }

    fn subscribe_sid(
        &mut self,
        id: ConnId,
        subject: &[u8],
        group: Option<&[u8]>,
        sid: &[u8],
    ) -> bool {
        let Some(Conn {
            wire: Wire::Nats(n),
            permissions,
            ..
        }) = self.conns.get_mut(id)
        else {
            return false;
        };
        if n.subs.number(sid).is_some() {
            // nats-server keeps the first subscription under a sid.
            return true;
        }
        if !may_subscribe(permissions, subject) {
            self.deny(id, Denied::Subscribe(subject, group));
            return false;
        }
        if n.subs.len() >= self.limits.max_subs {
            self.refuse_nats(id, NatsError::MaxSubscriptions);
            return false;
        }
        let number = n
            .subs
            .insert(NatsSub {
                sid: sid.into(),
                subject: subject.into(),
                queue: group.map(Into::into),
                delivered: 0,
                max: None,
            })
            .expect("the sid is free");
        self.enlist(
            SubRef {
                conn: id,
                sub: number,
            },
            subject,
            group,
        );
        true
    }

    fn unsubscribe_sid(&mut self, id: ConnId, sid: &[u8], max_msgs: Option<u64>) {
        let Some(n) = self.conns.nats_mut(id) else {
            return;
        };
        // An unknown sid is no error.
        let Some(number) = n.subs.number(sid) else {
            return;
        };
        if let (Some(max), Some(sub)) = (max_msgs, n.subs.get_mut(number)) {
            // Deliveries made before the UNSUB count too (as nats-server
            // counts them): a maximum already reached ends it now.
            sub.max = Some(max);
            if sub.delivered < max {
                return;
            }
        }
        self.end_nats_sub(SubRef {
            conn: id,
            sub: number,
        });
    }

    /// Ends NATS subscription `to` (unsubscribed, or its `max_msgs` reached).
    fn end_nats_sub(&mut self, to: SubRef) {
        let Some(conn) = self.conns.get_mut(to.conn) else {
            return;
        };
        let Wire::Nats(n) = &mut conn.wire else {
            return;
        };
        let Some(sub) = n.subs.remove(to.sub) else {
            return;
        };
        conn.dirty_subs = true;
        self.withdraw(to, &sub.subject, sub.queue.as_deref());
        self.stats.subscriptions.sub(1);
    }

    /// `PONG` now, or after every other shard has applied this connection's
    /// subscription changes (the spec's barrier).
    fn ping(&mut self, id: ConnId) -> Next {
        let Some(conn) = self.conns.get_mut(id) else {
            return Next::Close;
        };
        if conn.dirty_subs && self.shards > 1 {
            conn.dirty_subs = false;
            conn.waiting_barrier = true;
            let generation = conn.generation;
            self.next_token += 1;
            let token = (u64::from(self.id) << 48) | self.next_token;
            self.barriers.insert(
                token,
                Barrier {
                    conn: id,
                    generation,
                    remaining: self.shards - 1,
                },
            );
            for out in self.outlets.iter_mut().flatten() {
                out.push(MeshMsg::Barrier { token });
            }
            return Next::WaitBarrier;
        }
        self.pong(id);
        Next::Read
    }

    /// Applies what is left of a batch from another shard, up to the end
    /// (`true`) or until a receiver here is congested ([`Self::stalled`]):
    /// then `false`, and the rest of the batch waits in `batch` (one batch
    /// holds up to [`mesh::MAX_BATCH`] messages, far more than half of a
    /// receiver's `--max-pending`). Never waits.
    pub fn apply(&mut self, batch: &mut InboundBatch) -> bool {
        let from = batch.from;
        while let Some(msg) = batch.msgs.get(batch.next) {
            match msg {
                MeshMsg::Forward(run) => {
                    let mut plan = std::mem::take(&mut self.forward_plan);
                    while let Some(f) = run.items.get(batch.next_item) {
                        if self.stalled() {
                            self.forward_plan = plan;
                            return false;
                        }
                        batch.next_item += 1;
                        let delivery = Delivery {
                            serial: self.next_serial(),
                            msg: run.message(f),
                            chunk: Some(&run.chunk),
                            publisher: None,
                            from_hub: false,
                            line_ok: Cell::new(f.from_line.then_some(true)),
                        };
                        self.router.route_forward(
                            delivery.msg.subject,
                            f.plain,
                            &f.groups,
                            &mut plan,
                        );
                        self.deliver_each(&plan.local, &delivery);
                    }
                    self.forward_plan = plan;
                    batch.next_item = 0;
                }
                MeshMsg::Interest {
                    add,
                    pattern,
                    group,
                } => {
                    self.router
                        .remote_interest(from, *add, pattern, group.as_deref());
                    self.tell_hubs(*add, pattern, group.as_deref());
                }
                MeshMsg::Barrier { token } => {
                    if let Some(out) = self.outlets[usize::from(from)].as_mut() {
                        out.push(MeshMsg::BarrierAck { token: *token });
                    }
                }
                MeshMsg::BarrierAck { token } => self.barrier_acked(*token),
                MeshMsg::Stopped => {
                    self.peers_stopped += 1;
                    if self.mesh_drained() {
                        // Connections waiting for the last forwards may go.
                        self.conns.iter_mut().for_each(|c| c.wake());
                    }
                }
            }
            batch.next += 1;
        }
        true
    }

    fn barrier_acked(&mut self, token: u64) {
        let Some(b) = self.barriers.get_mut(&token) else {
            return;
        };
        b.remaining -= 1;
        if b.remaining > 0 {
            return;
        }
        let b = self.barriers.remove(&token).expect("present");
        if let Some(conn) = self.conns.get_current(b.conn, b.generation) {
            conn.waiting_barrier = false;
            conn.wake();
            self.pong(b.conn);
        }
    }

    /// Hands queued batches to the mesh (each path as far as it has room).
    pub fn flush_mesh(&mut self) {
        for out in self.outlets.iter_mut().flatten() {
            if out.backlog() > 0 {
                out.try_flush();
            }
        }
    }

    /// Messages queued towards the most backed-up other shard.
    pub fn mesh_backlog(&self) -> usize {
        self.outlets
            .iter()
            .flatten()
            .map(Outlet::backlog)
            .max()
            .unwrap_or(0)
    }

    /// Whether readers must pause for a full mesh path (never during
    /// shutdown, when readers are leaving anyway).
    #[inline]
    pub fn mesh_full(&self) -> bool {
        !self.stopping && self.mesh_backlog() > MAX_MESH_BACKLOG
    }

    /// The peer of `id` is gone (a write failed): drop what it is owed and
    /// close it.
    pub fn peer_gone(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(id) {
            conn.out.clear();
            conn.dead = true;
            conn.wake();
        }
    }

    /// Starts shutdown: connections stop reading and leave once they have
    /// taken what they are owed. Wakes every connection task.
    pub fn begin_shutdown(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        // Behind everything this shard forwarded (the paths are FIFO).
        for out in self.outlets.iter_mut().flatten() {
            out.push(MeshMsg::Stopped);
        }
        self.conns.iter_mut().for_each(|c| c.wake());
        self.wake_stalled();
    }

    /// Shutdown has begun here and every other shard has stopped: what they
    /// forwarded to this shard is queued to its connections.
    pub fn mesh_drained(&self) -> bool {
        self.stopping && self.peers_stopped + 1 >= self.shards
    }

    /// Whether connection `conn`, which handles no more input, is done:
    /// closed by error or by its peer, or owed nothing, now or later (while
    /// other shards still forward, a subscriber may be owed more).
    pub fn is_done(&self, conn: &Conn) -> bool {
        conn.dead || (conn.out.is_empty() && (!self.stopping || self.mesh_drained()))
    }

    /// Whether shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// The shutdown deadline passed: every connection closes now, owed or
    /// not.
    pub fn abandon_all(&mut self) {
        for c in self.conns.iter_mut() {
            c.dead = true;
            c.wake();
        }
    }

    /// Describes every open connection, as of `now`.
    pub fn connections(&self, now: Instant) -> Vec<ConnectionInfo> {
        self.conns
            .iter()
            .map(|(_, c)| ConnectionInfo {
                shard: self.id,
                cid: c.cid,
                peer: c.peer,
                client: match &c.wire {
                    Wire::Line { .. } => ClientInfo::Line,
                    Wire::Leaf(l) => ClientInfo::Leaf {
                        remote: l.status.url.clone(),
                    },
                    Wire::Nats(n) => ClientInfo::Nats {
                        name: n.options.name.clone(),
                        lang: n.options.lang.clone(),
                        version: n.options.version.clone(),
                    },
                },
                age: now.saturating_duration_since(c.since),
                subscriptions: c.subscriptions(),
                msgs_in: c.msgs_in,
                msgs_out: c.msgs_out,
                pending_bytes: c.out.pending(),
                user: c.user.as_deref().map(str::to_string),
            })
            .collect()
    }

    /// Stores the waker of `id`'s task (if it is not the one stored).
    pub fn set_waker(&mut self, id: ConnId, waker: &Waker) {
        if let Some(conn) = self.conns.get_mut(id) {
            if !conn.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                conn.waker = Some(waker.clone());
            }
        }
    }
}

/// A copy of `msg` in a chunk of its own, and where its parts lie in it;
/// `None` past what a `u32` offset reaches.
fn copy_message(msg: &Message<'_>) -> Option<(Bytes, Place)> {
    let mut buf = Vec::new();
    let mut take = |part: &[u8]| {
        let start = u32::try_from(buf.len()).ok()?;
        buf.extend_from_slice(part);
        let end = u32::try_from(buf.len()).ok()?;
        Some(Span { start, end })
    };
    let subject = take(msg.subject)?;
    let reply = match msg.reply {
        Some(r) => Some(take(r)?),
        None => None,
    };
    let headers = match msg.headers {
        Some(h) => Some(take(h)?),
        None => None,
    };
    let place = Place {
        subject,
        reply,
        headers,
        payload: take(msg.payload)?,
    };
    Some((Bytes::from(buf), place))
}

/// Queues a NATS delivery under `head` (the message's `HMSG` head when
/// `headers` are to be sent, else its `MSG` head, for the payload alone);
/// `shared` is the payload by reference, for a large
/// one (see [`Outbound::push_msg`]).
#[inline]
fn push_nats_msg(
    out: &mut Outbound,
    head: &nats::MsgHead,
    sid: &[u8],
    headers: Option<&[u8]>,
    payload: &[u8],
    shared: Option<Bytes>,
) -> Result<(), SlowConsumer> {
    let headers = headers.unwrap_or_default();
    let head_len = head.len_with(sid) + headers.len();
    let put_head = |b: &mut Vec<u8>| {
        head.put(b, sid);
        b.extend_from_slice(headers);
    };
    match shared {
        None => out.push(head_len + payload.len() + nats::CRLF.len(), |b| {
            put_head(b);
            b.extend_from_slice(payload);
            b.extend_from_slice(nats::CRLF);
        }),
        Some(shared) => out.push_shared(head_len, put_head, shared, nats::CRLF),
    }
}

/// Tells every other shard that this shard gained (`add`) or lost one
/// subscription.
fn broadcast_interest(
    outlets: &mut [Option<Outlet>],
    add: bool,
    pattern: &[u8],
    group: Option<&[u8]>,
) {
    if outlets.iter().all(Option::is_none) {
        return;
    }
    let pattern = Bytes::copy_from_slice(pattern);
    let group = group.map(Bytes::copy_from_slice);
    for out in outlets.iter_mut().flatten() {
        out.push(MeshMsg::Interest {
            add,
            pattern: pattern.clone(),
            group: group.clone(),
        });
    }
}

/// `pattern` or `pattern group`: neither contains a space, so the key is
/// unambiguous.
fn make_key(key: &mut Vec<u8>, pattern: &[u8], group: Option<&[u8]>) {
    key.clear();
    key.extend_from_slice(pattern);
    if let Some(g) = group {
        key.push(b' ');
        key.extend_from_slice(g);
    }
}

fn split_key(key: &[u8]) -> (&[u8], Option<&[u8]>) {
    match memchr::memchr(b' ', key) {
        Some(i) => (&key[..i], Some(&key[i + 1..])),
        None => (key, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{Endpoint, Inlet};
    use crate::protocol::line;
    use crate::protocol::nats::ConnectOptions;
    use crate::wake_counter::WakeCounter;

    /// Cores of a relay with `n` shards, wired by a real mesh whose
    /// batches the test carries by hand ([`Relay::pump`]).
    struct Relay {
        cores: Vec<Core>,
        inlets: Vec<Vec<Inlet>>,
        stats: Vec<Arc<ShardStats>>,
    }

    impl Relay {
        fn new(n: usize, tweak: impl Fn(&mut Config)) -> Relay {
            let mut config = Config::local(n);
            tweak(&mut config);
            let (endpoints, _) = mesh::build(n, 64);
            let mut relay = Relay {
                cores: Vec::new(),
                inlets: Vec::new(),
                stats: Vec::new(),
            };
            for Endpoint {
                id,
                outlets,
                inlets,
                ..
            } in endpoints
            {
                let stats = Arc::new(ShardStats::default());
                relay.cores.push(Core::new(
                    id,
                    n,
                    &config,
                    stats.clone(),
                    Arc::new(MemoryBudget::unlimited()),
                    outlets,
                ));
                relay.inlets.push(inlets);
                relay.stats.push(stats);
            }
            relay
        }

        fn open(&mut self, shard: usize) -> ConnId {
            self.open_as(shard, Wire::line())
        }

        fn open_as(&mut self, shard: usize, wire: Wire) -> ConnId {
            let peer = SocketAddr::from(([127, 0, 0, 1], 9));
            self.cores[shard].open(peer, 1, wire, Instant::now())
        }

        /// Feeds one line-protocol frame of connection `id` on `shard`.
        fn send(&mut self, shard: usize, id: ConnId, frame: &str) -> Next {
            let chunk = Bytes::copy_from_slice(frame.as_bytes());
            match line::parse(&chunk) {
                Ok(command) => self.cores[shard].handle(id, command, &chunk),
                Err(e) => {
                    self.cores[shard].refuse(id, e, &chunk);
                    Next::Read
                }
            }
        }

        /// Carries mesh batches between the cores until none is left.
        fn pump(&mut self) {
            loop {
                let mut moved = false;
                for core in &mut self.cores {
                    core.flush_mesh();
                }
                for (to, inlets) in self.inlets.iter().enumerate() {
                    for inlet in inlets {
                        while let Some(batch) = inlet.try_recv() {
                            let mut batch = InboundBatch::new(inlet.from, batch);
                            while !self.cores[to].apply(&mut batch) {
                                // Stalled: the test plays the receivers
                                // that catch up.
                                self.cores[to].stall_timed_out();
                            }
                            moved = true;
                        }
                    }
                }
                if !moved {
                    return;
                }
            }
        }

        /// What connection `id` on `shard` has been sent since the last
        /// call, as text; the queue is then written off.
        fn take(&mut self, shard: usize, id: ConnId) -> String {
            let conn = self.cores[shard].conns_mut().get_mut(id).expect("open");
            let text = String::from_utf8_lossy(conn.out.unsent()).into_owned();
            let n = conn.out.pending();
            conn.out.consume(n);
            text
        }
    }

    #[test]
    fn a_message_reaches_each_connection_once_on_every_shard() {
        let mut r = Relay::new(2, |_| {});
        let (a, b, publisher) = (r.open(0), r.open(0), r.open(0));
        let c = r.open(1);
        for frame in ["SUB a.*", "SUB a.>", "SUB a.b"] {
            r.send(0, a, frame);
            r.send(1, c, frame);
        }
        r.send(0, b, "SUB a.b");
        r.pump();
        r.send(0, publisher, "PUB a.b hello there");
        r.pump();
        assert_eq!(r.take(0, a), "MSG a.b hello there\n");
        assert_eq!(r.take(0, b), "MSG a.b hello there\n");
        assert_eq!(r.take(1, c), "MSG a.b hello there\n");
        assert_eq!(r.take(0, publisher), "", "not subscribed: nothing");
        assert_eq!(r.stats[0].forwarded.get(), 1, "once per shard");
        assert_eq!(r.stats[0].msgs_out.get(), 2);
        assert_eq!(r.stats[1].msgs_out.get(), 1);
        // An empty payload keeps the space after the subject.
        r.send(0, publisher, "PUB a.c");
        r.pump();
        assert_eq!(r.take(1, c), "MSG a.c \n");
    }

    #[test]
    fn a_forwarded_message_shares_the_publishers_chunk() {
        let mut r = Relay::new(2, |_| {});
        let (publisher, reader) = (r.open(0), r.open(1));
        r.send(1, reader, "SUB s");
        r.pump();
        let chunk = Bytes::from_static(b"PUB s one");
        let command = line::parse(&chunk).unwrap();
        r.cores[0].handle(publisher, command, &chunk);
        r.cores[0].flush_mesh();
        let batch = r.inlets[1][0].try_recv().expect("a batch");
        let MeshMsg::Forward(run) = &batch[0] else {
            panic!("a forward run, not {:?}", batch[0]);
        };
        assert_eq!(run.chunk.as_ptr(), chunk.as_ptr(), "no copy");
        assert_eq!(run.message(&run.items[0]), Message::plain(b"s", b"one"));
        // Slices outside the chunk are copied into one of their own.
        let elsewhere = Bytes::from_static(b"unrelated");
        r.cores[0].handle(
            publisher,
            Command::Pub(Message::plain(b"s", b"two")),
            &elsewhere,
        );
        r.pump();
        assert!(r.cores[1].apply(&mut InboundBatch::new(0, batch)));
        assert_eq!(r.take(1, reader), "MSG s two\nMSG s one\n");
    }

    #[test]
    fn queue_groups_give_each_message_to_one_member_spread_by_weight() {
        let mut r = Relay::new(2, |_| {});
        let members = [
            (0, r.open(0)),
            (0, r.open(0)),
            (1, r.open(1)),
            (1, r.open(1)),
        ];
        let publisher = r.open(0);
        for &(shard, id) in &members {
            r.send(shard, id, "SUB jobs w");
        }
        r.pump();
        for i in 0..400 {
            r.send(0, publisher, &format!("PUB jobs {i}"));
        }
        r.pump();
        let mut seen = std::collections::BTreeSet::new();
        for &(shard, id) in &members {
            let got = r.take(shard, id);
            assert_eq!(got.lines().count(), 100, "an even share: {got}");
            for line in got.lines() {
                assert!(seen.insert(line.to_string()), "{line} delivered twice");
            }
        }
        assert_eq!(seen.len(), 400);
    }

    #[test]
    fn ping_after_subscribing_waits_for_every_other_shard() {
        let mut r = Relay::new(3, |_| {});
        let a = r.open(0);
        let (woken, waker) = WakeCounter::new();
        r.cores[0].set_waker(a, &waker);
        // No subscription change: PONG at once.
        assert_eq!(r.send(0, a, "PING"), Next::Read);
        assert_eq!(r.take(0, a), "PONG\n");
        r.send(0, a, "SUB x");
        assert_eq!(r.send(0, a, "PING"), Next::WaitBarrier);
        assert_eq!(r.cores[0].readiness(a, false), Next::WaitBarrier);
        assert_eq!(r.take(0, a), "", "no PONG before the others acknowledge");
        r.pump();
        assert_eq!(r.take(0, a), "PONG\n");
        assert_eq!(woken.count(), 1, "the task is woken");
        assert_eq!(r.cores[0].readiness(a, false), Next::Read);
        // Every other shard applied the SUB before it acknowledged.
        let publisher = r.open(2);
        r.send(2, publisher, "PUB x 1");
        r.pump();
        assert_eq!(r.take(0, a), "MSG x 1\n");
        // A barrier answered after its connection closed reaches no one.
        r.send(0, a, "UNSUB x");
        r.send(0, a, "PING");
        r.cores[0].close(a);
        let b = r.open(0);
        assert_eq!(b, a, "the slot is reused");
        r.pump();
        assert_eq!(r.take(0, b), "");
    }

    #[test]
    fn a_slow_consumer_is_closed_counted_once_and_its_bytes_accounted() {
        let mut r = Relay::new(1, |c| c.max_pending = 100);
        let (reader, publisher) = (r.open(0), r.open(0));
        r.send(0, reader, "SUB s");
        let payload = "x".repeat(40);
        for _ in 0..5 {
            r.send(0, publisher, &format!("PUB s {payload}"));
        }
        let stats = r.stats[0].clone();
        assert_eq!(stats.slow_consumers.get(), 1);
        assert_eq!(r.cores[0].readiness(reader, false), Next::Close);
        let conn = r.cores[0].conns().get(reader).unwrap();
        assert!(conn.dead);
        assert_eq!(conn.msgs_out, 2, "two fit in 100 bytes");
        assert_eq!(stats.pending_bytes.get(), conn.out.pending() as u64);
        // Nothing written yet: the farewell keeps one whole frame and
        // drops the rest.
        assert_eq!(
            r.take(0, reader),
            format!("MSG s {payload}\n-ERR slow consumer\n")
        );
        assert_eq!(stats.pending_bytes.get(), 0);
        r.send(0, publisher, &format!("PUB s {payload}"));
        assert_eq!(stats.slow_consumers.get(), 1, "counted once");
        assert_eq!(r.take(0, reader), "", "nothing more for a closed one");
        r.cores[0].close(reader);
        assert_eq!(stats.connections_open.get(), 1);
        assert_eq!(stats.subscriptions.get(), 0);
    }

    #[test]
    fn a_publisher_stalls_while_its_receiver_is_congested_until_it_catches_up_or_is_left_behind() {
        let mut r = Relay::new(2, |c| c.max_pending = 400);
        let (reader, publisher) = (r.open(0), r.open(0));
        r.send(0, reader, "SUB s");
        // Each delivery is `MSG s <90 x>\n`: 97 bytes.
        let frame = format!("PUB s {}", "x".repeat(90));
        let publish = |r: &mut Relay| {
            let next = r.send(0, publisher, &frame);
            r.cores[0].after_frame(publisher, next)
        };
        assert_eq!(publish(&mut r), Next::Read);
        assert_eq!(publish(&mut r), Next::Read, "194 bytes: not over half");
        assert_eq!(publish(&mut r), Next::Stall, "291 bytes: over half");
        assert!(r.cores[0].stalled());
        let (count, waker) = WakeCounter::new();
        let cx = Context::from_waker(&waker);
        assert!(r.cores[0].poll_stall(&cx).is_pending());
        // Caught up: under a quarter (100 bytes) again.
        r.take(0, reader);
        r.cores[0].after_write(reader);
        assert_eq!(count.count(), 1, "the stalled task is woken");
        assert!(r.cores[0].poll_stall(&cx).is_ready());

        // A receiver that does not catch up within --max-stall is left
        // behind: no more stalls for it, and it is closed at the limit.
        for _ in 0..2 {
            publish(&mut r);
        }
        assert_eq!(publish(&mut r), Next::Stall);
        assert!(r.cores[0].poll_stall(&cx).is_pending());
        r.cores[0].stall_timed_out();
        assert_eq!(count.count(), 2);
        assert!(!r.cores[0].stalled());
        assert!(r.cores[0].conns().get(reader).unwrap().stuck);
        assert_eq!(publish(&mut r), Next::Read, "388 bytes, stuck: no stall");
        assert_eq!(publish(&mut r), Next::Read);
        let stats = r.stats[0].clone();
        assert_eq!(stats.slow_consumers.get(), 1, "closed at --max-pending");
        assert_eq!(stats.stalls.get(), 2);
        // Forwarded deliveries do not stall a publisher: the shard itself
        // stops applying the batch while a receiver is congested.
        let remote = r.open(1);
        r.send(1, remote, "SUB t");
        r.pump();
        let frame = frame.replacen(" s ", " t ", 1);
        for _ in 0..4 {
            let next = r.send(0, publisher, &frame);
            assert_eq!(r.cores[0].after_frame(publisher, next), Next::Read);
        }
        r.cores[0].flush_mesh();
        let mut batch = InboundBatch::new(0, r.inlets[1][0].try_recv().expect("a batch"));
        assert!(!r.cores[1].apply(&mut batch), "stopped at the congestion");
        assert!(r.cores[1].stalled());
        assert_eq!(r.take(1, remote).len(), 3 * 97, "up to the one past half");
        r.cores[1].after_write(remote);
        assert!(r.cores[1].apply(&mut batch), "the rest");
        assert_eq!(r.take(1, remote).len(), 97);
        assert!(!r.cores[0].stalled());
    }

    #[test]
    fn refused_frames_are_counted_by_reason_and_leave_the_connection_open() {
        let mut r = Relay::new(1, |c| c.max_subs = 1);
        let a = r.open(0);
        r.send(0, a, "FOO");
        r.send(0, a, "SUB one");
        r.send(0, a, "SUB two");
        assert_eq!(
            r.take(0, a),
            "-ERR unknown verb\n-ERR too many subscriptions\n"
        );
        let stats = &r.stats[0];
        assert_eq!(stats.errors_unknown_verb.get(), 1);
        assert_eq!(stats.errors_too_many_subscriptions.get(), 1);
        assert_eq!(stats.protocol_errors.get(), 2);
        assert_eq!(r.cores[0].readiness(a, false), Next::Read);
    }

    #[test]
    fn closing_withdraws_interest_from_the_other_shards() {
        let mut r = Relay::new(2, |_| {});
        let (reader, publisher) = (r.open(1), r.open(0));
        r.send(1, reader, "SUB s");
        r.send(1, reader, "SUB s g");
        r.pump();
        r.cores[1].close(reader);
        r.pump();
        r.send(0, publisher, "PUB s x");
        r.cores[0].flush_mesh();
        assert!(r.inlets[1][0].try_recv().is_none(), "nothing forwarded");
        assert_eq!(r.stats[0].forwarded.get(), 0);
    }

    #[test]
    fn shutdown_lets_half_closed_connections_finish_and_closes_the_rest() {
        let mut r = Relay::new(1, |_| {});
        let (a, b) = (r.open(0), r.open(0));
        r.cores[0].begin_shutdown();
        assert!(r.cores[0].stopping());
        assert_eq!(r.cores[0].readiness(a, false), Next::Close);
        assert_eq!(r.cores[0].readiness(b, true), Next::Read, "eof: finish");
        r.cores[0].abandon_all();
        assert_eq!(r.cores[0].readiness(b, true), Next::Close);
    }

    #[test]
    fn at_shutdown_a_subscriber_waits_for_what_other_shards_still_forward() {
        let mut r = Relay::new(2, |_| {});
        let (reader, publisher) = (r.open(1), r.open(0));
        r.send(1, reader, "SUB s");
        r.pump();
        r.send(0, publisher, "PUB s late");
        // Shard 1 stops first, with the message still on its way.
        r.cores[1].begin_shutdown();
        let done = |r: &Relay| {
            let core = &r.cores[1];
            core.is_done(core.conns.get(reader).unwrap())
        };
        assert!(!done(&r), "shard 0 may still forward");
        r.cores[0].begin_shutdown();
        r.pump();
        assert!(r.cores[1].mesh_drained());
        assert!(!done(&r), "owed the forwarded message");
        assert_eq!(r.take(1, reader), "MSG s late\n");
        assert!(done(&r));
    }

    #[test]
    #[should_panic(expected = "asked to panic")]
    fn the_panic_hook_panics_only_when_enabled() {
        let mut off = Relay::new(1, |_| {});
        let a = off.open(0);
        off.send(0, a, std::str::from_utf8(PANIC_FRAME).unwrap());
        assert_eq!(off.take(0, a), "-ERR unknown verb\n");
        let mut on = Relay::new(1, |c| c.panic_frame = true);
        let a = on.open(0);
        on.send(0, a, std::str::from_utf8(PANIC_FRAME).unwrap());
    }

    /// Feeds a NATS command of connection `id` on `shard`.
    fn nats_cmd(r: &mut Relay, shard: usize, id: ConnId, command: Command<'_>) -> Next {
        r.cores[shard].handle(id, command, &Bytes::new())
    }

    fn nats_conn(r: &mut Relay, shard: usize, options: &str) -> ConnId {
        let id = r.open_as(shard, Wire::nats());
        let mut o = ConnectOptions::default();
        let sep = if options.is_empty() { "" } else { "," };
        o.merge_json(format!("{{\"verbose\":false{sep}{options}}}").as_bytes())
            .unwrap();
        r.cores[shard].connect(id, &o);
        id
    }

    #[test]
    fn nats_gets_one_delivery_per_sid_and_line_one_per_connection() {
        let mut r = Relay::new(2, |_| {});
        let n = nats_conn(&mut r, 1, r#""headers":true"#);
        for (subject, sid) in [("a.*", "1"), ("a.>", "2")] {
            nats_cmd(
                &mut r,
                1,
                n,
                Command::SubSid {
                    subject: subject.as_bytes(),
                    group: None,
                    sid: sid.as_bytes(),
                },
            );
        }
        let l = r.open(1);
        r.send(1, l, "SUB a.*");
        r.send(1, l, "SUB a.>");
        r.pump();
        let publisher = nats_conn(&mut r, 0, r#""headers":true"#);
        let msg = Message {
            subject: b"a.b",
            reply: Some(b"r"),
            headers: Some(b"NATS/1.0\r\n\r\n"),
            payload: b"hi",
        };
        nats_cmd(&mut r, 0, publisher, Command::Pub(msg));
        r.pump();
        let got = r.take(1, n);
        assert_eq!(got.matches("HMSG a.b ").count(), 2, "{got}");
        assert!(
            got.contains("HMSG a.b 1 r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"),
            "{got}"
        );
        assert!(got.contains("HMSG a.b 2 r 12 14\r\n"), "{got}");
        assert_eq!(r.take(1, l), "MSG a.b hi\n", "no reply, no headers, once");
    }

    #[test]
    fn a_line_receiver_is_not_sent_what_it_cannot_frame() {
        let mut r = Relay::new(1, |_| {});
        let l = r.open(0);
        r.send(0, l, "SUB >");
        let n = nats_conn(&mut r, 0, "");
        for (subject, payload) in [
            (&b"s"[..], &b"two\nlines"[..]),
            (b"s", b"fine"),
            (b"caf\xc3\xa9", b"x"),
        ] {
            nats_cmd(&mut r, 0, n, Command::Pub(Message::plain(subject, payload)));
        }
        assert_eq!(r.take(0, l), "MSG s fine\n");
        assert_eq!(r.stats[0].undeliverable_to_line.get(), 2);
    }

    #[test]
    fn nats_echo_off_and_no_responders() {
        let mut r = Relay::new(1, |_| {});
        let n = nats_conn(
            &mut r,
            0,
            r#""echo":false,"headers":true,"no_responders":true"#,
        );
        let sub = |subject: &'static [u8], sid: &'static [u8]| Command::SubSid {
            subject,
            group: None,
            sid,
        };
        nats_cmd(&mut r, 0, n, sub(b"me", b"1"));
        nats_cmd(&mut r, 0, n, sub(b"_INBOX.1", b"2"));
        nats_cmd(&mut r, 0, n, Command::Pub(Message::plain(b"me", b"x")));
        assert_eq!(r.take(0, n), "", "its own message is not echoed");
        let request = Message {
            reply: Some(b"_INBOX.1"),
            ..Message::plain(b"nobody", b"?")
        };
        nats_cmd(&mut r, 0, n, Command::Pub(request));
        assert_eq!(
            r.take(0, n),
            "HMSG _INBOX.1 2 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"
        );
    }

    #[test]
    fn a_large_payload_is_held_once_for_every_receiver() {
        let mut r = Relay::new(2, |_| {});
        let line = r.open(0);
        r.send(0, line, "SUB big");
        let remote = r.open(1);
        r.send(1, remote, "SUB big");
        let n = nats_conn(&mut r, 0, "");
        nats_cmd(
            &mut r,
            0,
            n,
            Command::SubSid {
                subject: b"big",
                group: None,
                sid: b"1",
            },
        );
        r.pump();
        let mut frame = b"PUB big ".to_vec();
        frame.extend(std::iter::repeat_n(b'p', SHARED_PAYLOAD_MIN));
        let chunk = Bytes::from(frame);
        let publisher = r.open(0);
        let command = line::parse(&chunk).unwrap();
        r.cores[0].handle(publisher, command, &chunk);
        r.pump();
        let payload_at = chunk[8..].as_ptr();
        // Each receiver's queue offers the payload straight from the
        // publisher's chunk once its own header is written.
        for (shard, id, head) in [
            (0, line, &b"MSG big "[..]),
            (1, remote, b"MSG big "),
            (
                0,
                n,
                format!("MSG big 1 {SHARED_PAYLOAD_MIN}\r\n").as_bytes(),
            ),
        ] {
            let out = &mut r.cores[shard].conns_mut().get_mut(id).unwrap().out;
            assert_eq!(out.unsent(), head);
            out.consume(head.len());
            assert_eq!(out.unsent().as_ptr(), payload_at, "shard {shard} conn {id}");
            assert_eq!(out.unsent().len(), SHARED_PAYLOAD_MIN);
        }
    }

    /// A relay of `n` shards with one leaf remote, and its link open on
    /// shard 0.
    fn with_link(n: usize) -> (Relay, ConnId) {
        let mut r = Relay::new(n, |c| {
            c.leaf_remotes =
                vec![crate::leaf::Remote::parse("nats-leaf://127.0.0.1:7422").unwrap()];
        });
        let status = Arc::new(RemoteStatus::new("nats-leaf://127.0.0.1:7422"));
        let peer = SocketAddr::from(([127, 0, 0, 1], 7422));
        let link = r.cores[0].open_leaf(peer, 99, status, true, Instant::now());
        (r, link)
    }

    /// Feeds what the hub sent over `link` (shard 0).
    fn hub_says(r: &mut Relay, link: ConnId, text: &str) -> Next {
        let mut framer = nats::new_framer(1 << 20);
        let mut decoder = leaf_wire::HubDecoder::new(1 << 20);
        framer.push(text.as_bytes());
        let mut frames = framer.frames();
        let mut next = Next::Read;
        while let Some(op) = decoder.next(&mut frames) {
            next = r.cores[0].handle_hub(link, op.expect("well-formed"));
        }
        next
    }

    #[test]
    fn a_link_hears_the_relays_interest_once_per_pattern_from_every_shard() {
        let (mut r, link) = with_link(2);
        let hello = r.take(0, link);
        assert!(hello.starts_with("LS+ $LDS."), "{hello}");
        let a = r.open(0);
        let b = r.open(1);
        r.send(0, a, "SUB news.*");
        r.send(1, b, "SUB news.*");
        r.send(1, b, "SUB jobs workers");
        r.pump();
        let mut lines: Vec<String> = r.take(0, link).lines().map(String::from).collect();
        lines.sort();
        assert_eq!(lines, ["LS+ jobs workers 1", "LS+ news.*"]);
        r.send(0, a, "UNSUB news.*");
        r.pump();
        assert_eq!(r.take(0, link), "", "another shard still has news.*");
        r.cores[1].close(b);
        r.pump();
        let mut lines: Vec<String> = r.take(0, link).lines().map(String::from).collect();
        lines.sort();
        assert_eq!(lines, ["LS- jobs workers", "LS- news.*"]);
    }

    #[test]
    fn the_hub_gets_what_it_wants_and_never_its_own_messages_back() {
        let (mut r, link) = with_link(2);
        r.take(0, link);
        let here = r.open(0);
        let there = r.open(1);
        r.send(0, here, "SUB a.*");
        r.send(1, there, "SUB a.*");
        r.pump();
        r.take(0, link);
        hub_says(&mut r, link, "LS+ a.>\r\nLS+ a.b\r\n");
        r.pump();
        // A publish on either shard reaches the hub once.
        r.send(1, there, "PUB a.b x");
        r.pump();
        r.send(0, here, "PUB a.c y");
        assert_eq!(r.take(0, link), "LMSG a.b 1\r\nx\r\nLMSG a.c 1\r\ny\r\n");
        r.pump();
        r.take(0, here);
        r.take(1, there);
        // What the hub sends reaches both shards' subscribers, not the hub.
        hub_says(&mut r, link, "LMSG a.z _R.1 2\r\nhi\r\n");
        r.pump();
        assert_eq!(r.take(0, here), "MSG a.z hi\n");
        assert_eq!(r.take(1, there), "MSG a.z hi\n");
        assert_eq!(r.take(0, link), "");
        // Interest withdrawn: nothing more goes to the hub.
        hub_says(&mut r, link, "LS- a.>\r\nLS- a.b\r\n");
        r.pump();
        r.send(1, there, "PUB a.b x");
        r.pump();
        assert_eq!(r.take(0, link), "");
        assert_eq!(hub_says(&mut r, link, "PING\r\n"), Next::Read);
        assert_eq!(r.take(0, link), "PONG\r\n");
    }

    #[test]
    fn queue_groups_prefer_local_members_and_follow_the_hubs_choice() {
        let (mut r, link) = with_link(2);
        hub_says(&mut r, link, "LS+ jobs workers 3\r\n");
        r.pump();
        r.take(0, link);
        let publisher = r.open(0);
        // Only the hub has members: it gets each message, with the group.
        r.send(0, publisher, "PUB jobs 1");
        r.pump();
        assert_eq!(r.take(0, link), "LMSG jobs | workers 1\r\n1\r\n");
        // A local member on the other shard: it gets them, the hub none.
        let worker = r.open(1);
        r.send(1, worker, "SUB jobs workers");
        r.pump();
        r.take(0, link);
        for _ in 0..3 {
            r.send(0, publisher, "PUB jobs 2");
        }
        r.pump();
        assert_eq!(r.take(1, worker), "MSG jobs 2\n".repeat(3));
        assert_eq!(r.take(0, link), "");
        // The hub chose this relay for `workers`: one member gets it; a
        // group it did not name gets nothing.
        let other = r.open(0);
        r.send(0, other, "SUB jobs others");
        r.pump();
        hub_says(&mut r, link, "LMSG jobs | workers 1\r\n3\r\n");
        r.pump();
        assert_eq!(r.take(1, worker), "MSG jobs 3\n");
        assert_eq!(r.take(0, other), "");
    }

    #[test]
    fn the_hub_sending_back_this_relays_loop_subject_closes_the_link_as_a_loop() {
        let (mut r, link) = with_link(1);
        let hello = r.take(0, link);
        let subject = hello.trim_end().strip_prefix("LS+ ").unwrap().to_string();
        assert_eq!(
            hub_says(&mut r, link, &format!("LS+ {subject}\r\n")),
            Next::Close
        );
        assert!(r.cores[0].link_looped(link));
        // The hub's word for it does the same.
        let (mut r, link) = with_link(1);
        let said = "-ERR 'Loop detected for leafnode account=\"$G\"'\r\n";
        assert_eq!(hub_says(&mut r, link, said), Next::Close);
        assert!(r.cores[0].link_looped(link));
    }
}
