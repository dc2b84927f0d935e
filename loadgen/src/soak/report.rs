//! What a run prints: a progress line every `--report-every`, and the
//! final report with the verdict.

use std::fmt::Write as _;

use super::context::Ctx;
use super::monitor::mib;
use super::streams::StreamKind;
use super::tally::StreamTally;

/// Sums over every stream kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupt: u64,
    pub irregular: u64,
}

impl Totals {
    fn add(&mut self, t: &StreamTally) {
        self.sent += t.sent.get();
        self.received += t.received.get();
        self.lost += t.lost.get();
        self.duplicated += t.duplicated.get();
        self.reordered += t.reordered.get();
        self.corrupt += t.corrupt.get();
        self.irregular += t.irregular.get();
    }
}

/// Totals over every stream kind.
pub fn totals(ctx: &Ctx) -> Totals {
    let mut t = Totals::default();
    for s in &ctx.streams {
        t.add(s);
    }
    t
}

/// Slow consumers the relay closed: from `/metrics` when scraped, else
/// the ones the soak saw (never-readers cut, flood readers cut).
pub fn slow_consumers(ctx: &Ctx) -> (u64, &'static str) {
    let t = &ctx.tern;
    if t.scrapes.get() > 0 {
        (
            t.slow_now.get().saturating_sub(t.slow_start.get()),
            "tern /metrics",
        )
    } else {
        (
            ctx.chaos.never_cut.get() + ctx.chaos.flood_cut.get(),
            "seen by the soak",
        )
    }
}

/// Relay CPU seconds since the start.
fn cpu_s(ctx: &Ctx) -> f64 {
    ctx.tern
        .cpu_now_ms
        .get()
        .saturating_sub(ctx.tern.cpu_start_ms.get()) as f64
        / 1000.0
}

/// `12,345,678`.
pub fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The progress line.
pub fn progress(ctx: &Ctx) -> String {
    let t = totals(ctx);
    let c = &ctx.chaos;
    let mut s = format!(
        "[{:>5.0} s] msgs sent {} delivered {} lost {} dup {} reord {} irregular {} | probes {} worst {:.0} ms (own lag {:.0} ms)",
        ctx.elapsed().as_secs_f64(),
        thousands(t.sent),
        thousands(t.received),
        t.lost,
        t.duplicated,
        t.reordered,
        t.irregular,
        ctx.probes.probes.get(),
        ctx.probes.worst.get().as_secs_f64() * 1000.0,
        ctx.probes.self_lag.get().as_secs_f64() * 1000.0,
    );
    if ctx.config.pid.is_some() {
        let _ = write!(
            s,
            " | rss {:.1} MiB peak {:.1} MiB cpu {:.1} s",
            mib(ctx.tern.rss_now.get()),
            mib(ctx.tern.rss_peak.get()),
            cpu_s(ctx)
        );
    }
    if ctx.tern.scrapes.get() > 0 {
        let t = &ctx.tern;
        let _ = write!(
            s,
            " | conns {} subs {} pending {:.1} MiB",
            t.conns_now.get(),
            t.subs_now.get(),
            mib(t.pending_now.get())
        );
    }
    let _ = write!(
        s,
        " | slow consumers {} | churn {} random {} half {} big {} storm {} flood {}",
        slow_consumers(ctx).0,
        c.churn.get(),
        c.random_conns.get(),
        c.half_frames.get(),
        c.big_frames.get(),
        c.storm_bursts.get(),
        thousands(c.flood_sent.get()),
    );
    let f = ctx.failures.count();
    if f > 0 {
        let _ = write!(s, " | FAILURES {f}");
    }
    s
}

/// The final report, ending with the verdict line.
pub fn final_report(ctx: &Ctx, interrupted: bool) -> String {
    let mut s = String::new();
    let secs = ctx.elapsed().as_secs_f64();
    let _ = writeln!(s, "\ntern-soak report: {secs:.0} s against {}", ctx.config);
    let _ = writeln!(
        s,
        "\nwell-behaved streams      {:>12} {:>12} {:>6} {:>5} {:>6} {:>7} {:>9}  worst latency",
        "sent", "delivered", "lost", "dup", "reord", "damaged", "sessions"
    );
    for kind in StreamKind::ALL {
        let t = ctx.stream(kind);
        if kind.endpoints(&ctx.config.targets).is_none() {
            let _ = writeln!(
                s,
                "  {:<23} not run (needs {})",
                kind.label(),
                match kind {
                    StreamKind::CrossShard => "--shard-targets with two shards",
                    _ => "--nats-target",
                }
            );
            continue;
        }
        let _ = writeln!(
            s,
            "  {:<23} {:>12} {:>12} {:>6} {:>5} {:>6} {:>7} {:>4}/{:<4}  {}",
            kind.label(),
            thousands(t.sent.get()),
            thousands(t.received.get()),
            t.lost.get(),
            t.duplicated.get(),
            t.reordered.get(),
            t.corrupt.get(),
            t.sessions.get() - t.failed_sessions.get(),
            t.sessions.get(),
            t.worst_latency.describe(),
        );
    }
    let t = totals(ctx);
    let _ = writeln!(
        s,
        "  {:<23} {:>12} {:>12} {:>6} {:>5} {:>6} {:>7}   (sessions: clean/judged)",
        "total",
        thousands(t.sent),
        thousands(t.received),
        t.lost,
        t.duplicated,
        t.reordered,
        t.corrupt
    );

    let p = &ctx.probes;
    let _ = writeln!(
        s,
        "\nliveness: {} fresh-connection PINGs, worst {}, {} over the {:.1} s limit; tern-soak's own worst scheduling delay {}",
        p.probes.get(),
        p.worst.describe(),
        p.late.get(),
        ctx.config.probe_timeout.as_secs_f64(),
        p.self_lag.describe(),
    );

    let tt = &ctx.tern;
    match ctx.config.pid {
        Some(pid) => {
            let _ = writeln!(
                s,
                "tern (pid {pid}): RSS start {:.1} MiB, peak {:.1} MiB (bound {:.1} MiB = {}), end {:.1} MiB; CPU {:.1} s ({:.0}% of one core); {}",
                mib(tt.rss_start.get()),
                mib(tt.rss_peak.get()),
                mib(ctx.config.rss_limit),
                ctx.config.rss_basis,
                mib(tt.rss_now.get()),
                cpu_s(ctx),
                cpu_s(ctx) / secs.max(0.001) * 100.0,
                if ctx.aborted() { "EXITED" } else { "still running" }
            );
        }
        None => {
            let _ = writeln!(
                s,
                "tern: no --pid, so memory, CPU and exit were not watched"
            );
        }
    }

    let c = &ctx.chaos;
    let (slow, source) = slow_consumers(ctx);
    let _ = writeln!(
        s,
        "slow consumers closed: {slow} ({source}); never-readers {} opened, {} cut ({} with the farewell), {} not cut; flood readers cut {}",
        c.never_opened.get(),
        c.never_cut.get(),
        c.never_farewell.get(),
        c.never_survived.get(),
        c.flood_cut.get()
    );
    if tt.scrapes.get() > 0 {
        let _ = writeln!(
            s,
            "tern /metrics: frames too long {}; after the soak's clients left: {} connections open, {} subscriptions, {} bytes unsent; {} scrapes, {} failed",
            tt.too_long_now
                .get()
                .saturating_sub(tt.too_long_start.get()),
            tt.conns_now.get(),
            tt.subs_now.get(),
            tt.pending_now.get(),
            tt.scrapes.get(),
            tt.scrape_errors.get()
        );
    }
    let _ = writeln!(
        s,
        "chaos: churn {} connections; random bytes {} connections, {:.1} MiB, {} closed by tern; half frames then reset {};",
        thousands(c.churn.get()),
        thousands(c.random_conns.get()),
        mib(c.random_bytes.get()),
        thousands(c.random_closed.get()),
        thousands(c.half_frames.get()),
    );
    let _ = writeln!(
        s,
        "       unterminated frames {} ({:.0} MiB sent, {} refused, {} closed, {} served a PING after); storms {} bursts, {} SUB/UNSUB, {} messages drained, {} dropped with subscriptions, {} slow PONGs;",
        c.big_frames.get(),
        mib(c.big_bytes.get()),
        c.big_refused.get(),
        c.big_closed.get(),
        c.big_pong_after.get(),
        thousands(c.storm_bursts.get()),
        thousands(c.storm_changes.get()),
        thousands(c.storm_msgs.get()),
        c.storm_drops.get(),
        c.storm_slow_pongs.get(),
    );
    let _ = writeln!(
        s,
        "       flood {} bursts, {} messages sent, {} received, {} stalls; {} chaos connects failed",
        c.flood_bursts.get(),
        thousands(c.flood_sent.get()),
        thousands(c.flood_received.get()),
        c.flood_stalls.get(),
        c.connect_errors.get(),
    );

    let failures = ctx.failures.kept();
    if !failures.is_empty() {
        let _ = writeln!(s, "\nfailures ({}):", ctx.failures.count());
        for f in &failures {
            let _ = writeln!(s, "  {f}");
        }
    }
    let _ = writeln!(s);
    match ctx.failures.first() {
        None if interrupted => {
            let _ = writeln!(
                s,
                "verdict: INTERRUPTED after {secs:.0} s, nothing failed so far"
            );
        }
        None => {
            let _ = writeln!(s, "verdict: PASS");
        }
        Some(f) => {
            let _ = writeln!(s, "verdict: FAIL ({} failures): {f}", ctx.failures.count());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
