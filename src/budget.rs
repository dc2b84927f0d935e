//! The relay-wide memory budget (`--max-memory`): what every shard's
//! connections hold in input buffers and unsent output, summed, against one
//! limit.
//!
//! Each shard keeps its own two gauges ([`ShardStats::input_bytes`],
//! [`ShardStats::pending_bytes`]) with plain stores, as it does every
//! counter; the budget reads all of them only when a connection is about to
//! hold a lot more — a partial frame past the read size, a queue past
//! [`CHECK_ABOVE`] — so the common path pays one comparison. Over budget,
//! the connection asking for more is refused (its frame) or closed (as a
//! slow consumer) instead of growing: the heaviest holders are the ones
//! that reach those checks.

use std::sync::Arc;

use crate::stats::ShardStats;

/// A receiver's unsent output past which each delivery to it checks the
/// budget: queues below this are what a healthy receiver holds between two
/// writes, and checking them would put a sum over every shard on the hot
/// path.
pub const CHECK_ABOVE: usize = 1 << 20;

/// The relay's memory limit and the gauges it is checked against.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    shards: Vec<Arc<ShardStats>>,
}

impl MemoryBudget {
    /// A budget of `limit` bytes over the gauges of `shards`.
    pub fn new(limit: usize, shards: Vec<Arc<ShardStats>>) -> Self {
        MemoryBudget { limit, shards }
    }

    /// No limit (tests and embedding).
    pub fn unlimited() -> Self {
        MemoryBudget::new(usize::MAX, Vec::new())
    }

    /// Bytes held now in input buffers and unsent output, on every shard.
    pub fn used(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.input_bytes.get().saturating_add(s.pending_bytes.get()))
            .fold(0u64, u64::saturating_add)
            .try_into()
            .unwrap_or(usize::MAX)
    }

    /// Whether the relay holds more than its limit.
    pub fn exceeded(&self) -> bool {
        self.used() > self.limit
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_input_and_output_of_every_shard() {
        let shards: Vec<Arc<ShardStats>> = (0..2).map(|_| Arc::default()).collect();
        let budget = MemoryBudget::new(1000, shards.clone());
        assert_eq!(budget.used(), 0);
        shards[0].input_bytes.add(400);
        shards[1].pending_bytes.add(600);
        assert_eq!(budget.used(), 1000);
        assert!(!budget.exceeded(), "at the limit is within it");
        shards[1].input_bytes.add(1);
        assert!(budget.exceeded());
        shards[1].input_bytes.sub(1);
        assert!(!budget.exceeded());
        assert!(!MemoryBudget::unlimited().exceeded());
    }
}
