//! The device registry: topic `_tidewater_devices` on the cluster, key = device id, value = the
//! [`Device`] as JSON, a tombstone for a removed device. The latest record per key wins.
//!
//! `tidewater device ...` writes it through [`DeviceRegistry`]; every gateway follows it with
//! [`DeviceRegistry::watch`] and authenticates against the in-memory [`Directory`] that results,
//! so a device added, disabled or re-keyed anywhere takes effect at every gateway within a poll
//! interval, with no other channel between them. Only key hashes are stored (see
//! [`crate::device`]).
//!
//! The CAs that X.509 devices' certificates chain to live in the same topic, under key
//! `ca/NAME` ([`DeviceCa`]); no device id contains '/', so the two never collide, and a
//! gateway learns of a new CA exactly as of a new device.
//!
//! The MQTT topic rules of clients that are not devices ([`crate::topic_rules`]) live there
//! too, under keys `mqtt-rule/...` naming the whole rule: durable, compacted, and followed live
//! by every gateway like the devices, and written only by whoever may write this internal topic
//! (a superuser, once the cluster authorizes), the rights `tidewater acl` changes need.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tidewater_client::{ClusterConfig, KeyedTopic};

use crate::device::{Device, DeviceCa, CA_KEY_PREFIX};
use crate::topic_rules::{TopicRule, RULE_KEY_PREFIX};

pub const DEVICES_TOPIC: &str = "_tidewater_devices";

/// Every known device by id, as of some point of the registry topic.
pub type DeviceMap = BTreeMap<String, Device>;

/// Every registered device CA by name.
pub type CaMap = BTreeMap<String, DeviceCa>;

/// Every MQTT topic rule, by its key.
pub type RuleMap = BTreeMap<String, TopicRule>;

/// The whole registry as of some point of its topic: devices, device CAs and topic rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryView {
    pub devices: DeviceMap,
    pub cas: CaMap,
    pub rules: RuleMap,
}

/// What a gateway authenticates against: `None` until the registry has been read to the end
/// once (connections meanwhile are told the server is unavailable, not that they are unknown).
pub type Directory = tokio::sync::watch::Receiver<Option<Arc<RegistryView>>>;

/// Reads and writes the device registry topic.
#[derive(Debug, Clone)]
pub struct DeviceRegistry {
    topic: KeyedTopic,
}

impl DeviceRegistry {
    pub fn new(cluster: ClusterConfig, timeout: Duration) -> DeviceRegistry {
        DeviceRegistry {
            topic: KeyedTopic::new(cluster, DEVICES_TOPIC, "tidewater-device-registry", timeout),
        }
    }

    /// Creates the registry topic (a compacted table) unless it exists.
    pub async fn ensure_topic(&self) -> anyhow::Result<()> {
        Ok(self.topic.ensure(&[]).await?)
    }

    /// Every registered device, as of now.
    pub fn load(&self) -> anyhow::Result<DeviceMap> {
        Ok(self.load_view()?.devices)
    }

    /// Every registered device and device CA, as of now.
    pub fn load_view(&self) -> anyhow::Result<RegistryView> {
        let mut view = RegistryView::default();
        self.topic.read_to_end(|key, value| apply_record(&mut view, key, value))?;
        Ok(view)
    }

    /// Registers or replaces a device CA.
    pub async fn put_ca(&self, ca: &DeviceCa) -> anyhow::Result<()> {
        let value = serde_json::to_vec(ca).context("encoding the CA")?;
        Ok(self.topic.write(&format!("{CA_KEY_PREFIX}{}", ca.name), Some(&value)).await?)
    }

    /// Removes a device CA (a tombstone): certificates it signed stop opening connections.
    pub async fn remove_ca(&self, name: &str) -> anyhow::Result<()> {
        Ok(self.topic.write(&format!("{CA_KEY_PREFIX}{name}"), None).await?)
    }

    /// Adds a topic rule (adding one that exists changes nothing); returns once the cluster
    /// acknowledged it.
    pub async fn put_rule(&self, rule: &TopicRule) -> anyhow::Result<()> {
        rule.validate()?;
        let value = serde_json::to_vec(rule).context("encoding the rule")?;
        Ok(self.topic.write(&rule.key(), Some(&value)).await?)
    }

    /// Removes a topic rule (a tombstone).
    pub async fn remove_rule(&self, rule: &TopicRule) -> anyhow::Result<()> {
        Ok(self.topic.write(&rule.key(), None).await?)
    }

    /// One device, or an error naming it.
    pub fn get(&self, id: &str) -> anyhow::Result<Device> {
        self.load()?.remove(id).with_context(|| format!("no device {id:?}"))
    }

    /// Registers or replaces a device; returns once the cluster acknowledged the record.
    pub async fn put(&self, device: &Device) -> anyhow::Result<()> {
        let value = serde_json::to_vec(device).context("encoding the device")?;
        Ok(self.topic.write(&device.id, Some(&value)).await?)
    }

    /// Registers or replaces many devices in one go (a bulk import, or a load test's simulated
    /// fleet); returns once the cluster acknowledged every record.
    pub async fn put_many(&self, devices: &[Device]) -> anyhow::Result<()> {
        let values = devices
            .iter()
            .map(|device| serde_json::to_vec(device).context("encoding a device"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let records: Vec<(&str, Option<&[u8]>)> = devices
            .iter()
            .zip(&values)
            .map(|(device, value)| (device.id.as_str(), Some(value.as_slice())))
            .collect();
        Ok(self.topic.write_many(&records).await?)
    }

    /// Removes a device (a tombstone).
    pub async fn remove(&self, id: &str) -> anyhow::Result<()> {
        Ok(self.topic.write(id, None).await?)
    }

    /// Follows the registry on a thread of its own until `stop`, publishing the whole map each
    /// time it changes once the registry has been read to its end. The thread ends within a
    /// poll interval of `stop`; join it to know its consumer is closed.
    pub fn watch(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<(Directory, std::thread::JoinHandle<()>)> {
        let (sender, receiver) = tokio::sync::watch::channel(None);
        let devices = Arc::new(std::sync::Mutex::new(RegistryView::default()));
        let applied = devices.clone();
        let thread = self.topic.follow(
            "device-registry",
            stop,
            move |key, value| {
                let mut devices = applied.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                apply_record(&mut devices, key, value);
            },
            move || {
                let devices = devices.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                sender.send_replace(Some(Arc::new(devices.clone())));
            },
        )?;
        Ok((receiver, thread))
    }
}

/// Applies one record of the registry: a device or a CA, or a tombstone removing one. A record
/// that does not decode, or whose id differs from its key, is skipped with a warning.
pub fn apply_record(view: &mut RegistryView, key: Option<&[u8]>, value: Option<&[u8]>) {
    let Some(id) = key.and_then(|key| std::str::from_utf8(key).ok()) else { return };
    if let Some(name) = id.strip_prefix(CA_KEY_PREFIX) {
        apply_ca_record(&mut view.cas, name, value);
        return;
    }
    if id.starts_with(RULE_KEY_PREFIX) {
        apply_rule_record(&mut view.rules, id, value);
        return;
    }
    let devices = &mut view.devices;
    match value {
        None => {
            devices.remove(id);
        }
        Some(value) => match serde_json::from_slice::<Device>(value) {
            Ok(device) if device.id == id => {
                devices.insert(id.to_string(), device);
            }
            Ok(_) => tracing::warn!(id, "a device record's id differs from its key; skipped"),
            Err(error) => tracing::warn!(id, %error, "a device record does not decode; skipped"),
        },
    }
}

fn apply_ca_record(cas: &mut CaMap, name: &str, value: Option<&[u8]>) {
    match value {
        None => {
            cas.remove(name);
        }
        Some(value) => match serde_json::from_slice::<DeviceCa>(value) {
            Ok(ca) if ca.name == name => {
                cas.insert(name.to_string(), ca);
            }
            Ok(_) => tracing::warn!(name, "a device CA record's name differs from its key; skipped"),
            Err(error) => tracing::warn!(name, %error, "a device CA record does not decode; skipped"),
        },
    }
}

/// A rule's record: one whose key is not the rule's own, or that does not decode or validate,
/// is skipped with a warning (a rule this version does not understand must not be read as a
/// different one).
fn apply_rule_record(rules: &mut RuleMap, key: &str, value: Option<&[u8]>) {
    let Some(value) = value else {
        rules.remove(key);
        return;
    };
    match serde_json::from_slice::<TopicRule>(value) {
        Ok(rule) if rule.key() == key && rule.validate().is_ok() => {
            rules.insert(key.to_string(), rule);
        }
        Ok(_) => {
            tracing::warn!(key, "an MQTT topic rule's record does not match its key or is invalid; skipped")
        }
        Err(error) => tracing::warn!(key, %error, "an MQTT topic rule's record does not decode; skipped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_record_per_device_wins_and_tombstones_remove() {
        let mut view = RegistryView::default();
        let mut device = Device::new("a", "key", [0; 16], 1);
        let first = serde_json::to_vec(&device).unwrap_or_default();
        device.disabled = true;
        let second = serde_json::to_vec(&device).unwrap_or_default();
        apply_record(&mut view, Some(b"a"), Some(&first));
        apply_record(&mut view, Some(b"b"), Some(b"not json"));
        apply_record(&mut view, Some(b"c"), Some(&first));
        assert_eq!(view.devices.keys().collect::<Vec<_>>(), vec!["a"]);
        apply_record(&mut view, Some(b"a"), Some(&second));
        assert!(view.devices.get("a").is_some_and(|device| device.disabled));
        apply_record(&mut view, Some(b"a"), None);
        assert!(view.devices.is_empty());
    }

    #[test]
    fn records_from_a_newer_version_still_load() {
        let mut view = RegistryView::default();
        let value = br#"{"id":"a","key_hash":"00","salt":"00","created_at_ms":5,"tags":{"site":"x"}}"#;
        apply_record(&mut view, Some(b"a"), Some(value));
        assert!(view.devices.get("a").is_some_and(|device| !device.disabled && device.created_at_ms == 5));
    }

    #[test]
    fn cas_live_beside_devices_under_their_own_keys() {
        let mut view = RegistryView::default();
        let ca = DeviceCa {
            name: "factory".into(),
            certificate_der_base64: "AAEC".into(),
            subject: "CN=factory".into(),
            added_at_ms: 1,
        };
        let value = serde_json::to_vec(&ca).unwrap_or_default();
        apply_record(&mut view, Some(b"ca/factory"), Some(&value));
        apply_record(&mut view, Some(b"ca/other"), Some(&value));
        assert_eq!(view.cas.keys().collect::<Vec<_>>(), vec!["factory"]);
        assert!(view.devices.is_empty());
        assert_eq!(view.cas.get("factory").and_then(DeviceCa::certificate_der), Some(vec![0, 1, 2]));
        apply_record(&mut view, Some(b"ca/factory"), None);
        assert!(view.cas.is_empty());
    }

    #[test]
    fn rules_live_beside_devices_under_their_own_keys() {
        use crate::topic_rules::{Action, Permission, Subject};
        let mut view = RegistryView::default();
        let rule = TopicRule {
            subject: Subject::Anonymous,
            permission: Permission::Deny,
            action: Action::Subscribe,
            filter: "test/nosubscribe".into(),
        };
        let value = serde_json::to_vec(&rule).unwrap_or_default();
        apply_record(&mut view, Some(rule.key().as_bytes()), Some(&value));
        // Under another rule's key it is not taken for that rule.
        apply_record(&mut view, Some(b"mqtt-rule/other"), Some(&value));
        assert_eq!(view.rules.values().collect::<Vec<_>>(), vec![&rule]);
        assert!(view.devices.is_empty());
        apply_record(&mut view, Some(rule.key().as_bytes()), None);
        assert!(view.rules.is_empty());
    }
}
