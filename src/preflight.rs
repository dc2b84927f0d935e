//! Start-up findings: everything the relay needs from its settings and from
//! the machine, checked before any executor starts, each problem said as
//! one line that names the cause and the fix.
//!
//! glommio reports a missing prerequisite late and in its own terms: a
//! kernel or container without io_uring surfaces as a panic about old
//! kernels, a low locked-memory limit as `MemLockLimit(65536/524288)` from a
//! join handle, a CPU outside the affinity mask as a failed
//! `sched_setaffinity`, and a port already taken by another tern as nothing
//! at all (its `TcpListener::bind` always sets `SO_REUSEPORT`, so two relays
//! silently share the port).
//!
//! [`findings`] is the one place that looks: it returns a [`Finding`] per
//! setting and per prerequisite, in the order a user would fix them (the
//! settings, then CPUs, addresses, locked memory, io_uring, open files).
//! `tern --check-config` prints them all; a start ([`check`], which
//! [`crate::relay::Relay::start`] runs) stops at the first error and
//! hands the warnings on in a [`Checked`] configuration.
//!
//! Every check reads the environment as it is now. Nothing here reserves
//! anything: a port found free can be taken before the relay binds it (two
//! relays started in the same instant can both pass).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigError, DEFAULT_MAX_CONNECTIONS};
use crate::sys::{self, Limits, Resource};
use crate::units::{format_cpu_list, format_duration, format_size};

/// glommio 0.9 refuses to create a reactor when `RLIMIT_MEMLOCK` is below
/// this, whatever `io_memory` is (`MIN_MEMLOCK_LIMIT` in
/// `Reactor::new`, glommio-0.9.0/src/sys/uring.rs).
pub const GLOMMIO_MIN_MEMLOCK: u64 = 512 * 1024;

/// The smallest io memory glommio allocates per executor
/// (`Reactor::new`: `max(align_up(io_memory, 4096), 65536)`); a smaller
/// `--io-memory` is refused ([`Config::validate`]) rather than silently
/// raised.
pub const GLOMMIO_MIN_IO_MEMORY: usize = 64 * 1024;

/// Rings per glommio executor that register the io memory (main, latency,
/// poll). The kernel charges a registration to each ring separately, even
/// when the rings share one buffer.
pub const GLOMMIO_RINGS: u64 = 3;

/// Locked memory allowed per executor for its 3 rings' own memory (the
/// kernel charges it since Linux 6.13; measured 52 KiB, see
/// [`memlock_needed`]).
pub const RING_ALLOWANCE: u64 = 64 * 1024;

/// Locked memory allowed per process for the short-lived probe rings
/// ([`sys::probe_io_uring`]'s and glommio's own), whose charge the kernel
/// returns a little after they close (measured up to 12 KiB).
pub const PROBE_ALLOWANCE: u64 = 16 * 1024;

/// How long a start keeps trying an address that is in use before it
/// says so. The listening sockets of a relay that has just exited stay
/// bound for a few milliseconds after it (io_uring lets go of them from a
/// kernel worker), so a restart right after a clean stop found its own
/// port taken (measured: for about 9 ms, 4 restarts in 15) and, under
/// systemd's `RestartPreventExitStatus=2`, stayed down. A port that a
/// running program holds is still refused, this much later.
pub const ADDR_IN_USE_WAIT: Duration = Duration::from_secs(2);

/// The pause between two tries of an address that is in use.
const ADDR_IN_USE_PAUSE: Duration = Duration::from_millis(10);

/// Share of the locked-memory limit a suggested `--io-memory` leaves
/// unused, in percent. The kernel counts the limit per user, not per
/// process: other io_uring programs of the same user, and a tern that
/// exited a moment ago (whose charge the kernel returns a little later),
/// hold part of it. A suggestion that fills the limit exactly would fail
/// at the next restart.
pub const MEMLOCK_HEADROOM_PERCENT: u64 = 25;

/// File descriptors each shard needs besides its listening sockets (one
/// per `--listen` address, counted apart): three io_uring rings and
/// glommio's event and timer descriptors, with room to spare. An estimate
/// for the `open files` warning, not a limit.
const FDS_PER_SHARD: u64 = 16;

/// File descriptors the process needs besides its shards' and clients':
/// the metrics endpoint, logging and a margin.
const FDS_PER_PROCESS: u64 = 64;

/// A prerequisite the relay cannot run without.
///
/// Each message is one line: what is wrong, the value found, and how to
/// fix it.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The settings contradict each other or the protocol.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS files cannot be used (shared: the binary and the relay
    /// report the same error).
    #[error(transparent)]
    Tls(Arc<crate::tls::TlsError>),
    /// The same listen address was given twice (in `--listen` and
    /// `--nats-listen` together).
    #[error("{0} is given twice in --listen/--nats-listen: give each address once")]
    DuplicateListen(SocketAddr),
    /// A shard was asked to run on a CPU outside the affinity mask.
    #[error("CPU {cpu} is not available to this process (allowed CPUs: {allowed}): choose CPUs from that list with --cores, or use --shards N")]
    CpuUnavailable {
        /// The CPU asked for.
        cpu: usize,
        /// The process's affinity mask, as a CPU list (`0-3,6`).
        allowed: String,
    },
    /// `io_uring_setup(2)` failed.
    #[error("io_uring is not available: io_uring_setup failed: {source}; {hint}")]
    IoUring {
        /// The error the kernel returned.
        source: io::Error,
        /// The likely causes and fixes for that error.
        hint: String,
    },
    /// `RLIMIT_MEMLOCK` is below what the shards will lock.
    #[error("{0}")]
    Memlock(MemlockShortfall),
    /// Another socket (another tern, or any program) holds the address.
    #[error("address {0} is already in use (another tern or another program is listening on it): stop that process or choose another --listen address")]
    AddrInUse(SocketAddr),
    /// The address is not one of this host's.
    #[error("address {0} is not available on this host: --listen needs an address of one of this machine's interfaces, or 0.0.0.0 / [::]")]
    AddrNotAvailable(SocketAddr),
    /// Binding needs a privilege the process lacks.
    #[error("permission denied binding {0}: ports below 1024 need root or CAP_NET_BIND_SERVICE; choose a port >= 1024 with --listen")]
    AddrPermission(SocketAddr),
    /// `--metrics` names one of the `--listen` addresses: the two would
    /// fight over the port (and the loser's error would blame the other
    /// flag).
    #[error(
        "--metrics {0} is also a --listen address: give the metrics endpoint a port of its own"
    )]
    MetricsIsListen(SocketAddr),
    /// The metrics endpoint's address cannot be bound.
    #[error("cannot serve metrics on {addr}: {source}: choose another --metrics address")]
    MetricsAddr {
        /// The address probed.
        addr: SocketAddr,
        /// What the kernel said.
        source: io::Error,
    },
    /// Any other failure probing an address.
    #[error("cannot bind {addr}: {source}")]
    AddrProbe {
        /// The address probed.
        addr: SocketAddr,
        /// What the kernel said.
        source: io::Error,
    },
}

/// Why the locked-memory limit is too low, with what would fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemlockShortfall {
    /// The soft `RLIMIT_MEMLOCK` (what the kernel checks), in bytes.
    pub limit: u64,
    /// The hard `RLIMIT_MEMLOCK`, in bytes ([`sys::UNLIMITED`] for unlimited).
    pub hard: u64,
    /// Bytes the relay needs ([`memlock_needed`]).
    pub needed: u64,
    /// Shards asked for.
    pub shards: usize,
    /// `--io-memory` asked for.
    pub io_memory: usize,
    /// An `--io-memory` that fits under the current limit with
    /// [`MEMLOCK_HEADROOM_PERCENT`] of it to spare, if lowering it is
    /// enough.
    pub fitting_io_memory: Option<usize>,
}

impl fmt::Display for MemlockShortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let needed_kib = self.needed.div_ceil(1024);
        write!(
            f,
            "locked-memory limit too low: RLIMIT_MEMLOCK (`ulimit -l`) is {} but {} with --io-memory {} {} {} ",
            format_size(self.limit),
            if self.shards == 1 { "1 shard".to_string() } else { format!("{} shards", self.shards) },
            format_size(self.io_memory as u64),
            if self.shards == 1 { "needs" } else { "need" },
            format_size(self.needed),
        )?;
        if self.needed == GLOMMIO_MIN_MEMLOCK {
            write!(
                f,
                "(glommio refuses to start below {}); ",
                format_size(GLOMMIO_MIN_MEMLOCK)
            )?;
        } else {
            write!(
                f,
                "(io_uring locks each shard's io memory once per ring, {GLOMMIO_RINGS} rings per shard, plus the rings); "
            )?;
        }
        write!(f, "raise it with `ulimit -l {needed_kib}`")?;
        if self.hard < self.needed {
            write!(
                f,
                " (the hard limit is {}: raise it as root or with a `memlock` line in /etc/security/limits.conf)",
                format_size(self.hard)
            )?;
        }
        write!(f, ", or with systemd `LimitMEMLOCK={needed_kib}K`")?;
        if let Some(io) = self.fitting_io_memory {
            write!(
                f,
                ", or lower --io-memory to {}",
                format_size(io as u64).replace(' ', "")
            )?;
        }
        Ok(())
    }
}

/// A shard could not lock memory for its rings although the limit looked
/// high enough at the check ([`evaluate_memlock`]): io_uring answered
/// `ENOMEM` because the kernel counts the limit per user, and other
/// processes of this user hold part of it. Said with the fixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemlockExhausted {
    /// The soft `RLIMIT_MEMLOCK`, in bytes, if it could be read
    /// ([`sys::UNLIMITED`] for unlimited).
    pub limit: Option<u64>,
    /// Bytes the relay needs ([`memlock_needed`]).
    pub needed: u64,
    /// Shards asked for.
    pub shards: usize,
    /// `--io-memory` asked for.
    pub io_memory: usize,
}

impl MemlockExhausted {
    /// The explanation for `shards` shards with `io_memory` each, under
    /// this process's limit now.
    pub fn now(shards: usize, io_memory: usize) -> MemlockExhausted {
        MemlockExhausted {
            limit: sys::limits(Resource::LockedMemory).ok().map(|l| l.soft),
            needed: memlock_needed(shards, io_memory),
            shards,
            io_memory,
        }
    }
}

impl fmt::Display for MemlockExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limit = match self.limit {
            Some(l) => format_limit(l, format_size),
            None => "unreadable".to_string(),
        };
        // Twice the need: room for a relay that just exited, or for as
        // much again held by other programs.
        let raise_kib = self.needed.saturating_mul(2).div_ceil(1024);
        write!(
            f,
            "io_uring could not lock memory for the shard's rings (Cannot allocate memory): \
             the locked-memory limit (RLIMIT_MEMLOCK, `ulimit -l`) is {limit} and {} with \
             --io-memory {} {} {}, but the kernel counts the limit per user, and other processes \
             of this user (another io_uring program, or a tern that exited a moment ago) hold \
             part of it: run tern as a user of its own (systemd DynamicUser=yes), or raise the \
             limit with `ulimit -l {raise_kib}` or systemd `LimitMEMLOCK={raise_kib}K`",
            if self.shards == 1 {
                "1 shard".to_string()
            } else {
                format!("{} shards", self.shards)
            },
            format_size(self.io_memory as u64),
            if self.shards == 1 { "needs" } else { "need" },
            format_size(self.needed),
        )?;
        // What fits in half the limit: the other half is taken, as far as
        // anyone can tell.
        let fitting = self
            .limit
            .filter(|&l| l != sys::UNLIMITED)
            .and_then(|l| fitting_io_memory(self.shards, l / 2))
            .filter(|&io| io < self.io_memory);
        if let Some(io) = fitting {
            write!(
                f,
                ", or lower --io-memory to {}",
                format_size(io as u64).replace(' ', "")
            )?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- findings

/// What one check concluded.
#[derive(Debug)]
pub enum Verdict {
    /// A fact worth showing; nothing was checked (a setting's value).
    Info,
    /// Checked, and fine.
    Ok,
    /// The relay starts but will fall short (serve fewer clients than
    /// asked): what happens and how to fix it.
    Warning(String),
    /// The relay cannot start.
    Error(PreflightError),
}

/// One line of what [`findings`] found.
#[derive(Debug)]
pub struct Finding {
    /// What was looked at: a flag without its dashes (`listen`,
    /// `max-frame`) or a resource (`io_uring`, `locked memory`).
    pub key: &'static str,
    /// What was found: the value, the limit, what was probed.
    pub found: String,
    /// Whether that is fine.
    pub verdict: Verdict,
}

impl Finding {
    fn new(key: &'static str, found: impl fmt::Display, verdict: Verdict) -> Finding {
        Finding {
            key,
            found: found.to_string(),
            verdict,
        }
    }

    /// A checked finding: `Ok`, or `Error` with the problem.
    fn checked(
        key: &'static str,
        found: impl fmt::Display,
        result: Result<(), PreflightError>,
    ) -> Finding {
        let verdict = match result {
            Ok(()) => Verdict::Ok,
            Err(e) => Verdict::Error(e),
        };
        Finding::new(key, found, verdict)
    }
}

/// `key: found` and the verdict, as one log line: `open files: limit
/// 1024, …: clients past the limit are refused at accept: raise it …`.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.verdict {
            Verdict::Info => write!(f, "{}: {}", self.key, self.found),
            Verdict::Ok => write!(f, "{}: {}: ok", self.key, self.found),
            Verdict::Warning(w) => write!(f, "{}: {}: {w}", self.key, self.found),
            Verdict::Error(e) => write!(f, "{}: {e}", self.key),
        }
    }
}

/// Everything [`findings`] found, in its order.
#[derive(Debug, Default)]
pub struct Findings(Vec<Finding>);

impl Findings {
    /// Every finding, in the order a user would fix them.
    pub fn iter(&self) -> std::slice::Iter<'_, Finding> {
        self.0.iter()
    }

    /// The problems that stop the relay from starting, in order.
    pub fn errors(&self) -> impl Iterator<Item = &PreflightError> {
        self.0.iter().filter_map(|f| match &f.verdict {
            Verdict::Error(e) => Some(e),
            _ => None,
        })
    }

    /// The findings that are warnings, in order.
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.0
            .iter()
            .filter(|f| matches!(f.verdict, Verdict::Warning(_)))
    }

    fn push(&mut self, finding: Finding) {
        self.0.push(finding);
    }

    /// The first error, if any, else the findings themselves.
    fn into_result(self) -> Result<Findings, PreflightError> {
        let mut list = self.0;
        if let Some(i) = list
            .iter()
            .position(|f| matches!(f.verdict, Verdict::Error(_)))
        {
            if let Verdict::Error(e) = list.swap_remove(i).verdict {
                return Err(e);
            }
        }
        Ok(Findings(list))
    }
}

impl<'a> IntoIterator for &'a Findings {
    type Item = &'a Finding;
    type IntoIter = std::slice::Iter<'a, Finding>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// A configuration that passed every check of [`check`], with the
/// warnings found on the way. Only [`check`] makes one, so a relay started
/// from it ([`crate::relay::Relay::start_checked`]) need not check again.
#[derive(Debug)]
pub struct Checked {
    config: Config,
    findings: Findings,
}

impl Checked {
    /// The configuration checked.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What the relay will fall short of (see [`Verdict::Warning`]).
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.warnings()
    }

    /// The configuration, to start a relay with.
    pub fn into_config(self) -> Config {
        self.config
    }
}

/// Runs every check ([`findings`]) and returns the configuration as
/// [`Checked`], or the first problem in [`findings`]' order.
pub fn check(config: Config, metrics: Option<SocketAddr>) -> Result<Checked, PreflightError> {
    let findings = findings(&config, metrics).into_result()?;
    Ok(Checked { config, findings })
}

/// Checks `config` (and the address of the metrics endpoint, if the binary
/// serves one) against itself and against this machine, and says what it
/// found, in the order a user would fix it:
///
/// 1. tern's version, then each setting's value; a setting that cannot
///    work ([`Config::validate`], run here once) is that line's error;
/// 2. `shards`: every CPU in the affinity mask;
/// 3. `listen`, one per address: given once, not `--metrics`'s, free
///    (an address in use is tried again for up to [`ADDR_IN_USE_WAIT`]);
/// 4. `metrics`: free (likewise);
/// 5. `locked memory`: enough for the shards' io_uring buffers (before
///    io_uring: with too low a limit the probe ring itself may not fit, and
///    the limit is the more useful thing to report);
/// 6. `io_uring`: a ring can be set up;
/// 7. `open files`: enough for `--max-connections`, once the soft limit is
///    raised to the hard one ([`raise_open_files_limit`]); short is only a
///    warning, since the relay still serves as many clients as it can;
/// 8. `tls`: the certificate, key and client CA files can be used;
/// 9. `authorization`: who may connect (plain-text secrets are a warning).
pub fn findings(config: &Config, metrics: Option<SocketAddr>) -> Findings {
    let mut out = Findings::default();
    out.push(Finding::new(
        "tern",
        env!("CARGO_PKG_VERSION"),
        Verdict::Info,
    ));
    let invalid = config.validate().err();
    settings(config, invalid.as_ref(), &mut out);
    let missing = |e: ConfigError| Finding::new(setting_of(&e), "none", Verdict::Error(e.into()));
    out.push(match invalid {
        Some(ConfigError::NoShards) => missing(ConfigError::NoShards),
        _ => cpus(&config.cores, &sys::allowed_cpus()),
    });
    let listeners = listeners(config);
    // One wait for every address together (see ADDR_IN_USE_WAIT).
    let in_use_until = Instant::now() + ADDR_IN_USE_WAIT;
    match invalid {
        Some(ConfigError::NoListener) => out.push(missing(ConfigError::NoListener)),
        _ => listen_addrs(&listeners, metrics, in_use_until, &mut out),
    }
    let addrs: Vec<SocketAddr> = listeners.iter().map(|&(_, a)| a).collect();
    out.push(metrics_addr(metrics, &addrs, in_use_until));
    out.push(locked_memory(config.cores.len(), config.io_memory));
    out.push(io_uring());
    out.push(open_files(sys::limits(Resource::OpenFiles), config));
    if !matches!(invalid, Some(ConfigError::MapUsersWithoutClientCa)) {
        out.push(tls(config));
    }
    out.push(authorization(config));
    out
}

/// `tls`: the certificate, key and client CA files can be read and used
/// together.
fn tls(config: &Config) -> Finding {
    let Some(t) = &config.tls else {
        return Finding::new("tls", "off (clear text on every listener)", Verdict::Info);
    };
    let found = format!(
        "certificate {}, key {}{}, handshake timeout {}{}",
        t.cert.display(),
        t.key.display(),
        t.client_ca
            .as_ref()
            .map(|ca| format!(", client CA {} (mutual TLS)", ca.display()))
            .unwrap_or_default(),
        format_duration(t.timeout),
        if t.nats_handshake_first {
            ", NATS handshake first"
        } else {
            ""
        }
    );
    match crate::tls::TlsAcceptor::load(t) {
        Ok(acceptor) => match acceptor.expires() {
            None => Finding::new("tls", found, Verdict::Ok),
            Some(expires) => certificate_validity(found, expires, std::time::SystemTime::now()),
        },
        Err(e) => Finding::new(
            "tls",
            found,
            Verdict::Error(PreflightError::Tls(Arc::new(e))),
        ),
    }
}

/// Days before expiry from which `--check-config` and the start-up log
/// warn about the certificate.
const CERTIFICATE_WARN_DAYS: u64 = 14;

/// The `tls` finding with the certificate's end of validity: a warning
/// once it is past, or less than [`CERTIFICATE_WARN_DAYS`] away (clients
/// refuse an expired certificate; tern still serves it, so that a late
/// renewal does not also stop the relay).
fn certificate_validity(
    found: String,
    expires: std::time::SystemTime,
    now: std::time::SystemTime,
) -> Finding {
    let date = crate::metrics::clock::rfc3339_nanos(expires);
    let found = format!("{found}, certificate valid until {date}");
    let fix = "renew it, then `systemctl reload tern` (SIGHUP)";
    let warning = match expires.duration_since(now) {
        Err(_) => format!("the certificate has expired: clients will refuse it; {fix}"),
        Ok(left) if left.as_secs() < CERTIFICATE_WARN_DAYS * 86_400 => format!(
            "the certificate expires in {} day(s); {fix}",
            left.as_secs() / 86_400
        ),
        Ok(_) => return Finding::new("tls", found, Verdict::Ok),
    };
    Finding::new("tls", found, Verdict::Warning(warning))
}

/// `authorization`: who may connect; plain-text secrets are a warning.
fn authorization(config: &Config) -> Finding {
    use crate::auth::Method;
    let Some(a) = &config.auth else {
        return Finding::new(
            "authorization",
            "off (anyone who reaches a listener may publish and subscribe)",
            Verdict::Info,
        );
    };
    let what = match &a.method {
        Method::Token(_) => "a token".to_string(),
        Method::Users(u) => format!("{} user{}", u.len(), if u.len() == 1 { "" } else { "s" }),
    };
    let found = format!(
        "{what}, auth timeout {}{}",
        format_duration(a.timeout),
        if a.map_certificates {
            ", client certificates map to users"
        } else {
            ""
        }
    );
    let plain = a.plain_text_secrets();
    if plain.is_empty() {
        Finding::new("authorization", found, Verdict::Ok)
    } else {
        Finding::new(
            "authorization",
            found,
            Verdict::Warning(format!(
                "{} stored in plain text in the config file: store bcrypt hashes instead (any bcrypt tool, e.g. `htpasswd -bnBC 11 \"\" PASSWORD | tr -d ':\\n'`)",
                plain.join(", ")
            )),
        )
    }
}

/// One line per setting, with `invalid` (what [`Config::validate`] said)
/// on the line of the setting it refuses.
fn settings(config: &Config, invalid: Option<&ConfigError>, out: &mut Findings) {
    let verdict = |key: &str| match invalid {
        Some(e) if setting_of(e) == key => Verdict::Error(e.clone().into()),
        _ => Verdict::Info,
    };
    let size = |n: usize| {
        let h = format_size(n as u64);
        if h.ends_with("bytes") {
            h
        } else {
            format!("{n} ({h})")
        }
    };
    for (key, found) in [
        ("terminator", config.terminator.escape()),
        ("max-frame", size(config.max_frame)),
        ("max-pending", size(config.max_pending)),
        ("max-stall", format_duration(config.max_stall)),
        ("max-memory", size(config.max_memory)),
        ("max-subs", config.max_subs.to_string()),
        ("max-connections", config.max_connections.to_string()),
        ("spin-before-park", format_duration(config.spin_before_park)),
        ("io-memory", format!("{} per shard", size(config.io_memory))),
        (
            "nats-ping-interval",
            format_duration(config.nats_ping_interval),
        ),
    ] {
        out.push(Finding::new(key, found, verdict(key)));
    }
}

/// The finding key of the setting a [`ConfigError`] refuses.
fn setting_of(e: &ConfigError) -> &'static str {
    match e {
        ConfigError::SpaceInTerminator => "terminator",
        ConfigError::NoListener => "listen",
        ConfigError::NoShards => "shards",
        ConfigError::Zero(flag) => flag.trim_start_matches('-'),
        ConfigError::IoMemoryTooSmall(_) => "io-memory",
        ConfigError::MapUsersWithoutClientCa => "tls",
    }
}

// ---------------------------------------------------------------- CPUs

/// Every CPU in `cores` must be in this process's affinity mask,
/// `allowed` (glommio pins each shard with `sched_setaffinity`, which fails
/// for the others).
fn cpus(cores: &[usize], allowed: &[usize]) -> Finding {
    let found = format!(
        "{} on CPUs {} (this process may use CPUs {})",
        cores.len(),
        format_cpu_list(cores),
        format_cpu_list(allowed)
    );
    let result = match cores.iter().find(|c| !allowed.contains(c)) {
        None => Ok(()),
        Some(&cpu) => Err(PreflightError::CpuUnavailable {
            cpu,
            allowed: format_cpu_list(allowed),
        }),
    };
    Finding::checked("shards", found, result)
}

// ---------------------------------------------------------------- addresses

/// Every listen address with the finding key of its flag (`listen` for
/// the line protocol, `nats-listen` for NATS).
fn listeners(config: &Config) -> Vec<(&'static str, SocketAddr)> {
    let line = config.listen.iter().map(|&a| ("listen", a));
    let nats = config.nats_listen.iter().map(|&a| ("nats-listen", a));
    line.chain(nats).collect()
}

/// One line per listen address: refused if an earlier one or `--metrics`
/// names it too (port 0 twice is two different ports), else probed
/// ([`check_addr_free`], trying one in use again until `in_use_until`).
fn listen_addrs(
    addrs: &[(&'static str, SocketAddr)],
    metrics: Option<SocketAddr>,
    in_use_until: Instant,
    out: &mut Findings,
) {
    for (i, &(key, addr)) in addrs.iter().enumerate() {
        let result = if addr.port() != 0 && addrs[..i].iter().any(|&(_, a)| a == addr) {
            Err(PreflightError::DuplicateListen(addr))
        } else if addr.port() != 0 && metrics == Some(addr) {
            Err(PreflightError::MetricsIsListen(addr))
        } else {
            check_addr_free(addr, in_use_until)
        };
        out.push(Finding::checked(key, format!("{addr} (free)"), result));
    }
}

/// The metrics endpoint's address, bound and released as the endpoint
/// will bind it (without `SO_REUSEPORT`), tried again while in use until
/// `in_use_until`. One that is also a `--listen` address is that `listen`
/// line's error, and not probed.
fn metrics_addr(
    metrics: Option<SocketAddr>,
    listen: &[SocketAddr],
    in_use_until: Instant,
) -> Finding {
    match metrics {
        None => Finding::new(
            "metrics",
            "off (serve them with --metrics ADDR)",
            Verdict::Info,
        ),
        Some(addr) if addr.port() != 0 && listen.contains(&addr) => Finding::new(
            "metrics",
            format!("http://{addr}/metrics (not probed: also a --listen address)"),
            Verdict::Info,
        ),
        Some(addr) => Finding::checked(
            "metrics",
            format!("http://{addr}/metrics (free)"),
            retry_while_in_use(in_use_until, || probe_bind(addr))
                .map_err(|source| PreflightError::MetricsAddr { addr, source }),
        ),
    }
}

// ---------------------------------------------------------------- io_uring

/// Whether this process can create an io_uring the way glommio will
/// ([`sys::probe_io_uring`]), and if not, why.
fn io_uring() -> Finding {
    let sysctl = match sys::io_uring_disabled() {
        Some(v) => format!("kernel.io_uring_disabled = {v}"),
        None => "no kernel.io_uring_disabled sysctl".to_string(),
    };
    let result = sys::probe_io_uring().map_err(|source| {
        let hint = io_uring_hint(
            &source,
            sys::io_uring_disabled(),
            sys::under_seccomp_filter(),
        );
        PreflightError::IoUring { source, hint }
    });
    Finding::checked(
        "io_uring",
        format!("io_uring_setup works ({sysctl})"),
        result,
    )
}

/// The likely causes of an `io_uring_setup` failure, most likely first.
fn io_uring_hint(err: &io::Error, disabled: Option<u8>, seccomp: bool) -> String {
    let sysctl = match disabled {
        Some(2) => Some(
            "the sysctl kernel.io_uring_disabled is 2, which disables io_uring for every process: set it to 0 (`sysctl -w kernel.io_uring_disabled=0`)"
                .to_string(),
        ),
        Some(1) => {
            let group = sys::io_uring_group().map_or_else(|| "the group in kernel.io_uring_group".to_string(), |g| format!("group {g} (kernel.io_uring_group)"));
            Some(format!(
                "the sysctl kernel.io_uring_disabled is 1, which allows io_uring only for {group} and CAP_SYS_ADMIN: run tern in that group, or set it to 0 (`sysctl -w kernel.io_uring_disabled=0`)"
            ))
        }
        _ => None,
    };
    let seccomp_hint = if seccomp {
        "this process runs under a seccomp filter (a container's default profile, e.g. Docker's, blocks io_uring): allow io_uring_setup, io_uring_enter and io_uring_register in the profile"
    } else {
        "a container's seccomp profile may block io_uring (Docker's default does): allow io_uring_setup, io_uring_enter and io_uring_register"
    };
    match err.raw_os_error() {
        Some(sys::EPERM) | Some(sys::EACCES) => match sysctl {
            Some(s) => s,
            None => seccomp_hint.to_string(),
        },
        Some(sys::ENOSYS) => format!(
            "the kernel has no io_uring (it needs Linux 5.8 or later built with CONFIG_IO_URING), or {seccomp_hint}"
        ),
        Some(sys::ENOMEM) => "the ring would exceed the locked-memory limit (RLIMIT_MEMLOCK), which every process of this user shares: raise it with `ulimit -l` or systemd `LimitMEMLOCK=`, or stop other io_uring programs of this user".to_string(),
        Some(sys::EMFILE) | Some(sys::ENFILE) => {
            "out of file descriptors: raise `ulimit -n` (systemd: LimitNOFILE=)".to_string()
        }
        _ => match sysctl {
            Some(s) => s,
            None => seccomp_hint.to_string(),
        },
    }
}

// ---------------------------------------------------------------- memory

/// Bytes of locked memory that `shards` glommio 0.9 executors built with
/// `LocalExecutorBuilder::io_memory(io_memory)` need, in a process that has
/// run [`sys::probe_io_uring`].
///
/// What glommio does (glommio-0.9.0/src/sys/uring.rs, `Reactor::new`):
/// - it returns `MemLockLimit(limit, 524288)` when the soft
///   `RLIMIT_MEMLOCK` is below 512 KiB ([`GLOMMIO_MIN_MEMLOCK`]), whatever
///   `io_memory` is;
/// - it creates 3 rings of 128 entries (main, poll, latency) and allocates
///   `max(align_up(io_memory, 4096), 65536)` bytes that it registers with
///   each ring; the kernel pins and charges that buffer once per ring;
/// - the first executor of a process also opens a short-lived probe ring
///   (`check_supported_operations` → liburing's `io_uring_get_probe`).
///
/// What the kernel charges: registered buffers always; since Linux 6.13
/// (and before 5.12) also the rings' own memory. The charge goes to the
/// *user* (every process of the uid shares one `RLIMIT_MEMLOCK`-sized
/// budget) and a closed ring's charge is returned a little later, not at
/// once.
///
/// Measured on Linux 6.18 as an unprivileged user, each run under a fresh
/// uid: VmPin in /proc/self/status is 192 KiB for one executor with
/// io_memory 0 or 64 KiB, 1.5 MiB with 512 KiB, 3 MiB with 1 MiB, 30 MiB
/// with glommio's default 10 MiB (3 × io memory exactly). The smallest
/// `ulimit -l` that starts without a registration failure, after a probe
/// like [`sys::probe_io_uring`]'s: 1600 KiB for 1 executor with 512 KiB
/// (1536 + 64), 3184 KiB for 2 (3072 + 112), 6251 KiB for 2 with 1 MiB
/// (6144 + 107), 976 KiB for 4 with 64 KiB (768 + 208): about 52 KiB of
/// rings per executor plus up to 12 KiB of probe rings per process. The
/// figure returned allows [`RING_ALLOWANCE`] per executor and
/// [`PROBE_ALLOWANCE`] per process on top of the registered buffers.
///
/// When a registration fails glommio only logs a warning and runs without
/// registered buffers; when a ring cannot be created it fails (its probe
/// ring panics with a message about old kernels). This figure is what it
/// takes to start with neither.
pub fn memlock_needed(shards: usize, io_memory: usize) -> u64 {
    let buffer = (io_memory as u64)
        .saturating_add(4095)
        .max(GLOMMIO_MIN_IO_MEMORY as u64)
        & !4095;
    let per_shard = buffer
        .saturating_mul(GLOMMIO_RINGS)
        .saturating_add(RING_ALLOWANCE);
    per_shard
        .saturating_mul(shards as u64)
        .saturating_add(PROBE_ALLOWANCE)
        .max(GLOMMIO_MIN_MEMLOCK)
}

/// Whether the locked-memory limit lets `shards` executors with
/// `io_memory` each start (see [`memlock_needed`]).
fn locked_memory(shards: usize, io_memory: usize) -> Finding {
    let needed = format_size(memlock_needed(shards, io_memory));
    let cap_ipc_lock = sys::has_cap_ipc_lock();
    let cap = if cap_ipc_lock {
        " (CAP_IPC_LOCK: only glommio's 512 KiB minimum applies)"
    } else {
        ""
    };
    match sys::limits(Resource::LockedMemory) {
        // If the limit cannot be read, glommio cannot read it either and
        // will report that itself; there is nothing more useful to say.
        Err(e) => Finding::new(
            "locked memory",
            format!("limit unreadable ({e}), needed {needed}{cap}"),
            Verdict::Info,
        ),
        Ok(Limits { soft, hard }) => Finding::checked(
            "locked memory",
            format!(
                "limit {} (hard {}), needed {needed}{cap}",
                format_limit(soft, format_size),
                format_limit(hard, format_size)
            ),
            evaluate_memlock(shards, io_memory, soft, hard, cap_ipc_lock),
        ),
    }
}

/// The decision behind the `locked memory` finding, on given facts.
fn evaluate_memlock(
    shards: usize,
    io_memory: usize,
    soft: u64,
    hard: u64,
    cap_ipc_lock: bool,
) -> Result<(), PreflightError> {
    let needed = memlock_needed(shards, io_memory);
    // glommio's own 512 KiB floor applies to everyone, root included; the
    // kernel's per-user accounting is skipped with CAP_IPC_LOCK.
    let enough = soft >= GLOMMIO_MIN_MEMLOCK && (cap_ipc_lock || soft >= needed);
    if enough {
        return Ok(());
    }
    // With CAP_IPC_LOCK only glommio's floor is missing, and no smaller
    // --io-memory can get under a floor that ignores it.
    let (needed, fitting) = if cap_ipc_lock {
        (GLOMMIO_MIN_MEMLOCK, None)
    } else {
        let budget = soft - soft / 100 * MEMLOCK_HEADROOM_PERCENT;
        (needed, fitting_io_memory(shards, budget))
    };
    Err(PreflightError::Memlock(MemlockShortfall {
        limit: soft,
        hard,
        needed,
        shards,
        io_memory,
        fitting_io_memory: fitting,
    }))
}

/// The largest io memory (a multiple of 4 KiB, at least glommio's
/// [`GLOMMIO_MIN_IO_MEMORY`]) with which `shards` executors fit in
/// `limit` bytes of locked memory, if any does.
fn fitting_io_memory(shards: usize, limit: u64) -> Option<usize> {
    if memlock_needed(shards, GLOMMIO_MIN_IO_MEMORY) > limit {
        return None;
    }
    // Invert memlock_needed: what is left once the fixed costs are paid,
    // shared by every shard's rings.
    let shards = shards.max(1) as u64;
    let fixed = PROBE_ALLOWANCE + RING_ALLOWANCE * shards;
    let buffer = ((limit - fixed) / (GLOMMIO_RINGS * shards)) & !4095;
    usize::try_from(buffer).ok()
}

// ---------------------------------------------------------------- open files

/// Raises the soft open-files limit (`RLIMIT_NOFILE`) to the hard one and
/// returns the limits now in force. Each client holds a descriptor, and
/// the usual soft default (1024) exists for programs that use `select(2)`,
/// which tern does not; the hard limit is the administrator's real
/// decision. The binary raises it before [`check`], so that the `open
/// files` finding describes the limit the relay runs with.
pub fn raise_open_files_limit() -> io::Result<Limits> {
    sys::raise_soft_limit(Resource::OpenFiles)
}

/// `--max-connections` when none is given: [`DEFAULT_MAX_CONNECTIONS`], or
/// fewer if the open-files hard limit (which the relay raises its soft
/// limit to) cannot hold that many beside what `config`'s shards and
/// listeners need; at least 1. So the default never earns the `open
/// files` warning.
pub fn default_max_connections(config: &Config) -> usize {
    let Ok(limits) = sys::limits(Resource::OpenFiles) else {
        return DEFAULT_MAX_CONNECTIONS;
    };
    let others = fds_needed(&Config {
        max_connections: 0,
        ..config.clone()
    });
    let room = limits.hard.saturating_sub(others).max(1);
    usize::try_from(room).map_or(DEFAULT_MAX_CONNECTIONS, |r| r.min(DEFAULT_MAX_CONNECTIONS))
}

/// File descriptors `config` may use at most (see [`FDS_PER_SHARD`]).
fn fds_needed(config: &Config) -> u64 {
    let shards = config.cores.len() as u64;
    (config.max_connections as u64)
        .saturating_add(
            shards * (FDS_PER_SHARD + (config.listen.len() + config.nats_listen.len()) as u64),
        )
        .saturating_add(FDS_PER_PROCESS)
}

/// Whether the open-files `limits` cover what `config` may use. Judged
/// on the hard limit, which [`raise_open_files_limit`] makes the soft one
/// at start.
fn open_files(limits: io::Result<Limits>, config: &Config) -> Finding {
    let Limits { soft, hard } = match limits {
        Ok(l) => l,
        Err(e) => {
            return Finding::new(
                "open files",
                format!("limit unreadable ({e})"),
                Verdict::Info,
            )
        }
    };
    let count = |n: u64| n.to_string();
    let needed = fds_needed(config);
    let raised = if soft < hard {
        format!(
            " (soft limit {} is raised at start)",
            format_limit(soft, count)
        )
    } else {
        String::new()
    };
    let found = format!(
        "limit {}{raised}, about {needed} needed for --max-connections {}",
        format_limit(hard, count),
        config.max_connections
    );
    let verdict = if hard >= needed {
        Verdict::Ok
    } else {
        Verdict::Warning(
            "clients past the limit are refused at accept: raise it with `ulimit -n` or systemd `LimitNOFILE=`, or lower --max-connections"
                .to_string(),
        )
    };
    Finding::new("open files", found, verdict)
}

/// A resource limit as a user reads it: `unlimited` for
/// [`sys::UNLIMITED`], else the value as `show` writes it
/// ([`format_size`] for bytes, `to_string` for counts).
pub fn format_limit(value: u64, show: impl FnOnce(u64) -> String) -> String {
    if value == sys::UNLIMITED {
        "unlimited".to_string()
    } else {
        show(value)
    }
}

// ---------------------------------------------------------------- ports

/// Checks that nothing listens on `addr`, including another tern.
///
/// glommio binds with `SO_REUSEPORT`, so binding it would succeed next to
/// another tern and split the clients between the two. This binds a probe
/// socket *without* `SO_REUSEPORT` (which conflicts with every existing
/// socket on the port) but with `SO_REUSEADDR` (so connections of a
/// previous run in TIME_WAIT do not count), then closes it. Port 0 is
/// always free. An address in use is tried again until `in_use_until`
/// (see [`ADDR_IN_USE_WAIT`]).
fn check_addr_free(addr: SocketAddr, in_use_until: Instant) -> Result<(), PreflightError> {
    if addr.port() == 0 {
        return Ok(());
    }
    retry_while_in_use(in_use_until, || probe_bind(addr)).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => PreflightError::AddrInUse(addr),
        io::ErrorKind::AddrNotAvailable => PreflightError::AddrNotAvailable(addr),
        io::ErrorKind::PermissionDenied => PreflightError::AddrPermission(addr),
        _ => PreflightError::AddrProbe { addr, source: e },
    })
}

/// Runs `attempt` (a bind) until it does not fail with "address in use",
/// or `deadline` passes: then returns what the last try returned.
pub fn retry_while_in_use<T>(
    deadline: Instant,
    mut attempt: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    loop {
        match attempt() {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(ADDR_IN_USE_PAUSE);
            }
            result => return result,
        }
    }
}

fn probe_bind(addr: SocketAddr) -> io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
    // Dropping the socket closes it; it never listened, so it leaves
    // nothing behind.
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Protocol, Socket, Type};

    /// A listener like glommio's: `SO_REUSEPORT` on an ephemeral port.
    fn reuseport_listener() -> (Socket, SocketAddr) {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.listen(16).unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        (s, addr)
    }

    #[test]
    fn address_held_by_a_reuseport_listener_is_in_use() {
        let (listener, addr) = reuseport_listener();
        let err = check_addr_free(addr, Instant::now()).unwrap_err();
        assert!(
            matches!(err, PreflightError::AddrInUse(a) if a == addr),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&addr.to_string()), "{msg}");
        assert!(
            msg.contains("already in use") && msg.contains("--listen"),
            "{msg}"
        );
        drop(listener);
        check_addr_free(addr, Instant::now()).unwrap();
    }

    #[test]
    fn an_address_released_while_waiting_is_free() {
        // As when a relay restarts right after the old one exited: the
        // old listener goes away while the new one waits for it.
        let (listener, addr) = reuseport_listener();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            // Released once the probe has found the address in use.
            rx.recv().unwrap();
            drop(listener);
        });
        let mut tries = 0;
        let result = retry_while_in_use(Instant::now() + Duration::from_secs(30), || {
            tries += 1;
            if tries == 2 {
                tx.send(()).unwrap();
            }
            probe_bind(addr)
        });
        holder.join().unwrap();
        result.unwrap();
        assert!(tries >= 2, "{tries}");
        // Only "in use" is tried again.
        let mut tries = 0;
        let far = Instant::now() + Duration::from_secs(30);
        let err = retry_while_in_use(far, || -> io::Result<()> {
            tries += 1;
            Err(io::Error::from(io::ErrorKind::PermissionDenied))
        });
        assert_eq!(
            (err.unwrap_err().kind(), tries),
            (io::ErrorKind::PermissionDenied, 1)
        );
    }

    #[test]
    fn address_held_by_a_plain_listener_is_in_use() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // Held for longer than the wait: in use.
        let wait = Instant::now() + Duration::from_millis(50);
        assert!(matches!(
            check_addr_free(addr, wait),
            Err(PreflightError::AddrInUse(_))
        ));
    }

    #[test]
    fn port_zero_is_always_free() {
        check_addr_free("127.0.0.1:0".parse().unwrap(), Instant::now()).unwrap();
    }

    #[test]
    fn foreign_address_is_not_available() {
        // 192.0.2.0/24 is TEST-NET-1: never assigned to a host.
        let addr: SocketAddr = "192.0.2.1:7000".parse().unwrap();
        let err = check_addr_free(addr, Instant::now()).unwrap_err();
        assert!(matches!(err, PreflightError::AddrNotAvailable(_)), "{err}");
    }

    #[test]
    fn repeated_listen_address_is_refused() {
        let listen = |addrs: &[SocketAddr], metrics| {
            let mut out = Findings::default();
            let addrs: Vec<_> = addrs.iter().map(|&a| ("listen", a)).collect();
            listen_addrs(&addrs, metrics, Instant::now(), &mut out);
            assert_eq!(out.iter().count(), addrs.len());
            out.into_result().err()
        };
        let a: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(listen(&[a, a], None).is_none());
        let (_l, held) = reuseport_listener();
        drop(_l);
        let err = listen(&[held, held], None).unwrap();
        assert!(matches!(err, PreflightError::DuplicateListen(x) if x == held));
        // --metrics naming a --listen address is the same mistake.
        let err = listen(&[held], Some(held)).unwrap();
        assert!(matches!(err, PreflightError::MetricsIsListen(x) if x == held));
        assert!(
            err.to_string()
                .contains(&format!("--metrics {held} is also a --listen address")),
            "{err}"
        );
        // Port 0 twice is two different ports.
        assert!(listen(&[a], Some(a)).is_none());
        // A NATS address may not repeat a line one either.
        let mut out = Findings::default();
        listen_addrs(
            &[("listen", held), ("nats-listen", held)],
            None,
            Instant::now(),
            &mut out,
        );
        let keys: Vec<&str> = out.iter().map(|f| f.key).collect();
        assert_eq!(keys, ["listen", "nats-listen"]);
        assert!(matches!(
            out.into_result(),
            Err(PreflightError::DuplicateListen(x)) if x == held
        ));
    }

    #[test]
    fn the_metrics_address_is_probed() {
        let off = metrics_addr(None, &[], Instant::now());
        assert!(matches!(off.verdict, Verdict::Info) && off.found.starts_with("off"));
        let free = metrics_addr(Some("127.0.0.1:0".parse().unwrap()), &[], Instant::now());
        assert!(matches!(free.verdict, Verdict::Ok), "{free:?}");
        assert_eq!(free.found, "http://127.0.0.1:0/metrics (free)");
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = holder.local_addr().unwrap();
        let Verdict::Error(err) = metrics_addr(Some(addr), &[], Instant::now()).verdict else {
            panic!("{addr} is held");
        };
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("cannot serve metrics on {addr}")) && msg.contains("--metrics"),
            "{msg}"
        );
        // Refused on the listen line instead, not probed here.
        let named = metrics_addr(Some(addr), &[addr], Instant::now());
        assert!(matches!(named.verdict, Verdict::Info), "{named:?}");
    }

    #[test]
    fn cpus_in_the_mask_pass_and_others_are_named() {
        let error = |f: Finding| match f.verdict {
            Verdict::Error(e) => e,
            v => panic!("not an error: {v:?}"),
        };
        let allowed = sys::allowed_cpus();
        assert!(matches!(cpus(&allowed, &allowed).verdict, Verdict::Ok));
        assert!(matches!(cpus(&allowed[..1], &allowed).verdict, Verdict::Ok));
        let err = error(cpus(&[allowed[0], 4095], &allowed));
        let msg = err.to_string();
        assert!(msg.contains("CPU 4095"), "{msg}");
        assert!(msg.contains(&format_cpu_list(&allowed)), "{msg}");
        assert!(msg.contains("--cores"), "{msg}");

        let err = error(cpus(&[0, 5], &[0, 1, 2, 3, 6]));
        assert_eq!(
            err.to_string(),
            "CPU 5 is not available to this process (allowed CPUs: 0-3,6): choose CPUs from that list with --cores, or use --shards N"
        );
    }

    #[test]
    fn memlock_needed_matches_what_glommio_locks() {
        const K: u64 = 1024;
        // Registered buffers (3 × io memory per shard, as VmPin shows) plus
        // the ring and probe allowances.
        assert_eq!(memlock_needed(1, 512 << 10), (1536 + 64 + 16) * K);
        assert_eq!(memlock_needed(2, 512 << 10), (3072 + 128 + 16) * K);
        assert_eq!(memlock_needed(1, 10 << 20), (30720 + 64 + 16) * K);
        // At least the smallest limits that worked (see `memlock_needed`).
        for (shards, io, measured_kib) in [
            (1, 512 << 10, 1600),
            (2, 512 << 10, 3184),
            (2, 1 << 20, 6251),
            (4, 64 << 10, 976),
        ] {
            assert!(memlock_needed(shards, io) >= measured_kib * K);
        }
        // glommio's floors: 64 KiB of io memory, 512 KiB of limit.
        assert_eq!(memlock_needed(1, 0), 512 * K);
        assert_eq!(memlock_needed(4, 1), (768 + 256 + 16) * K);
        assert_eq!(memlock_needed(usize::MAX, usize::MAX), u64::MAX);
        // The default io memory is chosen so that an ordinary user's 8 MiB
        // limit runs two shards, and even two such relays.
        let two = memlock_needed(2, crate::config::DEFAULT_IO_MEMORY);
        assert!(2 * two <= 8192 * K, "{two}");
    }

    #[test]
    fn memlock_needed_is_monotonic() {
        let sizes = [0, 1, 4095, 4096, 65536, 65537, 512 << 10, 1 << 20, 10 << 20];
        for shards in 1..=8 {
            for w in sizes.windows(2) {
                assert!(memlock_needed(shards, w[0]) <= memlock_needed(shards, w[1]));
            }
            for &io in &sizes {
                assert!(memlock_needed(shards, io) <= memlock_needed(shards + 1, io));
            }
        }
    }

    #[test]
    fn memlock_verdicts() {
        const K: u64 = 1024;
        let io = 512 << 10;
        evaluate_memlock(2, io, 8192 * K, 8192 * K, false).unwrap();
        evaluate_memlock(2, io, 3216 * K, 3216 * K, false).unwrap();
        evaluate_memlock(2, io, u64::MAX, u64::MAX, false).unwrap();
        assert!(evaluate_memlock(2, io, 3212 * K, 8192 * K, false).is_err());
        // CAP_IPC_LOCK lifts the kernel's limit but not glommio's floor.
        evaluate_memlock(2, io, 512 * K, 512 * K, true).unwrap();
        let err = evaluate_memlock(2, io, 64 * K, 64 * K, true).unwrap_err();
        assert!(err.to_string().contains("ulimit -l 512"), "{err}");
    }

    #[test]
    fn memlock_message_names_the_limit_the_need_and_the_fixes() {
        const K: u64 = 1024;
        let err = evaluate_memlock(2, 512 << 10, 64 * K, 64 * K, false).unwrap_err();
        let msg = err.to_string();
        assert_eq!(msg.lines().count(), 1, "{msg}");
        for part in [
            "RLIMIT_MEMLOCK",
            "is 64 KiB",
            "2 shards with --io-memory 512 KiB need 3216 KiB",
            "ulimit -l 3216",
            "LimitMEMLOCK=3216K",
            "/etc/security/limits.conf",
        ] {
            assert!(msg.contains(part), "{part:?} missing from: {msg}");
        }
        // Below glommio's floor, a smaller --io-memory cannot help.
        assert!(!msg.contains("lower --io-memory"), "{msg}");

        // 2 MiB fits 2 shards with less io memory: say how much, leaving
        // a quarter of the limit to spare (the budget is per user).
        let err = evaluate_memlock(2, 512 << 10, 2048 * K, 8192 * K, false).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("lower --io-memory to 232KiB"), "{msg}");
        assert!(!msg.contains("hard limit"), "{msg}");
        let fitting = 232 * 1024;
        assert!(memlock_needed(2, fitting) <= 1536 * K);
        assert!(memlock_needed(2, fitting + 4096) > 1536 * K);
        // Less than glommio's 64 KiB would fit: suggest none.
        let err = evaluate_memlock(2, 512 << 10, 600 * K, 8192 * K, false).unwrap_err();
        assert!(!err.to_string().contains("--io-memory to"), "{err}");
    }

    #[test]
    fn an_exhausted_per_user_budget_suggests_room_for_the_others() {
        const K: u64 = 1024;
        let e = MemlockExhausted {
            limit: Some(3216 * K),
            needed: memlock_needed(2, 512 << 10),
            shards: 2,
            io_memory: 512 << 10,
        };
        let msg = e.to_string();
        assert_eq!(msg.lines().count(), 1, "{msg}");
        // Half the limit: (1608 - 16 - 128) / 6, 4 KiB aligned.
        assert!(msg.contains("lower --io-memory to 244KiB"), "{msg}");
        assert!(memlock_needed(2, 244 << 10) <= 1608 * K);
        assert!(msg.contains("ulimit -l 6432"), "{msg}");
        // Nothing smaller to suggest when the io memory is already small,
        // or the limit unknown.
        let small = MemlockExhausted {
            io_memory: 64 << 10,
            needed: memlock_needed(2, 64 << 10),
            ..e.clone()
        };
        assert!(!small.to_string().contains("--io-memory to"), "{small}");
        let unknown = MemlockExhausted { limit: None, ..e };
        assert!(unknown.to_string().contains("is unreadable"), "{unknown}");
    }

    #[test]
    fn io_uring_works_here_and_failures_name_their_causes() {
        // The machines this is developed and tested on have io_uring.
        let found = io_uring();
        assert!(matches!(found.verdict, Verdict::Ok), "{found:?}");
        assert!(found.found.contains("io_uring_setup works"), "{found:?}");

        let eperm = io::Error::from_raw_os_error(sys::EPERM);
        let h = io_uring_hint(&eperm, Some(2), false);
        assert!(
            h.contains("kernel.io_uring_disabled is 2") && h.contains("=0"),
            "{h}"
        );
        let h = io_uring_hint(&eperm, Some(1), false);
        assert!(h.contains("io_uring_group"), "{h}");
        let h = io_uring_hint(&eperm, Some(0), true);
        assert!(h.contains("seccomp"), "{h}");
        let h = io_uring_hint(&io::Error::from_raw_os_error(sys::ENOSYS), None, false);
        assert!(
            h.contains("CONFIG_IO_URING") && h.contains("seccomp"),
            "{h}"
        );
        let err = PreflightError::IoUring {
            source: eperm,
            hint: io_uring_hint(&io::Error::from_raw_os_error(sys::EPERM), Some(2), false),
        };
        assert_eq!(err.to_string().lines().count(), 1);
    }

    #[test]
    fn limits_read_like_flags() {
        assert_eq!(format_limit(64 << 10, format_size), "64 KiB");
        assert_eq!(format_limit(1024, |n| n.to_string()), "1024");
        assert_eq!(format_limit(sys::UNLIMITED, format_size), "unlimited");
    }

    #[test]
    fn check_reports_config_errors_first() {
        let config = Config {
            listen: vec![],
            nats_listen: vec![],
            ..Config::local(1)
        };
        assert!(matches!(
            check(config, None),
            Err(PreflightError::Config(ConfigError::NoListener))
        ));
        let checked = check(Config::local(1), None).unwrap();
        assert_eq!(checked.config().cores.len(), 1);
        assert_eq!(checked.into_config().listen.len(), 1);
    }

    #[test]
    fn the_default_max_connections_fits_the_open_files_limit() {
        let config = Config::local(2);
        let n = default_max_connections(&config);
        assert!((1..=DEFAULT_MAX_CONNECTIONS).contains(&n), "{n}");
        let hard = sys::limits(Resource::OpenFiles).unwrap().hard;
        let with = Config {
            max_connections: n,
            ..config
        };
        // Either the limit holds the default, or the default was cut to it.
        assert!(
            n == DEFAULT_MAX_CONNECTIONS || fds_needed(&with) == hard,
            "{n} connections need {} descriptors, the limit is {hard}",
            fds_needed(&with)
        );
    }

    #[test]
    fn a_certificate_near_or_past_its_end_is_a_warning() {
        use std::time::{Duration, SystemTime};
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = Duration::from_secs(86_400);
        let at = |expires| certificate_validity("certificate c".into(), expires, now);
        assert!(matches!(at(now + 100 * day).verdict, Verdict::Ok));
        let soon = at(now + 3 * day);
        assert!(
            matches!(&soon.verdict, Verdict::Warning(w) if w.contains("expires in 3 day(s)")),
            "{soon:?}"
        );
        let past = at(now - day);
        assert!(
            matches!(&past.verdict, Verdict::Warning(w) if w.contains("has expired")),
            "{past:?}"
        );
        assert!(
            past.found.contains("valid until 2027-01-14T08:00:00Z"),
            "{past:?}"
        );
    }

    #[test]
    fn findings_cover_every_setting_and_prerequisite_in_order() {
        let config = Config {
            max_connections: 10,
            ..Config::local(1)
        };
        let found = findings(&config, None);
        let keys: Vec<&str> = found.iter().map(|f| f.key).collect();
        assert_eq!(
            keys,
            [
                "tern",
                "terminator",
                "max-frame",
                "max-pending",
                "max-stall",
                "max-memory",
                "max-subs",
                "max-connections",
                "spin-before-park",
                "io-memory",
                "nats-ping-interval",
                "shards",
                "listen",
                "nats-listen",
                "metrics",
                "locked memory",
                "io_uring",
                "open files",
                "tls",
                "authorization",
            ]
        );
        assert_eq!(found.errors().count(), 0, "{found:?}");
        let value = |key| &found.iter().find(|f| f.key == key).unwrap().found;
        assert_eq!(value("max-frame"), "1048576 (1 MiB)");
        assert_eq!(value("io-memory"), "524288 (512 KiB) per shard");
        assert_eq!(value("spin-before-park"), "0");
        assert_eq!(value("terminator"), r"\n");
        assert_eq!(value("nats-ping-interval"), "120s");
    }

    /// The keys of the findings that failed.
    fn failed_keys(found: &Findings) -> Vec<&'static str> {
        found
            .iter()
            .filter(|f| matches!(f.verdict, Verdict::Error(_)))
            .map(|f| f.key)
            .collect()
    }

    #[test]
    fn a_setting_that_cannot_work_fails_its_own_line() {
        let config = Config {
            max_subs: 0,
            ..Config::local(1)
        };
        let found = findings(&config, None);
        assert_eq!(failed_keys(&found), ["max-subs"]);
        let err = found.into_result().unwrap_err();
        assert!(err.to_string().contains("--max-subs"), "{err}");
        let config = Config {
            io_memory: 1024,
            ..Config::local(1)
        };
        let found = findings(&config, None);
        assert_eq!(failed_keys(&found), ["io-memory"]);

        // The settings without a line of their own get one.
        for (config, key) in [
            (
                Config {
                    cores: vec![],
                    ..Config::local(1)
                },
                "shards",
            ),
            (
                Config {
                    listen: vec![],
                    nats_listen: vec![],
                    ..Config::local(1)
                },
                "listen",
            ),
        ] {
            let found = findings(&config, None);
            let lines: Vec<&Finding> = found.iter().filter(|f| f.key == key).collect();
            assert_eq!(lines.len(), 1, "{found:?}");
            assert!(matches!(
                lines[0].verdict,
                Verdict::Error(PreflightError::Config(_))
            ));
        }
    }

    #[test]
    fn descriptors_needed_grow_with_connections_and_shards() {
        let config = Config {
            max_connections: 1000,
            cores: vec![0],
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            nats_listen: vec![],
            ..Config::default()
        };
        assert_eq!(
            fds_needed(&config),
            1000 + FDS_PER_SHARD + 1 + FDS_PER_PROCESS
        );
        let two = Config {
            cores: vec![0, 1],
            ..config.clone()
        };
        assert!(fds_needed(&two) > fds_needed(&config));
    }

    #[test]
    fn too_few_open_files_is_a_warning_with_the_fix() {
        let config = Config {
            max_connections: 1000,
            ..Config::local(1)
        };
        let enough = open_files(
            Ok(Limits {
                soft: 1024,
                hard: 1 << 20,
            }),
            &config,
        );
        assert!(matches!(enough.verdict, Verdict::Ok), "{enough:?}");
        assert!(
            enough.found.contains("soft limit 1024 is raised at start"),
            "{enough:?}"
        );
        assert!(
            enough.found.contains("needed for --max-connections 1000"),
            "{enough:?}"
        );
        let short = open_files(Ok(Limits { soft: 10, hard: 10 }), &config);
        let Verdict::Warning(advice) = &short.verdict else {
            panic!("{short:?}");
        };
        assert!(
            advice.contains("LimitNOFILE=") && advice.contains("ulimit -n"),
            "{advice}"
        );
        let unlimited = open_files(
            Ok(Limits {
                soft: sys::UNLIMITED,
                hard: sys::UNLIMITED,
            }),
            &config,
        );
        assert!(
            unlimited.found.starts_with("limit unlimited,"),
            "{unlimited:?}"
        );
        let unreadable = open_files(Err(io::Error::from_raw_os_error(sys::EPERM)), &config);
        assert!(matches!(unreadable.verdict, Verdict::Info));
    }

    #[test]
    fn raising_the_open_files_limit_reaches_the_hard_limit() {
        let limits = raise_open_files_limit().unwrap();
        assert_eq!(limits.soft, limits.hard);
        let found = open_files(Ok(limits), &Config::local(1));
        assert!(!found.found.contains("raised at start"), "{found:?}");
    }
}
