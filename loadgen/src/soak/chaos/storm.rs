//! SUB/UNSUB storms: a connection (one line, one NATS) subscribes to a
//! burst of 50 to 300 patterns full of `*` and `>`, confirms them with
//! `PING`, reads for a moment, unsubscribes them all and confirms again;
//! after a few bursts it leaves with a burst still in place and
//! reconnects. A few patterns in every burst match the well-behaved
//! streams (`soak.ok.>`, `soak.ok.*.*.*`, …), so interest changes on every
//! shard while those messages are delivered; the storm connections read
//! and drop what they get. Patterns never start with a wildcard, so the
//! flood (`flood.*`) does not reach them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::{Codec, Event, Protocol};

use super::super::client::Client;
use super::super::context::Ctx;
use super::super::rng::Rng;
use super::{line_target, open};

/// Patterns that match well-behaved streams (`soak.ok.<kind>.<i>.<n>`).
const MATCHING: &[&str] = &[
    "soak.ok.>",
    "soak.ok.*.*.*",
    "soak.*.ll.>",
    "soak.ok.xs.*.*",
    "soak.ok.nn.>",
    "soak.*.*.0.*",
];
/// Tokens of the patterns that match nothing published.
const TOKENS: &[&str] = &["a", "b", "c", "*", "*", "x1", "yy", "zz9", "q"];
/// How long a `PING` after a burst may take before it counts as slow.
const SLOW_PONG: Duration = Duration::from_secs(5);

/// One pattern: now and then one that matches well-behaved traffic, else
/// `soak.storm.` and one to five tokens, the last possibly `>`.
pub fn pattern(rng: &mut Rng) -> String {
    if rng.chance(0.02) {
        return rng.pick(MATCHING).to_string();
    }
    let mut p = String::from("soak.storm");
    let n = rng.between(1, 5);
    for i in 0..n {
        p.push('.');
        if i + 1 == n && rng.chance(0.3) {
            p.push('>');
        } else {
            let token = rng.pick::<&str>(TOKENS);
            p.push_str(token);
        }
    }
    p
}

/// Storms on `protocol` until the run ends.
pub fn run(ctx: Arc<Ctx>, mut rng: Rng, protocol: Protocol) {
    while ctx.running() {
        let addr = match (protocol, ctx.config.targets.nats) {
            (Protocol::Nats, Some(a)) => a,
            _ => line_target(&ctx, &mut rng),
        };
        let Some(mut c) = open(&ctx, addr, protocol) else {
            ctx.sleep(Duration::from_millis(200));
            continue;
        };
        if c.hello(SLOW_PONG).is_err() {
            ctx.chaos.storm_slow_pongs.inc();
            continue;
        }
        let bursts = rng.between(3, 10);
        for b in 0..bursts {
            if !ctx.running() {
                break;
            }
            let patterns: Vec<String> = (0..rng.between(50, 300))
                .map(|_| pattern(&mut rng))
                .collect();
            if burst(&ctx, &mut c, &patterns, b + 1 < bursts, &mut rng).is_err() {
                break;
            }
        }
        ctx.chaos.storm_drops.inc();
    }
}

/// One burst: subscribe all, confirm, read a while, and unless this is the
/// connection's last burst, unsubscribe all and confirm.
fn burst(
    ctx: &Ctx,
    c: &mut Client,
    patterns: &[String],
    undo: bool,
    rng: &mut Rng,
) -> Result<(), ()> {
    let (codec, out) = c.encoder();
    for (i, p) in patterns.iter().enumerate() {
        match codec {
            Codec::Line(l) => l.subscribe(out, p, None),
            Codec::Nats(n) => n.subscribe(out, p, None, i + 1),
            Codec::Redis(_) => return Err(()),
        }
    }
    ctx.chaos.storm_changes.add(patterns.len() as u64);
    confirm(ctx, c)?;
    let until = Instant::now() + Duration::from_millis(rng.between(100, 400));
    while Instant::now() < until {
        let got = c.pump(Duration::from_millis(50), |ev| {
            if matches!(ev, Event::Msg { .. }) {
                ctx.chaos.storm_msgs.inc();
            }
        });
        if got.is_err() {
            return Err(());
        }
    }
    if undo {
        let (codec, out) = c.encoder();
        for (i, p) in patterns.iter().enumerate() {
            match codec {
                Codec::Line(l) => l.unsubscribe(out, p, None),
                Codec::Nats(n) => n.unsubscribe(out, i + 1),
                Codec::Redis(_) => return Err(()),
            }
        }
        ctx.chaos.storm_changes.add(patterns.len() as u64);
        confirm(ctx, c)?;
    }
    ctx.chaos.storm_bursts.inc();
    Ok(())
}

/// `PING` and its `PONG`, draining messages meanwhile.
fn confirm(ctx: &Ctx, c: &mut Client) -> Result<(), ()> {
    c.ping_pong(SLOW_PONG, |ev| {
        if matches!(ev, Event::Msg { .. }) {
            ctx.chaos.storm_msgs.inc();
        }
    })
    .map_err(|_| ctx.chaos.storm_slow_pongs.inc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_valid_and_some_match_the_streams() {
        let mut rng = Rng::new(11);
        let all: Vec<String> = (0..2000).map(|_| pattern(&mut rng)).collect();
        for p in &all {
            let tokens: Vec<&str> = p.split('.').collect();
            assert!(tokens.iter().all(|t| !t.is_empty()), "{p}");
            assert!(
                !tokens[..tokens.len() - 1].contains(&">"),
                "{p}: > only last"
            );
            assert_eq!(tokens[0], "soak", "{p}: never a leading wildcard");
        }
        assert!(all
            .iter()
            .any(|p| p.starts_with("soak.ok") || p.starts_with("soak.*")));
        assert!(all.iter().any(|p| p.ends_with(".>")));
        assert!(all.iter().any(|p| p.contains(".*.")));
    }
}
