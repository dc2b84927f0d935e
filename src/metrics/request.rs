//! Reading a request head: the bytes a client sends are collected in a
//! buffer of bounded size and parsed with `httparse` into the little the
//! endpoint routes on (method, path, query). Nothing here does I/O: the
//! server ([`super::http`]) reads into [`HeadBuffer::spare`] and reports
//! what it read with [`HeadBuffer::filled`].
//!
//! The bounds: a head longer than the buffer (`--metrics` default 8 KiB,
//! [`super::Options::max_head`]) or with more than [`MAX_HEADERS`] headers
//! is refused with `431`; anything `httparse` refuses, or a target that is
//! not a path, with `400`. Any bytes are safe to feed in: the tests feed
//! random ones, and the `metrics_request` fuzz target (`fuzz/`) feeds
//! whatever libFuzzer makes up.
//!
//! The module is private; its items are `pub` only so that
//! [`super::fuzzing`] can hand them to that fuzz target.

use super::response::Response;

/// Headers a request may carry (more is answered `431`).
pub(super) const MAX_HEADERS: usize = 32;

/// A request line, as far as this server cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET` and `HEAD` are served, anything else is answered `405`.
    pub method: String,
    /// The path, without the query: what the request is routed on.
    pub path: String,
    /// What follows `?`, without it (empty if none): `/connections` takes
    /// its options from it.
    pub query: String,
}

/// A request that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Not HTTP/1.x, or a target that is not a path.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Past the head buffer or [`MAX_HEADERS`].
    #[error("request head too large")]
    HeadTooLarge,
    /// The head did not arrive within [`super::Options::request_timeout`].
    #[error("request not received in time")]
    Timeout,
}

impl HttpError {
    /// The answer to a client whose request cannot be served.
    pub(super) fn response(&self) -> Response {
        let status = match self {
            HttpError::BadRequest(_) => 400,
            HttpError::HeadTooLarge => 431,
            HttpError::Timeout => 408,
        };
        Response::text(status, format!("{self}\n"))
    }
}

/// A request head being received: at most `max_head` bytes, parsed again
/// after each read until it is complete.
#[derive(Debug)]
pub struct HeadBuffer {
    /// `max_head` bytes, allocated once: the bound on what a client can
    /// make the server hold.
    buf: Vec<u8>,
    /// How many bytes of `buf` have been received.
    len: usize,
}

impl HeadBuffer {
    /// An empty buffer for a head of at most `max_head` bytes.
    pub fn new(max_head: usize) -> HeadBuffer {
        HeadBuffer {
            buf: vec![0; max_head],
            len: 0,
        }
    }

    /// Room for the next read; [`HttpError::HeadTooLarge`] once the buffer
    /// is full and the head still incomplete.
    pub fn spare(&mut self) -> Result<&mut [u8], HttpError> {
        if self.len == self.buf.len() {
            return Err(HttpError::HeadTooLarge);
        }
        Ok(&mut self.buf[self.len..])
    }

    /// Takes note of `n` more bytes read into [`HeadBuffer::spare`] and
    /// parses what has come: `Ok(None)` while the head is incomplete.
    pub fn filled(&mut self, n: usize) -> Result<Option<Request>, HttpError> {
        self.len = (self.len + n).min(self.buf.len());
        parse_request(&self.buf[..self.len])
    }
}

/// Parses a request head: `Ok(None)` while it is incomplete.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(_)) => {
            // A complete parse has both; the defaults are never used.
            let method = parsed.method.unwrap_or_default();
            let target = parsed.path.unwrap_or_default();
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            if !path.starts_with('/') {
                return Err(HttpError::BadRequest(
                    "the request target must be a path such as /metrics".into(),
                ));
            }
            Ok(Some(Request {
                method: method.to_string(),
                path: path.to_string(),
                query: query.to_string(),
            }))
        }
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::HeadTooLarge),
        Err(e) => Err(HttpError::BadRequest(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::get;

    #[test]
    fn requests_are_parsed_with_their_query() {
        assert_eq!(
            get("/connections?sort=pending&limit=1"),
            Request {
                method: "GET".into(),
                path: "/connections".into(),
                query: "sort=pending&limit=1".into()
            }
        );
        let head = parse_request(b"HEAD /metrics HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(head.unwrap().method, "HEAD");
    }

    #[test]
    fn incomplete_heads_ask_for_more_and_bad_ones_are_refused() {
        assert_eq!(parse_request(b""), Ok(None));
        assert_eq!(parse_request(b"GET /metr"), Ok(None));
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            Ok(None)
        );
        for bad in [
            &b"\x00\x01\x02\r\n\r\n"[..],
            b"GET /metrics HTTP/9.9\r\n\r\n",
            b"GET  HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            assert!(
                matches!(parse_request(bad), Err(HttpError::BadRequest(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_request(b"GET http://host/metrics HTTP/1.1\r\n\r\n"),
            Err(HttpError::BadRequest(_))
        ));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(parse_request(many.as_bytes()), Err(HttpError::HeadTooLarge));
    }

    /// Copies `bytes` into `head` in reads of `chunk` bytes, as a socket
    /// would deliver them; the last result, or the refusal of a full buffer.
    fn feed(
        head: &mut HeadBuffer,
        bytes: &[u8],
        chunk: usize,
    ) -> Result<Option<Request>, HttpError> {
        let mut result = Ok(None);
        for piece in bytes.chunks(chunk) {
            let spare = head.spare()?;
            let n = piece.len().min(spare.len());
            spare[..n].copy_from_slice(&piece[..n]);
            result = head.filled(n);
            if !matches!(result, Ok(None)) {
                return result;
            }
        }
        result
    }

    #[test]
    fn a_head_arriving_in_pieces_is_parsed_once_complete() {
        let raw = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        for chunk in [1, 2, 7, raw.len()] {
            let mut head = HeadBuffer::new(64);
            let got = feed(&mut head, raw, chunk).unwrap().unwrap();
            assert_eq!((got.path.as_str(), got.query.as_str()), ("/metrics", "x=1"));
        }
        let mut head = HeadBuffer::new(64);
        assert_eq!(feed(&mut head, b"GET /metrics HTTP/1.1\r\n", 5), Ok(None));
    }

    #[test]
    fn a_head_longer_than_the_buffer_is_too_large() {
        let raw = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100));
        let mut head = HeadBuffer::new(64);
        assert_eq!(
            feed(&mut head, raw.as_bytes(), 16),
            Err(HttpError::HeadTooLarge)
        );
        // A head that fills the buffer exactly still fits.
        let exact = b"GET / HTTP/1.1\r\n\r\n";
        let mut head = HeadBuffer::new(exact.len());
        assert!(feed(&mut head, exact, 4).unwrap().is_some());
    }
}
