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
use std::task::Waker;
use std::time::Instant;

use rustc_hash::FxHashSet;

use crate::outbound::Outbound;
use crate::router::ConnId;

/// One client connection's state on its shard.
pub struct Conn {
    /// The client's address, for logs and `/connections`.
    pub peer: SocketAddr,
    /// Tells this connection apart from earlier ones in the same slot.
    pub generation: u64,
    /// Output waiting for the socket; keeps the shard's pending-bytes gauge.
    pub out: Outbound,
    /// The connection task's waker: woken for new output to finish, for a
    /// completed barrier, for closing and for shutdown.
    pub waker: Option<Waker>,
    /// Subscription keys (`pattern` or `pattern group`): the set the line
    /// protocol defines, so a repeated `SUB` is a no-op.
    pub subs: FxHashSet<Box<[u8]>>,
    /// On the table's touched list.
    touched: bool,
    /// `SUB`/`UNSUB` since the last barrier: the next `PING` needs one.
    pub dirty_subs: bool,
    /// A `PING` waits for other shards to acknowledge a barrier.
    pub waiting_barrier: bool,
    /// Closing without further service (slow consumer, write error,
    /// shutdown deadline).
    pub dead: bool,
    /// When it was accepted.
    pub since: Instant,
    /// Publishes received from it.
    pub msgs_in: u64,
    /// Deliveries queued to it.
    pub msgs_out: u64,
}

impl Conn {
    /// A connection from `peer`, with nothing queued yet.
    pub fn new(peer: SocketAddr, out: Outbound, since: Instant) -> Conn {
        Conn {
            peer,
            generation: 0,
            out,
            waker: None,
            subs: FxHashSet::default(),
            touched: false,
            dirty_subs: false,
            waiting_barrier: false,
            dead: false,
            since,
            msgs_in: 0,
            msgs_out: 0,
        }
    }

    /// Wakes the connection's task, if it has polled yet.
    pub fn wake(&self) {
        if let Some(w) = &self.waker {
            w.wake_by_ref();
        }
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
        Conn::new(SocketAddr::from(([127, 0, 0, 1], 1)), out, Instant::now())
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
