//! The three kinds of series: [`Counter`] (only goes up), [`Gauge`] (a level) and [`Histogram`]
//! (durations in buckets). Each update is one or two relaxed atomic operations: metrics order
//! nothing, and a scrape that sees a histogram's count a moment ahead of its sum is harmless.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A count that only goes up (Prometheus resets are process restarts).
#[derive(Debug, Default)]
pub struct Counter {
    value: AtomicU64,
}

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, amount: u64) {
        self.value.fetch_add(amount, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A level that goes up and down: open connections, devices online, a watermark's lag. Kept as
/// the bits of an `f64`; changes are compare-and-swap loops, which is fine for what changes a
/// gauge (a connection opening, a checkpoint), never a per-record path.
#[derive(Debug, Default)]
pub struct Gauge {
    bits: AtomicU64,
}

impl Gauge {
    pub fn inc(&self) {
        self.add(1.0);
    }

    pub fn dec(&self) {
        self.add(-1.0);
    }

    pub fn add(&self, amount: f64) {
        let _ = self.bits.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            Some((f64::from_bits(bits) + amount).to_bits())
        });
    }

    pub fn set(&self, value: f64) {
        self.bits.store(value.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Relaxed))
    }
}

/// The upper bounds, in seconds, of every latency histogram's buckets: 50 µs to 10 s, roughly
/// three per decade, which spans an fsync on a fast disk to a webhook that times out. One set
/// for all, so that histograms of different components can be compared and aggregated.
pub const LATENCY_BUCKETS_SECONDS: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// The bucket bounds in nanoseconds, so an observation is compared without floating point.
const BOUNDS_NANOS: [u64; 17] = {
    let mut nanos = [0u64; 17];
    let mut index = 0;
    while index < LATENCY_BUCKETS_SECONDS.len() {
        nanos[index] = (LATENCY_BUCKETS_SECONDS[index] * 1e9) as u64;
        index += 1;
    }
    nanos
};

/// A histogram of durations over [`LATENCY_BUCKETS_SECONDS`] (plus `+Inf`). Buckets are stored
/// per bucket and made cumulative when rendered; the sum is kept in nanoseconds.
#[derive(Debug, Default)]
pub struct Histogram {
    /// One per bound, then the `+Inf` bucket.
    buckets: [AtomicU64; 18],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observes the time since `start`.
    pub fn observe_since(&self, start: std::time::Instant) {
        self.observe(start.elapsed());
    }

    /// The cumulative count at each bound, then at `+Inf` (the total count).
    pub fn cumulative_counts(&self) -> [u64; 18] {
        let mut counts = [0u64; 18];
        let mut running = 0u64;
        for (count, bucket) in counts.iter_mut().zip(&self.buckets) {
            running += bucket.load(Ordering::Relaxed);
            *count = running;
        }
        counts
    }

    pub fn count(&self) -> u64 {
        self.cumulative_counts()[17]
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let check = |duration: Duration, first_bucket: usize| {
            let histogram = Histogram::default();
            histogram.observe(duration);
            let counts = histogram.cumulative_counts();
            for (index, count) in counts.iter().enumerate() {
                assert_eq!(*count, u64::from(index >= first_bucket), "{duration:?} bucket {index}");
            }
        };
        check(Duration::ZERO, 0);
        check(Duration::from_micros(50), 0);
        check(Duration::from_nanos(50_001), 1);
        check(Duration::from_millis(1), 4);
        check(Duration::from_secs(10), 16);
        check(Duration::from_secs(11), 17);
        check(Duration::MAX, 17);
    }

    #[test]
    fn sum_and_count_add_up() {
        let histogram = Histogram::default();
        for millis in [1, 2, 3, 994] {
            histogram.observe(Duration::from_millis(millis));
        }
        assert_eq!(histogram.count(), 4);
        assert!((histogram.sum_seconds() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn gauges_go_both_ways() {
        let gauge = Gauge::default();
        gauge.inc();
        gauge.inc();
        gauge.dec();
        assert_eq!(gauge.get(), 1.0);
        gauge.set(-4.5);
        assert_eq!(gauge.get(), -4.5);
    }
}
