//! Connect/close churn at `--churn-rate` connections a second, one at a
//! time, over every target: closing at once, resetting, sending `PING`
//! and leaving without reading the `PONG`, completing a `PING`/`PONG` (NATS:
//! the greeting too), or subscribing and leaving with the subscription in
//! place.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::{Login, Protocol};

use super::super::context::Ctx;
use super::super::rng::Rng;
use super::{any_target, open, reset_on_close};

/// Churns until the run ends.
pub fn run(ctx: Arc<Ctx>, mut rng: Rng) {
    if ctx.config.churn_rate == 0 {
        return;
    }
    let every = Duration::from_nanos(1_000_000_000 / ctx.config.churn_rate);
    let mut next = Instant::now();
    let mut n = 0u64;
    while ctx.sleep_until(next) {
        next = (next + every).max(Instant::now());
        let (addr, protocol) = any_target(&ctx, &mut rng);
        let Some(mut c) = open(&ctx, addr, protocol) else {
            continue;
        };
        n += 1;
        match rng.below(5) {
            0 => {}
            1 => reset_on_close(c.stream()),
            2 => {
                let (codec, out) = c.encoder();
                codec.ping(out);
                let _ = c.flush();
            }
            3 => {
                let _ = c.hello(Duration::from_secs(2));
            }
            _ => {
                let subject = format!("soak.churn.{n}.>");
                let (codec, out) = c.encoder();
                let _ = codec.subscriber_hello(out, &[subject], None, Login::NONE);
                let _ = c.flush();
                if protocol == Protocol::Nats || rng.chance(0.5) {
                    reset_on_close(c.stream());
                }
            }
        }
        drop(c);
        ctx.chaos.churn.inc();
    }
}
