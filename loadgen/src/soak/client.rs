//! One blocking client connection to tern, in the line or the NATS
//! protocol, built on the load generator's codecs ([`crate::proto`]).
//!
//! Every socket has timeouts, so no soak thread can hang on a relay that
//! stopped answering: reads wait at most what the caller asks
//! ([`Client::pump`]), writes at most [`WRITE_STALL`]. The server's NATS
//! keep-alive `PING`s are answered as they are read.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tern::framing::Terminator;

use crate::proto::{printable, Codec, DecodeError, Event, Expect, Login, Protocol};

/// How long a write may block before the relay counts as not reading.
pub const WRITE_STALL: Duration = Duration::from_secs(10);
/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 64 * 1024;

/// A connection failed or the relay answered something unexpected.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("closed by the relay")]
    Closed,
    #[error("refused: -ERR {0}")]
    Refused(String),
    #[error("undecodable answer: {0}")]
    Decode(#[from] DecodeError),
    #[error("unexpected answer `{0}`")]
    Unexpected(String),
    #[error("no {what} within {after:?}")]
    Timeout { what: &'static str, after: Duration },
}

impl ClientError {
    /// Whether the relay ended the connection (closed, reset, or a write
    /// into a closed socket).
    pub fn is_disconnect(&self) -> bool {
        match self {
            ClientError::Closed => true,
            ClientError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// A connection and its buffers.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    codec: Codec,
    addr: SocketAddr,
    /// Received bytes; `buf[head..]` is not decoded yet.
    buf: Vec<u8>,
    head: usize,
    /// Encoded and not yet written; see [`Client::flush`].
    out: Vec<u8>,
    read_timeout: Option<Duration>,
}

impl Client {
    /// Connects to `addr` (within `timeout`) to speak `protocol`; sends
    /// nothing.
    pub fn open(
        addr: SocketAddr,
        protocol: Protocol,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|source| ClientError::Connect { addr, source })?;
        Self::with_stream(stream, addr, protocol)
    }

    /// As [`Client::open`], with a receive buffer of `rcvbuf` bytes. It is
    /// set before connecting: shrinking it on an established connection
    /// leaves the kernel advertising a window it then cannot hold, and the
    /// sender retransmits into it with growing back-off.
    pub fn open_small(
        addr: SocketAddr,
        protocol: Protocol,
        timeout: Duration,
        rcvbuf: usize,
    ) -> Result<Self, ClientError> {
        let connect = || -> io::Result<TcpStream> {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            socket.set_recv_buffer_size(rcvbuf)?;
            socket.connect_timeout(&addr.into(), timeout)?;
            Ok(socket.into())
        };
        let stream = connect().map_err(|source| ClientError::Connect { addr, source })?;
        Self::with_stream(stream, addr, protocol)
    }

    fn with_stream(
        stream: TcpStream,
        addr: SocketAddr,
        protocol: Protocol,
    ) -> Result<Self, ClientError> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(WRITE_STALL))?;
        Ok(Client {
            stream,
            codec: Codec::new(protocol, Terminator::default()),
            addr,
            buf: Vec::new(),
            head: 0,
            out: Vec::new(),
            read_timeout: None,
        })
    }

    /// Where this connection goes.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The codec (to encode with it, see [`Client::encoder`]).
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// The socket, for options the soak's hostile clients set.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The codec and the output buffer together: encode with the one into
    /// the other, then [`Client::flush`].
    pub fn encoder(&mut self) -> (&Codec, &mut Vec<u8>) {
        (&self.codec, &mut self.out)
    }

    /// Writes everything encoded so far (blocking at most
    /// [`WRITE_STALL`]).
    pub fn flush(&mut self) -> Result<(), ClientError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.stream.write_all(&self.out);
        self.out.clear();
        match r {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(ClientError::Timeout {
                    what: "room to write (the relay stopped reading)",
                    after: WRITE_STALL,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes raw bytes, not through the codec.
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.flush()?;
        self.out.extend_from_slice(bytes);
        self.flush()
    }

    /// For a publisher or a connection that subscribes later: NATS
    /// `CONNECT`, then `PING`, and waits for the `PONG`.
    pub fn hello(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let expect = self.codec.publisher_hello(&mut self.out, Login::NONE);
        self.handshake(expect, timeout, |_| {})
    }

    /// Subscribes to `subjects` (NATS: `CONNECT` first, sids from 1),
    /// sends `PING` and waits for the `PONG` that puts the subscriptions in
    /// force on every shard.
    pub fn subscribe(&mut self, subjects: &[String], timeout: Duration) -> Result<(), ClientError> {
        let expect = self
            .codec
            .subscriber_hello(&mut self.out, subjects, None, Login::NONE);
        self.handshake(expect, timeout, |_| {})
    }

    /// Sends `PING` (after anything encoded before it) and waits for its
    /// `PONG`, handing every message that arrives meanwhile to `on_msg`.
    pub fn ping_pong(
        &mut self,
        timeout: Duration,
        on_msg: impl FnMut(Event<'_>),
    ) -> Result<(), ClientError> {
        self.codec.ping(&mut self.out);
        let expect = Expect {
            pongs: 1,
            subscriptions: 0,
            info_first: false,
        };
        self.handshake(expect, timeout, on_msg)
    }

    /// Flushes, then reads until `expect` is met (NATS: `INFO` first,
    /// then the `PONG`s). `-ERR` or anything not of the protocol fails it.
    fn handshake(
        &mut self,
        mut expect: Expect,
        timeout: Duration,
        mut on_msg: impl FnMut(Event<'_>),
    ) -> Result<(), ClientError> {
        self.flush()?;
        let deadline = Instant::now() + timeout;
        let mut failed = None;
        while !expect.done() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout {
                    what: if expect.info_first { "INFO" } else { "PONG" },
                    after: timeout,
                });
            }
            self.pump(left.min(Duration::from_millis(200)), |ev| match ev {
                Event::Info => expect.info_first = false,
                Event::Pong if !expect.info_first => expect.pongs = expect.pongs.saturating_sub(1),
                Event::Msg { .. } if !expect.info_first => on_msg(ev),
                Event::Error(reason) => {
                    failed.get_or_insert(ClientError::Refused(printable(reason)));
                }
                Event::Ping | Event::Ok | Event::Ignored => {}
                other => {
                    failed.get_or_insert(ClientError::Unexpected(format!("{other:?}")));
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Reads once, waiting at most `timeout` (zero: only what is already
    /// there), and hands every complete event to `on_event`. `Ok(false)`
    /// if nothing arrived; [`ClientError::Closed`] at end of stream.
    pub fn pump(
        &mut self,
        timeout: Duration,
        mut on_event: impl FnMut(Event<'_>),
    ) -> Result<bool, ClientError> {
        match self.read_some(timeout) {
            Ok(0) => return Err(ClientError::Closed),
            Ok(_) => {}
            Err(e) if nothing_arrived(&e) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let mut pings = 0;
        while let Some((event, used)) = self.codec.decode(&self.buf[self.head..])? {
            if event == Event::Ping {
                pings += 1;
            }
            on_event(event);
            self.head += used;
        }
        for _ in 0..pings {
            self.codec.pong(&mut self.out);
        }
        self.flush()?;
        Ok(true)
    }

    /// Reads once, waiting at most `timeout`, and hands the raw bytes to
    /// `on_bytes` without decoding them (for readers that only count).
    /// `Ok(0)` if nothing arrived; [`ClientError::Closed`] at end of
    /// stream.
    pub fn read_raw(
        &mut self,
        timeout: Duration,
        on_bytes: impl FnOnce(&[u8]),
    ) -> Result<usize, ClientError> {
        self.buf.clear();
        self.head = 0;
        match self.read_some(timeout) {
            Ok(0) => Err(ClientError::Closed),
            Ok(n) => {
                on_bytes(&self.buf);
                self.buf.clear();
                Ok(n)
            }
            Err(e) if nothing_arrived(&e) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// One `read` into the buffer's free end.
    fn read_some(&mut self, timeout: Duration) -> io::Result<usize> {
        if self.head > 0 && self.head * 2 >= self.buf.len() {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + READ_CHUNK, 0);
        let r = if timeout.is_zero() {
            self.stream.set_nonblocking(true)?;
            let r = self.stream.read(&mut self.buf[len..]);
            self.stream.set_nonblocking(false)?;
            r
        } else {
            if self.read_timeout != Some(timeout) {
                self.stream.set_read_timeout(Some(timeout))?;
                self.read_timeout = Some(timeout);
            }
            self.stream.read(&mut self.buf[len..])
        };
        self.buf.truncate(len + *r.as_ref().unwrap_or(&0));
        r
    }
}

/// Whether a read error only means no bytes came within the timeout (or a
/// signal cut the wait short): the connection is still good.
fn nothing_arrived(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A fake relay: accepts one connection, checks what it reads, answers.
    fn fake(
        script: Vec<(&'static [u8], &'static [u8])>,
    ) -> (SocketAddr, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            for (want, answer) in script {
                let mut got = vec![0u8; want.len()];
                s.read_exact(&mut got).unwrap();
                assert_eq!(printable(&got), printable(want));
                s.write_all(answer).unwrap();
            }
        });
        (addr, h)
    }

    #[test]
    fn line_subscribe_waits_for_pong_and_pumps_messages() {
        // The messages come after the PONG, when the client asks.
        let (addr, h) = fake(vec![
            (b"SUB a.b\nPING\n", b"PONG\n"),
            (b"go", b"MSG a.b 1\nMSG a.b 2\n"),
        ]);
        let mut c = Client::open(addr, Protocol::Line, Duration::from_secs(5)).unwrap();
        c.subscribe(&["a.b".to_string()], Duration::from_secs(5))
            .unwrap();
        c.write_raw(b"go").unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            c.pump(Duration::from_secs(5), |ev| {
                if let Event::Msg { payload, .. } = ev {
                    got.push(payload.to_vec());
                }
            })
            .unwrap();
        }
        assert_eq!(got, vec![b"1".to_vec(), b"2".to_vec()]);
        h.join().unwrap();
        let err = c.pump(Duration::from_secs(5), |_| {}).unwrap_err();
        assert!(err.is_disconnect(), "{err}");
    }

    #[test]
    fn nats_hello_needs_info_and_keep_alive_pings_are_answered() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"INFO {\"x\":1}\r\n").unwrap();
            let mut seen = Vec::new();
            let mut b = [0u8; 1024];
            while !seen.ends_with(b"PING\r\n") {
                let n = s.read(&mut b).unwrap();
                seen.extend_from_slice(&b[..n]);
            }
            assert!(seen.starts_with(b"CONNECT {"));
            s.write_all(b"PONG\r\nPING\r\n").unwrap();
            let mut pong = [0u8; 6];
            s.read_exact(&mut pong).unwrap();
            assert_eq!(&pong, b"PONG\r\n");
            s.write_all(b"-ERR 'Slow Consumer'\r\n").unwrap();
        });
        let mut c = Client::open(addr, Protocol::Nats, Duration::from_secs(5)).unwrap();
        c.hello(Duration::from_secs(5)).unwrap();
        let mut errors = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while errors.is_empty() && Instant::now() < deadline {
            c.pump(Duration::from_millis(100), |ev| {
                if let Event::Error(r) = ev {
                    errors.push(printable(r));
                }
            })
            .unwrap();
        }
        assert_eq!(errors, vec!["Slow Consumer".to_string()]);
        server.join().unwrap();
    }

    #[test]
    fn refusals_and_silence_fail_the_handshake() {
        let (addr, h) = fake(vec![(b"PING\n", b"-ERR unknown verb\n")]);
        let mut c = Client::open(addr, Protocol::Line, Duration::from_secs(5)).unwrap();
        let e = c.ping_pong(Duration::from_secs(5), |_| {}).unwrap_err();
        assert!(
            matches!(e, ClientError::Refused(ref r) if r == "unknown verb"),
            "{e}"
        );
        h.join().unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = Client::open(
            listener.local_addr().unwrap(),
            Protocol::Line,
            Duration::from_secs(5),
        )
        .unwrap();
        let t = Instant::now();
        let e = c.ping_pong(Duration::from_millis(300), |_| {}).unwrap_err();
        assert!(
            matches!(e, ClientError::Timeout { what: "PONG", .. }),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_secs(3));
        assert!(!c.pump(Duration::ZERO, |_| {}).unwrap(), "nothing there");
    }
}
