//! The NATS decoder (`tern::protocol::nats::Decoder` on its framer), fed
//! any bytes as a shard feeds it: drain the operations after each read,
//! then refuse a control line that is already too long
//! (`check_partial`), and stop at an error that closes the connection.
//!
//! Checked: no panic; nothing after an error that closes; every operation
//! within the limits (payload at most `max_payload`, arguments at most
//! `MAX_CONTROL_LINE`, fields without separators, `SUB` subjects the index
//! takes); the framer never holds more than `framer_max_frame` bytes; and
//! the reads do not matter: cut anywhere, the stream decodes as it does
//! in one read, except that a line already too long may be refused before
//! its end arrives.
//!
//! Input: `[max_payload] [plan list] stream…`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tern::protocol::nats::{
    framer_max_frame, new_framer, Decoder, NatsError, Op, MAX_CONTROL_LINE,
};
use tern_fuzz::subject_model::index_pattern;
use tern_fuzz::{assert_holds_at_most, reads, Input};

/// `max_payload`s the first byte picks (low three bits): around 0, around
/// a control line (so a payload can be longer or shorter than one), and
/// nats-server's default.
const MAX_PAYLOADS: [usize; 8] = [0, 1, 8, 64, 1024, 4100, 5000, 1 << 20];

/// What the decoder produced, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
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
    /// `check_partial` refused the line being received.
    PartialTooLong,
}

/// A field of a control line: not empty, no separator in it.
fn check_field(f: &[u8], seps: &[u8]) {
    assert!(!f.is_empty(), "empty field");
    assert!(
        !f.iter().any(|b| seps.contains(b)),
        "field {:?} holds a separator",
        String::from_utf8_lossy(f)
    );
    assert!(
        f.len() <= MAX_CONTROL_LINE,
        "field longer than a control line"
    );
}

/// Checks one operation against the limits and returns it owned.
fn event(op: Op<'_>, max_payload: usize) -> Event {
    match op {
        Op::Connect(_) => Event::Connect,
        Op::Pub(p) => {
            // nats-server splits `PUB` arguments at spaces and tabs only (a
            // `\r` inside a subject is kept), `SUB`/`UNSUB` also at `\r`.
            check_field(p.msg.subject, b" \t\n");
            if let Some(r) = p.msg.reply {
                check_field(r, b" \t\n");
            }
            let body = p.body();
            assert!(
                body.len() <= max_payload,
                "payload of {} bytes over max_payload {max_payload}",
                body.len()
            );
            match p.msg.headers {
                Some(h) => {
                    assert!(!h.is_empty(), "empty header block handed out");
                    assert_eq!(body.len(), h.len() + p.msg.payload.len());
                }
                None => assert_eq!(body, p.msg.payload),
            }
            Event::Pub {
                subject: p.msg.subject.to_vec(),
                reply: p.msg.reply.map(<[u8]>::to_vec),
                headers: p.msg.headers.map(<[u8]>::to_vec),
                payload: p.msg.payload.to_vec(),
            }
        }
        Op::Sub {
            subject,
            queue,
            sid,
        } => {
            let seps = b" \t\r\n";
            check_field(subject, seps);
            assert!(index_pattern(subject), "SUB subject the index refuses");
            if let Some(q) = queue {
                check_field(q, seps);
            }
            check_field(sid, seps);
            Event::Sub {
                subject: subject.to_vec(),
                queue: queue.map(<[u8]>::to_vec),
                sid: sid.to_vec(),
            }
        }
        Op::Unsub { sid, max_msgs } => {
            check_field(sid, b" \t\r\n");
            if let Some(n) = max_msgs {
                assert!((1..=999_999_999).contains(&n), "max_msgs {n}");
            }
            Event::Unsub {
                sid: sid.to_vec(),
                max_msgs,
            }
        }
        Op::Ping => Event::Ping,
        Op::Pong => Event::Pong,
    }
}

/// Decodes `stream` read in the pieces `plan` cuts, as a shard does.
fn decode(stream: &[u8], plan: &[u8], max_payload: usize) -> Vec<Event> {
    let mut framer = new_framer(max_payload);
    let mut decoder = Decoder::new(max_payload);
    assert_eq!(decoder.max_payload(), max_payload);
    let bound = framer_max_frame(max_payload);
    let mut out = Vec::new();
    for (piece, _) in reads(stream, plan) {
        framer.push(piece);
        let closed = {
            let mut frames = framer.frames();
            let mut closed = false;
            while let Some(r) = decoder.next(&mut frames) {
                let e = match r {
                    Ok(op) => event(op, max_payload),
                    Err(e) => {
                        closed = e.closes();
                        Event::Err(e)
                    }
                };
                out.push(e);
                if closed {
                    // Nothing more, however often it is asked.
                    assert!(decoder.next(&mut frames).is_none(), "decoded after closing");
                    break;
                }
            }
            closed
        };
        if closed {
            assert_eq!(decoder.check_partial(&framer), Ok(()));
            return out;
        }
        if let Err(e) = decoder.check_partial(&framer) {
            assert_eq!(e, NatsError::MaxControlLine);
            assert!(framer.buffered() > MAX_CONTROL_LINE);
            out.push(Event::PartialTooLong);
            return out;
        }
        assert_holds_at_most(&framer, bound);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let max_payload = MAX_PAYLOADS[usize::from(input.byte() & 7)];
    let plan = input.list(16).to_vec();
    let stream = input.rest();

    let whole = decode(stream, &[], max_payload);
    let cut = decode(stream, &plan, max_payload);
    if cut != whole {
        // Only a line refused before its end may make a difference: the
        // cut run then stops there, having decoded what the whole run did
        // up to that line.
        let (last, before) = cut.split_last().expect("cut run decoded nothing");
        assert_eq!(
            *last,
            Event::PartialTooLong,
            "reads changed the decoding:\n whole: {whole:?}\n   cut: {cut:?}"
        );
        assert!(
            whole.starts_with(before),
            "reads changed the decoding:\n whole: {whole:?}\n   cut: {cut:?}"
        );
    }
});
