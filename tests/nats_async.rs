//! End-to-end tests with a real NATS client, async-nats (crates.io), on
//! tern's NATS listeners (`../shared/spec/nats-front-door.md`).
//!
//! tern runs on its own glommio threads ([`TestRelay`], two shards); the
//! client runs on a tokio runtime in the test. Clients are pinned to a
//! shard through that shard's private NATS listener
//! ([`tern::relay::Relay::shard_nats_addrs`]), so that most cases cross
//! shards.
//!
//! Nothing here waits on a clock for anything to happen: every await is
//! bounded by [`WAIT`] (a relay that stops answering fails the test), and
//! order is established by barriers, never by sleeping.
//!
//! * async-nats's `flush()` is *not* a `PING`/`PONG` round trip: it returns
//!   once the client's buffered commands are written to the socket, and
//!   async-nats has no call that waits for a `PONG`. So it cannot make a
//!   subscription in force on the other shard (tried here: `subscribe` +
//!   `flush()`, then a publish from a client of the other shard, lost
//!   about a third of the messages; on the same shard none).
//!   [`Anchors::settle`] does,
//!   by the spec's causality rule ("a subscription made on a connection
//!   before it publishes is in force for every message caused by that
//!   publish"): the client publishes a marker that line-protocol anchors on
//!   every shard (subscribed with the line protocol's own `PING` barrier)
//!   must receive; whatever anyone publishes after that is caused by it.
//! * A fence message: one publisher's messages reach each receiver in
//!   order, so once a receiver has the publisher's fence it has every
//!   earlier message of that publisher it will ever get. async-nats reads
//!   one connection's messages in order and hands each to its
//!   subscription's channel before reading the next, so once the fence is
//!   out of its subscription, the other subscriptions of that connection
//!   already hold everything sent before it: [`drain`] them without
//!   waiting.
//!
//! The tests drive the blocking line-protocol `common::Client` too, so
//! most use a multi-thread runtime with one worker: async-nats's
//! connection tasks keep running while the test thread blocks on a line
//! socket.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::{ConnectOptions, HeaderMap, Message, RequestErrorKind, Subscriber};
use bytes::Bytes;
use futures_lite::future::poll_once;
use futures_lite::StreamExt;

use common::{msg, show, Client, TestRelay, FENCE, SHARDS};
use tern::config::DEFAULT_MAX_FRAME;

/// Longest any one await may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

/// Subject of [`Anchors`].
const ANCHOR: &str = "anchor";

/// `f`, or a failure naming `what` if it takes longer than [`WAIT`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing within {WAIT:?}"),
    }
}

/// An async-nats client of `addr` with default options.
async fn connect(addr: SocketAddr) -> async_nats::Client {
    connect_with(addr, ConnectOptions::new()).await
}

/// An async-nats client of `addr` with `options`.
async fn connect_with(addr: SocketAddr, options: ConnectOptions) -> async_nats::Client {
    within(
        "connect",
        options
            .connection_timeout(WAIT)
            .request_timeout(Some(WAIT))
            .connect(format!("nats://{addr}")),
    )
    .await
    .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// A client of shard `shard`'s private NATS listener.
async fn on_shard(relay: &TestRelay, shard: usize) -> async_nats::Client {
    connect(relay.shard_nats_addrs()[shard]).await
}

async fn subscribe(c: &async_nats::Client, subject: &str) -> Subscriber {
    within("subscribe", c.subscribe(subject.to_string()))
        .await
        .expect("subscribe")
}

async fn queue_subscribe(c: &async_nats::Client, subject: &str, group: &str) -> Subscriber {
    within(
        "queue_subscribe",
        c.queue_subscribe(subject.to_string(), group.to_string()),
    )
    .await
    .expect("queue_subscribe")
}

/// async-nats's `flush()`: everything the client buffered is written to
/// its socket (no `PING`: see the module docs).
async fn flush(c: &async_nats::Client) {
    within("flush", c.flush()).await.expect("flush");
}

async fn publish(c: &async_nats::Client, subject: &str, payload: impl Into<Bytes>) {
    within("publish", c.publish(subject.to_string(), payload.into()))
        .await
        .expect("publish");
}

/// The next message of `sub`.
async fn next(sub: &mut Subscriber, what: &str) -> Message {
    within(what, sub.next())
        .await
        .unwrap_or_else(|| panic!("{what}: the subscription ended"))
}

/// The next message of `sub`, which must be `subject` / `payload`.
async fn expect(sub: &mut Subscriber, subject: &str, payload: &[u8]) -> Message {
    let m = next(sub, &format!("{subject} {}", show(payload))).await;
    assert_eq!(
        (m.subject.as_str(), show(&m.payload)),
        (subject, show(payload)),
        "unexpected message"
    );
    m
}

/// The messages `sub` already holds, without waiting for more (see the
/// module docs for when that is everything it will get). Outside tokio's
/// co-operative budget, which would otherwise make the channel look empty
/// after a hundred-odd messages.
async fn drain(sub: &mut Subscriber) -> Vec<Message> {
    let mut got = Vec::new();
    while let Some(Some(m)) = poll_once(tokio::task::unconstrained(sub.next())).await {
        got.push(m);
    }
    got
}

/// `sub` holds nothing now.
async fn expect_nothing(sub: &mut Subscriber, what: &str) {
    let extra = drain(sub).await;
    assert!(
        extra.is_empty(),
        "{what}: unexpected {:?}",
        extra
            .iter()
            .map(|m| format!("{} {}", m.subject, show(&m.payload)))
            .collect::<Vec<_>>()
    );
}

/// The payload as text (every payload here is).
fn text(m: &Message) -> String {
    String::from_utf8(m.payload.to_vec()).expect("UTF-8 payload")
}

/// Messages the connection of `c` has read (for every sid, including ones
/// the client already dropped): what tern sent it.
fn received(c: &async_nats::Client) -> u64 {
    c.statistics().in_messages.load(Ordering::Relaxed)
}

/// One line-protocol client per shard, subscribed to [`ANCHOR`] with the
/// line protocol's `PING` barrier: what async-nats cannot do for itself.
struct Anchors {
    lines: Vec<Client>,
    rounds: u64,
}

impl Anchors {
    fn new(relay: &TestRelay) -> Anchors {
        let lines = (0..SHARDS)
            .map(|shard| {
                let mut line = relay.on(shard);
                line.sub(ANCHOR);
                line
            })
            .collect();
        Anchors { lines, rounds: 0 }
    }

    /// Puts every `SUB`/`UNSUB` `c` has sent in force for whatever any
    /// client publishes after this returns, on any shard: `c` publishes a
    /// marker (no flush in between, as the spec allows), and every shard's
    /// anchor must receive it. A message published afterwards is caused by
    /// that publish.
    async fn settle(&mut self, c: &async_nats::Client) {
        self.rounds += 1;
        let tag = format!("settle-{}", self.rounds);
        publish(c, ANCHOR, tag.clone()).await;
        flush(c).await;
        for line in &mut self.lines {
            line.expect_msg(ANCHOR, &tag);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn connect_announces_the_server() {
    let relay = TestRelay::start();
    let shared = connect(relay.nats_addrs()[0]).await;
    let info = shared.server_info();
    assert!(!info.server_id.is_empty(), "server_id: {info:?}");
    assert_eq!(info.max_payload, DEFAULT_MAX_FRAME, "{info:?}");
    assert_eq!(shared.max_payload(), DEFAULT_MAX_FRAME);
    assert!(info.headers, "headers supported: {info:?}");
    assert_eq!(info.proto, 1, "{info:?}");
    assert!(
        info.version.split('.').count() == 3 && info.version.starts_with("2."),
        "version is a nats-server protocol level: {info:?}"
    );
    assert!(shared.is_server_compatible(2, 10, 0), "{info:?}");

    // Both shards announce the same server (one id per process), each
    // connection its own client id.
    let a = on_shard(&relay, 0).await;
    let b = on_shard(&relay, 1).await;
    let (ia, ib) = (a.server_info(), b.server_info());
    assert_eq!(ia.server_id, info.server_id);
    assert_eq!(ib.server_id, info.server_id);
    assert_ne!(ia.client_id, ib.client_id, "client ids: {ia:?} {ib:?}");
    drop((shared, a, b));
    relay.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn publish_reaches_subscribers_on_both_shards_in_order() {
    let relay = TestRelay::start();
    let mut anchors = Anchors::new(&relay);
    let publisher = on_shard(&relay, 0).await;
    let near = on_shard(&relay, 0).await;
    let far = on_shard(&relay, 1).await;
    let mut near_sub = subscribe(&near, "greet.joe").await;
    let mut far_sub = subscribe(&far, "greet.joe").await;
    anchors.settle(&near).await;
    anchors.settle(&far).await;

    publish(&publisher, "greet.joe", "hello").await;
    for sub in [&mut near_sub, &mut far_sub] {
        let m = expect(sub, "greet.joe", b"hello").await;
        assert_eq!(m.reply, None);
        assert_eq!(m.headers, None);
    }
    // An empty payload, and a publisher's order kept on both shards.
    publish(&publisher, "greet.joe", "").await;
    for i in 0..100 {
        publish(&publisher, "greet.joe", format!("m{i}")).await;
    }
    for sub in [&mut near_sub, &mut far_sub] {
        expect(sub, "greet.joe", b"").await;
        for i in 0..100 {
            expect(sub, "greet.joe", format!("m{i}").as_bytes()).await;
        }
    }
    drop((publisher, near, far));
    relay.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn wildcards_star_and_full() {
    let relay = TestRelay::start();
    let mut anchors = Anchors::new(&relay);
    let publisher = on_shard(&relay, 0).await;
    let receiver = on_shard(&relay, 1).await;
    let mut star = subscribe(&receiver, "time.*.east").await;
    let mut full = subscribe(&receiver, "time.>").await;
    let mut fence = subscribe(&receiver, FENCE).await;
    anchors.settle(&receiver).await;

    for subject in [
        "time.us.east",
        "time.us.east.atlanta",
        "time.us",
        "time",
        "times.us.east",
        "time.eu.west",
    ] {
        publish(&publisher, subject, subject.to_string()).await;
    }
    publish(&publisher, FENCE, "end").await;
    expect(&mut fence, FENCE, b"end").await;

    let subjects = |ms: Vec<Message>| -> Vec<String> {
        ms.into_iter()
            .map(|m| {
                assert_eq!(m.payload, m.subject.as_bytes(), "payload is the subject");
                m.subject.to_string()
            })
            .collect()
    };
    assert_eq!(subjects(drain(&mut star).await), ["time.us.east"]);
    assert_eq!(
        subjects(drain(&mut full).await),
        [
            "time.us.east",
            "time.us.east.atlanta",
            "time.us",
            "time.eu.west"
        ]
    );
    drop((publisher, receiver));
    relay.shutdown();
}

/// Payloads of every size up to `max_payload`, with and without headers,
/// arrive intact on both shards (large ones are read in several pieces,
/// apart from their control line).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn payloads_up_to_max_payload_arrive_intact() {
    let relay = TestRelay::start();
    let mut anchors = Anchors::new(&relay);
    let publisher = on_shard(&relay, 0).await;
    let near = on_shard(&relay, 0).await;
    let far = on_shard(&relay, 1).await;
    let mut subs = Vec::new();
    for c in [&near, &far] {
        subs.push(subscribe(c, "big").await);
        anchors.settle(c).await;
    }
    let mut headers = HeaderMap::new();
    headers.insert("X-Size", "varies");
    let header_room = 64; // what async-nats adds for the header block
    let sizes = [
        0,
        1,
        4095,
        4096,
        65_537,
        DEFAULT_MAX_FRAME - header_room,
        DEFAULT_MAX_FRAME,
    ];
    let payload = |size: usize| -> Bytes { (0..size).map(|i| (i % 251) as u8).collect() };
    for &size in &sizes {
        within("publish", publisher.publish("big", payload(size)))
            .await
            .unwrap_or_else(|e| panic!("publish {size} bytes: {e}"));
        if size + header_room <= DEFAULT_MAX_FRAME {
            within(
                "publish_with_headers",
                publisher.publish_with_headers("big", headers.clone(), payload(size)),
            )
            .await
            .unwrap_or_else(|e| panic!("publish {size} bytes with headers: {e}"));
        }
    }
    for sub in &mut subs {
        for &size in &sizes {
            let m = next(sub, &format!("{size} bytes")).await;
            assert!(m.payload == payload(size), "{size} bytes altered");
            assert_eq!(m.headers, None);
            if size + header_room <= DEFAULT_MAX_FRAME {
                let m = next(sub, &format!("{size} bytes with headers")).await;
                assert!(m.payload == payload(size), "{size} bytes altered");
                assert_eq!(m.headers.as_ref(), Some(&headers));
            }
        }
    }
    drop((publisher, near, far));
    relay.shutdown();
}

/// Members of one queue group pinned to both shards, publishers on both:
/// every message reaches exactly one member, and all of them arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn queue_group_members_on_both_shards_share_the_messages() {
    const PER_PUBLISHER: usize = 200;
    let relay = TestRelay::start();
    let mut anchors = Anchors::new(&relay);
    let mut members = Vec::new();
    for shard in 0..SHARDS {
        let c = on_shard(&relay, shard).await;
        let work = queue_subscribe(&c, "work.items", "workers").await;
        let fence = subscribe(&c, FENCE).await;
        anchors.settle(&c).await;
        members.push((c, work, fence));
    }
    let mut publishers = Vec::new();
    for shard in 0..SHARDS {
        publishers.push(on_shard(&relay, shard).await);
    }
    for (p, publisher) in publishers.iter().enumerate() {
        for i in 0..PER_PUBLISHER {
            publish(publisher, "work.items", format!("p{p}-{i}")).await;
        }
        publish(publisher, FENCE, format!("p{p}")).await;
    }

    let fence_tags: BTreeSet<String> = (0..SHARDS).map(|p| format!("p{p}")).collect();
    let mut seen = BTreeSet::new();
    let mut split = Vec::new();
    for (shard, (_, work, fence)) in members.iter_mut().enumerate() {
        // Every publisher's fence, in any order.
        let mut fences = BTreeSet::new();
        for _ in 0..SHARDS {
            fences.insert(text(&next(fence, "fence").await));
        }
        assert_eq!(fences, fence_tags);
        let got = drain(work).await;
        split.push(got.len());
        for m in got {
            assert_eq!(m.subject.as_str(), "work.items");
            let payload = text(&m);
            assert!(
                seen.insert(payload.clone()),
                "{payload} delivered twice (again to the member on shard {shard})"
            );
        }
    }
    let expected: BTreeSet<String> = (0..SHARDS)
        .flat_map(|p| (0..PER_PUBLISHER).map(move |i| format!("p{p}-{i}")))
        .collect();
    let missing: Vec<_> = expected.difference(&seen).collect();
    eprintln!("queue group split (shard 0, shard 1): {split:?}");
    assert!(missing.is_empty(), "never delivered: {missing:?}");
    drop((members, publishers));
    relay.shutdown();
}

/// Answers every request on `subject` from `c` with `re: <payload>`.
async fn responder(
    anchors: &mut Anchors,
    c: &async_nats::Client,
    subject: &str,
) -> tokio::task::JoinHandle<()> {
    let mut requests = subscribe(c, subject).await;
    anchors.settle(c).await;
    let c = c.clone();
    tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            let reply = m.reply.expect("a request has a reply subject");
            let mut answer = b"re: ".to_vec();
            answer.extend_from_slice(&m.payload);
            c.publish(reply, answer.into()).await.expect("reply");
        }
    })
}

/// The responder on shard 1, the requester on shard 0: async-nats's
/// `request` subscribes to its reply inbox and publishes at once, without
/// a `PING` in between; the reply must still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn request_reply_across_shards_without_a_flush() {
    let relay = TestRelay::start();
    let mut anchors = Anchors::new(&relay);
    let server = on_shard(&relay, 1).await;
    let answering = responder(&mut anchors, &server, "svc.echo").await;

    // A fresh connection each time: the first request also makes
    // async-nats's inbox subscription (`SUB _INBOX.<id>.* 0`), written
    // together with the `PUB`.
    for round in 0..3 {
        let requester = on_shard(&relay, 0).await;
        for i in 0..3 {
            let payload = format!("r{round}-{i}");
            let reply = within(
                "request",
                requester.request("svc.echo", payload.clone().into()),
            )
            .await
            .unwrap_or_else(|e| panic!("request {payload}: {e} ({:?})", e.kind()));
            assert_eq!(text(&reply), format!("re: {payload}"));
        }
        // And a request on an inbox of its own: `SUB <inbox> <sid>` then
        // `PUB`, again without a flush between.
        let request = async_nats::Request::new()
            .payload(format!("own-{round}").into())
            .inbox(requester.new_inbox());
        let reply = within("request", requester.send_request("svc.echo", request))
            .await
            .unwrap_or_else(|e| panic!("request on its own inbox: {e} ({:?})", e.kind()));
        assert_eq!(text(&reply), format!("re: own-{round}"));
    }
    answering.abort();
    drop(server);
    relay.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn headers_round_trip() {
    let relay = TestRelay::start();
    let mut anchors = Anchors::new(&relay);
    let publisher = on_shard(&relay, 0).await;
    let receiver = on_shard(&relay, 1).await;
    let mut sub = subscribe(&receiver, "with.headers").await;
    let mut requests = subscribe(&receiver, "svc.hdr").await;
    anchors.settle(&receiver).await;

    let mut headers = HeaderMap::new();
    headers.insert("X-Trace", "abc-123");
    headers.append("X-Multi", "one");
    headers.append("X-Multi", "two");
    headers.insert("X-Spaces", "a value with spaces");
    within(
        "publish_with_headers",
        publisher.publish_with_headers("with.headers", headers.clone(), "body".into()),
    )
    .await
    .expect("publish_with_headers");
    within(
        "publish_with_reply_and_headers",
        publisher.publish_with_reply_and_headers(
            "with.headers",
            "reply.here",
            headers.clone(),
            "".into(),
        ),
    )
    .await
    .expect("publish_with_reply_and_headers");

    let m = expect(&mut sub, "with.headers", b"body").await;
    assert_eq!(m.reply, None);
    assert_eq!(m.headers.as_ref(), Some(&headers));
    assert_eq!(m.status, None);
    let m = expect(&mut sub, "with.headers", b"").await;
    assert_eq!(m.reply.as_deref(), Some("reply.here"));
    assert_eq!(m.headers.as_ref(), Some(&headers));
    let multi: Vec<_> = m
        .headers
        .as_ref()
        .unwrap()
        .get_all("X-Multi")
        .map(|v| v.as_str().to_string())
        .collect();
    assert_eq!(multi, ["one", "two"]);

    // A request with headers, answered with headers, across shards.
    let answering = {
        let receiver = receiver.clone();
        tokio::spawn(async move {
            let m = requests.next().await.expect("the request");
            let trace = m
                .headers
                .as_ref()
                .and_then(|h| h.get("X-Trace"))
                .map(|v| v.as_str().to_string())
                .expect("the request's header");
            let mut answer = HeaderMap::new();
            answer.insert("X-Echo", trace);
            receiver
                .publish_with_headers(m.reply.expect("reply subject"), answer, "ok".into())
                .await
                .expect("reply");
        })
    };
    let reply = within(
        "request_with_headers",
        publisher.request_with_headers("svc.hdr", headers.clone(), "q".into()),
    )
    .await
    .expect("request_with_headers");
    assert_eq!(text(&reply), "ok");
    assert_eq!(
        reply
            .headers
            .as_ref()
            .and_then(|h| h.get("X-Echo"))
            .map(|v| v.as_str()),
        Some("abc-123")
    );
    within("responder", answering).await.expect("responder");
    drop((publisher, receiver));
    relay.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn no_responders() {
    let relay = TestRelay::start();
    let mut anchors = Anchors::new(&relay);
    let requester = on_shard(&relay, 0).await;
    let err = within("request", requester.request("nobody.home", "?".into()))
        .await
        .expect_err("nobody answers");
    assert_eq!(err.kind(), RequestErrorKind::NoResponders, "{err}");

    // A responder on the other shard answers; once it has unsubscribed,
    // nobody does again.
    let server = on_shard(&relay, 1).await;
    let answering = responder(&mut anchors, &server, "nobody.home").await;
    let reply = within("request", requester.request("nobody.home", "?".into()))
        .await
        .expect("answered");
    assert_eq!(text(&reply), "re: ?");
    // Dropping the task drops its subscriber: async-nats unsubscribes.
    answering.abort();
    assert!(within("responder", answering).await.is_err(), "aborted");
    anchors.settle(&server).await;
    let err = within("request", requester.request("nobody.home", "?".into()))
        .await
        .expect_err("nobody answers any more");
    assert_eq!(err.kind(), RequestErrorKind::NoResponders, "{err}");

    // The connection is fine afterwards, and the no-responders replies
    // were its only messages besides the one answer.
    let mut check = subscribe(&requester, "check").await;
    publish(&requester, "check", "ok").await;
    expect(&mut check, "check", b"ok").await;
    assert_eq!(received(&requester), 4, "MSGs on the wire");
    drop((requester, server));
    relay.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn unsubscribe_after_n_messages() {
    let relay = TestRelay::start();
    let mut anchors = Anchors::new(&relay);
    let publisher = on_shard(&relay, 0).await;
    let receiver = on_shard(&relay, 1).await;
    let mut limited = subscribe(&receiver, "count").await;
    within("unsubscribe_after", limited.unsubscribe_after(3))
        .await
        .expect("unsubscribe_after");
    let mut fence = subscribe(&receiver, FENCE).await;
    anchors.settle(&receiver).await;

    for i in 0..5 {
        publish(&publisher, "count", format!("{i}")).await;
    }
    publish(&publisher, FENCE, "end").await;
    for i in 0..3 {
        expect(&mut limited, "count", format!("{i}").as_bytes()).await;
    }
    assert!(
        within("end of the subscription", limited.next())
            .await
            .is_none(),
        "the client ends the subscription after 3"
    );
    expect(&mut fence, FENCE, b"end").await;
    // What tern sent this connection: 3, then the fence; not 5.
    assert_eq!(received(&receiver), 4, "MSGs on the wire");

    // The subscription is gone on every shard: a new one on the same
    // subject gets the next message once.
    let mut again = subscribe(&receiver, "count").await;
    anchors.settle(&receiver).await;
    publish(&publisher, "count", "5").await;
    publish(&publisher, FENCE, "end2").await;
    expect(&mut again, "count", b"5").await;
    expect(&mut fence, FENCE, b"end2").await;
    expect_nothing(&mut again, "after the second fence").await;
    assert_eq!(received(&receiver), 6, "MSGs on the wire");
    drop((publisher, receiver));
    relay.shutdown();
}

/// async-nats's `flush()` writes out what the client buffered. The
/// runtime here has one thread, the test's: once it blocks on a line
/// socket, async-nats does nothing more, so the line subscriber gets the
/// messages only if `flush()` wrote them all.
#[tokio::test(flavor = "current_thread")]
async fn flush_writes_out_everything_buffered() {
    const COUNT: usize = 500;
    let relay = TestRelay::start();
    let mut line = relay.on(1);
    line.sub("flushed");
    let publisher = on_shard(&relay, 0).await;
    // Nothing buffered: it returns.
    flush(&publisher).await;
    for i in 0..COUNT {
        publish(&publisher, "flushed", format!("{i}")).await;
    }
    flush(&publisher).await;
    for i in 0..COUNT {
        line.expect_msg("flushed", format!("{i}"));
    }
    line.expect_silence();
    drop(publisher);
    let totals = relay.shutdown();
    assert_eq!(totals.msgs_in, COUNT as u64, "{totals:?}");
}

/// Unsubscribing and resubscribing, settled each time, on the other
/// shard from the publisher: in force exactly when it should be.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn subscribe_and_unsubscribe_across_shards() {
    let relay = TestRelay::start();
    let mut anchors = Anchors::new(&relay);
    let publisher = on_shard(&relay, 0).await;
    let receiver = on_shard(&relay, 1).await;
    let mut fence = subscribe(&receiver, FENCE).await;
    for i in 0..10 {
        let subject = format!("toggle.{i}");
        let mut sub = subscribe(&receiver, &subject).await;
        anchors.settle(&receiver).await;
        publish(&publisher, &subject, "in force").await;
        expect(&mut sub, &subject, b"in force").await;
        within("unsubscribe", sub.unsubscribe())
            .await
            .expect("unsubscribe");
        anchors.settle(&receiver).await;
        publish(&publisher, &subject, "gone").await;
        publish(&publisher, FENCE, format!("{i}")).await;
        expect(&mut fence, FENCE, format!("{i}").as_bytes()).await;
    }
    // Per round: one message and one fence; nothing after UNSUB.
    assert_eq!(received(&receiver), 20, "MSGs on the wire");
    drop((publisher, receiver));
    relay.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn echo_off_skips_own_messages_only() {
    let relay = TestRelay::start();
    let mut anchors = Anchors::new(&relay);
    let quiet = connect_with(relay.shard_nats_addrs()[0], ConnectOptions::new().no_echo()).await;
    let other = on_shard(&relay, 1).await;
    let mut quiet_sub = subscribe(&quiet, "chat").await;
    let mut other_sub = subscribe(&other, "chat").await;
    anchors.settle(&quiet).await;
    anchors.settle(&other).await;

    publish(&quiet, "chat", "from quiet").await;
    expect(&mut other_sub, "chat", b"from quiet").await;
    // Sent after `other` had quiet's message, so caused by it: were the
    // echo delivered (on quiet's own shard, as quiet published), it would
    // come first.
    publish(&other, "chat", "from other").await;
    expect(&mut quiet_sub, "chat", b"from other").await;
    expect(&mut other_sub, "chat", b"from other").await;
    assert_eq!(
        received(&quiet),
        1,
        "MSGs on the wire to the echo-off client"
    );
    drop((quiet, other));
    relay.shutdown();
}

/// As nats-server: one `MSG` per matching subscription (sid) of a
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn two_matching_subscriptions_get_two_deliveries() {
    let relay = TestRelay::start();
    let mut anchors = Anchors::new(&relay);
    let publisher = on_shard(&relay, 0).await;
    let receiver = on_shard(&relay, 1).await;
    let mut exact = subscribe(&receiver, "dup.x").await;
    let mut exact_again = subscribe(&receiver, "dup.x").await;
    let mut star = subscribe(&receiver, "dup.*").await;
    let mut fence = subscribe(&receiver, FENCE).await;
    anchors.settle(&receiver).await;

    publish(&publisher, "dup.x", "one").await;
    publish(&publisher, "dup.y", "two").await;
    publish(&publisher, FENCE, "end").await;
    expect(&mut fence, FENCE, b"end").await;
    let payloads = |ms: Vec<Message>| -> Vec<String> { ms.iter().map(text).collect() };
    assert_eq!(payloads(drain(&mut exact).await), ["one"]);
    assert_eq!(payloads(drain(&mut exact_again).await), ["one"]);
    assert_eq!(payloads(drain(&mut star).await), ["one", "two"]);
    assert_eq!(received(&receiver), 5, "MSGs on the wire");
    drop((publisher, receiver));
    relay.shutdown();
}

// ---------------------------------------------------------------------
// Cross-protocol: the line `Client` of tests/common beside async-nats.

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn line_publish_reaches_nats_subscribers() {
    let relay = TestRelay::start();
    let mut anchors = Anchors::new(&relay);
    let receiver = on_shard(&relay, 1).await;
    let mut sub = subscribe(&receiver, "cross.>").await;
    anchors.settle(&receiver).await;

    let mut line = relay.on(0);
    line.publish("cross.a", "hello world");
    line.publish("cross.b", "");
    line.publish("cross.c", "tabs\tand \r bytes \x01\x7f");
    let m = expect(&mut sub, "cross.a", b"hello world").await;
    assert_eq!((m.reply, m.headers), (None, None));
    expect(&mut sub, "cross.b", b"").await;
    expect(&mut sub, "cross.c", b"tabs\tand \r bytes \x01\x7f").await;
    line.expect_silence();
    drop(receiver);
    relay.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn nats_publish_reaches_line_subscribers_without_reply_or_headers() {
    let relay = TestRelay::start();
    let mut line = relay.on(1);
    line.sub("cross.*");
    let publisher = on_shard(&relay, 0).await;

    publish(&publisher, "cross.plain", "hi there").await;
    within(
        "publish_with_reply",
        publisher.publish_with_reply("cross.reply", "inbox.1", "answer me".into()),
    )
    .await
    .expect("publish_with_reply");
    let mut headers = HeaderMap::new();
    headers.insert("X-Dropped", "for line receivers");
    within(
        "publish_with_headers",
        publisher.publish_with_headers("cross.headers", headers, "body only".into()),
    )
    .await
    .expect("publish_with_headers");
    publish(&publisher, "cross.empty", "").await;
    flush(&publisher).await;

    line.expect_msg("cross.plain", "hi there");
    line.expect_msg("cross.reply", "answer me");
    line.expect_msg("cross.headers", "body only");
    line.expect_msg("cross.empty", "");
    line.expect_silence();
    drop(publisher);
    relay.shutdown();
}

/// A NATS payload holding the line terminator (`\n` here) cannot be
/// framed for a line receiver: it is not delivered to it, and counted;
/// the NATS receiver gets it as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_payload_with_the_terminator_is_not_delivered_to_line_receivers() {
    let relay = TestRelay::start();
    assert_eq!(relay.term(), b"\n");
    let mut anchors = Anchors::new(&relay);
    let mut line = relay.on(1);
    line.sub("split.it");
    line.sub_fence();
    let nats = on_shard(&relay, 1).await;
    let mut nats_sub = subscribe(&nats, "split.it").await;
    anchors.settle(&nats).await;
    let before = relay.stats().undeliverable_to_line;

    let publisher = on_shard(&relay, 0).await;
    publish(&publisher, "split.it", "two\nlines").await;
    publish(&publisher, "split.it", "fine").await;
    publish(&publisher, FENCE, "after").await;
    flush(&publisher).await;

    // The line receiver's next frames: the good message, then the fence.
    line.expect_msg("split.it", "fine");
    line.expect_msg(FENCE, "after");
    assert_eq!(
        relay.stats().undeliverable_to_line - before,
        1,
        "counted once"
    );
    expect(&mut nats_sub, "split.it", b"two\nlines").await;
    expect(&mut nats_sub, "split.it", b"fine").await;
    line.expect_silence();
    drop((nats, publisher));
    relay.shutdown();
}

/// A line `SUB s g` and a NATS `SUB s g` are members of one group: every
/// message, from a line or a NATS publisher, reaches exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mixed_queue_group_shares_the_messages() {
    const PER_PUBLISHER: usize = 100;
    let relay = TestRelay::start();
    let mut anchors = Anchors::new(&relay);
    let mut line_member = relay.on(0);
    line_member.sub_group("mixed.work", "crew");
    line_member.sub_fence();
    let nats_member = on_shard(&relay, 1).await;
    let mut nats_work = queue_subscribe(&nats_member, "mixed.work", "crew").await;
    let mut nats_fence = subscribe(&nats_member, FENCE).await;
    anchors.settle(&nats_member).await;

    let nats_publisher = on_shard(&relay, 0).await;
    for i in 0..PER_PUBLISHER {
        publish(&nats_publisher, "mixed.work", format!("nats-{i}")).await;
    }
    publish(&nats_publisher, FENCE, "nats").await;
    flush(&nats_publisher).await;
    let mut line_publisher = relay.on(1);
    for i in 0..PER_PUBLISHER {
        line_publisher.publish("mixed.work", format!("line-{i}"));
    }
    line_publisher.publish(FENCE, "line");

    // The line member: frames until both fences.
    let mut seen = BTreeSet::new();
    let mut fences = BTreeSet::new();
    let mut line_count = 0;
    while fences.len() < 2 {
        let frame = line_member.read_frame();
        if let Some(tag) = frame.strip_prefix(msg(FENCE, "").as_slice()) {
            fences.insert(String::from_utf8(tag.to_vec()).unwrap());
            continue;
        }
        let payload = frame
            .strip_prefix(msg("mixed.work", "").as_slice())
            .unwrap_or_else(|| panic!("unexpected frame {}", show(&frame)));
        let payload = String::from_utf8(payload.to_vec()).unwrap();
        assert!(seen.insert(payload.clone()), "{payload} twice");
        line_count += 1;
    }
    // The NATS member: both fences, then what it holds.
    let mut nats_fences = BTreeSet::new();
    for _ in 0..2 {
        nats_fences.insert(text(&next(&mut nats_fence, "fence").await));
    }
    assert_eq!(nats_fences, fences);
    let nats_got = drain(&mut nats_work).await;
    let nats_count = nats_got.len();
    for m in nats_got {
        let payload = text(&m);
        assert!(
            seen.insert(payload.clone()),
            "{payload} to both the line and the NATS member"
        );
    }
    let expected: BTreeSet<String> = ["nats", "line"]
        .iter()
        .flat_map(|p| (0..PER_PUBLISHER).map(move |i| format!("{p}-{i}")))
        .collect();
    let missing: Vec<_> = expected.difference(&seen).collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
    eprintln!("mixed group split (line, nats): ({line_count}, {nats_count})");
    line_member.expect_silence();
    drop((nats_member, nats_publisher));
    relay.shutdown();
}
