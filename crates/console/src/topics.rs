//! `GET /api/topics`: the topics the principal may describe (a Metadata request: the broker
//! leaves out the others), their retention and cleanup policy (DescribeConfigs), each
//! partition's low and high watermarks, and its log size when this process's registry has one
//! (`tidewater_partition_log_size_bytes`, in `serve`).

use std::collections::HashMap;
use std::sync::Arc;

use rdkafka::consumer::Consumer;
use tidewater_metrics::Registry;

use crate::api::{blocking, ApiError, KAFKA_TIMEOUT};
use crate::clients::ConsoleClient;

/// The most partitions whose watermarks one listing asks for (one ListOffsets pair each); the
/// rest are listed without them.
const WATERMARKS_PARTITIONS_MAX: usize = 2_000;
/// The most topics whose configs (retention, cleanup policy) one listing asks for, one
/// DescribeConfigs each; the rest are listed without them.
const CONFIGS_TOPICS_MAX: usize = 200;
/// The configs the topics page shows.
const SHOWN_CONFIGS: [&str; 3] = ["retention.ms", "retention.bytes", "cleanup.policy"];

/// A topic's partitions as the cluster's metadata has them: `(partition, error)`.
pub(crate) fn partitions_of(client: &ConsoleClient, topic: &str) -> Result<Vec<i32>, ApiError> {
    let metadata = client
        .fetch_metadata(Some(topic), KAFKA_TIMEOUT)
        .map_err(|error| ApiError::unavailable(format!("metadata of {topic}: {error}")))?;
    let found = metadata.topics().iter().find(|found| found.name() == topic);
    match found {
        Some(found) if found.error().is_none() && !found.partitions().is_empty() => {
            Ok(found.partitions().iter().map(|partition| partition.id()).collect())
        }
        // Unknown and not authorized look alike on purpose: a principal learns nothing of
        // topics it may not describe.
        _ => Err(ApiError::not_found(format!("no topic {topic:?} that this user may describe"))),
    }
}

pub(crate) async fn list(
    registry: &'static Registry,
    client: Arc<ConsoleClient>,
) -> Result<serde_json::Value, ApiError> {
    let sizes: HashMap<(String, String), f64> = crate::overview::samples(&registry.render())
        .into_iter()
        .filter(|sample| sample.name == "tidewater_partition_log_size_bytes")
        .filter_map(|sample| {
            let key = (sample.label("topic")?.to_string(), sample.label("partition")?.to_string());
            Some((key, sample.value))
        })
        .collect();
    blocking(move || {
        let metadata = client
            .fetch_metadata(None, KAFKA_TIMEOUT)
            .map_err(|error| ApiError::unavailable(format!("metadata: {error}")))?;
        let mut topics: Vec<_> = metadata.topics().iter().filter(|topic| topic.error().is_none()).collect();
        topics.sort_by(|left, right| left.name().cmp(right.name()));
        let mut watermarks_left = WATERMARKS_PARTITIONS_MAX;
        let mut configs_left = CONFIGS_TOPICS_MAX;
        let listed: Vec<serde_json::Value> = topics
            .into_iter()
            .map(|topic| {
                let mut partitions: Vec<_> =
                    topic.partitions().iter().map(|partition| partition.id()).collect();
                partitions.sort_unstable();
                let mut total_bytes = None;
                let mut total_records = 0i64;
                let partitions: Vec<serde_json::Value> = partitions
                    .into_iter()
                    .map(|partition| {
                        let size = sizes.get(&(topic.name().to_string(), partition.to_string())).copied();
                        if let Some(size) = size {
                            *total_bytes.get_or_insert(0.0) += size;
                        }
                        let watermarks = (watermarks_left > 0)
                            .then(|| {
                                watermarks_left -= 1;
                                client.fetch_watermarks(topic.name(), partition, KAFKA_TIMEOUT).ok()
                            })
                            .flatten();
                        if let Some((low, high)) = watermarks {
                            total_records += high - low;
                        }
                        serde_json::json!({
                            "partition": partition,
                            "low_watermark": watermarks.map(|(low, _)| low),
                            "high_watermark": watermarks.map(|(_, high)| high),
                            "log_size_bytes": size,
                        })
                    })
                    .collect();
                let configs: serde_json::Map<String, serde_json::Value> = (configs_left > 0)
                    .then(|| {
                        configs_left -= 1;
                        tidewater_client::admin::describe_topic_configs(
                            client.client(),
                            topic.name(),
                            KAFKA_TIMEOUT,
                        )
                        .ok()
                    })
                    .flatten()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|entry| SHOWN_CONFIGS.contains(&entry.name.as_str()))
                    .map(|entry| (entry.name, serde_json::json!(entry.value)))
                    .collect();
                serde_json::json!({
                    "name": topic.name(),
                    "configs": configs,
                    "internal": topic.name().starts_with('_'),
                    "partitions": partitions,
                    "records": total_records,
                    "log_size_bytes": total_bytes,
                })
            })
            .collect();
        Ok(serde_json::json!({ "topics": listed }))
    })
    .await
}
