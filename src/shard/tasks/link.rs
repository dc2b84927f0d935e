//! The link task: shard 0's side of one leaf remote.
//!
//! It connects to the hub (resolving its name off the shard's thread),
//! reads the hub's `INFO`, speaks TLS if either side asks for it, sends
//! `CONNECT`, and then serves the link like a connection: the core
//! announces the relay's interest and queues what the hub's interest asks
//! for, and this task feeds the hub's operations to the core
//! ([`Core::handle_hub`]) and writes the link out. When the link fails, or
//! cannot be made, it waits ([`crate::leaf::backoff`]: capped, jittered)
//! and starts again, until the relay stops. Local delivery never waits for
//! it: a link that is down is a receiver that is not there.

use std::future::poll_fn;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::{after_frame, Shard};
use crate::framing::Framer;
use crate::leaf;
use crate::leaf::wire::{HubDecoder, HubInfo, LeafConnect};
use crate::protocol::nats;
use crate::router::ConnId;
use crate::shard::core::{Core, Next};
use crate::shard::socket::{self, Socket};
use crate::shard::LinkSpec;

/// Longest `INFO` accepted from a hub (nats-server's are well under 4 KiB;
/// a large cluster's lists of URLs make them longer).
const MAX_INFO: usize = 64 << 10;

/// A link that lasted at least this long was sound: the next failure
/// starts the backoff over. One that ended sooner (a hub that accepts the
/// link, then refuses it) counts as a failure, so it cannot flap faster
/// than the backoff allows.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// How a session with the hub ended.
enum Ended {
    /// It was established, then ended (`why`) after `lasted`; `looped`: a
    /// loop was detected.
    After {
        why: String,
        looped: bool,
        lasted: Duration,
    },
    /// It could not be established.
    Failed(String),
}

/// Keeps the link of `spec` until the relay stops.
pub(super) async fn keep_link(shard: Rc<Shard>, spec: LinkSpec) {
    let mut failures = 0u32;
    let mut last_failure = String::new();
    loop {
        let session = session(&shard, &spec);
        let Some(ended) = shard.shutdown.unless_stopped(session).await else {
            return;
        };
        if shard.shutdown.is_triggered() {
            return;
        }
        let url = &spec.remote.url;
        let wait = match ended {
            Ended::After {
                why,
                looped,
                lasted,
            } => {
                tracing::warn!(remote = %url, "leaf link down: {why}");
                last_failure.clear();
                if lasted >= STABLE_AFTER {
                    failures = 0;
                } else {
                    failures = failures.saturating_add(1);
                }
                if looped {
                    leaf::LOOP_BACKOFF
                } else {
                    leaf::backoff(failures, shard.config.leaf_reconnect_max, jitter())
                }
            }
            Ended::Failed(why) => {
                // Each new reason once; the same one again is no news.
                if why != last_failure {
                    tracing::warn!(remote = %url, "cannot reach the hub: {why}; retrying");
                    last_failure = why;
                } else {
                    tracing::debug!(remote = %url, "cannot reach the hub: {last_failure}");
                }
                failures = failures.saturating_add(1);
                leaf::backoff(failures, shard.config.leaf_reconnect_max, jitter())
            }
        };
        if shard
            .shutdown
            .unless_stopped(glommio::timer::sleep(wait))
            .await
            .is_none()
        {
            return;
        }
    }
}

/// A number in `0.0..1.0` that differs from call to call and process to
/// process: enough to keep leafs from reconnecting in step.
fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = u64::from(nanos).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    mixed as f64 / (1u64 << 53) as f64
}

/// One connection to the hub, from the TCP connect to its end.
async fn session(shard: &Rc<Shard>, spec: &LinkSpec) -> Ended {
    let (socket, peer, info, leftover) = match establish(shard, spec).await {
        Ok(established) => established,
        Err(why) => return Ended::Failed(why),
    };
    let cid = shard.next_cid.fetch_add(1, Ordering::Relaxed);
    let id = shard.core.borrow_mut().open_leaf(
        peer,
        cid,
        spec.status.clone(),
        info.headers,
        Instant::now(),
    );
    shard.keep_socket(id, socket);
    tracing::info!(
        remote = %spec.remote.url,
        hub = %info.server_name,
        hub_id = %info.server_id,
        "leaf link up"
    );
    shard.flush();
    let up = Instant::now();
    let why = serve(shard, id, leftover).await;
    let looped = shard.core.borrow().link_looped(id);
    shard.close_tls(id).await;
    // Not a client: neither the open-connection count nor the trim.
    shard.close_socket(id);
    Ended::After {
        why,
        looped,
        lasted: up.elapsed(),
    }
}

/// Connects, reads `INFO`, upgrades to TLS if asked, sends `CONNECT`.
/// Returns the stream, the hub's address, its `INFO`, and what it sent
/// after `INFO`.
async fn establish(
    shard: &Rc<Shard>,
    spec: &LinkSpec,
) -> Result<(Socket, SocketAddr, HubInfo, Vec<u8>), String> {
    let remote = &spec.remote;
    let target = (remote.host.clone(), remote.port);
    let addrs: Vec<SocketAddr> = glommio::executor()
        .spawn_blocking(move || target.to_socket_addrs().map(Iterator::collect))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", remote.host))?;
    let peer = *addrs
        .first()
        .ok_or_else(|| format!("{} resolves to no address", remote.host))?;
    let mut stream = TcpStream::connect_timeout(peer, leaf::CONNECT_TIMEOUT)
        .await
        .map_err(|e| format!("connect to {peer}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (info, leftover) = read_info(&mut stream).await?;
    let mut socket = if remote.tls.required || info.tls_required {
        let Some(config) = spec.tls.clone() else {
            return Err(
                "the hub requires TLS: give this remote a tls_ca (and tls_cert/tls_key if the hub verifies leafs)"
                    .to_string(),
            );
        };
        let name = remote.tls.server_name.as_deref().unwrap_or(&remote.host);
        socket::connect_tls(stream, config, name, leaf::CONNECT_TIMEOUT).await?
    } else {
        Socket::Plain(stream)
    };
    let connect = LeafConnect {
        version: nats::SERVER_VERSION,
        server_id: &shard.nats.server_id,
        // Unique per process: a hub refuses a second leaf of the same
        // name ("Duplicate Remote LeafNode Connection"), and every tern
        // is called "tern".
        name: &shard.nats.server_id,
        user: &remote.user,
        pass: &remote.password,
        token: &remote.token,
        headers: true,
        compress_mode: "off",
        protocol: nats::PROTO as i32,
    };
    socket
        .write_all(&connect.encode())
        .await
        .map_err(|e| format!("sending CONNECT: {e}"))?;
    Ok((socket, peer, info, leftover))
}

/// Reads the hub's first line, which must be its `INFO`, within
/// [`leaf::CONNECT_TIMEOUT`]. Also returns what followed it.
async fn read_info(stream: &mut TcpStream) -> Result<(HubInfo, Vec<u8>), String> {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = memchr::memchr(b'\n', &buf) {
                let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
                let Some(json) = line
                    .strip_prefix(b"INFO ")
                    .or_else(|| line.strip_prefix(b"INFO\t"))
                else {
                    let start = String::from_utf8_lossy(&line[..line.len().min(60)]).into_owned();
                    return Err(format!(
                        "expected the hub's INFO, got {start:?} (is this a leafnode port?)"
                    ));
                };
                let info = HubInfo::parse(json).map_err(|e| format!("the hub's INFO: {e}"))?;
                return Ok((info, buf[end + 1..].to_vec()));
            }
            if buf.len() > MAX_INFO {
                return Err(format!("the hub's INFO is longer than {MAX_INFO} bytes"));
            }
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("reading INFO: {e}"))?;
            if n == 0 {
                return Err("the hub closed the connection before its INFO".to_string());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let late = async {
        glommio::timer::sleep(leaf::CONNECT_TIMEOUT).await;
        Err(format!(
            "no INFO from the hub within {:?}",
            leaf::CONNECT_TIMEOUT
        ))
    };
    futures_lite::future::or(read, late).await
}

/// Serves link `id` until it ends; says why.
async fn serve(shard: &Rc<Shard>, id: ConnId, leftover: Vec<u8>) -> String {
    let mut framer = nats::new_framer(shard.config.max_frame);
    let mut decoder = HubDecoder::new(shard.config.max_frame);
    framer.push(&leftover);
    loop {
        let next = process_hub(shard, id, &mut framer, &mut decoder);
        shard.flush();
        match next {
            Next::Close => return closed_why(shard, id),
            Next::WaitBarrier | Next::Read => {}
            Next::WaitMesh | Next::Yield | Next::Stall => {
                shard.pause(id, next).await;
                continue;
            }
        }
        match poll_fn(|cx| shard.poll_read(id, cx, &mut framer)).await {
            Some(0) => return "the hub closed the connection".to_string(),
            None => return closed_why(shard, id),
            Some(n) => framer.advance(n),
        }
        glommio::yield_if_needed().await;
    }
}

/// Why link `id` stopped being served.
fn closed_why(shard: &Shard, id: ConnId) -> String {
    let core = shard.core.borrow();
    match core.conns().get(id) {
        _ if core.stopping() => "the relay is stopping".to_string(),
        Some(c) if c.dead => "the hub stopped reading (slow) or answering".to_string(),
        Some(_) if core.link_looped(id) => "loop detected".to_string(),
        _ => "error on the link".to_string(),
    }
}

/// Handles every complete operation the hub sent.
fn process_hub(shard: &Shard, id: ConnId, framer: &mut Framer, decoder: &mut HubDecoder) -> Next {
    let mut core = shard.core.borrow_mut();
    let ready = core.readiness(id, false);
    if ready != Next::Read {
        return ready;
    }
    let mut frames = framer.frames();
    while let Some(item) = decoder.next(&mut frames) {
        let next = match item {
            Ok(op) => core.handle_hub(id, op),
            Err(e) => {
                report(&core, id, &e.to_string());
                return Next::Close;
            }
        };
        let next = after_frame(&mut core, id, next);
        if next != Next::Read {
            return next;
        }
    }
    Next::Read
}

/// Logs what the hub sent that cannot be accepted.
fn report(core: &Core, id: ConnId, why: &str) {
    if let Some(c) = core.conns().get(id) {
        tracing::warn!(peer = %c.peer, "closing the leaf link: {why}");
    }
}
