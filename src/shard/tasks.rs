//! The shard's glommio tasks: sockets in, the core in the middle, sockets
//! out.
//!
//! * one **accept loop** per listener: admits a connection (or refuses it,
//!   in its listener's protocol, past `--max-connections`), greets a NATS
//!   client with `INFO`, and spawns its task;
//! * one **connection task** per client: it reads into the connection's
//!   [`Framer`], decodes every complete frame of the read with its
//!   protocol (the line parser, or the NATS [`Decoder`], which switches the
//!   framer between control lines and counted payloads) and hands the
//!   commands to the [`Core`], then writes out each connection the batch
//!   touched, once (so under load many `MSG`s leave in one write, and at low
//!   load a message leaves at once), and hands the batch's forwards to the
//!   mesh. The same task finishes writes that the socket could not take at
//!   once: its waker is the one registered for the socket's writability;
//! * one **mesh task** that applies batches from the other shards (never
//!   waiting on anything) and answers the relay's [`Control`] requests,
//!   among them the stop;
//! * one **keep-alive task** that pings NATS clients (and leaf links) every
//!   `--nats-ping-interval` and closes the stale ones;
//! * on shard 0, one **link task** per leaf remote ([`link`]): it connects
//!   to the hub, reads it, and connects again after a failure.
//!
//! Every accept loop and connection task is spawned through one
//! [`Gate`]: on stop, [`run`] triggers the [`Shutdown`], lets clients take
//! what they are owed for at most [`SHUTDOWN_FLUSH`], and returns once the
//! gate reports every task finished. A connection is owed what other shards
//! still forward until each has said it stopped reading
//! ([`crate::mesh::MeshMsg::Stopped`]), so no accepted message is dropped
//! between shards.
//!
//! Back-pressure: a connection task stops reading while a mesh path has more
//! than [`super::core::MAX_MESH_BACKLOG`] messages queued, so a full path
//! slows the publishers feeding it (TCP back-pressure) instead of stalling
//! the executor or growing memory.
//!
//! All shard state lives in `RefCell`s borrowed for one synchronous step
//! and never across an `await`, so no lock is ever taken.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Gate;

use super::conns::{Conn, Wire};
use super::core::{Core, InboundBatch, Next};
use super::shutdown::Shutdown;
use super::socket::{self, Socket};
use super::{Control, Listener, NatsIdentity, Protocol, ShardSpec};
use crate::auth::{Credentials, Grant, Refusal};
use crate::budget::MemoryBudget;
use crate::config::Config;
use crate::framing::{FrameError, Framer};
use crate::mesh::{self, Doorbell, Endpoint};
use crate::outbound::Outbound;
use crate::protocol::nats::{self, ConnectOptions, Decoder, Op, ServerInfo};
use crate::protocol::{line, Command, ProtoError};
use crate::router::ConnId;
use crate::stats::ShardStats;
use crate::tls::TlsAcceptor;

mod link;

/// How long shutdown waits for clients to take what they are owed.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// Connections closed between two trims of the allocator's free memory
/// (see [`Shard::after_close`]). A trim took 0.5-6.7 ms in tests/scale.rs
/// (10 trims over 10,000 closes on 2 shards); at this spacing even a
/// connection storm spends little of the shard on them.
const TRIM_AFTER_CLOSES: usize = 1024;

/// Bytes a connection may have buffered before it authenticates: an `AUTH`
/// frame or a NATS `CONNECT` (nats-server's control lines stop at 4 KiB;
/// one carrying a JWT is a few KiB) fits with room to spare.
const MAX_LOGIN_BYTES: usize = 16 << 10;

/// Longest a closing TLS connection waits to send what rustls holds and
/// its closing alert.
const TLS_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Inbound batches applied per path before the mesh task lets other tasks
/// run.
const BATCHES_PER_ROUND: usize = 64;

/// A shard's state as its tasks share it.
struct Shard {
    config: Arc<Config>,
    stats: Arc<ShardStats>,
    /// Open connections on the whole relay, for `--max-connections`.
    open: Arc<AtomicUsize>,
    /// The relay-wide memory budget (`--max-memory`).
    budget: Arc<MemoryBudget>,
    /// The next connection id, shared by every shard.
    next_cid: Arc<AtomicU64>,
    /// What NATS clients are told of the relay.
    nats: Arc<NatsIdentity>,
    core: RefCell<Core>,
    /// Each connection's socket, by [`ConnId`]: the core never sees them.
    sockets: RefCell<Vec<Option<Socket>>>,
    /// The TLS server side, if clients must speak TLS.
    tls: Option<Arc<TlsAcceptor>>,
    /// Connection tasks paused for mesh back-pressure.
    mesh_waiters: RefCell<Vec<Waker>>,
    /// Connections closed since memory was last given back (see
    /// [`Shard::after_close`]).
    closed_since_trim: Cell<usize>,
    shutdown: Shutdown,
}

/// Runs a shard until it is asked to stop and every connection has
/// closed; called inside its executor. `ready` is called once it accepts.
pub async fn run(spec: ShardSpec, ready: impl FnOnce(Result<(), String>)) {
    let ShardSpec {
        id,
        shards,
        config,
        listeners,
        endpoint,
        stats,
        open,
        budget,
        next_cid,
        nats,
        control,
        tls,
        links,
    } = spec;
    let Endpoint {
        doorbell,
        outlets,
        inlets,
        ..
    } = endpoint;
    let shard = Rc::new(Shard {
        core: RefCell::new(Core::new(
            id,
            shards,
            &config,
            stats.clone(),
            budget.clone(),
            outlets,
        )),
        budget,
        config,
        stats,
        open,
        next_cid,
        nats,
        sockets: RefCell::new(Vec::new()),
        tls,
        mesh_waiters: RefCell::new(Vec::new()),
        closed_since_trim: Cell::new(0),
        shutdown: Shutdown::default(),
    });
    let gate = Gate::new();
    for Listener { fd, protocol, addr } in listeners {
        // SAFETY: `fd` is an open, bound, listening TCP socket that we own
        // (an `OwnedFd` from the relay); ownership moves into the listener,
        // which closes it on drop.
        let listener = unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) };
        let task = gate.spawn(accept_loop(
            shard.clone(),
            listener,
            protocol,
            addr,
            gate.clone(),
        ));
        match task {
            Ok(task) => {
                task.detach();
            }
            Err(e) => {
                ready(Err(format!("cannot start an accept loop: {e}")));
                return;
            }
        }
    }
    if let Ok(task) = gate.spawn(keep_alive(shard.clone())) {
        task.detach();
    }
    for spec in links {
        if let Ok(task) = gate.spawn(link::keep_link(shard.clone(), spec)) {
            task.detach();
        }
    }
    ready(Ok(()));
    let serve = mesh_loop(shard.clone(), inlets, doorbell, control);
    let drain = async {
        shard.shutdown.wait().await;
        // Clients take what they are owed until the deadline, then every
        // connection closes regardless.
        let deadline = glommio::spawn_local({
            let shard = shard.clone();
            async move {
                glommio::timer::sleep(SHUTDOWN_FLUSH).await;
                shard.core.borrow_mut().abandon_all();
            }
        });
        // Every accept loop and connection task has ended (they are
        // spawned only through the gate, which is open until now).
        let _ = gate.close().await;
        drop(deadline);
    };
    // The mesh task keeps running while connections drain (other shards'
    // barriers are still answered) and is dropped once they are gone.
    futures_lite::future::or(serve, drain).await;
}

async fn accept_loop(
    shard: Rc<Shard>,
    listener: TcpListener,
    protocol: Protocol,
    addr: SocketAddr,
    gate: Gate,
) {
    loop {
        let accepted = shard.shutdown.unless_stopped(listener.accept()).await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                // EMFILE and friends: say so, back off briefly, go on.
                tracing::warn!(shard = shard.core.borrow().id(), error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let limit = shard.config.max_connections;
        if shard.open.fetch_add(1, Ordering::Relaxed) >= limit {
            shard.open.fetch_sub(1, Ordering::Relaxed);
            shard.stats.count_error(ProtoError::TooManyConnections);
            tracing::warn!(%peer, limit, "connection refused: --max-connections reached");
            refuse_connection(&stream, protocol, shard.config.terminator.as_bytes());
            continue;
        }
        let _ = stream.set_nodelay(true);
        match gate.spawn(connection(shard.clone(), stream, peer, protocol, addr)) {
            Ok(task) => {
                task.detach();
            }
            // The gate is closing: the shard is stopping.
            Err(_) => {
                shard.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// Tells a connection refused at accept why, in its protocol, best effort:
/// one non-blocking send into its fresh (empty) socket buffer, then close.
fn refuse_connection(stream: &TcpStream, protocol: Protocol, terminator: &[u8]) {
    let mut msg = Vec::new();
    match protocol {
        Protocol::Line => line::encode_err(&mut msg, ProtoError::TooManyConnections, terminator),
        Protocol::Nats => nats::encode_err(
            &mut msg,
            nats::NatsError::MaxConnections.text().unwrap_or_default(),
        ),
    }
    // SAFETY: the descriptor belongs to `stream`, which is borrowed for
    // longer than `fd` lives (glommio's stream implements only `AsRawFd`).
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let _ = crate::sys::send_now(fd, &msg);
}

/// Every `--nats-ping-interval`, pings the NATS clients and closes the
/// stale ones (see [`Core::ping_nats_clients`]).
async fn keep_alive(shard: Rc<Shard>) {
    let interval = shard.config.nats_ping_interval;
    loop {
        let slept = shard
            .shutdown
            .unless_stopped(glommio::timer::sleep(interval))
            .await;
        if slept.is_none() {
            return;
        }
        shard.core.borrow_mut().ping_nats_clients();
        shard.flush();
    }
}

/// How a connection's frames are decoded.
enum Session {
    Line,
    /// The NATS decoder's state (mode, options, the publish in progress).
    Nats(Box<Decoder>),
}

/// [`Core::after_frame`], or [`Next::Yield`] once the executor's preempt
/// timer says this task has run long enough: checked after every frame (a
/// load and a compare), because one frame may cost milliseconds (a publish
/// matching 8,192 wildcard patterns took ~5 ms here), and a read chunk holds
/// hundreds of frames.
#[inline]
fn after_frame(core: &mut Core, id: ConnId, next: Next) -> Next {
    match core.after_frame(id, next) {
        Next::Read if glommio::executor().need_preempt() => Next::Yield,
        other => other,
    }
}

/// One connection's read buffer in the shard's input gauge
/// ([`ShardStats::input_bytes`], which the memory budget reads): kept at the
/// framer's size, and taken out of the gauge when the connection ends.
struct InputHeld {
    stats: Arc<ShardStats>,
    bytes: usize,
}

impl InputHeld {
    fn new(stats: Arc<ShardStats>) -> Self {
        InputHeld { stats, bytes: 0 }
    }

    /// The buffer now holds `bytes`.
    #[inline]
    fn set(&mut self, bytes: usize) {
        if bytes > self.bytes {
            self.stats.input_bytes.add((bytes - self.bytes) as u64);
        } else {
            self.stats.input_bytes.sub((self.bytes - bytes) as u64);
        }
        self.bytes = bytes;
    }
}

impl Drop for InputHeld {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// What a connection that has not authenticated yet does next (see
/// [`Shard::process_login`]).
enum Login {
    /// What it would do anyway: read on, wait, or close.
    Then(Next),
    /// Check these credentials; a NATS client's `CONNECT` options take
    /// effect once they pass.
    Verify(Credentials, Option<Box<ConnectOptions>>),
}

/// A NATS client's credentials, as its `CONNECT` gives them.
fn nats_credentials(options: &ConnectOptions) -> Credentials {
    if !options.auth_token.is_empty() {
        Credentials::Token(options.auth_token.clone())
    } else if !options.user.is_empty() {
        Credentials::User {
            user: options.user.clone(),
            pass: options.pass.clone(),
        }
    } else {
        Credentials::None
    }
}

/// Drives one connection from accept to close: the TLS handshake if the
/// relay speaks TLS, authentication if it has users, then its frames.
async fn connection(
    shard: Rc<Shard>,
    stream: TcpStream,
    peer: SocketAddr,
    protocol: Protocol,
    local: SocketAddr,
) {
    let cid = shard.next_cid.fetch_add(1, Ordering::Relaxed);
    let Some((socket, greeted)) = shard.secure(stream, peer, protocol, local, cid).await else {
        shard.open.fetch_sub(1, Ordering::Relaxed);
        return;
    };
    let (id, logged_in) = shard.add(socket, peer, protocol, local, cid, greeted);
    // Until it authenticates: the time it has left.
    let mut login = match &shard.config.auth {
        Some(auth) if !logged_in => Some(Instant::now() + auth.timeout),
        _ => None,
    };
    let (mut framer, mut session) = match protocol {
        Protocol::Line => (
            Framer::with_read_size(
                shard.config.terminator.clone(),
                shard.config.max_frame,
                shard.config.read_size,
            ),
            Session::Line,
        ),
        Protocol::Nats => (
            nats::new_framer(shard.config.max_frame),
            Session::Nats(Box::new(Decoder::new(shard.config.max_frame))),
        ),
    };
    let mut eof = false;
    let mut input = InputHeld::new(shard.stats.clone());
    loop {
        let next = match &mut session {
            _ if login.is_some() => match shard.process_login(id, &mut framer, &mut session, eof) {
                Login::Then(next) => next,
                Login::Verify(credentials, options) => {
                    shard.log_in(id, credentials, options).await;
                    if shard
                        .core
                        .borrow()
                        .conns()
                        .get(id)
                        .is_some_and(|c| !c.leaving())
                    {
                        login = None;
                    }
                    shard.flush();
                    continue;
                }
            },
            Session::Line => shard.process(id, &mut framer, eof),
            Session::Nats(decoder) => shard.process_nats(id, &mut framer, decoder, eof),
        };
        input.set(framer.allocated());
        shard.flush();
        match next {
            Next::Close => break,
            Next::WaitBarrier => {
                poll_fn(|cx| shard.poll_conn(id, cx, |_, c| !c.waiting_barrier || c.leaving()))
                    .await;
                continue;
            }
            Next::WaitMesh | Next::Yield | Next::Stall => {
                shard.pause(id, next).await;
                continue;
            }
            Next::Read if eof => break,
            Next::Read => {}
        }
        // Before it has authenticated, a client gets no more than
        // MAX_LOGIN_BYTES of buffer: what it may send first (`AUTH`, a
        // `CONNECT`) is small, and strangers must not make the relay hold
        // `--max-frame` each.
        if login.is_some() && framer.buffered() > MAX_LOGIN_BYTES {
            shard.core.borrow_mut().refuse_login(id, Refusal::Malformed);
            shard.flush();
            continue;
        }
        // A frame still growing past the read size while the relay is over
        // its memory budget: refused, and the connection closed with it.
        if framer.buffered() > shard.config.read_size && shard.budget.exceeded() {
            shard.core.borrow_mut().refuse_for_memory(id);
            continue;
        }
        let read = match login {
            None => poll_fn(|cx| shard.poll_read(id, cx, &mut framer)).await,
            Some(deadline) => {
                let read = async { Some(poll_fn(|cx| shard.poll_read(id, cx, &mut framer)).await) };
                let late = async {
                    glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
                    None
                };
                match futures_lite::future::or(read, late).await {
                    Some(read) => read,
                    None => {
                        shard.core.borrow_mut().refuse_login(id, Refusal::Timeout);
                        shard.flush();
                        continue;
                    }
                }
            }
        };
        match read {
            Some(0) | None => eof = true,
            Some(n) => {
                framer.advance(n);
                input.set(framer.allocated());
            }
        }
        glommio::yield_if_needed().await;
    }
    // Half-close or shutdown: hand over what the client is owed first
    // (at shutdown, also what other shards still forward).
    poll_fn(|cx| shard.poll_conn(id, cx, Core::is_done)).await;
    shard.close_tls(id).await;
    shard.remove(id);
}

async fn mesh_loop(
    shard: Rc<Shard>,
    inlets: Vec<mesh::Inlet>,
    doorbell: Arc<Doorbell>,
    control: crossbeam_channel::Receiver<Control>,
) {
    // Per inlet, a batch left part-applied by a stall.
    let held: RefCell<Vec<Option<InboundBatch>>> =
        RefCell::new(inlets.iter().map(|_| None).collect());
    let has_work = || {
        !control.is_empty()
            || inlets.iter().any(mesh::Inlet::has_pending)
            || held.borrow().iter().any(Option::is_some)
    };
    loop {
        poll_fn(|cx| {
            // Re-try paths that were full first: a receiver that drained
            // one rings us, which is one way we get here.
            shard.retry_outlets();
            doorbell.poll(cx, has_work)
        })
        .await;
        // A congested receiver here pauses what other shards send too: the
        // paths fill, and their publishers wait for room (back-pressure
        // instead of closing receivers that read as fast as they can).
        if shard.core.borrow().stalled() {
            shard.stall().await;
        }
        'inlets: for (inlet, held) in inlets.iter().zip(held.borrow_mut().iter_mut()) {
            // Bounded work per inlet per round keeps other tasks served.
            for _ in 0..BATCHES_PER_ROUND {
                let mut batch = match held.take() {
                    Some(batch) => batch,
                    None => match inlet.try_recv() {
                        Some(msgs) => InboundBatch::new(inlet.from, msgs),
                        None => break,
                    },
                };
                if !shard.core.borrow_mut().apply(&mut batch) {
                    *held = Some(batch);
                    inlet.release_sender();
                    break 'inlets;
                }
            }
            inlet.release_sender();
        }
        shard.flush();
        while let Ok(request) = control.try_recv() {
            shard.answer(request);
        }
        glommio::yield_if_needed().await;
    }
}

impl Shard {
    /// Waits while the shard is [`stalled`](Core::stalled), for at most
    /// `--max-stall`; past that, the receivers still congested are left
    /// behind ([`Core::stall_timed_out`]).
    /// Waits out what `next` asks a connection task to wait for before it
    /// handles or reads more: room on the mesh (back-pressure: a path to
    /// another shard is full), the executor's other tasks (its time slice
    /// is used), or congested receivers ([`Shard::stall`]). Any other
    /// `next` returns at once.
    async fn pause(&self, id: ConnId, next: Next) {
        match next {
            Next::WaitMesh => poll_fn(|cx| self.poll_mesh_space(id, cx)).await,
            Next::Yield => glommio::yield_if_needed().await,
            Next::Stall => self.stall().await,
            _ => {}
        }
    }

    async fn stall(&self) {
        let caught_up = async {
            poll_fn(|cx| self.core.borrow_mut().poll_stall(cx)).await;
            true
        };
        let timed_out = async {
            glommio::timer::sleep(self.config.max_stall).await;
            false
        };
        if !futures_lite::future::or(caught_up, timed_out).await {
            self.core.borrow_mut().stall_timed_out();
        }
    }

    fn answer(&self, request: Control) {
        match request {
            Control::Connections(reply) => {
                let list = self.core.borrow().connections(Instant::now());
                // The asker may have given up waiting: nothing to do then.
                let _ = reply.send(list);
            }
            Control::Stop => self.stop(),
        }
    }

    /// The one stop: the signal for the tasks that wait on it, and the
    /// core's state for the connections.
    fn stop(&self) {
        self.core.borrow_mut().begin_shutdown();
        // Sends the mesh's `Stopped` marks now, not at the next flush.
        self.flush();
        self.shutdown.trigger();
        let waiters = std::mem::take(&mut *self.mesh_waiters.borrow_mut());
        waiters.into_iter().for_each(Waker::wake);
    }

    /// Admits a connection accepted on a `protocol` listener bound to
    /// `local`, as connection `cid`; a NATS client not yet `greeted` is
    /// greeted with `INFO`. Also whether its client certificate logged it
    /// in as a user.
    fn add(
        &self,
        socket: Socket,
        peer: SocketAddr,
        protocol: Protocol,
        local: SocketAddr,
        cid: u64,
        greeted: bool,
    ) -> (ConnId, bool) {
        let wire = match protocol {
            Protocol::Line => Wire::line(),
            Protocol::Nats => Wire::nats(),
        };
        let names = match &self.config.auth {
            Some(auth) if auth.map_certificates => socket.certificate_names(),
            _ => Vec::new(),
        };
        let mut core = self.core.borrow_mut();
        let id = core.open(peer, cid, wire, Instant::now());
        if protocol == Protocol::Nats && !greeted {
            core.greet(id, &self.info(cid, peer, local));
        }
        // A client certificate that names a user logs that user in.
        let grant = self
            .config
            .auth
            .as_ref()
            .and_then(|a| a.verify_certificate(&names));
        let logged_in = grant.is_some();
        if let Some(grant) = grant {
            core.authenticated(id, grant);
        }
        drop(core);
        self.keep_socket(id, socket);
        (id, logged_in)
    }

    /// Files the socket of connection `id` under its slot.
    fn keep_socket(&self, id: ConnId, socket: Socket) {
        let mut sockets = self.sockets.borrow_mut();
        let slot = id as usize;
        if sockets.len() <= slot {
            sockets.resize_with(slot + 1, || None);
        }
        sockets[slot] = Some(socket);
    }

    /// The `INFO` a NATS client connected from `peer` to `local` is sent.
    fn info(&self, cid: u64, peer: SocketAddr, local: SocketAddr) -> Vec<u8> {
        let info = ServerInfo {
            server_id: self.nats.server_id.clone(),
            server_name: self.nats.server_name.clone(),
            version: nats::SERVER_VERSION.to_string(),
            proto: nats::PROTO,
            host: local.ip().to_string(),
            port: local.port(),
            headers: true,
            auth_required: self.config.auth.is_some(),
            tls_required: self.tls.is_some(),
            max_payload: self.nats.max_payload as u64,
            client_id: cid,
            client_ip: peer.ip().to_string(),
        };
        let mut greeting = Vec::with_capacity(nats::info_len(&info));
        nats::encode_info(&mut greeting, &info);
        greeting
    }

    /// Makes an accepted stream ready to serve: in clear text as it is;
    /// with TLS, after the handshake (for NATS, after a clear-text `INFO`
    /// unless the handshake comes first). Also whether the client has been
    /// sent its `INFO`. `None`: the handshake failed (counted and logged).
    async fn secure(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        protocol: Protocol,
        local: SocketAddr,
        cid: u64,
    ) -> Option<(Socket, bool)> {
        let Some(tls) = &self.tls else {
            return Some((Socket::Plain(stream), false));
        };
        let settings = tls.config();
        let info_first = protocol == Protocol::Nats && !settings.nats_handshake_first;
        if info_first {
            let info = self.info(cid, peer, local);
            let sent = futures_lite::AsyncWriteExt::write_all(&mut stream, &info);
            self.shutdown.unless_stopped(sent).await?.ok()?;
        }
        let handshake = socket::handshake(stream, tls.server_config(), settings.timeout);
        match self.shutdown.unless_stopped(handshake).await? {
            Ok(socket) => Some((socket, info_first)),
            Err((why, detail)) => {
                self.stats.count_auth_failure(why);
                tracing::warn!(%peer, shard = self.core.borrow().id(), reason = why.label(), "TLS handshake failed: {detail}");
                None
            }
        }
    }

    /// Checks connection `id`'s credentials, off the shard's thread when
    /// that is slow (bcrypt), and lets it in or refuses it.
    async fn log_in(
        &self,
        id: ConnId,
        credentials: Credentials,
        options: Option<Box<ConnectOptions>>,
    ) {
        let Some(auth) = self.config.auth.clone() else {
            return;
        };
        let verdict: Result<Grant, Refusal> = if auth.is_slow(&credentials) {
            glommio::executor()
                .spawn_blocking(move || auth.verify(&credentials))
                .await
        } else {
            auth.verify(&credentials)
        };
        let mut core = self.core.borrow_mut();
        match verdict {
            Ok(grant) => {
                if let Some(user) = &grant.user {
                    if let Some(c) = core.conns().get(id) {
                        tracing::debug!(peer = %c.peer, %user, "authenticated");
                    }
                }
                core.authenticated(id, grant);
                if let Some(options) = options {
                    core.connect(id, &options);
                }
            }
            Err(why) => core.refuse_login(id, why),
        }
    }

    /// Over TLS: sends what rustls still holds and the closing alert, for
    /// at most [`TLS_CLOSE_WAIT`].
    async fn close_tls(&self, id: ConnId) {
        let is_tls = matches!(
            self.sockets.borrow().get(id as usize),
            Some(Some(Socket::Tls(_) | Socket::TlsClient(_)))
        );
        if !is_tls {
            return;
        }
        let close = poll_fn(|cx| {
            let mut sockets = self.sockets.borrow_mut();
            match sockets.get_mut(id as usize).and_then(Option::as_mut) {
                Some(socket) => Pin::new(socket).poll_close(cx).map(|_| ()),
                None => Poll::Ready(()),
            }
        });
        let late = glommio::timer::sleep(TLS_CLOSE_WAIT);
        futures_lite::future::or(close, late).await;
    }

    /// Closes a connection: its subscriptions leave every shard's index,
    /// its socket is closed.
    fn remove(&self, id: ConnId) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.close_socket(id);
        self.after_close();
    }

    /// Closes connection `id` in the core (its subscriptions leave every
    /// shard's index), hands the mesh what that queued, and closes its
    /// socket.
    fn close_socket(&self, id: ConnId) {
        self.core.borrow_mut().close(id);
        let stream = self.sockets.borrow_mut()[id as usize].take();
        self.flush();
        drop(stream);
    }

    /// Every [`TRIM_AFTER_CLOSES`] closed connections, and when the last
    /// one closes, hands the memory they held back to the operating
    /// system: the allocator would otherwise keep it. tests/scale.rs, 10,000
    /// subscribed connections opened and closed: resident set 12.8 -> 93
    /// MiB with them, 98 MiB after they closed without this, 49 MiB with
    /// it.
    fn after_close(&self) {
        let closed = self.closed_since_trim.get() + 1;
        if closed >= TRIM_AFTER_CLOSES || self.core.borrow().conns().is_empty() {
            crate::sys::release_free_memory();
            self.closed_since_trim.set(0);
        } else {
            self.closed_since_trim.set(closed);
        }
    }

    /// Handles every complete frame buffered for `id`.
    fn process(&self, id: ConnId, framer: &mut Framer, eof: bool) -> Next {
        let mut core = self.core.borrow_mut();
        let ready = core.readiness(id, eof);
        if ready != Next::Read {
            return ready;
        }
        let mut frames = framer.frames();
        while let Some(item) = frames.next_frame() {
            let next = match item {
                Ok(frame) => match line::parse(frame.as_slice()) {
                    Ok(command) => core.handle(id, command, frame.chunk().0),
                    Err(e) => {
                        // A second `AUTH` (only a relay with authentication
                        // knows the verb).
                        let e = match e {
                            ProtoError::UnknownVerb
                                if self.config.auth.is_some()
                                    && line::parse_auth(frame.as_slice()).is_some() =>
                            {
                                ProtoError::InvalidArguments
                            }
                            e => e,
                        };
                        core.refuse(id, e, frame.as_slice());
                        Next::Read
                    }
                },
                Err(FrameError::TooLong { .. }) => {
                    core.refuse(id, ProtoError::FrameTooLong, &[]);
                    Next::Read
                }
            };
            let next = after_frame(&mut core, id, next);
            if next != Next::Read {
                // The rest stays buffered until the connection goes on.
                return next;
            }
        }
        Next::Read
    }

    /// Reads what a connection that must authenticate sent first: a line
    /// client's first non-empty frame must be `AUTH`, a NATS client's first
    /// operation `CONNECT`; anything else is refused and closes it.
    fn process_login(
        &self,
        id: ConnId,
        framer: &mut Framer,
        session: &mut Session,
        eof: bool,
    ) -> Login {
        let mut core = self.core.borrow_mut();
        let ready = core.readiness(id, eof);
        if ready != Next::Read {
            return Login::Then(ready);
        }
        let mut frames = framer.frames();
        match session {
            Session::Line => {
                while let Some(item) = frames.next_frame() {
                    let frame = match item {
                        Ok(frame) if frame.as_slice().is_empty() => continue,
                        Ok(frame) => frame,
                        Err(FrameError::TooLong { .. }) => {
                            core.refuse_login(id, Refusal::NoCredentials);
                            return Login::Then(Next::Read);
                        }
                    };
                    return match line::parse_auth(frame.as_slice()) {
                        Some(Some(credentials)) => Login::Verify(credentials, None),
                        Some(None) => {
                            core.refuse_login(id, Refusal::Malformed);
                            Login::Then(Next::Read)
                        }
                        None => {
                            core.refuse_login(id, Refusal::NoCredentials);
                            Login::Then(Next::Read)
                        }
                    };
                }
            }
            Session::Nats(decoder) => {
                if let Some(item) = decoder.next(&mut frames) {
                    return match item {
                        Ok(Op::Connect(options)) => Login::Verify(
                            nats_credentials(options),
                            Some(Box::new(options.clone())),
                        ),
                        // Anything else first, well-formed or not, as
                        // nats-server answers it (an error that closes
                        // anyway keeps its own text).
                        Err(e) if e.closes() => {
                            core.refuse_nats(id, e);
                            Login::Then(Next::Read)
                        }
                        Ok(_) | Err(_) => {
                            core.refuse_login(id, Refusal::NoCredentials);
                            Login::Then(Next::Read)
                        }
                    };
                }
                if let Err(e) = decoder.check_partial(framer) {
                    core.refuse_nats(id, e);
                    return Login::Then(Next::Close);
                }
            }
        }
        Login::Then(Next::Read)
    }

    /// Handles every complete NATS operation buffered for `id`.
    fn process_nats(
        &self,
        id: ConnId,
        framer: &mut Framer,
        decoder: &mut Decoder,
        eof: bool,
    ) -> Next {
        let mut core = self.core.borrow_mut();
        let ready = core.readiness(id, eof);
        if ready != Next::Read {
            return ready;
        }
        let mut frames = framer.frames();
        while let Some(item) = decoder.next(&mut frames) {
            let next = match item {
                Ok(Op::Pub(p)) => core.handle(id, Command::Pub(p.msg), p.chunk),
                Ok(Op::Sub {
                    subject,
                    queue,
                    sid,
                }) => core.handle(
                    id,
                    Command::SubSid {
                        subject,
                        group: queue,
                        sid,
                    },
                    &Bytes::new(),
                ),
                Ok(Op::Unsub { sid, max_msgs }) => {
                    core.handle(id, Command::UnsubSid { sid, max_msgs }, &Bytes::new())
                }
                Ok(Op::Ping) => core.handle(id, Command::Ping, &Bytes::new()),
                Ok(Op::Pong) => core.handle(id, Command::Pong, &Bytes::new()),
                Ok(Op::Connect(options)) => {
                    core.connect(id, options);
                    Next::Read
                }
                Err(e) => {
                    core.refuse_nats(id, e);
                    Next::Read
                }
            };
            let next = after_frame(&mut core, id, next);
            if next != Next::Read {
                return next;
            }
        }
        // A control line that is already too long is refused before its
        // end arrives, as nats-server does.
        if let Err(e) = decoder.check_partial(framer) {
            core.refuse_nats(id, e);
            return Next::Close;
        }
        Next::Read
    }

    /// Writes out every connection the core touched, then hands queued
    /// batches to the mesh.
    fn flush(&self) {
        let mut core = self.core.borrow_mut();
        let mut sockets = self.sockets.borrow_mut();
        let touched = core.conns_mut().take_touched();
        for &id in &touched {
            let Some(conn) = core.conns_mut().get_mut(id) else {
                continue;
            };
            // A connection not polled yet has no waker: its first poll
            // writes.
            let Some(waker) = conn.waker.clone() else {
                continue;
            };
            let Some(stream) = sockets[id as usize].as_mut() else {
                continue;
            };
            if write(stream, &mut conn.out, &mut Context::from_waker(&waker)).is_err() {
                core.peer_gone(id);
            }
            core.after_write(id);
        }
        core.conns_mut().recycle_touched(touched);
        core.flush_mesh();
    }

    /// Retries full mesh paths; wakes paused readers once there is room.
    fn retry_outlets(&self) {
        let mut core = self.core.borrow_mut();
        core.flush_mesh();
        if !core.mesh_full() {
            let waiters = std::mem::take(&mut *self.mesh_waiters.borrow_mut());
            drop(core);
            waiters.into_iter().for_each(Waker::wake);
        }
    }

    /// Common wait of a connection task: keep the waker current, finish
    /// pending writes, and be ready once `done` holds (or the connection is
    /// gone).
    fn poll_conn(
        &self,
        id: ConnId,
        cx: &mut Context<'_>,
        done: impl Fn(&Core, &Conn) -> bool,
    ) -> Poll<()> {
        let mut core = self.core.borrow_mut();
        core.set_waker(id, cx.waker());
        let mut sockets = self.sockets.borrow_mut();
        let (Some(conn), Some(stream)) = (
            core.conns_mut().get_mut(id),
            sockets.get_mut(id as usize).and_then(Option::as_mut),
        ) else {
            return Poll::Ready(());
        };
        if write(stream, &mut conn.out, cx).is_err() {
            core.peer_gone(id);
        }
        core.after_write(id);
        match core.conns().get(id) {
            Some(conn) if !done(&core, conn) => Poll::Pending,
            _ => Poll::Ready(()),
        }
    }

    fn poll_mesh_space(&self, id: ConnId, cx: &mut Context<'_>) -> Poll<()> {
        if self.poll_conn(id, cx, |_, c| c.leaving()).is_ready() || !self.core.borrow().mesh_full()
        {
            return Poll::Ready(());
        }
        let mut waiters = self.mesh_waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Reads into the framer. `None` when the connection must stop reading
    /// (error, closing, shutdown).
    fn poll_read(
        &self,
        id: ConnId,
        cx: &mut Context<'_>,
        framer: &mut Framer,
    ) -> Poll<Option<usize>> {
        if self.poll_conn(id, cx, |_, c| c.leaving()).is_ready() || self.core.borrow().stopping() {
            return Poll::Ready(None);
        }
        let mut sockets = self.sockets.borrow_mut();
        let stream = sockets[id as usize].as_mut().expect("checked by poll_conn");
        match Pin::new(stream).poll_read(cx, framer.read_buf()) {
            Poll::Ready(Ok(n)) => Poll::Ready(Some(n)),
            Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Writes as much of `out` as the socket takes. If the socket is full, the
/// waker in `cx` is registered for writability. An error means the peer is
/// gone.
fn write(stream: &mut Socket, out: &mut Outbound, cx: &mut Context<'_>) -> io::Result<()> {
    while !out.is_empty() {
        match Pin::new(&mut *stream).poll_write(cx, out.unsent()) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => out.consume(n),
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(()),
        }
    }
    // Over TLS the last records may still be in rustls's buffer; if the
    // socket is full, the waker is registered for when it is not.
    match stream.poll_flush_tls(cx) {
        Poll::Ready(Err(e)) => Err(e),
        _ => Ok(()),
    }
}
