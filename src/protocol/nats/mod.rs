//! The NATS client protocol (the NATS front-door spec, `nats-front-door.md`;
//! nats-server 2.10 where the spec is silent): frames in, [`Op`]s out;
//! `INFO`, `MSG`, `HMSG`, `PING`, `PONG`, `+OK` and `-ERR` encoded. No I/O.
//!
//! # Decoding
//!
//! A NATS connection is framed by a [`Framer`](crate::framing::Framer)
//! whose terminator is `\n` (so that `\r\n` and a bare `\n` both end a
//! control line, as in nats-server); [`new_framer`] builds one sized for a
//! `max_payload`. A [`Decoder`] drives it: it reads a control line, and for
//! `PUB`/`HPUB` switches the framer to [`Mode::Count`](crate::framing::Mode)
//! for the payload and its `\r\n`, then back. [`Decoder::next`] hands out
//! one [`Op`] at a time, or a [`NatsError`] that says what nats-server would
//! answer ([`NatsError::text`]) and whether it closes the connection
//! ([`NatsError::closes`]). After an error that closes, the decoder yields
//! nothing more.
//!
//! What a publish hands out are slices of the read buffer, not copies: the
//! payload (and header block) of the payload frame, and the subject and
//! reply of the control line. When both frames come from one read — the
//! usual case — they are slices of the same chunk, [`Publish::chunk`].
//! When the payload arrives in a later read, the decoder keeps a copy of
//! the control line (at most [`MAX_CONTROL_LINE`] bytes and the verb)
//! rather than a reference to its chunk, so that the framer can reuse its
//! read buffer.
//!
//! nats-server's parser is the reference for what is accepted:
//!
//! * verbs in any case; a `PUB`, `HPUB`, `SUB`, `UNSUB` or `-ERR` verb must
//!   be followed by a space or tab, and fields are separated by runs of
//!   spaces and tabs (`SUB`/`UNSUB` also split at a stray `\r`);
//! * `PING` and `PONG` ignore whatever follows them on the line, `+OK` and
//!   a well-formed `INFO` from a client are ignored, `-ERR` from a client
//!   closes the connection;
//! * anything else, an empty line included, is `Unknown Protocol
//!   Operation`;
//! * arguments longer than [`MAX_CONTROL_LINE`] bytes are refused before
//!   they are looked at; a `PUB` larger than `max_payload` is refused from
//!   its control line, before its payload is read;
//! * malformed arguments (`PUB a`, `PUB a b c d`, a size that is not 1 to 9
//!   decimal digits, `HPUB` without `headers: true`, a `CONNECT` that is not
//!   JSON) close the connection *without* an `-ERR`, as nats-server does —
//!   [`NatsError::text`] is `None` for those;
//! * a `SUB` subject with an empty token or a token after `>` gets `-ERR
//!   'Invalid Subject'` and the connection stays open; a `PUB` subject is
//!   only checked when the client is pedantic (the default until
//!   `CONNECT` says otherwise), and a bad one gets `-ERR 'Invalid Publish
//!   Subject'` *and is still published*.
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
//!
//! ```
//! use tern::protocol::nats::{new_framer, Decoder, Op};
//!
//! let mut framer = new_framer(1024);
//! let mut decoder = Decoder::new(1024);
//! framer.push(b"SUB a.* 1\r\nPUB a.b 5\r\nhello\r\n");
//! let mut frames = framer.frames();
//! match decoder.next(&mut frames) {
//!     Some(Ok(Op::Sub { subject, queue: None, sid })) => {
//!         assert_eq!((subject, sid), (&b"a.*"[..], &b"1"[..]));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! match decoder.next(&mut frames) {
//!     Some(Ok(Op::Pub(p))) => assert_eq!((p.msg.subject, p.msg.payload), (&b"a.b"[..], &b"hello"[..])),
//!     other => panic!("{other:?}"),
//! }
//! assert!(decoder.next(&mut frames).is_none());
//! ```

mod connect;
mod decode;
mod encode;
mod server_id;

use bytes::Bytes;

use super::Message;

pub use connect::ConnectOptions;
pub(crate) use decode::{counted_payload, parse_size, PayloadError};
pub use decode::{framer_max_frame, new_framer, Decoder};
pub use encode::{
    decimal_len, encode_decimal, encode_err, encode_hmsg, encode_hmsg_head, encode_hpub,
    encode_info, encode_msg, encode_msg_head, encode_no_responders, encode_pub, err_len,
    hmsg_head_len, hmsg_len, hpub_len, info_len, msg_head_len, msg_len, no_responders_len, pub_len,
    MsgHead, ServerInfo, CRLF, OK, PING, PONG,
};
pub use server_id::new_server_id;

/// Longest control-line argument nats-server accepts by default
/// (`max_control_line`), in bytes: what follows the verb and its
/// separators, without the line end.
pub const MAX_CONTROL_LINE: usize = 4096;

/// nats-server's default `max_payload`, 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// The nats-server version whose client protocol tern implements,
/// announced in `INFO` (`version`): clients enable features by it.
pub const SERVER_VERSION: &str = "2.10.0";

/// The protocol level announced in `INFO` (`proto`): async `INFO`
/// capable, as nats-server 2.x.
pub const PROTO: u32 = 1;

/// One decoded client operation, borrowing from the read buffer (or, for
/// `CONNECT`, from the decoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// `CONNECT {json}`, accepted: the connection's options now (the JSON
    /// merged over the earlier ones). Answer `+OK` if `verbose`.
    Connect(&'a ConnectOptions),
    /// `PUB` or `HPUB` with its payload. Answer `+OK` if verbose, ahead of
    /// anything the publish delivers to the same connection (nats-server's
    /// order on the wire).
    Pub(Publish<'a>),
    /// `SUB <subject> [queue] <sid>`; the subject is valid by nats-server's
    /// rule ([`is_valid_sub_subject`]). The queue name is not checked
    /// (nats-server does not). Answer `+OK` if verbose.
    Sub {
        subject: &'a [u8],
        queue: Option<&'a [u8]>,
        sid: &'a [u8],
    },
    /// `UNSUB <sid> [max_msgs]`. `max_msgs` is `Some(n)` (n ≥ 1) to end the
    /// subscription once `n` messages in total were delivered to it; `None`
    /// ends it now — also for `0` or a count that is not 1 to 9 digits,
    /// which nats-server reads the same way. An unknown sid is no error.
    /// Answer `+OK` if verbose.
    Unsub {
        sid: &'a [u8],
        max_msgs: Option<u64>,
    },
    /// `PING`: answer `PONG` (the barrier of the spec).
    Ping,
    /// `PONG`: the client answered a server `PING`.
    Pong,
}

/// A message published by `PUB` or `HPUB`, and the read chunk it lies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish<'a> {
    /// Subject (as sent: checked only when pedantic), reply subject, the
    /// header block of an `HPUB` (`NATS/1.0…\r\n\r\n`, as sent, not
    /// checked; `None` for `PUB` and for an `HPUB` whose header length is 0,
    /// which nats-server delivers as a plain `MSG`), and payload.
    pub msg: Message<'a>,
    /// The read chunk that headers and payload are slices of (and subject
    /// and reply too when the control line came in the same read): what a
    /// forwarded message shares instead of copying.
    pub chunk: &'a Bytes,
}

impl<'a> Publish<'a> {
    /// Headers and payload as one slice, as an `HMSG` carries them: they
    /// are adjacent in [`Publish::chunk`].
    ///
    /// # Panics
    /// If `headers` and `payload` are not adjacent slices of `chunk` (they
    /// always are in a `Publish` the decoder made).
    pub fn body(&self) -> &'a [u8] {
        let Some(headers) = self.msg.headers else {
            return self.msg.payload;
        };
        let chunk: &'a [u8] = self.chunk;
        // Addresses only; nothing is read outside `chunk`.
        let start = (headers.as_ptr() as usize).checked_sub(chunk.as_ptr() as usize);
        let end = start.map(|s| s + headers.len() + self.msg.payload.len());
        match (start, end) {
            (Some(start), Some(end))
                if end <= chunk.len()
                    && chunk[start + headers.len()..].as_ptr() == self.msg.payload.as_ptr() =>
            {
                &chunk[start..end]
            }
            _ => panic!("headers and payload are not adjacent slices of the chunk"),
        }
    }
}

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
    /// Authentication failed, or an operation other than `CONNECT` came
    /// first while authentication is required (closes).
    #[error("Authorization Violation")]
    AuthorizationViolation,
    /// No `CONNECT` within the auth timeout (closes).
    #[error("Authentication Timeout")]
    AuthenticationTimeout,
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
            AuthenticationTimeout => "Authentication Timeout",
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
    pub const ALL: [NatsError; 25] = {
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
            AuthenticationTimeout,
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
    // The shared subject index takes exactly what nats-server's does.
    crate::subject::is_index_pattern(subject)
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
            (AuthenticationTimeout, Some("Authentication Timeout"), true),
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
    fn body_is_headers_then_payload() {
        let chunk = Bytes::from_static(b"xxHEADpayloadyy");
        let msg = Message {
            headers: Some(&chunk[2..6]),
            ..Message::plain(b"s", &chunk[6..13])
        };
        let p = Publish { msg, chunk: &chunk };
        assert_eq!(p.body(), b"HEADpayload");
        let with = |msg| Publish { msg, chunk: &chunk };
        assert_eq!(
            with(Message {
                headers: None,
                ..msg
            })
            .body(),
            b"payload"
        );
        let apart = with(Message {
            payload: &chunk[7..13],
            ..msg
        });
        let outside = with(Message {
            headers: Some(b"HEAD"),
            ..msg
        });
        for bad in [apart, outside] {
            assert!(std::panic::catch_unwind(|| bad.body().len()).is_err());
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
