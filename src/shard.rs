//! A shard: one pinned glommio executor driving everything else.
//!
//! This is the only module that touches glommio. A shard owns, for life, the
//! connections it accepted, their subscriptions (in its [`Router`]), their
//! [`Outbound`] queues, and its ends of the [`mesh`]. All of it lives in one
//! `RefCell` borrowed for the length of a synchronous step and never across
//! an `await`, so no lock is ever taken.
//!
//! Tasks on a shard:
//!
//! * one **accept loop** per listener;
//! * one **connection task** per client: it reads into the connection's
//!   [`Framer`], parses and routes every complete frame of the read, then
//!   flushes each connection the batch touched once (so under load many
//!   `MSG`s leave in one write, and at low load a message leaves at once) and
//!   hands the batch's forwards to the mesh. The same task finishes writes
//!   that the socket could not take at once: its waker is the one registered
//!   for the socket's writability;
//! * one **mesh task** that drains inbound batches from the other shards
//!   (never waiting on anything), and runs shutdown.
//!
//! Back-pressure: a connection task stops reading while any outbound mesh
//! path has more than [`MAX_MESH_BACKLOG`] messages queued, so a full path
//! slows the publishers feeding it (TCP back-pressure) instead of stalling
//! the executor or growing memory.

use std::cell::RefCell;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::config::Config;
use crate::framing::{Frame, FrameError, Framer};
use crate::mesh::{self, Endpoint, Forward, MeshMsg, Outlet, ShardId};
use crate::outbound::Outbound;
use crate::protocol::{self, Command, ProtoError};
use crate::router::{ConnId, Plan, Router};
use crate::stats::ShardStats;

/// Messages queued towards one shard beyond which readers pause.
pub const MAX_MESH_BACKLOG: usize = 16 * 1024;

/// How long shutdown waits for clients to take what they are owed.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// A question from outside the shards (the metrics endpoint), answered by
/// the shard's mesh task between batches: the data path takes no lock for
/// it.
pub enum Control {
    /// Describe every open connection.
    Connections(crossbeam_channel::Sender<Vec<ConnectionInfo>>),
}

/// One open connection, as [`Control::Connections`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub shard: ShardId,
    pub peer: SocketAddr,
    /// Time since it was accepted.
    pub age: Duration,
    pub subscriptions: usize,
    /// `PUB`s it sent.
    pub msgs_in: u64,
    /// `MSG`s queued to it.
    pub msgs_out: u64,
    /// Bytes queued to it and not yet written.
    pub pending_bytes: usize,
}

/// Everything a shard needs, built by [`crate::relay`] on the main thread.
pub struct ShardSpec {
    pub id: ShardId,
    pub shards: usize,
    pub config: Arc<Config>,
    /// Bound, listening sockets this shard accepts on.
    pub listeners: Vec<OwnedFd>,
    pub endpoint: Endpoint,
    pub stats: Arc<ShardStats>,
    /// Open connections on the whole relay, for `--max-connections`.
    pub open: Arc<AtomicUsize>,
    /// Questions from the relay's [`crate::relay::Monitor`].
    pub control: crossbeam_channel::Receiver<Control>,
}

/// One client connection's state on its shard.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// Distinguishes successive connections in the same slot.
    generation: u64,
    out: Outbound,
    /// The connection task's waker: woken for new output to finish, for a
    /// completed barrier, for shutdown, and registered with the socket for
    /// writability.
    waker: Option<Waker>,
    /// Subscription keys (`pattern` or `pattern group`), the set the spec
    /// defines.
    subs: FxHashSet<Box<[u8]>>,
    /// On the shard's `touched` list.
    touched: bool,
    /// `SUB`/`UNSUB` since the last barrier: the next `PING` needs one.
    dirty_subs: bool,
    /// A `PING` waits for other shards to acknowledge a barrier.
    waiting_barrier: bool,
    /// Closing without further service (slow consumer, write error,
    /// shutdown deadline).
    dead: bool,
    /// When it was accepted.
    since: Instant,
    /// `PUB`s received from it.
    msgs_in: u64,
    /// `MSG`s queued to it.
    msgs_out: u64,
}

/// A `PING` waiting for the other shards.
struct Barrier {
    conn: ConnId,
    generation: u64,
    remaining: usize,
}

/// Mutable shard state; see the module docs for the borrowing rule.
struct State {
    conns: Vec<Option<Conn>>,
    free: Vec<ConnId>,
    next_generation: u64,
    router: Router,
    /// Indexed by target shard; `None` for this shard.
    outlets: Vec<Option<Outlet>>,
    /// Where the message being published goes (reused).
    plan: Plan,
    /// Where the forwarded message being applied goes (reused).
    forward_plan: Plan,
    /// Connections with output queued since the last flush.
    touched: Vec<ConnId>,
    barriers: FxHashMap<u64, Barrier>,
    next_token: u64,
    /// Connection tasks paused for mesh back-pressure.
    mesh_waiters: Vec<Waker>,
    /// Accept loops waiting for shutdown.
    stop_waiters: Vec<Waker>,
    stopping: bool,
    /// Reused key buffer for subscription lookups.
    key: Vec<u8>,
}

/// A shard's immutable context plus its state.
struct Shard {
    id: ShardId,
    shards: usize,
    config: Arc<Config>,
    terminator: Box<[u8]>,
    stats: Arc<ShardStats>,
    open: Arc<AtomicUsize>,
    state: RefCell<State>,
}

/// What a connection task does after processing what it has buffered.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Everything buffered was handled: read more.
    Read,
    /// A `PING` waits for the other shards; handle nothing more until then.
    WaitBarrier,
    /// A path to another shard is full: handle nothing more (and read
    /// nothing) until it drains.
    WaitMesh,
    /// Stop serving this connection.
    Close,
}

/// Runs a shard until shutdown; called inside its executor.
pub async fn run(spec: ShardSpec, ready: impl FnOnce(Result<(), String>)) {
    let ShardSpec {
        id,
        shards,
        config,
        listeners,
        endpoint,
        stats,
        open,
        control,
    } = spec;
    let Endpoint {
        doorbell,
        outlets,
        inlets,
        ..
    } = endpoint;
    let shard = Rc::new(Shard {
        id,
        shards,
        terminator: config.terminator.as_bytes().into(),
        config,
        stats,
        open,
        state: RefCell::new(State {
            conns: Vec::new(),
            free: Vec::new(),
            next_generation: 0,
            router: Router::new(),
            outlets,
            plan: Plan::default(),
            forward_plan: Plan::default(),
            touched: Vec::new(),
            barriers: FxHashMap::default(),
            next_token: 0,
            mesh_waiters: Vec::new(),
            stop_waiters: Vec::new(),
            stopping: false,
            key: Vec::new(),
        }),
    });
    let mut accept_tasks = Vec::new();
    for fd in listeners {
        // SAFETY: `fd` is an open, bound, listening TCP socket that we own
        // (an `OwnedFd` from the relay); ownership moves into the listener,
        // which closes it on drop.
        let listener = unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) };
        accept_tasks.push(glommio::spawn_local(accept_loop(shard.clone(), listener)));
    }
    ready(Ok(()));
    mesh_loop(shard.clone(), inlets, doorbell, control).await;
    for t in accept_tasks {
        t.await;
    }
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            poll_fn(|cx| shard.poll_stopping(cx)).await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                // EMFILE and friends: say so, back off briefly, go on.
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        if shard.open.fetch_add(1, Ordering::Relaxed) >= shard.config.max_connections {
            shard.open.fetch_sub(1, Ordering::Relaxed);
            shard.stats.connections_rejected.add(1);
            tracing::warn!(%peer, limit = shard.config.max_connections, "connection refused: --max-connections reached");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let id = shard.add_conn(stream, peer);
        glommio::spawn_local(connection(shard.clone(), id)).detach();
    }
}

/// Drives one connection from accept to close.
async fn connection(shard: Rc<Shard>, id: ConnId) {
    let mut framer = Framer::with_read_size(
        shard.config.terminator.clone(),
        shard.config.max_frame,
        shard.config.read_size,
    );
    let mut eof = false;
    loop {
        let next = shard.process(id, &mut framer, eof);
        shard.flush_all();
        match next {
            Next::Close => break,
            Next::WaitBarrier => {
                poll_fn(|cx| shard.poll_conn(id, cx, |c| !c.waiting_barrier || c.dead)).await;
                continue;
            }
            Next::WaitMesh => {
                // Back-pressure from the mesh: neither handle nor read more
                // while a path to another shard is full.
                poll_fn(|cx| shard.poll_mesh_space(id, cx)).await;
                continue;
            }
            Next::Read if eof => break,
            Next::Read => {}
        }
        let read = poll_fn(|cx| shard.poll_read(id, cx, &mut framer)).await;
        match read {
            Some(0) | None => eof = true,
            Some(n) => framer.advance(n),
        }
        glommio::yield_if_needed().await;
    }
    // Half-close or shutdown: hand over what the client is owed first.
    poll_fn(|cx| shard.poll_conn(id, cx, |c| c.out.is_empty() || c.dead)).await;
    shard.remove_conn(id);
}

async fn mesh_loop(
    shard: Rc<Shard>,
    inlets: Vec<mesh::Inlet>,
    doorbell: Arc<mesh::Doorbell>,
    control: crossbeam_channel::Receiver<Control>,
) {
    let has_work = || !control.is_empty() || inlets.iter().any(mesh::Inlet::has_pending);
    loop {
        poll_fn(|cx| {
            // Re-try paths that were full first: a receiver that drained
            // one rings us, which is one way we get here.
            shard.retry_outlets();
            doorbell.poll(cx, has_work)
        })
        .await;
        if doorbell.stop_requested() {
            break;
        }
        for inlet in &inlets {
            // Bounded work per inlet per round keeps other tasks served.
            for _ in 0..64 {
                let Some(batch) = inlet.try_recv() else { break };
                shard.apply(inlet.from, batch);
            }
            inlet.release_sender();
        }
        shard.flush_all();
        while let Ok(request) = control.try_recv() {
            shard.answer(request);
        }
        glommio::yield_if_needed().await;
    }
    shutdown(&shard, &inlets).await;
}

/// Stop accepting, let clients take what they are owed for at most
/// [`SHUTDOWN_FLUSH`], then close everything.
async fn shutdown(shard: &Rc<Shard>, inlets: &[mesh::Inlet]) {
    let deadline = Instant::now() + SHUTDOWN_FLUSH;
    let waiters = {
        let mut st = shard.state.borrow_mut();
        st.stopping = true;
        let mut w = std::mem::take(&mut st.stop_waiters);
        w.append(&mut st.mesh_waiters);
        for c in st.conns.iter_mut().flatten() {
            if let Some(waker) = &c.waker {
                w.push(waker.clone());
            }
        }
        w
    };
    waiters.into_iter().for_each(Waker::wake);
    loop {
        // Keep answering the other shards' barriers while they drain too.
        for inlet in inlets {
            while let Some(batch) = inlet.try_recv() {
                shard.apply(inlet.from, batch);
            }
            inlet.release_sender();
        }
        shard.flush_all();
        let open = shard.state.borrow().conns.iter().flatten().count();
        if open == 0 {
            break;
        }
        if Instant::now() >= deadline {
            let wakers: Vec<Waker> = shard
                .state
                .borrow_mut()
                .conns
                .iter_mut()
                .flatten()
                .filter_map(|c| {
                    c.dead = true;
                    c.waker.clone()
                })
                .collect();
            wakers.into_iter().for_each(Waker::wake);
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

impl Shard {
    fn answer(&self, request: Control) {
        match request {
            Control::Connections(reply) => {
                let st = self.state.borrow();
                let now = Instant::now();
                let list = st
                    .conns
                    .iter()
                    .flatten()
                    .map(|c| ConnectionInfo {
                        shard: self.id,
                        peer: c.peer,
                        age: now - c.since,
                        subscriptions: c.subs.len(),
                        msgs_in: c.msgs_in,
                        msgs_out: c.msgs_out,
                        pending_bytes: c.out.pending(),
                    })
                    .collect();
                // The asker may have given up waiting: nothing to do then.
                let _ = reply.send(list);
            }
        }
    }

    fn add_conn(&self, stream: TcpStream, peer: SocketAddr) -> ConnId {
        let mut st = self.state.borrow_mut();
        st.next_generation += 1;
        let conn = Conn {
            stream,
            peer,
            generation: st.next_generation,
            out: Outbound::new(self.config.max_pending),
            waker: None,
            subs: FxHashSet::default(),
            touched: false,
            dirty_subs: false,
            waiting_barrier: false,
            dead: false,
            since: Instant::now(),
            msgs_in: 0,
            msgs_out: 0,
        };
        let id = match st.free.pop() {
            Some(id) => {
                st.conns[id as usize] = Some(conn);
                id
            }
            None => {
                st.conns.push(Some(conn));
                (st.conns.len() - 1) as ConnId
            }
        };
        self.stats.connections_accepted.add(1);
        self.stats.connections_open.add(1);
        id
    }

    /// Tears a connection down: its subscriptions leave every shard's
    /// index, its socket is closed.
    fn remove_conn(&self, id: ConnId) {
        let mut st = self.state.borrow_mut();
        let Some(conn) = st.conns[id as usize].take() else {
            return;
        };
        st.free.push(id);
        for key in conn.subs.iter() {
            let (pattern, group) = split_key(key);
            st.router.unsubscribe(id, pattern, group);
            broadcast_interest(&mut st.outlets, false, pattern, group);
        }
        st.router.trim();
        self.stats.subscriptions.sub(conn.subs.len() as u64);
        self.stats.pending_bytes.sub(conn.out.pending() as u64);
        self.stats.connections_open.sub(1);
        self.stats.connections_closed.add(1);
        self.open.fetch_sub(1, Ordering::Relaxed);
        drop(st);
        self.flush_all();
        drop(conn);
    }

    /// Handles every complete frame buffered for `id`.
    fn process(&self, id: ConnId, framer: &mut Framer, eof: bool) -> Next {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        match st.conns[id as usize].as_ref() {
            None => return Next::Close,
            Some(c) if c.dead => return Next::Close,
            Some(c) if c.waiting_barrier => return Next::WaitBarrier,
            Some(_) if st.stopping && !eof => return Next::Close,
            Some(_) => {}
        }
        let mut frames = framer.frames();
        while let Some(item) = frames.next_frame() {
            let next = match item {
                Ok(frame) => self.handle_frame(st, id, &frame),
                Err(FrameError::TooLong { .. }) => {
                    self.stats.count_error(ProtoError::FrameTooLong);
                    self.reply_err(st, id, ProtoError::FrameTooLong);
                    Next::Read
                }
            };
            if next != Next::Read {
                return next;
            }
            if st.conns[id as usize].as_ref().is_none_or(|c| c.dead) {
                return Next::Close;
            }
            if mesh_backlog(&st.outlets) > MAX_MESH_BACKLOG {
                // Stop here; the rest stays buffered until the mesh drains.
                return Next::WaitMesh;
            }
        }
        Next::Read
    }

    fn handle_frame(&self, st: &mut State, id: ConnId, frame: &Frame<'_>) -> Next {
        if frame.is_empty() {
            return Next::Read;
        }
        match protocol::parse(frame.as_slice()) {
            Ok(Command::Pub { subject, body }) => {
                if let Some(c) = st.conns[id as usize].as_mut() {
                    c.msgs_in += 1;
                }
                self.publish(st, frame, subject, body);
                Next::Read
            }
            Ok(Command::Sub { subject, group }) => {
                self.subscribe(st, id, subject, group);
                Next::Read
            }
            Ok(Command::Unsub { subject, group }) => {
                self.unsubscribe(st, id, subject, group);
                Next::Read
            }
            Ok(Command::Ping) => self.ping(st, id),
            Ok(Command::Empty) => Next::Read,
            Err(e) => {
                self.stats.count_error(e);
                self.reply_err(st, id, e);
                Next::Read
            }
        }
    }

    #[inline]
    fn publish(&self, st: &mut State, frame: &Frame<'_>, subject: &[u8], body: &[u8]) {
        self.stats.msgs_in.add(1);
        self.stats
            .bytes_in
            .add((body.len() - subject.len()).saturating_sub(1) as u64);
        let mut plan = std::mem::take(&mut st.plan);
        st.router.route_publish(subject, &mut plan);
        for &c in &plan.local {
            self.deliver(st, c, body, subject.len());
        }
        if !plan.remote.is_empty() {
            // `PUB ` is 4 bytes: the body is the rest of the frame, which
            // every shard reads from the publisher's read chunk itself.
            let (chunk, range) = frame.chunk();
            let body_at = range.start + 4..range.end;
            let own;
            let (chunk, start, end) =
                match (u32::try_from(body_at.start), u32::try_from(body_at.end)) {
                    (Ok(s), Ok(e)) => (chunk, s, e),
                    // A chunk past 4 GiB (a huge --max-frame): this message
                    // gets a chunk of its own.
                    _ => {
                        own = frame.slice_bytes(4..4 + body.len());
                        (&own, 0, body.len() as u32)
                    }
                };
            for t in plan.remote.iter_mut() {
                if let Some(out) = st.outlets[t.shard as usize].as_mut() {
                    out.push_forward(
                        chunk,
                        Forward {
                            start,
                            end,
                            subject_len: subject.len() as u16,
                            plain: t.plain,
                            groups: std::mem::take(&mut t.groups),
                        },
                    );
                    self.stats.forwarded.add(1);
                }
            }
        }
        st.plan = plan;
    }

    /// Queues a `MSG` for connection `c`, closing it if it is too far behind.
    #[inline]
    fn deliver(&self, st: &mut State, c: ConnId, body: &[u8], subject_len: usize) {
        let Some(conn) = st.conns[c as usize].as_mut() else {
            return;
        };
        if conn.dead {
            return;
        }
        match conn.out.push_msg(body, subject_len, &self.terminator) {
            Ok(n) => {
                conn.msgs_out += 1;
                self.stats.msgs_out.add(1);
                self.stats
                    .bytes_out
                    .add((body.len() - subject_len).saturating_sub(1) as u64);
                self.stats.pending_bytes.add(n as u64);
                if !conn.touched {
                    conn.touched = true;
                    st.touched.push(c);
                }
            }
            Err(_) => self.slow_consumer(st, c),
        }
    }

    fn slow_consumer(&self, st: &mut State, c: ConnId) {
        let Some(conn) = st.conns[c as usize].as_mut() else {
            return;
        };
        conn.dead = true;
        if let Some(w) = &conn.waker {
            w.wake_by_ref();
        }
        let delta = conn.out.farewell(&self.terminator);
        if delta >= 0 {
            self.stats.pending_bytes.add(delta as u64);
        } else {
            self.stats.pending_bytes.sub(delta.unsigned_abs() as u64);
        }
        self.stats.count_error(ProtoError::SlowConsumer);
        tracing::warn!(
            peer = %conn.peer,
            shard = self.id,
            pending = conn.out.pending(),
            limit = self.config.max_pending,
            "slow consumer closed"
        );
        if !conn.touched {
            conn.touched = true;
            st.touched.push(c);
        }
    }

    fn reply_err(&self, st: &mut State, id: ConnId, err: ProtoError) {
        self.reply(st, id, |out, t| out.push_err(err, t));
    }

    fn pong(&self, st: &mut State, id: ConnId) {
        self.reply(st, id, Outbound::push_pong);
    }

    /// Queues a reply built by `push` and marks the connection for the next
    /// flush; a reply that does not fit closes it as a slow consumer.
    fn reply(
        &self,
        st: &mut State,
        id: ConnId,
        push: impl FnOnce(&mut Outbound, &[u8]) -> Result<usize, crate::outbound::SlowConsumer>,
    ) {
        let Some(conn) = st.conns[id as usize].as_mut() else {
            return;
        };
        match push(&mut conn.out, &self.terminator) {
            Ok(n) => {
                self.stats.pending_bytes.add(n as u64);
                if !conn.touched {
                    conn.touched = true;
                    st.touched.push(id);
                }
            }
            Err(_) => self.slow_consumer(st, id),
        }
    }

    fn subscribe(&self, st: &mut State, id: ConnId, subject: &[u8], group: Option<&[u8]>) {
        make_key(&mut st.key, subject, group);
        let Some(conn) = st.conns[id as usize].as_mut() else {
            return;
        };
        if conn.subs.contains(&st.key[..]) {
            return;
        }
        if conn.subs.len() >= self.config.max_subs {
            self.stats.count_error(ProtoError::TooManySubscriptions);
            self.reply_err(st, id, ProtoError::TooManySubscriptions);
            return;
        }
        conn.subs.insert(st.key.as_slice().into());
        conn.dirty_subs = true;
        st.router.subscribe(id, subject, group);
        broadcast_interest(&mut st.outlets, true, subject, group);
        self.stats.subscriptions.add(1);
    }

    fn unsubscribe(&self, st: &mut State, id: ConnId, subject: &[u8], group: Option<&[u8]>) {
        make_key(&mut st.key, subject, group);
        let Some(conn) = st.conns[id as usize].as_mut() else {
            return;
        };
        if !conn.subs.remove(&st.key[..]) {
            return;
        }
        conn.dirty_subs = true;
        st.router.unsubscribe(id, subject, group);
        broadcast_interest(&mut st.outlets, false, subject, group);
        self.stats.subscriptions.sub(1);
    }

    /// `PONG` now, or after every other shard has applied this connection's
    /// subscription changes (the spec's barrier).
    fn ping(&self, st: &mut State, id: ConnId) -> Next {
        let Some(conn) = st.conns[id as usize].as_mut() else {
            return Next::Close;
        };
        if conn.dirty_subs && self.shards > 1 {
            conn.dirty_subs = false;
            conn.waiting_barrier = true;
            let generation = conn.generation;
            st.next_token += 1;
            let token = (u64::from(self.id) << 48) | st.next_token;
            st.barriers.insert(
                token,
                Barrier {
                    conn: id,
                    generation,
                    remaining: self.shards - 1,
                },
            );
            for out in st.outlets.iter_mut().flatten() {
                out.push(MeshMsg::Barrier { token });
            }
            return Next::WaitBarrier;
        }
        self.pong(st, id);
        Next::Read
    }

    /// Applies a batch from shard `from`. Never waits.
    fn apply(&self, from: ShardId, batch: mesh::Batch) {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        for msg in batch {
            match msg {
                MeshMsg::Forward(run) => {
                    let mut plan = std::mem::take(&mut st.forward_plan);
                    for f in &run.items {
                        let body = run.body(f);
                        let subject = &body[..f.subject_len as usize];
                        st.router
                            .route_forward(subject, f.plain, &f.groups, &mut plan);
                        for &c in &plan.local {
                            self.deliver(st, c, body, f.subject_len as usize);
                        }
                    }
                    st.forward_plan = plan;
                }
                MeshMsg::Interest {
                    add,
                    pattern,
                    group,
                } => st
                    .router
                    .remote_interest(from, add, &pattern, group.as_deref()),
                MeshMsg::Barrier { token } => {
                    if let Some(out) = st.outlets[from as usize].as_mut() {
                        out.push(MeshMsg::BarrierAck { token });
                    }
                }
                MeshMsg::BarrierAck { token } => {
                    let Some(b) = st.barriers.get_mut(&token) else {
                        continue;
                    };
                    b.remaining -= 1;
                    if b.remaining > 0 {
                        continue;
                    }
                    let b = st.barriers.remove(&token).expect("present");
                    let live = st.conns[b.conn as usize]
                        .as_mut()
                        .filter(|c| c.generation == b.generation);
                    if let Some(conn) = live {
                        conn.waiting_barrier = false;
                        if let Some(w) = &conn.waker {
                            w.wake_by_ref();
                        }
                        self.pong(st, b.conn);
                    }
                }
            }
        }
    }

    /// Writes out every touched connection, then hands queued batches to
    /// the mesh.
    fn flush_all(&self) {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let mut touched = std::mem::take(&mut st.touched);
        for &c in &touched {
            if let Some(conn) = st.conns[c as usize].as_mut() {
                conn.touched = false;
                // A connection not polled yet has no waker: its first poll
                // writes.
                if let Some(w) = conn.waker.clone() {
                    self.write(conn, &mut Context::from_waker(&w));
                }
            }
        }
        touched.clear();
        st.touched = touched;
        for out in st.outlets.iter_mut().flatten() {
            if out.backlog() > 0 {
                out.try_flush();
            }
        }
    }

    /// Retries full mesh paths; wakes paused readers once there is room.
    fn retry_outlets(&self) {
        let mut st = self.state.borrow_mut();
        for out in st.outlets.iter_mut().flatten() {
            if out.backlog() > 0 {
                out.try_flush();
            }
        }
        if !st.mesh_waiters.is_empty() && mesh_backlog(&st.outlets) <= MAX_MESH_BACKLOG {
            let w = std::mem::take(&mut st.mesh_waiters);
            drop(st);
            w.into_iter().for_each(Waker::wake);
        }
    }

    /// Writes as much of `conn`'s queue as the socket takes. If the socket
    /// is full, the waker in `cx` is registered for writability.
    fn write(&self, conn: &mut Conn, cx: &mut Context<'_>) {
        while !conn.out.is_empty() {
            match Pin::new(&mut conn.stream).poll_write(cx, conn.out.unsent()) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    conn.out.consume(n);
                    self.stats.pending_bytes.sub(n as u64);
                }
                Poll::Ready(_) => {
                    // The peer is gone (EPIPE, reset): nothing more to send.
                    let dropped = conn.out.clear();
                    self.stats.pending_bytes.sub(dropped as u64);
                    conn.dead = true;
                    if let Some(w) = &conn.waker {
                        w.wake_by_ref();
                    }
                    return;
                }
                Poll::Pending => return,
            }
        }
    }

    /// Common wait of a connection task: keep the waker current, finish
    /// pending writes, and be ready once `done` holds (or the connection is
    /// gone).
    fn poll_conn(
        &self,
        id: ConnId,
        cx: &mut Context<'_>,
        done: impl Fn(&Conn) -> bool,
    ) -> Poll<()> {
        let mut st = self.state.borrow_mut();
        let Some(conn) = st.conns[id as usize].as_mut() else {
            return Poll::Ready(());
        };
        if !conn.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            conn.waker = Some(cx.waker().clone());
        }
        self.write(conn, cx);
        if done(conn) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn poll_mesh_space(&self, id: ConnId, cx: &mut Context<'_>) -> Poll<()> {
        if self.poll_conn(id, cx, |c| c.dead).is_ready() {
            return Poll::Ready(());
        }
        let mut st = self.state.borrow_mut();
        if st.stopping || mesh_backlog(&st.outlets) <= MAX_MESH_BACKLOG {
            return Poll::Ready(());
        }
        register(&mut st.mesh_waiters, cx);
        Poll::Pending
    }

    /// Reads into the framer. `None` when the connection must stop reading
    /// (error, dead, shutdown).
    fn poll_read(
        &self,
        id: ConnId,
        cx: &mut Context<'_>,
        framer: &mut Framer,
    ) -> Poll<Option<usize>> {
        if self.poll_conn(id, cx, |c| c.dead).is_ready() {
            return Poll::Ready(None);
        }
        let mut st = self.state.borrow_mut();
        if st.stopping {
            return Poll::Ready(None);
        }
        let conn = st.conns[id as usize]
            .as_mut()
            .expect("checked by poll_conn");
        match Pin::new(&mut conn.stream).poll_read(cx, framer.read_buf()) {
            Poll::Ready(Ok(n)) => Poll::Ready(Some(n)),
            Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_stopping(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.state.borrow_mut();
        if st.stopping {
            return Poll::Ready(());
        }
        register(&mut st.stop_waiters, cx);
        Poll::Pending
    }
}

/// Adds the task to `waiters` unless it is there already (a task polled
/// again for another reason must not pile up copies).
fn register(waiters: &mut Vec<Waker>, cx: &Context<'_>) {
    if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
        waiters.push(cx.waker().clone());
    }
}

fn mesh_backlog(outlets: &[Option<Outlet>]) -> usize {
    outlets
        .iter()
        .flatten()
        .map(Outlet::backlog)
        .max()
        .unwrap_or(0)
}

fn broadcast_interest(
    outlets: &mut [Option<Outlet>],
    add: bool,
    pattern: &[u8],
    group: Option<&[u8]>,
) {
    if outlets.iter().all(Option::is_none) {
        return;
    }
    let pattern = Bytes::copy_from_slice(pattern);
    let group = group.map(Bytes::copy_from_slice);
    for out in outlets.iter_mut().flatten() {
        out.push(MeshMsg::Interest {
            add,
            pattern: pattern.clone(),
            group: group.clone(),
        });
    }
}

/// `pattern` or `pattern group`: neither contains a space, so the key is
/// unambiguous.
fn make_key(key: &mut Vec<u8>, pattern: &[u8], group: Option<&[u8]>) {
    key.clear();
    key.extend_from_slice(pattern);
    if let Some(g) = group {
        key.push(b' ');
        key.extend_from_slice(g);
    }
}

fn split_key(key: &[u8]) -> (&[u8], Option<&[u8]>) {
    match memchr::memchr(b' ', key) {
        Some(i) => (&key[..i], Some(&key[i + 1..])),
        None => (key, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_keys_round_trip() {
        let mut k = Vec::new();
        make_key(&mut k, b"a.*", Some(b"g"));
        assert_eq!(split_key(&k), (&b"a.*"[..], Some(&b"g"[..])));
        make_key(&mut k, b"a.>", None);
        assert_eq!(split_key(&k), (&b"a.>"[..], None));
    }
}
