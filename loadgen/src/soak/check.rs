//! The verdict on one well-behaved stream as one subscriber saw it: every
//! message the publisher got accepted, once each, in order.
//!
//! # What "lost" means
//!
//! A session of a stream goes: the subscribers subscribe and send `PING`;
//! once each has its `PONG` (the spec's barrier: the subscription is then
//! in force on every shard) the publisher starts at sequence 0; at the end
//! the publisher sends `PING`, and its `PONG` says the relay has read, and
//! so accepted, every `PUB` before it: sequence numbers `0..sent`. Each of
//! those must then reach each subscriber exactly once and in order.
//! A sequence number that never arrives is **lost**; one that arrives a
//! second time is **duplicated**; one that arrives after a later one is
//! **reordered**. Messages lost before the first one that arrived are also
//! reported apart ([`Verdict::head_missing`]): that is the barrier failing.
//!
//! The counting is [`crate::integrity::SeqTracker`]'s, the load
//! generator's; this adds what a soak report needs: the first anomaly in
//! words, and when a subscriber may stop waiting.

use std::fmt;

use crate::integrity::{Integrity, SeqTracker};

/// The first thing that went wrong in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// `got` arrived when `expected` was due: `expected..got` are missing
    /// (lost, unless they turn up late, then reordered). A late arrival
    /// needs a gap before it, so it is never the first anomaly.
    Gap { expected: u64, got: u64 },
    /// `seq` arrived again.
    Repeat { seq: u64 },
    /// The stream ended with `from..sent` never arrived.
    Tail { from: u64, sent: u64 },
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Anomaly::Gap { expected, got } if got == expected + 1 => {
                write!(f, "sequence {expected} missing (next came {got})")
            }
            Anomaly::Gap { expected, got } => {
                write!(
                    f,
                    "sequences {expected}..={} missing (next came {got})",
                    got - 1
                )
            }
            Anomaly::Repeat { seq } => write!(f, "sequence {seq} arrived twice"),
            Anomaly::Tail { from, sent } => write!(
                f,
                "sequences {from}..={} (the last {}) never arrived",
                sent - 1,
                sent - from
            ),
        }
    }
}

/// One subscriber's check of one publisher's sequence.
#[derive(Debug, Default, Clone)]
pub struct StreamCheck {
    tracker: SeqTracker,
    /// Every arrival, repeats included.
    received: u64,
    /// The smallest sequence number that arrived.
    lowest: Option<u64>,
    /// The next sequence number due in order.
    next: u64,
    anomaly: Option<Anomaly>,
    /// Arrivals that were not `next`: each is a gap, a repeat or a late
    /// arrival, so non-zero means the stream has failed.
    irregular: u64,
}

/// The verdict on a finished stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Lost, duplicated and reordered counts (`corrupt` stays 0: damaged
    /// payloads never reach the check).
    pub integrity: Integrity,
    /// Arrivals, repeats included.
    pub received: u64,
    /// Messages lost before the first one that arrived (all of them if
    /// none did).
    pub head_missing: u64,
    /// The first anomaly, if any.
    pub first_anomaly: Option<Anomaly>,
}

impl Verdict {
    /// Whether the stream was delivered whole, once, in order.
    pub fn is_clean(&self) -> bool {
        self.integrity.is_clean()
    }
}

impl StreamCheck {
    /// Records the arrival of `seq`.
    pub fn observe(&mut self, seq: u64) {
        self.received += 1;
        self.lowest = Some(self.lowest.map_or(seq, |l| l.min(seq)));
        if seq == self.next {
            self.tracker.observe(seq);
            self.next += 1;
            return;
        }
        self.irregular += 1;
        self.tracker.observe(seq);
        // Below `next` with no gap seen yet can only be a repeat; after a
        // gap it may also be a late arrival, which the tracker tells apart.
        let anomaly = if seq > self.next {
            Anomaly::Gap {
                expected: self.next,
                got: seq,
            }
        } else {
            Anomaly::Repeat { seq }
        };
        self.next = self.next.max(seq + 1);
        self.anomaly.get_or_insert(anomaly);
    }

    /// Arrivals so far, repeats included.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Whether anything but the next message in order has arrived yet.
    pub fn is_irregular(&self) -> bool {
        self.irregular > 0
    }

    /// Whether every one of `0..sent` has arrived, so the subscriber need
    /// not wait any longer.
    pub fn has_all(&self, sent: u64) -> bool {
        self.next >= sent && self.tracker.finish(sent).lost == 0
    }

    /// The verdict once the publisher had `sent` messages accepted and
    /// nothing more is coming.
    pub fn finish(&self, sent: u64) -> Verdict {
        let integrity = self.tracker.finish(sent);
        let head_missing = self.lowest.map_or(sent, |l| l.min(sent));
        let first_anomaly = self.anomaly.or_else(|| {
            (self.next < sent).then_some(Anomaly::Tail {
                from: self.next,
                sent,
            })
        });
        Verdict {
            integrity,
            received: self.received,
            head_missing,
            first_anomaly,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64]) -> StreamCheck {
        let mut c = StreamCheck::default();
        for &s in seqs {
            c.observe(s);
        }
        c
    }

    #[test]
    fn whole_stream_in_order_is_clean() {
        let c = run(&(0..1000).collect::<Vec<_>>());
        assert!(!c.is_irregular());
        assert!(c.has_all(1000));
        let v = c.finish(1000);
        assert!(v.is_clean());
        assert_eq!(
            (v.received, v.head_missing, v.first_anomaly),
            (1000, 0, None)
        );
    }

    #[test]
    fn nothing_sent_nothing_received_is_clean() {
        let c = StreamCheck::default();
        assert!(c.has_all(0));
        assert!(c.finish(0).is_clean());
    }

    #[test]
    fn a_gap_is_loss() {
        let c = run(&[0, 1, 2, 5, 6]);
        assert!(c.is_irregular());
        assert!(!c.has_all(7));
        let v = c.finish(7);
        assert_eq!(v.integrity.lost, 2);
        assert_eq!((v.integrity.duplicated, v.integrity.reordered), (0, 0));
        assert_eq!(
            v.first_anomaly,
            Some(Anomaly::Gap {
                expected: 3,
                got: 5
            })
        );
        assert_eq!(v.head_missing, 0);
        assert_eq!(
            v.first_anomaly.unwrap().to_string(),
            "sequences 3..=4 missing (next came 5)"
        );
    }

    #[test]
    fn a_missing_tail_is_loss() {
        let c = run(&[0, 1, 2]);
        assert!(!c.is_irregular(), "nothing irregular seen yet");
        assert!(c.has_all(3) && !c.has_all(5));
        let v = c.finish(5);
        assert_eq!(v.integrity.lost, 2);
        assert_eq!(v.first_anomaly, Some(Anomaly::Tail { from: 3, sent: 5 }));
        assert_eq!(
            v.first_anomaly.unwrap().to_string(),
            "sequences 3..=4 (the last 2) never arrived"
        );
    }

    #[test]
    fn a_missing_head_is_a_broken_barrier() {
        let v = run(&[3, 4, 5]).finish(6);
        assert_eq!(v.integrity.lost, 3);
        assert_eq!(v.head_missing, 3);
        assert_eq!(
            v.first_anomaly,
            Some(Anomaly::Gap {
                expected: 0,
                got: 3
            })
        );
        // Nothing at all: everything is missing from the head.
        let v = StreamCheck::default().finish(4);
        assert_eq!((v.integrity.lost, v.head_missing), (4, 4));
        assert_eq!(v.first_anomaly, Some(Anomaly::Tail { from: 0, sent: 4 }));
    }

    #[test]
    fn a_repeat_is_a_duplicate() {
        let c = run(&[0, 1, 1, 2]);
        assert!(c.is_irregular());
        assert!(c.has_all(3), "everything arrived, once too often");
        let v = c.finish(3);
        assert_eq!(v.integrity.duplicated, 1);
        assert_eq!((v.integrity.lost, v.integrity.reordered), (0, 0));
        assert_eq!(v.first_anomaly, Some(Anomaly::Repeat { seq: 1 }));
        assert_eq!(v.received, 4);
    }

    #[test]
    fn a_late_arrival_is_reordered_not_lost() {
        let c = run(&[0, 2, 1, 3]);
        assert!(c.has_all(4));
        let v = c.finish(4);
        assert_eq!(v.integrity.reordered, 1);
        assert_eq!((v.integrity.lost, v.integrity.duplicated), (0, 0));
        // The gap is what was seen first.
        assert_eq!(
            v.first_anomaly,
            Some(Anomaly::Gap {
                expected: 1,
                got: 2
            })
        );
        let late = run(&[0, 1, 3, 2]);
        assert_eq!(
            late.finish(4).first_anomaly,
            Some(Anomaly::Gap {
                expected: 2,
                got: 3
            })
        );
    }

    #[test]
    fn late_and_repeated_arrivals_are_told_apart() {
        // The gap comes first; 1 then fills it (reordered), and the second
        // 1 is a repeat.
        let v = run(&[0, 2, 1, 1]).finish(3);
        assert_eq!(
            v.first_anomaly,
            Some(Anomaly::Gap {
                expected: 1,
                got: 2
            })
        );
        assert_eq!(
            (
                v.integrity.lost,
                v.integrity.reordered,
                v.integrity.duplicated
            ),
            (0, 1, 1)
        );
        // Without a gap, an old number is a repeat.
        let v = run(&[0, 1, 2, 1]).finish(3);
        assert_eq!(v.first_anomaly, Some(Anomaly::Repeat { seq: 1 }));
        assert_eq!((v.integrity.reordered, v.integrity.duplicated), (0, 1));
        assert_eq!(
            Anomaly::Repeat { seq: 1 }.to_string(),
            "sequence 1 arrived twice"
        );
    }
}
