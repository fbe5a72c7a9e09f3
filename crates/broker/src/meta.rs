//! The broker's own durable metadata: the cluster id and every topic's id, partition count and
//! config overrides, in one small JSON file in the data directory.
//!
//! Writes go to a temporary file that is fsynced, renamed over the old one and followed by an
//! fsync of the directory, so after a crash the file is either the old or the new version, never
//! a mix. Admin operations that change topics save this file *before* touching partition
//! directories, so a topic either exists with all its partitions or not at all after recovery.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::BrokerError;
use crate::topic_config::TopicConfigs;

/// The file's name inside the data directory.
pub const META_FILE_NAME: &str = "tidewater-meta.json";
/// The largest metadata file we read; far above any real one, far below trouble.
const META_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TopicMeta {
    pub(crate) topic_id: Uuid,
    pub(crate) partitions: i32,
    #[serde(default)]
    pub(crate) configs: TopicConfigs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) format_version: u32,
    pub(crate) cluster_id: String,
    #[serde(default)]
    pub(crate) topics: BTreeMap<String, TopicMeta>,
    /// Producer ids below this may have been handed out; the next block starts here.
    #[serde(default)]
    pub(crate) next_producer_id_block: i64,
}

/// The metadata file and its current contents.
#[derive(Debug)]
pub(crate) struct MetaStore {
    path: PathBuf,
    pub(crate) meta: Meta,
}

impl MetaStore {
    /// Reads the file in `data_dir`, or starts a new cluster (with a fresh cluster id) if there
    /// is none. A file that exists but cannot be read or parsed is an error, never replaced.
    pub(crate) fn open(data_dir: &Path) -> Result<MetaStore, BrokerError> {
        let path = data_dir.join(META_FILE_NAME);
        let meta_error = |reason: String| BrokerError::Meta { path: path.clone(), reason };
        if !path.exists() {
            let meta = Meta {
                format_version: FORMAT_VERSION,
                cluster_id: new_cluster_id(),
                topics: BTreeMap::new(),
                next_producer_id_block: 0,
            };
            let store = MetaStore { path, meta };
            store.save()?;
            return Ok(store);
        }
        let size = fs::metadata(&path).map_err(|error| meta_error(error.to_string()))?.len();
        if size > META_FILE_BYTES_MAX {
            return Err(meta_error(format!("{size} bytes is over the {META_FILE_BYTES_MAX}-byte limit")));
        }
        let text = fs::read_to_string(&path).map_err(|error| meta_error(error.to_string()))?;
        let meta: Meta = serde_json::from_str(&text).map_err(|error| meta_error(error.to_string()))?;
        if meta.format_version != FORMAT_VERSION {
            return Err(meta_error(format!("unknown format version {}", meta.format_version)));
        }
        Ok(MetaStore { path, meta })
    }

    /// Writes the current contents durably (write temp, fsync, rename, fsync directory).
    pub(crate) fn save(&self) -> Result<(), BrokerError> {
        let meta_error = |reason: String| BrokerError::Meta { path: self.path.clone(), reason };
        let text = serde_json::to_string_pretty(&self.meta).map_err(|error| meta_error(error.to_string()))?;
        let temp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&temp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::rename(&temp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|error| meta_error(error.to_string()))
    }
}

/// Kafka cluster ids are 16 random bytes in URL-safe base64 without padding (22 characters).
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = Uuid::new_v4().into_bytes();
    let mut bits: u128 = u128::from_be_bytes(bytes);
    let mut id = String::with_capacity(22);
    for _ in 0..22 {
        id.push(ALPHABET[(bits & 0x3f) as usize] as char);
        bits >>= 6;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_persists_and_reopens_identically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = MetaStore::open(dir.path()).expect("create");
        assert_eq!(store.meta.cluster_id.len(), 22);
        store.meta.topics.insert(
            "orders".into(),
            TopicMeta { topic_id: Uuid::new_v4(), partitions: 3, configs: TopicConfigs::new() },
        );
        store.save().expect("save");
        let reopened = MetaStore::open(dir.path()).expect("reopen");
        assert_eq!(reopened.meta, store.meta);
    }

    #[test]
    fn a_damaged_file_is_an_error_and_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(META_FILE_NAME);
        fs::write(&path, b"{not json").expect("write");
        let error = MetaStore::open(dir.path()).expect_err("damaged");
        assert!(error.to_string().contains(META_FILE_NAME), "{error}");
        assert_eq!(fs::read(&path).expect("read"), b"{not json");
    }
}
