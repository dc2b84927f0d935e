//! `tern-loadgen`: parses the command line, runs, prints the table.
//!
//! Exit status: 0 success, 1 error (the partial results are printed first),
//! 2 the run finished but messages were lost, duplicated, reordered or
//! damaged.

use std::process::ExitCode;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use tern_loadgen::options::Args;

fn main() -> ExitCode {
    let mut opts = match Args::parse().into_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tern-loadgen: {e}");
            return ExitCode::from(1);
        }
    };
    // Ctrl-C (or SIGTERM) ends the run early with the results so far; a
    // second one kills the process as usual.
    let interrupt = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        let _ = signal_hook::flag::register_conditional_default(sig, interrupt.clone());
        let _ = signal_hook::flag::register(sig, interrupt.clone());
    }
    opts.interrupt = Some(interrupt);
    match tern_loadgen::run(opts) {
        Ok(report) => {
            print!("{}", report.table());
            if report.integrity_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(failure) => {
            if let Some(report) = &failure.report {
                println!("partial results:");
                print!("{}", report.table());
            }
            eprintln!("tern-loadgen: error: {}", failure.error);
            ExitCode::from(1)
        }
    }
}
