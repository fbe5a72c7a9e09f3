//! `GET /api/groups`: the consumer groups the principal may describe (ListGroups and
//! DescribeGroups, as `tidewater group list` sends them), each member's assignment decoded,
//! and per partition the committed offset, the high watermark and the lag between them. The page
//! keeps the lag's history: the server keeps none.

use std::sync::Arc;

use rdkafka::consumer::Consumer;
use tidewater_client::admin::{list_group_offsets, list_groups};
use tidewater_client::assignment::decode_assignment;

use crate::api::{blocking, ApiError, KAFKA_TIMEOUT};
use crate::clients::ConsoleClient;

/// The most groups one listing describes in full (offsets and lag); the rest are named only.
const GROUPS_DESCRIBED_MAX: usize = 200;

pub(crate) async fn list(client: Arc<ConsoleClient>) -> Result<serde_json::Value, ApiError> {
    blocking(move || {
        let listing = list_groups(client.client(), None, KAFKA_TIMEOUT)
            .map_err(|error| ApiError::unavailable(format!("listing groups: {error}")))?;
        let mut groups = listing.groups;
        groups.sort_by(|left, right| left.name.cmp(&right.name));
        let described: Vec<serde_json::Value> = groups
            .iter()
            .enumerate()
            .map(|(index, group)| {
                let members: Vec<serde_json::Value> = group
                    .members
                    .iter()
                    .map(|member| {
                        let assignment: Vec<serde_json::Value> = decode_assignment(&member.assignment)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(topic, partitions)| serde_json::json!({ "topic": topic, "partitions": partitions }))
                            .collect();
                        serde_json::json!({
                            "member_id": member.member_id,
                            "client_id": member.client_id,
                            "client_host": member.client_host,
                            "assignment": assignment,
                        })
                    })
                    .collect();
                let offsets = if index < GROUPS_DESCRIBED_MAX {
                    group_offsets(&client, &group.name)
                } else {
                    Err("not described: too many groups".to_string())
                };
                let (offsets, offsets_error) = match offsets {
                    Ok(offsets) => (offsets, None),
                    Err(error) => (Vec::new(), Some(error)),
                };
                serde_json::json!({
                    "name": group.name,
                    "state": group.state,
                    "protocol": group.protocol,
                    "error": group.error.map(|code| code.0),
                    "members": members,
                    "offsets": offsets,
                    "offsets_error": offsets_error,
                    "total_lag": offsets.iter().filter_map(|offset| offset["lag"].as_i64()).sum::<i64>(),
                })
            })
            .collect();
        Ok(serde_json::json!({ "groups": described, "complete": listing.complete }))
    })
    .await
}

/// A group's committed offsets with the high watermark and lag of each partition.
fn group_offsets(client: &ConsoleClient, group: &str) -> Result<Vec<serde_json::Value>, String> {
    let mut offsets =
        list_group_offsets(client.client(), group, KAFKA_TIMEOUT).map_err(|error| error.to_string())?;
    offsets.sort_by(|left, right| (&left.topic, left.partition).cmp(&(&right.topic, right.partition)));
    Ok(offsets
        .into_iter()
        .filter(|offset| offset.offset >= 0)
        .map(|offset| {
            let high = client
                .fetch_watermarks(&offset.topic, offset.partition, KAFKA_TIMEOUT)
                .ok()
                .map(|(_, high)| high);
            serde_json::json!({
                "topic": offset.topic,
                "partition": offset.partition,
                "committed": offset.offset,
                "high_watermark": high,
                "lag": high.map(|high| (high - offset.offset).max(0)),
            })
        })
        .collect())
}
