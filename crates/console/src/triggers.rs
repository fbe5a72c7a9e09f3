//! The triggers page's routes: `GET /api/triggers` (the triggers registry, read as a Kafka
//! table, with each trigger's counters from this process's registry when it runs here, and its
//! dead-letter topic, whose records the page browses through the messages route) and `POST
//! /api/triggers/{name}/replay` `{"partition": P, "offset": O}` (one dead-lettered record sent
//! back to the trigger's source topic with its key, value and headers, less the
//! `tidewater-dead-letter-*` headers the trigger added, so the trigger delivers it again).

use std::collections::HashMap;
use std::sync::Arc;

use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::Message;
use tidewater_client::ClusterConfig;
use tidewater_jobs::trigger::registry::{Registry, TRIGGERS_TOPIC};

use crate::api::{blocking, ApiError, KAFKA_TIMEOUT};
use crate::clients::ConsoleClient;
use crate::overview::Sample;

/// The prefix of the headers a trigger adds to what it dead-letters.
const DEAD_LETTER_HEADER_PREFIX: &str = "tidewater-dead-letter-";

fn unavailable(error: anyhow::Error) -> ApiError {
    ApiError::unavailable(format!("{error:#}"))
}

/// The registered triggers, or none when there is no registry topic this user may describe.
fn load(
    client: &ConsoleClient,
    registry: &Registry,
) -> Result<
    std::collections::BTreeMap<String, tidewater_jobs::trigger::definition::TriggerDefinition>,
    ApiError,
> {
    match crate::topics::partitions_of(client, TRIGGERS_TOPIC) {
        Err(error) if error.status == 404 => return Ok(Default::default()),
        Err(error) => return Err(error),
        Ok(_) => {}
    }
    registry.load().map_err(unavailable)
}

pub(crate) async fn list(
    client: Arc<ConsoleClient>,
    cluster: ClusterConfig,
    samples: Vec<Sample>,
) -> Result<serde_json::Value, ApiError> {
    let registry = Registry::new(cluster, KAFKA_TIMEOUT);
    let triggers = blocking(move || load(&client, &registry)).await?;
    let mut figures: HashMap<(String, &'static str), f64> = HashMap::new();
    for sample in &samples {
        let name = match sample.name.as_str() {
            "tidewater_trigger_delivered_total" => "delivered_total",
            "tidewater_trigger_retries_total" => "retries_total",
            "tidewater_trigger_dead_lettered_total" => "dead_lettered_total",
            "tidewater_trigger_latency_seconds_sum" => "latency_sum",
            "tidewater_trigger_latency_seconds_count" => "latency_count",
            _ => continue,
        };
        if let Some(trigger) = sample.label("trigger") {
            figures.insert((trigger.to_string(), name), sample.value);
        }
    }
    let triggers: Vec<serde_json::Value> = triggers
        .values()
        .map(|trigger| {
            let figure = |name: &'static str| figures.get(&(trigger.name.clone(), name)).copied();
            let mean_latency = match (figure("latency_sum"), figure("latency_count")) {
                (Some(sum), Some(count)) if count > 0.0 => Some(sum / count),
                _ => None,
            };
            serde_json::json!({
                "name": trigger.name,
                "topic": trigger.topic,
                "state": if trigger.paused { "paused" } else { "running" },
                "dead_letter_topic": trigger.dead_letter_topic(),
                "delivered_total": figure("delivered_total"),
                "retries_total": figure("retries_total"),
                "dead_lettered_total": figure("dead_lettered_total"),
                "mean_latency_seconds": mean_latency,
                // So a chart can take the mean of each interval between two polls.
                "latency_sum_seconds": figure("latency_sum"),
                "latency_count": figure("latency_count"),
            })
        })
        .collect();
    Ok(serde_json::json!({ "triggers": triggers }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Replay {
    partition: i32,
    offset: i64,
}

pub(crate) async fn replay(
    client: Arc<ConsoleClient>,
    cluster: ClusterConfig,
    name: String,
    body: &[u8],
) -> Result<serde_json::Value, ApiError> {
    let Replay { partition, offset } = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!(
            "malformed JSON body ({error}); expected {{\"partition\": P, \"offset\": O}}"
        ))
    })?;
    let registry = Registry::new(cluster.clone(), KAFKA_TIMEOUT);
    let reader_cluster = cluster.clone();
    let wanted = name.clone();
    let (source, dead_letter, record) = blocking(move || {
        let trigger = load(&client, &registry)?
            .remove(&wanted)
            .ok_or_else(|| ApiError::not_found(format!("no trigger {wanted:?}")))?;
        let dead_letter = trigger.dead_letter_topic();
        let record = crate::messages::read_one(&client, &reader_cluster, &dead_letter, partition, offset)?;
        Ok((trigger.topic, dead_letter, record))
    })
    .await?;
    let mut headers = OwnedHeaders::new();
    if let Some(original) = record.headers() {
        for header in original.iter().filter(|header| !header.key.starts_with(DEAD_LETTER_HEADER_PREFIX)) {
            headers = headers.insert(Header { key: header.key, value: header.value });
        }
    }
    let producer = cluster
        .reliable_producer("tidewater-console-replay")
        .map_err(|error| ApiError::unavailable(format!("creating a producer: {error}")))?;
    let mut sent = rdkafka::producer::FutureRecord::<[u8], [u8]>::to(&source).headers(headers);
    if let Some(key) = record.key() {
        sent = sent.key(key);
    }
    if let Some(value) = record.payload() {
        sent = sent.payload(value);
    }
    if let Some(timestamp) = record.timestamp().to_millis() {
        sent = sent.timestamp(timestamp);
    }
    let delivery = producer.send(sent, KAFKA_TIMEOUT).await.map_err(|(error, _)| {
        ApiError::unavailable(format!("sending the record back to {source}: {error}"))
    })?;
    Ok(serde_json::json!({
        "trigger": name,
        "from": { "topic": dead_letter, "partition": partition, "offset": offset },
        "to": { "topic": source, "partition": delivery.partition, "offset": delivery.offset },
    }))
}
