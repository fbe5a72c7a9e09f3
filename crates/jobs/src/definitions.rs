//! A table of named definitions (triggers, query jobs) in a [`KeyedTopic`]: the key is the
//! name, the value the definition as JSON, a tombstone deletes it. This module turns the table's
//! records into a map of typed definitions, once (`load`) or live (`watch`).
//!
//! A record that does not decode (written by a newer version, or damaged), or whose name differs
//! from its key, is skipped with a warning rather than stopping every reader.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;

use tidewater_client::KeyedTopic;

/// A definition that knows its own name (the key it is stored under).
pub trait Named {
    fn name(&self) -> &str;
}

/// Every definition in the table, as of now.
pub fn load<T: DeserializeOwned + Named>(table: &KeyedTopic) -> anyhow::Result<BTreeMap<String, T>> {
    let mut definitions = BTreeMap::new();
    table.read_to_end(|key, value| apply(&mut definitions, key, value))?;
    Ok(definitions)
}

/// The live map `watch` keeps current, and the thread that follows the table.
pub type Watched<T> =
    (tokio::sync::watch::Receiver<Option<BTreeMap<String, T>>>, std::thread::JoinHandle<()>);

/// Follows the table on a thread of its own, sending the full map each time it changes, until
/// `stop` turns true. The first map sent is complete (everything that existed when following
/// began), never a prefix, which would stop what was not yet read. Join the thread after `stop`
/// to know its consumer has left the cluster.
pub fn watch<T: DeserializeOwned + Named + Clone + Send + Sync + 'static>(
    table: &KeyedTopic,
    thread_name: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Watched<T>> {
    let (sender, receiver) = tokio::sync::watch::channel(None);
    let definitions = Arc::new(Mutex::new(BTreeMap::new()));
    let applied = definitions.clone();
    let follower = table.follow(
        thread_name,
        stop,
        move |key, value| {
            let mut definitions = applied.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            apply(&mut definitions, key, value);
        },
        move || {
            let definitions = definitions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let _ = sender.send(Some(definitions.clone()));
        },
    )?;
    Ok((receiver, follower))
}

/// Waits (off the async threads) for a follower thread to finish after its stop signal.
pub async fn join_follower(follower: std::thread::JoinHandle<()>) {
    let _ = tokio::task::spawn_blocking(move || follower.join()).await;
}

/// Applies one record: a definition, or a tombstone deleting one.
pub fn apply<T: DeserializeOwned + Named>(
    definitions: &mut BTreeMap<String, T>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let Some(name) = key.and_then(|key| std::str::from_utf8(key).ok()) else { return };
    match value {
        None => {
            definitions.remove(name);
        }
        Some(value) => match serde_json::from_slice::<T>(value) {
            Ok(definition) if definition.name() == name => {
                definitions.insert(name.to_string(), definition);
            }
            Ok(_) => tracing::warn!(name, "a definition's name differs from its key; skipped"),
            Err(error) => tracing::warn!(name, %error, "a definition does not decode; skipped"),
        },
    }
}

/// The configs of a status table (triggers', captures' and query jobs' `*_status` topics) beyond
/// a compacted table's. Each instance reports under a key of its own, and an instance's name is
/// new with each process, so the table also deletes by time: a live instance reports every few
/// seconds, and only the records of instances gone for an hour go.
pub const STATUS_TABLE_CONFIGS: &[(&str, &str)] =
    &[("cleanup.policy", "compact,delete"), ("retention.ms", "3600000")];
/// Status records older than this describe an instance that is gone.
pub const STATUS_STALE_MS: i64 = 30_000;

/// The latest record of every key of a status table, as the triggers' and the captures'
/// `statuses` read them. A record that does not decode is skipped: status is advisory.
pub fn latest_statuses<T: DeserializeOwned>(
    table: &KeyedTopic,
) -> Result<Vec<T>, tidewater_client::TableError> {
    let mut latest: BTreeMap<String, T> = BTreeMap::new();
    table.read_to_end(|key, value| {
        if let (Some(key), Some(value)) = (key, value) {
            if let Ok(record) = serde_json::from_slice::<T>(value) {
                latest.insert(String::from_utf8_lossy(key).into_owned(), record);
            }
        }
    })?;
    Ok(latest.into_values().collect())
}

/// Queues a status record under `key` without waiting for it: status is advisory, the next one
/// follows in seconds, and a cluster that is down must not stall the caller for a delivery
/// timeout.
pub fn queue_status<T: serde::Serialize>(
    producer: &rdkafka::producer::FutureProducer<tidewater_client::QuietContext>,
    topic: &str,
    key: &str,
    record: &T,
) -> anyhow::Result<()> {
    let value =
        serde_json::to_vec(record).map_err(|error| anyhow::anyhow!("encoding a status record: {error}"))?;
    producer
        .send_result(rdkafka::producer::FutureRecord::to(topic).key(key.as_bytes()).payload(&value))
        .map(drop)
        .map_err(|(error, _)| anyhow::anyhow!("queueing a status record to {topic}: {error}"))
}
