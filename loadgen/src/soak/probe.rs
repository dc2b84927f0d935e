//! The liveness probe: once a second a fresh connection sends `PING`
//! (NATS: `CONNECT` then `PING`) and must have its `PONG` within
//! `--probe-timeout`, counted from the connect. The probes take turns over
//! every target (the shared line and NATS listeners, each shard's own), so
//! one stalled shard is caught even when the kernel would have sent a
//! shared-listener connection elsewhere.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::Protocol;

use super::client::Client;
use super::context::Ctx;
use super::failures::Rule;

/// How often a probe is made.
pub const EVERY: Duration = Duration::from_secs(1);
/// How long a late answer is waited for, to report how late it was.
const PATIENCE: Duration = Duration::from_secs(5);

/// Every target a probe can take, in turn order.
pub fn targets(ctx: &Ctx) -> Vec<(SocketAddr, Protocol)> {
    let t = &ctx.config.targets;
    let mut v = vec![(t.line, Protocol::Line)];
    v.extend(t.nats.map(|a| (a, Protocol::Nats)));
    v.extend(t.shards.iter().map(|&a| (a, Protocol::Line)));
    v
}

/// Probes until the run ends.
pub fn run(ctx: Arc<Ctx>) {
    let targets = targets(&ctx);
    let limit = ctx.config.probe_timeout;
    let mut next = Instant::now();
    for (addr, protocol) in targets.iter().cycle() {
        if !ctx.sleep_until(next) {
            break;
        }
        next += EVERY;
        let t = Instant::now();
        let wait = limit.max(PATIENCE);
        let r = Client::open(*addr, *protocol, wait).and_then(|mut c| c.hello(wait));
        let took = t.elapsed();
        ctx.probes.probes.inc();
        ctx.probes.worst.record(took, ctx.elapsed());
        let late = match r {
            Ok(()) if took <= limit => continue,
            Ok(()) => format!("answered after {:.3} s", took.as_secs_f64()),
            Err(e) => format!("{e} ({:.3} s)", took.as_secs_f64()),
        };
        ctx.probes.late.inc();
        if ctx.running() {
            ctx.fail(
                Rule::Liveness,
                format!(
                    "PING on a fresh {protocol} connection to {addr} not answered within {:.3} s: {late}",
                    limit.as_secs_f64()
                ),
            );
        }
        // A late probe took its own time: no catching up in a burst.
        next = next.max(Instant::now());
    }
}
