//! The NATS front door at the wire level, over raw sockets: the greeting,
//! `+OK`, the keep-alive, how bad input is answered and where the
//! connection is closed (nats-server 2.10's rules), and the parts of
//! delivery a client library would hide (sids, `HMSG` bytes, the
//! no-responders reply, request/reply across shards without a flush).
//!
//! The one line-protocol test client reads NATS too: with terminator
//! `\r\n` every control line is a frame, and so is every payload that
//! holds no `\r\n`.

mod common;

use std::time::Duration;

use common::{Client, TestRelay};

const CRLF: &[u8] = b"\r\n";

/// A NATS client of `addr` that has read its `INFO` and sent `CONNECT`
/// with `options` (a JSON object's members, e.g. `"verbose":false`).
fn nats(addr: std::net::SocketAddr, options: &str) -> Client {
    let mut c = Client::connect(addr, CRLF);
    let info = c.read_frame();
    assert!(info.starts_with(b"INFO {"), "{}", common::show(&info));
    let sep = if options.is_empty() { "" } else { "," };
    c.send(format!(
        r#"CONNECT {{"verbose":false,"pedantic":false{sep}{options}}}"#
    ));
    c
}

/// `PING` must be answered by `PONG` next: proves nothing else was owed.
fn fence_nats(c: &mut Client) {
    c.send("PING");
    c.expect("PONG");
}

#[test]
fn info_greets_every_connection_with_the_servers_limits() {
    let relay = TestRelay::start_with(|c| c.max_frame = 64 << 10);
    let addr = relay.nats_addrs()[0];
    let mut a = Client::connect(addr, CRLF);
    let mut b = Client::connect(addr, CRLF);
    let parse = |c: &mut Client| -> serde_json::Value {
        let line = c.read_frame();
        let json = line.strip_prefix(b"INFO ").expect("INFO first");
        serde_json::from_slice(json).expect("INFO carries JSON")
    };
    let (ia, ib) = (parse(&mut a), parse(&mut b));
    assert_eq!(ia["server_id"], ib["server_id"], "one id per process");
    assert!(ia["server_id"].as_str().unwrap().starts_with('N'));
    assert_ne!(ia["client_id"], ib["client_id"], "one id per connection");
    assert_eq!(ia["max_payload"], 64 << 10);
    assert_eq!(ia["headers"], true);
    assert_eq!(ia["proto"], 1);
    assert_eq!(ia["port"], addr.port());
    assert_eq!(ia["version"], "2.10.0");
    assert_eq!(ia["client_ip"], "127.0.0.1");
}

#[test]
fn verbose_is_on_until_connect_says_otherwise() {
    let relay = TestRelay::start();
    let mut c = Client::connect(relay.nats_addrs()[0], CRLF);
    c.read_frame();
    // nats-server's defaults before CONNECT: verbose.
    c.send("SUB a 1");
    c.expect("+OK");
    c.send(r#"CONNECT {"verbose":true}"#);
    c.expect("+OK");
    c.send_raw(b"PUB a 2\r\nhi\r\n");
    // The PUB's +OK before the message it delivers (nats-server's order).
    c.expect("+OK");
    c.expect("MSG a 1 2");
    c.expect("hi");
    c.send("UNSUB 1");
    c.expect("+OK");
    c.send(r#"CONNECT {"verbose":false}"#);
    c.send("SUB b 2");
    fence_nats(&mut c);
}

#[test]
fn each_matching_subscription_gets_its_own_delivery() {
    let relay = TestRelay::start();
    let mut c = nats(relay.nats_addrs()[0], "");
    c.send("SUB a.* 1");
    c.send("SUB a.> 2");
    c.send("SUB a.b q 3");
    c.send_raw(b"PUB a.b 5\r\nhello\r\n");
    let mut sids = Vec::new();
    for _ in 0..3 {
        let head = String::from_utf8(c.read_frame()).unwrap();
        let fields: Vec<&str> = head.split(' ').collect();
        assert_eq!(
            (fields[0], fields[1], fields[3]),
            ("MSG", "a.b", "5"),
            "{head}"
        );
        sids.push(fields[2].to_string());
        c.expect("hello");
    }
    sids.sort();
    assert_eq!(sids, ["1", "2", "3"]);
}

#[test]
fn unsub_with_a_maximum_ends_the_subscription_after_that_many() {
    let relay = TestRelay::start();
    let mut c = nats(relay.nats_addrs()[0], "");
    c.send("SUB s 1");
    c.send("UNSUB 1 2");
    for i in 0..4 {
        c.send_raw(format!("PUB s 1\r\n{i}\r\n").as_bytes());
    }
    for i in 0..2 {
        c.expect("MSG s 1 1");
        c.expect(i.to_string());
    }
    fence_nats(&mut c);
    assert_eq!(
        relay.stats().subscriptions,
        0,
        "gone after its last delivery"
    );
}

#[test]
fn echo_off_keeps_a_connections_own_messages_from_it() {
    let relay = TestRelay::start();
    let mut quiet = nats(relay.nats_addrs()[0], r#""echo":false"#);
    let mut other = nats(relay.nats_addrs()[0], "");
    quiet.send("SUB e 1");
    other.send("SUB e 1");
    fence_nats(&mut quiet);
    fence_nats(&mut other);
    quiet.send_raw(b"PUB e 4\r\nmine\r\nPING\r\n");
    quiet.expect("PONG");
    other.expect("MSG e 1 4");
    other.expect("mine");
    other.send_raw(b"PUB e 5\r\ntheir\r\n");
    quiet.expect("MSG e 1 5");
    quiet.expect("their");
}

#[test]
fn headers_reach_header_clients_as_hmsg_and_others_as_msg() {
    let relay = TestRelay::start();
    let addr = relay.nats_addrs()[0];
    let mut with = nats(addr, r#""headers":true"#);
    let mut without = nats(addr, "");
    with.send("SUB h 1");
    without.send("SUB h 9");
    fence_nats(&mut with);
    fence_nats(&mut without);
    let mut publisher = nats(addr, r#""headers":true"#);
    // 12 bytes of headers (`NATS/1.0\r\n\r\n`), 2 of payload.
    publisher.send_raw(b"HPUB h r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
    with.expect("HMSG h 1 r 12 14");
    with.expect("NATS/1.0");
    with.expect("");
    with.expect("hi");
    without.expect("MSG h 9 r 2");
    without.expect("hi");
}

#[test]
fn a_request_nobody_answers_gets_the_no_responders_status() {
    let relay = TestRelay::start();
    let mut c = nats(
        relay.nats_addrs()[0],
        r#""headers":true,"no_responders":true"#,
    );
    c.send("SUB _INBOX.x 7");
    c.send_raw(b"PUB nobody.home _INBOX.x 2\r\nhi\r\n");
    c.expect("HMSG _INBOX.x 7 16 16");
    c.expect("NATS/1.0 503");
    c.expect("");
    c.expect("");
    // Without no_responders, silence (as nats-server).
    let mut plain = nats(relay.nats_addrs()[0], r#""headers":true"#);
    plain.send("SUB _INBOX.y 1");
    plain.send_raw(b"PUB nobody.home _INBOX.y 2\r\nhi\r\n");
    fence_nats(&mut plain);
}

#[test]
fn a_reply_from_another_shard_arrives_without_a_flush() {
    let relay = TestRelay::start();
    let mut responder = nats(relay.shard_nats_addrs()[1], "");
    responder.send("SUB svc 1");
    fence_nats(&mut responder);
    let mut requester = nats(relay.shard_nats_addrs()[0], "");
    for i in 0..50 {
        // Subscribe and publish in one write: no PING between them.
        requester.send_raw(format!("SUB inbox.{i} {i}\r\nPUB svc inbox.{i} 1\r\nx\r\n").as_bytes());
        responder.expect(format!("MSG svc 1 inbox.{i} 1"));
        responder.expect("x");
        responder.send_raw(format!("PUB inbox.{i} 2\r\nok\r\n").as_bytes());
        requester.expect(format!("MSG inbox.{i} {i} 2"));
        requester.expect("ok");
    }
    assert!(relay.shard(0).forwarded >= 50 && relay.shard(1).forwarded >= 50);
}

#[test]
fn a_subject_nats_refuses_keeps_the_connection_open() {
    let relay = TestRelay::start();
    let mut c = nats(relay.nats_addrs()[0], "");
    c.send("SUB a..b 1");
    c.expect("-ERR 'Invalid Subject'");
    c.send("SUB a.>.b 2");
    c.expect("-ERR 'Invalid Subject'");
    fence_nats(&mut c);
    assert_eq!(relay.stats().subscriptions, 0);
}

/// Sends `bad` on a fresh connection, and checks what comes back before
/// the relay closes it: `said` (`None`: closed without a word).
fn closes_with(relay: &TestRelay, setup: &str, bad: &[u8], said: Option<&str>) {
    let mut c = nats(relay.nats_addrs()[0], setup);
    fence_nats(&mut c);
    c.send_raw(bad);
    let frames = c.read_until_closed();
    let want: Vec<Vec<u8>> = said.iter().map(|s| s.as_bytes().to_vec()).collect();
    assert_eq!(
        frames.iter().map(|f| common::show(f)).collect::<Vec<_>>(),
        want.iter().map(|f| common::show(f)).collect::<Vec<_>>(),
        "answer to {}",
        common::show(bad)
    );
}

#[test]
fn bad_input_is_answered_as_nats_server_answers_it_and_others_go_on() {
    let relay = TestRelay::start_with(|c| c.max_frame = 1 << 20);
    let mut bystander = nats(relay.nats_addrs()[0], "");
    bystander.send("SUB ok 1");
    fence_nats(&mut bystander);
    let unknown = Some("-ERR 'Unknown Protocol Operation'");
    closes_with(&relay, "", b"FOO bar\r\n", unknown);
    closes_with(&relay, "", b"MSG a 1 2\r\nhi\r\n", unknown);
    // Fewer payload bytes than announced: what follows is not `\r\n`.
    closes_with(&relay, "", b"PUB a 3\r\nhello\r\n", unknown);
    // Payload not followed by `\r\n`.
    closes_with(&relay, "", b"PUB a 2\r\nhiXY", unknown);
    let long = format!("SUB {} 1\r\n", "a".repeat(5000));
    closes_with(
        &relay,
        "",
        long.as_bytes(),
        Some("-ERR 'Maximum Control Line Exceeded'"),
    );
    // Announcing 8 MiB is enough: the payload is never read.
    closes_with(
        &relay,
        "",
        b"PUB a 8388608\r\n",
        Some("-ERR 'Maximum Payload Violation'"),
    );
    // These nats-server closes without a word.
    closes_with(&relay, "", b"HPUB a 12 14\r\nNATS/1.0\r\n\r\nhi\r\n", None);
    closes_with(&relay, "", b"CONNECT {not json\r\n", None);
    closes_with(&relay, "", b"PUB a b c d\r\n", None);
    closes_with(&relay, "", b"PUB a x\r\n", None);
    closes_with(
        &relay,
        "",
        b"CONNECT {\"protocol\":2}\r\n",
        Some("-ERR 'invalid client protocol'"),
    );
    // The others were served all along.
    let mut publisher = nats(relay.nats_addrs()[0], "");
    publisher.send_raw(b"PUB ok 2\r\nhi\r\n");
    bystander.expect("MSG ok 1 2");
    bystander.expect("hi");
    assert!(relay.stats().nats_errors >= 11);
}

#[test]
fn a_long_control_line_is_refused_before_it_ends() {
    let relay = TestRelay::start();
    let mut c = nats(relay.nats_addrs()[0], "");
    // No end of line, ever: memory must not grow with it.
    c.send_raw(format!("SUB {}", "a".repeat(8000)).as_bytes());
    let frames = c.read_until_closed();
    assert_eq!(
        frames,
        vec![b"-ERR 'Maximum Control Line Exceeded'".to_vec()]
    );
}

#[test]
fn clients_that_stop_answering_pings_are_closed_as_stale() {
    let relay = TestRelay::start_with(|c| c.nats_ping_interval = Duration::from_millis(50));
    // One that never sends CONNECT nor answers: two PINGs, then stale.
    let mut silent = Client::connect(relay.nats_addrs()[0], CRLF);
    silent.read_frame();
    assert_eq!(
        silent.read_until_closed(),
        vec![
            b"PING".to_vec(),
            b"PING".to_vec(),
            b"-ERR 'Stale Connection'".to_vec()
        ]
    );
    // One that answers stays.
    let mut lively = nats(relay.nats_addrs()[0], "");
    for _ in 0..4 {
        lively.expect("PING");
        lively.send("PONG");
    }
    fence_nats(&mut lively);
}

#[test]
fn the_connection_limit_is_explained_in_nats_terms() {
    let relay = TestRelay::start_with(|c| c.max_connections = 1);
    let mut first = nats(relay.nats_addrs()[0], "");
    fence_nats(&mut first);
    let mut second = Client::connect(relay.nats_addrs()[0], CRLF);
    assert_eq!(
        second.read_until_closed(),
        vec![b"-ERR 'maximum connections exceeded'".to_vec()]
    );
}

#[test]
fn line_and_nats_clients_share_subjects_and_queue_groups() {
    let relay = TestRelay::start();
    let mut line_sub = relay.on(1);
    line_sub.sub("x.*");
    line_sub.sub_group("jobs", "g");
    line_sub.sub_fence();
    let mut nats_sub = nats(relay.shard_nats_addrs()[0], r#""headers":true"#);
    nats_sub.send("SUB x.* 1");
    nats_sub.send("SUB jobs g 2");
    fence_nats(&mut nats_sub);

    // Line → NATS.
    let mut line_pub = relay.on(0);
    line_pub.publish("x.a", "from line");
    nats_sub.expect("MSG x.a 1 9");
    nats_sub.expect("from line");
    line_sub.expect_msg("x.a", "from line");

    // NATS → line: reply subject and headers dropped.
    let mut nats_pub = nats(relay.shard_nats_addrs()[1], r#""headers":true"#);
    nats_pub.send_raw(b"HPUB x.b re 12 16\r\nNATS/1.0\r\n\r\nfrom\r\n");
    line_sub.expect_msg("x.b", "from");
    nats_sub.expect("HMSG x.b 1 re 12 16");
    nats_sub.expect("NATS/1.0");
    nats_sub.expect("");
    nats_sub.expect("from");

    // A payload the line protocol cannot frame reaches NATS only, and is
    // counted; the fence proves the line client was not sent it.
    let undeliverable = relay.stats().undeliverable_to_line;
    nats_pub.send_raw(b"PUB x.c 5\r\nab\ncd\r\nPUB x.d 2\r\nok\r\n");
    nats_sub.expect("MSG x.c 1 5");
    nats_sub.expect("ab\ncd");
    nats_sub.expect("MSG x.d 1 2");
    nats_sub.expect("ok");
    line_sub.expect_msg("x.d", "ok");
    assert_eq!(relay.stats().undeliverable_to_line, undeliverable + 1);

    // One queue group across both protocols and shards: each message to
    // exactly one member.
    for i in 0..40 {
        line_pub.publish("jobs", format!("j{i}"));
    }
    line_pub.publish("x.end", "");
    let mut got = Vec::new();
    loop {
        let frame = line_sub.read_frame();
        if frame == b"MSG x.end " {
            break;
        }
        got.push(String::from_utf8(frame).unwrap().replace("MSG jobs ", ""));
    }
    let from_line = got.len();
    loop {
        let head = nats_sub.read_frame();
        let payload = String::from_utf8(nats_sub.read_frame()).unwrap();
        if head == b"MSG x.end 1 0" {
            break;
        }
        assert!(head.starts_with(b"MSG jobs 2 "), "{}", common::show(&head));
        got.push(payload);
    }
    got.sort();
    let mut want: Vec<String> = (0..40).map(|i| format!("j{i}")).collect();
    want.sort();
    assert_eq!(got, want, "each job once, in either protocol");
    assert!(
        from_line > 0 && from_line < 40,
        "both members served: {from_line} of 40 to line"
    );
}

#[test]
fn subjects_nats_allows_and_the_line_protocol_does_not_are_indexed() {
    let relay = TestRelay::start();
    let mut c = nats(relay.nats_addrs()[0], "");
    let long = "t".repeat(300);
    let queue = "q".repeat(100);
    c.send_raw(format!("SUB café.> 1\r\nSUB {long} {queue} 2\r\n").as_bytes());
    c.send_raw("PUB café.crème 1\r\na\r\n".as_bytes());
    c.send_raw(format!("PUB {long} 1\r\nb\r\n").as_bytes());
    c.expect("MSG café.crème 1 1".as_bytes());
    c.expect("a");
    c.expect(format!("MSG {long} 2 1"));
    c.expect("b");
    assert_eq!(relay.stats().subscriptions, 2);
    c.send_raw(b"UNSUB 1\r\nUNSUB 2\r\n");
    fence_nats(&mut c);
    assert_eq!(relay.stats().subscriptions, 0);
}
