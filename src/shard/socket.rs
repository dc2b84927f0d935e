//! A client's byte stream: a glommio TCP socket, in clear text or inside
//! TLS, and the handshake that turns one into the other.
//!
//! The connection task reads into its framer and writes its outbound queue
//! through [`Socket`] without knowing which it is. Over TLS, futures-rustls
//! decrypts into the framer's buffer (one copy, which TLS costs anyway) and
//! encrypts into rustls's own buffer, at most 64 KiB per connection
//! (rustls's default limit), so a queued byte is either in the
//! connection's [`crate::outbound::Outbound`] or in that buffer: after the
//! queue empties, [`Socket::poll_flush_tls`] pushes the rest out.
//!
//! rustls asks its transport for at most 4 KiB per read; under the TLS
//! stream sits a [`ReadAhead`] that reads up to [`READ_AHEAD`] from the
//! socket at once and hands it out in rustls's portions, so a busy TLS
//! connection costs about as many receive calls as a clear one.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::auth::Refusal;

/// A connected client's stream.
pub enum Socket {
    /// Clear text.
    Plain(TcpStream),
    /// Inside TLS (boxed: rustls's connection state is a few KiB, and most
    /// relays serve clear text).
    Tls(Box<futures_rustls::server::TlsStream<ReadAhead>>),
}

/// Bytes a TLS connection reads from its socket at once (see
/// [`ReadAhead`]).
pub const READ_AHEAD: usize = 16 << 10;

/// A socket whose reads go through a buffer of [`READ_AHEAD`] bytes,
/// allocated at the first read: under rustls, which reads in portions of
/// at most 4 KiB, one receive call serves several of them. Writes go
/// straight through.
pub struct ReadAhead {
    io: TcpStream,
    /// Bytes read and not yet handed out: `buf[start..end]`.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl ReadAhead {
    pub fn new(io: TcpStream) -> Self {
        ReadAhead {
            io,
            buf: Box::default(),
            start: 0,
            end: 0,
        }
    }
}

impl AsyncRead for ReadAhead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.start == this.end {
            if out.len() >= READ_AHEAD {
                // Nothing gained by buffering a read this large.
                return Pin::new(&mut this.io).poll_read(cx, out);
            }
            if this.buf.is_empty() {
                this.buf = vec![0; READ_AHEAD].into_boxed_slice();
            }
            let n = match Pin::new(&mut this.io).poll_read(cx, &mut this.buf) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            (this.start, this.end) = (0, n);
        }
        let n = out.len().min(this.end - this.start);
        out[..n].copy_from_slice(&this.buf[this.start..this.start + n]);
        this.start += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for ReadAhead {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

impl Socket {
    /// Over TLS: writes out what rustls still holds. Ready at once in
    /// clear text.
    pub fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Socket::Plain(_) => Poll::Ready(Ok(())),
            Socket::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    /// The names of the client's certificate (mutual TLS), for
    /// `--tls-map-users`; empty without one.
    pub fn certificate_names(&self) -> Vec<String> {
        match self {
            Socket::Plain(_) => Vec::new(),
            Socket::Tls(tls) => tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(crate::tls::certificate_names)
                .unwrap_or_default(),
        }
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Socket::Plain(s) => s.as_raw_fd(),
            Socket::Tls(tls) => tls.get_ref().0.io.as_raw_fd(),
        }
    }
}

impl AsyncRead for Socket {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_close(cx),
            Socket::Tls(s) => Pin::new(&mut **s).poll_close(cx),
        }
    }
}

/// Runs the server side of a TLS handshake on `stream` with `config`, for
/// at most `timeout`. On failure, why (for the `reason` label) and what
/// went wrong (for the log).
pub async fn handshake(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
) -> Result<Socket, (Refusal, String)> {
    let accept = async {
        futures_rustls::TlsAcceptor::from(config)
            .accept(ReadAhead::new(stream))
            .await
            .map(|tls| Socket::Tls(Box::new(tls)))
            .map_err(|e| (Refusal::TlsHandshake, e.to_string()))
    };
    let late = async {
        glommio::timer::sleep(timeout).await;
        Err((
            Refusal::TlsTimeout,
            format!("no TLS handshake within {timeout:?}"),
        ))
    };
    futures_lite::future::or(accept, late).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};

    /// Bytes written in one go come out of a [`ReadAhead`] whole, in
    /// small reads and large ones, and a closed peer reads as the end.
    #[test]
    fn read_ahead_hands_out_what_the_socket_gave() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let sent: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
                let writer = glommio::spawn_local({
                    let sent = sent.clone();
                    async move {
                        let mut s = TcpStream::connect(addr).await.unwrap();
                        s.write_all(&sent).await.unwrap();
                        s.close().await.unwrap();
                    }
                });
                let mut r = ReadAhead::new(listener.accept().await.unwrap());
                let mut got = Vec::new();
                let mut sizes = [1usize, 4096, 100, READ_AHEAD, 3 * READ_AHEAD]
                    .iter()
                    .cycle();
                loop {
                    let mut chunk = vec![0; *sizes.next().unwrap()];
                    let n = r.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&chunk[..n]);
                }
                writer.await;
                assert_eq!(got.len(), sent.len());
                assert!(got == sent, "the bytes differ");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
