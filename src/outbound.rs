//! A connection's outbound queue: encoded frames waiting for the socket.
//!
//! Everything a connection is owed (deliveries, `PONG`, `-ERR`) is appended
//! to one contiguous buffer, so under load many frames leave in one write
//! (nats-server coalesces the same way). A payload is copied there too when
//! it is small: for the small messages a relay mostly carries, one `memcpy`
//! into a buffer that is written with one syscall is cheaper than a scatter
//! list of shared slices. A payload of [`SHARED_PAYLOAD_MIN`] bytes or more
//! is not copied: the queue keeps a reference to the publisher's read chunk
//! (a *splice* in the byte stream), so one large message to many receivers
//! is held in memory once. The socket then takes the stream in pieces
//! (glommio's TCP stream has no vectored write): the bytes before a splice,
//! the splice, the bytes after it.
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

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use crate::protocol::line::{self, ProtoError};
use crate::stats::ShardStats;

/// The receiver fell more than `--max-pending` bytes behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("slow consumer: {pending} bytes of output pending, more than {max_pending}")]
pub struct SlowConsumer {
    /// The unsent bytes the refused push would have made: the size that
    /// crossed the limit (what the log reports; the queue itself is cut
    /// back at once by the farewell).
    pub pending: usize,
    /// The limit that was passed.
    pub max_pending: usize,
}

/// Payloads this long or longer are queued as references to the read
/// chunk they arrived in, not copied per receiver: a 60 KB message to
/// 10,000 receivers is held once instead of 10,000 times. Below it the copy
/// (and one write for many frames) is cheaper than an extra write per
/// payload.
pub const SHARED_PAYLOAD_MIN: usize = 16 * 1024;

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
    /// Shared payloads, in stream order: each goes before the byte of
    /// `buf` at its `at` (see the module docs).
    splices: VecDeque<Splice>,
    /// Bytes of the front splice already written.
    splice_done: usize,
    /// Unsent bytes held in `splices`.
    spliced: usize,
    /// `--max-pending`.
    max_pending: usize,
    /// The shard's counters: `pending_bytes` follows this queue's unsent
    /// bytes.
    stats: Arc<ShardStats>,
}

/// A shared payload in the stream.
#[derive(Debug)]
struct Splice {
    /// Where in `buf` it goes: after `buf[..at]`.
    at: usize,
    bytes: Bytes,
}

impl Outbound {
    /// An empty queue refusing to hold more than `max_pending` unsent bytes,
    /// accounted in `stats.pending_bytes`.
    pub fn new(max_pending: usize, stats: Arc<ShardStats>) -> Self {
        Outbound {
            buf: Vec::new(),
            head: 0,
            splices: VecDeque::new(),
            splice_done: 0,
            spliced: 0,
            max_pending,
            stats,
        }
    }

    /// Bytes queued and not yet written.
    #[inline]
    pub fn pending(&self) -> usize {
        self.buf.len() - self.head + self.spliced
    }

    /// Whether nothing is waiting to be written.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head == self.buf.len() && self.splices.is_empty()
    }

    /// Whether `len` more bytes fit under `--max-pending`; if not, the
    /// refusal carries the size they would have made.
    #[inline]
    fn check_room(&self, len: usize) -> Result<(), SlowConsumer> {
        let pending = self.pending() + len;
        if pending > self.max_pending {
            return Err(SlowConsumer {
                pending,
                max_pending: self.max_pending,
            });
        }
        Ok(())
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
        self.check_room(len)?;
        let before = self.buf.len();
        encode(&mut self.buf);
        debug_assert_eq!(self.buf.len() - before, len);
        self.stats.pending_bytes.add(len as u64);
        Ok(())
    }

    /// Queues a frame whose payload is shared, not copied: `head_len`
    /// bytes written by `head`, then `payload`, then `tail`.
    pub fn push_shared(
        &mut self,
        head_len: usize,
        head: impl FnOnce(&mut Vec<u8>),
        payload: Bytes,
        tail: &[u8],
    ) -> Result<(), SlowConsumer> {
        let len = head_len + payload.len() + tail.len();
        self.check_room(len)?;
        head(&mut self.buf);
        self.spliced += payload.len();
        self.splices.push_back(Splice {
            at: self.buf.len(),
            bytes: payload,
        });
        self.buf.extend_from_slice(tail);
        self.stats.pending_bytes.add(len as u64);
        Ok(())
    }

    /// Queues `MSG <subject> <payload>` (see [`line::encode_msg`]).
    /// `shared`, if given, is `payload` as a slice of its read chunk, queued
    /// by reference instead of copied (the caller gives it for payloads of
    /// [`SHARED_PAYLOAD_MIN`] bytes or more).
    #[inline]
    pub fn push_msg(
        &mut self,
        subject: &[u8],
        payload: &[u8],
        shared: Option<Bytes>,
        terminator: &[u8],
    ) -> Result<(), SlowConsumer> {
        if let Some(shared) = shared {
            let head_len = line::msg_len(subject, b"", terminator) - terminator.len();
            return self.push_shared(
                head_len,
                |buf| {
                    buf.extend_from_slice(line::MSG_PREFIX);
                    buf.extend_from_slice(subject);
                    buf.push(b' ');
                },
                shared,
                terminator,
            );
        }
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
        // Queued frames never contain the terminator (a shared payload
        // neither), so the first one in `buf` at or after `head` ends the
        // frame in flight (or, if `head` sits on a boundary, the next one:
        // one whole frame more, still well-formed).
        let unsent = &self.buf[self.head..];
        let keep =
            memchr::memmem::find(unsent, terminator).map_or(unsent.len(), |i| i + terminator.len());
        self.buf.truncate(self.head + keep);
        // Shared payloads of the dropped frames go too (each is followed by
        // its frame's terminator in `buf`, so a kept one lies before `end`).
        let end = self.buf.len();
        while let Some(s) = self.splices.back() {
            if s.at < end {
                break;
            }
            let front = self.splices.len() == 1;
            self.spliced -= s.bytes.len() - if front { self.splice_done } else { 0 };
            if front {
                self.splice_done = 0;
            }
            self.splices.pop_back();
        }
        line::encode_err(&mut self.buf, ProtoError::SlowConsumer, terminator);
        self.account(before);
    }

    /// The bytes to write next: up to the next shared payload, or that
    /// payload (what is left of it).
    #[inline]
    pub fn unsent(&self) -> &[u8] {
        match self.splices.front() {
            None => &self.buf[self.head..],
            Some(s) if s.at == self.head => &s.bytes[self.splice_done..],
            Some(s) => &self.buf[self.head..s.at],
        }
    }

    /// Marks `n` bytes of [`Outbound::unsent`] as written.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.unsent().len());
        self.stats.pending_bytes.sub(n as u64);
        if let Some(s) = self.splices.front() {
            if s.at == self.head {
                self.splice_done += n;
                self.spliced -= n;
                if self.splice_done == s.bytes.len() {
                    self.splices.pop_front();
                    self.splice_done = 0;
                }
                return;
            }
        }
        self.head += n;
        if self.head == self.buf.len() && self.splices.is_empty() {
            self.head = 0;
            self.buf.clear();
            if self.buf.capacity() > RETAINED_CAPACITY {
                self.buf.shrink_to(RETAINED_CAPACITY);
            }
        } else if self.head > RETAINED_CAPACITY && self.head * 2 > self.buf.len() {
            // Most of the buffer is written: move the rest to the front so
            // a queue that never fully drains does not grow without bound.
            self.buf.drain(..self.head);
            for s in self.splices.iter_mut() {
                s.at -= self.head;
            }
            self.head = 0;
        }
    }

    /// Drops everything unsent (the peer is gone); returns how many bytes
    /// that was.
    pub fn clear(&mut self) -> usize {
        let n = self.pending();
        self.buf = Vec::new();
        self.head = 0;
        self.splices.clear();
        self.splice_done = 0;
        self.spliced = 0;
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
        q.push_msg(b"a", b"x", None, b"\n").unwrap();
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
        assert_eq!(q.push_msg(b"s", &payload, None, b"\n"), Ok(()));
        assert_eq!(q.push_msg(b"s", &payload, None, b"\n"), Ok(()));
        assert_eq!(
            q.push_msg(b"s", &payload, None, b"\n"),
            Err(SlowConsumer {
                pending: 135,
                max_pending: 100
            })
        );
        assert_eq!(q.pending(), 90);
        assert_eq!(stats.pending_bytes.get(), 90);
        // Writing some makes room again.
        q.consume(45);
        assert!(q.push_msg(b"s", &payload, None, b"\n").is_ok());
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
        q.push_msg(b"a", b"b", None, b"\n").unwrap();
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
            q.push_msg(b"s", &payload, None, b"\n").unwrap();
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
        q.push_msg(b"s", &payload, None, b"\n").unwrap();
        let n = q.pending();
        q.consume(n);
        assert!(q.buf.capacity() <= RETAINED_CAPACITY);
    }

    /// Writes everything out `step` bytes at a time, as a socket taking
    /// small pieces would; returns the stream.
    fn drain(q: &mut Outbound, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while !q.is_empty() {
            let piece = q.unsent();
            assert!(!piece.is_empty(), "a non-empty queue offers bytes");
            let n = piece.len().min(step);
            out.extend_from_slice(&piece[..n]);
            q.consume(n);
        }
        out
    }

    #[test]
    fn a_shared_payload_is_written_in_place_without_a_copy() {
        let big = Bytes::from(vec![b'p'; SHARED_PAYLOAD_MIN]);
        for step in [1, 7, 4096, usize::MAX] {
            let (mut q, stats) = queue(1 << 20);
            q.push_msg(b"a", b"x", None, b"\n").unwrap();
            q.push_msg(b"b", &big, Some(big.clone()), b"\n").unwrap();
            q.push_pong(b"\n").unwrap();
            q.push_msg(b"c", &big, Some(big.clone()), b"\n").unwrap();
            let mut want = b"MSG a x\nMSG b ".to_vec();
            want.extend_from_slice(&big);
            want.extend_from_slice(b"\nPONG\nMSG c ");
            want.extend_from_slice(&big);
            want.push(b'\n');
            assert_eq!(q.pending(), want.len());
            assert_eq!(stats.pending_bytes.get(), want.len() as u64);
            if step == usize::MAX {
                // The payload is offered straight from the shared chunk.
                q.consume(b"MSG a x\nMSG b ".len());
                assert_eq!(q.unsent().as_ptr(), big.as_ptr());
                let mut rest = drain(&mut q, step);
                let mut all = b"MSG a x\nMSG b ".to_vec();
                all.append(&mut rest);
                assert_eq!(all, want);
            } else {
                assert_eq!(drain(&mut q, step), want, "step {step}");
            }
            assert_eq!(stats.pending_bytes.get(), 0);
            assert!(q.splices.is_empty() && q.buf.is_empty());
        }
    }

    #[test]
    fn shared_payloads_count_against_max_pending_and_survive_compaction() {
        let big = Bytes::from(vec![b'q'; SHARED_PAYLOAD_MIN]);
        let (mut q, _) = queue(4 * SHARED_PAYLOAD_MIN);
        let mut refused = None;
        for _ in 0..8 {
            let before = q.pending();
            if let Err(e) = q.push_msg(b"s", &big, Some(big.clone()), b"\n") {
                // The refusal reports the size the frame would have made.
                assert_eq!(e.pending, before + 6 + SHARED_PAYLOAD_MIN + 1);
                refused = Some(e);
            }
        }
        let refused = refused.expect("the limit counts shared bytes");
        assert!(refused.pending > refused.max_pending, "{refused}");
        assert!(q.pending() <= 4 * SHARED_PAYLOAD_MIN);
        // A queue that never fully drains, with copied and shared frames.
        let (mut q, stats2) = queue(1 << 30);
        let small = vec![b'y'; 1000];
        let mut written = Vec::new();
        let mut want = Vec::new();
        for i in 0..300 {
            q.push_msg(b"s", &small, None, b"\n").unwrap();
            want.extend_from_slice(b"MSG s ");
            want.extend_from_slice(&small);
            want.push(b'\n');
            if i % 10 == 0 {
                q.push_msg(b"t", &big, Some(big.clone()), b"\n").unwrap();
                want.extend_from_slice(b"MSG t ");
                want.extend_from_slice(&big);
                want.push(b'\n');
            }
            // Write all but a little each time.
            let mut budget = q.pending().saturating_sub(10);
            while budget > 0 {
                let n = q.unsent().len().min(budget);
                written.extend_from_slice(&q.unsent()[..n]);
                q.consume(n);
                budget -= n;
            }
        }
        written.extend(drain(&mut q, 4096));
        assert_eq!(written, want, "compaction keeps the stream in order");
        assert_eq!(stats2.pending_bytes.get(), 0);
    }

    #[test]
    fn a_slow_consumers_farewell_keeps_a_shared_frame_in_flight_whole() {
        let big = Bytes::from(vec![b'z'; SHARED_PAYLOAD_MIN]);
        let (mut q, stats) = queue(1 << 20);
        q.push_msg(b"a", &big, Some(big.clone()), b"\n").unwrap();
        q.push_msg(b"b", &big, Some(big.clone()), b"\n").unwrap();
        q.push_msg(b"c", b"x", None, b"\n").unwrap();
        // Mid-way through the first payload.
        q.consume(b"MSG a ".len());
        q.consume(100);
        q.farewell(b"\n");
        assert_eq!(stats.pending_bytes.get(), q.pending() as u64);
        let mut want = vec![b'z'; SHARED_PAYLOAD_MIN - 100];
        want.extend_from_slice(b"\n-ERR slow consumer\n");
        assert_eq!(drain(&mut q, 333), want);
        assert_eq!(stats.pending_bytes.get(), 0);
        // At a frame boundary: one whole frame more, its payload included.
        let (mut q, stats) = queue(1 << 20);
        q.push_msg(b"a", &big, Some(big.clone()), b"\n").unwrap();
        q.push_msg(b"b", &big, Some(big.clone()), b"\n").unwrap();
        q.farewell(b"\n");
        let mut want = b"MSG a ".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"\n-ERR slow consumer\n");
        assert_eq!(drain(&mut q, 4096), want);
        assert_eq!(stats.pending_bytes.get(), 0);
    }
}
