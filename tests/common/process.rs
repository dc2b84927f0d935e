//! The real `tern` binary as a child process: started with piped stderr,
//! watched until a deadline, and killed by its PID if it outlives the test
//! (see [`Tern`]'s `Drop`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Longest a start or a stop may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A running `tern` process and the lines of its stderr.
pub struct Tern {
    pub child: Child,
    lines: Receiver<String>,
    /// The stderr lines read so far.
    pub log: Vec<String>,
}

impl Tern {
    /// Starts `cmd` (which must run tern, possibly through `sh`/`setpriv`
    /// that `exec` it, so the PID is tern's).
    pub fn spawn(mut cmd: Command) -> Tern {
        let mut child = cmd
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tern");
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Tern {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for the start-up line and returns the address it listens on.
    pub fn wait_started(&mut self) -> SocketAddr {
        listening_addr(&self.wait_started_line())
    }

    /// Waits for the start-up line and returns it.
    pub fn wait_started_line(&mut self) -> String {
        self.wait_line(" started: ")
    }

    /// Waits for the next stderr line that contains `needle` and returns
    /// it.
    pub fn wait_line(&mut self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.log.push(line.clone());
                    if found {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "tern logged no {needle:?} within {DEADLINE:?}:\n{}",
                        self.log.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().expect("wait");
                    panic!(
                        "tern exited ({status}) before it logged {needle:?}:\n{}",
                        self.log.join("\n")
                    )
                }
            }
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) with the PID of our own child, which has not been
        // reaped (we hold its `Child` and only `wait` in `wait_exit`/`Drop`),
        // so the PID cannot have been reused by another process.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits for the process to end; returns its status and whole stderr.
    pub fn wait_exit(mut self) -> (ExitStatus, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "tern did not exit within {DEADLINE:?}:\n{}",
                self.log.join("\n")
            );
            thread::sleep(Duration::from_millis(10));
        };
        // The reader thread ends at EOF, which follows the exit.
        let deadline = Instant::now() + DEADLINE;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.log.push(line);
        }
        (status, self.log.join("\n"))
    }
}

impl Drop for Tern {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address after "listening on " in a start-up line (text or JSON).
pub fn listening_addr(line: &str) -> SocketAddr {
    let rest = line
        .split("listening on ")
        .nth(1)
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    addr.parse()
        .unwrap_or_else(|e| panic!("bad address {addr:?} in {line:?}: {e}"))
}
