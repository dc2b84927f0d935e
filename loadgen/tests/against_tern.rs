//! End to end: the generator against an in-process tern relay with two
//! shards, checking integrity (nothing lost, duplicated, reordered or
//! damaged; a queue group gets each message exactly once) and that the
//! output files are what they claim to be. Never a timing: these runs share
//! two cores with the relay, so only correctness is asserted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tern::config::Config;
use tern::relay::Relay;
use tern_loadgen::options::Options;
use tern_loadgen::proto::{Protocol, ServerKind};
use tern_loadgen::report::Report;
use tern_loadgen::{run, Error};

/// One run at a time: each spins a worker, and the machine is small.
static SERIAL: Mutex<()> = Mutex::new(());

fn relay() -> Relay {
    Relay::start(Config::local(2)).expect("relay starts")
}

/// Options for a short run against `targets`: one pinned worker, so the
/// generator leaves room for the relay's shards.
fn short(targets: &[SocketAddr]) -> Options {
    let cpus = tern::sys::allowed_cpus();
    Options {
        targets: targets.to_vec(),
        protocol: Protocol::Line,
        duration: Duration::from_millis(1500),
        warmup: Duration::from_millis(500),
        cores: Some(vec![*cpus.last().unwrap()]),
        // Sleep between events: the relay's shards need the CPUs too.
        busy_poll: false,
        quiet: true,
        drain_timeout: Duration::from_secs(10),
        ..Options::default()
    }
}

fn assert_clean(r: &Report) {
    assert!(r.complete, "run stopped early: {:?}", r.error);
    assert!(r.drained, "messages still in flight at the end");
    assert_eq!(
        (r.lost, r.duplicated, r.reordered, r.corrupt),
        (0, 0, 0, 0),
        "integrity:\n{}",
        r.table()
    );
    assert!(r.sent > 0);
    assert_eq!(r.received, r.expected, "every measured message delivered");
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-loadgen-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn fan_out_across_shards_loses_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let relay = relay();
    // Connections alternate between the two shards' own listeners, so
    // publishers and subscribers are on different shards.
    let dir = temp_dir("fanout");
    let opts = Options {
        publishers: 2,
        subscribers: 3,
        subjects: 2,
        rate: 20_000,
        json: Some(dir.join("r.json")),
        hdr_log: Some(dir.join("r.hlog")),
        plot: Some(dir.join("r.svg")),
        ..short(relay.shard_addrs())
    };
    let report = run(opts).expect("run succeeds");
    assert_clean(&report);
    assert_eq!(report.expected, report.sent * 3);

    // The JSON has the documented keys and agrees with the report.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("r.json")).unwrap()).unwrap();
    assert_eq!(json["sent"], report.sent);
    assert_eq!(json["lost"], 0);
    assert!(json["latency_us"]["p99"].as_f64().unwrap() > 0.0);
    assert!(json["service_time_us"]["p9999"].is_number());
    assert!(json["client_cpu_pct"].is_number());

    // The interval log is a standard one: it reads back, and its corrected
    // histograms hold every measured delivery.
    let log = std::fs::read(dir.join("r.hlog")).unwrap();
    assert!(log.starts_with(b"#"));
    let mut corrected = 0;
    let mut deserializer = hdrhistogram::serialization::Deserializer::new();
    for entry in hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&log) {
        if let hdrhistogram::serialization::interval_log::LogEntry::Interval(h) = entry.unwrap() {
            let bytes = base64_decode(h.encoded_histogram());
            let hist: hdrhistogram::Histogram<u64> =
                deserializer.deserialize(&mut bytes.as_slice()).unwrap();
            if h.tag().is_none() {
                corrected += hist.len();
            }
        }
    }
    assert_eq!(corrected, report.received);

    let svg = std::fs::read_to_string(dir.join("r.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("corrected"));
    std::fs::remove_dir_all(&dir).unwrap();
    relay.shutdown();
}

#[test]
fn queue_group_gets_each_message_exactly_once() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let relay = relay();
    let opts = Options {
        publishers: 2,
        subscribers: 3,
        group: Some("workers".into()),
        rate: 20_000,
        ..short(relay.shard_addrs())
    };
    let report = run(opts).expect("run succeeds");
    assert_clean(&report);
    assert_eq!(report.expected, report.sent, "one delivery per message");
    relay.shutdown();
}

#[test]
fn max_rate_with_a_window_and_a_multibyte_terminator() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let relay = Relay::start(Config {
        terminator: tern::framing::Terminator::parse(r"\r\n").unwrap(),
        ..Config::local(2)
    })
    .expect("relay starts");
    let opts = Options {
        terminator: tern::framing::Terminator::parse(r"\r\n").unwrap(),
        subscribers: 2,
        rate: 0,
        window: 200,
        ..short(relay.local_addrs())
    };
    let report = run(opts).expect("run succeeds");
    assert_clean(&report);
    relay.shutdown();
}

#[test]
fn other_protocols_are_told_they_are_talking_to_tern() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let relay = relay();
    for protocol in [Protocol::Nats, Protocol::Redis] {
        let opts = Options {
            protocol,
            ..short(relay.local_addrs())
        };
        let failure = run(opts).expect_err("wrong protocol must fail");
        match failure.error {
            Error::WrongProtocol { server, .. } => assert_eq!(server, ServerKind::Tern),
            other => panic!("{protocol}: expected WrongProtocol, got {other}"),
        }
        assert!(failure.report.is_none(), "nothing ran");
    }
    relay.shutdown();
}

#[test]
fn a_relay_that_goes_away_mid_run_is_an_error_with_partial_results() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let relay = relay();
    let opts = Options {
        rate: 5_000,
        duration: Duration::from_secs(30),
        ..short(relay.local_addrs())
    };
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        relay.shutdown();
    });
    let failure = run(opts).expect_err("a dropped connection must fail the run");
    stopper.join().unwrap();
    assert!(
        matches!(failure.error, Error::Dropped { .. } | Error::Refused { .. }),
        "got {}",
        failure.error
    );
    let report = failure.report.expect("partial results");
    assert!(!report.complete);
    assert!(report.error.is_some());
    assert!(report.sent_total > 0, "it had been running");
}

#[test]
fn unreachable_target_is_a_clear_error() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Bind then drop to get a port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let failure = run(short(&[addr])).expect_err("nothing listens there");
    assert!(
        matches!(failure.error, Error::Connect { .. }),
        "got {}",
        failure.error
    );
    assert!(failure.error.to_string().contains("is the server running"));
}

/// Standard base64 (the interval log's encoding), to read the log back
/// without another dependency.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= (val(c) as u32) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[test]
fn nats_and_mixed_runs_against_tern_lose_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let relay = relay();
    // All NATS, publishers and subscribers on different shards.
    let nats = Options {
        protocol: Protocol::Nats,
        publishers: 2,
        subscribers: 2,
        rate: 20_000,
        ..short(relay.shard_nats_addrs())
    };
    assert_clean(&run(nats).expect("NATS run succeeds"));
    // Line publishers on shard 0, NATS subscribers in a queue group on
    // both shards: each message once, across protocols.
    let mixed = Options {
        publishers: 1,
        subscribers: 2,
        group: Some("g".into()),
        subscriber: Some((Protocol::Nats, relay.shard_nats_addrs().to_vec())),
        rate: 20_000,
        ..short(&relay.shard_addrs()[..1])
    };
    let report = run(mixed).expect("mixed run succeeds");
    assert_clean(&report);
    assert!(
        report.target.contains("(subscribers: nats "),
        "{}",
        report.target
    );
}

#[test]
fn the_forwarder_baseline_delivers_every_message() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Runs until the test process ends.
    std::thread::spawn(move || tern_loadgen::forwarder::serve(listener));
    let report = run(Options {
        rate: 5_000,
        ..short(&[addr])
    })
    .expect("run succeeds");
    assert_clean(&report);
    assert_eq!(report.expected, report.sent);
}
