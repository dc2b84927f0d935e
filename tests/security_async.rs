//! Authentication and TLS with a real NATS client, async-nats (crates.io),
//! against an in-process relay with two shards ([`TestRelay`]) whose
//! [`Config::auth`] comes from a config file's `[authorization]` text
//! ([`tern::config_file::parse`]) and whose [`Config::tls`] uses
//! certificates this test makes with rcgen in a scratch directory (no key
//! in the repository).
//!
//! Nothing waits on a clock: every await is bounded by [`WAIT`], and the
//! only retry is [`ready`], a request repeated while the relay answers
//! "no responders" (the responder's subscription has not reached the
//! requester's shard yet). async-nats's `flush()` is no `PING`/`PONG` round
//! trip (see tests/nats_async.rs), so it cannot make a subscription in
//! force on the other shard; an answered request can, by the spec's
//! causality rule: the answer is a publish the responder made after its
//! subscriptions, and whatever the requester publishes after reading it is
//! caused by it.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectError, ConnectErrorKind, ConnectOptions, RequestErrorKind};
use bytes::Bytes;
use futures_lite::StreamExt;

use common::{TestRelay, SHARDS};
use tern::auth::Authorization;
use tern::config::Config;
use tern::stats::Totals;
use tern::tls::{TlsConfig, DEFAULT_TLS_TIMEOUT};

/// Longest any one await may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

const TOKEN: &str = "s3cret-token";
const ALICE_PASSWORD: &str = "correct horse battery staple";
const BOB_PASSWORD: &str = "pw-bob";

/// `f`, or a failure naming `what` if it takes longer than [`WAIT`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing within {WAIT:?}"),
    }
}

/// The `[authorization]` of a config file's text.
fn authorization(toml: &str) -> Authorization {
    tern::config_file::parse(toml, &[])
        .expect("a valid config file")
        .authorization
        .expect("an [authorization] section")
}

/// Users: alice (bcrypt-hashed password, cost 10, every right), bob
/// (plain-text password, may publish only to `to.a.*`, `ready.a.*` and
/// inboxes, and subscribe only to `to.b.*`, `ready.b.*` and inboxes: what
/// [`exchange`] needs of the `b` side), and dave
/// (no password: only a client certificate naming him logs him in).
fn users() -> Authorization {
    let hash = bcrypt::hash(ALICE_PASSWORD, 10).expect("bcrypt");
    authorization(&format!(
        r#"
[authorization]
[[authorization.users]]
user = "alice"
password = "{hash}"

[[authorization.users]]
user = "bob"
password = "{BOB_PASSWORD}"
[authorization.users.permissions]
publish = ["to.a.*", "ready.a.*", "_INBOX.>"]
subscribe = ["to.b.*", "ready.b.*", "_INBOX.>"]

[[authorization.users]]
user = "dave"
"#
    ))
}

fn token() -> Authorization {
    authorization(&format!("[authorization]\ntoken = \"{TOKEN}\"\n"))
}

fn alice() -> ConnectOptions {
    ConnectOptions::with_user_and_password("alice".into(), ALICE_PASSWORD.into())
}

fn bob() -> ConnectOptions {
    ConnectOptions::with_user_and_password("bob".into(), BOB_PASSWORD.into())
}

/// Certificates for one test, in a scratch directory removed on drop: a CA,
/// the relay's certificate (for `localhost` and `127.0.0.1`), a client
/// certificate from the CA named `dave` (common name) and `client.test`
/// (DNS name), and a client certificate from an unrelated CA.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("tern-security-async-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let pki = Pki { dir };
        let ca = pki.ca("ca");
        let other = pki.ca("other-ca");
        pki.leaf("server", &ca, &["localhost", "127.0.0.1"], None);
        pki.leaf("client", &ca, &["client.test"], Some("dave"));
        pki.leaf("stranger", &other, &["client.test"], Some("dave"));
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A CA; its certificate is written to `<name>.pem`.
    fn ca(&self, name: &str) -> rcgen::Issuer<'static, rcgen::KeyPair> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("tern test {name}"));
        let cert = params.self_signed(&key).expect("self-signed CA");
        write(&self.path(&format!("{name}.pem")), cert.pem());
        rcgen::Issuer::new(params, key)
    }

    /// A certificate issued by `issuer`: `<name>-cert.pem`, `<name>-key.pem`.
    fn leaf(
        &self,
        name: &str,
        issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
        sans: &[&str],
        common_name: Option<&str>,
    ) {
        let key = rcgen::KeyPair::generate().expect("key");
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(sans).expect("params");
        if let Some(cn) = common_name {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let cert = params.signed_by(&key, issuer).expect("signed");
        write(&self.path(&format!("{name}-cert.pem")), cert.pem());
        write(&self.path(&format!("{name}-key.pem")), key.serialize_pem());
    }

    /// The relay's TLS settings; with `client_ca`, mutual TLS with this CA.
    fn relay(&self, client_ca: bool) -> TlsConfig {
        TlsConfig {
            cert: self.path("server-cert.pem"),
            key: self.path("server-key.pem"),
            client_ca: client_ca.then(|| self.path("ca.pem")),
            timeout: DEFAULT_TLS_TIMEOUT,
            nats_handshake_first: false,
        }
    }

    /// `options` trusting this CA and requiring TLS.
    fn client(&self, options: ConnectOptions) -> ConnectOptions {
        options
            .add_root_certificates(self.path("ca.pem"))
            .require_tls(true)
    }

    /// [`Pki::client`] presenting the client certificate `name` (`client`:
    /// from this CA, `stranger`: from the other one).
    fn client_with_cert(&self, options: ConnectOptions, name: &str) -> ConnectOptions {
        self.client(options).add_client_certificate(
            self.path(&format!("{name}-cert.pem")),
            self.path(&format!("{name}-key.pem")),
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, text: String) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A relay with two shards and `tweak` applied.
fn relay(tweak: impl FnOnce(&mut Config)) -> TestRelay {
    TestRelay::start_with(tweak)
}

/// Connects to `addr` with `options`; the error if the relay refuses.
async fn try_connect(addr: SocketAddr, options: ConnectOptions) -> Result<Client, ConnectError> {
    within(
        "connect",
        options
            .connection_timeout(WAIT)
            .request_timeout(Some(WAIT))
            .connect(format!("nats://{addr}")),
    )
    .await
}

async fn connect(addr: SocketAddr, options: ConnectOptions) -> Client {
    try_connect(addr, options)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// A responder task, stopped when this is dropped.
struct Responder(tokio::task::JoinHandle<()>);

impl Drop for Responder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Subscribes `client` to `subject` and answers every request on it with
/// its own payload, on a task of its own.
async fn respond(client: &Client, subject: String) -> Responder {
    let mut sub = within("subscribe", client.subscribe(subject))
        .await
        .expect("subscribe");
    let client = client.clone();
    Responder(tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(reply) = m.reply {
                if client.publish(reply, m.payload).await.is_err() {
                    return;
                }
            }
        }
    }))
}

/// Requests `subject` from `requester` until it is answered: while the
/// responder's subscription has not reached the requester's shard, the
/// relay answers "no responders" and the request is made again. Once
/// answered, everything the responder subscribed to before [`respond`] is
/// in force for what the requester publishes next.
async fn ready(requester: &Client, subject: &str) {
    within(&format!("an answer on {subject}"), async {
        loop {
            match requester
                .request(subject.to_string(), Bytes::from_static(b"ready?"))
                .await
            {
                Ok(m) => {
                    assert_eq!(&m.payload[..], b"ready?");
                    return;
                }
                Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                    tokio::task::yield_now().await
                }
                Err(e) => panic!("request on {subject}: {e}"),
            }
        }
    })
    .await
}

/// `a` and `b` (any shards) exchange `n` messages each way, in order:
/// `a` publishes on `to.b.<tag>`, `b` on `to.a.<tag>` (a fresh `tag` per
/// call, so that nothing of an earlier exchange answers).
async fn exchange(a: &Client, b: &Client, tag: &str, n: usize) {
    let subscribe = |c: &Client, subject: String| {
        let c = c.clone();
        async move {
            within("subscribe", c.subscribe(subject))
                .await
                .expect("subscribe")
        }
    };
    let mut a_in = subscribe(a, format!("to.a.{tag}")).await;
    let mut b_in = subscribe(b, format!("to.b.{tag}")).await;
    let _a_ready = respond(a, format!("ready.a.{tag}")).await;
    let _b_ready = respond(b, format!("ready.b.{tag}")).await;
    ready(b, &format!("ready.a.{tag}")).await;
    ready(a, &format!("ready.b.{tag}")).await;
    for i in 0..n {
        within(
            "publish",
            a.publish(format!("to.b.{tag}"), format!("ab{i}").into()),
        )
        .await
        .expect("publish");
        within(
            "publish",
            b.publish(format!("to.a.{tag}"), format!("ba{i}").into()),
        )
        .await
        .expect("publish");
    }
    for i in 0..n {
        let m = within("to.b", b_in.next()).await.expect("open");
        assert_eq!(std::str::from_utf8(&m.payload).unwrap(), format!("ab{i}"));
        let m = within("to.a", a_in.next()).await.expect("open");
        assert_eq!(std::str::from_utf8(&m.payload).unwrap(), format!("ba{i}"));
    }
}

/// Waits (bounded) until the relay's summed counters satisfy `check`.
async fn counted(relay: &TestRelay, what: &str, check: impl Fn(&Totals) -> bool) {
    within(what, async {
        while !check(&relay.stats()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn token_connects() {
    let relay = relay(|c| c.auth = Some(Arc::new(token())));
    let opts = || ConnectOptions::with_token(TOKEN.into());
    let a = connect(relay.shard_nats_addrs()[0], opts()).await;
    let b = connect(relay.shard_nats_addrs()[1], opts()).await;
    exchange(&a, &b, "x", 10).await;
    let t = relay.stats();
    assert_eq!(
        (t.auth_failures_bad_token, t.auth_failures_no_credentials),
        (0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn user_password_bcrypt_and_plain() {
    let relay = relay(|c| c.auth = Some(Arc::new(users())));
    let a = connect(relay.shard_nats_addrs()[0], alice()).await;
    let b = connect(relay.shard_nats_addrs()[1], bob()).await;
    exchange(&a, &b, "x", 10).await;
    assert_eq!(relay.stats().auth_failures_bad_password, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn wrong_password_and_no_credentials_are_refused() {
    let relay = relay(|c| c.auth = Some(Arc::new(users())));
    let addr = relay.nats_addrs()[0];
    let refused = [
        ConnectOptions::with_user_and_password("alice".into(), "wrong".into()),
        ConnectOptions::with_user_and_password("bob".into(), ALICE_PASSWORD.into()),
        ConnectOptions::new(),
    ];
    for options in refused {
        let err = try_connect(addr, options)
            .await
            .expect_err("refused by the relay");
        assert_eq!(
            err.kind(),
            ConnectErrorKind::AuthorizationViolation,
            "{err}"
        );
    }
    counted(&relay, "two bad_password, one no_credentials", |t| {
        (t.auth_failures_bad_password, t.auth_failures_no_credentials) == (2, 1)
    })
    .await;
    // Others are unaffected.
    let a = connect(relay.shard_nats_addrs()[0], alice()).await;
    let b = connect(relay.shard_nats_addrs()[1], bob()).await;
    exchange(&a, &b, "x", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn tls_with_user_password() {
    let pki = Pki::new("tls");
    let relay = relay(|c| {
        c.auth = Some(Arc::new(users()));
        c.tls = Some(pki.relay(false));
    });
    let a = connect(relay.nats_addrs()[0], pki.client(alice())).await;
    assert!(a.server_info().tls_required);
    assert!(a.server_info().auth_required);
    let b = connect(relay.nats_addrs()[0], pki.client(bob())).await;
    exchange(&a, &b, "x", 10).await;
    // A wrong password over TLS: refused after the handshake.
    let err = try_connect(
        relay.nats_addrs()[0],
        pki.client(ConnectOptions::with_user_and_password(
            "alice".into(),
            "wrong".into(),
        )),
    )
    .await
    .expect_err("refused");
    assert_eq!(
        err.kind(),
        ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
    counted(&relay, "one bad_password", |t| {
        t.auth_failures_bad_password == 1 && t.auth_failures_tls_handshake == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn tls_handshake_first() {
    let pki = Pki::new("first");
    let relay = relay(|c| {
        c.auth = Some(Arc::new(token()));
        c.tls = Some(TlsConfig {
            nats_handshake_first: true,
            ..pki.relay(false)
        });
    });
    let opts = || {
        pki.client(ConnectOptions::with_token(TOKEN.into()))
            .tls_first()
    };
    let a = connect(relay.shard_nats_addrs()[0], opts()).await;
    let b = connect(relay.shard_nats_addrs()[1], opts()).await;
    exchange(&a, &b, "x", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mutual_tls() {
    let pki = Pki::new("mutual");
    let relay = relay(|c| {
        c.auth = Some(Arc::new(users()));
        c.tls = Some(pki.relay(true));
    });
    let addr = relay.nats_addrs()[0];
    // No client certificate, or one from a CA the relay does not trust:
    // the handshake fails.
    for options in [
        pki.client(alice()),
        pki.client_with_cert(alice(), "stranger"),
    ] {
        try_connect(addr, options)
            .await
            .expect_err("refused by the relay");
    }
    counted(&relay, "two tls_handshake", |t| {
        t.auth_failures_tls_handshake == 2
    })
    .await;
    // A certificate from the client CA, and the password as well.
    let a = connect(addr, pki.client_with_cert(alice(), "client")).await;
    let b = connect(addr, pki.client_with_cert(bob(), "client")).await;
    exchange(&a, &b, "x", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn client_certificate_maps_to_user() {
    let pki = Pki::new("map");
    let relay = relay(|c| {
        let mut auth = users();
        auth.map_certificates = true;
        c.auth = Some(Arc::new(auth));
        c.tls = Some(pki.relay(true));
    });
    // The client certificate's common name is dave: no credentials needed.
    let dave = connect(
        relay.shard_nats_addrs()[0],
        pki.client_with_cert(ConnectOptions::new(), "client"),
    )
    .await;
    let b = connect(
        relay.shard_nats_addrs()[1],
        pki.client_with_cert(bob(), "client"),
    )
    .await;
    exchange(&dave, &b, "x", 5).await;
    let t = relay.stats();
    assert_eq!(
        (
            t.auth_failures_no_credentials,
            t.auth_failures_tls_handshake
        ),
        (0, 0)
    );
}

/// One client pinned to each shard (its private NATS listener), over TLS
/// with authentication and bob's permissions on: every pair of shards
/// exchanges messages both ways, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn one_client_per_shard_over_tls() {
    let pki = Pki::new("pinned");
    let relay = relay(|c| {
        c.auth = Some(Arc::new(users()));
        c.tls = Some(pki.relay(false));
    });
    assert_eq!(relay.shard_nats_addrs().len(), SHARDS);
    let mut alices = Vec::new();
    let mut bobs = Vec::new();
    for &addr in relay.shard_nats_addrs() {
        alices.push(connect(addr, pki.client(alice())).await);
        bobs.push(connect(addr, pki.client(bob())).await);
    }
    // alice on shard i with bob on shard j, for every i, j (cross-shard
    // and same-shard pairs alike), each on subjects of its own.
    for (i, a) in alices.iter().enumerate() {
        for (j, b) in bobs.iter().enumerate() {
            exchange(a, b, &format!("s{i}s{j}"), 20).await;
        }
    }
    let t = relay.stats();
    assert_eq!(t.auth_failures_bad_password + t.permission_denials, 0);
}
