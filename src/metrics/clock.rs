//! Times as nats-server's monitoring pages write them, so that tools that
//! parse `/varz` and `/connz` read tern's the same way:
//!
//! * instants in RFC 3339 with nanoseconds, as Go marshals a `time.Time`
//!   (`2024-05-01T12:00:03.0004Z`: trailing zeros of the fraction dropped,
//!   the fraction left out when it is zero); tern writes them in UTC;
//! * durations as nats-server's `uptime` (`1h2m3s`, `4d0h0m9s`,
//!   `1y2d3h4m5s`): whole seconds, the largest unit first, every smaller
//!   unit down to seconds after it.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `t` in RFC 3339, UTC, with as many digits of nanoseconds as it needs
/// (Go's `time.RFC3339Nano`). Times before 1970 (a wildly wrong clock) are
/// written as the epoch.
pub(crate) fn rfc3339_nanos(t: SystemTime) -> String {
    let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    );
    let nanos = since_epoch.subsec_nanos();
    if nanos != 0 {
        let digits = format!("{nanos:09}");
        let _ = write!(out, ".{}", digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// The proleptic Gregorian date (year, month 1–12, day 1–31) of `days`
/// days after 1970-01-01 (Howard Hinnant's `civil_from_days`, for
/// non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01, so that a leap day ends each 4-year
    // cycle, and count in 400-year eras of 146,097 days.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: 0 = March ... 11 = February.
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `d` as nats-server writes an uptime: whole seconds, in years (of 365
/// days), days, hours, minutes and seconds, starting at the largest unit
/// that is not zero.
pub(super) fn uptime(d: Duration) -> String {
    let secs = d.as_secs();
    let (mins, hours, days) = (secs / 60, secs / 3600, secs / 86_400);
    let years = days / 365;
    if years > 0 {
        format!(
            "{years}y{}d{}h{}m{}s",
            days % 365,
            hours % 24,
            mins % 60,
            secs % 60
        )
    } else if days > 0 {
        format!("{days}d{}h{}m{}s", hours % 24, mins % 60, secs % 60)
    } else if hours > 0 {
        format!("{hours}h{}m{}s", mins % 60, secs % 60)
    } else if mins > 0 {
        format!("{mins}m{}s", secs % 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn instants_are_rfc3339_with_go_style_nanoseconds() {
        assert_eq!(rfc3339_nanos(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // `date -u -d @1714564803` = 2024-05-01 12:00:03.
        assert_eq!(
            rfc3339_nanos(at(1_714_564_803, 400_000)),
            "2024-05-01T12:00:03.0004Z"
        );
        assert_eq!(
            rfc3339_nanos(at(1_714_564_803, 123_456_789)),
            "2024-05-01T12:00:03.123456789Z"
        );
        assert_eq!(
            rfc3339_nanos(at(1_714_564_803, 500_000_000)),
            "2024-05-01T12:00:03.5Z"
        );
        // Leap days, the turn of a century that is not a leap year, and the
        // last second of a year.
        assert_eq!(rfc3339_nanos(at(951_782_400, 0)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_nanos(at(4_107_542_400, 0)), "2100-03-01T00:00:00Z");
        assert_eq!(rfc3339_nanos(at(1_735_689_599, 0)), "2024-12-31T23:59:59Z");
        assert_eq!(
            rfc3339_nanos(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn dates_agree_with_a_day_by_day_count() {
        // Walk 1970..2400 one day at a time: every date follows the one
        // before it by the calendar's rules.
        let days_in = |y: u64, m: u64| match m {
            2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut expected = (1970, 1, 1);
        for days in 0..157_000 {
            assert_eq!(civil_from_days(days), expected, "day {days}");
            let (y, m, d) = expected;
            expected = if d < days_in(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn uptimes_are_written_like_nats_server() {
        let s = Duration::from_secs;
        assert_eq!(uptime(Duration::ZERO), "0s");
        assert_eq!(uptime(Duration::from_millis(59_999)), "59s");
        assert_eq!(uptime(s(60)), "1m0s");
        assert_eq!(uptime(s(3723)), "1h2m3s");
        assert_eq!(uptime(s(86_400 * 4 + 9)), "4d0h0m9s");
        assert_eq!(
            uptime(s(86_400 * 367 + 3 * 3600 + 4 * 60 + 5)),
            "1y2d3h4m5s"
        );
    }
}
