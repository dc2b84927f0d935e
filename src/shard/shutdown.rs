//! The shard's stop signal: set once, seen by every task that waits on it.
//!
//! A shard stops when the relay asks it to (a [`super::Control::Stop`]
//! over its control channel). The mesh task then triggers this signal; the
//! accept loops wait on it, and the core's `stopping` state (which the
//! connection tasks read) is set in the same step, so there is one stop
//! and one moment it happens. Waiting for every task to *finish* is a
//! [`glommio::sync::Gate`]'s job (see [`super::tasks`]).

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A shard-local, clonable stop signal.
#[derive(Clone, Default)]
pub struct Shutdown(Rc<Inner>);

#[derive(Default)]
struct Inner {
    triggered: Cell<bool>,
    /// Tasks waiting for the trigger, each once.
    waiters: RefCell<Vec<Waker>>,
}

impl Shutdown {
    /// Sets the signal and wakes everyone waiting. Idempotent.
    pub fn trigger(&self) {
        self.0.triggered.set(true);
        let waiters = std::mem::take(&mut *self.0.waiters.borrow_mut());
        waiters.into_iter().for_each(Waker::wake);
    }

    /// Whether the signal is set.
    pub fn is_triggered(&self) -> bool {
        self.0.triggered.get()
    }

    /// `Ready` once the signal is set; until then the task is woken by
    /// [`Self::trigger`].
    pub fn poll_wait(&self, cx: &Context<'_>) -> Poll<()> {
        if self.is_triggered() {
            return Poll::Ready(());
        }
        let mut waiters = self.0.waiters.borrow_mut();
        // A task polled again for another reason must not pile up copies.
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Waits for the signal.
    pub async fn wait(&self) {
        poll_fn(|cx| self.poll_wait(cx)).await
    }

    /// Runs `work` until it ends (`Some` of its output) or the signal is
    /// set first (`None`, and `work` is dropped).
    pub async fn unless_stopped<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        futures_lite::future::or(async { Some(work.await) }, async {
            self.wait().await;
            None
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wake_counter::WakeCounter;

    #[test]
    fn waiters_are_woken_once_and_see_the_signal() {
        let s = Shutdown::default();
        let (count, waker) = WakeCounter::new();
        let cx = Context::from_waker(&waker);
        assert!(s.poll_wait(&cx).is_pending());
        assert!(s.poll_wait(&cx).is_pending(), "registered once");
        let clone = s.clone();
        clone.trigger();
        assert_eq!(count.count(), 1);
        assert!(s.is_triggered());
        assert!(s.poll_wait(&cx).is_ready());
        s.trigger();
        assert_eq!(count.count(), 1, "no one left to wake");
    }

    #[test]
    fn work_runs_until_the_signal() {
        let s = Shutdown::default();
        let done = futures_lite::future::block_on(s.unless_stopped(async { 7 }));
        assert_eq!(done, Some(7));
        s.trigger();
        let never = futures_lite::future::block_on(s.unless_stopped(std::future::pending::<u8>()));
        assert_eq!(never, None);
    }
}
