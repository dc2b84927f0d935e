//! The config file (`tern --config PATH`): TOML, every flag a key, and the
//! users and permissions that only the file holds.
//!
//! ```toml
//! # A flag's key is its name with `_` for `-`: --max-frame is max_frame.
//! listen = ["0.0.0.0:7000"]
//! nats_listen = "0.0.0.0:4222"
//! max_frame = "1MiB"        # sizes and durations as on the command line
//! shards = 2                # numbers as numbers
//! tls_cert = "/etc/tern/cert.pem"
//!
//! [authorization]
//! # Either one token for everybody ...
//! # token = "$2a$11$..."
//! # ... or users. Passwords: bcrypt hashes (as nats-server reads them) or,
//! # with a warning at start-up, plain text.
//! [[authorization.users]]
//! user = "alice"
//! password = "$2a$11$..."
//! [authorization.users.permissions]
//! publish = { allow = ["orders.>"], deny = ["orders.internal.>"] }
//! subscribe = ["_INBOX.>", "prices.*"]   # a bare list is the allow list
//!
//! # Hubs this relay joins as a leaf node (as many as --leafnode-remote).
//! [[leafnodes.remotes]]
//! url = "nats-leaf://hub1.example:7422"
//! user = "leaf"             # or token = "..."; both optional
//! password = "s3cret"
//! tls_ca = "/etc/tern/hub-ca.pem"   # and tls_cert, tls_key, tls_server_name
//! ```
//!
//! [`parse`] reads the text into [`FileFlag`]s (each key's values as the
//! words a command line would carry, with the line it was on) and the
//! [`Authorization`]. Which keys are flags is the caller's to say
//! ([`FlagSpec`]): the binary passes its command line's flags, so a new flag
//! is a new key with no change here. The binary then lets the command line
//! win over the file. Every error names the line.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::Deserialize;

use crate::auth::permissions::BadPattern;
use crate::auth::{Authorization, Method, Permissions, Secret, SubjectRule, User};
use crate::units;

/// The file's section for authentication (not a flag).
pub const AUTHORIZATION: &str = "authorization";

/// The file's section for leaf-node remotes (not a flag).
pub const LEAFNODES: &str = "leafnodes";

/// A flag the file may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagSpec<'a> {
    /// Its key: the flag's long name with `_` for `-`.
    pub key: &'a str,
    /// What value it takes.
    pub kind: FlagKind,
}

/// The shape of a flag's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// A switch (`--check-config`): `true` or `false` in the file.
    Switch,
    /// One value.
    One,
    /// One value or a list (a flag that may be repeated).
    Many,
}

/// One flag set by the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFlag {
    /// The key, as [`FlagSpec::key`].
    pub key: String,
    /// The values as command-line words (a switch set to `true`: none; a
    /// switch set to `false` is left out).
    pub values: Vec<String>,
    /// 1-based line of the key, for errors about its value.
    pub line: usize,
}

/// What a config file says.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    /// The flags it sets, in the file's order.
    pub flags: Vec<FileFlag>,
    /// Its `[authorization]` section, if any.
    pub authorization: Option<Authorization>,
    /// Its `[[leafnodes.remotes]]`.
    pub leaf_remotes: Vec<crate::leaf::Remote>,
}

/// A config file that cannot be used; every variant names the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigFileError {
    /// Not TOML, or a value of the wrong type.
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    /// A key that is no flag and no section.
    #[error("line {line}: unknown key `{key}` (keys are the flags' names with _ for -, like max_frame for --max-frame, and [authorization]; see tern --help)")]
    UnknownKey { line: usize, key: String },
    /// A flag's value has the wrong shape (a list for a single value).
    #[error("line {line}: `{key}` {expected}")]
    BadValue {
        line: usize,
        key: String,
        expected: &'static str,
    },
    /// A flag that makes no sense in a file.
    #[error("line {line}: `{key}` cannot be set in the config file, only on the command line")]
    CommandLineOnly { line: usize, key: String },
    /// The `[authorization]` section cannot work.
    #[error("line {line}: [authorization]: {message}")]
    Authorization { line: usize, message: String },
    /// A `[[leafnodes.remotes]]` entry cannot work.
    #[error("line {line}: [[leafnodes.remotes]]: {message}")]
    Leafnodes { line: usize, message: String },
}

/// Keys that only make sense on the command line.
const COMMAND_LINE_ONLY: &[&str] = &["config", "check_config", "help", "version"];

/// Reads a config file's text. `flags` are the keys it may set besides
/// `[authorization]`.
pub fn parse(text: &str, flags: &[FlagSpec<'_>]) -> Result<ConfigFile, ConfigFileError> {
    let line_of = |offset: usize| line_at(text, offset);
    let syntax = |e: toml::de::Error| ConfigFileError::Syntax {
        line: e.span().map_or(1, |s| line_at(text, s.start)),
        message: e.message().trim_end().to_string(),
    };
    let top: toml::Spanned<toml::Table> = toml::from_str(text).map_err(syntax)?;
    let top_span = top.span();
    let mut table = top.into_inner();
    let authorization = match table.remove(AUTHORIZATION) {
        None => None,
        Some(_) => {
            // Read again, typed: serde's errors then carry the line.
            let file: AuthorizationFile = toml::from_str(text).map_err(syntax)?;
            let section = file.authorization.expect("the key is there");
            let at = section.span().start;
            let built = section.into_inner().build(at);
            Some(
                built.map_err(|(offset, message)| ConfigFileError::Authorization {
                    line: line_at(text, offset),
                    message,
                })?,
            )
        }
    };
    let leaf_remotes = match table.remove(LEAFNODES) {
        None => Vec::new(),
        Some(_) => {
            let file: LeafnodesFile = toml::from_str(text).map_err(syntax)?;
            let section = file.leafnodes.expect("the key is there");
            let mut remotes = Vec::new();
            for entry in section.remotes {
                let line = line_at(text, entry.span().start);
                let remote = entry
                    .into_inner()
                    .build()
                    .map_err(|message| ConfigFileError::Leafnodes { line, message })?;
                remotes.push(remote);
            }
            remotes
        }
    };
    // `toml::Table` does not keep the keys' places: find each one's line
    // by its first appearance as a key at the start of a line.
    let mut out = Vec::new();
    let mut keyed: Vec<(usize, String, toml::Value)> = table
        .into_iter()
        .map(|(key, value)| (key_offset(text, &key).unwrap_or(top_span.start), key, value))
        .collect();
    keyed.sort_by_key(|(offset, _, _)| *offset);
    for (offset, key, value) in keyed {
        let line = line_of(offset);
        let normal = key.replace('-', "_");
        if COMMAND_LINE_ONLY.contains(&normal.as_str()) {
            return Err(ConfigFileError::CommandLineOnly { line, key });
        }
        let Some(spec) = flags.iter().find(|f| f.key == normal) else {
            return Err(ConfigFileError::UnknownKey { line, key });
        };
        let bad = |expected| ConfigFileError::BadValue {
            line,
            key: key.clone(),
            expected,
        };
        let values = match (spec.kind, value) {
            (FlagKind::Switch, toml::Value::Boolean(true)) => Vec::new(),
            (FlagKind::Switch, toml::Value::Boolean(false)) => continue,
            (FlagKind::Switch, _) => return Err(bad("is a switch: give true or false")),
            (FlagKind::Many, toml::Value::Array(items)) => items
                .into_iter()
                .map(|v| scalar(v).ok_or(()))
                .collect::<Result<_, _>>()
                .map_err(|()| bad("takes a list of strings or numbers"))?,
            (_, v) => vec![scalar(v).ok_or_else(|| bad("takes one string or number"))?],
        };
        out.push(FileFlag {
            key: normal,
            values,
            line,
        });
    }
    Ok(ConfigFile {
        flags: out,
        authorization,
        leaf_remotes,
    })
}

/// A value as a command-line word: strings as they are, numbers written
/// out.
fn scalar(v: toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

/// 1-based line of byte `offset`.
fn line_at(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    1 + text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Where a top-level `key` is set: the first line that starts (after
/// blanks) with the key, bare or quoted, before `=`.
fn key_offset(text: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let rest = trimmed
            .strip_prefix(key)
            .or_else(|| trimmed.strip_prefix(&format!("\"{key}\"")))
            .or_else(|| trimmed.strip_prefix(&format!("'{key}'")));
        if let Some(rest) = rest {
            if rest.trim_start().starts_with('=') {
                return Some(offset + (line.len() - trimmed.len()));
            }
        }
        offset += line.len();
    }
    None
}

/// The file as the `[leafnodes]` section sees it.
#[derive(Deserialize)]
struct LeafnodesFile {
    leafnodes: Option<LeafnodesSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeafnodesSection {
    #[serde(default)]
    remotes: Vec<toml::Spanned<RemoteEntry>>,
}

/// One `[[leafnodes.remotes]]`: credentials and TLS settings given here
/// win over those of the URL.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteEntry {
    url: String,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    #[serde(default)]
    tls: bool,
    tls_ca: Option<std::path::PathBuf>,
    tls_cert: Option<std::path::PathBuf>,
    tls_key: Option<std::path::PathBuf>,
    tls_server_name: Option<String>,
}

impl RemoteEntry {
    fn build(self) -> Result<crate::leaf::Remote, String> {
        let mut remote = crate::leaf::Remote::parse(&self.url).map_err(|e| e.to_string())?;
        if let Some(user) = self.user {
            remote.user = user;
        }
        if let Some(password) = self.password {
            remote.password = password;
        }
        if let Some(token) = self.token {
            remote.token = token;
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("tls_cert and tls_key go together".to_string());
        }
        let tls = &mut remote.tls;
        tls.required |= self.tls;
        tls.ca = self.tls_ca;
        tls.cert = self.tls_cert;
        tls.key = self.tls_key;
        tls.server_name = self.tls_server_name;
        if tls.required && tls.ca.is_none() {
            return Err(format!(
                "{}: TLS needs tls_ca, the CA file that issued the hub's certificate",
                remote.url
            ));
        }
        Ok(remote)
    }
}

/// The file as the `[authorization]` section sees it.
#[derive(Deserialize)]
struct AuthorizationFile {
    authorization: Option<toml::Spanned<AuthorizationSection>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizationSection {
    token: Option<String>,
    users: Option<Vec<toml::Spanned<UserEntry>>>,
    /// Like `--auth-timeout`'s value.
    timeout: Option<toml::Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    user: String,
    password: Option<String>,
    #[serde(default)]
    permissions: PermissionsEntry,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PermissionsEntry {
    publish: Option<RuleEntry>,
    subscribe: Option<RuleEntry>,
}

/// `["a", "b"]` (an allow list) or `{ allow = [...], deny = [...] }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RuleEntry {
    Allow(Vec<String>),
    Lists(RuleLists),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleLists {
    allow: Option<Vec<String>>,
    #[serde(default)]
    deny: Vec<String>,
}

impl RuleEntry {
    fn build(entry: Option<RuleEntry>) -> Result<SubjectRule, BadPattern> {
        match entry {
            None => Ok(SubjectRule::default()),
            Some(RuleEntry::Allow(allow)) => SubjectRule::new(Some(allow), Vec::new()),
            Some(RuleEntry::Lists(l)) => SubjectRule::new(l.allow, l.deny),
        }
    }
}

impl AuthorizationSection {
    /// The settings, or what is wrong and the byte offset it is at
    /// (`section`: the section's own offset, for what belongs to no entry).
    fn build(self, section: usize) -> Result<Authorization, (usize, String)> {
        let timeout = match self.timeout {
            None => crate::auth::DEFAULT_AUTH_TIMEOUT,
            Some(t) => {
                let at = t.span().start;
                let word = scalar(t.into_inner()).unwrap_or_default();
                units::parse_duration(&word).map_err(|e| (at, format!("timeout: {e}")))?
            }
        };
        let method = match (self.token, self.users) {
            (Some(_), Some(_)) => return Err((section, "give a token or users, not both".into())),
            (None, None) => return Err((section, "give a token or users".into())),
            (Some(token), None) => {
                let secret = Secret::parse(&token);
                secret
                    .check_format()
                    .map_err(|e| (section, format!("token: {e}")))?;
                if matches!(&secret, Secret::Plain(t) if t.is_empty() || t.contains(char::is_whitespace))
                {
                    return Err((section, "the token is one word, not empty".into()));
                }
                Method::Token(secret)
            }
            (None, Some(entries)) => {
                let mut users = FxHashMap::default();
                for entry in entries {
                    let at = entry.span().start;
                    let entry = entry.into_inner();
                    let fail = |message: String| (at, format!("user {:?}: {message}", entry.user));
                    if entry.user.is_empty() || entry.user.contains(char::is_whitespace) {
                        return Err(fail("a user name is one word".into()));
                    }
                    let password = entry.password.as_deref().map(Secret::parse);
                    if let Some(p) = &password {
                        p.check_format()
                            .map_err(|e| fail(format!("password: {e}")))?;
                        if matches!(p, Secret::Plain(pw) if pw.is_empty() || pw.contains(char::is_whitespace))
                        {
                            return Err(fail(
                                "a plain-text password is one word, not empty".into(),
                            ));
                        }
                    }
                    let permissions = Permissions {
                        publish: RuleEntry::build(entry.permissions.publish)
                            .map_err(|e| fail(format!("publish: {e}")))?,
                        subscribe: RuleEntry::build(entry.permissions.subscribe)
                            .map_err(|e| fail(format!("subscribe: {e}")))?,
                    };
                    let name: Arc<str> = entry.user.as_str().into();
                    let user = User {
                        name: name.clone(),
                        password,
                        permissions: Arc::new(permissions),
                    };
                    if users.insert(name, user).is_some() {
                        return Err(fail("listed twice".into()));
                    }
                }
                Method::Users(users)
            }
        };
        Ok(Authorization {
            method,
            timeout,
            map_certificates: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Credentials, Refusal};
    use std::time::Duration;

    const FLAGS: &[FlagSpec<'static>] = &[
        FlagSpec {
            key: "listen",
            kind: FlagKind::Many,
        },
        FlagSpec {
            key: "max_frame",
            kind: FlagKind::One,
        },
        FlagSpec {
            key: "shards",
            kind: FlagKind::One,
        },
        FlagSpec {
            key: "tls_map_users",
            kind: FlagKind::Switch,
        },
        FlagSpec {
            key: "check_config",
            kind: FlagKind::Switch,
        },
    ];

    fn flag(key: &str, values: &[&str], line: usize) -> FileFlag {
        FileFlag {
            key: key.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            line,
        }
    }

    #[test]
    fn flags_become_command_line_words_with_their_lines() {
        let text = "# comment\nmax_frame = \"64KiB\"\nlisten = [\"127.0.0.1:1\", \"[::1]:2\"]\n\nshards = 2\ntls-map-users = true\n";
        let file = parse(text, FLAGS).unwrap();
        assert_eq!(
            file.flags,
            vec![
                flag("max_frame", &["64KiB"], 2),
                flag("listen", &["127.0.0.1:1", "[::1]:2"], 3),
                flag("shards", &["2"], 5),
                flag("tls_map_users", &[], 6),
            ]
        );
        assert!(file.authorization.is_none());
        // A single value for a repeatable flag; a false switch is absent.
        let file = parse("listen = \"a:1\"\ntls_map_users = false\n", FLAGS).unwrap();
        assert_eq!(file.flags, vec![flag("listen", &["a:1"], 1)]);
        assert!(parse("", FLAGS).unwrap().flags.is_empty());
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let err = |text: &str| parse(text, FLAGS).unwrap_err().to_string();
        let e = err("shards = 1\n\nmax_frmae = 3\n");
        assert!(e.starts_with("line 3: unknown key `max_frmae`"), "{e}");
        let e = err("shards = [1, 2]\n");
        assert_eq!(e, "line 1: `shards` takes one string or number");
        let e = err("tls_map_users = \"yes\"\n");
        assert!(e.contains("is a switch"), "{e}");
        let e = err("listen = [[1]]\n");
        assert!(e.contains("list of strings"), "{e}");
        let e = err("shards = 1\ncheck_config = true\n");
        assert!(
            e.starts_with("line 2:") && e.contains("only on the command line"),
            "{e}"
        );
        let e = err("a = \n");
        assert!(e.starts_with("line 1:"), "{e}");
        let e = err("shards = 1\n[other]\nx = 1\n");
        assert!(e.contains("unknown key `other`"), "{e}");
    }

    #[test]
    fn authorization_with_users_and_permissions() {
        let hash = bcrypt::hash("pw-a", 4).unwrap();
        let text = format!(
            r#"
shards = 1
[authorization]
timeout = "3s"
[[authorization.users]]
user = "alice"
password = "{hash}"
[[authorization.users]]
user = "bob"
password = "pw-b"
[authorization.users.permissions]
publish = {{ allow = ["orders.>"], deny = ["orders.secret"] }}
subscribe = ["_INBOX.>"]
"#
        );
        let file = parse(&text, FLAGS).unwrap();
        assert_eq!(file.flags, vec![flag("shards", &["1"], 2)]);
        let auth = file.authorization.unwrap();
        assert_eq!(auth.timeout, Duration::from_secs(3));
        assert_eq!(auth.plain_text_secrets(), vec!["user bob".to_string()]);
        let login = |u: &str, p: &str| {
            auth.verify(&Credentials::User {
                user: u.into(),
                pass: p.into(),
            })
        };
        assert!(login("alice", "pw-a").unwrap().permissions.is_none());
        let bob = login("bob", "pw-b").unwrap().permissions.unwrap();
        assert!(bob.publish.permits(b"orders.new"));
        assert!(!bob.publish.permits(b"orders.secret"));
        assert!(bob.subscribe.permits(b"_INBOX.x"));
        assert!(!bob.subscribe.permits(b"orders.new"));
        assert_eq!(login("bob", "pw-a").unwrap_err(), Refusal::BadPassword);

        let token = parse("[authorization]\ntoken = \"t0k\"\n", FLAGS).unwrap();
        let auth = token.authorization.unwrap();
        assert!(auth.verify(&Credentials::Token("t0k".into())).is_ok());
        assert_eq!(auth.timeout, crate::auth::DEFAULT_AUTH_TIMEOUT);
    }

    #[test]
    fn authorization_errors_name_the_line() {
        let err = |text: &str| parse(text, FLAGS).unwrap_err().to_string();
        let e = err("[authorization]\ntoken = \"a\"\nusers = []\n");
        assert!(e.contains("not both"), "{e}");
        let e = err("[authorization]\n");
        assert!(e.contains("give a token or users"), "{e}");
        let e = err("[authorization]\ntokn = \"a\"\n");
        assert!(e.starts_with("line 2:") && e.contains("tokn"), "{e}");
        let e = err("[authorization]\n[[authorization.users]]\nuser = \"a\"\npassword = \"p\"\n[[authorization.users]]\nuser = \"b\"\npassword = \"p\"\npermissions = { publish = [\"a..b\"] }\n");
        assert!(e.starts_with("line 5:") && e.contains("`a..b`"), "{e}");
        let e = err(
            "[authorization]\n[[authorization.users]]\nuser = \"a\"\npassword = \"$2a$10$bad\"\n",
        );
        assert!(e.contains("bcrypt"), "{e}");
        let e = err("[authorization]\n[[authorization.users]]\nuser = \"a\"\n[[authorization.users]]\nuser = \"a\"\n");
        assert!(e.contains("listed twice"), "{e}");
        let e = err("[authorization]\ntoken = \"x\"\ntimeout = \"2 parsecs\"\n");
        assert!(e.starts_with("line 3:") && e.contains("timeout"), "{e}");
        let e = err("[authorization]\n[[authorization.users]]\nuser = \"a\"\npermissions = { publish = { allow = [\"a\"], deny = [\"b\"], oops = [] } }\n");
        assert!(e.contains("line 4"), "{e}");
    }
}
