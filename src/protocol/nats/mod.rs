//! The NATS client protocol (the NATS front-door spec, `nats-front-door.md`;
//! nats-server 2.10 where the spec is silent): `INFO`, `MSG`, `HMSG`,
//! `PING`, `PONG`, `+OK` and `-ERR` encoded, and nats-server's errors and
//! subject rules. No I/O.
//!
//! # Encoding
//!
//! [`encode_msg_head`]/[`encode_hmsg_head`] write the per-receiver control
//! line of a delivery into an outbound buffer, so a payload shared by many
//! receivers is written once per receiver with no intermediate string, or
//! handed to a vectored write; [`encode_msg`]/[`encode_hmsg`] write a whole
//! delivery. Every encoder has a `*_len` twin that says exactly how many
//! bytes it appends. [`encode_info`] writes the greeting from a
//! [`ServerInfo`]; [`encode_no_responders`] the `503` status reply.

mod encode;
mod server_id;

pub use encode::{
    decimal_len, encode_decimal, encode_err, encode_hmsg, encode_hmsg_head, encode_hpub,
    encode_info, encode_msg, encode_msg_head, encode_no_responders, encode_pub, err_len,
    hmsg_head_len, hmsg_len, hpub_len, info_len, msg_head_len, msg_len, no_responders_len, pub_len,
    ServerInfo, CRLF, OK, PING, PONG,
};
pub use server_id::new_server_id;

/// Longest control-line argument nats-server accepts by default
/// (`max_control_line`), in bytes: what follows the verb and its
/// separators, without the line end.
pub const MAX_CONTROL_LINE: usize = 4096;

/// nats-server's default `max_payload`, 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// The protocol level announced in `INFO` (`proto`): async `INFO`
/// capable, as nats-server 2.x.
pub const PROTO: u32 = 1;

/// What a NATS connection did wrong (or what the server tells it), with
/// nats-server's answer: the `-ERR` text, if any ([`NatsError::text`]), and
/// whether the connection is closed ([`NatsError::closes`]).
///
/// `Display` gives the text for the errors that have one, and
/// nats-server's log text for the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NatsError {
    /// Not an operation a client may send (a parse error).
    #[error("Unknown Protocol Operation")]
    UnknownProtocol,
    /// Control-line arguments longer than [`MAX_CONTROL_LINE`].
    #[error("Maximum Control Line Exceeded")]
    MaxControlLine,
    /// A `PUB`/`HPUB` larger than `max_payload`.
    #[error("Maximum Payload Violation")]
    MaxPayload,
    /// A `SUB` subject nats-server's index refuses; the connection stays.
    #[error("Invalid Subject")]
    InvalidSubject,
    /// A pedantic client's `PUB` to a subject with an empty or wildcard
    /// token; the connection stays and the message is still published.
    #[error("Invalid Publish Subject")]
    InvalidPublishSubject,
    /// `CONNECT` with a `protocol` other than 0 or 1.
    #[error("invalid client protocol")]
    BadClientProtocol,
    /// `CONNECT` with `no_responders` but not `headers`.
    #[error("no responders requires headers support")]
    NoRespondersRequiresHeaders,
    /// `HPUB` from a connection that did not `CONNECT` with `headers: true`
    /// (closed without `-ERR`).
    #[error("message headers not supported")]
    HeadersNotSupported,
    /// `PUB` without 2 or 3 arguments (closed without `-ERR`).
    #[error("processPub Parse Error")]
    PubArgs,
    /// `PUB` size not 1 to 9 decimal digits (closed without `-ERR`).
    #[error("processPub Bad or Missing Size")]
    PubSize,
    /// `HPUB` without 3 or 4 arguments (closed without `-ERR`).
    #[error("processHeaderPub Parse Error")]
    HpubArgs,
    /// `HPUB` header size not 1 to 9 digits (closed without `-ERR`).
    #[error("processHeaderPub Bad or Missing Header Size")]
    HpubHeaderSize,
    /// `HPUB` total size not 1 to 9 digits (closed without `-ERR`).
    #[error("processHeaderPub Bad or Missing Total Size")]
    HpubTotalSize,
    /// `HPUB` header size larger than its total size (closed without
    /// `-ERR`).
    #[error("processHeaderPub Header Size larger then TotalSize")]
    HpubHeaderTooLarge,
    /// `SUB` without 2 or 3 arguments (closed without `-ERR`).
    #[error("processSub Parse Error")]
    SubArgs,
    /// `UNSUB` without 1 or 2 arguments (closed without `-ERR`).
    #[error("processUnsub Parse Error")]
    UnsubArgs,
    /// `CONNECT` whose JSON nats-server cannot decode (closed without
    /// `-ERR`).
    #[error("invalid CONNECT JSON")]
    BadConnect,
    /// `INFO` from a client that is not a JSON object (closed without
    /// `-ERR`).
    #[error("invalid INFO JSON")]
    BadInfo,
    /// The client sent `-ERR` (closed without `-ERR`).
    #[error("client sent -ERR")]
    ClientError,
    /// Two `PING`s went unanswered (the server's side; closes).
    #[error("Stale Connection")]
    StaleConnection,
    /// The connection limit was reached (the server's side; closes).
    #[error("maximum connections exceeded")]
    MaxConnections,
    /// The per-connection subscription limit was reached (the server's
    /// side); the `SUB` is refused, the connection stays.
    #[error("maximum subscriptions exceeded")]
    MaxSubscriptions,
    /// Authentication failed (for later; closes).
    #[error("Authorization Violation")]
    AuthorizationViolation,
    /// The client does not read fast enough (the server's side). nats-server
    /// closes such a client without an `-ERR`.
    #[error("Slow Consumer")]
    SlowConsumer,
}

impl NatsError {
    /// The text nats-server sends as `-ERR '<text>'`, or `None` when it
    /// closes the connection without a word.
    pub fn text(self) -> Option<&'static str> {
        use NatsError::*;
        Some(match self {
            UnknownProtocol => "Unknown Protocol Operation",
            MaxControlLine => "Maximum Control Line Exceeded",
            MaxPayload => "Maximum Payload Violation",
            InvalidSubject => "Invalid Subject",
            InvalidPublishSubject => "Invalid Publish Subject",
            BadClientProtocol => "invalid client protocol",
            NoRespondersRequiresHeaders => "no responders requires headers support",
            StaleConnection => "Stale Connection",
            MaxConnections => "maximum connections exceeded",
            MaxSubscriptions => "maximum subscriptions exceeded",
            AuthorizationViolation => "Authorization Violation",
            HeadersNotSupported | PubArgs | PubSize | HpubArgs | HpubHeaderSize | HpubTotalSize
            | HpubHeaderTooLarge | SubArgs | UnsubArgs | BadConnect | BadInfo | ClientError
            | SlowConsumer => return None,
        })
    }

    /// Whether nats-server closes the connection after this error.
    pub fn closes(self) -> bool {
        !matches!(
            self,
            NatsError::InvalidSubject
                | NatsError::InvalidPublishSubject
                | NatsError::MaxSubscriptions
        )
    }

    /// Every error, for counters indexed by error.
    pub const ALL: [NatsError; 24] = {
        use NatsError::*;
        [
            UnknownProtocol,
            MaxControlLine,
            MaxPayload,
            InvalidSubject,
            InvalidPublishSubject,
            BadClientProtocol,
            NoRespondersRequiresHeaders,
            HeadersNotSupported,
            PubArgs,
            PubSize,
            HpubArgs,
            HpubHeaderSize,
            HpubTotalSize,
            HpubHeaderTooLarge,
            SubArgs,
            UnsubArgs,
            BadConnect,
            BadInfo,
            ClientError,
            StaleConnection,
            MaxConnections,
            MaxSubscriptions,
            AuthorizationViolation,
            SlowConsumer,
        ]
    };
}

/// Whether nats-server's subscription index accepts `subject` for `SUB`:
/// no empty token (so not empty, no leading, trailing or doubled `.`), and
/// no token after a token that is exactly `>`. Any other bytes are allowed
/// and a token is a wildcard only when it is exactly `*` or `>`; there is no
/// length limit beyond the control line's.
pub fn is_valid_sub_subject(subject: &[u8]) -> bool {
    let mut after_full_wildcard = false;
    for token in subject.split(|&b| b == b'.') {
        if token.is_empty() || after_full_wildcard {
            return false;
        }
        after_full_wildcard = token == b">";
    }
    true
}

/// Whether `subject` is a valid literal subject (the pedantic check of
/// `PUB`): no empty token and no token that is exactly `*` or `>`.
pub fn is_valid_literal_subject(subject: &[u8]) -> bool {
    subject
        .split(|&b| b == b'.')
        .all(|t| !t.is_empty() && t != b"*" && t != b">")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_and_close_rules() {
        use NatsError::*;
        let cases: &[(NatsError, Option<&str>, bool)] = &[
            (UnknownProtocol, Some("Unknown Protocol Operation"), true),
            (MaxControlLine, Some("Maximum Control Line Exceeded"), true),
            (MaxPayload, Some("Maximum Payload Violation"), true),
            (InvalidSubject, Some("Invalid Subject"), false),
            (
                InvalidPublishSubject,
                Some("Invalid Publish Subject"),
                false,
            ),
            (BadClientProtocol, Some("invalid client protocol"), true),
            (
                NoRespondersRequiresHeaders,
                Some("no responders requires headers support"),
                true,
            ),
            (HeadersNotSupported, None, true),
            (PubArgs, None, true),
            (PubSize, None, true),
            (HpubArgs, None, true),
            (HpubHeaderSize, None, true),
            (HpubTotalSize, None, true),
            (HpubHeaderTooLarge, None, true),
            (SubArgs, None, true),
            (UnsubArgs, None, true),
            (BadConnect, None, true),
            (BadInfo, None, true),
            (ClientError, None, true),
            (StaleConnection, Some("Stale Connection"), true),
            (MaxConnections, Some("maximum connections exceeded"), true),
            (
                MaxSubscriptions,
                Some("maximum subscriptions exceeded"),
                false,
            ),
            (
                AuthorizationViolation,
                Some("Authorization Violation"),
                true,
            ),
            (SlowConsumer, None, true),
        ];
        assert_eq!(cases.len(), NatsError::ALL.len());
        for (i, &(e, text, closes)) in cases.iter().enumerate() {
            assert_eq!(NatsError::ALL[i], e);
            assert_eq!(e.text(), text, "{e:?}");
            assert_eq!(e.closes(), closes, "{e:?}");
            if let Some(t) = text {
                assert_eq!(e.to_string(), t);
            }
        }
    }

    #[test]
    fn sub_subjects() {
        for ok in [
            &b"a"[..],
            b"a.b.c",
            b"*",
            b">",
            b"a.*.c",
            b"a.>",
            b"*.>",
            b"a*.b>",
            b">a.b",
            b"\xff\x01.\x7f",
            b"a\rb",
        ] {
            assert!(is_valid_sub_subject(ok), "{ok:?}");
        }
        for bad in [
            &b""[..],
            b".",
            b"a.",
            b".a",
            b"a..b",
            b">.a",
            b"a.>.b",
            b"a.>.>",
        ] {
            assert!(!is_valid_sub_subject(bad), "{bad:?}");
        }
        let long = vec![b'x'; 10_000];
        assert!(is_valid_sub_subject(&long));
    }

    #[test]
    fn literal_subjects() {
        for ok in [&b"a"[..], b"a.b", b"a*.b>", b"**", b">>", b"\x00"] {
            assert!(is_valid_literal_subject(ok), "{ok:?}");
        }
        for bad in [
            &b""[..],
            b"*",
            b">",
            b"a.*",
            b"a.>",
            b"*.a",
            b"a..b",
            b"a.",
            b".a",
        ] {
            assert!(!is_valid_literal_subject(bad), "{bad:?}");
        }
    }
}
