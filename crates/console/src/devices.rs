//! The devices page's routes: `GET /api/devices` (the gateway's registry, read as any Kafka
//! client reads the `_tidewater_devices` table, and the devices connected now from the
//! registry's gauge), `POST /api/devices/{id}/disabled` `{"disabled": true}` (rewrites the
//! device's record, as `tidewater device disable` does) and `POST /api/devices/{id}/command`
//! `{"payload": ...}` (a record keyed by the device id on the `commands` topic, which the gateway
//! delivers). Which device is connected, since when, when it was last seen and how many
//! messages it sent come from the gateway of this process ([`tidewater_gateway::presence`]);
//! without a gateway here they are `null`.

use std::collections::HashMap;

use tidewater_client::ClusterConfig;
use tidewater_gateway::presence::{presence, DevicePresence};
use tidewater_gateway::registry::DeviceRegistry;

use crate::api::{ApiError, KAFKA_TIMEOUT};

/// The topic the gateway takes commands from unless `--commands-topic` says otherwise.
const COMMANDS_TOPIC: &str = "commands";
/// The most bytes of a command's payload.
const COMMAND_BYTES_MAX: usize = 16 * 1024;

fn unavailable(error: anyhow::Error) -> ApiError {
    ApiError::unavailable(format!("{error:#}"))
}

pub(crate) async fn list(
    cluster: ClusterConfig,
    connected_now: Option<f64>,
) -> Result<serde_json::Value, ApiError> {
    let registry = DeviceRegistry::new(cluster, KAFKA_TIMEOUT);
    let devices = crate::api::blocking(move || registry.load().map_err(unavailable)).await?;
    // Only a process with a gateway knows who is connected (the gauge exists only then).
    let seen: Option<HashMap<String, DevicePresence>> = connected_now
        .map(|_| presence().snapshot().into_iter().map(|device| (device.id.clone(), device)).collect());
    let devices: Vec<serde_json::Value> = devices
        .values()
        .map(|device| {
            let presence = seen.as_ref().map(|seen| seen.get(&device.id));
            serde_json::json!({
                "id": device.id,
                "disabled": device.disabled,
                "created_at_ms": device.created_at_ms,
                "updated_at_ms": device.updated_at_ms,
                "connected": presence.map(|found| found.is_some_and(|found| found.connected)),
                "connected_since_ms": presence.flatten().and_then(|found| found.connected_since_ms),
                "last_seen_ms": presence.flatten().map(|found| found.last_seen_ms),
                "messages": presence.map(|found| found.map_or(0, |found| found.messages)),
            })
        })
        .collect();
    Ok(serde_json::json!({ "devices": devices, "connected_now": connected_now }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Disabled {
    disabled: bool,
}

pub(crate) async fn set_disabled(
    cluster: ClusterConfig,
    id: String,
    body: &[u8],
) -> Result<serde_json::Value, ApiError> {
    let Disabled { disabled } = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!(
            "malformed JSON body ({error}); expected {{\"disabled\": true or false}}"
        ))
    })?;
    let registry = DeviceRegistry::new(cluster, KAFKA_TIMEOUT);
    let reader = registry.clone();
    let lookup = id.clone();
    let found = crate::api::blocking(move || reader.load().map_err(unavailable)).await?.remove(&lookup);
    let mut device = found.ok_or_else(|| ApiError::not_found(format!("no device {id:?}")))?;
    device.disabled = disabled;
    device.updated_at_ms = tidewater_client::now_ms();
    registry.put(&device).await.map_err(unavailable)?;
    Ok(serde_json::json!({ "id": id, "disabled": disabled }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Command {
    /// Sent as it is when a string, as JSON text otherwise.
    payload: serde_json::Value,
}

pub(crate) async fn send_command(
    cluster: ClusterConfig,
    id: String,
    body: &[u8],
) -> Result<serde_json::Value, ApiError> {
    let Command { payload } = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!("malformed JSON body ({error}); expected {{\"payload\": ...}}"))
    })?;
    let payload = match payload {
        serde_json::Value::String(text) => text,
        other => other.to_string(),
    };
    if payload.len() > COMMAND_BYTES_MAX {
        return Err(ApiError::bad_request(format!("a command is at most {COMMAND_BYTES_MAX} bytes")));
    }
    tidewater_gateway::device::validate_device_id(&id)
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    let producer = cluster
        .reliable_producer("tidewater-console-commands")
        .map_err(|error| ApiError::unavailable(format!("creating a producer: {error}")))?;
    let record =
        rdkafka::producer::FutureRecord::to(COMMANDS_TOPIC).key(id.as_str()).payload(payload.as_str());
    let delivery = producer.send(record, KAFKA_TIMEOUT).await.map_err(|(error, _)| {
        ApiError::unavailable(format!("sending the command to {COMMANDS_TOPIC}: {error}"))
    })?;
    Ok(
        serde_json::json!({ "id": id, "topic": COMMANDS_TOPIC, "partition": delivery.partition, "offset": delivery.offset }),
    )
}
