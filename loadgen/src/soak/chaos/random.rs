//! Connections that send random bytes, ten a second: raw bytes, printable
//! junk cut into lines, or a shuffle of protocol words (verbs, wildcards,
//! separators, huge numbers), which gets further into the parsers. Each
//! reads whatever the relay answers for a moment and closes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::context::Ctx;
use super::super::rng::Rng;
use super::{any_target, open};

/// Connections per second.
const RATE: u32 = 10;
/// Most bytes one connection sends.
const MAX_BYTES: u64 = 64 * 1024;

/// Words the third flavour is made of.
const WORDS: &[&[u8]] = &[
    b"PUB",
    b"SUB",
    b"UNSUB",
    b"PING",
    b"PONG",
    b"CONNECT",
    b"HPUB",
    b"MSG",
    b"INFO",
    b"+OK",
    b" ",
    b" ",
    b"*",
    b">",
    b".",
    b"a",
    b"b.c",
    b"{",
    b"}",
    b"\"verbose\":true",
    b"\r\n",
    b"\n",
    b"\r",
    b"0",
    b"-1",
    b"18446744073709551616",
    b"99999999",
    b"\t",
    b"\0",
];

/// One connection's bytes.
pub fn junk(rng: &mut Rng) -> Vec<u8> {
    let n = rng.between(1, MAX_BYTES) as usize;
    let mut out = Vec::with_capacity(n + 32);
    match rng.below(3) {
        0 => {
            out.resize(n, 0);
            rng.fill(&mut out);
        }
        1 => {
            while out.len() < n {
                out.push(if rng.chance(0.05) {
                    b'\n'
                } else {
                    0x20 + rng.below(0x5f) as u8
                });
            }
        }
        _ => {
            while out.len() < n {
                let word = rng.pick::<&[u8]>(WORDS);
                out.extend_from_slice(word);
            }
        }
    }
    out
}

/// Sends junk until the run ends.
pub fn run(ctx: Arc<Ctx>, mut rng: Rng) {
    let every = Duration::from_secs(1) / RATE;
    let mut next = Instant::now();
    while ctx.sleep_until(next) {
        next = (next + every).max(Instant::now());
        let (addr, protocol) = any_target(&ctx, &mut rng);
        let Some(mut c) = open(&ctx, addr, protocol) else {
            continue;
        };
        ctx.chaos.random_conns.inc();
        let bytes = junk(&mut rng);
        let pieces = rng.between(1, 8) as usize;
        let mut closed = false;
        for piece in bytes.chunks(bytes.len().div_ceil(pieces)) {
            if c.write_raw(piece).is_err() {
                closed = true;
                break;
            }
            ctx.chaos.random_bytes.add(piece.len() as u64);
        }
        // Whatever the relay says, for a moment.
        let until = Instant::now() + Duration::from_millis(200);
        while !closed && Instant::now() < until {
            match c.read_raw(Duration::from_millis(50), |_| {}) {
                Ok(_) => {}
                Err(_) => closed = true,
            }
        }
        if closed {
            ctx.chaos.random_closed.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_is_bounded_and_varied() {
        let mut rng = Rng::new(3);
        let samples: Vec<Vec<u8>> = (0..60).map(|_| junk(&mut rng)).collect();
        assert!(samples
            .iter()
            .all(|s| !s.is_empty() && s.len() <= MAX_BYTES as usize + 32));
        assert!(samples.iter().any(|s| s.windows(3).any(|w| w == b"SUB")));
        assert!(samples.iter().any(|s| s.iter().any(|&b| b >= 0x80)));
    }
}
