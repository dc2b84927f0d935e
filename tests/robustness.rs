//! The relay under misbehaving clients and many clients: slow consumers,
//! resets in the middle of a frame, a thousand concurrent connections,
//! random garbage, and the clean-up when connections go away.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{fence, msg, show, Client, Rng, TestRelay, IO_TIMEOUT};
use tern::stats::Totals;

/// Waits (bounded by [`IO_TIMEOUT`]) until `done` holds for the relay's
/// summed counters: closing a socket reaches the relay asynchronously, so
/// gauges are checked for *eventually* reaching a value, never for how soon.
fn eventually(relay: &TestRelay, what: &str, done: impl Fn(&Totals) -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let t = relay.stats();
        if done(&t) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never reached: {what}; stats: {t:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn slow_consumer_is_closed_and_isolated() {
    const N: usize = 16_000;
    const PAYLOAD: usize = 1024;
    let relay = TestRelay::start_with(|c| c.max_pending = 256 * 1024);
    // The slow consumer lives on shard 1 and never reads after subscribing.
    let mut slow = Client::tiny_window(relay.shard_addrs()[1], relay.term());
    slow.sub("sc.x");
    // Healthy subscribers on the other shard and on the slow one's shard.
    let mut healthy: Vec<Client> = [0, 1].iter().map(|&s| relay.on(s)).collect();
    for h in &mut healthy {
        h.sub("sc.x");
    }
    // Lock-step: the next batch is published only once every healthy
    // subscriber has read the previous one, so their unsent output stays
    // far below `max_pending` however slowly this (debug-built) client
    // reads. A publisher faster than its readers would make every reader a
    // slow consumer, which is the rule, not the isolation tested here.
    const BATCH: usize = 32;
    let mut publisher = relay.on(0);
    for start in (0..N).step_by(BATCH) {
        let mut batch = Vec::new();
        for i in start..start + BATCH {
            batch.extend_from_slice(b"PUB sc.x ");
            batch.extend_from_slice(&payload(i, PAYLOAD));
            batch.extend_from_slice(relay.term());
        }
        publisher.send_raw(&batch);
        for h in &mut healthy {
            for i in start..start + BATCH {
                let f = h.read_frame();
                assert!(
                    f == msg("sc.x", payload(i, PAYLOAD)),
                    "healthy subscriber: message {i} is {}",
                    show(&f)
                );
            }
        }
    }
    publisher.expect_silence();
    for h in &mut healthy {
        h.expect_silence();
    }

    // The slow consumer got a prefix of the messages, perhaps the notice,
    // then the relay closed it.
    let frames = slow.read_until_closed();
    let (last, msgs) = match frames.split_last() {
        Some((last, rest)) if last.starts_with(b"-ERR") => (Some(last.clone()), rest.to_vec()),
        _ => (None, frames.clone()),
    };
    if let Some(last) = last {
        assert_eq!(show(&last), "-ERR slow consumer");
    }
    assert!(msgs.len() < N, "the slow consumer was cut off");
    for (i, f) in msgs.iter().enumerate() {
        assert!(
            f == &msg("sc.x", payload(i, PAYLOAD)),
            "slow consumer's message {i}"
        );
    }
    assert_eq!(relay.stats().slow_consumers, 1);
    assert_eq!(relay.shard(1).slow_consumers, 1);
    eventually(&relay, "the slow consumer's subscription is gone", |t| {
        t.subscriptions == 2 && t.connections_open == 3
    });
    // And the relay still serves everyone.
    let mut late = relay.on(1);
    late.sub("sc.x");
    publisher.publish("sc.x", "after");
    late.expect_msg("sc.x", "after");
}

/// Payload `i` of the slow-consumer test: its number, padded.
fn payload(i: usize, len: usize) -> Vec<u8> {
    let mut p = format!("{i} ").into_bytes();
    p.resize(len, b'p');
    p
}

#[test]
fn reset_in_the_middle_of_a_frame_disturbs_nobody() {
    const N: usize = 1000;
    let relay = TestRelay::start();
    let mut publisher = relay.on(0);
    let mut sub = relay.on(1);
    sub.sub("r.x");
    sub.sub_fence();

    for shard in [0, 1] {
        // Subscribed, with half a PUB read by the relay and deliveries
        // queued and unread when it resets.
        let mut rude = Client::tiny_window(relay.shard_addrs()[shard], relay.term());
        rude.sub("r.x");
        // One write: once PONG is back the relay has read the half frame
        // that came with the PING.
        let mut half = b"PING".to_vec();
        half.extend_from_slice(relay.term());
        half.extend_from_slice(b"PUB r.x half a fra");
        rude.send_raw(&half);
        rude.expect("PONG");
        for i in 0..200 {
            publisher.publish("r.x", format!("queued {i} {}", "q".repeat(200)));
        }
        for i in 0..200 {
            sub.expect_msg("r.x", format!("queued {i} {}", "q".repeat(200)));
        }
        rude.reset();
        // One that resets inside a verb, before any complete frame.
        let mut rude = relay.on(shard);
        rude.send_raw(b"PI");
        rude.reset();
    }
    for i in 0..N {
        publisher.publish("r.x", i.to_string());
    }
    for i in 0..N {
        sub.expect_msg("r.x", i.to_string());
    }
    fence(&mut publisher, &mut [&mut sub], "1");
    eventually(&relay, "only the publisher and subscriber open", |t| {
        t.connections_open == 2
    });
    assert_eq!(
        relay.stats().protocol_errors,
        0,
        "no partial frame was parsed"
    );
}

#[test]
fn thousand_concurrent_connections() {
    const N: usize = 1000;
    const BATCH: usize = 100;
    let relay = TestRelay::start();
    let mut clients: Vec<Client> = Vec::with_capacity(N);
    // Connect in batches, each connection pinged before the next batch, so
    // the listen backlog never overflows (which would only add retries).
    while clients.len() < N {
        let mut batch: Vec<Client> = (0..BATCH).map(|_| relay.shared()).collect();
        for c in &mut batch {
            c.send("SUB k.x");
            c.send("PING");
        }
        for c in &mut batch {
            c.expect("PONG");
        }
        clients.append(&mut batch);
    }
    let per_shard: Vec<u64> = relay
        .shard_stats()
        .iter()
        .map(|s| s.connections_open)
        .collect();
    assert_eq!(per_shard.iter().sum::<u64>(), N as u64, "{per_shard:?}");
    assert!(
        per_shard.iter().all(|&n| n as usize >= N / 4),
        "connections spread over both shards: {per_shard:?}"
    );

    // All at once: every connection pings, then every one reads its PONG.
    for c in &mut clients {
        c.send("PING");
    }
    for c in &mut clients {
        c.expect("PONG");
    }
    // One publish reaches all of them, on both shards.
    let mut publisher = relay.on(0);
    publisher.publish("k.x", "all");
    for c in &mut clients {
        c.expect_msg("k.x", "all");
    }
    assert!(relay.shard(0).forwarded > 0);
    drop(clients);
    eventually(&relay, "closed connections are released", |t| {
        t.connections_open == 1 && t.subscriptions == 0
    });
}

#[test]
fn shared_listener_spreads_connections_over_shards() {
    const N: usize = 64;
    let relay = TestRelay::start();
    let mut clients: Vec<Client> = (0..N).map(|_| relay.shared()).collect();
    for c in &mut clients {
        c.ping();
    }
    let per_shard: Vec<u64> = relay
        .shard_stats()
        .iter()
        .map(|s| s.connections_open)
        .collect();
    assert_eq!(per_shard.iter().sum::<u64>(), N as u64);
    assert!(
        per_shard.iter().all(|&n| (16..=48).contains(&n)),
        "each shard holds between 16 and 48 of 64: {per_shard:?}"
    );
}

#[test]
fn closing_connections_releases_their_subscriptions() {
    let relay = TestRelay::start();
    let mut publisher = relay.on(0);
    let mut keep = relay.on(1);
    keep.sub("c.x");
    keep.sub_fence();
    for shard in [0, 1, 0, 1] {
        let mut c = relay.on(shard);
        c.sub("c.x");
        c.sub("c.*");
        c.sub_group("c.x", "g");
        drop(c);
    }
    eventually(&relay, "subscriptions of closed connections removed", |t| {
        t.subscriptions == 2 && t.connections_open == 2
    });
    // A group whose members all left delivers to nobody, and the relay
    // keeps routing to those still here.
    publisher.publish("c.x", "1");
    keep.expect_msg("c.x", "1");
    fence(&mut publisher, &mut [&mut keep], "1");
}

/// Random bytes with the relay's vocabulary mixed in: verbs in any case,
/// valid, invalid and wildcard subjects, groups, runs of spaces, random
/// bytes and terminators in unlucky places.
fn garbage(rng: &mut Rng, term: &[u8], len: usize) -> Vec<u8> {
    const WORDS: &[&[u8]] = &[
        b"PUB", b"pub", b"SUB", b"sUb", b"UNSUB", b"unsub", b"PING", b"ping", b"PONG", b"MSG",
        b"-ERR", b"a", b"a.b", b"a.*", b"a.>", b">", b"*", b"a..b", b".", b"g", b"grp.x", b"\xff",
        b"\x00", b"\r", b"\t",
    ];
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        match rng.below(10) {
            0..=3 => {
                let word: &&[u8] = rng.pick(WORDS);
                out.extend_from_slice(word);
            }
            4..=5 => out.push(b' '),
            6 => out.extend_from_slice(term),
            // Part of a terminator.
            7 => out.extend_from_slice(&term[..rng.below(term.len()) + 1]),
            _ => {
                for _ in 0..rng.below(12) {
                    out.push(rng.next_u64() as u8);
                }
            }
        }
        // Now and then a long frame.
        if rng.below(500) == 0 {
            out.resize(out.len() + rng.below(10_000), b'x');
        }
    }
    out
}

/// Reasons the relay may give (the spec's list).
const REASONS: &[&str] = &[
    "unknown verb",
    "missing subject",
    "invalid subject",
    "invalid group",
    "invalid arguments",
    "too many subscriptions",
    "frame too long",
    "slow consumer",
];

fn random_garbage_with(term_spec: &str, seed: u64) {
    const GARBAGE: usize = 256 * 1024;
    let relay = TestRelay::start_with(|c| {
        c.terminator = tern::framing::Terminator::parse(term_spec).unwrap();
        c.max_frame = 4096;
        c.max_subs = 50;
    });
    let term = relay.term().to_vec();
    let mut good_pub = relay.on(0);
    let mut good_sub = relay.on(1);
    good_sub.sub("good.x");

    let mut rng = Rng::new(seed);
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for k in 0..4 {
        let c = relay.on(k % 2);
        let mut reader = Client::from_stream(c.stream().try_clone().unwrap(), &term);
        let bytes = garbage(&mut rng, &term, GARBAGE);
        let chunk_seed = rng.next_u64();
        // Everything the relay says to a garbage client must still be a
        // well-formed frame of the protocol.
        readers.push(thread::spawn(move || loop {
            match reader.try_read_frame() {
                Ok(None) => return,
                Ok(Some(f)) => {
                    let ok = f == b"PONG"
                        || f.starts_with(b"MSG ")
                        || f.strip_prefix(b"-ERR ")
                            .is_some_and(|r| REASONS.iter().any(|reason| r == reason.as_bytes()));
                    assert!(ok, "garbage client {k} got {}", show(&f));
                }
                Err(e) => panic!("garbage client {k}: relay did not close cleanly: {e}"),
            }
        }));
        writers.push(thread::spawn(move || {
            let mut c = c;
            let mut rng = Rng::new(chunk_seed);
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = (rng.below(4096) + 1).min(rest.len());
                c.send_raw(&rest[..n]);
                rest = &rest[n..];
            }
            // The relay must handle what came, flush and close.
            c.shutdown_write();
            c
        }));
    }
    // Meanwhile, the well-behaved pair keeps working.
    for i in 0..200 {
        good_pub.publish("good.x", i.to_string());
        good_sub.expect_msg("good.x", i.to_string());
    }
    let _garbage_clients: Vec<Client> = writers
        .into_iter()
        .map(|w| w.join().expect("garbage written"))
        .collect();
    for r in readers {
        r.join()
            .expect("the relay answered garbage with protocol frames and closed");
    }
    for i in 0..200 {
        good_pub.publish("good.x", format!("after {i}"));
    }
    for i in 0..200 {
        good_sub.expect_msg("good.x", format!("after {i}"));
    }
    good_pub.expect_silence();
    relay.shared().ping();
}

#[test]
fn random_garbage_newline() {
    random_garbage_with(r"\n", 0x5eed_0001);
}

#[test]
fn random_garbage_crlf() {
    random_garbage_with(r"\r\n", 0x5eed_0002);
}

#[test]
fn random_garbage_end_newline() {
    random_garbage_with(r"END\n", 0x5eed_0003);
}

#[test]
fn ten_thousand_subscriptions_on_one_connection() {
    // The default --max-subs is 10,000: all of them at once, in one write,
    // then the limit.
    let max = tern::config::DEFAULT_MAX_SUBS;
    let relay = TestRelay::start();
    let mut c = relay.on(1);
    let mut out = Vec::new();
    for i in 0..max {
        out.extend_from_slice(format!("SUB many.{i}.*").as_bytes());
        out.extend_from_slice(relay.term());
    }
    c.send_raw(&out);
    c.ping();
    assert_eq!(relay.stats().subscriptions, max as u64);
    c.expect_err_for("SUB one.more", "too many subscriptions");
    let mut publisher = relay.on(0);
    for i in (0..max).step_by(997) {
        publisher.publish(&format!("many.{i}.x"), i.to_string());
    }
    for i in (0..max).step_by(997) {
        c.expect_msg(&format!("many.{i}.x"), i.to_string());
    }
    publisher.publish("many.x.x", "none");
    publisher.publish("one.more", "none");
    publisher.publish(&format!("many.{}.x", max - 1), "last");
    c.expect_msg(&format!("many.{}.x", max - 1), "last");
    drop(c);
    eventually(&relay, "all 10,000 released", |t| t.subscriptions == 0);
}

#[test]
fn shutdown_flushes_and_closes_every_connection() {
    // Output queued before the shutdown reaches a client that keeps
    // reading; then every connection is closed and nothing accepts.
    const N: usize = 200;
    let relay = TestRelay::start();
    let body = "s".repeat(64 * 1024);
    // Tiny window while the relay queues 12.5 MiB, so most of it waits in
    // the relay, not in the kernel.
    let mut sub = Client::tiny_window(relay.shard_addrs()[1], relay.term());
    sub.sub("z.x");
    let mut publisher = relay.on(1);
    let mut idle: Vec<Client> = (0..4).map(|i| relay.on(i % 2)).collect();
    idle.push(relay.shared());
    for c in &mut idle {
        c.ping();
    }
    for i in 0..N {
        publisher.publish("z.x", format!("{i} {body}"));
    }
    publisher.ping();
    let mut addrs = relay.shard_addrs().to_vec();
    addrs.extend_from_slice(relay.local_addrs());

    let reader = thread::spawn(move || {
        // The first messages through the small window, while the shutdown
        // has begun; then the rest quickly (the relay flushes for 2 s).
        let mut frames: Vec<Vec<u8>> = (0..N / 8).map(|_| sub.read_frame()).collect();
        socket2::SockRef::from(sub.stream())
            .set_recv_buffer_size(8 << 20)
            .unwrap();
        frames.extend(sub.read_until_closed());
        assert_eq!(frames.len(), N, "every queued message, then the close");
        for (i, f) in frames.iter().enumerate() {
            assert!(f == &msg("z.x", format!("{i} {body}")), "message {i}");
        }
    });
    let totals = relay.shutdown();
    reader
        .join()
        .expect("queued output flushed before the close");
    assert_eq!(totals.msgs_in, N as u64);
    assert_eq!(totals.connections_accepted, 7);
    for mut c in idle.into_iter().chain([publisher]) {
        let rest = c.read_until_closed();
        assert!(rest.is_empty(), "nothing owed: {:?}", rest.len());
    }
    for addr in addrs {
        assert!(
            std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT).is_err(),
            "{addr} still accepts after shutdown"
        );
    }
}

#[test]
fn shutdown_delivers_what_the_mesh_carries() {
    // A publisher on shard 0 floods a subscriber on shard 1 while the relay
    // stops: every message the relay accepted (its exit count) reaches the
    // subscriber, in order, although some were still between the shards
    // when the stop came.
    let relay = TestRelay::start_with(|c| c.max_pending = 1 << 30);
    let mut sub = relay.on(1);
    sub.sub("flood");
    sub.sub_fence();
    let mut publisher = relay.on(0);
    fence(&mut publisher, &mut [&mut sub], "ready");
    let stream = publisher.stream().try_clone().unwrap();
    let flood = thread::spawn(move || {
        let mut stream = stream;
        let mut batch = Vec::new();
        let mut seq = 0u64;
        // Until the relay closes the connection (the write fails).
        loop {
            batch.clear();
            for _ in 0..1000 {
                batch.extend_from_slice(format!("PUB flood {seq}\n").as_bytes());
                seq += 1;
            }
            if std::io::Write::write_all(&mut stream, &batch).is_err() {
                return;
            }
        }
    });
    let reader = thread::spawn(move || {
        let mut got = 0u64;
        loop {
            match sub.try_read_frame() {
                Ok(Some(f)) => {
                    assert_eq!(f, msg("flood", got.to_string()), "in order, none lost");
                    got += 1;
                }
                Ok(None) | Err(_) => return got,
            }
        }
    });
    // Let the flood get going (and the mesh fill) before stopping.
    while relay.shard(1).msgs_out < 50_000 {
        thread::sleep(Duration::from_millis(1));
    }
    let totals = relay.shutdown();
    let got = reader.join().expect("reader");
    flood.join().expect("publisher");
    // The fence message is the one message in that was not a flood.
    assert_eq!(
        got,
        totals.msgs_in - 1,
        "accepted messages lost at shutdown"
    );
}

#[test]
fn readers_that_keep_reading_slow_a_fast_publisher_instead_of_being_cut() {
    // A publisher writes as fast as it can to two subscribers (one on its
    // shard, one on the other) whose tiny socket windows make them far
    // slower than the relay: it is paused while they catch up, and they
    // get every message instead of being closed as slow consumers. The
    // stall limit is long here so that a test thread the machine leaves
    // unscheduled for a while is still a reader that keeps reading.
    const N: usize = 4_000;
    let relay = TestRelay::start_with(|c| {
        c.max_pending = 128 * 1024;
        c.max_stall = Duration::from_secs(10);
    });
    let mut readers: Vec<Client> = (0..2)
        .map(|shard| {
            let mut c = Client::tiny_window(relay.shard_addrs()[shard], relay.term());
            c.sub("fast");
            c.sub_fence();
            c
        })
        .collect();
    let mut publisher = relay.on(0);
    {
        let mut refs: Vec<&mut Client> = readers.iter_mut().collect();
        fence(&mut publisher, &mut refs, "ready");
    }
    let body = "b".repeat(1024);
    let handles: Vec<_> = readers
        .into_iter()
        .map(|mut c| {
            let body = body.clone();
            thread::spawn(move || {
                for i in 0..N {
                    assert_eq!(
                        c.read_frame(),
                        msg("fast", format!("{i} {body}")),
                        "message {i}"
                    );
                }
            })
        })
        .collect();
    let mut batch = String::new();
    for i in 0..N {
        batch.push_str(&format!("PUB fast {i} {body}\n"));
    }
    publisher.send_raw(batch.as_bytes());
    for h in handles {
        h.join().expect("every message, in order");
    }
    let totals = relay.stats();
    assert_eq!(totals.slow_consumers, 0);
    assert!(totals.stalls > 0, "the publisher was paused: {totals:?}");
}

#[test]
fn over_the_memory_budget_big_input_is_refused_and_big_queues_closed() {
    // A 4 MiB budget for the whole relay. Eight clients each start a frame
    // of up to 1 MiB and never end it: once the relay holds more than its
    // budget, the ones still growing are refused and closed; the rest of
    // the relay keeps serving.
    let relay = TestRelay::start_with(|c| {
        c.max_memory = 4 << 20;
        c.max_frame = 2 << 20;
        c.max_stall = Duration::ZERO;
    });
    let piece = vec![b'y'; 64 * 1024];
    let mut hogs: Vec<Client> = (0..8).map(|i| relay.on(i % 2)).collect();
    for hog in &mut hogs {
        hog.send_raw(b"PUB hog ");
    }
    // Each hog ends up either holding its 1 MiB partial frame or refused
    // (a refused one's later writes may fail: the relay closed it).
    let mut writers = Vec::new();
    for hog in hogs {
        let piece = piece.clone();
        writers.push(thread::spawn(move || {
            for _ in 0..16 {
                if std::io::Write::write_all(&mut hog.stream(), &piece).is_err() {
                    break;
                }
            }
            hog
        }));
    }
    let hogs: Vec<Client> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let mut healthy = relay.on(0);
    healthy.ping();
    eventually(&relay, "some refused for memory", |t| t.memory_refusals > 0);
    let mut refused = 0;
    for mut hog in hogs {
        // A refused one may be closed already.
        let _ = hog.stream().shutdown(std::net::Shutdown::Write);
        let frames = hog.read_until_closed();
        if frames.first().is_some_and(|f| f == b"-ERR frame too long") {
            refused += 1;
        }
    }
    assert!(refused > 0, "at least one hog refused");
    // The buffers went with their connections.
    eventually(&relay, "input buffers released", |t| {
        t.input_bytes < (1 << 20)
    });
    healthy.expect_silence();

    // A receiver that does not read, while the relay is over budget, is
    // closed once its queue passes 1 MiB, long before --max-pending.
    // (A client holding a 1.9 MiB partial frame takes the relay near its
    // budget first.)
    let mut hog = relay.on(0);
    hog.send_raw(b"PUB hog ");
    for _ in 0..30 {
        hog.send_raw(&piece);
    }
    eventually(&relay, "the partial frame held", |t| {
        t.input_bytes > 1 << 20
    });
    let mut sleeper = Client::tiny_window(relay.shard_addrs()[1], relay.term());
    sleeper.sub("big");
    let mut publisher = relay.on(1);
    let before = relay.stats().memory_refusals;
    for i in 0..400 {
        publisher.publish("big", format!("{i} {}", "p".repeat(16 * 1024)));
    }
    publisher.ping();
    eventually(&relay, "the sleeper closed for memory", |t| {
        t.memory_refusals > before && t.slow_consumers > 0
    });
}
