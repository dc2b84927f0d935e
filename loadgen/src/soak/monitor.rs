//! Watching the relay itself: its resident memory against the bound, its
//! CPU time, its `/metrics` counters, and whether it is still running.
//!
//! The process is sampled every [`SAMPLE`]; the bound is checked against
//! `VmHWM`, the kernel's own high-water mark, so a spike between samples
//! still counts. The relay exiting is a failure and aborts the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::context::Ctx;
use super::failures::Rule;
use super::metrics;
use super::procfs::{ProcError, Process};

/// How often the process is sampled.
pub const SAMPLE: Duration = Duration::from_millis(250);
/// How often `/metrics` is scraped.
const SCRAPE: Duration = Duration::from_secs(2);

/// Samples the process once: memory, CPU, and the bound. `false` once the
/// process is gone (recorded as a failure and the run aborted).
pub fn sample(ctx: &Ctx, process: &Process) -> bool {
    match process.sample() {
        Ok(s) => {
            let t = &ctx.tern;
            t.rss_now.set(s.memory.rss);
            let before = t.rss_peak.get();
            t.rss_peak.raise(s.memory.peak);
            t.cpu_now_ms.set(s.cpu.as_millis() as u64);
            let limit = ctx.config.rss_limit;
            if s.memory.peak > limit && before <= limit {
                ctx.fail(
                    Rule::Memory,
                    format!(
                        "tern's resident memory reached {:.1} MiB (VmHWM; now {:.1} MiB), over the bound of {:.1} MiB ({})",
                        mib(s.memory.peak),
                        mib(s.memory.rss),
                        mib(limit),
                        ctx.config.rss_basis
                    ),
                );
            }
            true
        }
        Err(ProcError::Gone(pid)) => {
            ctx.fail(Rule::Exit, format!("tern (pid {pid}) exited"));
            ctx.abort();
            false
        }
        Err(e) => {
            // Unreadable but present: say so once, keep trying.
            if ctx.tern.rss_now.get() == 0 {
                eprintln!("tern-soak: {e}");
            }
            true
        }
    }
}

/// Scrapes `/metrics` once into the tally; `start` also sets the baseline.
pub fn scrape(ctx: &Ctx, start: bool) {
    let Some(addr) = ctx.config.metrics else {
        return;
    };
    match metrics::scrape(addr, Duration::from_secs(2)) {
        Ok(c) => {
            let t = &ctx.tern;
            t.scrapes.inc();
            t.slow_now.set(c.slow_consumers);
            t.too_long_now.set(c.frames_too_long);
            t.conns_now.set(c.connections_open);
            t.subs_now.set(c.subscriptions);
            t.pending_now.set(c.pending_bytes);
            if start {
                t.slow_start.set(c.slow_consumers);
                t.too_long_start.set(c.frames_too_long);
            }
        }
        Err(e) => {
            if ctx.tern.scrape_errors.get() == 0 && !ctx.aborted() {
                eprintln!("tern-soak: {e}");
            }
            ctx.tern.scrape_errors.inc();
        }
    }
}

/// Watches until the run ends.
pub fn run(ctx: Arc<Ctx>, process: Option<Process>) {
    let mut next_scrape = Instant::now() + SCRAPE;
    loop {
        let t = Instant::now();
        if !ctx.sleep(SAMPLE) {
            break;
        }
        ctx.probes
            .self_lag
            .record(t.elapsed().saturating_sub(SAMPLE), ctx.elapsed());
        if let Some(p) = &process {
            if !sample(&ctx, p) {
                return;
            }
        }
        if Instant::now() >= next_scrape {
            scrape(&ctx, false);
            next_scrape += SCRAPE;
        }
    }
}

/// Bytes in MiB, for reports.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}
