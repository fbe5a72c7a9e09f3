//! What every benchmark mode measures with: statistics (the median, nearest-rank percentiles, a
//! log-linear latency histogram) and the machine's accounting (CPU time of this process, of
//! another process and of all CPUs, from `getrusage` and `/proc`; a process's resident memory).
//!
//! The parsers take the text of a `/proc` file and are pure, so they are unit-tested on captured
//! lines; the readers around them only open the file. Figures a mode derives from these (CPU per
//! event, shares of the machine) stay in that mode.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;

// --- statistics ----------------------------------------------------------------------------------

/// The median; the mean of the middle two for an even count. `None` for no values.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        len if len % 2 == 0 => Some((sorted[middle - 1] + sorted[middle]) / 2.0),
        _ => Some(sorted[middle]),
    }
}

/// The index of the median value (the lower middle one for an even count), to report the other
/// figures of the run whose rate was the median.
pub(crate) fn middle_index(values: &[f64]) -> Option<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&left, &right| values[left].total_cmp(&values[right]));
    order.get(values.len().saturating_sub(1) / 2).copied()
}

/// The 1-based nearest rank of `percent` among `count` values: the smallest rank with at least
/// `percent`% of the values at or below it, as HdrHistogram reports it. `count` must be above 0.
fn nearest_rank(count: u64, percent: f64) -> u64 {
    // The tolerance keeps binary fractions from pushing an exact rank up by one (99.9% of 1000
    // values computes as 999.0000000000001).
    ((percent * count as f64 / 100.0 - 1e-9).ceil() as u64).clamp(1, count)
}

/// The nearest-rank percentile of `sorted` (ascending). `None` when empty.
pub(crate) fn percentile(sorted: &[u64], percent: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = nearest_rank(sorted.len() as u64, percent);
    Some(sorted[rank as usize - 1])
}

/// Bits of sub-bucket index: each power of two is cut into 32 buckets, so a bucket is at most
/// 1/32 of its values wide.
const SUB_BUCKET_BITS: u32 = 5;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
/// Latencies are clamped below 2^41 us (25 days), which bounds the bucket count.
const LATENCY_MICROS_MAX: u64 = (1 << 41) - 1;
const LATENCY_BUCKETS: usize = ((41 - SUB_BUCKET_BITS + 1) as usize) * SUB_BUCKETS as usize;

/// Latencies in microseconds, in log-linear buckets (exact below 32 us, then 32 buckets per
/// power of two), counted with atomics so every connection task records into one histogram
/// without a lock. Fixed size whatever the message count.
#[derive(Debug)]
pub(crate) struct LatencyHistogram {
    counts: Box<[AtomicU64]>,
    max_micros: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: (0..LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_micros: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    pub(crate) fn record(&self, latency: Duration) {
        let micros = (latency.as_micros() as u64).min(LATENCY_MICROS_MAX);
        self.counts[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
    }

    pub(crate) fn max_micros(&self) -> u64 {
        self.max_micros.load(Ordering::Relaxed)
    }

    /// The nearest-rank percentile, as the upper edge of its bucket (never above the largest
    /// value recorded); `None` when nothing was recorded.
    pub(crate) fn percentile(&self, percent: f64) -> Option<u64> {
        let counts: Vec<u64> = self.counts.iter().map(|count| count.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = nearest_rank(total, percent);
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(bucket_high(index).min(self.max_micros()));
            }
        }
        Some(self.max_micros())
    }
}

/// The bucket of a value up to [`LATENCY_MICROS_MAX`].
fn bucket_of(micros: u64) -> usize {
    if micros < SUB_BUCKETS {
        return micros as usize;
    }
    // micros >> shift is in [32, 64): the top six bits of the value.
    let shift = 63 - micros.leading_zeros() - SUB_BUCKET_BITS;
    ((u64::from(shift) + 1) * SUB_BUCKETS + (micros >> shift) - SUB_BUCKETS) as usize
}

/// The largest value in bucket `index`.
fn bucket_high(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return index;
    }
    let shift = index / SUB_BUCKETS - 1;
    ((SUB_BUCKETS + index % SUB_BUCKETS + 1) << shift) - 1
}

// --- CPU and memory ------------------------------------------------------------------------------

/// The unit of the CPU times in `/proc` (`USER_HZ`), which Linux fixes at 100 on x86-64, arm64
/// and riscv whatever the kernel's own tick rate.
pub(crate) const USER_HZ: u64 = 100;

/// User plus system CPU time of this process so far, to the microsecond (`getrusage`); zero
/// where the call fails.
pub(crate) fn process_cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` through a valid pointer to one, and nothing else.
    let status = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if status != 0 {
        return Duration::ZERO;
    }
    // SAFETY: zero-initialised, then filled in by a successful getrusage.
    let usage = unsafe { usage.assume_init() };
    let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// utime + stime of process `pid` (this process for `None`) so far, in [`USER_HZ`] ticks, from
/// `/proc/{pid}/stat`.
pub(crate) fn process_ticks(pid: Option<u32>) -> anyhow::Result<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_process_ticks(&stat).with_context(|| format!("no CPU times in {path}"))
}

/// utime + stime of a `/proc/PID/stat` line. The command name (field 2) is in parentheses and
/// may hold spaces, so fields are counted after its closing parenthesis.
fn parse_process_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow; utime and stime are fields 14 and 15.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// All CPUs' time so far, from the `cpu` line of `/proc/stat`, in [`USER_HZ`] ticks summed over
/// the CPUs, and how many CPUs there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MachineTicks {
    /// user, nice, system, irq, softirq and steal (guest time is already in user).
    pub(crate) busy: u64,
    /// The softirq part of `busy`: where the kernel does much of the work of TCP over loopback,
    /// charged to no process.
    pub(crate) softirq: u64,
    /// busy plus idle and iowait.
    pub(crate) total: u64,
    /// The `cpuN` lines.
    pub(crate) cpus: usize,
}

impl MachineTicks {
    /// `/proc/stat` now; an error where it cannot be read (not Linux) or has no `cpu` line.
    pub(crate) fn read() -> anyhow::Result<MachineTicks> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        MachineTicks::parse(&stat).context("no cpu line in /proc/stat")
    }

    pub(crate) fn parse(stat: &str) -> Option<MachineTicks> {
        let fields: Vec<u64> = stat
            .lines()
            .find_map(|line| line.strip_prefix("cpu "))?
            .split_whitespace()
            .take(8)
            .map(|field| field.parse().ok())
            .collect::<Option<_>>()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = fields[..] else { return None };
        let cpus = stat
            .lines()
            .filter(|line| {
                line.strip_prefix("cpu")
                    .is_some_and(|rest| rest.starts_with(|first: char| first.is_ascii_digit()))
            })
            .count();
        let busy = user + nice + system + irq + softirq + steal;
        Some(MachineTicks { busy, softirq, total: busy + idle + iowait, cpus })
    }

    /// The ticks spent between `earlier` and this reading.
    pub(crate) fn since(&self, earlier: &MachineTicks) -> MachineTicks {
        MachineTicks {
            busy: self.busy.saturating_sub(earlier.busy),
            softirq: self.softirq.saturating_sub(earlier.softirq),
            total: self.total.saturating_sub(earlier.total),
            cpus: self.cpus,
        }
    }
}

/// A process's resident memory (VmRSS) in KiB, from `/proc/{pid}/status`.
pub(crate) fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {path} (is the server running here?)"))?;
    parse_resident_kib(&status).with_context(|| format!("no VmRSS line in {path}"))
}

fn parse_resident_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_no_values() {
        let check =
            |values: &[f64], expected: Option<f64>| assert_eq!(median(values), expected, "{values:?}");
        check(&[], None);
        check(&[3.0], Some(3.0));
        check(&[5.0, 1.0, 3.0], Some(3.0));
        check(&[4.0, 1.0, 3.0, 2.0], Some(2.5));
    }

    #[test]
    fn the_middle_window_is_the_median_one() {
        assert_eq!(middle_index(&[]), None);
        assert_eq!(middle_index(&[5.0]), Some(0));
        assert_eq!(middle_index(&[30.0, 10.0, 20.0]), Some(2));
        assert_eq!(middle_index(&[4.0, 1.0, 3.0, 2.0]), Some(3));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let hundred: Vec<u64> = (1..=100).collect();
        let thousand: Vec<u64> = (1..=1000).collect();
        let check = |sorted: &[u64], percent: f64, expected: Option<u64>| {
            assert_eq!(percentile(sorted, percent), expected, "p{percent} of {} values", sorted.len());
        };
        check(&[], 50.0, None);
        check(&[7], 0.0, Some(7));
        check(&[7], 99.9, Some(7));
        check(&hundred, 50.0, Some(50));
        check(&hundred, 99.0, Some(99));
        check(&hundred, 99.9, Some(100));
        check(&hundred, 100.0, Some(100));
        check(&thousand, 99.9, Some(999));
        check(&thousand, 0.0, Some(1));
    }

    #[test]
    fn histogram_buckets_cover_every_value_within_a_32nd() {
        let mut previous_high = None;
        for index in 0..LATENCY_BUCKETS {
            let high = bucket_high(index);
            let low = previous_high.map_or(0, |previous| previous + 1);
            assert_eq!((bucket_of(low), bucket_of(high)), (index, index), "bucket {index}: {low}..={high}");
            assert!((high - low) * SUB_BUCKETS <= low.max(1), "bucket {index} too wide: {low}..={high}");
            previous_high = Some(high);
        }
        assert_eq!(previous_high, Some(LATENCY_MICROS_MAX));
    }

    #[test]
    fn histogram_percentiles() {
        let check = |micros: &[u64], expected: &str| {
            let histogram = LatencyHistogram::default();
            for &value in micros {
                histogram.record(Duration::from_micros(value));
            }
            let shown = |value: Option<u64>| value.map_or("-".to_string(), |value| value.to_string());
            let actual = format!(
                "p50={} p99={} max={}",
                shown(histogram.percentile(50.0)),
                shown(histogram.percentile(99.0)),
                histogram.max_micros()
            );
            assert_eq!(actual, expected, "{micros:?}");
        };
        check(&[], "p50=- p99=- max=0");
        check(&[7], "p50=7 p99=7 max=7");
        // 1..=100 us: exact below 32, then buckets two wide; p99 is capped by the max.
        check(&(1..=100).collect::<Vec<_>>(), "p50=50 p99=99 max=100");
        // 990 values of 1 ms and 10 of 50 ms: p99 is still 1 ms (the bucket 992..=1007 us).
        let mut skewed = vec![1000; 990];
        skewed.extend([50_000; 10]);
        check(&skewed, "p50=1007 p99=1007 max=50000");
        check(
            &[u64::MAX / 2],
            &format!("p50={LATENCY_MICROS_MAX} p99={LATENCY_MICROS_MAX} max={LATENCY_MICROS_MAX}"),
        );
    }

    #[test]
    fn process_ticks_come_after_the_command_name() {
        let stat = "4242 (rdk:broker 0) S 1 4242 4242 0 -1 4194560 100 0 0 0 1200 345 0 0 20 0 9 0\n";
        assert_eq!(parse_process_ticks(stat), Some(1545));
        assert_eq!(parse_process_ticks("garbage"), None);
    }

    #[test]
    fn machine_ticks_come_from_the_cpu_line_of_proc_stat() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\ncpu1 50 3 25 500 10 2 1 1 0 0\nintr 1\n";
        assert_eq!(
            MachineTicks::parse(stat),
            Some(MachineTicks { busy: 161, softirq: 2, total: 1181, cpus: 2 })
        );
        let machine = "cpu  100 5 20 1000 7 1 2 3 0 0\ncpu0 50 2 10 500 3 0 1 1 0 0\n";
        assert_eq!(
            MachineTicks::parse(machine),
            Some(MachineTicks { busy: 131, softirq: 2, total: 1138, cpus: 1 })
        );
        assert_eq!(MachineTicks::parse("cpu  1 2 3\n"), None);
        assert_eq!(MachineTicks::parse(""), None);
        let later = MachineTicks { busy: 200, softirq: 5, total: 1300, cpus: 2 };
        let earlier = MachineTicks { busy: 161, softirq: 2, total: 1181, cpus: 2 };
        assert_eq!(later.since(&earlier), MachineTicks { busy: 39, softirq: 3, total: 119, cpus: 2 });
    }

    #[test]
    fn resident_memory_is_the_vmrss_line() {
        let status = "Name:\ttidewater\nVmHWM:\t  52000 kB\nVmRSS:\t   48128 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_resident_kib(status), Some(48128));
        assert_eq!(parse_resident_kib("Name:\tx\n"), None);
    }
}
