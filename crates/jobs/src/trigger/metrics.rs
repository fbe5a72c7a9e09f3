//! A trigger's series in the process's metrics registry, labelled by trigger: deliveries,
//! retries, dead-lettered events, and the latency from an event's timestamp to its
//! acknowledgement. They count beside [`super::stats::TriggerStats`], which feeds the trigger's
//! status record; these feed `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use tidewater_metrics::{global, Counter, Histogram};

pub(crate) struct TriggerMetrics {
    pub(crate) delivered: Arc<Counter>,
    pub(crate) retries: Arc<Counter>,
    pub(crate) dead_lettered: Arc<Counter>,
    latency: Arc<Histogram>,
}

impl TriggerMetrics {
    pub(crate) fn of(trigger: &str) -> TriggerMetrics {
        let registry = global();
        TriggerMetrics {
            delivered: registry
                .counters(
                    "tidewater_trigger_delivered_total",
                    "Events a trigger delivered and had acknowledged.",
                    &["trigger"],
                )
                .series(&[trigger]),
            retries: registry
                .counters(
                    "tidewater_trigger_retries_total",
                    "Delivery attempts a trigger made again, per event.",
                    &["trigger"],
                )
                .series(&[trigger]),
            dead_lettered: registry
                .counters(
                    "tidewater_trigger_dead_lettered_total",
                    "Events a trigger wrote to its dead-letter topic.",
                    &["trigger"],
                )
                .series(&[trigger]),
            latency: registry
                .histograms(
                    "tidewater_trigger_latency_seconds",
                    "Time from an event's timestamp to its acknowledgement by the trigger's action.",
                    &["trigger"],
                )
                .series(&[trigger]),
        }
    }

    pub(crate) fn acknowledged_after(&self, latency_ms: u64) {
        self.latency.observe(Duration::from_millis(latency_ms));
    }
}
