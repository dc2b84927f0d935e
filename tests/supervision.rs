//! A shard that dies is noticed: the relay reports why (also as `/healthz`
//! 503), and stopping the rest still works. The binary's side, exiting
//! non-zero, is in `tests/startup.rs`.

mod common;

use std::time::Duration;

use common::{http, TestRelay};
use tern::metrics;
use tern::shard::core::PANIC_FRAME;

#[test]
fn a_panicking_shard_is_reported_with_its_reason() {
    let relay = TestRelay::start_with(|c| c.panic_frame = true);
    assert_eq!(relay.failure(), None, "healthy at start");
    let endpoint = metrics::serve(
        "127.0.0.1:0".parse().unwrap(),
        relay.monitor(),
        relay.cores(),
    )
    .expect("metrics endpoint");
    let health = http::get(endpoint.local_addr(), "/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    // The other shard serves as usual.
    let mut healthy = relay.on(0);
    healthy.sub("s");
    healthy.ping();

    let mut victim = relay.on(1);
    victim.send(PANIC_FRAME);
    let reason = relay
        .failures()
        .recv_timeout(Duration::from_secs(30))
        .expect("the supervisor reports the dead shard");
    assert!(reason.starts_with("shard 1 on CPU"), "{reason}");
    assert!(reason.contains("panicked"), "{reason}");
    assert!(
        reason.contains("asked to panic"),
        "the panic's own text: {reason}"
    );
    assert_eq!(relay.failure().as_deref(), Some(reason.as_str()));
    let health = http::get(endpoint.local_addr(), "/healthz");
    assert_eq!(health.status, 503);
    assert_eq!(health.body, format!("{reason}\n"));
    endpoint.stop();
    // Reported once.
    assert!(relay
        .failures()
        .recv_timeout(Duration::from_millis(200))
        .is_err());

    // The live shard still answers, and stopping does not wait on the dead
    // one.
    healthy.ping();
    relay.shutdown();
}

#[test]
fn the_panic_frame_is_an_unknown_verb_without_the_hook() {
    let relay = TestRelay::start();
    let mut c = relay.on(1);
    c.expect_err_for(PANIC_FRAME, "unknown verb");
    assert_eq!(relay.failure(), None);
    relay.shutdown();
}
