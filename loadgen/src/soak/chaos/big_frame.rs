//! One frame of `--big-frame` bytes (100 MiB) without a terminator, every
//! `--big-frame-every`, streamed in 256 KiB writes while reading what the
//! relay answers, until all is sent or the relay closes the connection.
//!
//! On the line protocol the spec says the relay discards such a frame
//! without buffering it whole, answers `-ERR frame too long` once and keeps
//! serving: after the frame the actor ends it and sends `PING`, and counts
//! the `PONG`. On NATS the `PUB` header already announces a payload past
//! `max_payload`, which the relay refuses (`Maximum Payload Violation`)
//! and closes. The turns alternate between the protocols.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::{Event, Protocol};

use super::super::context::Ctx;
use super::super::rng::Rng;
use super::{line_target, open};

/// Bytes per write.
const PIECE: usize = 256 * 1024;

/// Sends big frames until the run ends.
pub fn run(ctx: Arc<Ctx>, mut rng: Rng) {
    let every = ctx.config.big_frame_every;
    let mut next = Instant::now() + Duration::from_secs(1);
    let mut turn = 0u64;
    while ctx.sleep_until(next) {
        next = (next + every).max(Instant::now());
        let nats = ctx.config.targets.nats.filter(|_| turn % 2 == 1);
        turn += 1;
        let (addr, protocol) = match nats {
            Some(a) => (a, Protocol::Nats),
            None => (line_target(&ctx, &mut rng), Protocol::Line),
        };
        let Some(mut c) = open(&ctx, addr, protocol) else {
            continue;
        };
        ctx.chaos.big_frames.inc();
        let head = match protocol {
            Protocol::Nats => format!(
                "CONNECT {{}}\r\nPUB soak.chaos.big {}\r\n",
                ctx.config.big_frame
            ),
            _ => "PUB soak.chaos.big ".to_string(),
        };
        let piece = vec![b'x'; PIECE];
        let mut refused = false;
        let mut closed = c.write_raw(head.as_bytes()).is_err();
        let mut left = ctx.config.big_frame;
        while !closed && left > 0 && ctx.running() {
            let n = left.min(PIECE as u64) as usize;
            if c.write_raw(&piece[..n]).is_err() {
                closed = true;
                break;
            }
            left -= n as u64;
            ctx.chaos.big_bytes.add(n as u64);
            if c.pump(Duration::ZERO, |ev| {
                refused |= matches!(ev, Event::Error(_))
            })
            .is_err()
            {
                closed = true;
            }
        }
        if !closed && left == 0 && protocol == Protocol::Line {
            // End the frame and check the connection still serves.
            let _ = c.write_raw(b"\n");
            match c.ping_pong(Duration::from_secs(10), |_| {}) {
                Ok(()) => ctx.chaos.big_pong_after.inc(),
                Err(e) => {
                    refused |= matches!(e, super::super::client::ClientError::Refused(_));
                    closed = e.is_disconnect();
                }
            }
        }
        if !closed {
            // Anything the relay said meanwhile, and a close that follows it.
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until {
                match c.pump(Duration::from_millis(100), |ev| {
                    refused |= matches!(ev, Event::Error(_))
                }) {
                    Ok(_) => {}
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        if refused {
            ctx.chaos.big_refused.inc();
        }
        if closed {
            ctx.chaos.big_closed.inc();
        }
    }
}
