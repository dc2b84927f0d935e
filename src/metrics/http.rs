//! The HTTP/1.1 server under the endpoint: it accepts connections, reads
//! one request head from each, asks its handler for the response, sends it
//! and closes — with two threads, whatever the number of clients.
//!
//! # Two threads
//!
//! * The **accept thread** blocks in `accept(2)`. It counts the
//!   connections in service: past [`Options::max_clients`] it answers
//!   `503` at once, without reading the request, and closes. Otherwise it
//!   hands the connection, stamped with the time it was accepted, to the
//!   worker through a bounded queue (`max_clients` deep, so the count
//!   keeps it from ever filling).
//! * The **worker thread** serves every connection in service at once:
//!   each is a small state machine (read the head, write the response,
//!   linger) driven by non-blocking reads and writes.
//!
//! One thread could accept too, but it would then poll the listener for
//! ever; with the accept thread blocked in `accept(2)` and the worker
//! blocked on the queue while it has no connection, an idle endpoint
//! costs nothing.
//!
//! # Slow and silent clients
//!
//! The worker never waits on a client. Each pass over the open
//! connections does the reading and writing that is possible now; a pass
//! that moves nothing is followed by a sleep of one [`TICK`] (cut short
//! by a new connection). A client that sends half a head and stalls, or
//! never takes its response, therefore holds one of the `max_clients`
//! places and nothing else, and only until its deadline:
//!
//! * the whole head must arrive within [`Options::request_timeout`] of the
//!   accept, or the client is answered `408`;
//! * the response must be taken within [`Options::write_timeout`], or the
//!   connection is closed;
//! * the linger after the response (see [`Phase::Lingering`]) lasts at most
//!   [`LINGER`] and [`LINGER_BYTES`].
//!
//! Other requests are served meanwhile; when stalled clients hold every
//! place, new ones get `503` until the first deadline passes. The worker
//! blocks only in its handler: `/connections` waits up to
//! [`Options::shard_timeout`](super::Options::shard_timeout) for the shards.
//!
//! Both threads run on CPUs no shard is pinned to, when there are any, so
//! that a scrape does not preempt a shard.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::request::{HeadBuffer, HttpError, Request};
use super::response::Response;
use super::Options;
use crate::sys::{allowed_cpus, pin_current_thread};

/// How long, and how many bytes, the server keeps reading after its
/// response before it closes (see [`Phase::Lingering`]).
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// How long the worker sleeps after a pass that moved nothing, while it
/// has connections: the delay it adds to a request, and 500 wake-ups a
/// second while a client holds a connection open without sending.
const TICK: Duration = Duration::from_millis(2);

/// How long the accept thread gives a refused client to take its `503`.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_millis(100);

/// A running server. Dropping it stops it, like [`Server::stop`].
#[derive(Debug)]
pub(super) struct Server {
    /// The address served, with port 0 resolved.
    addr: SocketAddr,
    /// Set by [`Server::stop`]: tells the accept thread that its wake-up
    /// means "stop", and the worker to close what it holds.
    stopping: Arc<AtomicBool>,
    /// A second handle on the listening socket, to wake the accept thread.
    waker: TcpListener,
    /// The accept thread, then the worker (empty once stopped).
    threads: Vec<JoinHandle<()>>,
}

/// Starts serving `listener` (bound to `addr`) with `handler`, within
/// `options`' bounds, on threads kept off `shard_cpus`.
pub(super) fn start<H>(
    listener: TcpListener,
    addr: SocketAddr,
    shard_cpus: &[usize],
    options: Options,
    handler: H,
) -> io::Result<Server>
where
    H: FnMut(&Request) -> Response + Send + 'static,
{
    let waker = listener.try_clone()?;
    let stopping = Arc::new(AtomicBool::new(false));
    let (queue, queued) = mpsc::sync_channel(options.max_clients);
    let cpus = housekeeping_cpus(shard_cpus);
    let max_clients = options.max_clients;
    let worker = {
        let stopping = stopping.clone();
        spawn_off_shards("tern-metrics-io", cpus.clone(), move || {
            serve_connections(queued, handler, &options, &stopping)
        })?
    };
    // Should this fail, the queue's sender is dropped with the closure and
    // the worker ends on its own.
    let accept = {
        let stopping = stopping.clone();
        spawn_off_shards("tern-metrics", cpus, move || {
            accept_loop(listener, queue, max_clients, &stopping)
        })?
    };
    Ok(Server {
        addr,
        stopping,
        waker,
        threads: vec![accept, worker],
    })
}

impl Server {
    /// The address served, with port 0 resolved.
    pub(super) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes the connections still open and joins both
    /// threads. Returns within a [`TICK`], or within
    /// [`Options::shard_timeout`](super::Options::shard_timeout) if a
    /// `/connections` request is being answered.
    pub(super) fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
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
        // The accept thread first: its end closes the queue, which wakes a
        // worker waiting for connections.
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a metrics thread panicked");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
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

/// CPUs this process may use that no shard is pinned to.
fn housekeeping_cpus(shard_cpus: &[usize]) -> Vec<usize> {
    allowed_cpus()
        .into_iter()
        .filter(|c| !shard_cpus.contains(c))
        .collect()
}

/// Starts a thread named `name` that pins itself to `cpus` (unless there
/// are none) and runs `body`.
fn spawn_off_shards(
    name: &'static str,
    cpus: Vec<usize>,
    body: impl FnOnce() + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name(name.into()).spawn(move || {
        if !cpus.is_empty() {
            if let Err(e) = pin_current_thread(&cpus) {
                tracing::debug!(error = %e, thread = name, "metrics thread left unpinned");
            }
        }
        body();
    })
}

/// Holds a place in the count of connections in service; gives it back
/// when dropped, with the connection it travels with.
struct InService(Arc<AtomicUsize>);

impl Drop for InService {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection on its way from the accept thread to the worker.
struct Accepted {
    stream: TcpStream,
    /// When it was accepted: the request deadline counts from here.
    at: Instant,
    /// Its place among the `max_clients`.
    slot: InService,
}

fn accept_loop(
    listener: TcpListener,
    queue: SyncSender<Accepted>,
    max_clients: usize,
    stopping: &AtomicBool,
) {
    let in_service = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = listener.accept();
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it
                // was accepted: say so, and do not spin on it.
                tracing::warn!(error = %e, "metrics: accept failed");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if in_service.fetch_add(1, Ordering::SeqCst) >= max_clients {
            in_service.fetch_sub(1, Ordering::SeqCst);
            refuse(stream);
            continue;
        }
        let accepted = Accepted {
            stream,
            at: Instant::now(),
            slot: InService(in_service.clone()),
        };
        match queue.try_send(accepted) {
            Ok(()) => {}
            // The count keeps the queue from filling; should it fill all
            // the same, the client is refused rather than waited for.
            Err(TrySendError::Full(accepted)) => refuse(accepted.stream),
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!("the metrics worker has stopped: closing the metrics endpoint");
                return;
            }
        }
    }
}

/// Answers `503` without reading the request (the accept thread must not
/// wait on a client).
fn refuse(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(REFUSAL_WRITE_TIMEOUT));
    let response = Response::text(503, "too many metrics requests at once: retry\n");
    let _ = stream.write_all(&response.encode(false));
}

/// The worker: serves the connections the accept thread queues until the
/// queue closes or the server stops.
fn serve_connections<H>(
    queued: Receiver<Accepted>,
    mut handler: H,
    options: &Options,
    stopping: &AtomicBool,
) where
    H: FnMut(&Request) -> Response,
{
    let mut open: Vec<Connection> = Vec::with_capacity(options.max_clients);
    let mut progressed = false;
    loop {
        // With nothing to serve, sleep until a connection comes; after a
        // pass that moved nothing, for a tick at most.
        let next = if open.is_empty() {
            queued.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else if progressed {
            queued.recv_timeout(Duration::ZERO)
        } else {
            queued.recv_timeout(TICK)
        };
        match next {
            Ok(accepted) => open.extend(Connection::new(accepted, options)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        open.extend(
            queued
                .try_iter()
                .filter_map(|accepted| Connection::new(accepted, options)),
        );
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        progressed = false;
        open.retain_mut(|c| match c.advance(now, &mut handler, options) {
            Step::Open { progressed: p } => {
                progressed |= p;
                true
            }
            Step::Closed => false,
        });
    }
}

/// One client connection in the worker's care.
struct Connection {
    /// Non-blocking: the worker never waits on one client.
    stream: TcpStream,
    phase: Phase,
    /// When the current phase must be over: for [`Phase::Reading`],
    /// [`Options::request_timeout`] after the accept; for the others,
    /// counted from when they began.
    deadline: Instant,
    /// Its place among the `max_clients`, given back when it is dropped.
    _slot: InService,
}

/// Where a connection is in its one exchange.
enum Phase {
    /// Receiving the request head.
    Reading(HeadBuffer),
    /// Sending `response[sent..]`.
    Writing { response: Vec<u8>, sent: usize },
    /// The response is sent and so is a FIN; reading and discarding what
    /// the client sends until it closes, `drained` bytes so far. Closing a
    /// socket that still has unread input sends a reset, which can make
    /// the client drop the response it has not read yet; so what the client
    /// sent beyond its head (a body, a pipelined request, the rest of an
    /// oversized head) is read first, for a bounded time and amount.
    Lingering { drained: usize },
}

/// What [`Connection::advance`] left a connection in.
enum Step {
    /// Still open; `progressed` if any byte moved or the phase changed.
    Open { progressed: bool },
    /// Finished (served, given up on, or closed by the client): drop it.
    Closed,
}

impl Connection {
    /// Takes over an accepted connection; `None` (closing it) if its
    /// socket cannot be made non-blocking.
    fn new(accepted: Accepted, options: &Options) -> Option<Connection> {
        if let Err(e) = accepted.stream.set_nonblocking(true) {
            tracing::debug!(error = %e, "metrics: dropping a connection");
            return None;
        }
        Some(Connection {
            stream: accepted.stream,
            phase: Phase::Reading(HeadBuffer::new(options.max_head)),
            deadline: accepted.at + options.request_timeout,
            _slot: accepted.slot,
        })
    }

    /// Does all the reading and writing this connection allows without
    /// blocking, answering the request with `handler` once its head is
    /// in. Deadlines are compared with `now`.
    fn advance<H>(&mut self, now: Instant, handler: &mut H, options: &Options) -> Step
    where
        H: FnMut(&Request) -> Response,
    {
        let mut progressed = false;
        loop {
            match &mut self.phase {
                Phase::Reading(head) => {
                    let outcome = match head.spare() {
                        Err(too_large) => Err(too_large),
                        Ok(spare) => match nonblocking(|| self.stream.read(spare)) {
                            Io::Moved(n) => {
                                progressed = true;
                                match head.filled(n) {
                                    Ok(None) => continue,
                                    Ok(Some(request)) => Ok(request),
                                    Err(refused) => Err(refused),
                                }
                            }
                            Io::Blocked if now < self.deadline => return Step::Open { progressed },
                            Io::Blocked => Err(HttpError::Timeout),
                            // Gone before sending a whole request.
                            Io::Ended => return Step::Closed,
                        },
                    };
                    self.phase = Phase::Writing {
                        response: answer(outcome, handler),
                        sent: 0,
                    };
                    self.deadline = Instant::now() + options.write_timeout;
                    progressed = true;
                }
                Phase::Writing { response, sent } if *sent == response.len() => {
                    if self.stream.shutdown(Shutdown::Write).is_err() {
                        return Step::Closed;
                    }
                    self.phase = Phase::Lingering { drained: 0 };
                    self.deadline = Instant::now() + LINGER;
                    progressed = true;
                }
                Phase::Writing { response, sent } => {
                    match nonblocking(|| self.stream.write(&response[*sent..])) {
                        Io::Moved(n) => {
                            *sent += n;
                            progressed = true;
                        }
                        Io::Blocked if now < self.deadline => return Step::Open { progressed },
                        // Out of time, or the client is gone.
                        Io::Blocked | Io::Ended => return Step::Closed,
                    }
                }
                Phase::Lingering { drained } if *drained >= LINGER_BYTES => return Step::Closed,
                Phase::Lingering { drained } => {
                    let mut scratch = [0u8; 4096];
                    match nonblocking(|| self.stream.read(&mut scratch)) {
                        Io::Moved(n) => {
                            *drained += n;
                            progressed = true;
                        }
                        Io::Blocked if now < self.deadline => return Step::Open { progressed },
                        // Out of time, or the client has closed (done).
                        Io::Blocked | Io::Ended => return Step::Closed,
                    }
                }
            }
        }
    }
}

/// What a non-blocking read or write came to.
enum Io {
    /// This many bytes (never 0) were read or written.
    Moved(usize),
    /// Nothing can move until the socket is ready again.
    Blocked,
    /// The end of the stream, or an error: the connection is over.
    Ended,
}

/// Runs a non-blocking read or write (`op`), again after `EINTR`, and
/// says what it came to.
fn nonblocking(mut op: impl FnMut() -> io::Result<usize>) -> Io {
    loop {
        return match op() {
            Ok(0) => Io::Ended,
            Ok(n) => Io::Moved(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => Io::Blocked,
            Err(_) => Io::Ended,
        };
    }
}

/// The bytes to send for a request head that was read (or refused). A
/// handler that panics costs its request a `500`, not the endpoint.
fn answer<H>(head: Result<Request, HttpError>, handler: &mut H) -> Vec<u8>
where
    H: FnMut(&Request) -> Response,
{
    let request = match head {
        Ok(request) => request,
        Err(refused) => return refused.response().encode(false),
    };
    let response =
        panic::catch_unwind(AssertUnwindSafe(|| handler(&request))).unwrap_or_else(|_| {
            tracing::error!(path = %request.path, "metrics: answering a request panicked");
            Response::text(500, "internal error\n")
        });
    tracing::debug!(
        path = %request.path,
        status = response.status,
        "metrics request"
    );
    response.encode(request.method == "HEAD")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A server on an ephemeral loopback port whose handler answers
    /// `ok\n`, or 16 MiB to `/big`, or panics on `/panic`.
    fn server(options: Options) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        start(
            listener,
            addr,
            &[],
            options,
            |request: &Request| match request.path.as_str() {
                "/big" => Response::text(200, vec![b'x'; BIG]),
                "/panic" => panic!("a handler bug"),
                _ => Response::text(200, "ok\n"),
            },
        )
        .unwrap()
    }

    /// The size of `/big`: more than the kernel buffers of both ends hold.
    const BIG: usize = 16 << 20;

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

    const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\n\r\n";

    /// A request sent to `addr` now must be answered `200`.
    fn assert_served(addr: SocketAddr) {
        let ok = exchange(addr, HEALTHZ);
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
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
        let ok = exchange(srv.local_addr(), HEALTHZ);
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nok\n"), "{ok}");
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
    }

    /// A connection that sent `bytes` and waits; panics if the server
    /// answers it within a short while.
    fn stalled(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(bytes).unwrap();
        s
    }

    fn assert_unanswered(mut s: &TcpStream) {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut byte = [0u8; 1];
        let err = s.read(&mut byte).expect_err("the server answered");
        assert!(
            matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{err}"
        );
    }

    #[test]
    fn clients_that_stall_halfway_do_not_hold_up_the_others() {
        // A request deadline far beyond the test client's read timeout
        // (10 s): a server that waited on a stalled client before serving
        // the next one would fail every exchange below.
        let srv = server(Options {
            max_clients: 4,
            request_timeout: Duration::from_secs(120),
            ..Options::default()
        });
        let addr = srv.local_addr();
        let mut half = stalled(addr, b"GET /healthz HTTP/1.1\r\n");
        let silent = stalled(addr, b"");
        for _ in 0..10 {
            assert_served(addr);
        }
        assert_unanswered(&half);
        assert_unanswered(&silent);
        // The half-sent head is still being read: finishing it is enough.
        half.write_all(b"\r\n").unwrap();
        half.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut out = String::new();
        half.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    }

    #[test]
    fn a_client_that_does_not_take_its_response_does_not_hold_up_the_others() {
        let srv = server(Options {
            write_timeout: Duration::from_secs(120),
            ..Options::default()
        });
        let addr = srv.local_addr();
        // A small receive window, never read: the server's writes of /big
        // soon would block.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut reader = TcpStream::from(socket);
        reader.write_all(b"GET /big HTTP/1.1\r\n\r\n").unwrap();
        for _ in 0..10 {
            assert_served(addr);
        }
        // It gets the whole response once it reads.
        reader
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(got.len() > BIG, "{} bytes", got.len());
    }

    #[test]
    fn a_panicking_handler_costs_one_request_a_500() {
        let srv = server(Options::default());
        let reply = exchange(srv.local_addr(), b"GET /panic HTTP/1.1\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.1 500 "), "{reply}");
        assert_served(srv.local_addr());
    }

    #[test]
    fn past_max_clients_connections_get_503_and_service_resumes() {
        let srv = server(Options {
            max_clients: 2,
            ..Options::default()
        });
        // Two clients that send nothing hold both places...
        let idle: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect(srv.local_addr()).unwrap())
            .collect();
        // ...so a third is turned away at once (once the server has
        // accepted the idle ones: until then it may be served).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply = exchange(srv.local_addr(), HEALTHZ);
            if reply.starts_with("HTTP/1.1 503 ") {
                break;
            }
            assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
            assert!(Instant::now() < deadline, "never refused");
        }
        // Once they hang up, requests are served again.
        drop(idle);
        loop {
            let reply = exchange(srv.local_addr(), HEALTHZ);
            if reply.starts_with("HTTP/1.1 200 ") {
                break;
            }
            assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
            assert!(Instant::now() < deadline, "never served again");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn stop_wakes_the_threads_closes_connections_and_frees_the_port() {
        let mut srv = server(Options::default());
        let addr = srv.local_addr();
        let mut held = stalled(addr, b"GET /");
        // Served once, so the worker is known to hold `held` too.
        assert_served(addr);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            srv.stop();
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("stop() returned");
        // Nothing listens there any more, and the connection is closed.
        assert!(TcpStream::connect(addr).is_err());
        held.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut out = Vec::new();
        assert!(matches!(held.read_to_end(&mut out), Ok(0) | Err(_)));
        // Dropping a server stops it too.
        drop(server(Options::default()));
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

    #[test]
    fn housekeeping_cpus_leave_out_the_shards() {
        let allowed = allowed_cpus();
        assert!(housekeeping_cpus(&allowed).is_empty());
        assert_eq!(housekeeping_cpus(&[]), allowed);
    }
}
