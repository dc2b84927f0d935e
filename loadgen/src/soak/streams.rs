//! Well-behaved traffic: publishers and subscribers that follow the
//! protocol, carry sequence numbers, and must see every message.
//!
//! Each stream runs in sessions (`--session`): the subscribers connect,
//! subscribe to a subject of the session's own and confirm it with
//! `PING`/`PONG`; the publisher then publishes at a moderate paced rate
//! (well under what would make a reading subscriber a slow consumer),
//! payloads stamped by [`crate::payload`]; at the end it sends `PING`, and
//! the `PONG` fixes how many messages the relay accepted. Each subscriber
//! must then have them all, once, in order ([`super::check`]); it waits up
//! to [`DRAIN`] for stragglers. The session's verdict goes into the
//! stream kind's tally, and anything wrong is a failure naming the stream,
//! session, subscriber and first anomaly.
//!
//! Payload sizes vary by session, including ones of 16 KiB and more,
//! which tern hands to receivers by reference rather than copied.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::payload::{Alphabet, PayloadCodec, Stamp};
use crate::proto::{printable, Event, Protocol};

use super::check::{StreamCheck, Verdict};
use super::client::Client;
use super::config::Targets;
use super::context::Ctx;
use super::failures::Rule;

/// The kinds of well-behaved stream: publisher's protocol → subscribers'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    LineLine,
    NatsNats,
    LineNats,
    NatsLine,
    /// Line publisher on shard 0's own listener, line subscribers on shard
    /// 1's: every message crosses the mesh.
    CrossShard,
}

impl StreamKind {
    /// Every kind, in report order.
    pub const ALL: [StreamKind; 5] = [
        StreamKind::LineLine,
        StreamKind::NatsNats,
        StreamKind::LineNats,
        StreamKind::NatsLine,
        StreamKind::CrossShard,
    ];

    /// The report's name.
    pub fn label(self) -> &'static str {
        match self {
            StreamKind::LineLine => "line->line",
            StreamKind::NatsNats => "nats->nats",
            StreamKind::LineNats => "line->nats",
            StreamKind::NatsLine => "nats->line",
            StreamKind::CrossShard => "line->line shard 0->1",
        }
    }

    /// The subject token.
    fn token(self) -> &'static str {
        match self {
            StreamKind::LineLine => "ll",
            StreamKind::NatsNats => "nn",
            StreamKind::LineNats => "ln",
            StreamKind::NatsLine => "nl",
            StreamKind::CrossShard => "xs",
        }
    }

    /// Where the publisher and the subscribers connect, and in which
    /// protocol; `None` if the targets lack what this kind needs.
    pub fn endpoints(self, t: &Targets) -> Option<[(SocketAddr, Protocol); 2]> {
        let line = (t.line, Protocol::Line);
        let nats = t.nats.map(|a| (a, Protocol::Nats));
        Some(match self {
            StreamKind::LineLine => [line, line],
            StreamKind::NatsNats => [nats?, nats?],
            StreamKind::LineNats => [line, nats?],
            StreamKind::NatsLine => [nats?, line],
            StreamKind::CrossShard => {
                let (a, b) = t.cross_shard()?;
                [(a, Protocol::Line), (b, Protocol::Line)]
            }
        })
    }
}

/// Payload sizes a session picks from: small, medium, and past tern's
/// 16 KiB threshold for holding a payload once for all receivers.
const SIZES: [usize; 5] = [48, 128, 1000, 4096, 20_000];
/// Most bytes per second one publisher sends.
const BYTE_BUDGET: u64 = 2_000_000;
/// How long a subscriber waits for the rest once the count is known.
pub const DRAIN: Duration = Duration::from_secs(10);
/// How long connecting and subscribing may take.
const SETUP: Duration = Duration::from_secs(5);
/// How long the publisher's closing `PING` may take.
const CLOSING: Duration = Duration::from_secs(10);
/// Not yet known: the publisher is still publishing.
const UNKNOWN: u64 = u64::MAX;
/// A session shorter than this is not started at the end of a run.
const MIN_SESSION: Duration = Duration::from_secs(2);

/// Runs stream `index` of `kind` in sessions until the run ends.
pub fn run(ctx: Arc<Ctx>, kind: StreamKind, index: u32) {
    let Some([publisher, subscriber]) = kind.endpoints(&ctx.config.targets) else {
        return;
    };
    let mut rng = ctx.rng(&format!("stream-{}-{index}", kind.token()));
    let mut n = 0;
    while ctx.running() && ctx.remaining() >= MIN_SESSION {
        let end = (Instant::now() + ctx.config.session).min(ctx.deadline);
        let s = Session {
            ctx: &ctx,
            kind,
            index,
            number: n,
            subject: format!("soak.ok.{}.{index}.{n}", kind.token()),
            size: *rng.pick(&SIZES),
        };
        s.run(publisher, subscriber, end);
        n += 1;
        // A session that ended early failed (the relay refused, or is
        // gone): the next one waits a moment.
        if Instant::now() < end {
            ctx.sleep(Duration::from_secs(1));
        }
    }
}

/// One session of one stream.
struct Session<'a> {
    ctx: &'a Arc<Ctx>,
    kind: StreamKind,
    index: u32,
    number: u64,
    subject: String,
    size: usize,
}

/// What one subscriber saw.
struct Seen {
    addr: SocketAddr,
    verdict: Verdict,
    corrupt: u64,
    /// Why the connection ended early, if it did.
    ended: Option<String>,
}

impl Session<'_> {
    fn who(&self) -> String {
        format!(
            "{} stream {} session {} ({}-byte payloads, subject {})",
            self.kind.label(),
            self.index,
            self.number,
            self.size,
            self.subject
        )
    }

    fn run(
        &self,
        publisher: (SocketAddr, Protocol),
        subscriber: (SocketAddr, Protocol),
        end: Instant,
    ) {
        let ctx = self.ctx;
        let sent = Arc::new(AtomicU64::new(UNKNOWN));
        let mut readers = Vec::new();
        for i in 0..ctx.config.subscribers {
            let mut c = match Client::open(subscriber.0, subscriber.1, SETUP) {
                Ok(c) => c,
                Err(e) => {
                    self.setup_failed(&format!("subscriber {i} cannot connect: {e}"));
                    break;
                }
            };
            if let Err(e) = c.subscribe(std::slice::from_ref(&self.subject), SETUP) {
                self.setup_failed(&format!(
                    "subscriber {i} on {} not subscribed: {e}",
                    c.addr()
                ));
                break;
            }
            let reader = Reader {
                ctx: ctx.clone(),
                kind: self.kind,
                publisher: self.index,
                subject: self.subject.clone(),
                payloads: PayloadCodec::new(Alphabet::decimal(), self.size),
                sent: sent.clone(),
            };
            match thread::Builder::new()
                .name(format!("soak-sub-{}", self.kind.token()))
                .spawn(move || reader.run(c))
            {
                Ok(h) => readers.push(h),
                Err(e) => {
                    self.setup_failed(&format!("cannot start a subscriber thread: {e}"));
                    break;
                }
            }
        }
        let accepted = if readers.len() == ctx.config.subscribers {
            self.publish(publisher, end)
        } else {
            None
        };
        // With no count, the subscribers stop at once.
        sent.store(accepted.unwrap_or(0), Ordering::Release);
        let seen: Vec<Seen> = readers.into_iter().filter_map(|h| h.join().ok()).collect();
        if ctx.aborted() || seen.len() < ctx.config.subscribers {
            return;
        }
        // A publisher that failed was recorded as such; what the relay
        // accepted from it is unknown, so its subscribers are not judged.
        if let Some(accepted) = accepted {
            self.judge(accepted, &seen);
        }
    }

    fn setup_failed(&self, what: &str) {
        if self.ctx.running() {
            self.ctx
                .fail(Rule::WellBehaved, format!("{}: {what}", self.who()));
        }
    }

    /// Publishes until `end`; returns how many messages the relay
    /// accepted (all written before the closing `PING`'s `PONG`), or
    /// `None` if the publisher failed (recorded as a failure): refused,
    /// cut, or not read.
    fn publish(&self, (addr, protocol): (SocketAddr, Protocol), end: Instant) -> Option<u64> {
        let ctx = self.ctx;
        let tally = ctx.stream(self.kind);
        let fail = |what: String| {
            if !ctx.aborted() {
                ctx.fail(
                    Rule::WellBehaved,
                    format!("{}: publisher on {addr}: {what}", self.who()),
                );
            }
        };
        let mut p = match Client::open(addr, protocol, SETUP) {
            Ok(p) => p,
            Err(e) => {
                fail(e.to_string());
                return None;
            }
        };
        if let Err(e) = p.hello(SETUP) {
            fail(format!("no greeting: {e}"));
            return None;
        }
        let payloads = PayloadCodec::new(Alphabet::decimal(), self.size);
        let rate = ctx.config.rate.min(BYTE_BUDGET / self.size as u64).max(1);
        let interval_ns = 1_000_000_000 / rate;
        let start_ns = ctx.now_ns();
        let start = Instant::now();
        let subject = self.subject.as_bytes();
        let mut seq = 0u64;
        let mut refused = None;
        while Instant::now() < end && ctx.running() {
            let due = (start.elapsed().as_nanos() as u64 / interval_ns) + 1;
            let from = seq;
            while seq < due {
                let stamp = Stamp {
                    publisher: self.index,
                    seq,
                    intended_ns: start_ns + seq * interval_ns,
                    actual_ns: ctx.now_ns(),
                };
                let (codec, out) = p.encoder();
                codec.publish(out, subject, payloads.encoded_len(&stamp), |o| {
                    payloads.encode(&stamp, o)
                });
                seq += 1;
            }
            if let Err(e) = p.flush() {
                fail(format!("after {seq} messages: {e}"));
                return None;
            }
            tally.sent.add(seq - from);
            // Nothing is owed to a publisher but keep-alives and refusals.
            if let Err(e) = p.pump(Duration::ZERO, |ev| {
                if let Event::Error(r) = ev {
                    refused.get_or_insert(printable(r));
                }
            }) {
                fail(format!("after {seq} messages: {e}"));
                return None;
            }
            if let Some(r) = refused.take() {
                fail(format!("after {seq} messages: -ERR {r}"));
                return None;
            }
            thread::sleep(Duration::from_millis(5).min(Duration::from_nanos(interval_ns)));
        }
        match p.ping_pong(CLOSING, |_| {}) {
            Ok(()) => Some(seq),
            Err(e) => {
                fail(format!("closing PING after {seq} messages: {e}"));
                None
            }
        }
    }

    fn judge(&self, accepted: u64, seen: &[Seen]) {
        let ctx = self.ctx;
        let tally = ctx.stream(self.kind);
        tally.sessions.inc();
        let mut failed = false;
        for (i, s) in seen.iter().enumerate() {
            let v = &s.verdict;
            tally.lost.add(v.integrity.lost);
            tally.duplicated.add(v.integrity.duplicated);
            tally.reordered.add(v.integrity.reordered);
            tally.corrupt.add(s.corrupt);
            if v.is_clean() && s.corrupt == 0 && s.ended.is_none() {
                continue;
            }
            failed = true;
            let mut what = format!(
                "{}: subscriber {i} on {} got {} of {accepted} accepted: lost {}, duplicated {}, reordered {}, damaged {}",
                self.who(),
                s.addr,
                v.received,
                v.integrity.lost,
                v.integrity.duplicated,
                v.integrity.reordered,
                s.corrupt
            );
            if let Some(a) = v.first_anomaly {
                what.push_str(&format!("; first: {a}"));
            }
            if v.head_missing > 0 && v.head_missing < accepted {
                what.push_str(&format!(
                    "; the first {} after the confirmed subscription never came (barrier)",
                    v.head_missing
                ));
            }
            if let Some(e) = &s.ended {
                what.push_str(&format!("; connection ended: {e}"));
            }
            let rule = if v.is_clean() && s.corrupt == 0 {
                Rule::WellBehaved
            } else {
                Rule::Delivery
            };
            ctx.fail(rule, what);
        }
        if failed {
            tally.failed_sessions.inc();
        }
    }
}

/// A subscriber's half of a session, on its own thread.
struct Reader {
    ctx: Arc<Ctx>,
    kind: StreamKind,
    publisher: u32,
    subject: String,
    payloads: PayloadCodec,
    sent: Arc<AtomicU64>,
}

impl Reader {
    fn run(self, mut c: Client) -> Seen {
        let tally = self.ctx.stream(self.kind);
        let mut check = StreamCheck::default();
        let mut corrupt = 0;
        let mut ended = None;
        let mut refusal: Option<String> = None;
        let mut drain_until = None;
        let mut warned = false;
        loop {
            if self.ctx.aborted() {
                break;
            }
            let sent = self.sent.load(Ordering::Acquire);
            if sent != UNKNOWN {
                if check.has_all(sent) {
                    break;
                }
                if Instant::now() >= *drain_until.get_or_insert(Instant::now() + DRAIN) {
                    break;
                }
            }
            let r = c.pump(Duration::from_millis(100), |ev| match ev {
                Event::Msg { subject, payload } => {
                    if subject != self.subject.as_bytes() {
                        corrupt += 1;
                        return;
                    }
                    match self.payloads.decode(payload) {
                        Ok(stamp) if stamp.publisher == self.publisher => {
                            check.observe(stamp.seq);
                            tally.received.inc();
                            let now = self.ctx.now_ns();
                            let late = now.saturating_sub(stamp.intended_ns);
                            tally
                                .worst_latency
                                .record(Duration::from_nanos(late), Duration::from_nanos(now));
                        }
                        _ => corrupt += 1,
                    }
                }
                Event::Error(r) => refusal = Some(printable(r)),
                _ => {}
            });
            if !warned && (check.is_irregular() || corrupt > 0) {
                warned = true;
                tally.irregular.inc();
            }
            if let Err(e) = r {
                ended = Some(match refusal.take() {
                    Some(r) => format!("-ERR {r}, then {e}"),
                    None => e.to_string(),
                });
                break;
            }
        }
        let sent = self.sent.load(Ordering::Acquire);
        Seen {
            addr: c.addr(),
            verdict: check.finish(if sent == UNKNOWN { 0 } else { sent }),
            corrupt,
            ended,
        }
    }
}

/// Starts every configured stream, each on its own thread.
pub fn spawn_all(ctx: &Arc<Ctx>) -> std::io::Result<Vec<thread::JoinHandle<()>>> {
    let mut handles = Vec::new();
    for kind in StreamKind::ALL {
        if kind.endpoints(&ctx.config.targets).is_none() {
            continue;
        }
        for index in 0..ctx.config.streams {
            let ctx = ctx.clone();
            handles.push(
                thread::Builder::new()
                    .name(format!("soak-{}", kind.token()))
                    .spawn(move || run(ctx, kind, index as u32))?,
            );
        }
    }
    Ok(handles)
}
