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
    Tls(Box<futures_rustls::server::TlsStream<TcpStream>>),
    /// Inside TLS, as the client: a leaf link to its hub.
    TlsClient(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

impl Socket {
    /// Over TLS: writes out what rustls still holds. Ready at once in
    /// clear text.
    pub fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Socket::Plain(_) => Poll::Ready(Ok(())),
            Socket::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
            Socket::TlsClient(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    /// The names of the client's certificate (mutual TLS), for
    /// `--tls-map-users`; empty without one.
    pub fn certificate_names(&self) -> Vec<String> {
        match self {
            Socket::Plain(_) | Socket::TlsClient(_) => Vec::new(),
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
            Socket::Tls(tls) => tls.get_ref().0.as_raw_fd(),
            Socket::TlsClient(tls) => tls.get_ref().0.as_raw_fd(),
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
            Socket::TlsClient(s) => Pin::new(&mut **s).poll_read(cx, buf),
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
            Socket::TlsClient(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            Socket::TlsClient(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_close(cx),
            Socket::Tls(s) => Pin::new(&mut **s).poll_close(cx),
            Socket::TlsClient(s) => Pin::new(&mut **s).poll_close(cx),
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
            .accept(stream)
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

/// Runs the client side of a TLS handshake with a hub on `stream`, checking
/// that its certificate names `server_name`, for at most `timeout`.
pub async fn connect_tls(
    stream: TcpStream,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
    timeout: Duration,
) -> Result<Socket, String> {
    let name = rustls_pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("{server_name:?} cannot be a TLS server name: {e}"))?;
    let connect = async {
        futures_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map(|tls| Socket::TlsClient(Box::new(tls)))
            .map_err(|e| format!("TLS handshake with the hub failed: {e}"))
    };
    let late = async {
        glommio::timer::sleep(timeout).await;
        Err(format!("no TLS handshake with the hub within {timeout:?}"))
    };
    futures_lite::future::or(connect, late).await
}
