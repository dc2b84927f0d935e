//! The line protocol's parser (`tern::protocol::line::parse`) against the
//! spec's rules as `tern_fuzz::line_model` spells them out: for any frame,
//! the same command or the same `-ERR` reason; every field a slice of the
//! frame; a publish sent again as a client would write it parses back to
//! itself.
//!
//! Input: the frame (without its terminator).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tern::protocol::line::{encode_msg, msg_len, parse};
use tern::protocol::{Command, Message};
use tern_fuzz::line_model::{decode, Decoded};

/// Whether `part` lies within `frame` (a view, not a copy).
fn within(part: &[u8], frame: &[u8]) -> bool {
    let (p, f) = (part.as_ptr() as usize, frame.as_ptr() as usize);
    p >= f && p + part.len() <= f + frame.len()
}

/// The parser's command in the model's terms.
fn owned(cmd: Command<'_>, frame: &[u8]) -> Decoded {
    let field = |f: &[u8]| {
        assert!(within(f, frame), "a field that is not a slice of the frame");
        f.to_vec()
    };
    match cmd {
        Command::Sub { subject, group } => Decoded::Sub {
            subject: field(subject),
            group: group.map(field),
        },
        Command::Unsub { subject, group } => Decoded::Unsub {
            subject: field(subject),
            group: group.map(field),
        },
        Command::Pub(Message {
            subject,
            reply,
            headers,
            payload,
        }) => {
            assert!(
                reply.is_none() && headers.is_none(),
                "line PUB with NATS parts"
            );
            Decoded::Pub {
                subject: field(subject),
                payload: field(payload),
            }
        }
        Command::Ping => Decoded::Ping,
        Command::Empty => Decoded::Empty,
        other => panic!("the line protocol decoded a NATS command: {other:?}"),
    }
}

fuzz_target!(|frame: &[u8]| {
    let got = parse(frame).map(|cmd| owned(cmd, frame));
    assert_eq!(
        got,
        decode(frame),
        "frame {:?}",
        String::from_utf8_lossy(frame)
    );
    match got {
        Ok(Decoded::Pub { subject, payload }) => {
            // What a client writes for this publish parses back to it, and
            // the delivery is as long as `msg_len` says.
            let mut again = b"PUB ".to_vec();
            again.extend_from_slice(&subject);
            again.push(b' ');
            again.extend_from_slice(&payload);
            assert_eq!(
                parse(&again),
                Ok(Command::Pub(Message::plain(&subject, &payload)))
            );
            let mut out = Vec::new();
            encode_msg(&mut out, &subject, &payload, b"\r\n");
            assert_eq!(out.len(), msg_len(&subject, &payload, b"\r\n"));
            assert_eq!(&out[4..out.len() - 2], &again[4..]);
        }
        Err(e) => assert_eq!(e.to_string(), e.reason()),
        _ => {}
    }
});
