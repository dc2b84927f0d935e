//! End to end: short soaks. Every actor against an in-process tern relay
//! with two shards must pass; a relay that goes away, and a relay that
//! drops one message, must fail with the right reason. The runs share two
//! cores with the relay, so nothing here is a timing.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use tern::relay::Relay;
use tern_loadgen::soak::{self, config::Args, Outcome};

/// One soak at a time: each is a few dozen threads, and the machine is
/// small.
static SERIAL: Mutex<()> = Mutex::new(());

fn soak(args: &[String]) -> Outcome {
    let mut argv = vec!["tern-soak".to_string()];
    argv.extend_from_slice(args);
    let config = Args::try_parse_from(argv).unwrap().into_config(1).unwrap();
    let mut progress = Vec::new();
    soak::run(config, None, &mut progress).expect("the soak starts")
}

fn targets(relay: &Relay) -> Vec<String> {
    let shards: Vec<String> = relay.shard_addrs().iter().map(|a| a.to_string()).collect();
    vec![
        "--target".into(),
        relay.local_addrs()[0].to_string(),
        "--nats-target".into(),
        relay.nats_addrs()[0].to_string(),
        "--shard-targets".into(),
        shards.join(","),
    ]
}

/// Short everything: a 7 s run with 2 s sessions, an 8 MiB "big" frame,
/// a 1 s flood burst.
fn short(seconds: u32) -> Vec<String> {
    [
        "--duration",
        &format!("{seconds}s"),
        "--session",
        "2s",
        "--big-frame",
        "8MiB",
        "--big-frame-every",
        "3s",
        "--flood-burst",
        "1s",
        "--flood-period",
        "3s",
        "--churn-rate",
        "50",
        "--report-every",
        "2s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn every_actor_against_tern_passes() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let relay = Relay::start(tern::config::Config {
        max_pending: 4 << 20,
        ..tern::config::Config::local(2)
    })
    .expect("relay starts");
    let mut args = targets(&relay);
    args.extend(short(7));
    let outcome = soak(&args);
    assert!(outcome.failure.is_none(), "{}", outcome.report);
    let r = &outcome.report;
    assert!(r.trim_end().ends_with("verdict: PASS"), "{r}");
    for kind in [
        "line->line",
        "nats->nats",
        "line->nats",
        "nats->line",
        "shard 0->1",
    ] {
        let row = r.lines().find(|l| l.contains(kind)).unwrap();
        assert!(!row.contains("not run"), "{row}");
    }
    assert!(r.contains("0 over the 1.0 s limit"), "{r}");
    relay.shutdown();
}

#[test]
fn a_relay_that_goes_away_fails_the_soak() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let relay = Relay::start(tern::config::Config::local(2)).expect("relay starts");
    let mut args = targets(&relay);
    args.extend(short(4));
    args.extend(["--chaos".into(), "none".into()]);
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        relay.shutdown();
    });
    let outcome = soak(&args);
    stopper.join().unwrap();
    let reason = outcome.failure.expect("the soak fails");
    assert!(
        reason.contains("liveness") || reason.contains("well-behaved client"),
        "{reason}"
    );
    assert!(
        outcome.report.contains("verdict: FAIL"),
        "{}",
        outcome.report
    );
}

/// A line-protocol relay with one bug: the 50th `PUB` it receives is
/// not delivered. Enough of the protocol for the soak's line streams and
/// probes (`SUB`, `PUB`, `PING`).
fn lossy_relay() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let subs: Arc<Mutex<HashMap<String, Vec<TcpStream>>>> = Arc::default();
    let pubs = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (subs, pubs) = (subs.clone(), pubs.clone());
            std::thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                for line in BufReader::new(conn).lines() {
                    let Ok(line) = line else { return };
                    if line == "PING" {
                        let _ = out.write_all(b"PONG\n");
                    } else if let Some(subject) = line.strip_prefix("SUB ") {
                        let mut subs = subs.lock().unwrap();
                        let to = subs.entry(subject.to_string()).or_default();
                        to.push(out.try_clone().unwrap());
                    } else if let Some(rest) = line.strip_prefix("PUB ") {
                        let (subject, payload) = rest.split_once(' ').unwrap_or((rest, ""));
                        if pubs.fetch_add(1, Ordering::Relaxed) == 49 {
                            continue;
                        }
                        let msg = format!("MSG {subject} {payload}\n");
                        for s in subs.lock().unwrap().get_mut(subject).into_iter().flatten() {
                            let _ = s.write_all(msg.as_bytes());
                        }
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_lost_message_fails_the_soak() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let addr = lossy_relay();
    let mut args: Vec<String> = [
        "--target",
        &addr.to_string(),
        "--nats-target",
        "off",
        "--chaos",
        "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(short(4));
    let outcome = soak(&args);
    let reason = outcome.failure.expect("the soak fails");
    assert!(reason.contains("delivery"), "{reason}");
    assert!(reason.contains("lost 1,"), "{reason}");
    assert!(reason.contains("sequence 49 missing"), "{reason}");
    let row = outcome
        .report
        .lines()
        .find(|l| l.trim_start().starts_with("line->line"))
        .unwrap();
    let lost = row.split_whitespace().nth(3).unwrap();
    assert_eq!(lost, "2", "two subscribers lost one each: {row}");
}
