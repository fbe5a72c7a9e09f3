//! Which devices this gateway process has seen, for the console's devices page: connected now
//! (MQTT connections open as the device), since when, when last seen (a CONNECT, a message or a
//! disconnect) and how many messages it sent (MQTT PUBLISH and HTTP events). Like IoT Hub's
//! connection state and last activity time, but as this process saw them: counted from its
//! start, and only devices that came through it.
//!
//! A connection looks up its device's [`DeviceActivity`] once, at CONNECT, and then updates it
//! with atomics, so a PUBLISH takes no lock for it. An HTTP request takes one read lock to find
//! its device. Entries are per authenticated device (anonymous clients are not counted), so the
//! table is bounded by the registry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use tidewater_client::now_ms;

/// One device's activity through this process.
#[derive(Debug, Default)]
pub struct DeviceActivity {
    /// MQTT connections open as the device (0 or 1, but two overlap during a takeover).
    connections: AtomicU32,
    /// When its newest open connection was made.
    connected_since_ms: AtomicU64,
    last_seen_ms: AtomicU64,
    messages: AtomicU64,
}

impl DeviceActivity {
    /// Counts `count` messages received from the device now.
    pub(crate) fn messages_received(&self, count: u64) {
        self.messages.fetch_add(count, Ordering::Relaxed);
        self.last_seen_ms.store(now_ms().max(0) as u64, Ordering::Relaxed);
    }
}

/// What the console shows of one device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DevicePresence {
    pub id: String,
    pub connected: bool,
    /// When its current connection was made; `None` while it is not connected.
    pub connected_since_ms: Option<u64>,
    pub last_seen_ms: u64,
    pub messages: u64,
}

/// One `T` per device id, made on first use and kept for the process's life (so bounded by the
/// devices the registry ever held): what a device's connections and requests share.
#[derive(Debug)]
pub(crate) struct PerDevice<T> {
    entries: RwLock<HashMap<String, Arc<T>>>,
}

impl<T> Default for PerDevice<T> {
    fn default() -> Self {
        PerDevice { entries: RwLock::new(HashMap::new()) }
    }
}

impl<T: Default> PerDevice<T> {
    /// The device's entry, made on first use; a read lock unless it is new.
    pub(crate) fn get(&self, device: &str) -> Arc<T> {
        if let Some(found) = self.read().get(device) {
            return found.clone();
        }
        self.entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(device.to_string())
            .or_default()
            .clone()
    }

    /// Every entry, under the read lock.
    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<T>>> {
        // A poisoned lock only means a task panicked while holding it; the map is still whole.
        self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The process's table of devices seen.
#[derive(Debug, Default)]
pub struct Presence {
    devices: PerDevice<DeviceActivity>,
}

/// The table every gateway of this process records into.
pub fn presence() -> &'static Presence {
    static PRESENCE: OnceLock<Presence> = OnceLock::new();
    PRESENCE.get_or_init(Presence::default)
}

impl Presence {
    /// The device's entry, made on first sight.
    pub(crate) fn activity(&self, device: &str) -> Arc<DeviceActivity> {
        self.devices.get(device)
    }

    /// Marks the device connected until the returned guard is dropped (the connection ends).
    pub(crate) fn connected(&self, device: &str) -> Online {
        let activity = self.activity(device);
        let now = now_ms().max(0) as u64;
        activity.connections.fetch_add(1, Ordering::Relaxed);
        activity.connected_since_ms.store(now, Ordering::Relaxed);
        activity.last_seen_ms.store(now, Ordering::Relaxed);
        Online { activity }
    }

    /// Every device seen, by id.
    pub fn snapshot(&self) -> Vec<DevicePresence> {
        let devices = self.devices.read();
        let mut seen: Vec<DevicePresence> = devices
            .iter()
            .map(|(id, activity)| {
                let connected = activity.connections.load(Ordering::Relaxed) > 0;
                DevicePresence {
                    id: id.clone(),
                    connected,
                    connected_since_ms: connected
                        .then(|| activity.connected_since_ms.load(Ordering::Relaxed)),
                    last_seen_ms: activity.last_seen_ms.load(Ordering::Relaxed),
                    messages: activity.messages.load(Ordering::Relaxed),
                }
            })
            .collect();
        seen.sort_by(|a, b| a.id.cmp(&b.id));
        seen
    }
}

/// A device's open connection: it is connected while this lives, and last seen when it ends.
#[derive(Debug)]
pub(crate) struct Online {
    activity: Arc<DeviceActivity>,
}

impl Online {
    pub(crate) fn activity(&self) -> &Arc<DeviceActivity> {
        &self.activity
    }
}

impl Drop for Online {
    fn drop(&mut self) {
        self.activity.last_seen_ms.store(now_ms().max(0) as u64, Ordering::Relaxed);
        self.activity.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(table: &Presence, id: &str) -> DevicePresence {
        table.snapshot().into_iter().find(|device| device.id == id).expect("the device seen")
    }

    #[test]
    fn a_device_is_connected_while_a_connection_lives_and_counts_its_messages() {
        let table = Presence::default();
        let online = table.connected("pump-1");
        online.activity().messages_received(2);
        table.activity("pump-1").messages_received(3);
        let seen = find(&table, "pump-1");
        assert!(seen.connected && seen.connected_since_ms.is_some() && seen.last_seen_ms > 0);
        assert_eq!(seen.messages, 5);
        // A takeover: the new connection opens before the old one ends.
        let newer = table.connected("pump-1");
        drop(online);
        assert!(find(&table, "pump-1").connected);
        drop(newer);
        let seen = find(&table, "pump-1");
        assert!(!seen.connected && seen.connected_since_ms.is_none());
        assert_eq!(seen.messages, 5);
        assert_eq!(table.snapshot().len(), 1);
    }
}
