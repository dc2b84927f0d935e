//! The connection table: every open connection of a shard, by slot.
//!
//! A slot map: a [`ConnId`] is an index into a vector, reused after its
//! connection closes, and a generation number tells successive connections
//! in one slot apart (a barrier answered after its connection closed must
//! not reach the next one). The table also keeps the list of connections
//! with output queued since the last flush, so a run of frames that
//! delivers to the same receiver many times writes to it once.
//!
//! Nothing here touches a socket: the I/O layer
//! ([`super::tasks`]) keeps each connection's stream by the same id.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::auth::{PermissionCache, Permissions};
use crate::outbound::Outbound;
use crate::protocol::nats::ConnectOptions;
use crate::router::ConnId;

/// One client connection's state on its shard.
pub struct Conn {
    /// The client's address, for logs and `/connections`.
    pub peer: SocketAddr,
    /// Tells this connection apart from earlier ones in the same slot.
    pub generation: u64,
    /// Its id, unique in the process (`client_id` of NATS `INFO`, `cid` of
    /// `/connz`).
    pub cid: u64,
    /// Output waiting for the socket; keeps the shard's pending-bytes gauge.
    pub out: Outbound,
    /// The protocol it speaks, with that protocol's subscriptions.
    pub wire: Wire,
    /// The connection task's waker: woken for new output to finish, for a
    /// completed barrier, for closing and for shutdown.
    pub waker: Option<Waker>,
    /// On the table's touched list.
    touched: bool,
    /// `SUB`/`UNSUB` since the last barrier: the next `PING` needs one.
    pub dirty_subs: bool,
    /// A `PING` waits for other shards to acknowledge a barrier.
    pub waiting_barrier: bool,
    /// Closing without further service (slow consumer, write error,
    /// shutdown deadline).
    pub dead: bool,
    /// Reads no more: leaves once what it is owed is written (a protocol
    /// error that closes, after its `-ERR`).
    pub closing: bool,
    /// More than half of `--max-pending` queued, and not yet back under a
    /// quarter: publishers delivering to it pause (see
    /// [`super::core::Core::stalled`]).
    pub congested: bool,
    /// Congested and did not get back under a quarter within a whole
    /// `--max-stall`: publishers no longer wait for it.
    pub stuck: bool,
    /// When it was accepted.
    pub since: Instant,
    /// Publishes received from it.
    pub msgs_in: u64,
    /// Deliveries queued to it.
    pub msgs_out: u64,
    /// The user it authenticated as (`None`: no users configured, or a
    /// token).
    pub user: Option<Arc<str>>,
    /// What its user may do, if that is not everything: `None` on every
    /// connection of a relay without permissions, so the hot path checks
    /// one pointer.
    pub permissions: Option<Box<ConnPermissions>>,
}

/// A restricted connection's permissions and its remembered verdicts.
pub struct ConnPermissions {
    pub rules: Arc<Permissions>,
    /// Publish verdicts by subject.
    pub publish: PermissionCache,
}

impl ConnPermissions {
    pub fn new(rules: Arc<Permissions>) -> Self {
        ConnPermissions {
            rules,
            publish: PermissionCache::default(),
        }
    }

    /// Whether the user may publish to `subject`.
    #[inline]
    pub fn may_publish(&mut self, subject: &[u8]) -> bool {
        self.publish.permits(&self.rules.publish, subject)
    }
}

impl Conn {
    /// A connection from `peer` speaking `wire`, with nothing queued yet.
    pub fn new(peer: SocketAddr, cid: u64, wire: Wire, out: Outbound, since: Instant) -> Conn {
        Conn {
            peer,
            generation: 0,
            cid,
            out,
            wire,
            waker: None,
            touched: false,
            dirty_subs: false,
            waiting_barrier: false,
            dead: false,
            closing: false,
            congested: false,
            stuck: false,
            since,
            msgs_in: 0,
            msgs_out: 0,
            user: None,
            permissions: None,
        }
    }

    /// Subscriptions in force.
    pub fn subscriptions(&self) -> usize {
        match &self.wire {
            Wire::Line { subs } => subs.len(),
            Wire::Nats(n) => n.subs.len(),
            Wire::Leaf(l) => l.subs.len(),
        }
    }

    /// Whether it is a leaf-node link to a hub.
    #[inline]
    pub fn is_leaf(&self) -> bool {
        matches!(self.wire, Wire::Leaf(_))
    }

    /// Whether it speaks NATS.
    pub fn is_nats(&self) -> bool {
        matches!(self.wire, Wire::Nats(_))
    }

    /// Whether it is being closed (no more deliveries or reading).
    #[inline]
    pub fn leaving(&self) -> bool {
        self.dead || self.closing
    }

    /// Wakes the connection's task, if it has polled yet.
    pub fn wake(&self) {
        if let Some(w) = &self.waker {
            w.wake_by_ref();
        }
    }
}

/// A connection's protocol, and what that protocol keeps per connection.
pub enum Wire {
    /// tern's line protocol: subscriptions are a set of `pattern` or
    /// `pattern group` keys (a repeated `SUB` is a no-op), all filed under
    /// the connection as a whole (one delivery per message).
    Line { subs: FxHashSet<Box<[u8]>> },
    /// The NATS client protocol.
    Nats(Box<NatsConn>),
    /// A leaf-node link to a hub ([`crate::leaf`]): its subscriptions are
    /// the hub's interest.
    Leaf(Box<LeafConn>),
}

impl Wire {
    /// A fresh line-protocol connection.
    pub fn line() -> Wire {
        Wire::Line {
            subs: FxHashSet::default(),
        }
    }

    /// A fresh NATS connection (before `CONNECT`: nats-server's default
    /// options).
    pub fn nats() -> Wire {
        Wire::Nats(Box::new(NatsConn {
            options: ConnectOptions::default(),
            subs: NatsSubs::default(),
            pings_out: 0,
        }))
    }

    /// The protocol's name in logs: `line` or `nats`.
    pub fn name(&self) -> &'static str {
        match self {
            Wire::Line { .. } => "line",
            Wire::Nats(_) => "nats",
            Wire::Leaf(_) => "leaf",
        }
    }
}

/// A pattern and, for a queue group, the group's name.
pub type InterestKey = (Box<[u8]>, Option<Box<[u8]>>);

/// A leaf-node link's state.
pub struct LeafConn {
    /// Which remote it is: its status and counters.
    pub status: Arc<crate::leaf::RemoteStatus>,
    /// Whether the hub takes `HMSG` (its `INFO` said `headers`); without,
    /// headers are dropped on the way to it.
    pub headers: bool,
    /// The hub's interest: each pattern (and group) with the number it is
    /// filed under in the router: 0 for every plain pattern (one delivery
    /// per message), one number per queue group.
    pub subs: FxHashMap<InterestKey, u32>,
    /// The queue group name of each number but 0.
    pub groups: FxHashMap<u32, Box<[u8]>>,
    /// The last number given to a group.
    pub last_group: u32,
    /// `PING`s sent and not answered; past [`super::core::MAX_PINGS_OUT`]
    /// the link is stale.
    pub pings_out: u8,
    /// The hub reported a loop (or sent this relay's own loop-detection
    /// subject back): the next attempt waits longer.
    pub looped: bool,
    /// The last `-ERR` text the hub sent, logged once.
    pub last_error: Option<String>,
}

/// A NATS connection's state.
pub struct NatsConn {
    /// What its `CONNECT` asked for (echo, headers, verbose, …).
    pub options: ConnectOptions,
    pub subs: NatsSubs,
    /// Server `PING`s not answered yet; two make it stale.
    pub pings_out: u8,
}

/// One NATS subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSub {
    /// The client's name for it, sent back in each `MSG`.
    pub sid: Box<[u8]>,
    pub subject: Box<[u8]>,
    pub queue: Option<Box<[u8]>>,
    /// Deliveries made to it so far.
    pub delivered: u64,
    /// It ends by itself once `delivered` reaches this (`UNSUB <sid>
    /// <max>`).
    pub max: Option<u64>,
}

/// A NATS connection's subscriptions, by number (the `sub` of a
/// [`crate::router::SubRef`], from 1) and by sid.
#[derive(Debug, Default)]
pub struct NatsSubs {
    /// Subscription `n` is `slots[n - 1]`; `None` for a free number.
    slots: Vec<Option<NatsSub>>,
    /// Free numbers.
    free: Vec<u32>,
    by_sid: FxHashMap<Box<[u8]>, u32>,
}

impl NatsSubs {
    /// Adds `sub` and returns its number, or `None` if its sid is taken.
    pub fn insert(&mut self, sub: NatsSub) -> Option<u32> {
        if self.by_sid.contains_key(&sub.sid) {
            return None;
        }
        let n = match self.free.pop() {
            Some(n) => n,
            None => {
                self.slots.push(None);
                u32::try_from(self.slots.len()).expect("fewer than 2^32 subscriptions")
            }
        };
        self.by_sid.insert(sub.sid.clone(), n);
        self.slots[n as usize - 1] = Some(sub);
        Some(n)
    }

    /// The number of the subscription named `sid`.
    pub fn number(&self, sid: &[u8]) -> Option<u32> {
        self.by_sid.get(sid).copied()
    }

    pub fn get(&self, n: u32) -> Option<&NatsSub> {
        self.slots.get((n as usize).checked_sub(1)?)?.as_ref()
    }

    pub fn get_mut(&mut self, n: u32) -> Option<&mut NatsSub> {
        self.slots.get_mut((n as usize).checked_sub(1)?)?.as_mut()
    }

    /// Ends subscription `n`.
    pub fn remove(&mut self, n: u32) -> Option<NatsSub> {
        let sub = self.slots.get_mut((n as usize).checked_sub(1)?)?.take()?;
        self.by_sid.remove(&sub.sid);
        self.free.push(n);
        Some(sub)
    }

    /// Every subscription with its number.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &NatsSub)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i as u32 + 1, s.as_ref()?)))
    }

    pub fn len(&self) -> usize {
        self.by_sid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_sid.is_empty()
    }
}

/// The open connections of a shard; see the module docs.
#[derive(Default)]
pub struct ConnTable {
    /// `None` for a free slot.
    slots: Vec<Option<Conn>>,
    /// Free slots, reused last-freed first.
    free: Vec<ConnId>,
    /// Generation given to the last connection added.
    generation: u64,
    /// Connections with output queued since the last [`Self::take_touched`].
    touched: Vec<ConnId>,
}

impl ConnTable {
    /// Adds `conn` in a free slot, with a new generation.
    pub fn insert(&mut self, mut conn: Conn) -> ConnId {
        self.generation += 1;
        conn.generation = self.generation;
        conn.touched = false;
        match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(conn);
                id
            }
            None => {
                self.slots.push(Some(conn));
                ConnId::try_from(self.slots.len() - 1).expect("fewer than 2^32 connections")
            }
        }
    }

    /// Takes the connection out of its slot, which becomes free.
    pub fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let conn = self.slots.get_mut(id as usize)?.take()?;
        self.free.push(id);
        Some(conn)
    }

    #[inline]
    pub fn get(&self, id: ConnId) -> Option<&Conn> {
        self.slots.get(id as usize)?.as_ref()
    }

    #[inline]
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.slots.get_mut(id as usize)?.as_mut()
    }

    /// The NATS state of `id`, if it is a NATS connection.
    #[inline]
    pub fn nats(&self, id: ConnId) -> Option<&NatsConn> {
        match &self.get(id)?.wire {
            Wire::Nats(n) => Some(n),
            Wire::Line { .. } | Wire::Leaf(_) => None,
        }
    }

    /// The link state of `id`, if it is a leaf-node link.
    #[inline]
    pub fn leaf_mut(&mut self, id: ConnId) -> Option<&mut LeafConn> {
        match &mut self.get_mut(id)?.wire {
            Wire::Leaf(l) => Some(l),
            _ => None,
        }
    }

    /// [`Self::nats`], to change.
    #[inline]
    pub fn nats_mut(&mut self, id: ConnId) -> Option<&mut NatsConn> {
        match &mut self.get_mut(id)?.wire {
            Wire::Nats(n) => Some(n),
            Wire::Line { .. } | Wire::Leaf(_) => None,
        }
    }

    /// The connection in slot `id` if it is still the one of `generation`.
    pub fn get_current(&mut self, id: ConnId, generation: u64) -> Option<&mut Conn> {
        self.get_mut(id).filter(|c| c.generation == generation)
    }

    /// Every open connection with its id.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &Conn)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i as ConnId, c.as_ref()?)))
    }

    /// Every open connection.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Conn> {
        self.slots.iter_mut().flatten()
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts `id` on the touched list (once) for the next flush.
    #[inline]
    pub fn touch(&mut self, id: ConnId) {
        if let Some(conn) = self.slots.get_mut(id as usize).and_then(Option::as_mut) {
            if !conn.touched {
                conn.touched = true;
                self.touched.push(id);
            }
        }
    }

    /// The connections touched since the last call, in the order they were
    /// first touched; each is off the list again. Hand the vector back with
    /// [`Self::recycle_touched`] to keep its allocation.
    pub fn take_touched(&mut self) -> Vec<ConnId> {
        let list = std::mem::take(&mut self.touched);
        for &id in &list {
            if let Some(conn) = self.get_mut(id) {
                conn.touched = false;
            }
        }
        list
    }

    /// Returns a list from [`Self::take_touched`] for reuse.
    pub fn recycle_touched(&mut self, mut list: Vec<ConnId>) {
        if self.touched.is_empty() {
            list.clear();
            self.touched = list;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn conn() -> Conn {
        let out = Outbound::new(1024, Arc::default());
        Conn::new(
            SocketAddr::from(([127, 0, 0, 1], 1)),
            7,
            Wire::line(),
            out,
            Instant::now(),
        )
    }

    fn sub(sid: &str) -> NatsSub {
        NatsSub {
            sid: sid.as_bytes().into(),
            subject: b"s".as_slice().into(),
            queue: None,
            delivered: 0,
            max: None,
        }
    }

    #[test]
    fn nats_subscriptions_are_numbered_from_1_and_found_by_sid() {
        let mut subs = NatsSubs::default();
        assert_eq!(subs.insert(sub("a")), Some(1));
        assert_eq!(subs.insert(sub("b")), Some(2));
        assert_eq!(subs.insert(sub("a")), None, "a sid is used once");
        assert_eq!(subs.number(b"b"), Some(2));
        assert_eq!(subs.get(0), None, "0 is the whole connection, never a sub");
        assert_eq!(subs.remove(1).map(|s| s.sid), Some(b"a".as_slice().into()));
        assert_eq!(subs.number(b"a"), None);
        assert_eq!(subs.len(), 1);
        assert_eq!(subs.insert(sub("c")), Some(1), "numbers are reused");
        let listed: Vec<_> = subs.iter().map(|(n, s)| (n, s.sid.clone())).collect();
        assert_eq!(
            listed,
            vec![(1, b"c".as_slice().into()), (2, b"b".as_slice().into())]
        );
    }

    #[test]
    fn slots_are_reused_with_a_new_generation() {
        let mut t = ConnTable::default();
        let a = t.insert(conn());
        let b = t.insert(conn());
        assert_eq!((a, b), (0, 1));
        assert_eq!(t.len(), 2);
        let gen_a = t.get(a).unwrap().generation;
        assert!(t.remove(a).is_some());
        assert!(t.remove(a).is_none(), "removed once");
        assert_eq!(t.len(), 1);
        let c = t.insert(conn());
        assert_eq!(c, a, "the free slot is reused");
        assert!(t.get_current(c, gen_a).is_none(), "not the old connection");
        let gen_c = t.get(c).unwrap().generation;
        assert!(t.get_current(c, gen_c).is_some());
        assert_eq!(t.iter().map(|(id, _)| id).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn touched_connections_are_listed_once_in_order() {
        let mut t = ConnTable::default();
        let a = t.insert(conn());
        let b = t.insert(conn());
        t.touch(b);
        t.touch(a);
        t.touch(b);
        t.touch(99);
        let list = t.take_touched();
        assert_eq!(list, vec![b, a]);
        t.recycle_touched(list);
        assert!(t.take_touched().is_empty());
        t.touch(a);
        assert_eq!(t.take_touched(), vec![a], "listed again after a flush");
        // A connection removed while touched is skipped by the caller's
        // lookup, and a new one in its slot starts untouched.
        t.touch(b);
        t.remove(b);
        let c = t.insert(conn());
        t.touch(c);
        assert_eq!(t.take_touched(), vec![b, c]);
    }
}
