//! The shard mesh: how shards talk to each other.
//!
//! Every ordered pair of shards has one bounded crossbeam channel carrying
//! *batches* of [`MeshMsg`]: forwarded messages (shared [`Bytes`], never a
//! copy of the payload), subscription-interest updates, and the barrier
//! round trips behind `PING`. Each pair is FIFO, which is what keeps one
//! publisher's messages in order and makes an interest update visible before
//! the barrier that follows it.
//!
//! Each shard has a [`Doorbell`]: an "armed" flag and an [`AtomicWaker`]. A
//! shard with nothing to do arms its doorbell and parks (its executor sleeps
//! in the kernel); a sender rings it once per batch, and only if it is armed,
//! so a busy receiver costs senders one atomic swap per batch and an idle
//! relay burns no CPU. Exactly one wake can be pending per doorbell, which
//! also keeps glommio's waker reference count (an `i16`) far from overflow.
//!
//! Nothing here blocks: [`Outlet::try_flush`] reports a full channel and
//! leaves the batch queued; the shard stops reading from publishers until
//! the receiver, having drained the channel, rings the sender's doorbell.
//! Draining never waits on anything, so two shards flooding each other
//! always make progress.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Index of a shard.
pub type ShardId = u16;

/// Messages published on one shard, for delivery on another: any number
/// of them cut from one read chunk of the publisher, which is shared once
/// for all of them. A reference count per message would be an atomic
/// increment on the publishing core and a decrement on the receiving one,
/// a cache line bouncing between the two for every message.
#[derive(Debug, Clone)]
pub struct Forwards {
    /// The publisher's read chunk the messages are views of.
    pub chunk: Bytes,
    /// The messages, in publication order.
    pub items: Vec<Forward>,
}

/// One forwarded message: where its parts lie in the chunk, and who on the
/// receiving shard takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Where subject, reply, headers and payload lie in the chunk.
    pub place: Place,
    /// It came from a line-protocol publisher, so it can go to line
    /// receivers as it is (its payload cannot hold the terminator).
    pub from_line: bool,
    /// Deliver to the receiving shard's plain subscribers.
    pub plain: bool,
    /// Queue groups (by [`crate::subject::group_id`]) for which the
    /// receiving shard must pick one local member.
    pub groups: Vec<u64>,
}

/// Where a message's parts lie in a chunk, as byte ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub subject: Span,
    pub reply: Option<Span>,
    pub headers: Option<Span>,
    pub payload: Span,
}

/// Bytes `start..end` of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// Where `part` lies in `whole`, if it is a slice of it at offsets a
    /// `u32` holds. Compares addresses only; nothing is dereferenced.
    pub fn of(whole: &[u8], part: &[u8]) -> Option<Span> {
        let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
        let end = start + part.len();
        if end > whole.len() {
            return None;
        }
        Some(Span {
            start: u32::try_from(start).ok()?,
            end: u32::try_from(end).ok()?,
        })
    }

    #[inline]
    fn of_chunk(self, chunk: &[u8]) -> &[u8] {
        &chunk[self.start as usize..self.end as usize]
    }
}

impl Place {
    /// Where the parts lie in `chunk`; `None` unless every one is a slice
    /// of it.
    pub fn of(chunk: &[u8], msg: &crate::protocol::Message<'_>) -> Option<Place> {
        Some(Place {
            subject: Span::of(chunk, msg.subject)?,
            reply: match msg.reply {
                Some(r) => Some(Span::of(chunk, r)?),
                None => None,
            },
            headers: match msg.headers {
                Some(h) => Some(Span::of(chunk, h)?),
                None => None,
            },
            payload: Span::of(chunk, msg.payload)?,
        })
    }
}

impl Forwards {
    /// The message `item` carries.
    #[inline]
    pub fn message(&self, item: &Forward) -> crate::protocol::Message<'_> {
        let p = &item.place;
        crate::protocol::Message {
            subject: p.subject.of_chunk(&self.chunk),
            reply: p.reply.map(|r| r.of_chunk(&self.chunk)),
            headers: p.headers.map(|h| h.of_chunk(&self.chunk)),
            payload: p.payload.of_chunk(&self.chunk),
        }
    }
}

/// What travels between shards.
#[derive(Debug, Clone)]
pub enum MeshMsg {
    /// Messages to deliver.
    Forward(Forwards),
    /// The sender's shard gained (`add`) or lost one subscription.
    Interest {
        add: bool,
        pattern: Bytes,
        group: Option<Bytes>,
    },
    /// Answer with [`MeshMsg::BarrierAck`] once everything before this on
    /// the channel is applied.
    Barrier { token: u64 },
    /// The answer to a barrier.
    BarrierAck { token: u64 },
    /// The sender has stopped (shutdown): it reads its clients no more, so
    /// nothing it forwards comes after this. A shard closes its
    /// connections once every other shard has said so and what they
    /// forwarded is queued.
    Stopped,
}

/// A batch of messages: the unit sent over a channel.
pub type Batch = Vec<MeshMsg>;

/// Wakes a parked shard; see the module docs.
#[derive(Debug, Default)]
pub struct Doorbell {
    waker: AtomicWaker,
    armed: AtomicBool,
}

impl Doorbell {
    /// Wakes the owner if it is parked (or about to park).
    #[inline]
    pub fn ring(&self) {
        // SeqCst pairs with the store in `arm`: either the owner sees our
        // message when it re-checks after arming, or we see it armed.
        if self.armed.swap(false, Ordering::SeqCst) {
            self.waker.wake();
        }
    }

    /// Registers the owner's waker and arms the doorbell. The owner must
    /// re-check its channels after this and [`disarm`](Self::disarm) if it
    /// found work.
    pub fn arm(&self, cx: &Context<'_>) {
        self.waker.register(cx.waker());
        self.armed.store(true, Ordering::SeqCst);
    }

    /// The owner found work after arming.
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }

    /// The owner's wait: `Ready` if `has_work`,
    /// else arms the doorbell and returns `Pending`. Work is checked again
    /// after arming, so a message sent in between is never slept through.
    pub fn poll(&self, cx: &Context<'_>, has_work: impl Fn() -> bool) -> Poll<()> {
        if has_work() {
            return Poll::Ready(());
        }
        self.arm(cx);
        if has_work() {
            self.disarm();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// The sending end of one ordered pair, held by the source shard.
pub struct Outlet {
    tx: Sender<Batch>,
    /// The target's doorbell.
    target: Arc<Doorbell>,
    /// Raised by the sender when the channel was full; the receiver rings
    /// `source` after draining.
    blocked: Arc<AtomicBool>,
    /// The batch being filled.
    current: Batch,
    /// Messages in `current` (a [`Forwards`] run counts each of its items).
    current_len: usize,
    /// Batches that did not fit in the channel yet, oldest first.
    queued: VecDeque<(Batch, usize)>,
    /// Messages in `current` and `queued`: what back-pressure is measured
    /// in.
    backlog: usize,
}

/// The receiving end of one ordered pair, held by the target shard.
pub struct Inlet {
    rx: Receiver<Batch>,
    /// The source's doorbell, rung when we drained a channel it found full.
    source: Arc<Doorbell>,
    blocked: Arc<AtomicBool>,
    /// Which shard sends on this inlet.
    pub from: ShardId,
}

/// Largest batch sent as one channel item.
pub const MAX_BATCH: usize = 1024;

impl Outlet {
    /// Queues `msg` for the target; nothing is sent until
    /// [`try_flush`](Self::try_flush).
    #[inline]
    pub fn push(&mut self, msg: MeshMsg) {
        self.current.push(msg);
        self.count_one();
    }

    #[inline]
    fn count_one(&mut self) {
        self.backlog += 1;
        self.current_len += 1;
        if self.current_len >= MAX_BATCH {
            self.seal();
        }
    }

    /// Moves the batch being filled to the queue.
    fn seal(&mut self) {
        if !self.current.is_empty() {
            let full = std::mem::replace(&mut self.current, Vec::with_capacity(64));
            self.queued.push_back((full, self.current_len));
            self.current_len = 0;
        }
    }

    /// Queues a message whose body is `range` of `chunk`. Consecutive
    /// messages from the same chunk share one [`Forwards`] (and one
    /// reference to the chunk).
    #[inline]
    pub fn push_forward(&mut self, chunk: &Bytes, item: Forward) {
        if let Some(MeshMsg::Forward(run)) = self.current.last_mut() {
            if run.chunk.as_ptr() == chunk.as_ptr() && run.chunk.len() == chunk.len() {
                run.items.push(item);
                self.count_one();
                return;
            }
        }
        self.push(MeshMsg::Forward(Forwards {
            chunk: chunk.clone(),
            items: vec![item],
        }));
    }

    /// Messages queued and not yet handed to the channel.
    pub fn backlog(&self) -> usize {
        self.backlog
    }

    /// Hands queued batches to the channel and rings the target once.
    /// Returns `false` if the channel is full and some remain queued (the
    /// target will ring our doorbell when it has drained).
    pub fn try_flush(&mut self) -> bool {
        self.seal();
        let mut sent = false;
        let mut flagged = false;
        while let Some((batch, n)) = self.queued.pop_front() {
            match self.tx.try_send(batch) {
                Ok(()) => {
                    self.backlog -= n;
                    sent = true;
                }
                Err(TrySendError::Full(batch)) => {
                    self.queued.push_front((batch, n));
                    if flagged {
                        break;
                    }
                    // Ask the target to ring us when it has drained, then
                    // try once more: it may have drained between our failed
                    // send and the flag, and that wake would be lost.
                    self.blocked.store(true, Ordering::SeqCst);
                    flagged = true;
                }
                Err(TrySendError::Disconnected(_)) => {
                    // The target shard is gone (shutdown): drop.
                    self.queued.clear();
                    self.backlog = 0;
                }
            }
        }
        if sent {
            self.target.ring();
        }
        self.queued.is_empty()
    }
}

impl Inlet {
    /// Takes the next batch, if any.
    #[inline]
    pub fn try_recv(&self) -> Option<Batch> {
        self.rx.try_recv().ok()
    }

    /// Whether a batch is waiting.
    pub fn has_pending(&self) -> bool {
        !self.rx.is_empty()
    }

    /// Call after draining: if the sender found the channel full, wake it.
    pub fn release_sender(&self) {
        if self.blocked.swap(false, Ordering::SeqCst) {
            self.source.ring();
        }
    }
}

/// One shard's view of the mesh.
pub struct Endpoint {
    /// This shard.
    pub id: ShardId,
    /// Our doorbell.
    pub doorbell: Arc<Doorbell>,
    /// One per other shard, indexed by target shard id (`None` for self).
    pub outlets: Vec<Option<Outlet>>,
    /// One per other shard.
    pub inlets: Vec<Inlet>,
}

impl Endpoint {
    /// Polls for inbound work: `Ready` if a batch is waiting, else arms the
    /// doorbell and returns `Pending`.
    pub fn poll_inbound(&self, cx: &Context<'_>) -> Poll<()> {
        self.doorbell
            .poll(cx, || self.inlets.iter().any(Inlet::has_pending))
    }
}

/// Builds the full mesh for `n` shards: one [`Endpoint`] per shard, and the
/// doorbells (for whoever else needs to wake a shard: the relay's control
/// requests).
pub fn build(n: usize, capacity: usize) -> (Vec<Endpoint>, Vec<Arc<Doorbell>>) {
    let bells: Vec<Arc<Doorbell>> = (0..n).map(|_| Arc::new(Doorbell::default())).collect();
    let mut endpoints: Vec<Endpoint> = (0..n)
        .map(|i| Endpoint {
            id: i as ShardId,
            doorbell: bells[i].clone(),
            outlets: (0..n).map(|_| None).collect(),
            inlets: Vec::new(),
        })
        .collect();
    for from in 0..n {
        for to in 0..n {
            if from == to {
                continue;
            }
            let (tx, rx) = crossbeam_channel::bounded(capacity);
            let blocked = Arc::new(AtomicBool::new(false));
            endpoints[from].outlets[to] = Some(Outlet {
                tx,
                target: bells[to].clone(),
                blocked: blocked.clone(),
                current: Vec::with_capacity(64),
                current_len: 0,
                queued: VecDeque::new(),
                backlog: 0,
            });
            endpoints[to].inlets.push(Inlet {
                rx,
                source: bells[from].clone(),
                blocked,
                from: from as ShardId,
            });
        }
    }
    (endpoints, bells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Message;
    use crate::wake_counter::WakeCounter;
    use std::task::{Wake, Waker};

    fn barrier(token: u64) -> MeshMsg {
        MeshMsg::Barrier { token }
    }

    #[test]
    fn a_parked_shard_is_woken_once_per_batch_and_only_when_armed() {
        let (mut eps, _) = build(2, 4);
        let (counter, waker) = WakeCounter::new();
        let cx = Context::from_waker(&waker);
        let b = eps.pop().unwrap();
        let mut a = eps.pop().unwrap();
        assert!(b.poll_inbound(&cx).is_pending());
        let out = a.outlets[1].as_mut().unwrap();
        out.push(barrier(1));
        out.push(barrier(2));
        assert!(out.try_flush());
        assert_eq!(counter.count(), 1);
        // Not re-armed: a second batch does not wake again.
        out.push(barrier(3));
        assert!(out.try_flush());
        assert_eq!(counter.count(), 1);
        assert!(b.poll_inbound(&cx).is_ready());
        let got: Vec<u64> = std::iter::from_fn(|| b.inlets[0].try_recv())
            .flatten()
            .map(|m| match m {
                MeshMsg::Barrier { token } => token,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(got, vec![1, 2, 3]);
    }

    #[test]
    fn forwards_from_one_chunk_share_it_and_count_each_message() {
        let (mut eps, _) = build(2, 4);
        let b = eps.pop().unwrap();
        let mut a = eps.pop().unwrap();
        let out = a.outlets[1].as_mut().unwrap();
        let chunk = Bytes::from_static(b"a x\nb y\n");
        let other = Bytes::from_static(b"c z\n");
        let item = |start| Forward {
            place: Place {
                subject: Span {
                    start,
                    end: start + 1,
                },
                reply: None,
                headers: None,
                payload: Span {
                    start: start + 2,
                    end: start + 3,
                },
            },
            from_line: true,
            plain: true,
            groups: vec![],
        };
        out.push_forward(&chunk, item(0));
        out.push_forward(&chunk, item(4));
        out.push_forward(&other, item(0));
        assert_eq!(out.backlog(), 3, "back-pressure counts messages");
        assert!(out.try_flush());
        assert_eq!(out.backlog(), 0);
        let batch = b.inlets[0].try_recv().unwrap();
        assert_eq!(batch.len(), 2, "one run per chunk");
        let MeshMsg::Forward(run) = &batch[0] else {
            panic!("a forward run")
        };
        assert_eq!(run.items.len(), 2);
        assert_eq!(run.message(&run.items[1]), Message::plain(b"b", b"y"));
        let MeshMsg::Forward(run) = &batch[1] else {
            panic!("a forward run")
        };
        assert_eq!(run.message(&run.items[0]), Message::plain(b"c", b"z"));
    }

    #[test]
    fn a_full_channel_keeps_the_batch_and_the_receiver_releases_the_sender() {
        let (mut eps, bells) = build(2, 1);
        let b = eps.pop().unwrap();
        let mut a = eps.pop().unwrap();
        let (counter, waker) = WakeCounter::new();
        let cx = Context::from_waker(&waker);
        // Shard 0 parks on its own doorbell.
        assert!(a.poll_inbound(&cx).is_pending());
        let out = a.outlets[1].as_mut().unwrap();
        out.push(barrier(1));
        assert!(out.try_flush());
        out.push(barrier(2));
        assert!(!out.try_flush(), "capacity 1: the second batch must wait");
        assert_eq!(out.backlog(), 1);
        // The receiver drains and releases the sender, ringing shard 0.
        assert!(b.inlets[0].try_recv().is_some());
        b.inlets[0].release_sender();
        assert_eq!(counter.count(), 1);
        let out = a.outlets[1].as_mut().unwrap();
        assert!(out.try_flush());
        assert_eq!(out.backlog(), 0);
        // Anyone holding a shard's bell can wake it.
        while b.inlets[0].try_recv().is_some() {}
        assert!(b.poll_inbound(&cx).is_pending());
        bells[1].ring();
        assert_eq!(counter.count(), 2);
    }

    #[test]
    fn cross_thread_wake_reaches_a_parked_receiver() {
        let (mut eps, _) = build(2, 1024);
        let b = eps.pop().unwrap();
        let mut a = eps.pop().unwrap();
        let sender = std::thread::spawn(move || {
            let out = a.outlets[1].as_mut().unwrap();
            for i in 0..10_000u64 {
                out.push(barrier(i));
                while !out.try_flush() {
                    std::thread::yield_now();
                }
            }
        });
        let mut next = 0u64;
        let thread = std::thread::current();
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(thread)));
        let cx = Context::from_waker(&waker);
        while next < 10_000 {
            while let Some(batch) = b.inlets[0].try_recv() {
                for m in batch {
                    match m {
                        MeshMsg::Barrier { token } => {
                            assert_eq!(token, next);
                            next += 1;
                        }
                        _ => unreachable!(),
                    }
                }
                b.inlets[0].release_sender();
            }
            if b.poll_inbound(&cx).is_pending() {
                std::thread::park_timeout(std::time::Duration::from_millis(100));
            }
        }
        sender.join().unwrap();
    }

    #[test]
    fn spans_are_found_only_inside_the_chunk() {
        let chunk = b"PUB s hi".to_vec();
        assert_eq!(
            Span::of(&chunk, &chunk[4..5]),
            Some(Span { start: 4, end: 5 })
        );
        assert_eq!(
            Span::of(&chunk, &chunk[8..]),
            Some(Span { start: 8, end: 8 })
        );
        assert_eq!(Span::of(&chunk, b"s"), None);
        let msg = Message {
            subject: &chunk[4..5],
            reply: Some(&chunk[0..3]),
            headers: None,
            payload: &chunk[6..],
        };
        let place = Place::of(&chunk, &msg).expect("all inside");
        let run = Forwards {
            chunk: Bytes::from(chunk.clone()),
            items: vec![],
        };
        let item = Forward {
            place,
            from_line: false,
            plain: true,
            groups: vec![],
        };
        assert_eq!(run.message(&item), msg, "the same bytes back");
        let outside = Message {
            reply: Some(b"elsewhere"),
            ..msg
        };
        assert_eq!(Place::of(&chunk, &outside), None);
    }
}
