//! The two time formats the collector reads from config and labels, parsed as Go does:
//! durations like `100ms` or `1h30m` (Go `time.ParseDuration`, containerd's scheduler config)
//! and RFC 3339 timestamps (`containerd.io/gc.expire`, written by Go's `time.RFC3339`).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a duration or timestamp did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not a Go duration.
    #[error("invalid duration {0:?}")]
    Duration(String),
    /// A Go duration without a unit (only `0` may omit it).
    #[error("missing unit in duration {0:?}")]
    MissingUnit(String),
    /// A unit Go does not know.
    #[error("unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unit found.
        unit: String,
    },
    /// Not an RFC 3339 timestamp.
    #[error("invalid RFC 3339 time {0:?}")]
    Timestamp(String),
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Nanoseconds per unit; a unit is the whole run of non-digits after a number, so `ms` is
/// never read as `m`.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),
    ("\u{3bc}s", 1_000),
    ("ms", 1_000_000),
    ("s", NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("h", 3600 * NANOS_PER_SEC),
];

/// Parses a Go duration (`0`, `100ms`, `1h30m`, `1.5s`, `300µs`). A negative duration reads as
/// zero: the scheduler clamps negative delays to zero, as containerd's does.
pub fn parse_duration(input: &str) -> Result<Duration, TimeError> {
    let bad = || TimeError::Duration(input.to_owned());
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        // The number: digits, optionally a fraction; at least one digit in all.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(f) => {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                f.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        // The unit: everything up to the next digit or dot.
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(TimeError::MissingUnit(input.to_owned()));
        }
        let scale = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(|| TimeError::UnknownUnit {
                input: input.to_owned(),
                unit: unit.to_owned(),
            })?;
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad())?
        };
        let mut nanos = int.checked_mul(scale).ok_or_else(bad)?;
        // The fraction, digit by digit, as Go does (extra precision is dropped).
        let mut place = scale;
        for digit in frac_part.bytes() {
            place /= 10;
            if place == 0 {
                break;
            }
            nanos += u128::from(digit - b'0') * place;
        }
        total = total.checked_add(nanos).ok_or_else(bad)?;
        rest = after;
    }
    // Go durations are int64 nanoseconds.
    if total > i64::MAX as u128 {
        return Err(bad());
    }
    if negative {
        return Ok(Duration::ZERO);
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| bad())?;
    Ok(Duration::new(secs, (total % NANOS_PER_SEC) as u32))
}

/// A duration as Go prints it (`0s`, `100ms`, `1.5µs`, `1m30s`, `1h0m0s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.as_nanos();
        if ns == 0 {
            return f.write_str("0s");
        }
        if ns < 1_000 {
            return write!(f, "{ns}ns");
        }
        if ns < 1_000_000 {
            return write!(f, "{}\u{b5}s", decimal(ns, 1_000, 3));
        }
        if ns < NANOS_PER_SEC {
            return write!(f, "{}ms", decimal(ns, 1_000_000, 6));
        }
        let secs = ns / NANOS_PER_SEC;
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if h > 0 || m > 0 {
            write!(f, "{m}m")?;
        }
        write!(
            f,
            "{}s",
            decimal(s * NANOS_PER_SEC + ns % NANOS_PER_SEC, NANOS_PER_SEC, 9)
        )
    }
}

/// `value / unit` with its fraction (`digits` wide, trailing zeros trimmed).
fn decimal(value: u128, unit: u128, digits: usize) -> String {
    let (int, frac) = (value / unit, value % unit);
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:0digits$}");
    format!("{int}.{}", frac.trim_end_matches('0'))
}

/// Parses an RFC 3339 timestamp as Go's `time.Parse(time.RFC3339, ..)` does:
/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
pub fn parse_rfc3339(input: &str) -> Result<SystemTime, TimeError> {
    let bad = || TimeError::Timestamp(input.to_owned());
    let b = input.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, TimeError> {
        let s = input.get(range).ok_or_else(bad)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(bad());
    }
    let mut rest = &input[19..];
    let mut nanos: i64 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return Err(bad());
        }
        let mut place = 100_000_000;
        for digit in frac[..n].bytes() {
            nanos += i64::from(digit - b'0') * place;
            place /= 10;
        }
        rest = &frac[n..];
    }
    let offset_secs = match rest {
        "Z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return Err(bad()),
            };
            let tz = &rest[1..];
            if tz.len() != 5 || tz.as_bytes()[2] != b':' {
                return Err(bad());
            }
            // The offset follows any fraction, so it is read from `rest`, not by position.
            if !tz
                .bytes()
                .enumerate()
                .all(|(i, c)| i == 2 || c.is_ascii_digit())
            {
                return Err(bad());
            }
            let h: i64 = tz[..2].parse().map_err(|_| bad())?;
            let m: i64 = tz[3..].parse().map_err(|_| bad())?;
            if h > 23 || m > 59 {
                return Err(bad());
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let since_epoch = Duration::new(secs.unsigned_abs(), 0);
    let whole = if secs >= 0 {
        UNIX_EPOCH + since_epoch
    } else {
        UNIX_EPOCH - since_epoch
    };
    Ok(whole + Duration::from_nanos(nanos.unsigned_abs()))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0ms").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("100ms").unwrap(), ms(100));
        assert_eq!(parse_duration("1.5s").unwrap(), ms(1500));
        assert_eq!(parse_duration(".5s").unwrap(), ms(500));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("+2m3s").unwrap(), Duration::from_secs(123));
        assert_eq!(
            parse_duration("300\u{b5}s").unwrap(),
            Duration::from_micros(300)
        );
        assert_eq!(parse_duration("300us").unwrap(), Duration::from_micros(300));
        assert_eq!(parse_duration("7ns").unwrap(), Duration::from_nanos(7));
        assert_eq!(parse_duration("-1s").unwrap(), Duration::ZERO);
        for bad in [
            "",
            "s",
            "1",
            "1.s.",
            "1x",
            "ms",
            "1h-2m",
            "99999999999999999999h",
            ".",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse_duration("10"),
            Err(TimeError::MissingUnit(_))
        ));
        assert!(matches!(
            parse_duration("10d"),
            Err(TimeError::UnknownUnit { .. })
        ));
    }

    #[test]
    fn durations_print_like_go() {
        let show = |d: Duration| GoDuration(d).to_string();
        assert_eq!(show(Duration::ZERO), "0s");
        assert_eq!(show(Duration::from_nanos(5)), "5ns");
        assert_eq!(show(Duration::from_nanos(1500)), "1.5\u{b5}s");
        assert_eq!(show(Duration::from_millis(100)), "100ms");
        assert_eq!(show(Duration::from_micros(2250)), "2.25ms");
        assert_eq!(show(Duration::from_millis(1500)), "1.5s");
        assert_eq!(show(Duration::from_secs(90)), "1m30s");
        assert_eq!(show(Duration::from_secs(3600)), "1h0m0s");
        for s in ["100ms", "0s", "1h2m3.5s", "2.25ms"] {
            assert_eq!(show(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn rfc3339_parses_like_go() {
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), at(0));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:34:56Z").unwrap(),
            at(1_709_210_096)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T13:34:56+01:00").unwrap(),
            at(1_709_210_096)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T07:04:56-05:30").unwrap(),
            at(1_709_210_096)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T12:34:56.25Z").unwrap(),
            at(1_709_210_096) + Duration::from_millis(250)
        );
        assert_eq!(
            parse_rfc3339("1969-12-31T23:59:59Z").unwrap(),
            UNIX_EPOCH - Duration::from_secs(1)
        );
        for bad in [
            "",
            "2024-02-29",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00+0100",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00Zjunk",
            "tomorrow",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?}");
        }
    }
}
