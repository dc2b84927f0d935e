//! The line protocol over real TCP: verbs, every `-ERR` reason in the spec's
//! precedence order, subjects and groups, frame limits, empty frames,
//! payload bytes, and each kind of terminator (including terminators split
//! across writes).
//!
//! Every relay here has two shards; where a message is delivered, the
//! publisher is on shard 0 and the subscriber on shard 1, so the cross-shard
//! path is the one exercised.

mod common;

use common::{fence, msg, Client, TestRelay};

/// Sends each frame and checks the exact `-ERR` reply (then that nothing
/// else was sent); returns how many errors were provoked.
fn expect_errs(c: &mut Client, cases: &[(&[u8], &str)]) -> u64 {
    for (frame, reason) in cases {
        c.expect_err_for(frame, reason);
    }
    cases.len() as u64
}

/// A subject of `len` bytes made of dot-separated tokens.
fn long_subject(len: usize) -> String {
    let mut s = String::new();
    while s.len() < len {
        if !s.is_empty() {
            s.push('.');
        }
        s.push_str("abcdefg");
    }
    s.truncate(len);
    if s.ends_with('.') {
        s.pop();
        s.push('z');
    }
    assert_eq!(s.len(), len);
    s
}

#[test]
fn verbs_are_case_insensitive() {
    let relay = TestRelay::start();
    let mut publisher = relay.on(0);
    let mut sub = relay.on(1);

    sub.send("Sub case.a");
    sub.send("sUB case.b");
    sub.send("sub case.c grp");
    sub.send("ping");
    sub.expect("PONG");
    sub.send("PiNg");
    sub.expect("PONG");

    publisher.send("pub case.a 1");
    publisher.send("Pub case.b 2");
    publisher.send("pUb case.c 3");
    sub.expect_msg("case.a", "1");
    sub.expect_msg("case.b", "2");
    sub.expect_msg("case.c", "3");

    sub.send("unsub case.a");
    sub.send("UnSuB case.c grp");
    sub.send("PING");
    sub.expect("PONG");
    sub.sub_fence();
    publisher.send("PUB case.a gone");
    publisher.send("PUB case.c gone");
    publisher.send("pub case.b kept");
    sub.expect_msg("case.b", "kept");
    fence(&mut publisher, &mut [&mut sub], "end");

    // Only verbs are case-insensitive: subjects are bytes.
    publisher.send("PUB CASE.B upper");
    fence(&mut publisher, &mut [&mut sub], "end2");
    assert!(relay.shard(0).forwarded > 0, "publishes crossed shards");
}

#[test]
fn example_session_from_the_spec() {
    let relay = TestRelay::start();
    let mut a = relay.on(1);
    let mut b = relay.on(0);
    a.send("SUB prices.*");
    a.send("PING");
    a.expect("PONG");
    b.send("PUB prices.eur 1.0842");
    a.expect_msg("prices.eur", "1.0842");
    b.expect_ok_for("PUB prices");
    b.expect_err_for("PUB", "missing subject");
    b.expect_err_for("PUB a..b x", "invalid subject");
    b.expect_err_for("FOO", "unknown verb");
    assert_eq!(relay.stats().protocol_errors, 3);
}

#[test]
fn unknown_verb_comes_first() {
    let relay = TestRelay::start();
    let mut c = relay.on(0);
    let n = expect_errs(
        &mut c,
        &[
            (b"FOO", "unknown verb"),
            (b"foo bar baz", "unknown verb"),
            // Checked before anything else about the frame.
            (b"FOO a..b", "unknown verb"),
            (b"BAR a.> x y z", "unknown verb"),
            (b"PUBX a.b x", "unknown verb"),
            (b"SUBSCRIBE a.b", "unknown verb"),
            (b"UNSUBX a.b", "unknown verb"),
            (b"PINGPONG", "unknown verb"),
            // Relay-to-client verbs are not client verbs.
            (b"PONG", "unknown verb"),
            (b"MSG a.b x", "unknown verb"),
            (b"-ERR x", "unknown verb"),
            // A leading space makes the first field empty.
            (b" PING", "unknown verb"),
            (b" PUB a.b x", "unknown verb"),
            // A verb is one field: a tab does not separate fields.
            (b"PUB\ta.b x", "unknown verb"),
            (b"\x00\x01\x02", "unknown verb"),
            (b"\xff\xfe", "unknown verb"),
            (b"P\xc3\x9cB a.b x", "unknown verb"),
        ],
    );
    assert_eq!(relay.stats().protocol_errors, n);
}

#[test]
fn missing_subject() {
    let relay = TestRelay::start();
    let mut c = relay.on(0);
    let n = expect_errs(
        &mut c,
        &[
            (b"PUB", "missing subject"),
            (b"pub", "missing subject"),
            (b"PUB ", "missing subject"),
            (b"PUB  x", "missing subject"),
            (b"PUB  a.b x", "missing subject"),
            (b"SUB", "missing subject"),
            (b"sub", "missing subject"),
            (b"SUB ", "missing subject"),
            (b"SUB  g", "missing subject"),
            (b"SUB  a..b g extra", "missing subject"),
            (b"UNSUB", "missing subject"),
            (b"UNSUB ", "missing subject"),
            (b"UNSUB  g", "missing subject"),
        ],
    );
    assert_eq!(relay.stats().protocol_errors, n);
}

#[test]
fn invalid_subject_in_every_verb() {
    let relay = TestRelay::start();
    let mut c = relay.on(0);
    let too_long = long_subject(257);
    let bad_everywhere: Vec<Vec<u8>> = vec![
        b"a..b".to_vec(),
        b".a".to_vec(),
        b"a.".to_vec(),
        b".".to_vec(),
        b"..".to_vec(),
        b"a.b..".to_vec(),
        b"a\x01b".to_vec(),
        b"a\x7fb".to_vec(),
        b"a\x80b".to_vec(),
        b"\xc3\xa9t\xc3\xa9".to_vec(),
        b"a\tb".to_vec(),
        b"a\rb".to_vec(),
        too_long.clone().into_bytes(),
        // `>` anywhere but last is invalid (in PUB any wildcard is).
        b"a.>.b".to_vec(),
        b">.a".to_vec(),
        b">.>".to_vec(),
    ];
    let mut n = 0;
    for subject in &bad_everywhere {
        for verb in ["SUB", "UNSUB", "PUB"] {
            let mut frame = format!("{verb} ").into_bytes();
            frame.extend_from_slice(subject);
            if verb == "PUB" {
                frame.extend_from_slice(b" payload");
            }
            c.expect_err_for(&frame, "invalid subject");
            n += 1;
        }
    }
    // Wildcards are subjects only in SUB and UNSUB.
    n += expect_errs(
        &mut c,
        &[
            (b"PUB * x", "invalid subject"),
            (b"PUB > x", "invalid subject"),
            (b"PUB a.* x", "invalid subject"),
            (b"PUB a.> x", "invalid subject"),
            (b"PUB *.a x", "invalid subject"),
            (b"PUB a.*.b x", "invalid subject"),
            (b"PUB a.*", "invalid subject"),
            (b"PUB a.>", "invalid subject"),
            // Precedence: the subject is checked before the group and before
            // the number of fields.
            (b"SUB a..b g", "invalid subject"),
            (b"SUB a..b g extra", "invalid subject"),
            (b"UNSUB a..b g extra", "invalid subject"),
        ],
    );
    let bad_group_too = format!("SUB a..b {}", "g".repeat(65));
    c.expect_err_for(bad_group_too, "invalid subject");
    n += 1;
    assert_eq!(relay.stats().protocol_errors, n);

    // The limits are inclusive: 256 bytes, and plain tokens that merely
    // contain `*` or `>`, are fine everywhere.
    let max = long_subject(256);
    let mut sub = relay.on(1);
    sub.sub(&max);
    sub.sub("a*.b>");
    sub.sub("*.x");
    sub.sub("y.>");
    sub.sub(">");
    c.expect_ok_for(format!("PUB {max} full"));
    sub.expect_msg(&max, "full");
    c.expect_ok_for("PUB a*.b> plain");
    sub.expect_msg("a*.b>", "plain");
    c.expect_ok_for("UNSUB a*.b>");
    c.expect_ok_for(format!("UNSUB {max}"));
    assert_eq!(
        relay.stats().protocol_errors,
        n,
        "no error for valid subjects"
    );
}

#[test]
fn invalid_group() {
    let relay = TestRelay::start();
    let mut c = relay.on(0);
    let g64 = "g".repeat(64);
    let g65 = "g".repeat(65);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (format!("SUB a.b {g65}").into_bytes(), "invalid group"),
        (format!("UNSUB a.b {g65}").into_bytes(), "invalid group"),
        (b"SUB a.b g\x01".to_vec(), "invalid group"),
        (b"SUB a.b \x7f".to_vec(), "invalid group"),
        (b"SUB a.b gr\xc3\xbcppe".to_vec(), "invalid group"),
        (b"UNSUB a.b g\tx".to_vec(), "invalid group"),
        // Present but empty: a trailing space.
        (b"SUB a.b ".to_vec(), "invalid group"),
        (b"UNSUB a.b ".to_vec(), "invalid group"),
        // Checked before the number of fields.
        (format!("SUB a.b {g65} extra").into_bytes(), "invalid group"),
    ];
    for (frame, reason) in &cases {
        c.expect_err_for(frame, reason);
    }
    assert_eq!(relay.stats().protocol_errors, cases.len() as u64);

    // 64 bytes, and any printable bytes (dots and wildcard characters are
    // not special in a group), are valid.
    c.expect_ok_for(format!("SUB a.b {g64}"));
    c.expect_ok_for("SUB a.b g.*>!~");
    c.expect_ok_for(format!("UNSUB a.b {g64}"));
    c.expect_ok_for("UNSUB a.b g.*>!~");
    assert_eq!(relay.stats().protocol_errors, cases.len() as u64);
}

#[test]
fn empty_group_field_between_two_spaces_is_an_invalid_group() {
    // `SUB a.b  g` has the fields `a.b`, `` and `g`: the group field is
    // present but empty, and `invalid group` is checked before `invalid
    // arguments`.
    let relay = TestRelay::start();
    let mut c = relay.on(0);
    c.expect_err_for("SUB a.b  g", "invalid group");
    c.expect_err_for("UNSUB a.b  g", "invalid group");
}

#[test]
fn invalid_arguments() {
    let relay = TestRelay::start();
    let mut c = relay.on(0);
    let n = expect_errs(
        &mut c,
        &[
            (b"SUB a b c", "invalid arguments"),
            (b"SUB a.b g x y", "invalid arguments"),
            (b"sub a b c", "invalid arguments"),
            (b"UNSUB a b c", "invalid arguments"),
            (b"unsub a.* g x", "invalid arguments"),
            // An empty third field is still a third field.
            (b"SUB a.b g ", "invalid arguments"),
            (b"PING x", "invalid arguments"),
            (b"ping x", "invalid arguments"),
            (b"PING x y", "invalid arguments"),
            // A trailing space is an empty argument.
            (b"PING ", "invalid arguments"),
        ],
    );
    assert_eq!(relay.stats().protocol_errors, n);

    // The refused SUBs are not in force.
    let mut publisher = relay.on(1);
    c.sub_fence();
    publisher.send("PUB a x");
    publisher.send("PUB a.b x");
    fence(&mut publisher, &mut [&mut c], "1");
}

#[test]
fn too_many_subscriptions() {
    let relay = TestRelay::start_with(|c| c.max_subs = 4);
    let mut c = relay.on(1);
    let mut publisher = relay.on(0);
    c.sub_fence(); // 1 of 4
    c.expect_ok_for("SUB s.1"); // 2
    c.expect_ok_for("SUB s.2"); // 3
    c.expect_ok_for("SUB s.2"); // a duplicate counts once
    c.expect_ok_for("SUB s.3 g"); // 4
    c.expect_ok_for("SUB s.3 g");
    c.expect_ok_for("SUB s.1");
    assert_eq!(
        relay.stats().subscriptions,
        4,
        "duplicates are one subscription"
    );

    c.expect_err_for("SUB s.4", "too many subscriptions");
    // Same subject, other group (or none): a different subscription.
    c.expect_err_for("SUB s.3", "too many subscriptions");
    c.expect_err_for("SUB s.1 g", "too many subscriptions");
    c.expect_err_for("SUB >", "too many subscriptions");
    // The other checks come first.
    c.expect_err_for("SUB s.4 a b", "invalid arguments");
    c.expect_err_for("SUB s..4", "invalid subject");
    // Unknown UNSUBs at the limit are still just ignored.
    c.expect_ok_for("UNSUB s.4");
    c.expect_ok_for("UNSUB s.3");
    assert_eq!(relay.stats().subscriptions, 4);
    assert_eq!(relay.stats().protocol_errors, 6);

    // The refused SUBs are not in force; the accepted ones are.
    for s in ["s.1", "s.2", "s.3", "s.4", "x.y"] {
        publisher.publish(s, "m");
    }
    c.expect_msg("s.1", "m");
    c.expect_msg("s.2", "m");
    c.expect_msg("s.3", "m");
    fence(&mut publisher, &mut [&mut c], "1");

    // An UNSUB frees a slot.
    c.unsub("s.1");
    c.expect_ok_for("SUB s.4");
    c.expect_err_for("SUB s.1", "too many subscriptions");
    publisher.publish("s.1", "m");
    publisher.publish("s.4", "m");
    c.expect_msg("s.4", "m");
    fence(&mut publisher, &mut [&mut c], "2");

    // The limit is per connection.
    let mut other = relay.on(1);
    for i in 0..4 {
        other.expect_ok_for(format!("SUB o.{i}"));
    }
    other.expect_err_for("SUB o.4", "too many subscriptions");
}

#[test]
fn frame_too_long() {
    const MAX: usize = 64;
    let relay = TestRelay::start_with(|c| c.max_frame = MAX);
    let mut publisher = relay.on(0);
    let mut sub = relay.on(1);
    sub.sub("t.x");
    sub.sub_fence();

    let frame_of = |len: usize, fill: u8| {
        let mut f = b"PUB t.x ".to_vec();
        f.resize(len, fill);
        f
    };
    // Exactly the maximum is accepted and delivered.
    let exact = frame_of(MAX, b'e');
    publisher.expect_ok_for(&exact);
    sub.expect_msg("t.x", &exact[8..]);

    // One byte more is refused once, and the connection keeps working.
    publisher.expect_err_for(frame_of(MAX + 1, b'a'), "frame too long");
    publisher.expect_err_for(frame_of(10 * MAX, b'b'), "frame too long");

    // The long frame is discarded up to its terminator, not interpreted
    // after the limit: a relay that restarted framing there would answer
    // the tail (`PING`) or complain about it.
    let mut with_tail = frame_of(MAX, b'd');
    with_tail.extend_from_slice(b"PING");
    publisher.send(&with_tail);
    publisher.expect("-ERR frame too long");
    publisher.expect_silence();

    // A long frame arriving in many writes gets one reply.
    let long = frame_of(5 * MAX, b'f');
    for chunk in long.chunks(7) {
        publisher.send_raw(chunk);
    }
    let term = publisher.term().to_vec();
    publisher.send_raw(&term);
    publisher.expect("-ERR frame too long");
    publisher.expect_silence();

    // Frames around a long one in the same write are all handled.
    let mut batch = Vec::new();
    for f in [
        &b"PUB t.x before"[..],
        &frame_of(MAX + 1, b'g'),
        b"PUB t.x after",
        b"PING",
    ] {
        batch.extend_from_slice(f);
        batch.extend_from_slice(publisher.term());
    }
    publisher.send_raw(&batch);
    publisher.expect("-ERR frame too long");
    publisher.expect("PONG");
    sub.expect_msg("t.x", "before");
    sub.expect_msg("t.x", "after");
    fence(&mut publisher, &mut [&mut sub], "1");

    assert_eq!(relay.stats().frames_too_long, 5);
    assert_eq!(relay.stats().protocol_errors, 0);
    assert_eq!(
        relay.stats().msgs_in,
        4,
        "exact, before, after and the fence; no refused frame was published"
    );
}

#[test]
fn frame_length_counts_the_dropped_cr() {
    // With `\n`, the limit applies before one `\r` is dropped.
    const MAX: usize = 16;
    let relay = TestRelay::start_with(|c| c.max_frame = MAX);
    let mut c = relay.on(0);
    let frame = b"PUB t.x 12345678";
    assert_eq!(frame.len(), MAX);
    c.send_raw(b"PUB t.x 12345678\n");
    c.expect_silence();
    c.send_raw(b"PUB t.x 12345678\r\n");
    c.expect("-ERR frame too long");
    c.expect_silence();
    c.send_raw(b"PUB t.x 1234567\r\n");
    c.expect_silence();
}

#[test]
fn empty_frames_are_ignored() {
    let relay = TestRelay::start();
    let mut c = relay.on(0);
    c.send_raw(b"\n\n\nPING\n\n");
    c.expect("PONG");
    // `\r\n` alone is an empty frame under the default `\n`.
    c.send_raw(b"\r\n\r\n\nPING\r\n\r\n");
    c.expect("PONG");
    c.expect_silence();
    assert_eq!(relay.stats().protocol_errors, 0);
}

#[test]
fn empty_payload_keeps_the_space() {
    let relay = TestRelay::start();
    let mut publisher = relay.on(0);
    let mut sub = relay.on(1);
    sub.sub("a.b");
    publisher.send("PUB a.b");
    publisher.send("PUB a.b ");
    publisher.send("pub a.b");
    for _ in 0..3 {
        sub.expect("MSG a.b ");
    }
    publisher.expect_silence();
}

#[test]
fn payload_is_delivered_byte_for_byte() {
    let relay = TestRelay::start();
    let mut publisher = relay.on(0);
    let mut sub = relay.on(1);
    sub.sub("p.>");
    let payloads: Vec<Vec<u8>> = vec![
        b"hello world".to_vec(),
        b" leading space".to_vec(),
        b"trailing space ".to_vec(),
        b"  two  spaces  everywhere  ".to_vec(),
        b" ".to_vec(),
        b"   ".to_vec(),
        b"PUB p.x nested".to_vec(),
        b"-ERR not an error".to_vec(),
        b"tab\there".to_vec(),
        b"cr\rinside".to_vec(),
        b"\x00\x01\x02\x7f\x80\xfe\xff".to_vec(),
        "utf-8: \u{e9}t\u{e9} \u{1f600}".as_bytes().to_vec(),
        vec![b'z'; 10_000],
    ];
    for p in &payloads {
        publisher.publish("p.q", p);
    }
    for p in &payloads {
        sub.expect(msg("p.q", p));
    }
    // The subject is the publisher's, not the subscription's.
    publisher.publish("p.q.r", "deep");
    sub.expect_msg("p.q.r", "deep");
}

#[test]
fn crlf_terminator() {
    let relay = TestRelay::with_terminator(r"\r\n");
    let mut publisher = relay.on(0);
    let mut sub = relay.on(1);
    sub.sub("t.x");
    // A lone `\r` or `\n` inside a payload is kept; nothing is dropped.
    publisher.send(b"PUB t.x a\rb\nc\r");
    sub.expect_msg("t.x", b"a\rb\nc\r");
    // Split across writes, one byte at a time.
    publisher.send_bytewise(b"PUB t.x split\r\rpay\nload\r\r\nPING\r\n");
    sub.expect_msg("t.x", b"split\r\rpay\nload\r");
    publisher.expect("PONG");
    // Empty frames; a bare `\n` is not a terminator, so this is one frame.
    publisher.send_raw(b"\r\n\r\nPI\nNG\r\nPING\r\n");
    publisher.expect("-ERR unknown verb");
    publisher.expect("PONG");
    // Case-insensitive verbs and the empty payload work the same.
    publisher.send("pub t.x");
    sub.expect("MSG t.x ");
    assert!(relay.shard(0).forwarded > 0);
}

#[test]
fn nul_nul_terminator() {
    let relay = TestRelay::with_terminator(r"\0\0");
    assert_eq!(relay.term(), b"\0\0");
    let mut publisher = relay.on(0);
    let mut sub = relay.on(1);
    sub.sub("t.x");
    // A single NUL, and a newline, are payload bytes.
    publisher.send(b"PUB t.x a\0b\nc");
    sub.expect_msg("t.x", b"a\0b\nc");
    publisher.send_bytewise(b"PUB t.x \0s\0p\0\0PING\0\0");
    sub.expect_msg("t.x", b"\0s\0p");
    publisher.expect("PONG");
    // The frame ends at the first terminator: `a\0\0\0PING\0\0` is
    // `PUB t.x a`, then the frame `\0PING`.
    publisher.send_raw(b"PUB t.x a\0\0\0PING\0\0");
    sub.expect_msg("t.x", "a");
    publisher.expect("-ERR unknown verb");
    // The same with every byte in its own write, and with the split
    // falling inside the overlapping terminators.
    publisher.send_bytewise(b"PUB t.x b\0\0\0PING\0\0");
    sub.expect_msg("t.x", "b");
    publisher.expect("-ERR unknown verb");
    for piece in [&b"PUB t.x c\0"[..], b"\0", b"\0PI", b"NG\0", b"\0"] {
        publisher.send_raw(piece);
    }
    sub.expect_msg("t.x", "c");
    publisher.expect("-ERR unknown verb");
    publisher.send_raw(b"\0\0\0\0PING\0\0");
    publisher.expect("PONG");
    assert!(relay.shard(0).forwarded > 0);
}

#[test]
fn end_newline_terminator() {
    let relay = TestRelay::with_terminator(r"END\n");
    let mut publisher = relay.on(0);
    let mut sub = relay.on(1);
    sub.sub("t.x");
    // Partial terminators inside the payload; the frame ends at the first
    // complete one (`...ENDEND` + `END\n`).
    publisher.send(b"PUB t.x ENDING END EN\nD ENDEND");
    sub.expect_msg("t.x", b"ENDING END EN\nD ENDEND");
    // Partial terminators on both sides of every split.
    publisher.send_bytewise(b"PUB t.x EN END ENDENDEND\nPINGEND\n");
    sub.expect_msg("t.x", b"EN END ENDEND");
    publisher.expect("PONG");
    publisher.send_raw(b"END\nEND\nPINGEND\n");
    publisher.expect("PONG");
    publisher.send("PUB t.x");
    sub.expect("MSG t.x ");
    assert!(relay.shard(0).forwarded > 0);
}

#[test]
fn newline_terminator_drops_one_cr() {
    let relay = TestRelay::start();
    let mut publisher = relay.on(0);
    let mut sub = relay.on(1);
    // A telnet-style client.
    sub.send_raw(b"SUB t.x\r\nPING\r\n");
    sub.expect("PONG");
    publisher.send_raw(b"PUB t.x crlf\r\n");
    sub.expect_msg("t.x", "crlf");
    // Only one `\r`, only directly before the `\n`.
    publisher.send_raw(b"PUB t.x two\r\r\n");
    sub.expect_msg("t.x", b"two\r");
    publisher.send_raw(b"PUB t.x in\rside\n");
    sub.expect_msg("t.x", b"in\rside");
    publisher.send_bytewise(b"PUB t.x split\r\nPING\r\n");
    sub.expect_msg("t.x", "split");
    publisher.expect("PONG");
    // `\r\r\n` is the frame `\r`, not an empty one.
    publisher.send_raw(b"\r\r\n");
    publisher.expect("-ERR unknown verb");
    // An empty payload from a `\r\n` client still has its space.
    publisher.send_raw(b"PUB t.x\r\n");
    sub.expect("MSG t.x ");
    publisher.expect_silence();
}

#[test]
fn other_single_byte_terminator_drops_nothing() {
    // Only `\n` drops a `\r` before it.
    let relay = TestRelay::with_terminator(r"\x1e");
    let mut publisher = relay.on(0);
    let mut sub = relay.on(1);
    sub.sub("t.x");
    publisher.send(b"PUB t.x cr\r");
    sub.expect_msg("t.x", b"cr\r");
    publisher.send(b"PUB t.x nl\r\n");
    sub.expect_msg("t.x", b"nl\r\n");
    // `PING\r` is not `PING`.
    publisher.expect_err_for(b"PING\r", "unknown verb");
}

#[test]
fn frame_limit_with_a_multibyte_terminator() {
    const MAX: usize = 32;
    let relay = TestRelay::start_with(|c| {
        c.terminator = tern::framing::Terminator::parse(r"END\n").unwrap();
        c.max_frame = MAX;
    });
    let mut publisher = relay.on(0);
    let mut sub = relay.on(1);
    sub.sub("t.x");
    sub.sub_fence();
    let mut exact = b"PUB t.x ".to_vec();
    exact.resize(MAX, b'E');
    // The terminator is not counted; partial terminators in the frame are.
    publisher.expect_ok_for(&exact);
    sub.expect_msg("t.x", &exact[8..]);
    let mut over = exact.clone();
    over.push(b'E');
    publisher.expect_err_for(&over, "frame too long");

    // While a long frame is being discarded, its terminator arrives split
    // across writes, after many partial matches.
    let mut long = b"PUB t.x ".to_vec();
    for _ in 0..200 {
        long.extend_from_slice(b"EN END\rENDEND");
    }
    publisher.send_raw(&long);
    publisher.send_raw(b"E");
    publisher.send_raw(b"N");
    publisher.send_raw(b"D");
    publisher.send_raw(b"\nPUB t.x next");
    publisher.send_raw(b"END\n");
    publisher.expect("-ERR frame too long");
    publisher.expect_silence();
    sub.expect_msg("t.x", "next");
    fence(&mut publisher, &mut [&mut sub], "1");
    assert_eq!(relay.stats().frames_too_long, 2);
}

#[test]
fn pipelined_frames_split_at_random_points() {
    // Many frames in one write, and frames split anywhere (inside verbs,
    // subjects, payloads and terminators), for each kind of terminator.
    for (k, spec) in [r"\n", r"\r\n", r"\0\0", r"END\n", r"\x1e"]
        .iter()
        .enumerate()
    {
        let relay = TestRelay::with_terminator(spec);
        let term = relay.term().to_vec();
        let mut publisher = relay.on(0);
        let mut sub = relay.on(1);
        sub.sub("r.>");
        let mut rng = common::Rng::new(0xfeed + k as u64);
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for i in 0..500 {
            // Payload bytes drawn from the terminator's own bytes, spaces
            // and letters, so partial terminators are everywhere; redrawn
            // until the terminator itself does not occur (nor a `\r` at
            // the end under `\n`, which would be dropped).
            let payload = loop {
                let len = rng.below(40);
                let p: Vec<u8> = (0..len)
                    .map(|_| match rng.below(3) {
                        0 => term[rng.below(term.len())],
                        1 => b' ',
                        _ => b'a' + rng.below(26) as u8,
                    })
                    .collect();
                let mut framed = p.clone();
                framed.extend_from_slice(&term);
                let ends_in_cr = term == b"\n" && p.last() == Some(&b'\r');
                if memchr::memmem::find(&framed, &term) == Some(p.len()) && !ends_in_cr {
                    break p;
                }
            };
            let subject = format!("r.{}", i % 7);
            let verb = ["PUB", "pub", "Pub"][i % 3];
            stream.extend_from_slice(format!("{verb} {subject} ").as_bytes());
            stream.extend_from_slice(&payload);
            stream.extend_from_slice(&term);
            if i % 50 == 0 {
                // Empty frames in between.
                stream.extend_from_slice(&term);
            }
            expected.push(msg(&subject, &payload));
        }
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let n = (rng.below(24) + 1).min(rest.len());
            publisher.send_raw(&rest[..n]);
            rest = &rest[n..];
        }
        publisher.expect_silence();
        for (i, want) in expected.iter().enumerate() {
            let got = sub.read_frame();
            assert!(
                &got == want,
                "terminator {spec}, message {i}: got {}, want {}",
                common::show(&got),
                common::show(want)
            );
        }
    }
}
