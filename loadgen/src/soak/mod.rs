//! The soak harness behind `tern-soak`: for a chosen time, well-behaved
//! and hostile clients against a running tern relay, and a verdict.
//!
//! A run is a set of threads sharing one [`context::Ctx`]:
//!
//! * [`streams`] — well-behaved publishers and subscribers with sequence
//!   numbers, both protocols and across shards, judged by [`check`].
//! * [`chaos`] — subscribers that never read, random bytes, half frames
//!   and resets, a 100 MiB unterminated frame, connect/close churn,
//!   SUB/UNSUB storms, a cross-shard flood.
//! * [`probe`] — a `PING` on a fresh connection every second.
//! * [`monitor`] — the relay's memory ([`procfs`]), CPU, `/metrics`
//!   ([`metrics`]) and whether it still runs.
//!
//! The main thread prints a progress line every `--report-every`
//! ([`report`]), stops everything at the deadline (or on Ctrl-C), waits
//! for the last sessions to be judged, and writes the report. Any broken
//! rule ([`failures`]) fails the run. [`client`] is the blocking
//! connection every actor uses; [`rng`] makes the choices repeatable;
//! [`config`] is the command line.

pub mod chaos;
pub mod check;
pub mod client;
pub mod config;
pub mod context;
pub mod failures;
pub mod metrics;
pub mod monitor;
pub mod probe;
pub mod procfs;
pub mod report;
pub mod rng;
pub mod streams;
pub mod tally;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::proto::Protocol;

use self::client::{Client, ClientError};
use self::config::Config;
use self::context::Ctx;
use self::procfs::{ProcError, Process};

/// A run that could not start.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error("--pid: {0}")]
    Process(#[from] ProcError),
    #[error("tern does not answer on {addr} ({protocol}): {source}")]
    Unreachable {
        addr: SocketAddr,
        protocol: Protocol,
        source: ClientError,
    },
    #[error("starting a thread: {0}")]
    Thread(#[from] io::Error),
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// The final report, verdict line last.
    pub report: String,
    /// The first broken rule, in one line; `None` if the run passed.
    pub failure: Option<String>,
}

/// Checks that the relay answers a `PING` on every target.
fn preflight(ctx: &Ctx) -> Result<(), SoakError> {
    for (addr, protocol) in probe::targets(ctx) {
        Client::open(addr, protocol, Duration::from_secs(5))
            .and_then(|mut c| c.hello(Duration::from_secs(5)))
            .map_err(|source| SoakError::Unreachable {
                addr,
                protocol,
                source,
            })?;
    }
    Ok(())
}

/// Runs the soak `config` describes, printing progress to `out`; an
/// `interrupt` flag set (Ctrl-C) ends it early with a report.
pub fn run(
    config: Config,
    interrupt: Option<Arc<AtomicBool>>,
    out: &mut impl Write,
) -> Result<Outcome, SoakError> {
    let process = config.pid.map(Process::new).transpose()?;
    let ctx = Arc::new(Ctx::new(config));
    preflight(&ctx)?;
    if let Some(p) = &process {
        monitor::sample(&ctx, p);
        ctx.tern.rss_start.set(ctx.tern.rss_now.get());
        ctx.tern.cpu_start_ms.set(ctx.tern.cpu_now_ms.get());
    }
    monitor::scrape(&ctx, true);
    let _ = writeln!(out, "tern-soak: {}", ctx.config);
    let _ = writeln!(
        out,
        "tern-soak: RSS bound {:.1} MiB ({})",
        monitor::mib(ctx.config.rss_limit),
        ctx.config.rss_basis
    );

    let mut handles = Vec::new();
    let spawn =
        |name: &str, f: Box<dyn FnOnce() + Send>| thread::Builder::new().name(name.into()).spawn(f);
    let c = ctx.clone();
    handles.push(spawn(
        "soak-monitor",
        Box::new(move || monitor::run(c, process.clone())),
    )?);
    let c = ctx.clone();
    handles.push(spawn("soak-probe", Box::new(move || probe::run(c)))?);
    handles.extend(streams::spawn_all(&ctx)?);
    handles.extend(chaos::spawn_all(&ctx)?);

    let every = ctx.config.report_every;
    let mut next_report = Instant::now() + every;
    let mut interrupted = false;
    while ctx.running() {
        if interrupt
            .as_ref()
            .is_some_and(|i| i.load(Ordering::Relaxed))
        {
            interrupted = true;
            ctx.stop();
            break;
        }
        thread::sleep(Duration::from_millis(100));
        if Instant::now() >= next_report {
            let _ = writeln!(out, "{}", report::progress(&ctx));
            let _ = out.flush();
            next_report += every;
        }
    }
    ctx.stop();
    let _ = writeln!(
        out,
        "tern-soak: stopping; the last sessions are being checked"
    );
    let _ = out.flush();
    for h in handles {
        if h.join().is_err() {
            ctx.fail(
                failures::Rule::WellBehaved,
                "a soak thread panicked (a bug in tern-soak)".into(),
            );
        }
    }
    // The relay must still be there, and its last figures count.
    if let Some(pid) = ctx.config.pid {
        if let Ok(p) = Process::new(pid) {
            monitor::sample(&ctx, &p);
        } else if !ctx.aborted() {
            ctx.fail(failures::Rule::Exit, format!("tern (pid {pid}) exited"));
            ctx.abort();
        }
    }
    // The relay's gauges once every soak connection is gone: closes are
    // handled asynchronously, so give them up to 5 s to reach 0.
    let settle = Instant::now() + Duration::from_secs(5);
    loop {
        monitor::scrape(&ctx, false);
        let t = &ctx.tern;
        let idle = t.conns_now.get() == 0 && t.subs_now.get() == 0;
        if idle || t.scrapes.get() == 0 || ctx.aborted() || Instant::now() >= settle {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    let _ = writeln!(out, "{}", report::progress(&ctx));
    let report = report::final_report(&ctx, interrupted);
    Ok(Outcome {
        report,
        failure: ctx.failures.first().map(|f| f.to_string()),
    })
}
