//! Reading counters from tern's Prometheus endpoint (`--metrics ADDR`),
//! when the soak is given its address: slow consumers closed and frames
//! too long, as the relay itself counted them, and the gauges that show a
//! leak (connections, subscriptions, unsent bytes), summed over shards.
//!
//! One `GET /metrics` per scrape over a fresh connection (the endpoint
//! closes after each answer); the text format is read only as far as
//! needed: a sample line is `name{labels} value` or `name value`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The counters the soak reports, summed over shards.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// `tern_slow_consumers_total`.
    pub slow_consumers: u64,
    /// `tern_frames_too_long_total`.
    pub frames_too_long: u64,
    /// `tern_connections_open`.
    pub connections_open: u64,
    /// `tern_subscriptions`.
    pub subscriptions: u64,
    /// `tern_pending_bytes`.
    pub pending_bytes: u64,
}

/// A scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("GET http://{addr}/metrics: {source}")]
    Io { addr: SocketAddr, source: io::Error },
    #[error("GET http://{addr}/metrics: {what}")]
    Answer { addr: SocketAddr, what: String },
}

/// Fetches `/metrics` from `addr` and reads the soak's counters.
pub fn scrape(addr: SocketAddr, timeout: Duration) -> Result<Counters, ScrapeError> {
    let io_err = |source| ScrapeError::Io { addr, source };
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(io_err)?;
    s.set_read_timeout(Some(timeout)).map_err(io_err)?;
    s.set_write_timeout(Some(timeout)).map_err(io_err)?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: tern\r\nConnection: close\r\n\r\n")
        .map_err(io_err)?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).map_err(io_err)?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| ScrapeError::Answer {
            addr,
            what: "no end of headers".into(),
        })?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(ScrapeError::Answer {
            addr,
            what: head.lines().next().unwrap_or("").to_string(),
        });
    }
    let counter = |name: &'static str| {
        sum(body, name).ok_or_else(|| ScrapeError::Answer {
            addr,
            what: format!("no {name} samples"),
        })
    };
    Ok(Counters {
        slow_consumers: counter("tern_slow_consumers_total")?,
        frames_too_long: counter("tern_frames_too_long_total")?,
        connections_open: counter("tern_connections_open")?,
        subscriptions: counter("tern_subscriptions")?,
        pending_bytes: counter("tern_pending_bytes")?,
    })
}

/// The sum of every sample of metric `name` in a Prometheus text body
/// (`None` if there is none). Values are read as floats and rounded, as
/// the format writes counters.
pub fn sum(body: &str, name: &str) -> Option<u64> {
    let mut total = None;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // `name{…} v` or `name v`; not a longer name that starts with it.
        let value = if let Some(labels) = rest.strip_prefix('{') {
            labels.rsplit_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None
        };
        let Some(v) = value.and_then(|v| v.split_whitespace().next()) else {
            continue;
        };
        if let Ok(v) = v.parse::<f64>() {
            *total.get_or_insert(0) += v.max(0.0).round() as u64;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "# HELP tern_slow_consumers_total Slow consumers closed.\n# TYPE tern_slow_consumers_total counter\ntern_slow_consumers_total{shard=\"0\"} 3\ntern_slow_consumers_total{shard=\"1\"} 4\ntern_slow_consumers_total_extra 100\ntern_connections_open 12\ntern_protocol_errors_total{shard=\"0\",reason=\"x}y\"} 2\n";

    #[test]
    fn sums_every_shard_and_only_that_name() {
        assert_eq!(sum(BODY, "tern_slow_consumers_total"), Some(7));
        assert_eq!(sum(BODY, "tern_connections_open"), Some(12));
        assert_eq!(sum(BODY, "tern_protocol_errors_total"), Some(2));
        assert_eq!(sum(BODY, "tern_frames_too_long_total"), None);
    }

    #[test]
    fn scrapes_a_served_body() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 256];
            let n = s.read(&mut req).unwrap();
            assert!(req[..n].starts_with(b"GET /metrics HTTP/1.1\r\n"));
            let body = format!("{BODY}tern_frames_too_long_total{{shard=\"1\"}} 5\ntern_subscriptions 9\ntern_pending_bytes{{shard=\"0\"}} 100\n");
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(body.as_bytes()).unwrap();
        });
        let c = scrape(addr, Duration::from_secs(5)).unwrap();
        server.join().unwrap();
        assert_eq!(
            c,
            Counters {
                slow_consumers: 7,
                frames_too_long: 5,
                connections_open: 12,
                subscriptions: 9,
                pending_bytes: 100,
            }
        );
    }
}
