//! The relay's settings, their defaults, and which combinations can work.
//!
//! [`Config`] is what [`crate::relay::Relay::start`] takes; the binary fills
//! it from flags (their syntax is [`crate::units`]'), tests and the load
//! generator build it in code. [`Config::validate`] checks it against
//! itself; [`crate::preflight`] checks it against the machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Authorization;
use crate::tls::TlsConfig;

use crate::framing::Terminator;
use crate::preflight::GLOMMIO_MIN_IO_MEMORY;
use crate::sys::allowed_cpus;
use crate::units::format_size;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7000";
/// Default `--nats-listen` address: the NATS client port.
pub const DEFAULT_NATS_LISTEN: &str = "127.0.0.1:4222";
/// Default `--nats-ping-interval`: nats-server's `ping_interval`.
pub const DEFAULT_NATS_PING_INTERVAL: Duration = Duration::from_secs(120);
/// Default `--max-frame`: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;
/// Default `--max-pending`: 64 MiB of unsent output per connection.
pub const DEFAULT_MAX_PENDING: usize = 64 << 20;
/// Default `--max-subs` per connection.
pub const DEFAULT_MAX_SUBS: usize = 10_000;
/// Default `--max-connections` for the whole relay.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Default io_uring registered-buffer memory per shard. glommio's own
/// default (10 MiB per ring, 30 MiB per executor) is far above the 8 MiB
/// locked-memory limit most distributions give ordinary users; the relay
/// does no file I/O, so it needs very little.
pub const DEFAULT_IO_MEMORY: usize = 512 << 10;
/// Default `--max-stall`: how long a publisher waits for a receiver on its
/// way to being a slow consumer to catch up. A reader that reads at all
/// drains a quarter of `--max-pending` in far less; one that does not, or
/// barely, is left behind after this long (and closed if it reaches
/// `--max-pending`), costing its publishers one such pause.
pub const DEFAULT_MAX_STALL: Duration = Duration::from_millis(100);
/// Default `--max-memory`: half of the machine's physical memory (1 GiB if
/// it cannot be read), leaving the rest to the kernel's socket buffers,
/// the allocator's slack and everything else on the host.
pub fn default_max_memory() -> usize {
    crate::sys::physical_memory().map_or(1 << 30, |total| (total / 2) as usize)
}

/// Default time a shard keeps polling before it parks its thread: none.
/// Measured here (1 shard, 1→1 at 50,000 msgs/s, tern-loadgen): spinning
/// 10–100 µs raised tern's CPU use from ~75% to ~100% of a core and made
/// p99 latency no better (often worse: the spinning core competes with the
/// clients' on a virtual machine), so parking at once is the default and
/// spinning a flag for machines where waking a core is the bottleneck.
pub const DEFAULT_SPIN_BEFORE_PARK: Duration = Duration::ZERO;

/// Everything a relay needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to accept clients on; every shard accepts on each.
    pub listen: Vec<SocketAddr>,
    /// Addresses to accept NATS clients on (empty: none); every shard
    /// accepts on each.
    pub nats_listen: Vec<SocketAddr>,
    /// How often NATS clients are pinged; two unanswered pings close the
    /// connection as stale.
    pub nats_ping_interval: Duration,
    /// One shard per entry, pinned to that CPU.
    pub cores: Vec<usize>,
    /// Frame terminator for every listener (never contains a space).
    pub terminator: Terminator,
    /// Longest frame accepted, in bytes (without the terminator).
    pub max_frame: usize,
    /// Unsent output per connection past which it is a slow consumer.
    pub max_pending: usize,
    /// Bytes the whole relay may hold in clients' input buffers and unsent
    /// output (see [`crate::budget`]); past it, a connection that wants
    /// more is refused instead.
    pub max_memory: usize,
    /// Longest a publisher is paused (not read) while a receiver it
    /// delivered to has more than half of `max_pending` queued; zero: never
    /// paused, receivers that fall behind are closed at `max_pending`.
    pub max_stall: Duration,
    /// Subscriptions per connection.
    pub max_subs: usize,
    /// Open connections for the whole relay.
    pub max_connections: usize,
    /// How long an idle shard polls before parking (lower latency after a
    /// burst, at the cost of that much CPU after each burst).
    pub spin_before_park: Duration,
    /// io_uring registered-buffer memory per shard (locked memory).
    pub io_memory: usize,
    /// Also give each shard a private listener, so a client can choose its
    /// shard (tests and benchmarks use this to force cross-shard traffic).
    /// See [`crate::relay::Relay::shard_addrs`].
    pub shard_listeners: bool,
    /// Where the private listeners bind: shard `i` on this address's port
    /// plus `i`, or on a port of its own each if the port is 0.
    pub shard_listen: SocketAddr,
    /// Bytes asked of the kernel per socket read.
    pub read_size: usize,
    /// Who may connect and what each user may do (the config file's
    /// `[authorization]`); `None`: anyone, with every right.
    pub auth: Option<Arc<Authorization>>,
    /// TLS on every listener; `None`: clear text.
    pub tls: Option<TlsConfig>,
    /// Hubs this relay joins as a leaf node (`--leafnode-remote`, the
    /// config file's `[[leafnodes.remotes]]`), one link each.
    pub leaf_remotes: Vec<crate::leaf::Remote>,
    /// The longest wait between two attempts to reach a hub.
    pub leaf_reconnect_max: Duration,
    /// Test hook: a shard that receives the frame
    /// [`crate::shard::core::PANIC_FRAME`] panics, so tests can check how
    /// the relay handles a dead shard. Off unless a test sets it (the
    /// binary's hidden `--test-panic-frame` flag).
    #[doc(hidden)]
    pub panic_frame: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![DEFAULT_LISTEN.parse().expect("valid default")],
            nats_listen: vec![DEFAULT_NATS_LISTEN.parse().expect("valid default")],
            nats_ping_interval: DEFAULT_NATS_PING_INTERVAL,
            cores: allowed_cpus(),
            terminator: Terminator::default(),
            max_frame: DEFAULT_MAX_FRAME,
            max_pending: DEFAULT_MAX_PENDING,
            max_stall: DEFAULT_MAX_STALL,
            max_memory: default_max_memory(),
            max_subs: DEFAULT_MAX_SUBS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            spin_before_park: DEFAULT_SPIN_BEFORE_PARK,
            io_memory: DEFAULT_IO_MEMORY,
            shard_listeners: false,
            shard_listen: "127.0.0.1:0".parse().expect("valid"),
            read_size: crate::framing::DEFAULT_READ_SIZE,
            auth: None,
            tls: None,
            leaf_remotes: Vec::new(),
            leaf_reconnect_max: crate::leaf::DEFAULT_RECONNECT_MAX,
            panic_frame: false,
        }
    }
}

impl Config {
    /// A configuration for tests and embedding: `shards` shards on the CPUs
    /// this process may use (reused round-robin if there are fewer), one
    /// listener on `127.0.0.1:0`, and per-shard listeners.
    pub fn local(shards: usize) -> Self {
        let cpus = allowed_cpus();
        Config {
            listen: vec!["127.0.0.1:0".parse().expect("valid")],
            nats_listen: vec!["127.0.0.1:0".parse().expect("valid")],
            cores: (0..shards.max(1)).map(|i| cpus[i % cpus.len()]).collect(),
            shard_listeners: true,
            ..Config::default()
        }
    }

    /// Checks the settings against each other and the protocol.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_terminator(&self.terminator)?;
        if self.listen.is_empty() && self.nats_listen.is_empty() {
            return Err(ConfigError::NoListener);
        }
        if self.nats_ping_interval.is_zero() {
            return Err(ConfigError::Zero("--nats-ping-interval"));
        }
        if self.cores.is_empty() {
            return Err(ConfigError::NoShards);
        }
        for (name, value) in [
            ("--max-frame", self.max_frame),
            ("--max-pending", self.max_pending),
            ("--max-subs", self.max_subs),
            ("--max-connections", self.max_connections),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.io_memory < GLOMMIO_MIN_IO_MEMORY {
            return Err(ConfigError::IoMemoryTooSmall(self.io_memory));
        }
        if self.auth.as_ref().is_some_and(|a| a.timeout.is_zero()) {
            return Err(ConfigError::Zero("--auth-timeout"));
        }
        if self.tls.as_ref().is_some_and(|t| t.timeout.is_zero()) {
            return Err(ConfigError::Zero("--tls-timeout"));
        }
        if self.leaf_reconnect_max.is_zero() {
            return Err(ConfigError::Zero("--leafnode-reconnect-max"));
        }
        if self.auth.as_ref().is_some_and(|a| a.map_certificates)
            && self.tls.as_ref().is_none_or(|t| t.client_ca.is_none())
        {
            return Err(ConfigError::MapUsersWithoutClientCa);
        }
        Ok(())
    }
}

/// Checks that `terminator` can end the line protocol's frames: it must
/// not contain a space, which separates a frame's fields. (Both binaries
/// take it with `--terminator`.)
pub fn check_terminator(terminator: &Terminator) -> Result<(), ConfigError> {
    if terminator.as_bytes().contains(&b' ') {
        return Err(ConfigError::SpaceInTerminator);
    }
    Ok(())
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--terminator must not contain a space: the line protocol separates fields with spaces"
    )]
    SpaceInTerminator,
    #[error("no --listen address given")]
    NoListener,
    #[error("no shards: give --shards N (N >= 1) or --cores LIST")]
    NoShards,
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// glommio would silently allocate its minimum instead.
    #[error("--io-memory {} is below glommio's minimum of {} per shard: give at least 64KiB", format_size(*.0 as u64), format_size(GLOMMIO_MIN_IO_MEMORY as u64))]
    IoMemoryTooSmall(usize),
    #[error("--tls-map-users needs client certificates: give --tls-client-ca (and --tls-cert, --tls-key)")]
    MapUsersWithoutClientCa,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_refuses_space_terminator() {
        let c = Config {
            terminator: Terminator::parse("a b").unwrap(),
            ..Config::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::SpaceInTerminator));
        let msg = c.validate().unwrap_err().to_string();
        assert!(
            msg.contains("--terminator") && msg.contains("space"),
            "{msg}"
        );
        assert_eq!(Config::default().validate(), Ok(()));
        assert!(check_terminator(&Terminator::parse(r"\r\n").unwrap()).is_ok());
    }

    #[test]
    fn validate_refuses_less_io_memory_than_glommio_allocates() {
        let with = |io_memory| Config {
            io_memory,
            ..Config::default()
        };
        assert_eq!(
            with(1024).validate(),
            Err(ConfigError::IoMemoryTooSmall(1024))
        );
        assert_eq!(
            with(1024).validate().unwrap_err().to_string(),
            "--io-memory 1 KiB is below glommio's minimum of 64 KiB per shard: give at least 64KiB"
        );
        assert_eq!(with(0).validate(), Err(ConfigError::IoMemoryTooSmall(0)));
        assert_eq!(with(64 << 10).validate(), Ok(()));
    }
}
