//! nats-server as a peer of the tests: a cluster of real `nats-server`
//! processes on loopback (routes between them, a leaf node listener and
//! HTTP monitoring each), and a small blocking client of the NATS text
//! protocol for either side (a hub or one of tern's NATS listeners).
//!
//! Written from the protocol as documented by the NATS project; nothing
//! here comes from nats-server's code or tests.
//!
//! Included by a test crate next to `mod common;` (with
//! `#[path = "common/nats_cluster.rs"] mod nats_cluster;`), so the test
//! binaries that do not use it do not build it.
//!
//! Bounded in time everywhere: every socket has [`IO_TIMEOUT`]
//! read and write timeouts, every wait for a state is bounded by [`WAIT`],
//! and every process started here is killed by its PID when its guard is
//! dropped, also when the test panics (its log is then printed).
//!
//! `nats-server` must be on `PATH` ([`nats_server_or_skip`]): without it
//! the tests that need it are skipped with a message, unless the
//! environment variable `CI` is set, where it is a failure (`.ci/run`
//! installs it).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::IO_TIMEOUT;

/// Longest any one wait for a state (a route, a link, interest, a
/// message) may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// How often a state is polled while waiting for it.
const POLL: Duration = Duration::from_millis(20);

/// `nats-server`'s path on `PATH`, or `None` after saying why the calling
/// test is skipped. With `CI` set, a missing `nats-server` fails the test
/// instead: CI installs it, so its absence there is a broken setup, not a
/// reason to pass.
pub fn nats_server_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(path) = find_on_path("nats-server") {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: nats-server is not on PATH, and CI is set (.ci/run installs it: apt-get install nats-server)");
    }
    eprintln!(
        "SKIPPED {test}: nats-server is not on PATH (apt-get install nats-server); \
         with CI set this is a failure"
    );
    None
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A loopback port that was free a moment ago (bound, then released). The
/// servers need their ports before they start: the cluster's routes name
/// each other's, and a restarted server must come back on the same ones.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A fresh directory for one process's files (config, log), removed by
/// its owner.
pub fn scratch_dir(what: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tern-test-{}-{what}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Polls `probe` until it gives `Ok`, at most [`WAIT`]; the failure names
/// `what` and the last `Err` (the state seen instead).
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => {
                panic!("{what}: not within {WAIT:?}; last seen: {seen}")
            }
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// `GET path` over HTTP/1.0 (the server closes after the response, and
/// never answers chunked); `None` if nothing listens there yet. Returns
/// the status and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).ok()?;
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// [`http_get`] of a JSON page; `Err` says what was wrong (not up, not
/// 200, not JSON), for [`wait_for`].
pub fn http_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value, String> {
    match http_get(addr, path) {
        None => Err(format!("nothing answers http://{addr}{path}")),
        Some((200, body)) => serde_json::from_str(&body)
            .map_err(|e| format!("http://{addr}{path}: not JSON ({e}): {body}")),
        Some((status, body)) => Err(format!("http://{addr}{path}: {status} {body}")),
    }
}

/// The last `lines` lines of a file, for failure reports.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One `nats-server` process: its ports, its files, and the command that
/// starts it again on the same ports after [`NatsServer::kill`].
pub struct NatsServer {
    pub name: String,
    pub client_port: u16,
    pub cluster_port: u16,
    pub leaf_port: u16,
    pub http_port: u16,
    bin: PathBuf,
    dir: PathBuf,
    /// Cluster ports of the other servers (its routes).
    routes: Vec<u16>,
    child: Option<Child>,
    /// How many times it was started (each start logs to its own file).
    starts: usize,
}

impl NatsServer {
    /// Client address (`nats://` clients of the cluster connect here).
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    /// The URL a leaf node (tern's `--leafnode-remote`) dials.
    pub fn leaf_url(&self) -> String {
        format!("nats-leaf://127.0.0.1:{}", self.leaf_port)
    }

    /// The leaf node port with `user:password@` in front.
    pub fn leaf_url_with(&self, userinfo: &str) -> String {
        format!("nats-leaf://{userinfo}@127.0.0.1:{}", self.leaf_port)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("hub.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("hub-{}.log", self.starts))
    }

    /// Starts the process (first start or restart on the same ports) and
    /// waits until its monitoring port answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        self.starts += 1;
        let routes: Vec<String> = self
            .routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-a", "127.0.0.1", "-n", &self.name])
            .args(["-p", &self.client_port.to_string()])
            .args(["-m", &self.http_port.to_string()])
            .args(["--cluster_name", "backbone"])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", self.cluster_port),
            ])
            .arg("-c")
            .arg(self.config_path());
        if !routes.is_empty() {
            cmd.args(["--routes", &routes.join(",")]);
        }
        let log = File::create(self.log_path()).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        self.child = Some(child);
        wait_for(&format!("{} serving /varz", self.name), || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("wait") {
                panic!(
                    "{} exited ({status}) while starting:\n{}",
                    self.name,
                    tail(&self.log_path(), 30)
                );
            }
            http_json(self.http_addr(), "/varz").map(|_| ())
        });
    }

    /// Kills the process by its PID (SIGKILL: the hub goes away without a
    /// goodbye, as when its host fails) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A monitoring page as JSON (the server must be up).
    pub fn page(&self, path: &str) -> serde_json::Value {
        http_json(self.http_addr(), path).unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// `/routez`'s `num_routes`.
    pub fn num_routes(&self) -> Result<u64, String> {
        let v = http_json(self.http_addr(), "/routez")?;
        v["num_routes"]
            .as_u64()
            .ok_or_else(|| format!("no num_routes in {v}"))
    }

    /// The subjects each connected leaf node has shown interest in
    /// (`/leafz?subs=1`, one list per leaf connection).
    pub fn leaf_subs(&self) -> Result<Vec<Vec<String>>, String> {
        let v = http_json(self.http_addr(), "/leafz?subs=1")?;
        // With no leaf connected, nats-server says `"leafs": null`.
        if v["leafnodes"] == 0 && v["leafs"].is_null() {
            return Ok(Vec::new());
        }
        let leafs = v["leafs"]
            .as_array()
            .ok_or_else(|| format!("no leafs in {v}"))?;
        Ok(leafs
            .iter()
            .map(|l| {
                l["subscriptions_list"]
                    .as_array()
                    .map(|subs| {
                        subs.iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect())
    }

    /// Waits until exactly `n` leaf nodes are connected to this server.
    pub fn await_leafs(&self, n: usize) {
        wait_for(&format!("{} with {n} leaf connections", self.name), || {
            let subs = self.leaf_subs()?;
            if subs.len() == n {
                Ok(())
            } else {
                Err(format!("{} leaf connections", subs.len()))
            }
        });
    }

    /// Waits until some leaf node's interest includes `subject` (`present`)
    /// or no leaf node's does (`!present`), as this server sees it.
    pub fn await_leaf_interest(&self, subject: &str, present: bool) {
        let what = format!(
            "{}: leaf interest in {subject} {}",
            self.name,
            if present { "announced" } else { "withdrawn" }
        );
        wait_for(&what, || {
            let subs = self.leaf_subs()?;
            let has = subs.iter().flatten().any(|s| s == subject);
            if has == present {
                Ok(())
            } else {
                Err(format!("{subs:?}"))
            }
        });
    }

    /// The whole current log (since the last start).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last lines of the current log.
    pub fn log_tail(&self) -> String {
        tail(&self.log_path(), 40)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "---- {} log (last lines) ----\n{}",
                self.name,
                self.log_tail()
            );
        }
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `n` nats-servers in one cluster (`backbone`), each with a route to
/// every other, a leaf node listener and monitoring; all on loopback.
pub struct Cluster {
    pub hubs: Vec<NatsServer>,
}

impl Cluster {
    /// Starts the servers and waits until every route is up.
    pub fn start(bin: &Path, n: usize) -> Cluster {
        Cluster::start_with(bin, n, "")
    }

    /// Like [`Cluster::start`]; `leaf_extra` goes inside each server's
    /// `leafnodes { }` block (e.g. an `authorization { }`).
    pub fn start_with(bin: &Path, n: usize, leaf_extra: &str) -> Cluster {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut hubs: Vec<NatsServer> = (0..n)
            .map(|i| {
                let name = format!("hub{}", i + 1);
                let dir = scratch_dir(&name);
                let leaf_port = free_port();
                fs::write(
                    dir.join("hub.conf"),
                    format!(
                        "leafnodes {{\n  listen: \"127.0.0.1:{leaf_port}\"\n  {leaf_extra}\n}}\n"
                    ),
                )
                .expect("write hub.conf");
                NatsServer {
                    name,
                    client_port: free_port(),
                    cluster_port: cluster_ports[i],
                    leaf_port,
                    http_port: free_port(),
                    bin: bin.to_path_buf(),
                    dir,
                    routes: cluster_ports
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != i)
                        .map(|(_, &p)| p)
                        .collect(),
                    child: None,
                    starts: 0,
                }
            })
            .collect();
        for hub in &mut hubs {
            hub.start();
        }
        let cluster = Cluster { hubs };
        cluster.await_routes();
        cluster
    }

    /// Waits until every server has a route to every other.
    pub fn await_routes(&self) {
        let want = self.hubs.len() as u64 - 1;
        for hub in &self.hubs {
            wait_for(&format!("{} with {want} routes", hub.name), || {
                let n = hub.num_routes()?;
                if n == want {
                    Ok(())
                } else {
                    Err(format!("{n} routes"))
                }
            });
        }
    }
}

/// A message as a NATS client receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsMsg {
    pub subject: String,
    pub sid: u64,
    pub reply: Option<String>,
    /// The header block of an `HMSG` (`NATS/1.0\r\n...\r\n\r\n`), as
    /// received; `None` for a `MSG`.
    pub headers: Option<Vec<u8>>,
    /// The payload (without headers, for an `HMSG`).
    pub payload: Vec<u8>,
}

/// A blocking client of the NATS text protocol: `CONNECT` without
/// verbose mode and with headers (`HPUB`/`HMSG`), answers the server's
/// `PING`s, skips `INFO` updates, and keeps the messages it reads while
/// waiting for a `PONG`.
pub struct NatsConn {
    stream: TcpStream,
    addr: SocketAddr,
    buf: Vec<u8>,
    /// Messages read ahead (while waiting for a `PONG`).
    held: VecDeque<NatsMsg>,
    next_sid: u64,
    /// The first `INFO`'s JSON.
    pub info: serde_json::Value,
}

/// One server operation.
enum Op {
    Msg(NatsMsg),
    Ping,
    Pong,
    Info,
    Ok,
}

impl NatsConn {
    /// Connects, reads `INFO`, sends `CONNECT` and waits for the `PONG`
    /// of a `PING` (the server accepted the connection).
    pub fn connect(addr: SocketAddr) -> NatsConn {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut c = NatsConn {
            stream,
            addr,
            buf: Vec::with_capacity(64 * 1024),
            held: VecDeque::new(),
            next_sid: 1,
            info: serde_json::Value::Null,
        };
        let line = c
            .read_line(IO_TIMEOUT)
            .unwrap_or_else(|| panic!("{addr}: no INFO"));
        let json = line
            .strip_prefix("INFO ")
            .unwrap_or_else(|| panic!("{addr}: expected INFO, got {line:?}"));
        c.info = serde_json::from_str(json).unwrap_or_else(|e| panic!("{addr}: INFO JSON: {e}"));
        c.send(
            "CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\
             \"name\":\"tern-leaf-test\",\"lang\":\"rust\",\"version\":\"0\",\
             \"protocol\":1,\"echo\":true,\"headers\":true,\"no_responders\":false}\r\n",
        );
        c.ping();
        c
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes());
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("{}: write: {e}", self.addr));
    }

    /// `SUB subject sid` (no barrier); returns the sid.
    pub fn sub(&mut self, subject: &str) -> u64 {
        let sid = self.next_sid;
        self.next_sid += 1;
        self.send(&format!("SUB {subject} {sid}\r\n"));
        sid
    }

    /// `SUB subject queue sid` (no barrier); returns the sid.
    pub fn sub_queue(&mut self, subject: &str, queue: &str) -> u64 {
        let sid = self.next_sid;
        self.next_sid += 1;
        self.send(&format!("SUB {subject} {queue} {sid}\r\n"));
        sid
    }

    /// `UNSUB sid` (no barrier).
    pub fn unsub(&mut self, sid: u64) {
        self.send(&format!("UNSUB {sid}\r\n"));
    }

    /// `PUB subject payload`.
    pub fn publish(&mut self, subject: &str, payload: &[u8]) {
        self.publish_with_reply(subject, None, payload);
    }

    /// `PUB subject [reply] payload`.
    pub fn publish_with_reply(&mut self, subject: &str, reply: Option<&str>, payload: &[u8]) {
        let mut out = match reply {
            Some(r) => format!("PUB {subject} {r} {}\r\n", payload.len()),
            None => format!("PUB {subject} {}\r\n", payload.len()),
        }
        .into_bytes();
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        self.send_bytes(&out);
    }

    /// `HPUB subject header_len total_len`: `headers` is the whole header
    /// block (`NATS/1.0\r\n`, the fields, and the empty line).
    pub fn publish_with_headers(&mut self, subject: &str, headers: &[u8], payload: &[u8]) {
        let mut out = format!(
            "HPUB {subject} {} {}\r\n",
            headers.len(),
            headers.len() + payload.len()
        )
        .into_bytes();
        out.extend_from_slice(headers);
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        self.send_bytes(&out);
    }

    /// `PING`, and waits for the `PONG`: the server has handled everything
    /// sent before (messages read meanwhile are kept for [`Self::next_msg`]).
    pub fn ping(&mut self) {
        self.send("PING\r\n");
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            assert!(
                Instant::now() < deadline,
                "{}: no PONG within {IO_TIMEOUT:?} ({} messages read meanwhile)",
                self.addr,
                self.held.len()
            );
            match self.read_op(IO_TIMEOUT) {
                Some(Op::Pong) => return,
                Some(Op::Msg(m)) => self.held.push_back(m),
                Some(_) => {}
                None => panic!("{}: no PONG within {IO_TIMEOUT:?}", self.addr),
            }
        }
    }

    /// The next message, waiting at most `timeout`.
    pub fn try_next_msg(&mut self, timeout: Duration) -> Option<NatsMsg> {
        if let Some(m) = self.held.pop_front() {
            return Some(m);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_op(left.max(Duration::from_millis(1)))? {
                Op::Msg(m) => return Some(m),
                _ if Instant::now() >= deadline => return None,
                _ => {}
            }
        }
    }

    /// The next message; fails the test after [`IO_TIMEOUT`].
    pub fn next_msg(&mut self) -> NatsMsg {
        let addr = self.addr;
        self.try_next_msg(IO_TIMEOUT)
            .unwrap_or_else(|| panic!("{addr}: no message within {IO_TIMEOUT:?}"))
    }

    /// Reads one operation; `None` on timeout. `-ERR` and a closed
    /// connection fail the test.
    fn read_op(&mut self, timeout: Duration) -> Option<Op> {
        let line = self.read_line(timeout)?;
        let mut fields = line.split(' ');
        let verb = fields.next().unwrap_or_default().to_ascii_uppercase();
        match verb.as_str() {
            "PING" => {
                self.send("PONG\r\n");
                Some(Op::Ping)
            }
            "PONG" => Some(Op::Pong),
            "INFO" => Some(Op::Info),
            "+OK" => Some(Op::Ok),
            "MSG" | "HMSG" => {
                let args: Vec<&str> = fields.collect();
                let headers = verb == "HMSG";
                let (subject, sid, reply, hdr, total) = match (headers, args.as_slice()) {
                    (false, [s, sid, n]) => (*s, *sid, None, "0", *n),
                    (false, [s, sid, r, n]) => (*s, *sid, Some(*r), "0", *n),
                    (true, [s, sid, h, n]) => (*s, *sid, None, *h, *n),
                    (true, [s, sid, r, h, n]) => (*s, *sid, Some(*r), *h, *n),
                    _ => panic!("{}: malformed {line:?}", self.addr),
                };
                let total: usize = total.parse().expect("size");
                let hdr: usize = hdr.parse().expect("header size");
                let body = self.read_exact_payload(total, timeout);
                Some(Op::Msg(NatsMsg {
                    subject: subject.to_string(),
                    sid: sid.parse().expect("sid"),
                    reply: reply.map(str::to_string),
                    headers: headers.then(|| body[..hdr].to_vec()),
                    payload: body[hdr..].to_vec(),
                }))
            }
            "-ERR" => panic!("{}: {line}", self.addr),
            _ => panic!("{}: unexpected {line:?}", self.addr),
        }
    }

    /// Reads `n` payload bytes and their `\r\n` (the line before them was
    /// complete, so they follow at once: a timeout here fails the test).
    fn read_exact_payload(&mut self, n: usize, timeout: Duration) -> Vec<u8> {
        while self.buf.len() < n + 2 {
            if !self.fill(timeout.max(IO_TIMEOUT)) {
                panic!("{}: payload of {n} bytes cut short", self.addr);
            }
        }
        let body = self.buf[..n].to_vec();
        assert_eq!(&self.buf[n..n + 2], b"\r\n", "{}: payload end", self.addr);
        self.buf.drain(..n + 2);
        body
    }

    /// One `\r\n`-terminated line (without it); `None` on timeout.
    fn read_line(&mut self, timeout: Duration) -> Option<String> {
        loop {
            if let Some(pos) = memchr::memmem::find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return Some(line);
            }
            if !self.fill(timeout) {
                return None;
            }
        }
    }

    /// Reads more bytes; `false` on timeout, panics at end of stream.
    fn fill(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut chunk = [0u8; 64 * 1024];
        let r = self.stream.read(&mut chunk);
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        match r {
            Ok(0) => panic!("{}: connection closed by the server", self.addr),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                false
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(e) => panic!("{}: read: {e}", self.addr),
        }
    }

    /// Closes the connection.
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
