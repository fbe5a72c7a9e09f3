//! Per-trigger counters and delivery latency, shared by the consumer loop, its delivery tasks and
//! the status reporter without locks.
//!
//! Latency is the time from the record's timestamp to its acknowledgement, kept in a log-scale
//! histogram (four buckets per power of two of milliseconds, so a quantile is accurate to within
//! about 19%) that never grows.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Buckets 0..16 hold 0..16 ms exactly; above, four per power of two up to 2^40 ms.
const LINEAR_BUCKETS: usize = 16;
const SUB_BUCKETS: usize = 4;
const LATENCY_BUCKETS: usize = LINEAR_BUCKETS + SUB_BUCKETS * 37;

#[derive(Debug)]
pub struct TriggerStats {
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub filtered_out: AtomicU64,
    pub in_flight: AtomicI64,
    latency_buckets: Vec<AtomicU64>,
    latency_max_ms: AtomicU64,
}

impl Default for TriggerStats {
    fn default() -> Self {
        TriggerStats {
            delivered: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            filtered_out: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            latency_buckets: (0..LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            latency_max_ms: AtomicU64::new(0),
        }
    }
}

/// A point-in-time copy of a trigger's counters, as the status topic carries it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsSnapshot {
    pub delivered: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub filtered_out: u64,
    pub in_flight: i64,
    pub latency_p50_ms: u64,
    pub latency_p99_ms: u64,
    pub latency_max_ms: u64,
}

fn bucket_of(latency_ms: u64) -> usize {
    if latency_ms < LINEAR_BUCKETS as u64 {
        return latency_ms as usize;
    }
    let power = 63 - u64::from(latency_ms.leading_zeros()); // >= 4
    let sub = ((latency_ms >> (power - 2)) & 0b11) as usize;
    (LINEAR_BUCKETS + (power as usize - 4) * SUB_BUCKETS + sub).min(LATENCY_BUCKETS - 1)
}

/// The largest latency a bucket holds.
fn bucket_upper_ms(bucket: usize) -> u64 {
    if bucket < LINEAR_BUCKETS {
        return bucket as u64;
    }
    let power = (bucket - LINEAR_BUCKETS) / SUB_BUCKETS + 4;
    let sub = ((bucket - LINEAR_BUCKETS) % SUB_BUCKETS) as u64;
    ((4 + sub + 1) << (power - 2)) - 1
}

impl TriggerStats {
    pub fn record_latency(&self, latency_ms: u64) {
        self.latency_buckets[bucket_of(latency_ms)].fetch_add(1, Ordering::Relaxed);
        self.latency_max_ms.fetch_max(latency_ms, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let counts: Vec<u64> =
            self.latency_buckets.iter().map(|bucket| bucket.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let quantile = |fraction: f64| {
            if total == 0 {
                return 0;
            }
            let rank = ((total as f64) * fraction).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (bucket, count) in counts.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    return bucket_upper_ms(bucket);
                }
            }
            0
        };
        let max = self.latency_max_ms.load(Ordering::Relaxed);
        StatsSnapshot {
            delivered: self.delivered.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            filtered_out: self.filtered_out.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            latency_p50_ms: quantile(0.5).min(max),
            latency_p99_ms: quantile(0.99).min(max),
            latency_max_ms: max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_latency_in_order() {
        let mut previous = 0;
        for latency in (0..100_000).chain([u64::MAX / 2, u64::MAX]) {
            let bucket = bucket_of(latency);
            assert!(bucket >= previous, "{latency}");
            assert!(bucket < LATENCY_BUCKETS);
            if bucket < LATENCY_BUCKETS - 1 {
                assert!(latency <= bucket_upper_ms(bucket), "{latency} above bucket {bucket}");
                // Upper bound within 25% of the value: the histogram's promised precision.
                assert!(bucket_upper_ms(bucket) as f64 <= latency as f64 * 1.25 + 1.0, "{latency}");
            }
            previous = bucket;
        }
    }

    #[test]
    fn quantiles_come_from_the_histogram() {
        let stats = TriggerStats::default();
        for latency in 1..=100 {
            stats.record_latency(latency);
        }
        let snapshot = stats.snapshot();
        assert!((50..=63).contains(&snapshot.latency_p50_ms), "{snapshot:?}");
        assert!((99..=100).contains(&snapshot.latency_p99_ms), "{snapshot:?}");
        assert_eq!(snapshot.latency_max_ms, 100);
    }
}
