//! Where a captured file goes and what its name says: the Hive-style layout readers discover on
//! their own, `TOPIC/date=YYYY-MM-DD/hour=HH/partition=P/{first offset}-{last offset}.parquet`.
//!
//! Pure: timestamps in, paths out, and paths back into the offsets they name. The date and hour
//! are the record timestamp's in UTC. Offsets are zero-padded to 20 digits so that a listing
//! sorts files in offset order. A file's name is its offset range, so a rewrite of the same
//! records after a crash lands on the same name; recovery reads the ranges back from a listing
//! (`parse_file_name`) to skip what is already visible.

/// Milliseconds in an hour.
const HOUR_MS: i64 = 3_600_000;
/// Digits of a zero-padded offset in a file name (`i64::MAX` has 19; one to spare).
const OFFSET_DIGITS: usize = 20;
/// The directory under a topic's directory that holds files being written. It starts with `_`,
/// which Hive-style readers (pyarrow, Spark) skip, and holds no `.parquet` name, which globs skip.
pub const STAGING_DIR: &str = "_staging";

/// An hour of UTC time, the unit of the `date=`/`hour=` directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HourBucket {
    /// Hours since the Unix epoch (negative before it).
    hours_since_epoch: i64,
}

impl HourBucket {
    /// The hour holding `timestamp_ms` (Unix milliseconds, UTC).
    pub fn of_timestamp_ms(timestamp_ms: i64) -> HourBucket {
        HourBucket { hours_since_epoch: timestamp_ms.div_euclid(HOUR_MS) }
    }

    /// `date=YYYY-MM-DD/hour=HH`.
    pub fn directory(&self) -> String {
        let days = self.hours_since_epoch.div_euclid(24);
        let hour = self.hours_since_epoch.rem_euclid(24);
        let (year, month, day) = civil_from_days(days);
        format!("date={year:04}-{month:02}-{day:02}/hour={hour:02}")
    }
}

/// The (year, month, day) of a day counted from 1970-01-01, in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`, exact for every `i64` day a timestamp gives).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The path of a finished file, relative to the destination's root.
pub fn file_path(
    topic: &str,
    hour: HourBucket,
    partition: i32,
    first_offset: i64,
    last_offset: i64,
) -> String {
    format!("{topic}/{}/partition={partition}/{}", hour.directory(), file_name(first_offset, last_offset))
}

/// `{first}-{last}.parquet`, both zero-padded.
pub fn file_name(first_offset: i64, last_offset: i64) -> String {
    format!("{first_offset:0width$}-{last_offset:0width$}.parquet", width = OFFSET_DIGITS)
}

/// The path a file is written under before it is made visible, relative to the destination's
/// root: in the topic's staging directory, named by partition and first offset, so a restart
/// finds (and removes) what a killed writer of the same partition left.
pub fn staging_path(topic: &str, partition: i32, first_offset: i64) -> String {
    format!("{topic}/{STAGING_DIR}/{}", staging_name(partition, first_offset))
}

/// A staging file's name: `p{partition}-{first offset}.parquet.tmp`.
pub fn staging_name(partition: i32, first_offset: i64) -> String {
    format!("p{partition}-{first_offset:0width$}.parquet.tmp", width = OFFSET_DIGITS)
}

/// Whether a staging file name belongs to `partition`.
pub fn is_staging_name_of(name: &str, partition: i32) -> bool {
    name.strip_prefix(&format!("p{partition}-")).is_some_and(|rest| rest.ends_with(".parquet.tmp"))
}

/// A finished file found in a listing: its partition and offset range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRange {
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// Reads the partition and offset range back from a finished file's path (relative or not), or
/// `None` for anything that is not one (another tool's file, a staging file).
pub fn parse_file_path(path: &str) -> Option<FileRange> {
    let mut parts = path.rsplit('/');
    let (first_offset, last_offset) = parse_file_name(parts.next()?)?;
    let partition = parts.next()?.strip_prefix("partition=")?.parse().ok()?;
    Some(FileRange { partition, first_offset, last_offset })
}

/// `{first}-{last}.parquet` into its two offsets.
pub fn parse_file_name(name: &str) -> Option<(i64, i64)> {
    let (first, last) = name.strip_suffix(".parquet")?.split_once('-')?;
    let first_offset: i64 = first.parse().ok()?;
    let last_offset: i64 = last.parse().ok()?;
    (0 <= first_offset && first_offset <= last_offset).then_some((first_offset, last_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_hour(timestamp_ms: i64, expected: &str) {
        assert_eq!(
            HourBucket::of_timestamp_ms(timestamp_ms).directory(),
            expected,
            "timestamp {timestamp_ms}"
        );
    }

    #[test]
    fn hour_directories_are_utc_calendar_hours() {
        check_hour(0, "date=1970-01-01/hour=00");
        check_hour(HOUR_MS - 1, "date=1970-01-01/hour=00");
        check_hour(HOUR_MS, "date=1970-01-01/hour=01");
        check_hour(-1, "date=1969-12-31/hour=23");
        // 2024-02-29T23:59:59.999Z, a leap day, and the millisecond after it.
        check_hour(1_709_251_199_999, "date=2024-02-29/hour=23");
        check_hour(1_709_251_200_000, "date=2024-03-01/hour=00");
        // 2000-12-31T12:00:00Z (a leap year divisible by 400).
        check_hour(978_264_000_000, "date=2000-12-31/hour=12");
    }

    #[test]
    fn file_paths_round_trip() {
        let hour = HourBucket::of_timestamp_ms(1_709_251_200_000);
        let path = file_path("telemetry", hour, 3, 100, 199);
        assert_eq!(
            path,
            "telemetry/date=2024-03-01/hour=00/partition=3/00000000000000000100-00000000000000000199.parquet"
        );
        assert_eq!(
            parse_file_path(&path),
            Some(FileRange { partition: 3, first_offset: 100, last_offset: 199 })
        );
        assert_eq!(parse_file_path(&format!("/data/{path}")).map(|range| range.last_offset), Some(199));
    }

    #[test]
    fn other_files_are_not_captured_files() {
        for path in [
            "t/date=2024-03-01/hour=00/partition=3/100-99.parquet",
            "t/date=2024-03-01/hour=00/partition=x/1-2.parquet",
            "t/date=2024-03-01/hour=00/1-2.parquet",
            "t/_staging/p3-00000000000000000100.parquet.tmp",
            "t/date=2024-03-01/hour=00/partition=3/1-2.parquet.tmp",
            "1-2.parquet",
        ] {
            assert_eq!(parse_file_path(path), None, "{path}");
        }
    }

    #[test]
    fn staging_names_belong_to_one_partition() {
        let name = staging_name(1, 42);
        assert!(is_staging_name_of(&name, 1));
        assert!(!is_staging_name_of(&name, 11));
        assert!(!is_staging_name_of(&staging_name(11, 42), 1));
        assert!(staging_path("t", 1, 42).starts_with("t/_staging/"));
    }
}
