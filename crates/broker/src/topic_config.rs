//! Per-topic configuration: the Kafka config names a topic accepts, their validation, and how
//! they map onto the log's `LogConfig`.
//!
//! A topic stores only the overrides a user set; everything else comes from the broker's
//! defaults, so changing a default on the command line reaches every topic that did not override
//! it. Unknown names and bad values are refused with a reason, as Kafka refuses them.

use std::collections::BTreeMap;

use tidewater_log::LogConfig;

/// The topic configs Tidewater implements, with a one-line description for DescribeConfigs.
pub const TOPIC_CONFIGS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete: old segments are removed by retention (compact is not implemented yet)"),
    ("retention.ms", "delete closed segments whose newest record is older than this; -1 keeps forever"),
    (
        "retention.bytes",
        "delete the oldest closed segments while a partition is larger than this; -1 for no limit",
    ),
    ("segment.bytes", "roll to a new segment file at this size"),
    ("segment.ms", "roll a non-empty active segment once it is this old"),
    ("max.message.bytes", "the largest record batch a producer may send"),
    ("index.interval.bytes", "bytes of batches between two sparse offset-index entries"),
];

/// Config overrides of one topic, by Kafka name.
pub type TopicConfigs = BTreeMap<String, String>;

/// Checks one config name and value; `Err` holds the reason a client is shown.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let mut probe = LogConfig::default();
    apply(&mut probe, name, value)?;
    probe.validate().map_err(|error| error.to_string())
}

/// The effective log config of a topic: broker defaults with the topic's overrides applied.
pub fn log_config(defaults: &LogConfig, overrides: &TopicConfigs) -> Result<LogConfig, String> {
    let mut config = defaults.clone();
    for (name, value) in overrides {
        apply(&mut config, name, value)?;
    }
    config.validate().map_err(|error| error.to_string())?;
    Ok(config)
}

/// The effective value of every implemented config, and whether it is the default.
pub fn describe(defaults: &LogConfig, overrides: &TopicConfigs) -> Vec<(&'static str, String, bool)> {
    let effective = log_config(defaults, overrides).unwrap_or_else(|_| defaults.clone());
    TOPIC_CONFIGS
        .iter()
        .map(|(name, _)| {
            let value = match *name {
                "cleanup.policy" => "delete".to_string(),
                "retention.ms" => effective.retention_ms.to_string(),
                "retention.bytes" => effective.retention_bytes.to_string(),
                "segment.bytes" => effective.segment_bytes.to_string(),
                "segment.ms" => effective.segment_ms.to_string(),
                "max.message.bytes" => effective.max_batch_bytes.to_string(),
                "index.interval.bytes" => effective.index_interval_bytes.to_string(),
                _ => String::new(),
            };
            (*name, value, !overrides.contains_key(*name))
        })
        .collect()
}

fn apply(config: &mut LogConfig, name: &str, value: &str) -> Result<(), String> {
    fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
        value.trim().parse().map_err(|_| format!("{name}: {value:?} is not a valid number"))
    }
    match name {
        "cleanup.policy" => match value.trim() {
            "delete" => {}
            "compact" | "compact,delete" | "delete,compact" => {
                return Err("cleanup.policy: compaction is not implemented yet; only \"delete\" is".into())
            }
            other => return Err(format!("cleanup.policy: unknown policy {other:?}")),
        },
        "retention.ms" => config.retention_ms = number(name, value)?,
        "retention.bytes" => config.retention_bytes = number(name, value)?,
        "segment.bytes" => config.segment_bytes = number(name, value)?,
        "segment.ms" => config.segment_ms = number(name, value)?,
        "max.message.bytes" => config.max_batch_bytes = number(name, value)?,
        "index.interval.bytes" => config.index_interval_bytes = number(name, value)?,
        other => return Err(format!("unknown topic config {other:?}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_on_top_of_defaults_and_bad_values_are_refused() {
        let defaults = LogConfig::default();
        let overrides: TopicConfigs = [("retention.ms".to_string(), "60000".to_string())].into();
        let config = log_config(&defaults, &overrides).expect("valid");
        assert_eq!(config.retention_ms, 60_000);
        assert_eq!(config.segment_bytes, defaults.segment_bytes);

        assert_eq!(validate("retention.ms", "-1"), Ok(()));
        assert!(validate("retention.ms", "soon").expect_err("bad").contains("not a valid number"));
        assert!(validate("segment.bytes", "10").is_err(), "below the minimum segment size");
        assert!(validate("no.such.config", "1").expect_err("unknown").contains("unknown topic config"));
        assert!(validate("cleanup.policy", "compact").expect_err("compact").contains("not implemented"));
    }

    #[test]
    fn describe_marks_overrides_as_not_default() {
        let overrides: TopicConfigs = [("segment.bytes".to_string(), "4096".to_string())].into();
        let described = describe(&LogConfig::default(), &overrides);
        let segment = described.iter().find(|(name, ..)| *name == "segment.bytes").expect("listed");
        assert_eq!((segment.1.as_str(), segment.2), ("4096", false));
        let retention = described.iter().find(|(name, ..)| *name == "retention.ms").expect("listed");
        assert!(retention.2);
    }
}
