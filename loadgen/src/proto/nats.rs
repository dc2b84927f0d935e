//! The NATS client protocol, as much of it as a benchmark needs: `CONNECT`
//! (not verbose, no headers), `SUB`, `PUB`, `PING`/`PONG` out; `INFO`, `MSG`,
//! `PING`/`PONG`, `+OK`, `-ERR` in. Every control line ends in `\r\n`.

use serde::Serialize;

use super::{parse_usize, push_usize, Credentials, DecodeError, Event, Login};

/// The `CONNECT` options: `verbose: false` so the server sends no `+OK` per
/// command, which would double the traffic a publisher must read. The
/// credentials, if any, are JSON strings (escaped by serde_json).
#[derive(Serialize)]
struct Connect<'a> {
    verbose: bool,
    pedantic: bool,
    tls_required: bool,
    name: &'static str,
    lang: &'static str,
    version: &'static str,
    protocol: u8,
    echo: bool,
    headers: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_token: Option<&'a str>,
}

/// What the server's `INFO` says about TLS and authentication, to explain
/// a handshake that cannot work (the rest of `INFO` is not needed).
#[derive(Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct Info {
    pub tls_required: bool,
    pub tls_available: bool,
    pub auth_required: bool,
}

impl Info {
    /// The JSON of an `INFO {...}` line (with or without `\r\n`); `None` if
    /// it is not one.
    pub fn parse(line: &[u8]) -> Option<Info> {
        let json = line.strip_prefix(b"INFO ")?;
        serde_json::from_slice(json.trim_ascii_end()).ok()
    }

    /// Whether the server offers TLS on this port.
    pub fn offers_tls(&self) -> bool {
        self.tls_required || self.tls_available
    }
}

/// Encoder and decoder (stateless).
#[derive(Debug, Clone, Copy, Default)]
pub struct NatsCodec;

impl NatsCodec {
    /// `CONNECT {...}`. Sent without waiting for `INFO`: the server reads
    /// it after its greeting either way, and sending at once saves a round
    /// trip and lets a non-NATS server answer something we can identify.
    pub fn connect(&self, out: &mut Vec<u8>) {
        self.connect_as(out, Login::NONE);
    }

    /// `CONNECT {...}` with `login`'s credentials (`user`/`pass` or
    /// `auth_token`) and `tls_required` set when the connection is TLS.
    pub fn connect_as(&self, out: &mut Vec<u8>, login: Login<'_>) {
        let (user, pass, auth_token) = match login.credentials {
            None => (None, None, None),
            Some(Credentials::User { user, password }) => {
                (Some(user.as_str()), Some(password.as_str()), None)
            }
            Some(Credentials::Token(token)) => (None, None, Some(token.as_str())),
        };
        let connect = Connect {
            verbose: false,
            pedantic: false,
            tls_required: login.tls,
            name: "tern-loadgen",
            lang: "rust",
            version: env!("CARGO_PKG_VERSION"),
            protocol: 1,
            echo: true,
            headers: false,
            user,
            pass,
            auth_token,
        };
        out.extend_from_slice(b"CONNECT ");
        serde_json::to_writer(&mut *out, &connect).expect("a Vec takes any JSON");
        out.extend_from_slice(b"\r\n");
    }

    /// `SUB <subject> [<queue>] <sid>`.
    pub fn subscribe(&self, out: &mut Vec<u8>, subject: &str, queue: Option<&str>, sid: usize) {
        out.extend_from_slice(b"SUB ");
        out.extend_from_slice(subject.as_bytes());
        if let Some(q) = queue {
            out.push(b' ');
            out.extend_from_slice(q.as_bytes());
        }
        out.push(b' ');
        push_usize(out, sid);
        out.extend_from_slice(b"\r\n");
    }

    /// `UNSUB <sid>`.
    pub fn unsubscribe(&self, out: &mut Vec<u8>, sid: usize) {
        out.extend_from_slice(b"UNSUB ");
        push_usize(out, sid);
        out.extend_from_slice(b"\r\n");
    }

    /// `PING`.
    pub fn ping(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"PING\r\n");
    }

    /// `PONG`, the answer to the server's keep-alive.
    pub fn pong(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"PONG\r\n");
    }

    /// `PUB <subject> <len>\r\n<payload>\r\n`.
    #[inline]
    pub fn publish(
        &self,
        out: &mut Vec<u8>,
        subject: &[u8],
        len: usize,
        payload: impl FnOnce(&mut Vec<u8>),
    ) {
        out.extend_from_slice(b"PUB ");
        out.extend_from_slice(subject);
        out.push(b' ');
        push_usize(out, len);
        out.extend_from_slice(b"\r\n");
        payload(out);
        out.extend_from_slice(b"\r\n");
    }

    /// One protocol message from the front of `buf`.
    #[inline]
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Event<'a>, usize)>, DecodeError> {
        let Some(nl) = memchr::memchr(b'\n', buf) else {
            return Ok(None);
        };
        if nl == 0 || buf[nl - 1] != b'\r' {
            return Err(DecodeError::new("NATS line not ending in \\r\\n", buf));
        }
        let line = &buf[..nl - 1];
        let after = nl + 1;
        if let Some(args) = line.strip_prefix(b"MSG ") {
            // MSG <subject> <sid> [reply-to] <#bytes>
            // Split without allocating: this runs once per delivered message.
            let mut fields: [&[u8]; 4] = [&[]; 4];
            let mut n = 0;
            for field in args.split(|&b| b == b' ') {
                if n == fields.len() {
                    return Err(DecodeError::new("bad NATS MSG line", line));
                }
                fields[n] = field;
                n += 1;
            }
            if !(3..=4).contains(&n) {
                return Err(DecodeError::new("bad NATS MSG line", line));
            }
            let subject = fields[0];
            let size = parse_usize(fields[n - 1])
                .ok_or_else(|| DecodeError::new("bad NATS MSG size", line))?;
            let end = after + size;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(DecodeError::new(
                    "NATS payload not followed by \\r\\n",
                    line,
                ));
            }
            return Ok(Some((
                Event::Msg {
                    subject,
                    payload: &buf[after..end],
                },
                end + 2,
            )));
        }
        let event = match line {
            b"PING" => Event::Ping,
            b"PONG" => Event::Pong,
            b"+OK" => Event::Ok,
            _ if line.starts_with(b"INFO ") => Event::Info,
            _ => match line.strip_prefix(b"-ERR ") {
                // The server quotes its reasons: -ERR 'Slow Consumer'.
                Some(reason) => Event::Error(
                    reason
                        .strip_prefix(b"'")
                        .and_then(|r| r.strip_suffix(b"'"))
                        .unwrap_or(reason),
                ),
                None => Event::Other(line),
            },
        };
        Ok(Some((event, after)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands() {
        let c = NatsCodec;
        let mut out = Vec::new();
        c.subscribe(&mut out, "bench.0", None, 1);
        c.subscribe(&mut out, "bench.1", Some("q"), 12);
        c.publish(&mut out, b"bench.0", 5, |o| o.extend_from_slice(b"hello"));
        c.ping(&mut out);
        c.pong(&mut out);
        c.unsubscribe(&mut out, 12);
        assert_eq!(
            out,
            b"SUB bench.0 1\r\nSUB bench.1 q 12\r\nPUB bench.0 5\r\nhello\r\nPING\r\nPONG\r\nUNSUB 12\r\n"
        );
        out.clear();
        c.connect(&mut out);
        let before = br#"CONNECT {"verbose":false,"pedantic":false,"tls_required":false,"name":"tern-loadgen","lang":"rust","version":"0.1.0","protocol":1,"echo":true,"headers":false}"#;
        assert_eq!(
            out,
            [&before[..], b"\r\n"].concat(),
            "without credentials: the CONNECT sent before TLS existed"
        );
    }

    /// The JSON of a CONNECT line.
    fn connect_json(login: Login<'_>) -> serde_json::Value {
        let mut out = Vec::new();
        NatsCodec.connect_as(&mut out, login);
        let line = out.strip_suffix(b"\r\n").unwrap();
        serde_json::from_slice(line.strip_prefix(b"CONNECT ").unwrap()).unwrap()
    }

    #[test]
    fn connect_carries_credentials_and_tls() {
        let user = Credentials::User {
            user: "bench".into(),
            password: "p\"w\\x".into(),
        };
        let j = connect_json(Login {
            credentials: Some(&user),
            tls: true,
        });
        assert_eq!(j["user"], "bench");
        assert_eq!(j["pass"], "p\"w\\x", "escaped, read back intact");
        assert_eq!(j["tls_required"], true);
        assert!(j.get("auth_token").is_none());
        assert_eq!(j["verbose"], false);

        let token = Credentials::Token("t0k".into());
        let j = connect_json(Login {
            credentials: Some(&token),
            tls: false,
        });
        assert_eq!(j["auth_token"], "t0k");
        assert!(j.get("user").is_none() && j.get("pass").is_none());
        assert_eq!(j["tls_required"], false);
    }

    #[test]
    fn info_says_what_the_server_wants() {
        let i = Info::parse(
            b"INFO {\"server_id\":\"x\",\"tls_required\":true,\"auth_required\":true,\"max_payload\":1048576}\r\n",
        )
        .unwrap();
        assert!(i.tls_required && i.auth_required && i.offers_tls());
        let plain = Info::parse(b"INFO {\"server_id\":\"x\"}").unwrap();
        assert_eq!(plain, Info::default());
        assert!(!plain.offers_tls());
        assert!(Info::parse(b"INFO {\"tls_available\":true}")
            .unwrap()
            .offers_tls());
        assert_eq!(Info::parse(b"PONG\r\n"), None);
        assert_eq!(Info::parse(b"INFO nope"), None);
    }

    fn all(buf: &[u8]) -> (Vec<String>, usize) {
        let mut pos = 0;
        let mut events = Vec::new();
        while let Some((e, used)) = NatsCodec.decode(&buf[pos..]).unwrap() {
            events.push(format!("{e:?}"));
            pos += used;
        }
        (events, pos)
    }

    #[test]
    fn decodes_server_messages() {
        let buf = b"INFO {\"a\":1}\r\nMSG s.x 1 5\r\nhe\r\no\r\nMSG s.y 2 inbox 0\r\n\r\nPING\r\nPONG\r\n+OK\r\n-ERR 'Slow Consumer'\r\nMSG s 1 10\r\nabc";
        let (events, pos) = all(buf);
        let expected: Vec<String> = [
            Event::Info,
            Event::Msg {
                subject: b"s.x",
                payload: b"he\r\no",
            },
            Event::Msg {
                subject: b"s.y",
                payload: b"",
            },
            Event::Ping,
            Event::Pong,
            Event::Ok,
            Event::Error(b"Slow Consumer"),
        ]
        .iter()
        .map(|e| format!("{e:?}"))
        .collect();
        assert_eq!(events, expected);
        assert_eq!(
            &buf[pos..],
            b"MSG s 1 10\r\nabc",
            "incomplete payload waits"
        );
    }

    #[test]
    fn refuses_malformed_input() {
        assert!(NatsCodec.decode(b"PONG\n").is_err(), "bare \\n: not NATS");
        assert!(NatsCodec.decode(b"MSG s 1\r\n").is_err());
        assert!(NatsCodec.decode(b"MSG s 1 x\r\n").is_err());
        assert!(NatsCodec.decode(b"MSG s 1 2\r\nabXY").is_err());
        assert_eq!(
            NatsCodec.decode(b"HELLO\r\n").unwrap(),
            Some((Event::Other(b"HELLO"), 7))
        );
        assert_eq!(parse_usize(b"0"), Some(0));
        assert_eq!(parse_usize(b""), None);
        assert_eq!(parse_usize(b"12a"), None);
    }
}
