//! A frame far longer than `--max-frame`, streamed in pieces, must not be
//! buffered: the relay answers `-ERR frame too long` once, keeps serving,
//! and its memory stays bounded.
//!
//! This is the only test in its binary, so the process's resident set size
//! measures the relay (which runs in-process) and this test's fixed buffers,
//! with no other test allocating alongside.

mod common;

use common::{fence, rss_bytes, TestRelay};

#[test]
fn huge_frame_is_streamed_through_in_bounded_memory() {
    const MAX_FRAME: usize = 64 * 1024;
    const TOTAL: usize = 64 << 20;
    const CHUNK: usize = 64 * 1024;
    // Far below TOTAL: a relay that buffered the frame would exceed it.
    const ALLOWED_GROWTH: usize = 24 << 20;

    let relay = TestRelay::start_with(|c| c.max_frame = MAX_FRAME);
    let mut streamer = relay.on(0);
    let mut publisher = relay.on(0);
    let mut sub = relay.on(1);
    sub.sub("m.x");
    sub.sub_fence();
    // Warm up both shards and the paths between them before the baseline.
    for i in 0..100 {
        publisher.publish("m.x", format!("warm {i} {}", "w".repeat(1000)));
    }
    for i in 0..100 {
        sub.expect_msg("m.x", format!("warm {i} {}", "w".repeat(1000)));
    }
    streamer.ping();
    let baseline = rss_bytes();

    // A frame that starts like a valid PUB and never ends for 64 MiB; no
    // terminator inside (the bytes are all `y`).
    let chunk = vec![b'y'; CHUNK];
    streamer.send_raw(b"PUB m.x ");
    let mut peak = baseline;
    let mut sent = 0;
    while sent < TOTAL {
        streamer.send_raw(&chunk);
        sent += CHUNK;
        if sent % (4 << 20) == 0 {
            peak = peak.max(rss_bytes());
        }
    }
    let term = streamer.term().to_vec();
    streamer.send_raw(&term);
    streamer.expect("-ERR frame too long");
    streamer.expect_silence();
    peak = peak.max(rss_bytes());
    eprintln!(
        "resident set: {} MiB before, {} MiB at the peak",
        baseline >> 20,
        peak >> 20
    );
    assert!(
        peak.saturating_sub(baseline) < ALLOWED_GROWTH,
        "memory grew by {} MiB while a {} MiB frame streamed through",
        peak.saturating_sub(baseline) >> 20,
        TOTAL >> 20
    );

    // Exactly one refusal, nothing published, and everything still works.
    assert_eq!(relay.stats().frames_too_long, 1);
    streamer.publish("m.x", "after");
    sub.expect_msg("m.x", "after");
    fence(&mut publisher, &mut [&mut sub], "end");
    assert_eq!(relay.stats().protocol_errors, 0);
}
