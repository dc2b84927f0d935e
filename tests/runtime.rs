//! The async runtime under tern's shards (glommio 0.9.0, patched: see
//! `vendor/glommio/TERN-PATCHES.md`).
//!
//! glommio 0.9.0 as published parked an executor that still had runnable
//! tasks when its preempt timer fired before it ran anything, and then
//! never woke. A 20 µs preempt period is shorter than one trip through the
//! reactor here, so that happens within a few turns of the run loop: the
//! published crate hangs this test every time, the patched one finishes it
//! at once. Only progress is checked; the bound only turns a hang into a
//! failure.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

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
        .recv_timeout(Duration::from_secs(30))
        .expect("the executor stopped making progress with runnable work (parked for good)");
    worker.join().unwrap();
}
