//! What a run does: [`Options`], their command-line form ([`Args`]) and
//! the checks that make a bad combination fail before any connection.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tern::framing::Terminator;
use tern::units::{format_cpu_list, parse_cpu_list, parse_duration, parse_size};

use crate::payload::MIN_SIZE;
use crate::proto::{Credentials, Protocol};
use crate::tls::{default_server_name, TlsOptions};
use crate::Error;

/// Default `--window`: messages a publisher may have in flight at
/// `--rate 0`.
///
/// A server that answers in batches needs many messages in flight to stay
/// busy: with 1,000 the generator waited on the window and under-reported
/// nats-server's 1→1 throughput by about 17% against 65,536. Measured here
/// (nats-server 2.9 with GOMAXPROCS=1 on CPU 0, the generator with
/// `--cores 1` on CPU 1, 1→1, 128 B, five interleaved 3 s runs per window,
/// on a machine busy with other work): medians of 1.00 M msgs/s with 1,000,
/// 1.14 M with 8,192, 1.32 M with 16,384, 1.08 M (spread 0.67–1.40 M) with
/// 65,536. 16,384 gave the most, and keeps what a server queues for each
/// subscriber small (16,384 × 128 B payloads is about 2–3 MB on the wire,
/// under redis-server's 8 MB soft limit for pub/sub clients and far under
/// tern's and nats-server's 64 MiB).
pub const DEFAULT_WINDOW: usize = 16_384;

/// Everything one run needs. [`Options::default`] is the command line's
/// defaults, so tests change only what they care about.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server's address(es). Connection `i` (publishers first, then
    /// subscribers) goes to `targets[i % len]`, so a test can spread
    /// connections over a relay's per-shard listeners.
    pub targets: Vec<SocketAddr>,
    pub protocol: Protocol,
    /// Subscribers speak this protocol to these addresses instead (a mixed
    /// run: e.g. line publishers, NATS subscribers on one tern); `None`:
    /// like the publishers. Subscriber `s` uses `sub_targets[s % len]`.
    pub subscriber: Option<(Protocol, Vec<SocketAddr>)>,
    /// Frame terminator (line protocol only).
    pub terminator: Terminator,
    pub publishers: usize,
    pub subscribers: usize,
    /// Publisher `p` publishes on subject `p % subjects`; every subscriber
    /// subscribes to all of them.
    pub subjects: usize,
    /// Queue group every subscriber joins, if any.
    pub group: Option<String>,
    /// Total messages per second over all publishers; 0 = as fast as the
    /// window allows.
    pub rate: u64,
    /// `rate == 0` only: most messages a publisher has in flight
    /// ([`DEFAULT_WINDOW`]).
    pub window: usize,
    /// Payload bytes per message.
    pub size: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// CPUs for the workers (one pinned worker each); `None`: as many
    /// unpinned workers as CPUs, at most one per connection.
    pub cores: Option<Vec<usize>>,
    /// Workers never sleep: they poll their sockets in a loop, so their own
    /// wake-up delay (tens of µs) is not added to every latency. Costs a
    /// whole core per worker; the command line turns it on with `--cores`
    /// (a worker with a core of its own).
    pub busy_poll: bool,
    pub json: Option<PathBuf>,
    pub hdr_log: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    /// No per-second progress on stderr.
    pub quiet: bool,
    /// Subjects are `<prefix>.0`, `<prefix>.1`, …
    pub subject_prefix: String,
    /// Longest wait for in-flight messages after the last publish.
    pub drain_timeout: Duration,
    /// Longest wait for a connection, and for each handshake.
    pub connect_timeout: Duration,
    /// Set (e.g. by a SIGINT handler) to stop the run early; the results so
    /// far are reported as a [`crate::Error::Interrupted`] failure.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Every connection over TLS (`--tls`).
    pub tls: Option<TlsOptions>,
    /// Credentials every connection presents (`--user`/`--password`,
    /// `--token`).
    pub credentials: Option<Credentials>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            targets: vec!["127.0.0.1:7000".parse().expect("valid")],
            protocol: Protocol::Line,
            subscriber: None,
            terminator: Terminator::default(),
            publishers: 1,
            subscribers: 1,
            subjects: 1,
            group: None,
            rate: 10_000,
            window: DEFAULT_WINDOW,
            size: 128,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            cores: None,
            busy_poll: false,
            json: None,
            hdr_log: None,
            plot: None,
            quiet: false,
            subject_prefix: "bench".to_string(),
            drain_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            interrupt: None,
            tls: None,
            credentials: None,
        }
    }
}

impl Options {
    /// The address connection `index` (publishers first, then subscribers)
    /// goes to.
    pub fn target_for(&self, index: usize) -> SocketAddr {
        self.targets[index % self.targets.len()]
    }

    /// The protocol subscribers speak.
    pub fn subscriber_protocol(&self) -> Protocol {
        self.subscriber.as_ref().map_or(self.protocol, |(p, _)| *p)
    }

    /// The address subscriber `s` connects to.
    pub fn subscriber_target(&self, s: usize) -> SocketAddr {
        match &self.subscriber {
            Some((_, targets)) => targets[s % targets.len()],
            None => self.target_for(self.publishers + s),
        }
    }

    /// The targets as written on the command line, and the subscribers'
    /// protocol and targets in a mixed run.
    pub fn targets_display(&self) -> String {
        let list = |t: &[SocketAddr]| {
            t.iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        match &self.subscriber {
            None => list(&self.targets),
            Some((p, t)) => format!("{} (subscribers: {p} {})", list(&self.targets), list(t)),
        }
    }

    /// The subjects publishers use, in order.
    pub fn subject_names(&self) -> Vec<String> {
        (0..self.subjects)
            .map(|k| format!("{}.{k}", self.subject_prefix))
            .collect()
    }

    /// Refuses combinations that cannot work, with the flag to change.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Options(m));
        if self.targets.is_empty() {
            return bad("--target: give at least one address".into());
        }
        if self.publishers == 0 {
            return bad("--publishers must be at least 1".into());
        }
        if self.subscribers == 0 {
            return bad("--subscribers must be at least 1: latency and integrity are measured at the subscribers".into());
        }
        if self.subjects == 0 {
            return bad("--subjects must be at least 1".into());
        }
        if self.size < MIN_SIZE {
            return bad(format!(
                "--size {} is too small: each payload carries its publisher, sequence and send time, which needs at least {MIN_SIZE} bytes",
                self.size
            ));
        }
        if self.rate == 0 && self.window == 0 {
            return bad("--window must be at least 1 with --rate 0".into());
        }
        if self.duration.is_zero() {
            return bad("--duration must be more than 0".into());
        }
        if let Err(e) = tern::config::check_terminator(&self.terminator) {
            return bad(e.to_string());
        }
        if let Some((protocol, targets)) = &self.subscriber {
            if targets.is_empty() {
                return bad("--subscriber-target: give at least one address".into());
            }
            if (*protocol == Protocol::Redis) != (self.protocol == Protocol::Redis) {
                return bad(
                    "--subscriber-protocol: Redis pub/sub mixes with no other protocol".into(),
                );
            }
        }
        if let Some(g) = &self.group {
            if self.protocol == Protocol::Redis {
                return bad("--group: Redis pub/sub has no queue groups".into());
            }
            if g.is_empty() || g.len() > 64 || !g.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                return bad(format!(
                    "--group `{g}`: use 1 to 64 printable ASCII characters, no spaces"
                ));
            }
        }
        let prefix = &self.subject_prefix;
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'*' && b != b'>')
        {
            return bad(format!("subject prefix `{prefix}` is not a valid subject"));
        }
        if let Some(tls) = &self.tls {
            tls.validate().map_err(Error::Options)?;
            let nats = [self.protocol, self.subscriber_protocol()].contains(&Protocol::Nats);
            if tls.first && !nats {
                return bad("--tls-first is for the NATS protocol only (tern's line protocol and Redis start TLS with the first byte anyway)".into());
            }
        }
        if let Some(c) = &self.credentials {
            let fields: Vec<(&str, &str)> = match c {
                Credentials::User { user, password } => {
                    vec![("--user", user), ("--password", password)]
                }
                Credentials::Token(t) => vec![("--token", t)],
            };
            let line = [self.protocol, self.subscriber_protocol()].contains(&Protocol::Line);
            for (flag, value) in fields {
                if value.is_empty() {
                    return bad(format!("{flag} must not be empty"));
                }
                // One AUTH frame, fields split at spaces (docs/protocol.md).
                let terminator = self.terminator.as_bytes();
                if line
                    && (value.contains(' ')
                        || value
                            .as_bytes()
                            .windows(terminator.len())
                            .any(|w| w == terminator))
                {
                    return bad(format!(
                        "{flag}: tern's line protocol cannot carry a space or the terminator in AUTH"
                    ));
                }
            }
        }
        if let Some(cores) = &self.cores {
            if cores.is_empty() {
                return bad("--cores: give at least one CPU".into());
            }
            let allowed = tern::sys::allowed_cpus();
            if let Some(c) = cores.iter().find(|c| !allowed.contains(c)) {
                return bad(format!(
                    "--cores: CPU {c} is not available to this process (allowed: {})",
                    format_cpu_list(&allowed)
                ));
            }
        }
        Ok(())
    }

    /// How many worker threads the run uses, and the CPU each is pinned to.
    pub fn worker_cpus(&self) -> Vec<Option<usize>> {
        let connections = self.publishers + self.subscribers;
        match &self.cores {
            Some(cores) => cores.iter().take(connections).map(|&c| Some(c)).collect(),
            None => {
                let n = std::thread::available_parallelism().map_or(1, |n| n.get());
                vec![None; n.min(connections)]
            }
        }
    }
}

/// `tern-loadgen`'s command line.
#[derive(Debug, Parser)]
#[command(
    name = "tern-loadgen",
    version,
    about = "Open-loop, coordinated-omission-free load generator for tern, nats-server and redis-server.",
    long_about = "Open-loop, coordinated-omission-free load generator for tern, nats-server and redis-server.\n\n\
Publishers send on a fixed schedule and never wait for replies; latency is measured from the \
*intended* send time (corrected) and from the actual send time (uncorrected). Subscribers check \
every publisher's sequence for lost, duplicated and reordered messages.\n\n\
Exit status: 0 success, 1 error (partial results are still printed), 2 integrity violations."
)]
pub struct Args {
    /// Server address (host:port); a comma-separated list spreads the
    /// connections round-robin over several.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7000")]
    pub target: String,
    /// Wire protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Line)]
    pub protocol: Protocol,
    /// Frame terminator, line protocol only (escapes \n \r \t \0 \\ \xHH).
    #[arg(long, value_name = "T", default_value = r"\n")]
    pub terminator: String,
    /// Subscribers speak this protocol instead (a mixed run, e.g. line
    /// publishers and NATS subscribers on one tern; needs
    /// --subscriber-target).
    #[arg(long, value_enum, requires = "subscriber_target")]
    pub subscriber_protocol: Option<Protocol>,
    /// Subscribers connect here instead (comma-separated list, spread
    /// round-robin); with --subscriber-protocol.
    #[arg(long, value_name = "ADDR", requires = "subscriber_protocol")]
    pub subscriber_target: Option<String>,
    /// Publishing connections.
    #[arg(long, value_name = "P", default_value_t = 1)]
    pub publishers: usize,
    /// Subscribing connections.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub subscribers: usize,
    /// Publishers are spread over this many subjects; subscribers take all.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub subjects: usize,
    /// Subscribers join this queue group (each message reaches one of them).
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// Total messages per second (e.g. 50000, 50k, 1M); 0 = as fast as possible.
    #[arg(long, value_name = "R", default_value = "10k", value_parser = parse_rate)]
    pub rate: u64,
    /// With --rate 0: most messages a publisher has in flight; the default is large enough not to starve a server that answers in batches (1000 under-reported nats-server's 1→1 throughput by about 17%)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_WINDOW)]
    pub window: usize,
    /// Payload size (e.g. 128, 1KiB).
    #[arg(long, value_name = "BYTES", default_value = "128", value_parser = parse_size)]
    pub size: usize,
    /// Measured time (e.g. 10s, 500ms, 1m; a bare number is seconds).
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before it (a bare number is seconds).
    #[arg(long, value_name = "TIME", default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// CPUs for the generator's workers, one pinned worker each (e.g. 1 or
    /// 2-3). Pinned workers busy-poll rather than sleep, so their own
    /// wake-up delay is not measured as latency (see --no-busy-poll). The
    /// coordinating thread is not pinned: use taskset to keep the whole
    /// process off the server's CPUs.
    #[arg(long, value_name = "LIST")]
    pub cores: Option<String>,
    /// With --cores: let workers sleep between events (saves CPU; adds
    /// their wake-up delay to low-rate latencies).
    #[arg(long)]
    pub no_busy_poll: bool,
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write an HdrHistogram interval log (one histogram per second).
    #[arg(long, value_name = "PATH")]
    pub hdr_log: Option<PathBuf>,
    /// Write an SVG plot of the latency percentile distribution.
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,
    /// No per-second progress on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Longest wait for in-flight messages after the last publish (a bare
    /// number is seconds).
    #[arg(long, value_name = "TIME", default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Connect over TLS (rustls). NATS: after the server's clear-text INFO
    /// (or first, with --tls-first); line protocol and Redis: from the first
    /// byte. Needs --tls-ca or --tls-insecure.
    #[arg(long, help_heading = "TLS")]
    pub tls: bool,
    /// PEM file of the CA certificate(s) to trust for the server's
    /// certificate.
    #[arg(long, value_name = "PATH", requires = "tls", help_heading = "TLS")]
    pub tls_ca: Option<PathBuf>,
    /// Do not verify the server's certificate (says so on stderr); for
    /// benchmarks against a throwaway certificate only.
    #[arg(
        long,
        requires = "tls",
        conflicts_with = "tls_ca",
        help_heading = "TLS"
    )]
    pub tls_insecure: bool,
    /// Name the server's certificate must be valid for [default: the host
    /// of --target, or localhost if it is an IP address].
    #[arg(long, value_name = "NAME", requires = "tls", help_heading = "TLS")]
    pub tls_server_name: Option<String>,
    /// Client certificate (PEM chain) for mutual TLS; with --tls-key.
    #[arg(long, value_name = "PATH", requires_all = ["tls", "tls_key"], help_heading = "TLS")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PATH", requires_all = ["tls", "tls_cert"], help_heading = "TLS")]
    pub tls_key: Option<PathBuf>,
    /// NATS only: start the TLS handshake at once and read INFO over TLS
    /// (nats-server's `handshake_first`).
    #[arg(long, requires = "tls", help_heading = "TLS")]
    pub tls_first: bool,
    /// User name to authenticate as; with --password. NATS: CONNECT's
    /// user/pass; line protocol: `AUTH <user> <password>` first; Redis:
    /// `AUTH <user> <password>`.
    #[arg(
        long,
        value_name = "NAME",
        requires = "password",
        help_heading = "Authentication"
    )]
    pub user: Option<String>,
    /// Password of --user (visible to other local users in the process
    /// list: use throwaway credentials).
    #[arg(
        long,
        value_name = "PW",
        requires = "user",
        help_heading = "Authentication"
    )]
    pub password: Option<String>,
    /// Token to authenticate with, instead of --user/--password. NATS:
    /// CONNECT's auth_token; line protocol: `AUTH <token>` first; Redis:
    /// `AUTH <token>` (requirepass).
    #[arg(long, value_name = "TOKEN", conflicts_with_all = ["user", "password"], help_heading = "Authentication")]
    pub token: Option<String>,
}

impl Args {
    /// The options these flags describe, validated.
    pub fn into_options(self) -> Result<Options, Error> {
        let targets = parse_targets("--target", &self.target)?;
        let subscriber = match (self.subscriber_protocol, &self.subscriber_target) {
            (Some(p), Some(t)) => Some((p, parse_targets("--subscriber-target", t)?)),
            _ => None,
        };
        let terminator = Terminator::parse(&self.terminator)
            .map_err(|e| Error::Options(format!("--terminator: {e}")))?;
        let cores = self
            .cores
            .as_deref()
            .map(parse_cpu_list)
            .transpose()
            .map_err(|e| Error::Options(format!("--cores: {e}")))?;
        let tls = self.tls.then(|| TlsOptions {
            ca: self.tls_ca,
            insecure: self.tls_insecure,
            server_name: self.tls_server_name.unwrap_or_else(|| {
                default_server_name(self.target.split(',').next().unwrap_or(""))
            }),
            cert: self.tls_cert,
            key: self.tls_key,
            first: self.tls_first,
        });
        let credentials = match (self.user, self.password, self.token) {
            (Some(user), Some(password), None) => Some(Credentials::User { user, password }),
            (None, None, Some(token)) => Some(Credentials::Token(token)),
            _ => None,
        };
        let opts = Options {
            tls,
            credentials,
            targets,
            protocol: self.protocol,
            subscriber,
            terminator,
            publishers: self.publishers,
            subscribers: self.subscribers,
            subjects: self.subjects,
            group: self.group,
            rate: self.rate,
            window: self.window,
            size: self.size,
            duration: self.duration,
            warmup: self.warmup,
            busy_poll: cores.is_some() && !self.no_busy_poll,
            cores,
            json: self.json,
            hdr_log: self.hdr_log,
            plot: self.plot,
            quiet: self.quiet,
            drain_timeout: self.drain_timeout,
            ..Options::default()
        };
        opts.validate()?;
        Ok(opts)
    }
}

/// A comma-separated list of `host:port`, for `flag`.
fn parse_targets(flag: &str, list: &str) -> Result<Vec<SocketAddr>, Error> {
    list.split(',')
        .map(|t| {
            t.trim()
                .to_socket_addrs()
                .map_err(|e| Error::Options(format!("{flag} {t}: {e}")))?
                .next()
                .ok_or_else(|| Error::Options(format!("{flag} {t}: no address")))
        })
        .collect()
}

/// `50000`, `50k`, `1.5M`.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid rate `{s}`: use messages per second, e.g. 50000 or 50k"))?;
    let r = v * mult;
    if !r.is_finite() || !(0.0..=1e10).contains(&r) {
        return Err(format!("invalid rate `{s}`"));
    }
    Ok(r.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mixed_run_names_the_subscribers_protocol_and_targets() {
        let o = args(&[
            "--target",
            "127.0.0.1:7000",
            "--subscriber-protocol",
            "nats",
            "--subscriber-target",
            "127.0.0.1:4222,127.0.0.1:4223",
        ])
        .unwrap();
        assert_eq!(o.protocol, Protocol::Line);
        assert_eq!(o.subscriber_protocol(), Protocol::Nats);
        assert_eq!(o.subscriber_target(1).port(), 4223);
        assert_eq!(
            o.targets_display(),
            "127.0.0.1:7000 (subscribers: nats 127.0.0.1:4222,127.0.0.1:4223)"
        );
        // One without the other is refused by the command line.
        let parse = |extra: &[&str]| {
            let mut v = vec!["tern-loadgen"];
            v.extend_from_slice(extra);
            Args::try_parse_from(v)
        };
        assert!(parse(&["--subscriber-protocol", "nats"]).is_err());
        assert!(parse(&["--subscriber-target", "127.0.0.1:1"]).is_err());
        let redis = parse(&[
            "--protocol",
            "redis",
            "--subscriber-protocol",
            "nats",
            "--subscriber-target",
            "127.0.0.1:1",
        ])
        .unwrap()
        .into_options();
        assert!(redis.is_err(), "Redis does not mix");
    }

    fn args(extra: &[&str]) -> Result<Options, Error> {
        let mut v = vec!["tern-loadgen"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap().into_options()
    }

    #[test]
    fn defaults_match_the_documented_contract() {
        let o = args(&[]).unwrap();
        assert_eq!(o.targets, vec!["127.0.0.1:7000".parse().unwrap()]);
        assert_eq!(o.protocol, Protocol::Line);
        assert_eq!(o.terminator.as_bytes(), b"\n");
        assert_eq!((o.publishers, o.subscribers, o.subjects), (1, 1, 1));
        assert_eq!(o.size, 128);
        assert_eq!(o.duration, Duration::from_secs(10));
        assert_eq!(o.warmup, Duration::from_secs(2));
        assert_eq!(o.subject_names(), vec!["bench.0"]);
        // Not 1000, which starved nats-server at --rate 0; the library's
        // default is the command line's.
        assert_eq!(o.window, 16_384);
        assert_eq!(Options::default().window, o.window);
    }

    #[test]
    fn help_says_why_the_window_is_large() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        // The flag's entry: its line and the indented ones below it.
        let entry: Vec<&str> = help
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("--window"))
            .take_while(|l| !l.trim_start().starts_with("--size"))
            .collect();
        let entry = entry.join(" ");
        assert!(entry.contains("not to starve"), "{entry}");
        assert!(entry.contains("[default: 16384]"), "{entry}");
    }

    #[test]
    fn every_contract_flag_parses() {
        let o = args(&[
            "--target",
            "127.0.0.1:4222",
            "--protocol",
            "nats",
            "--terminator",
            r"\r\n",
            "--publishers",
            "2",
            "--subscribers",
            "8",
            "--subjects",
            "3",
            "--group",
            "g",
            "--rate",
            "50k",
            "--window",
            "64",
            "--size",
            "1KiB",
            "--duration",
            "1.5s",
            "--warmup",
            "500ms",
            "--cores",
            "0",
            "--json",
            "r.json",
            "--hdr-log",
            "r.hlog",
            "--plot",
            "r.svg",
            "--quiet",
        ])
        .unwrap();
        assert_eq!(o.protocol, Protocol::Nats);
        assert_eq!(o.rate, 50_000);
        assert_eq!(o.size, 1024);
        assert_eq!(o.duration, Duration::from_millis(1500));
        assert_eq!(o.group.as_deref(), Some("g"));
        assert_eq!(o.cores, Some(vec![0]));
        assert!(o.busy_poll, "pinned workers busy-poll");
        assert!(!args(&["--cores", "0", "--no-busy-poll"]).unwrap().busy_poll);
        assert!(!args(&[]).unwrap().busy_poll);
        assert_eq!(o.worker_cpus(), vec![Some(0)]);
        assert!(o.quiet && o.json.is_some() && o.hdr_log.is_some() && o.plot.is_some());
        let o = args(&["--target", "127.0.0.1:1, 127.0.0.1:2"]).unwrap();
        assert_eq!(o.target_for(0), "127.0.0.1:1".parse().unwrap());
        assert_eq!(o.target_for(3), "127.0.0.1:2".parse().unwrap());
        assert_eq!(o.targets_display(), "127.0.0.1:1,127.0.0.1:2");
    }

    #[test]
    fn bad_combinations_are_refused() {
        for bad in [
            &["--protocol", "redis", "--group", "g"][..],
            &["--size", "8"],
            &["--publishers", "0"],
            &["--subscribers", "0"],
            &["--rate", "0", "--window", "0"],
            &["--terminator", "a b"],
            &["--terminator", r"\q"],
            &["--group", "has space"],
            &["--cores", "4095"],
            &["--cores", "x"],
            &["--target", "nowhere"],
        ] {
            assert!(args(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn tls_and_credential_flags() {
        let o = args(&[
            "--target",
            "127.0.0.1:4222",
            "--protocol",
            "nats",
            "--tls",
            "--tls-ca",
            "ca.pem",
            "--tls-first",
            "--user",
            "bench",
            "--password",
            "pw",
        ])
        .unwrap();
        let tls = o.tls.unwrap();
        assert_eq!(tls.ca.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(tls.server_name, "localhost", "an IP target: localhost");
        assert!(tls.first && !tls.insecure);
        assert_eq!(
            o.credentials,
            Some(Credentials::User {
                user: "bench".into(),
                password: "pw".into()
            })
        );
        let o = args(&[
            "--target",
            "localhost:7000",
            "--tls",
            "--tls-insecure",
            "--tls-server-name",
            "relay.example",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--token",
            "t",
        ])
        .unwrap();
        let tls = o.tls.unwrap();
        assert_eq!(tls.server_name, "relay.example");
        assert!(tls.insecure && tls.cert.is_some() && tls.key.is_some());
        assert_eq!(o.credentials, Some(Credentials::Token("t".into())));
        assert!(args(&[]).unwrap().tls.is_none());
        assert!(args(&[]).unwrap().credentials.is_none());

        // What clap refuses.
        let parse = |extra: &[&str]| {
            let mut v = vec!["tern-loadgen"];
            v.extend_from_slice(extra);
            Args::try_parse_from(v).map(|_| ())
        };
        for bad in [
            &["--token", "t", "--user", "u", "--password", "p"][..],
            &["--user", "u"],
            &["--password", "p"],
            &["--tls-ca", "ca.pem"],
            &["--tls-insecure"],
            &["--tls-first"],
            &["--tls-server-name", "x"],
            &["--tls", "--tls-ca", "ca.pem", "--tls-insecure"],
            &["--tls", "--tls-insecure", "--tls-cert", "c.pem"],
            &["--tls", "--tls-insecure", "--tls-key", "k.pem"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused by clap");
        }
        // What validation refuses.
        for bad in [
            &["--tls"][..],
            &["--tls", "--tls-insecure", "--tls-first"],
            &["--tls", "--tls-insecure", "--tls-server-name", "a b"],
            &["--token", ""],
            &["--token", "has space"],
            &["--user", "u", "--password", "a\nb"],
        ] {
            match args(bad) {
                Err(Error::Options(m)) => assert!(m.contains("--"), "{bad:?}: {m}"),
                other => panic!("{bad:?} should be refused, got {other:?}"),
            }
        }
        // A space is fine where the protocol quotes or counts bytes.
        assert!(args(&["--protocol", "nats", "--user", "u", "--password", "a b"]).is_ok());
        assert!(args(&["--protocol", "redis", "--token", "a b"]).is_ok());
    }

    #[test]
    fn help_lists_the_tls_and_credential_flags() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        for flag in [
            "--tls",
            "--tls-ca <PATH>",
            "--tls-insecure",
            "--tls-server-name <NAME>",
            "--tls-cert <PATH>",
            "--tls-key <PATH>",
            "--tls-first",
            "--user <NAME>",
            "--password <PW>",
            "--token <TOKEN>",
        ] {
            assert!(
                help.lines().any(|l| l.trim() == flag),
                "{flag} missing from --help"
            );
        }
    }

    #[test]
    fn durations_and_rates() {
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_rate("0").unwrap(), 0);
        assert_eq!(parse_rate("1.5M").unwrap(), 1_500_000);
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
