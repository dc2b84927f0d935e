//! A worker: one thread, pinned to its core, running an event loop over its
//! share of the connections.
//!
//! # The loop
//!
//! Each turn the worker (1) lets every publisher append all messages that
//! are due into its output buffer and writes that buffer with one `write`,
//! (2) hands the last second's histograms to the coordinator if a second has
//! passed, (3) waits in epoll until the next message is due, and (4) reads
//! every readable socket, decoding all complete events in what it read.
//!
//! # Timing
//!
//! Publisher `p`'s message `n` is due at `t0 + (p + n·P) · 10⁹ / R` ns: the
//! publishers interleave evenly and none ever waits for a reply (open
//! loop). A publisher that falls behind — a full socket, a slow turn —
//! sends the overdue messages in one batch with their original due times,
//! so the delay shows up in the corrected latency instead of vanishing
//! (coordinated omission). A pinned worker ([`Options::busy_poll`]) never
//! sleeps: it polls epoll with a zero timeout, so neither a send nor a
//! receive waits for the scheduler. Otherwise it sleeps in `epoll_pwait2`
//! with 1 ns timer slack until shortly before the next due time, then
//! spins: a wake-up from a sleep is tens of microseconds late, and that
//! would be the generator's latency, not the server's. (A message that
//! arrives while such a worker sleeps still waits for its wake-up: at low
//! rates without `--cores` latencies include it.)
//!
//! At `--rate 0` a publisher sends whenever it has fewer than `--window`
//! messages in flight, counting a message as delivered when every
//! subscriber (or, with a queue group, one member) has it; subscribers
//! publish their per-publisher counts through [`Shared::acks`].
//!
//! Receive time is taken once per `read`, right after it returns: all
//! messages in one read arrived together as far as the generator can tell.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::integrity::{GroupLedger, SeqTracker};
use crate::options::Options;
use crate::payload::{Alphabet, PayloadCodec, Stamp};
use crate::proto::nats::Info;
use crate::proto::{identify, printable, Codec, Event, Expect, Login, Protocol};
use crate::sys::{self, Interest, Poller};
use crate::tls::{late_handshake_error, TlsSetup, TlsStream, Transport};
use crate::Error;

/// Bytes read per `read` call.
const READ_SIZE: usize = 256 * 1024;
/// A publisher stops generating while this much output is unsent.
const HIGH_WATER: usize = 256 * 1024;
/// Below this much time to the next deadline the worker spins instead of
/// sleeping.
const SPIN_NS: u64 = 100_000;
/// Longest sleep, so flags set by the coordinator are seen promptly.
const MAX_SLEEP: Duration = Duration::from_millis(20);

/// Lowest and highest latency recorded, in ns: 1 µs to 60 s.
pub(crate) const HIST_LOW_NS: u64 = 1_000;
pub(crate) const HIST_HIGH_NS: u64 = 60_000_000_000;

/// A histogram of nanoseconds, 1 µs to 60 s, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, 3).expect("valid bounds")
}

/// Nanoseconds since a shared epoch (the process's monotonic clock).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            base: Instant::now(),
        }
    }

    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

/// State every worker and the coordinator share.
pub(crate) struct Shared {
    pub opts: Options,
    pub clock: Clock,
    /// Start of the run (ns); valid once `go` is set.
    pub t0: AtomicU64,
    pub go: AtomicBool,
    /// Stop the loop now (run over, or a failure).
    pub stop: AtomicBool,
    /// The first fatal error; later ones are consequences.
    pub failure: Mutex<Option<Error>>,
    /// Per publisher: messages sent so far (sequence numbers `0..sent`).
    pub sent: Vec<AtomicU64>,
    /// Per publisher: finished sending and flushed.
    pub done: Vec<AtomicBool>,
    /// Without a group: `[p * S + s]` = messages of publisher `p` received
    /// by subscriber `s`. With a group: `[p]` = received by the group.
    pub acks: Vec<AtomicU64>,
    /// With a group: which messages of each publisher the group has.
    pub ledgers: Vec<GroupLedger>,
    /// Per worker: deliveries received so far (drain progress).
    pub delivered: Vec<AtomicU64>,
    /// With `--tls`: the configuration every connection shares.
    pub tls: Option<TlsSetup>,
}

impl Shared {
    pub(crate) fn new(opts: Options, workers: usize, tls: Option<TlsSetup>) -> Self {
        let p = opts.publishers;
        let grouped = opts.group.is_some();
        let acks = if grouped { p } else { p * opts.subscribers };
        Shared {
            clock: Clock::new(),
            t0: AtomicU64::new(0),
            go: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            failure: Mutex::new(None),
            sent: (0..p).map(|_| AtomicU64::new(0)).collect(),
            done: (0..p).map(|_| AtomicBool::new(false)).collect(),
            acks: (0..acks).map(|_| AtomicU64::new(0)).collect(),
            ledgers: if grouped {
                (0..p).map(|_| GroupLedger::default()).collect()
            } else {
                Vec::new()
            },
            delivered: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            tls,
            opts,
        }
    }

    /// Records a fatal error (the first one wins) and stops every worker.
    pub(crate) fn fail(&self, e: Error) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(e);
        }
        self.stop.store(true, Ordering::Release);
    }

    /// Deliveries each message should produce.
    pub(crate) fn fan_out(&self) -> u64 {
        if self.opts.group.is_some() {
            1
        } else {
            self.opts.subscribers as u64
        }
    }
}

/// Times of one run, in ns on [`Clock`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeline {
    pub t0: u64,
    pub measure_start: u64,
    pub end: u64,
}

impl Timeline {
    pub(crate) fn new(t0: u64, opts: &Options) -> Self {
        let measure_start = t0 + opts.warmup.as_nanos() as u64;
        Timeline {
            t0,
            measure_start,
            end: measure_start + opts.duration.as_nanos() as u64,
        }
    }

    #[inline]
    fn measured(&self, intended: u64) -> bool {
        intended >= self.measure_start && intended < self.end
    }
}

/// One second of one worker's measurements, sent to the coordinator.
pub(crate) struct Tick {
    pub worker: usize,
    /// Second `index` of the run (from `t0`).
    pub index: u64,
    /// Last tick this worker will send.
    pub last: bool,
    pub sent: u64,
    pub received: u64,
    /// Corrected latency of the messages received this second that are
    /// *not* measured (warm-up, drain); with `corrected` it makes the
    /// progress line. Kept apart so each message is recorded twice, not
    /// three times.
    pub progress: Histogram<u64>,
    /// Corrected and uncorrected latency of measured messages only.
    pub corrected: Histogram<u64>,
    pub uncorrected: Histogram<u64>,
}

/// What a worker hands back when it stops.
#[derive(Debug)]
pub(crate) struct WorkerResult {
    /// `(publisher, messages sent in the measured window)`.
    pub publishers: Vec<(usize, u64)>,
    pub subscribers: Vec<SubscriberResult>,
    /// Time spent doing work (not waiting or spinning idle), ns.
    pub busy_ns: u64,
    /// Wall time from `t0` to the end of the loop, ns.
    pub run_ns: u64,
    /// How late each measured message was sent (actual − intended), ns.
    pub send_lag: Histogram<u64>,
}

impl WorkerResult {
    /// The result of a worker that never ran.
    fn empty() -> Self {
        WorkerResult {
            publishers: Vec::new(),
            subscribers: Vec::new(),
            busy_ns: 0,
            run_ns: 0,
            send_lag: new_histogram(),
        }
    }
}

/// One subscriber's integrity view and counts.
#[derive(Debug, Default)]
pub(crate) struct SubscriberResult {
    /// Per publisher (without a group).
    pub trackers: Vec<SeqTracker>,
    /// With a group: arrivals out of order within this member.
    pub reordered: u64,
    /// With a group: arrivals the group already had.
    pub duplicated: u64,
    pub corrupt: u64,
    /// Measured messages received.
    pub measured_received: u64,
}

/// What a connection is for.
enum Role {
    Publisher(PubState),
    Subscriber(SubState),
}

struct PubState {
    id: usize,
    subject: Vec<u8>,
    /// Next sequence number.
    seq: u64,
    measured_sent: u64,
    /// Highest delivered count seen (rate 0).
    acked: u64,
    /// Window full at the last attempt (rate 0).
    blocked: bool,
    /// Past the end of the run.
    finished: bool,
}

struct SubState {
    id: usize,
    result: SubscriberResult,
    /// Messages received per publisher (for the window).
    counts: Vec<u64>,
    /// With a group: counts already added to the shared acks.
    published: Vec<u64>,
    /// With a group: last sequence seen per publisher (+1; 0 = none).
    last: Vec<u64>,
}

/// Bytes read and not yet decoded.
struct RecvBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl RecvBuf {
    fn new() -> Self {
        RecvBuf {
            buf: vec![0; READ_SIZE],
            start: 0,
            end: 0,
        }
    }

    /// Room to read into, after moving a partial event to the front or
    /// growing for an event larger than the buffer.
    fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < READ_SIZE / 4 {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < READ_SIZE / 4 {
                let len = self.buf.len() * 2;
                self.buf.resize(len, 0);
            }
        }
        &mut self.buf[self.end..]
    }
}

struct Conn<S> {
    stream: S,
    addr: SocketAddr,
    who: String,
    role: Role,
    inbuf: RecvBuf,
    out: Vec<u8>,
    out_pos: usize,
    /// Registered for writability (output is backed up).
    want_write: bool,
    /// Last `-ERR` reason the server sent, for the drop message.
    last_error: Option<String>,
}

impl<S> Conn<S> {
    fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }
}

/// Per-worker measurements.
struct Meter {
    progress: Histogram<u64>,
    corrected: Histogram<u64>,
    uncorrected: Histogram<u64>,
    sent: u64,
    received: u64,
    /// Send lag of measured messages (not per second: only the total is
    /// reported).
    send_lag: Histogram<u64>,
}

/// Connects, handshakes and runs one worker's connections until told to
/// stop. `publishers` and `subscribers` are the global indices it owns.
pub(crate) fn run_worker(
    worker: usize,
    cpu: Option<usize>,
    publishers: Vec<usize>,
    subscribers: Vec<usize>,
    shared: Arc<Shared>,
    ticks: Sender<Tick>,
    ready: Sender<Result<(), Error>>,
) -> WorkerResult {
    if let Some(cpu) = cpu {
        if let Err(e) = tern::sys::pin_current_thread(&[cpu]) {
            let _ = ready.send(Err(Error::Io {
                what: format!("pinning worker {worker} to CPU {cpu}"),
                source: e,
            }));
            return WorkerResult::empty();
        }
    }
    sys::tight_timer_slack();
    // One loop per transport, each monomorphic: the plain one is the
    // TcpStream loop it always was.
    if shared.tls.is_some() {
        run_on::<TlsStream>(worker, &publishers, &subscribers, shared, &ticks, &ready)
    } else {
        run_on::<TcpStream>(worker, &publishers, &subscribers, shared, &ticks, &ready)
    }
}

fn run_on<S: Transport>(
    worker: usize,
    publishers: &[usize],
    subscribers: &[usize],
    shared: Arc<Shared>,
    ticks: &Sender<Tick>,
    ready: &Sender<Result<(), Error>>,
) -> WorkerResult {
    let mut w = match Worker::<S>::connect(worker, publishers, subscribers, shared) {
        Ok(w) => {
            let _ = ready.send(Ok(()));
            w
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return WorkerResult::empty();
        }
    };
    w.run(ticks);
    w.finish(ticks)
}

struct Worker<S> {
    id: usize,
    shared: Arc<Shared>,
    poller: Poller,
    conns: Vec<Conn<S>>,
    /// The publishers' protocol.
    codec: Codec,
    /// The subscribers' protocol (the publishers' unless a mixed run).
    sub_codec: Codec,
    payload: PayloadCodec,
    meter: Meter,
    busy_ns: u64,
    started_ns: u64,
    tick_index: u64,
    /// Other workers exist (window acks may come from another thread).
    remote_acks: bool,
}

impl<S: Transport> Worker<S> {
    fn connect(
        id: usize,
        publishers: &[usize],
        subscribers: &[usize],
        shared: Arc<Shared>,
    ) -> Result<Self, Error> {
        let opts = &shared.opts;
        let codec = Codec::new(opts.protocol, opts.terminator.clone());
        let sub_codec = Codec::new(opts.subscriber_protocol(), opts.terminator.clone());
        // Payloads every receiving protocol can carry.
        let line_involved = [opts.protocol, opts.subscriber_protocol()].contains(&Protocol::Line);
        let alphabet = if line_involved {
            Alphabet::for_terminator(opts.terminator.as_bytes())
        } else {
            Alphabet::decimal()
        };
        let payload = PayloadCodec::new(alphabet, opts.size);
        let subjects = opts.subject_names();
        let poller = Poller::new(256).map_err(|e| Error::Io {
            what: "creating an epoll instance".into(),
            source: e,
        })?;
        let p = opts.publishers;
        let login = Login {
            credentials: opts.credentials.as_ref(),
            tls: S::TLS,
        };
        let tls = shared.tls.as_ref();
        let mut conns = Vec::new();
        // Subscribers first: they must be in force before anyone publishes
        // (the coordinator only starts the clock once every worker is
        // ready, so this order is a courtesy, not a requirement).
        for &s in subscribers {
            let who = format!("subscriber {s}");
            let mut hello = Vec::new();
            let expect =
                sub_codec.subscriber_hello(&mut hello, &subjects, opts.group.as_deref(), login);
            let addr = opts.subscriber_target(s);
            let (stream, leftover) =
                handshake::<S>(&who, addr, opts, tls, &sub_codec, &hello, expect)?;
            let role = Role::Subscriber(SubState {
                id: s,
                result: SubscriberResult {
                    trackers: if opts.group.is_some() {
                        Vec::new()
                    } else {
                        vec![SeqTracker::default(); p]
                    },
                    ..Default::default()
                },
                counts: vec![0; p],
                published: vec![0; p],
                last: vec![0; p],
            });
            conns.push(Conn::new(stream, addr, who, role, leftover));
        }
        for &pi in publishers {
            let who = format!("publisher {pi}");
            let mut hello = Vec::new();
            let expect = codec.publisher_hello(&mut hello, login);
            let addr = opts.target_for(pi);
            let (stream, leftover) = handshake::<S>(&who, addr, opts, tls, &codec, &hello, expect)?;
            let role = Role::Publisher(PubState {
                id: pi,
                subject: subjects[pi % subjects.len()].clone().into_bytes(),
                seq: 0,
                measured_sent: 0,
                acked: 0,
                blocked: false,
                finished: false,
            });
            conns.push(Conn::new(stream, addr, who, role, leftover));
        }
        for (token, c) in conns.iter().enumerate() {
            c.stream
                .socket()
                .set_nonblocking(true)
                .map_err(|e| Error::Io {
                    what: format!("{}: making the socket non-blocking", c.who),
                    source: e,
                })?;
            poller
                .add(&c.stream, token as u64, Interest::READ)
                .map_err(|e| Error::Io {
                    what: format!("{}: registering with epoll", c.who),
                    source: e,
                })?;
        }
        let remote_acks = shared.delivered.len() > 1;
        Ok(Worker {
            id,
            poller,
            conns,
            codec,
            sub_codec,
            payload,
            meter: Meter {
                progress: new_histogram(),
                corrected: new_histogram(),
                uncorrected: new_histogram(),
                sent: 0,
                received: 0,
                send_lag: new_histogram(),
            },
            busy_ns: 0,
            started_ns: 0,
            tick_index: 0,
            remote_acks,
            shared,
        })
    }

    fn run(&mut self, ticks: &Sender<Tick>) {
        let shared = self.shared.clone();
        // Wait for the coordinator's go, still answering the server.
        while !shared.go.load(Ordering::Acquire) {
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            if let Err(e) = self.poll(&shared, Some(Duration::from_millis(1))) {
                shared.fail(e);
                return;
            }
        }
        let tl = Timeline::new(shared.t0.load(Ordering::Acquire), &shared.opts);
        self.started_ns = tl.t0;
        let mut next_tick = tl.t0 + 1_000_000_000;
        let mut ready = Vec::with_capacity(64);
        loop {
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            let turn_start = shared.clock.now_ns();
            let mut worked = false;
            for i in 0..self.conns.len() {
                if matches!(self.conns[i].role, Role::Publisher(_)) {
                    worked |= self.publish(&shared, i, &tl);
                }
            }
            let now = shared.clock.now_ns();
            while now >= next_tick {
                self.send_tick(ticks, false);
                next_tick += 1_000_000_000;
            }
            if worked {
                self.busy_ns += now - turn_start;
            }
            let mut timeout = self.timeout(&tl, now, next_tick);
            if S::TLS && self.holds_input() {
                timeout = Some(Duration::ZERO);
            }
            ready.clear();
            if let Err(e) = self
                .poller
                .wait(timeout, |r| ready.push(r))
                .map_err(|e| Error::Io {
                    what: "waiting in epoll".into(),
                    source: e,
                })
            {
                shared.fail(e);
                return;
            }
            if S::TLS && self.holds_input() {
                let io_start = shared.clock.now_ns();
                if let Err(e) = self.read_held(&shared, Some(&tl)) {
                    shared.fail(e);
                    return;
                }
                self.busy_ns += shared.clock.now_ns() - io_start;
            }
            if ready.is_empty() {
                continue;
            }
            let io_start = shared.clock.now_ns();
            for r in ready.iter() {
                let i = r.token as usize;
                let result = if r.writable {
                    self.flush(&shared, i)
                } else {
                    Ok(())
                }
                .and_then(|()| {
                    if r.readable || r.closed {
                        self.read(&shared, i, Some(&tl))
                    } else {
                        Ok(())
                    }
                });
                if let Err(e) = result {
                    shared.fail(e);
                    return;
                }
            }
            self.busy_ns += shared.clock.now_ns() - io_start;
        }
    }

    /// How long to wait in epoll: until the next message is due, the next
    /// tick or the end of the run, whichever is first; zero (spin) when it
    /// is close or when a publisher can send right away.
    fn timeout(&self, tl: &Timeline, now: u64, next_tick: u64) -> Option<Duration> {
        let opts = &self.shared.opts;
        if opts.busy_poll {
            return Some(Duration::ZERO);
        }
        let mut deadline = next_tick;
        for c in &self.conns {
            let Role::Publisher(p) = &c.role else {
                continue;
            };
            if p.finished {
                continue;
            }
            deadline = deadline.min(tl.end);
            if c.pending() >= HIGH_WATER {
                continue; // waits for writability
            }
            if opts.rate > 0 {
                deadline = deadline.min(due(tl, opts, p.id, p.seq));
            } else if !p.blocked || self.remote_acks {
                // Can send now, or waits on acks another thread publishes
                // without waking us: spin.
                return Some(Duration::ZERO);
            }
        }
        let left = deadline.saturating_sub(now);
        if left <= SPIN_NS {
            Some(Duration::ZERO)
        } else {
            Some(Duration::from_nanos(left - SPIN_NS / 2).min(MAX_SLEEP))
        }
    }

    /// Appends every message publisher `i` owes now and writes them.
    /// Returns whether it sent anything.
    fn publish(&mut self, shared: &Shared, i: usize, tl: &Timeline) -> bool {
        let opts = &shared.opts;
        let subscribers = opts.subscribers;
        let grouped = opts.group.is_some();
        let conn = &mut self.conns[i];
        let Role::Publisher(p) = &mut conn.role else {
            return false;
        };
        if p.finished {
            return false;
        }
        let mut now = shared.clock.now_ns();
        let first_seq = p.seq;
        let mut n = 0u32;
        while conn.out.len() - conn.out_pos < HIGH_WATER {
            let intended = if opts.rate > 0 {
                let t = due(tl, opts, p.id, p.seq);
                if t >= tl.end {
                    p.finished = true;
                    break;
                }
                if t > now {
                    break;
                }
                t
            } else {
                if now >= tl.end {
                    p.finished = true;
                    break;
                }
                if p.seq - p.acked >= opts.window as u64 {
                    p.acked = acked(shared, p.id, subscribers, grouped);
                    if p.seq - p.acked >= opts.window as u64 {
                        p.blocked = true;
                        break;
                    }
                }
                p.blocked = false;
                now
            };
            let stamp = Stamp {
                publisher: p.id as u32,
                seq: p.seq,
                intended_ns: intended,
                actual_ns: now.max(intended),
            };
            let payload = &self.payload;
            self.codec.publish(
                &mut conn.out,
                &p.subject,
                payload.encoded_len(&stamp),
                |o| payload.encode(&stamp, o),
            );
            if tl.measured(intended) {
                p.measured_sent += 1;
                if opts.rate > 0 {
                    self.meter
                        .send_lag
                        .saturating_record(stamp.actual_ns - intended);
                }
            }
            p.seq += 1;
            n += 1;
            // Keep the actual-send stamps honest in a long batch.
            if n.is_multiple_of(64) {
                now = shared.clock.now_ns();
            }
        }
        let sent = p.seq - first_seq;
        let (id, finished, seq) = (p.id, p.finished, p.seq);
        if sent > 0 {
            shared.sent[id].store(seq, Ordering::Release);
            self.meter.sent += sent;
        }
        if let Err(e) = self.flush(shared, i) {
            shared.fail(e);
            return true;
        }
        if finished && self.conns[i].pending() == 0 {
            shared.done[id].store(true, Ordering::Release);
        }
        sent > 0
    }

    /// Writes as much pending output of connection `i` as the socket takes.
    fn flush(&mut self, shared: &Shared, i: usize) -> Result<(), Error> {
        let conn = &mut self.conns[i];
        while conn.out_pos < conn.out.len() {
            match conn.stream.write(&conn.out[conn.out_pos..]) {
                Ok(0) => return Err(conn.dropped("the socket accepts no more data")),
                Ok(n) => conn.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(conn.dropped(&e.to_string())),
            }
        }
        let mut backed_up = conn.out_pos < conn.out.len();
        if !backed_up {
            conn.out.clear();
            conn.out_pos = 0;
            // TLS: records the socket did not take wait inside the stream;
            // they keep the connection registered for writability.
            if S::TLS {
                backed_up = !conn
                    .stream
                    .flush_held()
                    .map_err(|e| conn.dropped(&e.to_string()))?;
            }
        }
        if backed_up != conn.want_write {
            conn.want_write = backed_up;
            self.poller
                .modify(
                    &conn.stream,
                    i as u64,
                    Interest {
                        read: true,
                        write: backed_up,
                    },
                )
                .map_err(|e| Error::Io {
                    what: format!("{}: changing epoll interest", conn.who),
                    source: e,
                })?;
        }
        // A publisher that finished but was backed up is done once drained.
        if let Role::Publisher(p) = &conn.role {
            if p.finished && !backed_up {
                shared.done[p.id].store(true, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Reads and handles everything connection `i` has for us. `tl` is
    /// `None` before the run starts (nothing is measured then).
    fn read(&mut self, shared: &Shared, i: usize, tl: Option<&Timeline>) -> Result<(), Error> {
        for _ in 0..8 {
            let conn = &mut self.conns[i];
            let spare = conn.inbuf.spare();
            let want = spare.len();
            let n = match conn.stream.read(spare) {
                Ok(0) => return Err(conn.dropped("closed by the server")),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(conn.dropped(&e.to_string())),
            };
            conn.inbuf.end += n;
            let now = shared.clock.now_ns();
            self.handle_input(shared, i, now, tl)?;
            if n < want {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Decodes and handles every complete event in connection `i`'s buffer.
    fn handle_input(
        &mut self,
        shared: &Shared,
        i: usize,
        now: u64,
        tl: Option<&Timeline>,
    ) -> Result<(), Error> {
        let conn = &mut self.conns[i];
        let mut deliveries = 0u64;
        let mut reply = Vec::new();
        {
            let Conn {
                inbuf,
                role,
                who,
                last_error,
                addr: conn_addr,
                ..
            } = conn;
            let conn_addr = *conn_addr;
            let codec = match role {
                Role::Subscriber(_) => &self.sub_codec,
                Role::Publisher(_) => &self.codec,
            };
            loop {
                let buf = &inbuf.buf[inbuf.start..inbuf.end];
                let (event, used) = match codec.decode(buf) {
                    Ok(Some(x)) => x,
                    Ok(None) => break,
                    Err(e) => {
                        return Err(Error::Unexpected {
                            who: who.clone(),
                            addr: conn_addr,
                            answer: e.to_string(),
                        })
                    }
                };
                match event {
                    Event::Msg { payload, .. } => match role {
                        Role::Subscriber(s) => {
                            deliveries += 1;
                            on_message(shared, &self.payload, s, &mut self.meter, payload, now, tl);
                        }
                        Role::Publisher(_) => {
                            return Err(Error::Unexpected {
                                who: who.clone(),
                                addr: conn_addr,
                                answer: format!(
                                    "a message on a publishing connection: {}",
                                    printable(buf)
                                ),
                            })
                        }
                    },
                    Event::Ping => codec.pong(&mut reply),
                    Event::Pong
                    | Event::Ok
                    | Event::Info
                    | Event::Published
                    | Event::Subscribed
                    | Event::Ignored => {}
                    Event::Error(reason) => {
                        let reason = printable(reason);
                        *last_error = Some(reason.clone());
                        if reason.to_ascii_lowercase().contains("slow consumer") {
                            return Err(Error::Dropped {
                                who: who.clone(),
                                addr: Some(conn_addr),
                                detail: format!(
                                    "the server closed it as a slow consumer (-ERR {reason}): \
                                     the generator read too slowly; give it more --cores, \
                                     or lower --rate or --window"
                                ),
                            });
                        }
                        // The line protocol keeps the connection open
                        // after -ERR, but a refused frame is a lost
                        // message: stop with the reason.
                        return Err(Error::Refused {
                            who: who.clone(),
                            addr: conn_addr,
                            phase: "run",
                            reason,
                        });
                    }
                    Event::Other(frame) => {
                        return Err(Error::Unexpected {
                            who: who.clone(),
                            addr: conn_addr,
                            answer: printable(&frame[..frame.len().min(120)]),
                        })
                    }
                }
                inbuf.start += used;
            }
        }
        if deliveries > 0 {
            self.meter.received += deliveries;
            shared.delivered[self.id].fetch_add(deliveries, Ordering::Relaxed);
            if let Role::Subscriber(s) = &mut conn.role {
                publish_acks(shared, s);
            }
        }
        if !reply.is_empty() {
            conn.out.extend_from_slice(&reply);
            self.flush(shared, i)?;
        }
        Ok(())
    }

    /// Polls once (before the run: answers keep-alives, notices drops).
    fn poll(&mut self, shared: &Shared, timeout: Option<Duration>) -> Result<(), Error> {
        let mut ready = Vec::new();
        self.poller
            .wait(timeout, |r| ready.push(r))
            .map_err(|e| Error::Io {
                what: "waiting in epoll".into(),
                source: e,
            })?;
        for r in ready {
            if r.readable || r.closed {
                self.read(shared, r.token as usize, None)?;
            }
        }
        if S::TLS {
            self.read_held(shared, None)?;
        }
        Ok(())
    }

    /// TLS: whether a connection may hold decrypted input that epoll cannot
    /// report (its last read stopped at `read`'s eighth full buffer).
    fn holds_input(&self) -> bool {
        self.conns.iter().any(|c| c.stream.holds_input())
    }

    /// Reads the connections that may hold decrypted input.
    fn read_held(&mut self, shared: &Shared, tl: Option<&Timeline>) -> Result<(), Error> {
        for i in 0..self.conns.len() {
            if self.conns[i].stream.holds_input() {
                self.read(shared, i, tl)?;
            }
        }
        Ok(())
    }

    fn send_tick(&mut self, ticks: &Sender<Tick>, last: bool) {
        let m = &mut self.meter;
        let tick = Tick {
            worker: self.id,
            index: self.tick_index,
            last,
            sent: std::mem::take(&mut m.sent),
            received: std::mem::take(&mut m.received),
            progress: m.progress.clone(),
            corrected: m.corrected.clone(),
            uncorrected: m.uncorrected.clone(),
        };
        m.progress.reset();
        m.corrected.reset();
        m.uncorrected.reset();
        self.tick_index += 1;
        // The coordinator may be gone after a failure: nothing to do then.
        let _ = ticks.send(tick);
    }

    fn finish(mut self, ticks: &Sender<Tick>) -> WorkerResult {
        let now = self.shared.clock.now_ns();
        self.send_tick(ticks, true);
        let mut result = WorkerResult {
            busy_ns: self.busy_ns,
            run_ns: now.saturating_sub(self.started_ns),
            publishers: Vec::new(),
            subscribers: Vec::new(),
            send_lag: std::mem::replace(&mut self.meter.send_lag, new_histogram()),
        };
        for c in self.conns {
            match c.role {
                Role::Publisher(p) => result.publishers.push((p.id, p.measured_sent)),
                Role::Subscriber(s) => result.subscribers.push(s.result),
            }
        }
        result
    }
}

impl<S: Transport> Conn<S> {
    fn new(stream: S, addr: SocketAddr, who: String, role: Role, leftover: Vec<u8>) -> Self {
        let mut inbuf = RecvBuf::new();
        let spare = inbuf.spare();
        if leftover.len() <= spare.len() {
            spare[..leftover.len()].copy_from_slice(&leftover);
            inbuf.end = leftover.len();
        }
        Conn {
            stream,
            addr,
            who,
            role,
            inbuf,
            out: Vec::with_capacity(HIGH_WATER * 2),
            out_pos: 0,
            want_write: false,
            last_error: None,
        }
    }

    fn dropped(&self, detail: &str) -> Error {
        let detail = match &self.last_error {
            Some(reason) => format!("{detail} (it last said: -ERR {reason})"),
            None => detail.to_string(),
        };
        Error::Dropped {
            who: self.who.clone(),
            addr: Some(self.addr),
            detail,
        }
    }
}

/// When publisher `p`'s message `seq` is due: publishers interleave evenly
/// at `rate / publishers` each.
#[inline]
fn due(tl: &Timeline, opts: &Options, p: usize, seq: u64) -> u64 {
    let slot = p as u128 + seq as u128 * opts.publishers as u128;
    tl.t0 + (slot * 1_000_000_000 / opts.rate as u128) as u64
}

/// Messages of publisher `p` delivered to every subscriber (or to the group).
fn acked(shared: &Shared, p: usize, subscribers: usize, grouped: bool) -> u64 {
    if grouped {
        shared.acks[p].load(Ordering::Acquire)
    } else {
        shared.acks[p * subscribers..(p + 1) * subscribers]
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }
}

/// Makes a subscriber's receive counts visible to the publishers' windows.
fn publish_acks(shared: &Shared, s: &mut SubState) {
    if shared.opts.group.is_some() {
        for (p, (&count, published)) in s.counts.iter().zip(s.published.iter_mut()).enumerate() {
            if count != *published {
                shared.acks[p].fetch_add(count - *published, Ordering::Release);
                *published = count;
            }
        }
    } else {
        let subscribers = shared.opts.subscribers;
        for (p, &count) in s.counts.iter().enumerate() {
            shared.acks[p * subscribers + s.id].store(count, Ordering::Release);
        }
    }
}

/// Handles one delivered message at subscriber `s`.
#[inline]
fn on_message(
    shared: &Shared,
    codec: &PayloadCodec,
    s: &mut SubState,
    meter: &mut Meter,
    payload: &[u8],
    now: u64,
    tl: Option<&Timeline>,
) {
    let stamp = match codec.decode(payload) {
        Ok(st) if (st.publisher as usize) < s.counts.len() => st,
        _ => {
            s.result.corrupt += 1;
            return;
        }
    };
    let p = stamp.publisher as usize;
    s.counts[p] += 1;
    if let Some(ledger) = shared.ledgers.get(p) {
        if !ledger.mark(stamp.seq) {
            s.result.duplicated += 1;
        }
        // Within one member a publisher's messages still arrive in order.
        if stamp.seq < s.last[p] {
            s.result.reordered += 1;
        } else {
            s.last[p] = stamp.seq + 1;
        }
    } else {
        s.result.trackers[p].observe(stamp.seq);
    }
    let corrected = now.saturating_sub(stamp.intended_ns).max(1);
    match tl {
        Some(tl) if tl.measured(stamp.intended_ns) => {
            s.result.measured_received += 1;
            meter.corrected.saturating_record(corrected);
            meter
                .uncorrected
                .saturating_record(now.saturating_sub(stamp.actual_ns).max(1));
        }
        _ => meter.progress.saturating_record(corrected),
    }
}

/// What to tell the user about a refusal that is about credentials, if it
/// is one.
fn auth_hint(reason: &str, protocol: Protocol, have_credentials: bool) -> Option<&'static str> {
    let r = reason.to_ascii_lowercase();
    if have_credentials && protocol == Protocol::Line && r == "unknown verb" {
        // docs/protocol.md: AUTH without authentication configured.
        return Some("the relay has no authentication configured: drop --user/--password/--token");
    }
    if r.contains("without any password configured") {
        return Some("the server has no password configured: drop --user/--password/--token");
    }
    if !(r.contains("auth") || r.contains("wrongpass")) {
        return None;
    }
    Some(if have_credentials {
        "check --user/--password or --token"
    } else {
        "the server requires credentials: give --user and --password, or --token"
    })
}

/// Connects to the target and runs a handshake: TLS if `S` is TLS, then
/// sends `hello` and reads until `expect` is met. Blocking, bounded by
/// `--connect-timeout` per read. Returns the stream and any bytes read past
/// the handshake.
fn handshake<S: Transport>(
    who: &str,
    addr: SocketAddr,
    opts: &Options,
    tls: Option<&TlsSetup>,
    codec: &Codec,
    hello: &[u8],
    mut expect: Expect,
) -> Result<(S, Vec<u8>), Error> {
    let mut tcp = TcpStream::connect_timeout(&addr, opts.connect_timeout)
        .map_err(|e| Error::Connect { addr, source: e })?;
    let io = |what: &str, e: io::Error| Error::Io {
        what: format!("{who}: {what}"),
        source: e,
    };
    tcp.set_nodelay(true)
        .map_err(|e| io("setting TCP_NODELAY", e))?;
    tcp.set_read_timeout(Some(opts.connect_timeout))
        .map_err(|e| io("setting a read timeout", e))?;

    let protocol = codec.protocol();
    let mut buf = Vec::with_capacity(4096);
    let mut pos = 0;
    let mut chunk = [0u8; 4096];
    // NATS over TLS: the server's INFO comes in clear text, then the TLS
    // handshake, unless it wants the handshake first (--tls-first).
    if S::TLS && protocol == Protocol::Nats && !tls.is_some_and(|t| t.first) {
        read_clear_info(who, addr, opts, &mut tcp, &mut buf)?;
        match codec.decode(&buf) {
            Ok(Some((Event::Info, used))) => {
                if Info::parse(&buf[..used]).is_some_and(|i| !i.offers_tls()) {
                    return Err(Error::TlsMismatch {
                        addr,
                        detail: "the NATS server does not offer TLS on this port (its INFO has no tls_required or tls_available): drop --tls, or configure TLS on the server".into(),
                    });
                }
            }
            _ => {
                let raw = printable(&buf[..buf.len().min(120)]);
                return Err(match identify(&buf) {
                    Some(server) if server.protocol() != protocol => Error::WrongProtocol {
                        addr,
                        protocol,
                        server,
                        answer: raw,
                    },
                    _ => Error::Unexpected {
                        who: who.into(),
                        addr,
                        answer: format!(
                            "{raw} (expected the NATS server's clear-text INFO before TLS)"
                        ),
                    },
                });
            }
        }
    }
    let mut stream = S::establish(tcp, tls, addr)?;
    stream
        .write_all(hello)
        .map_err(|e| io("sending the handshake", e))?;
    // What to say when the bytes make no sense in our protocol.
    let wrong = |raw: &[u8], fallback: Error| match identify(raw) {
        Some(server) if server.protocol() != protocol => Error::WrongProtocol {
            addr,
            protocol,
            server,
            answer: printable(&raw[..raw.len().min(60)]),
        },
        _ => fallback,
    };
    loop {
        while !expect.done() {
            let (event, used) = match codec.decode(&buf[pos..]) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    return Err(wrong(
                        &buf,
                        Error::Unexpected {
                            who: who.into(),
                            addr,
                            answer: e.to_string(),
                        },
                    ))
                }
            };
            let unexpected = |what: &[u8]| Error::Unexpected {
                who: who.into(),
                addr,
                answer: printable(&what[..what.len().min(120)]),
            };
            if expect.info_first && event != Event::Info {
                return Err(wrong(&buf, unexpected(&buf[pos..pos + used])));
            }
            match event {
                Event::Info => {
                    expect.info_first = false;
                    let info = Info::parse(&buf[pos..pos + used]).unwrap_or_default();
                    if !S::TLS && info.tls_required {
                        return Err(Error::TlsMismatch {
                            addr,
                            detail: "the NATS server requires TLS (its INFO says tls_required): add --tls with --tls-ca PATH (or --tls-insecure)".into(),
                        });
                    }
                }
                Event::Pong => expect.pongs = expect.pongs.saturating_sub(1),
                Event::Subscribed => expect.subscriptions = expect.subscriptions.saturating_sub(1),
                Event::Ping => {
                    let mut pong = Vec::new();
                    codec.pong(&mut pong);
                    stream
                        .write_all(&pong)
                        .map_err(|e| io("answering PING", e))?;
                }
                Event::Ok | Event::Ignored => {}
                Event::Error(reason) => {
                    let reason = printable(reason);
                    if let Some(hint) = auth_hint(&reason, protocol, opts.credentials.is_some()) {
                        return Err(Error::Auth {
                            who: who.into(),
                            addr,
                            reason,
                            hint,
                        });
                    }
                    return Err(wrong(
                        &buf,
                        Error::Refused {
                            who: who.into(),
                            addr,
                            phase: "handshake",
                            reason,
                        },
                    ));
                }
                Event::Msg { .. } | Event::Published | Event::Other(_) => {
                    return Err(wrong(&buf, unexpected(&buf[pos..pos + used])))
                }
            }
            pos += used;
        }
        if expect.done() {
            break;
        }
        match read_within(&mut stream, &mut chunk) {
            Ok(Some(0)) => {
                return Err(wrong(
                    &buf,
                    Error::Dropped {
                        who: who.into(),
                        addr: Some(addr),
                        detail: format!(
                            "closed by the server during the handshake{}",
                            if S::TLS {
                                ""
                            } else {
                                " (if it expects TLS on this port, add --tls)"
                            }
                        ),
                    },
                ))
            }
            Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(None) => {
                let hint = match protocol {
                    Protocol::Line => {
                        " (is it a tern relay, and does it use the same --terminator?)"
                    }
                    _ => " (is it the right server for --protocol?)",
                };
                return Err(wrong(
                    &buf,
                    Error::Timeout {
                        who: who.into(),
                        addr,
                        timeout: opts.connect_timeout,
                        hint,
                    },
                ));
            }
            Err(e) => {
                if let Some(tls_error) = late_handshake_error(addr, tls, &e) {
                    return Err(tls_error);
                }
                return Err(wrong(
                    &buf,
                    Error::Dropped {
                        who: who.into(),
                        addr: Some(addr),
                        detail: format!("{e} during the handshake"),
                    },
                ));
            }
        }
    }
    stream
        .socket()
        .set_read_timeout(None)
        .map_err(|e| io("clearing the read timeout", e))?;
    Ok((stream, buf[pos..].to_vec()))
}

/// One read of a handshake on a socket with a read timeout: `Some(n)`
/// bytes (0: the server closed), `None` if the timeout passed first; an
/// interrupted read is tried again.
fn read_within(stream: &mut impl Read, chunk: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match stream.read(chunk) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads the NATS server's clear-text `INFO` line (up to its `\n`; the
/// server says nothing more before the TLS handshake) into `buf`.
fn read_clear_info(
    who: &str,
    addr: SocketAddr,
    opts: &Options,
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<(), Error> {
    let mut chunk = [0u8; 4096];
    while memchr::memchr(b'\n', buf).is_none() {
        match read_within(tcp, &mut chunk) {
            Ok(Some(0)) => {
                return Err(Error::Dropped {
                    who: who.into(),
                    addr: Some(addr),
                    detail: "closed by the server before its INFO".into(),
                })
            }
            Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(None) => {
                return Err(Error::Timeout {
                    who: who.into(),
                    addr,
                    timeout: opts.connect_timeout,
                    hint: " (a NATS server sends INFO first, unless its TLS is in handshake_first mode: then add --tls-first)",
                })
            }
            Err(e) => {
                return Err(Error::Dropped {
                    who: who.into(),
                    addr: Some(addr),
                    detail: format!("{e} before the server's INFO"),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Credentials, ServerKind};
    use crate::tls::{client_config, test_pki, TlsOptions};
    use std::io::Write;

    /// A one-connection fake server: reads what the client sends (until a
    /// pause), answers `reply`, then keeps the socket open until the
    /// client goes.
    fn fake_server(reply: &'static [u8]) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            s.write_all(reply).unwrap();
            // Hold the connection until the client closes it (bounded).
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        });
        addr
    }

    fn try_handshake(protocol: Protocol, reply: &'static [u8]) -> Result<Vec<u8>, Error> {
        let addr = fake_server(reply);
        let opts = Options {
            protocol,
            connect_timeout: Duration::from_millis(500),
            ..Options::default()
        };
        let codec = Codec::new(protocol, opts.terminator.clone());
        let mut hello = Vec::new();
        let expect = codec.subscriber_hello(&mut hello, &opts.subject_names(), None, Login::NONE);
        handshake::<TcpStream>("subscriber 0", addr, &opts, None, &codec, &hello, expect)
            .map(|(_, rest)| rest)
    }

    #[test]
    fn handshake_explains_credentials_and_plain_text_against_tls() {
        // tern's answer to wrong credentials: a clear error, not a hang.
        let addr = fake_server(b"-ERR authorization failed\n");
        let opts = Options {
            credentials: Some(Credentials::Token("wrong".into())),
            connect_timeout: Duration::from_millis(500),
            ..Options::default()
        };
        let codec = Codec::new(Protocol::Line, opts.terminator.clone());
        let mut hello = Vec::new();
        let login = Login {
            credentials: opts.credentials.as_ref(),
            tls: false,
        };
        let expect = codec.publisher_hello(&mut hello, login);
        match handshake::<TcpStream>("publisher 0", addr, &opts, None, &codec, &hello, expect) {
            Err(e @ Error::Auth { .. }) => {
                let m = e.to_string();
                assert!(
                    m.contains("authorization failed") && m.contains("--token"),
                    "{m}"
                )
            }
            other => panic!("expected Auth, got {other:?}"),
        }
        // No credentials given to a server that wants them.
        match try_handshake(
            Protocol::Nats,
            b"INFO {}\r\n-ERR 'Authorization Violation'\r\n",
        ) {
            Err(e @ Error::Auth { .. }) => {
                assert!(e.to_string().contains("give --user and --password"), "{e}")
            }
            other => panic!("expected Auth, got {other:?}"),
        }
        // A plain client at a NATS server that requires TLS.
        match try_handshake(
            Protocol::Nats,
            b"INFO {\"tls_required\":true,\"auth_required\":true}\r\n",
        ) {
            Err(e @ Error::TlsMismatch { .. }) => assert!(e.to_string().contains("--tls"), "{e}"),
            other => panic!("expected TlsMismatch, got {other:?}"),
        }
        assert_eq!(auth_hint("unknown verb", Protocol::Line, false), None);
        assert!(auth_hint("unknown verb", Protocol::Line, true)
            .unwrap()
            .contains("no authentication"));
        assert!(auth_hint(
            "WRONGPASS invalid username-password pair",
            Protocol::Redis,
            true
        )
        .is_some());
        assert_eq!(
            auth_hint("too many subscriptions", Protocol::Line, true),
            None
        );
    }

    /// A one-connection TLS server: `clear` sent in clear text first (a NATS
    /// INFO), then the TLS handshake, then after the client's first bytes,
    /// `reply` over TLS; then holds the connection until the client goes.
    /// Returns what it received over TLS.
    fn tls_server(
        server: Arc<rustls::ServerConfig>,
        clear: &'static [u8],
        reply: &'static [u8],
    ) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(clear).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let conn = rustls::ServerConnection::new(server).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, s);
            let mut got = vec![0u8; 4096];
            let n = match tls.read(&mut got) {
                Ok(n) => n,
                Err(_) => return Vec::new(), // the client gave up
            };
            got.truncate(n);
            tls.write_all(reply).unwrap();
            let mut rest = [0u8; 4096];
            while matches!(tls.read(&mut rest), Ok(n) if n > 0) {}
            got
        });
        (addr, h)
    }

    fn tls_handshake(
        protocol: Protocol,
        tls: TlsOptions,
        addr: SocketAddr,
    ) -> Result<(TlsStream, Vec<u8>), Error> {
        let opts = Options {
            protocol,
            connect_timeout: Duration::from_secs(2),
            credentials: Some(Credentials::User {
                user: "bench".into(),
                password: "pw".into(),
            }),
            tls: Some(tls),
            ..Options::default()
        };
        let setup = client_config(opts.tls.as_ref().unwrap()).unwrap();
        let codec = Codec::new(protocol, opts.terminator.clone());
        let mut hello = Vec::new();
        let login = Login {
            credentials: opts.credentials.as_ref(),
            tls: true,
        };
        let expect = codec.publisher_hello(&mut hello, login);
        handshake::<TlsStream>(
            "publisher 0",
            addr,
            &opts,
            Some(&setup),
            &codec,
            &hello,
            expect,
        )
    }

    fn tls_opts(ca: &std::path::Path, name: &str, first: bool) -> TlsOptions {
        TlsOptions {
            ca: Some(ca.to_path_buf()),
            insecure: false,
            server_name: name.into(),
            cert: None,
            key: None,
            first,
        }
    }

    #[test]
    fn tls_handshakes_for_each_protocol_order() {
        let pki = test_pki::pki("order", &["localhost"]);
        // Line protocol: TLS from the first byte, AUTH first inside it.
        let (addr, h) = tls_server(pki.server.clone(), b"", b"PONG\nMSG a early\n");
        let (_s, rest) = tls_handshake(
            Protocol::Line,
            tls_opts(&pki.ca_pem, "localhost", false),
            addr,
        )
        .unwrap();
        assert_eq!(rest, b"MSG a early\n");
        drop(_s);
        assert_eq!(h.join().unwrap(), b"AUTH bench pw\nPING\n");

        // NATS: INFO in clear text, then TLS, then CONNECT over it.
        let (addr, h) = tls_server(
            pki.server.clone(),
            b"INFO {\"tls_required\":true}\r\n",
            b"PONG\r\n",
        );
        let (s, rest) = tls_handshake(
            Protocol::Nats,
            tls_opts(&pki.ca_pem, "localhost", false),
            addr,
        )
        .unwrap();
        assert!(rest.is_empty());
        drop(s);
        let got = String::from_utf8(h.join().unwrap()).unwrap();
        assert!(
            got.starts_with("CONNECT {") && got.contains(r#""tls_required":true"#),
            "{got}"
        );
        assert!(got.contains(r#""user":"bench","pass":"pw""#), "{got}");

        // NATS handshake_first: TLS at once, INFO over TLS.
        let (addr, h) = tls_server(pki.server.clone(), b"", b"INFO {}\r\nPONG\r\n");
        let (s, _) = tls_handshake(
            Protocol::Nats,
            tls_opts(&pki.ca_pem, "localhost", true),
            addr,
        )
        .unwrap();
        drop(s);
        assert!(h.join().unwrap().starts_with(b"CONNECT {"));
    }

    #[test]
    fn tls_failures_say_what_to_check() {
        let pki = test_pki::pki("fail", &["localhost"]);
        let other = test_pki::pki("other", &["localhost"]);
        let expect_tls = |r: Result<(TlsStream, Vec<u8>), Error>, needles: &[&str]| match r {
            Err(e @ Error::Tls { .. }) => {
                let m = e.to_string();
                assert!(m.starts_with("TLS handshake with 127.0.0.1:"), "{m}");
                for n in needles {
                    assert!(m.contains(n), "`{n}` not in: {m}");
                }
            }
            Err(e) => panic!("expected a TLS error, got {e}"),
            Ok(_) => panic!("expected a TLS error, got a connection"),
        };
        // Signed by another CA.
        let (addr, _h) = tls_server(pki.server.clone(), b"", b"");
        expect_tls(
            tls_handshake(
                Protocol::Line,
                tls_opts(&other.ca_pem, "localhost", false),
                addr,
            ),
            &["--tls-ca"],
        );
        // Issued for another name.
        let (addr, _h) = tls_server(pki.server.clone(), b"", b"");
        expect_tls(
            tls_handshake(
                Protocol::Line,
                tls_opts(&pki.ca_pem, "relay.example", false),
                addr,
            ),
            &["--tls-server-name", "relay.example"],
        );
        // --tls-first at a NATS server that sends INFO in clear text first.
        let (addr, _h) = tls_server(pki.server.clone(), b"INFO {\"tls_required\":true}\r\n", b"");
        expect_tls(
            tls_handshake(
                Protocol::Nats,
                tls_opts(&pki.ca_pem, "localhost", true),
                addr,
            ),
            &["drop --tls-first"],
        );
        // --tls at a plain NATS server.
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let plain_addr = plain.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = plain.accept().unwrap();
            s.write_all(b"INFO {\"server_id\":\"x\"}\r\n").unwrap();
            let mut b = [0u8; 64];
            let _ = s.read(&mut b);
        });
        match tls_handshake(
            Protocol::Nats,
            tls_opts(&pki.ca_pem, "localhost", false),
            plain_addr,
        ) {
            Err(e @ Error::TlsMismatch { .. }) => {
                assert!(e.to_string().contains("drop --tls"), "{e}")
            }
            Err(e) => panic!("expected TlsMismatch, got {e}"),
            Ok(_) => panic!("expected TlsMismatch, got a connection"),
        }
        h.join().unwrap();
    }

    #[test]
    fn handshake_succeeds_and_keeps_early_bytes() {
        let rest = try_handshake(Protocol::Line, b"PONG\nMSG bench.0 early\n").unwrap();
        assert_eq!(rest, b"MSG bench.0 early\n");
        let rest = try_handshake(Protocol::Nats, b"INFO {}\r\nPONG\r\n").unwrap();
        assert!(rest.is_empty());
        try_handshake(
            Protocol::Redis,
            b"*3\r\n$9\r\nsubscribe\r\n$7\r\nbench.0\r\n:1\r\n",
        )
        .unwrap();
    }

    #[test]
    fn handshake_names_the_server_that_answered() {
        let cases: [(Protocol, &'static [u8], ServerKind); 4] = [
            (
                Protocol::Line,
                b"-ERR unknown command 'SUB'\r\n+PONG\r\n",
                ServerKind::Redis,
            ),
            (
                Protocol::Line,
                b"INFO {\"server_id\":\"x\"}\r\n",
                ServerKind::Nats,
            ),
            (
                Protocol::Redis,
                b"-ERR unknown verb\n-ERR unknown verb\nPONG\n",
                ServerKind::Tern,
            ),
            (
                Protocol::Nats,
                b"-ERR unknown verb\nPONG\n",
                ServerKind::Tern,
            ),
        ];
        for (protocol, reply, expected) in cases {
            match try_handshake(protocol, reply) {
                Err(Error::WrongProtocol { server, .. }) => {
                    assert_eq!(server, expected, "{protocol}")
                }
                other => panic!("{protocol}: expected WrongProtocol, got {other:?}"),
            }
        }
    }

    #[test]
    fn handshake_reports_refusals_and_silence() {
        match try_handshake(Protocol::Line, b"-ERR too many subscriptions\nPONG\n") {
            Err(Error::Refused { reason, .. }) => assert_eq!(reason, "too many subscriptions"),
            other => panic!("expected Refused, got {other:?}"),
        }
        match try_handshake(Protocol::Line, b"") {
            Err(Error::Timeout { hint, .. }) => assert!(hint.contains("--terminator")),
            other => panic!("expected Timeout, got {other:?}"),
        }
    }

    #[test]
    fn schedule_interleaves_publishers_evenly() {
        let opts = Options {
            publishers: 2,
            rate: 1_000,
            ..Options::default()
        };
        let tl = Timeline::new(100, &opts);
        // 500/s each, offset by 1 ms: 0, 1, 2, 3 ms …
        assert_eq!(due(&tl, &opts, 0, 0), 100);
        assert_eq!(due(&tl, &opts, 1, 0), 100 + 1_000_000);
        assert_eq!(due(&tl, &opts, 0, 1), 100 + 2_000_000);
        assert_eq!(due(&tl, &opts, 1, 1), 100 + 3_000_000);
    }

    #[test]
    fn timeline_measures_only_after_warmup() {
        let opts = Options {
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(2),
            ..Options::default()
        };
        let tl = Timeline::new(10, &opts);
        assert!(!tl.measured(10));
        assert!(tl.measured(10 + 1_000_000_000));
        assert!(!tl.measured(10 + 3_000_000_000));
    }

    #[test]
    fn recv_buf_compacts_and_grows() {
        let mut b = RecvBuf::new();
        let n = b.spare().len();
        assert_eq!(n, READ_SIZE);
        b.start = READ_SIZE / 2;
        b.end = READ_SIZE - 10;
        let spare = b.spare().len();
        assert_eq!(
            (b.start, b.end),
            (0, READ_SIZE / 2 - 10),
            "partial event moved to the front"
        );
        assert_eq!(spare, READ_SIZE / 2 + 10);
        // No way to make room but to grow: one event fills the buffer.
        b.end = READ_SIZE;
        assert!(b.spare().len() >= READ_SIZE);
        assert_eq!(b.end, READ_SIZE);
    }
}
