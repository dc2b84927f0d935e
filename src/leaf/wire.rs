//! The leaf-node protocol as the leaf (tern) speaks it to its hub: what the
//! hub sends, decoded into [`HubOp`]s, and what tern sends, encoded. No I/O.
//!
//! nats-server 2.10's leafnode port is the reference (`server/leafnode.go`,
//! the leafnode parts of `server/parser.go`). The hub sends:
//!
//! * `INFO {json}` first, and again when something changes;
//! * `PING`, `PONG`, `+OK`, `-ERR '<text>'` as on a client connection;
//! * `LS+ <subject>` and `LS+ <subject> <queue> <weight>`: interest (a
//!   queue group's `LS+` comes again when its weight changes);
//! * `LS- <subject> [queue]`: interest gone;
//! * `LMSG <subject> [reply] <size>`, or with queue groups
//!   `LMSG <subject> + <reply> <queue>... <size>` /
//!   `LMSG <subject> | <queue>... <size>`: a message, then `size` payload
//!   bytes and `\r\n`. The queues name the groups the hub chose this leaf
//!   for; without them the message is for plain subscribers only.
//! * `HMSG`, the same with `<header size> <total size>` at the end.
//!
//! Tern sends `CONNECT {json}` (after the hub's `INFO`), `LS+`/`LS-` for the
//! relay's interest, `LMSG`/`HMSG` for messages, `PING`/`PONG`.
//!
//! The framing is the NATS client protocol's (control lines ended by `\n`
//! with an optional `\r`, counted payloads), so a connection to the hub is
//! framed by [`crate::protocol::nats::new_framer`].

use std::ops::Range;

use bytes::Bytes;
use serde::Serialize;

use crate::framing::{Frame, Frames};
use crate::protocol::nats::{counted_payload, parse_size, PayloadError, MAX_CONTROL_LINE};
use crate::protocol::Message;

/// Queue names an `LMSG` may list; nats-server has no limit, but a hub
/// sends one per queue group of the leaf's that matches, and more than
/// this on one message is taken as a broken hub.
pub const MAX_QUEUES: usize = 64;

/// The largest queue weight written in an `LS+`: nats-server reads sizes of
/// at most 9 digits, so a larger weight (a billion members) is written as
/// this.
pub const MAX_WEIGHT: u32 = 999_999_999;

/// What the hub sent that tern cannot accept; the link is closed and
/// opened again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unknown operation from the hub: {0:?}")]
    Unknown(String),
    #[error("malformed {verb} from the hub: {line:?}")]
    Malformed { verb: &'static str, line: String },
    #[error("a control line from the hub longer than {MAX_CONTROL_LINE} bytes")]
    LineTooLong,
    #[error("a message from the hub of {size} bytes, over this relay's --max-frame ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("a message payload from the hub not ended by \\r\\n")]
    BadPayloadEnd,
}

/// One decoded operation from the hub, borrowing from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubOp<'a> {
    /// `INFO`: its JSON.
    Info(&'a [u8]),
    Ping,
    Pong,
    /// `-ERR`: its text, quotes removed.
    Err(&'a [u8]),
    /// `LS+`: interest in `subject`; for a queue group, its name and how
    /// many members the hub's side has.
    Sub {
        subject: &'a [u8],
        queue: Option<&'a [u8]>,
        weight: u32,
    },
    /// `LS-`: the interest is gone.
    Unsub {
        subject: &'a [u8],
        queue: Option<&'a [u8]>,
    },
    /// `LMSG`/`HMSG` with its payload.
    Msg {
        msg: Message<'a>,
        /// The queue groups the hub chose this leaf for.
        queues: QueueNames<'a>,
        /// The read chunk the payload lies in.
        chunk: &'a Bytes,
    },
}

/// The queue names of an `LMSG`: places in its control line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueNames<'a> {
    line: &'a [u8],
    places: &'a [Range<usize>],
}

impl<'a> QueueNames<'a> {
    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    pub fn len(&self) -> usize {
        self.places.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let line = self.line;
        self.places.iter().map(move |r| &line[r.clone()])
    }

    /// Whether `name` is one of them.
    pub fn contains(&self, name: &[u8]) -> bool {
        self.iter().any(|q| q == name)
    }
}

/// A message's control line, as places in [`HubDecoder::line`].
#[derive(Debug, Clone)]
struct MsgHead {
    subject: Range<usize>,
    reply: Option<Range<usize>>,
    header_len: usize,
    size: usize,
}

/// Decodes what the hub sends on one link (see the module docs).
///
/// Like [`crate::protocol::nats::Decoder`], a small state machine over the
/// framer's two modes; fields are slices of the chunk the control line was
/// read into, which the decoder holds until the next call.
#[derive(Debug)]
pub struct HubDecoder {
    /// Largest message (headers included) accepted: this relay's
    /// `--max-frame`.
    max_payload: usize,
    /// The chunk the current operation's fields lie in.
    line: Bytes,
    /// A message whose control line was read and whose payload is awaited.
    pending: Option<MsgHead>,
    /// Queue names of the message being decoded, as places in `line`.
    queues: Vec<Range<usize>>,
}

/// The fields of `arg` (split at runs of spaces, tabs and stray `\r` or
/// `\n`, as nats-server splits them), as places shifted by `base`.
fn fields(arg: &[u8], base: usize, out: &mut Vec<Range<usize>>) {
    out.clear();
    let mut start = None;
    for (i, &b) in arg.iter().enumerate() {
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            if let Some(s) = start.take() {
                out.push(base + s..base + i);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push(base + s..base + arg.len());
    }
}

impl HubDecoder {
    /// A decoder that refuses messages over `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        HubDecoder {
            max_payload,
            line: Bytes::new(),
            pending: None,
            queues: Vec::new(),
        }
    }

    /// The next operation, an error (after which the link must close), or
    /// `None` when the framer holds no complete operation.
    pub fn next<'a>(
        &'a mut self,
        frames: &'a mut Frames<'_>,
    ) -> Option<Result<HubOp<'a>, WireError>> {
        if self.pending.is_none() {
            self.line = Bytes::new();
            loop {
                let frame = match frames.next_frame()? {
                    Ok(frame) => frame,
                    Err(_) => return Some(Err(WireError::LineTooLong)),
                };
                match self.parse_line(frame) {
                    Ok(None) => continue,
                    Ok(Some(Line::Msg(head))) => {
                        self.pending = Some(head);
                        break;
                    }
                    Ok(Some(Line::Op(op))) => return Some(Ok(self.op(op))),
                    Err(e) => return Some(Err(e)),
                }
            }
        }
        self.read_payload(frames)
    }

    fn op(&self, op: LineOp) -> HubOp<'_> {
        let at = |r: Range<usize>| &self.line[r];
        match op {
            LineOp::Info(r) => HubOp::Info(at(r)),
            LineOp::Ping => HubOp::Ping,
            LineOp::Pong => HubOp::Pong,
            LineOp::Err(r) => HubOp::Err(at(r)),
            LineOp::Sub {
                subject,
                queue,
                weight,
            } => HubOp::Sub {
                subject: at(subject),
                queue: queue.map(at),
                weight,
            },
            LineOp::Unsub { subject, queue } => HubOp::Unsub {
                subject: at(subject),
                queue: queue.map(at),
            },
        }
    }

    /// Decodes one control line; `Ok(None)` for one that is ignored.
    fn parse_line(&mut self, frame: Frame<'_>) -> Result<Option<Line>, WireError> {
        let text = frame.as_slice();
        let (chunk, place) = frame.chunk();
        let verb_end = text
            .iter()
            .position(|&b| b == b' ' || b == b'\t')
            .unwrap_or(text.len());
        let verb = &text[..verb_end];
        let arg_start = text[verb_end..]
            .iter()
            .position(|&b| b != b' ' && b != b'\t')
            .map_or(text.len(), |i| verb_end + i);
        let arg = &text[arg_start..];
        let base = place.start + arg_start;
        let is = |name: &[u8]| verb.eq_ignore_ascii_case(name);
        if is(b"PING") {
            return Ok(Some(Line::Op(LineOp::Ping)));
        }
        if is(b"PONG") {
            return Ok(Some(Line::Op(LineOp::Pong)));
        }
        if is(b"+OK") {
            return Ok(None);
        }
        if arg.len() > MAX_CONTROL_LINE && !is(b"INFO") {
            return Err(WireError::LineTooLong);
        }
        let malformed = |verb: &'static str| WireError::Malformed {
            verb,
            line: String::from_utf8_lossy(text).into_owned(),
        };
        let line = if is(b"INFO") {
            Line::Op(LineOp::Info(base..base + arg.len()))
        } else if is(b"-ERR") {
            let trimmed = arg.trim_ascii();
            let inner = trimmed
                .strip_prefix(b"'")
                .and_then(|t| t.strip_suffix(b"'"))
                .unwrap_or(trimmed);
            let start = base + (inner.as_ptr() as usize - arg.as_ptr() as usize);
            Line::Op(LineOp::Err(start..start + inner.len()))
        } else if is(b"LS+") {
            fields(arg, base, &mut self.queues);
            let f = &self.queues;
            match f.len() {
                1 => Line::Op(LineOp::Sub {
                    subject: f[0].clone(),
                    queue: None,
                    weight: 1,
                }),
                3 => {
                    let weight = std::str::from_utf8(&chunk[f[2].clone()])
                        .ok()
                        .filter(|w| w.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|w| w.parse::<u32>().ok())
                        .ok_or_else(|| malformed("LS+"))?;
                    Line::Op(LineOp::Sub {
                        subject: f[0].clone(),
                        queue: Some(f[1].clone()),
                        weight,
                    })
                }
                _ => return Err(malformed("LS+")),
            }
        } else if is(b"LS-") {
            fields(arg, base, &mut self.queues);
            let f = &self.queues;
            match f.len() {
                1 => Line::Op(LineOp::Unsub {
                    subject: f[0].clone(),
                    queue: None,
                }),
                2 => Line::Op(LineOp::Unsub {
                    subject: f[0].clone(),
                    queue: Some(f[1].clone()),
                }),
                _ => return Err(malformed("LS-")),
            }
        } else if is(b"LMSG") || is(b"HMSG") {
            let headers = is(b"HMSG");
            let verb = if headers { "HMSG" } else { "LMSG" };
            Line::Msg(
                self.parse_msg(headers, arg, base, chunk)
                    .ok_or_else(|| malformed(verb))??,
            )
        } else {
            return Err(WireError::Unknown(
                String::from_utf8_lossy(&text[..text.len().min(64)]).into_owned(),
            ));
        };
        // The fields are places in this chunk: keep it (shared).
        self.line = chunk.clone();
        Ok(Some(line))
    }

    /// The arguments of `LMSG`/`HMSG` (see the module docs); `None` if
    /// malformed. Leaves the queue names in `self.queues`.
    fn parse_msg(
        &mut self,
        headers: bool,
        arg: &[u8],
        base: usize,
        chunk: &Bytes,
    ) -> Option<Result<MsgHead, WireError>> {
        let mut f = std::mem::take(&mut self.queues);
        fields(arg, base, &mut f);
        let sizes = if headers { 2 } else { 1 };
        let text = |r: &Range<usize>| &chunk[r.clone()];
        let result = (|| {
            if f.len() < 1 + sizes {
                return None;
            }
            let subject = f[0].clone();
            let size_fields = f.split_off(f.len() - sizes);
            let size = parse_size(text(size_fields.last()?))?;
            let header_len = if headers {
                let h = parse_size(text(&size_fields[0]))?;
                if h > size {
                    return None;
                }
                h
            } else {
                0
            };
            // f now holds the subject and what comes between it and the
            // sizes: nothing, a reply, or `+ reply q...` / `| q...`.
            // As nats-server: one field between subject and sizes is the
            // reply, whatever it says (`+` and `|` included).
            let (reply, queues_from) = match f.len() {
                1 => (None, 1),
                2 => (Some(f[1].clone()), 2),
                _ => match text(&f[1]) {
                    b"+" if f.len() >= 3 => (Some(f[2].clone()), 3),
                    b"|" => (None, 2),
                    _ => return None,
                },
            };
            f.drain(..queues_from);
            if f.len() > MAX_QUEUES {
                return None;
            }
            if size > self.max_payload {
                return Some(Err(WireError::TooLarge {
                    size,
                    max: self.max_payload,
                }));
            }
            Some(Ok(MsgHead {
                subject,
                reply,
                header_len,
                size,
            }))
        })();
        self.queues = f;
        result
    }

    /// Takes the awaited payload, if it has arrived.
    fn read_payload<'a>(
        &'a mut self,
        frames: &'a mut Frames<'_>,
    ) -> Option<Result<HubOp<'a>, WireError>> {
        let size = self.pending.as_ref()?.size;
        let (chunk, body) = match counted_payload(frames, size)? {
            Ok(payload) => payload,
            Err(PayloadError::TooLong) => {
                self.pending = None;
                return Some(Err(WireError::TooLarge {
                    size,
                    max: self.max_payload,
                }));
            }
            Err(PayloadError::BadEnd) => return Some(Err(WireError::BadPayloadEnd)),
        };
        let head = self.pending.take()?;
        let line = &self.line;
        Some(Ok(HubOp::Msg {
            msg: Message {
                subject: &line[head.subject],
                reply: head.reply.map(|r| &line[r]),
                headers: (head.header_len > 0).then(|| &body[..head.header_len]),
                payload: &body[head.header_len..size],
            },
            queues: QueueNames {
                line,
                places: &self.queues,
            },
            chunk,
        }))
    }
}

/// A decoded control line.
enum Line {
    Msg(MsgHead),
    Op(LineOp),
}

enum LineOp {
    Info(Range<usize>),
    Ping,
    Pong,
    Err(Range<usize>),
    Sub {
        subject: Range<usize>,
        queue: Option<Range<usize>>,
        weight: u32,
    },
    Unsub {
        subject: Range<usize>,
        queue: Option<Range<usize>>,
    },
}

/// What the hub says of itself in `INFO` (the fields tern uses).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct HubInfo {
    pub server_id: String,
    pub server_name: String,
    pub version: String,
    pub tls_required: bool,
    pub tls_available: bool,
    pub auth_required: bool,
    pub headers: bool,
    pub max_payload: u64,
    pub proto: i32,
}

impl HubInfo {
    /// Decodes an `INFO`'s JSON.
    pub fn parse(json: &[u8]) -> Result<HubInfo, String> {
        serde_json::from_slice(json).map_err(|e| e.to_string())
    }
}

/// tern's `CONNECT` to its hub: nats-server's leaf fields (no `lang`, which
/// tells a client from a leaf on the hub's side).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LeafConnect<'a> {
    pub version: &'a str,
    pub server_id: &'a str,
    pub name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub user: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub pass: &'a str,
    #[serde(rename = "auth_token", skip_serializing_if = "str::is_empty")]
    pub token: &'a str,
    pub headers: bool,
    /// Always `off`: tern does not compress.
    pub compress_mode: &'a str,
    pub protocol: i32,
}

impl LeafConnect<'_> {
    /// `CONNECT {json}\r\n`.
    pub fn encode(&self) -> Vec<u8> {
        let mut line = b"CONNECT ".to_vec();
        serde_json::to_writer(&mut line, self).expect("a CONNECT serializes");
        line.extend_from_slice(b"\r\n");
        line
    }
}

/// Appends `LS+ <subject>\r\n`, or `LS+ <subject> <queue> <weight>\r\n`
/// (the weight at most [`MAX_WEIGHT`]).
pub fn encode_sub(out: &mut Vec<u8>, subject: &[u8], queue: Option<(&[u8], u32)>) {
    out.extend_from_slice(b"LS+ ");
    out.extend_from_slice(subject);
    if let Some((queue, weight)) = queue {
        out.push(b' ');
        out.extend_from_slice(queue);
        out.push(b' ');
        out.extend_from_slice(weight.min(MAX_WEIGHT).to_string().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `LS- <subject> [queue]\r\n`.
pub fn encode_unsub(out: &mut Vec<u8>, subject: &[u8], queue: Option<&[u8]>) {
    out.extend_from_slice(b"LS- ");
    out.extend_from_slice(subject);
    if let Some(queue) = queue {
        out.push(b' ');
        out.extend_from_slice(queue);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the control line of a message to the hub: `LMSG` (or `HMSG`
/// when `header_len` is given) with the reply and queue forms of the
/// module docs, for `total` bytes of headers and payload.
pub fn encode_msg_head<'q>(
    out: &mut Vec<u8>,
    subject: &[u8],
    reply: Option<&[u8]>,
    queues: impl IntoIterator<Item = &'q [u8]>,
    header_len: Option<usize>,
    total: usize,
) {
    out.extend_from_slice(if header_len.is_some() {
        b"HMSG "
    } else {
        b"LMSG "
    });
    out.extend_from_slice(subject);
    let mut queues = queues.into_iter().peekable();
    if queues.peek().is_some() {
        match reply {
            Some(reply) => {
                out.extend_from_slice(b" + ");
                out.extend_from_slice(reply);
            }
            None => out.extend_from_slice(b" |"),
        }
        for q in queues {
            out.push(b' ');
            out.extend_from_slice(q);
        }
    } else if let Some(reply) = reply {
        out.push(b' ');
        out.extend_from_slice(reply);
    }
    if let Some(h) = header_len {
        out.push(b' ');
        out.extend_from_slice(h.to_string().as_bytes());
    }
    out.push(b' ');
    out.extend_from_slice(total.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::nats::new_framer;

    /// What a decoded operation says, owned.
    #[derive(Debug, PartialEq, Eq)]
    enum Ev {
        Info(String),
        Ping,
        Pong,
        Err(String),
        Sub(String, Option<String>, u32),
        Unsub(String, Option<String>),
        Msg {
            subject: String,
            reply: Option<String>,
            headers: Option<String>,
            payload: String,
            queues: Vec<String>,
        },
        Failed(WireError),
    }

    fn s(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    /// Decodes `stream` fed in pieces of `step` bytes.
    fn decode(stream: &[u8], step: usize) -> Vec<Ev> {
        let mut framer = new_framer(1024);
        let mut decoder = HubDecoder::new(1024);
        let mut out = Vec::new();
        for piece in stream.chunks(step.max(1)) {
            framer.push(piece);
            let mut frames = framer.frames();
            while let Some(item) = decoder.next(&mut frames) {
                let ev = match item {
                    Ok(HubOp::Info(j)) => Ev::Info(s(j)),
                    Ok(HubOp::Ping) => Ev::Ping,
                    Ok(HubOp::Pong) => Ev::Pong,
                    Ok(HubOp::Err(t)) => Ev::Err(s(t)),
                    Ok(HubOp::Sub {
                        subject,
                        queue,
                        weight,
                    }) => Ev::Sub(s(subject), queue.map(s), weight),
                    Ok(HubOp::Unsub { subject, queue }) => Ev::Unsub(s(subject), queue.map(s)),
                    Ok(HubOp::Msg { msg, queues, .. }) => Ev::Msg {
                        subject: s(msg.subject),
                        reply: msg.reply.map(s),
                        headers: msg.headers.map(s),
                        payload: s(msg.payload),
                        queues: queues.iter().map(s).collect(),
                    },
                    Err(e) => {
                        out.push(Ev::Failed(e));
                        return out;
                    }
                };
                out.push(ev);
            }
        }
        out
    }

    fn msg(
        subject: &str,
        reply: Option<&str>,
        headers: Option<&str>,
        payload: &str,
        queues: &[&str],
    ) -> Ev {
        Ev::Msg {
            subject: subject.into(),
            reply: reply.map(Into::into),
            headers: headers.map(Into::into),
            payload: payload.into(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
        }
    }

    #[test]
    fn every_operation_in_every_split() {
        let stream = b"INFO {\"server_id\":\"x\"}\r\nPING\r\nPONG\r\n+OK\r\n\
            LS+ a.b\r\nLS+ jobs.* workers 3\r\nLS- a.b\r\nLS- jobs.* workers\r\n\
            LMSG a.b 5\r\nhello\r\nLMSG a.b _INBOX.1 2\r\nhi\r\n\
            LMSG jobs.x | workers other 3\r\nabc\r\nLMSG jobs.x + _R.1 workers 0\r\n\r\n\
            HMSG h 12 14\r\nNATS/1.0\r\n\r\nok\r\nHMSG h | q 12 12\r\nNATS/1.0\r\n\r\n\r\n\
            -ERR 'Loop detected'\r\n";
        let want = vec![
            Ev::Info("{\"server_id\":\"x\"}".into()),
            Ev::Ping,
            Ev::Pong,
            Ev::Sub("a.b".into(), None, 1),
            Ev::Sub("jobs.*".into(), Some("workers".into()), 3),
            Ev::Unsub("a.b".into(), None),
            Ev::Unsub("jobs.*".into(), Some("workers".into())),
            msg("a.b", None, None, "hello", &[]),
            msg("a.b", Some("_INBOX.1"), None, "hi", &[]),
            msg("jobs.x", None, None, "abc", &["workers", "other"]),
            msg("jobs.x", Some("_R.1"), None, "", &["workers"]),
            msg("h", None, Some("NATS/1.0\r\n\r\n"), "ok", &[]),
            msg("h", None, Some("NATS/1.0\r\n\r\n"), "", &["q"]),
            Ev::Err("Loop detected".into()),
        ];
        for step in [1, 2, 3, 7, 16, stream.len()] {
            assert_eq!(decode(stream, step), want, "fed {step} bytes at a time");
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &b"LS+\r\n"[..],
            b"LS+ a q\r\n",
            b"LS+ a q x\r\n",
            b"LS- a b c\r\n",
            b"LMSG a\r\n",
            b"LMSG a x\r\n",
            b"LMSG a * q 3\r\n",
            b"HMSG a 5 3\r\n",
            b"HELLO\r\n",
            b"LMSG a 3\r\nabcXY",
        ] {
            let events = decode(bad, 64);
            assert!(
                matches!(events.last(), Some(Ev::Failed(_))),
                "{:?} gave {events:?}",
                s(bad)
            );
        }
        assert_eq!(
            decode(b"LMSG a 2048\r\n", 64),
            vec![Ev::Failed(WireError::TooLarge {
                size: 2048,
                max: 1024
            })]
        );
    }

    #[test]
    fn encoded_lines_decode_back() {
        let mut out = Vec::new();
        encode_sub(&mut out, b"a.*", None);
        encode_sub(&mut out, b"jobs", Some((b"w", 2)));
        encode_unsub(&mut out, b"a.*", None);
        encode_unsub(&mut out, b"jobs", Some(b"w"));
        /// Reply, queues, header length.
        type Form<'a> = (Option<&'a [u8]>, &'a [&'a [u8]], Option<usize>);
        let forms: [Form<'_>; 5] = [
            (None, &[], None),
            (Some(b"r"), &[], None),
            (None, &[b"w", b"v"], None),
            (Some(b"r"), &[b"w"], None),
            (Some(b"r"), &[b"w"], Some(5)),
        ];
        for (reply, queues, header_len) in forms {
            let body: &[u8] = if header_len.is_some() {
                b"H\r\n\r\nxyz"
            } else {
                b"xyz"
            };
            encode_msg_head(
                &mut out,
                b"s.t",
                reply,
                queues.iter().copied(),
                header_len,
                body.len(),
            );
            out.extend_from_slice(body);
            out.extend_from_slice(b"\r\n");
        }
        let events = decode(&out, 5);
        assert_eq!(
            events[..4],
            [
                Ev::Sub("a.*".into(), None, 1),
                Ev::Sub("jobs".into(), Some("w".into()), 2),
                Ev::Unsub("a.*".into(), None),
                Ev::Unsub("jobs".into(), Some("w".into())),
            ]
        );
        assert_eq!(events[4], msg("s.t", None, None, "xyz", &[]));
        assert_eq!(events[5], msg("s.t", Some("r"), None, "xyz", &[]));
        assert_eq!(events[6], msg("s.t", None, None, "xyz", &["w", "v"]));
        assert_eq!(events[7], msg("s.t", Some("r"), None, "xyz", &["w"]));
        assert_eq!(
            events[8],
            msg("s.t", Some("r"), Some("H\r\n\r\n"), "xyz", &["w"])
        );
    }

    #[test]
    fn connect_has_the_leaf_fields_and_no_lang() {
        let c = LeafConnect {
            version: "2.10.0",
            server_id: "ID",
            name: "tern",
            user: "u",
            pass: "p",
            token: "",
            headers: true,
            compress_mode: "off",
            protocol: 1,
        };
        let line = String::from_utf8(c.encode()).unwrap();
        assert!(
            line.starts_with("CONNECT {") && line.ends_with("}\r\n"),
            "{line}"
        );
        let json: serde_json::Value = serde_json::from_str(&line[8..line.len() - 2]).unwrap();
        assert_eq!(json["user"], "u");
        assert_eq!(json["compress_mode"], "off");
        assert!(json.get("lang").is_none());
        assert!(json.get("auth_token").is_none());
        let info = HubInfo::parse(br#"{"server_id":"S","headers":true,"tls_required":true,"max_payload":1048576,"extra":[1]}"#).unwrap();
        assert!(info.headers && info.tls_required);
        assert_eq!(info.max_payload, 1 << 20);
    }
}
