//! Go's duration strings (`time.ParseDuration`), the form containerd's `[timeouts]` values take:
//! `"5s"`, `"1m30s"`, `"1.5h"`, `"300ms"`, `"0"`. Units `ns`, `us` (`µs`, `μs`), `ms`, `s`, `m`,
//! `h`. Negative durations are refused: every Berth duration is a timeout.

use std::time::Duration;

/// Nanoseconds per unit, longest unit names first so that `ms` is not read as `m` + `s`.
const UNITS: [(&str, u128); 9] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3600 * 1_000_000_000),
    ("", 0),
];

/// Parses a Go duration string; `None` when it is not one (or is negative).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let (unit, scale) = UNITS
            .iter()
            .filter(|(name, _)| !name.is_empty())
            .filter(|(name, _)| tail.starts_with(name))
            .max_by_key(|(name, _)| name.len())?;
        rest = &tail[unit.len()..];
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        total = total.checked_add(whole.checked_mul(*scale)?)?;
        // The fraction, digit by digit, down to the nanosecond.
        let mut place = *scale;
        for d in fraction.chars() {
            place /= 10;
            total = total.checked_add(u128::from(d.to_digit(10)?) * place)?;
        }
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    let nanos = u32::try_from(total % 1_000_000_000).ok()?;
    Some(Duration::new(secs, nanos))
}

/// Formats a duration the way Go prints one (`5s`, `1m30s`, `1.5s`, `300ms`, `0s`), so that
/// `berthd config default` shows what containerd's does.
pub fn format_go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let nanos = d.as_nanos();
    if nanos < 1_000_000_000 {
        for (unit, scale) in [("ms", 1_000_000u128), ("µs", 1_000), ("ns", 1)] {
            if nanos >= scale {
                return format!("{}{unit}", decimal(nanos, scale));
            }
        }
    }
    let (h, rem) = (nanos / 3_600_000_000_000, nanos % 3_600_000_000_000);
    let (m, rem) = (rem / 60_000_000_000, rem % 60_000_000_000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", decimal(rem, 1_000_000_000)));
    out
}

/// `n / scale` with the fraction's trailing zeros dropped.
fn decimal(n: u128, scale: u128) -> String {
    let (whole, frac) = (n / scale, n % scale);
    if frac == 0 {
        return whole.to_string();
    }
    let width = scale.to_string().len() - 1;
    let frac = format!("{frac:0width$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ms = Duration::from_millis;
        for (s, d) in [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("5s", ms(5000)),
            ("1m30s", ms(90_000)),
            ("1.5s", ms(1500)),
            (".5s", ms(500)),
            ("300ms", ms(300)),
            ("2h", ms(7_200_000)),
            ("1h2m3s4ms", ms(3_723_004)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("+3s", ms(3000)),
        ] {
            assert_eq!(parse_go_duration(s), Some(d), "{s}");
        }
        for bad in ["", "5", "s", "5 s", "-1s", "1x", "1.s.", "5sec", "."] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_like_go() {
        for (d, s) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(300), "300ms"),
        ] {
            assert_eq!(format_go_duration(d), s);
            assert_eq!(parse_go_duration(s), Some(d));
        }
    }
}
