//! The process's own figures, read from `/proc/self` at scrape time under the names Prometheus'
//! client libraries use (`process_resident_memory_bytes`, `process_open_fds`,
//! `process_start_time_seconds`), plus `tidewater_uptime_seconds`. On a system without `/proc`
//! the memory and descriptor lines are left out rather than reported as zero.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::exposition::{Exposition, MetricType};
use crate::registry::Collect;

/// Reads resident memory and open descriptors when scraped; knows when it was made.
#[derive(Debug)]
pub struct ProcessCollector {
    started: Instant,
    started_unix_seconds: f64,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        let started_unix_seconds =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|since| since.as_secs_f64()).unwrap_or(0.0);
        ProcessCollector { started: Instant::now(), started_unix_seconds }
    }
}

impl Collect for ProcessCollector {
    fn collect(&self, page: &mut Exposition) {
        if let Some(bytes) = resident_memory_bytes() {
            page.family("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge);
            page.sample("process_resident_memory_bytes", &[], bytes as f64);
        }
        if let Some(count) = open_file_descriptors() {
            page.family("process_open_fds", "Number of open file descriptors.", MetricType::Gauge);
            page.sample("process_open_fds", &[], count as f64);
        }
        page.family(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds.",
            MetricType::Gauge,
        );
        page.sample("process_start_time_seconds", &[], self.started_unix_seconds.floor());
        page.family(
            "tidewater_uptime_seconds",
            "Seconds since this process started serving.",
            MetricType::Gauge,
        );
        page.sample("tidewater_uptime_seconds", &[], self.started.elapsed().as_secs_f64());
    }
}

/// `VmRSS` of `/proc/self/status`, which the kernel gives in KiB.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kibibytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kibibytes * 1024)
}

fn open_file_descriptors() -> Option<usize> {
    // The directory handle read_dir holds is one of the entries; it is not the process's own.
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_reports_its_memory_and_descriptors() {
        let mut page = Exposition::default();
        ProcessCollector::default().collect(&mut page);
        let text = page.into_text();
        let value = |name: &str| -> f64 {
            let line = text.lines().find(|line| line.starts_with(&format!("{name} "))).expect(name);
            line.split(" ").nth(1).and_then(|value| value.parse().ok()).expect("a number after the name")
        };
        assert!(value("process_resident_memory_bytes") > 1024.0 * 1024.0, "{text}");
        assert!(value("process_open_fds") >= 3.0, "{text}");
        assert!(value("process_start_time_seconds") > 1.7e9, "{text}");
    }
}
