//! The config file reader (`tern::config_file::parse`): arbitrary text as
//! a TOML config file, with a set of flags like the binary's.
//!
//! Checked: no panic; an accepted file sets only known flags, each once,
//! with values of its shape (a switch none, a single-value flag one), on a
//! line the text has; an error names a line the text has; every user's
//! permissions answer for any subject (no panic), a publish subject and
//! its own pattern agreeing (`covers` is `pattern_matches` on literal
//! subjects).
//!
//! Input: the file's text (UTF-8; anything else is skipped, as the binary
//! refuses it before parsing).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tern::auth::permissions::covers;
use tern::auth::Method;
use tern::config_file::{parse, ConfigFileError, FlagKind, FlagSpec};
use tern::subject::{is_valid_subject, pattern_matches};

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
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count().max(1) + 1;
    match parse(text, FLAGS) {
        Ok(file) => {
            let mut seen = Vec::new();
            for f in &file.flags {
                let spec = FLAGS.iter().find(|s| s.key == f.key).expect("a known flag");
                assert!(!seen.contains(&f.key), "{} set twice", f.key);
                seen.push(f.key.clone());
                assert!((1..=lines).contains(&f.line), "line {} of {lines}", f.line);
                match spec.kind {
                    FlagKind::Switch => assert!(f.values.is_empty()),
                    FlagKind::One => assert_eq!(f.values.len(), 1),
                    FlagKind::Many => {}
                }
            }
            if let Some(auth) = file.authorization {
                if let Method::Users(users) = &auth.method {
                    for user in users.values() {
                        for s in [&b"a.b"[..], b"a.*", b">", b"orders.new", b"x"] {
                            let _ = user.permissions.publish.permits(s);
                            let _ = user.permissions.subscribe.permits(s);
                            let _ = user.permissions.may_receive(s);
                        }
                    }
                }
            }
        }
        Err(e) => {
            let line = match &e {
                ConfigFileError::Syntax { line, .. }
                | ConfigFileError::UnknownKey { line, .. }
                | ConfigFileError::BadValue { line, .. }
                | ConfigFileError::CommandLineOnly { line, .. }
                | ConfigFileError::Authorization { line, .. }
                | ConfigFileError::Leafnodes { line, .. } => *line,
            };
            assert!((1..=lines).contains(&line), "line {line} of {lines}: {e}");
        }
    }
    // The text's first two lines as a pattern and a subject.
    let mut parts = text.splitn(3, '\n');
    if let (Some(p), Some(s)) = (parts.next(), parts.next()) {
        let (p, s) = (p.as_bytes(), s.as_bytes());
        if is_valid_subject(p, true) && is_valid_subject(s, false) {
            assert_eq!(covers(p, s), pattern_matches(p, s));
        }
        if is_valid_subject(p, true) && is_valid_subject(s, true) {
            // A pattern covers itself.
            assert!(covers(s, s) || !is_valid_subject(s, true));
            let _ = covers(p, s);
        }
    }
});
