//! The cross-shard flood: a publisher on shard 0's own listener writes
//! `PUB flood.0 …` as fast as the relay takes it (or at `--flood-rate`)
//! for `--flood-burst` out of every `--flood-period`, to a subscriber on
//! shard 1's own listener that reads as fast as it can. Without two shard
//! listeners both use the shared line listener.
//!
//! The reader only counts lines; a reader the relay closes (a slow
//! consumer, though it reads) is counted and replaced. After each burst
//! the publisher's `PING` must come back; over 10 s counts as a
//! stall.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::Protocol;

use super::super::context::Ctx;
use super::open;

/// How long the `PING` after a burst may take before it counts as a stall.
const STALL: Duration = Duration::from_secs(10);
/// Bytes of each flood payload.
const PAYLOAD: usize = 100;
/// Frames per write.
const BATCH: usize = 1000;

/// Publisher and reader addresses.
fn ends(ctx: &Ctx) -> (SocketAddr, SocketAddr) {
    let t = &ctx.config.targets;
    t.cross_shard().unwrap_or((t.line, t.line))
}

/// The flood's publisher, until the run ends.
pub fn publish(ctx: Arc<Ctx>) {
    let (addr, _) = ends(&ctx);
    let frame = format!("PUB flood.0 {}\n", "f".repeat(PAYLOAD));
    let batch = frame.repeat(BATCH).into_bytes();
    let period = ctx.config.flood_period;
    // The first burst after the well-behaved streams have started.
    let mut next = Instant::now() + Duration::from_secs(2);
    while ctx.sleep_until(next) {
        next = (next + period).max(Instant::now());
        let Some(mut c) = open(&ctx, addr, Protocol::Line) else {
            continue;
        };
        ctx.chaos.flood_bursts.inc();
        let start = Instant::now();
        let end = start + ctx.config.flood_burst;
        let mut sent = 0u64;
        let mut ok = true;
        while ok && Instant::now() < end && ctx.running() {
            if ctx.config.flood_rate > 0 {
                let due = (start.elapsed().as_secs_f64() * ctx.config.flood_rate as f64) as u64;
                if due < sent + BATCH as u64 {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
            ok = c.write_raw(&batch).is_ok();
            if ok {
                sent += BATCH as u64;
                ctx.chaos.flood_sent.add(BATCH as u64);
            }
        }
        if !ok || c.ping_pong(STALL, |_| {}).is_err() {
            ctx.chaos.flood_stalls.inc();
        }
    }
}

/// The flood's reader, until the run ends.
pub fn read(ctx: Arc<Ctx>) {
    let (_, addr) = ends(&ctx);
    while ctx.running() {
        let Some(mut c) = open(&ctx, addr, Protocol::Line) else {
            ctx.sleep(Duration::from_millis(200));
            continue;
        };
        if c.subscribe(&["flood.0".to_string()], Duration::from_secs(5))
            .is_err()
        {
            ctx.sleep(Duration::from_millis(200));
            continue;
        }
        while ctx.running() {
            let r = c.read_raw(Duration::from_millis(100), |bytes| {
                ctx.chaos
                    .flood_received
                    .add(memchr::memchr_iter(b'\n', bytes).count() as u64);
            });
            if r.is_err() {
                ctx.chaos.flood_cut.inc();
                break;
            }
        }
    }
}
