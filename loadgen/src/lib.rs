//! tern-loadgen: an open-loop, coordinated-omission-free load generator for
//! tern, nats-server and redis-server.
//!
//! Most published latency figures are wrong because the load tool waits for
//! the server: when the server stalls, the tool stops sending, and the
//! stall is measured once instead of for every message that should have
//! been sent during it (coordinated omission). Here publishers send on a
//! fixed schedule and never wait; every payload carries the time it was
//! *supposed* to be sent, and latency is measured from that time.
//!
//! # Layout
//!
//! * [`options`] — what a run does, and its command line.
//! * [`payload`] — the ASCII payload (publisher, sequence, send times).
//! * [`proto`] — encoders and decoders for the line, NATS and Redis
//!   protocols, and the guess of which server answered.
//! * `worker` — one pinned thread per `--cores` entry, an epoll loop
//!   publishing on schedule and receiving.
//! * [`integrity`] — lost, duplicated and reordered messages; queue-group
//!   exactly-once.
//! * [`report`] — the figures, the table, the JSON, the interval log and
//!   the plot.
//! * [`sys`] — the Linux calls std does not wrap that only the load
//!   generator needs (epoll, timer slack); CPU pinning and CPU time come
//!   from [`tern::sys`].
//! * [`forwarder`] — `tern-forwarder`, the floor the benchmarks measure
//!   tern against: a blocking thread per connection that turns `PUB` lines
//!   into `MSG` lines and does nothing else.
//! * [`soak`] — the `tern-soak` harness: hours of well-behaved and hostile
//!   clients against a running relay, failing on any loss, a slow `PING`,
//!   memory past a bound or the relay exiting.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use tern_loadgen::{options::Options, proto::Protocol, run};
//!
//! let report = run(Options {
//!     targets: vec!["127.0.0.1:4222".parse().unwrap()],
//!     protocol: Protocol::Nats,
//!     rate: 50_000,
//!     duration: Duration::from_secs(5),
//!     ..Options::default()
//! })
//! .unwrap();
//! println!("{}", report.table());
//! ```

pub mod forwarder;
pub mod integrity;
pub mod options;
pub mod payload;
pub mod proto;
pub mod report;
pub mod soak;
pub mod sys;
pub mod tls;
mod worker;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriter, IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use tern::sys::CpuClock;

use crate::integrity::Integrity;
use crate::options::Options;
use crate::proto::{Protocol, ServerKind};
use crate::report::{Percentiles, Report};
use crate::worker::{new_histogram, Shared, Tick, Timeline, WorkerResult};

/// Everything that can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Options(String),
    #[error("cannot connect to {addr}: {source} (is the server running? see --target)")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("{addr} does not speak the {protocol} protocol: it answered `{answer}`, which looks like {server}; use --protocol {}", server.protocol())]
    WrongProtocol {
        addr: SocketAddr,
        protocol: Protocol,
        server: ServerKind,
        answer: String,
    },
    #[error("{who}: {addr} refused a command during the {phase}: {reason}")]
    Refused {
        who: String,
        addr: SocketAddr,
        phase: &'static str,
        reason: String,
    },
    #[error("TLS handshake with {addr} failed: {detail}; {hint}")]
    Tls {
        addr: SocketAddr,
        detail: String,
        hint: String,
    },
    /// One side speaks TLS and the other does not.
    #[error("{addr}: {detail}")]
    TlsMismatch { addr: SocketAddr, detail: String },
    #[error("{who}: authentication with {addr} failed: -ERR {reason}; {hint}")]
    Auth {
        who: String,
        addr: SocketAddr,
        reason: String,
        hint: &'static str,
    },
    #[error("{who}: unexpected answer from {addr}: {answer}")]
    Unexpected {
        who: String,
        addr: SocketAddr,
        answer: String,
    },
    #[error("{who}: no answer from {addr} within {timeout:?}{hint}")]
    Timeout {
        who: String,
        addr: SocketAddr,
        timeout: Duration,
        hint: &'static str,
    },
    #[error("{who}: connection{} dropped: {detail}", addr.map(|a| format!(" to {a}")).unwrap_or_default())]
    Dropped {
        who: String,
        addr: Option<SocketAddr>,
        detail: String,
    },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("a worker thread panicked: {0}")]
    Panic(String),
    #[error("interrupted")]
    Interrupted,
}

/// A run that failed, with whatever it measured before it did.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Failure {
    pub error: Error,
    /// The partial results, if the run got as far as starting.
    pub report: Option<Box<Report>>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            error,
            report: None,
        }
    }
}

/// Drain ends early when deliveries stall this long.
const DRAIN_STALL: Duration = Duration::from_secs(1);
/// How long after all workers are ready the clock starts.
const START_DELAY_NS: u64 = 20_000_000;

/// Runs the load described by `opts` and returns its figures; writes the
/// `--json`, `--hdr-log` and `--plot` files; prints per-second progress on
/// stderr unless `--quiet`.
pub fn run(opts: Options) -> Result<Report, Failure> {
    opts.validate()?;
    let cpus = opts.worker_cpus();
    let workers = cpus.len();
    // TLS: the PEM files are read once, before any connection.
    let tls = opts.tls.as_ref().map(tls::client_config).transpose()?;
    let shared = Arc::new(Shared::new(opts.clone(), workers, tls));

    // Connections round-robin over workers: publishers, then subscribers.
    let mut owned = vec![(Vec::new(), Vec::new()); workers];
    for p in 0..opts.publishers {
        owned[p % workers].0.push(p);
    }
    for s in 0..opts.subscribers {
        owned[(opts.publishers + s) % workers].1.push(s);
    }

    // Output files are created before any connection, so a bad path fails
    // fast; the interval log is then written as the seconds complete, so a
    // long run does not keep every second's histograms in memory.
    let mut hdr_file = match &opts.hdr_log {
        Some(path) => Some(BufWriter::new(File::create(path).map_err(|e| {
            Error::Io {
                what: format!("creating --hdr-log {}", path.display()),
                source: e,
            }
        })?)),
        None => None,
    };

    let (tick_tx, tick_rx) = mpsc::channel::<Tick>();
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(workers);
    for (w, (cpu, (pubs, subs))) in cpus.into_iter().zip(owned).enumerate() {
        let (shared, ticks, ready) = (shared.clone(), tick_tx.clone(), ready_tx.clone());
        let h = thread::Builder::new()
            .name(format!("loadgen-{w}"))
            .spawn(move || worker::run_worker(w, cpu, pubs, subs, shared, ticks, ready))
            .map_err(|e| Error::Io {
                what: "starting a worker thread".into(),
                source: e,
            })?;
        handles.push(h);
    }
    drop((tick_tx, ready_tx));

    // Every connection subscribed and confirmed before the clock starts.
    let mut setup_error = None;
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                setup_error.get_or_insert(e);
            }
            Err(_) => {
                setup_error.get_or_insert(Error::Panic("during connection set-up".into()));
                break;
            }
        }
    }
    if let Some(e) = setup_error {
        shared.stop.store(true, Ordering::Release);
        let _ = join(handles);
        return Err(e.into());
    }

    let t0 = shared.clock.now_ns() + START_DELAY_NS;
    let start_wall = SystemTime::now() + Duration::from_nanos(START_DELAY_NS);
    shared.t0.store(t0, Ordering::Release);
    shared.go.store(true, Ordering::Release);
    let tl = Timeline::new(t0, &opts);
    let cpu_at_go = CpuMark::now(shared.clock.now_ns());

    let mut serializer = V2DeflateSerializer::new();
    let mut hdr_error = None;
    let hdr = match hdr_file.as_mut() {
        Some(f) => IntervalLogWriterBuilder::new()
                .add_comment(&format!(
                    "tern-loadgen {}: latency in ns; untagged = corrected (from intended send), tag `uncorrected` = from actual send",
                    env!("CARGO_PKG_VERSION")
                ))
                .with_start_time(start_wall)
                .with_base_time(start_wall)
                .with_max_value_divisor(1_000_000.0)
                .begin_log_with(f, &mut serializer)
                .map_err(|e| hdr_error = Some(hdr_io(e)))
                .ok(),
        None => None,
    };
    let mut agg = Aggregator::new(&opts, workers, hdr);

    // Process CPU time at the start and end of the measured window.
    let mut cpu_start: Option<CpuMark> = None;
    let mut cpu_end: Option<CpuMark> = None;
    let mut drain = DrainWatch::default();
    let mut drained = true;
    loop {
        let now = shared.clock.now_ns();
        if cpu_start.is_none() && now >= tl.measure_start {
            cpu_start = Some(CpuMark::now(now));
        }
        if cpu_end.is_none() && now >= tl.end {
            cpu_end = Some(CpuMark::now(now));
        }
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        if opts
            .interrupt
            .as_ref()
            .is_some_and(|i| i.load(Ordering::Relaxed))
        {
            shared.fail(Error::Interrupted);
            break;
        }
        if now >= tl.end {
            if let Some(complete) = drain.check(&shared, now, tl.end, opts.drain_timeout) {
                drained = complete;
                break;
            }
        }
        match tick_rx.recv_timeout(Duration::from_millis(20)) {
            Ok(t) => agg.add(t),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    shared.stop.store(true, Ordering::Release);
    let end_ns = shared.clock.now_ns();
    let cpu_end = cpu_end.unwrap_or_else(|| CpuMark::now(end_ns));
    let results = join(handles);
    for t in tick_rx.try_iter() {
        agg.add(t);
    }
    let (corrected, uncorrected, log_error) = agg.finish();
    if let Some(f) = hdr_file.as_mut() {
        if let Err(e) = f.flush() {
            hdr_error.get_or_insert(hdr_io(e));
        }
    }
    let hdr_error = hdr_error.or(log_error);

    let failure = shared
        .failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let failure = failure.or(results.as_ref().err().map(|m| Error::Panic(m.clone())));
    let results = results.unwrap_or_default();

    // A run that failed during warm-up is judged from its start.
    let cpu_start = cpu_start.unwrap_or(cpu_at_go);
    let cpu_wall = cpu_end.at_ns.saturating_sub(cpu_start.at_ns).max(1) as f64;
    let cpu_pct = cpu_end.cpu.saturating_sub(cpu_start.cpu).as_nanos() as f64 / cpu_wall * 100.0;
    let measured_ns = end_ns.min(tl.end).saturating_sub(tl.measure_start);

    let measured_s = measured_ns as f64 / 1e9;
    let mut report = build_report(&opts, &shared, &results, measured_s, corrected, uncorrected);
    report.client_cpu_pct = cpu_pct;
    report.client_workers = workers;
    report.drained = drained;
    if let Some(e) = &failure {
        report.complete = false;
        report.error = Some(e.to_string());
    }
    let written = report.write_files(&opts).and(hdr_error.map_or(Ok(()), Err));
    match (failure, written) {
        (None, Ok(())) => Ok(report),
        (Some(error), _) | (None, Err(error)) => Err(Failure {
            error,
            report: Some(Box::new(report)),
        }),
    }
}

fn hdr_io(e: impl std::fmt::Debug) -> Error {
    Error::Io {
        what: "writing --hdr-log".into(),
        source: io::Error::other(format!("{e:?}")),
    }
}

/// The process's CPU time at a moment of the run.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    cpu: Duration,
    at_ns: u64,
}

impl CpuMark {
    fn now(at_ns: u64) -> Self {
        CpuMark {
            cpu: tern::sys::cpu_time(CpuClock::Process),
            at_ns,
        }
    }
}

/// Joins the workers; `Err` names a panic.
fn join(handles: Vec<thread::JoinHandle<WorkerResult>>) -> Result<Vec<WorkerResult>, String> {
    let mut out = Vec::with_capacity(handles.len());
    let mut panic = None;
    for h in handles {
        match h.join() {
            Ok(r) => out.push(r),
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                panic.get_or_insert(msg);
            }
        }
    }
    match panic {
        Some(m) => Err(m),
        None => Ok(out),
    }
}

/// Decides when the messages still in flight after the last publish have
/// arrived (or never will).
#[derive(Default)]
struct DrainWatch {
    last_delivered: u64,
    last_progress_ns: u64,
}

impl DrainWatch {
    /// `Some(true)`: everything arrived; `Some(false)`: gave up; `None`:
    /// keep waiting.
    fn check(&mut self, shared: &Shared, now: u64, end: u64, timeout: Duration) -> Option<bool> {
        if !shared.done.iter().all(|d| d.load(Ordering::Acquire)) {
            // A publisher still flushing a backlog; bounded by the timeout.
            return (now > end + timeout.as_nanos() as u64).then_some(false);
        }
        let expected: u64 = shared
            .sent
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .sum::<u64>()
            * shared.fan_out();
        let delivered: u64 = shared
            .delivered
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .sum();
        if delivered >= expected {
            return Some(true);
        }
        if delivered != self.last_delivered || self.last_progress_ns == 0 {
            self.last_delivered = delivered;
            self.last_progress_ns = now;
        }
        let stalled = now - self.last_progress_ns > DRAIN_STALL.as_nanos() as u64;
        (stalled || now > end + timeout.as_nanos() as u64).then_some(false)
    }
}

/// One second of the whole generator: the workers' ticks merged.
struct Slot {
    reports: usize,
    partial: bool,
    sent: u64,
    received: u64,
    progress: Histogram<u64>,
    corrected: Histogram<u64>,
    uncorrected: Histogram<u64>,
}

/// Merges the workers' ticks second by second: progress lines, the interval
/// log and the run's totals.
struct Aggregator<'a> {
    quiet: bool,
    warmup_s: f64,
    end_s: f64,
    /// Per worker: the next tick index it will send (`u64::MAX` once it
    /// sent its last).
    next: Vec<u64>,
    slots: BTreeMap<u64, Slot>,
    corrected: Histogram<u64>,
    uncorrected: Histogram<u64>,
    hdr: Option<IntervalLogWriter<'a, 'a, BufWriter<File>, V2DeflateSerializer>>,
    /// First failure writing the interval log; writing stops there.
    hdr_error: Option<Error>,
}

impl<'a> Aggregator<'a> {
    fn new(
        opts: &Options,
        workers: usize,
        hdr: Option<IntervalLogWriter<'a, 'a, BufWriter<File>, V2DeflateSerializer>>,
    ) -> Self {
        Aggregator {
            quiet: opts.quiet,
            warmup_s: opts.warmup.as_secs_f64(),
            end_s: (opts.warmup + opts.duration).as_secs_f64(),
            next: vec![0; workers],
            slots: BTreeMap::new(),
            corrected: new_histogram(),
            uncorrected: new_histogram(),
            hdr,
            hdr_error: None,
        }
    }

    fn add(&mut self, t: Tick) {
        let slot = self.slots.entry(t.index).or_insert_with(|| Slot {
            reports: 0,
            partial: false,
            sent: 0,
            received: 0,
            progress: new_histogram(),
            corrected: new_histogram(),
            uncorrected: new_histogram(),
        });
        slot.reports += 1;
        slot.partial |= t.last;
        slot.sent += t.sent;
        slot.received += t.received;
        // Same bounds everywhere: `add` cannot fail.
        // The progress line covers every message: unmeasured and measured.
        let _ = slot.progress.add(&t.progress);
        let _ = slot.progress.add(&t.corrected);
        let _ = slot.corrected.add(&t.corrected);
        let _ = slot.uncorrected.add(&t.uncorrected);
        self.next[t.worker] = if t.last { u64::MAX } else { t.index + 1 };
        let complete_below = self.next.iter().copied().min().unwrap_or(u64::MAX);
        while let Some(entry) = self.slots.first_entry() {
            if *entry.key() >= complete_below {
                break;
            }
            let (index, slot) = entry.remove_entry();
            self.emit(index, slot);
        }
    }

    fn emit(&mut self, index: u64, slot: Slot) {
        let _ = self.corrected.add(&slot.corrected);
        let _ = self.uncorrected.add(&slot.uncorrected);
        if let Some(log) = self.hdr.as_mut() {
            if !slot.corrected.is_empty() {
                let start = Duration::from_secs(index);
                let dur = Duration::from_secs(1);
                let written = log
                    .write_histogram(&slot.corrected, start, dur, None)
                    .and_then(|()| {
                        log.write_histogram(&slot.uncorrected, start, dur, Tag::new("uncorrected"))
                    });
                if let Err(e) = written {
                    self.hdr_error = Some(hdr_io(e));
                    self.hdr = None;
                }
            }
        }
        if !self.quiet && !slot.partial {
            let second = index as f64 + 1.0;
            let phase = if second <= self.warmup_s {
                "  (warm-up)"
            } else if second > self.end_s + 0.5 {
                "  (drain)"
            } else {
                ""
            };
            let pct = |q: f64| {
                if slot.progress.is_empty() {
                    "-".to_string()
                } else {
                    report::fmt_us(slot.progress.value_at_quantile(q) as f64 / 1e3)
                }
            };
            eprintln!(
                "[{:>4}s] sent {:>11}/s  recv {:>11}/s  p50 {:>9} µs  p99 {:>9} µs{phase}",
                index + 1,
                report::fmt_count(slot.sent),
                report::fmt_count(slot.received),
                pct(0.5),
                pct(0.99),
            );
        }
    }

    /// The run's total histograms, and any interval-log failure.
    fn finish(mut self) -> (Histogram<u64>, Histogram<u64>, Option<Error>) {
        let slots = std::mem::take(&mut self.slots);
        for (index, slot) in slots {
            self.emit(index, slot);
        }
        (self.corrected, self.uncorrected, self.hdr_error)
    }
}

/// The figures of a run from the workers' results and the shared state.
fn build_report(
    opts: &Options,
    shared: &Shared,
    results: &[WorkerResult],
    measured_s: f64,
    corrected: Histogram<u64>,
    uncorrected: Histogram<u64>,
) -> Report {
    let sent_total: Vec<u64> = shared
        .sent
        .iter()
        .map(|s| s.load(Ordering::Acquire))
        .collect();
    let mut integrity = Integrity::default();
    let mut send_lag = new_histogram();
    let mut sent = 0;
    let mut received = 0;
    for r in results {
        sent += r.publishers.iter().map(|&(_, n)| n).sum::<u64>();
        let _ = send_lag.add(&r.send_lag);
        for s in &r.subscribers {
            received += s.measured_received;
            integrity.corrupt += s.corrupt;
            integrity.duplicated += s.duplicated;
            integrity.reordered += s.reordered;
            for (p, t) in s.trackers.iter().enumerate() {
                integrity.add(&t.finish(sent_total[p]));
            }
        }
    }
    for (p, ledger) in shared.ledgers.iter().enumerate() {
        integrity.lost += sent_total[p] - ledger.received_below(sent_total[p]);
    }
    // Rates over the time actually measured: the whole duration, or less
    // when the run stopped early.
    let secs = if measured_s > 0.0 {
        measured_s
    } else {
        opts.duration.as_secs_f64()
    };
    let busiest = results
        .iter()
        .filter(|r| r.run_ns > 0)
        .map(|r| r.busy_ns as f64 / r.run_ns as f64 * 100.0)
        .fold(0.0, f64::max);
    Report {
        protocol: opts.protocol,
        target: opts.targets_display(),
        publishers: opts.publishers,
        subscribers: opts.subscribers,
        subjects: opts.subjects,
        group: opts.group.clone(),
        rate: opts.rate,
        window: opts.window,
        size: opts.size,
        duration_s: opts.duration.as_secs_f64(),
        warmup_s: opts.warmup.as_secs_f64(),
        complete: true,
        drained: true,
        error: None,
        sent,
        received,
        expected: sent * shared.fan_out(),
        sent_per_s: sent as f64 / secs,
        received_per_s: received as f64 / secs,
        mb_per_s: received as f64 * opts.size as f64 / 1e6 / secs,
        lost: integrity.lost,
        duplicated: integrity.duplicated,
        reordered: integrity.reordered,
        corrupt: integrity.corrupt,
        sent_total: sent_total.iter().sum(),
        latency_us: Percentiles::of(&corrected),
        service_time_us: Percentiles::of(&uncorrected),
        send_lag_us: Percentiles::of(&send_lag),
        client_cpu_pct: 0.0,
        client_busy_pct: busiest,
        client_workers: 0,
        measured_s,
        latency: corrected,
        service_time: uncorrected,
    }
}
