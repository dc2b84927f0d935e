//! tern as a leaf node of a NATS cluster (issue 13), end to end: real
//! `nats-server` processes clustered by routes on loopback, tern binaries
//! joined to them with `--leafnode-remote`, and clients of every kind on
//! both sides (line protocol and NATS on tern, plain NATS on the hubs).
//!
//! Needs `nats-server` on `PATH`: without it every test here prints why
//! it is skipped and passes, unless `CI` is set, where it fails
//! (`.ci/run` installs it). See `common/nats_cluster.rs` for the cluster
//! and the NATS client.
//!
//! Nothing waits on a clock for something to happen. Interest travels
//! from a subscriber through its tern, its hub, a route, the other hub
//! and the publisher's tern asynchronously, so before counting anything
//! the tests prove the path is open with *probes* ([`await_flow`]): the
//! publisher sends `probe` on the subject until every receiver has one
//! (receivers skip probes afterwards). Interest, once there, stays, and
//! one publisher's messages reach each receiver in order over the chain
//! of connections, so an end marker published last is a fence: once a
//! receiver has it, it has every earlier message of that publisher it
//! will ever get. Withdrawn interest is awaited on the hub's
//! `/leafz?subs=1`. Every wait is bounded by [`WAIT`]; every process is
//! killed by its PID when its guard drops, panics included (logs are
//! then printed).

mod common;
#[path = "common/nats_cluster.rs"]
mod nats_cluster;

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{http, show, Client, IO_TIMEOUT};
use nats_cluster::{
    nats_server_or_skip, scratch_dir, tail, wait_for, Cluster, NatsConn, NatsServer, WAIT,
};

/// Start of the payload of every probe ([`await_flow`]); readers skip
/// such messages. Each opening of a path uses its own probes
/// (`probe:<n>`), so a probe left over from an earlier one (or from
/// before a hub went away) cannot open it.
const PROBE: &str = "probe:";

/// A fresh probe payload.
fn probe_payload() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{PROBE}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn is_probe(payload: &str) -> bool {
    payload.starts_with(PROBE)
}

/// How long a reader waits for a probe before the next one is sent.
const PROBE_WAIT: Duration = Duration::from_millis(50);

/// Reconnect backoff cap the terns run with (the default is 5 s).
const RECONNECT_MAX: &str = "500ms";

// ---------------------------------------------------------------------
// tern as a leaf node
// ---------------------------------------------------------------------

/// A `tern` binary with two shards, pinned listeners per shard, metrics,
/// and leaf node remotes; killed by its PID on drop.
struct Leaf {
    name: String,
    child: Option<Child>,
    dir: PathBuf,
    /// Line protocol listener of each shard.
    line: Vec<SocketAddr>,
    /// NATS listener of each shard.
    nats: Vec<SocketAddr>,
    metrics: SocketAddr,
}

impl Leaf {
    /// A leaf of each URL in `remotes` (one `--leafnode-remote` each).
    fn start(name: &str, remotes: &[String]) -> Leaf {
        let mut args = vec!["--leafnode-reconnect-max".to_string(), RECONNECT_MAX.into()];
        for r in remotes {
            args.extend(["--leafnode-remote".to_string(), r.clone()]);
        }
        Leaf::spawn(name, args, None)
    }

    /// A leaf configured by the TOML text `config` (`--config`).
    fn start_with_config(name: &str, config: &str) -> Leaf {
        Leaf::spawn(name, Vec::new(), Some(config))
    }

    fn spawn(name: &str, extra: Vec<String>, config: Option<&str>) -> Leaf {
        let dir = scratch_dir(name);
        let log_path = dir.join("tern.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
        cmd.args(["--shards", "2"])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--nats-listen", "127.0.0.1:0"])
            .args(["--shard-listen", "127.0.0.1:0"])
            .args(["--metrics", "127.0.0.1:0"])
            .args(&extra);
        if let Some(text) = config {
            let path = dir.join("tern.toml");
            fs::write(&path, text).expect("write tern.toml");
            cmd.arg("--config").arg(path);
        }
        let log = fs::File::create(&log_path).expect("log file");
        let child = cmd
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn tern");
        let mut leaf = Leaf {
            name: name.to_string(),
            child: Some(child),
            dir,
            line: Vec::new(),
            nats: Vec::new(),
            metrics: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let started = wait_for(&format!("{name} started"), || {
            if let Some(status) = leaf.child.as_mut().unwrap().try_wait().expect("wait") {
                panic!(
                    "{name} exited ({status}) before it started:\n{}",
                    tail(&log_path, 30)
                );
            }
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            log.lines()
                .find(|l| l.contains(" started: "))
                .map(str::to_string)
                .ok_or_else(|| "no start-up line yet".to_string())
        });
        (leaf.line, leaf.nats, leaf.metrics) = parse_started(&started);
        leaf
    }

    /// A line-protocol client of shard `shard`.
    fn line(&self, shard: usize) -> Client {
        Client::connect(self.line[shard], b"\n")
    }

    /// A NATS client of shard `shard`.
    fn nats(&self, shard: usize) -> NatsConn {
        NatsConn::connect(self.nats[shard])
    }

    fn page(&self, path: &str) -> String {
        let r = http::get(self.metrics, path);
        assert_eq!(r.status, 200, "{}{path}: {}", self.name, r.body);
        r.body
    }

    /// Every sample of the `/metrics` family `name`: (labels, value).
    fn series(&self, name: &str) -> Vec<(String, f64)> {
        samples(&self.page("/metrics"), name)
    }

    /// The family `name` summed over its labels; `Err` if it is missing.
    fn try_metric(&self, name: &str) -> Result<f64, String> {
        let s = self.series(name);
        if s.is_empty() {
            return Err(format!("{}: no {name} on /metrics", self.name));
        }
        Ok(s.iter().map(|(_, v)| v).sum())
    }

    fn metric(&self, name: &str) -> f64 {
        self.try_metric(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits until `name` (summed) satisfies `ok`.
    fn await_metric(&self, name: &str, what: &str, ok: impl Fn(f64) -> bool) -> f64 {
        wait_for(&format!("{}: {name} {what}", self.name), || {
            let v = self.try_metric(name)?;
            if ok(v) {
                Ok(v)
            } else {
                Err(format!("{name} = {v}"))
            }
        })
    }

    /// Waits until all `n` links are up (`tern_leafnode_connected`).
    fn await_connected(&self, n: usize) {
        self.await_metric("tern_leafnode_connected", &format!("= {n}"), |v| {
            v == n as f64
        });
    }

    fn varz(&self) -> serde_json::Value {
        serde_json::from_str(&self.page("/varz")).expect("/varz is JSON")
    }

    fn log_tail(&self) -> String {
        tail(&self.dir.join("tern.log"), 40)
    }
}

impl Drop for Leaf {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "---- {} log (last lines) ----\n{}",
                self.name,
                self.log_tail()
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Per-shard line and NATS listeners and the metrics address, from the
/// start-up line: `listening on A, B (shard 0 only), C (shard 1 only);
/// NATS on D, E (NATS, shard 0 only), F (NATS, shard 1 only); metrics
/// http://G/metrics`.
fn parse_started(line: &str) -> (Vec<SocketAddr>, Vec<SocketAddr>, SocketAddr) {
    let per_shard = |prefix: &str| -> Vec<SocketAddr> {
        let part = line
            .split("; ")
            .find_map(|p| p.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {line:?}"));
        // Each address, then `(shard N only)` or `(NATS, shard N only)`
        // for a shard's own.
        let words: Vec<&str> = part.split(' ').collect();
        let mut last = None;
        let mut addrs: Vec<(usize, SocketAddr)> = Vec::new();
        for (i, w) in words.iter().enumerate() {
            if let Ok(a) = w.trim_end_matches(',').parse::<SocketAddr>() {
                last = Some(a);
            } else if w.trim_start_matches('(') == "shard" {
                let n = words.get(i + 1).and_then(|n| n.parse::<usize>().ok());
                if let (Some(a), Some(n)) = (last, n) {
                    addrs.push((n, a));
                }
            }
        }
        addrs.sort();
        assert_eq!(addrs.len(), 2, "two per-shard listeners in {line:?}");
        addrs.into_iter().map(|(_, a)| a).collect()
    };
    let metrics = line
        .split("metrics http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {line:?}"));
    (per_shard("listening on "), per_shard("NATS on "), metrics)
}

/// The samples of family `name` on a Prometheus text page.
fn samples(page: &str, name: &str) -> Vec<(String, f64)> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            Some((labels.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// A cluster of two hubs and a tern leaf of each (A of hub 1, B of hub
/// 2), every link up.
struct Setup {
    cluster: Cluster,
    a: Leaf,
    b: Leaf,
}

impl Setup {
    fn start(bin: &std::path::Path) -> Setup {
        let cluster = Cluster::start(bin, 2);
        let a = Leaf::start("ternA", &[cluster.hubs[0].leaf_url()]);
        let b = Leaf::start("ternB", &[cluster.hubs[1].leaf_url()]);
        a.await_connected(1);
        b.await_connected(1);
        cluster.hubs[0].await_leafs(1);
        cluster.hubs[1].await_leafs(1);
        Setup { cluster, a, b }
    }

    fn hub(&self, i: usize) -> &NatsServer {
        &self.cluster.hubs[i]
    }

    /// A plain NATS client of hub `i` (0 or 1).
    fn hub_client(&self, i: usize) -> NatsConn {
        NatsConn::connect(self.cluster.hubs[i].client_addr())
    }
}

// ---------------------------------------------------------------------
// Senders and receivers of either protocol
// ---------------------------------------------------------------------

/// A message as the tests compare them: subject and payload as text.
type Got = (String, String);

trait Sender {
    fn send_msg(&mut self, subject: &str, payload: &str);
}

trait Receiver {
    fn label(&self) -> String;
    /// The next message within `timeout`, `None` if there is none.
    fn recv(&mut self, timeout: Duration) -> Option<Got>;
}

impl Sender for Client {
    fn send_msg(&mut self, subject: &str, payload: &str) {
        self.publish(subject, payload);
    }
}

impl Receiver for Client {
    fn label(&self) -> String {
        format!("line client {}", self.stream().local_addr().unwrap())
    }

    fn recv(&mut self, timeout: Duration) -> Option<Got> {
        self.stream().set_read_timeout(Some(timeout)).unwrap();
        let r = self.try_read_frame();
        self.stream().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        match r {
            Ok(Some(frame)) => {
                let text = String::from_utf8(frame.clone())
                    .unwrap_or_else(|_| panic!("non-UTF-8 frame {}", show(&frame)));
                let rest = text
                    .strip_prefix("MSG ")
                    .unwrap_or_else(|| panic!("{}: expected MSG, got {text:?}", self.label()));
                let (subject, payload) = rest.split_once(' ').expect("MSG subject payload");
                Some((subject.to_string(), payload.to_string()))
            }
            Ok(None) => panic!("{}: closed by tern", self.label()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("{}: {e}", self.label()),
        }
    }
}

impl Sender for NatsConn {
    fn send_msg(&mut self, subject: &str, payload: &str) {
        self.publish(subject, payload.as_bytes());
    }
}

impl Receiver for NatsConn {
    fn label(&self) -> String {
        format!("NATS client of {}", self.addr())
    }

    fn recv(&mut self, timeout: Duration) -> Option<Got> {
        self.try_next_msg(timeout).map(|m| {
            (
                m.subject,
                String::from_utf8(m.payload).expect("UTF-8 payload"),
            )
        })
    }
}

/// Opens the path from `publisher` to every receiver for `subject`:
/// publishes probes on it until each receiver has read one of them (each
/// is subscribed to `subject` already). A receiver that reads anything
/// but a probe fails the test. Returns how many probes were published.
fn await_flow(
    what: &str,
    publisher: &mut dyn Sender,
    subject: &str,
    receivers: &mut [&mut dyn Receiver],
) -> usize {
    let deadline = Instant::now() + WAIT;
    let mut ready = vec![false; receivers.len()];
    let mut probes = 0;
    let probe = probe_payload();
    while ready.contains(&false) {
        if Instant::now() >= deadline {
            let missing: Vec<String> = receivers
                .iter()
                .zip(&ready)
                .filter(|(_, ok)| !**ok)
                .map(|(r, _)| r.label())
                .collect();
            panic!(
                "{what}: {probes} probes on {subject}, none reached {missing:?} within {WAIT:?}"
            );
        }
        publisher.send_msg(subject, &probe);
        probes += 1;
        for (r, ok) in receivers.iter_mut().zip(ready.iter_mut()) {
            if *ok {
                continue;
            }
            while let Some((s, p)) = r.recv(PROBE_WAIT) {
                assert!(
                    Instant::now() < deadline,
                    "{what}: {} still reading probes after {WAIT:?} (a loop?)",
                    r.label()
                );
                assert!(
                    s == subject && is_probe(&p),
                    "{what}: {} got {s} {p:?} while the path opened",
                    r.label()
                );
                if p == probe {
                    *ok = true;
                }
            }
        }
    }
    probes
}

/// Reads `r` until it has every end marker `ends` on `fence`; returns the
/// other messages, probes left out, in the order read. Fails if a read
/// waits longer than [`IO_TIMEOUT`], or all of it longer than [`WAIT`]
/// (messages that keep coming: a loop).
fn read_until(r: &mut dyn Receiver, fence: &str, ends: &[&str]) -> Vec<Got> {
    let deadline = Instant::now() + WAIT;
    let mut left: Vec<&str> = ends.to_vec();
    let mut got = Vec::new();
    while !left.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{}: {} messages and still no {left:?} on {fence} after {WAIT:?} (a loop?); last: {:?}",
            r.label(),
            got.len(),
            got.last()
        );
        let Some((s, p)) = r.recv(IO_TIMEOUT) else {
            panic!(
                "{}: still waiting for {left:?} on {fence} after {} messages (last: {:?})",
                r.label(),
                got.len(),
                got.last()
            )
        };
        if is_probe(&p) {
            continue;
        }
        if s == fence {
            if let Some(i) = left.iter().position(|e| *e == p) {
                left.remove(i);
                continue;
            }
        }
        got.push((s, p));
    }
    got
}

/// The payloads of `got`.
fn payloads(got: &[Got]) -> Vec<String> {
    got.iter().map(|(_, p)| p.clone()).collect()
}

/// `prefix-0`, ..., `prefix-(n-1)`.
fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn publish_all(p: &mut dyn Sender, subject: &str, items: &[String]) {
    for item in items {
        p.send_msg(subject, item);
    }
}

// ---------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------

/// The backbone alone, without tern (so that a failure here is the
/// harness's, not tern's): the two hubs route a message published on hub
/// 2 to a subscriber on hub 1, also after hub 1 was killed and started
/// again on the same ports.
#[test]
fn the_backbone_routes_between_its_hubs_and_survives_a_restart() {
    let Some(bin) = nats_server_or_skip("leaf::the_backbone_routes_between_its_hubs") else {
        return;
    };
    let mut cluster = Cluster::start(&bin, 2);
    for round in 0..2 {
        if round == 1 {
            cluster.hubs[0].kill();
            cluster.hubs[0].start();
            cluster.await_routes();
        }
        let mut sub = NatsConn::connect(cluster.hubs[0].client_addr());
        sub.sub("backbone.x");
        sub.ping();
        let mut publisher = NatsConn::connect(cluster.hubs[1].client_addr());
        await_flow(
            "hub 2 to hub 1",
            &mut publisher,
            "backbone.x",
            &mut [&mut sub],
        );
        let items = numbered("b", 50);
        publish_all(&mut publisher, "backbone.x", &items);
        publisher.send_msg("backbone.x", "end");
        assert_eq!(
            payloads(&read_until(&mut sub, "backbone.x", &["end"])),
            items,
            "round {round}"
        );
    }
}

/// A line publisher on tern A reaches, in order and exactly once, a NATS
/// subscriber and a line subscriber on tern B and plain NATS clients of
/// both hubs; and back: a NATS publisher on tern B reaches a line
/// subscriber on tern A. The counters and `/varz` say so.
#[test]
fn messages_cross_the_cluster_in_order_to_every_kind_of_subscriber() {
    let Some(bin) = nats_server_or_skip("leaf::messages_cross_the_cluster_in_order") else {
        return;
    };
    let s = Setup::start(&bin);
    const N: usize = 200;

    let mut publisher = s.a.line(1);
    let mut nats_b = s.b.nats(0);
    nats_b.sub("orders.t1");
    nats_b.ping();
    let mut line_b = s.b.line(1);
    line_b.sub("orders.t1");
    let mut hub1 = s.hub_client(0);
    hub1.sub("orders.t1");
    hub1.ping();
    let mut hub2 = s.hub_client(1);
    hub2.sub("orders.t1");
    hub2.ping();
    await_flow(
        "tern A to tern B and the hubs",
        &mut publisher,
        "orders.t1",
        &mut [&mut nats_b, &mut line_b, &mut hub1, &mut hub2],
    );
    let sent_before = s.a.metric("tern_leafnode_messages_sent_total");
    let received_before = s.b.metric("tern_leafnode_messages_received_total");
    let items = numbered("m", N);
    publish_all(&mut publisher, "orders.t1", &items);
    publisher.send_msg("orders.t1", "end");
    let receivers: [&mut dyn Receiver; 4] = [&mut nats_b, &mut line_b, &mut hub1, &mut hub2];
    for r in receivers {
        let label = r.label();
        let got = read_until(r, "orders.t1", &["end"]);
        assert_eq!(
            payloads(&got),
            items,
            "{label}: all of them, once, in order"
        );
    }
    // Each message crossed tern A's link once and tern B's link once.
    s.a.await_metric("tern_leafnode_messages_sent_total", "grew by N+1", |v| {
        v >= sent_before + (N + 1) as f64
    });
    s.b.await_metric(
        "tern_leafnode_messages_received_total",
        "grew by N+1",
        |v| v >= received_before + (N + 1) as f64,
    );

    // The other way: NATS on tern B to a line subscriber on tern A (on the
    // shard that does not hold the publisher of the first half).
    let mut nats_pub_b = s.b.nats(1);
    let mut line_a = s.a.line(0);
    line_a.sub("orders.t2");
    await_flow(
        "tern B to tern A",
        &mut nats_pub_b,
        "orders.t2",
        &mut [&mut line_a],
    );
    let back = numbered("r", N);
    publish_all(&mut nats_pub_b, "orders.t2", &back);
    nats_pub_b.send_msg("orders.t2", "end");
    assert_eq!(
        payloads(&read_until(&mut line_a, "orders.t2", &["end"])),
        back
    );

    // /varz: one link, up, connected once; the remote's URL as given.
    for (leaf, hub) in [(&s.a, s.hub(0)), (&s.b, s.hub(1))] {
        let varz = leaf.varz();
        assert_eq!(varz["leafnodes"], 1, "{}: {varz}", leaf.name);
        let remotes = varz["leaf"]["remotes"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no leaf.remotes in {varz}", leaf.name));
        assert_eq!(remotes.len(), 1, "{varz}");
        assert_eq!(remotes[0]["url"], hub.leaf_url().as_str(), "{varz}");
        assert_eq!(remotes[0]["connected"], true, "{varz}");
        assert_eq!(remotes[0]["connects"], 1, "{varz}");
        assert_eq!(remotes[0]["disconnects"], 0, "{varz}");
        assert_eq!(
            leaf.metric("tern_leafnode_connects_total"),
            1.0,
            "{}",
            leaf.name
        );
        assert_eq!(
            leaf.metric("tern_leafnode_disconnects_total"),
            0.0,
            "{}",
            leaf.name
        );
    }
}

/// A NATS request on tern B is answered by a responder on tern A
/// (async-nats on both ends: its request inbox, `_INBOX.>`, must travel
/// to tern A for the reply to come back).
#[test]
fn a_request_on_one_leaf_is_answered_on_the_other() {
    let Some(bin) = nats_server_or_skip("leaf::a_request_on_one_leaf_is_answered_on_the_other")
    else {
        return;
    };
    let s = Setup::start(&bin);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (responder_addr, requester_addr) = (s.a.nats[0], s.b.nats[1]);
    rt.block_on(async move {
        let connect = |addr: SocketAddr| async move {
            tokio::time::timeout(
                WAIT,
                async_nats::ConnectOptions::new()
                    .connection_timeout(WAIT)
                    .connect(format!("nats://{addr}")),
            )
            .await
            .expect("connect within WAIT")
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
        };
        let responder = connect(responder_addr).await;
        let mut requests = responder
            .subscribe("svc.echo")
            .await
            .expect("subscribe svc.echo");
        let answering = responder.clone();
        tokio::spawn(async move {
            use futures_lite::StreamExt;
            while let Some(m) = requests.next().await {
                let reply = m.reply.expect("a request has a reply subject");
                let answer = format!("re: {}", String::from_utf8_lossy(&m.payload));
                answering
                    .publish(reply, answer.into())
                    .await
                    .expect("reply");
            }
        });
        let requester = connect(requester_addr).await;
        // Until the responder's interest has reached tern B and the
        // requester's inbox has reached tern A, a request gets "no
        // responders" or no answer: retry until one is answered.
        let deadline = Instant::now() + WAIT;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let r = tokio::time::timeout(
                Duration::from_millis(500),
                requester.request("svc.echo", "warm-up".into()),
            )
            .await;
            match r {
                Ok(Ok(m)) => {
                    assert_eq!(&m.payload[..], b"re: warm-up");
                    break;
                }
                Ok(Err(e)) => {
                    assert!(
                        Instant::now() < deadline,
                        "no answer after {attempts} requests within {WAIT:?}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => assert!(
                    Instant::now() < deadline,
                    "no answer after {attempts} requests within {WAIT:?}"
                ),
            }
        }
        // The path is open both ways: every request is answered now.
        for i in 0..50 {
            let m =
                tokio::time::timeout(WAIT, requester.request("svc.echo", format!("{i}").into()))
                    .await
                    .unwrap_or_else(|_| panic!("request {i}: no answer within {WAIT:?}"))
                    .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(String::from_utf8_lossy(&m.payload), format!("re: {i}"));
        }
    });
}

/// A queue group with members on tern A, tern B and a client of hub 1
/// gets each message once, whoever publishes (a client of tern A, of
/// tern B, of hub 2); tern's own members come first; and once tern B's
/// member leaves, what tern B's clients publish goes through the hub to
/// the members elsewhere, still once each.
#[test]
fn a_queue_group_across_leafs_and_cluster_gets_each_message_once() {
    let Some(bin) = nats_server_or_skip("leaf::a_queue_group_across_leafs_and_cluster") else {
        return;
    };
    let s = Setup::start(&bin);
    const N: usize = 100;
    const WORK: &str = "jobs.work";
    const FENCE: &str = "jobs.fence";

    // Members, each also on the fence subject (a plain subscription).
    let mut m_a = s.a.nats(0);
    m_a.sub_queue(WORK, "workers");
    m_a.sub(FENCE);
    m_a.ping();
    let mut m_b = s.b.line(1);
    m_b.sub_group(WORK, "workers");
    m_b.sub(FENCE);
    let mut m_h = s.hub_client(0);
    m_h.sub_queue(WORK, "workers");
    m_h.sub(FENCE);
    m_h.ping();
    // Publishers.
    let mut p_a = s.a.line(1);
    let mut p_b = s.b.nats(0);
    let mut p_h = s.hub_client(1);
    for (name, p) in [
        ("tern A", &mut p_a as &mut dyn Sender),
        ("tern B", &mut p_b),
        ("hub 2", &mut p_h),
    ] {
        await_flow(
            &format!("fence from {name}"),
            p,
            FENCE,
            &mut [&mut m_a, &mut m_b, &mut m_h],
        );
    }
    // The hubs see the group of each tern.
    s.hub(0).await_leaf_interest(WORK, true);
    s.hub(1).await_leaf_interest(WORK, true);

    let (from_a, from_b, from_h) = (numbered("A", N), numbered("B", N), numbered("H", N));
    publish_all(&mut p_a, WORK, &from_a);
    publish_all(&mut p_b, WORK, &from_b);
    publish_all(&mut p_h, WORK, &from_h);
    p_a.send_msg(FENCE, "end-A");
    p_b.send_msg(FENCE, "end-B");
    p_h.send_msg(FENCE, "end-H");
    let ends = ["end-A", "end-B", "end-H"];
    let got_a = payloads(&read_until(&mut m_a, FENCE, &ends));
    let got_b = payloads(&read_until(&mut m_b, FENCE, &ends));
    let got_h = payloads(&read_until(&mut m_h, FENCE, &ends));
    let mut all: Vec<String> = [&got_a, &got_b, &got_h]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    all.sort();
    let mut want: Vec<String> = [&from_a, &from_b, &from_h]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    want.sort();
    assert_eq!(
        all.len(),
        3 * N,
        "each message once: tern A's member {}, tern B's {}, hub 1's {}",
        got_a.len(),
        got_b.len(),
        got_h.len()
    );
    assert_eq!(all, want, "each message once, none lost or doubled");
    // Local members first: a tern that has a member keeps its clients'
    // messages.
    let only = |got: &[String], prefix: &str| -> Vec<String> {
        got.iter()
            .filter(|p| p.starts_with(prefix))
            .cloned()
            .collect()
    };
    assert_eq!(
        only(&got_a, "A-"),
        from_a,
        "tern A's member has all of tern A's"
    );
    assert_eq!(
        only(&got_b, "B-"),
        from_b,
        "tern B's member has all of tern B's"
    );

    // tern B's member leaves: its clients' messages now go to the hub,
    // which sees the group's other members.
    m_b.send(format!("UNSUB {WORK} workers"));
    m_b.ping();
    let deadline = Instant::now() + WAIT;
    let probe = probe_payload();
    'open: loop {
        assert!(
            Instant::now() < deadline,
            "tern B's publishes reached no member elsewhere within {WAIT:?}"
        );
        p_b.send_msg(WORK, &probe);
        for m in [&mut m_a as &mut dyn Receiver, &mut m_h] {
            if let Some((subject, p)) = m.recv(PROBE_WAIT) {
                assert!(
                    subject == WORK && is_probe(&p),
                    "{}: {subject} {p:?}",
                    m.label()
                );
                if p == probe {
                    break 'open;
                }
            }
        }
    }
    let from_b2 = numbered("B2", N);
    publish_all(&mut p_b, WORK, &from_b2);
    p_b.send_msg(FENCE, "end-B2");
    let got_a = payloads(&read_until(&mut m_a, FENCE, &["end-B2"]));
    let got_b = payloads(&read_until(&mut m_b, FENCE, &["end-B2"]));
    let got_h = payloads(&read_until(&mut m_h, FENCE, &["end-B2"]));
    assert_eq!(
        got_b,
        Vec::<String>::new(),
        "tern B's member left the group"
    );
    let mut all: Vec<String> = got_a.iter().chain(&got_h).cloned().collect();
    all.sort();
    let mut want = from_b2.clone();
    want.sort();
    assert_eq!(
        all,
        want,
        "each once, at tern A's member ({}) or hub 1's ({})",
        got_a.len(),
        got_h.len()
    );
}

/// An unsubscribe on tern B withdraws its interest from the hub: the
/// subject's messages stop reaching tern B's link (its
/// `tern_leafnode_messages_received_total` does not grow with them),
/// while one of two local subscribers leaving changes nothing.
#[test]
fn an_unsubscribe_stops_the_traffic_to_the_leaf() {
    let Some(bin) = nats_server_or_skip("leaf::an_unsubscribe_stops_the_traffic_to_the_leaf")
    else {
        return;
    };
    let s = Setup::start(&bin);
    const FEED: &str = "feed.u";
    const FENCE: &str = "feed.fence";
    let received = "tern_leafnode_messages_received_total";

    let mut publisher = s.a.line(1);
    // Two subscribers of FEED on tern B, one on each shard; the NATS one
    // also holds the fence subject throughout.
    let mut sub_n = s.b.nats(0);
    let feed_sid = sub_n.sub(FEED);
    sub_n.sub(FENCE);
    sub_n.ping();
    let mut sub_l = s.b.line(1);
    sub_l.sub(FEED);
    await_flow("feed", &mut publisher, FEED, &mut [&mut sub_n, &mut sub_l]);
    await_flow("fence", &mut publisher, FENCE, &mut [&mut sub_n]);
    s.hub(1).await_leaf_interest(FEED, true);

    // Two fences: the counter read after the second counts everything up
    // to the first (whenever tern counts a message it has delivered).
    let mut round = 0;
    let mut settled = |publisher: &mut Client, sub_n: &mut NatsConn| -> f64 {
        for _ in 0..2 {
            round += 1;
            let tag = format!("f{round}");
            publisher.send_msg(FENCE, &tag);
            let before = read_until(sub_n, FENCE, &[tag.as_str()]);
            assert!(
                before.iter().all(|(s, _)| s == FEED),
                "only feed messages before a fence: {before:?}"
            );
        }
        s.b.metric(received)
    };

    // One of the two leaves: the other still gets everything, and the
    // counter grows with it.
    sub_n.unsub(feed_sid);
    sub_n.ping();
    let r0 = settled(&mut publisher, &mut sub_n);
    let items = numbered("e", 20);
    publish_all(&mut publisher, FEED, &items);
    publisher.send_msg(FEED, "end");
    assert_eq!(payloads(&read_until(&mut sub_l, FEED, &["end"])), items);
    let r1 = settled(&mut publisher, &mut sub_n);
    assert!(
        r1 - r0 >= 21.0,
        "{received} grew by {} for 21 messages",
        r1 - r0
    );

    // The last one leaves: the hub hears of it, and the subject's
    // messages no longer reach tern B's link.
    sub_l.unsub(FEED);
    s.hub(1).await_leaf_interest(FEED, false);
    let r2 = settled(&mut publisher, &mut sub_n);
    publish_all(&mut publisher, FEED, &numbered("x", 50));
    let r3 = settled(&mut publisher, &mut sub_n);
    // Between the two readings: the 50 messages if they came, and at most
    // three fences.
    assert!(
        r3 - r2 <= 3.0,
        "{received} grew by {} after the unsubscribe: the hub still sends {FEED}",
        r3 - r2
    );
    // Nobody on tern B got any of them.
    sub_l.expect_silence();

    // Subscribing again announces the interest again.
    sub_l.sub(FEED);
    await_flow("feed again", &mut publisher, FEED, &mut [&mut sub_l]);
    s.hub(1).await_leaf_interest(FEED, true);
}

/// The hub goes away (killed): tern A keeps serving its own clients,
/// publishes meant for the cluster are dropped (nothing queued for
/// later); the hub comes back on the same ports: the link returns by
/// itself, interest is announced again, and traffic crosses again.
#[test]
fn local_delivery_survives_the_hub_and_the_link_comes_back() {
    let Some(bin) = nats_server_or_skip("leaf::local_delivery_survives_the_hub") else {
        return;
    };
    let mut s = Setup::start(&bin);
    const N: usize = 100;

    let mut pub_a = s.a.line(1);
    let mut local_line = s.a.line(0);
    local_line.sub("hb.local");
    let mut local_nats = s.a.nats(1);
    local_nats.sub("hb.local");
    local_nats.ping();
    let mut back_a = s.a.line(0);
    back_a.sub("hb.back");
    let mut cross_b = s.b.nats(0);
    cross_b.sub("hb.cross");
    cross_b.ping();
    let mut pub_b = s.b.line(1);
    await_flow("A to B", &mut pub_a, "hb.cross", &mut [&mut cross_b]);
    await_flow("B to A", &mut pub_b, "hb.back", &mut [&mut back_a]);
    let connects = s.a.metric("tern_leafnode_connects_total");

    // Hub 1 dies.
    s.cluster.hubs[0].kill();
    s.a.await_connected(0);
    s.a.await_metric("tern_leafnode_disconnects_total", ">= 1", |v| v >= 1.0);
    let varz = s.a.varz();
    assert_eq!(varz["leafnodes"], 0, "{varz}");
    assert_eq!(varz["leaf"]["remotes"][0]["connected"], false, "{varz}");

    // Local delivery goes on, across tern A's shards.
    let items = numbered("l", N);
    publish_all(&mut pub_a, "hb.local", &items);
    pub_a.send_msg("hb.local", "end");
    assert_eq!(
        payloads(&read_until(&mut local_line, "hb.local", &["end"])),
        items
    );
    assert_eq!(
        payloads(&read_until(&mut local_nats, "hb.local", &["end"])),
        items
    );
    // Meant for the cluster while the link is down: dropped, never sent
    // later (await_flow below fails on anything but a probe).
    publish_all(&mut pub_a, "hb.cross", &numbered("lost", 20));

    // Hub 1 comes back on the same ports and rejoins the cluster.
    s.cluster.hubs[0].start();
    s.cluster.await_routes();
    s.a.await_connected(1);
    s.hub(0).await_leafs(1);
    let now = s.a.metric("tern_leafnode_connects_total");
    assert!(now > connects, "connects_total {connects} -> {now}");
    let varz = s.a.varz();
    assert_eq!(varz["leafnodes"], 1, "{varz}");
    let remote = &varz["leaf"]["remotes"][0];
    assert_eq!(remote["connected"], true, "{varz}");
    assert!(remote["connects"].as_u64() >= Some(2), "{varz}");
    assert!(remote["disconnects"].as_u64() >= Some(1), "{varz}");

    // Both directions again; tern A's old subscription on hb.back was
    // announced again without its client doing anything.
    await_flow("A to B again", &mut pub_a, "hb.cross", &mut [&mut cross_b]);
    await_flow("B to A again", &mut pub_b, "hb.back", &mut [&mut back_a]);
    let items = numbered("c", N);
    publish_all(&mut pub_a, "hb.cross", &items);
    pub_a.send_msg("hb.cross", "end");
    assert_eq!(
        payloads(&read_until(&mut cross_b, "hb.cross", &["end"])),
        items
    );
    publish_all(&mut pub_b, "hb.back", &items);
    pub_b.send_msg("hb.back", "end");
    assert_eq!(
        payloads(&read_until(&mut back_a, "hb.back", &["end"])),
        items
    );
}

/// Two terns leaf to the same hub, a subject subscribed on both and on
/// both hubs: each message reaches each subscriber exactly once, whether
/// a hub client or one of the terns publishes it; a tern never sends
/// back to the hub what came from it.
#[test]
fn two_leafs_on_one_hub_make_no_loop() {
    let Some(bin) = nats_server_or_skip("leaf::two_leafs_on_one_hub_make_no_loop") else {
        return;
    };
    let cluster = Cluster::start(&bin, 2);
    let a = Leaf::start("ternA", &[cluster.hubs[0].leaf_url()]);
    let c = Leaf::start("ternC", &[cluster.hubs[0].leaf_url()]);
    a.await_connected(1);
    c.await_connected(1);
    cluster.hubs[0].await_leafs(2);
    const N: usize = 100;
    const SUBJECT: &str = "loop.s";

    let mut sub_a = a.line(0);
    sub_a.sub(SUBJECT);
    let mut sub_c = c.nats(1);
    sub_c.sub(SUBJECT);
    sub_c.ping();
    let mut sub_h1 = NatsConn::connect(cluster.hubs[0].client_addr());
    sub_h1.sub(SUBJECT);
    sub_h1.ping();
    let mut sub_h2 = NatsConn::connect(cluster.hubs[1].client_addr());
    sub_h2.sub(SUBJECT);
    sub_h2.ping();
    let mut pub_h = NatsConn::connect(cluster.hubs[0].client_addr());
    let mut pub_a = a.line(1);
    let mut published_by_a = 0;

    await_flow(
        "from hub 1",
        &mut pub_h,
        SUBJECT,
        &mut [&mut sub_a, &mut sub_c, &mut sub_h1, &mut sub_h2],
    );
    published_by_a += await_flow(
        "from tern A",
        &mut pub_a,
        SUBJECT,
        &mut [&mut sub_a, &mut sub_c, &mut sub_h1, &mut sub_h2],
    );

    for (origin, publisher) in [
        ("h", &mut pub_h as &mut dyn Sender),
        ("a", &mut pub_a as &mut dyn Sender),
    ] {
        let items = numbered(origin, N);
        publish_all(publisher, SUBJECT, &items);
        let end = format!("end-{origin}");
        publisher.send_msg(SUBJECT, &end);
        if origin == "a" {
            published_by_a += N + 1;
        }
        let receivers: [&mut dyn Receiver; 4] = [&mut sub_a, &mut sub_c, &mut sub_h1, &mut sub_h2];
        for r in receivers {
            let label = r.label();
            let got = read_until(r, SUBJECT, &[end.as_str()]);
            assert_eq!(payloads(&got), items, "{label}: from {origin}, each once");
        }
    }
    // A last marker from the hub: the next thing everybody reads (no
    // copy of anything earlier went round and came back).
    pub_h.send_msg(SUBJECT, "last");
    let receivers: [&mut dyn Receiver; 4] = [&mut sub_a, &mut sub_c, &mut sub_h1, &mut sub_h2];
    for r in receivers {
        let label = r.label();
        let deadline = Instant::now() + WAIT;
        let next = loop {
            assert!(
                Instant::now() < deadline,
                "{label}: only probes for {WAIT:?}"
            );
            let m = r
                .recv(IO_TIMEOUT)
                .unwrap_or_else(|| panic!("{label}: no last marker"));
            if !is_probe(&m.1) {
                break m;
            }
        };
        assert_eq!(next, (SUBJECT.to_string(), "last".to_string()), "{label}");
    }
    // tern C has no publisher: it sent nothing to the hub. tern A sent at
    // most what its own client published.
    assert_eq!(c.metric("tern_leafnode_messages_sent_total"), 0.0);
    let sent_a = a.metric("tern_leafnode_messages_sent_total");
    assert!(
        sent_a >= (N + 1) as f64 && sent_a <= published_by_a as f64,
        "tern A sent {sent_a}, its client published {published_by_a}"
    );
}

/// Credentials for the hub, given in the URL (`user:password@`) or in the
/// config file's `[[leafnodes.remotes]]`: both terns log in, and the
/// password shows nowhere on `/metrics` or `/varz` (the remote's label is
/// its URL without credentials).
#[test]
fn credentials_in_the_url_or_the_config_file_and_not_in_the_metrics() {
    let Some(bin) = nats_server_or_skip("leaf::credentials_in_the_url_or_the_config_file") else {
        return;
    };
    let cluster = Cluster::start_with(
        &bin,
        1,
        "authorization { user: leafy, password: \"s3cret-pw\" }",
    );
    let hub = &cluster.hubs[0];
    let from_config = Leaf::start_with_config(
        "ternConfig",
        &format!(
            "leafnode_reconnect_max = \"{RECONNECT_MAX}\"\n\n\
             [[leafnodes.remotes]]\n\
             url = \"{}\"\n\
             user = \"leafy\"\n\
             password = \"s3cret-pw\"\n",
            hub.leaf_url()
        ),
    );
    let from_url = Leaf::start("ternUrl", &[hub.leaf_url_with("leafy:s3cret-pw")]);
    from_config.await_connected(1);
    from_url.await_connected(1);
    hub.await_leafs(2);
    for leaf in [&from_config, &from_url] {
        let page = leaf.page("/metrics");
        assert!(
            !page.contains("s3cret"),
            "{}: password on /metrics",
            leaf.name
        );
        let series = samples(&page, "tern_leafnode_connected");
        assert_eq!(
            series,
            vec![(format!("remote=\"{}\"", hub.leaf_url()), 1.0)],
            "{}",
            leaf.name
        );
        let varz = leaf.page("/varz");
        assert!(!varz.contains("s3cret"), "{}: password on /varz", leaf.name);
    }
    // And they are connected to each other through the hub.
    let mut sub = from_config.line(0);
    sub.sub("cred.x");
    let mut publisher = from_url.nats(1);
    await_flow("url to config", &mut publisher, "cred.x", &mut [&mut sub]);
}

// ---------------------------------------------------------------------
// TLS to the hub
// ---------------------------------------------------------------------

/// A CA of the test's own, in a scratch directory removed on drop:
/// `ca.pem`, and the hub's certificate for `localhost` and 127.0.0.1
/// (`cert.pem`, `key.pem`) signed by it.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = scratch_dir(name);
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("tern leaf test CA {name}"),
        );
        let ca_cert = ca.self_signed(&ca_key).expect("self-signed CA");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write ca.pem");
        let key = rcgen::KeyPair::generate().expect("server key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert.pem");
        fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key.pem");
        Pki { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The hub's `leafnodes { }` additions: TLS with this PKI's server
    /// certificate, and a user and password for the leafs.
    fn hub_leaf_block(&self) -> String {
        format!(
            "tls {{\n    cert_file: \"{}\"\n    key_file: \"{}\"\n  }}\n  \
             authorization {{ user: leafu, password: leafp }}",
            self.dir.join("cert.pem").display(),
            self.dir.join("key.pem").display()
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// tern's config file for one remote: `hub` over TLS, trusting `ca`,
/// logging in as `leafu`.
fn tls_remote_config(hub: &NatsServer, ca: &std::path::Path) -> String {
    format!(
        "leafnode_reconnect_max = \"{RECONNECT_MAX}\"\n\n\
         [[leafnodes.remotes]]\n\
         url = \"{}\"\n\
         user = \"leafu\"\n\
         password = \"leafp\"\n\
         tls_ca = \"{}\"\n\
         tls_server_name = \"localhost\"\n",
        hub.leaf_url(),
        ca.display()
    )
}

/// The next message on `conn` that is not a probe.
fn next_non_probe(conn: &mut NatsConn) -> nats_cluster::NatsMsg {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "{}: only probes for {WAIT:?}",
            conn.addr()
        );
        let m = conn.next_msg();
        if !is_probe(&String::from_utf8_lossy(&m.payload)) {
            return m;
        }
    }
}

/// A hub whose leaf node port requires TLS and a user and password:
/// tern, given the hub's CA, the server name on its certificate and the
/// credentials in `[[leafnodes.remotes]]`, brings the link up, and
/// messages with NATS headers cross it both ways with their headers and
/// payloads intact (`HPUB` on tern to `HMSG` on the hub, and back).
#[test]
fn a_link_to_a_tls_hub_with_credentials_carries_messages_and_headers_both_ways() {
    let Some(bin) = nats_server_or_skip("leaf::a_link_to_a_tls_hub_with_credentials") else {
        return;
    };
    let pki = Pki::new("pki-tls");
    let cluster = Cluster::start_with(&bin, 1, &pki.hub_leaf_block());
    let hub = &cluster.hubs[0];
    let leaf = Leaf::start_with_config("ternTls", &tls_remote_config(hub, &pki.ca()));
    leaf.await_connected(1);
    hub.await_leafs(1);
    assert_eq!(
        leaf.series("tern_leafnode_connected"),
        vec![(format!("remote=\"{}\"", hub.leaf_url()), 1.0)]
    );
    assert_eq!(leaf.metric("tern_leafnode_connects_total"), 1.0);

    // tern to the hub.
    const UP: &str = "tls.up";
    let mut hub_sub = NatsConn::connect(hub.client_addr());
    hub_sub.sub(UP);
    hub_sub.ping();
    let mut tern_pub = leaf.nats(1);
    await_flow("tern to the hub", &mut tern_pub, UP, &mut [&mut hub_sub]);
    let headers = b"NATS/1.0\r\nX-Trace: t-1\r\nX-Multi: a b c\r\n\r\n";
    tern_pub.publish_with_headers(UP, headers, b"up with headers");
    tern_pub.publish(UP, b"up plain");
    let m = next_non_probe(&mut hub_sub);
    assert_eq!(m.subject, UP);
    assert_eq!(
        m.headers.as_deref().map(String::from_utf8_lossy),
        Some(String::from_utf8_lossy(headers)),
        "the hub's subscriber got tern's headers"
    );
    assert_eq!(m.payload, b"up with headers");
    let m = next_non_probe(&mut hub_sub);
    assert_eq!(
        (m.headers, m.payload),
        (None, b"up plain".to_vec()),
        "a message without headers stays one"
    );

    // The hub to tern, to a subscriber on the other shard.
    const DOWN: &str = "tls.down";
    let mut tern_sub = leaf.nats(0);
    tern_sub.sub(DOWN);
    tern_sub.ping();
    hub.await_leaf_interest(DOWN, true);
    let mut hub_pub = NatsConn::connect(hub.client_addr());
    await_flow("the hub to tern", &mut hub_pub, DOWN, &mut [&mut tern_sub]);
    let headers = b"NATS/1.0\r\nX-Back: 42\r\n\r\n";
    hub_pub.publish_with_headers(DOWN, headers, b"down with headers");
    hub_pub.publish(DOWN, b"down plain");
    let m = next_non_probe(&mut tern_sub);
    assert_eq!(m.subject, DOWN);
    assert_eq!(
        m.headers.as_deref().map(String::from_utf8_lossy),
        Some(String::from_utf8_lossy(headers)),
        "tern's subscriber got the hub's headers"
    );
    assert_eq!(m.payload, b"down with headers");
    let m = next_non_probe(&mut tern_sub);
    assert_eq!((m.headers, m.payload), (None, b"down plain".to_vec()));

    // Still the one link it started with.
    assert_eq!(leaf.metric("tern_leafnode_connects_total"), 1.0);
    assert_eq!(leaf.metric("tern_leafnode_disconnects_total"), 0.0);
}

/// tern trusts a CA that did not issue the hub's certificate: the TLS
/// handshake fails and says so in tern's log, the link never comes up
/// (`tern_leafnode_connected` 0, `tern_leafnode_connects_total` 0, no
/// leaf on the hub), and tern goes on serving its own clients.
#[test]
fn a_hub_whose_certificate_the_ca_does_not_vouch_for_is_refused() {
    let Some(bin) = nats_server_or_skip("leaf::a_hub_whose_certificate_the_ca_does_not_vouch_for")
    else {
        return;
    };
    let pki = Pki::new("pki-hub");
    let other = Pki::new("pki-other");
    let cluster = Cluster::start_with(&bin, 1, &pki.hub_leaf_block());
    let hub = &cluster.hubs[0];
    let leaf = Leaf::start_with_config("ternWrongCa", &tls_remote_config(hub, &other.ca()));

    // The fence: tern has tried and logged why it failed.
    let log_path = leaf.dir.join("tern.log");
    let failure = wait_for("tern logs the failed TLS handshake", || {
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        log.lines()
            .find(|l| l.contains("cannot reach the hub:"))
            .map(str::to_string)
            .ok_or_else(|| "no failure line yet".to_string())
    });
    assert!(
        failure.contains("TLS") && failure.contains("certificate"),
        "the failure names TLS and the certificate: {failure}"
    );
    assert!(
        !failure.contains("leafp"),
        "the password is not in the log: {failure}"
    );
    let down = |when: &str| {
        assert_eq!(
            leaf.series("tern_leafnode_connected"),
            vec![(format!("remote=\"{}\"", hub.leaf_url()), 0.0)],
            "{when}"
        );
        assert_eq!(leaf.metric("tern_leafnode_connects_total"), 0.0, "{when}");
        let varz = leaf.varz();
        assert_eq!(varz["leafnodes"], 0, "{when}: {varz}");
        assert_eq!(
            varz["leaf"]["remotes"][0]["connected"], false,
            "{when}: {varz}"
        );
        assert_eq!(
            hub.leaf_subs().expect("the hub's /leafz").len(),
            0,
            "{when}: a leaf on the hub"
        );
    };
    down("after the first failure");

    // Local pub/sub across tern's shards, both protocols.
    let mut line_sub = leaf.line(0);
    line_sub.sub("local.x");
    let mut nats_sub = leaf.nats(1);
    nats_sub.sub("local.x");
    nats_sub.ping();
    let mut publisher = leaf.nats(0);
    await_flow(
        "local",
        &mut publisher,
        "local.x",
        &mut [&mut line_sub, &mut nats_sub],
    );
    let items = numbered("l", 50);
    publish_all(&mut publisher, "local.x", &items);
    publisher.send_msg("local.x", "end");
    assert_eq!(
        payloads(&read_until(&mut line_sub, "local.x", &["end"])),
        items
    );
    assert_eq!(
        payloads(&read_until(&mut nats_sub, "local.x", &["end"])),
        items
    );
    // Nothing was sent to a hub it never reached.
    assert_eq!(leaf.metric("tern_leafnode_messages_sent_total"), 0.0);

    // tern keeps retrying, each time a fresh handshake the hub sees fail
    // (tern logs the same reason only once): after a few more, still
    // nothing is up.
    wait_for("the hub sees three failed TLS handshakes", || {
        let n = hub.log().matches("TLS leafnode handshake error").count();
        if n >= 3 {
            Ok(())
        } else {
            Err(format!("{n} on the hub's log"))
        }
    });
    down("after three attempts");
    let log = fs::read_to_string(&log_path).unwrap_or_default();
    assert_eq!(
        log.matches("cannot reach the hub:").count(),
        1,
        "the same reason is logged once:\n{log}"
    );
    assert!(!log.contains("leaf link up"), "{log}");
}
