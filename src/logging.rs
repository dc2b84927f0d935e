//! The binary's log output: which filters `--log-level` and `RUST_LOG`
//! may be, and the subscriber that writes every line to stderr, glommio's
//! included.
//!
//! # Filters
//!
//! A filter is `tracing-subscriber`'s `EnvFilter` syntax: a level
//! (`error`, `warn`, `info`, `debug`, `trace`, `off`) or comma-separated
//! directives, `TARGET=LEVEL` (`tern=debug,glommio=warn`). That syntax
//! also accepts a bare word as a *target* at every level, so a typo such as
//! `warning` is taken as "everything from a module named `warning`" and
//! the relay logs nothing at all. [`parse_filter`] therefore requires
//! every directive's level part (the whole directive when it has no `=`)
//! to be one of [`LEVELS`].
//!
//! # glommio's words
//!
//! glommio logs through the `log` crate; [`install`] bridges it into the
//! same output, except for one warning it rewrites: when io_uring refuses
//! to register a shard's buffers (in practice `ENOMEM`: the locked-memory
//! limit is counted per user, and other processes of that user hold part
//! of it), glommio logs the error's multi-line `Debug` dump and carries on
//! without registered buffers. tern's sockets do not use them, so the
//! shard runs; the line logged instead says so, on one line, with the
//! cause and the fix ([`registration_warning`]).

use std::io::IsTerminal;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::EnvFilter;

use crate::sys::{self, Resource};
use crate::units::format_size;

/// The levels a filter directive may name, least verbose first.
pub const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// A filter that would not log what its author meant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A directive's level part is not a level (a typo such as `warning`,
    /// or a target without `=LEVEL`).
    #[error("`{level}`{context} is not a log level: use error, warn, info, debug, trace or off, or TARGET=LEVEL directives like tern=debug,glommio=warn")]
    UnknownLevel {
        /// The word found where a level belongs.
        level: String,
        /// ` in `DIRECTIVE`` when the level is part of a longer directive.
        context: String,
    },
    /// Nothing but commas and spaces: it would log nothing.
    #[error("the log filter is empty: give a level such as info")]
    Empty,
    /// `EnvFilter` refused the syntax (a span or field filter, say).
    #[error("invalid log filter `{filter}`: {reason}")]
    Syntax {
        /// The whole filter.
        filter: String,
        /// What `EnvFilter` said.
        reason: String,
    },
}

/// Reads a `--log-level` or `RUST_LOG` filter (see the module docs).
pub fn parse_filter(filter: &str) -> Result<EnvFilter, FilterError> {
    let mut directives = 0;
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        directives += 1;
        let level = match directive.rsplit_once('=') {
            Some((_, level)) => level.trim(),
            None => directive,
        };
        if !is_level(level) {
            let context = if level == directive {
                String::new()
            } else {
                format!(" in `{directive}`")
            };
            return Err(FilterError::UnknownLevel {
                level: level.to_string(),
                context,
            });
        }
    }
    if directives == 0 {
        return Err(FilterError::Empty);
    }
    EnvFilter::builder()
        .parse(filter)
        .map_err(|e| FilterError::Syntax {
            filter: filter.to_string(),
            reason: e.to_string(),
        })
}

/// Whether `word` names a level: one of [`LEVELS`] in any case, or
/// `EnvFilter`'s numbers for them, `0` (off) to `5` (trace).
fn is_level(word: &str) -> bool {
    LEVELS.iter().any(|l| l.eq_ignore_ascii_case(word)) || matches!(word.as_bytes(), [b'0'..=b'5'])
}

/// How each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines (coloured when stderr is a terminal).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Why the logger could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A global `tracing` subscriber was already set.
    #[error("cannot install the logger: {0}")]
    Subscriber(#[from] tracing::subscriber::SetGlobalDefaultError),
    /// A `log` logger was already set.
    #[error("cannot install the logger for glommio's messages: {0}")]
    Log(#[from] log::SetLoggerError),
}

/// Installs the process's logger: `filter`ed lines in `format` on stderr,
/// and the bridge that brings glommio's `log` messages into them (with its
/// buffer-registration warning rewritten, see the module docs).
pub fn install(filter: EnvFilter, format: Format) -> Result<(), InstallError> {
    let registry = tracing_subscriber::registry().with(filter);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        Format::Text => tracing::subscriber::set_global_default(
            registry.with(layer.with_ansi(std::io::stderr().is_terminal())),
        )?,
        Format::Json => tracing::subscriber::set_global_default(registry.with(layer.json()))?,
    }
    log::set_boxed_logger(Box::new(GlommioBridge {
        tracer: tracing_log::LogTracer::new(),
    }))?;
    log::set_max_level(level_filter_as_log(LevelFilter::current()));
    Ok(())
}

/// The `log` crate's level filter for a `tracing` one.
fn level_filter_as_log(level: LevelFilter) -> log::LevelFilter {
    match level.into_level() {
        None => log::LevelFilter::Off,
        Some(tracing::Level::ERROR) => log::LevelFilter::Error,
        Some(tracing::Level::WARN) => log::LevelFilter::Warn,
        Some(tracing::Level::INFO) => log::LevelFilter::Info,
        Some(tracing::Level::DEBUG) => log::LevelFilter::Debug,
        Some(tracing::Level::TRACE) => log::LevelFilter::Trace,
    }
}

/// `log` records (glommio's) into `tracing`, but for the one warning said
/// in tern's words instead.
struct GlommioBridge {
    tracer: tracing_log::LogTracer,
}

impl log::Log for GlommioBridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.tracer.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.tracer.enabled(record.metadata()) {
            return;
        }
        let rewritten = if record.target().starts_with(GLOMMIO_URING) {
            registration_warning(
                record.target(),
                record.level(),
                &record.args().to_string(),
                std::thread::current().name().unwrap_or("a shard thread"),
                sys::limits(Resource::LockedMemory).ok().map(|l| l.soft),
            )
        } else {
            None
        };
        match rewritten {
            Some(line) => tracing::warn!("{line}"),
            None => self.tracer.log(record),
        }
    }

    fn flush(&self) {}
}

/// glommio's module that registers the io_uring buffers.
const GLOMMIO_URING: &str = "glommio::sys::uring";

/// The start of glommio's warnings about a failed registration.
const REGISTRATION_FAILED: &str = "Error: registering buffers in the ";

/// tern's one line for glommio's warning that io_uring refused to register
/// its buffers (logged by `thread`, under the soft locked-memory `limit`
/// if known), or `None` for any other record.
fn registration_warning(
    target: &str,
    level: log::Level,
    message: &str,
    thread: &str,
    limit: Option<u64>,
) -> Option<String> {
    if level != log::Level::Warn
        || !target.starts_with(GLOMMIO_URING)
        || !message.starts_with(REGISTRATION_FAILED)
    {
        return None;
    }
    // The error follows "Skipping" as a pretty-printed `io::Error`:
    // `Os { code: 12, kind: OutOfMemory, message: "..." }`.
    let code = message.split_once("code: ").and_then(|(_, rest)| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<i32>().ok()
    });
    let error = match code {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => message
            .split_once("Skipping")
            .map_or(message, |(_, e)| e)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    };
    let runs_on = "the shard runs without registered buffers, which tern's sockets do not use";
    if code != Some(sys::ENOMEM) {
        return Some(format!(
            "{thread}: io_uring could not register the shard's buffers ({error}); {runs_on}"
        ));
    }
    let limit = match limit {
        Some(sys::UNLIMITED) => "unlimited".to_string(),
        Some(l) => format_size(l),
        None => "unreadable".to_string(),
    };
    Some(format!(
        "{thread}: io_uring could not register the shard's buffers ({error}): the locked-memory limit \
         (RLIMIT_MEMLOCK, {limit}) is counted per user, and other processes of this user (another \
         io_uring program, or a tern that exited a moment ago) hold part of it; {runs_on}, but the \
         next start may fail: run tern as a user of its own (systemd DynamicUser=yes), or raise the \
         limit (`ulimit -l`, systemd LimitMEMLOCK=)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_are_accepted() {
        for ok in [
            "error",
            "warn",
            "info",
            "debug",
            "trace",
            "off",
            "WARN",
            "tern=debug",
            "tern=debug,glommio=warn",
            "info,tern::shard=trace",
            "warn,tern=debug,",
            "tern=4",
        ] {
            parse_filter(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn unknown_levels_are_refused_with_the_valid_ones() {
        let err = parse_filter("warning").unwrap_err();
        assert_eq!(
            err,
            FilterError::UnknownLevel {
                level: "warning".into(),
                context: String::new()
            }
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "`warning` is not a log level: use error, warn, info, debug, trace or off"
            ),
            "{msg}"
        );
        let msg = parse_filter("info,tern=loud").unwrap_err().to_string();
        assert!(
            msg.starts_with("`loud` in `tern=loud` is not a log level"),
            "{msg}"
        );
        // A bare target would log that target at every level and nothing
        // else: say how to write it.
        let msg = parse_filter("tern").unwrap_err().to_string();
        assert!(msg.contains("TARGET=LEVEL"), "{msg}");
        assert!(parse_filter("loud=[").is_err());
        assert!(parse_filter("tern=6").is_err());
        assert_eq!(parse_filter(" , ").unwrap_err(), FilterError::Empty);
        assert_eq!(parse_filter("").unwrap_err(), FilterError::Empty);
    }

    #[test]
    fn a_level_the_syntax_refuses_is_refused() {
        // The level part is a level, but EnvFilter cannot read the rest.
        let err = parse_filter("tern[{=info").unwrap_err();
        assert!(matches!(err, FilterError::Syntax { .. }), "{err}");
    }

    #[test]
    fn glommios_registration_warning_becomes_one_line_with_the_fix() {
        let dump = "Error: registering buffers in the main ring. SkippingOs {\n    code: 12,\n    kind: OutOfMemory,\n    message: \"Cannot allocate memory\",\n}";
        let line = registration_warning(
            "glommio::sys::uring",
            log::Level::Warn,
            dump,
            "tern-shard-1-2",
            Some(3216 << 10),
        )
        .expect("rewritten");
        assert_eq!(line.lines().count(), 1, "{line}");
        for part in [
            "tern-shard-1-2: io_uring could not register the shard's buffers (Cannot allocate memory (os error 12))",
            "RLIMIT_MEMLOCK, 3216 KiB",
            "per user",
            "runs without registered buffers",
            "DynamicUser=yes",
            "ulimit -l",
            "LimitMEMLOCK=",
        ] {
            assert!(line.contains(part), "{part:?} missing from {line}");
        }
        assert!(!line.contains("Os {"), "{line}");

        // Another error: said, without the locked-memory advice.
        let other = "Error: registering buffers in the poll ring. SkippingOs {\n    code: 14,\n    kind: Uncategorized,\n    message: \"Bad address\",\n}";
        let line = registration_warning("glommio::sys::uring", log::Level::Warn, other, "t", None)
            .unwrap();
        assert!(line.contains("(Bad address (os error 14))"), "{line}");
        assert!(!line.contains("RLIMIT_MEMLOCK"), "{line}");
        // Not an OS error: its text, on one line.
        let custom =
            "Error: registering buffers in the main ring. SkippingCustom {\n    kind: Other,\n}";
        let line = registration_warning("glommio::sys::uring", log::Level::Warn, custom, "t", None)
            .unwrap();
        assert!(line.contains("(Custom { kind: Other, })"), "{line}");

        // Everything else passes through untouched.
        assert_eq!(
            registration_warning("glommio::sys::uring", log::Level::Debug, dump, "t", None),
            None
        );
        assert_eq!(
            registration_warning("glommio::executor", log::Level::Warn, dump, "t", None),
            None
        );
        assert_eq!(
            registration_warning("glommio::sys::uring", log::Level::Warn, "other", "t", None),
            None
        );
    }

    #[test]
    fn log_levels_follow_tracing_levels() {
        assert_eq!(level_filter_as_log(LevelFilter::OFF), log::LevelFilter::Off);
        assert_eq!(
            level_filter_as_log(LevelFilter::WARN),
            log::LevelFilter::Warn
        );
        assert_eq!(
            level_filter_as_log(LevelFilter::TRACE),
            log::LevelFilter::Trace
        );
    }
}
