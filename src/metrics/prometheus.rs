//! The `/metrics` page: every counter of [`crate::stats`] per shard in the
//! Prometheus text exposition format, version 0.0.4, and the process's
//! own figures.
//!
//! tern's names are prefixed `tern_`, counters suffixed `_total`, every
//! sample carries a `shard` label; `-ERR` replies are one family by reason
//! (`tern_protocol_errors_total{shard="0",reason="unknown_verb"}`: label
//! values are the reply's words joined by `_`, so they need no quoting in
//! a query); `tern_info{version}` and `tern_shard_info{shard,cpu}` (value
//! 1, the CPU a label) describe the relay, and with TLS
//! `tern_tls_certificate_expiry_timestamp_seconds{file}` says when its
//! certificate expires. The process is described by the
//! standard `process_*` series every Prometheus client library exports
//! (resident and virtual memory, CPU seconds, open and maximum
//! descriptors, start time; see [`ProcessUsage`]). `docs/deploy.md` says
//! what each one means.
//!
//! The text is written here rather than with a client library: the
//! counters already live in the shards, so a library's registry of metric
//! objects would only be filled from them on each scrape, and
//! `prometheus-client` writes OpenMetrics rather than format 0.0.4. The
//! format needs a dozen lines of escaping and ordering rules, which the
//! tests check.

use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use super::ProcessUsage;
use crate::stats::Totals;

/// `Content-Type` of `/metrics`: the Prometheus text format, version 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus metric types used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// How one [`Totals`] field is exported.
struct Family {
    /// The [`Totals`] field it is read from (as [`Totals::fields`] names it).
    field: &'static str,
    /// The Prometheus name: `tern_`, and `_total` for counters.
    name: &'static str,
    /// Counter or gauge: what `rate()` may be applied to.
    kind: Kind,
    /// The `# HELP` text, for whoever reads the page or the Grafana tooltip.
    help: &'static str,
}

/// Every [`Totals`] field but the per-reason error counters (exported
/// together, see [`ERRORS_FAMILY`]) and their sum `protocol_errors`, left
/// out because `sum(tern_protocol_errors_total)` gives it and exporting
/// both would count each error twice in that sum.
const FAMILIES: &[Family] = &[
    Family {
        field: "connections_accepted",
        name: "tern_connections_accepted_total",
        kind: Kind::Counter,
        help: "Client connections accepted.",
    },
    Family {
        field: "connections_open",
        name: "tern_connections_open",
        kind: Kind::Gauge,
        help: "Client connections open now.",
    },
    Family {
        field: "connections_closed",
        name: "tern_connections_closed_total",
        kind: Kind::Counter,
        help: "Client connections closed, for any reason.",
    },
    Family {
        field: "connections_rejected",
        name: "tern_connections_rejected_total",
        kind: Kind::Counter,
        help: "Connections refused at accept because --max-connections was reached.",
    },
    Family {
        field: "subscriptions",
        name: "tern_subscriptions",
        kind: Kind::Gauge,
        help: "Subscriptions in force now.",
    },
    Family {
        field: "msgs_in",
        name: "tern_messages_in_total",
        kind: Kind::Counter,
        help: "PUB frames accepted from clients.",
    },
    Family {
        field: "bytes_in",
        name: "tern_bytes_in_total",
        kind: Kind::Counter,
        help: "Payload bytes of the PUB frames accepted.",
    },
    Family {
        field: "msgs_out",
        name: "tern_messages_out_total",
        kind: Kind::Counter,
        help: "MSG frames queued to subscribers (one per receiving connection).",
    },
    Family {
        field: "bytes_out",
        name: "tern_bytes_out_total",
        kind: Kind::Counter,
        help: "Payload bytes of the MSG frames queued to subscribers.",
    },
    Family {
        field: "forwarded",
        name: "tern_messages_forwarded_total",
        kind: Kind::Counter,
        help: "Messages handed to another shard (once per target shard).",
    },
    Family {
        field: "slow_consumers",
        name: "tern_slow_consumers_total",
        kind: Kind::Counter,
        help: "Connections closed because their unsent output passed --max-pending.",
    },
    Family {
        field: "stalls",
        name: "tern_publisher_stalls_total",
        kind: Kind::Counter,
        help: "Times a publisher was paused (up to --max-stall) because a receiver it delivered to had more than half of --max-pending queued.",
    },
    Family {
        field: "frames_too_long",
        name: "tern_frames_too_long_total",
        kind: Kind::Counter,
        help: "Frames refused as longer than --max-frame.",
    },
    Family {
        field: "undeliverable_to_line",
        name: "tern_messages_undeliverable_to_line_total",
        kind: Kind::Counter,
        help: "Messages not delivered to a line-protocol receiver because that protocol cannot frame them (a payload holding the terminator, or a subject outside its rules).",
    },
    Family {
        field: "nats_errors",
        name: "tern_nats_errors_total",
        kind: Kind::Counter,
        help: "NATS protocol errors: answered with -ERR, or closed as nats-server closes them.",
    },
    Family {
        field: "permission_denials",
        name: "tern_permission_denials_total",
        kind: Kind::Counter,
        help: "Publishes and subscriptions refused for the user's permissions, and deliveries held back by a subscription deny list.",
    },
    Family {
        field: "pending_bytes",
        name: "tern_pending_bytes",
        kind: Kind::Gauge,
        help: "Bytes queued for clients and not yet written to their sockets.",
    },
    Family {
        field: "input_bytes",
        name: "tern_input_buffer_bytes",
        kind: Kind::Gauge,
        help: "Bytes of read buffers held for clients' input (counted against --max-memory with the pending bytes).",
    },
    Family {
        field: "memory_refusals",
        name: "tern_memory_refusals_total",
        kind: Kind::Counter,
        help: "Connections closed because the relay was over --max-memory: a frame growing past the read size, or a receiver's queue past 1 MiB.",
    },
];

/// A family of counters by reason: the [`Totals`] fields named
/// `<prefix><reason>`, exported as one name with a `reason` label.
struct ByReason {
    /// Prefix of its [`Totals`] fields.
    prefix: &'static str,
    name: &'static str,
    help: &'static str,
}

/// The families by reason. `-ERR` replies: the reason is the words of the
/// reply joined by `_` (`errors_unknown_verb` → `unknown_verb`, for
/// `-ERR unknown verb`). Authentication failures: the reason is
/// [`crate::auth::Refusal::label`].
const BY_REASON: &[ByReason] = &[
    ByReason {
        prefix: ERRORS_PREFIX,
        name: ERRORS_FAMILY,
        help: "Frames answered with -ERR, by reason (frames too long and slow consumers are counted apart).",
    },
    ByReason {
        prefix: "auth_failures_",
        name: "tern_auth_failures_total",
        help: "Connections refused by authentication or the TLS handshake, by reason.",
    },
];

/// The family of the `errors_<reason>` fields.
const ERRORS_FAMILY: &str = "tern_protocol_errors_total";
/// Prefix of the per-reason error fields of [`Totals`].
const ERRORS_PREFIX: &str = "errors_";
/// The sum of the per-reason fields, not exported (see [`FAMILIES`]).
const ERRORS_SUM: &str = "protocol_errors";

/// The `reason` label of an `errors_<reason>` field.
#[cfg(test)]
fn error_reason(field: &str) -> Option<&str> {
    field.strip_prefix(ERRORS_PREFIX)
}

/// Appends each leaf link's state and counters (nothing without remotes),
/// labelled by the remote's URL.
pub fn encode_leaf_metrics(out: &mut String, remotes: &[crate::leaf::RemoteSnapshot]) {
    if remotes.is_empty() {
        return;
    }
    type Field = fn(&crate::leaf::RemoteSnapshot) -> u64;
    let families: [(&str, Kind, &str, Field); 6] = [
        ("tern_leafnode_connected", Kind::Gauge, "1 while the leaf link to the remote is up, else 0.", |r| u64::from(r.connected)),
        ("tern_leafnode_connects_total", Kind::Counter, "Leaf links established to the remote.", |r| r.connects),
        ("tern_leafnode_disconnects_total", Kind::Counter, "Established leaf links to the remote that ended.", |r| r.disconnects),
        ("tern_leafnode_messages_sent_total", Kind::Counter, "Messages sent to the remote's hub.", |r| r.messages_sent),
        ("tern_leafnode_messages_received_total", Kind::Counter, "Messages received from the remote's hub.", |r| r.messages_received),
        ("tern_leafnode_dropped_bytes_total", Kind::Counter, "Bytes queued for the hub and dropped when its link ended (nothing is kept for the next link).", |r| r.dropped_bytes),
    ];
    for (name, kind, help, field) in families {
        header(out, name, kind, help);
        for r in remotes {
            let _ = write!(out, "{name}{{remote=\"");
            escape_label(out, &r.url);
            let _ = writeln!(out, "\"}} {}", field(r));
        }
    }
}

/// Writes the `/metrics` page: the counters of each shard (index = shard)
/// whose CPUs are `cores`, then the `process`'s figures, in the
/// Prometheus text format 0.0.4.
/// `tls_expires`: the TLS certificate file in force and when it stops being
/// valid, if the relay speaks TLS
/// (`tern_tls_certificate_expiry_timestamp_seconds{file}`).
pub fn encode_metrics(
    shards: &[Totals],
    cores: &[usize],
    process: &ProcessUsage,
    tls_expires: Option<(&str, std::time::SystemTime)>,
) -> String {
    let fields: Vec<Vec<(&'static str, u64)>> = shards.iter().map(Totals::fields).collect();
    let mut out = String::with_capacity(4096 + 1024 * shards.len());

    header(
        &mut out,
        "tern_info",
        Kind::Gauge,
        "Always 1; the version label tells which tern this is.",
    );
    out.push_str("tern_info{version=\"");
    escape_label(&mut out, env!("CARGO_PKG_VERSION"));
    out.push_str("\"} 1\n");

    header(
        &mut out,
        "tern_shard_info",
        Kind::Gauge,
        "Always 1; the cpu label is the CPU the shard is pinned to.",
    );
    for (shard, cpu) in cores.iter().enumerate() {
        let _ = writeln!(out, "tern_shard_info{{shard=\"{shard}\",cpu=\"{cpu}\"}} 1");
    }

    for family in FAMILIES {
        header(&mut out, family.name, family.kind, family.help);
        for (shard, values) in fields.iter().enumerate() {
            let value = values
                .iter()
                .find(|(name, _)| *name == family.field)
                .map_or(0, |&(_, v)| v);
            let _ = writeln!(out, "{}{{shard=\"{shard}\"}} {value}", family.name);
        }
    }

    for family in BY_REASON {
        header(&mut out, family.name, Kind::Counter, family.help);
        for (shard, values) in fields.iter().enumerate() {
            for &(field, value) in values {
                if let Some(reason) = field.strip_prefix(family.prefix) {
                    let _ = write!(out, "{}{{shard=\"{shard}\",reason=\"", family.name);
                    escape_label(&mut out, reason);
                    let _ = writeln!(out, "\"}} {value}");
                }
            }
        }
    }

    if let Some((file, expires)) = tls_expires {
        header(
            &mut out,
            "tern_tls_certificate_expiry_timestamp_seconds",
            Kind::Gauge,
            "When the TLS certificate in force stops being valid, in seconds since the Unix epoch (SIGHUP reloads it).",
        );
        let secs = expires
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        out.push_str("tern_tls_certificate_expiry_timestamp_seconds{file=\"");
        escape_label(&mut out, file);
        let _ = writeln!(out, "\"}} {secs}");
    }

    encode_process(&mut out, process);

    // A counter added to `stats` without a description here is still
    // exported rather than silently dropped (a unit test makes sure every
    // current one has a description).
    let Some(first) = fields.first() else {
        return out;
    };
    for &(field, _) in first {
        if is_described(field) {
            continue;
        }
        let name = format!("tern_{field}");
        let _ = writeln!(out, "# TYPE {name} untyped");
        for (shard, values) in fields.iter().enumerate() {
            let value = values
                .iter()
                .find(|(f, _)| *f == field)
                .map_or(0, |&(_, v)| v);
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {value}");
        }
    }
    out
}

/// The standard `process_*` series, with client_golang's names and help
/// texts; a figure the kernel did not give is left out.
fn encode_process(out: &mut String, p: &ProcessUsage) {
    let mut series = |name: &str, kind: Kind, help: &str, value: Option<f64>| {
        if let Some(value) = value {
            header(out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
    };
    series(
        "process_cpu_seconds_total",
        Kind::Counter,
        "Total user and system CPU time spent in seconds.",
        Some(p.cpu_time.as_secs_f64()),
    );
    series(
        "process_open_fds",
        Kind::Gauge,
        "Number of open file descriptors.",
        p.open_fds.map(|n| n as f64),
    );
    series(
        "process_max_fds",
        Kind::Gauge,
        "Maximum number of open file descriptors.",
        p.max_fds.map(|n| n as f64),
    );
    series(
        "process_virtual_memory_bytes",
        Kind::Gauge,
        "Virtual memory size in bytes.",
        p.virtual_memory.map(|n| n as f64),
    );
    series(
        "process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory size in bytes.",
        p.rss.map(|n| n as f64),
    );
    series(
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of the process since unix epoch in seconds.",
        p.start_time
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64()),
    );
}

/// Whether `field` has a family of its own or is part of the errors one.
fn is_described(field: &str) -> bool {
    field == ERRORS_SUM
        || BY_REASON.iter().any(|f| field.starts_with(f.prefix))
        || FAMILIES.iter().any(|f| f.field == field)
}

fn header(out: &mut String, name: &str, kind: Kind, help: &str) {
    let _ = write!(out, "# HELP {name} ");
    // HELP text escapes backslash and newline (format 0.0.4).
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    let _ = writeln!(out, "\n# TYPE {name} {}", kind.as_str());
}

/// Label values escape backslash, double quote and newline (format 0.0.4).
fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::fake;
    use crate::protocol::ProtoError;
    use crate::stats::ShardStats;

    /// Checks the rules of format 0.0.4 this page relies on: every sample
    /// belongs to the family announced by the `# HELP` and `# TYPE` lines
    /// just before it, families are contiguous and appear once, counters
    /// end in `_total`, every line ends with a newline.
    fn check_exposition(text: &str) -> Vec<(String, String, f64)> {
        assert!(text.ends_with('\n'));
        let mut samples = Vec::new();
        let mut seen = Vec::<String>::new();
        let mut current: Option<(String, String)> = None;
        let mut help_for: Option<String> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(!seen.contains(&name), "family {name} twice");
                help_for = Some(name);
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let name = parts.next().unwrap().to_string();
                let kind = parts.next().unwrap().to_string();
                assert!(["counter", "gauge", "untyped"].contains(&kind.as_str()));
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{name}");
                } else {
                    assert!(!name.ends_with("_total"), "{name}");
                }
                if kind != "untyped" {
                    assert_eq!(help_for.as_deref(), Some(name.as_str()), "HELP before TYPE");
                }
                assert!(
                    name.starts_with("tern_") || name.starts_with("process_"),
                    "{name}"
                );
                seen.push(name.clone());
                current = Some((name, kind));
            } else {
                let (family, _) = current.as_ref().expect("sample before any TYPE");
                let (series, value) = line.rsplit_once(' ').unwrap();
                let name = series.split('{').next().unwrap();
                assert_eq!(name, family, "sample outside its family: {line}");
                if name.starts_with("tern_") {
                    assert!(series.ends_with('}'), "{line}");
                }
                // Label values are single words (see the module docs).
                assert!(!series.contains(' '), "{line}");
                samples.push((
                    name.to_string(),
                    series[name.len()..].to_string(),
                    value.parse().unwrap(),
                ));
            }
        }
        samples
    }

    #[test]
    fn metrics_page_follows_the_text_format() {
        let f = fake();
        let text = encode_metrics(&f.shards, &[3, 5], &f.process, None);
        let samples = check_exposition(&text);
        let find = |name: &str, labels: &str| {
            samples
                .iter()
                .find(|(n, l, _)| n == name && l == labels)
                .map(|s| s.2)
                .unwrap_or_else(|| panic!("{name}{labels} missing:\n{text}"))
        };
        let find = |name: &str, labels: &str| {
            let v = find(name, labels);
            assert_eq!(v.fract(), 0.0, "{name}{labels}: {v}");
            v as u64
        };
        assert_eq!(
            find(
                "tern_info",
                &format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))
            ),
            1
        );
        assert_eq!(find("tern_shard_info", "{shard=\"0\",cpu=\"3\"}"), 1);
        assert_eq!(find("tern_shard_info", "{shard=\"1\",cpu=\"5\"}"), 1);
        assert_eq!(find("tern_messages_in_total", "{shard=\"0\"}"), 5);
        assert_eq!(find("tern_messages_in_total", "{shard=\"1\"}"), 2);
        assert_eq!(find("tern_pending_bytes", "{shard=\"1\"}"), 100);
        assert_eq!(
            find(
                "tern_protocol_errors_total",
                "{shard=\"0\",reason=\"unknown_verb\"}"
            ),
            1
        );
        assert_eq!(
            find(
                "tern_protocol_errors_total",
                "{shard=\"1\",reason=\"unknown_verb\"}"
            ),
            0
        );
        // The sum is not exported next to its parts.
        assert!(!text.contains("tern_protocol_errors{"), "{text}");
        assert!(!text.contains("untyped"), "an undescribed counter:\n{text}");
        // The process, as every client library names it.
        assert_eq!(find("process_resident_memory_bytes", ""), 30 << 20);
        assert_eq!(find("process_virtual_memory_bytes", ""), 200 << 20);
        assert_eq!(find("process_open_fds", ""), 12);
        assert_eq!(find("process_max_fds", ""), 1024);
        assert_eq!(find("process_start_time_seconds", ""), 1_714_564_803);
        assert!(text.contains("\nprocess_cpu_seconds_total 0.5\n"), "{text}");
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{text}"
        );
    }

    #[test]
    fn process_figures_the_kernel_did_not_give_are_left_out() {
        let p = ProcessUsage {
            rss: None,
            virtual_memory: None,
            cpu_time: std::time::Duration::from_millis(1250),
            open_fds: None,
            max_fds: None,
            start_time: None,
        };
        let text = encode_metrics(&[], &[], &p, None);
        check_exposition(&text);
        let process: Vec<&str> = text.lines().filter(|l| l.starts_with("process_")).collect();
        assert_eq!(process, ["process_cpu_seconds_total 1.25"]);
    }

    #[test]
    fn every_counter_is_described() {
        for (field, _) in Totals::default().fields() {
            assert!(is_described(field), "stats field {field} has no family");
        }
        for f in FAMILIES {
            assert!(
                Totals::default()
                    .fields()
                    .iter()
                    .any(|(n, _)| *n == f.field),
                "family {} names no stats field",
                f.name
            );
        }
    }

    #[test]
    fn error_reasons_are_the_err_texts_in_one_word() {
        use ProtoError::*;
        for e in [
            UnknownVerb,
            MissingSubject,
            InvalidSubject,
            InvalidGroup,
            InvalidArguments,
            TooManySubscriptions,
            PermissionDenied,
        ] {
            let s = ShardStats::default();
            s.count_error(e);
            let (field, _) = s
                .snapshot()
                .fields()
                .into_iter()
                .find(|&(f, v)| v == 1 && f.starts_with(ERRORS_PREFIX))
                .unwrap_or_else(|| panic!("no errors_ counter for {e}"));
            let reason = error_reason(field).unwrap();
            assert_eq!(reason.replace('_', " "), e.to_string());
            assert!(!reason.contains(' '), "{reason}");
        }
    }

    #[test]
    fn no_shards_still_gives_a_valid_page() {
        check_exposition(&encode_metrics(&[], &[], &fake().process, None));
        let expires = UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let text = encode_metrics(&[], &[], &fake().process, Some(("/c.pem", expires)));
        check_exposition(&text);
        assert!(text.contains(
            "\ntern_tls_certificate_expiry_timestamp_seconds{file=\"/c.pem\"} 1800000000\n"
        ));
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut s = String::new();
        escape_label(&mut s, "a\\b\"c\nd");
        assert_eq!(s, r#"a\\b\"c\nd"#);
        let mut h = String::new();
        header(&mut h, "tern_x", Kind::Gauge, "one\\two\nthree \"q\"");
        assert_eq!(
            h,
            "# HELP tern_x one\\\\two\\nthree \"q\"\n# TYPE tern_x gauge\n"
        );
    }
}
