//! The `/varz` page: nats-server's general server information, with
//! nats-server 2.10's field names and JSON shapes, for what tern has, so
//! that NATS tooling that reads `/varz` works against tern.
//!
//! Served: `server_id`, `server_name`, `version` (the nats-server protocol
//! level tern announces in `INFO`), `proto`, `host` and `port` (the first
//! `--nats-listen` address; absent without one), the limits
//! (`max_connections`, `max_subscriptions` per connection, `ping_interval`
//! in nanoseconds, `ping_max`, `max_control_line`, `max_payload`,
//! `max_pending` per connection), with authentication `auth_required` and
//! `auth_timeout`, with TLS `tls_required`, `tls_verify` and `tls_timeout`
//! (seconds), `http_host`/`http_port` (this endpoint),
//! `start`, `now`, `uptime`, `mem` (resident bytes), `cores` (shards),
//! `cpu`, and the relay's counters summed over shards: `connections`,
//! `total_connections`, `subscriptions`, `in_msgs`, `out_msgs`,
//! `in_bytes`, `out_bytes`, `slow_consumers`. tern's own extras are under
//! `tern`: its version and the CPU of each shard.
//!
//! Left out, because tern has no such thing: `go`, `gomaxprocs` and
//! `git_commit` (tern is not a Go build), cluster,
//! gateway, leaf node, MQTT, websocket and JetStream settings and counts,
//! `write_deadline`, `http_req_stats` and `config_load_time`.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::clock::{rfc3339_nanos, uptime};
use crate::stats::Totals;

/// The server's side of `/varz`: what it is and its limits, fixed while it
/// runs.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ServerInfo {
    /// The `server_id` NATS clients see in `INFO`.
    pub(super) server_id: String,
    /// The `server_name` NATS clients see in `INFO`.
    pub(super) server_name: String,
    /// The first NATS listen address (`host`, `port`), if NATS is served.
    pub(super) nats_addr: Option<SocketAddr>,
    /// Largest payload a publish may carry (`--max-frame`).
    pub(super) max_payload: usize,
    /// Open connections the relay allows (`--max-connections`).
    pub(super) max_connections: usize,
    /// Subscriptions a connection may hold (`--max-subs`).
    pub(super) max_subscriptions: usize,
    /// Unsent bytes past which a connection is a slow consumer
    /// (`--max-pending`).
    pub(super) max_pending: usize,
    /// How often NATS clients are pinged (`--nats-ping-interval`).
    pub(super) ping_interval: Duration,
    /// When the relay started (wall clock).
    pub(super) start: SystemTime,
    /// Clients must authenticate, within this long (`None`: no
    /// authentication configured).
    pub(super) auth_timeout: Option<Duration>,
    /// Clients must speak TLS, finishing the handshake within this long
    /// (`None`: clear text).
    pub(super) tls_timeout: Option<Duration>,
    /// Clients must present a certificate (mutual TLS).
    pub(super) tls_verify: bool,
}

/// The shortest window `/varz`' `cpu` is measured over: like
/// nats-server's, which samples the process's CPU time once a second.
pub(super) const CPU_WINDOW: Duration = Duration::from_secs(1);

/// `/varz`' `cpu`: the percentage of one CPU the process used over its
/// last window of at least [`CPU_WINDOW`] (so 150 is one and a half CPUs
/// busy). Requests closer together than that get the same figure; the
/// first covers the time since the relay started.
#[derive(Debug, Default)]
pub(super) struct CpuGauge {
    /// The relay's uptime at the start of the current window.
    since: Duration,
    /// The process's CPU time then.
    cpu_then: Duration,
    /// The figure for the last completed window, if there is one.
    percent: Option<f64>,
}

impl CpuGauge {
    /// The figure at `uptime`, when the process has used `cpu_time`.
    pub(super) fn read(&mut self, uptime: Duration, cpu_time: Duration) -> f64 {
        let elapsed = uptime.saturating_sub(self.since);
        match self.percent {
            Some(percent) if elapsed < CPU_WINDOW => percent,
            _ => {
                let used = cpu_time.saturating_sub(self.cpu_then);
                let percent = if elapsed.is_zero() {
                    0.0
                } else {
                    // To a tenth of a percent, as nats-server reports it.
                    (used.as_secs_f64() / elapsed.as_secs_f64() * 1000.0).round() / 10.0
                };
                *self = CpuGauge {
                    since: uptime,
                    cpu_then: cpu_time,
                    percent: Some(percent),
                };
                percent
            }
        }
    }
}

/// Everything one `/varz` page is made of.
#[derive(Debug)]
pub(super) struct VarzPage<'a> {
    pub(super) server: &'a ServerInfo,
    /// The relay's counters, summed over shards.
    pub(super) totals: &'a Totals,
    /// The time of the request (wall clock): `now`.
    pub(super) now: SystemTime,
    /// The relay's uptime (monotonic clock): `uptime`.
    pub(super) uptime: Duration,
    pub(super) mem: Option<u64>,
    /// From [`CpuGauge::read`].
    pub(super) cpu: f64,
    /// This endpoint's address: `http_host`, `http_port`.
    pub(super) http: SocketAddr,
    /// The CPU of each shard (index = shard).
    pub(super) shard_cpus: &'a [usize],
    /// Each leaf link's state: `leafnodes` (those connected) and `leaf`.
    pub(super) leaf: &'a [crate::leaf::RemoteSnapshot],
}

/// `/varz`' JSON, in nats-server's field order (see the module docs).
#[derive(Debug, Serialize)]
struct VarzJson<'a> {
    server_id: &'a str,
    server_name: &'a str,
    version: &'static str,
    proto: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    max_connections: usize,
    max_subscriptions: usize,
    /// Nanoseconds, as Go writes a `time.Duration`.
    ping_interval: u64,
    ping_max: u8,
    http_host: String,
    http_port: u16,
    max_control_line: usize,
    max_payload: usize,
    max_pending: usize,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    auth_required: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tls_required: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tls_verify: bool,
    /// Seconds, as nats-server writes them.
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_timeout: Option<f64>,
    /// Seconds, as nats-server writes them.
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_timeout: Option<f64>,
    start: String,
    now: String,
    uptime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mem: Option<u64>,
    cores: usize,
    cpu: f64,
    connections: u64,
    total_connections: u64,
    in_msgs: u64,
    out_msgs: u64,
    in_bytes: u64,
    out_bytes: u64,
    slow_consumers: u64,
    subscriptions: u64,
    /// Leaf links connected.
    leafnodes: usize,
    /// The leaf remotes, if there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    leaf: Option<LeafJson>,
    tern: TernJson<'a>,
}

/// `/varz`' `leaf`: nats-server lists its remotes there (`remotes`, each
/// with its `url`); tern adds each link's state.
#[derive(Debug, Serialize)]
struct LeafJson {
    remotes: Vec<LeafRemoteJson>,
}

#[derive(Debug, Serialize)]
struct LeafRemoteJson {
    url: String,
    connected: bool,
    connects: u64,
    disconnects: u64,
}

/// tern's own part of `/varz`.
#[derive(Debug, Serialize)]
struct TernJson<'a> {
    /// tern's version (`version` is the NATS protocol level it speaks).
    version: &'static str,
    /// The CPU each shard is pinned to (index = shard).
    shard_cpus: &'a [usize],
}

/// The `/varz` body: indented JSON, as nats-server writes it.
pub(super) fn encode_varz(page: &VarzPage<'_>) -> Vec<u8> {
    let s = page.server;
    let t = page.totals;
    let json = VarzJson {
        server_id: &s.server_id,
        server_name: &s.server_name,
        version: crate::protocol::nats::SERVER_VERSION,
        proto: crate::protocol::nats::PROTO,
        host: s.nats_addr.map(|a| a.ip().to_canonical().to_string()),
        port: s.nats_addr.map(|a| a.port()),
        max_connections: s.max_connections,
        max_subscriptions: s.max_subscriptions,
        ping_interval: u64::try_from(s.ping_interval.as_nanos()).unwrap_or(u64::MAX),
        ping_max: crate::shard::core::MAX_PINGS_OUT,
        http_host: page.http.ip().to_canonical().to_string(),
        http_port: page.http.port(),
        max_control_line: crate::protocol::nats::MAX_CONTROL_LINE,
        max_payload: s.max_payload,
        max_pending: s.max_pending,
        auth_required: s.auth_timeout.is_some(),
        tls_required: s.tls_timeout.is_some(),
        tls_verify: s.tls_verify,
        tls_timeout: s.tls_timeout.map(|t| t.as_secs_f64()),
        auth_timeout: s.auth_timeout.map(|t| t.as_secs_f64()),
        start: rfc3339_nanos(s.start),
        now: rfc3339_nanos(page.now),
        uptime: uptime(page.uptime),
        mem: page.mem,
        cores: page.shard_cpus.len(),
        cpu: page.cpu,
        connections: t.connections_open,
        total_connections: t.connections_accepted,
        in_msgs: t.msgs_in,
        out_msgs: t.msgs_out,
        in_bytes: t.bytes_in,
        out_bytes: t.bytes_out,
        slow_consumers: t.slow_consumers,
        subscriptions: t.subscriptions,
        leafnodes: page.leaf.iter().filter(|r| r.connected).count(),
        leaf: (!page.leaf.is_empty()).then(|| LeafJson {
            remotes: page
                .leaf
                .iter()
                .map(|r| LeafRemoteJson {
                    url: r.url.clone(),
                    connected: r.connected,
                    connects: r.connects,
                    disconnects: r.disconnects,
                })
                .collect(),
        }),
        tern: TernJson {
            version: env!("CARGO_PKG_VERSION"),
            shard_cpus: page.shard_cpus,
        },
    };
    // Plain strings and numbers always serialise (serde_json writes even a
    // non-finite float, as `null`).
    let mut out = serde_json::to_vec_pretty(&json).expect("/varz serialises");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::{fake, fake_server, keys_in_order};
    use std::time::UNIX_EPOCH;

    fn page_text(server: &ServerInfo, totals: &Totals) -> String {
        let page = VarzPage {
            server,
            totals,
            now: server.start + Duration::from_secs(3723),
            uptime: Duration::from_secs(3723),
            mem: Some(50 << 20),
            cpu: 12.5,
            http: "127.0.0.1:8222".parse().unwrap(),
            shard_cpus: &[2, 3],
            leaf: &[],
        };
        String::from_utf8(encode_varz(&page)).unwrap()
    }

    fn page_json(server: &ServerInfo, totals: &Totals) -> serde_json::Value {
        serde_json::from_str(&page_text(server, totals)).unwrap()
    }

    #[test]
    fn varz_has_nats_servers_fields_and_values() {
        let f = fake();
        let mut totals = Totals::default();
        for t in &f.shards {
            totals += *t;
        }
        let text = page_text(&fake_server(), &totals);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            keys_in_order(&text, 1),
            [
                "server_id",
                "server_name",
                "version",
                "proto",
                "host",
                "port",
                "max_connections",
                "max_subscriptions",
                "ping_interval",
                "ping_max",
                "http_host",
                "http_port",
                "max_control_line",
                "max_payload",
                "max_pending",
                "start",
                "now",
                "uptime",
                "mem",
                "cores",
                "cpu",
                "connections",
                "total_connections",
                "in_msgs",
                "out_msgs",
                "in_bytes",
                "out_bytes",
                "slow_consumers",
                "subscriptions",
                "leafnodes",
                "tern",
            ]
        );
        assert_eq!(v["server_id"], "NSERVERIDFORTHETESTS");
        assert_eq!(v["server_name"], "tern");
        assert_eq!(v["version"], crate::protocol::nats::SERVER_VERSION);
        assert_eq!(v["proto"], 1);
        assert_eq!(v["host"], "0.0.0.0");
        assert_eq!(v["port"], 4222);
        assert_eq!(v["max_connections"], 100);
        assert_eq!(v["max_subscriptions"], 10);
        assert_eq!(v["ping_interval"], 120_000_000_000u64);
        assert_eq!(v["ping_max"], 2);
        assert_eq!(v["http_host"], "127.0.0.1");
        assert_eq!(v["http_port"], 8222);
        assert_eq!(v["max_control_line"], 4096);
        assert_eq!(v["max_payload"], 1 << 20);
        assert_eq!(v["max_pending"], 64 << 20);
        assert_eq!(v["start"], "2024-05-01T12:00:03.0004Z");
        assert_eq!(v["now"], "2024-05-01T13:02:06.0004Z");
        assert_eq!(v["uptime"], "1h2m3s");
        assert_eq!(v["mem"], 50 << 20);
        assert_eq!(v["cores"], 2);
        assert_eq!(v["cpu"], 12.5);
        // The fake's counters: msgs_in 5 + 2, nothing else set.
        assert_eq!(v["in_msgs"], 7);
        assert_eq!(v["connections"], 0);
        assert_eq!(v["tern"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["tern"]["shard_cpus"], serde_json::json!([2, 3]));
    }

    #[test]
    fn every_counter_lands_in_its_field() {
        let totals = Totals {
            connections_open: 1,
            connections_accepted: 2,
            subscriptions: 3,
            msgs_in: 4,
            msgs_out: 5,
            bytes_in: 6,
            bytes_out: 7,
            slow_consumers: 8,
            ..Totals::default()
        };
        let v = page_json(&fake_server(), &totals);
        for (field, value) in [
            ("connections", 1),
            ("total_connections", 2),
            ("subscriptions", 3),
            ("in_msgs", 4),
            ("out_msgs", 5),
            ("in_bytes", 6),
            ("out_bytes", 7),
            ("slow_consumers", 8),
        ] {
            assert_eq!(v[field], value, "{field}");
        }
    }

    #[test]
    fn authentication_and_tls_are_described_when_configured() {
        let plain = fake_server();
        let secured = ServerInfo {
            auth_timeout: Some(Duration::from_secs(2)),
            tls_timeout: Some(Duration::from_millis(500)),
            tls_verify: true,
            ..fake_server()
        };
        let render = |server: &ServerInfo| -> serde_json::Value {
            let page = VarzPage {
                server,
                totals: &Totals::default(),
                now: UNIX_EPOCH,
                uptime: Duration::ZERO,
                mem: None,
                cpu: 0.0,
                http: "127.0.0.1:8222".parse().unwrap(),
                shard_cpus: &[0],
                leaf: &[],
            };
            serde_json::from_slice(&encode_varz(&page)).unwrap()
        };
        let v = render(&secured);
        assert_eq!(v["auth_required"], true);
        assert_eq!(v["auth_timeout"], 2.0);
        assert_eq!(v["tls_required"], true);
        assert_eq!(v["tls_verify"], true);
        assert_eq!(v["tls_timeout"], 0.5);
        let v = render(&plain);
        for absent in [
            "auth_required",
            "auth_timeout",
            "tls_required",
            "tls_verify",
            "tls_timeout",
        ] {
            assert!(v.get(absent).is_none(), "{absent}");
        }
    }

    #[test]
    fn without_a_nats_listener_or_memory_figure_those_fields_are_absent() {
        let server = ServerInfo {
            nats_addr: None,
            start: UNIX_EPOCH,
            ..fake_server()
        };
        let page = VarzPage {
            server: &server,
            totals: &Totals::default(),
            now: UNIX_EPOCH,
            uptime: Duration::ZERO,
            mem: None,
            cpu: 0.0,
            http: "[::1]:8222".parse().unwrap(),
            shard_cpus: &[0],
            leaf: &[],
        };
        let text = String::from_utf8(encode_varz(&page)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for absent in ["host", "port", "mem"] {
            assert!(v.get(absent).is_none(), "{absent} in {text}");
        }
        assert_eq!(v["http_host"], "::1");
        assert_eq!(v["uptime"], "0s");
        // Indented, one field a line, like nats-server's.
        assert!(text.starts_with("{\n  \"server_id\": "), "{text}");
        assert!(text.ends_with("}\n"), "{text}");
    }

    #[test]
    fn cpu_is_measured_over_windows_of_a_second_or_more() {
        let ms = Duration::from_millis;
        let mut gauge = CpuGauge::default();
        // The first figure covers the time since start: 0.5 s of CPU in 2 s.
        assert_eq!(gauge.read(ms(2000), ms(500)), 25.0);
        // Within a second of that, the same figure...
        assert_eq!(gauge.read(ms(2500), ms(1500)), 25.0);
        // ...then the last window's: 1.5 s of CPU in 1.5 s, one CPU busy.
        assert_eq!(gauge.read(ms(3500), ms(2000)), 100.0);
        // Two shards busy: above 100, as nats-server reports several cores.
        assert_eq!(gauge.read(ms(4500), ms(4000)), 200.0);
        // A tenth of a percent is the resolution.
        assert_eq!(gauge.read(ms(7500), ms(4001)), 0.0);
        assert_eq!(gauge.read(ms(10_500), ms(4011)), 0.3);
        // A request at the very start divides by nothing.
        assert_eq!(CpuGauge::default().read(Duration::ZERO, ms(10)), 0.0);
    }
}
