//! The line protocol's client frames as `docs/protocol.md` defines them,
//! decoded the plain way: split the frame into its fields, then run the
//! spec's checks in the spec's order.

use tern::protocol::ProtoError;

/// What a frame means, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Sub {
        subject: Vec<u8>,
        group: Option<Vec<u8>>,
    },
    Unsub {
        subject: Vec<u8>,
        group: Option<Vec<u8>>,
    },
    Pub {
        subject: Vec<u8>,
        payload: Vec<u8>,
    },
    Ping,
    Empty,
}

/// Printable ASCII without the space.
fn printable(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// The spec's "Subjects" rules; `wildcards` for `SUB`/`UNSUB`.
pub fn valid_subject(s: &[u8], wildcards: bool) -> bool {
    if s.is_empty() || s.len() > 256 || !s.iter().all(|&b| printable(b)) {
        return false;
    }
    let tokens: Vec<&[u8]> = s.split(|&b| b == b'.').collect();
    let last = tokens.len() - 1;
    tokens.iter().enumerate().all(|(i, t)| match *t {
        b"" => false,
        b"*" => wildcards,
        b">" => wildcards && i == last,
        _ => true,
    })
}

/// Group names: 1 to 64 printable bytes.
pub fn valid_group(g: &[u8]) -> bool {
    (1..=64).contains(&g.len()) && g.iter().all(|&b| printable(b))
}

/// Decodes one frame (without its terminator).
pub fn decode(frame: &[u8]) -> Result<Decoded, ProtoError> {
    if frame.is_empty() {
        return Ok(Decoded::Empty);
    }
    let (verb, args) = match frame.iter().position(|&b| b == b' ') {
        Some(i) => (&frame[..i], Some(&frame[i + 1..])),
        None => (frame, None),
    };
    let verb = verb.to_ascii_uppercase();
    match &verb[..] {
        b"PING" => match args {
            None => Ok(Decoded::Ping),
            Some(_) => Err(ProtoError::InvalidArguments),
        },
        b"PUB" => {
            // The payload is every byte after the space that follows the
            // subject, so only the first space of the body matters.
            let body = args.ok_or(ProtoError::MissingSubject)?;
            let (subject, payload) = match body.iter().position(|&b| b == b' ') {
                Some(i) => (&body[..i], &body[i + 1..]),
                None => (body, &b""[..]),
            };
            if subject.is_empty() {
                return Err(ProtoError::MissingSubject);
            }
            if !valid_subject(subject, false) {
                return Err(ProtoError::InvalidSubject);
            }
            Ok(Decoded::Pub {
                subject: subject.to_vec(),
                payload: payload.to_vec(),
            })
        }
        b"SUB" | b"UNSUB" => {
            let args = args.ok_or(ProtoError::MissingSubject)?;
            let fields: Vec<&[u8]> = args.split(|&b| b == b' ').collect();
            let subject = fields[0];
            if subject.is_empty() {
                return Err(ProtoError::MissingSubject);
            }
            if !valid_subject(subject, true) {
                return Err(ProtoError::InvalidSubject);
            }
            let group = fields.get(1).copied();
            if group.is_some_and(|g| !valid_group(g)) {
                return Err(ProtoError::InvalidGroup);
            }
            if fields.len() > 2 {
                return Err(ProtoError::InvalidArguments);
            }
            let (subject, group) = (subject.to_vec(), group.map(<[u8]>::to_vec));
            Ok(if verb == b"SUB" {
                Decoded::Sub { subject, group }
            } else {
                Decoded::Unsub { subject, group }
            })
        }
        _ => Err(ProtoError::UnknownVerb),
    }
}
