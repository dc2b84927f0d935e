//! Encoders for what tern sends a NATS client (and, for tests and load
//! generators, what a client sends): each appends to a `Vec<u8>` and has a
//! `*_len` twin saying exactly how many bytes it appends, so a caller can
//! reserve once or account for queued bytes before writing.
//!
//! Numbers are written by a small formatter of our own ([`encode_decimal`])
//! rather than `format!`/`write!`, which would go through `fmt`'s dynamic
//! dispatch for every delivery; sizes and counts are never negative, so it
//! handles `u64` only.

use std::ops::Range;

use serde::Serialize;

/// The line end of every control line and payload.
pub const CRLF: &[u8] = b"\r\n";
/// `PING`, as sent.
pub const PING: &[u8] = b"PING\r\n";
/// `PONG`, as sent.
pub const PONG: &[u8] = b"PONG\r\n";
/// `+OK`, as sent to a verbose client.
pub const OK: &[u8] = b"+OK\r\n";

/// The number of decimal digits of `n`.
#[inline]
pub fn decimal_len(n: u64) -> usize {
    let mut len = 1;
    let mut rest = n;
    while rest >= 10 {
        rest /= 10;
        len += 1;
    }
    len
}

/// Appends `n` in decimal, without sign or leading zeros.
#[inline]
pub fn encode_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20]; // u64::MAX has 20 digits
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A control line of the form `<verb> <subject> [sid] [reply] [header_len]
/// <total_len>\r\n`: every message-carrying operation, both directions.
struct Head<'a> {
    verb: &'static [u8],
    subject: &'a [u8],
    sid: Option<&'a [u8]>,
    reply: Option<&'a [u8]>,
    header_len: Option<usize>,
    total_len: usize,
}

impl Head<'_> {
    #[inline]
    fn len(&self) -> usize {
        let field = |f: Option<&[u8]>| f.map_or(0, |f| f.len() + 1);
        self.verb.len()
            + 1
            + self.subject.len()
            + 1
            + field(self.sid)
            + field(self.reply)
            + self.header_len.map_or(0, |h| decimal_len(h as u64) + 1)
            + decimal_len(self.total_len as u64)
            + CRLF.len()
    }

    #[inline]
    fn write(&self, out: &mut Vec<u8>) {
        out.reserve(self.len());
        self.put(out);
    }

    /// [`Self::write`] without reserving (the caller has).
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.verb);
        out.push(b' ');
        out.extend_from_slice(self.subject);
        out.push(b' ');
        for f in [self.sid, self.reply].into_iter().flatten() {
            out.extend_from_slice(f);
            out.push(b' ');
        }
        if let Some(h) = self.header_len {
            encode_decimal(out, h as u64);
            out.push(b' ');
        }
        encode_decimal(out, self.total_len as u64);
        out.extend_from_slice(CRLF);
    }

    /// Writes the head, then the body parts and the closing `\r\n`.
    #[inline]
    fn write_with(&self, out: &mut Vec<u8>, parts: &[&[u8]]) {
        out.reserve(self.len() + self.total_len + CRLF.len());
        self.put(out);
        for p in parts {
            out.extend_from_slice(p);
        }
        out.extend_from_slice(CRLF);
    }
}

fn msg_head<'a>(
    subject: &'a [u8],
    sid: &'a [u8],
    reply: Option<&'a [u8]>,
    payload_len: usize,
) -> Head<'a> {
    Head {
        verb: b"MSG",
        subject,
        sid: Some(sid),
        reply,
        header_len: None,
        total_len: payload_len,
    }
}

fn hmsg_head<'a>(
    subject: &'a [u8],
    sid: &'a [u8],
    reply: Option<&'a [u8]>,
    header_len: usize,
    total_len: usize,
) -> Head<'a> {
    Head {
        verb: b"HMSG",
        subject,
        sid: Some(sid),
        reply,
        header_len: Some(header_len),
        total_len,
    }
}

/// Appends `MSG <subject> <sid> [reply] <payload_len>\r\n`: the part of a
/// delivery that differs per receiver. The payload and a closing [`CRLF`]
/// follow it (written by the caller, or see [`encode_msg`]).
///
/// A receiver that did not `CONNECT` with `headers: true` gets a message
/// that has headers as a `MSG` of its payload alone, as nats-server does.
#[inline]
pub fn encode_msg_head(
    out: &mut Vec<u8>,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    payload_len: usize,
) {
    msg_head(subject, sid, reply, payload_len).write(out);
}

/// Bytes [`encode_msg_head`] appends.
#[inline]
pub fn msg_head_len(subject: &[u8], sid: &[u8], reply: Option<&[u8]>, payload_len: usize) -> usize {
    msg_head(subject, sid, reply, payload_len).len()
}

/// Appends a whole `MSG`: head, payload, `\r\n`.
#[inline]
pub fn encode_msg(
    out: &mut Vec<u8>,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    payload: &[u8],
) {
    msg_head(subject, sid, reply, payload.len()).write_with(out, &[payload]);
}

/// Bytes [`encode_msg`] appends.
#[inline]
pub fn msg_len(subject: &[u8], sid: &[u8], reply: Option<&[u8]>, payload_len: usize) -> usize {
    msg_head_len(subject, sid, reply, payload_len) + payload_len + CRLF.len()
}

/// Appends `HMSG <subject> <sid> [reply] <header_len> <total_len>\r\n`,
/// `total_len` counting headers and payload. The header block, the payload
/// and a closing [`CRLF`] follow it.
#[inline]
pub fn encode_hmsg_head(
    out: &mut Vec<u8>,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    header_len: usize,
    total_len: usize,
) {
    hmsg_head(subject, sid, reply, header_len, total_len).write(out);
}

/// Bytes [`encode_hmsg_head`] appends.
#[inline]
pub fn hmsg_head_len(
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    header_len: usize,
    total_len: usize,
) -> usize {
    hmsg_head(subject, sid, reply, header_len, total_len).len()
}

/// Appends a whole `HMSG`: head, headers, payload, `\r\n`.
#[inline]
pub fn encode_hmsg(
    out: &mut Vec<u8>,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    headers: &[u8],
    payload: &[u8],
) {
    let total = headers.len() + payload.len();
    hmsg_head(subject, sid, reply, headers.len(), total).write_with(out, &[headers, payload]);
}

/// Bytes [`encode_hmsg`] appends.
#[inline]
pub fn hmsg_len(
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    header_len: usize,
    payload_len: usize,
) -> usize {
    let total = header_len + payload_len;
    hmsg_head_len(subject, sid, reply, header_len, total) + total + CRLF.len()
}

/// The control line shared by every delivery of one message, split around
/// the sid: `MSG <subject> ` (or `HMSG <subject> `) before it, and
/// ` [reply] [header_len] <total_len>\r\n` after it. Built once per
/// message (per form: `MSG`, `HMSG`), it turns each receiver's head into
/// three copies (before, sid, after) with no number formatted and no
/// length worked out per receiver: in a 1→8 fan-out the per-receiver
/// [`encode_msg`] path (head length, then the head, each formatting the
/// payload size) was about a tenth of the shard's CPU.
///
/// A head the same as the last one built (same subject, reply, sizes: a
/// stream of equal messages on one subject, the usual 1→1 case) is kept,
/// not rebuilt: comparing costs less than formatting the size again.
#[derive(Debug, Default)]
pub struct MsgHead {
    /// `before` + `after`, back to back (reused from message to message).
    buf: Vec<u8>,
    /// Where `after` starts in `buf`.
    sid_at: usize,
    /// What `buf` was built from (`None` before the first build).
    built: Option<Built>,
}

/// The inputs of a built [`MsgHead`], as places in its `buf`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Built {
    subject: Range<usize>,
    reply: Option<Range<usize>>,
    header_len: Option<usize>,
    total_len: usize,
}

impl MsgHead {
    /// Makes this the head of a `MSG` (`header_len` is `None`) or `HMSG`
    /// of `subject`, `reply` and `total_len` bytes of headers and payload.
    pub fn build(
        &mut self,
        subject: &[u8],
        reply: Option<&[u8]>,
        header_len: Option<usize>,
        total_len: usize,
    ) {
        if self.is_built_from(subject, reply, header_len, total_len) {
            return;
        }
        let verb: &[u8] = if header_len.is_some() {
            b"HMSG"
        } else {
            b"MSG"
        };
        self.buf.clear();
        self.buf.extend_from_slice(verb);
        self.buf.push(b' ');
        let subject_at = self.buf.len()..self.buf.len() + subject.len();
        self.buf.extend_from_slice(subject);
        self.buf.push(b' ');
        self.sid_at = self.buf.len();
        let reply_at = reply.map(|reply| {
            self.buf.push(b' ');
            self.buf.extend_from_slice(reply);
            self.buf.len() - reply.len()..self.buf.len()
        });
        if let Some(h) = header_len {
            self.buf.push(b' ');
            encode_decimal(&mut self.buf, h as u64);
        }
        self.buf.push(b' ');
        encode_decimal(&mut self.buf, total_len as u64);
        self.buf.extend_from_slice(CRLF);
        self.built = Some(Built {
            subject: subject_at,
            reply: reply_at,
            header_len,
            total_len,
        });
    }

    /// Whether the head held is the one these inputs make.
    #[inline]
    fn is_built_from(
        &self,
        subject: &[u8],
        reply: Option<&[u8]>,
        header_len: Option<usize>,
        total_len: usize,
    ) -> bool {
        let Some(b) = &self.built else {
            return false;
        };
        b.total_len == total_len
            && b.header_len == header_len
            && self.buf[b.subject.clone()] == *subject
            && b.reply.clone().map(|r| &self.buf[r]) == reply
    }

    /// Bytes [`Self::put`] appends for `sid`.
    #[inline]
    pub fn len_with(&self, sid: &[u8]) -> usize {
        self.buf.len() + sid.len()
    }

    /// Appends the head for the receiver's `sid` (the caller reserves).
    #[inline]
    pub fn put(&self, out: &mut Vec<u8>, sid: &[u8]) {
        let (before, after) = self.buf.split_at(self.sid_at);
        out.extend_from_slice(before);
        out.extend_from_slice(sid);
        out.extend_from_slice(after);
    }
}

fn pub_head<'a>(
    subject: &'a [u8],
    reply: Option<&'a [u8]>,
    header_len: Option<usize>,
    total_len: usize,
) -> Head<'a> {
    Head {
        verb: if header_len.is_some() {
            b"HPUB"
        } else {
            b"PUB"
        },
        subject,
        sid: None,
        reply,
        header_len,
        total_len,
    }
}

/// Appends `PUB <subject> [reply] <n>\r\n<payload>\r\n` (a client's
/// publish: for tests and load generators).
pub fn encode_pub(out: &mut Vec<u8>, subject: &[u8], reply: Option<&[u8]>, payload: &[u8]) {
    pub_head(subject, reply, None, payload.len()).write_with(out, &[payload]);
}

/// Bytes [`encode_pub`] appends.
pub fn pub_len(subject: &[u8], reply: Option<&[u8]>, payload_len: usize) -> usize {
    pub_head(subject, reply, None, payload_len).len() + payload_len + CRLF.len()
}

/// Appends `HPUB <subject> [reply] <header_len> <total_len>\r\n<headers>
/// <payload>\r\n` (a client's publish with headers).
pub fn encode_hpub(
    out: &mut Vec<u8>,
    subject: &[u8],
    reply: Option<&[u8]>,
    headers: &[u8],
    payload: &[u8],
) {
    let total = headers.len() + payload.len();
    pub_head(subject, reply, Some(headers.len()), total).write_with(out, &[headers, payload]);
}

/// Bytes [`encode_hpub`] appends.
pub fn hpub_len(
    subject: &[u8],
    reply: Option<&[u8]>,
    header_len: usize,
    payload_len: usize,
) -> usize {
    let total = header_len + payload_len;
    pub_head(subject, reply, Some(header_len), total).len() + total + CRLF.len()
}

/// The header block of the no-responders reply: status 503, no headers.
const NO_RESPONDERS: &[u8] = b"NATS/1.0 503\r\n\r\n";

/// Appends the reply nats-server sends a request that reached no
/// subscriber: `HMSG <reply> <sid> 16 16\r\nNATS/1.0 503\r\n\r\n\r\n`, on
/// the requester's subscription `sid` that matches the request's `reply`.
pub fn encode_no_responders(out: &mut Vec<u8>, reply: &[u8], sid: &[u8]) {
    encode_hmsg(out, reply, sid, None, NO_RESPONDERS, b"");
}

/// Bytes [`encode_no_responders`] appends.
pub fn no_responders_len(reply: &[u8], sid: &[u8]) -> usize {
    hmsg_len(reply, sid, None, NO_RESPONDERS.len(), 0)
}

/// Appends `-ERR '<text>'\r\n`.
pub fn encode_err(out: &mut Vec<u8>, text: &str) {
    out.reserve(err_len(text));
    out.extend_from_slice(b"-ERR '");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"'\r\n");
}

/// Bytes [`encode_err`] appends.
pub fn err_len(text: &str) -> usize {
    b"-ERR ''\r\n".len() + text.len()
}

/// The greeting of every NATS connection, sent as `INFO {json}`. Field
/// names and the keys omitted when empty follow nats-server's `Info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerInfo {
    /// Random per process ([`new_server_id`](super::new_server_id)):
    /// clients use it to tell servers apart.
    pub server_id: String,
    /// The server's name (nats-server defaults it to the id).
    pub server_name: String,
    /// The nats-server version whose protocol tern speaks (semver).
    pub version: String,
    /// Protocol level ([`PROTO`](super::PROTO)).
    pub proto: u32,
    /// The address the listener is bound to.
    pub host: String,
    /// The port the listener is bound to.
    pub port: u16,
    /// Whether `HPUB`/`HMSG` are supported (tern: yes).
    pub headers: bool,
    /// Whether `CONNECT` must carry credentials (omitted when false).
    #[serde(skip_serializing_if = "is_false")]
    pub auth_required: bool,
    /// Whether the connection must upgrade to TLS (omitted when false).
    #[serde(skip_serializing_if = "is_false")]
    pub tls_required: bool,
    /// Largest payload a publish may carry, headers included.
    pub max_payload: u64,
    /// This connection's id (omitted when 0), as `/connz` shows it.
    #[serde(skip_serializing_if = "is_zero")]
    pub client_id: u64,
    /// This connection's peer address (omitted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client_ip: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Appends `INFO {json} \r\n` — with the space before `\r\n` that
/// nats-server writes.
pub fn encode_info(out: &mut Vec<u8>, info: &ServerInfo) {
    out.extend_from_slice(b"INFO ");
    serde_json::to_writer(&mut *out, info).expect("ServerInfo always serializes");
    out.extend_from_slice(b" \r\n");
}

/// Bytes [`encode_info`] appends.
pub fn info_len(info: &ServerInfo) -> usize {
    /// A writer that only counts.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    serde_json::to_writer(&mut n, info).expect("ServerInfo always serializes");
    b"INFO ".len() + n.0 + b" \r\n".len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs an encoder on an empty buffer and on one that already holds
    /// bytes, checks that both append `want`, and that `len` says so.
    fn check(encode: impl Fn(&mut Vec<u8>), len: usize, want: &[u8]) {
        let mut out = Vec::new();
        encode(&mut out);
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(want));
        assert_eq!(out, want);
        assert_eq!(
            len,
            want.len(),
            "length of {:?}",
            String::from_utf8_lossy(want)
        );
        let mut out = b"before".to_vec();
        encode(&mut out);
        assert_eq!(&out[..6], b"before");
        assert_eq!(&out[6..], want);
    }

    #[test]
    fn decimals() {
        for (n, s) in [
            (0u64, "0"),
            (7, "7"),
            (9, "9"),
            (10, "10"),
            (99, "99"),
            (100, "100"),
            (4096, "4096"),
            (999_999_999, "999999999"),
            (1_000_000_000, "1000000000"),
            (u64::MAX, "18446744073709551615"),
        ] {
            check(|o| encode_decimal(o, n), decimal_len(n), s.as_bytes());
        }
        for p in 0..20u32 {
            let n = 10u64.pow(p);
            assert_eq!(decimal_len(n), p as usize + 1);
            assert_eq!(decimal_len(n - 1), (p as usize).max(1));
        }
    }

    #[test]
    fn msg_and_hmsg() {
        check(
            |o| encode_msg(o, b"a.b", b"7", None, b"hello"),
            msg_len(b"a.b", b"7", None, 5),
            b"MSG a.b 7 5\r\nhello\r\n",
        );
        check(
            |o| encode_msg(o, b"a.b", b"12", Some(b"_INBOX.x"), b""),
            msg_len(b"a.b", b"12", Some(b"_INBOX.x"), 0),
            b"MSG a.b 12 _INBOX.x 0\r\n\r\n",
        );
        check(
            |o| encode_msg_head(o, b"s", b"1", Some(b"r"), 123_456),
            msg_head_len(b"s", b"1", Some(b"r"), 123_456),
            b"MSG s 1 r 123456\r\n",
        );
        let hdr = b"NATS/1.0\r\nA: b\r\n\r\n";
        check(
            |o| encode_hmsg(o, b"a", b"9", Some(b"r.1"), hdr, b"xy"),
            hmsg_len(b"a", b"9", Some(b"r.1"), hdr.len(), 2),
            b"HMSG a 9 r.1 18 20\r\nNATS/1.0\r\nA: b\r\n\r\nxy\r\n",
        );
        check(
            |o| encode_hmsg_head(o, b"a", b"9", None, 18, 20),
            hmsg_head_len(b"a", b"9", None, 18, 20),
            b"HMSG a 9 18 20\r\n",
        );
    }

    #[test]
    fn msg_head_is_the_per_receiver_head() {
        let mut head = MsgHead::default();
        head.build(b"a.b", Some(b"_INBOX.x"), None, 123_456);
        check(
            |o| head.put(o, b"12"),
            head.len_with(b"12"),
            b"MSG a.b 12 _INBOX.x 123456\r\n",
        );
        // Rebuilt for the next message: nothing of the last one stays.
        head.build(b"s", None, Some(18), 20);
        check(
            |o| head.put(o, b"9"),
            head.len_with(b"9"),
            b"HMSG s 9 18 20\r\n",
        );
    }

    /// What the one-receiver encoders give for this head.
    fn encoded_head(
        subject: &[u8],
        sid: &[u8],
        reply: Option<&[u8]>,
        header_len: Option<usize>,
        payload_len: usize,
    ) -> Vec<u8> {
        let mut want = Vec::new();
        match header_len {
            None => encode_msg_head(&mut want, subject, sid, reply, payload_len),
            Some(h) => encode_hmsg_head(&mut want, subject, sid, reply, h, h + payload_len),
        }
        want
    }

    /// Subject, reply, header length and payload length of a head, from
    /// small sets, so that two drawn heads are often the same or differ in
    /// one part only.
    fn head_parts() -> impl Strategy<Value = (String, Option<String>, Option<usize>, usize)> {
        (
            "[ab]{1,2}",
            proptest::option::of("[ab]{1,2}"),
            proptest::option::of(0usize..2),
            0usize..2,
        )
    }

    proptest! {
        /// The template gives byte for byte what the one-receiver encoders
        /// give, for any subject, sid, reply and sizes.
        #[test]
        fn msg_head_matches_the_encoders(
            subject in "[a-z.*>]{1,12}",
            sid in "[0-9a-z]{1,6}",
            reply in proptest::option::of("[A-Z_.]{1,10}"),
            header_len in proptest::option::of(0usize..100_000),
            payload_len in 0usize..10_000_000,
        ) {
            let reply = reply.as_ref().map(|r| r.as_bytes());
            let (subject, sid) = (subject.as_bytes(), sid.as_bytes());
            let want = encoded_head(subject, sid, reply, header_len, payload_len);
            let total = header_len.unwrap_or(0) + payload_len;
            let mut head = MsgHead::default();
            head.build(b"stale.subject.from.before", Some(b"old"), Some(1), 2);
            head.build(subject, reply, header_len, total);
            let mut got = Vec::new();
            head.put(&mut got, sid);
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(head.len_with(sid), want.len());
        }

        /// A head built right after another (the same, or differing in
        /// one part) is still the encoders' head: one is kept only when
        /// nothing differs.
        #[test]
        fn msg_head_after_another_matches_the_encoders(
            first in head_parts(),
            second in head_parts(),
        ) {
            let mut head = MsgHead::default();
            for (subject, reply, header_len, payload_len) in [first, second] {
                let reply = reply.as_ref().map(|r| r.as_bytes());
                let want = encoded_head(subject.as_bytes(), b"7", reply, header_len, payload_len);
                let total = header_len.unwrap_or(0) + payload_len;
                head.build(subject.as_bytes(), reply, header_len, total);
                let mut got = Vec::new();
                head.put(&mut got, b"7");
                prop_assert_eq!(&got, &want);
            }
        }
    }

    #[test]
    fn pub_and_hpub() {
        check(
            |o| encode_pub(o, b"a", None, b"hi"),
            pub_len(b"a", None, 2),
            b"PUB a 2\r\nhi\r\n",
        );
        check(
            |o| encode_pub(o, b"a", Some(b"r"), b""),
            pub_len(b"a", Some(b"r"), 0),
            b"PUB a r 0\r\n\r\n",
        );
        check(
            |o| encode_hpub(o, b"a", Some(b"r"), b"NATS/1.0\r\n\r\n", b"p"),
            hpub_len(b"a", Some(b"r"), 12, 1),
            b"HPUB a r 12 13\r\nNATS/1.0\r\n\r\np\r\n",
        );
    }

    #[test]
    fn no_responders_is_nats_servers_reply() {
        assert_eq!(NO_RESPONDERS.len(), 16);
        check(
            |o| encode_no_responders(o, b"_INBOX.abc.1", b"3"),
            no_responders_len(b"_INBOX.abc.1", b"3"),
            b"HMSG _INBOX.abc.1 3 16 16\r\nNATS/1.0 503\r\n\r\n\r\n",
        );
    }

    #[test]
    fn control_lines() {
        assert_eq!(PING, b"PING\r\n");
        assert_eq!(PONG, b"PONG\r\n");
        assert_eq!(OK, b"+OK\r\n");
        check(
            |o| encode_err(o, "Unknown Protocol Operation"),
            err_len("Unknown Protocol Operation"),
            b"-ERR 'Unknown Protocol Operation'\r\n",
        );
    }

    fn info() -> ServerInfo {
        ServerInfo {
            server_id: "NABC".into(),
            server_name: "tern".into(),
            version: "2.10.0".into(),
            proto: 1,
            host: "127.0.0.1".into(),
            port: 4222,
            headers: true,
            auth_required: false,
            tls_required: false,
            max_payload: 1_048_576,
            client_id: 0,
            client_ip: String::new(),
        }
    }

    #[test]
    fn info_line() {
        let i = info();
        check(
            |o| encode_info(o, &i),
            info_len(&i),
            b"INFO {\"server_id\":\"NABC\",\"server_name\":\"tern\",\"version\":\"2.10.0\",\
              \"proto\":1,\"host\":\"127.0.0.1\",\"port\":4222,\"headers\":true,\
              \"max_payload\":1048576} \r\n",
        );
        let i = ServerInfo {
            auth_required: true,
            tls_required: true,
            client_id: 42,
            client_ip: "10.0.0.1".into(),
            server_name: "a \"quoted\" name".into(),
            ..info()
        };
        check(
            |o| encode_info(o, &i),
            info_len(&i),
            b"INFO {\"server_id\":\"NABC\",\"server_name\":\"a \\\"quoted\\\" name\",\
              \"version\":\"2.10.0\",\"proto\":1,\"host\":\"127.0.0.1\",\"port\":4222,\
              \"headers\":true,\"auth_required\":true,\"tls_required\":true,\
              \"max_payload\":1048576,\"client_id\":42,\"client_ip\":\"10.0.0.1\"} \r\n",
        );
    }

    proptest! {
        #[test]
        fn decimals_match_std(n in any::<u64>()) {
            let mut out = Vec::new();
            encode_decimal(&mut out, n);
            let std = n.to_string();
            prop_assert_eq!(&out[..], std.as_bytes());
            prop_assert_eq!(decimal_len(n), out.len());
        }

        /// A delivery reads back, the way a client parses it, as what was
        /// encoded: fields of the head line, then exactly the announced
        /// bytes, then `\r\n`.
        #[test]
        fn deliveries_read_back(
            subject in "[a-z.*>]{1,20}",
            sid in "[0-9]{1,6}",
            reply in prop::option::of("[A-Za-z_.]{1,20}"),
            headers in prop::option::of(prop::collection::vec(any::<u8>(), 0..100)),
            payload in prop::collection::vec(any::<u8>(), 0..500),
        ) {
            let reply = reply.as_deref().map(str::as_bytes);
            let mut out = Vec::new();
            match &headers {
                Some(h) => encode_hmsg(&mut out, subject.as_bytes(), sid.as_bytes(), reply, h, &payload),
                None => encode_msg(&mut out, subject.as_bytes(), sid.as_bytes(), reply, &payload),
            }
            let end = out.windows(2).position(|w| w == CRLF).unwrap();
            let head = std::str::from_utf8(&out[..end]).unwrap();
            let fields: Vec<&str> = head.split(' ').collect();
            let mut want = vec![if headers.is_some() { "HMSG" } else { "MSG" }, &subject, &sid];
            if let Some(r) = reply {
                want.push(std::str::from_utf8(r).unwrap());
            }
            let hlen = headers.as_ref().map(|h| h.len().to_string());
            if let Some(h) = &hlen {
                want.push(h);
            }
            let total = (headers.as_ref().map_or(0, Vec::len) + payload.len()).to_string();
            want.push(&total);
            prop_assert_eq!(fields, want);
            let body = &out[end + 2..];
            let hdr = headers.clone().unwrap_or_default();
            prop_assert_eq!(body, &[&hdr[..], &payload, CRLF].concat()[..]);
        }

        /// Every `*_len` agrees with its encoder, whatever the fields.
        #[test]
        fn lengths_agree(
            subject in prop::collection::vec(any::<u8>(), 0..40),
            sid in prop::collection::vec(any::<u8>(), 0..12),
            reply in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
            headers in prop::collection::vec(any::<u8>(), 0..300),
            payload in prop::collection::vec(any::<u8>(), 0..3000),
        ) {
            let reply = reply.as_deref();
            let n = |f: &dyn Fn(&mut Vec<u8>)| { let mut o = Vec::new(); f(&mut o); o.len() };
            prop_assert_eq!(
                n(&|o| encode_msg(o, &subject, &sid, reply, &payload)),
                msg_len(&subject, &sid, reply, payload.len()));
            prop_assert_eq!(
                n(&|o| encode_msg_head(o, &subject, &sid, reply, payload.len())),
                msg_head_len(&subject, &sid, reply, payload.len()));
            prop_assert_eq!(
                n(&|o| encode_hmsg(o, &subject, &sid, reply, &headers, &payload)),
                hmsg_len(&subject, &sid, reply, headers.len(), payload.len()));
            prop_assert_eq!(
                n(&|o| encode_pub(o, &subject, reply, &payload)),
                pub_len(&subject, reply, payload.len()));
            prop_assert_eq!(
                n(&|o| encode_hpub(o, &subject, reply, &headers, &payload)),
                hpub_len(&subject, reply, headers.len(), payload.len()));
            prop_assert_eq!(
                n(&|o| encode_no_responders(o, &subject, &sid)),
                no_responders_len(&subject, &sid));
        }
    }
}
