//! A response of the endpoint and its bytes on the wire: a status, a
//! content type and a body, always sent with `Content-Length` and
//! `Connection: close` (one request per connection, see [`super::http`]).

/// A response before encoding.
#[derive(Debug)]
pub(super) struct Response {
    /// The HTTP status code; [`Response::encode`] knows the reason phrase
    /// of each one the endpoint sends.
    pub(super) status: u16,
    /// The `Content-Type` header: what the body is.
    pub(super) content_type: &'static str,
    /// The body `GET` gets; `HEAD` gets only its length.
    pub(super) body: Vec<u8>,
}

impl Response {
    /// A response with any content type.
    pub(super) fn new(
        status: u16,
        content_type: &'static str,
        body: impl Into<Vec<u8>>,
    ) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
        }
    }

    /// A plain-text response: what people with curl read, and every error.
    pub(super) fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body)
    }

    /// The bytes on the wire; `head_only` for `HEAD` (headers describe the
    /// body that `GET` would get, without it).
    pub(super) fn encode(&self, head_only: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_sends_the_length_of_the_body_it_leaves_out() {
        let r = Response::text(200, "ok\n");
        let head = String::from_utf8(r.encode(true)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Length: 3\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        let get = String::from_utf8(r.encode(false)).unwrap();
        assert!(get.ends_with("\r\n\r\nok\n"), "{get}");
    }

    #[test]
    fn every_response_closes_and_405_says_what_is_allowed() {
        let wire = String::from_utf8(Response::text(405, "no\n").encode(false)).unwrap();
        assert!(
            wire.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{wire}"
        );
        assert!(wire.contains("\r\nAllow: GET, HEAD\r\n"), "{wire}");
        assert!(wire.contains("\r\nConnection: close\r\n"), "{wire}");
        let ok = String::from_utf8(Response::text(200, "ok\n").encode(false)).unwrap();
        assert!(!ok.contains("Allow:"), "{ok}");
    }
}
