//! Who gets a message, how often and in what order, across two shards:
//! wildcards, once-per-connection delivery, UNSUB, echo, queue groups,
//! per-publisher order, the PING barrier, two shards flooding each other,
//! and half-closed connections.
//!
//! Publishers sit on shard 0 and subscribers on shard 1 unless a test says
//! otherwise (through the per-shard listeners), and tests check the
//! `forwarded` counter where a message must have crossed shards.

mod common;

use std::collections::BTreeSet;
use std::thread;

use common::{fence, msg, show, Client, TestRelay, FENCE};

/// Reads `MSG` frames until the fence `tag`, returning them (without it).
fn read_until_fence(c: &mut Client, tag: &str) -> Vec<Vec<u8>> {
    let end = msg(FENCE, tag);
    let mut frames = Vec::new();
    loop {
        let f = c.read_frame();
        if f == end {
            return frames;
        }
        frames.push(f);
    }
}

/// Frames as readable strings, for assertions that print them.
fn shown(frames: &[Vec<u8>]) -> Vec<String> {
    frames.iter().map(|f| show(f)).collect()
}

/// Subject of a `MSG` frame.
fn subject_of(frame: &[u8]) -> String {
    let rest = frame
        .strip_prefix(b"MSG ")
        .unwrap_or_else(|| panic!("not a MSG: {}", show(frame)));
    let end = rest
        .iter()
        .position(|&b| b == b' ')
        .expect("space after subject");
    String::from_utf8(rest[..end].to_vec()).unwrap()
}

/// Payload of a `MSG` frame.
fn payload_of(frame: &[u8]) -> &[u8] {
    let rest = frame
        .strip_prefix(b"MSG ")
        .unwrap_or_else(|| panic!("not a MSG: {}", show(frame)));
    let space = rest
        .iter()
        .position(|&b| b == b' ')
        .expect("space after subject");
    &rest[space + 1..]
}

/// `PUB <subject> <payload>` frames with terminators, ready to write at once.
fn pub_frames(term: &[u8], items: impl IntoIterator<Item = (String, Vec<u8>)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (subject, payload) in items {
        out.extend_from_slice(b"PUB ");
        out.extend_from_slice(subject.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&payload);
        out.extend_from_slice(term);
    }
    out
}

#[test]
fn wildcard_semantics() {
    let relay = TestRelay::start();
    let published = [
        "a", "a.b", "a.b.c", "a.bc", "ab", "b.a", "a.b.c.d", "x.b.c", "a*", "a.b>", "b>", "a.*x",
    ];
    let table: &[(&str, &[&str])] = &[
        ("a", &["a"]),
        ("a.b", &["a.b"]),
        ("a.*", &["a.b", "a.bc", "a.b>", "a.*x"]),
        ("a.>", &["a.b", "a.b.c", "a.bc", "a.b.c.d", "a.b>", "a.*x"]),
        ("*", &["a", "ab", "a*", "b>"]),
        (">", &published),
        ("*.b.c", &["a.b.c", "x.b.c"]),
        ("a.*.c", &["a.b.c"]),
        ("*.*", &["a.b", "a.bc", "b.a", "a.b>", "a.*x"]),
        ("a.b.>", &["a.b.c", "a.b.c.d"]),
        (
            "*.>",
            &[
                "a.b", "a.b.c", "a.bc", "b.a", "a.b.c.d", "x.b.c", "a.b>", "a.*x",
            ],
        ),
        ("*.*.*.*", &["a.b.c.d"]),
        ("*.*.*.*.*", &[]),
        // Not wildcards: plain tokens that contain `*` or `>`.
        ("a*", &["a*"]),
        ("b>", &["b>"]),
        ("a.b>", &["a.b>"]),
        ("a.*x", &["a.*x"]),
    ];
    let mut publisher = relay.on(0);
    // Most subscribers on the other shard, every third one local.
    let mut subs: Vec<Client> = (0..table.len())
        .map(|i| relay.on(if i % 3 == 2 { 0 } else { 1 }))
        .collect();
    for (c, (pattern, _)) in subs.iter_mut().zip(table) {
        c.sub(pattern);
        c.sub_fence();
    }
    for s in published {
        publisher.publish(s, format!("on {s}"));
    }
    publisher.publish(FENCE, "end");
    for (c, (pattern, expected)) in subs.iter_mut().zip(table) {
        let got: Vec<String> = read_until_fence(c, "end")
            .iter()
            .map(|f| {
                let s = subject_of(f);
                assert_eq!(payload_of(f), format!("on {s}").as_bytes());
                s
            })
            .collect();
        // Publication order is kept, so compare as lists.
        let want: Vec<String> = published
            .iter()
            .filter(|p| expected.contains(p))
            .map(|p| p.to_string())
            .collect();
        assert_eq!(got, want, "subscription {pattern}");
    }
    assert!(relay.shard(0).forwarded > 0);
}

#[test]
fn once_per_connection_with_overlapping_subscriptions() {
    const N: usize = 200;
    let relay = TestRelay::start();
    let mut publisher = relay.on(0);
    let mut remote = relay.on(1);
    let mut local = relay.on(0);
    for c in [&mut remote, &mut local] {
        for s in ["a.*", "a.>", "a.b", ">", "*.b", "*.*"] {
            c.sub(s);
        }
        // Group memberships on top (both connections join both groups):
        // they add no second copy.
        c.sub_group("a.b", "g1");
        c.sub_group("a.*", "g2");
        c.sub_fence();
    }
    let base_out = relay.stats().msgs_out;
    for i in 0..N {
        publisher.publish("a.b", i.to_string());
    }
    publisher.publish(FENCE, "end");
    for c in [&mut remote, &mut local] {
        for i in 0..N {
            c.expect_msg("a.b", i.to_string());
        }
        c.expect_msg(FENCE, "end");
    }
    // The relay queued each message once per connection, not once per
    // matching subscription.
    assert_eq!(relay.stats().msgs_out - base_out, 2 * (N as u64 + 1));
    assert!(relay.shard(0).forwarded > 0);
}

#[test]
fn forwarded_once_per_shard_and_only_where_there_is_interest() {
    const N: u64 = 100;
    let relay = TestRelay::start();
    let mut publisher = relay.on(0);
    let mut local = relay.on(0);
    local.sub("i.x");
    for i in 0..N {
        publisher.publish("i.x", i.to_string());
    }
    for i in 0..N {
        local.expect_msg("i.x", i.to_string());
    }
    assert_eq!(
        relay.shard(0).forwarded,
        0,
        "shard 1 has no interest in i.x"
    );

    // Three receivers on shard 1: one forward per message, fanned out there.
    let mut remote: Vec<Client> = (0..3).map(|_| relay.on(1)).collect();
    for (k, c) in remote.iter_mut().enumerate() {
        c.sub(if k == 0 { "i.x" } else { "i.*" });
    }
    for i in 0..N {
        publisher.publish("i.x", i.to_string());
    }
    for c in remote.iter_mut().chain([&mut local]) {
        for i in 0..N {
            c.expect_msg("i.x", i.to_string());
        }
    }
    assert_eq!(relay.shard(0).forwarded, N);
    assert_eq!(relay.shard(1).forwarded, 0);
}

#[test]
fn unsub_removes_exactly_the_matching_subscription() {
    let relay = TestRelay::start();
    let mut publisher = relay.on(0);
    let mut c = relay.on(1);
    c.sub_fence();

    c.sub("u.x");
    c.unsub("u.x");
    publisher.publish("u.x", "1");
    fence(&mut publisher, &mut [&mut c], "1");

    // Overlapping: removing one leaves the other in force.
    c.sub("u.x");
    c.sub("u.*");
    c.unsub("u.x");
    publisher.publish("u.x", "2");
    c.expect_msg("u.x", "2");
    fence(&mut publisher, &mut [&mut c], "2");
    // A wildcard UNSUB removes only the wildcard subscription.
    c.sub("u.y");
    c.unsub("u.*");
    publisher.publish("u.x", "3");
    publisher.publish("u.y", "3");
    c.expect_msg("u.y", "3");
    fence(&mut publisher, &mut [&mut c], "3");
    c.unsub("u.y");

    // Groups: UNSUB must name the same group.
    c.sub_group("u.g", "grp");
    c.send("UNSUB u.g");
    c.send("UNSUB u.g other");
    c.expect_silence();
    publisher.publish("u.g", "4");
    c.expect_msg("u.g", "4");
    c.unsub("u.g grp");
    publisher.publish("u.g", "5");
    fence(&mut publisher, &mut [&mut c], "5");

    // Unknown UNSUBs are ignored silently, even repeated.
    for f in [
        "UNSUB never.seen",
        "UNSUB never.seen",
        "UNSUB n.* g",
        "unsub >",
    ] {
        c.expect_ok_for(f);
    }
    // One UNSUB removes a subscription SUBscribed twice.
    c.sub("u.z");
    c.sub("u.z");
    c.unsub("u.z");
    publisher.publish("u.z", "6");
    fence(&mut publisher, &mut [&mut c], "6");

    assert_eq!(relay.stats().subscriptions, 1, "only the fence is left");
    assert_eq!(relay.stats().protocol_errors, 0);
}

#[test]
fn echo_to_the_publisher() {
    let relay = TestRelay::start();
    let mut c = relay.on(1);
    c.sub("e.x");
    c.publish("e.x", "mine");
    c.expect_msg("e.x", "mine");
    c.sub("e.*");
    c.sub_group("e.y", "solo");
    c.publish("e.x", "once");
    c.publish("e.y", "group");
    c.expect_msg("e.x", "once");
    c.expect_msg("e.y", "group");
    // And others get it too.
    let mut other = relay.on(0);
    other.sub("e.x");
    c.publish("e.x", "both");
    c.expect_msg("e.x", "both");
    other.expect_msg("e.x", "both");
    assert!(relay.shard(1).forwarded > 0);
}

/// Members read until the fence; returns each member's payloads as numbers.
fn collect_group(members: &mut [Client]) -> Vec<Vec<usize>> {
    members
        .iter_mut()
        .map(|m| {
            read_until_fence(m, "end")
                .iter()
                .map(|f| {
                    std::str::from_utf8(payload_of(f))
                        .unwrap()
                        .parse::<usize>()
                        .unwrap()
                })
                .collect()
        })
        .collect()
}

#[test]
fn queue_group_exactly_once_and_spread_over_both_shards() {
    const N: usize = 4000;
    let relay = TestRelay::start();
    let mut publisher = relay.on(0);
    // Two members on each shard.
    let mut members: Vec<Client> = [0, 1, 0, 1].iter().map(|&s| relay.on(s)).collect();
    for m in &mut members {
        m.sub_group("q.work", "workers");
        m.sub_fence();
    }
    let frames = pub_frames(
        publisher.term(),
        (0..N).map(|i| ("q.work".to_string(), i.to_string().into_bytes())),
    );
    publisher.send_raw(&frames);
    publisher.publish(FENCE, "end");
    let got = collect_group(&mut members);

    let mut all = BTreeSet::new();
    for (k, ids) in got.iter().enumerate() {
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "member {k} received out of order"
        );
        assert!(
            ids.len() * 100 >= N * 15,
            "member {k} got {} of {N}: {:?}",
            ids.len(),
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
        all.extend(ids.iter().copied());
    }
    let total: usize = got.iter().map(Vec::len).sum();
    assert_eq!(total, N, "each message to exactly one member");
    assert_eq!(all, (0..N).collect(), "no message lost or duplicated");
    assert!(relay.shard(0).forwarded > 0);
}

#[test]
fn plain_and_several_groups_on_one_subject() {
    const N: usize = 300;
    let relay = TestRelay::start();
    let mut publisher = relay.on(0);
    let mut plain = relay.on(1);
    let mut group_a = vec![relay.on(0), relay.on(1)];
    let mut group_b = vec![relay.on(1)];
    plain.sub("g.s");
    plain.sub_fence();
    for m in &mut group_a {
        m.sub_group("g.s", "a");
        m.sub_fence();
    }
    // Group `b` on a wildcard subject that matches.
    group_b[0].sub_group("g.*", "b");
    group_b[0].sub_fence();

    for i in 0..N {
        publisher.publish("g.s", i.to_string());
    }
    publisher.publish(FENCE, "end");
    let plain_got = collect_group(std::slice::from_mut(&mut plain));
    assert_eq!(plain_got[0], (0..N).collect::<Vec<_>>());
    let a = collect_group(&mut group_a);
    let mut a_all: Vec<usize> = a.concat();
    a_all.sort_unstable();
    assert_eq!(a_all, (0..N).collect::<Vec<_>>(), "group a: each once");
    assert!(
        a.iter().all(|ids| !ids.is_empty()),
        "both members of a used"
    );
    let b = collect_group(&mut group_b);
    assert_eq!(
        b[0],
        (0..N).collect::<Vec<_>>(),
        "group b: its only member gets all"
    );
}

#[test]
fn a_group_is_named_by_subject_and_name() {
    const N: usize = 100;
    let relay = TestRelay::start();
    let mut publisher = relay.on(0);
    // Same group name, different subjects: two groups, each gets every
    // message.
    let mut m1 = relay.on(1);
    let mut m2 = relay.on(0);
    m1.sub_group("n.a", "g");
    m2.sub_group("n.*", "g");
    // One connection in both matching groups gets each message once.
    let mut both = relay.on(1);
    both.sub_group("n.b", "g");
    both.sub_group("n.>", "g");
    for c in [&mut m1, &mut m2, &mut both] {
        c.sub_fence();
    }
    for i in 0..N {
        publisher.publish("n.a", i.to_string());
        publisher.publish("n.b", i.to_string());
    }
    publisher.publish(FENCE, "end");

    let m1_got = read_until_fence(&mut m1, "end");
    let n_a: Vec<Vec<u8>> = (0..N).map(|i| msg("n.a", i.to_string())).collect();
    assert_eq!(shown(&m1_got), shown(&n_a));
    let m2_got = read_until_fence(&mut m2, "end");
    let both_got = read_until_fence(&mut both, "end");
    // `n.* g` has only m2 as member; `n.> g` only `both`; `n.b g` only
    // `both`. So m2 gets every n.a and n.b, `both` every n.a (via n.>) and
    // every n.b once (via n.b and n.>).
    let interleaved: Vec<Vec<u8>> = (0..N)
        .flat_map(|i| [msg("n.a", i.to_string()), msg("n.b", i.to_string())])
        .collect();
    assert_eq!(shown(&m2_got), shown(&interleaved));
    assert_eq!(shown(&both_got), shown(&interleaved));
}

#[test]
fn queue_group_after_a_member_leaves() {
    const N: usize = 200;
    let relay = TestRelay::start();
    let mut publisher = relay.on(0);
    let mut stays = relay.on(0);
    let mut leaves = relay.on(1);
    for m in [&mut stays, &mut leaves] {
        m.sub_group("l.x", "g");
        m.sub_fence();
    }
    leaves.unsub("l.x g");
    for i in 0..N {
        publisher.publish("l.x", i.to_string());
    }
    publisher.publish(FENCE, "end");
    assert_eq!(
        shown(&read_until_fence(&mut leaves, "end")),
        Vec::<String>::new()
    );
    let got = read_until_fence(&mut stays, "end");
    assert_eq!(got.len(), N, "the remaining member gets every message");
}

/// Publishes `n` numbered messages from `publisher` (in a thread) on
/// `subject`; payloads are `<tag> <i>` padded to `pad` bytes.
fn spawn_publisher(
    mut publisher: Client,
    subject: &'static str,
    tag: &'static str,
    n: usize,
    pad: usize,
) -> thread::JoinHandle<Client> {
    thread::spawn(move || {
        let term = publisher.term().to_vec();
        let mut batch = Vec::with_capacity(256 * 1024);
        for i in 0..n {
            let mut payload = format!("{tag} {i} ").into_bytes();
            payload.resize(pad.max(payload.len()), b'.');
            batch.extend_from_slice(format!("PUB {subject} ").as_bytes());
            batch.extend_from_slice(&payload);
            batch.extend_from_slice(&term);
            if batch.len() >= 128 * 1024 {
                publisher.send_raw(&batch);
                batch.clear();
            }
        }
        publisher.send_raw(&batch);
        publisher
    })
}

/// Reads `n` messages per tag from `c` (in a thread), checking that each
/// tag's sequence numbers arrive as 0, 1, 2, ...
fn spawn_checker(mut c: Client, tags: &'static [&'static str], n: usize) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut next = vec![0usize; tags.len()];
        for _ in 0..n * tags.len() {
            let f = c.read_frame();
            let payload = payload_of(&f);
            let mut fields = payload.split(|&b| b == b' ');
            let tag = std::str::from_utf8(fields.next().unwrap()).unwrap();
            let seq: usize = std::str::from_utf8(fields.next().unwrap())
                .unwrap()
                .parse()
                .unwrap_or_else(|_| panic!("bad payload {}", show(payload)));
            let k = tags
                .iter()
                .position(|t| *t == tag)
                .unwrap_or_else(|| panic!("unexpected {}", show(&f)));
            assert_eq!(seq, next[k], "publisher {tag}: out of order or lost");
            next[k] += 1;
        }
    })
}

#[test]
fn per_publisher_order_100k_across_shards() {
    const N: usize = 100_000;
    let relay = TestRelay::start();
    let mut remote = relay.on(1);
    let mut local = relay.on(0);
    remote.sub("o.x");
    local.sub("o.*");
    let checkers = [
        spawn_checker(remote, &["p0", "p1"], N),
        spawn_checker(local, &["p0", "p1"], N),
    ];
    // One publisher on each shard, publishing at once.
    let publishers = [
        spawn_publisher(relay.on(0), "o.x", "p0", N, 0),
        spawn_publisher(relay.on(1), "o.x", "p1", N, 0),
    ];
    for p in publishers {
        p.join().expect("publisher");
    }
    for c in checkers {
        c.join().expect("receiver saw every message in order");
    }
    assert!(relay.shard(0).forwarded >= N as u64);
    assert!(relay.shard(1).forwarded >= N as u64);
}

#[test]
fn ping_barrier_across_shards() {
    const ROUNDS: usize = 300;
    let relay = TestRelay::start();
    let mut on0 = relay.on(0);
    let mut on1 = relay.on(1);
    on0.sub_fence();
    on1.sub_fence();
    for i in 0..ROUNDS {
        // Alternate directions so both shards' barriers are exercised.
        let (sub, publisher) = if i % 2 == 0 {
            (&mut on1, &mut on0)
        } else {
            (&mut on0, &mut on1)
        };
        let subject = format!("bar.{i}");
        let (sub_frame, unsub_frame) = match i % 3 {
            0 => (format!("SUB {subject}"), format!("UNSUB {subject}")),
            1 => ("SUB bar.*".to_string(), "UNSUB bar.*".to_string()),
            _ => (format!("SUB {subject} g"), format!("UNSUB {subject} g")),
        };
        sub.send(&sub_frame);
        sub.ping();
        // Immediately after the PONG, a publish from the other shard.
        publisher.publish(&subject, i.to_string());
        sub.expect_msg(&subject, i.to_string());
        // The same for UNSUB: after the PONG it is out of force everywhere.
        sub.send(&unsub_frame);
        sub.ping();
        publisher.publish(&subject, "late");
        fence(publisher, &mut [sub], &i.to_string());
        // Both connections take the fence, so the publisher gets its own.
        publisher.expect_msg(FENCE, i.to_string());
    }
    assert!(relay.shard(0).forwarded > 0 && relay.shard(1).forwarded > 0);
}

#[test]
fn two_shards_flooding_each_other() {
    const N: usize = 100_000;
    let relay = TestRelay::start();
    // Receivers on each shard, fed only by the publisher on the other.
    let mut r0 = relay.on(0);
    let mut r1 = relay.on(1);
    r0.sub("f.to0");
    r1.sub("f.to1");
    let checkers = [
        spawn_checker(r0, &["from1"], N),
        spawn_checker(r1, &["from0"], N),
    ];
    let publishers = [
        spawn_publisher(relay.on(0), "f.to1", "from0", N, 100),
        spawn_publisher(relay.on(1), "f.to0", "from1", N, 100),
    ];
    for p in publishers {
        p.join().expect("publisher");
    }
    for c in checkers {
        c.join().expect("every message, in order");
    }
    assert!(relay.shard(0).forwarded >= N as u64);
    assert!(relay.shard(1).forwarded >= N as u64);
}

#[test]
fn two_shards_flooding_each_other_on_the_same_connections() {
    // Each connection publishes to the other shard and receives from it at
    // the same time: a relay that stops reading a connection until its
    // output drains, or blocks a shard on a full path, deadlocks here.
    const N: usize = 50_000;
    let relay = TestRelay::start();
    let mut c0 = relay.on(0);
    let mut c1 = relay.on(1);
    c0.sub("s.to0");
    c1.sub("s.to1");
    let w0 = Client::from_stream(c0.stream().try_clone().unwrap(), relay.term());
    let w1 = Client::from_stream(c1.stream().try_clone().unwrap(), relay.term());
    let checkers = [
        spawn_checker(c0, &["from1"], N),
        spawn_checker(c1, &["from0"], N),
    ];
    let publishers = [
        spawn_publisher(w0, "s.to1", "from0", N, 100),
        spawn_publisher(w1, "s.to0", "from1", N, 100),
    ];
    for p in publishers {
        p.join().expect("publisher");
    }
    for c in checkers {
        c.join().expect("every message, in order");
    }
}

#[test]
fn half_closed_connection_gets_what_it_is_owed() {
    // Far more owed output (12.5 MiB) than the relay's socket send buffer
    // can hold (the kernel caps it at net.ipv4.tcp_wmem's maximum, 4 MiB by
    // default): the client reads only after it has half-closed, through a
    // small window, so the relay must keep the connection open and keep
    // writing after the end of its input.
    const N: usize = 200;
    let body = "h".repeat(64 * 1024);
    let relay = TestRelay::start();
    for shard in [0, 1] {
        let mut c = Client::tiny_window(relay.shard_addrs()[shard], relay.term());
        let mut out = b"SUB h.x".to_vec();
        out.extend_from_slice(c.term());
        out.extend_from_slice(b"PING");
        out.extend_from_slice(c.term());
        for i in 0..N {
            out.extend_from_slice(format!("PUB h.x {i} {body}").as_bytes());
            out.extend_from_slice(c.term());
        }
        out.extend_from_slice(b"FOO");
        out.extend_from_slice(c.term());
        // A partial frame at the end is dropped.
        out.extend_from_slice(b"PUB h.x partial");
        c.send_raw(&out);
        c.shutdown_write();

        // Replies come in order; the echoed messages in publication order
        // (the spec does not order them against the replies).
        let mut frames = Vec::new();
        loop {
            if frames.len() == N / 4 {
                // By now the relay has most likely seen the end of the
                // input with output still queued (which is what this test
                // is about): read the rest through a wide window, quickly.
                socket2::SockRef::from(c.stream())
                    .set_recv_buffer_size(8 << 20)
                    .unwrap();
            }
            match c.try_read_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => panic!(
                    "shard {shard}: no clean end of stream after {} frames: {e}",
                    frames.len()
                ),
            }
        }
        let (msgs, replies): (Vec<_>, Vec<_>) =
            frames.into_iter().partition(|f| f.starts_with(b"MSG "));
        let replies: Vec<String> = replies.iter().map(|f| show(f)).collect();
        assert_eq!(replies, ["PONG", "-ERR unknown verb"], "shard {shard}");
        assert_eq!(
            msgs.len(),
            N,
            "shard {shard}: every own message, no partial one"
        );
        for (i, m) in msgs.iter().enumerate() {
            assert!(
                m == &msg("h.x", format!("{i} {body}")),
                "shard {shard}: message {i} is {}",
                show(m)
            );
        }
    }
    // Half-closed through the shared listener too, with nothing owed.
    let mut c = relay.shared();
    c.send("PING");
    c.shutdown_write();
    c.expect("PONG");
    assert!(matches!(c.try_read_frame(), Ok(None)));
}

#[test]
fn sub_and_unsub_are_in_order_with_the_same_connections_pub() {
    // No PING needed for a connection's own PUB: frames are handled in order.
    let relay = TestRelay::start();
    for shard in [0, 1] {
        let mut c = relay.on(shard);
        let mut out = Vec::new();
        for f in [
            "SUB own.x",
            "PUB own.x 1",
            "UNSUB own.x",
            "PUB own.x 2",
            "SUB own.* g",
            "PUB own.x 3",
            "UNSUB own.* g",
            "PUB own.x 4",
            "PING",
        ] {
            out.extend_from_slice(f.as_bytes());
            out.extend_from_slice(c.term());
        }
        c.send_raw(&out);
        c.expect_msg("own.x", "1");
        c.expect_msg("own.x", "3");
        c.expect("PONG");
    }
}

#[test]
fn largest_default_frame_crosses_shards_intact() {
    // Default --max-frame is 1 MiB: a PUB frame of exactly that size is
    // delivered whole to the other shard; one byte more is refused.
    let relay = TestRelay::start();
    let max = tern::config::DEFAULT_MAX_FRAME;
    let mut publisher = relay.on(0);
    let mut sub = relay.on(1);
    sub.sub("big.x");
    sub.sub_fence();
    let mut frame = b"PUB big.x ".to_vec();
    let mut rng = common::Rng::new(7);
    while frame.len() < max {
        frame.push(b'a' + rng.below(26) as u8);
    }
    publisher.send(&frame);
    sub.expect_msg("big.x", &frame[10..]);
    frame.push(b'z');
    publisher.expect_err_for(&frame, "frame too long");
    fence(&mut publisher, &mut [&mut sub], "1");
    assert!(relay.shard(0).forwarded > 0);
}

#[test]
fn shared_interest_survives_one_subscriber_leaving() {
    // Two connections on shard 1 hold the same subscriptions; when one
    // leaves (UNSUB, or closing), shard 0 must keep forwarding for the
    // other: interest is counted, not a set.
    let relay = TestRelay::start();
    let mut publisher = relay.on(0);
    let mut stays = relay.on(1);
    stays.sub_fence();
    for s in ["rc.x", "rc.*"] {
        stays.sub(s);
    }
    stays.sub_group("rc.g", "grp");

    let mut unsubs = relay.on(1);
    unsubs.sub_fence();
    unsubs.sub("rc.x");
    unsubs.sub("rc.*");
    unsubs.sub_group("rc.g", "grp");
    unsubs.unsub("rc.x");
    unsubs.unsub("rc.*");
    unsubs.unsub("rc.g grp");
    publisher.publish("rc.x", "1");
    publisher.publish("rc.g", "1");
    stays.expect_msg("rc.x", "1");
    stays.expect_msg("rc.g", "1");
    fence(&mut publisher, &mut [&mut stays, &mut unsubs], "1");

    let mut closes = relay.on(1);
    closes.sub("rc.x");
    closes.sub("rc.*");
    closes.sub_group("rc.g", "grp");
    let before = relay.stats().subscriptions;
    drop(closes);
    let deadline = std::time::Instant::now() + common::IO_TIMEOUT;
    while relay.stats().subscriptions != before - 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "close never processed"
        );
        thread::sleep(std::time::Duration::from_millis(5));
    }
    // Shard 1 sent the interest removals before this barrier's marker, and
    // paths are FIFO: once PONG is back, shard 0 has applied them.
    stays.sub("rc.barrier");
    for i in 0..20 {
        publisher.publish("rc.x", i.to_string());
        publisher.publish("rc.g", i.to_string());
    }
    for i in 0..20 {
        stays.expect_msg("rc.x", i.to_string());
        stays.expect_msg("rc.g", i.to_string());
    }
    fence(&mut publisher, &mut [&mut stays, &mut unsubs], "2");
}

#[test]
fn subscription_changes_invalidate_cached_routes() {
    // The same subject is published before, during and after each change,
    // so a stale "who matches" answer cached anywhere shows up.
    let relay = TestRelay::start();
    let mut publisher = relay.on(0);
    let mut remote = relay.on(1);
    let mut local = relay.on(0);
    for c in [&mut remote, &mut local] {
        c.sub_fence();
    }
    for round in 0..30 {
        let (sub_frame, unsub_frame) = match round % 3 {
            0 => ("SUB cache.x.y", "UNSUB cache.x.y"),
            1 => ("SUB cache.*.y", "UNSUB cache.*.y"),
            _ => ("SUB cache.> g", "UNSUB cache.> g"),
        };
        let tag = round.to_string();
        for k in 0..2 {
            publisher.publish("cache.x.y", "before");
            fence(&mut publisher, &mut [&mut remote, &mut local], &tag);
            let c = if k == 0 { &mut remote } else { &mut local };
            c.send(sub_frame);
            c.ping();
            publisher.publish("cache.x.y", "during");
            c.expect_msg("cache.x.y", "during");
            c.send(unsub_frame);
            c.ping();
            publisher.publish("cache.x.y", "after");
            fence(&mut publisher, &mut [&mut remote, &mut local], &tag);
        }
    }
    // Many distinct subjects (more than any small cache holds) still route.
    remote.sub("many.*");
    local.sub("many.>");
    for i in 0..5000 {
        publisher.publish(&format!("many.{i}"), "");
    }
    for c in [&mut remote, &mut local] {
        for i in 0..5000 {
            c.expect(format!("MSG many.{i} "));
        }
    }
    assert!(relay.shard(0).forwarded > 0);
}
