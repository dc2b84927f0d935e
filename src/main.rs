//! `tern`: the relay's command line.
//!
//! Reads the flags (their names are a contract, see `tern --help`), installs
//! logging before anything else can log (glommio logs through the `log`
//! crate; tracing-subscriber's `tracing-log` bridge, on by default, carries
//! its warnings into the same output), turns the flags into a
//! [`tern::config::Config`], gathers the start-up findings about it
//! ([`tern::preflight::findings`]) and either prints them all
//! (`--check-config`) or, if none is an error, runs a [`Relay`] (and, with
//! `--metrics`, its HTTP endpoint, see [`tern::metrics`]) until SIGINT or
//! SIGTERM.
//!
//! Every start-up error is one line on stderr, `tern: error: ...`, and exit
//! status 2, the status clap uses for usage errors. A clean shutdown exits
//! 0 after a one-line summary.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use tern::auth::Authorization;
use tern::config::{self, Config};
use tern::config_file::{self, FlagKind, FlagSpec};
use tern::framing::Terminator;
use tern::logging;
use tern::metrics::MetricsListener;
use tern::preflight::{self, Findings, Verdict};
use tern::relay::Relay;
use tern::sys::allowed_cpus;
use tern::tls::TlsConfig;
use tern::units::{self, format_cpu_list, format_duration, format_size};

/// Exit status of every start-up error (and of clap's usage errors).
const EXIT_STARTUP: u8 = 2;

/// The command line. `about` is the package description; each doc comment
/// below is that flag's one line in `--help`.
#[derive(Debug, Parser)]
#[command(name = "tern", version, about, long_about = None)]
// So that `--max-frame -1` reaches the size parser and is refused as a size,
// rather than as an unknown flag `-1`.
#[command(allow_negative_numbers = true)]
#[command(
    after_help = "Byte sizes accept plain integers or suffixes: 64KiB, 1MiB, 1MB, 4k.\n\
Durations are a number with a unit (ns, us, ms, s, m, h): 50us, 1.5ms, 2s; a bare number is seconds.\n\
CPU lists are numbers and ranges: 0,2 or 0-3.\n\
RUST_LOG is honoured unless --log-level is given.\n\
SIGINT or SIGTERM stops the relay after flushing for at most 2 s; a second one stops it at once."
)]
struct Cli {
    /// Address to accept clients on, IP:PORT or HOST:PORT (a host name listens on every address it resolves to); repeat for several
    #[arg(long, value_name = "ADDR", default_value = config::DEFAULT_LISTEN, value_parser = parse_addrs)]
    listen: Vec<Addrs>,

    /// Address to accept NATS clients on (the NATS client protocol), like --listen; repeat for several, or `off`
    #[arg(long, value_name = "ADDR|off", default_value = config::DEFAULT_NATS_LISTEN, value_parser = parse_listen_or_off)]
    nats_listen: Vec<ListenOrOff>,

    /// How often NATS clients are pinged; two unanswered pings close a connection as stale
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = units::parse_duration)]
    nats_ping_interval: Duration,

    /// Number of shards, 1 to the number of CPUs this process may use, on the first N of them (with --cores: must match its length) [default: one per CPU]
    #[arg(long, value_name = "N", value_parser = parse_shards)]
    shards: Option<usize>,

    /// CPUs to run one shard each on, like 0,2 or 0-3
    #[arg(long, value_name = "LIST", value_parser = parse_cores)]
    cores: Option<CpuList>,

    /// Also give shard i a private listener on ADDR's port + i (port 0: any free port), to pin a client to a shard (and a private NATS listener on any free port); a host name: its first address
    #[arg(long, value_name = "ADDR", value_parser = parse_first_addr)]
    shard_listen: Option<SocketAddr>,

    /// Frame terminator, 1-16 bytes, with escapes \n \r \t \0 \\ \xHH
    #[arg(long, value_name = "T", default_value = r"\n", value_parser = Terminator::parse)]
    terminator: Terminator,

    /// Longest frame accepted, in bytes (without the terminator); also the largest NATS payload (max_payload)
    #[arg(long, value_name = "BYTES", default_value_t = config::DEFAULT_MAX_FRAME, value_parser = units::parse_size)]
    max_frame: usize,

    /// Unsent output per connection past which it is closed as a slow consumer
    #[arg(long, value_name = "BYTES", default_value_t = config::DEFAULT_MAX_PENDING, value_parser = units::parse_size)]
    max_pending: usize,

    /// Longest a publisher is paused while a receiver it delivered to has more than half of --max-pending queued (0: never; such receivers are closed at --max-pending)
    // The default is config::DEFAULT_MAX_STALL (a test checks).
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = units::parse_duration)]
    max_stall: Duration,

    /// Memory the whole relay may hold in clients' input buffers and unsent output; past it, a frame growing past the read size or a queue past 1 MiB is refused and its connection closed [default: half of physical memory]
    #[arg(long, value_name = "BYTES", value_parser = units::parse_size)]
    max_memory: Option<usize>,

    /// Subscriptions per connection
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_MAX_SUBS)]
    max_subs: usize,

    /// Open connections for the whole relay; more are refused [default: 100000, or what the open-files limit allows]
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,

    /// How long an idle shard polls before sleeping (lower wake-up latency, more CPU)
    // The default is config::DEFAULT_SPIN_BEFORE_PARK (a test checks).
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = units::parse_duration)]
    spin_before_park: Duration,

    /// io_uring buffer memory per shard, in bytes, at least 64KiB (counts against the locked-memory limit)
    #[arg(long, value_name = "BYTES", default_value_t = config::DEFAULT_IO_MEMORY, value_parser = units::parse_size)]
    io_memory: usize,

    /// Log filter: error, warn, info, debug (also each connection opened and closed), trace, or directives like tern=debug [default: info]
    #[arg(long, value_name = "LEVEL", value_parser = parse_log_filter)]
    log_level: Option<String>,

    /// Log line format: text, or json (one object per line) for log shippers
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text, hide_possible_values = true)]
    log_format: LogFormat,

    /// Serve Prometheus /metrics, /healthz and /connections over HTTP on this address (a host name: its first address) [default: off]
    #[arg(long, value_name = "ADDR", value_parser = parse_first_addr)]
    metrics: Option<SocketAddr>,

    /// TLS on every listener: this PEM file's certificate (and chain); needs --tls-key [default: clear text]
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Mutual TLS: clients must present a certificate issued by a CA in this PEM file
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,

    /// Longest a TLS handshake may take; slower or silent clients are closed
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = units::parse_duration)]
    tls_timeout: Duration,

    /// NATS listeners expect the TLS handshake first, before INFO (nats-server's handshake_first), instead of after a clear-text INFO
    #[arg(long, requires = "tls_cert")]
    nats_tls_first: bool,

    /// A client certificate whose common name, DNS name or e-mail address is a user's name (config file [authorization]) logs in as that user; needs --tls-client-ca
    #[arg(long, requires = "tls_client_ca")]
    tls_map_users: bool,

    /// Join a NATS hub as a leaf node: nats-leaf://[user:pass@]host:7422; repeat for several (TLS: [[leafnodes.remotes]])
    #[arg(long = "leafnode-remote", value_name = "URL", action = clap::ArgAction::Append)]
    leafnode_remote: Vec<String>,

    /// Longest wait between attempts to reach a hub (from 100ms, doubling, jittered)
    #[arg(long, value_name = "TIME", default_value = "5s", value_parser = units::parse_duration)]
    leafnode_reconnect_max: Duration,

    /// Read settings from this TOML file: each flag is a key (max_frame = "1MiB"), users and permissions are in [authorization]; flags on the command line win
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Check the flags, the config file and the environment, print what was found, and exit (0 if all is well, else 2) without serving
    #[arg(long)]
    check_config: bool,

    /// Test hook: a shard that receives the frame TERN-TEST-PANIC panics
    /// (how the tests check that a dead shard stops the process)
    #[arg(long, hide = true)]
    test_panic_frame: bool,
}

/// `--log-format` values. (Plain comments, not doc comments, on the
/// variants: documented values would turn `--help` into the long,
/// several-lines-per-flag form.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    // Human-readable lines.
    Text,
    // One JSON object per line, for log shippers.
    Json,
}

/// A parsed `--cores` list (a newtype so clap takes it as one value).
#[derive(Debug, Clone)]
struct CpuList(Vec<usize>);

/// The addresses one `--listen` value names: one for an IP address, every
/// address of a host name (a newtype so clap takes it as one value).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Addrs(Vec<SocketAddr>);

fn parse_addrs(s: &str) -> Result<Addrs, units::AddrError> {
    units::resolve_addrs(s).map(Addrs)
}

/// A `--nats-listen` value: its addresses (see [`Addrs`]), or `off`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListenOrOff(Option<Addrs>);

fn parse_listen_or_off(s: &str) -> Result<ListenOrOff, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(ListenOrOff(None));
    }
    parse_addrs(s)
        .map(|a| ListenOrOff(Some(a)))
        .map_err(|e| format!("{e}, or off"))
}

/// An address flag that names one endpoint (`--metrics`,
/// `--shard-listen`): a host name's first address, in the resolver's
/// order.
fn parse_first_addr(s: &str) -> Result<SocketAddr, units::AddrError> {
    units::resolve_addrs(s).map(|addrs| addrs[0])
}

/// `--shards`: at least 1; more than this process has CPUs is refused
/// with the list of them once the flags are read ([`build_config`]).
fn parse_shards(s: &str) -> Result<usize, String> {
    let s = s.trim();
    match s.parse::<usize>() {
        Ok(0) => Err("at least 1 shard is needed".to_string()),
        Ok(n) => Ok(n),
        Err(_) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => Err(format!(
            "too many: at most one shard per CPU this process may use ({})",
            allowed_cpus().len()
        )),
        Err(_) => Err("give a whole number of shards, at least 1".to_string()),
    }
}

fn parse_cores(s: &str) -> Result<CpuList, units::CpuListError> {
    units::parse_cpu_list(s).map(CpuList)
}

/// A `--log-level` value, kept as written once [`logging::parse_filter`]
/// has accepted it (an `EnvFilter` cannot be cloned, as clap needs).
fn parse_log_filter(s: &str) -> Result<String, logging::FilterError> {
    logging::parse_filter(s).map(|_| s.to_string())
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let (cli, sections) = match parse_command_line(&args) {
        Ok(parsed) => parsed,
        Err(Failure::Usage(e)) => return usage_error(e),
        Err(Failure::Startup(msg)) => return startup_error(msg),
    };
    if let Err(msg) = init_logging(cli.log_level.as_deref(), cli.log_format) {
        return startup_error(msg);
    }
    let config = match build_config(&cli).and_then(|c| with_sections(c, &cli, sections)) {
        Ok(c) => c,
        Err(msg) => return startup_error(msg),
    };
    if cli.check_config {
        return check_config(&preflight::findings(&config, cli.metrics));
    }
    run(config, cli.metrics)
}

/// Why the command line could not be read.
enum Failure {
    /// clap's own error (also `--help` and `--version`).
    Usage(clap::Error),
    /// The config file's.
    Startup(String),
}

/// Reads the command line and, with `--config`, the file it names: each
/// of the file's keys is a flag the command line did not give (the command
/// line wins), and its `[authorization]` section the users.
fn parse_command_line(args: &[OsString]) -> Result<(Cli, FileSections), Failure> {
    let matches = Cli::command()
        .try_get_matches_from(args)
        .map_err(Failure::Usage)?;
    let cli = Cli::from_arg_matches(&matches).map_err(Failure::Usage)?;
    let Some(path) = &cli.config else {
        return Ok((cli, FileSections::default()));
    };
    let in_file = |msg: String| Failure::Startup(format!("config file {}: {msg}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| in_file(e.to_string()))?;
    let command = Cli::command();
    let specs: Vec<FlagSpec<'_>> = command
        .get_arguments()
        .filter(|arg| arg.get_long().is_some())
        .filter_map(|arg| {
            let kind = match arg.get_action() {
                clap::ArgAction::SetTrue => FlagKind::Switch,
                clap::ArgAction::Append => FlagKind::Many,
                clap::ArgAction::Set => FlagKind::One,
                _ => return None,
            };
            Some(FlagSpec {
                key: arg.get_id().as_str(),
                kind,
            })
        })
        .collect();
    let file = config_file::parse(&text, &specs).map_err(|e| in_file(e.to_string()))?;
    // The file's flags as words, before the command line's own.
    let words = |f: &config_file::FileFlag| -> Vec<OsString> {
        let long = command
            .get_arguments()
            .find(|a| a.get_id().as_str() == f.key)
            .and_then(|a| a.get_long())
            .unwrap_or(&f.key)
            .to_string();
        if f.values.is_empty() {
            vec![format!("--{long}").into()]
        } else {
            f.values
                .iter()
                .map(|v| format!("--{long}={v}").into())
                .collect()
        }
    };
    let from_file: Vec<&config_file::FileFlag> = file
        .flags
        .iter()
        .filter(|f| matches.value_source(&f.key) != Some(ValueSource::CommandLine))
        .collect();
    let mut merged: Vec<OsString> = args[..1].to_vec();
    for f in &from_file {
        merged.extend(words(f));
    }
    merged.extend(args[1..].iter().cloned());
    match Cli::try_parse_from(&merged) {
        Ok(cli) => Ok((
            cli,
            FileSections {
                authorization: file.authorization,
                leaf_remotes: file.leaf_remotes,
            },
        )),
        Err(e) => {
            // Which of the file's values clap refused: each alone.
            for f in &from_file {
                let mut alone: Vec<OsString> = args[..1].to_vec();
                alone.extend(words(f));
                if let Err(e) = Cli::try_parse_from(&alone) {
                    let said = clap_message(&e);
                    return Err(in_file(format!("line {}: {}: {said}", f.line, f.key)));
                }
            }
            Err(Failure::Usage(e))
        }
    }
}

/// What the config file holds besides flags.
#[derive(Default)]
struct FileSections {
    authorization: Option<Authorization>,
    leaf_remotes: Vec<tern::leaf::Remote>,
}

/// Adds TLS (from the flags), authentication (from the config file) and
/// the leaf remotes (from both) to `config`.
fn with_sections(config: Config, cli: &Cli, sections: FileSections) -> Result<Config, String> {
    let FileSections {
        authorization,
        mut leaf_remotes,
    } = sections;
    for url in &cli.leafnode_remote {
        let remote =
            tern::leaf::Remote::parse(url).map_err(|e| format!("--leafnode-remote: {e}"))?;
        if remote.tls.required {
            return Err(format!(
                "--leafnode-remote {}: TLS needs the hub's CA: give this remote in the config file's [[leafnodes.remotes]] with tls_ca",
                remote.url
            ));
        }
        leaf_remotes.push(remote);
    }
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => Some(TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: cli.tls_client_ca.clone(),
            timeout: cli.tls_timeout,
            nats_handshake_first: cli.nats_tls_first,
        }),
        _ => None,
    };
    let auth = match authorization {
        Some(mut a) => {
            a.map_certificates = cli.tls_map_users;
            Some(std::sync::Arc::new(a))
        }
        None if cli.tls_map_users => {
            return Err(
                "--tls-map-users maps certificates to users, but there are none: list them in the config file's [authorization] section".to_string(),
            )
        }
        None => None,
    };
    Ok(Config {
        tls,
        auth,
        leaf_remotes,
        leaf_reconnect_max: cli.leafnode_reconnect_max,
        ..config
    })
}

/// Prints a start-up error as the one line users and scripts expect.
fn startup_error(msg: impl fmt::Display) -> ExitCode {
    eprintln!("tern: error: {}", one_line(&msg.to_string()));
    ExitCode::from(EXIT_STARTUP)
}

/// `msg` on one line: errors from below (glommio's pretty-printed `Debug`
/// output, a panic message) may span several.
fn one_line(msg: &str) -> std::borrow::Cow<'_, str> {
    if msg.contains('\n') {
        msg.split_whitespace().collect::<Vec<_>>().join(" ").into()
    } else {
        msg.into()
    }
}

/// `--help` and `--version` print and exit 0; every other clap error
/// becomes one `tern: error:` line (clap's own is several lines).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Nothing useful can be done if stdout is closed.
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => startup_error(format_args!("{} (see tern --help)", clap_message(&e))),
    }
}

/// The first line of a clap error, without clap's `error: `.
fn clap_message(e: &clap::Error) -> String {
    let rendered = e.to_string();
    let first = rendered.lines().next().unwrap_or("invalid arguments");
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// Installs the logger on stderr ([`logging::install`]). The filter is
/// `--log-level` if given, else `RUST_LOG` if set, else `info`; both are
/// read by [`logging::parse_filter`], which refuses a level it does not
/// know rather than log nothing.
fn init_logging(level: Option<&str>, format: LogFormat) -> Result<(), String> {
    let filter = match level {
        Some(level) => logging::parse_filter(level).map_err(|e| format!("--log-level: {e}"))?,
        None => match std::env::var("RUST_LOG") {
            Ok(env) if !env.trim().is_empty() => {
                logging::parse_filter(&env).map_err(|e| format!("invalid RUST_LOG: {e}"))?
            }
            _ => logging::parse_filter("info").expect("a level"),
        },
    };
    let format = match format {
        LogFormat::Text => logging::Format::Text,
        LogFormat::Json => logging::Format::Json,
    };
    logging::install(filter, format).map_err(|e| e.to_string())
}

/// Turns the flags into a relay configuration: `--shards` and `--cores`
/// become the list of CPUs, each address value its addresses. Whether the
/// result can work is for [`preflight`] to say.
fn build_config(cli: &Cli) -> Result<Config, String> {
    let cores = match (&cli.cores, cli.shards) {
        (Some(CpuList(cores)), Some(n)) if n != cores.len() => {
            return Err(format!(
                "--shards {n} does not match --cores {} ({} CPU{}): give one of them, or make them agree",
                format_cpu_list(cores),
                cores.len(),
                if cores.len() == 1 { "" } else { "s" }
            ));
        }
        (Some(CpuList(cores)), _) => cores.clone(),
        (None, Some(n)) => {
            let allowed = allowed_cpus();
            if n > allowed.len() {
                return Err(format!(
                    "--shards {n}: only {} CPUs are available to this process ({}): give at most {}, or pick CPUs with --cores",
                    allowed.len(),
                    format_cpu_list(&allowed),
                    allowed.len()
                ));
            }
            allowed[..n].to_vec()
        }
        (None, None) => allowed_cpus(),
    };
    let off = cli.nats_listen.iter().any(|a| a.0.is_none());
    let nats_listen: Vec<SocketAddr> = cli
        .nats_listen
        .iter()
        .filter_map(|a| a.0.as_ref())
        .flat_map(|a| a.0.iter().copied())
        .collect();
    if off && !nats_listen.is_empty() {
        return Err("--nats-listen off cannot be combined with NATS addresses: give addresses, or off alone".to_string());
    }
    let config = Config {
        listen: cli
            .listen
            .iter()
            .flat_map(|a| a.0.iter().copied())
            .collect(),
        nats_listen,
        nats_ping_interval: cli.nats_ping_interval,
        cores,
        terminator: cli.terminator.clone(),
        max_frame: cli.max_frame,
        max_pending: cli.max_pending,
        max_stall: cli.max_stall,
        max_memory: cli.max_memory.unwrap_or_else(config::default_max_memory),
        max_subs: cli.max_subs,
        spin_before_park: cli.spin_before_park,
        io_memory: cli.io_memory,
        panic_frame: cli.test_panic_frame,
        shard_listeners: cli.shard_listen.is_some(),
        shard_listen: cli
            .shard_listen
            .unwrap_or_else(|| Config::default().shard_listen),
        ..Config::default()
    };
    let max_connections = cli
        .max_connections
        .unwrap_or_else(|| preflight::default_max_connections(&config));
    Ok(Config {
        max_connections,
        ..config
    })
}

/// `--check-config`: prints one line per finding on stdout (every check
/// ran, not only up to the first failure), then each problem as a
/// `tern: error:` line on stderr.
fn check_config(findings: &Findings) -> ExitCode {
    let mut warnings = 0;
    for f in findings {
        let (key, found) = (f.key, &f.found);
        match &f.verdict {
            Verdict::Info => println!("{key:<19}{found}"),
            Verdict::Ok => println!("{key:<19}{found}: ok"),
            Verdict::Warning(w) => {
                println!("{key:<19}{found}: WARNING: {w}");
                warnings += 1;
            }
            Verdict::Error(e) => println!("{key:<19}FAILED: {e}"),
        }
    }
    let problems: Vec<_> = findings.errors().collect();
    if problems.is_empty() {
        match warnings {
            0 => println!("configuration ok"),
            n => println!("configuration ok, with {n} warning(s)"),
        }
        return ExitCode::SUCCESS;
    }
    println!("configuration has {} problem(s)", problems.len());
    for p in problems {
        eprintln!("tern: error: {}", one_line(&p.to_string()));
    }
    ExitCode::from(EXIT_STARTUP)
}

/// Starts the relay (and its metrics endpoint), waits for SIGINT or
/// SIGTERM, and stops it.
fn run(config: Config, metrics: Option<SocketAddr>) -> ExitCode {
    // Registered before the relay starts so that a signal during start-up
    // is not fatal (the default action) but ends the relay cleanly.
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => return startup_error(format_args!("cannot install signal handlers: {e}")),
    };
    // Raised before the check, so that the `open files` finding describes
    // the limit the relay runs with.
    let open_files = match preflight::raise_open_files_limit() {
        Ok(limits) => preflight::format_limit(limits.soft, |n| n.to_string()),
        Err(e) => format!("unknown ({e})"),
    };
    let checked = match preflight::check(config, metrics) {
        Ok(c) => c,
        Err(e) => return startup_error(e),
    };
    // Logged only once the relay runs, since every start-up error must be
    // one line.
    let warnings: Vec<String> = checked.warnings().map(|f| f.to_string()).collect();
    // Bound before any shard starts, so a bad --metrics costs nothing.
    let metrics = match metrics.map(MetricsListener::bind).transpose() {
        Ok(m) => m,
        Err(e) => return startup_error(e),
    };
    let summary = StartupSummary::of(checked.config());
    let relay = match Relay::start_checked(checked) {
        Ok(r) => r,
        Err(e) => return startup_error(e),
    };
    let metrics = match metrics
        .map(|m| m.serve(relay.monitor(), relay.cores()))
        .transpose()
    {
        Ok(m) => m,
        Err(e) => {
            relay.shutdown();
            return startup_error(e);
        }
    };
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let listening = addresses(relay.local_addrs(), relay.shard_addrs(), "");
    let nats_at = addresses(relay.nats_addrs(), relay.shard_nats_addrs(), "NATS, ");
    let metrics_at = match &metrics {
        Some(m) => format!("http://{}/metrics", m.local_addr()),
        None => "off".to_string(),
    };
    tracing::info!(
        "tern {} started: {summary}, open files {open_files}; listening on {listening}; NATS on {nats_at}; metrics {metrics_at}",
        env!("CARGO_PKG_VERSION")
    );

    // Signals arrive through signal-hook's self-pipe on a thread of their
    // own, so that the main thread waits for the first of a signal and a
    // shard failure, without polling.
    // SIGHUP reloads the TLS files and goes on waiting.
    let (signal_tx, signal_rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut stops = signals.forever().filter(|&s| {
            if s == SIGHUP {
                let _ = signal_tx.send(SIGHUP);
                return false;
            }
            true
        });
        if let Some(first) = stops.next() {
            let _ = signal_tx.send(first);
        }
        // A second signal means "now": skip the flush.
        if stops.next().is_some() {
            eprintln!("tern: second signal: exiting without flushing");
            std::process::exit(1);
        }
    });
    let signal = loop {
        let signal = crossbeam_channel::select! {
            recv(signal_rx) -> signal => signal.unwrap_or(SIGTERM),
        recv(relay.failures()) -> reason => {
            // A dead shard takes its listeners' clients and its share of
            // every queue group with it: exit at once, non-zero, so that the
            // service manager restarts the relay (the supervisor has logged
            // why).
            let reason = reason.unwrap_or_else(|_| "a shard died".to_string());
            eprintln!("tern: exiting with status 1: {reason}");
            std::process::exit(1);
        }
        };
        if signal != SIGHUP {
            break signal;
        }
        match relay.reload_tls() {
            Ok(true) => tracing::info!(
                "SIGHUP: TLS certificate, key and client CA reloaded; new connections use them"
            ),
            Ok(false) => tracing::info!("SIGHUP: nothing to reload (no TLS configured)"),
            Err(e) => {
                tracing::error!("SIGHUP: TLS files not reloaded, the ones in force stay: {e}")
            }
        }
    };
    let name = if signal == SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    tracing::info!("{name} received: stopping (flushing output for at most 2 s)");
    if let Some(m) = metrics {
        m.stop();
    }
    let t = relay.shutdown();
    tracing::info!(
        "tern stopped: served {}, {} in, {} out, {}",
        count(t.connections_accepted, "connection"),
        count(t.msgs_in, "message"),
        count(t.msgs_out, "message"),
        count(t.slow_consumers, "slow consumer"),
    );
    ExitCode::SUCCESS
}

/// The start-up line's list of listen addresses: the shared ones, then
/// each shard's private one (`ADDR (shard i only)`, with `tag` before
/// `shard`), or `off`.
fn addresses(shared: &[SocketAddr], private: &[SocketAddr], tag: &str) -> String {
    let shared = shared.iter().map(|a| a.to_string());
    let private = private
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{a} ({tag}shard {i} only)"));
    let all: Vec<String> = shared.chain(private).collect();
    if all.is_empty() {
        "off".to_string()
    } else {
        all.join(", ")
    }
}

/// `1 connection`, `2 connections`.
fn count(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// The settings part of the start-up log line.
struct StartupSummary(String);

impl StartupSummary {
    fn of(c: &Config) -> Self {
        StartupSummary(format!(
            "{} shard{} on CPUs {}; terminator {}; max-frame {}, max-pending {}, max-stall {}, max-memory {}, max-subs {}, max-connections {}; spin-before-park {}, io-memory {}; TLS {}; authentication {}; leafnode remotes {}",
            c.cores.len(),
            if c.cores.len() == 1 { "" } else { "s" },
            format_cpu_list(&c.cores),
            c.terminator.escape(),
            format_size(c.max_frame as u64),
            format_size(c.max_pending as u64),
            format_duration(c.max_stall),
            format_size(c.max_memory as u64),
            c.max_subs,
            c.max_connections,
            format_duration(c.spin_before_park),
            format_size(c.io_memory as u64),
            match &c.tls {
                None => "off",
                Some(t) if t.client_ca.is_some() => "on (mutual)",
                Some(_) => "on",
            },
            match c.auth.as_deref().map(|a| &a.method) {
                None => "off".to_string(),
                Some(tern::auth::Method::Token(_)) => "token".to_string(),
                Some(tern::auth::Method::Users(u)) => format!("{} users", u.len()),
            },
            if c.leaf_remotes.is_empty() {
                "none".to_string()
            } else {
                let urls: Vec<&str> = c.leaf_remotes.iter().map(|r| r.url.as_str()).collect();
                urls.join(", ")
            },
        ))
    }
}

impl fmt::Display for StartupSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn terminators() {
        let parse =
            |t: &str| Cli::try_parse_from(["tern", "--terminator", t]).map_err(|e| e.to_string());
        assert_eq!(parse(r"\r\n").unwrap().terminator.as_bytes(), b"\r\n");
        assert!(parse(r"\q").unwrap_err().contains("unknown escape"));
        // Read, then refused with the other settings that cannot work.
        let spaced = build_config(&parse("a b").unwrap()).unwrap();
        assert!(spaced.validate().unwrap_err().to_string().contains("space"));
        assert!(parse(&"x".repeat(17)).unwrap_err().contains("17 bytes"));
    }

    #[test]
    fn durations_read_like_the_load_generators() {
        let spin = |d: &str| {
            Cli::try_parse_from(["tern", "--spin-before-park", d]).map(|c| c.spin_before_park)
        };
        assert_eq!(spin("50us").unwrap(), Duration::from_micros(50));
        // A bare number is seconds, as in tern-loadgen.
        assert_eq!(spin("5").unwrap(), Duration::from_secs(5));
        let err = spin("50x").unwrap_err().to_string();
        assert!(err.contains("50us"), "{err}");
    }

    #[test]
    fn defaults_match_the_library() {
        let cli = Cli::try_parse_from(["tern"]).unwrap();
        let c = build_config(&cli).unwrap();
        let d = Config::default();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.cores, allowed_cpus());
        assert_eq!(c.terminator, d.terminator);
        assert_eq!(
            (c.max_frame, c.max_pending, c.max_subs),
            (1048576, 67108864, 10000)
        );
        assert_eq!(c.max_connections, preflight::default_max_connections(&c));
        assert_eq!(c.max_stall, d.max_stall);
        assert_eq!(c.max_memory, config::default_max_memory());
        assert_eq!(c.spin_before_park, d.spin_before_park);
        assert_eq!(c.io_memory, d.io_memory);
    }

    #[test]
    fn flags_fill_the_config() {
        let cli = Cli::try_parse_from([
            "tern",
            "--listen",
            "127.0.0.1:1",
            "--listen",
            "[::1]:2",
            "--shards",
            "1",
            "--terminator",
            r"END\n",
            "--max-frame",
            "64KiB",
            "--max-pending",
            "1MiB",
            "--max-subs",
            "7",
            "--max-connections",
            "9",
            "--max-stall",
            "5ms",
            "--max-memory",
            "3GiB",
            "--spin-before-park",
            "20us",
            "--io-memory",
            "128k",
        ])
        .unwrap();
        let c = build_config(&cli).unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.cores, allowed_cpus()[..1].to_vec());
        assert_eq!(c.terminator.as_bytes(), b"END\n");
        assert_eq!((c.max_frame, c.max_pending), (65536, 1 << 20));
        assert_eq!((c.max_subs, c.max_connections), (7, 9));
        assert_eq!(c.max_stall, Duration::from_millis(5));
        assert_eq!(c.max_memory, 3 << 30);
        assert_eq!(c.spin_before_park, Duration::from_micros(20));
        assert_eq!(c.io_memory, 128 << 10);
    }

    #[test]
    fn shards_and_cores_conflict_and_are_bounded() {
        // Both may be given when they agree.
        let cli = Cli::try_parse_from(["tern", "--shards", "1", "--cores", "0"]).unwrap();
        assert_eq!(build_config(&cli).unwrap().cores, vec![0]);
        let cli = Cli::try_parse_from(["tern", "--shards", "2", "--cores", "0"]).unwrap();
        let err = build_config(&cli).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        assert!(Cli::try_parse_from(["tern", "--shards", "0"]).is_err());
        let too_many = (allowed_cpus().len() + 1).to_string();
        let cli = Cli::try_parse_from(["tern", "--shards", &too_many]).unwrap();
        let err = build_config(&cli).unwrap_err();
        assert!(err.contains("CPUs are available"), "{err}");
        let cli = Cli::try_parse_from(["tern", "--cores", "0-1,5"]).unwrap();
        assert_eq!(build_config(&cli).unwrap().cores, vec![0, 1, 5]);
    }

    #[test]
    fn zero_limits_are_refused() {
        let cli = Cli::try_parse_from(["tern", "--max-subs", "0"]).unwrap();
        let err = build_config(&cli).unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("--max-subs"), "{err}");
    }

    #[test]
    fn errors_are_one_line() {
        assert_eq!(one_line("a b"), "a b");
        assert_eq!(one_line("Os {\n    code: 12,\n}"), "Os { code: 12, }");
    }

    #[test]
    fn metrics_flag_is_parsed_and_must_not_be_a_listen_address() {
        let cli = Cli::try_parse_from(["tern"]).unwrap();
        assert_eq!(cli.metrics, None);
        let conflict = |listen: &str, metrics: &str| {
            let cli =
                Cli::try_parse_from(["tern", "--listen", listen, "--metrics", metrics]).unwrap();
            let findings = preflight::findings(&build_config(&cli).unwrap(), cli.metrics);
            let err = findings
                .errors()
                .find(|e| matches!(e, preflight::PreflightError::MetricsIsListen(_)))
                .map(|e| e.to_string());
            err
        };
        let err = conflict("127.0.0.1:7000", "127.0.0.1:7000").unwrap();
        assert!(err.contains("--metrics 127.0.0.1:7000"), "{err}");
        assert_eq!(conflict("127.0.0.1:7000", "127.0.0.1:9100"), None);
        // Port 0 twice is two different ports.
        assert_eq!(conflict("127.0.0.1:0", "127.0.0.1:0"), None);
        assert!(Cli::try_parse_from(["tern", "--metrics", "9100"]).is_err());
    }

    #[test]
    fn log_filters() {
        assert!(parse_log_filter("debug").is_ok());
        assert!(parse_log_filter("tern=debug,glommio=warn").is_ok());
        assert!(parse_log_filter("loud=[").is_err());
        // A typo of a level is refused, not taken as a module name.
        let err = Cli::try_parse_from(["tern", "--log-level", "warning"]).unwrap_err();
        assert!(
            err.to_string().contains("`warning` is not a log level"),
            "{err}"
        );
    }
}
