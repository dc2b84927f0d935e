//! The metrics endpoint end to end: an in-process relay with two shards,
//! its [`tern::metrics`] server on an ephemeral loopback port, real TCP
//! clients of both, and scrapes taken while traffic flows.
//!
//! Nothing here waits on a clock to decide anything: the relay's side is
//! proved with `PING`/`PONG` barriers and fences (see `common`), and the
//! few loops that poll the endpoint stop at the first scrape that shows
//! what they wait for, with a deadline only to fail instead of hanging.

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use common::http::{self, Reply};
use common::{fence, Client, Rng, TestRelay};
use tern::metrics::{self, MetricsServer};

/// Longest a polling loop may wait for the relay to reach a state.
const DEADLINE: Duration = Duration::from_secs(30);

/// A relay and its metrics endpoint.
struct Fixture {
    relay: TestRelay,
    metrics: MetricsServer,
}

impl Fixture {
    fn start() -> Fixture {
        Fixture::start_with(|_| {})
    }

    fn start_with(tweak: impl FnOnce(&mut tern::config::Config)) -> Fixture {
        let relay = TestRelay::start_with(tweak);
        let metrics = metrics::serve(
            "127.0.0.1:0".parse().unwrap(),
            relay.monitor(),
            relay.cores(),
        )
        .expect("metrics endpoint starts");
        Fixture { relay, metrics }
    }

    fn get(&self, path: &str) -> Reply {
        http::get(self.metrics.local_addr(), path)
    }

    fn scrape(&self) -> Scrape {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        Scrape::parse(&r.body)
    }

    /// A nats-server monitoring page (`/varz`, `/connz?...`) as JSON.
    fn nats_page(&self, path: &str) -> serde_json::Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"));
        serde_json::from_str(&r.body).expect("valid JSON")
    }

    /// `/connz?query`'s connections.
    fn connz(&self, query: &str) -> Vec<serde_json::Value> {
        let page = self.nats_page(&format!("/connz{query}"));
        page["connections"]
            .as_array()
            .expect("a JSON array")
            .clone()
    }

    fn connections(&self, query: &str) -> Vec<serde_json::Value> {
        let r = self.get(&format!("/connections{query}"));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("valid JSON");
        v.as_array().expect("a JSON array").clone()
    }
}

/// A parsed `/metrics` page: `family name -> labels -> value`.
struct Scrape {
    samples: HashMap<String, HashMap<String, f64>>,
    text: String,
}

impl Scrape {
    /// Parses format 0.0.4 as Prometheus would, failing on anything it
    /// would refuse: samples outside their announced family, a family
    /// twice, a `# TYPE` without `# HELP`; and on label values with
    /// spaces, which tern does not write.
    fn parse(text: &str) -> Scrape {
        let mut samples: HashMap<String, HashMap<String, f64>> = HashMap::new();
        let mut family = String::new();
        let mut helped = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped = rest.split(' ').next().unwrap().to_string();
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(helped, name, "TYPE without HELP: {line}");
                assert!(!samples.contains_key(name), "family {name} twice:\n{text}");
                match kind {
                    "counter" => assert!(name.ends_with("_total"), "{name}"),
                    "gauge" => assert!(!name.ends_with("_total"), "{name}"),
                    other => panic!("unexpected type {other}: {line}"),
                }
                family = name.to_string();
                samples.insert(family.clone(), HashMap::new());
            } else {
                let (series, value) = line.rsplit_once(' ').expect("name value");
                assert!(!series.contains(' '), "a space in a label: {line}");
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => {
                        (name, labels.strip_suffix('}').expect("closing brace"))
                    }
                    None => (series, ""),
                };
                assert_eq!(name, family, "sample outside its family: {line}");
                let value: f64 = value.parse().expect("a number");
                let previous = samples
                    .get_mut(&family)
                    .unwrap()
                    .insert(labels.to_string(), value);
                assert!(previous.is_none(), "series twice: {line}");
            }
        }
        Scrape {
            samples,
            text: text.to_string(),
        }
    }

    /// The value of `name{labels}`, a number.
    fn value(&self, name: &str, labels: &str) -> f64 {
        *self
            .samples
            .get(name)
            .and_then(|f| f.get(labels))
            .unwrap_or_else(|| panic!("{name}{{{labels}}} missing:\n{}", self.text))
    }

    /// The value of `name{labels}`, a count.
    fn get(&self, name: &str, labels: &str) -> u64 {
        let v = self.value(name, labels);
        assert_eq!(v.fract(), 0.0, "{name}{{{labels}}} is {v}, not a count");
        v as u64
    }

    /// One shard's value of a per-shard family.
    fn shard(&self, name: &str, shard: usize) -> u64 {
        self.get(name, &format!("shard=\"{shard}\""))
    }

    /// A family of counts summed over all its series.
    fn sum(&self, name: &str) -> u64 {
        self.samples
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing:\n{}", self.text))
            .values()
            .map(|&v| v as u64)
            .sum()
    }
}

/// The relay-side address of `client`: what `/connections` calls its peer.
fn peer_of(client: &Client) -> String {
    client.stream().local_addr().unwrap().to_string()
}

/// A NATS client over a raw socket to `addr`, as a NATS library would
/// connect: it reads `INFO`, sends `CONNECT` with a name, a language and a
/// version, and waits for the `PONG` that proves the relay has taken them.
/// It stays verbose (nats-server's default): every accepted command is
/// answered `+OK`. Returns the client and the JSON of `INFO`.
fn nats_client(addr: std::net::SocketAddr) -> (Client, serde_json::Value) {
    let mut c = Client::connect(addr, b"\r\n");
    let info = c.read_frame();
    let json = info.strip_prefix(b"INFO ").expect("INFO first");
    let info = serde_json::from_slice(json).expect("INFO carries JSON");
    c.send(r#"CONNECT {"name":"x","lang":"raw","version":"1"}"#);
    c.send("PING");
    c.expect("+OK");
    c.expect("PONG");
    (c, info)
}

#[test]
fn counters_match_the_traffic_scraped_while_it_flows() {
    const N: usize = 3000;
    const PAYLOAD: &[u8] = b"0123456789abcdef0123456789abcdef";
    let f = Fixture::start();
    let mut pub0 = f.relay.on(0);
    let mut subs: Vec<Client> = (0..2).map(|shard| f.relay.on(shard)).collect();
    for s in subs.iter_mut() {
        s.sub("load");
        s.sub_fence();
    }
    let publisher_peer = peer_of(&pub0);

    let before = f.scrape();
    assert_eq!(before.sum("tern_messages_in_total"), 0);
    assert_eq!(before.sum("tern_connections_open"), 3);
    assert_eq!(before.sum("tern_subscriptions"), 4);

    // Traffic on other threads, scrapes on this one.
    let publisher = thread::spawn(move || {
        for _ in 0..N {
            pub0.publish("load", PAYLOAD);
        }
        pub0
    });
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            thread::spawn(move || {
                for _ in 0..N {
                    s.expect_msg("load", PAYLOAD);
                }
                s
            })
        })
        .collect();
    let mut last_in = 0;
    let mut scrapes = 0;
    while !(publisher.is_finished() && readers.iter().all(|r| r.is_finished())) {
        let s = f.scrape();
        let now_in = s.sum("tern_messages_in_total");
        assert!(now_in >= last_in, "a counter went backwards");
        assert!(now_in <= N as u64);
        assert!(s.sum("tern_messages_out_total") <= 2 * N as u64);
        last_in = now_in;
        scrapes += 1;
    }
    assert!(scrapes > 0);
    println!("{scrapes} scrapes while traffic flowed, the last one saw {last_in} messages in");
    let mut pub0 = publisher.join().unwrap();
    let mut subs: Vec<Client> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    // Nothing more is on its way to either subscriber.
    {
        let [a, b] = &mut subs[..] else {
            unreachable!()
        };
        fence(&mut pub0, &mut [a, b], "done");
    }

    let after = f.scrape();
    let n = N as u64 + 1; // the fence is a message too
    assert_eq!(after.sum("tern_messages_in_total"), n);
    assert_eq!(after.shard("tern_messages_in_total", 0), n);
    assert_eq!(after.shard("tern_messages_in_total", 1), 0);
    assert_eq!(after.sum("tern_messages_out_total"), 2 * n);
    assert_eq!(after.shard("tern_messages_out_total", 0), n);
    assert_eq!(after.shard("tern_messages_out_total", 1), n);
    // Published on shard 0, one subscriber on shard 1: forwarded once each.
    assert_eq!(after.shard("tern_messages_forwarded_total", 0), n);
    let payload_bytes = N as u64 * PAYLOAD.len() as u64 + "done".len() as u64;
    assert_eq!(after.sum("tern_bytes_in_total"), payload_bytes);
    assert_eq!(after.sum("tern_bytes_out_total"), 2 * payload_bytes);
    assert_eq!(after.sum("tern_slow_consumers_total"), 0);
    assert_eq!(after.sum("tern_protocol_errors_total"), 0);
    assert_eq!(after.sum("tern_connections_accepted_total"), 3);
    for (shard, cpu) in f.relay.cores().iter().enumerate() {
        // The CPU is a label, the value always 1.
        assert_eq!(
            after.get(
                "tern_shard_info",
                &format!("shard=\"{shard}\",cpu=\"{cpu}\"")
            ),
            1
        );
    }
    assert_eq!(
        after.get(
            "tern_info",
            &format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))
        ),
        1
    );
    // The endpoint and the library agree.
    let totals = f.relay.stats();
    assert_eq!(totals.msgs_in, n);
    assert_eq!(totals.msgs_out, 2 * n);

    // The busiest publisher is named by /connections.
    let top = f.connections("?sort=msgs_in&limit=1");
    assert_eq!(top.len(), 1);
    assert_eq!(top[0]["peer"], publisher_peer.as_str());
    assert_eq!(top[0]["msgs_in"], n);
    assert_eq!(top[0]["shard"], 0);
    let all = f.connections("");
    assert_eq!(all.len(), 3);
    for c in &all {
        for key in [
            "shard",
            "peer",
            "age_seconds",
            "subscriptions",
            "msgs_in",
            "msgs_out",
            "pending_bytes",
        ] {
            assert!(c.get(key).is_some(), "{key} missing from {c}");
        }
    }
    let by_subs = f.connections("?sort=subscriptions");
    assert_eq!(by_subs[0]["subscriptions"], 2);
    assert_eq!(by_subs[2]["subscriptions"], 0);

    // Errors are counted by reason, on the shard that answered them.
    let mut bad = f.relay.on(1);
    bad.expect_err_for("FROB x", "unknown verb");
    bad.expect_err_for("SUB", "missing subject");
    let s = f.scrape();
    assert_eq!(
        s.get(
            "tern_protocol_errors_total",
            "shard=\"1\",reason=\"unknown_verb\""
        ),
        1
    );
    assert_eq!(
        s.get(
            "tern_protocol_errors_total",
            "shard=\"1\",reason=\"missing_subject\""
        ),
        1
    );
    assert_eq!(s.sum("tern_protocol_errors_total"), 2);

    f.metrics.stop();
    f.relay.shutdown();
}

#[test]
fn the_process_is_described_by_the_standard_series() {
    let f = Fixture::start();
    // Held open while scraping: each is two descriptors of this process
    // (the client's socket and the relay's).
    let clients: Vec<Client> = (0..8).map(|i| f.relay.on(i % 2)).collect();
    let s = f.scrape();
    let open = s.get("process_open_fds", "");
    assert!(open >= 16, "{open}");
    assert!(s.get("process_max_fds", "") >= open);
    let rss = s.get("process_resident_memory_bytes", "");
    assert!(rss >= 1 << 20, "{rss}");
    assert!(s.get("process_virtual_memory_bytes", "") >= rss);
    assert!(s.value("process_cpu_seconds_total", "") > 0.0);
    let started = s.value("process_start_time_seconds", "");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(started > 0.0 && started <= now, "{started} vs {now}");
    drop(clients);
    f.metrics.stop();
    f.relay.shutdown();
}

#[test]
fn a_slow_consumer_is_named_by_connections_and_counted_once() {
    const MAX_PENDING: usize = 256 * 1024;
    const STEP: usize = 16;
    let payload = vec![b'x'; 1024];
    let f = Fixture::start_with(|c| c.max_pending = MAX_PENDING);
    let mut publisher = f.relay.on(0);
    // A subscriber that never reads, with a tiny receive window so that
    // what it is owed piles up in the relay...
    let mut slow = Client::tiny_window(f.relay.shard_addrs()[1], f.relay.term());
    slow.sub("firehose");
    let slow_peer = peer_of(&slow);
    // ...and one on the same shard that keeps up.
    let mut fast = f.relay.on(1);
    fast.sub("firehose");
    fast.sub("end");
    let reader = thread::spawn(move || {
        let mut got = 0usize;
        loop {
            let frame = fast.read_frame();
            if frame.starts_with(b"MSG end ") {
                return got;
            }
            assert!(frame.starts_with(b"MSG firehose "));
            got += 1;
        }
    });

    let mut sent = 0usize;
    let mut publish_step = |publisher: &mut Client| {
        for _ in 0..STEP {
            publisher.publish("firehose", &payload);
        }
        sent += STEP;
        // Every PUB so far has been handled by shard 0.
        publisher.ping();
        assert!(sent < 100_000, "no slow consumer after {sent} messages");
    };

    // Until the relay closes it, the slow subscriber's queue only grows:
    // some scrape sees it in (0, MAX_PENDING], at the top of the list.
    let deadline = Instant::now() + DEADLINE;
    loop {
        publish_step(&mut publisher);
        let top = f.connections("?sort=pending&limit=1");
        assert_eq!(top.len(), 1);
        let pending = top[0]["pending_bytes"].as_u64().unwrap() as usize;
        if top[0]["peer"] == slow_peer.as_str() && pending > 0 {
            // Listed means still open: a connection leaves the list when
            // it is closed.
            assert_eq!(top[0]["shard"], 1);
            assert!(pending <= MAX_PENDING + 2048, "{pending}");
            break;
        }
        assert!(Instant::now() < deadline, "the slow subscriber never led");
    }

    // Keep going until the relay gives up on it.
    loop {
        publish_step(&mut publisher);
        if f.scrape().sum("tern_slow_consumers_total") > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never closed as a slow consumer");
    }
    // More traffic does not count it again.
    for _ in 0..8 {
        publish_step(&mut publisher);
    }
    publisher.publish("end", "x");
    let delivered = reader.join().unwrap();
    assert_eq!(
        delivered, sent,
        "the subscriber that kept up got everything"
    );

    let s = f.scrape();
    assert_eq!(s.sum("tern_slow_consumers_total"), 1);
    assert_eq!(s.shard("tern_slow_consumers_total", 1), 1);
    // The relay closes it (after a farewell notice, if the socket takes
    // it: the relay does not wait for a slow consumer to read).
    let frames = slow.read_until_closed();
    assert!(frames.len() < sent, "the slow subscriber was cut off");
    if let Some(last) = frames.last().filter(|f| f.starts_with(b"-ERR")) {
        assert_eq!(last.as_slice(), b"-ERR slow consumer");
    }
    // Once closed it is gone from the list.
    let deadline = Instant::now() + DEADLINE;
    while f
        .connections("")
        .iter()
        .any(|c| c["peer"] == slow_peer.as_str())
    {
        assert!(Instant::now() < deadline, "closed connection still listed");
        thread::yield_now();
    }
    assert_eq!(f.scrape().sum("tern_slow_consumers_total"), 1);
    f.relay.shutdown();
}

#[test]
fn varz_and_connz_describe_nats_and_line_clients_and_follow_the_traffic() {
    let f = Fixture::start();
    let (mut nats, info) = nats_client(f.relay.shard_nats_addrs()[0]);
    let mut line = f.relay.on(1);
    line.ping();
    let nats_port = nats.stream().local_addr().unwrap().port();
    let line_port = line.stream().local_addr().unwrap().port();

    // Who the server is, as /varz says and as NATS clients are told.
    let varz = f.nats_page("/varz");
    assert_eq!(varz["server_id"], info["server_id"]);
    assert_eq!(varz["server_name"], info["server_name"]);
    assert_eq!(varz["version"], tern::protocol::nats::SERVER_VERSION);
    assert_eq!(varz["version"], info["version"]);
    assert_eq!(varz["proto"], 1);
    assert_eq!(varz["max_payload"], info["max_payload"]);
    let nats_addr = f.relay.nats_addrs()[0];
    assert_eq!(varz["host"], nats_addr.ip().to_string());
    assert_eq!(varz["port"], nats_addr.port());
    assert_eq!(varz["http_port"], f.metrics.local_addr().port());
    assert_eq!(varz["cores"], f.relay.cores().len());
    assert_eq!(varz["connections"], 2);
    assert_eq!(varz["total_connections"], 2);
    assert_eq!(varz["in_msgs"], 0);
    assert!(varz["mem"].as_u64().unwrap() > 1 << 20, "{varz}");
    assert!(varz["cpu"].as_f64().unwrap() >= 0.0, "{varz}");
    for time in ["start", "now"] {
        let t = varz[time].as_str().unwrap();
        assert!(t.starts_with("20") && t.ends_with('Z'), "{time}: {t}");
    }
    assert!(varz["uptime"].as_str().unwrap().ends_with('s'), "{varz}");

    // Both clients are listed, in connection order, each as it is.
    let page = f.nats_page("/connz");
    assert_eq!(page["server_id"], info["server_id"]);
    assert_eq!(
        (&page["total"], &page["num_connections"]),
        (&2.into(), &2.into())
    );
    assert_eq!((&page["offset"], &page["limit"]), (&0.into(), &1024.into()));
    let conns = page["connections"].as_array().unwrap();
    let (n, l) = (&conns[0], &conns[1]);
    assert!(n["cid"].as_u64() < l["cid"].as_u64(), "{page}");
    assert_eq!(n["cid"], info["client_id"]);
    assert_eq!(
        (&n["ip"], &n["port"]),
        (&"127.0.0.1".into(), &nats_port.into())
    );
    assert_eq!(
        (&n["name"], &n["lang"], &n["version"], &n["type"]),
        (&"x".into(), &"raw".into(), &"1".into(), &"nats".into())
    );
    assert_eq!(n["shard"], 0);
    assert_eq!(l["port"], line_port);
    assert_eq!(
        (&l["lang"], &l["type"]),
        (&"tern-line".into(), &"line".into())
    );
    assert!(l.get("name").is_none(), "{l}");
    assert_eq!(l["shard"], 1);

    // Traffic: the NATS client subscribes, the line client publishes to
    // it twice, the NATS client publishes once to nobody.
    nats.send("SUB greet 1");
    nats.expect("+OK");
    nats.send("PING");
    nats.expect("PONG");
    line.publish("greet", "hello");
    line.publish("greet", "world");
    for payload in ["hello", "world"] {
        nats.expect("MSG greet 1 5");
        nats.expect(payload);
    }
    nats.send("PUB nobody 2");
    nats.send("hi");
    nats.expect("+OK");
    nats.send("PING");
    nats.expect("PONG");
    line.ping();

    let varz = f.nats_page("/varz");
    for (field, value) in [
        ("in_msgs", 3),
        ("in_bytes", 12),
        ("out_msgs", 2),
        ("out_bytes", 10),
        ("subscriptions", 1),
        ("slow_consumers", 0),
    ] {
        assert_eq!(varz[field], value, "{field}: {varz}");
    }
    let by = |sort: &str| -> Vec<u64> {
        f.connz(&format!("?sort={sort}"))
            .iter()
            .map(|c| c["port"].as_u64().unwrap())
            .collect()
    };
    let (n, l) = (u64::from(nats_port), u64::from(line_port));
    assert_eq!(by("msgs_from"), [l, n]);
    assert_eq!(by("msgs_to"), [n, l]);
    assert_eq!(by("subs"), [n, l]);
    let listed = f.connz("?sort=cid");
    assert_eq!(
        (
            &listed[0]["in_msgs"],
            &listed[0]["out_msgs"],
            &listed[0]["subscriptions"]
        ),
        (&1.into(), &2.into(), &1.into())
    );
    assert_eq!(
        (
            &listed[1]["in_msgs"],
            &listed[1]["out_msgs"],
            &listed[1]["subscriptions"]
        ),
        (&2.into(), &0.into(), &0.into())
    );

    // Paging and picking one connection.
    let second = f.nats_page("/connz?offset=1&limit=1");
    assert_eq!(
        (&second["total"], &second["num_connections"]),
        (&2.into(), &1.into())
    );
    assert_eq!(second["connections"][0]["port"], line_port);
    let cid = &listed[1]["cid"];
    let one = f.connz(&format!("?cid={cid}"));
    assert_eq!((one.len(), &one[0]["cid"]), (1, cid));
    // What tern cannot honour is refused with the reason.
    let r = f.get("/connz?sort=bytes_to");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("bytes per connection"), "{}", r.body);
    assert_eq!(f.get("/connz?sort=nosuch").status, 400);

    // A closed connection leaves the list; the totals remember it.
    drop(line);
    let deadline = Instant::now() + DEADLINE;
    while f.nats_page("/connz")["total"] != 1 {
        assert!(Instant::now() < deadline, "closed connection still listed");
        thread::yield_now();
    }
    let varz = f.nats_page("/varz");
    assert_eq!(
        (&varz["connections"], &varz["total_connections"]),
        (&1.into(), &2.into())
    );
    nats.send("PING");
    nats.expect("PONG");
    f.metrics.stop();
    f.relay.shutdown();
}

#[test]
fn healthz_answers_and_garbage_gets_400_without_stopping_the_server() {
    let f = Fixture::start();
    let addr = f.metrics.local_addr();
    let ok = f.get("/healthz");
    assert_eq!((ok.status, ok.body.as_str()), (200, "ok\n"));

    let mut rng = Rng::new(6);
    for round in 0..50 {
        let len = rng.below(300);
        let mut garbage: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // Not a method token: control bytes are never valid there.
        garbage.insert(0, 0x01);
        garbage.extend_from_slice(b"\r\n\r\n");
        let r = http::raw(addr, &garbage);
        assert_eq!(r.status, 400, "round {round}: {}", r.body);
    }
    for (raw, status) in [
        (&b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n"[..], 400),
        (b"GET metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET /metrics HTTP/7.0\r\n\r\n", 400),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
            405,
        ),
        (b"GET /nope HTTP/1.1\r\n\r\n", 404),
        (b"GET /connections?sort=fastest HTTP/1.1\r\n\r\n", 400),
        (b"GET /connections?limit=lots HTTP/1.1\r\n\r\n", 400),
        (b"GET /connz?limit=lots HTTP/1.1\r\n\r\n", 400),
        (b"GET /connz?state=closed HTTP/1.1\r\n\r\n", 400),
    ] {
        let r = http::raw(addr, raw);
        assert_eq!(
            r.status,
            status,
            "{}: {}",
            String::from_utf8_lossy(raw),
            r.body
        );
    }
    // A head larger than the limit.
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    assert_eq!(http::raw(addr, huge.as_bytes()).status, 431);
    // HEAD: the headers of GET, no body.
    let head = http::raw(addr, b"HEAD /healthz HTTP/1.1\r\n\r\n");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("3"));
    assert!(head.body.is_empty());

    // Still serving.
    assert_eq!(f.get("/healthz").status, 200);
    f.scrape();
    f.relay.shutdown();
}

#[test]
fn the_endpoint_answers_after_the_relay_has_stopped() {
    // A scrape racing shutdown must not hang or panic: the counters are
    // still there, the shards just no longer answer for connections.
    let f = Fixture::start();
    let Fixture { relay, metrics } = f;
    let mut c = relay.on(0);
    c.ping();
    drop(c);
    relay.shutdown();
    let r = http::get(metrics.local_addr(), "/connections");
    assert_eq!((r.status, r.body.as_str()), (200, "[\n]\n"));
    let r = http::get(metrics.local_addr(), "/connz");
    assert_eq!(r.status, 200);
    let connz: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (&connz["total"], &connz["connections"]),
        (&0.into(), &serde_json::json!([]))
    );
    let r = http::get(metrics.local_addr(), "/varz");
    assert_eq!(r.status, 200);
    let varz: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (&varz["connections"], &varz["total_connections"]),
        (&0.into(), &1.into())
    );
    let s = http::get(metrics.local_addr(), "/metrics");
    assert_eq!(s.status, 200);
    assert_eq!(
        Scrape::parse(&s.body).sum("tern_connections_accepted_total"),
        1
    );
    metrics.stop();
}
