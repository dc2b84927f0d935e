//! A small seeded random number generator, so that a soak run's choices
//! (payload sizes, hostile bytes, wildcard patterns, where each client
//! connects) repeat exactly under the same `--seed`.
//!
//! The generator is SplitMix64: a 64-bit counter advanced by an odd
//! constant and passed through a mixing function. It is fast, has no
//! bad seeds, and [`Rng::fork`] gives each actor its own independent
//! stream. It is not cryptographic, which a soak does not need.

/// A seeded pseudo-random sequence.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

/// The increment of the counter: 2⁶⁴ divided by the golden ratio, odd.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

impl Rng {
    /// The sequence for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// An independent sequence for the actor called `name`: the same seed
    /// and name always give the same sequence, different names different
    /// ones.
    pub fn fork(&self, name: &str) -> Rng {
        let mut h = self.state ^ 0xcbf2_9ce4_8422_2325;
        for &b in name.as_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Rng::new(mix(h))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// A number in `0..n` (`0` if `n` is 0). The modulo bias is below
    /// 2⁻³² for the small `n` a soak uses.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo).saturating_add(1))
    }

    /// `true` with probability `p` (0 to 1).
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// SplitMix64's finaliser: every input bit affects every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_forks_differ() {
        let a: Vec<u64> = (0..5).map(|_| Rng::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]), "deterministic");
        let root = Rng::new(7);
        let (mut x, mut y) = (root.fork("churn"), root.fork("storm"));
        assert_ne!(x.next_u64(), y.next_u64());
        assert_eq!(
            root.fork("churn").next_u64(),
            Rng::new(7).fork("churn").next_u64()
        );
    }

    #[test]
    fn ranges_hold() {
        let mut r = Rng::new(1);
        for _ in 0..10_000 {
            assert!(r.below(10) < 10);
            let v = r.between(3, 5);
            assert!((3..=5).contains(&v));
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(r.between(4, 4), 4);
        let hits = (0..10_000).filter(|_| r.chance(0.25)).count();
        assert!((2_000..3_000).contains(&hits), "{hits}");
        let mut buf = [0u8; 13];
        r.fill(&mut buf);
        assert!(buf.iter().any(|&b| b != 0));
    }
}
