//! The metrics endpoint (`--metrics ADDR`): Prometheus counters, a health
//! check, and the list of open connections, over plain HTTP/1.1.
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
//! # Off the shards
//!
//! The endpoint runs on plain threads of its own, never on a shard: an
//! accept thread, and one short-lived thread per request. A shard never
//! waits for it and never takes a lock for it:
//!
//! * `/metrics` reads the shards' single-writer atomic counters
//!   ([`Monitor::shard_stats`]), which costs the shards nothing;
//! * `/connections` asks each shard over its control channel
//!   ([`Monitor::connections`]); the shard answers between two batches of
//!   work, and a shard that is too busy to answer in time is left out.
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
//! (see [`Options`]): the request head is parsed by `httparse` from a
//! fixed-size buffer, the whole head must arrive within a deadline, the
//! response must be taken within another, and at most
//! [`Options::max_clients`] requests are served at once (more connections
//! get `503` at once). Malformed requests get `400`, oversized heads `431`.
//!
//! # Endpoints
//!
//! * `/metrics` — the Prometheus text exposition format, version 0.0.4:
//!   every counter of [`crate::stats`] per shard (label `shard`), names
//!   prefixed `tern_`, counters suffixed `_total`, `-ERR` replies by
//!   reason (`tern_protocol_errors_total{shard="0",reason="unknown verb"}`),
//!   plus `tern_info{version}` and `tern_shard_cpu{shard}`. See
//!   `docs/deploy.md` for what each one means.
//! * `/healthz` — `200 ok` while the process serves.
//! * `/connections` — JSON, one object per open connection;
//!   `?sort=pending|msgs_in|msgs_out|age|subscriptions` (largest or oldest
//!   first; default `pending`) and `&limit=N`.
//!
//! The exposition text is written here rather than with a client library:
//! the counters already live in the shards, so a library's registry of
//! metric objects would only be filled from them on each scrape, and
//! `prometheus-client` writes OpenMetrics rather than format 0.0.4. The
//! format needs a dozen lines of escaping and ordering rules, which the
//! tests check.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{allowed_cpus, pin_current_thread};
use crate::mesh::ShardId;
use crate::relay::Monitor;
use crate::shard::ConnectionInfo;
use crate::stats::Totals;

/// `Content-Type` of `/metrics`: the Prometheus text format, version 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Headers a request may carry (more is answered `431`).
const MAX_HEADERS: usize = 32;

/// How long, and how many bytes, the server keeps reading after its
/// response before it closes (see [`linger_close`]).
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// Limits of the endpoint. The defaults suit a Prometheus server and a few
/// operators with curl.
#[derive(Debug, Clone)]
pub struct Options {
    /// Requests served at once; a connection beyond that is answered `503`
    /// and closed.
    pub max_clients: usize,
    /// Longest request head (request line and headers), in bytes; a longer
    /// one is answered `431`.
    pub max_head: usize,
    /// Time a client has, from connecting, to send its whole request head;
    /// then it is answered `408` and closed.
    pub request_timeout: Duration,
    /// Time a client has to take the response.
    pub write_timeout: Duration,
    /// How long `/connections` waits for the shards to answer.
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
    /// The accept thread could not be started.
    #[error("cannot start the metrics thread: {0}")]
    Thread(#[source] io::Error),
}

/// Where the endpoint's figures come from: a running relay's [`Monitor`],
/// or, in unit tests, fixed data.
trait Source: Send + Sync + 'static {
    fn shard_stats(&self) -> Vec<Totals>;
    fn connections(&self, timeout: Duration) -> Vec<ConnectionInfo>;
}

impl Source for Monitor {
    fn shard_stats(&self) -> Vec<Totals> {
        Monitor::shard_stats(self)
    }

    fn connections(&self, timeout: Duration) -> Vec<ConnectionInfo> {
        Monitor::connections(self, timeout)
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
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    /// A second handle on the listening socket, to wake the accept thread.
    waker: TcpListener,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address served, with port 0 resolved.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and joins the accept thread. A request already being
    /// served finishes on its own thread, within [`Options`]' timeouts.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stopping.store(true, Ordering::SeqCst);
        // On Linux, shutting down a listening socket wakes a thread blocked
        // in accept(2), which then fails with EINVAL. Should that ever not
        // work, a connection wakes it just as well.
        if socket2::SockRef::from(&self.waker)
            .shutdown(Shutdown::Read)
            .is_err()
        {
            let _ = TcpStream::connect_timeout(&wake_addr(self.addr), Duration::from_secs(1));
        }
        if thread.join().is_err() {
            tracing::error!("the metrics accept thread panicked");
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An address that reaches a listener bound to `addr` (a wildcard address
/// is reached through loopback).
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// What every request thread shares.
struct Context<S> {
    source: S,
    cores: Vec<usize>,
    options: Options,
}

fn start<S: Source>(
    listener: MetricsListener,
    source: S,
    cores: &[usize],
    options: Options,
) -> Result<MetricsServer, MetricsError> {
    let MetricsListener { listener, addr } = listener;
    let waker = listener.try_clone().map_err(MetricsError::Thread)?;
    let stopping = Arc::new(AtomicBool::new(false));
    let ctx = Arc::new(Context {
        source,
        cores: cores.to_vec(),
        options,
    });
    let housekeeping = housekeeping_cpus(cores);
    let stop = stopping.clone();
    let thread = thread::Builder::new()
        .name("tern-metrics".into())
        .spawn(move || {
            if !housekeeping.is_empty() {
                // Threads inherit their creator's CPU mask: the request
                // threads stay off the shards' CPUs too.
                if let Err(e) = pin_current_thread(&housekeeping) {
                    tracing::debug!(error = %e, "metrics thread left unpinned");
                }
            }
            accept_loop(listener, ctx, stop);
        })
        .map_err(MetricsError::Thread)?;
    Ok(MetricsServer {
        addr,
        stopping,
        waker,
        thread: Some(thread),
    })
}

/// Decrements the count of requests in service when a request thread ends
/// (or is never started).
struct InService(Arc<AtomicUsize>);

impl Drop for InService {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop<S: Source>(listener: TcpListener, ctx: Arc<Context<S>>, stopping: Arc<AtomicBool>) {
    let in_service = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = listener.accept();
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it
                // was accepted: say so, and do not spin on it.
                tracing::warn!(error = %e, "metrics: accept failed");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if in_service.fetch_add(1, Ordering::SeqCst) >= ctx.options.max_clients {
            in_service.fetch_sub(1, Ordering::SeqCst);
            too_busy(stream);
            continue;
        }
        let guard = InService(in_service.clone());
        let ctx = ctx.clone();
        let spawned = thread::Builder::new()
            .name("tern-metrics-req".into())
            .spawn(move || {
                let _guard = guard;
                handle(stream, &ctx);
            });
        if let Err(e) = spawned {
            // The closure, with its guard and stream, is dropped: the
            // client sees its connection closed.
            tracing::warn!(error = %e, "metrics: cannot start a request thread");
        }
    }
}

/// Answers `503` without reading the request (the accept thread must not
/// wait on a client).
fn too_busy(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let response = Response::text(503, "too many metrics requests at once: retry\n");
    let _ = stream.write_all(&response.encode(false));
}

/// Serves one request on `stream`.
fn handle<S: Source>(mut stream: TcpStream, ctx: &Context<S>) {
    let response = match read_request(&mut stream, &ctx.options) {
        Ok(Some(request)) => {
            let head_only = request.method == "HEAD";
            let response = respond(&request, ctx);
            tracing::debug!(
                path = %request.path,
                status = response.status,
                "metrics request"
            );
            response.encode(head_only)
        }
        // The client went away before sending a whole request.
        Ok(None) => return,
        Err(e) => e.response().encode(false),
    };
    let _ = stream.set_write_timeout(Some(ctx.options.write_timeout));
    if stream.write_all(&response).is_ok() {
        linger_close(stream);
    }
}

/// Closes after a response without losing it: closing a socket that still
/// has unread input sends a reset, which can make the client drop the
/// response it has not read yet. So: send FIN, then read and discard what
/// the client sent beyond its request head (a body, a pipelined request,
/// an oversized head), for a bounded time and amount.
fn linger_close(mut stream: TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut scratch = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut scratch) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

// ------------------------------------------------------------------ HTTP

/// A request line, as far as this server cares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    method: String,
    /// The path, without the query.
    path: String,
    /// What follows `?`, without it (empty if none).
    query: String,
}

/// A request that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum HttpError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request head too large")]
    HeadTooLarge,
    #[error("request not received in time")]
    Timeout,
}

impl HttpError {
    fn response(&self) -> Response {
        let status = match self {
            HttpError::BadRequest(_) => 400,
            HttpError::HeadTooLarge => 431,
            HttpError::Timeout => 408,
        };
        Response::text(status, format!("{self}\n"))
    }
}

/// Reads one request head from `stream`: `Ok(None)` if the client closes
/// (or resets) before sending a whole one.
fn read_request(stream: &mut TcpStream, options: &Options) -> Result<Option<Request>, HttpError> {
    let deadline = Instant::now() + options.request_timeout;
    let mut buf = vec![0u8; options.max_head];
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Err(HttpError::HeadTooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        // (A zero read timeout would mean "none" to the kernel.)
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Err(HttpError::Timeout);
        }
        let n = match stream.read(&mut buf[len..]) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HttpError::Timeout)
            }
            Err(_) => return Ok(None),
        };
        len += n;
        if let Some(request) = parse_request(&buf[..len])? {
            return Ok(Some(request));
        }
    }
}

/// Parses a request head: `Ok(None)` while it is incomplete. Any bytes
/// are safe to pass: the tests feed it random ones.
fn parse_request(buf: &[u8]) -> Result<Option<Request>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(_)) => {
            // A complete parse has both; the defaults are never used.
            let method = parsed.method.unwrap_or_default();
            let target = parsed.path.unwrap_or_default();
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            if !path.starts_with('/') {
                return Err(HttpError::BadRequest(
                    "the request target must be a path such as /metrics".into(),
                ));
            }
            Ok(Some(Request {
                method: method.to_string(),
                path: path.to_string(),
                query: query.to_string(),
            }))
        }
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::HeadTooLarge),
        Err(e) => Err(HttpError::BadRequest(e.to_string())),
    }
}

/// A response before encoding.
#[derive(Debug)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
        }
    }

    fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body)
    }

    /// The bytes on the wire; `head_only` for `HEAD` (headers describe the
    /// body that `GET` would get, without it).
    fn encode(&self, head_only: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

/// Routes a parsed request.
fn respond<S: Source>(request: &Request, ctx: &Context<S>) -> Response {
    if request.method != "GET" && request.method != "HEAD" {
        return Response::text(405, "only GET and HEAD are served\n");
    }
    match request.path.as_str() {
        "/metrics" => Response::new(
            200,
            METRICS_CONTENT_TYPE,
            encode_metrics(&ctx.source.shard_stats(), &ctx.cores),
        ),
        "/healthz" => Response::text(200, "ok\n"),
        "/connections" => match ConnectionsQuery::parse(&request.query) {
            Ok(query) => Response::new(
                200,
                "application/json",
                encode_connections(ctx.source.connections(ctx.options.shard_timeout), query),
            ),
            Err(msg) => Response::text(400, format!("bad request: {msg}\n")),
        },
        "/" => Response::text(
            200,
            "tern metrics endpoint\n\
             /metrics      Prometheus text format\n\
             /healthz      ok while the process serves\n\
             /connections  open connections as JSON; ?sort=pending|msgs_in|msgs_out|age|subscriptions&limit=N\n",
        ),
        _ => Response::text(
            404,
            "not found: try /metrics, /healthz or /connections\n",
        ),
    }
}

// ------------------------------------------------------------ /metrics

/// Prometheus metric types used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// How one [`Totals`] field is exported.
struct Family {
    field: &'static str,
    name: &'static str,
    kind: Kind,
    help: &'static str,
}

/// Every [`Totals`] field but the per-reason error counters (exported
/// together, see [`ERRORS_FAMILY`]) and their sum `protocol_errors`, left
/// out because `sum(tern_protocol_errors_total)` gives it and exporting
/// both would count each error twice in that sum.
const FAMILIES: &[Family] = &[
    Family {
        field: "connections_accepted",
        name: "tern_connections_accepted_total",
        kind: Kind::Counter,
        help: "Client connections accepted.",
    },
    Family {
        field: "connections_open",
        name: "tern_connections_open",
        kind: Kind::Gauge,
        help: "Client connections open now.",
    },
    Family {
        field: "connections_closed",
        name: "tern_connections_closed_total",
        kind: Kind::Counter,
        help: "Client connections closed, for any reason.",
    },
    Family {
        field: "connections_rejected",
        name: "tern_connections_rejected_total",
        kind: Kind::Counter,
        help: "Connections refused at accept because --max-connections was reached.",
    },
    Family {
        field: "subscriptions",
        name: "tern_subscriptions",
        kind: Kind::Gauge,
        help: "Subscriptions in force now.",
    },
    Family {
        field: "msgs_in",
        name: "tern_messages_in_total",
        kind: Kind::Counter,
        help: "PUB frames accepted from clients.",
    },
    Family {
        field: "bytes_in",
        name: "tern_bytes_in_total",
        kind: Kind::Counter,
        help: "Payload bytes of the PUB frames accepted.",
    },
    Family {
        field: "msgs_out",
        name: "tern_messages_out_total",
        kind: Kind::Counter,
        help: "MSG frames queued to subscribers (one per receiving connection).",
    },
    Family {
        field: "bytes_out",
        name: "tern_bytes_out_total",
        kind: Kind::Counter,
        help: "Payload bytes of the MSG frames queued to subscribers.",
    },
    Family {
        field: "forwarded",
        name: "tern_messages_forwarded_total",
        kind: Kind::Counter,
        help: "Messages handed to another shard (once per target shard).",
    },
    Family {
        field: "slow_consumers",
        name: "tern_slow_consumers_total",
        kind: Kind::Counter,
        help: "Connections closed because their unsent output passed --max-pending.",
    },
    Family {
        field: "frames_too_long",
        name: "tern_frames_too_long_total",
        kind: Kind::Counter,
        help: "Frames refused as longer than --max-frame.",
    },
    Family {
        field: "pending_bytes",
        name: "tern_pending_bytes",
        kind: Kind::Gauge,
        help: "Bytes queued for clients and not yet written to their sockets.",
    },
];

/// The family of the `errors_<reason>` fields.
const ERRORS_FAMILY: &str = "tern_protocol_errors_total";
/// Prefix of the per-reason error fields of [`Totals`].
const ERRORS_PREFIX: &str = "errors_";
/// The sum of the per-reason fields, not exported (see [`FAMILIES`]).
const ERRORS_SUM: &str = "protocol_errors";

/// The `reason` label of an `errors_<reason>` field: the text of its
/// `-ERR` reply (`errors_unknown_verb` → `unknown verb`).
fn error_reason(field: &str) -> Option<String> {
    field
        .strip_prefix(ERRORS_PREFIX)
        .map(|r| r.replace('_', " "))
}

/// Writes the `/metrics` page: the counters of each shard (index = shard)
/// whose CPUs are `cores`, in the Prometheus text format 0.0.4.
pub fn encode_metrics(shards: &[Totals], cores: &[usize]) -> String {
    let fields: Vec<Vec<(&'static str, u64)>> = shards.iter().map(Totals::fields).collect();
    let mut out = String::with_capacity(4096 + 1024 * shards.len());

    header(
        &mut out,
        "tern_info",
        Kind::Gauge,
        "Always 1; the version label tells which tern this is.",
    );
    out.push_str("tern_info{version=\"");
    escape_label(&mut out, env!("CARGO_PKG_VERSION"));
    out.push_str("\"} 1\n");

    header(
        &mut out,
        "tern_shard_cpu",
        Kind::Gauge,
        "The CPU each shard is pinned to.",
    );
    for (shard, cpu) in cores.iter().enumerate() {
        let _ = writeln!(out, "tern_shard_cpu{{shard=\"{shard}\"}} {cpu}");
    }

    for family in FAMILIES {
        header(&mut out, family.name, family.kind, family.help);
        for (shard, values) in fields.iter().enumerate() {
            let value = values
                .iter()
                .find(|(name, _)| *name == family.field)
                .map_or(0, |&(_, v)| v);
            let _ = writeln!(out, "{}{{shard=\"{shard}\"}} {value}", family.name);
        }
    }

    header(
        &mut out,
        ERRORS_FAMILY,
        Kind::Counter,
        "Frames answered with -ERR, by reason (frames too long and slow consumers are counted apart).",
    );
    for (shard, values) in fields.iter().enumerate() {
        for &(field, value) in values {
            if let Some(reason) = error_reason(field) {
                let _ = write!(out, "{ERRORS_FAMILY}{{shard=\"{shard}\",reason=\"");
                escape_label(&mut out, &reason);
                let _ = writeln!(out, "\"}} {value}");
            }
        }
    }

    // A counter added to `stats` without a description here is still
    // exported rather than silently dropped (a unit test makes sure every
    // current one has a description).
    let Some(first) = fields.first() else {
        return out;
    };
    for &(field, _) in first {
        if is_described(field) {
            continue;
        }
        let name = format!("tern_{field}");
        let _ = writeln!(out, "# TYPE {name} untyped");
        for (shard, values) in fields.iter().enumerate() {
            let value = values
                .iter()
                .find(|(f, _)| *f == field)
                .map_or(0, |&(_, v)| v);
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {value}");
        }
    }
    out
}

/// Whether `field` has a family of its own or is part of the errors one.
fn is_described(field: &str) -> bool {
    field == ERRORS_SUM
        || field.starts_with(ERRORS_PREFIX)
        || FAMILIES.iter().any(|f| f.field == field)
}

fn header(out: &mut String, name: &str, kind: Kind, help: &str) {
    let _ = write!(out, "# HELP {name} ");
    // HELP text escapes backslash and newline (format 0.0.4).
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    let _ = writeln!(out, "\n# TYPE {name} {}", kind.as_str());
}

/// Label values escape backslash, double quote and newline (format 0.0.4).
fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

// --------------------------------------------------------- /connections

/// What `/connections` sorts by, always largest (or oldest) first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Bytes queued to the connection and not yet written: the slow
    /// consumer is first.
    Pending,
    /// `PUB`s it sent.
    MsgsIn,
    /// `MSG`s queued to it.
    MsgsOut,
    /// Time since it was accepted.
    Age,
    /// Subscriptions it holds.
    Subscriptions,
}

impl SortKey {
    fn parse(s: &str) -> Option<SortKey> {
        Some(match s {
            "pending" => SortKey::Pending,
            "msgs_in" => SortKey::MsgsIn,
            "msgs_out" => SortKey::MsgsOut,
            "age" => SortKey::Age,
            "subscriptions" => SortKey::Subscriptions,
            _ => return None,
        })
    }
}

/// `/connections`' query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConnectionsQuery {
    sort: SortKey,
    limit: Option<usize>,
}

impl ConnectionsQuery {
    fn parse(query: &str) -> Result<ConnectionsQuery, String> {
        let mut q = ConnectionsQuery {
            sort: SortKey::Pending,
            limit: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sort" => {
                    q.sort = SortKey::parse(value).ok_or_else(|| {
                        format!(
                            "unknown sort `{value}`: use pending, msgs_in, msgs_out, age or subscriptions"
                        )
                    })?
                }
                "limit" => {
                    q.limit = Some(value.parse().map_err(|_| {
                        format!("invalid limit `{value}`: give a whole number")
                    })?)
                }
                _ => return Err(format!("unknown parameter `{key}`: use sort and limit")),
            }
        }
        Ok(q)
    }
}

/// One connection in `/connections`' JSON.
#[derive(Debug, Serialize)]
struct ConnectionJson {
    shard: ShardId,
    peer: String,
    /// Seconds since it was accepted, to the millisecond.
    age_seconds: f64,
    subscriptions: usize,
    msgs_in: u64,
    msgs_out: u64,
    pending_bytes: usize,
}

/// Sorts `list` by `key`, largest first; ties in shard and peer order, so
/// that the output is stable.
pub fn sort_connections(list: &mut [ConnectionInfo], key: SortKey) {
    list.sort_by(|a, b| {
        let by_key = match key {
            SortKey::Pending => b.pending_bytes.cmp(&a.pending_bytes),
            SortKey::MsgsIn => b.msgs_in.cmp(&a.msgs_in),
            SortKey::MsgsOut => b.msgs_out.cmp(&a.msgs_out),
            SortKey::Age => b.age.cmp(&a.age),
            SortKey::Subscriptions => b.subscriptions.cmp(&a.subscriptions),
        };
        by_key.then(a.shard.cmp(&b.shard)).then(a.peer.cmp(&b.peer))
    });
}

/// The `/connections` body: a JSON array, one object a line.
fn encode_connections(mut list: Vec<ConnectionInfo>, query: ConnectionsQuery) -> Vec<u8> {
    sort_connections(&mut list, query.sort);
    if let Some(limit) = query.limit {
        list.truncate(limit);
    }
    let mut out = Vec::with_capacity(64 + 160 * list.len());
    out.push(b'[');
    for (i, c) in list.into_iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
        let row = ConnectionJson {
            shard: c.shard,
            peer: c.peer.to_string(),
            age_seconds: c.age.as_millis() as f64 / 1000.0,
            subscriptions: c.subscriptions,
            msgs_in: c.msgs_in,
            msgs_out: c.msgs_out,
            pending_bytes: c.pending_bytes,
        };
        // Writing plain numbers and strings into a Vec cannot fail.
        serde_json::to_writer(&mut out, &row).expect("a connection serialises");
    }
    out.extend_from_slice(b"\n]\n");
    out
}

// ------------------------------------------------------------- threads

/// CPUs this process may use that no shard is pinned to.
fn housekeeping_cpus(cores: &[usize]) -> Vec<usize> {
    allowed_cpus()
        .into_iter()
        .filter(|c| !cores.contains(c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtoError;
    use crate::stats::ShardStats;
    use proptest::prelude::*;
    use std::sync::mpsc;

    /// Fixed figures instead of a relay.
    struct Fake {
        shards: Vec<Totals>,
        conns: Vec<ConnectionInfo>,
    }

    impl Source for Fake {
        fn shard_stats(&self) -> Vec<Totals> {
            self.shards.clone()
        }
        fn connections(&self, _: Duration) -> Vec<ConnectionInfo> {
            self.conns.clone()
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
            peer: SocketAddr::from(([127, 0, 0, 1], port)),
            age: Duration::from_millis(age_ms),
            subscriptions: port as usize % 3,
            msgs_in,
            msgs_out: 7,
            pending_bytes: pending,
        }
    }

    fn fake() -> Fake {
        let a = ShardStats::default();
        a.msgs_in.add(5);
        a.count_error(ProtoError::UnknownVerb);
        let b = ShardStats::default();
        b.msgs_in.add(2);
        b.pending_bytes.add(100);
        Fake {
            shards: vec![a.snapshot(), b.snapshot()],
            conns: vec![
                conn(0, 1000, 10, 3, 1500),
                conn(1, 1001, 999, 0, 20),
                conn(0, 1002, 0, 9, 9000),
            ],
        }
    }

    fn ctx() -> Context<Fake> {
        Context {
            source: fake(),
            cores: vec![0, 1],
            options: Options::default(),
        }
    }

    fn get(path: &str) -> Request {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        parse_request(raw.as_bytes()).unwrap().unwrap()
    }

    fn body(r: &Response) -> String {
        String::from_utf8(r.body.clone()).unwrap()
    }

    // ------------------------------------------------------- parsing

    #[test]
    fn requests_are_parsed_with_their_query() {
        assert_eq!(
            get("/connections?sort=pending&limit=1"),
            Request {
                method: "GET".into(),
                path: "/connections".into(),
                query: "sort=pending&limit=1".into()
            }
        );
        let head = parse_request(b"HEAD /metrics HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(head.unwrap().method, "HEAD");
    }

    #[test]
    fn incomplete_heads_ask_for_more_and_bad_ones_are_refused() {
        assert_eq!(parse_request(b""), Ok(None));
        assert_eq!(parse_request(b"GET /metr"), Ok(None));
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            Ok(None)
        );
        for bad in [
            &b"\x00\x01\x02\r\n\r\n"[..],
            b"GET /metrics HTTP/9.9\r\n\r\n",
            b"GET  HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            assert!(
                matches!(parse_request(bad), Err(HttpError::BadRequest(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_request(b"GET http://host/metrics HTTP/1.1\r\n\r\n"),
            Err(HttpError::BadRequest(_))
        ));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(parse_request(many.as_bytes()), Err(HttpError::HeadTooLarge));
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
        fn any_query_is_answered(query in "[a-z_=&0-9%]{0,40}") {
            let r = respond(&get(&format!("/connections?{query}")), &ctx());
            prop_assert!(r.status == 200 || r.status == 400);
        }
    }

    // ------------------------------------------------------- routing

    #[test]
    fn routes_and_methods() {
        let c = ctx();
        assert_eq!(respond(&get("/healthz"), &c).status, 200);
        assert_eq!(body(&respond(&get("/healthz"), &c)), "ok\n");
        assert_eq!(respond(&get("/"), &c).status, 200);
        assert_eq!(respond(&get("/nope"), &c).status, 404);
        let post = parse_request(b"POST /metrics HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        let r = respond(&post, &c);
        assert_eq!(r.status, 405);
        let wire = String::from_utf8(r.encode(false)).unwrap();
        assert!(wire.contains("\r\nAllow: GET, HEAD\r\n"), "{wire}");
    }

    #[test]
    fn head_sends_the_length_of_the_body_it_leaves_out() {
        let r = respond(&get("/healthz"), &ctx());
        let head = String::from_utf8(r.encode(true)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Length: 3\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        let get = String::from_utf8(r.encode(false)).unwrap();
        assert!(get.ends_with("\r\n\r\nok\n"), "{get}");
    }

    // ------------------------------------------------------ /metrics

    /// Checks the rules of format 0.0.4 this page relies on: every sample
    /// belongs to the family announced by the `# HELP` and `# TYPE` lines
    /// just before it, families are contiguous and appear once, counters
    /// end in `_total`, every line ends with a newline.
    fn check_exposition(text: &str) -> Vec<(String, String, u64)> {
        assert!(text.ends_with('\n'));
        let mut samples = Vec::new();
        let mut seen = Vec::<String>::new();
        let mut current: Option<(String, String)> = None;
        let mut help_for: Option<String> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(!seen.contains(&name), "family {name} twice");
                help_for = Some(name);
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let name = parts.next().unwrap().to_string();
                let kind = parts.next().unwrap().to_string();
                assert!(["counter", "gauge", "untyped"].contains(&kind.as_str()));
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{name}");
                } else {
                    assert!(!name.ends_with("_total"), "{name}");
                }
                if kind != "untyped" {
                    assert_eq!(help_for.as_deref(), Some(name.as_str()), "HELP before TYPE");
                }
                assert!(name.starts_with("tern_"), "{name}");
                seen.push(name.clone());
                current = Some((name, kind));
            } else {
                let (family, _) = current.as_ref().expect("sample before any TYPE");
                let (series, value) = line.rsplit_once(' ').unwrap();
                let name = series.split('{').next().unwrap();
                assert_eq!(name, family, "sample outside its family: {line}");
                assert!(series.ends_with('}'), "{line}");
                samples.push((
                    name.to_string(),
                    series[name.len()..].to_string(),
                    value.parse().unwrap(),
                ));
            }
        }
        samples
    }

    #[test]
    fn metrics_page_follows_the_text_format() {
        let f = fake();
        let text = encode_metrics(&f.shards, &[3, 5]);
        let samples = check_exposition(&text);
        let find = |name: &str, labels: &str| {
            samples
                .iter()
                .find(|(n, l, _)| n == name && l == labels)
                .map(|s| s.2)
                .unwrap_or_else(|| panic!("{name}{labels} missing:\n{text}"))
        };
        assert_eq!(
            find(
                "tern_info",
                &format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))
            ),
            1
        );
        assert_eq!(find("tern_shard_cpu", "{shard=\"0\"}"), 3);
        assert_eq!(find("tern_shard_cpu", "{shard=\"1\"}"), 5);
        assert_eq!(find("tern_messages_in_total", "{shard=\"0\"}"), 5);
        assert_eq!(find("tern_messages_in_total", "{shard=\"1\"}"), 2);
        assert_eq!(find("tern_pending_bytes", "{shard=\"1\"}"), 100);
        assert_eq!(
            find(
                "tern_protocol_errors_total",
                "{shard=\"0\",reason=\"unknown verb\"}"
            ),
            1
        );
        assert_eq!(
            find(
                "tern_protocol_errors_total",
                "{shard=\"1\",reason=\"unknown verb\"}"
            ),
            0
        );
        // The sum is not exported next to its parts.
        assert!(!text.contains("tern_protocol_errors{"), "{text}");
        assert!(!text.contains("untyped"), "an undescribed counter:\n{text}");
    }

    #[test]
    fn every_counter_is_described() {
        for (field, _) in Totals::default().fields() {
            assert!(is_described(field), "stats field {field} has no family");
        }
        for f in FAMILIES {
            assert!(
                Totals::default()
                    .fields()
                    .iter()
                    .any(|(n, _)| *n == f.field),
                "family {} names no stats field",
                f.name
            );
        }
    }

    #[test]
    fn error_reasons_are_the_err_texts() {
        use ProtoError::*;
        for e in [
            UnknownVerb,
            MissingSubject,
            InvalidSubject,
            InvalidGroup,
            InvalidArguments,
            TooManySubscriptions,
        ] {
            let s = ShardStats::default();
            s.count_error(e);
            let (field, _) = s
                .snapshot()
                .fields()
                .into_iter()
                .find(|&(f, v)| v == 1 && f.starts_with(ERRORS_PREFIX))
                .unwrap_or_else(|| panic!("no errors_ counter for {e}"));
            assert_eq!(error_reason(field).as_deref(), Some(e.to_string().as_str()));
        }
    }

    #[test]
    fn no_shards_still_gives_a_valid_page() {
        check_exposition(&encode_metrics(&[], &[]));
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut s = String::new();
        escape_label(&mut s, "a\\b\"c\nd");
        assert_eq!(s, r#"a\\b\"c\nd"#);
        let mut h = String::new();
        header(&mut h, "tern_x", Kind::Gauge, "one\\two\nthree \"q\"");
        assert_eq!(
            h,
            "# HELP tern_x one\\\\two\\nthree \"q\"\n# TYPE tern_x gauge\n"
        );
    }

    // --------------------------------------------------- /connections

    #[test]
    fn connections_query_strings() {
        let q = |s: &str| ConnectionsQuery::parse(s);
        assert_eq!(
            q(""),
            Ok(ConnectionsQuery {
                sort: SortKey::Pending,
                limit: None
            })
        );
        assert_eq!(
            q("sort=age&limit=3"),
            Ok(ConnectionsQuery {
                sort: SortKey::Age,
                limit: Some(3)
            })
        );
        assert_eq!(q("limit=0").unwrap().limit, Some(0));
        assert!(q("sort=pendng").unwrap_err().contains("pendng"));
        assert!(q("limit=-1").unwrap_err().contains("limit"));
        assert!(q("limit=").is_err());
        assert!(q("sotr=pending").unwrap_err().contains("sotr"));
    }

    fn peers(r: &Response) -> Vec<(u16, usize)> {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let peer: SocketAddr = o["peer"].as_str().unwrap().parse().unwrap();
                (peer.port(), o["pending_bytes"].as_u64().unwrap() as usize)
            })
            .collect()
    }

    #[test]
    fn connections_are_sorted_and_limited() {
        let c = ctx();
        let r = respond(&get("/connections"), &c);
        assert_eq!(r.content_type, "application/json");
        assert_eq!(peers(&r), vec![(1001, 999), (1000, 10), (1002, 0)]);
        let r = respond(&get("/connections?sort=pending&limit=1"), &c);
        assert_eq!(peers(&r), vec![(1001, 999)]);
        let r = respond(&get("/connections?sort=msgs_in"), &c);
        assert_eq!(peers(&r)[0].0, 1002);
        let r = respond(&get("/connections?sort=age"), &c);
        assert_eq!(peers(&r)[0].0, 1002);
        let r = respond(&get("/connections?limit=0"), &c);
        assert_eq!(body(&r), "[\n]\n");
        assert_eq!(respond(&get("/connections?sort=x"), &c).status, 400);
    }

    #[test]
    fn connection_objects_carry_every_field() {
        let r = respond(&get("/connections?limit=1"), &ctx());
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let o = &v[0];
        assert_eq!(o["shard"], 1);
        assert_eq!(o["peer"], "127.0.0.1:1001");
        assert_eq!(o["age_seconds"], 0.02);
        assert_eq!(o["subscriptions"], 2);
        assert_eq!(o["msgs_in"], 0);
        assert_eq!(o["msgs_out"], 7);
        assert_eq!(o["pending_bytes"], 999);
        // One object a line, for grep.
        assert_eq!(body(&r).lines().count(), 3);
    }

    // ------------------------------------------------- over real TCP

    /// A server with fixed figures on an ephemeral loopback port.
    fn server(options: Options) -> MetricsServer {
        let listener = MetricsListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        start(listener, fake(), &[0, 1], options).unwrap()
    }

    /// Sends `bytes`, half-closes, and returns everything the server sent
    /// ("" if it reset the connection first).
    fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        // The server may answer (and close) before it has read it all.
        let _ = s.write_all(bytes);
        let _ = s.shutdown(Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn random_garbage_over_tcp_gets_4xx_and_the_server_keeps_serving() {
        let srv = server(Options::default());
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..100 {
            let len = (next() % 600) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Make most of them complete heads, so they are judged rather
            // than left waiting for more.
            if next() % 4 != 0 {
                bytes.extend_from_slice(b"\r\n\r\n");
            }
            let reply = exchange(srv.local_addr(), &bytes);
            assert!(
                reply.is_empty()
                    || reply.starts_with("HTTP/1.1 4")
                    || reply.starts_with("HTTP/1.1 200"),
                "{reply}"
            );
        }
        let ok = exchange(srv.local_addr(), b"GET /healthz HTTP/1.1\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nok\n"), "{ok}");
        srv.stop();
    }

    #[test]
    fn an_oversized_head_gets_431() {
        let srv = server(Options {
            max_head: 256,
            ..Options::default()
        });
        let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(4096));
        let reply = exchange(srv.local_addr(), big.as_bytes());
        assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
        srv.stop();
    }

    #[test]
    fn a_client_that_never_finishes_its_request_gets_408() {
        let srv = server(Options {
            request_timeout: Duration::from_millis(200),
            ..Options::default()
        });
        let mut s = TcpStream::connect(srv.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
        srv.stop();
    }

    #[test]
    fn past_max_clients_connections_get_503_and_service_resumes() {
        let srv = server(Options {
            max_clients: 2,
            ..Options::default()
        });
        // Two clients that send nothing hold both request threads...
        let idle: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect(srv.local_addr()).unwrap())
            .collect();
        // ...so a third is turned away at once (once the server has
        // accepted the idle ones: until then it may be served).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply = exchange(srv.local_addr(), b"GET /healthz HTTP/1.1\r\n\r\n");
            if reply.starts_with("HTTP/1.1 503 ") {
                break;
            }
            assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
            assert!(Instant::now() < deadline, "never refused");
        }
        // Once they hang up, requests are served again.
        drop(idle);
        loop {
            let reply = exchange(srv.local_addr(), b"GET /healthz HTTP/1.1\r\n\r\n");
            if reply.starts_with("HTTP/1.1 200 ") {
                break;
            }
            assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
            assert!(Instant::now() < deadline, "never served again");
            thread::sleep(Duration::from_millis(10));
        }
        srv.stop();
    }

    #[test]
    fn stop_wakes_the_accept_thread_and_frees_the_port() {
        let srv = server(Options::default());
        let addr = srv.local_addr();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            srv.stop();
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("stop() returned");
        // Nothing listens there any more.
        assert!(TcpStream::connect(addr).is_err());
        // Dropping a server stops it too.
        drop(server(Options::default()));
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

    #[test]
    fn wildcard_addresses_are_woken_through_loopback() {
        assert_eq!(
            wake_addr("0.0.0.0:9".parse().unwrap()),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(
            wake_addr("[::]:9".parse().unwrap()),
            "[::1]:9".parse().unwrap()
        );
        assert_eq!(
            wake_addr("10.1.2.3:9".parse().unwrap()),
            "10.1.2.3:9".parse().unwrap()
        );
    }

    // -------------------------------------------------------- affinity

    #[test]
    fn housekeeping_cpus_leave_out_the_shards() {
        let allowed = allowed_cpus();
        assert!(housekeeping_cpus(&allowed).is_empty());
        assert_eq!(housekeeping_cpus(&[]), allowed);
    }
}
