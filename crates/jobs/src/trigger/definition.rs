//! A trigger's definition: what it reads, what it does per event, and how hard it tries.
//!
//! Definitions are JSON (in a config file, or as records of the triggers topic). Unknown fields
//! are ignored and missing ones take defaults, so definitions written by another version still
//! load; `validate` then checks every setting and names the first bad one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tidewater_client::cloudevents::HttpMode;

use super::filter::Filter;
use super::retry::RetryPolicy;
use super::signature::SigningKey;

/// Most deliveries one trigger may run at once.
pub const CONCURRENCY_MAX: usize = 1024;
/// Most events in one batch.
pub const BATCH_EVENTS_MAX: usize = 10_000;
/// Longest time a delivery attempt may take.
pub const TIMEOUT_MS_MAX: u64 = 15 * 60 * 1000;
/// Longest trigger name: it becomes part of group ids and topic names.
pub const NAME_BYTES_MAX: usize = 200;

/// One trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerDefinition {
    /// Unique name; letters, digits, `.`, `_` and `-`.
    pub name: String,
    /// The topic whose events fire the trigger.
    pub topic: String,
    /// What to do for each event.
    pub action: Action,
    /// Only events this condition accepts fire the trigger (see the filter module).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The consumer group; defaults to `tidewater-trigger-{name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Deliveries in flight at once (different keys); events of one key go one at a time.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Deliver events in batches instead of one at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSettings>,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Where events go that were refused or ran out of attempts; defaults to
    /// `{topic}.{name}.dead-letter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// Where a new consumer group starts: `earliest` or `latest` (Kafka's auto.offset.reset).
    #[serde(default)]
    pub start_from: StartFrom,
    /// A paused trigger keeps its definition and committed offsets but delivers nothing.
    #[serde(default)]
    pub paused: bool,
    /// Set when the receiver answered 410 Gone: the trigger stopped itself. Resuming clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

fn default_concurrency() -> usize {
    16
}

/// What a trigger does with each event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// POST the event as a CloudEvent, signed the Standard Webhooks way when a secret is set.
    Webhook {
        url: String,
        #[serde(default)]
        mode: HttpMode,
        /// `whsec_...`; without it requests are not signed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
        /// Extra request headers, e.g. an API key the receiver wants.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
    },
    /// Run a local program with the event on stdin.
    Command {
        program: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
    },
    /// Send the event to a device as a command: a record keyed by the device id on the commands
    /// topic, which the gateway delivers.
    DeviceCommand {
        #[serde(default = "default_commands_topic")]
        commands_topic: String,
        /// Where the device id comes from: `key`, `header:NAME` or `field:PATH` (a JSON path in
        /// the value, `a.b`).
        #[serde(default = "default_device_source")]
        device: String,
    },
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_commands_topic() -> String {
    "commands".to_string()
}

fn default_device_source() -> String {
    "key".to_string()
}

/// Batching: a delivery carries up to `max_events`, sent when that many are ready or when the
/// oldest ready one has waited `max_wait_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSettings {
    pub max_events: usize,
    #[serde(default = "default_batch_wait_ms")]
    pub max_wait_ms: u64,
}

fn default_batch_wait_ms() -> u64 {
    100
}

/// Where a trigger's consumer group starts reading when it has no committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    Earliest,
    #[default]
    Latest,
}

impl StartFrom {
    pub fn as_offset_reset(self) -> &'static str {
        match self {
            StartFrom::Earliest => "earliest",
            StartFrom::Latest => "latest",
        }
    }
}

/// Where a device command's device id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSource {
    Key,
    Header(String),
    Field(Vec<String>),
}

impl DeviceSource {
    pub fn parse(text: &str) -> Result<DeviceSource, String> {
        if text == "key" {
            return Ok(DeviceSource::Key);
        }
        if let Some(name) = text.strip_prefix("header:").filter(|name| !name.is_empty()) {
            return Ok(DeviceSource::Header(name.to_string()));
        }
        if let Some(path) = text.strip_prefix("field:").filter(|path| !path.is_empty()) {
            return Ok(DeviceSource::Field(path.split('.').map(str::to_string).collect()));
        }
        Err(format!("device {text:?} is not key, header:NAME or field:PATH"))
    }
}

impl crate::definitions::Named for TriggerDefinition {
    fn name(&self) -> &str {
        &self.name
    }
}

impl TriggerDefinition {
    /// The consumer group the trigger reads as.
    pub fn group_id(&self) -> String {
        self.group_id.clone().unwrap_or_else(|| format!("tidewater-trigger-{}", self.name))
    }

    /// The topic refused and exhausted events go to.
    pub fn dead_letter_topic(&self) -> String {
        self.dead_letter_topic.clone().unwrap_or_else(|| format!("{}.{}.dead-letter", self.topic, self.name))
    }

    /// Whether the trigger should be delivering.
    pub fn is_active(&self) -> bool {
        !self.paused && self.disabled_reason.is_none()
    }

    /// Checks every setting, naming the first that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        validate_name("trigger name", &self.name, NAME_BYTES_MAX)?;
        validate_name("topic", &self.topic, 249)?;
        validate_name("dead-letter topic", &self.dead_letter_topic(), 249)?;
        if self.dead_letter_topic() == self.topic {
            return Err("the dead-letter topic must differ from the trigger's topic".to_string());
        }
        if !(1..=CONCURRENCY_MAX).contains(&self.concurrency) {
            return Err(format!("concurrency must be between 1 and {CONCURRENCY_MAX}"));
        }
        if let Some(batch) = &self.batch {
            if !(1..=BATCH_EVENTS_MAX).contains(&batch.max_events) {
                return Err(format!("batch.max_events must be between 1 and {BATCH_EVENTS_MAX}"));
            }
            if batch.max_wait_ms > TIMEOUT_MS_MAX {
                return Err(format!("batch.max_wait_ms must be at most {TIMEOUT_MS_MAX}"));
            }
        }
        self.retry.validate()?;
        if let Some(filter) = &self.filter {
            Filter::parse(filter).map_err(|error| format!("filter {filter:?}: {error}"))?;
        }
        match &self.action {
            Action::Webhook { url, secret, timeout_ms, headers, .. } => {
                let parsed =
                    reqwest::Url::parse(url).map_err(|error| format!("webhook url {url:?}: {error}"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(format!("webhook url {url:?} must be http or https"));
                }
                if let Some(secret) = secret {
                    SigningKey::parse(secret)?;
                }
                validate_timeout(*timeout_ms)?;
                for name in headers.keys() {
                    reqwest::header::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| format!("{name:?} is not an HTTP header name"))?;
                }
            }
            Action::Command { program, timeout_ms, .. } => {
                if program.is_empty() {
                    return Err("the command's program is empty".to_string());
                }
                validate_timeout(*timeout_ms)?;
            }
            Action::DeviceCommand { commands_topic, device } => {
                validate_name("commands topic", commands_topic, 249)?;
                DeviceSource::parse(device)?;
            }
        }
        Ok(())
    }
}

fn validate_timeout(timeout_ms: u64) -> Result<(), String> {
    if !(1..=TIMEOUT_MS_MAX).contains(&timeout_ms) {
        return Err(format!("timeout_ms must be between 1 and {TIMEOUT_MS_MAX}"));
    }
    Ok(())
}

/// Kafka's rule for topic names, which trigger names follow too since they end up in them.
fn validate_name(what: &str, name: &str, bytes_max: usize) -> Result<(), String> {
    if name.is_empty() || name.len() > bytes_max {
        return Err(format!("{what} {name:?} must be 1 to {bytes_max} bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("{what} cannot be {name:?}"));
    }
    if !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')) {
        return Err(format!("{what} {name:?} may contain only letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(url: &str) -> TriggerDefinition {
        serde_json::from_value(serde_json::json!({
            "name": "alerts", "topic": "events",
            "action": {"type": "webhook", "url": url}
        }))
        .unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn defaults_fill_a_minimal_definition() {
        let definition = webhook("http://127.0.0.1:8080/hook");
        assert_eq!(definition.validate(), Ok(()));
        assert_eq!(definition.group_id(), "tidewater-trigger-alerts");
        assert_eq!(definition.dead_letter_topic(), "events.alerts.dead-letter");
        assert_eq!(definition.concurrency, 16);
        assert_eq!(definition.retry, RetryPolicy::default());
        assert_eq!(definition.start_from, StartFrom::Latest);
        assert!(definition.is_active());
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let definition: Result<TriggerDefinition, _> = serde_json::from_value(serde_json::json!({
            "name": "a", "topic": "t", "from_the_future": 1,
            "action": {"type": "command", "program": "cat", "also_new": true}
        }));
        assert!(definition.is_ok());
    }

    #[test]
    fn bad_settings_are_named() {
        let check = |mutate: fn(&mut TriggerDefinition), part: &str| {
            let mut definition = webhook("http://127.0.0.1/hook");
            mutate(&mut definition);
            let error = definition.validate().err().unwrap_or_else(|| panic!("accepted, wanted {part}"));
            assert!(error.contains(part), "{error} lacks {part}");
        };
        check(|definition| definition.name = "has space".to_string(), "trigger name");
        check(|definition| definition.concurrency = 0, "concurrency");
        check(|definition| definition.filter = Some("value.a >".to_string()), "filter");
        check(|definition| definition.retry.max_attempts = 0, "max_attempts");
        check(|definition| definition.batch = Some(BatchSettings { max_events: 0, max_wait_ms: 1 }), "batch");
        check(|definition| definition.dead_letter_topic = Some("events".to_string()), "must differ");
        check(
            |definition| {
                definition.action = Action::Webhook {
                    url: "ftp://x".to_string(),
                    mode: HttpMode::Binary,
                    secret: None,
                    timeout_ms: 1000,
                    headers: BTreeMap::new(),
                }
            },
            "http or https",
        );
        check(
            |definition| {
                definition.action = Action::DeviceCommand {
                    commands_topic: "commands".to_string(),
                    device: "value".to_string(),
                }
            },
            "header:NAME",
        );
    }
}
