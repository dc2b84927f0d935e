//! The soak's running counts, shared by every actor thread: lock-free
//! counters that the reporter reads at any time for the 10-second lines
//! and once more for the final report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A shared counter.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Raises the value to `v` if it is lower (for peaks and worsts).
    pub fn raise(&self, v: u64) {
        self.0.fetch_max(v, Ordering::Relaxed);
    }

    /// Sets the value (for gauges).
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The worst of some delay, and when into the run it happened (so it can
/// be lined up with the other figures and tern's log).
#[derive(Debug, Default)]
pub struct Worst {
    us: Count,
    at_ms: Count,
}

impl Worst {
    /// Records a delay of `d` seen at `at` into the run.
    pub fn record(&self, d: Duration, at: Duration) {
        let us = d.as_micros() as u64;
        if self.us.0.fetch_max(us, Ordering::Relaxed) < us {
            // Two new worsts at once may leave the other's time: close
            // enough for a report.
            self.at_ms.set(at.as_millis() as u64);
        }
    }

    /// The worst delay so far.
    pub fn get(&self) -> Duration {
        Duration::from_micros(self.us.get())
    }

    /// `12.3 ms at 45.6 s`.
    pub fn describe(&self) -> String {
        format!(
            "{:.1} ms at {:.1} s",
            self.us.get() as f64 / 1000.0,
            self.at_ms.get() as f64 / 1000.0
        )
    }
}

/// One kind of well-behaved stream, all its sessions together.
#[derive(Debug, Default)]
pub struct StreamTally {
    /// Messages published (each counted once, however many subscribers).
    pub sent: Count,
    /// Deliveries received (one per subscriber per message).
    pub received: Count,
    /// Deliveries lost, duplicated, reordered, damaged: from finished
    /// sessions.
    pub lost: Count,
    pub duplicated: Count,
    pub reordered: Count,
    pub corrupt: Count,
    /// Subscribers that saw something out of order so far, sessions still
    /// running included (the early warning in the 10-second lines).
    pub irregular: Count,
    /// Sessions finished with a verdict, and how many of them failed.
    pub sessions: Count,
    pub failed_sessions: Count,
    /// Worst delivery latency seen (from when the message was due to be
    /// sent to when it was read).
    pub worst_latency: Worst,
}

/// The hostile and heavy clients.
#[derive(Debug, Default)]
pub struct ChaosTally {
    /// Connections opened and closed by the churn actor.
    pub churn: Count,
    /// Random-bytes connections, the bytes they sent, and how many the
    /// relay closed.
    pub random_conns: Count,
    pub random_bytes: Count,
    pub random_closed: Count,
    /// Connections reset after half a frame.
    pub half_frames: Count,
    /// Oversized unterminated frames started, bytes sent in them, refusals
    /// heard (`-ERR frame too long` / `Maximum Payload Violation`),
    /// connections the relay closed, and `PONG`s after the frame (the
    /// line protocol keeps serving).
    pub big_frames: Count,
    pub big_bytes: Count,
    pub big_refused: Count,
    pub big_closed: Count,
    pub big_pong_after: Count,
    /// SUB/UNSUB storm bursts, the subscription changes in them, messages
    /// the storm connections drained, reconnects with subscriptions left in
    /// place, and barrier `PING`s answered late (over 5 s) or not at all.
    pub storm_bursts: Count,
    pub storm_changes: Count,
    pub storm_msgs: Count,
    pub storm_drops: Count,
    pub storm_slow_pongs: Count,
    /// Never-reading subscribers opened; closed by the relay (and of those,
    /// how many got the slow-consumer farewell); still open at the end of
    /// their life.
    pub never_opened: Count,
    pub never_cut: Count,
    pub never_farewell: Count,
    pub never_survived: Count,
    /// Cross-shard flood bursts, messages written, messages the reader got,
    /// readers the relay cut, bursts whose closing `PING` took over 10 s.
    pub flood_bursts: Count,
    pub flood_sent: Count,
    pub flood_received: Count,
    pub flood_cut: Count,
    pub flood_stalls: Count,
    /// Connection attempts by chaos actors that failed.
    pub connect_errors: Count,
}

/// What is known of the relay's process and metrics.
#[derive(Debug, Default)]
pub struct TernTally {
    /// Bytes resident at the start, now, and the kernel's high-water mark.
    pub rss_start: Count,
    pub rss_now: Count,
    pub rss_peak: Count,
    /// CPU time (user + system) at the start and now, in milliseconds.
    pub cpu_start_ms: Count,
    pub cpu_now_ms: Count,
    /// `/metrics` counters at the start and now (when scraped), and failed
    /// scrapes.
    pub slow_start: Count,
    pub slow_now: Count,
    pub too_long_start: Count,
    pub too_long_now: Count,
    /// Gauges from the last scrape: open connections, subscriptions,
    /// unsent output bytes.
    pub conns_now: Count,
    pub subs_now: Count,
    pub pending_now: Count,
    pub scrapes: Count,
    pub scrape_errors: Count,
}

/// The liveness probes.
#[derive(Debug, Default)]
pub struct ProbeTally {
    pub probes: Count,
    pub late: Count,
    pub worst: Worst,
    /// The soak's own worst scheduling delay (a timed sleep that woke this
    /// late): a late probe or delivery near it may be the machine's, not
    /// tern's.
    pub self_lag: Worst,
}
