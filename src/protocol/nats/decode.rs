//! The NATS decoder ([`Decoder`]): control lines and counted payloads
//! from a [`Framer`].

use std::ops::Range;

use bytes::Bytes;

use super::{
    is_valid_literal_subject, is_valid_sub_subject, ConnectOptions, NatsError, Op, Publish, CRLF,
    MAX_CONTROL_LINE,
};
use crate::framing::{Frame, Framer, Frames, Mode, Terminator};
use crate::protocol::Message;

/// Slack over [`MAX_CONTROL_LINE`] for what precedes the arguments (verb
/// and separators) and the `\r` before the `\n`, when judging a line that
/// has not ended yet ([`Decoder::check_partial`]).
const PARTIAL_SLACK: usize = 16;

/// The `max_frame` a NATS connection's framer needs: a payload with its
/// `\r\n`, or a control line, whichever is longer.
pub fn framer_max_frame(max_payload: usize) -> usize {
    max_payload
        .saturating_add(2)
        .max(MAX_CONTROL_LINE + PARTIAL_SLACK)
}

/// A framer for a NATS connection: terminator `\n` (a `\r` before it is
/// dropped), frames up to [`framer_max_frame`]`(max_payload)`.
pub fn new_framer(max_payload: usize) -> Framer {
    Framer::new(
        Terminator::new(b"\n").expect("a one-byte terminator"),
        framer_max_frame(max_payload),
    )
}

/// Capacity of [`Decoder::line`] kept from one operation to the next: a
/// `PUB` line with a short subject and reply fits, and 100,000 connections
/// that each once sent a 4 KiB line do not keep 400 MB.
const KEPT_LINE_CAPACITY: usize = 256;

/// Decodes one NATS connection's input (see the [module
/// docs](crate::protocol::nats) for what is accepted).
///
/// A small state machine over the framer's two modes: between operations
/// it reads a control line (terminator mode); a `PUB`/`HPUB` line switches
/// the framer to [`Mode::Count`] for the payload and its `\r\n`, and the
/// counted frame switches it back by itself. Fields are slices of the
/// control line: read where it lies in the payload's chunk when the
/// payload arrived with it (the usual case), else in a copy the decoder
/// keeps until the next operation.
#[derive(Debug)]
pub struct Decoder {
    /// Largest payload (headers included) a `PUB`/`HPUB` may announce: the
    /// `max_payload` of `INFO`.
    max_payload: usize,
    /// The connection's options: nats-server's defaults until `CONNECT`,
    /// then each `CONNECT` merged over them. `headers` decides whether
    /// `HPUB` is allowed, `pedantic` whether publish subjects are checked.
    options: ConnectOptions,
    /// Whether a `CONNECT` was accepted.
    connected: bool,
    /// A copy of the current operation's control line, when its fields are
    /// not read from the payload's chunk (see [`PubHead::line_at`]). A
    /// copy, not a shared reference to the read chunk: a `PUB` whose
    /// payload straddles two reads would otherwise pin the chunk, and the
    /// framer could not reuse its read buffer (it allocated and zeroed a
    /// fresh one for almost every read). Holds at most one control line
    /// ([`MAX_CONTROL_LINE`] and the verb), and keeps the capacity of one
    /// of at most [`KEPT_LINE_CAPACITY`] bytes between operations.
    line: Vec<u8>,
    /// A publish whose control line was read and whose payload is awaited.
    pending: Option<PubHead>,
    /// An error that closes the connection was returned: nothing more is
    /// decoded.
    closed: bool,
}

/// A publish's control line, as places in that line.
#[derive(Debug, Clone)]
struct PubHead {
    subject: Range<usize>,
    reply: Option<Range<usize>>,
    /// Header bytes at the front of the payload (0 for `PUB`).
    header_len: usize,
    /// Payload bytes, headers included, without the `\r\n`.
    size: usize,
    /// Where the line starts in its read chunk, when the payload and its
    /// `\r\n` arrived in that same chunk: the payload frame is cut from it,
    /// and the line's places are read there (no copy, and no reference
    /// kept). `None`: the places are in [`Decoder::line`].
    line_at: Option<usize>,
}

/// A control line, decoded into places in the line.
enum Line {
    /// A publish: the payload is to be read next. The error, if any, is
    /// sent first and does not close (a pedantic client's bad subject).
    Pub(PubHead, Option<NatsError>),
    /// Any other operation, complete with its line.
    Op(LineOp),
}

/// An operation that is all in its control line.
enum LineOp {
    Ping,
    Pong,
    Connect,
    Sub {
        subject: Range<usize>,
        queue: Option<Range<usize>>,
        sid: Range<usize>,
    },
    Unsub {
        sid: Range<usize>,
        max_msgs: Option<u64>,
    },
}

/// Verbs, found by their first letters as nats-server's parser does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Pub,
    Hpub,
    Sub,
    Unsub,
    Connect,
    Info,
    Ping,
    Pong,
    Ok,
    Err,
}

impl Verb {
    /// The verb a control line starts with, and where its arguments start
    /// (after the separators). `None`: not an operation (`Unknown Protocol
    /// Operation`).
    fn of(line: &[u8]) -> Option<(Verb, usize)> {
        // (verb, spelling, whether a space or tab must follow it)
        const VERBS: [(Verb, &[u8], bool); 10] = [
            (Verb::Pub, b"PUB", true),
            (Verb::Hpub, b"HPUB", true),
            (Verb::Sub, b"SUB", true),
            (Verb::Unsub, b"UNSUB", true),
            (Verb::Ping, b"PING", false),
            (Verb::Pong, b"PONG", false),
            (Verb::Connect, b"CONNECT", false),
            (Verb::Info, b"INFO", false),
            (Verb::Ok, b"+OK", false),
            (Verb::Err, b"-ERR", true),
        ];
        // The hot path first: `PUB ` needs no search.
        if line.len() > 3 && is_sep(line[3]) && line[..3].eq_ignore_ascii_case(b"PUB") {
            return Some((Verb::Pub, PUB_SEPS.skip(line, 4)));
        }
        let (verb, spelling, needs_sep) = VERBS
            .into_iter()
            .find(|(_, s, _)| line.len() >= s.len() && line[..s.len()].eq_ignore_ascii_case(s))?;
        let after = spelling.len();
        if needs_sep && !line.get(after).copied().is_some_and(is_sep) {
            return None;
        }
        Some((verb, PUB_SEPS.skip(line, after)))
    }
}

/// Field separators of `PUB`/`HPUB` (and between a verb and its
/// arguments).
#[inline]
fn is_sep(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Field separators of `SUB`/`UNSUB` (nats-server's `splitArg`).
fn is_sub_sep(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// A set of field separators: which bytes they are, and a search for the
/// first of them (the two agree; the search may be faster than asking
/// byte by byte).
#[derive(Clone, Copy)]
struct Separators {
    is: fn(u8) -> bool,
    /// Where the first separator of a slice is, or its length if none.
    find: fn(&[u8]) -> usize,
}

impl Separators {
    /// The index of the first byte at or after `from` that is not a
    /// separator.
    #[inline]
    fn skip(self, line: &[u8], mut from: usize) -> usize {
        // A plain loop: `take_while(..).count()` here cost about 40 more
        // instructions per NATS delivery (callgrind, 1,891 against 1,850).
        while from < line.len() && (self.is)(line[from]) {
            from += 1;
        }
        from
    }
}

/// Spaces and tabs: between the fields of `PUB`/`HPUB`, and after a verb.
const PUB_SEPS: Separators = Separators {
    is: is_sep,
    find: find_space_or_tab,
};

/// What separates the fields of `SUB`/`UNSUB`.
const SUB_SEPS: Separators = Separators {
    is: is_sub_sep,
    find: find_sub_sep,
};

/// Splits `arg` into fields at runs of separators, storing the first
/// `out.len()` as ranges offset by `base`. Returns how many fields there
/// are in all (possibly more than were stored).
#[inline]
fn fields(arg: &[u8], seps: Separators, base: usize, out: &mut [Range<usize>]) -> usize {
    let mut n = 0;
    let mut i = 0;
    loop {
        i = seps.skip(arg, i);
        if i == arg.len() {
            return n;
        }
        let start = i;
        i += (seps.find)(&arg[i..]);
        if let Some(slot) = out.get_mut(n) {
            *slot = base + start..base + i;
        }
        n += 1;
    }
}

/// Where the first space or tab of `s` is (`s.len()` if none), eight bytes
/// at a time: a `PUB` line is mostly its subject, and a byte-at-a-time
/// split was about 6% of the NATS path's instructions (callgrind, 1→1).
#[inline]
fn find_space_or_tab(s: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is zero: the high bit of that byte is set here. Bytes
    // above a zero byte may be set too (the borrow runs upwards), never
    // bytes below it, so the lowest set bit is exact.
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut words = s.chunks_exact(8);
    for (k, word) in words.by_ref().enumerate() {
        let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let found =
            zero_bytes(w ^ (ONES * u64::from(b' '))) | zero_bytes(w ^ (ONES * u64::from(b'\t')));
        if found != 0 {
            return k * 8 + found.trailing_zeros() as usize / 8;
        }
    }
    let rest = words.remainder();
    s.len() - rest.len() + rest.iter().position(|&b| is_sep(b)).unwrap_or(rest.len())
}

/// Where the first `SUB`/`UNSUB` separator of `s` is (`s.len()` if none).
fn find_sub_sep(s: &[u8]) -> usize {
    s.iter().position(|&b| is_sub_sep(b)).unwrap_or(s.len())
}

/// nats-server's `parseSize`: 1 to 9 ASCII digits, else `None` (also the
/// leaf link's sizes).
#[inline]
pub(crate) fn parse_size(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + usize::from(b - b'0'))
    })
}

impl Decoder {
    /// A decoder for a new connection that refuses payloads over
    /// `max_payload` bytes (headers included).
    pub fn new(max_payload: usize) -> Self {
        Decoder {
            max_payload,
            options: ConnectOptions::default(),
            connected: false,
            line: Vec::new(),
            pending: None,
            closed: false,
        }
    }

    /// The `max_payload` this decoder enforces.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The connection's options (nats-server's defaults before `CONNECT`).
    pub fn options(&self) -> &ConnectOptions {
        &self.options
    }

    /// Whether a `CONNECT` was accepted.
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Whether a publish's control line was read and its payload is still
    /// awaited.
    pub fn awaiting_payload(&self) -> bool {
        self.pending.is_some()
    }

    /// The next operation, the next error, or `None` when the framer holds
    /// no complete one (read more, then call again) or after an error that
    /// closes.
    ///
    /// A non-closing error ([`NatsError::closes`] false) is followed by
    /// whatever comes next; for `Invalid Publish Subject` that is the
    /// publish itself, which nats-server still delivers.
    pub fn next<'a>(&'a mut self, frames: &'a mut Frames<'_>) -> Option<Result<Op<'a>, NatsError>> {
        if self.closed {
            return None;
        }
        if self.pending.is_none() {
            // The previous operation's borrow has ended: a long line's copy
            // is let go, so an idle connection keeps at most a short one.
            if self.line.capacity() > KEPT_LINE_CAPACITY {
                self.line = Vec::new();
            }
            let line = match self.read_line(frames)? {
                Ok(line) => line,
                Err(e) => return Some(Err(self.fail(e))),
            };
            return match line {
                Line::Pub(head, warning) => {
                    self.pending = Some(head);
                    match warning {
                        Some(e) => Some(Err(e)),
                        None => self.read_payload(frames),
                    }
                }
                Line::Op(op) => Some(Ok(self.op(op))),
            };
        }
        self.read_payload(frames)
    }

    /// The [`Op`] of a decoded line, borrowing its fields.
    fn op(&self, op: LineOp) -> Op<'_> {
        let at = |r: Range<usize>| &self.line[r];
        match op {
            LineOp::Ping => Op::Ping,
            LineOp::Pong => Op::Pong,
            LineOp::Connect => Op::Connect(&self.options),
            LineOp::Sub {
                subject,
                queue,
                sid,
            } => Op::Sub {
                subject: at(subject),
                queue: queue.map(at),
                sid: at(sid),
            },
            LineOp::Unsub { sid, max_msgs } => Op::Unsub {
                sid: at(sid),
                max_msgs,
            },
        }
    }

    /// Whether the line being received, not yet ended, is already too long
    /// (nats-server refuses those as they arrive, not only at their end).
    /// Call after [`Decoder::next`] returned `None`, with the framer it
    /// reads: then everything the framer holds is that partial line. The
    /// judgement is lenient by a few bytes, since the verb is not counted.
    pub fn check_partial(&mut self, framer: &Framer) -> Result<(), NatsError> {
        if self.closed
            || self.pending.is_some()
            || framer.mode() != Mode::Terminator
            || framer.buffered() <= MAX_CONTROL_LINE + PARTIAL_SLACK
        {
            return Ok(());
        }
        Err(self.fail(NatsError::MaxControlLine))
    }

    /// Notes an error; one that closes stops the decoder.
    fn fail(&mut self, e: NatsError) -> NatsError {
        if e.closes() {
            self.closed = true;
            self.pending = None;
            self.line = Vec::new();
        }
        e
    }

    /// Reads control lines until one is an operation (or an error), skipping
    /// those nats-server ignores.
    fn read_line(&mut self, frames: &mut Frames<'_>) -> Option<Result<Line, NatsError>> {
        loop {
            let frame = match frames.next_frame()? {
                Ok(frame) => frame,
                // Longer than the framer's maximum, which exceeds the
                // control-line limit.
                Err(_) => return Some(Err(NatsError::MaxControlLine)),
            };
            if let Some(line) = self.parse_line(frame) {
                return Some(line);
            }
        }
    }

    /// Decodes one control line; `None` for a line that is ignored.
    fn parse_line(&mut self, frame: Frame<'_>) -> Option<Result<Line, NatsError>> {
        let text = frame.as_slice();
        let Some((verb, at)) = Verb::of(text) else {
            return Some(Err(NatsError::UnknownProtocol));
        };
        let arg = &text[at..];
        match verb {
            // nats-server reads nothing after these up to the line end, so
            // sets no limit on them either.
            Verb::Ping => return Some(Ok(Line::Op(LineOp::Ping))),
            Verb::Pong => return Some(Ok(Line::Op(LineOp::Pong))),
            Verb::Ok => return None,
            _ => {}
        }
        if arg.len() > MAX_CONTROL_LINE {
            return Some(Err(NatsError::MaxControlLine));
        }
        let mut line = match verb {
            Verb::Pub | Verb::Hpub => self.parse_pub(verb == Verb::Hpub, arg, at),
            Verb::Sub => parse_sub(arg, at),
            Verb::Unsub => parse_unsub(arg, at),
            Verb::Connect => return Some(self.connect(arg)),
            Verb::Info => {
                // A client's INFO is ignored if nats-server can decode it.
                return match serde_json::from_slice::<Option<InfoObject>>(arg) {
                    Ok(_) => None,
                    Err(_) => Some(Err(NatsError::BadInfo)),
                };
            }
            Verb::Err => Err(NatsError::ClientError),
            Verb::Ping | Verb::Pong | Verb::Ok => unreachable!("handled above"),
        };
        match &mut line {
            // The payload is complete right behind the line: it will be
            // taken at once, from this same chunk.
            Ok(Line::Pub(head, None)) if frame.rest_of_chunk() >= head.size + CRLF.len() => {
                head.line_at = Some(frame.chunk().1.start);
            }
            // The fields are places in this line: keep a copy.
            Ok(_) => {
                self.line.clear();
                self.line.extend_from_slice(text);
            }
            Err(_) => {}
        }
        Some(line)
    }

    /// `PUB <subject> [reply] <size>` or `HPUB <subject> [reply]
    /// <header_len> <size>`, checked in nats-server's order.
    #[inline]
    fn parse_pub(&self, headers: bool, arg: &[u8], base: usize) -> Result<Line, NatsError> {
        if headers && !self.options.headers {
            return Err(NatsError::HeadersNotSupported);
        }
        let mut f: [Range<usize>; 4] = Default::default();
        let n = fields(arg, PUB_SEPS, 0, &mut f);
        let at = |r: &Range<usize>| &arg[r.clone()];
        let (subject, reply, header_len, size) = if headers {
            let (subject, reply, hdr, size) = match n {
                3 => (&f[0], None, &f[1], &f[2]),
                4 => (&f[0], Some(&f[1]), &f[2], &f[3]),
                _ => return Err(NatsError::HpubArgs),
            };
            let hdr = parse_size(at(hdr)).ok_or(NatsError::HpubHeaderSize)?;
            let size = parse_size(at(size)).ok_or(NatsError::HpubTotalSize)?;
            if hdr > size {
                return Err(NatsError::HpubHeaderTooLarge);
            }
            (subject, reply, hdr, size)
        } else {
            let (subject, reply, size) = match n {
                2 => (&f[0], None, &f[1]),
                3 => (&f[0], Some(&f[1]), &f[2]),
                _ => return Err(NatsError::PubArgs),
            };
            let size = parse_size(at(size)).ok_or(NatsError::PubSize)?;
            (subject, reply, 0, size)
        };
        if size > self.max_payload {
            return Err(NatsError::MaxPayload);
        }
        let warning = (self.options.pedantic && !is_valid_literal_subject(at(subject)))
            .then_some(NatsError::InvalidPublishSubject);
        let shift = |r: &Range<usize>| base + r.start..base + r.end;
        Ok(Line::Pub(
            PubHead {
                subject: shift(subject),
                reply: reply.map(shift),
                header_len,
                size,
                line_at: None,
            },
            warning,
        ))
    }

    /// `CONNECT {json}`: merged into the options, then checked as
    /// nats-server checks it.
    fn connect(&mut self, json: &[u8]) -> Result<Line, NatsError> {
        self.options
            .merge_json(json)
            .map_err(|_| NatsError::BadConnect)?;
        self.connected = true;
        if !(0..=1).contains(&self.options.protocol) {
            return Err(NatsError::BadClientProtocol);
        }
        if self.options.no_responders && !self.options.headers {
            return Err(NatsError::NoRespondersRequiresHeaders);
        }
        Ok(Line::Op(LineOp::Connect))
    }

    /// Takes the awaited payload frame, if it has arrived.
    fn read_payload<'a>(
        &'a mut self,
        frames: &'a mut Frames<'_>,
    ) -> Option<Result<Op<'a>, NatsError>> {
        let size = self.pending.as_ref()?.size;
        let (chunk, body) = match counted_payload(frames, size)? {
            Ok(payload) => payload,
            // Only with a framer smaller than `framer_max_frame` asks.
            Err(PayloadError::TooLong) => return Some(Err(self.fail(NatsError::MaxPayload))),
            Err(PayloadError::BadEnd) => {
                return Some(Err(self.fail(NatsError::UnknownProtocol)));
            }
        };
        let head = self.pending.take()?;
        // The line's places are in the payload's chunk, or in the copy.
        let line = match head.line_at {
            Some(at) => &chunk[at..],
            None => &self.line[..],
        };
        Some(Ok(Op::Pub(Publish {
            msg: Message {
                subject: &line[head.subject],
                reply: head.reply.map(|r| &line[r]),
                headers: (head.header_len > 0).then(|| &body[..head.header_len]),
                payload: &body[head.header_len..size],
            },
            chunk,
        })))
    }
}

/// Why a counted payload could not be taken ([`counted_payload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PayloadError {
    /// Longer than the framer's maximum.
    TooLong,
    /// Not followed by `\r\n`.
    BadEnd,
}

/// The next `size` bytes and the `\r\n` after them, read in
/// [`Mode::Count`] (the framer goes back to its terminator by itself): the
/// chunk they lie in and the payload without its `\r\n`. `None` until they
/// have all arrived. The mode is set on every call: harmless when already
/// set, and right even if the caller took frames through another `Frames`
/// meanwhile.
#[inline]
pub(crate) fn counted_payload<'a>(
    frames: &'a mut Frames<'_>,
    size: usize,
) -> Option<Result<(&'a Bytes, &'a [u8]), PayloadError>> {
    frames.set_mode(Mode::Count(size + 2));
    let frame = match frames.next_frame()? {
        Ok(frame) => frame,
        Err(_) => return Some(Err(PayloadError::TooLong)),
    };
    let (chunk, place) = frame.chunk();
    let body = &chunk[place];
    if &body[size..] != b"\r\n" {
        return Some(Err(PayloadError::BadEnd));
    }
    Some(Ok((chunk, &body[..size])))
}

/// `SUB <subject> [queue] <sid>`.
fn parse_sub(arg: &[u8], base: usize) -> Result<Line, NatsError> {
    let mut f: [Range<usize>; 3] = Default::default();
    let (subject, queue, sid) = match fields(arg, SUB_SEPS, base, &mut f) {
        2 => (f[0].clone(), None, f[1].clone()),
        3 => (f[0].clone(), Some(f[1].clone()), f[2].clone()),
        _ => return Err(NatsError::SubArgs),
    };
    if !is_valid_sub_subject(&arg[subject.start - base..subject.end - base]) {
        return Err(NatsError::InvalidSubject);
    }
    Ok(Line::Op(LineOp::Sub {
        subject,
        queue,
        sid,
    }))
}

/// `UNSUB <sid> [max_msgs]`.
fn parse_unsub(arg: &[u8], base: usize) -> Result<Line, NatsError> {
    let mut f: [Range<usize>; 2] = Default::default();
    let (sid, max_msgs) = match fields(arg, SUB_SEPS, base, &mut f) {
        1 => (f[0].clone(), None),
        2 => {
            let max = &arg[f[1].start - base..f[1].end - base];
            // Like nats-server: a count that does not parse, or 0, means
            // "now".
            let max = parse_size(max).filter(|&n| n > 0).map(|n| n as u64);
            (f[0].clone(), max)
        }
        _ => return Err(NatsError::UnsubArgs),
    };
    Ok(Line::Op(LineOp::Unsub { sid, max_msgs }))
}

/// What nats-server decodes a client's `INFO` into: a JSON object (whose
/// keys are not checked here) or `null`.
struct InfoObject;

impl<'de> serde::Deserialize<'de> for InfoObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = InfoObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<InfoObject, A::Error> {
                while m
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(InfoObject)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::nats::{encode_hpub, encode_pub};
    use proptest::prelude::*;
    use NatsError::*;

    /// What the decoder produced, owned, for comparisons.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ev {
        Connect,
        Pub {
            subject: Vec<u8>,
            reply: Option<Vec<u8>>,
            headers: Option<Vec<u8>>,
            payload: Vec<u8>,
        },
        Sub {
            subject: Vec<u8>,
            queue: Option<Vec<u8>>,
            sid: Vec<u8>,
        },
        Unsub {
            sid: Vec<u8>,
            max_msgs: Option<u64>,
        },
        Ping,
        Pong,
        Err(NatsError),
    }

    fn publish(subject: &str, reply: Option<&str>, headers: Option<&[u8]>, payload: &[u8]) -> Ev {
        Ev::Pub {
            subject: subject.into(),
            reply: reply.map(Into::into),
            headers: headers.map(Into::into),
            payload: payload.into(),
        }
    }

    fn sub(subject: &str, queue: Option<&str>, sid: &str) -> Ev {
        Ev::Sub {
            subject: subject.into(),
            queue: queue.map(Into::into),
            sid: sid.into(),
        }
    }

    fn unsub(sid: &str, max_msgs: Option<u64>) -> Ev {
        Ev::Unsub {
            sid: sid.into(),
            max_msgs,
        }
    }

    fn owned(r: Result<Op<'_>, NatsError>) -> Ev {
        match r {
            Err(e) => Ev::Err(e),
            Ok(Op::Connect(_)) => Ev::Connect,
            Ok(Op::Pub(p)) => {
                // Every part of a publish lies in a chunk the framer read:
                // the payload (and headers) in `chunk`.
                let within = |part: &[u8]| {
                    let start = part.as_ptr() as usize;
                    let c = p.chunk.as_ptr() as usize;
                    start >= c && start + part.len() <= c + p.chunk.len()
                };
                assert!(within(p.msg.payload), "payload outside its chunk");
                if let Some(h) = p.msg.headers {
                    assert!(within(h), "headers outside their chunk");
                    assert_eq!(p.body().len(), h.len() + p.msg.payload.len());
                    assert_eq!(&p.body()[..h.len()], h);
                    assert_eq!(&p.body()[h.len()..], p.msg.payload);
                } else {
                    assert_eq!(p.body(), p.msg.payload);
                }
                Ev::Pub {
                    subject: p.msg.subject.to_vec(),
                    reply: p.msg.reply.map(<[u8]>::to_vec),
                    headers: p.msg.headers.map(<[u8]>::to_vec),
                    payload: p.msg.payload.to_vec(),
                }
            }
            Ok(Op::Sub {
                subject,
                queue,
                sid,
            }) => Ev::Sub {
                subject: subject.to_vec(),
                queue: queue.map(<[u8]>::to_vec),
                sid: sid.to_vec(),
            },
            Ok(Op::Unsub { sid, max_msgs }) => Ev::Unsub {
                sid: sid.to_vec(),
                max_msgs,
            },
            Ok(Op::Ping) => Ev::Ping,
            Ok(Op::Pong) => Ev::Pong,
        }
    }

    /// Takes everything the decoder can decode now.
    fn drain(d: &mut Decoder, f: &mut Framer, out: &mut Vec<Ev>) {
        let mut frames = f.frames();
        while let Some(r) = d.next(&mut frames) {
            out.push(owned(r));
        }
    }

    /// Decodes `stream` pushed in pieces of the given sizes (cycled; 0 =
    /// all of it at once).
    fn decode_in(max_payload: usize, stream: &[u8], reads: &[usize]) -> Vec<Ev> {
        let mut d = Decoder::new(max_payload);
        let mut f = new_framer(max_payload);
        let mut out = Vec::new();
        let mut rest = stream;
        let mut i = 0;
        while !rest.is_empty() {
            let n = match reads[i % reads.len()] {
                0 => rest.len(),
                n => n.min(rest.len()),
            };
            f.push(&rest[..n]);
            rest = &rest[n..];
            drain(&mut d, &mut f, &mut out);
            i += 1;
        }
        out
    }

    fn decode(stream: &[u8]) -> Vec<Ev> {
        decode_in(1024, stream, &[0])
    }

    /// `stream` decodes to `want` however it is cut into two reads, and
    /// byte by byte.
    fn assert_every_split(max_payload: usize, stream: &[u8], want: &[Ev]) {
        let shown = String::from_utf8_lossy(stream);
        for cut in 0..=stream.len() {
            let mut d = Decoder::new(max_payload);
            let mut f = new_framer(max_payload);
            let mut out = Vec::new();
            f.push(&stream[..cut]);
            drain(&mut d, &mut f, &mut out);
            f.push(&stream[cut..]);
            drain(&mut d, &mut f, &mut out);
            assert_eq!(out, want, "cut at {cut} of {shown:?}");
        }
        assert_eq!(
            decode_in(max_payload, stream, &[1]),
            want,
            "byte by byte: {shown:?}"
        );
    }

    const HEADERS: &[u8] = b"CONNECT {\"headers\":true,\"verbose\":false,\"pedantic\":false}\r\n";

    #[test]
    fn every_op() {
        let mut s = HEADERS.to_vec();
        s.extend_from_slice(
            b"PUB a.b 5\r\nhello\r\n\
              PUB a.b _INBOX.1 0\r\n\r\n\
              HPUB h 12 14\r\nNATS/1.0\r\n\r\nhi\r\n\
              HPUB h r 12 12\r\nNATS/1.0\r\n\r\n\r\n\
              HPUB h 0 2\r\nhi\r\n\
              SUB a.* 1\r\n\
              SUB a.> workers 22\r\n\
              UNSUB 1\r\n\
              UNSUB 22 5\r\n\
              PING\r\n\
              PONG\r\n",
        );
        let want = [
            Ev::Connect,
            publish("a.b", None, None, b"hello"),
            publish("a.b", Some("_INBOX.1"), None, b""),
            publish("h", None, Some(b"NATS/1.0\r\n\r\n"), b"hi"),
            publish("h", Some("r"), Some(b"NATS/1.0\r\n\r\n"), b""),
            publish("h", None, None, b"hi"),
            sub("a.*", None, "1"),
            sub("a.>", Some("workers"), "22"),
            unsub("1", None),
            unsub("22", Some(5)),
            Ev::Ping,
            Ev::Pong,
        ];
        assert_eq!(decode(&s), want);
        assert_every_split(1024, &s, &want);
    }

    /// A `PUB` whose payload arrived with its line is read from the line's
    /// chunk; one whose payload comes in a later read is read from a copy
    /// of its line, so the read chunk is not pinned: once its frames are
    /// taken, the framer reads into the same allocation again.
    #[test]
    fn a_pub_split_across_reads_does_not_pin_the_read_buffer() {
        let mut d = Decoder::new(64);
        let mut f = Framer::with_read_size(Terminator::new(b"\n").unwrap(), 100, 64);
        let first = f.read_buf().as_ptr();
        f.push(b"PUB a.b r 5\r\nhello\r\nPUB c.d 5\r\nwor");
        let mut frames = f.frames();
        match d.next(&mut frames) {
            Some(Ok(Op::Pub(p))) => {
                assert_eq!(p.msg.subject, b"a.b");
                assert_eq!(p.msg.reply, Some(&b"r"[..]));
                assert_eq!(p.msg.payload, b"hello");
            }
            other => panic!("{other:?}"),
        }
        assert!(d.line.is_empty(), "copied the line of a complete PUB");
        assert!(d.next(&mut frames).is_none());
        assert_eq!(
            d.line, b"PUB c.d 5",
            "the awaited payload's line was not kept"
        );
        // Less than half the buffer is left: the same allocation is
        // reclaimed (the partial payload moved to its front), which a
        // reference to the chunk would have prevented.
        assert_eq!(
            f.read_buf().as_ptr(),
            first.wrapping_add(b"wor".len()),
            "the read buffer was pinned"
        );
        f.push(b"ld\r\n");
        let mut frames = f.frames();
        match d.next(&mut frames) {
            Some(Ok(Op::Pub(p))) => {
                assert_eq!(p.msg.subject, b"c.d");
                assert_eq!(p.msg.payload, b"world");
            }
            other => panic!("{other:?}"),
        }
    }

    /// The copy of a long control line is let go at the next operation.
    #[test]
    fn a_long_lines_copy_is_not_kept() {
        let mut d = Decoder::new(64);
        let mut f = new_framer(64);
        f.push(format!("SUB {} 1\r\nPING\r\n", "a".repeat(2000)).as_bytes());
        let mut frames = f.frames();
        assert!(matches!(d.next(&mut frames), Some(Ok(Op::Sub { .. }))));
        assert!(d.line.capacity() >= 2000);
        assert!(matches!(d.next(&mut frames), Some(Ok(Op::Ping))));
        assert!(
            d.line.capacity() <= KEPT_LINE_CAPACITY,
            "{}",
            d.line.capacity()
        );
    }

    #[test]
    fn connect_sets_the_options() {
        let mut d = Decoder::new(64);
        let mut f = new_framer(64);
        assert!(!d.connected());
        assert_eq!(d.options(), &ConnectOptions::default());
        f.push(b"CONNECT {\"verbose\":false,\"echo\":false,\"name\":\"n\"}\r\n");
        let mut frames = f.frames();
        match d.next(&mut frames) {
            Some(Ok(Op::Connect(o))) => {
                assert!(!o.verbose && !o.echo && o.pedantic);
                assert_eq!(o.name, "n");
            }
            other => panic!("{other:?}"),
        }
        assert!(d.connected());
        assert!(!d.options().echo);
        assert_eq!(d.max_payload(), 64);
    }

    #[test]
    fn verbs_in_any_case() {
        let s = b"connect {\"headers\":true,\"pedantic\":false}\r\n\
                  pub a 1\r\nx\r\n\
                  PuB a 1\r\ny\r\n\
                  hPuB a 2 2\r\nhh\r\n\
                  sub a 1\r\nSuB a 2\r\nunsub 1\r\nUnSuB 2\r\n\
                  ping\r\nPiNg\r\npong\r\n+ok\r\ninfo {}\r\n";
        assert_eq!(
            decode(s),
            [
                Ev::Connect,
                publish("a", None, None, b"x"),
                publish("a", None, None, b"y"),
                publish("a", None, Some(b"hh"), b""),
                sub("a", None, "1"),
                sub("a", None, "2"),
                unsub("1", None),
                unsub("2", None),
                Ev::Ping,
                Ev::Ping,
                Ev::Pong,
            ]
        );
    }

    #[test]
    fn fields_are_split_at_runs_of_spaces_and_tabs() {
        let s = b"CONNECT \t {\"headers\":true,\"pedantic\":false}\r\n\
                  PUB\ta \t r  \t 3 \t \r\nabc\r\n\
                  HPUB  a\t\t2   3\t\r\nhhp\r\n\
                  SUB \t a\t g \t 9 \r\n\
                  UNSUB\t\t9 \t 3  \r\n";
        assert_eq!(
            decode(s),
            [
                Ev::Connect,
                publish("a", Some("r"), None, b"abc"),
                publish("a", None, Some(b"hh"), b"p"),
                sub("a", Some("g"), "9"),
                unsub("9", Some(3)),
            ]
        );
    }

    #[test]
    fn sub_and_unsub_also_split_at_a_stray_cr() {
        assert_eq!(
            decode(b"SUB a\rq 1\r\nUNSUB 1\r2\r\n"),
            [sub("a", Some("q"), "1"), unsub("1", Some(2))]
        );
        // PUB does not: the `\r` is part of the subject.
        assert_eq!(
            decode(b"PUB a\rb 1\r\nx\r\n"),
            [publish("a\rb", None, None, b"x")]
        );
    }

    #[test]
    fn bare_newlines_end_lines_too() {
        let s = b"SUB a 1\nPUB a 2\nhi\r\nPING\nPONG\r\n";
        let want = [
            sub("a", None, "1"),
            publish("a", None, None, b"hi"),
            Ev::Ping,
            Ev::Pong,
        ];
        assert_eq!(decode(s), want);
        assert_every_split(1024, s, &want);
    }

    #[test]
    fn ping_and_pong_ignore_the_rest_of_their_line() {
        let mut long = b"PING ".to_vec();
        long.extend_from_slice(&[b'x'; 4 * MAX_CONTROL_LINE]);
        long.extend_from_slice(b"\r\n");
        let mut s = b"PINGPONG\r\nPING 1 2 3\r\nPONG!\r\n".to_vec();
        s.extend_from_slice(&long);
        assert_eq!(
            decode_in(1 << 20, &s, &[0]),
            [Ev::Ping, Ev::Ping, Ev::Pong, Ev::Ping]
        );
    }

    #[test]
    fn ok_and_a_clients_info_are_ignored() {
        assert_eq!(
            decode(b"+OK\r\n+okay\r\nINFO {\"a\":[1]}\r\nINFO\tnull\r\nINFO{}\r\nPING\r\n"),
            [Ev::Ping]
        );
        for bad in [
            &b"INFO\r\n"[..],
            b"INFO x\r\n",
            b"INFO [1]\r\n",
            b"INFO {} {}\r\n",
        ] {
            assert_eq!(decode(bad), [Ev::Err(BadInfo)], "{bad:?}");
        }
    }

    #[test]
    fn a_clients_err_closes() {
        assert_eq!(decode(b"-ERR 'x'\r\nPING\r\n"), [Ev::Err(ClientError)]);
        assert_eq!(decode(b"-err\tx\r\nPING\r\n"), [Ev::Err(ClientError)]);
        assert_eq!(decode(b"-ERR\r\nPING\r\n"), [Ev::Err(UnknownProtocol)]);
    }

    #[test]
    fn unknown_operations_close() {
        for line in [
            &b""[..],
            b"FOO",
            b" PING",
            b"\tSUB a 1",
            b"PUB",
            b"PUBX a 1",
            b"PUB_a 1",
            b"HPUB",
            b"HPU a 1 1",
            b"HMSG a 1 0 0",
            b"MSG a 1 0",
            b"SUB",
            b"SUBa 1",
            b"UNSUB",
            b"UNSUB1",
            b"PIN",
            b"PON",
            b"CONNEC {}",
            b"INF {}",
            b"+O",
            b"+",
            b"-",
            b"-ER x",
            b"RS+ a",
            b"LS+ a",
            b"A+ a",
            b"\x00",
        ] {
            let mut s = line.to_vec();
            s.extend_from_slice(b"\r\nPING\r\n");
            assert_eq!(
                decode(&s),
                [Ev::Err(UnknownProtocol)],
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn malformed_arguments_close_without_a_text() {
        let h = |s: &[u8]| [HEADERS, s].concat();
        let cases: Vec<(Vec<u8>, NatsError)> = vec![
            (b"PUB \r\n".to_vec(), PubArgs),
            (b"PUB   \t \r\n".to_vec(), PubArgs),
            (b"PUB a\r\n".to_vec(), PubArgs),
            (b"PUB a b c 1\r\n".to_vec(), PubArgs),
            // Argument count is checked before size and max payload.
            (b"PUB a b c 999999999\r\n".to_vec(), PubArgs),
            (b"PUB a x\r\n".to_vec(), PubSize),
            (b"PUB a r x\r\n".to_vec(), PubSize),
            (b"PUB a -1\r\n".to_vec(), PubSize),
            (b"PUB a +1\r\n".to_vec(), PubSize),
            (b"PUB a 1234567890\r\n".to_vec(), PubSize),
            (b"PUB a 0x1\r\n".to_vec(), PubSize),
            (b"HPUB a 0 0\r\n".to_vec(), HeadersNotSupported),
            // Headers are checked before anything else in the line.
            (b"HPUB\ta\r\n".to_vec(), HeadersNotSupported),
            (h(b"HPUB a 1\r\n"), HpubArgs),
            (h(b"HPUB a b c 1 2\r\n"), HpubArgs),
            (h(b"HPUB a x 5\r\n"), HpubHeaderSize),
            (h(b"HPUB a x y\r\n"), HpubHeaderSize),
            (h(b"HPUB a r 1234567890 5\r\n"), HpubHeaderSize),
            (h(b"HPUB a 5 y\r\n"), HpubTotalSize),
            (h(b"HPUB a 6 5\r\n"), HpubHeaderTooLarge),
            (b"SUB \r\n".to_vec(), SubArgs),
            (b"SUB a\r\n".to_vec(), SubArgs),
            (b"SUB a b c d\r\n".to_vec(), SubArgs),
            (b"UNSUB \r\n".to_vec(), UnsubArgs),
            (b"UNSUB 1 2 3\r\n".to_vec(), UnsubArgs),
            (b"CONNECT\r\n".to_vec(), BadConnect),
            (b"CONNECT {\r\n".to_vec(), BadConnect),
            (b"CONNECT {\"verbose\":\"no\"}\r\n".to_vec(), BadConnect),
            (b"CONNECTED\r\n".to_vec(), BadConnect),
        ];
        for (s, e) in cases {
            assert_eq!(e.text(), None);
            assert!(e.closes());
            let mut s = s.to_vec();
            let shown = String::from_utf8_lossy(&s).into_owned();
            s.extend_from_slice(b"PING\r\n");
            let got = decode(&s);
            assert_eq!(got.last(), Some(&Ev::Err(e)), "{shown:?}: {got:?}");
        }
    }

    #[test]
    fn sizes_are_one_to_nine_digits() {
        assert_eq!(parse_size(b"0"), Some(0));
        assert_eq!(parse_size(b"000000001"), Some(1));
        assert_eq!(parse_size(b"999999999"), Some(999_999_999));
        for bad in [&b""[..], b"1234567890", b"-1", b"1a", b" 1", b"\xd9\xa1"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
        // Leading zeros are a size like any other.
        assert_eq!(
            decode(b"PUB a 002\r\nhi\r\n"),
            [publish("a", None, None, b"hi")]
        );
    }

    #[test]
    fn unsub_counts_like_nats_server() {
        assert_eq!(
            decode(b"UNSUB 1 5\r\nUNSUB 1 0\r\nUNSUB 1 x\r\nUNSUB 1 1234567890\r\nUNSUB 1 999999999\r\n"),
            [
                unsub("1", Some(5)),
                unsub("1", None),
                unsub("1", None),
                unsub("1", None),
                unsub("1", Some(999_999_999)),
            ]
        );
    }

    #[test]
    fn max_payload_is_refused_from_the_control_line() {
        let max = 10;
        // Exactly the maximum is fine, for PUB and HPUB alike.
        let ok = [
            HEADERS,
            b"PUB a 10\r\n0123456789\r\nHPUB a 4 10\r\nhhhh012345\r\n",
        ]
        .concat();
        assert_eq!(
            decode_in(max, &ok, &[0]),
            [
                Ev::Connect,
                publish("a", None, None, b"0123456789"),
                publish("a", None, Some(b"hhhh"), b"012345"),
            ]
        );
        // One more is refused as soon as the line is in, with no payload.
        for line in [
            &b"PUB a 11\r\n"[..],
            b"PUB a r 999999999\r\n",
            b"HPUB a 4 11\r\n",
        ] {
            let s = [HEADERS, line].concat();
            let mut d = Decoder::new(max);
            let mut f = new_framer(max);
            let mut out = Vec::new();
            f.push(&s);
            drain(&mut d, &mut f, &mut out);
            assert_eq!(out, [Ev::Connect, Ev::Err(MaxPayload)], "{line:?}");
            // And nothing after it.
            f.push(b"0123456789a\r\nPING\r\n");
            drain(&mut d, &mut f, &mut out);
            assert_eq!(out.len(), 2);
        }
        assert_eq!(MaxPayload.text(), Some("Maximum Payload Violation"));
        assert!(MaxPayload.closes());
    }

    #[test]
    fn max_control_line() {
        let sub_of = |arg_len: usize| {
            // `SUB <subject> 1`: the argument is the subject, a space, `1`.
            let mut s = b"SUB ".to_vec();
            s.extend(std::iter::repeat_n(b'a', arg_len - 2));
            s.extend_from_slice(b" 1\r\n");
            s
        };
        let ok = sub_of(MAX_CONTROL_LINE);
        assert!(matches!(&decode(&ok)[..], [Ev::Sub { .. }]));
        // Separators after the verb and the line end do not count.
        let mut spaced = b"SUB \t  ".to_vec();
        spaced.extend_from_slice(&ok[4..]);
        assert!(matches!(&decode(&spaced)[..], [Ev::Sub { .. }]));
        let mut s = sub_of(MAX_CONTROL_LINE + 1);
        s.extend_from_slice(b"PING\r\n");
        assert_eq!(decode(&s), [Ev::Err(MaxControlLine)]);
        // The limit comes first: a long bad subject, or a long line of an
        // op that is otherwise refused, is still a control line error.
        for verb in [
            &b"PUB "[..],
            b"HPUB ",
            b"UNSUB ",
            b"CONNECT ",
            b"INFO ",
            b"-ERR ",
        ] {
            let mut s = verb.to_vec();
            s.extend(std::iter::repeat_n(b'.', MAX_CONTROL_LINE + 1));
            s.extend_from_slice(b"\r\n");
            assert_eq!(decode(&s), [Ev::Err(MaxControlLine)], "{verb:?}");
        }
        // Longer than the framer keeps: refused by the framer, same error.
        let mut huge = b"SUB ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 3 * MAX_CONTROL_LINE));
        huge.extend_from_slice(b" 1\r\nPING\r\n");
        assert_eq!(decode_in(16, &huge, &[0]), [Ev::Err(MaxControlLine)]);
        assert_eq!(decode_in(16, &huge, &[1000]), [Ev::Err(MaxControlLine)]);
    }

    #[test]
    fn a_partial_line_that_is_already_too_long() {
        let mut d = Decoder::new(1 << 20);
        let mut f = new_framer(1 << 20);
        let mut out = Vec::new();
        f.push(b"PUB ");
        f.push(&[b'a'; MAX_CONTROL_LINE]);
        drain(&mut d, &mut f, &mut out);
        assert!(out.is_empty());
        assert_eq!(d.check_partial(&f), Ok(()), "within the slack");
        f.push(&[b'a'; 100]);
        drain(&mut d, &mut f, &mut out);
        assert_eq!(d.check_partial(&f), Err(MaxControlLine));
        f.push(b" 1\r\nx\r\n");
        drain(&mut d, &mut f, &mut out);
        assert!(out.is_empty(), "closed: {out:?}");
        // A partial payload is not a partial line.
        let mut d = Decoder::new(1 << 20);
        let mut f = new_framer(1 << 20);
        f.push(b"PUB a 100000\r\n");
        f.push(&[b'x'; 50_000]);
        drain(&mut d, &mut f, &mut out);
        assert!(d.awaiting_payload());
        assert_eq!(d.check_partial(&f), Ok(()));
    }

    #[test]
    fn a_payload_must_end_with_crlf() {
        for s in [
            &b"PUB a 2\r\nabc\r\nPING\r\n"[..],
            b"PUB a 2\r\na\r\nPING\r\n",
            b"PUB a 2\r\nab\n\nPING\r\n",
            b"PUB a 2\r\nab\r\rPING\r\n",
            b"PUB a 2\r\nab\n\rPING\r\n",
            b"PUB a 0\r\nxPING\r\n",
        ] {
            assert_eq!(decode(s), [Ev::Err(UnknownProtocol)], "{s:?}");
            assert_every_split(1024, s, &[Ev::Err(UnknownProtocol)]);
        }
    }

    #[test]
    fn payloads_hold_any_bytes() {
        let payload = b"PING\r\nPUB a 1\r\n\n\r\0\xff";
        let mut s = Vec::new();
        encode_pub(&mut s, b"x", Some(b"y"), payload);
        s.extend_from_slice(b"PING\r\n");
        let want = [publish("x", Some("y"), None, payload), Ev::Ping];
        assert_eq!(decode(&s), want);
        assert_every_split(1024, &s, &want);
    }

    #[test]
    fn sub_subjects_are_checked_and_the_connection_stays() {
        let s = b"SUB a..b 1\r\nSUB a.>.b q 2\r\nSUB .a 3\r\nSUB a. 4\r\nSUB a.> 5\r\n";
        let want = [
            Ev::Err(InvalidSubject),
            Ev::Err(InvalidSubject),
            Ev::Err(InvalidSubject),
            Ev::Err(InvalidSubject),
            sub("a.>", None, "5"),
        ];
        assert_eq!(decode(s), want);
        assert!(!InvalidSubject.closes());
        // Queue names are not checked (nats-server does not).
        assert_eq!(decode(b"SUB a.b *.> 1\r\n"), [sub("a.b", Some("*.>"), "1")]);
    }

    #[test]
    fn pedantic_publish_subjects_are_checked_and_still_published() {
        // Pedantic is nats-server's default until CONNECT turns it off.
        let s = b"PUB a.* 1\r\nx\r\nPUB a..b r 1\r\ny\r\n\
                  CONNECT {\"pedantic\":false}\r\nPUB a.* 1\r\nz\r\n";
        let want = [
            Ev::Err(InvalidPublishSubject),
            publish("a.*", None, None, b"x"),
            Ev::Err(InvalidPublishSubject),
            publish("a..b", Some("r"), None, b"y"),
            Ev::Connect,
            publish("a.*", None, None, b"z"),
        ];
        assert_eq!(decode(s), want);
        assert_every_split(1024, s, &want);
        let h = [
            &b"CONNECT {\"headers\":true,\"pedantic\":true}\r\n"[..],
            b"HPUB > 1 1\r\nh\r\n",
        ]
        .concat();
        assert_eq!(
            decode(&h),
            [
                Ev::Connect,
                Ev::Err(InvalidPublishSubject),
                publish(">", None, Some(b"h"), b""),
            ]
        );
    }

    #[test]
    fn connect_checks() {
        let cases: &[(&[u8], Ev)] = &[
            (b"CONNECT {\"protocol\":2}", Ev::Err(BadClientProtocol)),
            (b"CONNECT {\"protocol\":-1}", Ev::Err(BadClientProtocol)),
            (
                b"CONNECT {\"no_responders\":true}",
                Ev::Err(NoRespondersRequiresHeaders),
            ),
            (
                b"CONNECT {\"no_responders\":true,\"headers\":false}",
                Ev::Err(NoRespondersRequiresHeaders),
            ),
            (
                b"CONNECT {\"no_responders\":true,\"headers\":true,\"protocol\":1}",
                Ev::Connect,
            ),
            (b"CONNECT{\"protocol\":0}", Ev::Connect),
            (b"CONNECT null", Ev::Connect),
        ];
        for (line, want) in cases {
            let s = [*line, b"\r\nPING\r\n"].concat();
            let got = decode(&s);
            let expect: Vec<Ev> = match want {
                Ev::Err(_) => vec![want.clone()],
                _ => vec![want.clone(), Ev::Ping],
            };
            assert_eq!(got, expect, "{:?}", String::from_utf8_lossy(line));
        }
        assert_eq!(BadClientProtocol.text(), Some("invalid client protocol"));
    }

    #[test]
    fn hpub_needs_headers_true() {
        let off = b"CONNECT {\"headers\":false}\r\nHPUB a 2 2\r\nhh\r\n";
        assert_eq!(decode(off), [Ev::Connect, Ev::Err(HeadersNotSupported)]);
        // A later CONNECT can turn them on (its options are merged).
        let later = b"CONNECT {}\r\nCONNECT {\"headers\":true}\r\nHPUB a 2 2\r\nhh\r\n";
        assert_eq!(
            decode(later),
            [
                Ev::Connect,
                Ev::Connect,
                publish("a", None, Some(b"hh"), b"")
            ]
        );
    }

    #[test]
    fn nothing_after_an_error_that_closes() {
        let mut d = Decoder::new(1024);
        let mut f = new_framer(1024);
        let mut out = Vec::new();
        f.push(b"PING\r\nBAD\r\nPING\r\n");
        drain(&mut d, &mut f, &mut out);
        f.push(b"PING\r\n");
        drain(&mut d, &mut f, &mut out);
        assert_eq!(d.check_partial(&f), Ok(()));
        assert_eq!(out, [Ev::Ping, Ev::Err(UnknownProtocol)]);
    }

    #[test]
    fn the_framer_is_back_in_line_mode_after_a_publish() {
        let mut d = Decoder::new(1024);
        let mut f = new_framer(1024);
        f.push(b"PUB a 3\r\n");
        {
            let mut frames = f.frames();
            assert!(d.next(&mut frames).is_none());
        }
        assert_eq!(f.mode(), Mode::Count(5));
        assert!(d.awaiting_payload());
        f.push(b"abc\r\n");
        {
            let mut frames = f.frames();
            assert!(matches!(d.next(&mut frames), Some(Ok(Op::Pub(_)))));
        }
        assert!(!d.awaiting_payload());
        assert_eq!(f.mode(), Mode::Terminator);
        assert_eq!(f.buffered(), 0);
    }

    /// The control line and the payload from one read are slices of one
    /// chunk, so a forwarded message needs no copy; from two reads, the
    /// payload is in the chunk handed out with it.
    #[test]
    fn one_read_gives_one_chunk() {
        let line = b"HPUB subj reply 3 5\r\n";
        let body = b"hhhpp\r\n";
        for cut in [line.len() + body.len(), line.len()] {
            let mut d = Decoder::new(1024);
            let mut f = new_framer(1024);
            f.push(HEADERS);
            {
                let mut frames = f.frames();
                assert!(matches!(d.next(&mut frames), Some(Ok(Op::Connect(_)))));
            }
            let stream = [&line[..], body].concat();
            f.push(&stream[..cut]);
            if cut < stream.len() {
                assert!(d.next(&mut f.frames()).is_none());
                f.push(&stream[cut..]);
            }
            let mut frames = f.frames();
            let p = match d.next(&mut frames) {
                Some(Ok(Op::Pub(p))) => p,
                other => panic!("{other:?}"),
            };
            let chunk = p.chunk.as_ptr() as usize..p.chunk.as_ptr() as usize + p.chunk.len();
            let inside = |part: &[u8]| {
                let at = part.as_ptr() as usize;
                chunk.contains(&at) && at + part.len() <= chunk.end
            };
            assert!(inside(p.msg.headers.unwrap()) && inside(p.msg.payload));
            let line_inside = inside(p.msg.subject) && inside(p.msg.reply.unwrap());
            assert_eq!(line_inside, cut == stream.len(), "cut at {cut}");
            assert_eq!(
                (p.msg.subject, p.msg.reply),
                (&b"subj"[..], Some(&b"reply"[..]))
            );
            if cut == stream.len() {
                assert_eq!(&p.chunk[..], &stream[..]);
            }
        }
    }

    #[test]
    fn header_and_payload_places() {
        let mut s = HEADERS.to_vec();
        let headers = b"NATS/1.0\r\nK: v\r\n\r\n";
        encode_hpub(&mut s, b"s", Some(b"r"), headers, b"body");
        let mut d = Decoder::new(1024);
        let mut f = new_framer(1024);
        f.push(&s);
        let mut frames = f.frames();
        assert!(matches!(d.next(&mut frames), Some(Ok(Op::Connect(_)))));
        let Some(Ok(Op::Pub(p))) = d.next(&mut frames) else {
            panic!("no publish");
        };
        assert_eq!(p.msg.headers, Some(&headers[..]));
        assert_eq!(p.msg.payload, b"body");
        assert_eq!(p.body(), [&headers[..], b"body"].concat());
        // Headers, then payload, adjacent in the chunk, followed by CRLF.
        let h_at = p.msg.headers.unwrap().as_ptr() as usize - p.chunk.as_ptr() as usize;
        let p_at = p.msg.payload.as_ptr() as usize - p.chunk.as_ptr() as usize;
        assert_eq!(p_at, h_at + headers.len());
        assert_eq!(&p.chunk[p_at + 4..p_at + 6], b"\r\n");
    }

    #[test]
    fn new_framer_fits_payloads_and_lines() {
        assert_eq!(framer_max_frame(1 << 20), (1 << 20) + 2);
        assert_eq!(framer_max_frame(0), MAX_CONTROL_LINE + PARTIAL_SLACK);
        assert_eq!(framer_max_frame(usize::MAX), usize::MAX);
        let f = new_framer(100);
        assert_eq!(f.terminator().as_bytes(), b"\n");
        assert_eq!(f.max_frame(), MAX_CONTROL_LINE + PARTIAL_SLACK);
    }

    /// Printable tokens without `.`, spaces or wildcards.
    fn token() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(b"abcxyzAZ09_-$:/\"'".to_vec()), 1..6)
    }

    fn subject() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(token(), 1..4).prop_map(|t| t.join(&b'.'))
    }

    /// Client operations with a unique encoding (what a client sends).
    fn client_op() -> impl Strategy<Value = Ev> {
        let bytes = |n| prop::collection::vec(any::<u8>(), 0..n);
        prop_oneof![
            4 => (
                subject(),
                prop::option::of(subject()),
                prop::option::of(prop::collection::vec(any::<u8>(), 1..40)),
                bytes(200),
            )
                .prop_map(|(subject, reply, headers, payload)| Ev::Pub {
                    subject,
                    reply,
                    headers,
                    payload,
                }),
            1 => (subject(), prop::option::of(token()), token())
                .prop_map(|(subject, queue, sid)| Ev::Sub { subject, queue, sid }),
            1 => (token(), prop::option::of(1u64..=999_999_999))
                .prop_map(|(sid, max_msgs)| Ev::Unsub { sid, max_msgs }),
            1 => Just(Ev::Ping),
            1 => Just(Ev::Pong),
        ]
    }

    /// Appends what a client sends for `op`.
    fn encode_op(op: &Ev, out: &mut Vec<u8>) {
        let line = |out: &mut Vec<u8>, fields: &[&[u8]]| {
            out.extend_from_slice(&fields.join(&b' '));
            out.extend_from_slice(b"\r\n");
        };
        match op {
            Ev::Pub {
                subject,
                reply,
                headers: Some(h),
                payload,
            } => encode_hpub(out, subject, reply.as_deref(), h, payload),
            Ev::Pub {
                subject,
                reply,
                headers: None,
                payload,
            } => encode_pub(out, subject, reply.as_deref(), payload),
            Ev::Sub {
                subject,
                queue,
                sid,
            } => {
                let mut fields = vec![&b"SUB"[..], subject];
                fields.extend(queue.as_deref());
                fields.push(sid);
                line(out, &fields);
            }
            Ev::Unsub { sid, max_msgs } => {
                let max = max_msgs.map(|n| n.to_string());
                let mut fields = vec![&b"UNSUB"[..], sid];
                fields.extend(max.as_deref().map(str::as_bytes));
                line(out, &fields);
            }
            Ev::Ping => line(out, &[b"PING"]),
            Ev::Pong => line(out, &[b"PONG"]),
            Ev::Connect => out.extend_from_slice(HEADERS),
            Ev::Err(e) => panic!("{e:?} is not something a client sends"),
        }
    }

    /// The fields of `arg`, split a byte at a time: the model of
    /// [`fields`].
    fn fields_one_byte_at_a_time(arg: &[u8], sep: fn(u8) -> bool) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let mut start = None;
        for (i, &b) in arg.iter().enumerate() {
            match (sep(b), start) {
                (true, Some(s)) => {
                    out.push(s..i);
                    start = None;
                }
                (false, None) => start = Some(i),
                _ => {}
            }
        }
        out.extend(start.map(|s| s..arg.len()));
        out
    }

    proptest! {
        /// The word-at-a-time split agrees with the byte-at-a-time model,
        /// on lines of separators, other bytes, and bytes one bit away
        /// from a separator.
        #[test]
        fn fields_agree_with_a_byte_at_a_time_split(
            arg in prop::collection::vec(
                prop::sample::select(vec![b'a', b' ', b'\t', b'\r', b'\n', 0xa0, 0x89, 0x80, 0x21, 0x08, 0]),
                0..40,
            ),
        ) {
            for seps in [PUB_SEPS, SUB_SEPS] {
                let want = fields_one_byte_at_a_time(&arg, seps.is);
                let mut got: [Range<usize>; 4] = Default::default();
                let n = fields(&arg, seps, 3, &mut got);
                prop_assert_eq!(n, want.len());
                for (g, w) in got.iter().zip(&want) {
                    prop_assert_eq!(g.clone(), w.start + 3..w.end + 3);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Encoded publishes (with and without headers, any payload bytes)
        /// and the other client operations decode back to themselves however the
        /// stream is cut into reads.
        #[test]
        fn client_ops_round_trip(
            ops in prop::collection::vec(client_op(), 1..12),
            reads in prop::collection::vec(prop_oneof![3 => 1usize..16, 1 => 16usize..400], 1..6),
        ) {
            let mut want = vec![Ev::Connect];
            want.extend(ops);
            let mut stream = Vec::new();
            for op in &want {
                encode_op(op, &mut stream);
            }
            prop_assert_eq!(decode_in(1024, &stream, &reads), want.clone());
            prop_assert_eq!(decode_in(1024, &stream, &[0]), want);
        }

        /// Whatever the bytes, the decoder neither panics nor yields
        /// anything after an error that closes.
        #[test]
        fn any_input_is_safe(
            stream in prop::collection::vec(prop_oneof![
                3 => prop::sample::select(b"PUBHSGINOCT +-ER \t\r\n0123456789a.*>{}".to_vec()),
                1 => any::<u8>(),
            ], 0..300),
            reads in prop::collection::vec(1usize..40, 1..4),
        ) {
            let out = decode_in(64, &stream, &reads);
            if let Some(i) = out.iter().position(|e| matches!(e, Ev::Err(e) if e.closes())) {
                prop_assert_eq!(i, out.len() - 1);
            }
            prop_assert_eq!(decode_in(64, &stream, &[0]), out);
        }
    }
}
