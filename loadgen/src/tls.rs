//! `--tls`: rustls (ring provider) over the worker's own sockets.
//!
//! The worker's loop is epoll over non-blocking `TcpStream`s, generic over a
//! [`Transport`]: a plain run is compiled for `TcpStream` exactly as before
//! (no trait object, no branch per read or write), a TLS run for
//! [`TlsStream`], which drives a `rustls::ClientConnection` by hand —
//! `read_tls`/`process_new_packets`/`write_tls` on the same socket — rather
//! than through `rustls::StreamOwned`, whose `read`/`write` loop on the
//! socket until it blocks and so hide from the loop that encrypted bytes are
//! still waiting to go out.
//!
//! The configuration is built once per run ([`client_config`]) from the
//! PEM files, so a bad path or a key that does not match fails before any
//! connection; every connection then shares it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::Error;

/// What `--tls` and its companions ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CA(s) to trust (`--tls-ca`).
    pub ca: Option<PathBuf>,
    /// Accept any server certificate (`--tls-insecure`).
    pub insecure: bool,
    /// The name the server's certificate must be valid for.
    pub server_name: String,
    /// Client certificate chain and its key, PEM (`--tls-cert`, `--tls-key`).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// NATS: TLS handshake before the server's `INFO` (`--tls-first`).
    pub first: bool,
}

impl TlsOptions {
    /// Refuses what cannot work, with the flag to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.ca.is_none() && !self.insecure {
            return Err("--tls needs --tls-ca PATH (the CA that signed the server's certificate), or --tls-insecure to skip verification".into());
        }
        if self.ca.is_some() && self.insecure {
            return Err("--tls-ca and --tls-insecure: give one".into());
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err("--tls-cert and --tls-key go together".into());
        }
        if ServerName::try_from(self.server_name.as_str()).is_err() {
            return Err(format!(
                "--tls-server-name `{}` is not a DNS name or IP address",
                self.server_name
            ));
        }
        Ok(())
    }
}

/// The name to verify the server's certificate against when
/// `--tls-server-name` is not given: the host part of `host:port`, or
/// `localhost` when that is an IP address (a test certificate names
/// `localhost` more often than `127.0.0.1`).
pub fn default_server_name(target: &str) -> String {
    let t = target.trim();
    let host = match t.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => t.rsplit_once(':').map_or(t, |(h, _)| h),
    };
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() {
        "localhost".to_string()
    } else {
        host.to_string()
    }
}

/// What every TLS connection of a run shares.
#[derive(Debug, Clone)]
pub struct TlsSetup {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
    pub first: bool,
}

/// Builds the client configuration `opts` describe: ring as the only
/// provider (tern's own choice; no aws-lc), TLS 1.2 and 1.3.
pub fn client_config(opts: &TlsOptions) -> Result<TlsSetup, Error> {
    opts.validate().map_err(Error::Options)?;
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Options(format!("--tls: {e}")))?;
    let builder = match &opts.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs("--tls-ca", ca)? {
                roots.add(cert).map_err(|e| {
                    Error::Options(format!(
                        "--tls-ca {}: not a usable CA certificate: {e}",
                        ca.display()
                    ))
                })?;
            }
            builder.with_root_certificates(roots)
        }
        None => {
            eprintln!(
                "tern-loadgen: warning: --tls-insecure: the server's certificate is NOT verified \
                 (anyone on the path could pose as the server)"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        }
    };
    let config = match (&opts.cert, &opts.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("--tls-cert", cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                Error::Options(format!(
                    "--tls-key {}: no private key read: {e}",
                    key.display()
                ))
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Error::Options(format!(
                    "--tls-cert/--tls-key: {e} (does the key belong to the certificate?)"
                ))
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    let server_name = ServerName::try_from(opts.server_name.clone())
        .map_err(|e| Error::Options(format!("--tls-server-name: {e}")))?;
    Ok(TlsSetup {
        config: Arc::new(config),
        server_name,
        first: opts.first,
    })
}

/// Every certificate in a PEM file; at least one.
fn read_certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bad = |e: String| Error::Options(format!("{flag} {}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        ));
    }
    Ok(certs)
}

/// `--tls-insecure`: accepts any certificate, but still checks the
/// handshake's signatures (so the connection is at least a working TLS
/// session with whoever holds the key).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connection's byte stream, plain or TLS. The worker is generic over it,
/// so the plain path is the `TcpStream` calls it always was.
pub(crate) trait Transport: Read + Write + AsRawFd + Sized {
    /// Whether this is TLS (decided per type, so `if S::TLS` in the
    /// worker costs the plain path nothing).
    const TLS: bool;

    /// The stream over a connected socket: for TLS, after a complete
    /// handshake (blocking, bounded by the socket's read timeout).
    fn establish(tcp: TcpStream, tls: Option<&TlsSetup>, addr: SocketAddr) -> Result<Self, Error>;

    /// The socket under it.
    fn socket(&self) -> &TcpStream;

    /// Writes bytes the stream holds back (encrypted records a full socket
    /// did not take). `Ok(true)`: none left.
    #[inline]
    fn flush_held(&mut self) -> io::Result<bool> {
        Ok(true)
    }

    /// Whether input may wait inside the stream where epoll cannot see it
    /// (decrypted records after a read that filled its buffer).
    #[inline]
    fn holds_input(&self) -> bool {
        false
    }
}

impl Transport for TcpStream {
    const TLS: bool = false;

    fn establish(tcp: TcpStream, _: Option<&TlsSetup>, _: SocketAddr) -> Result<Self, Error> {
        Ok(tcp)
    }

    #[inline]
    fn socket(&self) -> &TcpStream {
        self
    }
}

/// A TLS client connection over a socket that may be non-blocking.
///
/// `write` never takes more than rustls will buffer (its 64 KiB default),
/// and refuses (`WouldBlock`) while encrypted bytes from an earlier write are
/// still waiting for the socket; what the last accepted write left there is
/// pushed by [`Transport::flush_held`], which the worker calls when the
/// socket is writable again. `read` returns as much plaintext as the socket
/// had, like a plain `read`, and a close without `close_notify` as the end
/// of the stream (`Ok(0)`), as a plain socket would show it.
pub(crate) struct TlsStream {
    conn: ClientConnection,
    sock: TcpStream,
    /// The last read filled its buffer: rustls may hold more plaintext.
    full: bool,
}

impl TlsStream {
    /// Writes encrypted bytes until none are left or the socket blocks.
    fn push(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl Transport for TlsStream {
    const TLS: bool = true;

    fn establish(
        mut sock: TcpStream,
        tls: Option<&TlsSetup>,
        addr: SocketAddr,
    ) -> Result<Self, Error> {
        let tls = tls.expect("a TLS run has a TLS set-up");
        let mut conn = ClientConnection::new(tls.config.clone(), tls.server_name.clone())
            .map_err(|e| handshake_error(addr, tls, &e.to_string(), Some(&e)))?;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sock) {
                let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
                let detail = match (inner, e.kind()) {
                    (Some(r), _) => r.to_string(),
                    (None, io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                        "no answer from the server".to_string()
                    }
                    (None, io::ErrorKind::UnexpectedEof) => {
                        "the server closed the connection".to_string()
                    }
                    (None, _) => e.to_string(),
                };
                return Err(handshake_error(addr, tls, &detail, inner));
            }
        }
        Ok(TlsStream {
            conn,
            sock,
            full: false,
        })
    }

    #[inline]
    fn socket(&self) -> &TcpStream {
        &self.sock
    }

    fn flush_held(&mut self) -> io::Result<bool> {
        self.push()
    }

    fn holds_input(&self) -> bool {
        self.full
    }
}

impl AsRawFd for TlsStream {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.full = false;
        let mut filled = 0;
        loop {
            match self.conn.reader().read(&mut buf[filled..]) {
                // close_notify: the end, once what came before is handed out.
                Ok(0) => return Ok(filled),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        self.full = true;
                        return Ok(filled);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket closed without close_notify: as a plain EOF.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(e) => return if filled > 0 { Ok(filled) } else { Err(e) },
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(_) => {
                    // Ok(0) is the socket's EOF: the reader reports it above.
                    if let Err(e) = self.conn.process_new_packets() {
                        // Send the alert describing it, if the socket takes it.
                        let _ = self.push();
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    // A key update or an alert to answer.
                    if self.conn.wants_write() {
                        self.push()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return if filled > 0 { Ok(filled) } else { Err(e) },
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.push()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.conn.writer().write(buf)?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // What the socket does not take now waits for flush_held.
        self.push()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // On a blocking socket (the handshake) this writes everything; the
        // worker's non-blocking sockets use flush_held.
        self.push().map(|_| ())
    }
}

/// A TLS failure that surfaces on the first reads after the handshake (with
/// TLS 1.3 the server checks a client certificate only after the client has
/// finished): the same error as a failed handshake. `None` if `e` is not a
/// TLS error.
pub(crate) fn late_handshake_error(
    addr: SocketAddr,
    tls: Option<&TlsSetup>,
    e: &io::Error,
) -> Option<Error> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(handshake_error(addr, tls?, &inner.to_string(), Some(inner)))
}

/// "TLS handshake with ADDR failed: <rustls error>" and what to check.
fn handshake_error(
    addr: SocketAddr,
    tls: &TlsSetup,
    detail: &str,
    error: Option<&rustls::Error>,
) -> Error {
    use rustls::{AlertDescription as A, CertificateError as C};
    let name = tls.server_name.to_str();
    let hint = match error {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            C::UnknownIssuer | C::BadSignature => {
                "the server's certificate is not signed by the CA in --tls-ca: is it the right CA file?".to_string()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "the server's certificate is not valid for `{name}`: give the name it is issued for with --tls-server-name"
            ),
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
                "the server's certificate is outside its validity period (check it, and this machine's clock)".to_string()
            }
            _ => "check the server's certificate and --tls-ca".to_string(),
        },
        Some(rustls::Error::AlertReceived(A::CertificateRequired | A::BadCertificate | A::UnknownCA)) => {
            "the server wants a client certificate it trusts: give --tls-cert and --tls-key".to_string()
        }
        Some(rustls::Error::InvalidMessage(_)) => {
            if tls.first {
                "the server did not answer in TLS: is TLS enabled on this port, and does it expect the TLS handshake first (nats-server's handshake_first)? without that, drop --tls-first".to_string()
            } else {
                "the server did not answer in TLS: is TLS enabled on this port?".to_string()
            }
        }
        Some(_) => format!(
            "check that the server speaks TLS on this port, --tls-ca and --tls-server-name (`{name}`)"
        ),
        None if detail.starts_with("no answer") => {
            "the server said nothing to the TLS ClientHello: is TLS enabled on this port?".to_string()
        }
        None => format!(
            "is TLS enabled on this port? does the server require a client certificate (--tls-cert, --tls-key)? check --tls-ca and --tls-server-name (`{name}`)"
        ),
    };
    Error::Tls {
        addr,
        detail: detail.to_string(),
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_defaults_to_the_host_or_localhost() {
        assert_eq!(default_server_name("127.0.0.1:4222"), "localhost");
        assert_eq!(default_server_name("[::1]:4222"), "localhost");
        assert_eq!(default_server_name("nats.example:4222"), "nats.example");
        assert_eq!(default_server_name(" relay:7000"), "relay");
        assert_eq!(default_server_name("relay"), "relay");
    }

    fn opts() -> TlsOptions {
        TlsOptions {
            ca: Some("ca.pem".into()),
            insecure: false,
            server_name: "localhost".into(),
            cert: None,
            key: None,
            first: false,
        }
    }

    #[test]
    fn validation_names_the_flag() {
        assert!(opts().validate().is_ok());
        let no_ca = TlsOptions { ca: None, ..opts() };
        assert!(no_ca.validate().unwrap_err().contains("--tls-ca"));
        assert!(TlsOptions {
            insecure: true,
            ..no_ca
        }
        .validate()
        .is_ok());
        let half = TlsOptions {
            cert: Some("c.pem".into()),
            ..opts()
        };
        assert!(half.validate().unwrap_err().contains("--tls-key"));
        let name = TlsOptions {
            server_name: "not a name".into(),
            ..opts()
        };
        assert!(name.validate().unwrap_err().contains("--tls-server-name"));
    }

    /// TlsStream on a non-blocking socket moves megabytes both ways intact:
    /// writes refused while records are held, held records flushed.
    #[test]
    fn non_blocking_stream_moves_bulk_data_both_ways() {
        const N: usize = 3 << 20;
        let pki = super::test_pki::pki("bulk", &["localhost"]);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = pki.server.clone();
        // The server echoes every byte back.
        let echo = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
                .unwrap();
            let conn = rustls::ServerConnection::new(server).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, s);
            let mut buf = vec![0u8; 50_000];
            let mut total = 0;
            while total < N {
                let n = tls.read(&mut buf).unwrap();
                assert!(n > 0);
                tls.write_all(&buf[..n]).unwrap();
                total += n;
            }
            tls.flush().unwrap();
            let _ = tls.read(&mut buf);
        });
        let setup = client_config(&TlsOptions {
            ca: Some(pki.ca_pem.clone()),
            ..opts()
        })
        .unwrap();
        let sock = TcpStream::connect(addr).unwrap();
        let mut c = TlsStream::establish(sock, Some(&setup), addr).unwrap();
        c.socket().set_nonblocking(true).unwrap();
        let data: Vec<u8> = (0..N).map(|i| (i * 7 % 251) as u8).collect();
        let (mut sent, mut got) = (0, Vec::with_capacity(N));
        let mut buf = vec![0u8; 64 * 1024];
        let start = std::time::Instant::now();
        while got.len() < N {
            assert!(
                start.elapsed().as_secs() < 30,
                "stalled at {sent} sent, {} received",
                got.len()
            );
            let mut progressed = false;
            if sent < N {
                match c.write(&data[sent..(sent + 100_000).min(N)]) {
                    Ok(n) => {
                        sent += n;
                        progressed = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("write: {e}"),
                }
            } else {
                c.flush_held().unwrap();
            }
            match c.read(&mut buf) {
                Ok(0) => panic!("closed early"),
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
            if !progressed {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        assert!(got == data, "the echo differs");
        drop(c);
        echo.join().unwrap();
    }

    #[test]
    fn missing_or_empty_pem_files_are_named() {
        let dir = std::env::temp_dir().join(format!("tern-loadgen-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for (ca, needle) in [
            (dir.join("absent.pem"), "absent.pem"),
            (empty, "no PEM certificate"),
        ] {
            let o = TlsOptions {
                ca: Some(ca),
                ..opts()
            };
            match client_config(&o) {
                Err(Error::Options(m)) => {
                    assert!(m.contains("--tls-ca") && m.contains(needle), "{m}")
                }
                other => panic!("expected an options error, got {other:?}"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A throwaway CA and a server certificate it signed, for tests: PEM files
/// in a temporary directory (never in the repository) and the server side's
/// rustls configuration.
#[cfg(test)]
pub(crate) mod test_pki {
    use std::path::PathBuf;
    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::ServerConfig;

    pub(crate) struct Pki {
        pub dir: PathBuf,
        pub ca_pem: PathBuf,
        pub server: Arc<ServerConfig>,
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A CA, and a certificate for `names` signed by it.
    pub(crate) fn pki(tag: &str, names: &[&str]) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("tern-loadgen-pki-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        Pki {
            dir,
            ca_pem,
            server: Arc::new(server),
        }
    }
}
