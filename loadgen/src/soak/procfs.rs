//! What the kernel says about the relay's process: resident memory (now
//! and its high-water mark) from `/proc/PID/status`, CPU time and state
//! from `/proc/PID/stat`, and whether the process still exists.
//!
//! `VmHWM` is the kernel's own peak of `VmRSS` since the process started,
//! so a short spike between two samples is not missed. A process that
//! exited but was not yet reaped by its parent is a zombie (state `Z`)
//! whose `/proc` entry still exists; it counts as exited.

use std::io;
use std::time::Duration;

/// Resident memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss: u64,
    /// `VmHWM`: the most that was ever resident.
    pub peak: u64,
}

/// The fields of `/proc/PID/stat` the soak uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// One-letter state: `R`, `S`, `D`, `Z` (zombie), `X` (dead), …
    pub state: char,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
}

impl Stat {
    /// Whether the process has exited (dead or a zombie).
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Reading a process's `/proc` files failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("process {0} does not exist (it exited)")]
    Gone(u32),
    #[error("reading /proc/{pid}/{file}: {source}")]
    Read {
        pid: u32,
        file: &'static str,
        source: io::Error,
    },
    #[error("/proc/{pid}/{file} is not in the expected format")]
    Format { pid: u32, file: &'static str },
}

/// `VmRSS` and `VmHWM` from the text of `/proc/PID/status` (lines like
/// `VmRSS:\t    1912 kB`), in bytes.
pub fn parse_status(text: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.split(':').next() == Some(name))?;
        let value = line.split_once(':')?.1.trim();
        let kib: u64 = value.strip_suffix("kB")?.trim().parse().ok()?;
        kib.checked_mul(1024)
    };
    Some(Memory {
        rss: field("VmRSS")?,
        peak: field("VmHWM")?,
    })
}

/// State and `utime + stime` from the text of `/proc/PID/stat`. The
/// command name (field 2) is in parentheses and may hold spaces and
/// parentheses itself, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // Field 3 is the state; utime and stime are fields 14 and 15.
    let state = fields.next()?.chars().next()?;
    let mut after_state = fields.skip(10);
    let utime: u64 = after_state.next()?.parse().ok()?;
    let stime: u64 = after_state.next()?.parse().ok()?;
    Some(Stat {
        state,
        cpu_ticks: utime + stime,
    })
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub memory: Memory,
    /// CPU time used since it started (user + system).
    pub cpu: Duration,
}

/// A process watched through `/proc`.
#[derive(Debug, Clone)]
pub struct Process {
    pid: u32,
    ticks_per_s: u64,
}

impl Process {
    /// Watches `pid`; fails if it does not exist (or already exited).
    pub fn new(pid: u32) -> Result<Self, ProcError> {
        let p = Process {
            pid,
            ticks_per_s: clock_ticks_per_second(),
        };
        p.sample()?;
        Ok(p)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Reads memory and CPU time now; [`ProcError::Gone`] once the
    /// process has exited.
    pub fn sample(&self) -> Result<Sample, ProcError> {
        let stat = self.read("stat")?;
        let stat = parse_stat(&stat).ok_or(ProcError::Format {
            pid: self.pid,
            file: "stat",
        })?;
        if stat.exited() {
            return Err(ProcError::Gone(self.pid));
        }
        let status = self.read("status")?;
        // A process that exits between the two reads loses its memory
        // lines first.
        let memory = parse_status(&status).ok_or(ProcError::Gone(self.pid))?;
        let ns = stat.cpu_ticks as u128 * 1_000_000_000 / self.ticks_per_s as u128;
        Ok(Sample {
            memory,
            cpu: Duration::from_nanos(ns as u64),
        })
    }

    fn read(&self, file: &'static str) -> Result<String, ProcError> {
        std::fs::read_to_string(format!("/proc/{}/{file}", self.pid)).map_err(|e| {
            match e.kind() {
                io::ErrorKind::NotFound => ProcError::Gone(self.pid),
                // ESRCH: the process went away while the file was read.
                _ if e.raw_os_error() == Some(libc::ESRCH) => ProcError::Gone(self.pid),
                _ => ProcError::Read {
                    pid: self.pid,
                    file,
                    source: e,
                },
            }
        })
    }
}

/// `sysconf(_SC_CLK_TCK)`, the unit of `/proc/PID/stat`'s times (100 on
/// every Linux in practice, which is also the fallback).
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf takes a plain integer name and touches no memory.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\ttern\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t  600000 kB\nVmHWM:\t    83200 kB\nVmRSS:\t    40960 kB\nRssAnon:\t   30000 kB\nThreads:\t3\n";

    #[test]
    fn status_gives_rss_and_its_peak_in_bytes() {
        assert_eq!(
            parse_status(STATUS),
            Some(Memory {
                rss: 40960 * 1024,
                peak: 83200 * 1024
            })
        );
        // VmPeak is virtual memory, not the peak RSS; RssAnon is not VmRSS.
        assert_eq!(parse_status("VmPeak:\t 5 kB\nRssAnon:\t 5 kB\n"), None);
        assert_eq!(parse_status("VmRSS:\t 5 kB\n"), None, "no VmHWM");
        assert_eq!(parse_status("VmRSS:\t x kB\nVmHWM:\t 5 kB\n"), None);
        assert_eq!(parse_status("VmRSS:\t 5 MB\nVmHWM:\t 5 kB\n"), None);
    }

    #[test]
    fn stat_counts_fields_after_the_command_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime …
        let stat = "4242 (tern (2) x) S 1 4242 4242 0 -1 4194560 1200 0 3 0 750 250 0 0 20 0 3 0";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                state: 'S',
                cpu_ticks: 1000
            })
        );
        let zombie = "4242 (tern) Z 1 4242 4242 0 -1 4194560 1200 0 3 0 7 3 0 0 20 0 1 0";
        assert!(parse_stat(zombie).unwrap().exited());
        assert_eq!(parse_stat("4242 (tern) S 1 2"), None, "truncated");
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn reads_this_process_and_notices_a_missing_one() {
        let me = Process::new(std::process::id()).unwrap();
        let s = me.sample().unwrap();
        assert!(s.memory.rss > 0 && s.memory.peak >= s.memory.rss);
        assert_eq!(me.pid(), std::process::id());

        // A child that exited and was reaped has no /proc entry.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(matches!(Process::new(pid), Err(ProcError::Gone(p)) if p == pid));
    }

    #[test]
    fn an_unreaped_child_counts_as_exited() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Until it is reaped the child is a zombie whose /proc entry stays.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let seen = loop {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Ok(t) if parse_stat(&t).is_some_and(|s| s.exited()) => break true,
                _ if std::time::Instant::now() > deadline => break false,
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        assert!(seen, "child never became a zombie");
        assert!(matches!(Process::new(pid), Err(ProcError::Gone(_))));
        child.wait().unwrap();
    }
}
