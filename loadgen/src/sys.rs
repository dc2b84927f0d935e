//! The few Linux calls std does not wrap that only the load generator
//! needs: epoll with a nanosecond timeout, and timer slack. (CPU pinning
//! and CPU time are tern's, in [`tern::sys`].)
//!
//! A generator that sends on a microsecond schedule cannot sleep in
//! milliseconds (`epoll_wait`'s unit), so [`Poller::wait`] uses
//! `epoll_pwait2` (Linux 5.11+), falling back to `epoll_wait` rounded
//! *down* to whole milliseconds on older kernels: the worker then spins for
//! the remainder rather than oversleeping.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Readiness a connection is interested in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    /// Readable only.
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
    /// Writable only.
    pub const WRITE: Interest = Interest {
        read: false,
        write: true,
    };
}

/// One readiness report: the token given at registration and what is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub token: u64,
    pub readable: bool,
    pub writable: bool,
    /// Error or hang-up: a read will tell which.
    pub closed: bool,
}

/// A level-triggered epoll instance.
#[derive(Debug)]
pub struct Poller {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

/// Set once `epoll_pwait2` answered `ENOSYS`, so we stop trying.
static NO_PWAIT2: AtomicBool = AtomicBool::new(false);

fn flags(interest: Interest) -> u32 {
    let mut f = 0;
    if interest.read {
        f |= libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32;
    }
    if interest.write {
        f |= libc::EPOLLOUT as u32;
    }
    f
}

impl Poller {
    /// A new epoll instance reporting up to `capacity` events per wait.
    pub fn new(capacity: usize) -> io::Result<Self> {
        // SAFETY: plain syscall; the returned descriptor is checked and then
        // owned by `OwnedFd`, which closes it exactly once.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Poller {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: flags(interest),
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call;
        // the kernel copies it. A bad `fd` is reported as an error.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Starts watching `fd`, reporting it as `token`.
    pub fn add(&self, fd: &impl AsRawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd.as_raw_fd(), token, interest)
    }

    /// Changes what `fd` is watched for.
    pub fn modify(&self, fd: &impl AsRawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd.as_raw_fd(), token, interest)
    }

    /// Waits up to `timeout` (`None`: forever, zero: just poll) and calls
    /// `f` for each ready descriptor. Returns how many there were.
    pub fn wait(
        &mut self,
        timeout: Option<Duration>,
        mut f: impl FnMut(Ready),
    ) -> io::Result<usize> {
        let n = self.wait_raw(timeout)?;
        for ev in &self.events[..n] {
            let e = ev.events;
            f(Ready {
                token: ev.u64,
                readable: e & (libc::EPOLLIN as u32) != 0,
                writable: e & (libc::EPOLLOUT as u32) != 0,
                closed: e & ((libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32) != 0,
            });
        }
        Ok(n)
    }

    fn wait_raw(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let epfd = self.fd.as_raw_fd();
        let max = self.events.len() as libc::c_int;
        let ptr = self.events.as_mut_ptr();
        if !NO_PWAIT2.load(Ordering::Relaxed) {
            let ts = timeout.map(|t| libc::timespec {
                tv_sec: t.as_secs() as libc::time_t,
                tv_nsec: t.subsec_nanos() as libc::c_long,
            });
            let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
            // SAFETY: `ptr` points to `max` writable epoll_events owned by
            // `self.events`, which outlives the call; `ts_ptr` is null or
            // points to a timespec on this stack frame; a null sigmask
            // leaves the signal mask alone.
            let rc = unsafe { libc::epoll_pwait2(epfd, ptr, max, ts_ptr, std::ptr::null()) };
            if rc >= 0 {
                return Ok(rc as usize);
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => return Ok(0),
                Some(libc::ENOSYS) => NO_PWAIT2.store(true, Ordering::Relaxed),
                _ => return Err(err),
            }
        }
        // Rounded down: waking early only costs a little spinning.
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
        // SAFETY: as above, without the timespec.
        let rc = unsafe { libc::epoll_wait(epfd, ptr, max, ms) };
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINTR) {
            Ok(0)
        } else {
            Err(err)
        }
    }
}

/// Asks the kernel to wake this thread's timed waits within 1 ns of the
/// deadline rather than the default 50 µs slack. Best effort.
pub fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn poller_reports_readable_and_writable() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut p = Poller::new(8).unwrap();
        p.add(&server, 7, Interest::READ).unwrap();

        let mut seen = Vec::new();
        p.wait(Some(Duration::ZERO), |r| seen.push(r)).unwrap();
        assert!(seen.is_empty(), "nothing to read yet");

        client.write_all(b"x").unwrap();
        p.wait(Some(Duration::from_secs(5)), |r| seen.push(r))
            .unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].token, 7);
        assert!(seen[0].readable && !seen[0].writable);

        seen.clear();
        p.modify(&server, 9, Interest::WRITE).unwrap();
        p.wait(None, |r| seen.push(r)).unwrap();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].writable && seen[0].token == 9);

        seen.clear();
        drop(client);
        p.modify(&server, 9, Interest::READ).unwrap();
        p.wait(Some(Duration::from_secs(5)), |r| seen.push(r))
            .unwrap();
        assert!(seen[0].closed, "peer hang-up is reported");
    }

    #[test]
    fn epoll_wait_fallback_works() {
        // Force the pre-5.11 path once. Other tests polling meanwhile just
        // take the fallback too, which is equally correct.
        NO_PWAIT2.store(true, Ordering::Relaxed);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut p = Poller::new(4).unwrap();
        p.add(&server, 3, Interest::READ).unwrap();
        client.write_all(b"x").unwrap();
        let mut seen = Vec::new();
        let n = p.wait(Some(Duration::from_secs(5)), |r| seen.push(r));
        NO_PWAIT2.store(false, Ordering::Relaxed);
        assert_eq!(n.unwrap(), 1);
        assert!(seen[0].readable && seen[0].token == 3);
    }

    #[test]
    fn poller_times_out() {
        let mut p = Poller::new(1).unwrap();
        assert_eq!(p.wait(Some(Duration::from_millis(2)), |_| {}).unwrap(), 0);
    }

    #[test]
    fn timer_slack_on_a_pinned_worker() {
        use tern::sys::{cpu_time, pin_current_thread, CpuClock};
        let cpu = tern::sys::allowed_cpus()[0];
        std::thread::spawn(move || {
            pin_current_thread(&[cpu]).unwrap();
            tight_timer_slack();
            // A timed wait still ends, and the thread still runs.
            let mut p = Poller::new(1).unwrap();
            assert_eq!(p.wait(Some(Duration::from_millis(1)), |_| {}).unwrap(), 0);
            // Burn CPU until the clock shows it; bounded so a broken clock
            // fails.
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while cpu_time(CpuClock::Thread) == Duration::ZERO
                && start.elapsed() < Duration::from_secs(10)
            {
                for i in 0..100_000u64 {
                    x = x.wrapping_add(i * i);
                }
                std::hint::black_box(x);
            }
            assert!(cpu_time(CpuClock::Thread) > Duration::ZERO);
        })
        .join()
        .unwrap();
        assert!(cpu_time(CpuClock::Process) > Duration::ZERO);
        assert!(pin_current_thread(&[usize::MAX]).is_err());
    }
}
