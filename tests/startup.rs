//! Starting and stopping the real `tern` binary: readiness, a second tern on
//! the same port, SIGTERM/SIGINT with the summary line, JSON logs, the
//! metrics endpoint, and the locked-memory limit as an unprivileged user.
//!
//! Every process is started with piped stderr, watched until a deadline,
//! and killed by its PID if it outlives the test (see [`Tern`]'s `Drop`).
//!
//! The locked-memory tests need a user without CAP_IPC_LOCK (root may lock
//! memory past `RLIMIT_MEMLOCK`). Run as root, they drop to `nobody`
//! (uid/gid 65534) with `setpriv`, after setting the limit as root with
//! `ulimit -l`; run as another user they lower their own limit. When
//! neither is possible they print why and pass without checking.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::process::Tern;
use common::{http, with_free_nats_port, Client};

/// The binary's default `--terminator`, for [`Client`].
const TERM: &[u8] = b"\n";

/// The unprivileged user the locked-memory tests run as when started by
/// root: `nobody` on every common distribution.
const NOBODY: u32 = 65534;

/// A user (and group) id no account has, for a test that needs a
/// locked-memory budget of its own: the kernel counts that limit per
/// user, and the other tests run as [`NOBODY`] at the same time.
const BUDGET_USER: u32 = 64_999;

fn tern_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.args(with_free_nats_port(args));
    cmd
}

/// Two shards if this process may use two CPUs, else one.
fn shards() -> &'static str {
    if tern::sys::allowed_cpus().len() >= 2 {
        "2"
    } else {
        "1"
    }
}

/// Subscribes, publishes to itself, and checks the relay answers.
fn exchange(addr: SocketAddr) {
    let mut c = Client::connect(addr, TERM);
    c.sub("greet");
    c.publish("greet", "hello");
    c.send("PING");
    c.expect_msg("greet", "hello");
    c.expect("PONG");
}

#[test]
fn sigterm_flushes_and_exits_0_with_a_summary() {
    let mut t = Tern::spawn(tern_cmd(&["--listen", "127.0.0.1:0", "--shards", shards()]));
    let addr = t.wait_started();
    assert!(
        t.log
            .last()
            .unwrap()
            .contains(&format!("{} shard", shards())),
        "{:?}",
        t.log
    );
    exchange(addr);
    t.signal(libc::SIGTERM);
    let (status, log) = t.wait_exit();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("SIGTERM received"), "{log}");
    let summary = log
        .lines()
        .find(|l| l.contains("tern stopped:"))
        .unwrap_or_else(|| panic!("no summary:\n{log}"));
    assert!(
        summary.contains("served 1 connection, 1 message in, 1 message out, 0 slow consumers"),
        "{summary}"
    );
}

#[test]
fn a_dead_shard_makes_the_process_exit_non_zero_saying_why() {
    let mut t = Tern::spawn(tern_cmd(&[
        "--listen",
        "127.0.0.1:0",
        "--shards",
        shards(),
        "--test-panic-frame",
    ]));
    let addr = t.wait_started();
    let mut c = Client::connect(addr, TERM);
    c.send(tern::shard::core::PANIC_FRAME);
    let (status, log) = t.wait_exit();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains(" died: panicked: shard "), "{log}");
    assert!(log.contains("tern: exiting with status 1: shard "), "{log}");
    assert!(
        !log.contains("tern stopped"),
        "no clean-stop summary: {log}"
    );
}

#[test]
fn sigint_stops_an_idle_relay_with_exit_0() {
    let mut t = Tern::spawn(tern_cmd(&["--listen", "127.0.0.1:0", "--shards", "1"]));
    t.wait_started();
    t.signal(libc::SIGINT);
    let (status, log) = t.wait_exit();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("SIGINT received"), "{log}");
    assert!(
        log.contains(
            "tern stopped: served 0 connections, 0 messages in, 0 messages out, 0 slow consumers"
        ),
        "{log}"
    );
}

#[test]
fn a_second_tern_on_the_same_port_is_refused() {
    let mut first = Tern::spawn(tern_cmd(&["--listen", "127.0.0.1:0", "--shards", "1"]));
    let addr = first.wait_started();

    // The relay's own listeners set SO_REUSEPORT: without the probe the
    // second tern would start and take half of the first one's clients.
    let second = Tern::spawn(tern_cmd(&["--listen", &addr.to_string(), "--shards", "1"]));
    let (status, log) = second.wait_exit();
    assert_eq!(status.code(), Some(2), "{log}");
    assert_eq!(
        log,
        format!("tern: error: address {addr} is already in use (another tern or another program is listening on it): stop that process or choose another --listen address")
    );

    // The first one is unaffected.
    exchange(addr);
    first.signal(libc::SIGTERM);
    let (status, log) = first.wait_exit();
    assert_eq!(status.code(), Some(0), "{log}");
}

/// The NATS address in "NATS on ADDR" of a start-up line.
fn nats_addr(line: &str) -> SocketAddr {
    let rest = line
        .split("NATS on ")
        .nth(1)
        .unwrap_or_else(|| panic!("no NATS address in {line:?}"));
    let addr = rest.split([';', ' ', ',']).next().unwrap();
    addr.parse()
        .unwrap_or_else(|e| panic!("bad address {addr:?} in {line:?}: {e}"))
}

#[test]
fn a_restart_on_the_same_ports_right_after_a_stop_starts() {
    // The old relay's listeners outlive it by a few milliseconds; a start
    // in that window used to fail ("already in use", exit 2) about one
    // time in four. Several rounds, each started the moment the last one
    // has exited.
    let mut t = Tern::spawn(tern_cmd(&["--listen", "127.0.0.1:0", "--shards", "1"]));
    let addr = t.wait_started();
    let nats = nats_addr(t.log.last().unwrap());
    let (listen, nats) = (addr.to_string(), nats.to_string());
    for round in 0..5 {
        exchange(addr);
        t.signal(libc::SIGTERM);
        let (status, log) = t.wait_exit();
        assert_eq!(status.code(), Some(0), "round {round}: {log}");
        t = Tern::spawn(tern_cmd(&[
            "--listen",
            &listen,
            "--nats-listen",
            &nats,
            "--shards",
            "1",
        ]));
        assert_eq!(t.wait_started(), addr, "round {round}");
    }
    exchange(addr);
    t.signal(libc::SIGTERM);
    let (status, log) = t.wait_exit();
    assert_eq!(status.code(), Some(0), "{log}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut t = Tern::spawn(tern_cmd(&[
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--log-format",
        "json",
    ]));
    let addr = t.wait_started();
    exchange(addr);
    t.signal(libc::SIGTERM);
    let (status, log) = t.wait_exit();
    assert_eq!(status.code(), Some(0), "{log}");
    // Lines from tracing (everything the binary and glommio log) are JSON.
    let json: Vec<&str> = log.lines().filter(|l| l.starts_with('{')).collect();
    assert!(json.iter().all(|l| l.ends_with('}')), "{log}");
    assert!(
        json.iter()
            .any(|l| l.contains(r#""level":"INFO""#) && l.contains("started")),
        "{log}"
    );
    assert!(
        json.iter()
            .any(|l| l.contains("tern stopped: served 1 connection")),
        "{log}"
    );
}

#[test]
fn debug_logs_each_connection_opened_and_closed() {
    let mut t = Tern::spawn(tern_cmd(&[
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--log-level",
        "debug",
        "--log-format",
        "json",
    ]));
    let addr = t.wait_started();
    let mut c = Client::connect(addr, TERM);
    let peer = c.stream().local_addr().unwrap().to_string();
    c.ping();
    // Closed by the client, or at the latest by the stop: logged either way.
    drop(c);
    t.signal(libc::SIGTERM);
    let (status, log) = t.wait_exit();
    assert_eq!(status.code(), Some(0), "{log}");
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of_peer = |message: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter(|e| e["fields"]["message"] == message && e["fields"]["peer"] == peer.as_str())
            .collect()
    };
    let opened = of_peer("connection opened");
    assert_eq!(opened.len(), 1, "{log}");
    assert_eq!(opened[0]["level"], "DEBUG");
    assert_eq!(opened[0]["fields"]["protocol"], "line");
    let closed = of_peer("connection closed");
    assert_eq!(closed.len(), 1, "{log}");
    assert_eq!(closed[0]["fields"]["msgs_in"], 0);
}

// ------------------------------------------------------- metrics

/// The address in "metrics http://ADDR/metrics" of a start-up line.
fn metrics_addr(line: &str) -> SocketAddr {
    let rest = line
        .split("metrics http://")
        .nth(1)
        .unwrap_or_else(|| panic!("no metrics address in {line:?}"));
    let addr = rest.split('/').next().unwrap();
    addr.parse()
        .unwrap_or_else(|e| panic!("bad address {addr:?} in {line:?}: {e}"))
}

/// The value of the sample `series` (`name{labels}`) in a `/metrics` page.
fn sample(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} missing:\n{page}"))
        .parse()
        .unwrap()
}

#[test]
fn the_binary_serves_metrics_and_logs_slow_consumers_and_refusals_as_json() {
    let mut t = Tern::spawn(tern_cmd(&[
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--metrics",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--max-pending",
        "64KiB",
        "--max-connections",
        "2",
    ]));
    let addr = t.wait_started();
    let metrics = metrics_addr(t.log.last().unwrap());
    let health = http::get(metrics, "/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    exchange(addr);
    let scrape = http::get(metrics, "/metrics");
    let page = scrape.body;
    assert_eq!(scrape.status, 200, "{page}");
    assert_eq!(sample(&page, r#"tern_messages_in_total{shard="0"}"#), 1);
    assert_eq!(sample(&page, r#"tern_messages_out_total{shard="0"}"#), 1);
    assert!(page.contains(&format!(
        "tern_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));

    // A subscriber that never reads, with a tiny receive window.
    let mut slow = Client::tiny_window(addr, TERM);
    slow.sub("flood");
    let slow_peer = slow.stream().local_addr().unwrap().to_string();

    let mut publisher = Client::connect(addr, TERM);
    let payload = "x".repeat(1024);
    let batch = format!("PUB flood {payload}\n").repeat(16) + "PING\n";
    let mut sent = 0;
    loop {
        publisher.send_raw(batch.as_bytes());
        publisher.expect("PONG");
        sent += 16;
        let page = http::get(metrics, "/metrics").body;
        if sample(&page, r#"tern_slow_consumers_total{shard="0"}"#) == 1 {
            break;
        }
        assert!(sent < 100_000, "no slow consumer after {sent} messages");
    }
    // The relay closes it; then its slot is free again.
    slow.read_until_closed();

    // --max-connections 2: the publisher and one more fill the relay...
    let mut second = Client::connect(addr, TERM);
    second.ping();
    // ...and a third is refused: told why, then closed.
    let mut refused = Client::connect(addr, TERM);
    let refused_peer = refused.stream().local_addr().unwrap().to_string();
    assert_eq!(
        refused.read_until_closed(),
        vec![b"-ERR too many connections".to_vec()],
        "the third connection is refused with a reason"
    );
    let page = http::get(metrics, "/metrics").body;
    assert_eq!(
        sample(&page, r#"tern_connections_rejected_total{shard="0"}"#),
        1
    );

    t.signal(libc::SIGTERM);
    let (status, log) = t.wait_exit();
    assert_eq!(status.code(), Some(0), "{log}");
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let message = |e: &serde_json::Value| e["fields"]["message"].as_str().unwrap_or("").to_string();
    let started: Vec<_> = events
        .iter()
        .filter(|e| message(e).contains(" started: "))
        .collect();
    assert_eq!(started.len(), 1, "{log}");
    assert!(message(started[0]).contains(&format!("metrics http://{metrics}/metrics")));

    // One line per slow consumer, naming it; one per refused connection.
    let slow_lines: Vec<_> = events
        .iter()
        .filter(|e| message(e) == "slow consumer closed")
        .collect();
    assert_eq!(slow_lines.len(), 1, "{log}");
    assert_eq!(slow_lines[0]["level"], "WARN");
    assert_eq!(slow_lines[0]["fields"]["peer"], slow_peer.as_str());
    assert_eq!(slow_lines[0]["fields"]["limit"], 65536);
    // The size that crossed the limit, not what was left once the queue
    // was cut back to its farewell.
    let pending = slow_lines[0]["fields"]["pending"].as_u64().unwrap();
    assert!(pending > 65536, "pending={pending}: {log}");
    let refusals: Vec<_> = events
        .iter()
        .filter(|e| message(e).starts_with("connection refused"))
        .collect();
    assert_eq!(refusals.len(), 1, "{log}");
    assert_eq!(refusals[0]["fields"]["peer"], refused_peer.as_str());
    // Nothing is logged per message: a few hundred went through.
    assert!(events.len() < 10, "{log}");
    assert!(
        log.contains("1 slow consumer"),
        "the summary counts it: {log}"
    );
}

// ------------------------------------------------------- locked memory

/// How to run tern without CAP_IPC_LOCK and with a given `ulimit -l`.
enum Unprivileged {
    /// We are not root: lower our own limit.
    Direct,
    /// We are root: set the limit, then drop to `nobody` with setpriv,
    /// running a copy of the binary that `nobody` can reach.
    Setpriv { copy: BinCopy },
}

/// A copy of the tern binary in a world-readable temporary directory
/// (the build directory may be under a private home), removed on drop.
struct BinCopy {
    dir: PathBuf,
    bin: PathBuf,
}

impl BinCopy {
    fn new(tag: &str) -> std::io::Result<BinCopy> {
        let dir = std::env::temp_dir().join(format!("tern-startup-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let bin = dir.join("tern");
        std::fs::copy(env!("CARGO_BIN_EXE_tern"), &bin)?;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
        Ok(BinCopy { dir, bin })
    }
}

impl Drop for BinCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// [`unprivileged`], with a locked-memory limit of 8 MiB within reach:
/// `None` (after saying why the test is skipped) if either is missing.
fn unprivileged_with_8_mib(tag: &str) -> Option<Unprivileged> {
    let how = match unprivileged(tag) {
        Ok(how) => how,
        Err(why) => {
            println!("skipped: cannot run tern unprivileged: {why}");
            return None;
        }
    };
    if matches!(how, Unprivileged::Direct) && hard_memlock_kib() < 8192 {
        println!(
            "skipped: the hard locked-memory limit ({} KiB) is below 8 MiB and only root can raise it",
            hard_memlock_kib()
        );
        return None;
    }
    Some(how)
}

/// How this test process can run tern unprivileged, or why it cannot.
fn unprivileged(tag: &str) -> Result<Unprivileged, String> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(Unprivileged::Direct);
    }
    let setpriv = Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !setpriv.is_ok_and(|s| s.success()) {
        return Err("running as root and `setpriv` (util-linux) is not installed".into());
    }
    let copy =
        BinCopy::new(tag).map_err(|e| format!("cannot copy the binary for `nobody`: {e}"))?;
    if !dir_reachable_by_others(&copy.dir) {
        return Err(format!(
            "{} is not reachable by other users",
            copy.dir.display()
        ));
    }
    Ok(Unprivileged::Setpriv { copy })
}

/// Whether every directory above `dir` lets other users through.
fn dir_reachable_by_others(dir: &Path) -> bool {
    dir.ancestors()
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

impl Unprivileged {
    /// `tern args` with `ulimit -l limit_kib`, as a user without
    /// CAP_IPC_LOCK ([`NOBODY`] when started by root).
    fn command(&self, limit_kib: u64, args: &[&str]) -> Command {
        self.command_as(NOBODY, limit_kib, args)
    }

    /// [`Unprivileged::command`], as user and group `uid` when started by
    /// root (else as ourselves). `sh` and `setpriv` both `exec`, so the
    /// PID is tern's.
    fn command_as(&self, uid: u32, limit_kib: u64, args: &[&str]) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"ulimit -l "$0" && exec "$@""#)
            .arg(limit_kib.to_string());
        match self {
            Unprivileged::Direct => {
                cmd.arg(env!("CARGO_BIN_EXE_tern"));
            }
            Unprivileged::Setpriv { copy } => {
                cmd.arg("setpriv")
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(&copy.bin);
            }
        }
        cmd.args(with_free_nats_port(args));
        cmd
    }
}

/// The hard `RLIMIT_MEMLOCK` of this process in KiB (`u64::MAX` =
/// unlimited).
fn hard_memlock_kib() -> u64 {
    let hard = tern::sys::limits(tern::sys::Resource::LockedMemory)
        .expect("getrlimit")
        .hard;
    if hard == u64::MAX {
        u64::MAX
    } else {
        hard / 1024
    }
}

#[test]
fn a_locked_memory_limit_too_low_is_explained_to_an_unprivileged_user() {
    let how = match unprivileged("low") {
        Ok(how) => how,
        Err(why) => {
            println!("skipped: cannot run tern unprivileged: {why}");
            return;
        }
    };
    let t = Tern::spawn(how.command(64, &["--listen", "127.0.0.1:0", "--shards", "1"]));
    let (status, log) = t.wait_exit();
    assert_eq!(status.code(), Some(2), "{log}");
    assert_eq!(log.lines().count(), 1, "{log}");
    for part in [
        "tern: error: locked-memory limit too low",
        "RLIMIT_MEMLOCK (`ulimit -l`) is 64 KiB",
        "1 shard with --io-memory 512 KiB needs 1616 KiB",
        "ulimit -l 1616",
        "LimitMEMLOCK=1616K",
        "/etc/security/limits.conf",
    ] {
        assert!(log.contains(part), "{part:?} missing from {log}");
    }
    // Not glommio's own words.
    assert!(!log.contains("MemLockLimit"), "{log}");

    // --check-config says the same, with the figures.
    let t = Tern::spawn(how.command(
        64,
        &["--check-config", "--listen", "127.0.0.1:0", "--shards", "1"],
    ));
    let (status, log) = t.wait_exit();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("tern: error: locked-memory limit too low"),
        "{log}"
    );
}

#[test]
fn two_shards_fit_in_8_mib_of_locked_memory_by_default() {
    if tern::sys::allowed_cpus().len() < 2 {
        println!("skipped: this process may use only one CPU, two shards need two");
        return;
    }
    let Some(how) = unprivileged_with_8_mib("8mib") else {
        return;
    };
    let mut t = Tern::spawn(how.command(8192, &["--listen", "127.0.0.1:0", "--shards", "2"]));
    let addr = t.wait_started();
    let mut c = Client::connect(addr, TERM);
    c.ping();
    t.signal(libc::SIGTERM);
    let (status, log) = t.wait_exit();
    assert_eq!(status.code(), Some(0), "{log}");
    // (glommio may still warn that it could not register its buffers if
    // other processes of the same user hold locked memory: the kernel's
    // count is per user. That is not an error, and not checked here.)
    assert!(
        !log.contains("MemLockLimit") && !log.contains("tern: error"),
        "{log}"
    );
}

#[test]
fn buffers_refused_by_a_budget_others_hold_are_said_in_one_line() {
    let Some(how) = unprivileged_with_8_mib("shared") else {
        return;
    };
    // The first tern holds about 3 MiB of the user's budget (3 rings x
    // 1 MiB of buffers, and the rings)...
    let mut holder = Tern::spawn(how.command_as(
        BUDGET_USER,
        8192,
        &[
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
            "--io-memory",
            "1MiB",
        ],
    ));
    holder.wait_started();
    // ...so the second one, whose own limit of 3450 KiB is twice what it
    // needs (1616 KiB), finds room for its rings but not for its 512 KiB
    // of buffers (measured here: that is so for limits from about 3200 to
    // 3700 KiB): glommio runs it without them, and tern says so.
    let mut t = Tern::spawn(how.command_as(
        BUDGET_USER,
        3450,
        &["--listen", "127.0.0.1:0", "--shards", "1"],
    ));
    let addr = t.wait_started();
    exchange(addr);
    t.signal(libc::SIGTERM);
    let (status, log) = t.wait_exit();
    assert_eq!(status.code(), Some(0), "{log}");
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("could not register the shard's buffers"))
        .collect();
    assert_eq!(said.len(), 1, "{log}");
    for part in [
        "WARN",
        "(Cannot allocate memory (os error 12))",
        "RLIMIT_MEMLOCK, 3450 KiB",
        "counted per user",
        "runs without registered buffers",
        "DynamicUser=yes",
    ] {
        assert!(said[0].contains(part), "{part:?} missing from {}", said[0]);
    }
    // Not glommio's multi-line dump.
    assert!(!log.contains("Os {") && !log.contains("Skipping"), "{log}");
    holder.signal(libc::SIGTERM);
    let (status, log) = holder.wait_exit();
    assert_eq!(status.code(), Some(0), "{log}");
}

// ------------------------------------------------------- io_uring

/// Makes `cmd`'s process run under a seccomp filter that fails
/// `io_uring_setup` with EPERM, as Docker's default profile does, and
/// allows every other system call.
fn deny_io_uring(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;

    fn stmt(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }
    // (The system call number is compared without checking the
    // architecture field: enough for a test on the native ABI.)
    let filter = [
        // A = seccomp_data.nr
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        // if A == io_uring_setup: next, else skip one
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let install = move || {
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integer arguments
        // only; PR_SET_SECCOMP reads the `sock_fprog` and the filter array
        // it points to, both alive for the call. Both are plain system
        // calls, safe between fork and exec.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure only makes the two system calls above (no
    // allocation, no locks), which is what `pre_exec` requires of code
    // running in the forked child.
    unsafe { cmd.pre_exec(install) };
}

#[test]
fn io_uring_blocked_by_seccomp_is_explained() {
    let mut cmd = tern_cmd(&["--listen", "127.0.0.1:0", "--shards", "1"]);
    deny_io_uring(&mut cmd);
    let (status, log) = Tern::spawn(cmd).wait_exit();
    assert_eq!(status.code(), Some(2), "{log}");
    assert_eq!(log.lines().count(), 1, "{log}");
    for part in [
        "tern: error: io_uring is not available: io_uring_setup failed: Operation not permitted",
        "seccomp filter",
        "io_uring_setup, io_uring_enter and io_uring_register",
    ] {
        assert!(log.contains(part), "{part:?} missing from {log}");
    }
    // Not glommio's words.
    assert!(
        !log.contains("Romulus") && !log.contains("too old"),
        "{log}"
    );

    let mut cmd = tern_cmd(&["--check-config", "--listen", "127.0.0.1:0", "--shards", "1"]);
    deny_io_uring(&mut cmd);
    let (status, log) = Tern::spawn(cmd).wait_exit();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("tern: error: io_uring is not available"),
        "{log}"
    );
}

/// The addresses logged as "ADDR (shard N only)", by shard.
fn shard_addrs(line: &str) -> Vec<SocketAddr> {
    line.split(" (shard ")
        .zip(line.split(" (shard ").skip(1))
        .filter(|(_, after)| {
            after
                .split_once(' ')
                .is_some_and(|(_, r)| r.starts_with("only)"))
        })
        .map(|(before, _)| {
            let addr = before.rsplit(' ').next().unwrap_or_default();
            addr.parse()
                .unwrap_or_else(|e| panic!("bad address {addr:?} in {line:?}: {e}"))
        })
        .collect()
}

#[test]
fn shard_listen_pins_clients_to_shards() {
    if shards() != "2" {
        eprintln!("skipped: needs two CPUs to run two shards");
        return;
    }
    let mut t = Tern::spawn(tern_cmd(&[
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--shard-listen",
        "127.0.0.1:0",
    ]));
    t.wait_started();
    let line = t.log.last().unwrap().clone();
    let pinned = shard_addrs(&line);
    assert_eq!(pinned.len(), 2, "{line}");
    // A subscriber on shard 1 gets what a publisher on shard 0 sends.
    let mut sub = Client::connect(pinned[1], TERM);
    sub.sub("pinned.x");
    let mut publisher = Client::connect(pinned[0], TERM);
    publisher.publish("pinned.x", "across");
    publisher.ping();
    sub.expect_msg("pinned.x", "across");
    t.signal(libc::SIGTERM);
    let (status, log) = t.wait_exit();
    assert_eq!(status.code(), Some(0), "{log}");
}
