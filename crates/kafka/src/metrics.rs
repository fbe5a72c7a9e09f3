//! The Kafka listener's metrics: open connections and request latency per API, from the moment a
//! request's frame is read to the moment its response is written to the socket (queueing behind
//! earlier requests of the same connection included, as a client sees it).
//!
//! Each API's histogram is found once, on that API's first request, and kept in a slot of a
//! fixed table indexed by API key, so a request costs two atomic adds and no lock.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use kafka_protocol::messages::ApiKey;
use tidewater_metrics::{global, Gauge, Histogram};

/// Slots for API keys 0..API_KEY_SLOTS; Kafka's keys end in the nineties today.
const API_KEY_SLOTS: usize = 128;

fn latency_of(api_key: ApiKey) -> Option<&'static Histogram> {
    static SLOTS: [OnceLock<Arc<Histogram>>; API_KEY_SLOTS] = [const { OnceLock::new() }; API_KEY_SLOTS];
    let slot = SLOTS.get(usize::try_from(api_key as i16).ok()?)?;
    let histogram = slot.get_or_init(|| {
        global()
            .histograms(
                "tidewater_kafka_request_latency_seconds",
                "Time from reading a Kafka request to writing its response, by API.",
                &["api"],
            )
            .series(&[&format!("{api_key:?}")])
    });
    Some(histogram)
}

/// Records one request's latency.
pub(crate) fn observe_request(api_key: ApiKey, received: Instant) {
    if let Some(histogram) = latency_of(api_key) {
        histogram.observe_since(received);
    }
}

/// Counts an open connection for as long as it lives.
pub(crate) struct OpenConnection(Arc<Gauge>);

impl OpenConnection {
    pub(crate) fn new() -> OpenConnection {
        static CONNECTIONS: OnceLock<Arc<Gauge>> = OnceLock::new();
        let gauge = CONNECTIONS
            .get_or_init(|| global().gauge("tidewater_kafka_connections", "Open Kafka client connections."))
            .clone();
        gauge.inc();
        OpenConnection(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
