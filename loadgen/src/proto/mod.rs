//! The three wire protocols the generator speaks, behind one enum.
//!
//! Each protocol has an encoder (what a publisher or subscriber writes) and
//! a decoder that turns the front of a receive buffer into one [`Event`]
//! without copying: subjects and payloads are slices of that buffer. The
//! decoders are deliberately small and strict: they accept exactly what the
//! respective server sends, and anything else is an [`Event::Other`] or a
//! [`DecodeError`], which the handshake turns into a "this is not a … server"
//! message with the help of [`identify`].
//!
//! | protocol | spec | subscribe confirmed by |
//! | --- | --- | --- |
//! | [`line`](mod@line) | tern's line protocol | `PING` → `PONG` after the `SUB`s |
//! | [`nats`] | NATS client protocol | `PING` → `PONG` after `CONNECT` and `SUB`s |
//! | [`redis`] | RESP2 `SUBSCRIBE`/`PUBLISH` | one `subscribe` confirmation per subject |

pub mod line;
pub mod nats;
pub mod redis;

use std::fmt;

use tern::framing::Terminator;
use thiserror::Error;

/// Which protocol to speak (`--protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// tern's terminator-framed line protocol.
    Line,
    /// The NATS client protocol (nats-server).
    Nats,
    /// Redis pub/sub over RESP2 (redis-server).
    Redis,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Line => "line",
            Protocol::Nats => "nats",
            Protocol::Redis => "redis",
        })
    }
}

/// A kind of server, guessed from what it said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Tern,
    Nats,
    Redis,
}

impl ServerKind {
    /// The `--protocol` that speaks to this server.
    pub fn protocol(self) -> Protocol {
        match self {
            ServerKind::Tern => Protocol::Line,
            ServerKind::Nats => Protocol::Nats,
            ServerKind::Redis => Protocol::Redis,
        }
    }
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerKind::Tern => "a tern relay (line protocol)",
            ServerKind::Nats => "a NATS server",
            ServerKind::Redis => "a Redis server",
        })
    }
}

/// Guesses the server from the first bytes it sent, when they did not make
/// sense in the protocol we spoke.
pub fn identify(raw: &[u8]) -> Option<ServerKind> {
    let has = |needle: &[u8]| memchr::memmem::find(raw, needle).is_some();
    if raw.starts_with(b"INFO {") || has(b"-ERR 'Unknown Protocol Operation'") {
        Some(ServerKind::Nats)
    } else if has(b"-ERR unknown verb") || raw.starts_with(b"PONG\n") {
        Some(ServerKind::Tern)
    } else if has(b"-ERR unknown command")
        || has(b"-ERR wrong number of arguments")
        || has(b"-ERR Protocol error")
        || has(b"-NOAUTH")
        || raw.starts_with(b"+PONG\r\n")
        || raw.starts_with(b"*3\r\n$9\r\nsubscribe\r\n")
    {
        Some(ServerKind::Redis)
    } else {
        None
    }
}

/// One thing a server said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A delivered message.
    Msg {
        subject: &'a [u8],
        payload: &'a [u8],
    },
    /// Answer to our `PING`.
    Pong,
    /// The server's keep-alive `PING` (NATS); must be answered.
    Ping,
    /// NATS `INFO` (the server's greeting).
    Info,
    /// NATS `+OK` (only in verbose mode, which we do not ask for).
    Ok,
    /// Redis `subscribe` confirmation for one subject.
    Subscribed,
    /// Redis integer reply to `PUBLISH` (number of receivers).
    Published,
    /// The server refused something; the reason as sent.
    Error(&'a [u8]),
    /// A frame with no meaning here (e.g. an empty line-protocol frame).
    Ignored,
    /// Something this protocol never sends: wrong server?
    Other(&'a [u8]),
}

/// Bytes that cannot be parsed in the protocol at all.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{what}: {snippet}")]
pub struct DecodeError {
    /// What was wrong.
    pub what: &'static str,
    /// The start of the offending bytes, printable.
    pub snippet: String,
}

impl DecodeError {
    pub(crate) fn new(what: &'static str, bytes: &[u8]) -> Self {
        DecodeError {
            what,
            snippet: printable(&bytes[..bytes.len().min(80)]),
        }
    }
}

/// `bytes` as text with control characters escaped, for error messages.
pub fn printable(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Appends `v` in decimal (no allocation, no formatting machinery: this
/// runs for every NATS and Redis publish); tern's NATS encoder's.
#[inline]
pub(crate) fn push_usize(out: &mut Vec<u8>, v: usize) {
    tern::protocol::nats::encode_decimal(out, v as u64);
}

/// A non-negative decimal number of at most 18 digits (no overflow).
#[inline]
pub(crate) fn parse_usize(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 18 {
        return None;
    }
    s.iter().try_fold(0usize, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + (b - b'0') as usize)
    })
}

/// Credentials a connection presents (`--user`/`--password` or `--token`).
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password.
    User { user: String, password: String },
    /// A bare token.
    Token(String),
}

impl fmt::Debug for Credentials {
    /// Never the secret: options are printed in errors and test output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::User { user, .. } => write!(f, "User {{ user: {user:?}, password: *** }}"),
            Credentials::Token(_) => f.write_str("Token(***)"),
        }
    }
}

/// How a connection introduces itself: its credentials, and whether it
/// runs over TLS (NATS' `CONNECT` says so).
#[derive(Debug, Clone, Copy, Default)]
pub struct Login<'a> {
    pub credentials: Option<&'a Credentials>,
    pub tls: bool,
}

impl Login<'_> {
    /// No credentials, no TLS.
    pub const NONE: Login<'static> = Login {
        credentials: None,
        tls: false,
    };
}

/// A protocol's encoder and decoder.
#[derive(Debug, Clone)]
// One per worker; boxing the line codec would add an indirection to every
// decode for no memory worth saving.
#[allow(clippy::large_enum_variant)]
pub enum Codec {
    Line(line::LineCodec),
    Nats(nats::NatsCodec),
    Redis(redis::RedisCodec),
}

impl Codec {
    /// The codec for `protocol`; `terminator` is only used by `line`.
    pub fn new(protocol: Protocol, terminator: Terminator) -> Self {
        match protocol {
            Protocol::Line => Codec::Line(line::LineCodec::new(terminator)),
            Protocol::Nats => Codec::Nats(nats::NatsCodec),
            Protocol::Redis => Codec::Redis(redis::RedisCodec),
        }
    }

    /// The protocol this codec speaks.
    pub fn protocol(&self) -> Protocol {
        match self {
            Codec::Line(_) => Protocol::Line,
            Codec::Nats(_) => Protocol::Nats,
            Codec::Redis(_) => Protocol::Redis,
        }
    }

    /// Everything a publisher sends before measuring, and what it must see
    /// back before it is ready.
    pub fn publisher_hello(&self, out: &mut Vec<u8>, login: Login<'_>) -> Expect {
        match self {
            Codec::Line(c) => {
                c.auth(out, login.credentials);
                c.ping(out);
                Expect::pongs(1)
            }
            Codec::Nats(c) => {
                c.connect_as(out, login);
                c.ping(out);
                Expect::pongs(1).with_info()
            }
            Codec::Redis(c) => {
                c.auth(out, login.credentials);
                c.ping(out);
                Expect::pongs(1)
            }
        }
    }

    /// Everything a subscriber sends to be subscribed to `subjects` (in
    /// queue group `group`), and what confirms the subscriptions are in
    /// force.
    pub fn subscriber_hello(
        &self,
        out: &mut Vec<u8>,
        subjects: &[String],
        group: Option<&str>,
        login: Login<'_>,
    ) -> Expect {
        match self {
            Codec::Line(c) => {
                c.auth(out, login.credentials);
                for s in subjects {
                    c.subscribe(out, s, group);
                }
                c.ping(out);
                Expect::pongs(1)
            }
            Codec::Nats(c) => {
                c.connect_as(out, login);
                for (i, s) in subjects.iter().enumerate() {
                    c.subscribe(out, s, group, i + 1);
                }
                c.ping(out);
                Expect::pongs(1).with_info()
            }
            Codec::Redis(c) => {
                c.auth(out, login.credentials);
                c.subscribe(out, subjects);
                Expect::subscriptions(subjects.len())
            }
        }
    }

    /// A `PING`: answered with [`Event::Pong`] once the server has handled
    /// everything sent before it (the subscription barrier in tern's line
    /// and NATS protocols).
    pub fn ping(&self, out: &mut Vec<u8>) {
        match self {
            Codec::Line(c) => c.ping(out),
            Codec::Nats(c) => c.ping(out),
            Codec::Redis(c) => c.ping(out),
        }
    }

    /// The answer to a server's keep-alive [`Event::Ping`].
    pub fn pong(&self, out: &mut Vec<u8>) {
        if let Codec::Nats(c) = self {
            c.pong(out);
        }
    }

    /// Appends a publish of a `len`-byte payload on `subject`; `payload`
    /// writes exactly `len` bytes in place (no intermediate copy).
    #[inline]
    pub fn publish(
        &self,
        out: &mut Vec<u8>,
        subject: &[u8],
        len: usize,
        payload: impl FnOnce(&mut Vec<u8>),
    ) {
        match self {
            Codec::Line(c) => c.publish(out, subject, payload),
            Codec::Nats(c) => c.publish(out, subject, len, payload),
            Codec::Redis(c) => c.publish(out, subject, len, payload),
        }
    }

    /// Decodes one event from the front of `buf`: the event and the bytes
    /// it used, or `None` if `buf` holds no complete event yet.
    #[inline]
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Event<'a>, usize)>, DecodeError> {
        match self {
            Codec::Line(c) => Ok(c.decode(buf)),
            Codec::Nats(c) => c.decode(buf),
            Codec::Redis(c) => c.decode(buf),
        }
    }
}

/// What a handshake waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// `PONG`s still to come.
    pub pongs: usize,
    /// Subscribe confirmations still to come.
    pub subscriptions: usize,
    /// Whether the first event must be a NATS `INFO`.
    pub info_first: bool,
}

impl Expect {
    fn pongs(n: usize) -> Self {
        Expect {
            pongs: n,
            subscriptions: 0,
            info_first: false,
        }
    }

    fn subscriptions(n: usize) -> Self {
        Expect {
            pongs: 0,
            subscriptions: n,
            info_first: false,
        }
    }

    fn with_info(self) -> Self {
        Expect {
            info_first: true,
            ..self
        }
    }

    /// Whether nothing more is awaited.
    pub fn done(&self) -> bool {
        self.pongs == 0 && self.subscriptions == 0 && !self.info_first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_servers_from_their_answers() {
        assert_eq!(
            identify(b"INFO {\"server_id\":\"x\"}\r\n"),
            Some(ServerKind::Nats)
        );
        assert_eq!(
            identify(b"-ERR unknown verb\n-ERR unknown verb\nPONG\n"),
            Some(ServerKind::Tern)
        );
        assert_eq!(identify(b"PONG\n"), Some(ServerKind::Tern));
        assert_eq!(
            identify(b"-ERR unknown command 'SUB', with args beginning with: 'a' \r\n+PONG\r\n"),
            Some(ServerKind::Redis)
        );
        assert_eq!(identify(b"+PONG\r\n"), Some(ServerKind::Redis));
        assert_eq!(identify(b"HTTP/1.1 400 Bad Request\r\n"), None);
        assert_eq!(ServerKind::Redis.protocol(), Protocol::Redis);
    }

    #[test]
    fn handshakes_expect_the_right_confirmations() {
        let subjects = vec!["bench.0".to_string(), "bench.1".to_string()];
        let mut out = Vec::new();
        let line = Codec::new(Protocol::Line, Terminator::default());
        assert_eq!(
            line.subscriber_hello(&mut out, &subjects, Some("g"), Login::NONE),
            Expect::pongs(1)
        );
        assert_eq!(out, b"SUB bench.0 g\nSUB bench.1 g\nPING\n");

        out.clear();
        let redis = Codec::new(Protocol::Redis, Terminator::default());
        let e = redis.subscriber_hello(&mut out, &subjects, None, Login::NONE);
        assert_eq!(e.subscriptions, 2);
        assert!(!e.done());

        out.clear();
        let nats = Codec::new(Protocol::Nats, Terminator::default());
        let e = nats.publisher_hello(&mut out, Login::NONE);
        assert!(e.info_first && e.pongs == 1);
        assert!(out.starts_with(b"CONNECT {"));
        assert!(out.ends_with(b"PING\r\n"));

        // Credentials come first on every connection.
        let user = Credentials::User {
            user: "bench".into(),
            password: "s3cret".into(),
        };
        let token = Credentials::Token("t0ken".into());
        let with = |c| Login {
            credentials: Some(c),
            tls: false,
        };
        out.clear();
        line.subscriber_hello(&mut out, &subjects[..1], None, with(&user));
        assert_eq!(out, b"AUTH bench s3cret\nSUB bench.0\nPING\n");
        out.clear();
        line.publisher_hello(&mut out, with(&token));
        assert_eq!(out, b"AUTH t0ken\nPING\n");
        out.clear();
        redis.publisher_hello(&mut out, with(&token));
        assert_eq!(
            out,
            b"*2\r\n$4\r\nAUTH\r\n$5\r\nt0ken\r\n*1\r\n$4\r\nPING\r\n"
        );
        out.clear();
        nats.subscriber_hello(&mut out, &subjects[..1], None, with(&user));
        assert!(out.starts_with(b"CONNECT {"));
        let connect = String::from_utf8(out.clone()).unwrap();
        assert!(
            connect.contains(r#""user":"bench","pass":"s3cret""#),
            "{connect}"
        );
        assert!(
            connect.ends_with("}\r\nSUB bench.0 1\r\nPING\r\n"),
            "{connect}"
        );
        assert_eq!(
            format!("{user:?} {token:?}"),
            r#"User { user: "bench", password: *** } Token(***)"#
        );

        for (codec, ping) in [(&line, &b"PING\n"[..]), (&nats, b"PING\r\n")] {
            out.clear();
            codec.ping(&mut out);
            assert_eq!(out, ping);
        }
    }
}
