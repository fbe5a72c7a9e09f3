//! The timestamps jobs print (RFC 3339 with milliseconds, as CloudEvents' `time`). The
//! calendar arithmetic is the SQL engine's ([`tidewater_sql::civil_from_days`]); the wall clock
//! is `tidewater_client::now_ms`.

use tidewater_sql::civil_from_days;

/// Milliseconds since the Unix epoch as RFC 3339 in UTC with milliseconds,
/// e.g. `2023-11-14T22:13:20.000Z`.
pub(crate) fn rfc3339_millis(epoch_ms: i64) -> String {
    let days = epoch_ms.div_euclid(86_400_000);
    let in_day = epoch_ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
    }
}
