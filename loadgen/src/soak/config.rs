//! What a soak run does: its command line ([`Args`]) and the settings it
//! resolves to ([`Config`]), including the memory bound the relay must
//! stay under and the reasoning behind it.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tern::units::{format_size, parse_duration, parse_size};

/// A chaos actor, for `--chaos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Actor {
    /// Subscribers that never read, until the relay cuts them.
    NeverRead,
    /// Connections sending random bytes.
    Random,
    /// Half a frame, then a TCP reset.
    HalfFrame,
    /// One 100 MiB frame without a terminator at a time.
    BigFrame,
    /// Connect/close churn.
    Churn,
    /// SUB/UNSUB storms with `*` and `>` wildcards.
    Storm,
    /// A max-rate cross-shard flood to a reader that keeps reading.
    Flood,
}

impl Actor {
    /// Every actor.
    pub const ALL: [Actor; 7] = [
        Actor::NeverRead,
        Actor::Random,
        Actor::HalfFrame,
        Actor::BigFrame,
        Actor::Churn,
        Actor::Storm,
        Actor::Flood,
    ];

    /// The `--chaos` name.
    pub fn name(self) -> &'static str {
        match self {
            Actor::NeverRead => "never-read",
            Actor::Random => "random",
            Actor::HalfFrame => "half-frame",
            Actor::BigFrame => "big-frame",
            Actor::Churn => "churn",
            Actor::Storm => "storm",
            Actor::Flood => "flood",
        }
    }
}

/// The command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tern-soak",
    version,
    about = "Soak a running tern relay: well-behaved and hostile clients for a chosen time; fail on any loss, a slow PING, memory past a bound, or the relay exiting.",
    long_about = "Soak a running tern relay for --duration with a mix of clients, all on loopback (every address given must be a loopback one):\n\n\
- well-behaved streams carrying sequence numbers (line->line, NATS->NATS, line->NATS, NATS->line, and line->line from shard 0 to shard 1 with --shard-targets), in sessions of --session with fresh connections and a fresh subject each;\n\
- chaos (--chaos): subscribers that never read, random bytes, half a frame then a TCP reset, a 100 MiB frame without terminator, connect/close churn, SUB/UNSUB storms with wildcards, a cross-shard flood. Each is bounded in connections and rate.\n\n\
It fails (exit status 1) when a well-behaved subscriber loses, duplicates, reorders or gets damaged a message the relay accepted (every PUB before the publisher's closing PING, from a subscription confirmed by PING/PONG before the first PUB), or a well-behaved client is refused, cut or stalled; when a PING on a fresh connection (one a second, over every target) is not answered within --probe-timeout; when the relay's resident memory (VmHWM, with --pid) exceeds --rss-limit; when the relay exits (with --pid). A line every --report-every, a full report at the end.\n\n\
Exit status: 0 passed, 1 a rule was broken (the first reason is printed last), 2 the run could not start."
)]
pub struct Args {
    /// tern's line-protocol listener (--listen).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7000")]
    pub target: SocketAddr,
    /// tern's NATS listener (--nats-listen), or `off` for line traffic only.
    #[arg(long, value_name = "ADDR|off", default_value = "127.0.0.1:4222", value_parser = parse_optional_addr)]
    pub nats_target: MaybeAddr,
    /// Each shard's private line listener, in shard order (tern's
    /// --shard-listen: ADDR's port + i), comma-separated. With two or more,
    /// a cross-shard stream and the flood publish on the first and
    /// subscribe on the second; probes cover each.
    #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
    pub shard_targets: Vec<SocketAddr>,
    /// tern's process id: its RSS (/proc/PID/status) is held to
    /// --rss-limit, its CPU time reported, and its exit is a failure.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// tern's --metrics address: slow consumers and frames too long are
    /// read from /metrics too.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// How long to run (e.g. 60s, 30m; a bare number is seconds).
    #[arg(long, value_name = "TIME", default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// The bound on tern's peak RSS. Default: 64 MiB (the relay, its
    /// io_uring buffers, allocator slack) + (--never-readers + 1 flood
    /// reader) × (--max-pending + --max-frame) (each subscriber that stops
    /// reading may hold up to --max-pending of output before it is cut, and
    /// a read buffer) + 8 × --max-frame (the partial frames other hostile
    /// connections may hold at once).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub rss_limit: Option<u64>,
    /// tern's --max-pending, for the default --rss-limit.
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub max_pending: u64,
    /// tern's --max-frame, for the default --rss-limit.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = parse_bytes)]
    pub max_frame: u64,
    /// Seed for every random choice (default: from the clock; printed, so
    /// a run can be repeated).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Well-behaved streams of each kind.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub streams: usize,
    /// Subscribers per well-behaved stream.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub subscribers: usize,
    /// Messages per second per well-behaved publisher (lowered for large
    /// payloads to at most 2 MB/s), moderate so subscribers keep up.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub rate: u64,
    /// Length of a well-behaved session: new connections, a new subject,
    /// a full check at its end.
    #[arg(long, value_name = "TIME", default_value = "20s", value_parser = parse_duration)]
    pub session: Duration,
    /// Fresh-connection PINGs must be answered within this.
    #[arg(long, value_name = "TIME", default_value = "1s", value_parser = parse_duration)]
    pub probe_timeout: Duration,
    /// Chaos actors to run, comma-separated (never-read, random,
    /// half-frame, big-frame, churn, storm, flood), or `all` or `none`.
    #[arg(long, value_name = "LIST", default_value = "all", value_parser = parse_actors)]
    pub chaos: Actors,
    /// Never-reading subscribers open at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub never_readers: usize,
    /// Length of a cross-shard flood burst.
    #[arg(long, value_name = "TIME", default_value = "3s", value_parser = parse_duration)]
    pub flood_burst: Duration,
    /// One flood burst per this period.
    #[arg(long, value_name = "TIME", default_value = "15s", value_parser = parse_duration)]
    pub flood_period: Duration,
    /// Cross-shard flood rate cap in messages per second; 0 = as fast as
    /// the relay takes them.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub flood_rate: u64,
    /// Size of the frame sent without a terminator.
    #[arg(long, value_name = "BYTES", default_value = "100MiB", value_parser = parse_bytes)]
    pub big_frame: u64,
    /// One such frame per this period (one at a time).
    #[arg(long, value_name = "TIME", default_value = "20s", value_parser = parse_duration)]
    pub big_frame_every: Duration,
    /// Connect/close churn: connections per second.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub churn_rate: u64,
    /// A progress line this often.
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = parse_duration)]
    pub report_every: Duration,
}

/// An address, or none (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaybeAddr(pub Option<SocketAddr>);

fn parse_optional_addr(s: &str) -> Result<MaybeAddr, String> {
    if s == "off" {
        return Ok(MaybeAddr(None));
    }
    s.parse()
        .map(|a| MaybeAddr(Some(a)))
        .map_err(|e| format!("`{s}`: {e} (give IP:PORT or off)"))
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    parse_size(s).map(|v| v as u64).map_err(|e| e.to_string())
}

/// A set of chaos actors, in [`Actor::ALL`] order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actors(pub Vec<Actor>);

fn parse_actors(s: &str) -> Result<Actors, String> {
    match s {
        "all" => return Ok(Actors(Actor::ALL.to_vec())),
        "none" => return Ok(Actors(Vec::new())),
        _ => {}
    }
    let mut v = Vec::new();
    for name in s.split(',') {
        let a = Actor::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = Actor::ALL.iter().map(|a| a.name()).collect();
                format!(
                    "unknown actor `{name}`: one of {}, all, none",
                    names.join(", ")
                )
            })?;
        v.push(a);
    }
    v.sort();
    v.dedup();
    Ok(Actors(v))
}

/// Where tern listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    pub line: SocketAddr,
    pub nats: Option<SocketAddr>,
    /// Per-shard line listeners, in shard order (may be empty).
    pub shards: Vec<SocketAddr>,
}

impl Targets {
    /// The first two shards' listeners, publisher's then subscriber's, if
    /// there are two.
    pub fn cross_shard(&self) -> Option<(SocketAddr, SocketAddr)> {
        match self.shards.as_slice() {
            [a, b, ..] => Some((*a, *b)),
            _ => None,
        }
    }
}

/// Everything a run does, resolved from [`Args`].
#[derive(Debug, Clone)]
pub struct Config {
    pub targets: Targets,
    pub pid: Option<u32>,
    pub metrics: Option<SocketAddr>,
    pub duration: Duration,
    pub rss_limit: u64,
    /// How the bound was arrived at, for the report.
    pub rss_basis: String,
    pub seed: u64,
    pub streams: usize,
    pub subscribers: usize,
    pub rate: u64,
    pub session: Duration,
    pub probe_timeout: Duration,
    /// The chaos actors that run, in [`Actor::ALL`] order.
    pub chaos: Vec<Actor>,
    pub never_readers: usize,
    pub flood_burst: Duration,
    pub flood_period: Duration,
    pub flood_rate: u64,
    pub big_frame: u64,
    pub big_frame_every: Duration,
    pub churn_rate: u64,
    pub report_every: Duration,
}

/// A command line that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Memory the relay needs with no client: its code and shards, io_uring
/// buffers, allocator slack.
pub const RSS_BASE: u64 = 64 << 20;
/// Hostile connections (other than never-readers and the flood reader)
/// that may each hold a partial frame of up to --max-frame at once.
pub const PARTIAL_FRAMES: u64 = 8;

/// The default `--rss-limit`, and the sum that gives it.
pub fn default_rss_limit(max_pending: u64, max_frame: u64, never_readers: usize) -> (u64, String) {
    let readers = never_readers as u64 + 1;
    let limit = RSS_BASE + readers * (max_pending + max_frame) + PARTIAL_FRAMES * max_frame;
    let basis = format!(
        "{} base + {readers} subscribers that stop reading × ({} max-pending + {} max-frame) + {PARTIAL_FRAMES} partial frames × {}",
        format_size(RSS_BASE),
        format_size(max_pending),
        format_size(max_frame),
        format_size(max_frame),
    );
    (limit, basis)
}

impl Args {
    /// The settings these arguments describe; `seed_now` seeds a run
    /// without `--seed`.
    pub fn into_config(self, seed_now: u64) -> Result<Config, ConfigError> {
        let bad = |m: &str| Err(ConfigError(m.to_string()));
        if self.duration.is_zero() {
            return bad("--duration must be more than 0");
        }
        if self.subscribers == 0 && self.streams > 0 {
            return bad("--subscribers must be at least 1");
        }
        if self.rate == 0 {
            return bad("--rate must be at least 1");
        }
        if self.session < Duration::from_secs(2) {
            return bad("--session must be at least 2s");
        }
        if self.probe_timeout.is_zero() || self.report_every.is_zero() {
            return bad("--probe-timeout and --report-every must be more than 0");
        }
        if self.flood_burst > self.flood_period {
            return bad("--flood-burst cannot be longer than --flood-period");
        }
        if self.big_frame_every.is_zero() || self.flood_period.is_zero() {
            return bad("--big-frame-every and --flood-period must be more than 0");
        }
        let mut addrs: Vec<(&str, SocketAddr)> = vec![("--target", self.target)];
        addrs.extend(self.nats_target.0.map(|a| ("--nats-target", a)));
        addrs.extend(self.shard_targets.iter().map(|&a| ("--shard-targets", a)));
        addrs.extend(self.metrics.map(|a| ("--metrics", a)));
        if let Some((flag, a)) = addrs.iter().find(|(_, a)| !a.ip().is_loopback()) {
            return Err(ConfigError(format!(
                "{flag} {a} is not a loopback address: tern-soak runs on loopback only (its hostile clients are not for a network)"
            )));
        }
        let chaos = self.chaos.0;
        let (rss_limit, rss_basis) = match self.rss_limit {
            Some(l) => (l, "given with --rss-limit".to_string()),
            None => default_rss_limit(self.max_pending, self.max_frame, self.never_readers),
        };
        Ok(Config {
            targets: Targets {
                line: self.target,
                nats: self.nats_target.0,
                shards: self.shard_targets,
            },
            pid: self.pid,
            metrics: self.metrics,
            duration: self.duration,
            rss_limit,
            rss_basis,
            seed: self.seed.unwrap_or(seed_now),
            streams: self.streams,
            subscribers: self.subscribers,
            rate: self.rate,
            session: self.session,
            probe_timeout: self.probe_timeout,
            chaos,
            never_readers: self.never_readers,
            flood_burst: self.flood_burst,
            flood_period: self.flood_period,
            flood_rate: self.flood_rate,
            big_frame: self.big_frame,
            big_frame_every: self.big_frame_every,
            churn_rate: self.churn_rate,
            report_every: self.report_every,
        })
    }
}

impl Config {
    /// Whether `actor` runs.
    pub fn runs(&self, actor: Actor) -> bool {
        self.chaos.contains(&actor)
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.targets;
        write!(f, "line {}", t.line)?;
        match t.nats {
            Some(n) => write!(f, ", NATS {n}")?,
            None => write!(f, ", NATS off")?,
        }
        if !t.shards.is_empty() {
            let s: Vec<String> = t.shards.iter().map(|a| a.to_string()).collect();
            write!(f, ", shards {}", s.join(" "))?;
        }
        let chaos: Vec<&str> = self.chaos.iter().map(|a| a.name()).collect();
        write!(
            f,
            "; {} s, seed {}; chaos {}",
            self.duration.as_secs_f64(),
            self.seed,
            if chaos.is_empty() {
                "none".to_string()
            } else {
                chaos.join(",")
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut v = vec!["tern-soak"];
        v.extend_from_slice(args);
        Args::try_parse_from(v)
            .map_err(|e| e.to_string())?
            .into_config(42)
            .map_err(|e| e.0)
    }

    #[test]
    fn defaults_and_the_memory_bound() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.seed, 42);
        assert_eq!(c.chaos, Actor::ALL.to_vec());
        assert_eq!(c.targets.nats, Some("127.0.0.1:4222".parse().unwrap()));
        // 64 MiB + 5 × (64 MiB + 1 MiB) + 8 × 1 MiB.
        assert_eq!(c.rss_limit, (64 + 5 * 65 + 8) << 20);
        assert!(
            c.rss_basis.contains("5 subscribers that stop reading"),
            "{}",
            c.rss_basis
        );

        let c = parse(&["--max-pending", "8MiB", "--never-readers", "2"]).unwrap();
        assert_eq!(c.rss_limit, (64 + 3 * 9 + 8) << 20);
        let c = parse(&["--rss-limit", "1GiB"]).unwrap();
        assert_eq!(c.rss_limit, 1 << 30);
    }

    #[test]
    fn targets_and_chaos_lists() {
        let c = parse(&[
            "--nats-target",
            "off",
            "--shard-targets",
            "127.0.0.1:7100,127.0.0.1:7101",
            "--chaos",
            "flood,churn,flood",
            "--seed",
            "7",
        ])
        .unwrap();
        assert_eq!(c.targets.nats, None);
        assert_eq!(
            c.targets.cross_shard(),
            Some((
                "127.0.0.1:7100".parse().unwrap(),
                "127.0.0.1:7101".parse().unwrap()
            ))
        );
        assert_eq!(c.chaos, vec![Actor::Churn, Actor::Flood]);
        assert!(c.runs(Actor::Flood) && !c.runs(Actor::Storm));
        assert_eq!(c.seed, 7);
        assert!(c.to_string().contains("chaos churn,flood"), "{c}");
        assert!(parse(&["--chaos", "none"]).unwrap().chaos.is_empty());
        assert!(parse(&["--chaos", "typo"])
            .unwrap_err()
            .contains("unknown actor `typo`"));
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(parse(&["--duration", "0s"]).is_err());
        assert!(parse(&["--rate", "0"]).is_err());
        assert!(parse(&["--session", "1s"]).is_err());
        assert!(parse(&["--flood-burst", "20s"]).is_err());
        assert!(parse(&["--nats-target", "localhost"]).is_err());
        let far = parse(&["--shard-targets", "127.0.0.1:1,10.0.0.1:2"]).unwrap_err();
        assert!(
            far.contains("--shard-targets 10.0.0.1:2 is not a loopback"),
            "{far}"
        );
        assert!(parse(&["--target", "[::1]:7000", "--metrics", "127.0.0.2:9"]).is_ok());
    }
}
