//! Checking that every message arrived once and in order.
//!
//! Without a queue group every subscriber must see every publisher's
//! sequence `0, 1, 2, …` in order; a [`SeqTracker`] per (subscriber,
//! publisher) classifies each arrival as expected, a gap (provisionally
//! lost), a late arrival filling a gap (reordered) or a repeat
//! (duplicated). Whatever is still missing when the run ends is lost.
//!
//! With a queue group each message must reach exactly one member. Members
//! run on different worker threads, so the group shares one
//! [`GroupLedger`] per publisher: a lazily allocated atomic bitmap of the
//! sequence numbers seen, where setting a bit that is already set is a
//! duplicate and a bit never set is a loss. Each member still checks that
//! its own share of a publisher's messages arrives in increasing order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Most distinct gaps a tracker remembers. Past this the oldest gap is
/// written off as lost for good, so memory stays bounded when a relay drops
/// every other message; a late arrival into a forgotten gap then counts as
/// duplicated rather than reordered.
const MAX_GAPS: usize = 1 << 20;

/// Integrity counters, summed over subscribers and publishers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Integrity {
    /// Messages (per receiver) that never arrived.
    pub lost: u64,
    /// Arrivals of a message that had already arrived.
    pub duplicated: u64,
    /// Arrivals after a later message of the same publisher.
    pub reordered: u64,
    /// Payloads that were not ours or were damaged.
    pub corrupt: u64,
}

impl Integrity {
    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Integrity) {
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.corrupt += other.corrupt;
    }

    /// Whether anything went wrong.
    pub fn is_clean(&self) -> bool {
        *self == Integrity::default()
    }
}

/// One receiver's view of one publisher's sequence.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    /// The next sequence number expected in order.
    next: u64,
    /// Missing ranges `[start, end)` below `next`, ascending.
    gaps: Vec<(u64, u64)>,
    /// Messages in gaps that were forgotten (see [`MAX_GAPS`]).
    written_off: u64,
    duplicated: u64,
    reordered: u64,
}

impl SeqTracker {
    /// Records the arrival of `seq`.
    #[inline]
    pub fn observe(&mut self, seq: u64) {
        if seq == self.next {
            self.next += 1;
        } else if seq > self.next {
            if self.gaps.len() == MAX_GAPS {
                let (a, b) = self.gaps.remove(0);
                self.written_off += b - a;
            }
            self.gaps.push((self.next, seq));
            self.next = seq + 1;
        } else {
            self.late(seq);
        }
    }

    #[cold]
    fn late(&mut self, seq: u64) {
        // The last gap whose start is <= seq is the only one that can hold it.
        let i = self.gaps.partition_point(|&(a, _)| a <= seq);
        if i > 0 {
            let (a, b) = self.gaps[i - 1];
            if seq < b {
                self.reordered += 1;
                match (seq == a, seq + 1 == b) {
                    (true, true) => {
                        self.gaps.remove(i - 1);
                    }
                    (true, false) => self.gaps[i - 1].0 = seq + 1,
                    (false, true) => self.gaps[i - 1].1 = seq,
                    (false, false) => {
                        self.gaps[i - 1].1 = seq;
                        self.gaps.insert(i, (seq + 1, b));
                    }
                }
                return;
            }
        }
        self.duplicated += 1;
    }

    /// The verdict once the publisher has sent `sent` messages (sequence
    /// numbers `0..sent`) and nothing more is coming.
    pub fn finish(&self, sent: u64) -> Integrity {
        let in_gaps: u64 = self.gaps.iter().map(|&(a, b)| b - a).sum();
        Integrity {
            lost: self.written_off + in_gaps + sent.saturating_sub(self.next),
            duplicated: self.duplicated,
            reordered: self.reordered,
            corrupt: 0,
        }
    }
}

/// Bits per bitmap chunk: 2²⁰ sequence numbers, 128 KiB.
const CHUNK_BITS: u64 = 1 << 20;
const CHUNK_WORDS: usize = (CHUNK_BITS / 64) as usize;
/// Chunks per publisher: 2³² sequence numbers in all.
const MAX_CHUNKS: usize = 1 << 12;

/// Which of one publisher's messages a queue group has received; shared by
/// all members, lock-free.
pub struct GroupLedger {
    chunks: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

impl Default for GroupLedger {
    fn default() -> Self {
        GroupLedger {
            chunks: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
        }
    }
}

impl std::fmt::Debug for GroupLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = self.chunks.iter().filter(|c| c.get().is_some()).count();
        write!(f, "GroupLedger({used} chunks)")
    }
}

impl GroupLedger {
    /// Marks `seq` as received; `false` if it already was (a duplicate) or
    /// lies beyond what the ledger can hold.
    #[inline]
    pub fn mark(&self, seq: u64) -> bool {
        let chunk = (seq / CHUNK_BITS) as usize;
        let Some(slot) = self.chunks.get(chunk) else {
            return false;
        };
        let words = slot.get_or_init(|| (0..CHUNK_WORDS).map(|_| AtomicU64::new(0)).collect());
        let bit = seq % CHUNK_BITS;
        let mask = 1u64 << (bit % 64);
        words[(bit / 64) as usize].fetch_or(mask, Ordering::Relaxed) & mask == 0
    }

    /// How many of `0..sent` were received. Call once every member is done.
    pub fn received_below(&self, sent: u64) -> u64 {
        let mut total = 0;
        for (c, slot) in self.chunks.iter().enumerate() {
            let base = c as u64 * CHUNK_BITS;
            if base >= sent {
                break;
            }
            let Some(words) = slot.get() else { continue };
            for (w, word) in words.iter().enumerate() {
                let lo = base + w as u64 * 64;
                if lo >= sent {
                    break;
                }
                let mut v = word.load(Ordering::Relaxed);
                if sent - lo < 64 {
                    v &= (1u64 << (sent - lo)) - 1;
                }
                total += v.count_ones() as u64;
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_is_clean() {
        let mut t = SeqTracker::default();
        for s in 0..100 {
            t.observe(s);
        }
        assert!(t.finish(100).is_clean());
        assert_eq!(t.finish(105).lost, 5, "tail never received");
    }

    #[test]
    fn gaps_late_arrivals_and_repeats() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 5, 6, 3, 3, 2, 6, 9, 4] {
            t.observe(s);
        }
        // Missing 7, 8 (gap) and 10 (tail); 3, 2 and 4 were late; the
        // second 3 and the second 6 were repeats.
        let v = t.finish(11);
        assert_eq!(
            v,
            Integrity {
                lost: 3,
                duplicated: 2,
                reordered: 3,
                corrupt: 0
            }
        );
    }

    #[test]
    fn gap_split_in_the_middle() {
        let mut t = SeqTracker::default();
        t.observe(10); // gap 0..10
        t.observe(5); // splits it: 0..5, 6..10
        t.observe(0);
        t.observe(9);
        t.observe(5); // now a repeat
        assert_eq!(t.gaps, vec![(1, 5), (6, 9)]);
        let v = t.finish(11);
        assert_eq!((v.lost, v.reordered, v.duplicated), (7, 3, 1));
    }

    #[test]
    fn ledger_counts_exactly_once() {
        let ledger = GroupLedger::default();
        assert!(ledger.mark(0));
        assert!(ledger.mark(CHUNK_BITS + 3), "second chunk allocated lazily");
        assert!(!ledger.mark(0), "duplicate");
        for s in 1..70 {
            assert!(ledger.mark(s));
        }
        assert_eq!(ledger.received_below(70), 70);
        assert_eq!(ledger.received_below(65), 65);
        assert_eq!(ledger.received_below(CHUNK_BITS + 4), 71);
        assert!(
            !ledger.mark(u64::MAX),
            "out of range is refused, not a panic"
        );
    }

    #[test]
    fn ledger_is_shared_between_threads() {
        let ledger = std::sync::Arc::new(GroupLedger::default());
        let handles: Vec<_> = (0..4u64)
            .map(|k| {
                let l = ledger.clone();
                std::thread::spawn(move || (0..10_000u64).filter(|s| s % 4 == k).all(|s| l.mark(s)))
            })
            .collect();
        for h in handles {
            assert!(h.join().unwrap());
        }
        assert_eq!(ledger.received_below(10_000), 10_000);
    }
}
