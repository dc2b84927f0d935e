//! End to end: `--tls` and credentials against a real nats-server with
//! `tls {}` and `authorization {}`. Skipped, with a note, when `nats-server`
//! is not on PATH. The certificates are made here, in a temporary
//! directory. Only correctness is asserted, never a timing.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tern_loadgen::options::Options;
use tern_loadgen::proto::{Credentials, Protocol};
use tern_loadgen::tls::TlsOptions;
use tern_loadgen::{run, Error};

/// A nats-server child, killed (by its own handle) when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA, a server certificate for localhost/127.0.0.1 it signed, and
/// nats-server on a free loopback port with TLS and a user. `None` if
/// nats-server is not installed.
fn nats_server() -> Option<Server> {
    if Command::new("nats-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("note: nats-server is not on PATH: skipping the TLS end-to-end test");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("tern-loadgen-nats-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    // A free port (a race with other processes is possible, not likely).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = format!(
        "listen: 127.0.0.1:{port}\n\
         tls {{\n  cert_file: \"{d}/server.pem\"\n  key_file: \"{d}/server.key\"\n  timeout: 2\n}}\n\
         authorization {{\n  user: bench\n  password: s3cret\n}}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nats.conf"), conf).unwrap();
    let child = Command::new("nats-server")
        .arg("-c")
        .arg(dir.join("nats.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = Server { child, addr, dir };
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nats-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(server)
}

fn options(server: &Server, ca: Option<&Path>, credentials: Option<Credentials>) -> Options {
    Options {
        targets: vec![server.addr],
        protocol: Protocol::Nats,
        rate: 5_000,
        duration: Duration::from_millis(1000),
        warmup: Duration::from_millis(200),
        quiet: true,
        drain_timeout: Duration::from_secs(5),
        tls: ca.map(|ca| TlsOptions {
            ca: Some(ca.to_path_buf()),
            insecure: false,
            server_name: "localhost".into(),
            cert: None,
            key: None,
            first: false,
        }),
        credentials,
        ..Options::default()
    }
}

#[test]
fn tls_and_a_password_against_nats_server() {
    let Some(server) = nats_server() else {
        return;
    };
    let ca = server.dir.join("ca.pem");
    let user = |password: &str| {
        Some(Credentials::User {
            user: "bench".into(),
            password: password.into(),
        })
    };

    let report = run(options(&server, Some(&ca), user("s3cret"))).expect("the TLS run works");
    assert!(report.complete && report.drained, "{}", report.table());
    assert_eq!((report.lost, report.duplicated, report.corrupt), (0, 0, 0));
    assert!(report.sent > 0 && report.received == report.expected);

    match run(options(&server, Some(&ca), user("wrong"))) {
        Err(f) => match f.error {
            e @ Error::Auth { .. } => assert!(e.to_string().contains("Authorization Violation")),
            e => panic!("expected an authentication error, got {e}"),
        },
        Ok(_) => panic!("a wrong password was accepted"),
    }

    match run(options(&server, None, user("s3cret"))) {
        Err(f) => match f.error {
            e @ Error::TlsMismatch { .. } => assert!(e.to_string().contains("--tls"), "{e}"),
            e => panic!("expected a TLS mismatch, got {e}"),
        },
        Ok(_) => panic!("plain text was accepted by a TLS server"),
    }
}
