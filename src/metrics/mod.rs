//! The metrics endpoint (`--metrics ADDR`): Prometheus counters, a health
//! check, the list of open connections, and nats-server's monitoring pages
//! `/varz` and `/connz`, over plain HTTP/1.1.
//!
//! ```no_run
//! use tern::{config::Config, metrics, relay::Relay};
//! let relay = Relay::start(Config::local(2)).unwrap();
//! let server = metrics::serve("127.0.0.1:9100".parse().unwrap(), relay.monitor(), relay.cores()).unwrap();
//! println!("scrape http://{}/metrics", server.local_addr());
//! server.stop();
//! relay.shutdown();
//! ```
//!
//! This module is the endpoint's public face and its routing: which path
//! is answered by what. The jobs under it, one a file:
//!
//! * `http` — the server: two threads (accept, and one worker serving
//!   every connection without blocking on any), and the bounds that keep a
//!   slow or hostile client from holding it;
//! * `request` — a request head, read into a bounded buffer and parsed
//!   with `httparse`;
//! * `response` — a response and its bytes on the wire;
//! * `prometheus` — the `/metrics` page in the text exposition format
//!   0.0.4;
//! * `process` — what the process uses (memory, CPU time, descriptors,
//!   start time), for `/varz` and the `process_*` series;
//! * `connections` — the `/connections` query string, sorting and JSON;
//! * `varz` — nats-server's `/varz` page: the server, its limits, its
//!   memory and CPU, and the counters summed over shards;
//! * `connz` — nats-server's `/connz` page: its query string, sort orders
//!   and JSON;
//! * `clock` — times and durations as nats-server's pages write them.
//!
//! # Off the shards
//!
//! The endpoint runs on two plain threads of its own, never on a shard. A
//! shard never waits for it and never takes a lock for it:
//!
//! * `/metrics` reads the shards' single-writer atomic counters
//!   ([`Monitor::shard_stats`]), which costs the shards nothing;
//! * `/connections` and `/connz` ask each shard over its control channel
//!   ([`Monitor::connections`]); the shard answers between two batches of
//!   work, and a shard that is too busy to answer in time is left out;
//! * `/varz` reads the counters as `/metrics` does, and both read this
//!   process's memory, CPU time and descriptors from the kernel.
//!
//! When the process may use CPUs that no shard is pinned to, these threads
//! are pinned to those, so that a scrape does not preempt a shard.
//!
//! # HTTP
//!
//! `GET` (and `HEAD`) only, one request per connection, answered with
//! `Connection: close`: Prometheus and curl reconnect for each scrape, and
//! a server that never keeps a connection idle needs no idle-connection
//! management. Everything a client can make the server hold is bounded
//! (see [`Options`]): the request head must fit in a fixed-size buffer and
//! arrive within a deadline, the response must be taken within another,
//! and at most [`Options::max_clients`] connections are served at once
//! (more get `503` at once). Malformed requests get `400`, oversized heads
//! `431`, late ones `408`.
//!
//! # Endpoints
//!
//! * `/metrics` — every counter of [`crate::stats`] per shard, in the
//!   Prometheus text format 0.0.4 (see [`encode_metrics`];
//!   `docs/deploy.md` says what each one means).
//! * `/healthz` — `200 ok` while the relay serves; `503` with the reason
//!   as the body when it does not.
//! * `/connections` — JSON, one object per open connection;
//!   `?sort=pending|msgs_in|msgs_out|age|subscriptions` (largest or oldest
//!   first; default `pending`) and `&limit=N`.
//! * `/varz` and `/connz` — nats-server 2.10's monitoring pages, with its
//!   field names and query parameters, for what tern has, so that NATS
//!   tooling that reads them works against tern (the `varz` and `connz`
//!   modules list what is served and what is left out).

pub(crate) mod clock;
mod connections;
mod connz;
mod http;
mod process;
mod prometheus;
mod request;
mod response;
mod varz;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

pub use connections::{sort_connections, SortKey};
pub use process::ProcessUsage;
pub use prometheus::{encode_metrics, METRICS_CONTENT_TYPE};

/// What the `metrics_request` fuzz target (`fuzz/`) drives: the request-head
/// parser and the two query-string parsers, the code a client's bytes reach
/// before any page is built. Not an API: hidden from the docs, and free to
/// change with the fuzz target.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::request::{parse_request, HeadBuffer, HttpError, Request};

    /// Parses `query` as `/connections` does, then as `/connz` does: each
    /// `Ok(())` if that page would be served, else the reason its `400`
    /// gives.
    pub fn parse_queries(query: &str) -> [Result<(), String>; 2] {
        [
            super::ConnectionsQuery::parse(query)
                .map(drop)
                .map_err(|e| e.to_string()),
            super::ConnzQuery::parse(query)
                .map(drop)
                .map_err(|e| e.to_string()),
        ]
    }
}

use crate::relay::Monitor;
use crate::shard::ConnectionInfo;
use crate::stats::Totals;
use connections::{encode_connections, ConnectionsQuery};
use connz::{encode_connz, ConnzQuery};
use request::Request;
use response::Response;
use varz::{encode_varz, CpuGauge, ServerInfo, VarzPage};

/// The content type of the JSON pages.
const JSON: &str = "application/json";

/// Limits of the endpoint. The defaults suit a Prometheus server and a few
/// operators with curl.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections served at once (being read, answered or closed); a
    /// connection beyond that is answered `503` and closed.
    pub max_clients: usize,
    /// Longest request head (request line and headers), in bytes; a longer
    /// one is answered `431`.
    pub max_head: usize,
    /// Time a client has, from connecting, to send its whole request head;
    /// then it is answered `408` and closed.
    pub request_timeout: Duration,
    /// Time a client has to take the response.
    pub write_timeout: Duration,
    /// How long `/connections` and `/connz` wait for the shards to answer.
    pub shard_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_clients: 8,
            max_head: 8 * 1024,
            request_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            shard_timeout: Duration::from_secs(1),
        }
    }
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound (in use, not local, privileged port).
    #[error("cannot serve metrics on {addr}: {source}: choose another --metrics address")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The endpoint's threads could not be started.
    #[error("cannot start the metrics thread: {0}")]
    Thread(#[source] io::Error),
}

/// Where the endpoint's figures come from: a running relay's [`Monitor`],
/// or, in unit tests, fixed data.
trait Source: Send + 'static {
    /// The counters of each shard (index = shard), for `/metrics`.
    fn shard_stats(&self) -> Vec<Totals>;
    /// Every open connection, for `/connections`; a shard that does not
    /// answer within `timeout` is left out.
    fn connections(&self, timeout: Duration) -> Vec<ConnectionInfo>;
    /// Whether the relay serves, for `/healthz`: `Err` says why not.
    fn health(&self) -> Result<(), String>;
    /// What the server is and its limits, for `/varz` and `/connz`.
    fn server(&self) -> ServerInfo;
    /// Time since the relay started, on the monotonic clock (`/varz`'
    /// `uptime`, and its `cpu` window).
    fn uptime(&self) -> Duration;
    /// The process's memory, CPU time and descriptors, for `/varz` and
    /// the `process_*` series.
    fn process(&self) -> ProcessUsage;
    /// The TLS certificate file in force and when it stops being valid,
    /// if the relay speaks TLS.
    fn tls_expires(&self) -> Option<(String, std::time::SystemTime)>;
    /// Each leaf link's state and counters.
    fn leaf_remotes(&self) -> Vec<crate::leaf::RemoteSnapshot> {
        Vec::new()
    }
}

impl Source for Monitor {
    fn shard_stats(&self) -> Vec<Totals> {
        Monitor::shard_stats(self)
    }

    fn connections(&self, timeout: Duration) -> Vec<ConnectionInfo> {
        Monitor::connections(self, timeout)
    }

    fn health(&self) -> Result<(), String> {
        match self.failure() {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    fn server(&self) -> ServerInfo {
        let nats = self.nats_identity();
        let config = self.config();
        ServerInfo {
            server_id: nats.server_id.clone(),
            server_name: nats.server_name.clone(),
            nats_addr: self.nats_addrs().first().copied(),
            max_payload: nats.max_payload,
            max_connections: config.max_connections,
            max_subscriptions: config.max_subs,
            max_pending: config.max_pending,
            ping_interval: config.nats_ping_interval,
            start: self.started(),
            auth_timeout: config.auth.as_ref().map(|a| a.timeout),
            tls_timeout: config.tls.as_ref().map(|t| t.timeout),
            tls_verify: config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        }
    }

    fn uptime(&self) -> Duration {
        Monitor::uptime(self)
    }

    fn process(&self) -> ProcessUsage {
        ProcessUsage::now()
    }

    fn tls_expires(&self) -> Option<(String, std::time::SystemTime)> {
        let file = self.config().tls.as_ref()?.cert.display().to_string();
        Some((file, Monitor::tls_expires(self)?))
    }

    fn leaf_remotes(&self) -> Vec<crate::leaf::RemoteSnapshot> {
        Monitor::leaf_remotes(self)
    }
}

/// Binds `addr` and serves the endpoint for the relay behind `monitor`,
/// whose shards run on `cores` (index = shard), with default [`Options`].
pub fn serve(
    addr: SocketAddr,
    monitor: Monitor,
    cores: &[usize],
) -> Result<MetricsServer, MetricsError> {
    MetricsListener::bind(addr)?.serve(monitor, cores)
}

/// A bound, not yet served, metrics address: the binary binds it before it
/// starts the relay, so that a bad `--metrics` fails before any shard runs.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MetricsListener {
    /// Binds `addr` (port 0 picks a free port). The socket does not set
    /// `SO_REUSEPORT`, so an address another program (or another tern's
    /// relay or metrics) holds is refused.
    pub fn bind(addr: SocketAddr) -> Result<MetricsListener, MetricsError> {
        let bind_err = |source| MetricsError::Bind { addr, source };
        let listener = TcpListener::bind(addr).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        Ok(MetricsListener { listener, addr })
    }

    /// The bound address, with port 0 resolved.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts serving with default [`Options`].
    pub fn serve(self, monitor: Monitor, cores: &[usize]) -> Result<MetricsServer, MetricsError> {
        self.serve_with(monitor, cores, Options::default())
    }

    /// Starts serving with `options`.
    pub fn serve_with(
        self,
        monitor: Monitor,
        cores: &[usize],
        options: Options,
    ) -> Result<MetricsServer, MetricsError> {
        start(self, monitor, cores, options)
    }
}

/// A running endpoint. Dropping it stops it, like [`MetricsServer::stop`].
#[derive(Debug)]
pub struct MetricsServer {
    server: http::Server,
}

impl MetricsServer {
    /// The address served, with port 0 resolved.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Stops accepting, closes the connections still open (a scrape racing
    /// the stop sees its connection closed) and joins the endpoint's
    /// threads: at once, or within [`Options::shard_timeout`] if a
    /// `/connections` request is being answered.
    pub fn stop(mut self) {
        self.server.stop();
    }
}

/// What the routing needs besides the request.
struct Context<S> {
    /// Where the figures come from.
    source: S,
    /// The CPU of each shard, for `tern_shard_info` and `/varz`.
    cores: Vec<usize>,
    /// How long `/connections` and `/connz` wait for the shards.
    shard_timeout: Duration,
    /// The endpoint's own address: `/varz`' `http_host` and `http_port`.
    addr: SocketAddr,
    /// `/varz`' `cpu`, measured between requests.
    cpu: Mutex<CpuGauge>,
}

fn start<S: Source>(
    listener: MetricsListener,
    source: S,
    cores: &[usize],
    options: Options,
) -> Result<MetricsServer, MetricsError> {
    let MetricsListener { listener, addr } = listener;
    let ctx = Context {
        source,
        cores: cores.to_vec(),
        shard_timeout: options.shard_timeout,
        addr,
        cpu: Mutex::default(),
    };
    let server = http::start(listener, addr, cores, options, move |request| {
        respond(request, &ctx)
    })
    .map_err(MetricsError::Thread)?;
    Ok(MetricsServer { server })
}

/// Routes a parsed request.
fn respond<S: Source>(request: &Request, ctx: &Context<S>) -> Response {
    if request.method != "GET" && request.method != "HEAD" {
        return Response::text(405, "only GET and HEAD are served\n");
    }
    match request.path.as_str() {
        "/metrics" => {
            let mut text = encode_metrics(
                &ctx.source.shard_stats(),
                &ctx.cores,
                &ctx.source.process(),
                ctx.source
                    .tls_expires()
                    .as_ref()
                    .map(|(file, at)| (file.as_str(), *at)),
            );
            prometheus::encode_leaf_metrics(&mut text, &ctx.source.leaf_remotes());
            Response::new(200, METRICS_CONTENT_TYPE, text)
        }
        "/healthz" => match ctx.source.health() {
            Ok(()) => Response::text(200, "ok\n"),
            Err(reason) => Response::text(503, format!("{reason}\n")),
        },
        "/connections" => match ConnectionsQuery::parse(&request.query) {
            Ok(query) => Response::new(
                200,
                JSON,
                encode_connections(ctx.source.connections(ctx.shard_timeout), query),
            ),
            Err(e) => Response::text(400, format!("bad request: {e}\n")),
        },
        "/varz" => Response::new(200, JSON, varz(ctx)),
        "/connz" => match ConnzQuery::parse(&request.query) {
            Ok(query) => Response::new(
                200,
                JSON,
                encode_connz(
                    &ctx.source.server().server_id,
                    ctx.source.connections(ctx.shard_timeout),
                    &query,
                    SystemTime::now(),
                ),
            ),
            Err(e) => Response::text(400, format!("bad request: {e}\n")),
        },
        "/" => Response::text(
            200,
            "tern metrics endpoint\n\
             /metrics      Prometheus text format\n\
             /healthz      ok while the relay serves; 503 and the reason when it does not\n\
             /connections  open connections as JSON; ?sort=pending|msgs_in|msgs_out|age|subscriptions&limit=N\n\
             /varz         nats-server's server information (JSON)\n\
             /connz        nats-server's connection list (JSON); ?sort=cid|start|subs|pending|msgs_to|msgs_from|uptime&offset=N&limit=N&cid=N\n",
        ),
        _ => Response::text(
            404,
            "not found: try /metrics, /healthz, /connections, /varz or /connz\n",
        ),
    }
}

/// The `/varz` body, from the source's figures now.
fn varz<S: Source>(ctx: &Context<S>) -> Vec<u8> {
    let mut totals = Totals::default();
    for shard in ctx.source.shard_stats() {
        totals += shard;
    }
    let process = ctx.source.process();
    let uptime = ctx.source.uptime();
    let cpu = ctx
        .cpu
        .lock()
        // The gauge is three plain fields, valid whatever a panicking
        // holder left in them.
        .unwrap_or_else(PoisonError::into_inner)
        .read(uptime, process.cpu_time);
    encode_varz(&VarzPage {
        server: &ctx.source.server(),
        totals: &totals,
        now: SystemTime::now(),
        uptime,
        mem: process.rss,
        cpu,
        http: ctx.addr,
        shard_cpus: &ctx.cores,
        leaf: &ctx.source.leaf_remotes(),
    })
}

#[cfg(test)]
mod tests {
    //! Fixed figures instead of a relay, shared with the other files'
    //! tests, and the tests of routing.

    use super::*;
    use crate::mesh::ShardId;
    use crate::protocol::ProtoError;
    use crate::stats::ShardStats;
    use proptest::prelude::*;
    use request::parse_request;

    /// Fixed figures instead of a relay.
    pub(super) struct Fake {
        pub(super) shards: Vec<Totals>,
        pub(super) conns: Vec<ConnectionInfo>,
        /// What `/healthz` reports.
        pub(super) health: Result<(), String>,
        pub(super) server: ServerInfo,
        pub(super) uptime: Duration,
        pub(super) process: ProcessUsage,
    }

    impl Source for Fake {
        fn shard_stats(&self) -> Vec<Totals> {
            self.shards.clone()
        }
        fn connections(&self, _: Duration) -> Vec<ConnectionInfo> {
            self.conns.clone()
        }
        fn health(&self) -> Result<(), String> {
            self.health.clone()
        }
        fn server(&self) -> ServerInfo {
            self.server.clone()
        }
        fn uptime(&self) -> Duration {
            self.uptime
        }
        fn process(&self) -> ProcessUsage {
            self.process
        }
        fn tls_expires(&self) -> Option<(String, std::time::SystemTime)> {
            None
        }
    }

    /// A server listening for NATS on 0.0.0.0:4222 with small limits,
    /// started at 2024-05-01T12:00:03.0004Z.
    pub(super) fn fake_server() -> ServerInfo {
        ServerInfo {
            server_id: "NSERVERIDFORTHETESTS".into(),
            server_name: "tern".into(),
            nats_addr: Some(SocketAddr::from(([0, 0, 0, 0], 4222))),
            max_payload: 1 << 20,
            max_connections: 100,
            max_subscriptions: 10,
            max_pending: 64 << 20,
            ping_interval: Duration::from_secs(120),
            start: std::time::UNIX_EPOCH + Duration::new(1_714_564_803, 400_000),
            auth_timeout: None,
            tls_timeout: None,
            tls_verify: false,
        }
    }

    fn conn(
        shard: ShardId,
        port: u16,
        pending: usize,
        msgs_in: u64,
        age_ms: u64,
    ) -> ConnectionInfo {
        ConnectionInfo {
            shard,
            cid: u64::from(port),
            peer: SocketAddr::from(([127, 0, 0, 1], port)),
            client: crate::shard::ClientInfo::Line,
            age: Duration::from_millis(age_ms),
            subscriptions: port as usize % 3,
            msgs_in,
            msgs_out: 7,
            pending_bytes: pending,
            user: port.is_multiple_of(2).then(|| "alice".to_string()),
        }
    }

    /// Two shards with a few counters set, three connections (the third a
    /// NATS client), healthy, up for 2 s using a quarter of a CPU.
    pub(super) fn fake() -> Fake {
        let a = ShardStats::default();
        a.msgs_in.add(5);
        a.count_error(ProtoError::UnknownVerb);
        let b = ShardStats::default();
        b.msgs_in.add(2);
        b.pending_bytes.add(100);
        let nats = ConnectionInfo {
            client: crate::shard::ClientInfo::Nats {
                name: "x".into(),
                lang: "raw".into(),
                version: "1".into(),
            },
            ..conn(0, 1002, 0, 9, 9000)
        };
        Fake {
            shards: vec![a.snapshot(), b.snapshot()],
            conns: vec![conn(0, 1000, 10, 3, 1500), conn(1, 1001, 999, 0, 20), nats],
            health: Ok(()),
            server: fake_server(),
            uptime: Duration::from_secs(2),
            process: ProcessUsage {
                rss: Some(30 << 20),
                virtual_memory: Some(200 << 20),
                cpu_time: Duration::from_millis(500),
                open_fds: Some(12),
                max_fds: Some(1024),
                start_time: Some(std::time::UNIX_EPOCH + Duration::new(1_714_564_803, 0)),
            },
        }
    }

    fn ctx() -> Context<Fake> {
        Context {
            source: fake(),
            cores: vec![0, 1],
            shard_timeout: Options::default().shard_timeout,
            addr: SocketAddr::from(([127, 0, 0, 1], 9100)),
            cpu: Mutex::default(),
        }
    }

    /// The keys of an indented JSON text's objects at depth `depth` (1:
    /// the top level), in the order written: `serde_json::Value` sorts
    /// them.
    pub(super) fn keys_in_order(text: &str, depth: usize) -> Vec<String> {
        let indent = " ".repeat(2 * depth);
        text.lines()
            .filter_map(|line| line.strip_prefix(&indent))
            .filter_map(|rest| rest.strip_prefix('"'))
            .filter_map(|rest| rest.split_once("\": ").map(|(key, _)| key.to_string()))
            .collect()
    }

    fn json(r: &Response) -> serde_json::Value {
        assert_eq!(r.content_type, JSON);
        serde_json::from_slice(&r.body).unwrap()
    }

    /// `GET path`, parsed.
    pub(super) fn get(path: &str) -> Request {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        parse_request(raw.as_bytes()).unwrap().unwrap()
    }

    fn body(r: &Response) -> String {
        String::from_utf8(r.body.clone()).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random bytes never panic the parser, and what it accepts can be
        /// answered without panicking either.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(Some(request)) = parse_request(&bytes) {
                respond(&request, &ctx()).encode(false);
            }
        }

        /// Valid requests with random bytes spliced in: closer to the
        /// parser's interesting paths than uniform garbage.
        #[test]
        fn mutated_requests_never_panic(
            base in prop::sample::select(vec![
                "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
                "GET /connections?sort=age&limit=2 HTTP/1.1\r\n\r\n",
                "HEAD /healthz HTTP/1.0\r\nAccept: */*\r\n\r\n",
                "GET /varz HTTP/1.1\r\n\r\n",
                "GET /connz?sort=pending&offset=1&limit=2&subs=1 HTTP/1.1\r\n\r\n",
            ]),
            at in 0usize..64,
            insert in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut bytes = base.as_bytes().to_vec();
            let at = at.min(bytes.len());
            bytes.splice(at..at, insert);
            if let Ok(Some(request)) = parse_request(&bytes) {
                let r = respond(&request, &ctx());
                prop_assert!([200, 400, 404, 405].contains(&r.status));
            }
        }

        /// Any query string is parsed or refused, never a panic.
        #[test]
        fn any_query_is_answered(query in "[a-z_=&0-9%+>-]{0,40}") {
            for path in ["/connections", "/connz", "/varz"] {
                let r = respond(&get(&format!("{path}?{query}")), &ctx());
                prop_assert!(r.status == 200 || r.status == 400);
            }
        }
    }

    #[test]
    fn routes_and_methods() {
        let c = ctx();
        assert_eq!(respond(&get("/healthz"), &c).status, 200);
        assert_eq!(body(&respond(&get("/healthz"), &c)), "ok\n");
        assert_eq!(respond(&get("/"), &c).status, 200);
        assert_eq!(respond(&get("/nope"), &c).status, 404);
        assert!(body(&respond(&get("/"), &c)).contains("/connz"));
        assert!(body(&respond(&get("/nope"), &c)).contains("/varz"));
        let post = parse_request(b"POST /metrics HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        let r = respond(&post, &c);
        assert_eq!(r.status, 405);
        let wire = String::from_utf8(r.encode(false)).unwrap();
        assert!(wire.contains("\r\nAllow: GET, HEAD\r\n"), "{wire}");
    }

    #[test]
    fn healthz_is_503_with_the_reason_when_the_relay_is_unhealthy() {
        let mut c = ctx();
        c.source.health = Err("shard 1 stopped: it panicked".into());
        let r = respond(&get("/healthz"), &c);
        assert_eq!(r.status, 503);
        assert_eq!(r.content_type, "text/plain; charset=utf-8");
        assert_eq!(body(&r), "shard 1 stopped: it panicked\n");
        let wire = String::from_utf8(r.encode(false)).unwrap();
        assert!(
            wire.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{wire}"
        );
        // The other pages do not depend on it.
        assert_eq!(respond(&get("/metrics"), &c).status, 200);
    }

    #[test]
    fn pages_have_their_content_types_and_bad_queries_get_400() {
        let c = ctx();
        let metrics = respond(&get("/metrics"), &c);
        assert_eq!(metrics.content_type, METRICS_CONTENT_TYPE);
        assert_eq!(
            body(&metrics),
            encode_metrics(&c.source.shards, &c.cores, &c.source.process, None)
        );
        let conns = respond(&get("/connections?limit=1"), &c);
        assert_eq!(conns.content_type, "application/json");
        assert_eq!(conns.body.iter().filter(|&&b| b == b'\n').count(), 3);
        let bad = respond(&get("/connections?sort=x"), &c);
        assert_eq!(bad.status, 400);
        assert!(body(&bad).starts_with("bad request: unknown sort `x`"));
    }

    #[test]
    fn varz_is_served_from_the_sources_figures() {
        let c = ctx();
        let v = json(&respond(&get("/varz"), &c));
        assert_eq!(v["server_id"], "NSERVERIDFORTHETESTS");
        assert_eq!(v["port"], 4222);
        assert_eq!(v["http_host"], "127.0.0.1");
        assert_eq!(v["http_port"], 9100);
        assert_eq!(v["uptime"], "2s");
        assert_eq!(v["start"], "2024-05-01T12:00:03.0004Z");
        assert_eq!(v["mem"], 30 << 20);
        // 0.5 s of CPU in the 2 s since start.
        assert_eq!(v["cpu"], 25.0);
        assert_eq!(v["cores"], 2);
        // The shards' counters, summed: 5 + 2 messages in.
        assert_eq!(v["in_msgs"], 7);
        // Query parameters change nothing (nats-server's are for its
        // account and JetStream details).
        assert_eq!(json(&respond(&get("/varz?x=1"), &c))["in_msgs"], 7);
    }

    #[test]
    fn connz_lists_the_sources_connections_and_refuses_what_it_cannot_serve() {
        let c = ctx();
        let v = json(&respond(&get("/connz?sort=pending&limit=2"), &c));
        assert_eq!(v["server_id"], "NSERVERIDFORTHETESTS");
        assert_eq!((&v["total"], &v["num_connections"]), (&3.into(), &2.into()));
        assert_eq!(v["connections"][0]["cid"], 1001);
        for (query, reason) in [
            ("sort=fastest", "invalid sorting option: fastest"),
            ("sort=bytes_to", "bytes per connection"),
            ("limit=lots", "invalid limit `lots`"),
            ("state=closed", "closed connections"),
        ] {
            let r = respond(&get(&format!("/connz?{query}")), &c);
            assert_eq!(r.status, 400, "{query}");
            assert!(body(&r).starts_with("bad request: "), "{}", body(&r));
            assert!(body(&r).contains(reason), "{query}: {}", body(&r));
        }
    }

    #[test]
    fn a_taken_address_is_a_bind_error() {
        let holder = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = holder.local_addr().unwrap();
        let err = MetricsListener::bind(addr).unwrap_err();
        assert!(matches!(err, MetricsError::Bind { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains(&addr.to_string()) && msg.contains("--metrics"),
            "{msg}"
        );
    }
}
