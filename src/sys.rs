//! tern's calls into Linux that std does not wrap: CPU affinity, resource
//! limits, CPU-time clocks, the io_uring probe, a non-blocking send, and the
//! `/proc` files that say what the kernel allows this process, how much
//! memory and how many descriptors it holds, and when it started.
//!
//! Every `unsafe` block of the crate's start-up and pinning code is here,
//! each with the reasoning that makes it sound, and each exercised by a
//! test below. The rest of the crate (and the load generator) calls these
//! safe functions instead of `libc`. The exceptions are in `shard::tasks`
//! and call no OS function: adopting a listening socket's descriptor
//! (`from_raw_fd`) and borrowing a glommio stream's descriptor for
//! [`send_now`] (`BorrowedFd::borrow_raw`).

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `errno` values whose meaning start-up advice depends on (see
/// `preflight`), so that callers need not depend on `libc`.
pub use libc::{EACCES, EMFILE, ENFILE, ENOMEM, ENOSYS, EPERM};

// ---------------------------------------------------------------- CPUs

/// The CPUs this process may run on (its affinity mask), ascending. Falls
/// back to `0..available_parallelism` if the mask cannot be read.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain data for which all-zero is valid (the
    // empty set); `sched_getaffinity` writes at most `size_of::<cpu_set_t>()`
    // bytes into it, the size we pass, and `CPU_ISSET` only reads inside
    // it (every index is below `CPU_SETSIZE`).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect();
            if !cpus.is_empty() {
                return cpus;
            }
        }
    }
    (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
}

/// Restricts the calling thread to `cpus` (threads it creates inherit the
/// mask). Used by the threads that must stay off the shards' CPUs (the
/// metrics endpoint) and by the load generator's workers.
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    if let Some(&cpu) = cpus.iter().find(|&&c| c >= libc::CPU_SETSIZE as usize) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is past the largest CPU number this system can address"),
        ));
    }
    // SAFETY: `cpu_set_t` is plain data for which all-zero is the empty
    // set; `CPU_SET` only writes inside it (every CPU was checked to be
    // below `CPU_SETSIZE` above); and `sched_setaffinity` with pid 0 (the
    // calling thread) reads exactly `size_of::<cpu_set_t>()` bytes from the
    // set, the size passed.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// ---------------------------------------------------------------- CPU time

/// Whose CPU time [`cpu_time`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuClock {
    /// The calling thread's.
    Thread,
    /// The whole process's, every thread summed.
    Process,
}

/// CPU time (user + system) used so far, to the nanosecond
/// (`clock_gettime` with `CLOCK_THREAD_CPUTIME_ID` or
/// `CLOCK_PROCESS_CPUTIME_ID`). Panics if the kernel lacks those clocks
/// (they exist since Linux 2.6.12).
pub fn cpu_time(clock: CpuClock) -> Duration {
    let id = match clock {
        CpuClock::Thread => libc::CLOCK_THREAD_CPUTIME_ID,
        CpuClock::Process => libc::CLOCK_PROCESS_CPUTIME_ID,
    };
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call;
    // the kernel writes one timespec into it or fails with EINVAL.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock:?}) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

// ---------------------------------------------------------------- limits

/// A resource limit's value for "no limit" (`RLIM_INFINITY`) in [`Limits`].
pub const UNLIMITED: u64 = u64::MAX;

/// A resource limit tern cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `RLIMIT_NOFILE`: open file descriptors (one per client).
    OpenFiles,
    /// `RLIMIT_MEMLOCK`: bytes of locked memory (io_uring's buffers).
    LockedMemory,
}

impl Resource {
    /// The `RLIMIT_*` number. (Its C type differs between glibc and musl,
    /// hence the `as _` where it is passed.)
    fn id(self) -> i32 {
        let id = match self {
            Resource::OpenFiles => libc::RLIMIT_NOFILE,
            Resource::LockedMemory => libc::RLIMIT_MEMLOCK,
        };
        id as i32
    }
}

/// A resource's soft limit (what the kernel enforces) and hard limit (the
/// ceiling an unprivileged process may raise the soft one to), each
/// [`UNLIMITED`] when there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub soft: u64,
    pub hard: u64,
}

/// This process's limits for `resource` (`getrlimit(2)`).
pub fn limits(resource: Resource) -> io::Result<Limits> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `struct rlimit` into `rl`, which is
    // valid for writes and outlives the call.
    if unsafe { libc::getrlimit(resource.id() as _, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // `rlim_t` is 32 bits wide on some 32-bit targets, hence the cast.
    #[allow(clippy::unnecessary_cast)]
    let value = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            UNLIMITED
        } else {
            v as u64
        }
    };
    Ok(Limits {
        soft: value(rl.rlim_cur),
        hard: value(rl.rlim_max),
    })
}

/// Raises the soft limit for `resource` to the hard one (which any
/// process may do) and returns the limits now in force.
pub fn raise_soft_limit(resource: Resource) -> io::Result<Limits> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `struct rlimit` into `rl`, and
    // setrlimit reads one from it; `rl` is valid for both and outlives the
    // calls.
    unsafe {
        if libc::getrlimit(resource.id() as _, &mut rl) != 0 {
            return Err(io::Error::last_os_error());
        }
        if rl.rlim_cur != rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            if libc::setrlimit(resource.id() as _, &rl) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    limits(resource)
}

// ---------------------------------------------------------------- io_uring

/// `struct io_uring_params` from `<linux/io_uring.h>` (120 bytes; `libc`
/// does not define it). The kernel reads `flags` and friends, all zero
/// here, and fills in the rest.
#[repr(C)]
#[derive(Default)]
struct IoUringParams {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: [u32; 10],
    cq_off: [u32; 10],
}

const _: () = assert!(std::mem::size_of::<IoUringParams>() == 120);

/// Creates a small io_uring with `io_uring_setup(2)`, as glommio will, and
/// closes it: `Ok` if this process may use io_uring, else the kernel's
/// error.
///
/// The probe runs on a short-lived thread of its own: tearing a ring down
/// queues kernel task work on the thread that created it, which interrupts
/// that thread's next blocking socket call with `EINTR` (a caller with
/// `SO_RCVTIMEO` set — a test client, an embedding application — would see
/// a spurious error).
pub fn probe_io_uring() -> io::Result<()> {
    std::thread::scope(|s| s.spawn(setup_and_close_ring).join())
        .expect("the io_uring probe does not panic")
}

fn setup_and_close_ring() -> io::Result<()> {
    let mut params = IoUringParams::default();
    // SAFETY: io_uring_setup(entries, params) reads and writes exactly one
    // `struct io_uring_params`, which `params` is (layout checked above),
    // and it outlives the call. It returns a new file descriptor that
    // nothing else owns, or -1 with errno set.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            4 as libc::c_uint,
            &mut params as *mut IoUringParams,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by io_uring_setup and is owned by no
    // one else; closing it once releases the ring.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

// ---------------------------------------------------------------- sockets

/// Sends `buf` on the connected socket `fd` without blocking (and without
/// `SIGPIPE`): what the socket buffer takes now, or an error such as
/// `WouldBlock`. For last words to a connection that is being refused,
/// whose async stream is about to be dropped.
pub fn send_now(fd: std::os::fd::BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: send(2) reads `buf.len()` bytes from `buf`, which is borrowed
    // for the call; `fd` is a descriptor kept open by its borrow.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

// ---------------------------------------------------------------- /proc

/// The `kernel.io_uring_disabled` sysctl, or `None` on kernels without it
/// (before 6.6): 0 = allowed, 1 = only for members of
/// `kernel.io_uring_group` and CAP_SYS_ADMIN, 2 = disabled for everyone.
pub fn io_uring_disabled() -> Option<u8> {
    read_proc_number("/proc/sys/kernel/io_uring_disabled")
}

/// The `kernel.io_uring_group` sysctl: the group allowed io_uring when
/// `kernel.io_uring_disabled` is 1 (`None` if unset, -1, or absent).
pub fn io_uring_group() -> Option<u32> {
    read_proc_number::<i64>("/proc/sys/kernel/io_uring_group").and_then(|g| u32::try_from(g).ok())
}

/// Whether this process runs under a seccomp filter (`Seccomp: 2` in
/// `/proc/self/status`), as containers usually do.
pub fn under_seccomp_filter() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status_field(&status, "Seccomp").is_some_and(|v| v == "2")
}

/// This process's resident set size in bytes (`VmRSS` in
/// `/proc/self/status`): the memory it holds in RAM now, what `/varz`
/// reports as `mem`. `None` if the file cannot be read or lacks the line.
pub fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status_bytes(&status, "VmRSS")
}

/// Gives the allocator's free memory back to the operating system, where
/// it can (glibc's `malloc_trim`, which also releases free pages inside its
/// heaps; elsewhere nothing). Costs time in proportion to the heap: call it
/// after much was freed, not per free.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it
    // takes no pointer and may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The machine's physical memory in bytes (`MemTotal` in `/proc/meminfo`,
/// which has the format of a status file), `None` if it cannot be read.
pub fn physical_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    status_bytes(&meminfo, "MemTotal")
}

/// This process's virtual memory size in bytes (`VmSize` in
/// `/proc/self/status`): every mapping, resident or not. `None` if the
/// file cannot be read or lacks the line.
pub fn virtual_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status_bytes(&status, "VmSize")
}

/// A size line of a `/proc/<pid>/status` (or `/proc/meminfo`) text, which is in kibibytes
/// (`VmRSS:\t  1234 kB`), in bytes.
fn status_bytes(status: &str, name: &str) -> Option<u64> {
    let value = status_field(status, name)?;
    let kib: u64 = value.strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// The file descriptors this process has open now: the entries of
/// `/proc/self/fd`, less the one that lists them.
pub fn open_fds() -> io::Result<u64> {
    let listed = std::fs::read_dir("/proc/self/fd")?.count() as u64;
    Ok(listed.saturating_sub(1))
}

/// When this process started, on the wall clock: its start in clock ticks
/// after boot (field 22 of `/proc/self/stat`) after the boot time (`btime`
/// in `/proc/stat`), to the tick (10 ms on most kernels). `None` if either
/// file cannot be read.
pub fn process_start_time() -> Option<SystemTime> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let kernel = std::fs::read_to_string("/proc/stat").ok()?;
    start_time(&stat, &kernel, clock_ticks_per_second()?)
}

/// The kernel's clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit
/// of `/proc`'s process times.
fn clock_ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf takes no pointer and has no precondition; it returns
    // the value, or -1 for a name the system does not know.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0)
}

/// [`process_start_time`] from the texts of `/proc/<pid>/stat` and
/// `/proc/stat`, with `ticks` clock ticks per second.
fn start_time(stat: &str, kernel: &str, ticks: u64) -> Option<SystemTime> {
    // The command name (field 2) is in parentheses and may hold spaces and
    // parentheses itself: count the fields after its last `)`, where
    // field 3 is the first.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let started: u64 = after_name.split_whitespace().nth(22 - 3)?.parse().ok()?;
    let boot: u64 = kernel
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let after_boot = Duration::from_secs(started / ticks)
        + Duration::from_nanos((started % ticks) * 1_000_000_000 / ticks);
    UNIX_EPOCH.checked_add(Duration::from_secs(boot) + after_boot)
}

/// `CAP_IPC_LOCK` from `<linux/capability.h>`: lets a process lock memory
/// past `RLIMIT_MEMLOCK`; io_uring then skips its accounting.
const CAP_IPC_LOCK: u32 = 14;

/// Whether this process may lock memory past `RLIMIT_MEMLOCK`: it holds
/// CAP_IPC_LOCK (root normally does) in the initial user namespace, which
/// is where io_uring checks it. Inside a user namespace (rootless
/// containers) "root" does not count.
pub fn has_cap_ipc_lock() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    holds_cap_ipc_lock(&status, &uid_map)
}

/// [`has_cap_ipc_lock`]'s decision on the text of `/proc/self/status` and
/// `/proc/self/uid_map`.
fn holds_cap_ipc_lock(status: &str, uid_map: &str) -> bool {
    let effective = status_field(status, "CapEff")
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0);
    // The initial user namespace maps every uid to itself.
    let init_ns = uid_map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
    effective && init_ns
}

/// The value of `name:` in a `/proc/<pid>/status` text.
fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim())
    })
}

fn read_proc_number<T: std::str::FromStr>(path: &str) -> Option<T> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_now_sends_what_fits_and_never_blocks() {
        use std::io::Read;
        use std::os::fd::AsFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert_eq!(send_now(server.as_fd(), b"bye\n").unwrap(), 4);
        let mut got = [0u8; 4];
        (&client).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"bye\n");
        // A peer that never reads: the buffers fill and the call says so
        // instead of waiting.
        let chunk = vec![0u8; 1 << 16];
        let full = (0..10_000).find_map(|_| send_now(server.as_fd(), &chunk).err());
        assert_eq!(
            full.map(|e| e.kind()),
            Some(io::ErrorKind::WouldBlock),
            "a full socket buffer"
        );
    }

    #[test]
    fn allowed_cpus_is_never_empty() {
        assert!(!allowed_cpus().is_empty());
    }

    #[test]
    fn pinning_restricts_the_calling_thread_only() {
        let allowed = allowed_cpus();
        let last = *allowed.last().unwrap();
        let inside = std::thread::spawn(move || {
            pin_current_thread(&[last]).unwrap();
            allowed_cpus()
        })
        .join()
        .unwrap();
        assert_eq!(inside, vec![last]);
        assert_eq!(allowed_cpus(), allowed, "the test thread is unaffected");
        assert!(pin_current_thread(&[libc::CPU_SETSIZE as usize + 5]).is_err());
        assert!(pin_current_thread(&[usize::MAX]).is_err());
        assert_eq!(allowed_cpus(), allowed, "a refused mask changes nothing");
    }

    #[test]
    fn cpu_time_counts_work() {
        std::thread::spawn(|| {
            let before = cpu_time(CpuClock::Thread);
            let start = std::time::Instant::now();
            let mut x = 0u64;
            // Bounded, so that a broken clock fails rather than hangs.
            while cpu_time(CpuClock::Thread) <= before && start.elapsed() < Duration::from_secs(10)
            {
                for i in 0..100_000u64 {
                    x = x.wrapping_add(i * i);
                }
                std::hint::black_box(x);
            }
            assert!(cpu_time(CpuClock::Thread) > before);
        })
        .join()
        .unwrap();
        assert!(cpu_time(CpuClock::Process) >= cpu_time(CpuClock::Thread));
        assert!(cpu_time(CpuClock::Process) > Duration::ZERO);
    }

    #[test]
    fn limits_are_readable() {
        for resource in [Resource::OpenFiles, Resource::LockedMemory] {
            let l = limits(resource).unwrap();
            assert!(l.soft <= l.hard, "{resource:?}: {l:?}");
        }
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let hard = limits(Resource::OpenFiles).unwrap().hard;
        let raised = raise_soft_limit(Resource::OpenFiles).unwrap();
        assert_eq!(raised, Limits { soft: hard, hard });
        assert_eq!(limits(Resource::OpenFiles).unwrap(), raised);
    }

    #[test]
    fn io_uring_can_be_set_up_here() {
        // The machines this is developed and tested on have io_uring; this
        // exercises the raw io_uring_setup call and the close of its fd.
        probe_io_uring().unwrap();
    }

    #[test]
    fn proc_files_are_read() {
        // Present on every kernel tern supports.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(status_field(&status, "Seccomp").is_some(), "{status}");
        // Whatever the answers, reading them must not fail.
        let _ = (under_seccomp_filter(), has_cap_ipc_lock());
        if let Some(v) = io_uring_disabled() {
            assert!(v <= 2, "{v}");
        }
        let _ = io_uring_group();
    }

    #[test]
    fn resident_memory_is_read_from_vm_rss() {
        // This test process holds at least its own code and heap in RAM.
        let rss = resident_memory().expect("VmRSS is readable");
        assert!(rss >= 1 << 20, "{rss}");
        // Memory touched now shows up (with slack for what the allocator
        // and the other tests running in parallel do meanwhile).
        let block = vec![1u8; 64 << 20];
        let grown = resident_memory().unwrap();
        assert!(grown >= 32 << 20, "{grown}");
        drop(std::hint::black_box(block));

        let status = "Name:\ttern\nVmHWM:\t    9000 kB\nVmRSS:\t    1234 kB\n";
        let rss = |status| status_bytes(status, "VmRSS");
        assert_eq!(rss(status), Some(1234 * 1024));
        assert_eq!(rss("VmRSS:\t0 kB\n"), Some(0));
        assert_eq!(rss("Name:\ttern\n"), None);
        assert_eq!(rss("VmRSS:\t12 MB\n"), None);
        assert_eq!(rss("VmRSS:\tlots kB\n"), None);
        assert_eq!(status_bytes(status, "VmHWM"), Some(9000 * 1024));
        // Virtual memory holds at least what is resident.
        assert!(virtual_memory().expect("VmSize is readable") >= resident_memory().unwrap());
    }

    #[test]
    fn open_descriptors_are_counted() {
        let before = open_fds().unwrap();
        assert!(before >= 1, "{before}");
        // At least these are open while they are held (other tests open
        // and close files meanwhile, so only the lower bound is sure).
        let held: Vec<std::fs::File> = (0..16)
            .map(|_| std::fs::File::open("/proc/self/status").unwrap())
            .collect();
        assert!(open_fds().unwrap() >= 16);
        drop(held);
    }

    #[test]
    fn the_start_time_is_boot_time_plus_the_start_after_boot() {
        let stat = "28936 (a (b) c) R 28934 28934 26193 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 842485 3133440 407 18446744073709551615";
        let kernel = "cpu  1 2 3\nbtime 1795945197\nprocesses 9\n";
        assert_eq!(
            start_time(stat, kernel, 100),
            Some(UNIX_EPOCH + Duration::new(1_795_945_197 + 8424, 850_000_000))
        );
        assert_eq!(start_time("no fields", kernel, 100), None);
        assert_eq!(start_time(stat, "cpu 1\n", 100), None);
        // This process: started already, and not before the machine.
        let started = process_start_time().expect("readable");
        assert!(started <= SystemTime::now());
        assert!(clock_ticks_per_second().is_some());
    }

    #[test]
    fn free_memory_can_be_released_at_any_time() {
        // Many small blocks (below the allocator's mmap threshold, so they
        // live in its heaps), freed, then trimmed twice: nothing to check
        // but that it runs (tests/scale.rs measures what it gives back).
        let blocks: Vec<Vec<u8>> = (0..10_000).map(|i| vec![i as u8; 4096]).collect();
        drop(std::hint::black_box(blocks));
        release_free_memory();
        release_free_memory();
    }

    #[test]
    fn physical_memory_is_mem_total() {
        assert!(physical_memory().is_some_and(|m| m >= 64 << 20));
        let meminfo = "MemTotal:       24597208 kB\nMemFree:        1 kB\n";
        assert_eq!(status_bytes(meminfo, "MemTotal"), Some(24_597_208 * 1024));
        assert_eq!(status_bytes("MemFree:   1 kB\n", "MemTotal"), None);
        assert_eq!(status_bytes("MemTotal:   12 MB\n", "MemTotal"), None);
    }

    #[test]
    fn cap_ipc_lock_needs_the_bit_and_the_initial_namespace() {
        let init = "         0          0 4294967295\n";
        let userns = "         0       1000          1\n";
        let with = "Name:\ttern\nCapEff:\t000001ffffffffff\n";
        let without = "Name:\ttern\nCapEff:\t0000000000000000\n";
        assert!(holds_cap_ipc_lock(with, init));
        assert!(!holds_cap_ipc_lock(with, userns));
        assert!(!holds_cap_ipc_lock(without, init));
        assert!(!holds_cap_ipc_lock("", ""));
        assert_eq!(status_field(with, "CapEff"), Some("000001ffffffffff"));
        assert_eq!(status_field(with, "Cap"), None);
    }
}
