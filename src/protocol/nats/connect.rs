//! The options a client sends in `CONNECT {json}`, read the way nats-server
//! reads them ([`ConnectOptions::merge_json`]).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// A connection's client options.
///
/// nats-server keeps one options record per connection, starts it at
/// `verbose`, `pedantic` and `echo` all true (its `defaultOpts`), and
/// decodes every `CONNECT` *into* that record with Go's `encoding/json`. So:
///
/// * a key that is absent keeps its current value — `CONNECT {}` leaves the
///   connection verbose and pedantic, which is also how a connection that
///   never sends `CONNECT` (a telnet session) behaves;
/// * a key whose value is `null` also keeps its current value;
/// * keys match the field names case-insensitively (Go's rule; here ASCII
///   case only), and a later duplicate wins;
/// * unknown keys are ignored, but a known key with a value of the wrong
///   type (`"verbose": "yes"`) fails the whole `CONNECT`, as does JSON that
///   is not an object or `null`, or has anything but whitespace after it.
///
/// [`ConnectOptions::merge_json`] implements exactly that. What the server
/// does with a failed `CONNECT` (close without `-ERR`) and with the values
/// (the `protocol` and `no_responders` checks) is the decoder's business.
///
/// [`Default`] gives nats-server's options for a connection that has not
/// sent `CONNECT`: verbose, pedantic and echo on, everything else off or
/// empty.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Answer every accepted `CONNECT`, `PUB`, `HPUB`, `SUB` and `UNSUB`
    /// with `+OK`.
    pub verbose: bool,
    /// Check publish subjects: a `PUB` whose subject has an empty token or a
    /// wildcard token gets `-ERR 'Invalid Publish Subject'` (and is still
    /// published, as nats-server does).
    pub pedantic: bool,
    /// The client asks for TLS (tern has none to offer yet).
    pub tls_required: bool,
    /// Deliver this connection's own publishes to its own subscriptions.
    pub echo: bool,
    /// The client understands `HPUB`/`HMSG`: it may send headers and gets
    /// `HMSG` for messages that carry them.
    pub headers: bool,
    /// A request (a publish with a reply subject) that reaches no
    /// subscriber is answered with a `503` status message.
    pub no_responders: bool,
    /// Protocol level: 0 (original) or 1 (async `INFO`); anything else is
    /// refused.
    pub protocol: i64,
    /// Client-chosen connection name, for monitoring.
    pub name: String,
    /// Client library language, for monitoring.
    pub lang: String,
    /// Client library version, for monitoring.
    pub version: String,
    /// Credentials, for when tern gains authentication.
    pub user: String,
    /// Credentials (never printed by `Debug`).
    pub pass: String,
    /// Credentials (never printed by `Debug`).
    pub auth_token: String,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            verbose: true,
            pedantic: true,
            tls_required: false,
            echo: true,
            headers: false,
            no_responders: false,
            protocol: 0,
            name: String::new(),
            lang: String::new(),
            version: String::new(),
            user: String::new(),
            pass: String::new(),
            auth_token: String::new(),
        }
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("ConnectOptions")
            .field("verbose", &self.verbose)
            .field("pedantic", &self.pedantic)
            .field("tls_required", &self.tls_required)
            .field("echo", &self.echo)
            .field("headers", &self.headers)
            .field("no_responders", &self.no_responders)
            .field("protocol", &self.protocol)
            .field("name", &self.name)
            .field("lang", &self.lang)
            .field("version", &self.version)
            .field("user", &self.user)
            .field("pass", &secret(&self.pass))
            .field("auth_token", &secret(&self.auth_token))
            .finish()
    }
}

impl ConnectOptions {
    /// Decodes the JSON of a `CONNECT` over these options, by the rules
    /// above. On error some keys may already have been applied; the
    /// connection is closed then anyway.
    pub fn merge_json(&mut self, json: &[u8]) -> Result<(), serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(json);
        Merge(self).deserialize(&mut de)?;
        de.end()
    }
}

/// The keys nats-server's client options know, by the type their value
/// must have. Keys tern does not keep are still type-checked, since a
/// wrong type there fails nats-server's `CONNECT` too.
enum Key {
    Bool(fn(&mut ConnectOptions) -> &mut bool),
    Str(fn(&mut ConnectOptions) -> &mut String),
    Protocol,
    /// A string nats-server reads (`jwt`, `nkey`, …) that tern ignores.
    IgnoredStr,
    /// A bool nats-server reads (`new_account`) that tern ignores.
    IgnoredBool,
    /// Anything else, or a structured value tern does not check.
    Unknown,
}

fn key(name: &str) -> Key {
    let is = |k: &str| name.eq_ignore_ascii_case(k);
    match () {
        _ if is("verbose") => Key::Bool(|o| &mut o.verbose),
        _ if is("pedantic") => Key::Bool(|o| &mut o.pedantic),
        _ if is("tls_required") => Key::Bool(|o| &mut o.tls_required),
        _ if is("echo") => Key::Bool(|o| &mut o.echo),
        _ if is("headers") => Key::Bool(|o| &mut o.headers),
        _ if is("no_responders") => Key::Bool(|o| &mut o.no_responders),
        _ if is("protocol") => Key::Protocol,
        _ if is("name") => Key::Str(|o| &mut o.name),
        _ if is("lang") => Key::Str(|o| &mut o.lang),
        _ if is("version") => Key::Str(|o| &mut o.version),
        _ if is("user") => Key::Str(|o| &mut o.user),
        _ if is("pass") => Key::Str(|o| &mut o.pass),
        _ if is("auth_token") => Key::Str(|o| &mut o.auth_token),
        _ if ["nkey", "jwt", "sig", "account", "remote_account"]
            .iter()
            .any(|k| is(k)) =>
        {
            Key::IgnoredStr
        }
        _ if is("new_account") => Key::IgnoredBool,
        _ => Key::Unknown,
    }
}

/// Decodes a `CONNECT` object (or `null`) into existing options.
struct Merge<'o>(&'o mut ConnectOptions);

impl<'de> DeserializeSeed<'de> for Merge<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Merge<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of client options")
    }

    /// `CONNECT null` changes nothing (Go's `json.Unmarshal` of `null`).
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let opts = self.0;
        while let Some(name) = map.next_key::<String>()? {
            match key(&name) {
                Key::Bool(field) => {
                    if let Some(v) = map.next_value::<Option<bool>>()? {
                        *field(opts) = v;
                    }
                }
                Key::Str(field) => {
                    if let Some(v) = map.next_value::<Option<String>>()? {
                        *field(opts) = v;
                    }
                }
                Key::Protocol => {
                    if let Some(v) = map.next_value::<Option<i64>>()? {
                        opts.protocol = v;
                    }
                }
                Key::IgnoredStr => {
                    map.next_value::<Option<IgnoredStr>>()?;
                }
                Key::IgnoredBool => {
                    map.next_value::<Option<bool>>()?;
                }
                Key::Unknown => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A JSON string whose value is not kept.
struct IgnoredStr;

impl<'de> de::Deserialize<'de> for IgnoredStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IgnoredStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<IgnoredStr, E> {
                Ok(IgnoredStr)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(json: &str) -> Result<ConnectOptions, serde_json::Error> {
        let mut o = ConnectOptions::default();
        o.merge_json(json.as_bytes()).map(|()| o)
    }

    #[test]
    fn defaults_are_nats_servers() {
        let o = ConnectOptions::default();
        assert!(o.verbose && o.pedantic && o.echo);
        assert!(!o.headers && !o.no_responders && !o.tls_required);
        assert_eq!(o.protocol, 0);
        // An empty object and `null` change nothing.
        assert_eq!(merged("{}").unwrap(), o);
        assert_eq!(merged(" null ").unwrap(), o);
    }

    #[test]
    fn a_typical_client_connect() {
        let o = merged(
            r#"{"verbose":false,"pedantic":false,"tls_required":false,"name":"svc",
               "lang":"python3","version":"2.9.0","protocol":1,"echo":true,
               "headers":true,"no_responders":true,"user":"u","pass":"p",
               "auth_token":"t"}"#,
        )
        .unwrap();
        assert!(!o.verbose && !o.pedantic && o.echo && o.headers && o.no_responders);
        assert_eq!(o.protocol, 1);
        assert_eq!(
            (&*o.name, &*o.lang, &*o.version),
            ("svc", "python3", "2.9.0")
        );
        assert_eq!((&*o.user, &*o.pass, &*o.auth_token), ("u", "p", "t"));
        let shown = format!("{o:?}");
        assert!(
            !shown.contains("\"p\"") && !shown.contains("\"t\""),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn absent_and_null_keys_keep_their_value() {
        let mut o = ConnectOptions::default();
        o.merge_json(br#"{"verbose":false,"name":"a"}"#).unwrap();
        o.merge_json(br#"{"echo":false,"name":null,"verbose":null}"#)
            .unwrap();
        assert!(!o.verbose && !o.echo && o.pedantic);
        assert_eq!(o.name, "a");
    }

    #[test]
    fn keys_match_case_insensitively_and_the_last_duplicate_wins() {
        let o = merged(r#"{"VERBOSE":false,"Echo":false,"echo":true,"Name":"x"}"#).unwrap();
        assert!(!o.verbose && o.echo);
        assert_eq!(o.name, "x");
    }

    #[test]
    fn unknown_keys_are_ignored_whatever_their_value() {
        let o = merged(r#"{"sig":"s","jwt":"j","whatever":[1,{"a":null}],"x":{"y":2}}"#).unwrap();
        assert_eq!(o, ConnectOptions::default());
    }

    #[test]
    fn escaped_keys_and_values() {
        let o = merged(r#"{"n\u0061me":"a\"b","verbose":false}"#).unwrap();
        assert_eq!(o.name, "a\"b");
        assert!(!o.verbose);
    }

    #[test]
    fn wrong_json_fails() {
        for bad in [
            "",
            "{",
            "{verbose:true}",
            r#"{"verbose":"yes"}"#,
            r#"{"verbose":1}"#,
            r#"{"name":5}"#,
            r#"{"protocol":"1"}"#,
            r#"{"protocol":1.5}"#,
            r#"{"protocol":99999999999999999999}"#,
            r#"{"jwt":5}"#,
            r#"{"new_account":"no"}"#,
            "[]",
            "5",
            "\"x\"",
            "true",
            "{} x",
            "{}{}",
        ] {
            assert!(merged(bad).is_err(), "{bad:?} was accepted");
        }
        // Whitespace around the object is fine.
        assert!(merged(" \t{\"verbose\":false} ").is_ok());
    }
}
