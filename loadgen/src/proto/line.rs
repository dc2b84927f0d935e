//! tern's line protocol (`docs/protocol.md`): frames end
//! with a terminator; `SUB`, `PUB`, `PING` out, `MSG`, `PONG`, `-ERR` in.

use tern::framing::Terminator;

use super::{Credentials, Event};

/// Encoder and decoder for one terminator.
#[derive(Debug, Clone)]
pub struct LineCodec {
    terminator: Terminator,
    /// The spec's telnet rule: with `\n`, one `\r` before it is dropped.
    strip_cr: bool,
}

impl LineCodec {
    /// A codec for frames ending in `terminator`.
    pub fn new(terminator: Terminator) -> Self {
        let strip_cr = terminator.as_bytes() == b"\n";
        LineCodec {
            terminator,
            strip_cr,
        }
    }

    fn end(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.terminator.as_bytes());
    }

    /// `AUTH <token>` or `AUTH <user> <password>`, the first frame on a
    /// relay with authentication; nothing without credentials. A correct
    /// one gets no reply, a wrong one `-ERR authorization failed` and a
    /// close.
    pub fn auth(&self, out: &mut Vec<u8>, credentials: Option<&Credentials>) {
        let Some(c) = credentials else {
            return;
        };
        out.extend_from_slice(b"AUTH ");
        match c {
            Credentials::Token(token) => out.extend_from_slice(token.as_bytes()),
            Credentials::User { user, password } => {
                out.extend_from_slice(user.as_bytes());
                out.push(b' ');
                out.extend_from_slice(password.as_bytes());
            }
        }
        self.end(out);
    }

    /// `SUB <subject>[ <group>]`.
    pub fn subscribe(&self, out: &mut Vec<u8>, subject: &str, group: Option<&str>) {
        out.extend_from_slice(b"SUB ");
        out.extend_from_slice(subject.as_bytes());
        if let Some(g) = group {
            out.push(b' ');
            out.extend_from_slice(g.as_bytes());
        }
        self.end(out);
    }

    /// `UNSUB <subject>[ <group>]`.
    pub fn unsubscribe(&self, out: &mut Vec<u8>, subject: &str, group: Option<&str>) {
        out.extend_from_slice(b"UNSUB ");
        out.extend_from_slice(subject.as_bytes());
        if let Some(g) = group {
            out.push(b' ');
            out.extend_from_slice(g.as_bytes());
        }
        self.end(out);
    }

    /// `PING`.
    pub fn ping(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"PING");
        self.end(out);
    }

    /// `PUB <subject> <payload>`.
    #[inline]
    pub fn publish(&self, out: &mut Vec<u8>, subject: &[u8], payload: impl FnOnce(&mut Vec<u8>)) {
        out.extend_from_slice(b"PUB ");
        out.extend_from_slice(subject);
        out.push(b' ');
        payload(out);
        self.end(out);
    }

    /// One frame from the front of `buf`, or `None` if no terminator yet.
    #[inline]
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Option<(Event<'a>, usize)> {
        let at = self.terminator.find(buf)?;
        let used = at + self.terminator.len();
        let mut frame = &buf[..at];
        if self.strip_cr {
            if let [rest @ .., b'\r'] = frame {
                frame = rest;
            }
        }
        Some((classify(frame), used))
    }
}

fn classify(frame: &[u8]) -> Event<'_> {
    if let Some(rest) = frame.strip_prefix(b"MSG ") {
        // `MSG <subject> <payload>`: the space after the subject is always
        // there, even for an empty payload.
        return match memchr::memchr(b' ', rest) {
            Some(sp) if sp > 0 => Event::Msg {
                subject: &rest[..sp],
                payload: &rest[sp + 1..],
            },
            _ => Event::Other(frame),
        };
    }
    match frame {
        b"PONG" => Event::Pong,
        b"" => Event::Ignored,
        b"-ERR" => Event::Error(b""),
        _ => match frame.strip_prefix(b"-ERR ") {
            Some(reason) => Event::Error(reason),
            None => Event::Other(frame),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(t: &str) -> LineCodec {
        LineCodec::new(Terminator::parse(t).unwrap())
    }

    #[test]
    fn encodes_frames() {
        let c = codec(r"\n");
        let mut out = Vec::new();
        c.subscribe(&mut out, "a.b", None);
        c.subscribe(&mut out, "a.*", Some("workers"));
        c.ping(&mut out);
        c.publish(&mut out, b"a.b", |o| o.extend_from_slice(b"hello world"));
        c.unsubscribe(&mut out, "a.*", Some("workers"));
        c.unsubscribe(&mut out, "a.>", None);
        assert_eq!(
            out,
            b"SUB a.b\nSUB a.* workers\nPING\nPUB a.b hello world\nUNSUB a.* workers\nUNSUB a.>\n"
        );

        out.clear();
        c.auth(&mut out, None);
        assert!(out.is_empty());
        c.auth(&mut out, Some(&Credentials::Token("tok".into())));
        c.auth(
            &mut out,
            Some(&Credentials::User {
                user: "u".into(),
                password: "p".into(),
            }),
        );
        assert_eq!(out, b"AUTH tok\nAUTH u p\n");

        let c = codec(r"END\r\n");
        out.clear();
        c.publish(&mut out, b"x", |o| o.extend_from_slice(b"1"));
        assert_eq!(out, b"PUB x 1END\r\n");
    }

    #[test]
    fn decodes_frames_one_at_a_time() {
        let c = codec(r"\n");
        let buf =
            b"MSG a.b hello world\nPONG\r\n-ERR slow consumer\n\nMSG a.b \nMSG x\n+PONG\r\nMSG a";
        let mut pos = 0;
        let mut events = Vec::new();
        while let Some((e, used)) = c.decode(&buf[pos..]) {
            events.push(format!("{e:?}"));
            pos += used;
        }
        assert_eq!(&buf[pos..], b"MSG a", "partial frame stays");
        let expected = [
            Event::Msg {
                subject: b"a.b",
                payload: b"hello world",
            },
            Event::Pong,
            Event::Error(b"slow consumer"),
            Event::Ignored,
            Event::Msg {
                subject: b"a.b",
                payload: b"",
            },
            Event::Other(b"MSG x"),
            Event::Other(b"+PONG"),
        ];
        let expected: Vec<String> = expected.iter().map(|e| format!("{e:?}")).collect();
        assert_eq!(events, expected);
    }

    #[test]
    fn multibyte_terminator_and_no_cr_stripping() {
        let c = codec(r"\0\0");
        let buf = b"MSG s p\r\0\0PONG\0\0";
        let (e, used) = c.decode(buf).unwrap();
        assert_eq!(
            e,
            Event::Msg {
                subject: b"s",
                payload: b"p\r"
            }
        );
        assert_eq!(c.decode(&buf[used..]).unwrap().0, Event::Pong);
        assert_eq!(c.decode(b"PONG\0"), None);
    }
}
