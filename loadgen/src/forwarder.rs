//! The floor for the benchmarks: the least a line-protocol relay can do.
//!
//! `tern-forwarder` serves tern's line protocol (terminator `\n`) with a
//! blocking thread per connection and nothing else: a `PUB` line becomes a
//! `MSG` line (the same bytes with the verb replaced) and goes to every
//! connection that sent a `SUB`, whatever its subject; `PING` is answered
//! with `PONG`; every other line is ignored. No subject index, no queues,
//! no flow control, no limits. A thread blocked in `recv` waits with no
//! poll to arm and no completion to reap, so what this costs per message at
//! a moderate rate (`benches/moderate.sh` runs it beside tern) is close to
//! what the kernel and the machine charge any relay: wake-up, receive,
//! send.
//!
//! It is a measuring stick, not a server: it trusts its clients (a line
//! without its `\n` is held however long it grows), sends every message to
//! every subscriber, and a subscriber that stops reading stalls every
//! publisher. Use it on loopback with `tern-loadgen`, one subject.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// Bytes read per `recv`: tern's own default read size.
const READ_SIZE: usize = 64 * 1024;

/// What a complete line that is not a `PUB` asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `SUB ...`: this connection receives every message from now on (once,
    /// however many `SUB`s it sends).
    Subscribe,
    /// `PING`: answer `PONG`.
    Ping,
}

/// Turns the bytes of one connection into `MSG` lines and requests.
///
/// Lines end with `\n`. A line cut by the end of a read is kept until the
/// rest arrives; `partial` is empty whenever the last read ended with a
/// whole line, which at a moderate rate is every read.
#[derive(Debug, Default)]
pub struct Rewriter {
    /// The start of a line the last read cut short.
    partial: Vec<u8>,
}

impl Rewriter {
    /// Reads `input`: every complete `PUB <rest>` line is appended to `out`
    /// as `MSG <rest>\n`; `SUB` and `PING` lines are returned in order.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>, requests: &mut Vec<Request>) {
        let mut rest = input;
        if !self.partial.is_empty() {
            let Some(end) = memchr::memchr(b'\n', rest) else {
                self.partial.extend_from_slice(rest);
                return;
            };
            self.partial.extend_from_slice(&rest[..end]);
            let line = std::mem::take(&mut self.partial);
            rewrite(&line, out, requests);
            rest = &rest[end + 1..];
        }
        while let Some(end) = memchr::memchr(b'\n', rest) {
            rewrite(&rest[..end], out, requests);
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
    }
}

/// One complete line, without its `\n`.
fn rewrite(line: &[u8], out: &mut Vec<u8>, requests: &mut Vec<Request>) {
    if let Some(rest) = line.strip_prefix(b"PUB ") {
        out.extend_from_slice(b"MSG ");
        out.extend_from_slice(rest);
        out.push(b'\n');
    } else if line.starts_with(b"SUB ") {
        requests.push(Request::Subscribe);
    } else if line == b"PING" {
        requests.push(Request::Ping);
    }
}

/// The connections that subscribed, by connection number: every message
/// goes to each. A connection leaves the list when it closes or a write to
/// it fails.
type Subscribers = Arc<Mutex<Vec<(u64, TcpStream)>>>;

/// Accepts on `listener` until accepting fails, a thread per connection.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    let subscribers = Subscribers::default();
    for (id, stream) in (0..).zip(listener.incoming()) {
        let stream = stream?;
        stream.set_nodelay(true)?;
        let subscribers = subscribers.clone();
        thread::spawn(move || {
            // A connection's end or error ends its thread only.
            let _ = connection(id, stream, &subscribers);
            lock(&subscribers).retain(|(s, _)| *s != id);
        });
    }
    Ok(())
}

/// The subscriber list, even if a thread panicked while holding it.
fn lock(subscribers: &Subscribers) -> std::sync::MutexGuard<'_, Vec<(u64, TcpStream)>> {
    subscribers.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves connection number `id` until it closes.
fn connection(id: u64, mut stream: TcpStream, subscribers: &Subscribers) -> io::Result<()> {
    let mut rewriter = Rewriter::default();
    let mut buf = vec![0; READ_SIZE];
    let mut out = Vec::with_capacity(READ_SIZE + READ_SIZE / 8);
    let mut requests = Vec::new();
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        rewriter.feed(&buf[..n], &mut out, &mut requests);
        if !out.is_empty() {
            // A subscriber that is gone is dropped.
            lock(subscribers).retain_mut(|(_, s)| s.write_all(&out).is_ok());
            out.clear();
        }
        for request in requests.drain(..) {
            match request {
                Request::Subscribe => {
                    let mut subs = lock(subscribers);
                    // More `SUB`s change nothing: every message comes once.
                    if !subs.iter().any(|(s, _)| *s == id) {
                        subs.push((id, stream.try_clone()?));
                    }
                }
                Request::Ping => stream.write_all(b"PONG\n")?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(parts: &[&[u8]]) -> (Vec<u8>, Vec<Request>) {
        let mut r = Rewriter::default();
        let (mut out, mut requests) = (Vec::new(), Vec::new());
        for p in parts {
            r.feed(p, &mut out, &mut requests);
        }
        (out, requests)
    }

    #[test]
    fn pub_lines_become_msg_lines_and_the_rest_are_requests_or_ignored() {
        let (out, requests) =
            feed_all(&[b"SUB a.b\nPING\nPUB a.b hello world\nPUB x \nUNSUB a.b\n"]);
        assert_eq!(out, b"MSG a.b hello world\nMSG x \n");
        assert_eq!(requests, [Request::Subscribe, Request::Ping]);
    }

    #[test]
    fn a_line_cut_anywhere_comes_out_whole_once() {
        let input: &[u8] = b"PUB a 1\nPING\nPUB bb 22\n";
        for cut in 0..=input.len() {
            for cut2 in cut..=input.len() {
                let (out, requests) = feed_all(&[&input[..cut], &input[cut..cut2], &input[cut2..]]);
                assert_eq!(out, b"MSG a 1\nMSG bb 22\n", "cuts at {cut}, {cut2}");
                assert_eq!(requests, [Request::Ping], "cuts at {cut}, {cut2}");
            }
        }
    }

    #[test]
    fn an_unfinished_line_is_held_not_sent() {
        let mut r = Rewriter::default();
        let (mut out, mut requests) = (Vec::new(), Vec::new());
        r.feed(b"PUB a 1\nPUB a 2", &mut out, &mut requests);
        assert_eq!(out, b"MSG a 1\n");
        r.feed(b"", &mut out, &mut requests);
        assert_eq!(out, b"MSG a 1\n");
        r.feed(b"3\n", &mut out, &mut requests);
        assert_eq!(out, b"MSG a 1\nMSG a 23\n");
    }
}
