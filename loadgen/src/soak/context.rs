//! What every actor thread of a soak run shares: the settings, the clock,
//! the stop signal, the counts and the failures.
//!
//! A run stops by itself at its deadline; it stops early, *aborted*, when
//! the relay's process exits (nothing more can be learnt then, and the
//! connections failing is a consequence, not news).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::config::Config;
use super::failures::{Failures, Rule};
use super::rng::Rng;
use super::streams::StreamKind;
use super::tally::{ChaosTally, ProbeTally, StreamTally, TernTally};

/// The shared state of one run.
#[derive(Debug)]
pub struct Ctx {
    pub config: Config,
    /// When the run started; payload times count from here.
    pub epoch: Instant,
    /// When the run ends.
    pub deadline: Instant,
    stop: AtomicBool,
    aborted: AtomicBool,
    pub streams: [StreamTally; StreamKind::ALL.len()],
    pub chaos: ChaosTally,
    pub probes: ProbeTally,
    pub tern: TernTally,
    pub failures: Failures,
    rng: Rng,
}

impl Ctx {
    /// A run of `config` starting now.
    pub fn new(config: Config) -> Self {
        let epoch = Instant::now();
        Ctx {
            deadline: epoch + config.duration,
            rng: Rng::new(config.seed),
            config,
            epoch,
            stop: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            streams: Default::default(),
            chaos: ChaosTally::default(),
            probes: ProbeTally::default(),
            tern: TernTally::default(),
            failures: Failures::default(),
        }
    }

    /// Whether actors should keep going.
    pub fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && Instant::now() < self.deadline
    }

    /// Ends the run now (at the deadline, or on Ctrl-C).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Ends the run because the relay is gone.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::Relaxed);
        self.stop();
    }

    /// Whether the relay went away (failures after that are not news).
    pub fn aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed)
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Time left until the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Sleeps until `until`, waking early when the run stops; `false` if it
    /// did.
    pub fn sleep_until(&self, until: Instant) -> bool {
        loop {
            if !self.running() {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// Sleeps for `d`, as [`Ctx::sleep_until`].
    pub fn sleep(&self, d: Duration) -> bool {
        self.sleep_until(Instant::now() + d)
    }

    /// Records a broken rule, unless the relay is already known to be gone
    /// (then every connection fails, which says nothing new).
    pub fn fail(&self, rule: Rule, detail: String) {
        if self.aborted() && rule != Rule::Exit {
            return;
        }
        self.failures.record(self.elapsed(), rule, detail);
    }

    /// The random sequence of the actor called `name`.
    pub fn rng(&self, name: &str) -> Rng {
        self.rng.fork(name)
    }

    /// Nanoseconds since the start (payload time stamps).
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The counts of one kind of stream.
    pub fn stream(&self, kind: StreamKind) -> &StreamTally {
        &self.streams[kind as usize]
    }
}
