//! UTC dates from seconds since the Unix epoch, without a date-time crate: build dates come
//! from the source epoch (never the clock), and log lines need only seconds and milliseconds.
//! Shared by the service runtime (`/version`, logs) and the pipeline (image `created`, tags).

use std::time::{SystemTime, UNIX_EPOCH};

/// `2026-11-28T18:05:48.123Z` for the current time (log lines only).
pub fn rfc3339_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let (date, time) = split(now.as_secs());
    format!("{date}T{time}.{:03}Z", now.subsec_millis())
}

/// `2026-11-28T18:05:48Z` for seconds since the Unix epoch.
pub fn rfc3339(secs: u64) -> String {
    let (date, time) = split(secs);
    format!("{date}T{time}Z")
}

/// `20261128` for seconds since the Unix epoch (the `nightly-YYYYMMDD` tag).
pub fn yyyymmdd(secs: u64) -> String {
    split(secs).0.replace('-', "")
}

fn split(secs: u64) -> (String, String) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    (format!("{y:04}-{m:02}-{d:02}"), format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60))
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to a proleptic Gregorian date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_892_748), "2026-11-28T19:05:48Z");
        assert_eq!(super::yyyymmdd(1_795_892_748), "20261128");
    }
}
