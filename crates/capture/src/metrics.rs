//! The captures' series on `/metrics`, read at scrape time from each capture's
//! [`CaptureStats`], which its runner already updates with atomics: so capturing pays nothing
//! for them. A capture's series stay while its stats live (held weakly here).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tidewater_metrics::{Collect, Exposition, MetricType};

use crate::runner::CaptureStats;

/// Lets `/metrics` show `stats` under `capture="NAME"` for as long as they live.
pub fn register(name: &str, stats: &Arc<CaptureStats>) {
    let collector = COLLECTOR.get_or_init(|| {
        let collector = Arc::new(CaptureCollector::default());
        let as_collect: Arc<dyn Collect> = collector.clone();
        tidewater_metrics::global().add_collector(Arc::downgrade(&as_collect));
        collector
    });
    let mut captures = collector.captures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    captures.retain(|(known, stats)| known != name && stats.strong_count() > 0);
    captures.push((name.to_string(), Arc::downgrade(stats)));
}

/// The process's one collector, kept alive here (the registry holds collectors weakly).
static COLLECTOR: OnceLock<Arc<CaptureCollector>> = OnceLock::new();

#[derive(Default)]
struct CaptureCollector {
    captures: Mutex<Vec<(String, Weak<CaptureStats>)>>,
}

/// Which of a capture's counters a family reads.
type CounterOf = fn(&CaptureStats) -> &AtomicU64;

/// The counter families: name, help, and which of the stats' counters.
const COUNTERS: [(&str, &str, CounterOf); 6] = [
    ("tidewater_capture_records_written_total", "Records written to visible files.", |stats| {
        &stats.records_written
    }),
    ("tidewater_capture_bytes_written_total", "Bytes of the files made visible.", |stats| {
        &stats.bytes_written
    }),
    ("tidewater_capture_files_written_total", "Files made visible.", |stats| &stats.files_written),
    (
        "tidewater_capture_records_skipped_total",
        "Records skipped because a visible file already held them (a restart after a crash).",
        |stats| &stats.records_skipped,
    ),
    (
        "tidewater_capture_non_json_values_total",
        "Values that were not JSON objects, kept in the raw value column (json columns).",
        |stats| &stats.non_json_values,
    ),
    (
        "tidewater_capture_type_conflicts_total",
        "Fields whose type differed from their column's, kept as text (json columns).",
        |stats| &stats.type_conflicts,
    ),
];

impl Collect for CaptureCollector {
    fn collect(&self, page: &mut Exposition) {
        let live: Vec<(String, Arc<CaptureStats>)> = self
            .captures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter_map(|(name, stats)| Some((name.clone(), stats.upgrade()?)))
            .collect();
        if live.is_empty() {
            return;
        }
        for (name, help, counter) in COUNTERS {
            page.family(name, help, MetricType::Counter);
            for (capture, stats) in &live {
                page.sample(name, &[("capture", capture)], counter(stats).load(Ordering::Relaxed) as f64);
            }
        }
        let failing = "tidewater_capture_failing";
        page.family(
            failing,
            "1 while the capture's latest write or listing failed (see capture describe).",
            MetricType::Gauge,
        );
        for (capture, stats) in &live {
            page.sample(failing, &[("capture", capture)], f64::from(u8::from(stats.last_error().is_some())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_shows_while_its_stats_live_under_its_latest_registration() {
        let stats = Arc::new(CaptureStats::default());
        stats.records_written.fetch_add(7, Ordering::Relaxed);
        register("metrics-test", &stats);
        let page = tidewater_metrics::global().render();
        assert!(
            page.contains("tidewater_capture_records_written_total{capture=\"metrics-test\"} 7\n"),
            "{page}"
        );
        assert!(page.contains("tidewater_capture_failing{capture=\"metrics-test\"} 0\n"), "{page}");
        // Registered again (a restarted runner): one series, the new stats.
        let again = Arc::new(CaptureStats::default());
        register("metrics-test", &again);
        let page = tidewater_metrics::global().render();
        assert!(
            page.contains("tidewater_capture_records_written_total{capture=\"metrics-test\"} 0\n"),
            "{page}"
        );
        assert_eq!(page.matches("records_written_total{capture=\"metrics-test\"}").count(), 1);
        drop((stats, again));
        assert!(!tidewater_metrics::global().render().contains("metrics-test"));
    }
}
