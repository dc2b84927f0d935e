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

use crate::protocol::{self, ProtoError};

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
}

impl Outbound {
    /// An empty queue refusing to hold more than `max_pending` unsent bytes.
    pub fn new(max_pending: usize) -> Self {
        Outbound {
            buf: Vec::new(),
            head: 0,
            max_pending,
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

    /// Queues `MSG <body>` (see [`protocol::encode_msg`]). Returns the
    /// bytes queued.
    #[inline]
    pub fn push_msg(
        &mut self,
        body: &[u8],
        subject_len: usize,
        terminator: &[u8],
    ) -> Result<usize, SlowConsumer> {
        let n = protocol::msg_len(body, subject_len, terminator);
        self.check(n)?;
        protocol::encode_msg(&mut self.buf, body, subject_len, terminator);
        Ok(n)
    }

    /// Queues `PONG`.
    pub fn push_pong(&mut self, terminator: &[u8]) -> Result<usize, SlowConsumer> {
        let n = 4 + terminator.len();
        self.check(n)?;
        protocol::encode_pong(&mut self.buf, terminator);
        Ok(n)
    }

    /// Queues `-ERR <reason>`.
    pub fn push_err(&mut self, err: ProtoError, terminator: &[u8]) -> Result<usize, SlowConsumer> {
        let n = 5 + err.reason().len() + terminator.len();
        self.check(n)?;
        protocol::encode_err(&mut self.buf, err, terminator);
        Ok(n)
    }

    /// The last words to a connection closed as a slow consumer: drops every
    /// queued frame the socket has not started on (they can never all be
    /// taken), keeps the rest of the frame in flight so the stream stays
    /// well-formed, and queues `-ERR slow consumer` behind it. Returns the
    /// change in pending bytes.
    pub fn farewell(&mut self, terminator: &[u8]) -> isize {
        let before = self.pending() as isize;
        // Queued frames never contain the terminator, so the first one at
        // or after `head` ends the frame in flight (or, if `head` sits on a
        // boundary, the next one: one whole frame more, still well-formed).
        let unsent = &self.buf[self.head..];
        let keep =
            memchr::memmem::find(unsent, terminator).map_or(unsent.len(), |i| i + terminator.len());
        self.buf.truncate(self.head + keep);
        protocol::encode_err(&mut self.buf, ProtoError::SlowConsumer, terminator);
        self.pending() as isize - before
    }

    #[inline]
    fn check(&self, n: usize) -> Result<(), SlowConsumer> {
        if self.pending() + n > self.max_pending {
            return Err(SlowConsumer {
                max_pending: self.max_pending,
            });
        }
        Ok(())
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

    /// Drops everything unsent; returns how many bytes that was.
    pub fn clear(&mut self) -> usize {
        let n = self.pending();
        self.buf = Vec::new();
        self.head = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_and_drains_in_order() {
        let mut q = Outbound::new(1024);
        q.push_msg(b"a x", 1, b"\n").unwrap();
        q.push_pong(b"\n").unwrap();
        q.push_err(ProtoError::UnknownVerb, b"\n").unwrap();
        assert_eq!(q.unsent(), b"MSG a x\nPONG\n-ERR unknown verb\n");
        q.consume(4);
        assert_eq!(q.unsent(), b"a x\nPONG\n-ERR unknown verb\n");
        q.consume(q.pending());
        assert!(q.is_empty());
    }

    #[test]
    fn refuses_past_max_pending_and_stays_bounded() {
        let mut q = Outbound::new(100);
        let body = [b'x'; 40];
        // "MSG " + 40 + "\n" = 45 bytes: two fit, the third would not.
        assert_eq!(q.push_msg(&body, 1, b"\n"), Ok(45));
        assert_eq!(q.push_msg(&body, 1, b"\n"), Ok(45));
        assert_eq!(
            q.push_msg(&body, 1, b"\n"),
            Err(SlowConsumer { max_pending: 100 })
        );
        assert_eq!(q.pending(), 90);
        // Writing some makes room again.
        q.consume(45);
        assert!(q.push_msg(&body, 1, b"\n").is_ok());
        // The farewell keeps the frame in flight and drops the rest.
        q.consume(3);
        let delta = q.farewell(b"\n");
        assert_eq!(q.pending() as isize, 90 - 3 + delta);
        // "MSG" went out; the rest of that frame stays, the others go.
        let mut want = b" ".to_vec();
        want.extend_from_slice(&[b'x'; 40]);
        want.extend_from_slice(b"\n-ERR slow consumer\n");
        assert_eq!(q.unsent(), &want[..]);
    }

    #[test]
    fn a_queue_that_never_drains_is_compacted() {
        let mut q = Outbound::new(1 << 30);
        let body = vec![b'y'; 1000];
        for _ in 0..1000 {
            q.push_msg(&body, 1, b"\n").unwrap();
            // Write all but a little each time.
            let n = q.pending() - 10;
            q.consume(n);
        }
        assert!(q.buf.len() < 4 * RETAINED_CAPACITY);
        assert_eq!(q.pending(), 10);
    }

    #[test]
    fn gives_memory_back_after_a_burst() {
        let mut q = Outbound::new(1 << 30);
        let body = vec![b'z'; 1 << 20];
        q.push_msg(&body, 1, b"\n").unwrap();
        let n = q.pending();
        q.consume(n);
        assert!(q.buf.capacity() <= RETAINED_CAPACITY);
    }
}
