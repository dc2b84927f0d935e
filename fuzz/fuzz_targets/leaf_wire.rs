//! The leaf-node decoder (`tern::leaf::wire::HubDecoder` on a NATS framer,
//! `tern::protocol::nats::new_framer`), fed any bytes as a link to a hub
//! feeds it: drain the operations after each read, stop at the first error
//! (the link closes). Then the encoders the leaf writes with (`encode_sub`,
//! `encode_unsub`, `encode_msg_head`) on tokens and bodies the input picks,
//! decoded back.
//!
//! Checked: no panic; every operation within the limits (a message's
//! headers and payload together at most `max_payload`, a header block never
//! empty, headers and payload adjacent in their chunk and followed there
//! by `\r\n`; subjects, replies and queue names not empty and without
//! spaces, tabs or `\n`; at most `MAX_QUEUES` queue names); the framer
//! never holds more than `framer_max_frame` bytes between reads; and the
//! reads do not matter: cut anywhere, the stream decodes as it does in one
//! read, up to and including the error that ends it. (The framer refuses a
//! line longer than its maximum before its end arrives, but with the same
//! error a whole read gets at its end, and the decoder has no partial-line
//! check of its own, so no exception is needed here, unlike
//! `nats_decoder`.) The encoded operations decode to exactly what was
//! encoded, or to the error the decoder owes them (`TooLarge` over
//! `max_payload`, `Malformed` over `MAX_QUEUES` queue names).
//!
//! Input: `[max_payload] [plan list] [encoder list] stream…`: the plan cuts
//! both the stream and the encoded bytes into reads; the encoder list (at
//! most 64 bytes) picks 1 to 4 operations to encode.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tern::leaf::wire::{
    encode_msg_head, encode_sub, encode_unsub, HubDecoder, HubOp, WireError, MAX_QUEUES,
};
use tern::protocol::nats::{framer_max_frame, new_framer};
use tern_fuzz::{assert_holds_at_most, reads, Input};

/// `max_payload`s the first byte picks (low three bits), as in
/// `nats_decoder`: around 0, around a control line, nats-server's default.
const MAX_PAYLOADS: [usize; 8] = [0, 1, 8, 64, 1024, 4100, 5000, 1 << 20];

/// What the decoder produced, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Info(Vec<u8>),
    Ping,
    Pong,
    Err(Vec<u8>),
    Sub {
        subject: Vec<u8>,
        queue: Option<Vec<u8>>,
        weight: u32,
    },
    Unsub {
        subject: Vec<u8>,
        queue: Option<Vec<u8>>,
    },
    Msg {
        subject: Vec<u8>,
        reply: Option<Vec<u8>>,
        headers: Option<Vec<u8>>,
        payload: Vec<u8>,
        queues: Vec<Vec<u8>>,
    },
    /// The error that ends the link.
    Failed(WireError),
}

/// A subject, reply or queue name: not empty, not split where it should
/// have been.
fn check_token(what: &str, t: &[u8]) {
    assert!(!t.is_empty(), "empty {what}");
    assert!(
        !t.iter().any(|b| b" \t\n".contains(b)),
        "{what} {:?} holds a separator",
        String::from_utf8_lossy(t)
    );
}

/// Where `s` starts in `chunk`; panics if it does not lie wholly in it.
fn offset_in(chunk: &[u8], s: &[u8]) -> usize {
    let at = (s.as_ptr() as usize).wrapping_sub(chunk.as_ptr() as usize);
    assert!(
        at <= chunk.len() && s.len() <= chunk.len() - at,
        "a message field outside the chunk it is said to lie in"
    );
    at
}

/// Checks one operation against the limits and returns it owned.
fn event(op: HubOp<'_>, max_payload: usize) -> Event {
    match op {
        HubOp::Info(json) => Event::Info(json.to_vec()),
        HubOp::Ping => Event::Ping,
        HubOp::Pong => Event::Pong,
        HubOp::Err(text) => Event::Err(text.to_vec()),
        HubOp::Sub {
            subject,
            queue,
            weight,
        } => {
            check_token("LS+ subject", subject);
            match queue {
                Some(q) => check_token("LS+ queue", q),
                None => assert_eq!(weight, 1, "weight without a queue"),
            }
            Event::Sub {
                subject: subject.to_vec(),
                queue: queue.map(<[u8]>::to_vec),
                weight,
            }
        }
        HubOp::Unsub { subject, queue } => {
            check_token("LS- subject", subject);
            if let Some(q) = queue {
                check_token("LS- queue", q);
            }
            Event::Unsub {
                subject: subject.to_vec(),
                queue: queue.map(<[u8]>::to_vec),
            }
        }
        HubOp::Msg { msg, queues, chunk } => {
            check_token("message subject", msg.subject);
            if let Some(r) = msg.reply {
                check_token("reply", r);
            }
            let names: Vec<Vec<u8>> = queues.iter().map(<[u8]>::to_vec).collect();
            assert!(
                names.len() <= MAX_QUEUES,
                "{} queue names, limit {MAX_QUEUES}",
                names.len()
            );
            assert_eq!(names.len(), queues.len());
            assert_eq!(names.is_empty(), queues.is_empty());
            for q in &names {
                check_token("queue name", q);
                assert!(queues.contains(q));
            }
            let header_len = msg.headers.map_or(0, <[u8]>::len);
            let size = header_len + msg.payload.len();
            assert!(
                size <= max_payload,
                "message of {size} bytes over max_payload {max_payload}"
            );
            // The body as the hub sent it: the header block, then right
            // after it the payload, then `\r\n`, all in `chunk`.
            let start = offset_in(chunk, msg.payload);
            if let Some(h) = msg.headers {
                assert!(!h.is_empty(), "empty header block handed out");
                assert_eq!(
                    offset_in(chunk, h) + h.len(),
                    start,
                    "headers and payload not adjacent"
                );
            }
            let end = start + msg.payload.len();
            assert_eq!(
                chunk.get(end..end + 2),
                Some(&b"\r\n"[..]),
                "a payload not followed by \\r\\n"
            );
            Event::Msg {
                subject: msg.subject.to_vec(),
                reply: msg.reply.map(<[u8]>::to_vec),
                headers: msg.headers.map(<[u8]>::to_vec),
                payload: msg.payload.to_vec(),
                queues: names,
            }
        }
    }
}

/// Decodes `stream` read in the pieces `plan` cuts, as the link does,
/// up to the first error.
fn decode(stream: &[u8], plan: &[u8], max_payload: usize) -> Vec<Event> {
    let mut framer = new_framer(max_payload);
    let mut decoder = HubDecoder::new(max_payload);
    let bound = framer_max_frame(max_payload);
    let mut out = Vec::new();
    for (piece, _) in reads(stream, plan) {
        framer.push(piece);
        let mut frames = framer.frames();
        while let Some(r) = decoder.next(&mut frames) {
            match r {
                Ok(op) => out.push(event(op, max_payload)),
                Err(e) => {
                    out.push(Event::Failed(e));
                    return out;
                }
            }
        }
        assert_holds_at_most(&framer, bound);
    }
    out
}

/// A valid token: 1 to 8 printable ASCII bytes, no space.
fn token(input: &mut Input<'_>) -> Vec<u8> {
    let len = 1 + usize::from(input.byte() & 7);
    (0..len).map(|_| 0x21 + input.byte() % 94).collect()
}

/// Message sizes (headers and payload together) an encoder byte picks:
/// each side of the `max_payload`s above that are small enough to feed in
/// one-byte reads.
const SIZES: [usize; 16] = [
    0, 1, 2, 3, 7, 8, 9, 63, 64, 65, 1024, 1025, 4100, 4101, 5000, 5001,
];

/// The control line of an encoded operation (what `Malformed` quotes).
fn line_of(encoded: &[u8]) -> String {
    let line = encoded
        .strip_suffix(b"\r\n")
        .expect("a line ends with CRLF");
    String::from_utf8_lossy(line).into_owned()
}

/// Encodes the operations `spec` picks, decodes them (cut by `plan`) and
/// checks they come back as encoded.
fn round_trip(spec: &[u8], plan: &[u8], max_payload: usize) {
    let mut input = Input::new(spec);
    let mut stream = Vec::new();
    let mut want = Vec::new();
    let ops = 1 + usize::from(input.byte() & 3);
    for _ in 0..ops {
        let kind = input.byte();
        let start = stream.len();
        match kind & 3 {
            0 => {
                let subject = token(&mut input);
                let queue = (kind & 4 != 0).then(|| {
                    let q = token(&mut input);
                    let w = u32::from_le_bytes([
                        input.byte(),
                        input.byte(),
                        input.byte(),
                        input.byte(),
                    ]);
                    (q, w)
                });
                encode_sub(
                    &mut stream,
                    &subject,
                    queue.as_ref().map(|(q, w)| (&q[..], *w)),
                );
                want.push(Event::Sub {
                    subject,
                    weight: queue
                        .as_ref()
                        .map_or(1, |(_, w)| (*w).min(tern::leaf::wire::MAX_WEIGHT)),
                    queue: queue.map(|(q, _)| q),
                });
            }
            1 => {
                let subject = token(&mut input);
                let queue = (kind & 4 != 0).then(|| token(&mut input));
                encode_unsub(&mut stream, &subject, queue.as_deref());
                want.push(Event::Unsub { subject, queue });
            }
            _ => {
                let hmsg = kind & 3 == 3;
                let subject = token(&mut input);
                let reply = (kind & 4 != 0).then(|| token(&mut input));
                // 0 to 3 queue names, or exactly MAX_QUEUES, or one more.
                let count = match (kind >> 3) & 7 {
                    n @ 0..=3 => usize::from(n),
                    4 | 5 => MAX_QUEUES,
                    6 => MAX_QUEUES + 1,
                    _ => 1,
                };
                let queues: Vec<Vec<u8>> = (0..count).map(|_| token(&mut input)).collect();
                let total = SIZES[usize::from(input.byte() & 15)];
                let header_len = hmsg.then(|| total * usize::from(input.byte()) / 255);
                let fill = input.byte();
                // Any bytes, `\r\n` among them.
                let body: Vec<u8> = (0..total)
                    .map(|i| match i % 9 {
                        7 => b'\r',
                        8 => b'\n',
                        _ => fill.wrapping_add(i as u8),
                    })
                    .collect();
                encode_msg_head(
                    &mut stream,
                    &subject,
                    reply.as_deref(),
                    queues.iter().map(Vec::as_slice),
                    header_len,
                    total,
                );
                let verb = if hmsg { "HMSG" } else { "LMSG" };
                if queues.len() > MAX_QUEUES {
                    want.push(Event::Failed(WireError::Malformed {
                        verb,
                        line: line_of(&stream[start..]),
                    }));
                    break;
                }
                if total > max_payload {
                    want.push(Event::Failed(WireError::TooLarge {
                        size: total,
                        max: max_payload,
                    }));
                    break;
                }
                stream.extend_from_slice(&body);
                stream.extend_from_slice(b"\r\n");
                let h = header_len.unwrap_or(0);
                want.push(Event::Msg {
                    subject,
                    reply,
                    headers: (h > 0).then(|| body[..h].to_vec()),
                    payload: body[h..].to_vec(),
                    queues,
                });
            }
        }
    }
    let got = decode(&stream, plan, max_payload);
    assert!(
        got == want,
        "encoded operations decoded otherwise:\n stream: {:?}\n   want: {want:?}\n    got: {got:?}",
        String::from_utf8_lossy(&stream)
    );
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let max_payload = MAX_PAYLOADS[usize::from(input.byte() & 7)];
    let plan = input.list(16).to_vec();
    let spec = input.list(64).to_vec();
    let stream = input.rest();

    let whole = decode(stream, &[], max_payload);
    let cut = decode(stream, &plan, max_payload);
    assert!(
        cut == whole,
        "reads changed the decoding:\n whole: {whole:?}\n   cut: {cut:?}"
    );

    round_trip(&spec, &plan, max_payload);
});
