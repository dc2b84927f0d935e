//! Starting and stopping a relay: a set of shards sharing listeners.
//!
//! [`Relay::start`] checks the configuration and the machine
//! ([`crate::preflight`]), binds every listening socket on the calling
//! thread (so a port-0 listener resolves to one port that every shard then
//! shares through `SO_REUSEPORT`, and a bind error is reported before any
//! executor exists), builds the [`crate::mesh`], and starts one pinned
//! executor per shard. It returns once every shard is accepting.
//!
//! ```no_run
//! use tern::{config::Config, relay::Relay};
//! let relay = Relay::start(Config::local(2)).unwrap();
//! println!("listening on {}", relay.local_addrs()[0]);
//! let totals = relay.shutdown();
//! println!("{} messages in", totals.msgs_in);
//! ```

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicUsize;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{Config, ConfigError};
use crate::mesh::{self, Doorbell, ShardId};
use crate::preflight::{self, PreflightError};
use crate::shard::{self, ConnectionInfo, Control, ShardSpec};
use crate::stats::{ShardStats, Totals};

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
    Config(#[from] ConfigError),
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
}

/// A running relay. Dropping it shuts it down.
pub struct Relay {
    addrs: Vec<SocketAddr>,
    shard_addrs: Vec<SocketAddr>,
    cores: Vec<usize>,
    monitor: Monitor,
    bells: Vec<Arc<Doorbell>>,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
}

/// A read-only view of a running relay, for any thread (the metrics
/// endpoint): counters are read from the shards' single-writer atomics, and
/// connection lists are asked of each shard over a channel and answered
/// between batches. Neither takes a lock on the data path.
#[derive(Clone)]
pub struct Monitor {
    stats: Vec<Arc<ShardStats>>,
    controls: Vec<crossbeam_channel::Sender<Control>>,
    bells: Vec<Arc<Doorbell>>,
}

impl Monitor {
    /// Counters summed over shards.
    pub fn stats(&self) -> Totals {
        crate::stats::sum(self.stats.iter().map(|s| &**s))
    }

    /// Counters of each shard (index = shard).
    pub fn shard_stats(&self) -> Vec<Totals> {
        self.stats.iter().map(|s| s.snapshot()).collect()
    }

    /// Every open connection, asked of every shard. A shard that does not
    /// answer within `timeout` (stopped, or very busy) is left out.
    pub fn connections(&self, timeout: Duration) -> Vec<ConnectionInfo> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut asked = 0;
        for (control, bell) in self.controls.iter().zip(&self.bells) {
            if control.send(Control::Connections(tx.clone())).is_ok() {
                bell.ring();
                asked += 1;
            }
        }
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
        let mut per_shard: Vec<Vec<OwnedFd>> = (0..shards).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        for &want in &config.listen {
            let mut addr = want;
            for fds in per_shard.iter_mut() {
                let sock =
                    listen(addr, true).map_err(|source| StartError::Bind { addr: want, source })?;
                addr = local_addr(&sock).map_err(|source| StartError::Bind { addr, source })?;
                fds.push(sock.into());
            }
            addrs.push(addr);
        }
        let mut shard_addrs = Vec::new();
        if config.shard_listeners {
            for (i, fds) in per_shard.iter_mut().enumerate() {
                let mut addr = config.shard_listen;
                if addr.port() != 0 {
                    let port = usize::from(addr.port()) + i;
                    let port = u16::try_from(port).map_err(|_| StartError::Bind {
                        addr,
                        source: io::Error::other(format!("shard {i}'s port {port} is past 65535")),
                    })?;
                    addr.set_port(port);
                }
                let sock =
                    listen(addr, false).map_err(|source| StartError::Bind { addr, source })?;
                shard_addrs
                    .push(local_addr(&sock).map_err(|source| StartError::Bind { addr, source })?);
                fds.push(sock.into());
            }
        }

        let (endpoints, bells) = mesh::build(shards, MESH_CAPACITY);
        let config = Arc::new(config);
        let open = Arc::new(AtomicUsize::new(0));
        let stats: Vec<Arc<ShardStats>> = (0..shards).map(|_| Arc::default()).collect();
        let (controls, control_rxs): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| crossbeam_channel::unbounded()).unzip();
        let mut control_rxs = control_rxs.into_iter();
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), String>)>();
        let mut threads = Vec::new();
        let mut relay_bells = bells.clone();
        for (i, (endpoint, listeners)) in endpoints.into_iter().zip(per_shard).enumerate() {
            let cpu = config.cores[i];
            let spec = ShardSpec {
                id: i as ShardId,
                shards,
                config: config.clone(),
                listeners,
                endpoint,
                stats: stats[i].clone(),
                open: open.clone(),
                control: control_rxs.next().expect("one per shard"),
            };
            let ready = ready_tx.clone();
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
                    shard::run(spec, move |r| {
                        let _ = ready.send((i, r));
                    })
                    .await
                });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    stop_all(&mut relay_bells, &mut threads);
                    return Err(StartError::Shard {
                        shard: i,
                        cpu,
                        reason: e.to_string(),
                    });
                }
            }
        }
        drop(ready_tx);
        let mut ready = vec![false; shards];
        while ready.iter().any(|r| !r) {
            match ready_rx.recv_timeout(Duration::from_secs(30)) {
                Ok((i, Ok(()))) => ready[i] = true,
                Ok((i, Err(reason))) => {
                    stop_all(&mut relay_bells, &mut threads);
                    return Err(StartError::Shard {
                        shard: i,
                        cpu: config.cores[i],
                        reason,
                    });
                }
                Err(e) => {
                    // A shard that never became ready: if the channel is
                    // closed its thread has ended (its executor could not be
                    // built) and joining it tells why.
                    let i = ready.iter().position(|r| !r).expect("one is not ready");
                    let reason = match e {
                        mpsc::RecvTimeoutError::Disconnected => match threads.remove(i).join() {
                            Ok(()) => "exited before it was ready".to_string(),
                            Err(e) => e.to_string(),
                        },
                        mpsc::RecvTimeoutError::Timeout => {
                            "did not become ready within 30 s".to_string()
                        }
                    };
                    stop_all(&mut relay_bells, &mut threads);
                    return Err(StartError::Shard {
                        shard: i,
                        cpu: config.cores[i],
                        reason,
                    });
                }
            }
        }
        Ok(Relay {
            addrs,
            shard_addrs,
            cores: config.cores.clone(),
            monitor: Monitor {
                stats,
                controls,
                bells: bells.clone(),
            },
            bells,
            threads,
        })
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

    /// Stops accepting, lets clients take what they are owed for at most
    /// two seconds, closes every connection and joins the shards.
    pub fn shutdown(mut self) -> Totals {
        self.stop();
        self.stats()
    }

    fn stop(&mut self) {
        stop_all(&mut self.bells, &mut self.threads);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stop_all(bells: &mut Vec<Arc<Doorbell>>, threads: &mut Vec<glommio::ExecutorJoinHandle<()>>) {
    for b in bells.iter() {
        b.request_stop();
    }
    for t in threads.drain(..) {
        if let Err(e) = t.join() {
            tracing::error!(error = %e, "a shard ended with an error");
        }
    }
    bells.clear();
}

fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
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
