//! Starting and stopping a relay: a set of shards sharing listeners.
//!
//! [`Relay::start`] checks the configuration and the machine
//! ([`crate::preflight`]), binds every listening socket on the calling
//! thread (so a port-0 listener resolves to one port that every shard then
//! shares through `SO_REUSEPORT`, and a bind error is reported before any
//! executor exists), builds the [`crate::mesh`], and starts one pinned
//! executor per shard. It returns once every shard is accepting.
//!
//! # Supervision
//!
//! A relay owns its shard threads through a supervisor thread, the one
//! place that waits for them: each shard thread reports its exit (from a
//! thread-local guard, so a panic that unwinds the executor reports too),
//! and the supervisor joins it. A shard that ends while the relay is not
//! stopping, or that panics, is a failure: it is logged with its reason,
//! [`Monitor::failure`] (and with it `/healthz`) reports it from then on, and
//! [`Relay::failures`] delivers it to whoever must act on it — the binary
//! exits non-zero so that its service manager restarts it. The relay does
//! not try to run on without the shard: that shard's listeners, its
//! connections and its part of every queue group are gone.
//!
//! ```no_run
//! use tern::{config::Config, relay::Relay};
//! let relay = Relay::start(Config::local(2)).unwrap();
//! println!("listening on {}", relay.local_addrs()[0]);
//! let totals = relay.shutdown();
//! println!("{} messages in", totals.msgs_in);
//! ```

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use glommio::{
    BuilderErrorKind, ExecutorJoinHandle, GlommioError, LocalExecutorBuilder, Placement,
};
use socket2::{Domain, Socket, Type};

use crate::budget::MemoryBudget;
use crate::config::Config;
use crate::mesh::{self, Doorbell, ShardId};
use crate::preflight::{self, MemlockExhausted, PreflightError};
use crate::shard::{self, ConnectionInfo, Control, Listener, NatsIdentity, Protocol, ShardSpec};
use crate::stats::{ShardStats, Totals};
use crate::tls::{TlsAcceptor, TlsError};

/// Batches a mesh path holds before its sender must wait.
const MESH_CAPACITY: usize = 256;

/// Longest a busy task runs before the shard looks for other work.
const PREEMPT_PERIOD: Duration = Duration::from_millis(1);

/// Pending connections the kernel queues per listening socket.
const LISTEN_BACKLOG: i32 = 4096;

/// Why a relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("shard {shard} on CPU {cpu} failed to start: {reason}")]
    Shard {
        shard: usize,
        cpu: usize,
        reason: String,
    },
    /// io_uring answered `ENOMEM` while a shard set up its rings: the
    /// per-user locked-memory budget ran out after the check passed.
    #[error("shard {shard} on CPU {cpu} failed to start: {explanation}")]
    LockedMemory {
        shard: usize,
        cpu: usize,
        explanation: MemlockExhausted,
    },
}

impl StartError {
    /// Why shard `shard` on `cpu` could not be built or ended before it
    /// was ready, as glommio reports it; `ENOMEM` is said as the
    /// locked-memory shortage it is, for `shards` shards of `io_memory`.
    fn shard(
        shard: usize,
        cpu: usize,
        e: &GlommioError<()>,
        shards: usize,
        io_memory: usize,
    ) -> StartError {
        match e {
            GlommioError::IoError(io) if io.raw_os_error() == Some(crate::sys::ENOMEM) => {
                StartError::LockedMemory {
                    shard,
                    cpu,
                    explanation: MemlockExhausted::now(shards, io_memory),
                }
            }
            e => StartError::Shard {
                shard,
                cpu,
                reason: describe(e),
            },
        }
    }
}

/// A running relay. Dropping it shuts it down.
pub struct Relay {
    addrs: Vec<SocketAddr>,
    shard_addrs: Vec<SocketAddr>,
    nats_addrs: Vec<SocketAddr>,
    shard_nats_addrs: Vec<SocketAddr>,
    cores: Vec<usize>,
    monitor: Monitor,
    /// Set when the relay is asked to stop: a shard ending after this is
    /// not a failure.
    stopping: Arc<AtomicBool>,
    /// The thread that joins the shards (see the module docs); `None` once
    /// joined.
    supervisor: Option<JoinHandle<()>>,
    /// Failures, as the supervisor reports them.
    failures: Receiver<String>,
    /// The TLS server side every shard shares, if the relay speaks TLS.
    tls: Option<Arc<TlsAcceptor>>,
}

/// A read-only view of a running relay, for any thread (the metrics
/// endpoint): counters are read from the shards' single-writer atomics, and
/// connection lists are asked of each shard over a channel and answered
/// between batches. Neither takes a lock on the data path.
#[derive(Clone)]
pub struct Monitor {
    stats: Vec<Arc<ShardStats>>,
    controls: Vec<Sender<Control>>,
    bells: Vec<Arc<Doorbell>>,
    /// The first shard failure, once there is one.
    failure: Arc<OnceLock<String>>,
    /// What NATS clients are told of this server: `/varz`' `server_id`,
    /// `server_name` and `max_payload`.
    nats: Arc<NatsIdentity>,
    /// The NATS listen addresses, port 0 resolved: `/varz`' `host` and
    /// `port` name the first.
    nats_addrs: Arc<[SocketAddr]>,
    /// The settings the relay runs with: `/varz` reports its limits.
    config: Arc<Config>,
    /// When the relay started, on the wall clock (`/varz`' `start`) and on
    /// the monotonic one (its `uptime`, which a clock step must not skew).
    started: (SystemTime, Instant),
    /// The TLS server side, for its certificate's expiry.
    tls: Option<Arc<TlsAcceptor>>,
    /// Each leaf link's state and counters, in `--leafnode-remote` order.
    leaf: Arc<[Arc<crate::leaf::RemoteStatus>]>,
}

impl Monitor {
    /// Why the relay no longer serves fully (a shard died), or `None` while
    /// every shard runs.
    pub fn failure(&self) -> Option<String> {
        self.failure.get().cloned()
    }

    /// Sends `request` to every shard and rings it; returns how many took
    /// it (a shard that has ended takes nothing).
    fn tell_all(&self, request: impl Fn() -> Control) -> usize {
        let mut told = 0;
        for (control, bell) in self.controls.iter().zip(&self.bells) {
            if control.send(request()).is_ok() {
                bell.ring();
                told += 1;
            }
        }
        told
    }

    /// Counters summed over shards.
    pub fn stats(&self) -> Totals {
        crate::stats::sum(self.stats.iter().map(|s| &**s))
    }

    /// What NATS clients are told of this server in `INFO`.
    pub fn nats_identity(&self) -> &NatsIdentity {
        &self.nats
    }

    /// The addresses NATS clients connect to (see [`Relay::nats_addrs`]).
    pub fn nats_addrs(&self) -> &[SocketAddr] {
        &self.nats_addrs
    }

    /// The settings the relay runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Each leaf link's state and counters now, in `--leafnode-remote`
    /// order.
    pub fn leaf_remotes(&self) -> Vec<crate::leaf::RemoteSnapshot> {
        self.leaf.iter().map(|s| s.snapshot()).collect()
    }

    /// When the TLS certificate in force stops being valid, if the relay
    /// speaks TLS and the certificate could be read.
    pub fn tls_expires(&self) -> Option<SystemTime> {
        self.tls.as_ref().and_then(|t| t.expires())
    }

    /// When the relay started (wall clock).
    pub fn started(&self) -> SystemTime {
        self.started.0
    }

    /// How long the relay has been running (monotonic clock).
    pub fn uptime(&self) -> Duration {
        self.started.1.elapsed()
    }

    /// Counters of each shard (index = shard).
    pub fn shard_stats(&self) -> Vec<Totals> {
        self.stats.iter().map(|s| s.snapshot()).collect()
    }

    /// Every open connection, asked of every shard. A shard that does not
    /// answer within `timeout` (stopped, or very busy) is left out.
    pub fn connections(&self, timeout: Duration) -> Vec<ConnectionInfo> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let asked = self.tell_all(|| Control::Connections(tx.clone()));
        drop(tx);
        let deadline = std::time::Instant::now() + timeout;
        let mut all = Vec::new();
        for _ in 0..asked {
            match rx.recv_deadline(deadline) {
                Ok(list) => all.extend(list),
                Err(_) => break,
            }
        }
        all
    }
}

impl Relay {
    /// Checks, binds and starts every shard; see the module docs.
    pub fn start(config: Config) -> Result<Relay, StartError> {
        Relay::start_checked(preflight::check(config, None)?)
    }

    /// [`Relay::start`] for a configuration that already passed
    /// [`preflight::check`] (the binary checks once, `--metrics` included).
    pub fn start_checked(checked: preflight::Checked) -> Result<Relay, StartError> {
        let config = checked.into_config();
        let shards = config.cores.len();

        // Listening sockets: for each address one per shard, sharing the
        // port through SO_REUSEPORT so the kernel spreads connections.
        let mut per_shard: Vec<Vec<Listener>> = (0..shards).map(|_| Vec::new()).collect();
        let addrs = shared_listeners(&config.listen, Protocol::Line, &mut per_shard)?;
        let nats_addrs = shared_listeners(&config.nats_listen, Protocol::Nats, &mut per_shard)?;
        let mut shard_addrs = Vec::new();
        let mut shard_nats_addrs = Vec::new();
        if config.shard_listeners {
            for (i, listeners) in per_shard.iter_mut().enumerate() {
                let mut addr = config.shard_listen;
                if addr.port() != 0 {
                    let port = usize::from(addr.port()) + i;
                    let port = u16::try_from(port).map_err(|_| StartError::Bind {
                        addr,
                        source: io::Error::other(format!("shard {i}'s port {port} is past 65535")),
                    })?;
                    addr.set_port(port);
                }
                let line = private_listener(addr, Protocol::Line)?;
                shard_addrs.push(line.addr);
                listeners.push(line);
                if !config.nats_listen.is_empty() {
                    // On a port of its own each (printed at start).
                    addr.set_port(0);
                    let nats = private_listener(addr, Protocol::Nats)?;
                    shard_nats_addrs.push(nats.addr);
                    listeners.push(nats);
                }
            }
        }
        let nats = Arc::new(NatsIdentity {
            server_id: crate::protocol::nats::new_server_id(),
            server_name: "tern".to_string(),
            max_payload: config.max_frame,
        });
        let next_cid = Arc::new(AtomicU64::new(1));
        let tls = match &config.tls {
            None => None,
            Some(t) => Some(Arc::new(
                TlsAcceptor::load(t).map_err(|e| PreflightError::Tls(Arc::new(e)))?,
            )),
        };

        let mut links = Vec::new();
        for remote in &config.leaf_remotes {
            let tls = remote
                .tls_client_config()
                .map_err(|e| PreflightError::Tls(Arc::new(e)))?;
            links.push(crate::shard::LinkSpec {
                status: Arc::new(crate::leaf::RemoteStatus::new(&remote.url)),
                remote: remote.clone(),
                tls,
            });
        }
        let leaf: Arc<[Arc<crate::leaf::RemoteStatus>]> =
            links.iter().map(|l| l.status.clone()).collect();
        let mut links = Some(links);

        let (endpoints, bells) = mesh::build(shards, MESH_CAPACITY);
        let config = Arc::new(config);
        let open = Arc::new(AtomicUsize::new(0));
        let stats: Vec<Arc<ShardStats>> = (0..shards).map(|_| Arc::default()).collect();
        let budget = Arc::new(MemoryBudget::new(config.max_memory, stats.clone()));
        let (controls, control_rxs): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| crossbeam_channel::unbounded()).unzip();
        let monitor = Monitor {
            stats,
            controls,
            bells,
            failure: Arc::default(),
            nats: nats.clone(),
            nats_addrs: nats_addrs.as_slice().into(),
            config: config.clone(),
            started: (SystemTime::now(), Instant::now()),
            tls: tls.clone(),
            leaf,
        };
        let (exit_tx, exit_rx) = crossbeam_channel::unbounded::<usize>();
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), String>)>();
        let mut threads = Vec::new();
        let spawns = endpoints.into_iter().zip(per_shard).zip(control_rxs);
        for (i, ((endpoint, listeners), control)) in spawns.enumerate() {
            let cpu = config.cores[i];
            let spec = ShardSpec {
                budget: budget.clone(),
                id: i as ShardId,
                shards,
                config: config.clone(),
                listeners,
                endpoint,
                stats: monitor.stats[i].clone(),
                open: open.clone(),
                next_cid: next_cid.clone(),
                nats: nats.clone(),
                control,
                tls: tls.clone(),
                // Shard 0 keeps every leaf link.
                links: if i == 0 {
                    links.take().unwrap_or_default()
                } else {
                    Vec::new()
                },
            };
            let ready = ready_tx.clone();
            let exit = exit_tx.clone();
            let spawned = LocalExecutorBuilder::new(Placement::Fixed(cpu))
                .name(&format!("tern-shard-{i}"))
                .io_memory(config.io_memory)
                .spin_before_park(config.spin_before_park)
                // glommio only looks for I/O completions (and wakes from
                // other shards) between task runs when its preempt timer
                // fires: at its 100 ms default one publisher that never
                // drains its socket would starve every other task that
                // long (a `/connections` scrape under load took ~190 ms).
                // Measured here: 1 ms costs ~4% of 1→1 throughput and
                // answers that scrape in ~2 ms; 250 µs cost ~13%.
                .preempt_timer(PREEMPT_PERIOD)
                .spawn(move || async move {
                    ExitNotice::install(i, exit);
                    shard::run(spec, move |r| {
                        let _ = ready.send((i, r));
                    })
                    .await
                });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    stop_shards(&monitor, threads);
                    return Err(StartError::shard(i, cpu, &e, shards, config.io_memory));
                }
            }
        }
        drop(ready_tx);
        drop(exit_tx);
        let mut ready = vec![false; shards];
        while ready.iter().any(|r| !r) {
            let failed = |shard: usize, reason: &str| StartError::Shard {
                shard,
                cpu: config.cores[shard],
                reason: reason.to_string(),
            };
            let failure = match ready_rx.recv_timeout(Duration::from_secs(30)) {
                Ok((i, Ok(()))) => {
                    ready[i] = true;
                    continue;
                }
                Ok((i, Err(reason))) => failed(i, &reason),
                Err(e) => {
                    // A shard that never became ready: if the channel is
                    // closed its thread has ended (its executor could not be
                    // built) and joining it tells why.
                    let i = ready.iter().position(|r| !r).expect("one is not ready");
                    match e {
                        mpsc::RecvTimeoutError::Disconnected => match threads.remove(i).join() {
                            Ok(()) => failed(i, "exited before it was ready"),
                            Err(e) => {
                                StartError::shard(i, config.cores[i], &e, shards, config.io_memory)
                            }
                        },
                        mpsc::RecvTimeoutError::Timeout => {
                            failed(i, "did not become ready within 30 s")
                        }
                    }
                }
            };
            stop_shards(&monitor, threads);
            return Err(failure);
        }
        let stopping = Arc::new(AtomicBool::new(false));
        let (failures_tx, failures) = crossbeam_channel::unbounded();
        let supervisor = {
            let stopping = stopping.clone();
            let failure = monitor.failure.clone();
            let cores = config.cores.clone();
            std::thread::Builder::new()
                .name("tern-supervisor".into())
                .spawn(move || {
                    supervise(threads, &cores, exit_rx, &stopping, &failure, failures_tx)
                })
                .map_err(|e| StartError::Shard {
                    shard: 0,
                    cpu: config.cores[0],
                    reason: format!("cannot start the supervisor thread: {e}"),
                })?
        };
        Ok(Relay {
            addrs,
            shard_addrs,
            nats_addrs,
            shard_nats_addrs,
            cores: config.cores.clone(),
            monitor,
            stopping,
            supervisor: Some(supervisor),
            failures,
            tls,
        })
    }

    /// Reads the TLS certificate, key and client CA files again (SIGHUP):
    /// new handshakes use them, open connections keep theirs. `Ok(false)`
    /// if the relay does not speak TLS; on error the files in force stay.
    pub fn reload_tls(&self) -> Result<bool, TlsError> {
        match &self.tls {
            None => Ok(false),
            Some(tls) => tls.reload().map(|()| true),
        }
    }

    /// The addresses clients connect to, one per `--listen`, with port 0
    /// resolved.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// With [`Config::shard_listeners`], a listener per shard, served only
    /// by that shard (index = shard); empty otherwise.
    pub fn shard_addrs(&self) -> &[SocketAddr] {
        &self.shard_addrs
    }

    /// The addresses NATS clients connect to, one per `--nats-listen`,
    /// with port 0 resolved.
    pub fn nats_addrs(&self) -> &[SocketAddr] {
        &self.nats_addrs
    }

    /// With [`Config::shard_listeners`] and a NATS listener, a NATS
    /// listener per shard, served only by that shard (index = shard).
    pub fn shard_nats_addrs(&self) -> &[SocketAddr] {
        &self.shard_nats_addrs
    }

    /// The CPU of each shard.
    pub fn cores(&self) -> &[usize] {
        &self.cores
    }

    /// Counters summed over shards.
    pub fn stats(&self) -> Totals {
        self.monitor.stats()
    }

    /// Counters of each shard.
    pub fn shard_stats(&self) -> Vec<Totals> {
        self.monitor.shard_stats()
    }

    /// Every open connection (see [`Monitor::connections`]).
    pub fn connections(&self, timeout: Duration) -> Vec<ConnectionInfo> {
        self.monitor.connections(timeout)
    }

    /// A view of this relay that other threads can keep.
    pub fn monitor(&self) -> Monitor {
        self.monitor.clone()
    }

    /// Why the relay no longer serves fully, if a shard died.
    pub fn failure(&self) -> Option<String> {
        self.monitor.failure()
    }

    /// Delivers each shard failure once, as it happens (for a
    /// `crossbeam_channel::select!` beside other events).
    pub fn failures(&self) -> &Receiver<String> {
        &self.failures
    }

    /// Stops accepting, lets clients take what they are owed for at most
    /// two seconds, closes every connection and joins the shards.
    pub fn shutdown(mut self) -> Totals {
        self.stop();
        self.stats()
    }

    fn stop(&mut self) {
        let Some(supervisor) = self.supervisor.take() else {
            return;
        };
        self.stopping.store(true, Ordering::SeqCst);
        self.monitor.tell_all(|| Control::Stop);
        // It ends once every shard has ended and been joined.
        let _ = supervisor.join();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sent by a shard thread as it ends, however it ends: a thread-local
/// guard is dropped when the thread exits, also after a panic unwound the
/// executor (which may never drop the futures it was running).
struct ExitNotice {
    shard: usize,
    exits: Sender<usize>,
}

thread_local! {
    static EXIT_NOTICE: RefCell<Option<ExitNotice>> = const { RefCell::new(None) };
}

impl ExitNotice {
    /// Arms the notice for the calling (shard) thread.
    fn install(shard: usize, exits: Sender<usize>) {
        EXIT_NOTICE.with(|n| *n.borrow_mut() = Some(ExitNotice { shard, exits }));
    }
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.exits.send(self.shard);
    }
}

/// The supervisor thread: joins each shard as it ends and reports the ones
/// that end unasked or by panicking (see the module docs). Returns once
/// every shard has ended.
fn supervise(
    threads: Vec<ExecutorJoinHandle<()>>,
    cores: &[usize],
    exits: Receiver<usize>,
    stopping: &AtomicBool,
    failure: &OnceLock<String>,
    failures: Sender<String>,
) {
    let mut threads: Vec<Option<ExecutorJoinHandle<()>>> = threads.into_iter().map(Some).collect();
    let mut running = threads.len();
    while running > 0 {
        // Every shard thread holds a sender until it exits, so this ends
        // only after all of them did.
        let Ok(i) = exits.recv() else { break };
        let Some(thread) = threads.get_mut(i).and_then(Option::take) else {
            continue;
        };
        running -= 1;
        let reason = match thread.join() {
            Ok(()) if stopping.load(Ordering::SeqCst) => continue,
            Ok(()) => "it stopped without being asked to".to_string(),
            Err(e) => describe(&e),
        };
        let message = format!("shard {i} on CPU {} died: {reason}", cores[i]);
        tracing::error!("{message}; the relay no longer serves that shard's clients");
        if failure.set(message.clone()).is_ok() {
            let _ = failures.send(message);
        }
    }
}

/// What a shard thread's end says, with the panic's own message when it
/// panicked.
fn describe(e: &GlommioError<()>) -> String {
    if let GlommioError::BuilderError(BuilderErrorKind::ThreadPanic(payload)) = e {
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned());
        return match text {
            Some(t) => format!("panicked: {t}"),
            None => "panicked".to_string(),
        };
    }
    e.to_string()
}

/// Stops shards during a failed start: asks each to stop and joins it.
fn stop_shards(monitor: &Monitor, threads: Vec<ExecutorJoinHandle<()>>) {
    monitor.tell_all(|| Control::Stop);
    for t in threads {
        if let Err(e) = t.join() {
            tracing::error!(error = %describe(&e), "a shard ended with an error");
        }
    }
}

/// Binds every address of `wanted` once per shard (`SO_REUSEPORT`), adding
/// each shard's socket to its list; returns the addresses, port 0 resolved.
fn shared_listeners(
    wanted: &[SocketAddr],
    protocol: Protocol,
    per_shard: &mut [Vec<Listener>],
) -> Result<Vec<SocketAddr>, StartError> {
    let mut addrs = Vec::new();
    for &want in wanted {
        let mut addr = want;
        for listeners in per_shard.iter_mut() {
            let sock =
                listen(addr, true).map_err(|source| StartError::Bind { addr: want, source })?;
            addr = local_addr(&sock).map_err(|source| StartError::Bind { addr, source })?;
            listeners.push(Listener {
                fd: sock.into(),
                protocol,
                addr,
            });
        }
        addrs.push(addr);
    }
    Ok(addrs)
}

/// A listener only one shard accepts on.
fn private_listener(addr: SocketAddr, protocol: Protocol) -> Result<Listener, StartError> {
    let sock = listen(addr, false).map_err(|source| StartError::Bind { addr, source })?;
    let addr = local_addr(&sock).map_err(|source| StartError::Bind { addr, source })?;
    Ok(Listener {
        fd: sock.into(),
        protocol,
        addr,
    })
}

/// A listening socket on `addr`; an address in use (a relay that has
/// just exited still holding it, see [`preflight::ADDR_IN_USE_WAIT`]) is
/// tried again for that long.
fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let deadline = Instant::now() + preflight::ADDR_IN_USE_WAIT;
    preflight::retry_while_in_use(deadline, || bind_listener(addr, reuse_port))
}

fn bind_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(LISTEN_BACKLOG)?;
    Ok(sock)
}

fn local_addr(sock: &Socket) -> io::Result<SocketAddr> {
    sock.local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enomem_while_a_shard_starts_is_said_as_a_locked_memory_shortage() {
        let enomem = GlommioError::IoError(io::Error::from_raw_os_error(crate::sys::ENOMEM));
        let err = StartError::shard(1, 3, &enomem, 2, 512 << 10);
        assert!(matches!(
            err,
            StartError::LockedMemory {
                shard: 1,
                cpu: 3,
                ..
            }
        ));
        let msg = err.to_string();
        assert_eq!(msg.lines().count(), 1, "{msg}");
        for part in [
            "shard 1 on CPU 3 failed to start: io_uring could not lock memory",
            "RLIMIT_MEMLOCK",
            "2 shards with --io-memory 512 KiB need 3216 KiB",
            "counts the limit per user",
            "DynamicUser=yes",
            "ulimit -l 6432",
            "LimitMEMLOCK=6432K",
        ] {
            assert!(msg.contains(part), "{part:?} missing from {msg}");
        }
        assert!(!msg.contains("IO error occurred"), "{msg}");

        // Any other error is glommio's own words.
        let other = GlommioError::IoError(io::Error::from_raw_os_error(crate::sys::EMFILE));
        let err = StartError::shard(0, 0, &other, 1, 512 << 10);
        assert!(matches!(err, StartError::Shard { .. }), "{err}");
        assert!(err.to_string().contains("IO error occurred"), "{err}");
    }
}
