//! `GET /api/overview`: the process's totals from its metrics registry (records and bytes
//! produced, bytes fetched, Kafka and MQTT connections, devices connected) and whether the
//! cluster answers a metadata request. The page turns successive totals into rates, so the
//! server keeps no history.

use std::sync::Arc;

use rdkafka::consumer::Consumer;
use tidewater_metrics::Registry;

use crate::api::{blocking, KAFKA_TIMEOUT};
use crate::clients::ConsoleClient;

/// The series the overview sums over all their labels.
const TOTALS: [&str; 6] = [
    "tidewater_topic_records_produced_total",
    "tidewater_topic_bytes_produced_total",
    "tidewater_topic_bytes_fetched_total",
    "tidewater_kafka_connections",
    "tidewater_mqtt_connections",
    "tidewater_devices_connected",
];

/// One sample of the text format: its name, labels and value.
#[derive(Debug, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) value: f64,
}

impl Sample {
    pub(crate) fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// The samples of a registry's text rendering (what `/metrics` serves); lines it cannot read
/// are skipped, as the registry writes only well-formed ones.
pub(crate) fn samples(text: &str) -> Vec<Sample> {
    text.lines().filter(|line| !line.starts_with('#')).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some((name, rest)) = series.split_once('{') else {
        return Some(Sample { name: series.to_string(), labels: Vec::new(), value });
    };
    let mut labels = Vec::new();
    let mut rest = rest.strip_suffix('}')?;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut label_value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (index, character) = chars.next()?;
            match character {
                '\\' => match chars.next()?.1 {
                    'n' => label_value.push('\n'),
                    other => label_value.push(other),
                },
                '"' => break index,
                other => label_value.push(other),
            }
        };
        labels.push((key.trim_start_matches(',').to_string(), label_value));
        rest = &after[end + 1..];
    }
    Some(Sample { name: name.to_string(), labels, value })
}

pub(crate) async fn overview(registry: &'static Registry, client: Arc<ConsoleClient>) -> serde_json::Value {
    let samples = samples(&registry.render());
    let mut totals = serde_json::Map::new();
    for name in TOTALS {
        let present: Vec<&Sample> = samples.iter().filter(|sample| sample.name == name).collect();
        // A series this role does not have (no gateway, no broker) is null, not zero.
        let total = (!present.is_empty()).then(|| present.iter().map(|sample| sample.value).sum::<f64>());
        totals.insert(name.to_string(), serde_json::json!(total));
    }
    // Per topic, for the topics page's rate sparklines; bounded by the registry's own labels.
    let produced_by_topic: serde_json::Map<String, serde_json::Value> = samples
        .iter()
        .filter(|sample| sample.name == "tidewater_topic_records_produced_total")
        .filter_map(|sample| Some((sample.label("topic")?.to_string(), serde_json::json!(sample.value))))
        .collect();
    let cluster = blocking(move || {
        let metadata = client
            .fetch_metadata(Some("__tidewater_console_probe_never_created"), KAFKA_TIMEOUT)
            .map_err(|error| crate::api::ApiError::unavailable(error.to_string()))?;
        Ok(metadata.brokers().len())
    })
    .await;
    let cluster = match cluster {
        Ok(brokers) => serde_json::json!({ "ok": true, "brokers": brokers }),
        Err(error) => serde_json::json!({ "ok": false, "error": error.reason }),
    };
    serde_json::json!({
        "time_ms": tidewater_client::now_ms(),
        "totals": totals,
        "records_produced_by_topic": produced_by_topic,
        "cluster": cluster,
    })
}

#[cfg(test)]
mod tests {
    use super::{samples, Sample};

    #[test]
    fn reads_the_text_format() {
        let text = "# HELP x y\n# TYPE x counter\nx_total 3\nsize{topic=\"a\\\"b\",partition=\"0\"} 12.5\n";
        assert_eq!(
            samples(text),
            vec![
                Sample { name: "x_total".into(), labels: vec![], value: 3.0 },
                Sample {
                    name: "size".into(),
                    labels: vec![("topic".into(), "a\"b".into()), ("partition".into(), "0".into())],
                    value: 12.5
                },
            ]
        );
    }
}
