//! The `/connz` page: the open connections as nats-server 2.10 lists them,
//! with its field names, query parameters, defaults and sort orders, so
//! that NATS tooling that reads `/connz` works against tern. Line-protocol
//! connections are listed too, with `lang` `tern-line`.
//!
//! The page: `server_id`, `now`, `num_connections` (listed), `total`
//! (open), `offset`, `limit`, `connections`. Each connection: `cid`,
//! `kind` (`Client`), `type` (`nats` or `line`), `ip`, `port`, `start`,
//! `uptime`, `pending_bytes`, `in_msgs`, `out_msgs`, `subscriptions`, and
//! the `name`, `lang` and `version` of a NATS client's `CONNECT` (absent
//! while empty, as in nats-server); tern adds `shard`. Left out, because
//! the shards do not keep them per connection: `in_bytes`, `out_bytes`,
//! `last_activity`, `idle` and `rtt`; and the TLS, user and account
//! fields other than `authorized_user`, which tern has no use for.
//!
//! The query, as nats-server reads it (the first value of a parameter
//! counts, an empty one is absent, parameters it does not know are
//! ignored):
//!
//! * `sort`: `cid` (the default) and `start` ascending; `subs`, `pending`,
//!   `msgs_to`, `msgs_from` largest first; `uptime` shortest first (sic,
//!   nats-server's order); ties by `cid`. nats-server's sorts on what tern
//!   does not keep are refused with `400` and the reason, and so is any
//!   other key (with nats-server's `invalid sorting option`);
//! * `offset` (default 0) and `limit` (default 1024; zero or negative is
//!   the default): the window of the sorted list that is listed;
//! * `cid`: only that connection (and `limit` 1);
//! * `state`: `open` only (tern keeps no closed connections: `closed` and
//!   `all` are refused);
//! * `auth`: with a true value, each connection's `authorized_user` (the
//!   user it logged in as, if the relay has users; never a password or
//!   token);
//! * `subs` is checked and adds nothing: tern does not list
//!   subscriptions per connection;
//! * `user`, `acc`, `mqtt_client` and `filter_subject` (other than `>`)
//!   filter by things tern does not have: refused.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::clock::{rfc3339_nanos, uptime};
use crate::mesh::ShardId;
use crate::shard::{ClientInfo, ConnectionInfo};

/// nats-server's default `limit`.
pub(super) const DEFAULT_LIMIT: usize = 1024;

/// The order of `/connz`' list (nats-server's `SortOpt`s that tern can
/// honour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnzSort {
    /// By connection id, ascending: the default.
    Cid,
    /// By start, ascending: the same order as [`ConnzSort::Cid`], since
    /// ids are handed out in accept order.
    Start,
    /// Most subscriptions first.
    Subs,
    /// Most bytes queued and unwritten first: the slow consumer on top.
    Pending,
    /// Most messages delivered to it first (nats-server's `out_msgs`).
    MsgsTo,
    /// Most messages published by it first (`in_msgs`).
    MsgsFrom,
    /// Shortest uptime first, as nats-server sorts it.
    Uptime,
}

impl ConnzSort {
    /// The sort for `key`, or why it cannot be served.
    fn parse(key: &str) -> Result<ConnzSort, ConnzError> {
        Ok(match key {
            "cid" => ConnzSort::Cid,
            "start" => ConnzSort::Start,
            "subs" => ConnzSort::Subs,
            "pending" => ConnzSort::Pending,
            "msgs_to" => ConnzSort::MsgsTo,
            "msgs_from" => ConnzSort::MsgsFrom,
            "uptime" => ConnzSort::Uptime,
            "bytes_to" | "bytes_from" => {
                return Err(ConnzError::UntrackedSort(
                    key.into(),
                    "bytes per connection",
                ))
            }
            "last" | "idle" => {
                return Err(ConnzError::UntrackedSort(
                    key.into(),
                    "each connection's last activity",
                ))
            }
            "rtt" => return Err(ConnzError::UntrackedSort(key.into(), "round-trip times")),
            "stop" | "reason" => return Err(ConnzError::ClosedOnlySort(key.into())),
            _ => return Err(ConnzError::InvalidSort(key.into())),
        })
    }
}

/// A `/connz` query that cannot be served (answered `400`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ConnzError {
    /// Not one of nats-server's sort keys (its own words).
    #[error("invalid sorting option: {0}")]
    InvalidSort(String),
    /// One of nats-server's sorts, on a figure tern does not keep.
    #[error("sort by {0} is not served: tern does not keep {1}")]
    UntrackedSort(String, &'static str),
    /// `stop` or `reason`, which only apply to closed connections.
    #[error("sort by {0} only valid on closed connections, which tern does not keep")]
    ClosedOnlySort(String),
    /// A parameter that must be a whole number.
    #[error("invalid {param} `{value}`: give a whole number")]
    InvalidNumber { param: &'static str, value: String },
    /// A parameter that must be a boolean (Go's spellings).
    #[error("invalid {param} `{value}`: give true or false")]
    InvalidBool { param: &'static str, value: String },
    /// `state=closed` or `state=all`.
    #[error("state `{0}` is not served: tern does not keep closed connections (use state=open)")]
    ClosedState(String),
    /// Any other state.
    #[error("invalid state `{0}`: use open")]
    InvalidState(String),
    /// A filter by user, account, MQTT client or subject.
    #[error("{0} is not served: tern has no users, accounts or MQTT clients to filter by")]
    UnsupportedFilter(&'static str),
}

/// `/connz`' query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConnzQuery {
    sort: ConnzSort,
    /// How many of the sorted connections to skip.
    offset: usize,
    /// How many to list after those.
    limit: usize,
    /// Only this connection.
    cid: Option<u64>,
    /// List each connection's `authorized_user`.
    auth: bool,
}

impl ConnzQuery {
    /// Parses a query string the way nats-server does (see the module
    /// docs).
    pub(super) fn parse(query: &str) -> Result<ConnzQuery, ConnzError> {
        let get = |name: &str| param(query, name);
        let whole = |param: &'static str| -> Result<i64, ConnzError> {
            get(param).map_or(Ok(0), |value| {
                value
                    .parse()
                    .map_err(|_| ConnzError::InvalidNumber { param, value })
            })
        };
        let boolean = |param: &'static str| -> Result<bool, ConnzError> {
            match get(param) {
                None => Ok(false),
                Some(value) => match go_bool(&value) {
                    Some(b) => Ok(b),
                    None => Err(ConnzError::InvalidBool { param, value }),
                },
            }
        };

        let auth = boolean("auth")?;
        if !get("subs").is_some_and(|v| v.eq_ignore_ascii_case("detail")) {
            boolean("subs")?;
        }
        let offset = whole("offset")?;
        let limit = whole("limit")?;
        let cid = match get("cid") {
            None => None,
            Some(value) => Some(
                value
                    .parse::<u64>()
                    .map_err(|_| ConnzError::InvalidNumber {
                        param: "cid",
                        value,
                    })?,
            ),
        };
        if let Some(state) = get("state") {
            match state.to_ascii_lowercase().as_str() {
                "open" => {}
                "closed" | "any" | "all" => return Err(ConnzError::ClosedState(state)),
                _ => return Err(ConnzError::InvalidState(state)),
            }
        }
        for filter in ["user", "acc", "mqtt_client"] {
            if get(filter).is_some() {
                return Err(ConnzError::UnsupportedFilter(filter));
            }
        }
        if get("filter_subject").is_some_and(|s| s != ">") {
            return Err(ConnzError::UnsupportedFilter("filter_subject"));
        }
        let sort = get("sort").map_or(Ok(ConnzSort::Cid), |key| ConnzSort::parse(&key))?;

        let limit = match cid {
            // 0 is nats-server's "no cid", not a connection.
            Some(cid) if cid > 0 => 1,
            _ if limit <= 0 => DEFAULT_LIMIT,
            _ => usize::try_from(limit).unwrap_or(usize::MAX),
        };
        Ok(ConnzQuery {
            sort,
            offset: usize::try_from(offset).unwrap_or(0),
            limit,
            cid: cid.filter(|&c| c > 0),
            auth,
        })
    }
}

/// The first value of `name` in a query string, percent-decoded, `None`
/// when it is absent or empty (what Go's `URL.Query().Get` returns).
fn param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| unescape(value))
        .filter(|value| !value.is_empty())
}

/// A query value with `+` as a space and `%XX` as the byte XX, as a form
/// encodes it (`filter_subject=%3E`); a `%` not followed by two hex digits
/// is kept as it is.
fn unescape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|&b| (b as char).to_digit(16));
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                if let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) {
                    // Two hex digits make one byte.
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A boolean as Go's `strconv.ParseBool` spells it.
fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Sorts `list` by `by` (see [`ConnzSort`]); ties by `cid`, so that the
/// order is stable.
fn sort_connz(list: &mut [ConnectionInfo], by: ConnzSort) {
    list.sort_by(|a, b| {
        let by_key = match by {
            ConnzSort::Cid | ConnzSort::Start => std::cmp::Ordering::Equal,
            ConnzSort::Subs => b.subscriptions.cmp(&a.subscriptions),
            ConnzSort::Pending => b.pending_bytes.cmp(&a.pending_bytes),
            ConnzSort::MsgsTo => b.msgs_out.cmp(&a.msgs_out),
            ConnzSort::MsgsFrom => b.msgs_in.cmp(&a.msgs_in),
            ConnzSort::Uptime => a.age.cmp(&b.age),
        };
        by_key.then(a.cid.cmp(&b.cid))
    });
}

/// `/connz`' JSON, in nats-server's field order.
#[derive(Debug, Serialize)]
struct ConnzJson<'a> {
    server_id: &'a str,
    now: String,
    /// Connections listed on this page.
    num_connections: usize,
    /// Connections open.
    total: usize,
    offset: usize,
    limit: usize,
    connections: Vec<ConnInfoJson<'a>>,
}

/// One connection of `/connz` (see the module docs for what is left out).
#[derive(Debug, Serialize)]
struct ConnInfoJson<'a> {
    cid: u64,
    kind: &'static str,
    #[serde(rename = "type")]
    protocol: &'static str,
    ip: String,
    port: u16,
    start: String,
    uptime: String,
    pending_bytes: usize,
    in_msgs: u64,
    out_msgs: u64,
    subscriptions: usize,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    lang: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    version: &'a str,
    /// With `auth=true`: the user it logged in as.
    #[serde(skip_serializing_if = "Option::is_none")]
    authorized_user: Option<&'a str>,
    /// tern's: the shard that serves it.
    shard: ShardId,
}

impl<'a> ConnInfoJson<'a> {
    /// `c` as listed at `now` (with its user if `auth`).
    fn new(c: &'a ConnectionInfo, now: SystemTime, auth: bool) -> ConnInfoJson<'a> {
        let (protocol, name, lang, version) = match &c.client {
            ClientInfo::Line => ("line", "", "tern-line", ""),
            ClientInfo::Nats {
                name,
                lang,
                version,
            } => ("nats", name.as_str(), lang.as_str(), version.as_str()),
            ClientInfo::Leaf { remote } => ("leaf", remote.as_str(), "", ""),
        };
        ConnInfoJson {
            cid: c.cid,
            kind: if matches!(c.client, ClientInfo::Leaf { .. }) {
                "Leafnode"
            } else {
                "Client"
            },
            protocol,
            ip: ip_of(c.peer),
            port: c.peer.port(),
            // The shard measured the age when it answered, a moment ago.
            start: rfc3339_nanos(now.checked_sub(c.age).unwrap_or(UNIX_EPOCH)),
            uptime: uptime(c.age),
            pending_bytes: c.pending_bytes,
            in_msgs: c.msgs_in,
            out_msgs: c.msgs_out,
            subscriptions: c.subscriptions,
            name,
            lang,
            version,
            authorized_user: c.user.as_deref().filter(|_| auth),
            shard: c.shard,
        }
    }
}

/// The address as nats-server writes a client's `ip`: an IPv4 client of
/// an IPv6 listener as plain IPv4.
fn ip_of(peer: SocketAddr) -> String {
    peer.ip().to_canonical().to_string()
}

/// The `/connz` body for the open connections `list` of the server
/// `server_id`, asked for at `now`: indented JSON, as nats-server writes
/// it.
pub(super) fn encode_connz(
    server_id: &str,
    mut list: Vec<ConnectionInfo>,
    query: &ConnzQuery,
    now: SystemTime,
) -> Vec<u8> {
    let total = list.len();
    if let Some(cid) = query.cid {
        list.retain(|c| c.cid == cid);
    }
    sort_connz(&mut list, query.sort);
    let from = query.offset.min(list.len());
    let to = query.offset.saturating_add(query.limit).min(list.len());
    let connections: Vec<ConnInfoJson<'_>> = list[from..to]
        .iter()
        .map(|c| ConnInfoJson::new(c, now, query.auth))
        .collect();
    let json = ConnzJson {
        server_id,
        now: rfc3339_nanos(now),
        num_connections: connections.len(),
        total,
        offset: query.offset,
        limit: query.limit,
        connections,
    };
    // Plain strings and numbers always serialise.
    let mut out = serde_json::to_vec_pretty(&json).expect("/connz serialises");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::{fake, keys_in_order};
    use std::time::Duration;

    fn q(s: &str) -> Result<ConnzQuery, ConnzError> {
        ConnzQuery::parse(s)
    }

    fn refusal(s: &str) -> String {
        q(s).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_nats_servers() {
        let default = ConnzQuery {
            sort: ConnzSort::Cid,
            offset: 0,
            limit: DEFAULT_LIMIT,
            cid: None,
            auth: false,
        };
        assert_eq!(q(""), Ok(default));
        // Empty values are absent; zero or negative limits are the default;
        // a negative offset is 0; the first value of a parameter counts;
        // unknown parameters are ignored.
        assert_eq!(q("sort=&limit=&offset="), Ok(default));
        assert_eq!(q("limit=0"), Ok(default));
        assert_eq!(q("limit=-5&offset=-2"), Ok(default));
        assert_eq!(q("limit=3&limit=5").unwrap().limit, 3);
        assert_eq!(q("callback=x&nosuch&typ=1"), Ok(default));
        assert_eq!(
            q("sort=pending&offset=2&limit=%2B7"),
            Ok(ConnzQuery {
                sort: ConnzSort::Pending,
                offset: 2,
                limit: 7,
                cid: None,
                auth: false,
            })
        );
        // A cid asks for one connection; cid=0 is "any".
        assert_eq!(q("cid=9&limit=50").unwrap().limit, 1);
        assert_eq!(q("cid=9").unwrap().cid, Some(9));
        assert_eq!(q("cid=0"), Ok(default));
        // Options that add what tern does not have are checked, then add
        // nothing.
        for ok in [
            "subs=1",
            "subs=detail",
            "subs=DETAIL",
            "subs=false",
            "auth=F",
            "state=open",
            "state=OPEN",
            "filter_subject=>",
            "filter_subject=%3E",
        ] {
            assert_eq!(q(ok), Ok(default), "{ok}");
        }
        assert!(q("auth=true").unwrap().auth);
        assert!(q("auth=1").unwrap().auth);
        // Values are percent-decoded, as a form or a browser sends them.
        assert_eq!(q("sort=msgs%5fto").unwrap().sort, ConnzSort::MsgsTo);
        assert_eq!(refusal("sort=a+b%2"), "invalid sorting option: a b%2");
    }

    #[test]
    fn every_sort_key_of_nats_server_is_served_or_refused_with_a_reason() {
        for (key, sort) in [
            ("cid", ConnzSort::Cid),
            ("start", ConnzSort::Start),
            ("subs", ConnzSort::Subs),
            ("pending", ConnzSort::Pending),
            ("msgs_to", ConnzSort::MsgsTo),
            ("msgs_from", ConnzSort::MsgsFrom),
            ("uptime", ConnzSort::Uptime),
        ] {
            assert_eq!(q(&format!("sort={key}")).unwrap().sort, sort, "{key}");
        }
        for (key, reason) in [
            ("bytes_to", "bytes per connection"),
            ("bytes_from", "bytes per connection"),
            ("last", "last activity"),
            ("idle", "last activity"),
            ("rtt", "round-trip"),
            ("stop", "closed connections"),
            ("reason", "closed connections"),
        ] {
            let why = refusal(&format!("sort={key}"));
            assert!(why.contains(key) && why.contains(reason), "{why}");
        }
        assert_eq!(refusal("sort=fastest"), "invalid sorting option: fastest");
        assert_eq!(refusal("sort=CID"), "invalid sorting option: CID");
    }

    #[test]
    fn bad_values_are_refused_with_the_parameter_named() {
        assert_eq!(
            refusal("limit=lots"),
            "invalid limit `lots`: give a whole number"
        );
        assert!(refusal("offset=1.5").contains("offset"));
        assert!(refusal("limit=99999999999999999999").contains("limit"));
        assert!(refusal("cid=-1").contains("cid"));
        assert!(refusal("subs=yes").contains("subs"));
        assert!(refusal("auth=2").contains("auth"));
        assert!(refusal("state=closed").contains("does not keep closed"));
        assert!(refusal("state=all").contains("does not keep closed"));
        assert_eq!(refusal("state=ajar"), "invalid state `ajar`: use open");
        for filter in ["user=bob", "acc=A", "mqtt_client=m", "filter_subject=a.b"] {
            let why = refusal(filter);
            assert!(why.starts_with(filter.split('=').next().unwrap()), "{why}");
        }
    }

    /// The page for the fixed connections of [`fake`], at a fixed time.
    fn page_text(query: &str) -> String {
        let now = UNIX_EPOCH + Duration::from_secs(1_714_564_803);
        let body = encode_connz("NID", fake().conns, &q(query).unwrap(), now);
        String::from_utf8(body).unwrap()
    }

    fn page(query: &str) -> serde_json::Value {
        serde_json::from_str(&page_text(query)).unwrap()
    }

    /// The `cid`s listed, in order.
    fn cids(page: &serde_json::Value) -> Vec<u64> {
        page["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["cid"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn connections_are_sorted_like_nats_server() {
        // The fake's connections (cid, pending, in_msgs, age ms, subs):
        // (1000, 10, 3, 1500, 1), (1001, 999, 0, 20, 2), (1002, 0, 9, 9000, 0).
        assert_eq!(cids(&page("")), [1000, 1001, 1002]);
        assert_eq!(cids(&page("sort=start")), [1000, 1001, 1002]);
        assert_eq!(cids(&page("sort=pending")), [1001, 1000, 1002]);
        assert_eq!(cids(&page("sort=msgs_from")), [1002, 1000, 1001]);
        assert_eq!(cids(&page("sort=subs")), [1001, 1000, 1002]);
        assert_eq!(cids(&page("sort=uptime")), [1001, 1000, 1002]);
        // Every connection has 7 messages out: ties go by cid.
        assert_eq!(cids(&page("sort=msgs_to")), [1000, 1001, 1002]);
    }

    #[test]
    fn offset_and_limit_cut_the_sorted_list() {
        let p = page("sort=pending&offset=1&limit=1");
        assert_eq!(cids(&p), [1000]);
        assert_eq!(
            (
                &p["num_connections"],
                &p["total"],
                &p["offset"],
                &p["limit"]
            ),
            (&1.into(), &3.into(), &1.into(), &1.into())
        );
        assert_eq!(cids(&page("offset=2")), [1002]);
        let past = page("offset=7");
        assert_eq!(cids(&past), Vec::<u64>::new());
        assert_eq!(
            (&past["num_connections"], &past["total"]),
            (&0.into(), &3.into())
        );
        assert_eq!(page("")["limit"], 1024);
        // One connection by cid; the total is still every open one.
        let one = page("cid=1001");
        assert_eq!(cids(&one), [1001]);
        assert_eq!((&one["total"], &one["limit"]), (&3.into(), &1.into()));
        assert_eq!(cids(&page("cid=5")), Vec::<u64>::new());
    }

    #[test]
    fn the_page_and_each_connection_have_nats_servers_fields() {
        let p = page("sort=cid");
        assert_eq!(
            keys_in_order(&page_text("limit=1"), 1),
            [
                "server_id",
                "now",
                "num_connections",
                "total",
                "offset",
                "limit",
                "connections"
            ]
        );
        assert_eq!(p["server_id"], "NID");
        assert_eq!(p["now"], "2024-05-01T12:00:03Z");

        let line = &p["connections"][0];
        // Each connection is an object at depth 3 (in the array).
        assert_eq!(
            keys_in_order(&page_text("limit=1"), 3),
            [
                "cid",
                "kind",
                "type",
                "ip",
                "port",
                "start",
                "uptime",
                "pending_bytes",
                "in_msgs",
                "out_msgs",
                "subscriptions",
                "lang",
                "shard"
            ]
        );
        assert_eq!(line["cid"], 1000);
        assert_eq!(line["kind"], "Client");
        assert_eq!(line["type"], "line");
        assert_eq!(line["lang"], "tern-line");
        assert_eq!(line["ip"], "127.0.0.1");
        assert_eq!(line["port"], 1000);
        // 1.5 s before `now`.
        assert_eq!(line["start"], "2024-05-01T12:00:01.5Z");
        assert_eq!(line["uptime"], "1s");
        assert_eq!(line["pending_bytes"], 10);
        assert_eq!(line["in_msgs"], 3);
        assert_eq!(line["out_msgs"], 7);
        assert_eq!(line["subscriptions"], 1);
        assert_eq!(line["shard"], 0);

        // The fake's third connection is a NATS client.
        let nats = &p["connections"][2];
        assert_eq!(nats["type"], "nats");
        assert_eq!(
            (&nats["name"], &nats["lang"], &nats["version"]),
            (&"x".into(), &"raw".into(), &"1".into())
        );
        assert_eq!(nats["uptime"], "9s");
    }

    #[test]
    fn the_authorized_user_is_listed_only_when_asked() {
        let c = ConnectionInfo {
            shard: 0,
            cid: 1,
            peer: "127.0.0.1:5000".parse().unwrap(),
            client: ClientInfo::Line,
            age: Duration::ZERO,
            subscriptions: 0,
            msgs_in: 0,
            msgs_out: 0,
            pending_bytes: 0,
            user: Some("alice".into()),
        };
        let page = |query: &str| -> serde_json::Value {
            let body = encode_connz("NID", vec![c.clone()], &q(query).unwrap(), UNIX_EPOCH);
            serde_json::from_slice(&body).unwrap()
        };
        assert_eq!(
            page("auth=true")["connections"][0]["authorized_user"],
            "alice"
        );
        assert!(page("")["connections"][0].get("authorized_user").is_none());
    }

    #[test]
    fn a_nats_client_before_connect_and_ipv6_peers() {
        let c = ConnectionInfo {
            shard: 1,
            cid: 4,
            peer: "[::ffff:10.0.0.7]:5000".parse().unwrap(),
            client: ClientInfo::Nats {
                name: String::new(),
                lang: String::new(),
                version: String::new(),
            },
            age: Duration::from_millis(125_000),
            subscriptions: 0,
            msgs_in: 0,
            msgs_out: 0,
            pending_bytes: 0,
            user: None,
        };
        let v6 = ConnectionInfo {
            cid: 5,
            peer: "[2001:db8::1]:6000".parse().unwrap(),
            ..c.clone()
        };
        let body = encode_connz("NID", vec![v6, c], &q("").unwrap(), UNIX_EPOCH);
        let p: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let first = &p["connections"][0];
        assert_eq!(
            (&first["ip"], &first["port"]),
            (&"10.0.0.7".into(), &5000.into())
        );
        // Nothing said yet: name, lang and version are absent.
        for absent in ["name", "lang", "version"] {
            assert!(first.get(absent).is_none(), "{absent}: {first}");
        }
        assert_eq!(first["uptime"], "2m5s");
        // An age past the wall clock's epoch is written as the epoch.
        assert_eq!(first["start"], "1970-01-01T00:00:00Z");
        assert_eq!(p["connections"][1]["ip"], "2001:db8::1");
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with("{\n  \"server_id\": \"NID\","), "{text}");
    }
}
