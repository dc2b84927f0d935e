//! `tern-soak`: parses the command line, runs the soak
//! ([`tern_loadgen::soak`]), prints the report.
//!
//! Exit status: 0 every rule held, 1 a rule was broken (the first reason is
//! the last line on stderr), 2 the run could not start.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use tern_loadgen::soak::{self, config::Args};

fn main() -> ExitCode {
    match run() {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(reason)) => {
            eprintln!("tern-soak: FAILED: {reason}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("tern-soak: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The run's first failure, if any.
fn run() -> anyhow::Result<Option<String>> {
    let seed_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let config = Args::parse().into_config(seed_now)?;
    // Ctrl-C (or SIGTERM) ends the run early with a report; a second one
    // kills the process as usual.
    let interrupt = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_default(sig, interrupt.clone())
            .and_then(|_| signal_hook::flag::register(sig, interrupt.clone()))
            .context("installing the signal handlers")?;
    }
    let mut stdout = std::io::stdout();
    let outcome =
        soak::run(config, Some(interrupt), &mut stdout).context("the soak could not start")?;
    print!("{}", outcome.report);
    Ok(outcome.failure)
}
