//! What the process uses, read from the kernel when a page asks for it:
//! `/varz`' `mem` and `cpu`, and the `process_*` series of `/metrics`
//! (the names every Prometheus client library exports, so that the usual
//! dashboards and alerts work unchanged).

use std::time::{Duration, SystemTime};

use crate::sys::{self, CpuClock, Resource};

/// The process's figures at one moment. A figure the kernel would not
/// give is `None` and left out of the pages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    /// Resident memory in bytes.
    pub rss: Option<u64>,
    /// Virtual memory in bytes.
    pub virtual_memory: Option<u64>,
    /// CPU time (user and system) used since the process started, every
    /// thread.
    pub cpu_time: Duration,
    /// File descriptors open now.
    pub open_fds: Option<u64>,
    /// The soft open-files limit (`None` too when it is unlimited).
    pub max_fds: Option<u64>,
    /// When the process started, on the wall clock.
    pub start_time: Option<SystemTime>,
}

impl ProcessUsage {
    /// This process's figures now.
    pub fn now() -> ProcessUsage {
        ProcessUsage {
            rss: sys::resident_memory(),
            virtual_memory: sys::virtual_memory(),
            cpu_time: sys::cpu_time(CpuClock::Process),
            open_fds: sys::open_fds().ok(),
            max_fds: sys::limits(Resource::OpenFiles)
                .ok()
                .map(|l| l.soft)
                .filter(|&l| l != sys::UNLIMITED),
            start_time: sys::process_start_time(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_every_figure() {
        let p = ProcessUsage::now();
        let rss = p.rss.expect("VmRSS");
        assert!(p.virtual_memory.expect("VmSize") >= rss);
        assert!(p.cpu_time > Duration::ZERO);
        let open = p.open_fds.expect("/proc/self/fd");
        if let Some(max) = p.max_fds {
            assert!(open <= max, "{open} > {max}");
        }
        assert!(p.start_time.expect("start time") <= SystemTime::now());
    }
}
