//! The tests' HTTP client, for the metrics endpoint: one request per
//! connection, as Prometheus and curl send them; the whole response is read
//! until the server closes and checked for what every response of the
//! endpoint has (an `HTTP/1.1` status line, a `Content-Length` that matches
//! the body). Like the line client, it cannot hang: reads and writes time
//! out after [`IO_TIMEOUT`].

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

use super::IO_TIMEOUT;

/// An HTTP response.
pub struct Reply {
    pub status: u16,
    /// Name and value of each header, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` over a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> Reply {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: tern\r\nUser-Agent: test\r\n\r\n").as_bytes(),
    )
}

/// Sends `request` as it is (any bytes: the malformed-request tests send
/// garbage), half-closes, and reads the whole response.
pub fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    // The server may answer a bad request before reading all of it.
    let _ = s.write_all(request);
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("response (or timeout)");
    let text = String::from_utf8(out).expect("UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().expect("status code");
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(": ").expect("header line");
            (n.to_string(), v.to_string())
        })
        .collect();
    let reply = Reply {
        status,
        headers,
        body: body.to_string(),
    };
    let length: usize = reply
        .header("content-length")
        .expect("Content-Length")
        .parse()
        .unwrap();
    if !request.starts_with(b"HEAD ") {
        assert_eq!(length, reply.body.len(), "Content-Length");
    }
    reply
}
