//! tern as a leaf node of a NATS cluster: the relay keeps serving its own
//! clients at local latency and exchanges with a hub (a nats-server
//! leafnode port) only the subjects either side is interested in.
//!
//! * [`Remote`] — one hub to connect to (`--leafnode-remote`, or
//!   `[[leafnodes.remotes]]` in the config file), parsed from its URL.
//! * [`wire`] — the leaf protocol: the hub's `INFO`, `LS+`/`LS-`, `LMSG`,
//!   `HMSG` decoded; tern's `CONNECT`, `LS+`/`LS-` and messages encoded.
//! * [`interest`] — the relay-wide client interest announced to the hubs,
//!   coalesced per pattern and group.
//! * [`RemoteStatus`] — each link's state and counters, for `/metrics` and
//!   `/varz`.
//!
//! Shard 0 owns every link: a link is a connection of that shard's core
//! whose subscriptions are the hub's interest (so routing sends it what
//! the hub wants, from every shard, through the mesh like any other
//! delivery), and whose `LMSG`s are routed like a local publish that is
//! never sent back to a hub. The task that connects, reconnects with
//! backoff and reads the hub is in `shard::tasks`.

pub mod interest;
pub mod wire;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The port of a hub URL without one (nats-server's leafnode default).
pub const DEFAULT_PORT: u16 = 7422;

/// Default `--leafnode-reconnect-max`: the longest wait between two
/// connection attempts (the backoff starts at [`FIRST_BACKOFF`] and
/// doubles, each wait jittered by up to a half).
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(5);

/// The first wait after a link fails.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// How long a hub has to answer: the TCP connect, its `INFO`, the TLS
/// handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The wait after the hub reports a loop (nats-server waits 30 s too).
pub const LOOP_BACKOFF: Duration = Duration::from_secs(30);

/// The prefix of the loop-detection subject every leaf announces: a hub
/// that sends a leaf its own subject back has a cycle in its topology.
pub const LOOP_DETECTION_PREFIX: &str = "$LDS.";

/// A hub URL or settings that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    #[error("leafnode remote {url:?}: {why}")]
    Url { url: String, why: String },
}

/// One hub to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The URL as shown in logs and metrics: without credentials.
    pub url: String,
    pub host: String,
    pub port: u16,
    /// Credentials sent in `CONNECT`, if the hub asks for them.
    pub user: String,
    pub password: String,
    pub token: String,
    /// TLS settings; `tls.required` from a `tls://` URL or the config.
    pub tls: RemoteTls,
}

/// How a link speaks TLS to its hub. Without `required`, TLS is used only
/// if the hub's `INFO` says it is required.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteTls {
    pub required: bool,
    /// PEM file of the CA certificates that may have issued the hub's
    /// certificate; without it, the hub's certificate cannot be verified
    /// and a TLS link is refused.
    pub ca: Option<PathBuf>,
    /// Client certificate and key, for a hub that verifies its leafs.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name the hub's certificate must carry (default: the URL's
    /// host).
    pub server_name: Option<String>,
}

impl Remote {
    /// Parses `scheme://[user:password@ | token@]host[:port]`, where the
    /// scheme is `nats-leaf`, `nats`, `leaf` (clear text unless the hub
    /// requires TLS) or `tls`.
    pub fn parse(url: &str) -> Result<Remote, RemoteError> {
        let fail = |why: &str| RemoteError::Url {
            url: redact(url),
            why: why.to_string(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| fail("expected scheme://host:port, e.g. nats-leaf://127.0.0.1:7422"))?;
        let required = match scheme.to_ascii_lowercase().as_str() {
            "nats-leaf" | "nats" | "leaf" => false,
            "tls" => true,
            _ => return Err(fail("the scheme must be nats-leaf, nats, leaf or tls")),
        };
        let rest = rest.trim_end_matches('/');
        let (credentials, address) = match rest.rsplit_once('@') {
            Some((c, a)) => (Some(c), a),
            None => (None, rest),
        };
        let (user, password, token) = match credentials {
            None => (String::new(), String::new(), String::new()),
            Some(c) => match c.split_once(':') {
                Some((u, p)) => (u.to_string(), p.to_string(), String::new()),
                None => (String::new(), String::new(), c.to_string()),
            },
        };
        let (host, port) = match address.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| fail("the port must be a number from 1 to 65535"))?,
            ),
            _ => (address, DEFAULT_PORT),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(fail("a host and a non-zero port are needed"));
        }
        Ok(Remote {
            url: format!(
                "{}://{}:{port}",
                scheme.to_ascii_lowercase(),
                display_host(host)
            ),
            host: host.to_string(),
            port,
            user,
            password,
            token,
            tls: RemoteTls {
                required,
                ..RemoteTls::default()
            },
        })
    }
}

impl Remote {
    /// The TLS client side of this remote, if it names a CA for its hub.
    pub fn tls_client_config(
        &self,
    ) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, crate::tls::TlsError> {
        let Some(ca) = &self.tls.ca else {
            return Ok(None);
        };
        crate::tls::client_config(ca, self.tls.cert.as_deref(), self.tls.key.as_deref()).map(Some)
    }
}

/// An IPv6 host in brackets, as in a URL.
fn display_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// `url` without what a `user:password@` part holds, for messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, address))) => format!("{scheme}://***@{address}"),
        _ => url.to_string(),
    }
}

/// A link's state and counters, shared between shard 0 (which writes
/// them) and the monitoring endpoint (which reads them).
#[derive(Debug)]
pub struct RemoteStatus {
    /// [`Remote::url`].
    pub url: String,
    pub connected: AtomicBool,
    /// Links established (after `CONNECT` was sent).
    pub connects: AtomicU64,
    /// Established links that ended.
    pub disconnects: AtomicU64,
    /// Messages sent to the hub.
    pub messages_sent: AtomicU64,
    /// Messages received from the hub.
    pub messages_received: AtomicU64,
    /// Bytes queued for the hub and dropped when the link ended (at most
    /// once: nothing is kept for the next link).
    pub dropped_bytes: AtomicU64,
}

impl RemoteStatus {
    pub fn new(url: &str) -> Self {
        RemoteStatus {
            url: url.to_string(),
            connected: AtomicBool::new(false),
            connects: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            messages_sent: AtomicU64::new(0),
            messages_received: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
        }
    }

    /// A counter's current value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// A link's state and counters at one moment, for monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSnapshot {
    pub url: String,
    pub connected: bool,
    pub connects: u64,
    pub disconnects: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub dropped_bytes: u64,
}

impl RemoteStatus {
    /// Its state and counters now.
    pub fn snapshot(&self) -> RemoteSnapshot {
        RemoteSnapshot {
            url: self.url.clone(),
            connected: self.is_connected(),
            connects: Self::get(&self.connects),
            disconnects: Self::get(&self.disconnects),
            messages_sent: Self::get(&self.messages_sent),
            messages_received: Self::get(&self.messages_received),
            dropped_bytes: Self::get(&self.dropped_bytes),
        }
    }
}

/// The wait before attempt `failures + 1` of a link: [`FIRST_BACKOFF`]
/// doubled per failure, capped at `max`, minus up to half of it at random
/// (`jitter` in `0.0..1.0`), so that many leafs restarted together do not
/// reconnect in step.
pub fn backoff(failures: u32, max: Duration, jitter: f64) -> Duration {
    let full = FIRST_BACKOFF
        .saturating_mul(1u32 << failures.min(16))
        .min(max);
    full.mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_their_credentials_and_default_port() {
        let r = Remote::parse("nats-leaf://alice:s3cret@hub.example:7000").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("hub.example", 7000));
        assert_eq!((r.user.as_str(), r.password.as_str()), ("alice", "s3cret"));
        assert_eq!(
            r.url, "nats-leaf://hub.example:7000",
            "no credentials shown"
        );
        assert!(!r.tls.required);
        let r = Remote::parse("tls://tok@10.0.0.1").unwrap();
        assert_eq!((r.token.as_str(), r.port), ("tok", DEFAULT_PORT));
        assert!(r.tls.required);
        let r = Remote::parse("nats://[::1]:7422/").unwrap();
        assert_eq!(
            (r.host.as_str(), r.url.as_str()),
            ("::1", "nats://[::1]:7422")
        );
    }

    #[test]
    fn bad_urls_say_why_without_the_password() {
        for (url, why) in [
            ("127.0.0.1:7422", "scheme://"),
            ("http://h:1", "scheme must be"),
            ("nats://u:pw@h:port", "port must be"),
            ("nats://h:0", "non-zero port"),
            ("nats://", "a host"),
        ] {
            let e = Remote::parse(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
            assert!(!e.contains("pw"), "{e}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_below() {
        let max = Duration::from_secs(5);
        assert_eq!(backoff(0, max, 0.0), FIRST_BACKOFF);
        assert_eq!(backoff(3, max, 0.0), FIRST_BACKOFF * 8);
        assert_eq!(backoff(40, max, 0.0), max);
        assert_eq!(backoff(40, max, 1.0), max / 2);
    }
}
