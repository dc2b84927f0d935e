//! The async runtime under tern's shards (glommio 0.9.0, patched: see
//! `vendor/glommio/TERN-PATCHES.md`), one test per patch.
//!
//! Only progress and counts are checked, never time: every bound on a
//! wait only turns a hang into a failure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Poll, Waker};
use std::thread;
use std::time::Duration;

/// How long a test waits for an executor before calling it hung.
const HUNG: Duration = Duration::from_secs(30);

/// The system allocator, counting on each thread the allocations of one
/// chosen layout (a receive buffer's: glommio's are page-aligned).
struct CountingAllocator;

thread_local! {
    /// The layout counted on this thread (size, alignment), and the count.
    static COUNTED: Cell<((usize, usize), usize)> = const { Cell::new(((0, 0), 0)) };
}

// SAFETY: every call goes unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the count is a const-initialised thread-local
// `Cell`, which neither allocates nor can be borrowed twice.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNTED.try_with(|c| {
            let (shape, n) = c.get();
            if shape == (layout.size(), layout.align()) {
                c.set((shape, n + 1));
            }
        });
        // SAFETY: the caller's `layout` is passed on as the caller gave it.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// glommio 0.9.0 as published parked an executor that still had runnable
/// tasks when its preempt timer fired before it ran anything, and then
/// never woke. A 20 µs preempt period is shorter than one trip through the
/// reactor here, so that happens within a few turns of the run loop: the
/// published crate hangs this test every time, the patched one finishes it
/// at once.

#[test]
fn an_executor_preempted_before_running_anything_does_not_park() {
    let (done, finished) = mpsc::channel();
    let worker = thread::spawn(move || {
        let ex = glommio::LocalExecutorBuilder::default()
            .preempt_timer(Duration::from_micros(20))
            .make()
            .expect("an executor (io_uring and locked memory are available)");
        for _ in 0..1_000 {
            ex.run(async {
                // A task that needs a second turn of the run loop.
                glommio::spawn_local(async { glommio::executor().yield_now().await }).await;
            });
        }
        let _ = done.send(());
    });
    finished
        .recv_timeout(HUNG)
        .expect("the executor stopped making progress with runnable work (parked for good)");
    worker.join().unwrap();
}

/// Runs `work` (which makes its executor) in a thread,
/// failing if it does not finish.
fn on_executor<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = mpsc::channel();
    let worker = thread::spawn(move || {
        let _ = done.send(work());
    });
    let result = finished.recv_timeout(HUNG).expect("the executor hung");
    worker.join().unwrap();
    result
}

fn executor(preempt: Duration) -> glommio::LocalExecutor {
    glommio::LocalExecutorBuilder::default()
        .preempt_timer(preempt)
        .make()
        .expect("an executor (io_uring and locked memory are available)")
}

/// The sleeping executor submits the socket polls its tasks queued in the
/// same `io_uring_enter` it sleeps in. Each round trip below queues a poll
/// and sleeps on it: one the sleep did not submit would never complete.
#[test]
fn a_sleeping_executor_submits_its_socket_polls() {
    let (echoed, _) = echo_while_waiting(2_000, 1);
    assert_eq!(echoed, 2_000);
}

/// Echoes `rounds` one-byte messages, each sent while the executor's read
/// (through a `read_size`-byte buffer) waits for it. Returns the bytes
/// echoed, and how many page-aligned `read_size`-byte blocks (glommio's
/// receive buffers) the executor's thread allocated.
fn echo_while_waiting(rounds: usize, read_size: usize) -> (usize, usize) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = thread::spawn(move || {
        let (mut peer, _) = listener.accept().unwrap();
        let mut byte = [0u8; 1];
        for i in 0..rounds {
            // The executor is asleep (or about to be) when this arrives.
            peer.write_all(&[i as u8]).unwrap();
            peer.read_exact(&mut byte).unwrap();
            assert_eq!(byte[0], i as u8);
        }
    });
    let result = on_executor(move || {
        COUNTED.with(|c| c.set(((read_size, 4096), 0)));
        let echoed = executor(Duration::from_millis(1)).run(async move {
            use futures_lite::{AsyncReadExt, AsyncWriteExt};
            let mut stream = glommio::net::TcpStream::connect(addr).await.unwrap();
            let mut buf = vec![0u8; read_size];
            let mut n = 0;
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(got) => {
                        stream.write_all(&buf[..got]).await.unwrap();
                        n += got;
                    }
                }
            }
            n
        });
        (echoed, COUNTED.with(|c| c.get().1))
    });
    client.join().unwrap();
    result
}

/// Reads that wait on the ring receive get their bytes with the
/// completion, up to 1 KiB at a time, and hand what does not fit the
/// reader's buffer to the next read. Bursts of every size from 1 byte to
/// 5 KiB, each sent while the reader waits, read mostly through a 7-byte
/// buffer, arrive whole and in order, and the end of the stream reads as 0.
#[test]
fn reads_waiting_on_the_ring_keep_every_byte_in_order() {
    const BURSTS: usize = 300;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let burst = |i: usize| -> Vec<u8> {
        let len = 1 + (i * 617) % 5_000;
        (0..len).map(|j| (i * 31 + j) as u8).collect()
    };
    let expected: Vec<u8> = (0..BURSTS).flat_map(burst).collect();
    let client = thread::spawn(move || {
        let (mut peer, _) = listener.accept().unwrap();
        let mut ack = [0u8; 1];
        for i in 0..BURSTS {
            peer.write_all(&burst(i)).unwrap();
            // The reader took the whole burst and is waiting again.
            peer.read_exact(&mut ack).unwrap();
        }
        // Dropping the socket ends the stream.
    });
    let received = on_executor(move || {
        executor(Duration::from_millis(1)).run(async move {
            use futures_lite::{AsyncReadExt, AsyncWriteExt};
            let mut stream = glommio::net::TcpStream::connect(addr).await.unwrap();
            let mut all = Vec::new();
            let mut buf = [0u8; 7];
            let mut big = [0u8; 1024];
            for i in 0..BURSTS {
                let want = all.len() + burst(i).len();
                // A read offering 1 KiB that is given up while it waits
                // (as a timeout would): the receive it started on the ring
                // brings up to 1 KiB for the 7-byte reads after it.
                if let Some(n) = futures_lite::future::poll_once(stream.read(&mut big)).await {
                    all.extend_from_slice(&big[..n.unwrap()]);
                }
                while all.len() < want {
                    let n = stream.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the stream ended early");
                    all.extend_from_slice(&buf[..n]);
                }
                stream.write_all(&[1]).await.unwrap();
            }
            assert_eq!(
                stream.read(&mut buf).await.unwrap(),
                0,
                "more bytes than were sent"
            );
            all
        })
    });
    client.join().unwrap();
    assert!(
        received == expected,
        "the bytes read differ from the bytes sent"
    );
}

/// `peek` shows the bytes the next read returns, also when a receive on
/// the ring has taken them from the socket: one in flight (from a read
/// given up while it waited) or one whose bytes a small read left over.
#[test]
fn peek_sees_what_the_ring_receive_took() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = thread::spawn(move || {
        let (mut peer, _) = listener.accept().unwrap();
        let mut ack = [0u8; 1];
        peer.read_exact(&mut ack).unwrap();
        peer.write_all(b"abc").unwrap();
        peer.read_exact(&mut ack).unwrap();
        peer.write_all(b"0123456789ABCDEFGHIJ").unwrap();
        peer.read_exact(&mut ack).unwrap();
    });
    on_executor(move || {
        executor(Duration::from_millis(1)).run(async move {
            use futures_lite::{AsyncReadExt, AsyncWriteExt};
            let mut stream = glommio::net::TcpStream::connect(addr).await.unwrap();
            let mut big = [0u8; 1024];
            let mut buf = [0u8; 64];
            let mut small = [0u8; 7];
            // Drain (nothing there yet), then give a waiting read up: its
            // receive stays in flight.
            assert!(futures_lite::future::poll_once(stream.read(&mut big))
                .await
                .is_none());
            assert!(futures_lite::future::poll_once(stream.read(&mut big))
                .await
                .is_none());
            stream.write_all(&[1]).await.unwrap();
            let n = stream.peek(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"abc");
            let n = stream.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"abc");
            assert!(futures_lite::future::poll_once(stream.read(&mut big))
                .await
                .is_none());
            stream.write_all(&[2]).await.unwrap();
            let mut got = Vec::new();
            while got.len() < 7 {
                let n = stream.read(&mut small).await.unwrap();
                got.extend_from_slice(&small[..n]);
            }
            let rest = 20 - got.len();
            let n = stream.peek(&mut buf).await.unwrap();
            assert!(n > 0 && n <= rest);
            let peeked = buf[..n].to_vec();
            let mut next = vec![0u8; n];
            stream.read_exact(&mut next).await.unwrap();
            assert_eq!(peeked, next, "peek and read disagree");
            got.extend_from_slice(&next);
            assert_eq!(&got[..], &b"0123456789ABCDEFGHIJ"[..got.len()]);
            stream.write_all(&[3]).await.unwrap();
        })
    });
    client.join().unwrap();
}

/// A one-slot mailbox another thread posts to, and the executor awaits.
#[derive(Default)]
struct Mailbox {
    slot: Mutex<(Option<usize>, Option<Waker>)>,
}

impl Mailbox {
    fn post(&self, value: usize) {
        let waker = {
            let mut slot = self.slot.lock().unwrap();
            slot.0 = Some(value);
            slot.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    async fn take(&self) -> usize {
        std::future::poll_fn(|cx| {
            let mut slot = self.slot.lock().unwrap();
            match slot.0.take() {
                Some(value) => Poll::Ready(value),
                None => {
                    slot.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

/// A wake from another thread reaches a sleeping executor: the sleeper's
/// fence and the waker's fence (in place of glommio's `membarrier`) leave no
/// window in which the executor sleeps through a wake.
#[test]
fn a_sleeping_executor_wakes_for_every_wake_from_another_thread() {
    const ROUNDS: usize = 20_000;
    let inbox = Arc::new(Mailbox::default());
    let (reply, replies) = mpsc::channel();
    let sender = {
        let inbox = inbox.clone();
        thread::spawn(move || {
            for i in 0..ROUNDS {
                inbox.post(i);
                let echoed: usize = replies
                    .recv_timeout(HUNG)
                    .expect("the executor slept through a wake");
                assert_eq!(echoed, i);
            }
        })
    };
    on_executor(move || {
        executor(Duration::from_millis(1)).run(async move {
            for _ in 0..ROUNDS {
                let value = inbox.take().await;
                reply.send(value).unwrap();
            }
        })
    });
    sender.join().unwrap();
}

/// The timer the executor sleeps with may already be in the kernel, armed
/// while it ran: it is kept only if it fires no later than the one needed.
/// Here the in-flight preempt timer fires after 60 s, so each 1 ms sleep
/// must replace it (else each would last 60 s and the test would hang).
#[test]
fn a_sleep_shorter_than_the_armed_preempt_timer_ends_on_time() {
    on_executor(move || {
        executor(Duration::from_secs(60)).run(async {
            for _ in 0..20 {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        })
    });
}

/// An idle executor sleeps until its next timer. A preempt timer is armed
/// only while a task queue is runnable; one left in the kernel from the
/// last busy moment fires once, and must not be armed again by the wake it
/// causes (that would wake the idle executor every preempt period).
#[test]
fn an_idle_executor_sleeps_until_its_timer() {
    let runs = on_executor(move || {
        executor(Duration::from_millis(1)).run(async {
            // Busy for a moment, so a preempt timer is in the kernel.
            for _ in 0..1_000 {
                glommio::executor().yield_now().await;
            }
            let _ = glommio::executor().executor_stats(); // resets the counts
            glommio::timer::sleep(Duration::from_millis(300)).await;
            glommio::executor().executor_stats().scheduler_runs()
        })
    });
    // A few turns of the run loop: the wake for the stale preempt timer,
    // the wake for the sleep's own timer. Waking every 1 ms preempt period
    // would be about 300.
    assert!(
        runs < 30,
        "the idle executor ran its scheduler {runs} times in 300 ms"
    );
}

/// Due timers are taken from the front of the executor's timer map, one by
/// one, instead of splitting the map on every turn of the run loop. Every
/// timer still fires, once and not before its deadline, with timers given
/// up at their first poll among them. A due timer left in the map, or
/// taken out and not woken, hangs this test (a wake too early only costs a
/// poll: the timer checks its deadline itself). The order in which they
/// fire is not checked: each task starts its timer at its own instant.
#[test]
fn timers_fire_once_and_not_early() {
    use std::time::Instant;

    // Per timer: (fired before its deadline, a timer given up beside it
    // fired at its first poll).
    let outcomes = on_executor(move || {
        executor(Duration::from_millis(1)).run(async {
            // Deadlines on a 1 ms grid, in a scrambled order, many shared.
            let mut x: u64 = 7;
            let tasks: Vec<_> = (0..400u64)
                .map(|i| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let ms = (x >> 33) % 30;
                    glommio::spawn_local(async move {
                        let deadline = Instant::now() + Duration::from_millis(ms);
                        // A timer given up at its first poll: it leaves the
                        // map before its deadline.
                        let given_up_fired = i % 4 == 0
                            && futures_lite::future::poll_once(glommio::timer::Timer::new(
                                Duration::from_millis(ms + 5),
                            ))
                            .await
                            .is_some();
                        glommio::timer::Timer::new(Duration::from_millis(ms)).await;
                        (Instant::now() < deadline, given_up_fired)
                    })
                })
                .collect();
            let mut outcomes = Vec::new();
            for t in tasks {
                outcomes.push(t.await);
            }
            outcomes
        })
    });
    assert_eq!(outcomes.len(), 400, "every timer fires once");
    let early = outcomes.iter().filter(|o| o.0).count();
    assert_eq!(early, 0, "a timer fired before its deadline");
    let given_up_fired = outcomes.iter().filter(|o| o.1).count();
    assert_eq!(given_up_fired, 0, "a timer fired at its first poll");
}

/// A stream hands the buffer of its last receive on the ring to the next:
/// 2,000 echoes, each read waiting on the ring with a 100-byte buffer,
/// allocate a handful of 100-byte receive buffers, not one per wait.
#[test]
fn receives_on_the_ring_reuse_their_buffer() {
    const ROUNDS: usize = 2_000;
    let (echoed, buffers) = echo_while_waiting(ROUNDS, 100);
    assert_eq!(echoed, ROUNDS);
    assert!(
        buffers <= 10,
        "{buffers} receive buffers allocated for {ROUNDS} waits"
    );
}
