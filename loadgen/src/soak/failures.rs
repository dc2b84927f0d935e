//! The run's failures: what broke one of the soak's rules, when, and in
//! words a reader can act on. The first one recorded is the run's
//! one-line reason.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The rules a soak run checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// A well-behaved subscriber lost, got twice, got out of order or got
    /// damaged a message the relay accepted.
    Delivery,
    /// A well-behaved client was refused, cut, or left waiting (subscribe
    /// not confirmed, publisher not read).
    WellBehaved,
    /// A `PING` on a fresh connection was not answered within the limit.
    Liveness,
    /// The relay's resident memory went past the bound.
    Memory,
    /// The relay's process exited.
    Exit,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::Delivery => "delivery",
            Rule::WellBehaved => "well-behaved client",
            Rule::Liveness => "liveness",
            Rule::Memory => "memory",
            Rule::Exit => "relay exited",
        })
    }
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Time into the run.
    pub at: Duration,
    pub rule: Rule,
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:.1} s] {}: {}",
            self.at.as_secs_f64(),
            self.rule,
            self.detail
        )
    }
}

/// Most failures kept in full; the rest are only counted.
const KEPT: usize = 50;

/// Every failure of a run.
#[derive(Debug, Default)]
pub struct Failures {
    kept: Mutex<Vec<Failure>>,
    total: AtomicU64,
}

impl Failures {
    /// Records a failure.
    pub fn record(&self, at: Duration, rule: Rule, detail: String) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < KEPT {
            kept.push(Failure { at, rule, detail });
        }
    }

    /// How many were recorded.
    pub fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The first ones recorded (up to 50), in order.
    pub fn kept(&self) -> Vec<Failure> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The first failure: the run's one-line reason.
    pub fn first(&self) -> Option<Failure> {
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_is_kept_and_the_rest_counted() {
        let f = Failures::default();
        assert!(f.first().is_none());
        for i in 0..60 {
            f.record(
                Duration::from_millis(1500),
                Rule::Delivery,
                format!("lost {i}"),
            );
        }
        assert_eq!(f.count(), 60);
        assert_eq!(f.kept().len(), KEPT);
        assert_eq!(f.first().unwrap().to_string(), "[1.5 s] delivery: lost 0");
    }
}
