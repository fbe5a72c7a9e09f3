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
