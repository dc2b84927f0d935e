//! Shared harness for the end-to-end tests: an in-process relay with two
//! shards and a small blocking client that speaks the line protocol
//! (the shared `line-protocol.md` specification) over real TCP; the tests
//! of the `tern` binary use the same [`Client`] with the binary's `\n`
//! terminator. [`http`] is the one HTTP client, for the metrics endpoint.
//!
//! Nothing here can hang: every socket has read and write timeouts, so a
//! relay that stops answering fails the test after [`IO_TIMEOUT`] instead of
//! blocking the suite.
//!
//! Two ways to prove that something did *not* happen, without sleeping:
//!
//! * [`Client::expect_silence`] sends `PING` and requires the very next frame
//!   to be `PONG`. Replies to one connection come in order, so this proves the
//!   relay owes this connection no reply (no `-ERR`) for its earlier frames.
//! * [`fence`] publishes a marker on [`FENCE`] from a publisher and requires
//!   it to be the next frame each receiver reads. The spec orders one
//!   publisher's messages per receiver, so this proves none of that
//!   publisher's earlier messages was (or ever will be) delivered to them.
//!   A plain `PING` on the receiver would not do: a message on its way from
//!   another shard may arrive after the receiver's `PONG`.
//!
//! Each test binary uses a subset of these helpers, hence the
//! `allow(dead_code)`.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::Deref;
use std::time::Duration;

use tern::config::Config;
use tern::framing::Terminator;
use tern::relay::Relay;
use tern::stats::Totals;

pub mod http;
pub mod process;

/// Longest a single read or write may block before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Subject used by [`fence`]; receivers subscribe to it with
/// [`Client::sub_fence`].
pub const FENCE: &str = "fence";

/// Shards the tests run with: the smallest number that has cross-shard paths.
pub const SHARDS: usize = 2;

/// A relay started for one test, with the terminator its clients must use.
pub struct TestRelay {
    relay: Relay,
    term: Vec<u8>,
}

impl TestRelay {
    /// Two shards, every other setting at its default.
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Two shards, with `tweak` applied to the configuration first.
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::local(SHARDS);
        tweak(&mut config);
        let term = config.terminator.as_bytes().to_vec();
        let relay = Relay::start(config).expect("relay starts");
        assert_eq!(
            relay.shard_addrs().len(),
            SHARDS,
            "one private listener per shard"
        );
        TestRelay { relay, term }
    }

    /// Two shards with terminator `spec` (flag syntax, e.g. `\r\n`).
    pub fn with_terminator(spec: &str) -> Self {
        Self::start_with(|c| c.terminator = Terminator::parse(spec).expect("valid terminator"))
    }

    /// The terminator's bytes.
    pub fn term(&self) -> &[u8] {
        &self.term
    }

    /// A client of shard `shard` (through that shard's private listener).
    pub fn on(&self, shard: usize) -> Client {
        Client::connect(self.relay.shard_addrs()[shard], &self.term)
    }

    /// A client of the shared listener (the kernel picks the shard).
    pub fn shared(&self) -> Client {
        Client::connect(self.relay.local_addrs()[0], &self.term)
    }

    /// Stops the relay (what SIGTERM does to the binary) and returns its
    /// final counters.
    pub fn shutdown(self) -> Totals {
        self.relay.shutdown()
    }

    /// One shard's counters.
    pub fn shard(&self, shard: usize) -> Totals {
        self.relay.shard_stats()[shard]
    }
}

impl Deref for TestRelay {
    type Target = Relay;
    fn deref(&self) -> &Relay {
        &self.relay
    }
}

/// A blocking line-protocol client with its own frame buffer.
pub struct Client {
    stream: TcpStream,
    term: Vec<u8>,
    /// Bytes received and not yet returned as frames: `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    /// How far past `start` the terminator search has already looked.
    scanned: usize,
}

impl Client {
    /// Connects to `addr`; frames end with `term`.
    pub fn connect(addr: SocketAddr, term: &[u8]) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Client::from_stream(stream, term)
    }

    /// Connects with a tiny socket receive buffer, so that output the relay
    /// owes this client backs up in the relay rather than in the kernel.
    pub fn tiny_window(addr: SocketAddr, term: &[u8]) -> Client {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        // Set before connecting, so the advertised window is small from the
        // start (this also turns off receive-buffer autotuning).
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        socket
            .connect_timeout(&addr.into(), IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Client::from_stream(TcpStream::from(socket), term)
    }

    /// Wraps an already connected socket.
    pub fn from_stream(stream: TcpStream, term: &[u8]) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        // Small writes must leave at once: the split-terminator tests rely on
        // each write being its own segment.
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            term: term.to_vec(),
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            scanned: 0,
        }
    }

    /// The underlying socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The terminator this client frames with.
    pub fn term(&self) -> &[u8] {
        &self.term
    }

    /// Sends `frame` followed by the terminator, in one write.
    pub fn send(&mut self, frame: impl AsRef<[u8]>) {
        let frame = frame.as_ref();
        let mut out = Vec::with_capacity(frame.len() + self.term.len());
        out.extend_from_slice(frame);
        out.extend_from_slice(&self.term);
        self.send_raw(&out);
    }

    /// Sends bytes as they are (no terminator added).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write of {} bytes: {e}", bytes.len()));
    }

    /// Sends bytes one write per byte, so the relay sees every split point
    /// (including inside terminators). A short pause between writes makes it
    /// likely that each byte arrives in its own segment; nothing depends on
    /// how long it is.
    pub fn send_bytewise(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.send_raw(std::slice::from_ref(b));
            self.stream.flush().unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// `PUB <subject> <payload>`.
    pub fn publish(&mut self, subject: &str, payload: impl AsRef<[u8]>) {
        let mut f = format!("PUB {subject} ").into_bytes();
        f.extend_from_slice(payload.as_ref());
        self.send(f);
    }

    /// `SUB <subject>` then the spec's barrier: `PING` and wait for `PONG`,
    /// so the subscription is in force on every shard when this returns.
    pub fn sub(&mut self, subject: &str) {
        self.send(format!("SUB {subject}"));
        self.ping();
    }

    /// `SUB <subject> <group>` and the barrier.
    pub fn sub_group(&mut self, subject: &str, group: &str) {
        self.send(format!("SUB {subject} {group}"));
        self.ping();
    }

    /// `UNSUB <subject>` and the barrier.
    pub fn unsub(&mut self, subject: &str) {
        self.send(format!("UNSUB {subject}"));
        self.ping();
    }

    /// Subscribes to [`FENCE`] so this client can take part in [`fence`].
    pub fn sub_fence(&mut self) {
        self.sub(FENCE);
    }

    /// `PING`, and the next frame must be `PONG`.
    pub fn ping(&mut self) {
        self.send("PING");
        self.expect("PONG");
    }

    /// Proves the relay owes this connection no reply for its earlier
    /// frames: the next frame after a `PING` must be `PONG`.
    pub fn expect_silence(&mut self) {
        self.ping();
    }

    /// Sends `frame` and expects the reply `-ERR <reason>`, then proves with
    /// a `PING` that exactly one reply was sent.
    pub fn expect_err_for(&mut self, frame: impl AsRef<[u8]>, reason: &str) {
        let frame = frame.as_ref();
        self.send(frame);
        let got = self.read_frame();
        assert_eq!(
            show(&got),
            show(format!("-ERR {reason}").as_bytes()),
            "reply to {}",
            show(frame)
        );
        self.expect_silence();
    }

    /// Sends `frame` and proves it was accepted without any reply.
    pub fn expect_ok_for(&mut self, frame: impl AsRef<[u8]>) {
        let frame = frame.as_ref();
        self.send(frame);
        self.send("PING");
        let got = self.read_frame();
        assert_eq!(
            show(&got),
            "PONG",
            "{} should be accepted silently",
            show(frame)
        );
    }

    /// Reads the next frame (without its terminator); panics on EOF, error
    /// or timeout.
    pub fn read_frame(&mut self) -> Vec<u8> {
        match self.try_read_frame() {
            Ok(Some(f)) => f,
            Ok(None) => panic!("connection closed while a frame was expected"),
            Err(e) => panic!("no frame within {IO_TIMEOUT:?}: {e}"),
        }
    }

    /// Next frame, `Ok(None)` at a clean end of stream (a trailing partial
    /// frame is an error), `Err` on timeout or reset.
    pub fn try_read_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            let hay = &self.buf[self.start + self.scanned..];
            if let Some(pos) = memchr::memmem::find(hay, &self.term) {
                let end = self.start + self.scanned + pos;
                let frame = self.buf[self.start..end].to_vec();
                self.start = end + self.term.len();
                self.scanned = 0;
                return Ok(Some(frame));
            }
            // Resume the search where a terminator could still start.
            self.scanned = (self.buf.len() - self.start).saturating_sub(self.term.len() - 1);
            if self.start > 0 && self.start * 2 >= self.buf.len() {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let len = self.buf.len();
            self.buf.resize(len + 64 * 1024, 0);
            let n = match self.stream.read(&mut self.buf[len..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(e);
                }
            };
            self.buf.truncate(len + n);
            if n == 0 {
                if self.buf.len() == self.start {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "stream ended inside a frame: {}",
                        show(&self.buf[self.start..])
                    ),
                ));
            }
        }
    }

    /// The next frame must be `expected`.
    pub fn expect(&mut self, expected: impl AsRef<[u8]>) {
        let got = self.read_frame();
        assert_eq!(show(&got), show(expected.as_ref()), "unexpected frame");
    }

    /// The next frame must be `MSG <subject> <payload>`.
    pub fn expect_msg(&mut self, subject: &str, payload: impl AsRef<[u8]>) {
        self.expect(msg(subject, payload));
    }

    /// Reads frames until the relay closes the connection (EOF, reset, or
    /// EOF inside a frame: a connection cut off in the middle of a write)
    /// and returns the complete ones; panics if it stays open past the
    /// timeout.
    pub fn read_until_closed(&mut self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        loop {
            match self.try_read_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => return frames,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    return frames
                }
                Err(e) => panic!(
                    "connection not closed by the relay ({e}) after {} frames",
                    frames.len()
                ),
            }
        }
    }

    /// Half-closes: no more bytes from this client.
    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).unwrap();
    }

    /// Closes with a TCP reset instead of a FIN (SO_LINGER 0).
    pub fn reset(self) {
        socket2::SockRef::from(&self.stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(self);
    }
}

/// Sends the marker `MSG fence <tag>` from `publisher` and requires it to be
/// the next frame of every receiver (all subscribed with
/// [`Client::sub_fence`]): none of the publisher's earlier messages reached
/// them unread.
pub fn fence(publisher: &mut Client, receivers: &mut [&mut Client], tag: &str) {
    publisher.publish(FENCE, tag);
    for r in receivers.iter_mut() {
        r.expect_msg(FENCE, tag);
    }
}

/// The frame `MSG <subject> <payload>`.
pub fn msg(subject: &str, payload: impl AsRef<[u8]>) -> Vec<u8> {
    let mut f = format!("MSG {subject} ").into_bytes();
    f.extend_from_slice(payload.as_ref());
    f
}

/// Bytes shown readably in assertion messages (escapes for non-printables,
/// long frames abbreviated).
pub fn show(bytes: &[u8]) -> String {
    let mut s = String::new();
    let cut = bytes.len() > 200;
    let shown = if cut { &bytes[..200] } else { bytes };
    for &b in shown {
        match b {
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    if cut {
        let _ = write!(s, "... ({} bytes)", bytes.len());
    }
    s
}

/// A small deterministic PRNG (xorshift64*): reproducible garbage without a
/// dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0), close enough for tests.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Resident set size of this process in bytes (`VmRSS` in
/// `/proc/self/status`, Linux).
pub fn rss_bytes() -> usize {
    let rss = tern::sys::resident_memory().expect("VmRSS in /proc/self/status");
    usize::try_from(rss).expect("fits in memory")
}

/// Arguments for the `tern` binary: `args`, with the NATS listener on a
/// free port unless they say where (tests run side by side, and the
/// default port 4222 can be had once).
pub fn with_free_nats_port<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut args = args.to_vec();
    if !args.iter().any(|a| a.starts_with("--nats-listen")) {
        args.extend(["--nats-listen", "127.0.0.1:0"]);
    }
    args
}
