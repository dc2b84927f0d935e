//! The `tern` command line, end to end over the real binary: `--help`,
//! flag errors, and `--check-config`.
//!
//! Every run here either stops at the flags or checks the environment
//! without serving, so each finishes on its own; a run that does not within
//! [`DEADLINE`] is killed and the test fails.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Longest any single run may take before it is killed.
const DEADLINE: Duration = Duration::from_secs(20);

/// Every flag whose name is a contract: scripts, the systemd unit and the
/// docs use them, so none may be renamed.
const CONTRACT_FLAGS: &[&str] = &[
    "--listen",
    "--shards",
    "--cores",
    "--terminator",
    "--max-frame",
    "--max-pending",
    "--max-subs",
    "--max-connections",
    "--spin-before-park",
    "--io-memory",
    "--log-level",
    "--log-format",
    "--metrics",
    "--check-config",
];

/// Runs `tern args...` to completion (killed by PID past [`DEADLINE`]).
fn tern(args: &[&str]) -> Output {
    tern_env(args, &[])
}

/// [`tern`] with environment variables (and without the caller's
/// `RUST_LOG`).
fn tern_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let args = common::with_free_nats_port(args);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(&args)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tern");
    // Drain both pipes on their own threads so a chatty child never blocks.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tern {args:?} still running after {DEADLINE:?}: killed");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the start-up error contract: exit status 2 and exactly one line
/// on stderr, `tern: error: ...`, that contains every one of `parts`.
/// Returns that line.
fn assert_startup_error(args: &[&str], parts: &[&str]) -> String {
    let o = tern(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "tern {args:?}: {err}");
    assert_eq!(
        err.lines().count(),
        1,
        "tern {args:?}: not one line: {err:?}"
    );
    let line = err.trim_end().to_string();
    assert!(line.starts_with("tern: error: "), "{line}");
    for part in parts {
        assert!(
            line.contains(part),
            "tern {args:?}: {part:?} missing from {line:?}"
        );
    }
    line
}

/// A CPU number this process may not use.
fn unavailable_cpu() -> usize {
    let allowed = tern::sys::allowed_cpus();
    let cpu = 99.max(allowed.iter().max().unwrap() + 1);
    assert!(!allowed.contains(&cpu));
    cpu
}

#[test]
fn help_explains_every_contract_flag_in_one_line() {
    let o = tern(&["--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let help = stdout(&o);
    for flag in CONTRACT_FLAGS {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{flag} ")) || l.trim() == *flag)
            .unwrap_or_else(|| panic!("{flag} missing from --help:\n{help}"));
        // The explanation is on the flag's own line, not on the next ones.
        let words = line.split_whitespace().count();
        assert!(words >= 4, "{flag} has no one-line explanation: {line:?}");
    }
    for default in [
        "127.0.0.1:7000",
        r"\n",
        "1048576",
        "67108864",
        "10000",
        "100000, or what the open-files limit allows",
    ] {
        assert!(
            help.contains(&format!("[default: {default}]")),
            "default {default} missing:\n{help}"
        );
    }
}

#[test]
fn version_prints_and_exits_0() {
    let o = tern(&["--version"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn invalid_terminators_are_refused_in_one_line() {
    assert_startup_error(&["--terminator", r"\q"], &["--terminator", r"\q", "escape"]);
    let seventeen = "x".repeat(17);
    assert_startup_error(
        &["--terminator", &seventeen],
        &["--terminator", "17 bytes", "16"],
    );
    assert_startup_error(&["--terminator", "a b"], &["--terminator", "space"]);
    assert_startup_error(&["--terminator", ""], &["--terminator", "empty"]);
    assert_startup_error(&["--terminator", r"\x1"], &["--terminator", "hex"]);
}

#[test]
fn invalid_sizes_are_refused_in_one_line() {
    assert_startup_error(&["--max-frame", "12XB"], &["--max-frame", "12XB", "64KiB"]);
    assert_startup_error(&["--max-pending", "1.5MiB"], &["--max-pending", "1.5MiB"]);
    assert_startup_error(&["--io-memory", "-1"], &["--io-memory"]);
    assert_startup_error(&["--max-subs", "0"], &["--max-subs", "at least 1"]);
    assert_startup_error(&["--max-connections", "many"], &["--max-connections"]);
    assert_startup_error(
        &["--spin-before-park", "50x"],
        &["--spin-before-park", "50us"],
    );
}

#[test]
fn usage_errors_exit_2_in_one_line() {
    assert_startup_error(&["--no-such-flag"], &["--no-such-flag", "--help"]);
    assert_startup_error(&["--shards", "2", "--cores", "0"], &["--shards", "--cores"]);
    assert_startup_error(&["--shards", "0"], &["--shards"]);
    assert_startup_error(
        &["--listen", "localhost"],
        &["--listen", "`localhost`", "HOST:PORT"],
    );
    assert_startup_error(&["--log-format", "xml"], &["--log-format", "xml"]);
    assert_startup_error(&["--log-level", "loud=["], &["--log-level"]);
}

#[test]
fn host_names_are_resolved_for_every_address_flag() {
    let o = tern(&[
        "--check-config",
        "--listen",
        "localhost:0",
        "--nats-listen",
        "localhost:0",
        "--metrics",
        "localhost:0",
        "--shard-listen",
        "localhost:0",
        "--shards",
        "1",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));
    // Every address localhost has (127.0.0.1, and [::1] where it is
    // configured) gets a listen line; --metrics takes the first.
    let localhost = tern::units::resolve_addrs("localhost:0").unwrap();
    for addr in &localhost {
        assert!(
            out.lines()
                .any(|l| l.starts_with("listen ") && l.contains(&format!("{addr} (free)"))),
            "{addr} missing:\n{out}"
        );
    }
    let listen_lines = out.lines().filter(|l| l.starts_with("listen ")).count();
    assert_eq!(listen_lines, localhost.len(), "{out}");
    assert!(
        out.contains(&format!("http://{}/metrics (free): ok", localhost[0])),
        "{out}"
    );
    assert_startup_error(
        &["--listen", "nowhere.invalid:7000"],
        &["--listen", "cannot resolve `nowhere.invalid:7000`"],
    );
    assert_startup_error(
        &["--nats-listen", "localhost"],
        &["--nats-listen", "HOST:PORT", "or off"],
    );
}

#[test]
fn shard_counts_say_the_bounds() {
    assert_startup_error(&["--shards", "0"], &["--shards", "at least 1 shard"]);
    assert_startup_error(
        &["--shards", "99999999999999999999999"],
        &["--shards", "at most one shard per CPU"],
    );
    assert_startup_error(&["--shards", "two"], &["--shards", "whole number"]);
    let o = tern(&["--check-config", "--shards", "0"]);
    assert!(!stderr(&o).contains("4294967295"), "{}", stderr(&o));
}

#[test]
fn less_io_memory_than_glommio_allocates_is_refused() {
    assert_startup_error(
        &["--io-memory", "1KiB", "--listen", "127.0.0.1:0"],
        &[
            "--io-memory 1 KiB is below glommio's minimum of 64 KiB",
            "64KiB",
        ],
    );
    let o = tern(&[
        "--check-config",
        "--io-memory",
        "1KiB",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("io-memory          FAILED: --io-memory 1 KiB"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn an_unknown_log_level_is_refused_not_silently_logging_nothing() {
    // `warning` is valid EnvFilter syntax (a module named "warning"), which
    // would log nothing at all: refused, also by --check-config.
    for args in [
        &["--log-level", "warning"][..],
        &["--check-config", "--log-level", "warning"],
    ] {
        assert_startup_error(
            args,
            &[
                "--log-level",
                "`warning` is not a log level",
                "error, warn, info, debug, trace or off",
            ],
        );
    }
    assert_startup_error(
        &["--log-level", "info,tern=verbose"],
        &["`verbose` in `tern=verbose` is not a log level"],
    );
    let o = tern_env(
        &["--check-config", "--listen", "127.0.0.1:0", "--shards", "1"],
        &[("RUST_LOG", "warning")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("tern: error: invalid RUST_LOG: `warning` is not a log level"),
        "{}",
        stderr(&o)
    );
    let o = tern(&[
        "--check-config",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--log-level",
        "tern=debug,glommio=warn",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn an_invalid_rust_log_is_refused_and_log_level_overrides_it() {
    let run = |extra: &[&str]| {
        let mut args = vec!["--check-config", "--listen", "127.0.0.1:0", "--shards", "1"];
        args.extend_from_slice(extra);
        tern_env(&args, &[("RUST_LOG", "loud=[")])
    };
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("tern: error: invalid RUST_LOG"),
        "{}",
        stderr(&o)
    );
    let o = run(&["--log-level", "warn"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn cpu_outside_the_affinity_mask_is_named() {
    let cpu = unavailable_cpu().to_string();
    let allowed = tern::units::format_cpu_list(&tern::sys::allowed_cpus());
    assert_startup_error(
        &["--cores", &cpu, "--listen", "127.0.0.1:0"],
        &[&format!("CPU {cpu} is not available"), &allowed, "--cores"],
    );
    let too_many = (tern::sys::allowed_cpus().len() + 1).to_string();
    assert_startup_error(
        &["--shards", &too_many, "--listen", "127.0.0.1:0"],
        &[&format!("--shards {too_many}"), "CPUs are available"],
    );
}

#[test]
fn address_held_by_another_program_is_refused() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    assert_startup_error(
        &["--listen", &addr, "--shards", "1"],
        &[&format!("address {addr} is already in use"), "--listen"],
    );
    // A second --listen that is taken is found too, not only the first.
    assert_startup_error(
        &[
            "--listen",
            "127.0.0.1:0",
            "--listen",
            &addr,
            "--shards",
            "1",
        ],
        &[&addr, "already in use"],
    );
}

#[test]
fn check_config_reports_what_it_found_and_exits_0() {
    let o = tern(&[
        "--check-config",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--terminator",
        r"\r\n",
        "--spin-before-park",
        "5",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));
    for part in [
        // A bare duration is seconds, as in tern-loadgen.
        "spin-before-park   5s",
        "shards",
        "listen",
        "127.0.0.1:0",
        r"\r\n",
        "max-frame",
        "1048576",
        "max-pending",
        "max-subs",
        "max-connections",
        "io_uring",
        "locked memory",
        "needed",
        "configuration ok",
    ] {
        assert!(out.contains(part), "{part:?} missing:\n{out}");
    }
    assert!(!out.contains("FAILED"), "{out}");
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

#[test]
fn check_config_names_a_missing_cpu_and_exits_2() {
    let cpu = unavailable_cpu().to_string();
    let o = tern(&["--check-config", "--cores", &cpu, "--listen", "127.0.0.1:0"]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    let wanted = format!("CPU {cpu} is not available to this process");
    assert!(out.contains(&format!("FAILED: {wanted}")), "{out}");
    assert!(out.contains("configuration has 1 problem"), "{out}");
    // The other checks still ran and are reported.
    assert!(
        out.contains("io_uring") && out.contains("locked memory"),
        "{out}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("tern: error: {wanted}")), "{err}");
}

#[test]
fn check_config_reports_every_problem() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let cpu = unavailable_cpu().to_string();
    let o = tern(&["--check-config", "--cores", &cpu, "--listen", &addr]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(out.contains("configuration has 2 problem"), "{out}");
    assert!(
        err.contains(&format!("CPU {cpu}")) && err.contains("already in use"),
        "{err}"
    );
    assert!(err.lines().all(|l| l.starts_with("tern: error: ")), "{err}");
}

#[test]
fn a_metrics_address_that_cannot_be_bound_is_one_line_and_exit_2() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    // Refused before any shard starts.
    assert_startup_error(
        &[
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
            "--metrics",
            &addr,
        ],
        &[&format!("cannot serve metrics on {addr}"), "--metrics"],
    );
    assert_startup_error(
        &[
            "--listen",
            "127.0.0.1:7000",
            "--shards",
            "1",
            "--metrics",
            "127.0.0.1:7000",
        ],
        &["--metrics 127.0.0.1:7000 is also a --listen address"],
    );
    assert_startup_error(&["--metrics", "localhost"], &["--metrics", "localhost"]);
}

#[test]
fn check_config_probes_the_metrics_address() {
    let base = ["--check-config", "--listen", "127.0.0.1:0", "--shards", "1"];
    let o = tern(&base);
    assert!(
        stdout(&o).contains("metrics            off"),
        "{}",
        stdout(&o)
    );

    let mut args = base.to_vec();
    args.extend(["--metrics", "127.0.0.1:0"]);
    let o = tern(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("metrics            http://127.0.0.1:0/metrics (free): ok"),
        "{}",
        stdout(&o)
    );

    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let mut args = base.to_vec();
    args.extend(["--metrics", &addr]);
    let o = tern(&args);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "metrics            FAILED: cannot serve metrics on {addr}"
        )),
        "{out}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn check_config_reports_the_open_files_limit() {
    let o = tern(&[
        "--check-config",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--max-connections",
        "10",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("open files"))
        .unwrap_or_else(|| panic!("no open files line:\n{out}"));
    assert!(line.contains("needed for --max-connections 10"), "{line}");
    // A limit below what --max-connections needs is a warning, not an
    // error: the relay still serves as many clients as it can.
    let o = tern(&[
        "--check-config",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--max-connections",
        "4000000000",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));
    assert!(out.contains("WARNING: clients past the limit"), "{out}");
    assert!(out.contains("configuration ok, with 1 warning"), "{out}");
}

// ---------------------------------------------------------- --config FILE

/// Writes `text` to a config file of the test's own.
fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("tern-cli-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_config_files_keys_are_flags_and_the_command_line_wins() {
    let path = config_file(
        "wins",
        "listen = \"127.0.0.1:0\"\nmax_frame = \"64KiB\"\nmax_subs = 7\nshards = 1\n",
    );
    let p = path.to_str().unwrap();
    let o = tern(&["--config", p, "--max-subs", "9", "--check-config"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("max-frame          65536 (64 KiB)"), "{out}");
    assert!(out.contains("max-subs           9\n"), "{out}");
    // A value the flag refuses, and a key that is no flag, name the line.
    let bad = config_file("bad", "shards = 1\nmax_frame = \"lots\"\n");
    let o = tern(&["--config", bad.to_str().unwrap(), "--check-config"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("line 2: max_frame: invalid value 'lots'"),
        "{err}"
    );
    std::fs::write(&bad, "shards = 1\n\nmax_frmae = 3\n").unwrap();
    let err = stderr(&tern(&["--config", bad.to_str().unwrap()]));
    assert!(err.contains("line 3: unknown key `max_frmae`"), "{err}");
    let o = tern(&["--config", "/nonexistent/tern.toml"]);
    assert!(
        stderr(&o).contains("config file /nonexistent/tern.toml:"),
        "{}",
        stderr(&o)
    );
    // Users in plain text start with a warning, and --check-config says so.
    std::fs::write(
        &bad,
        "shards = 1\nlisten = \"127.0.0.1:0\"\n[authorization]\n[[authorization.users]]\nuser = \"a\"\npassword = \"pw\"\n",
    )
    .unwrap();
    let o = tern(&["--config", bad.to_str().unwrap(), "--check-config"]);
    assert!(
        stdout(&o).contains(
            "authorization      1 user, auth timeout 2s: WARNING: user a stored in plain text"
        ),
        "{}",
        stdout(&o)
    );
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(bad);
}

// ------------------------------------------------------- deploy/tern.service

/// `deploy/tern.service`'s active `Key=value` lines (comments left out).
fn unit_settings() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/tern.service");
    let text = std::fs::read_to_string(path).expect("deploy/tern.service");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn unit_setting(key: &str) -> Option<String> {
    unit_settings()
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// A systemd size (`128M`, `65536`, `1G`, `infinity`) in bytes.
fn systemd_size(v: &str) -> u64 {
    if v == "infinity" {
        return u64::MAX;
    }
    let (digits, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = digits.parse().expect("a number");
    n * match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        other => panic!("unit {other}"),
    }
}

#[test]
fn the_systemd_unit_allows_what_tern_needs() {
    // Locked memory for 64 shards at the default --io-memory, as the unit's
    // comment promises.
    let memlock = systemd_size(&unit_setting("LimitMEMLOCK").expect("LimitMEMLOCK"));
    let needed = tern::preflight::memlock_needed(64, tern::config::DEFAULT_IO_MEMORY);
    assert!(memlock >= needed, "LimitMEMLOCK {memlock} < {needed}");
    let nofile: u64 = unit_setting("LimitNOFILE").unwrap().parse().unwrap();
    assert!(nofile > tern::config::DEFAULT_MAX_CONNECTIONS as u64);
    assert_eq!(unit_setting("Restart").as_deref(), Some("on-failure"));
    assert!(unit_setting("DynamicUser").is_some() || unit_setting("User").is_some());
    // Nothing that would block io_uring.
    assert_eq!(unit_setting("SystemCallFilter"), None);
}

/// The text of a file of the repository.
fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The unit's install steps (`install -Dm644 SRC DST` in its header
/// comment), as (SRC, DST).
fn unit_install_steps() -> Vec<(String, String)> {
    repo_file("deploy/tern.service")
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| {
            l.split('#')
                .next()
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
        })
        .filter(|w| w.first() == Some(&"install") && w.len() == 4)
        .map(|w| (w[2].to_string(), w[3].to_string()))
        .collect()
}

/// `TERN_ARGS="..."` (or `"TERN_ARGS=..."`) of a systemd setting or
/// environment file, unquoted.
fn tern_args(assignment: &str) -> Option<String> {
    let unquoted = assignment.trim().trim_matches('"');
    let value = unquoted.strip_prefix("TERN_ARGS=")?;
    Some(value.trim_matches('"').to_string())
}

/// Runs `tern --check-config` with `flags`: the environment may fail the
/// check (port 7000 taken, say), but the flags themselves must parse. A
/// `--config` file the unit's install steps put in place is read from the
/// repository's copy.
fn assert_flags_parse(flags: &str, from: &str) {
    let steps = unit_install_steps();
    let repo = env!("CARGO_MANIFEST_DIR");
    let mut args: Vec<String> = Vec::new();
    for word in flags.split_whitespace() {
        match steps.iter().find(|(_, dst)| dst == word) {
            Some((src, _)) if args.last().is_some_and(|a| a == "--config") => {
                args.push(format!("{repo}/{src}"));
            }
            _ => args.push(word.to_string()),
        }
    }
    args.push("--check-config".to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = tern(&args);
    assert!(
        !stderr(&o).contains("see tern --help"),
        "{from}: {flags}: {}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("metrics "), "{}", stdout(&o));
}

#[test]
fn the_systemd_units_flags_are_accepted() {
    // The unit runs TERN_ARGS, with defaults in the unit and the real
    // flags in an environment file the operator edits.
    let exec = unit_setting("ExecStart").expect("ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert!(words[0].ends_with("/tern"), "{exec}");
    assert_eq!(words[1..], ["$TERN_ARGS"], "{exec}");
    let defaults =
        tern_args(&unit_setting("Environment").expect("Environment")).expect("TERN_ARGS=");
    assert_flags_parse(&defaults, "deploy/tern.service");
    // Optional ("-"): the unit starts on its defaults without it.
    let env_file = unit_setting("EnvironmentFile").expect("EnvironmentFile");
    let env_file = env_file.strip_prefix('-').expect("optional");
    // The file shipped for it is installed there, and sets the same
    // flags to start from.
    let (shipped, _) = unit_install_steps()
        .into_iter()
        .find(|(_, dst)| dst == env_file)
        .unwrap_or_else(|| panic!("nothing installs {env_file}"));
    let file_args = repo_file(&shipped)
        .lines()
        .find_map(tern_args)
        .unwrap_or_else(|| panic!("no TERN_ARGS= in {shipped}"));
    assert_eq!(file_args, defaults);
    assert_flags_parse(&file_args, &shipped);
}

#[test]
fn the_units_documentation_is_a_file_its_install_steps_install() {
    let doc = unit_setting("Documentation").expect("Documentation");
    let path = doc.strip_prefix("file://").expect("a file:// URL");
    let steps = unit_install_steps();
    let (src, _) = steps
        .iter()
        .find(|(_, dst)| dst == path)
        .unwrap_or_else(|| panic!("nothing installs {path}: {steps:?}"));
    assert!(repo_file(src).starts_with("# Deploying tern"), "{src}");
    // Every step installs a file the repository has (the binary, once
    // built).
    for (src, _) in &steps {
        if !src.starts_with("target/") {
            repo_file(src);
        }
    }
}
