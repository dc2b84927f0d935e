//! Redis pub/sub over RESP2: `SUBSCRIBE`, `PUBLISH` and `PING` as arrays of
//! bulk strings out; `subscribe` confirmations, `message` pushes, integer
//! replies, `+PONG` and errors in.
//!
//! The decoder understands the RESP values these exchanges use: simple
//! strings, errors, integers, bulk strings and flat arrays of up to four of
//! those. Anything else is an [`Event::Other`].

use super::{parse_usize, push_usize, Credentials, DecodeError, Event};

/// Encoder and decoder (stateless).
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisCodec;

/// Most elements in an array we decode (`message`, subject, payload).
const MAX_ELEMENTS: usize = 4;

/// One decoded RESP value (arrays hold only flat values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Int(i64),
    Bulk(&'a [u8]),
    Nil,
}

impl RedisCodec {
    /// `SUBSCRIBE <subject>...`.
    pub fn subscribe(&self, out: &mut Vec<u8>, subjects: &[String]) {
        array_header(out, 1 + subjects.len());
        bulk(out, b"SUBSCRIBE");
        for s in subjects {
            bulk(out, s.as_bytes());
        }
    }

    /// `AUTH <password>` (a `--token` is the `requirepass` password) or
    /// `AUTH <user> <password>` (an ACL user); nothing without credentials.
    /// Answered `+OK`, or an error that fails the handshake.
    pub fn auth(&self, out: &mut Vec<u8>, credentials: Option<&Credentials>) {
        match credentials {
            None => {}
            Some(Credentials::Token(password)) => {
                array_header(out, 2);
                bulk(out, b"AUTH");
                bulk(out, password.as_bytes());
            }
            Some(Credentials::User { user, password }) => {
                array_header(out, 3);
                bulk(out, b"AUTH");
                bulk(out, user.as_bytes());
                bulk(out, password.as_bytes());
            }
        }
    }

    /// `PING` (as an array: the inline form would also work, but arrays are
    /// what real clients send).
    pub fn ping(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
    }

    /// `PUBLISH <subject> <payload>`.
    #[inline]
    pub fn publish(
        &self,
        out: &mut Vec<u8>,
        subject: &[u8],
        len: usize,
        payload: impl FnOnce(&mut Vec<u8>),
    ) {
        out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
        bulk(out, subject);
        out.push(b'$');
        push_usize(out, len);
        out.extend_from_slice(b"\r\n");
        payload(out);
        out.extend_from_slice(b"\r\n");
    }

    /// One reply or push from the front of `buf`.
    #[inline]
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Event<'a>, usize)>, DecodeError> {
        if buf.first() == Some(&b'*') {
            let Some((n, mut pos)) = line(buf)? else {
                return Ok(None);
            };
            let n = parse_usize(&n[1..])
                .filter(|&n| n <= MAX_ELEMENTS)
                .ok_or_else(|| DecodeError::new("RESP array too long or malformed", buf))?;
            let mut items = [Value::Nil; MAX_ELEMENTS];
            for item in items.iter_mut().take(n) {
                let Some((v, used)) = value(&buf[pos..])? else {
                    return Ok(None);
                };
                *item = v;
                pos += used;
            }
            let event = match &items[..n] {
                [Value::Bulk(b"message"), Value::Bulk(subject), Value::Bulk(payload)] => {
                    Event::Msg { subject, payload }
                }
                [Value::Bulk(b"subscribe"), Value::Bulk(_), Value::Int(_)] => Event::Subscribed,
                [Value::Bulk(b"pong"), _] => Event::Pong,
                _ => Event::Other(&buf[..pos]),
            };
            return Ok(Some((event, pos)));
        }
        let Some((v, used)) = value(buf)? else {
            return Ok(None);
        };
        let event = match v {
            Value::Simple(b"PONG") => Event::Pong,
            // The answer to AUTH.
            Value::Simple(b"OK") => Event::Ok,
            Value::Int(_) => Event::Published,
            Value::Error(e) => Event::Error(e),
            _ => Event::Other(&buf[..used]),
        };
        Ok(Some((event, used)))
    }
}

/// The first line of `buf` (without `\r\n`) and the bytes it spans.
#[inline]
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, DecodeError> {
    let Some(nl) = memchr::memchr(b'\n', buf) else {
        return Ok(None);
    };
    if nl == 0 || buf[nl - 1] != b'\r' {
        return Err(DecodeError::new("RESP line not ending in \\r\\n", buf));
    }
    Ok(Some((&buf[..nl - 1], nl + 1)))
}

/// One non-array RESP value.
#[inline]
fn value(buf: &[u8]) -> Result<Option<(Value<'_>, usize)>, DecodeError> {
    let Some((l, used)) = line(buf)? else {
        return Ok(None);
    };
    let Some((&kind, body)) = l.split_first() else {
        return Err(DecodeError::new("empty RESP line", buf));
    };
    let v = match kind {
        b'+' => Value::Simple(body),
        b'-' => Value::Error(body),
        b':' => {
            let (neg, digits) = match body.strip_prefix(b"-") {
                Some(d) => (true, d),
                None => (false, body),
            };
            let n =
                parse_usize(digits).ok_or_else(|| DecodeError::new("bad RESP integer", l))? as i64;
            Value::Int(if neg { -n } else { n })
        }
        b'$' if body == b"-1" => Value::Nil,
        b'$' => {
            let len =
                parse_usize(body).ok_or_else(|| DecodeError::new("bad RESP bulk length", l))?;
            let end = used + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(DecodeError::new(
                    "RESP bulk string not followed by \\r\\n",
                    l,
                ));
            }
            return Ok(Some((Value::Bulk(&buf[used..end]), end + 2)));
        }
        _ => return Err(DecodeError::new("not a RESP value", buf)),
    };
    Ok(Some((v, used)))
}

fn array_header(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_usize(out, n);
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'$');
    push_usize(out, s.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(s);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands() {
        let c = RedisCodec;
        let mut out = Vec::new();
        c.subscribe(&mut out, &["a".to_string(), "bc".to_string()]);
        assert_eq!(out, b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$2\r\nbc\r\n");
        out.clear();
        c.publish(&mut out, b"a.b", 3, |o| o.extend_from_slice(b"x\r\n"));
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$3\r\na.b\r\n$3\r\nx\r\n\r\n");
        out.clear();
        c.ping(&mut out);
        assert_eq!(out, b"*1\r\n$4\r\nPING\r\n");
    }

    #[test]
    fn decodes_replies_and_pushes() {
        let buf = b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhe\r\no\r\n:3\r\n+PONG\r\n-ERR unknown command 'X'\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n+OK\r\n*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhe";
        let mut pos = 0;
        let mut events = Vec::new();
        while let Some((e, used)) = RedisCodec.decode(&buf[pos..]).unwrap() {
            events.push(format!("{e:?}"));
            pos += used;
        }
        let expected: Vec<String> = [
            Event::Subscribed,
            Event::Msg {
                subject: b"a",
                payload: b"he\r\no",
            },
            Event::Published,
            Event::Pong,
            Event::Error(b"ERR unknown command 'X'"),
            Event::Pong,
            Event::Ok,
        ]
        .iter()
        .map(|e| format!("{e:?}"))
        .collect();
        assert_eq!(events, expected);
        assert_eq!(&buf[pos..], b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhe");
    }

    #[test]
    fn refuses_what_is_not_resp() {
        // What tern or NATS would answer.
        assert!(RedisCodec.decode(b"-ERR unknown verb\n").is_err());
        assert!(RedisCodec.decode(b"PONG\n").is_err());
        assert!(RedisCodec.decode(b"INFO {}\r\n").is_err());
        assert!(RedisCodec.decode(b"*9\r\n").is_err());
        assert!(RedisCodec.decode(b"$3\r\nabcd\r\n").is_err());
        assert_eq!(
            RedisCodec.decode(b":-2\r\n").unwrap(),
            Some((Event::Published, 5))
        );
        assert_eq!(
            RedisCodec.decode(b"$-1\r\n").unwrap(),
            Some((Event::Other(b"$-1\r\n"), 5))
        );
    }
}
