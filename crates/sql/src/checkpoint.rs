//! Checkpoints: a running job's state as a JSON document, and back.
//!
//! A checkpoint holds only state (watermarks and per-key clocks, events held for reordering,
//! window groups and buffers, analytic histories, MATCH_RECOGNIZE partial matches and the rows
//! they need), never the plan: it is restored into a job freshly compiled from the same query
//! and options, which a fingerprint of both checks. Restoring a checkpoint taken after any
//! prefix of the calls and then making the remaining calls gives exactly the output of one
//! uninterrupted run; the corpus test checks this after every input line. The format is
//! versioned ([`CHECKPOINT_VERSION`]); state added within a version (matchers, substreams)
//! defaults to empty, so older checkpoints of that version still restore. Floats are JSON
//! numbers, or the strings `"NaN"`, `"inf"` and `"-inf"`, which JSON numbers cannot express.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::JobOptions;

/// The checkpoint format version this build writes and reads.
pub const CHECKPOINT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint version {found} is not supported (this build reads version {CHECKPOINT_VERSION})")]
    Version { found: u64 },
    #[error("the checkpoint was taken from a different query or different job options")]
    WrongJob,
    #[error("malformed checkpoint: {reason}")]
    Malformed { reason: String },
}

/// FNV-1a over the query text and the options that shape state: stable across builds and
/// platforms, unlike `std`'s hasher.
pub(crate) fn fingerprint(sql: &str, options: &JobOptions) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(sql.as_bytes());
    eat(&options.out_of_order_tolerance_ms.to_le_bytes());
    eat(&options.late_arrival_tolerance_ms.to_le_bytes());
    eat(&options.idle_partition_timeout_ms.unwrap_or(-1).to_le_bytes());
    eat(&[options.late_policy as u8]);
    // Options added later count only when they differ from their default, so that jobs that do
    // not use them keep the fingerprint (and the checkpoints) they had.
    if options.idle_key_timeout_ms != crate::DEFAULT_IDLE_KEY_TIMEOUT_MS {
        eat(b"idle_key_timeout_ms");
        eat(&options.idle_key_timeout_ms.to_le_bytes());
    }
    // Which inputs are reference data changes the plan (a JOIN with a table holds no state).
    for name in &options.reference_inputs {
        eat(b"reference_input");
        eat(name.to_ascii_lowercase().as_bytes());
    }
    hash
}

/// Serde adapter: a map with non-string keys as a JSON array of `[key, value]` pairs.
pub(crate) mod as_pairs {
    use super::*;

    pub(crate) fn serialize<'a, M, K, V, S>(map: &'a M, serializer: S) -> Result<S::Ok, S::Error>
    where
        &'a M: IntoIterator<Item = (&'a K, &'a V)>,
        K: Serialize + 'a,
        V: Serialize + 'a,
        S: Serializer,
    {
        serializer.collect_seq(map)
    }

    pub(crate) fn deserialize<'de, M, K, V, D>(deserializer: D) -> Result<M, D::Error>
    where
        M: FromIterator<(K, V)>,
        K: Deserialize<'de>,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let pairs: Vec<(K, V)> = Vec::deserialize(deserializer)?;
        Ok(pairs.into_iter().collect())
    }
}

/// Serde adapter for a map of maps, both with non-string keys.
pub(crate) mod as_nested_pairs {
    use super::*;

    pub(crate) fn serialize<'a, M, K, I, K2, V, S>(map: &'a M, serializer: S) -> Result<S::Ok, S::Error>
    where
        &'a M: IntoIterator<Item = (&'a K, &'a I)>,
        &'a I: IntoIterator<Item = (&'a K2, &'a V)>,
        K: Serialize + 'a,
        I: 'a,
        K2: Serialize + 'a,
        V: Serialize + 'a,
        S: Serializer,
    {
        serializer
            .collect_seq(map.into_iter().map(|(key, inner)| (key, inner.into_iter().collect::<Vec<_>>())))
    }

    pub(crate) fn deserialize<'de, M, K, I, K2, V, D>(deserializer: D) -> Result<M, D::Error>
    where
        M: FromIterator<(K, I)>,
        I: FromIterator<(K2, V)>,
        K: Deserialize<'de>,
        K2: Deserialize<'de>,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let pairs: Vec<(K, Vec<(K2, V)>)> = Vec::deserialize(deserializer)?;
        Ok(pairs.into_iter().map(|(key, inner)| (key, inner.into_iter().collect())).collect())
    }
}

/// Serde adapter: an `f64` that survives JSON even when it is NaN or infinite.
pub(crate) mod float {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_nan() {
            serializer.serialize_str("NaN")
        } else if value.is_infinite() {
            serializer.serialize_str(if *value > 0.0 { "inf" } else { "-inf" })
        } else {
            serializer.serialize_f64(*value)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Float {
            Number(f64),
            Text(String),
        }
        match Float::deserialize(deserializer)? {
            Float::Number(value) => Ok(value),
            Float::Text(text) => match text.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                other => Err(serde::de::Error::custom(format!("expected a float, found '{other}'"))),
            },
        }
    }
}
