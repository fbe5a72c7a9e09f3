//! Per-topic configuration: the Kafka config names a topic accepts, their validation, and how
//! they map onto the log's `LogConfig`.
//!
//! A topic stores only the overrides a user set; everything else comes from the broker's
//! defaults, so changing a default on the command line reaches every topic that did not override
//! it. Unknown names and bad values are refused with a reason, as Kafka refuses them.
//! DescribeConfigs reports `cleanup.policy` exactly as it was set (Kafka Connect refuses to start
//! unless its internal topics say exactly `compact`).

use std::collections::BTreeMap;

use tidewater_log::{CleanupPolicy, LogConfig};

/// The topic configs Tidewater implements, with a one-line description for DescribeConfigs.
pub const TOPIC_CONFIGS: &[(&str, &str)] = &[
    (
        "cleanup.policy",
        "delete (old segments are removed by retention), compact (only the latest record of each key is \
         kept), or compact,delete (both)",
    ),
    ("retention.ms", "delete closed segments whose newest record is older than this; -1 keeps forever"),
    (
        "retention.bytes",
        "delete the oldest closed segments while a partition is larger than this; -1 for no limit",
    ),
    ("segment.bytes", "roll to a new segment file at this size"),
    ("segment.ms", "roll a non-empty active segment once it is this old"),
    ("max.message.bytes", "the largest record batch a producer may send"),
    ("index.interval.bytes", "bytes of batches between two sparse offset-index entries"),
    (
        "min.cleanable.dirty.ratio",
        "a compacted partition is cleaned once its records written since the last cleaning are more than \
         this share of it",
    ),
    ("min.compaction.lag.ms", "a record stays uncompacted at least this long after its timestamp"),
    (
        "max.compaction.lag.ms",
        "a compacted partition is cleaned once its oldest uncleaned record is this old",
    ),
    (
        "delete.retention.ms",
        "how long a tombstone (a key with a null value) stays after the cleaning that first kept it",
    ),
    (
        "message.timestamp.type",
        "CreateTime (records keep the producer's timestamps) or LogAppendTime (the broker's time at append)",
    ),
    (
        "message.timestamp.difference.max.ms",
        "a CreateTime batch whose timestamps are further than this from the broker's clock is refused \
         (INVALID_TIMESTAMP)",
    ),
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
                "cleanup.policy" => match overrides.get("cleanup.policy") {
                    Some(as_set) => as_set.clone(),
                    None => effective.cleanup_policy.to_string(),
                },
                "retention.ms" => effective.retention_ms.to_string(),
                "retention.bytes" => effective.retention_bytes.to_string(),
                "segment.bytes" => effective.segment_bytes.to_string(),
                "segment.ms" => effective.segment_ms.to_string(),
                "max.message.bytes" => effective.max_batch_bytes.to_string(),
                "index.interval.bytes" => effective.index_interval_bytes.to_string(),
                "min.cleanable.dirty.ratio" => effective.min_cleanable_dirty_ratio.to_string(),
                "min.compaction.lag.ms" => effective.min_compaction_lag_ms.to_string(),
                "max.compaction.lag.ms" => effective.max_compaction_lag_ms.to_string(),
                "delete.retention.ms" => effective.delete_retention_ms.to_string(),
                "message.timestamp.type" => effective.message_timestamp_type.to_string(),
                "message.timestamp.difference.max.ms" => {
                    effective.message_timestamp_difference_max_ms.to_string()
                }
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
        "cleanup.policy" => {
            config.cleanup_policy =
                value.parse::<CleanupPolicy>().map_err(|reason| format!("cleanup.policy: {reason}"))?
        }
        "retention.ms" => config.retention_ms = number(name, value)?,
        "retention.bytes" => config.retention_bytes = number(name, value)?,
        "segment.bytes" => config.segment_bytes = number(name, value)?,
        "segment.ms" => config.segment_ms = number(name, value)?,
        "max.message.bytes" => config.max_batch_bytes = number(name, value)?,
        "index.interval.bytes" => config.index_interval_bytes = number(name, value)?,
        "min.cleanable.dirty.ratio" => config.min_cleanable_dirty_ratio = number(name, value)?,
        "min.compaction.lag.ms" => config.min_compaction_lag_ms = number(name, value)?,
        "max.compaction.lag.ms" => config.max_compaction_lag_ms = number(name, value)?,
        "delete.retention.ms" => config.delete_retention_ms = number(name, value)?,
        "message.timestamp.type" => {
            config.message_timestamp_type =
                value.parse().map_err(|reason| format!("message.timestamp.type: {reason}"))?
        }
        "message.timestamp.difference.max.ms" => {
            config.message_timestamp_difference_max_ms = number(name, value)?
        }
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
    }

    #[test]
    fn compaction_configs_are_checked_and_applied() {
        let check = |name: &str, value: &str, expected: Result<(), &str>| {
            let actual = validate(name, value);
            match expected {
                Ok(()) => assert_eq!(actual, Ok(()), "{name}={value}"),
                Err(part) => assert!(
                    actual.as_ref().is_err_and(|reason| reason.contains(part)),
                    "{name}={value}: {actual:?}"
                ),
            }
        };
        check("cleanup.policy", "compact", Ok(()));
        check("cleanup.policy", "compact,delete", Ok(()));
        check("cleanup.policy", "delete, compact", Ok(()));
        check("cleanup.policy", "shred", Err("unknown cleanup policy"));
        check("cleanup.policy", "", Err("unknown cleanup policy"));
        check("min.cleanable.dirty.ratio", "0.1", Ok(()));
        check("min.cleanable.dirty.ratio", "1.5", Err("outside [0, 1]"));
        check("min.cleanable.dirty.ratio", "half", Err("not a valid number"));
        check("min.compaction.lag.ms", "-1", Err("non-negative"));
        check("max.compaction.lag.ms", "0", Err("positive"));
        check("delete.retention.ms", "3600000", Ok(()));
        let overrides: TopicConfigs = [
            ("cleanup.policy".to_string(), "compact,delete".to_string()),
            ("delete.retention.ms".to_string(), "1000".to_string()),
        ]
        .into();
        let config = log_config(&LogConfig::default(), &overrides).expect("valid");
        assert_eq!(config.cleanup_policy, CleanupPolicy::COMPACT_DELETE);
        assert_eq!(config.delete_retention_ms, 1000);
    }

    #[test]
    fn describe_reports_cleanup_policy_exactly_as_set() {
        let policy = |overrides: &[(&str, &str)]| {
            let overrides: TopicConfigs =
                overrides.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
            let described = describe(&LogConfig::default(), &overrides);
            let (_, value, is_default) =
                described.into_iter().find(|(name, ..)| *name == "cleanup.policy").expect("listed");
            (value, is_default)
        };
        assert_eq!(policy(&[]), ("delete".to_string(), true));
        assert_eq!(policy(&[("cleanup.policy", "compact")]), ("compact".to_string(), false));
        assert_eq!(policy(&[("cleanup.policy", "delete,compact")]), ("delete,compact".to_string(), false));
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
