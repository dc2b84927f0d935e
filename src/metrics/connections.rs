//! The `/connections` page: every open connection as JSON, one object a
//! line, sorted by what the query string asks
//! (`?sort=pending|msgs_in|msgs_out|age|subscriptions`, largest or oldest
//! first, default `pending`) and cut at `&limit=N`. It is how an operator
//! finds the slow consumer or the busiest publisher; `docs/deploy.md`
//! describes each field.

use serde::Serialize;

use crate::mesh::ShardId;
use crate::shard::ConnectionInfo;

/// What `/connections` sorts by, always largest (or oldest) first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Bytes queued to the connection and not yet written: the slow
    /// consumer is first.
    Pending,
    /// `PUB`s it sent.
    MsgsIn,
    /// `MSG`s queued to it.
    MsgsOut,
    /// Time since it was accepted.
    Age,
    /// Subscriptions it holds.
    Subscriptions,
}

impl SortKey {
    fn parse(s: &str) -> Option<SortKey> {
        Some(match s {
            "pending" => SortKey::Pending,
            "msgs_in" => SortKey::MsgsIn,
            "msgs_out" => SortKey::MsgsOut,
            "age" => SortKey::Age,
            "subscriptions" => SortKey::Subscriptions,
            _ => return None,
        })
    }
}

/// `/connections`' query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConnectionsQuery {
    /// The order of the list.
    sort: SortKey,
    /// How many connections to list at most (`None`: all); the top few of
    /// a busy relay's thousands are what a person reads.
    limit: Option<usize>,
}

/// A query string `/connections` does not understand (answered `400`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum QueryError {
    #[error("unknown sort `{0}`: use pending, msgs_in, msgs_out, age or subscriptions")]
    UnknownSort(String),
    #[error("invalid limit `{0}`: give a whole number")]
    InvalidLimit(String),
    #[error("unknown parameter `{0}`: use sort and limit")]
    UnknownParameter(String),
}

impl ConnectionsQuery {
    /// Parses `sort=KEY&limit=N` (both optional, in any order).
    pub(super) fn parse(query: &str) -> Result<ConnectionsQuery, QueryError> {
        let mut q = ConnectionsQuery {
            sort: SortKey::Pending,
            limit: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sort" => {
                    q.sort = SortKey::parse(value)
                        .ok_or_else(|| QueryError::UnknownSort(value.to_string()))?
                }
                "limit" => {
                    q.limit = Some(
                        value
                            .parse()
                            .map_err(|_| QueryError::InvalidLimit(value.to_string()))?,
                    )
                }
                _ => return Err(QueryError::UnknownParameter(key.to_string())),
            }
        }
        Ok(q)
    }
}

/// One connection in `/connections`' JSON (the fields of
/// [`ConnectionInfo`], which `docs/deploy.md` describes).
#[derive(Debug, Serialize)]
struct ConnectionJson {
    shard: ShardId,
    /// The client's address, as the relay sees it.
    peer: String,
    /// Seconds since it was accepted, to the millisecond.
    age_seconds: f64,
    subscriptions: usize,
    msgs_in: u64,
    msgs_out: u64,
    pending_bytes: usize,
}

/// Sorts `list` by `key`, largest first; ties in shard and peer order, so
/// that the output is stable.
pub fn sort_connections(list: &mut [ConnectionInfo], key: SortKey) {
    list.sort_by(|a, b| {
        let by_key = match key {
            SortKey::Pending => b.pending_bytes.cmp(&a.pending_bytes),
            SortKey::MsgsIn => b.msgs_in.cmp(&a.msgs_in),
            SortKey::MsgsOut => b.msgs_out.cmp(&a.msgs_out),
            SortKey::Age => b.age.cmp(&a.age),
            SortKey::Subscriptions => b.subscriptions.cmp(&a.subscriptions),
        };
        by_key.then(a.shard.cmp(&b.shard)).then(a.peer.cmp(&b.peer))
    });
}

/// The `/connections` body: a JSON array, one object a line.
pub(super) fn encode_connections(
    mut list: Vec<ConnectionInfo>,
    query: ConnectionsQuery,
) -> Vec<u8> {
    sort_connections(&mut list, query.sort);
    if let Some(limit) = query.limit {
        list.truncate(limit);
    }
    let mut out = Vec::with_capacity(64 + 160 * list.len());
    out.push(b'[');
    for (i, c) in list.into_iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
        let row = ConnectionJson {
            shard: c.shard,
            peer: c.peer.to_string(),
            age_seconds: c.age.as_millis() as f64 / 1000.0,
            subscriptions: c.subscriptions,
            msgs_in: c.msgs_in,
            msgs_out: c.msgs_out,
            pending_bytes: c.pending_bytes,
        };
        // Writing plain numbers and strings into a Vec cannot fail.
        serde_json::to_writer(&mut out, &row).expect("a connection serialises");
    }
    out.extend_from_slice(b"\n]\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::fake;
    use std::net::SocketAddr;

    #[test]
    fn connections_query_strings() {
        let q = |s: &str| ConnectionsQuery::parse(s);
        let refusal = |s: &str| q(s).unwrap_err().to_string();
        assert_eq!(
            q(""),
            Ok(ConnectionsQuery {
                sort: SortKey::Pending,
                limit: None
            })
        );
        assert_eq!(
            q("sort=age&limit=3"),
            Ok(ConnectionsQuery {
                sort: SortKey::Age,
                limit: Some(3)
            })
        );
        assert_eq!(q("limit=0").unwrap().limit, Some(0));
        assert!(refusal("sort=pendng").contains("pendng"));
        assert!(refusal("limit=-1").contains("limit"));
        assert!(q("limit=").is_err());
        assert!(refusal("sotr=pending").contains("sotr"));
    }

    /// The page for the fixed connections of [`fake`] and `query`.
    fn page(query: &str) -> Vec<u8> {
        encode_connections(fake().conns, ConnectionsQuery::parse(query).unwrap())
    }

    /// (peer port, pending bytes) of each object of a page, in order.
    fn peers(page: &[u8]) -> Vec<(u16, usize)> {
        let v: serde_json::Value = serde_json::from_slice(page).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let peer: SocketAddr = o["peer"].as_str().unwrap().parse().unwrap();
                (peer.port(), o["pending_bytes"].as_u64().unwrap() as usize)
            })
            .collect()
    }

    #[test]
    fn connections_are_sorted_and_limited() {
        assert_eq!(peers(&page("")), vec![(1001, 999), (1000, 10), (1002, 0)]);
        assert_eq!(peers(&page("sort=pending&limit=1")), vec![(1001, 999)]);
        assert_eq!(peers(&page("sort=msgs_in"))[0].0, 1002);
        assert_eq!(peers(&page("sort=age"))[0].0, 1002);
        assert_eq!(page("limit=0"), b"[\n]\n");
    }

    #[test]
    fn connection_objects_carry_every_field() {
        let page = page("limit=1");
        let v: serde_json::Value = serde_json::from_slice(&page).unwrap();
        let o = &v[0];
        assert_eq!(o["shard"], 1);
        assert_eq!(o["peer"], "127.0.0.1:1001");
        assert_eq!(o["age_seconds"], 0.02);
        assert_eq!(o["subscriptions"], 2);
        assert_eq!(o["msgs_in"], 0);
        assert_eq!(o["msgs_out"], 7);
        assert_eq!(o["pending_bytes"], 999);
        // One object a line, for grep.
        assert_eq!(String::from_utf8(page).unwrap().lines().count(), 3);
    }
}
