//! Authentication, permissions and TLS end to end, over real sockets: the
//! line protocol's `AUTH` (spec 1.1, section Authentication), the NATS
//! `CONNECT` credentials and nats-server's answers, per-user permissions on
//! both protocols, and TLS on both listeners (rustls as the client).
//!
//! Every refusal is checked three ways: the documented answer, the counter
//! (`auth_failures_*`, `permission_denials`), and another client of the
//! relay still served afterwards.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::process::Tern;
use common::{msg, show, Client, TestRelay, IO_TIMEOUT};
use tern::auth::Authorization;
use tern::stats::Totals;
use tern::tls::TlsConfig;

const CRLF: &[u8] = b"\r\n";

/// Users of most tests: alice may do anything (bcrypt-hashed password),
/// bob is limited, carol may only work on `work`.
fn users(timeout: &str) -> Authorization {
    let hash = bcrypt::hash("alice-pw", 4).unwrap();
    let text = format!(
        r#"
[authorization]
timeout = "{timeout}"
[[authorization.users]]
user = "alice"
password = "{hash}"
[[authorization.users]]
user = "bob"
password = "bob-pw"
[authorization.users.permissions]
publish = {{ allow = ["orders.>", "fence"], deny = ["orders.secret"] }}
subscribe = {{ allow = ["prices.*", "_INBOX.>", "fence"], deny = ["prices.secret"] }}
[[authorization.users]]
user = "carol"
password = "carol-pw"
permissions = {{ subscribe = ["work", "fence"] }}
"#
    );
    tern::config_file::parse(&text, &[])
        .unwrap()
        .authorization
        .unwrap()
}

fn token(secret: &str) -> Authorization {
    let text = format!("[authorization]\ntoken = \"{secret}\"\ntimeout = \"300ms\"\n");
    tern::config_file::parse(&text, &[])
        .unwrap()
        .authorization
        .unwrap()
}

fn with_auth(auth: Authorization) -> TestRelay {
    TestRelay::start_with(|c| c.auth = Some(Arc::new(auth)))
}

/// The relay's counters summed over its shards.
fn totals(relay: &TestRelay) -> Totals {
    relay.monitor().stats()
}

/// A line client of shard `shard` logged in as `user`.
fn login(relay: &TestRelay, shard: usize, user: &str, pass: &str) -> Client {
    let mut c = relay.on(shard);
    c.send(format!("AUTH {user} {pass}"));
    c.expect_silence();
    c
}

/// Sends `frames` on a fresh connection to `addr` and returns everything
/// the relay answered before it closed the connection.
fn refused(addr: SocketAddr, term: &[u8], frames: &[&str]) -> Vec<String> {
    let mut c = Client::connect(addr, term);
    for f in frames {
        c.send(f);
    }
    c.read_until_closed().iter().map(|f| show(f)).collect()
}

#[test]
fn line_clients_authenticate_first_with_the_specs_answers() {
    let relay = with_auth(token("t0ken"));
    let addr = relay.shard_addrs()[0];
    let term = relay.term().to_vec();
    // A client that logs in first, and stays served through all of this.
    let mut good = relay.on(1);
    good.send("AUTH t0ken");
    good.expect_silence();

    let cases: &[(&[&str], &str)] = &[
        (&["PING"], "-ERR authorization required"),
        (&["SUB a"], "-ERR authorization required"),
        (&["AUTH wrong"], "-ERR authorization failed"),
        (&["AUTH t0ken extra"], "-ERR authorization failed"),
        (&["AUTH"], "-ERR authorization failed"),
        (&["AUTH a b c"], "-ERR authorization failed"),
        // Silence: the auth timeout (300 ms here).
        (&[], "-ERR authorization timeout"),
    ];
    for (frames, answer) in cases {
        assert_eq!(refused(addr, &term, frames), vec![*answer], "{frames:?}");
        good.expect_silence();
    }
    let t = totals(&relay);
    assert_eq!(t.auth_failures_no_credentials, 2);
    assert_eq!(t.auth_failures_bad_token, 2, "a token and a user/password");
    assert_eq!(t.auth_failures_malformed, 2);
    assert_eq!(t.auth_failures_timeout, 1);
    assert_eq!(
        t.protocol_errors, 0,
        "counted as authentication failures only"
    );

    // Empty frames before AUTH are allowed; a second AUTH is refused and
    // the connection stays.
    let mut c = relay.on(0);
    c.send_raw(b"\n\nAUTH t0ken\n");
    c.expect_err_for("AUTH t0ken", "invalid arguments");
    c.sub("x");
    c.ping();
    good.publish("x", "after login");
    c.expect_msg("x", "after login");
}

#[test]
fn strangers_cannot_make_the_relay_buffer_much() {
    let relay = with_auth(token("t0ken"));
    let mut good = relay.on(1);
    good.send("AUTH t0ken");
    good.expect_silence();
    // Far below --max-frame (1 MiB), far above any login.
    let mut line = relay.on(0);
    line.send_raw(format!("AUTH {}", "x".repeat(64 << 10)).as_bytes());
    let answers: Vec<String> = line.read_until_closed().iter().map(|f| show(f)).collect();
    assert_eq!(answers, vec!["-ERR authorization failed"]);
    let mut nats = Client::connect(relay.shard_nats_addrs()[0], CRLF);
    nats.read_frame();
    nats.send_raw(format!("PUB a 500000\r\n{}", "y".repeat(64 << 10)).as_bytes());
    let answers: Vec<String> = nats.read_until_closed().iter().map(|f| show(f)).collect();
    assert_eq!(answers, vec!["-ERR 'Authorization Violation'"]);
    assert_eq!(totals(&relay).auth_failures_malformed, 2);
    good.expect_silence();
}

#[test]
fn without_authentication_auth_is_an_unknown_verb() {
    let relay = TestRelay::start();
    let mut c = relay.on(0);
    c.expect_err_for("AUTH x", "unknown verb");
}

#[test]
fn users_and_passwords_plain_and_bcrypt() {
    let relay = with_auth(users("2s"));
    let mut alice = login(&relay, 0, "alice", "alice-pw");
    let mut bob = login(&relay, 1, "bob", "bob-pw");
    let term = relay.term().to_vec();
    for (frame, answer) in [
        ("AUTH alice bob-pw", "-ERR authorization failed"),
        ("AUTH mallory x", "-ERR authorization failed"),
        ("AUTH alice-pw", "-ERR authorization failed"),
    ] {
        assert_eq!(
            refused(relay.shard_addrs()[1], &term, &[frame]),
            vec![answer]
        );
    }
    let t = totals(&relay);
    assert_eq!(
        (
            t.auth_failures_bad_password,
            t.auth_failures_unknown_user,
            t.auth_failures_bad_token
        ),
        (1, 2, 0),
        "a token against users is an unknown user"
    );
    bob.sub("prices.eur");
    bob.ping();
    alice.publish("prices.eur", "1.08");
    bob.expect_msg("prices.eur", "1.08");
}

#[test]
fn line_permissions_allow_deny_wildcards_and_deny_wins() {
    let relay = with_auth(users("2s"));
    let mut alice = login(&relay, 0, "alice", "alice-pw");
    let mut bob = login(&relay, 1, "bob", "bob-pw");
    // Subscribe: allowed pattern, a wildcard the allow list covers, denied.
    bob.expect_ok_for("SUB prices.*");
    bob.expect_ok_for("SUB _INBOX.abc.def");
    bob.expect_ok_for("SUB fence");
    bob.expect_err_for("SUB orders.new", "permission denied");
    bob.expect_err_for("SUB prices.>", "permission denied");
    bob.expect_err_for("SUB prices.secret", "permission denied");
    // Publish: allowed by a `>` pattern, denied by the deny list (which
    // wins over the allow), denied for want of an allow.
    alice.sub("orders.>");
    alice.sub("prices.>");
    alice.sub_fence();
    alice.ping();
    bob.expect_ok_for("PUB orders.new 1");
    bob.expect_err_for("PUB orders.secret 2", "permission denied");
    bob.expect_err_for("PUB prices.eur 3", "permission denied");
    bob.publish("fence", "bob");
    alice.expect_msg("orders.new", "1");
    alice.expect_msg("fence", "bob");
    bob.expect_msg("fence", "bob");
    // The wildcard `prices.*` was allowed, but its deny list keeps
    // `prices.secret` from it; the fence proves nothing was held back
    // unread.
    alice.publish("prices.secret", "s");
    alice.publish("prices.eur", "e");
    alice.publish("fence", "alice");
    bob.expect_msg("prices.eur", "e");
    bob.expect_msg("fence", "alice");
    let t = totals(&relay);
    assert_eq!(t.errors_permission_denied, 5);
    assert_eq!(
        t.permission_denials, 6,
        "five refusals, one delivery held back"
    );
    // The connections stayed open.
    bob.expect_silence();
}

#[test]
fn a_queue_group_whose_members_have_different_rights() {
    let relay = with_auth(users("2s"));
    let mut alice = login(&relay, 0, "alice", "alice-pw");
    let mut carol = login(&relay, 1, "carol", "carol-pw");
    let mut bob = login(&relay, 0, "bob", "bob-pw");
    carol.expect_ok_for("SUB work workers");
    bob.expect_err_for("SUB work workers", "permission denied");
    carol.sub_fence();
    carol.ping();
    for i in 0..20 {
        alice.publish("work", format!("job {i}"));
    }
    alice.publish("fence", "done");
    for i in 0..20 {
        carol.expect_msg("work", format!("job {i}"));
    }
    carol.expect_msg("fence", "done");
    bob.expect_silence();
}

/// A raw NATS client that has read `INFO`.
fn nats_raw(addr: SocketAddr) -> (Client, String) {
    let mut c = Client::connect(addr, CRLF);
    let info = show(&c.read_frame());
    (c, info)
}

#[test]
fn nats_clients_authenticate_as_nats_server_says() {
    let relay = with_auth(users("300ms"));
    let addr = relay.shard_nats_addrs()[0];
    let (mut alice, info) = nats_raw(addr);
    assert!(info.contains(r#""auth_required":true"#), "{info}");
    alice.send(r#"CONNECT {"verbose":true,"user":"alice","pass":"alice-pw"}"#);
    alice.expect("+OK");
    let closed = |connect: Option<&str>| {
        let (mut c, _) = nats_raw(addr);
        if let Some(line) = connect {
            c.send(line);
        }
        c.read_until_closed()
            .iter()
            .map(|f| show(f))
            .collect::<Vec<_>>()
    };
    let violation = vec!["-ERR 'Authorization Violation'".to_string()];
    assert_eq!(
        closed(Some(r#"CONNECT {"user":"alice","pass":"nope"}"#)),
        violation
    );
    assert_eq!(
        closed(Some(r#"CONNECT {"user":"eve","pass":"x"}"#)),
        violation
    );
    assert_eq!(closed(Some(r#"CONNECT {"auth_token":"x"}"#)), violation);
    assert_eq!(closed(Some(r#"CONNECT {}"#)), violation);
    assert_eq!(closed(Some("PING")), violation, "anything before CONNECT");
    assert_eq!(
        closed(Some("SUB a..b 1")),
        violation,
        "even a SUB nats-server would refuse and keep open"
    );
    assert_eq!(
        closed(None),
        vec!["-ERR 'Authentication Timeout'".to_string()]
    );
    let t = totals(&relay);
    assert_eq!(t.auth_failures_bad_password, 1);
    assert_eq!(t.auth_failures_unknown_user, 2);
    assert_eq!(t.auth_failures_no_credentials, 3);
    assert_eq!(t.auth_failures_timeout, 1);
    alice.send("PING");
    alice.expect("PONG");
}

#[test]
fn nats_permissions_answer_with_nats_servers_texts() {
    let relay = with_auth(users("2s"));
    let (mut bob, _) = nats_raw(relay.shard_nats_addrs()[1]);
    bob.send(r#"CONNECT {"verbose":true,"user":"bob","pass":"bob-pw"}"#);
    bob.expect("+OK");
    bob.send("SUB orders.* 1");
    bob.expect(r#"-ERR 'Permissions Violation for Subscription to "orders.*"'"#);
    bob.send("SUB work q 2");
    bob.expect(r#"-ERR 'Permissions Violation for Subscription to "work" using queue "q"'"#);
    bob.send("PUB orders.secret 1\r\nx");
    bob.expect(r#"-ERR 'Permissions Violation for Publish to "orders.secret"'"#);
    bob.send("SUB prices.* 3");
    bob.expect("+OK");
    bob.send("PUB orders.new 1\r\ny");
    bob.expect("+OK");
    // Still open, and served.
    let mut alice = login(&relay, 0, "alice", "alice-pw");
    bob.send("PING");
    bob.expect("PONG");
    alice.publish("prices.usd", "1");
    bob.expect("MSG prices.usd 3 1");
    bob.expect("1");
}

#[test]
fn two_hundred_bcrypt_logins_while_other_clients_are_served() {
    // Cost 10, as a real deployment would hash.
    let hash = bcrypt::hash("slow-pw", 10).unwrap();
    let text = format!(
        "[authorization]\ntimeout = \"60s\"\n[[authorization.users]]\nuser = \"slow\"\npassword = \"{hash}\"\n[[authorization.users]]\nuser = \"fast\"\npassword = \"fast-pw\"\n"
    );
    let auth = tern::config_file::parse(&text, &[])
        .unwrap()
        .authorization
        .unwrap();
    let relay = with_auth(auth);
    let mut pinger: Vec<Client> = (0..2)
        .map(|s| login(&relay, s, "fast", "fast-pw"))
        .collect();
    // Every login is sent before any is confirmed.
    let mut slow: Vec<Client> = (0..200)
        .map(|i| {
            let mut c = relay.on(i % 2);
            c.send("AUTH slow slow-pw");
            c.send("PING");
            c
        })
        .collect();
    // While they are being checked, both shards keep answering.
    for _ in 0..20 {
        for p in &mut pinger {
            p.ping();
        }
    }
    for c in &mut slow {
        c.expect("PONG");
    }
    assert_eq!(totals(&relay).auth_failures_bad_password, 0);
}

// ------------------------------------------------------------------ TLS

/// A CA and what it signed, in a directory of the test's own.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
}

impl Pki {
    /// A new CA, with a server certificate for `localhost` and 127.0.0.1.
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("tern-security-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_cert, issuer) = ca();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        // A client certificate named `carol`, from the same CA.
        let ckey = rcgen::KeyPair::generate().unwrap();
        let mut cparams = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        cparams
            .distinguished_name
            .push(rcgen::DnType::CommonName, "carol");
        let ccert = cparams.signed_by(&ckey, &issuer).unwrap();
        std::fs::write(dir.join("client.pem"), ccert.pem()).unwrap();
        std::fs::write(dir.join("client-key.pem"), ckey.serialize_pem()).unwrap();
        Pki {
            ca: dir.join("ca.pem"),
            dir,
        }
    }

    fn server(&self) -> TlsConfig {
        TlsConfig {
            cert: self.dir.join("cert.pem"),
            key: self.dir.join("key.pem"),
            client_ca: None,
            timeout: Duration::from_millis(300),
            nats_handshake_first: false,
        }
    }

    fn client_cert(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("client.pem"), self.dir.join("client-key.pem"))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca() -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tern test CA");
    let cert = params.self_signed(&key).unwrap();
    (cert, rcgen::Issuer::new(params, key))
}

fn pem_certs(path: &Path) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_file_iter(path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A rustls client configuration trusting `ca`, presenting `client` if
/// given.
fn client_config(ca: &Path, client: Option<(PathBuf, PathBuf)>) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(ca) {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                pem_certs(&cert),
                rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
    })
}

/// A blocking TLS client reading lines ended by `\n` (or `\r\n`).
struct TlsClient {
    io: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

impl TlsClient {
    /// Handshakes over `stream` (which may already have had a clear-text
    /// `INFO` read from it).
    fn over(stream: TcpStream, config: Arc<rustls::ClientConfig>) -> io::Result<TlsClient> {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, stream);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(TlsClient {
            io: BufReader::new(tls),
        })
    }

    fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> io::Result<TlsClient> {
        TlsClient::over(TcpStream::connect(addr)?, config)
    }

    fn send(&mut self, text: &str) {
        let tls = self.io.get_mut();
        tls.write_all(text.as_bytes()).unwrap();
        tls.flush().unwrap();
    }

    /// The next line, without its terminator; `None` at the end.
    fn line(&mut self) -> io::Result<Option<String>> {
        let mut line = String::new();
        if self.io.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
    }

    fn expect(&mut self, want: &str) {
        assert_eq!(self.line().unwrap().as_deref(), Some(want));
    }
}

/// Reads one clear-text `INFO` line from a NATS listener.
fn clear_info(stream: &TcpStream) -> String {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut info = Vec::new();
    let mut byte = [0u8];
    while !info.ends_with(b"\r\n") {
        assert_eq!((&*stream).read(&mut byte).unwrap(), 1, "INFO cut short");
        info.push(byte[0]);
    }
    String::from_utf8(info).unwrap()
}

/// Whether the relay closes `stream` (without a word it can decode).
fn closed_without_service(mut stream: TcpStream) -> bool {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut sink = Vec::new();
    match stream.read_to_end(&mut sink) {
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn tls_on_both_listeners_and_what_it_refuses() {
    let pki = Pki::new("both");
    let relay = TestRelay::start_with(|c| c.tls = Some(pki.server()));
    let config = client_config(&pki.ca, None);
    // Line: TLS from the first byte, across shards.
    let mut a = TlsClient::connect(relay.shard_addrs()[0], config.clone()).unwrap();
    let mut b = TlsClient::connect(relay.shard_addrs()[1], config.clone()).unwrap();
    a.send("SUB tls.x\nPING\n");
    a.expect("PONG");
    b.send("PUB tls.x over tls\n");
    a.expect("MSG tls.x over tls");
    // NATS: a clear-text INFO that requires TLS, then the handshake.
    let stream = TcpStream::connect(relay.shard_nats_addrs()[1]).unwrap();
    let info = clear_info(&stream);
    assert!(info.contains(r#""tls_required":true"#), "{info}");
    let mut n = TlsClient::over(stream, config.clone()).unwrap();
    n.send("CONNECT {\"verbose\":false}\r\nSUB tls.x 7\r\nPING\r\n");
    n.expect("PONG");
    b.send("PUB tls.x both\n");
    a.expect("MSG tls.x both");
    n.expect("MSG tls.x 7 4");
    n.expect("both");

    // Plain text to a TLS port, a client that trusts another CA, and a
    // handshake that never comes: closed, counted.
    let mut plain = TcpStream::connect(relay.shard_addrs()[0]).unwrap();
    plain.write_all(b"PING\n").unwrap();
    assert!(closed_without_service(plain));
    let other = Pki::new("other");
    let err = TlsClient::connect(relay.shard_addrs()[0], client_config(&other.ca, None));
    assert!(err.is_err(), "a certificate from another CA is not trusted");
    let silent = TcpStream::connect(relay.shard_addrs()[1]).unwrap();
    assert!(closed_without_service(silent));
    let t = totals(&relay);
    assert_eq!(t.auth_failures_tls_handshake, 2);
    assert_eq!(t.auth_failures_tls_timeout, 1);
    // The others go on.
    a.send("PING\n");
    a.expect("PONG");
    n.send("PING\r\n");
    n.expect("PONG");
}

#[test]
fn nats_handshake_first() {
    let pki = Pki::new("first");
    let relay = TestRelay::start_with(|c| {
        c.tls = Some(TlsConfig {
            nats_handshake_first: true,
            ..pki.server()
        })
    });
    let mut n =
        TlsClient::connect(relay.shard_nats_addrs()[0], client_config(&pki.ca, None)).unwrap();
    let info = n.line().unwrap().unwrap();
    assert!(info.starts_with("INFO {") && info.contains(r#""tls_required":true"#));
    n.send("CONNECT {\"verbose\":true}\r\n");
    n.expect("+OK");
}

#[test]
fn mutual_tls_and_certificates_that_name_users() {
    let pki = Pki::new("mutual");
    let relay = TestRelay::start_with(|c| {
        c.tls = Some(TlsConfig {
            client_ca: Some(pki.ca.clone()),
            ..pki.server()
        });
        let mut auth = users("2s");
        auth.map_certificates = true;
        c.auth = Some(Arc::new(auth));
    });
    // No client certificate: refused in the handshake.
    let bare = TlsClient::connect(relay.shard_addrs()[0], client_config(&pki.ca, None))
        .and_then(|mut c| c.line());
    assert!(
        !matches!(bare, Ok(Some(_))),
        "served without a certificate: {bare:?}"
    );
    // A certificate from another CA: refused.
    let other = Pki::new("mutual-other");
    let wrong = TlsClient::connect(
        relay.shard_addrs()[0],
        client_config(&pki.ca, Some(other.client_cert())),
    )
    .and_then(|mut c| {
        c.send("PING\n");
        c.line()
    });
    assert!(!matches!(wrong, Ok(Some(_))), "served: {wrong:?}");
    // carol's certificate logs her in: no AUTH, and her permissions hold.
    let mut carol = TlsClient::connect(
        relay.shard_addrs()[1],
        client_config(&pki.ca, Some(pki.client_cert())),
    )
    .unwrap();
    carol.send("SUB work\nPING\n");
    carol.expect("PONG");
    carol.send("SUB orders.x\n");
    carol.expect("-ERR permission denied");
    assert!(totals(&relay).auth_failures_tls_handshake >= 2);
}

#[test]
fn a_certificate_reload_changes_new_connections_only() {
    let pki = Pki::new("reload");
    let relay = TestRelay::start_with(|c| c.tls = Some(pki.server()));
    let mut old = TlsClient::connect(relay.shard_addrs()[0], client_config(&pki.ca, None)).unwrap();
    old.send("PING\n");
    old.expect("PONG");
    // New files from another CA, in place.
    let next = Pki::new("reload-next");
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(next.dir.join(f), pki.dir.join(f)).unwrap();
    }
    assert!(relay.reload_tls().unwrap());
    let mut fresh =
        TlsClient::connect(relay.shard_addrs()[1], client_config(&next.ca, None)).unwrap();
    fresh.send("SUB r\nPING\n");
    fresh.expect("PONG");
    assert!(
        TlsClient::connect(relay.shard_addrs()[1], client_config(&pki.ca, None)).is_err(),
        "the old CA no longer verifies new connections"
    );
    // The connection made before the reload is still served.
    old.send("PUB r still here\n");
    fresh.expect(&show(&msg("r", "still here")));
    // A broken file is refused and the files in force stay.
    std::fs::write(pki.dir.join("cert.pem"), "junk").unwrap();
    assert!(relay.reload_tls().is_err());
    assert!(TlsClient::connect(relay.shard_addrs()[0], client_config(&next.ca, None)).is_ok());
    // /metrics says when the certificate in force expires (rcgen's
    // default: in 4096).
    let metrics = tern::metrics::serve(
        "127.0.0.1:0".parse().unwrap(),
        relay.monitor(),
        relay.cores(),
    )
    .unwrap();
    let page = common::http::get(metrics.local_addr(), "/metrics").body;
    let line = page
        .lines()
        .find(|l| l.starts_with("tern_tls_certificate_expiry_timestamp_seconds{"))
        .unwrap_or_else(|| panic!("no expiry in\n{page}"));
    assert!(line.contains("cert.pem"), "{line}");
    let expires: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let in_ten_years = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 10 * 365 * 86_400;
    assert!(expires > in_ten_years, "{line}");
    metrics.stop();
}

#[test]
fn sighup_reloads_the_binarys_certificate_and_keeps_its_connections() {
    let pki = Pki::new("sighup");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.args([
        "--shards",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--nats-listen",
        "off",
    ])
    .arg("--tls-cert")
    .arg(pki.dir.join("cert.pem"))
    .arg("--tls-key")
    .arg(pki.dir.join("key.pem"));
    let mut tern = Tern::spawn(cmd);
    let addr = tern.wait_started();
    assert!(
        tern.log.last().unwrap().contains("TLS on;"),
        "{:?}",
        tern.log
    );
    let mut old = TlsClient::connect(addr, client_config(&pki.ca, None)).unwrap();
    old.send("SUB r\nPING\n");
    old.expect("PONG");
    let next = Pki::new("sighup-next");
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(next.dir.join(f), pki.dir.join(f)).unwrap();
    }
    tern.signal(libc::SIGHUP);
    tern.wait_line("SIGHUP: TLS certificate, key and client CA reloaded");
    let mut fresh = TlsClient::connect(addr, client_config(&next.ca, None)).unwrap();
    fresh.send("PUB r after reload\n");
    old.expect("MSG r after reload");
    // Broken files: refused, the ones in force stay.
    std::fs::write(pki.dir.join("key.pem"), "junk").unwrap();
    tern.signal(libc::SIGHUP);
    let line = tern.wait_line("SIGHUP: TLS files not reloaded");
    assert!(line.contains("key.pem"), "{line}");
    assert!(TlsClient::connect(addr, client_config(&next.ca, None)).is_ok());
    tern.signal(libc::SIGTERM);
    let (status, _) = tern.wait_exit();
    assert!(status.success(), "{status}");
}
