//! Event-time arithmetic: time units, ISO-8601 parsing and formatting, all in UTC milliseconds
//! since the Unix epoch.
//!
//! The engine keeps every timestamp as an `i64` of milliseconds. Parsing accepts the ISO-8601
//! forms that JSON producers actually send (`2026-01-01T00:00:30Z`, with or without fraction,
//! with `Z`, an offset, or nothing, which means UTC; a space instead of `T`). Formatting produces
//! the Azure Stream Analytics style `2026-01-01T00:00:30.0000000Z` (seven fraction digits).

/// A time unit as written in `TumblingWindow(minute, 5)` or `DATEADD(second, 1, t)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeUnit {
    Millisecond,
    Second,
    Minute,
    Hour,
    Day,
}

impl TimeUnit {
    /// Looks up a unit by its ASA name or abbreviation, case-insensitively.
    pub(crate) fn parse(name: &str) -> Option<TimeUnit> {
        let unit = match name.to_ascii_lowercase().as_str() {
            "millisecond" | "ms" => TimeUnit::Millisecond,
            "second" | "ss" | "s" => TimeUnit::Second,
            "minute" | "mi" | "n" => TimeUnit::Minute,
            "hour" | "hh" => TimeUnit::Hour,
            "day" | "dd" | "d" => TimeUnit::Day,
            _ => return None,
        };
        Some(unit)
    }

    pub(crate) fn millis(self) -> i64 {
        match self {
            TimeUnit::Millisecond => 1,
            TimeUnit::Second => 1_000,
            TimeUnit::Minute => 60_000,
            TimeUnit::Hour => 3_600_000,
            TimeUnit::Day => 86_400_000,
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// A tiny cursor over ASCII digits for the timestamp parser.
struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, count: usize) -> Option<i64> {
        let end = self.position.checked_add(count)?;
        let slice = self.bytes.get(self.position..end)?;
        let mut value = 0i64;
        for byte in slice {
            if !byte.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i64::from(byte - b'0');
        }
        self.position = end;
        Some(value)
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.bytes.get(self.position) == Some(&byte) {
            self.position += 1;
            true
        } else {
            false
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }
}

/// Parses an ISO-8601 / RFC 3339 timestamp into epoch milliseconds. Fractions beyond
/// milliseconds are truncated. Returns `None` for anything else.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let mut cursor = Cursor { bytes: text.trim().as_bytes(), position: 0 };
    let year = cursor.digits(4)?;
    if !cursor.eat(b'-') {
        return None;
    }
    let month = cursor.digits(2)?;
    if !cursor.eat(b'-') {
        return None;
    }
    let day = cursor.digits(2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let (mut hour, mut minute, mut second, mut millis) = (0, 0, 0, 0);
    if cursor.eat(b'T') || cursor.eat(b't') || cursor.eat(b' ') {
        hour = cursor.digits(2)?;
        if !cursor.eat(b':') {
            return None;
        }
        minute = cursor.digits(2)?;
        if cursor.eat(b':') {
            second = cursor.digits(2)?;
            if cursor.eat(b'.') || cursor.eat(b',') {
                let mut scale = 100;
                let mut any = false;
                while let Some(byte) = cursor.peek().filter(u8::is_ascii_digit) {
                    millis += i64::from(byte - b'0') * scale;
                    scale /= 10;
                    cursor.position += 1;
                    any = true;
                }
                if !any {
                    return None;
                }
            }
        }
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
    }
    let mut offset_minutes = 0;
    match cursor.peek() {
        None => {}
        Some(b'Z' | b'z') => cursor.position += 1,
        Some(sign @ (b'+' | b'-')) => {
            cursor.position += 1;
            let offset_hours = cursor.digits(2)?;
            cursor.eat(b':');
            let offset_mins = cursor.digits(2)?;
            offset_minutes = offset_hours * 60 + offset_mins;
            if sign == b'-' {
                offset_minutes = -offset_minutes;
            }
        }
        Some(_) => return None,
    }
    if cursor.position != cursor.bytes.len() {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    seconds.checked_mul(1_000)?.checked_add(millis)
}

/// Formats epoch milliseconds as `YYYY-MM-DDThh:mm:ss.fffffffZ`, the style ASA outputs.
pub fn format_timestamp(millis: i64) -> String {
    let days = millis.div_euclid(86_400_000);
    let millis_of_day = millis.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let hour = millis_of_day / 3_600_000;
    let minute = millis_of_day / 60_000 % 60;
    let second = millis_of_day / 1_000 % 60;
    let fraction = millis_of_day % 1_000;
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{fraction:03}0000Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_counts_and_civil_dates_round_trip() {
        for days in [-800_000, -1, 0, 59, 365, 11_016, 2_932_896] {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
        }
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn parses_and_formats_round_trip() {
        let millis = parse_timestamp("2026-01-01T00:00:30.123Z");
        assert_eq!(millis, Some(1_767_225_630_123));
        assert_eq!(format_timestamp(1_767_225_630_123), "2026-01-01T00:00:30.1230000Z");
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.0000000Z");
        assert_eq!(format_timestamp(-1), "1969-12-31T23:59:59.9990000Z");
    }

    #[test]
    fn accepts_offsets_spaces_and_dates() {
        assert_eq!(parse_timestamp("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_timestamp("1970-01-01 00:00:01"), Some(1_000));
        assert_eq!(parse_timestamp("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_timestamp("2017-01-26T00:00:20.0000000z"), Some(1_485_388_820_000));
    }

    #[test]
    fn rejects_garbage() {
        for text in
            ["", "hello", "2026-13-01", "2026-02-30", "2026-01-01T25:00", "2026-01-01Tx", "2026-01-01Z1"]
        {
            assert_eq!(parse_timestamp(text), None, "{text}");
        }
    }

    #[test]
    fn units_by_abbreviation() {
        assert_eq!(TimeUnit::parse("MI"), Some(TimeUnit::Minute));
        assert_eq!(TimeUnit::parse("ss").map(TimeUnit::millis), Some(1_000));
        assert_eq!(TimeUnit::parse("week"), None);
    }
}
