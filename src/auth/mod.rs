//! Who may connect: the relay's users (or its one token), checking a
//! client's credentials, and what the check grants.
//!
//! Authentication is configured in the config file only (`--config`, see
//! [`crate::config_file`]): either one shared token, or a list of users, each
//! with a password and [`Permissions`]. Passwords and tokens are stored as
//! bcrypt hashes (`$2a$…`, `$2b$…`, `$2y$…`: the format nats-server reads,
//! so one credentials file serves both) or, with a warning at start-up, in
//! plain text. A client proves who it is with the line protocol's `AUTH`
//! frame or the NATS `CONNECT`'s `auth_token` / `user` / `pass`, or, with
//! `tls_map_users`, with a client certificate whose name is a user's.
//!
//! [`Authorization::verify`] may take tens of milliseconds or more (bcrypt
//! is slow on purpose): the shard runs it on its executor's
//! blocking thread ([`Authorization::is_slow`] says when), never on the
//! thread that serves its other clients.
//!
//! * [`permissions`] — what a user may publish to and subscribe to.

pub mod permissions;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

pub use permissions::{PermissionCache, Permissions, SubjectRule};

/// Default time a client has to authenticate after it connects (and, over
/// TLS, after its handshake): nats-server's `auth_timeout` default.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(2);

/// A stored secret: a password or a token, as the config file holds it.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A bcrypt hash (`$2a$`, `$2b$`, `$2y$`), checked with bcrypt.
    Bcrypt(String),
    /// Plain text, compared in constant time (start-up warns about it).
    Plain(String),
}

impl Secret {
    /// Reads a secret as nats-server does: a value starting with `$2` is a
    /// bcrypt hash, anything else plain text.
    pub fn parse(value: &str) -> Secret {
        if value.starts_with("$2") {
            Secret::Bcrypt(value.to_string())
        } else {
            Secret::Plain(value.to_string())
        }
    }

    /// Whether `given` is this secret. A malformed hash matches nothing.
    fn matches(&self, given: &str) -> bool {
        match self {
            Secret::Bcrypt(hash) => bcrypt::verify(given, hash).unwrap_or(false),
            Secret::Plain(plain) => constant_time_eq(plain.as_bytes(), given.as_bytes()),
        }
    }

    /// Whether checking it is slow enough to leave the shard's thread.
    fn is_hashed(&self) -> bool {
        matches!(self, Secret::Bcrypt(_))
    }

    /// Whether a stored bcrypt value is a hash bcrypt can read.
    pub fn check_format(&self) -> Result<(), String> {
        match self {
            Secret::Bcrypt(hash) => hash
                .parse::<bcrypt::HashParts>()
                .map(|_| ())
                .map_err(|e| format!("not a valid bcrypt hash ({e})")),
            Secret::Plain(_) => Ok(()),
        }
    }
}

/// Never shows the secret itself.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Secret::Bcrypt(_) => "Secret::Bcrypt(<redacted>)",
            Secret::Plain(_) => "Secret::Plain(<redacted>)",
        })
    }
}

/// Compares without returning early at the first difference, so the time
/// taken does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

/// One configured user.
#[derive(Debug, Clone)]
pub struct User {
    /// The name the client gives (`AUTH <user> …`, `"user"` of `CONNECT`),
    /// or the name its certificate carries.
    pub name: Arc<str>,
    /// `None`: the user can only connect with a mapped client certificate.
    pub password: Option<Secret>,
    /// What the user may do.
    pub permissions: Arc<Permissions>,
}

/// How clients must authenticate.
#[derive(Debug, Clone)]
pub enum Method {
    /// One token for everybody, with every right.
    Token(Secret),
    /// Named users with passwords (or certificates) and permissions.
    Users(FxHashMap<Arc<str>, User>),
}

/// The relay's authentication settings.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// Token or users.
    pub method: Method,
    /// How long a client has to authenticate.
    pub timeout: Duration,
    /// A client certificate whose subject common name, DNS name or e-mail
    /// address is a user's name logs in as that user (mutual TLS).
    pub map_certificates: bool,
}

/// What a client presented.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Nothing.
    None,
    /// `AUTH <token>`, or `auth_token` in `CONNECT`.
    Token(String),
    /// `AUTH <user> <password>`, or `user` and `pass` in `CONNECT`.
    User { user: String, pass: String },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::User { user, .. } => {
                write!(f, "User {{ user: {user:?}, pass: <redacted> }}")
            }
        }
    }
}

/// What a successful authentication grants a connection.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// The user it logged in as (`None` for a token).
    pub user: Option<Arc<str>>,
    /// Its permissions, `None` when they restrict nothing (the hot path
    /// then checks nothing).
    pub permissions: Option<Arc<Permissions>>,
}

/// Why a connection was not let in; the `reason` label of
/// `tern_auth_failures_total`, and the word logged with the peer's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No credentials where some were needed (also: a line client's first
    /// frame was not `AUTH`).
    NoCredentials,
    /// A token that is not the relay's.
    BadToken,
    /// A user name nobody configured.
    UnknownUser,
    /// A known user, the wrong password.
    BadPassword,
    /// An `AUTH` frame without one or two non-empty fields, or more bytes
    /// before authenticating than any login needs.
    Malformed,
    /// No credentials within the auth timeout.
    Timeout,
    /// The TLS handshake failed (plain text on a TLS port, a certificate the
    /// relay does not trust, a protocol error).
    TlsHandshake,
    /// No TLS handshake within the handshake timeout.
    TlsTimeout,
}

impl Refusal {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [Refusal; 8] = [
        Refusal::NoCredentials,
        Refusal::BadToken,
        Refusal::UnknownUser,
        Refusal::BadPassword,
        Refusal::Malformed,
        Refusal::Timeout,
        Refusal::TlsHandshake,
        Refusal::TlsTimeout,
    ];

    /// The label value: words joined by `_`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NoCredentials => "no_credentials",
            Refusal::BadToken => "bad_token",
            Refusal::UnknownUser => "unknown_user",
            Refusal::BadPassword => "bad_password",
            Refusal::Malformed => "malformed",
            Refusal::Timeout => "timeout",
            Refusal::TlsHandshake => "tls_handshake",
            Refusal::TlsTimeout => "tls_timeout",
        }
    }
}

impl Authorization {
    /// Whether checking `credentials` may be slow (a bcrypt hash), so must
    /// leave the shard's thread.
    pub fn is_slow(&self, credentials: &Credentials) -> bool {
        match (&self.method, credentials) {
            (Method::Token(secret), Credentials::Token(_)) => secret.is_hashed(),
            (Method::Users(users), Credentials::User { user, .. }) => users
                .get(user.as_str())
                .and_then(|u| u.password.as_ref())
                .is_some_and(Secret::is_hashed),
            _ => false,
        }
    }

    /// Checks a client's credentials (possibly slow: see [`Self::is_slow`]).
    pub fn verify(&self, credentials: &Credentials) -> Result<Grant, Refusal> {
        match (&self.method, credentials) {
            (_, Credentials::None) => Err(Refusal::NoCredentials),
            (Method::Token(secret), Credentials::Token(token)) => {
                if secret.matches(token) {
                    Ok(Grant::default())
                } else {
                    Err(Refusal::BadToken)
                }
            }
            (Method::Token(_), Credentials::User { .. }) => Err(Refusal::BadToken),
            (Method::Users(_), Credentials::Token(_)) => Err(Refusal::UnknownUser),
            (Method::Users(users), Credentials::User { user, pass }) => {
                let Some(u) = users.get(user.as_str()) else {
                    return Err(Refusal::UnknownUser);
                };
                match &u.password {
                    Some(secret) if secret.matches(pass) => Ok(grant(u)),
                    _ => Err(Refusal::BadPassword),
                }
            }
        }
    }

    /// The user a verified client certificate maps to: the first of its
    /// `names` (common name, DNS names, e-mail addresses) that is a user's,
    /// if certificates map to users at all.
    pub fn verify_certificate(&self, names: &[String]) -> Option<Grant> {
        if !self.map_certificates {
            return None;
        }
        let Method::Users(users) = &self.method else {
            return None;
        };
        names.iter().find_map(|n| users.get(n.as_str())).map(grant)
    }

    /// Users whose password is stored in plain text (start-up warns).
    pub fn plain_text_secrets(&self) -> Vec<String> {
        match &self.method {
            Method::Token(Secret::Plain(_)) => vec!["the token".to_string()],
            Method::Token(_) => Vec::new(),
            Method::Users(users) => {
                let mut names: Vec<String> = users
                    .values()
                    .filter(|u| matches!(u.password, Some(Secret::Plain(_))))
                    .map(|u| format!("user {}", u.name))
                    .collect();
                names.sort();
                names
            }
        }
    }
}

fn grant(user: &User) -> Grant {
    Grant {
        user: Some(user.name.clone()),
        permissions: (!user.permissions.allows_all()).then(|| user.permissions.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cheapest cost bcrypt allows, so tests stay fast.
    fn hash(password: &str) -> String {
        bcrypt::hash(password, 4).unwrap()
    }

    fn users(list: &[(&str, Option<&str>, Permissions)]) -> Authorization {
        let users = list
            .iter()
            .map(|(name, pw, perms)| {
                let name: Arc<str> = (*name).into();
                let user = User {
                    name: name.clone(),
                    password: pw.map(Secret::parse),
                    permissions: Arc::new(perms.clone()),
                };
                (name, user)
            })
            .collect();
        Authorization {
            method: Method::Users(users),
            timeout: DEFAULT_AUTH_TIMEOUT,
            map_certificates: true,
        }
    }

    fn user(u: &str, p: &str) -> Credentials {
        Credentials::User {
            user: u.into(),
            pass: p.into(),
        }
    }

    #[test]
    fn tokens_plain_and_hashed() {
        for stored in ["s3cret".to_string(), hash("s3cret")] {
            let auth = Authorization {
                method: Method::Token(Secret::parse(&stored)),
                timeout: DEFAULT_AUTH_TIMEOUT,
                map_certificates: false,
            };
            assert_eq!(
                auth.is_slow(&Credentials::Token("x".into())),
                stored.starts_with("$2")
            );
            assert!(auth.verify(&Credentials::Token("s3cret".into())).is_ok());
            assert_eq!(
                auth.verify(&Credentials::Token("s3cre".into()))
                    .unwrap_err(),
                Refusal::BadToken
            );
            assert_eq!(
                auth.verify(&Credentials::None).unwrap_err(),
                Refusal::NoCredentials
            );
            assert_eq!(
                auth.verify(&user("a", "s3cret")).unwrap_err(),
                Refusal::BadToken
            );
        }
    }

    #[test]
    fn users_with_passwords_and_permissions() {
        let limited = Permissions {
            publish: SubjectRule::new(Some(vec!["a.>".into()]), vec![]).unwrap(),
            ..Permissions::default()
        };
        let auth = users(&[
            ("alice", Some(&hash("pw-a")), Permissions::default()),
            ("bob", Some("pw-b"), limited.clone()),
            ("cert-only", None, Permissions::default()),
        ]);
        let a = auth.verify(&user("alice", "pw-a")).unwrap();
        assert_eq!(a.user.as_deref(), Some("alice"));
        assert!(a.permissions.is_none(), "all rights: nothing to check");
        let b = auth.verify(&user("bob", "pw-b")).unwrap();
        assert_eq!(b.permissions.as_deref(), Some(&limited));
        assert_eq!(
            auth.verify(&user("alice", "pw-b")).unwrap_err(),
            Refusal::BadPassword
        );
        assert_eq!(
            auth.verify(&user("carol", "x")).unwrap_err(),
            Refusal::UnknownUser
        );
        assert_eq!(
            auth.verify(&user("cert-only", "")).unwrap_err(),
            Refusal::BadPassword
        );
        assert_eq!(
            auth.verify(&Credentials::Token("pw-a".into())).unwrap_err(),
            Refusal::UnknownUser
        );
        assert!(auth.is_slow(&user("alice", "")));
        assert!(!auth.is_slow(&user("bob", "")));
        assert!(!auth.is_slow(&user("nobody", "")));
        assert_eq!(auth.plain_text_secrets(), vec!["user bob".to_string()]);
        // Certificates: the first name that is a user's.
        let names = ["www".to_string(), "cert-only".to_string()];
        let g = auth.verify_certificate(&names).unwrap();
        assert_eq!(g.user.as_deref(), Some("cert-only"));
        assert!(auth.verify_certificate(&["nobody".to_string()]).is_none());
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = format!(
            "{:?} {:?} {:?}",
            Secret::parse("hunter2"),
            user("alice", "hunter2"),
            Credentials::Token("hunter2".into())
        );
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("alice"));
    }

    #[test]
    fn malformed_hashes_are_found_and_match_nothing() {
        let bad = Secret::parse("$2a$10$short");
        assert!(bad.check_format().is_err());
        assert!(!bad.matches("anything"));
        assert!(Secret::parse(&hash("x")).check_format().is_ok());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
