//! The line protocol (`docs/protocol.md`): frames in, [`Command`]s out;
//! replies and deliveries encoded.
//!
//! [`parse`] turns one frame (already split off by [`crate::framing`]) into a
//! [`Command`] that borrows from it, or a [`ProtoError`] whose
//! [`reason`](ProtoError::reason) is the exact text of the spec's `-ERR`.
//! Checks run in the spec's order, so a frame with several faults gets the
//! first reason the spec lists.
//!
//! A publish is handed over as subject and payload, both slices of the
//! frame; [`encode_msg`] writes `MSG <subject> <payload>` for each receiver
//! (the space after the subject is there even for an empty payload, as the
//! spec requires).
//!
//! ```
//! use tern::protocol::{line::parse, Command, Message, ProtoError};
//! assert_eq!(parse(b"pub a.b hi there"),
//!            Ok(Command::Pub(Message::plain(b"a.b", b"hi there"))));
//! assert_eq!(parse(b"SUB a.* workers"),
//!            Ok(Command::Sub { subject: b"a.*", group: Some(b"workers") }));
//! assert_eq!(parse(b"PUB a..b x"), Err(ProtoError::InvalidSubject));
//! ```

use super::{Command, Message};
use crate::subject::{is_valid_group, is_valid_subject, MAX_SUBJECT_LEN};

/// A frame the relay refuses with `-ERR <reason>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("unknown verb")]
    UnknownVerb,
    #[error("missing subject")]
    MissingSubject,
    #[error("invalid subject")]
    InvalidSubject,
    #[error("invalid group")]
    InvalidGroup,
    #[error("invalid arguments")]
    InvalidArguments,
    #[error("too many subscriptions")]
    TooManySubscriptions,
    #[error("frame too long")]
    FrameTooLong,
    #[error("slow consumer")]
    SlowConsumer,
    #[error("too many connections")]
    TooManyConnections,
    #[error("permission denied")]
    PermissionDenied,
    #[error("authorization required")]
    AuthorizationRequired,
    #[error("authorization failed")]
    AuthorizationFailed,
    #[error("authorization timeout")]
    AuthorizationTimeout,
}

impl ProtoError {
    /// The reason text of the spec, as sent after `-ERR `.
    pub fn reason(self) -> &'static str {
        match self {
            ProtoError::UnknownVerb => "unknown verb",
            ProtoError::MissingSubject => "missing subject",
            ProtoError::InvalidSubject => "invalid subject",
            ProtoError::InvalidGroup => "invalid group",
            ProtoError::InvalidArguments => "invalid arguments",
            ProtoError::TooManySubscriptions => "too many subscriptions",
            ProtoError::FrameTooLong => "frame too long",
            ProtoError::SlowConsumer => "slow consumer",
            ProtoError::TooManyConnections => "too many connections",
            ProtoError::PermissionDenied => "permission denied",
            ProtoError::AuthorizationRequired => "authorization required",
            ProtoError::AuthorizationFailed => "authorization failed",
            ProtoError::AuthorizationTimeout => "authorization timeout",
        }
    }

    /// Every reason, for counters indexed by reason.
    pub const ALL: [ProtoError; 13] = [
        ProtoError::UnknownVerb,
        ProtoError::MissingSubject,
        ProtoError::InvalidSubject,
        ProtoError::InvalidGroup,
        ProtoError::InvalidArguments,
        ProtoError::TooManySubscriptions,
        ProtoError::FrameTooLong,
        ProtoError::SlowConsumer,
        ProtoError::TooManyConnections,
        ProtoError::PermissionDenied,
        ProtoError::AuthorizationRequired,
        ProtoError::AuthorizationFailed,
        ProtoError::AuthorizationTimeout,
    ];
}

/// Whether `frame` is an `AUTH` frame (verb in any case), well-formed or
/// not: the credentials, or `None` if it is `AUTH` without one or two
/// non-empty fields.
///
/// Only a relay with authentication configured reads `AUTH` (with this,
/// before anything else); for the others [`parse`] answers it as an
/// unknown verb, as version 1 of the protocol did.
pub fn parse_auth(frame: &[u8]) -> Option<Option<crate::auth::Credentials>> {
    use crate::auth::Credentials;
    let (verb, args) = match memchr::memchr(b' ', frame) {
        Some(i) => (&frame[..i], Some(&frame[i + 1..])),
        None => (frame, None),
    };
    if !verb.eq_ignore_ascii_case(b"AUTH") {
        return None;
    }
    let text = |f: &[u8]| String::from_utf8_lossy(f).into_owned();
    let fields: Vec<&[u8]> = args
        .map(|a| a.split(|&b| b == b' ').collect())
        .unwrap_or_default();
    Some(match fields.as_slice() {
        [token] if !token.is_empty() => Some(Credentials::Token(text(token))),
        [user, pass] if !user.is_empty() && !pass.is_empty() => Some(Credentials::User {
            user: text(user),
            pass: text(pass),
        }),
        _ => None,
    })
}

/// Parses one frame (without its terminator).
#[inline]
pub fn parse(frame: &[u8]) -> Result<Command<'_>, ProtoError> {
    // The hot path: `PUB ` in any case, checked without a search.
    if frame.len() >= 4 && frame[3] == b' ' && frame[..3].eq_ignore_ascii_case(b"PUB") {
        return parse_pub(&frame[4..]);
    }
    if frame.is_empty() {
        return Ok(Command::Empty);
    }
    let (verb, args) = match memchr::memchr(b' ', frame) {
        Some(i) => (&frame[..i], Some(&frame[i + 1..])),
        None => (frame, None),
    };
    if verb.eq_ignore_ascii_case(b"PUB") {
        // `PUB` with no space at all: no subject.
        return match args {
            Some(body) => parse_pub(body),
            None => Err(ProtoError::MissingSubject),
        };
    }
    if verb.eq_ignore_ascii_case(b"PING") {
        return match args {
            None => Ok(Command::Ping),
            Some(_) => Err(ProtoError::InvalidArguments),
        };
    }
    let sub = verb.eq_ignore_ascii_case(b"SUB");
    if !sub && !verb.eq_ignore_ascii_case(b"UNSUB") {
        return Err(ProtoError::UnknownVerb);
    }
    let args = args.ok_or(ProtoError::MissingSubject)?;
    let mut fields = args.splitn(3, |&b| b == b' ');
    let subject = fields.next().unwrap_or_default();
    if subject.is_empty() {
        return Err(ProtoError::MissingSubject);
    }
    if !is_valid_subject(subject, true) {
        return Err(ProtoError::InvalidSubject);
    }
    let group = fields.next();
    if let Some(g) = group {
        if !is_valid_group(g) {
            return Err(ProtoError::InvalidGroup);
        }
    }
    if fields.next().is_some() {
        return Err(ProtoError::InvalidArguments);
    }
    Ok(if sub {
        Command::Sub { subject, group }
    } else {
        Command::Unsub { subject, group }
    })
}

/// `body` is what follows `PUB `.
#[inline]
fn parse_pub(body: &[u8]) -> Result<Command<'_>, ProtoError> {
    // Subjects are short: a plain loop bounded by the longest valid subject
    // beats `memchr`'s set-up here (it showed in profiles), and never reads
    // far into a long payload.
    let window = &body[..body.len().min(MAX_SUBJECT_LEN + 1)];
    let subject = match window.iter().position(|&b| b == b' ') {
        Some(i) => &body[..i],
        None if body.len() <= MAX_SUBJECT_LEN => body,
        None => return Err(ProtoError::InvalidSubject),
    };
    if subject.is_empty() {
        return Err(ProtoError::MissingSubject);
    }
    if !is_valid_subject(subject, false) {
        return Err(ProtoError::InvalidSubject);
    }
    // The payload is every byte after the space that follows the subject,
    // and empty when there is no such space: then the empty slice at the
    // frame's end, so that it is still a slice of the frame (the core
    // forwards a message by its parts' places in the read buffer, and
    // copies one whose parts are not all in it).
    let payload = body.get(subject.len() + 1..).unwrap_or(&body[body.len()..]);
    Ok(Command::Pub(Message::plain(subject, payload)))
}

/// `MSG ` — what a delivery starts with.
pub const MSG_PREFIX: &[u8] = b"MSG ";

/// Appends `MSG <subject> <payload>` and the terminator. The space after
/// the subject is written even for an empty payload, as the spec requires.
#[inline]
pub fn encode_msg(out: &mut Vec<u8>, subject: &[u8], payload: &[u8], terminator: &[u8]) {
    out.reserve(msg_len(subject, payload, terminator));
    out.extend_from_slice(MSG_PREFIX);
    out.extend_from_slice(subject);
    out.push(b' ');
    out.extend_from_slice(payload);
    out.extend_from_slice(terminator);
}

/// Bytes [`encode_msg`] appends.
#[inline]
pub fn msg_len(subject: &[u8], payload: &[u8], terminator: &[u8]) -> usize {
    MSG_PREFIX.len() + subject.len() + 1 + payload.len() + terminator.len()
}

/// Bytes [`encode_pong`] appends.
pub fn pong_len(terminator: &[u8]) -> usize {
    b"PONG".len() + terminator.len()
}

/// Appends `PONG` and the terminator.
pub fn encode_pong(out: &mut Vec<u8>, terminator: &[u8]) {
    out.extend_from_slice(b"PONG");
    out.extend_from_slice(terminator);
}

/// Bytes [`encode_err`] appends.
pub fn err_len(err: ProtoError, terminator: &[u8]) -> usize {
    b"-ERR ".len() + err.reason().len() + terminator.len()
}

/// Appends `-ERR <reason>` and the terminator.
pub fn encode_err(out: &mut Vec<u8>, err: ProtoError, terminator: &[u8]) {
    out.extend_from_slice(b"-ERR ");
    out.extend_from_slice(err.reason().as_bytes());
    out.extend_from_slice(terminator);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Command::*;
    use ProtoError::*;

    #[test]
    fn verbs_are_case_insensitive() {
        for f in [&b"PING"[..], b"ping", b"PiNg"] {
            assert_eq!(parse(f), Ok(Ping));
        }
        assert_eq!(
            parse(b"sUb a"),
            Ok(Sub {
                subject: b"a",
                group: None
            })
        );
        assert_eq!(
            parse(b"unsub a g"),
            Ok(Unsub {
                subject: b"a",
                group: Some(b"g")
            })
        );
        assert_eq!(parse(b"Pub a x"), Ok(Pub(Message::plain(b"a", b"x"))));
    }

    #[test]
    fn pub_payloads() {
        assert_eq!(parse(b"PUB a.b"), Ok(Pub(Message::plain(b"a.b", b""))));
        assert_eq!(parse(b"PUB a.b "), Ok(Pub(Message::plain(b"a.b", b""))));
        assert_eq!(
            parse(b"PUB a.b  two  spaces "),
            Ok(Pub(Message::plain(b"a.b", b" two  spaces ")))
        );
    }

    #[test]
    fn errors_in_spec_order() {
        let cases: &[(&[u8], ProtoError)] = &[
            (b"FOO", UnknownVerb),
            (b"PUBX a", UnknownVerb),
            (b" PUB a", UnknownVerb),
            (b"MSG a b", UnknownVerb),
            (b"PUB", MissingSubject),
            (b"PUB ", MissingSubject),
            (b"PUB  x", MissingSubject),
            (b"SUB", MissingSubject),
            (b"SUB ", MissingSubject),
            (b"UNSUB  a", MissingSubject),
            (b"PUB a..b x", InvalidSubject),
            (b"PUB a.* x", InvalidSubject),
            (b"PUB a.> x", InvalidSubject),
            (b"SUB a.>.b", InvalidSubject),
            (b"SUB .a g h", InvalidSubject),
            (b"SUB a ", InvalidGroup),
            (b"SUB a  x", InvalidGroup),
            (b"SUB a g h", InvalidArguments),
            (b"SUB a g ", InvalidArguments),
            (b"UNSUB a g h", InvalidArguments),
            (b"PING x", InvalidArguments),
            (b"PING ", InvalidArguments),
        ];
        for (frame, want) in cases {
            assert_eq!(
                parse(frame),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(frame)
            );
        }
        let long_group = [b'g'; 65];
        let mut f = b"SUB a ".to_vec();
        f.extend_from_slice(&long_group);
        assert_eq!(parse(&f), Err(InvalidGroup));
        let long_subject = [b's'; 257];
        let mut f = b"PUB ".to_vec();
        f.extend_from_slice(&long_subject);
        assert_eq!(parse(&f), Err(InvalidSubject));
        f.extend_from_slice(b" payload");
        assert_eq!(parse(&f), Err(InvalidSubject));
        let mut ok = b"PUB ".to_vec();
        ok.extend_from_slice(&[b's'; 256]);
        ok.extend_from_slice(b" payload");
        assert!(matches!(parse(&ok), Ok(Pub(_))));
        ok.truncate(4 + 256);
        assert!(matches!(parse(&ok), Ok(Pub(_))));
    }

    #[test]
    fn every_field_is_a_slice_of_the_frame() {
        // Found by the line_protocol fuzz target: an empty payload without
        // the space before it was a slice of nothing, so forwarding the
        // message to another shard copied it.
        let within = |part: &[u8], frame: &[u8]| {
            let (p, f) = (part.as_ptr() as usize, frame.as_ptr() as usize);
            p >= f && p + part.len() <= f + frame.len()
        };
        for frame in [&b"PUB a.b"[..], b"PUB a.b ", b"pub a x y", b"PUB  x"] {
            if let Ok(Pub(m)) = parse(frame) {
                assert!(within(m.subject, frame) && within(m.payload, frame));
            }
        }
        let frame = b"PUB a.b";
        let Ok(Pub(m)) = parse(frame) else {
            panic!("not a publish")
        };
        assert!(m.payload.is_empty());
        assert!(within(m.payload, frame), "empty payload outside the frame");
        assert!(
            crate::mesh::Place::of(frame, &m).is_some(),
            "forwarded by place, not copied"
        );
        for frame in [&b"SUB a.* g"[..], b"UNSUB a"] {
            match parse(frame) {
                Ok(Sub { subject, group } | Unsub { subject, group }) => {
                    assert!(within(subject, frame));
                    assert!(group.is_none_or(|g| within(g, frame)));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn wildcard_like_tokens_are_plain() {
        assert_eq!(parse(b"PUB a* x"), Ok(Pub(Message::plain(b"a*", b"x"))));
        assert!(matches!(parse(b"SUB b>"), Ok(Sub { .. })));
    }

    #[test]
    fn empty_frame() {
        assert_eq!(parse(b""), Ok(Empty));
    }

    #[test]
    fn encoding() {
        let mut out = Vec::new();
        encode_msg(&mut out, b"a.b", b"1.0", b"\n");
        encode_msg(&mut out, b"a.b", b"", b"\r\n");
        encode_pong(&mut out, b"\0\0");
        encode_err(&mut out, SlowConsumer, b"END\n");
        assert_eq!(
            &out[..],
            &b"MSG a.b 1.0\nMSG a.b \r\nPONG\0\0-ERR slow consumerEND\n"[..]
        );
        assert_eq!(msg_len(b"a.b", b"", b"\r\n"), b"MSG a.b \r\n".len());
        assert_eq!(pong_len(b"\0\0"), b"PONG\0\0".len());
        assert_eq!(
            err_len(SlowConsumer, b"END\n"),
            b"-ERR slow consumerEND\n".len()
        );
        for e in ProtoError::ALL {
            assert_eq!(e.to_string(), e.reason());
        }
    }
}
