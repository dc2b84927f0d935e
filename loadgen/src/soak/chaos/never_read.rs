//! Subscribers that never read: they subscribe to the flood's subjects and
//! to every well-behaved stream, then let the relay's output pile up until
//! it closes them as slow consumers (past `--max-pending`). At most
//! `--never-readers` are open at once; each lives [`LIFE`], then reads
//! what is left to tell whether it was cut (end of stream, after the
//! `slow consumer` farewell if that got through) or survived (no flood
//! reached it), and is replaced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::{Event, Login, Protocol};

use super::super::client::Client;
use super::super::context::Ctx;
use super::super::rng::Rng;
use super::{is_slow_consumer, line_target};

/// How long a never-reader holds still.
pub const LIFE: Duration = Duration::from_secs(15);
/// A small receive buffer, so the relay's queue, not the kernel's,
/// fills up.
const RCVBUF: usize = 16 * 1024;
/// How long the final read may take.
const DRAIN: Duration = Duration::from_secs(3);

/// Keeps the never-readers going until the run ends.
pub fn run(ctx: Arc<Ctx>, mut rng: Rng) {
    let mut slots: Vec<Option<(Client, Instant)>> =
        (0..ctx.config.never_readers).map(|_| None).collect();
    // Staggered, so they do not all turn over at once.
    let stagger = LIFE / (slots.len().max(1) as u32);
    let mut next_open = Instant::now();
    while ctx.sleep(Duration::from_millis(250)) {
        for slot in slots.iter_mut() {
            match slot {
                Some((_, born)) if born.elapsed() >= LIFE => {
                    if let Some((c, _)) = slot.take() {
                        settle(&ctx, c);
                    }
                }
                None if Instant::now() >= next_open => {
                    *slot = start(&ctx, &mut rng).map(|c| (c, Instant::now()));
                    next_open = Instant::now() + stagger;
                }
                _ => {}
            }
        }
    }
    for (c, _) in slots.into_iter().flatten() {
        settle(&ctx, c);
    }
}

/// Opens one: subscribes (NATS after `CONNECT`) without waiting for
/// anything.
fn start(ctx: &Ctx, rng: &mut Rng) -> Option<Client> {
    let nats = ctx.config.targets.nats.filter(|_| rng.chance(0.5));
    let (addr, protocol) = match nats {
        Some(a) => (a, Protocol::Nats),
        None => (line_target(ctx, rng), Protocol::Line),
    };
    let Ok(mut c) = Client::open_small(addr, protocol, Duration::from_secs(2), RCVBUF) else {
        ctx.chaos.connect_errors.inc();
        return None;
    };
    let subjects = ["flood.>".to_string(), "soak.ok.>".to_string()];
    let (codec, out) = c.encoder();
    // The hello's PING is answered, but the PONG is never read.
    let _ = codec.subscriber_hello(out, &subjects, None, Login::NONE);
    c.flush().ok()?;
    ctx.chaos.never_opened.inc();
    Some(c)
}

/// Reads what is left: cut, or still served?
fn settle(ctx: &Ctx, mut c: Client) {
    let until = Instant::now() + DRAIN;
    let mut farewell = false;
    let cut = loop {
        if Instant::now() >= until {
            break false;
        }
        match c.pump(Duration::from_millis(300), |ev| {
            if let Event::Error(r) = ev {
                farewell |= is_slow_consumer(r);
            }
        }) {
            Ok(true) => {}
            // Nothing for a while and not closed: still served.
            Ok(false) => break false,
            Err(_) => break true,
        }
    };
    if cut {
        ctx.chaos.never_cut.inc();
        if farewell {
            ctx.chaos.never_farewell.inc();
        }
    } else {
        ctx.chaos.never_survived.inc();
    }
}
