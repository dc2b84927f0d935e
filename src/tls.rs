//! TLS for both listeners: the relay's certificate and key (reloaded on
//! SIGHUP without touching open connections), an optional client CA for
//! mutual TLS, and the names a client certificate carries.
//!
//! rustls does the protocol, with ring as its only crypto provider;
//! futures-rustls runs it over glommio's sockets (see `shard::socket`).
//! [`TlsAcceptor`] holds the current [`rustls::ServerConfig`]: every
//! handshake takes the one in force when it starts, so a reload changes
//! what new connections see and nothing else.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Default `--tls-timeout`: how long a client has to finish its handshake
/// (nats-server's TLS `timeout` default is 2 s as well).
pub const DEFAULT_TLS_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the relay's TLS material is, and how handshakes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file: the relay's certificate, then its chain.
    pub cert: PathBuf,
    /// PEM file: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file of CA certificates: if given, every client must present a
    /// certificate one of them issued (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// Longest a handshake may take; slower or silent clients are closed.
    pub timeout: Duration,
    /// NATS listeners: the handshake comes first, before `INFO`
    /// (nats-server's `handshake_first`), instead of after a clear-text
    /// `INFO` that says `tls_required`.
    pub nats_handshake_first: bool,
}

/// TLS material that cannot be used: every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{what} {path} holds no certificate (a PEM file with -----BEGIN CERTIFICATE----- blocks is expected)")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("the certificate in {cert} and the key in {key} cannot be used together: {source}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("the {what} {path} cannot be used: {reason}")]
    Ca {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// The TLS server side shared by every shard: the configuration in force,
/// replaced by [`TlsAcceptor::reload`].
#[derive(Debug)]
pub struct TlsAcceptor {
    config: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    /// When the certificate in force stops being valid, if it could be
    /// read.
    expires: RwLock<Option<SystemTime>>,
}

impl TlsAcceptor {
    /// Reads the files of `config`.
    pub fn load(config: &TlsConfig) -> Result<Self, TlsError> {
        let (server, expires) = server_config(config)?;
        Ok(TlsAcceptor {
            current: RwLock::new(Arc::new(server)),
            expires: RwLock::new(expires),
            config: config.clone(),
        })
    }

    /// When the certificate in force stops being valid (its `notAfter`),
    /// if it could be read.
    pub fn expires(&self) -> Option<SystemTime> {
        *self.expires.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The settings it was loaded with.
    pub fn config(&self) -> &TlsConfig {
        &self.config
    }

    /// Reads the files again; on success new handshakes use them, on error
    /// the configuration in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (fresh, expires) = server_config(&self.config)?;
        // A poisoned lock only means a reader panicked while cloning an
        // `Arc`: the value is intact.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        *self.expires.write().unwrap_or_else(|e| e.into_inner()) = expires;
        Ok(())
    }

    /// The configuration for a handshake starting now.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The private key in the PEM file at `path`.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Read {
        what: "key file",
        path: path.to_path_buf(),
        source,
    })
}

/// The CA certificates in the PEM file at `path` (the `what` of errors),
/// as the roots a peer's certificate must chain to.
fn root_store(what: &'static str, path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates(what, path)? {
        roots.add(ca).map_err(|e| TlsError::Ca {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// rustls's ring provider: TLS 1.2 and 1.3 with ECDHE (X25519, P-256,
/// P-384), AES-GCM and ChaCha20-Poly1305. ring builds with nothing but a C
/// compiler (aws-lc-rs, rustls's other provider, needs cmake and more);
/// what it lacks is the post-quantum hybrid key exchange, which is why
/// rustls 0.23.48 marks this constructor deprecated.
#[allow(deprecated)]
fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The server configuration of `config`, and when its certificate
/// expires.
fn server_config(config: &TlsConfig) -> Result<(ServerConfig, Option<SystemTime>), TlsError> {
    let chain = certificates("certificate file", &config.cert)?;
    let expires = certificate_expiry(&chain[0]);
    let key = private_key(&config.key)?;
    let provider = Arc::new(crypto_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Mismatch {
            cert: config.cert.clone(),
            key: config.key.clone(),
            source,
        })?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let what = "client CA file";
            let roots = root_store(what, path)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Ca {
                    what,
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Mismatch {
            cert: config.cert.clone(),
            key: config.key.clone(),
            source,
        })?;
    Ok((server, expires))
}

/// The client side of a leaf link's TLS: the hub's certificate must have
/// been issued by a CA in `ca`; `cert` and `key`, if given, are presented
/// to a hub that verifies its leafs.
pub fn client_config(
    ca: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = root_store("CA file", ca)?;
    let provider = Arc::new(crypto_provider());
    let mismatch = |source| TlsError::Mismatch {
        cert: cert.unwrap_or(ca).to_path_buf(),
        key: key.unwrap_or(ca).to_path_buf(),
        source,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(mismatch)?
        .with_root_certificates(roots);
    let config = match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain = certificates("certificate file", cert)?;
            let key = private_key(key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(mismatch)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// When `cert` stops being valid (its `notAfter`), if it can be parsed.
pub fn certificate_expiry(cert: &CertificateDer<'_>) -> Option<SystemTime> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let secs = parsed.validity().not_after.timestamp();
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// The names a (verified) client certificate carries, in the order a user
/// is looked up by: its subject's common names, then its DNS names and
/// e-mail addresses. Empty if it cannot be parsed.
pub fn certificate_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = parsed
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) | GeneralName::RFC822Name(n) => names.push(n.to_string()),
                _ => {}
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA, a server certificate for `localhost` and a client certificate
    /// named `alice`, written to a fresh directory.
    pub(crate) fn material(dir: &Path) -> TlsConfig {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        TlsConfig {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: None,
            timeout: DEFAULT_TLS_TIMEOUT,
            nats_handshake_first: false,
        }
    }

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tern-tls-{name}-{}", std::process::id()))
    }

    #[test]
    fn loads_reloads_and_names_the_bad_file() {
        let dir = scratch("load");
        let config = material(&dir);
        let acceptor = TlsAcceptor::load(&config).unwrap();
        // rcgen's default validity ends in 4096.
        let expires = acceptor.expires().unwrap();
        assert!(expires > SystemTime::now() + Duration::from_secs(365 * 86_400));
        let before = acceptor.server_config();
        acceptor.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &acceptor.server_config()));
        // A broken file on reload keeps the configuration in force.
        std::fs::write(&config.cert, "not a certificate").unwrap();
        let err = acceptor.reload().unwrap_err().to_string();
        assert!(
            err.contains("holds no certificate") && err.contains("cert.pem"),
            "{err}"
        );
        let _ = material(&dir);
        let missing = TlsConfig {
            key: dir.join("nope.pem"),
            ..config.clone()
        };
        let err = TlsAcceptor::load(&missing).unwrap_err().to_string();
        assert!(err.contains("nope.pem"), "{err}");
        // A key that is not the certificate's.
        let other = material(&scratch("other"));
        let mixed = TlsConfig {
            key: other.key.clone(),
            ..config.clone()
        };
        let err = TlsAcceptor::load(&mixed).unwrap_err().to_string();
        assert!(err.contains("cannot be used together"), "{err}");
        // A client CA turns on mutual TLS.
        let with_ca = TlsConfig {
            client_ca: Some(dir.join("ca.pem")),
            ..config
        };
        assert!(TlsAcceptor::load(&with_ca).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(scratch("other"));
    }

    #[test]
    fn certificate_names_are_common_name_then_alternative_names() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["host.example".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        params.subject_alt_names.push(rcgen::SanType::Rfc822Name(
            "alice@example.com".try_into().unwrap(),
        ));
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            certificate_names(cert.der()),
            vec!["alice", "host.example", "alice@example.com"]
        );
        assert!(certificate_names(&CertificateDer::from(vec![1, 2, 3])).is_empty());
    }
}
