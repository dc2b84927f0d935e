//! Half a frame, then a TCP reset, ten times a second: a line `PUB` or
//! `SUB`, or a NATS `PUB` with its payload, cut at a random byte; the
//! connection is then closed with `SO_LINGER` 0, so the relay sees a
//! reset in the middle of a frame it was buffering.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::Protocol;

use super::super::context::Ctx;
use super::super::rng::Rng;
use super::{any_target, open, reset_on_close};

/// Resets per second.
const RATE: u32 = 10;
/// Longest payload in the cut frame.
const MAX_PAYLOAD: u64 = 256 * 1024;

/// A whole frame for `protocol`, to be cut.
pub fn frame(rng: &mut Rng, protocol: Protocol) -> Vec<u8> {
    let len = rng.between(1, MAX_PAYLOAD) as usize;
    let mut f = Vec::with_capacity(len + 64);
    match protocol {
        Protocol::Nats => {
            f.extend_from_slice(b"CONNECT {}\r\n");
            f.extend_from_slice(format!("PUB soak.chaos.half {len}\r\n").as_bytes());
            f.resize(f.len() + len, b'h');
            f.extend_from_slice(b"\r\n");
        }
        _ if rng.chance(0.2) => f.extend_from_slice(b"SUB soak.chaos.half.*\n"),
        _ => {
            f.extend_from_slice(b"PUB soak.chaos.half ");
            f.resize(f.len() + len, b'h');
            f.push(b'\n');
        }
    }
    f
}

/// Cuts frames until the run ends.
pub fn run(ctx: Arc<Ctx>, mut rng: Rng) {
    let every = Duration::from_secs(1) / RATE;
    let mut next = Instant::now();
    while ctx.sleep_until(next) {
        next = (next + every).max(Instant::now());
        let (addr, protocol) = any_target(&ctx, &mut rng);
        let Some(mut c) = open(&ctx, addr, protocol) else {
            continue;
        };
        let f = frame(&mut rng, protocol);
        let cut = rng.between(1, f.len() as u64 - 1) as usize;
        let _ = c.write_raw(&f[..cut]);
        if rng.chance(0.5) {
            std::thread::sleep(Duration::from_millis(rng.below(20)));
        }
        reset_on_close(c.stream());
        drop(c);
        ctx.chaos.half_frames.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_whole_before_the_cut() {
        let mut rng = Rng::new(5);
        for _ in 0..50 {
            let f = frame(&mut rng, Protocol::Line);
            assert!(f.ends_with(b"\n") && f.len() >= 2);
            assert_eq!(f.iter().filter(|&&b| b == b'\n').count(), 1);
            let n = frame(&mut rng, Protocol::Nats);
            assert!(n.starts_with(b"CONNECT {}\r\nPUB soak.chaos.half "));
            assert!(n.ends_with(b"\r\n"));
        }
    }
}
