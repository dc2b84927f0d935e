//! `tern-forwarder`: the least a line-protocol relay can do, as a baseline
//! for benchmarks ([`tern_loadgen::forwarder`]). Not a server: it sends
//! every message to every subscriber, trusts its clients and has no limits.

use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

/// A blocking, thread-per-connection line-protocol forwarder: the floor
/// `benches/moderate.sh` measures tern against. `PUB` lines go to every
/// connection that sent a `SUB` (any subject) as `MSG` lines; `PING` gets
/// `PONG`. Loopback benchmarks only.
#[derive(Parser)]
#[command(name = "tern-forwarder", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4300")]
    listen: SocketAddr,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let run = || -> anyhow::Result<()> {
        let listener = TcpListener::bind(args.listen)
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        eprintln!(
            "tern-forwarder: line protocol on {}",
            listener.local_addr()?
        );
        tern_loadgen::forwarder::serve(listener).context("accepting connections")
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tern-forwarder: {e:#}");
            ExitCode::from(2)
        }
    }
}
