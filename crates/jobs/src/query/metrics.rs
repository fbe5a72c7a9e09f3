//! A query job's metrics, labelled by job (and output): events read, rows written per output,
//! late events, how far the watermark trails the wall clock, and how long checkpoint
//! transactions take. The series are found when the job starts; the loop only adds to them.
//! Failures (a job that ended with an error and is restarted) are counted, and the latest is
//! kept for the console.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tidewater_client::now_ms;
use tidewater_metrics::{global, Counter, Family, Gauge, Histogram};
use tidewater_sql::Job;

pub(crate) struct QueryMetrics {
    pub(crate) events: Arc<Counter>,
    pub(crate) late: Arc<Counter>,
    /// Per output, in the job's output order (a handful: looked up by a scan).
    rows: Vec<(String, Arc<Counter>)>,
    watermark_lag: Arc<Gauge>,
    checkpoint_duration: Arc<Histogram>,
    /// Made the first time the lag is known, so the page never shows a made-up 0.
    input_lag: OnceLock<Arc<Gauge>>,
    job_name: String,
}

const INPUT_LAG_NAME: &str = "tidewater_query_input_lag_records";

fn events_family() -> Arc<Family<Counter>> {
    global().counters("tidewater_query_events_total", "Input records a query job read.", &["job"])
}

/// Input records job `job_name` read in this process (0 before it first ran here).
pub(crate) fn events_read(job_name: &str) -> u64 {
    let family = events_family();
    if family.contains(&[job_name]) {
        family.series(&[job_name]).get()
    } else {
        0
    }
}

fn input_lag_family() -> Arc<Family<Gauge>> {
    global().gauges(
        INPUT_LAG_NAME,
        "Records in the job's input partitions after those it has read (high watermarks last fetched minus positions).",
        &["job"],
    )
}

/// The input lag of job `job_name` in this process, once its runner knows it: what `query run`
/// shows as its progress while it catches up.
pub fn input_lag_records(job_name: &str) -> Option<f64> {
    let family = input_lag_family();
    family.contains(&[job_name]).then(|| family.series(&[job_name]).get())
}

/// A query job's latest failure in this process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobFailure {
    pub message: String,
    pub at_ms: i64,
}

/// The latest failure of each job, by job name (as many entries as jobs ever failed here).
fn failures() -> &'static Mutex<HashMap<String, JobFailure>> {
    static FAILURES: OnceLock<Mutex<HashMap<String, JobFailure>>> = OnceLock::new();
    FAILURES.get_or_init(Mutex::default)
}

/// Counts a failure of job `job_name` (`tidewater_query_failures_total`) and keeps its message.
pub(crate) fn record_failure(job_name: &str, message: &str) {
    global()
        .counters(
            "tidewater_query_failures_total",
            "Times a query job ended with an error (it is restarted; the error is in the log).",
            &["job"],
        )
        .series(&[job_name])
        .inc();
    let failure = JobFailure { message: message.to_string(), at_ms: now_ms() };
    failures().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(job_name.to_string(), failure);
}

/// Job `job_name`'s latest failure in this process, if it ever failed.
pub fn last_failure(job_name: &str) -> Option<JobFailure> {
    failures().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(job_name).cloned()
}

impl QueryMetrics {
    pub(crate) fn of(job_name: &str, job: &Job) -> QueryMetrics {
        let registry = global();
        let rows = registry.counters(
            "tidewater_query_rows_total",
            "Rows a query job wrote, by output topic.",
            &["job", "output"],
        );
        QueryMetrics {
            events: events_family().series(&[job_name]),
            late: registry
                .counters(
                    "tidewater_query_late_events_total",
                    "Events that arrived behind their input's watermark by more than the late-arrival tolerance.",
                    &["job"],
                )
                .series(&[job_name]),
            rows: job.outputs().into_iter().map(|output| {
                let counter = rows.series(&[job_name, &output]);
                (output, counter)
            }).collect(),
            watermark_lag: registry
                .gauges(
                    "tidewater_query_watermark_lag_seconds",
                    "Wall-clock time minus the job's lowest input watermark (how far event time trails now).",
                    &["job"],
                )
                .series(&[job_name]),
            checkpoint_duration: registry
                .histograms(
                    "tidewater_query_checkpoint_duration_seconds",
                    "Time to commit a checkpoint transaction (outputs, state and input offsets).",
                    &["job"],
                )
                .series(&[job_name]),
            input_lag: OnceLock::new(),
            job_name: job_name.to_string(),
        }
    }

    pub(crate) fn set_input_lag(&self, records: u64) {
        self.input_lag.get_or_init(|| input_lag_family().series(&[&self.job_name])).set(records as f64);
    }

    pub(crate) fn row_written(&self, output: &str) {
        if let Some((_, counter)) = self.rows.iter().find(|(name, _)| name == output) {
            counter.inc();
        }
    }

    pub(crate) fn checkpointed(&self, started: Instant) {
        self.checkpoint_duration.observe_since(started);
    }

    /// Sets the watermark lag from the lowest watermark among `jobs`' inputs; left as it was
    /// while no input has a watermark yet.
    pub(crate) fn watermarks<'a>(&self, jobs: impl IntoIterator<Item = &'a Job>) {
        let lowest = jobs
            .into_iter()
            .flat_map(|job| job.inputs().into_iter().filter_map(|input| job.watermark_ms(&input)))
            .filter(|&watermark| watermark != i64::MIN)
            .min();
        if let Some(watermark) = lowest {
            self.watermark_lag.set((now_ms() - watermark) as f64 / 1000.0);
        }
    }
}
