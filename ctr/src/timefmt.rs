//! RFC 3339 formatting of timestamps without a date library (UTC, civil-from-days).

use std::time::{SystemTime, UNIX_EPOCH};

/// Go's zero time as seconds since the epoch: peers send it for "unset".
const GO_ZERO_SECONDS: i64 = -62_135_596_800;

/// Seconds and nanoseconds since the epoch, now.
pub fn now() -> (i64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
}

/// Nanoseconds since the epoch, now.
pub fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for `secs` since the epoch.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`, Go's RFC3339Nano without trailing zeros.
pub fn rfc3339_nano(secs: i64, nanos: i32) -> String {
    let base = rfc3339(secs);
    if nanos <= 0 {
        return base;
    }
    let frac = format!("{nanos:09}");
    let frac = frac.trim_end_matches('0');
    format!("{}.{frac}Z", &base[..base.len() - 1])
}

/// RFC 3339 of a proto timestamp, or `-` when unset (absent or Go's zero time).
pub fn timestamp(ts: Option<&prost_types::Timestamp>) -> String {
    match ts {
        Some(t) if t.seconds != GO_ZERO_SECONDS && (t.seconds != 0 || t.nanos != 0) => {
            rfc3339(t.seconds)
        }
        _ => "-".to_owned(),
    }
}

/// Seconds since `ts` (0 when unset).
pub fn age_secs(ts: Option<&prost_types::Timestamp>) -> i64 {
    match ts {
        Some(t) if t.seconds != GO_ZERO_SECONDS => now().0 - t.seconds,
        _ => 0,
    }
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339_nano(1_700_000_000, 500_000_000),
            "2023-11-14T22:13:20.5Z"
        );
        assert_eq!(timestamp(None), "-");
        let zero = prost_types::Timestamp {
            seconds: GO_ZERO_SECONDS,
            nanos: 0,
        };
        assert_eq!(timestamp(Some(&zero)), "-");
    }
}
