//! The units flags are written in: byte sizes (`64KiB`), durations
//! (`50us`, `1.5s`, `2m`), CPU lists (`0,2-3`) and socket addresses
//! (`127.0.0.1:7000`, `localhost:7000`). Each parser sits beside the
//! formatter that writes the same syntax back (addresses: `SocketAddr`'s
//! own), and both binaries (`tern` and `tern-loadgen`) read their flags
//! with these, so a value means the same to both. In particular a bare
//! duration number is seconds.
//!
//! ```
//! use std::time::Duration;
//! use tern::units::{format_cpu_list, format_duration, format_size};
//! use tern::units::{parse_cpu_list, parse_duration, parse_size};
//!
//! assert_eq!(parse_size("64KiB").unwrap(), 65536);
//! assert_eq!(format_size(65536), "64 KiB");
//! assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
//! assert_eq!(format_duration(Duration::from_micros(50)), "50us");
//! assert_eq!(parse_cpu_list("0,2-4").unwrap(), vec![0, 2, 3, 4]);
//! assert_eq!(format_cpu_list(&[0, 2, 3, 4]), "0,2-4");
//! ```

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

// ---------------------------------------------------------------- sizes

/// A size that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size `{0}`: give bytes as an integer, optionally with a suffix (KiB, MiB, GiB, KB, MB, GB, K, M, G), e.g. 64KiB")]
pub struct SizeError(pub String);

/// Parses a byte count: `1048576`, `64KiB`, `1MiB`, `2GiB`, `10KB`
/// (decimal), `4k`, `16M` (binary). Suffixes ignore case, may follow a
/// space, and include `B` and `bytes`, so every [`format_size`] output
/// reads back.
pub fn parse_size(s: &str) -> Result<usize, SizeError> {
    let err = || SizeError(s.to_string());
    let (digits, suffix) = split_number(s.trim(), |c| c.is_ascii_digit());
    if digits.is_empty() {
        return Err(err());
    }
    let n: u64 = digits.parse().map_err(|_| err())?;
    let mult: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" | "byte" | "bytes" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(err()),
    };
    let v = n.checked_mul(mult).ok_or_else(err)?;
    usize::try_from(v).map_err(|_| err())
}

/// Writes a byte count in the largest binary unit that shows it exactly:
/// `64 KiB`, `3 MiB`, `1500 bytes`, `0 bytes`.
pub fn format_size(bytes: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    match bytes {
        0 => "0 bytes".to_string(),
        b if b % GIB == 0 => format!("{} GiB", b / GIB),
        b if b % MIB == 0 => format!("{} MiB", b / MIB),
        b if b % KIB == 0 => format!("{} KiB", b / KIB),
        b => format!("{b} bytes"),
    }
}

// ---------------------------------------------------------------- durations

/// The longest duration [`parse_duration`] accepts: 10^9 s (about 31
/// years), far below what would overflow a clock reading plus the
/// duration.
pub const MAX_DURATION: Duration = Duration::from_secs(1_000_000_000);

/// A duration that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a number, or a number with a unit that is not one.
    #[error("invalid duration `{0}`: give a number with a unit (ns, us, ms, s, m, h), e.g. 50us or 1.5s; a bare number is seconds")]
    Syntax(String),
    /// A fraction of a nanosecond.
    #[error(
        "invalid duration `{0}`: finer than a nanosecond (give whole nanoseconds, e.g. 250ns)"
    )]
    TooFine(String),
    /// Past [`MAX_DURATION`].
    #[error("invalid duration `{0}`: longer than 1000000000s (about 31 years)")]
    TooLong(String),
}

/// Parses a duration: a decimal number (`50`, `1.5`, `.5`), then
/// optionally a space and a unit: `ns`, `us` (or `µs`), `ms`, `s`, `m` (or
/// `min`), `h`. **A bare number is seconds** (`5` is 5 s). The value must be
/// a whole number of nanoseconds and at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax(s.to_string());
    let (number, unit) = split_number(s.trim(), |c| c.is_ascii_digit() || c == '.');
    let nanos_per_unit: u128 = match unit.trim() {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "" | "s" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(syntax()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(syntax());
    }
    // Exact integer arithmetic on the significant digits.
    let too_long = || DurationError::TooLong(s.to_string());
    let too_fine = || DurationError::TooFine(s.to_string());
    let whole = whole.trim_start_matches('0');
    let fraction = fraction.trim_end_matches('0');
    if whole.len() > 19 {
        // At least 10^19 ns whatever the unit: past MAX_DURATION.
        return Err(too_long());
    }
    if fraction.len() > 13 {
        // Its last digit is not 0, so 10^len divides `fraction × unit`
        // only if 2^len or 5^len divides the unit, and no unit (at most
        // 3.6e12 ns = 2^13 × 3^2 × 5^11) has that many.
        return Err(too_fine());
    }
    let number = |digits: &str| -> Result<u128, DurationError> {
        if digits.is_empty() {
            Ok(0)
        } else {
            digits.parse().map_err(|_| syntax())
        }
    };
    // Neither product overflows: below 10^19 or 10^13, times at most 3.6e12.
    let whole_nanos = number(whole)? * nanos_per_unit;
    let fraction_scaled = number(fraction)? * nanos_per_unit;
    let scale = 10u128.pow(fraction.len() as u32);
    if !fraction_scaled.is_multiple_of(scale) {
        return Err(too_fine());
    }
    let nanos = whole_nanos + fraction_scaled / scale;
    if nanos > MAX_DURATION.as_nanos() {
        return Err(too_long());
    }
    // Below MAX_DURATION, so the seconds fit a u64.
    Ok(Duration::new(
        (nanos / 1_000_000_000) as u64,
        (nanos % 1_000_000_000) as u32,
    ))
}

/// Writes a duration in the largest unit that shows it exactly, the way
/// [`parse_duration`] reads it: `0`, `2s`, `1500ms`, `50us`, `250ns`.
pub fn format_duration(d: Duration) -> String {
    match d.as_nanos() {
        0 => "0".to_string(),
        n if n % 1_000_000_000 == 0 => format!("{}s", n / 1_000_000_000),
        n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}us", n / 1_000),
        n => format!("{n}ns"),
    }
}

// ---------------------------------------------------------------- CPU lists

/// CPU numbers a list may name: below 4096, the most `cpu_set_t` holds
/// on Linux.
pub const CPU_LIMIT: usize = 4096;

/// A CPU list that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CPU list `{0}`: use numbers and ranges like 0,2 or 0-3")]
pub struct CpuListError(pub String);

/// Parses a CPU list as `taskset -c` and `/sys` write them: `0,2`, `0-3`,
/// `1,4-6`. Returns the CPUs sorted, without duplicates.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, CpuListError> {
    let err = || CpuListError(s.to_string());
    let mut cpus = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (
                a.trim().parse::<usize>().map_err(|_| err())?,
                b.trim().parse::<usize>().map_err(|_| err())?,
            ),
            None => {
                let v = part.parse::<usize>().map_err(|_| err())?;
                (v, v)
            }
        };
        if lo > hi || hi >= CPU_LIMIT {
            return Err(err());
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Writes CPUs as the list syntax [`parse_cpu_list`] reads, with runs of
/// three or more as ranges: `0-3,6,8,9`.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        let end = sorted[i];
        out.push(match end - start {
            0 => start.to_string(),
            // Two neighbours read better as a pair than as a range.
            1 => format!("{start},{end}"),
            _ => format!("{start}-{end}"),
        });
        i += 1;
    }
    out.join(",")
}

// ---------------------------------------------------------------- addresses

/// An address that could not be read or resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// Not `HOST:PORT`.
    #[error("invalid address `{0}`: give IP:PORT or HOST:PORT, like 127.0.0.1:7000, [::1]:7000 or localhost:7000")]
    Syntax(String),
    /// The host name could not be resolved.
    #[error("cannot resolve `{addr}`: {reason}")]
    Resolve {
        /// The address as given.
        addr: String,
        /// What the resolver said.
        reason: String,
    },
    /// The host name resolved to nothing.
    #[error("`{0}` resolves to no address")]
    NoAddress(String),
}

/// Reads a socket address: `IP:PORT` (`127.0.0.1:7000`, `[::1]:7000`) as
/// it is, or `HOST:PORT` (`localhost:7000`) resolved by the system's
/// resolver (`getaddrinfo`, through std's `ToSocketAddrs`), into every
/// address the name has, in the resolver's order, without repeats.
/// `localhost` is usually `[::1]` and `127.0.0.1`.
pub fn resolve_addrs(s: &str) -> Result<Vec<SocketAddr>, AddrError> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let syntax = || AddrError::Syntax(s.to_string());
    let (host, port) = s.rsplit_once(':').ok_or_else(syntax)?;
    // An IP address (v6 in brackets) that did not parse above is not a
    // host name either.
    if host.is_empty() || host.contains([':', '[', ']', ' ']) {
        return Err(syntax());
    }
    let port: u16 = port.parse().map_err(|_| syntax())?;
    let resolved = (host, port)
        .to_socket_addrs()
        .map_err(|e| AddrError::Resolve {
            addr: s.to_string(),
            reason: e.to_string(),
        })?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for addr in resolved {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(AddrError::NoAddress(s.to_string()));
    }
    Ok(addrs)
}

/// `s` split where its leading number (the characters `in_number` accepts)
/// ends.
fn split_number(s: &str, in_number: impl Fn(char) -> bool) -> (&str, &str) {
    s.split_at(s.find(|c: char| !in_number(c)).unwrap_or(s.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("1mib").unwrap(), 1 << 20);
        assert_eq!(parse_size("1MB").unwrap(), 1_000_000);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("4k").unwrap(), 4 << 10);
        assert_eq!(parse_size("3 KiB").unwrap(), 3 << 10);
        assert_eq!(parse_size("1500 bytes").unwrap(), 1500);
        assert_eq!(parse_size("7B").unwrap(), 7);
        for bad in [
            "",
            "KiB",
            "-1",
            "1.5MiB",
            "12XB",
            "99999999999999999999",
            "1 2",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
        let msg = parse_size("12XB").unwrap_err().to_string();
        assert!(msg.contains("12XB") && msg.contains("64KiB"), "{msg}");
    }

    #[test]
    fn sizes_format_in_the_largest_exact_unit() {
        assert_eq!(format_size(64 << 10), "64 KiB");
        assert_eq!(format_size(3 << 20), "3 MiB");
        assert_eq!(format_size(2 << 30), "2 GiB");
        assert_eq!(format_size(1500), "1500 bytes");
        assert_eq!(format_size(0), "0 bytes");
    }

    #[test]
    fn durations() {
        let d = parse_duration;
        assert_eq!(d("0"), Ok(Duration::ZERO));
        assert_eq!(d("250ns"), Ok(Duration::from_nanos(250)));
        assert_eq!(d("50us"), Ok(Duration::from_micros(50)));
        assert_eq!(d("50µs"), Ok(Duration::from_micros(50)));
        assert_eq!(d("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(d("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(d("5 m"), Ok(Duration::from_secs(300)));
        assert_eq!(d("1min"), Ok(Duration::from_secs(60)));
        assert_eq!(d("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(d(" 10s "), Ok(Duration::from_secs(10)));
        // Fractions are exact.
        assert_eq!(d("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("1.5ms"), Ok(Duration::from_micros(1500)));
        assert_eq!(d(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(d("2."), Ok(Duration::from_secs(2)));
        assert_eq!(d("0.000000001"), Ok(Duration::from_nanos(1)));
        for bad in [
            "", "us", ".", "-1ms", "1.5.2s", "10x", "1e3", "fast", "5 s s",
        ] {
            assert_eq!(
                d(bad),
                Err(DurationError::Syntax(bad.to_string())),
                "{bad:?} should be refused"
            );
        }
        assert!(matches!(d("0.5ns"), Err(DurationError::TooFine(_))));
        assert!(matches!(d("1000000001s"), Err(DurationError::TooLong(_))));
        assert!(matches!(d(&"9".repeat(60)), Err(DurationError::TooLong(_))));
        assert_eq!(d("1000000000s"), Ok(MAX_DURATION));
    }

    #[test]
    fn a_bare_duration_is_seconds() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("50"), Ok(Duration::from_secs(50)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn duration_errors_say_what_to_write() {
        let msg = parse_duration("50x").unwrap_err().to_string();
        for part in ["`50x`", "50us", "ms", "bare number is seconds"] {
            assert!(msg.contains(part), "{part:?} missing from {msg}");
        }
        let msg = parse_duration("0.5ns").unwrap_err().to_string();
        assert!(msg.contains("nanosecond"), "{msg}");
    }

    #[test]
    fn durations_format_in_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::ZERO), "0");
        assert_eq!(format_duration(Duration::from_micros(50)), "50us");
        assert_eq!(format_duration(Duration::from_secs(120)), "120s");
        for ok in ["0", "50us", "1ms", "2s", "250ns", "1500us"] {
            assert_eq!(format_duration(parse_duration(ok).unwrap()), ok);
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("3").unwrap(), vec![3]);
        assert_eq!(parse_cpu_list("0,2-4").unwrap(), vec![0, 2, 3, 4]);
        assert_eq!(parse_cpu_list("0-1,1").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpu_list(" 1 , 4 - 6 ").unwrap(), vec![1, 4, 5, 6]);
        assert_eq!(parse_cpu_list("4095").unwrap(), vec![4095]);
        for bad in ["", "a", "3-1", "1,,2", "-1", "0-99999", "4096"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn cpu_lists_format_as_ranges() {
        assert_eq!(format_cpu_list(&[]), "");
        assert_eq!(format_cpu_list(&[0]), "0");
        assert_eq!(format_cpu_list(&[0, 1]), "0,1");
        assert_eq!(format_cpu_list(&[3, 0, 1, 2, 6, 8, 9, 10]), "0-3,6,8-10");
        assert_eq!(
            parse_cpu_list(&format_cpu_list(&[0, 2, 3, 4, 7])).unwrap(),
            vec![0, 2, 3, 4, 7]
        );
    }

    #[test]
    fn addresses_are_read_and_host_names_resolved() {
        let v4: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(resolve_addrs("127.0.0.1:7000"), Ok(vec![v4]));
        assert_eq!(
            resolve_addrs(" [::1]:0 "),
            Ok(vec!["[::1]:0".parse().unwrap()])
        );
        // localhost is in /etc/hosts everywhere; which families it has
        // depends on the machine, but every one is a loopback address.
        let local = resolve_addrs("localhost:7000").unwrap();
        assert!(!local.is_empty());
        assert!(
            local
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 7000),
            "{local:?}"
        );
        let mut unique = local.clone();
        unique.dedup();
        assert_eq!(unique.len(), local.len(), "no repeats: {local:?}");
        for bad in [
            "localhost",
            "7000",
            ":7000",
            "localhost:",
            "localhost:99999",
            "127.0.0.1",
            "[::1]",
            "::1:7000",
            "a b:7000",
        ] {
            assert_eq!(
                resolve_addrs(bad),
                Err(AddrError::Syntax(bad.to_string())),
                "{bad:?} should be refused"
            );
        }
        let msg = resolve_addrs("localhost").unwrap_err().to_string();
        assert!(
            msg.contains("`localhost`") && msg.contains("localhost:7000"),
            "{msg}"
        );
        // .invalid never resolves (RFC 2606).
        let err = resolve_addrs("nowhere.invalid:7000").unwrap_err();
        assert!(matches!(err, AddrError::Resolve { .. }), "{err}");
        assert!(err.to_string().contains("nowhere.invalid:7000"), "{err}");
    }

    proptest! {
        #[test]
        fn every_size_reads_back(n in any::<u32>(), shift in 0u32..=32) {
            // Shifted, so that whole KiB, MiB and GiB come up often.
            let n = u64::from(n) << shift;
            prop_assume!(usize::try_from(n).is_ok());
            prop_assert_eq!(parse_size(&format_size(n)).map(|v| v as u64), Ok(n));
        }

        #[test]
        fn every_duration_reads_back(nanos in 0..=MAX_DURATION.as_nanos() as u64) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn every_cpu_list_reads_back(cpus in proptest::collection::vec(0..CPU_LIMIT, 1..64)) {
            let mut want = cpus.clone();
            want.sort_unstable();
            want.dedup();
            prop_assert_eq!(parse_cpu_list(&format_cpu_list(&cpus)), Ok(want));
        }
    }
}
