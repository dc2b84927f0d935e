//! The hostile and heavy clients, one module per kind (`--chaos`). None of
//! them is checked for what it receives: they are there to make the relay
//! work, waste memory and take damage while the well-behaved streams and
//! the probes check that nobody else notices. Each is bounded: a fixed
//! number of connections and a fixed rate, and each stops by itself when
//! the run ends.

pub mod big_frame;
pub mod churn;
pub mod flood;
pub mod half_frame;
pub mod never_read;
pub mod random;
pub mod storm;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::proto::Protocol;

use super::client::Client;
use super::config::Actor;
use super::context::Ctx;
use super::rng::Rng;

/// How long a chaos connection may take to connect.
const CONNECT: Duration = Duration::from_secs(2);

/// A target at random: the shared line or NATS listener or a shard's own.
pub(crate) fn any_target(ctx: &Ctx, rng: &mut Rng) -> (SocketAddr, Protocol) {
    let all = super::probe::targets(ctx);
    *rng.pick(&all)
}

/// A line-protocol target at random: the shared listener or a shard's own.
pub(crate) fn line_target(ctx: &Ctx, rng: &mut Rng) -> SocketAddr {
    let t = &ctx.config.targets;
    let i = rng.below(t.shards.len() as u64 + 1) as usize;
    if i == 0 {
        t.line
    } else {
        t.shards[i - 1]
    }
}

/// Connects, counting a failure as a chaos connect error.
pub(crate) fn open(ctx: &Ctx, addr: SocketAddr, protocol: Protocol) -> Option<Client> {
    match Client::open(addr, protocol, CONNECT) {
        Ok(c) => Some(c),
        Err(_) => {
            ctx.chaos.connect_errors.inc();
            None
        }
    }
}

/// Makes the coming close a reset (RST) rather than an orderly FIN:
/// `SO_LINGER` with a zero timeout.
pub(crate) fn reset_on_close(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Whether an `-ERR` reason is the slow-consumer farewell (line
/// `slow consumer`, NATS `Slow Consumer`).
pub(crate) fn is_slow_consumer(reason: &[u8]) -> bool {
    reason.eq_ignore_ascii_case(b"slow consumer")
}

/// Starts every actor `--chaos` names, each on its own threads.
pub fn spawn_all(ctx: &Arc<Ctx>) -> io::Result<Vec<JoinHandle<()>>> {
    let mut handles = Vec::new();
    let mut spawn = |name: &str, f: Box<dyn FnOnce() + Send>| -> io::Result<()> {
        handles.push(
            thread::Builder::new()
                .name(format!("soak-{name}"))
                .spawn(f)?,
        );
        Ok(())
    };
    for actor in ctx.config.chaos.clone() {
        let c = ctx.clone();
        let rng = ctx.rng(actor.name());
        match actor {
            Actor::NeverRead => spawn("never-read", Box::new(move || never_read::run(c, rng)))?,
            Actor::Random => spawn("random", Box::new(move || random::run(c, rng)))?,
            Actor::HalfFrame => spawn("half-frame", Box::new(move || half_frame::run(c, rng)))?,
            Actor::BigFrame => spawn("big-frame", Box::new(move || big_frame::run(c, rng)))?,
            Actor::Churn => spawn("churn", Box::new(move || churn::run(c, rng)))?,
            Actor::Storm => {
                // One storm per protocol.
                let mut protocols = vec![Protocol::Line];
                protocols.extend(ctx.config.targets.nats.map(|_| Protocol::Nats));
                for p in protocols {
                    let (c, rng) = (ctx.clone(), ctx.rng(&format!("storm-{p}")));
                    spawn("storm", Box::new(move || storm::run(c, rng, p)))?;
                }
            }
            Actor::Flood => {
                let c2 = ctx.clone();
                spawn("flood-pub", Box::new(move || flood::publish(c)))?;
                spawn("flood-sub", Box::new(move || flood::read(c2)))?;
            }
        }
    }
    Ok(handles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_consumer_farewells_of_both_protocols() {
        assert!(is_slow_consumer(b"slow consumer"));
        assert!(is_slow_consumer(b"Slow Consumer"));
        assert!(!is_slow_consumer(b"frame too long"));
    }
}
