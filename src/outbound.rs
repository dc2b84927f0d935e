//! A connection's outbound queue: encoded frames waiting for the socket.
//!
//! Everything a connection is owed (deliveries, `PONG`, `-ERR`) is appended
//! to one contiguous buffer, so under load many frames leave in one write
//! (nats-server coalesces the same way). The payload bytes are copied here
//! once per receiver: for the small messages a relay mostly carries, one
//! `memcpy` into a buffer that is written with one syscall is cheaper than
//! a scatter list of shared slices.
//!
//! The queue is bounded by `--max-pending`: a push that would take the unsent
//! bytes past it fails with [`SlowConsumer`], and the shard closes that
//! connection. Memory per connection therefore never exceeds the limit (plus
//! one frame), and no other connection waits for a reader that stopped
//! reading.
//!
//! The queue keeps its shard's `pending_bytes` gauge itself: every push,
//! write, drop of unsent bytes (and the queue's own drop) adjusts it, so no
//! caller can forget to.

use std::sync::Arc;

use crate::protocol::line::{self, ProtoError};
use crate::stats::ShardStats;

/// The receiver fell more than `--max-pending` bytes behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("slow consumer: more than {max_pending} bytes of output pending")]
pub struct SlowConsumer {
    /// The limit that was passed.
    pub max_pending: usize,
}

/// Capacity kept after the queue drains; a burst that grew the buffer past
/// this gives the memory back once it has been written.
const RETAINED_CAPACITY: usize = 64 * 1024;

/// Unsent output of one connection.
#[derive(Debug)]
pub struct Outbound {
    /// Encoded frames; `buf[head..]` is not written yet.
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already written to the socket.
    head: usize,
    /// `--max-pending`.
    max_pending: usize,
    /// The shard's counters: `pending_bytes` follows this queue's unsent
    /// bytes.
    stats: Arc<ShardStats>,
}

impl Outbound {
    /// An empty queue refusing to hold more than `max_pending` unsent bytes,
    /// accounted in `stats.pending_bytes`.
    pub fn new(max_pending: usize, stats: Arc<ShardStats>) -> Self {
        Outbound {
            buf: Vec::new(),
            head: 0,
            max_pending,
            stats,
        }
    }

    /// Bytes queued and not yet written.
    #[inline]
    pub fn pending(&self) -> usize {
        self.buf.len() - self.head
    }

    /// Whether nothing is waiting to be written.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head == self.buf.len()
    }

    /// Queues `len` bytes written by `encode` (which must append exactly
    /// that many), or refuses them if they would take the queue past
    /// `--max-pending`.
    #[inline]
    pub fn push(
        &mut self,
        len: usize,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), SlowConsumer> {
        if self.pending() + len > self.max_pending {
            return Err(SlowConsumer {
                max_pending: self.max_pending,
            });
        }
        let before = self.buf.len();
        encode(&mut self.buf);
        debug_assert_eq!(self.buf.len() - before, len);
        self.stats.pending_bytes.add(len as u64);
        Ok(())
    }

    /// Queues `MSG <subject> <payload>` (see [`line::encode_msg`]).
    #[inline]
    pub fn push_msg(
        &mut self,
        subject: &[u8],
        payload: &[u8],
        terminator: &[u8],
    ) -> Result<(), SlowConsumer> {
        self.push(line::msg_len(subject, payload, terminator), |buf| {
            line::encode_msg(buf, subject, payload, terminator)
        })
    }

    /// Queues `PONG`.
    pub fn push_pong(&mut self, terminator: &[u8]) -> Result<(), SlowConsumer> {
        self.push(line::pong_len(terminator), |buf| {
            line::encode_pong(buf, terminator)
        })
    }

    /// Queues `-ERR <reason>`.
    pub fn push_err(&mut self, err: ProtoError, terminator: &[u8]) -> Result<(), SlowConsumer> {
        self.push(line::err_len(err, terminator), |buf| {
            line::encode_err(buf, err, terminator)
        })
    }

    /// The last words to a connection closed as a slow consumer: drops every
    /// queued frame the socket has not started on (they can never all be
    /// taken), keeps the rest of the frame in flight so the stream stays
    /// well-formed, and queues `-ERR slow consumer` behind it (past
    /// `--max-pending` if need be: it is the last frame).
    pub fn farewell(&mut self, terminator: &[u8]) {
        let before = self.pending();
        // Queued frames never contain the terminator, so the first one at
        // or after `head` ends the frame in flight (or, if `head` sits on a
        // boundary, the next one: one whole frame more, still well-formed).
        let unsent = &self.buf[self.head..];
        let keep =
            memchr::memmem::find(unsent, terminator).map_or(unsent.len(), |i| i + terminator.len());
        self.buf.truncate(self.head + keep);
        line::encode_err(&mut self.buf, ProtoError::SlowConsumer, terminator);
        self.account(before);
    }

    /// The bytes to write next.
    #[inline]
    pub fn unsent(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    /// Marks `n` bytes of [`Outbound::unsent`] as written.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.pending());
        self.head += n;
        self.stats.pending_bytes.sub(n as u64);
        if self.head == self.buf.len() {
            self.head = 0;
            self.buf.clear();
            if self.buf.capacity() > RETAINED_CAPACITY {
                self.buf.shrink_to(RETAINED_CAPACITY);
            }
        } else if self.head > RETAINED_CAPACITY && self.head * 2 > self.buf.len() {
            // Most of the buffer is written: move the rest to the front so
            // a queue that never fully drains does not grow without bound.
            self.buf.drain(..self.head);
            self.head = 0;
        }
    }

    /// Drops everything unsent (the peer is gone); returns how many bytes
    /// that was.
    pub fn clear(&mut self) -> usize {
        let n = self.pending();
        self.buf = Vec::new();
        self.head = 0;
        self.account(n);
        n
    }

    /// Moves the gauge from `before` unsent bytes to what is unsent now.
    fn account(&self, before: usize) {
        let now = self.pending();
        if now >= before {
            self.stats.pending_bytes.add((now - before) as u64);
        } else {
            self.stats.pending_bytes.sub((before - now) as u64);
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        self.stats.pending_bytes.sub(self.pending() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(max_pending: usize) -> (Outbound, Arc<ShardStats>) {
        let stats = Arc::new(ShardStats::default());
        (Outbound::new(max_pending, stats.clone()), stats)
    }

    #[test]
    fn queues_and_drains_in_order() {
        let (mut q, stats) = queue(1024);
        q.push_msg(b"a", b"x", b"\n").unwrap();
        q.push_pong(b"\n").unwrap();
        q.push_err(ProtoError::UnknownVerb, b"\n").unwrap();
        assert_eq!(q.unsent(), b"MSG a x\nPONG\n-ERR unknown verb\n");
        assert_eq!(stats.pending_bytes.get(), q.pending() as u64);
        q.consume(4);
        assert_eq!(q.unsent(), b"a x\nPONG\n-ERR unknown verb\n");
        assert_eq!(stats.pending_bytes.get(), q.pending() as u64);
        q.consume(q.pending());
        assert!(q.is_empty());
        assert_eq!(stats.pending_bytes.get(), 0);
    }

    #[test]
    fn refuses_past_max_pending_and_stays_bounded() {
        let (mut q, stats) = queue(100);
        let payload = [b'x'; 38];
        // "MSG " + "s" + " " + 38 + "\n" = 45 bytes: two fit, the third
        // would not.
        assert_eq!(q.push_msg(b"s", &payload, b"\n"), Ok(()));
        assert_eq!(q.push_msg(b"s", &payload, b"\n"), Ok(()));
        assert_eq!(
            q.push_msg(b"s", &payload, b"\n"),
            Err(SlowConsumer { max_pending: 100 })
        );
        assert_eq!(q.pending(), 90);
        assert_eq!(stats.pending_bytes.get(), 90);
        // Writing some makes room again.
        q.consume(45);
        assert!(q.push_msg(b"s", &payload, b"\n").is_ok());
        // The farewell keeps the frame in flight and drops the rest.
        q.consume(3);
        q.farewell(b"\n");
        assert_eq!(stats.pending_bytes.get(), q.pending() as u64);
        // "MSG" went out; the rest of that frame stays, the others go.
        let mut want = b" s ".to_vec();
        want.extend_from_slice(&[b'x'; 38]);
        want.extend_from_slice(b"\n-ERR slow consumer\n");
        assert_eq!(q.unsent(), &want[..]);
        // Dropping the queue takes its bytes off the gauge.
        q.push_pong(b"\n").ok();
        drop(q);
        assert_eq!(stats.pending_bytes.get(), 0);
    }

    #[test]
    fn clear_drops_everything_and_the_gauge_follows() {
        let (mut q, stats) = queue(1024);
        q.push_msg(b"a", b"b", b"\n").unwrap();
        q.push_pong(b"\n").unwrap();
        assert_eq!(q.clear(), b"MSG a b\nPONG\n".len());
        assert!(q.is_empty());
        assert_eq!(stats.pending_bytes.get(), 0);
    }

    #[test]
    fn a_queue_that_never_drains_is_compacted() {
        let (mut q, stats) = queue(1 << 30);
        let payload = vec![b'y'; 1000];
        for _ in 0..1000 {
            q.push_msg(b"s", &payload, b"\n").unwrap();
            // Write all but a little each time.
            let n = q.pending() - 10;
            q.consume(n);
        }
        assert!(q.buf.len() < 4 * RETAINED_CAPACITY);
        assert_eq!(q.pending(), 10);
        assert_eq!(stats.pending_bytes.get(), 10);
    }

    #[test]
    fn gives_memory_back_after_a_burst() {
        let (mut q, _) = queue(1 << 30);
        let payload = vec![b'z'; 1 << 20];
        q.push_msg(b"s", &payload, b"\n").unwrap();
        let n = q.pending();
        q.consume(n);
        assert!(q.buf.capacity() <= RETAINED_CAPACITY);
    }
}
