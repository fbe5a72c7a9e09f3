//! Where captured files go: a local directory (`file:///dir`) or an object store bucket
//! (`s3://bucket/prefix`), and the one operation that matters to exactly-once: `publish`, which
//! makes a whole file visible under its final name or not at all.
//!
//! A local file is written under the topic's `_staging` directory, flushed to disk (`fsync`),
//! renamed to its final name (atomic within one file system) and its directory flushed, so a
//! file that was reported published survives a power cut, and a reader never sees a partial
//! one. `object_store`'s own local store is not used for this: it neither syncs nor keeps its
//! temporary files out of a Hive reader's sight. To S3 a file goes in one PUT, which S3 makes
//! visible only once complete (files are bounded by `WINDOW_BYTES_MAX`, below S3's 5 GiB limit
//! for one PUT).
//!
//! S3 settings are taken the AWS way, from `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL` for an
//! S3-compatible store; an `http://` endpoint is allowed).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ObjectStore, PutPayload, RetryConfig};

use crate::layout::{self, FileRange};

/// Retries `object_store` makes on its own of a request that failed for a reason worth
/// retrying (a 5xx, a connection reset), and for how long at most. Kept short: the capture
/// retries with its own backoff, reporting each failure in the log and `capture describe`, and
/// one attempt is time the loop does not poll (see `runner`).
const STORE_RETRIES_MAX: usize = 2;
const STORE_RETRY_TIMEOUT: Duration = Duration::from_secs(20);

/// A capture's destination, parsed from its URL.
#[derive(Clone)]
pub enum Destination {
    /// A directory on a local file system.
    Local { root: PathBuf },
    /// A bucket and a prefix inside it.
    ObjectStore { url: String, store: Arc<dyn ObjectStore>, prefix: String },
}

impl fmt::Debug for Destination {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.url())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("destination {url:?}: {reason}")]
    Invalid { url: String, reason: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{url}: {source}")]
    Store { url: String, source: object_store::Error },
}

impl Destination {
    /// Parses `file:///absolute/dir` or `s3://bucket[/prefix]`; an S3 destination reads its
    /// credentials, region and endpoint from the environment here.
    pub fn parse(url: &str) -> Result<Destination, DestinationError> {
        let invalid =
            |reason: &str| DestinationError::Invalid { url: url.to_string(), reason: reason.to_string() };
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid("a file URL needs an absolute path, file:///dir"));
            }
            return Ok(Destination::Local { root: PathBuf::from(path) });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("an S3 URL names a bucket, s3://bucket/prefix"));
            }
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: STORE_RETRIES_MAX,
                retry_timeout: STORE_RETRY_TIMEOUT,
            });
            if std::env::var("AWS_ENDPOINT_URL")
                .or_else(|_| std::env::var("AWS_ENDPOINT"))
                .is_ok_and(|endpoint| endpoint.starts_with("http://"))
            {
                builder = builder.with_allow_http(true);
            }
            if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
                builder = builder.with_region("us-east-1");
            }
            let store = builder.build().map_err(|error| invalid(&error.to_string()))?;
            return Ok(Destination::ObjectStore {
                url: url.to_string(),
                store: Arc::new(store),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        Err(invalid("expected file:///dir or s3://bucket/prefix"))
    }

    /// The URL it was parsed from.
    pub fn url(&self) -> String {
        match self {
            Destination::Local { root } => format!("file://{}", root.display()),
            Destination::ObjectStore { url, .. } => url.clone(),
        }
    }

    fn object_path(prefix: &str, relative: &str) -> ObjectPath {
        if prefix.is_empty() {
            ObjectPath::from(relative)
        } else {
            ObjectPath::from(format!("{prefix}/{relative}"))
        }
    }

    /// Makes `bytes` visible at `relative` (a `layout::file_path`) whole, replacing a file of
    /// the same name. `staging` is where a local file is written first (a `layout::staging_path`).
    pub async fn publish(&self, relative: &str, staging: &str, bytes: Bytes) -> Result<(), DestinationError> {
        match self {
            Destination::Local { root } => {
                let (target, staging) = (root.join(relative), root.join(staging));
                tokio::task::spawn_blocking(move || publish_local(&target, &staging, &bytes)).await.map_err(
                    |error| DestinationError::Io {
                        path: relative.to_string(),
                        source: std::io::Error::other(error),
                    },
                )?
            }
            Destination::ObjectStore { url, store, prefix } => store
                .put(&Self::object_path(prefix, relative), PutPayload::from_bytes(bytes))
                .await
                .map(|_| ())
                .map_err(|source| DestinationError::Store { url: url.clone(), source }),
        }
    }

    /// Every captured file of `topic` in `partition`, from a listing (local: a walk of the
    /// topic's directories).
    pub async fn list_files(&self, topic: &str, partition: i32) -> Result<Vec<FileRange>, DestinationError> {
        let ranges = match self {
            Destination::Local { root } => {
                let topic_dir = root.join(topic);
                tokio::task::spawn_blocking(move || list_local(&topic_dir)).await.map_err(|error| {
                    DestinationError::Io { path: topic.to_string(), source: std::io::Error::other(error) }
                })??
            }
            Destination::ObjectStore { url, store, prefix } => {
                let objects: Vec<_> = store
                    .list(Some(&Self::object_path(prefix, topic)))
                    .try_collect()
                    .await
                    .map_err(|source| DestinationError::Store { url: url.clone(), source })?;
                objects
                    .iter()
                    .filter_map(|object| layout::parse_file_path(object.location.as_ref()))
                    .collect()
            }
        };
        Ok(ranges.into_iter().filter(|range| range.partition == partition).collect())
    }

    /// Removes what a killed writer of `partition` left in the staging directory (local only:
    /// an S3 PUT that did not finish leaves nothing).
    pub async fn remove_staging_leftovers(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(), DestinationError> {
        let Destination::Local { root } = self else { return Ok(()) };
        let staging_dir = root.join(topic).join(layout::STAGING_DIR);
        tokio::task::spawn_blocking(move || {
            let entries = match std::fs::read_dir(&staging_dir) {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(source) => return Err(io_error(&staging_dir, source)),
            };
            for entry in entries {
                let entry = entry.map_err(|source| io_error(&staging_dir, source))?;
                if entry.file_name().to_str().is_some_and(|name| layout::is_staging_name_of(name, partition))
                {
                    std::fs::remove_file(entry.path()).map_err(|source| io_error(&entry.path(), source))?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|error| DestinationError::Io {
            path: topic.to_string(),
            source: std::io::Error::other(error),
        })?
    }
}

fn io_error(path: &Path, source: std::io::Error) -> DestinationError {
    DestinationError::Io { path: path.display().to_string(), source }
}

/// Write, sync, rename, sync the directory: see the module documentation.
fn publish_local(target: &Path, staging: &Path, bytes: &[u8]) -> Result<(), DestinationError> {
    for path in [target, staging] {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| io_error(parent, source))?;
        }
    }
    let mut file = std::fs::File::create(staging).map_err(|source| io_error(staging, source))?;
    file.write_all(bytes).map_err(|source| io_error(staging, source))?;
    file.sync_all().map_err(|source| io_error(staging, source))?;
    drop(file);
    std::fs::rename(staging, target).map_err(|source| io_error(target, source))?;
    if let Some(parent) = target.parent() {
        std::fs::File::open(parent)
            .and_then(|directory| directory.sync_all())
            .map_err(|source| io_error(parent, source))?;
    }
    Ok(())
}

/// The captured files under a local topic directory, `date=*/hour=*/partition=*/*.parquet`.
fn list_local(topic_dir: &Path) -> Result<Vec<FileRange>, DestinationError> {
    let mut ranges = Vec::new();
    let mut directories = vec![(topic_dir.to_path_buf(), 0)];
    // Depth 3 is the partition directory: date, hour, partition below the topic.
    while let Some((directory, depth)) = directories.pop() {
        let entries = match std::fs::read_dir(&directory) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(io_error(&directory, source)),
        };
        for entry in entries {
            let entry = entry.map_err(|source| io_error(&directory, source))?;
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|name| name.to_str()) else { continue };
            if depth < 3 && !name.starts_with('_') && entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                directories.push((path.clone(), depth + 1));
            } else if depth == 3 {
                if let Some(range) = path.to_str().and_then(layout::parse_file_path) {
                    ranges.push(range);
                }
            }
        }
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn urls_parse_or_say_why_not() {
        assert!(matches!(Destination::parse("file:///data/capture"), Ok(Destination::Local { .. })));
        for (url, reason) in [
            ("file://relative", "absolute path"),
            ("/data", "expected file:///dir"),
            ("s3://", "names a bucket"),
        ] {
            let error = Destination::parse(url).err().map(|error| error.to_string()).unwrap_or_default();
            assert!(error.contains(reason), "{url}: {error}");
        }
    }

    #[test]
    fn local_publish_replaces_whole_files_and_lists_them() {
        let directory = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let url = format!("file://{}", directory.path().display());
        let destination = Destination::parse(&url).unwrap_or_else(|error| panic!("{error}"));
        let hour = layout::HourBucket::of_timestamp_ms(0);
        runtime().block_on(async {
            for (partition, first, last) in [(0, 0, 9), (0, 10, 19), (1, 0, 4), (0, 10, 19)] {
                let path = layout::file_path("t", hour, partition, first, last);
                let staging = layout::staging_path("t", partition, first);
                destination
                    .publish(&path, &staging, Bytes::from_static(&[1, 2, 3]))
                    .await
                    .unwrap_or_else(|error| panic!("{error}"));
            }
            // A killed writer's leftover, in partition 0's staging name and partition 1's.
            let staging_dir = directory.path().join("t").join(layout::STAGING_DIR);
            for partition in [0, 1] {
                std::fs::write(staging_dir.join(layout::staging_name(partition, 20)), b"partial")
                    .unwrap_or_else(|error| panic!("{error}"));
            }
            let mut ranges = destination.list_files("t", 0).await.unwrap_or_else(|error| panic!("{error}"));
            ranges.sort_by_key(|range| range.first_offset);
            let offsets: Vec<(i64, i64)> =
                ranges.iter().map(|range| (range.first_offset, range.last_offset)).collect();
            assert_eq!(offsets, vec![(0, 9), (10, 19)]);
            destination.remove_staging_leftovers("t", 0).await.unwrap_or_else(|error| panic!("{error}"));
            let left: Vec<String> = std::fs::read_dir(&staging_dir)
                .unwrap_or_else(|error| panic!("{error}"))
                .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .collect();
            assert_eq!(left, vec![layout::staging_name(1, 20)]);
        });
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_it() {
        let directory = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let blocker = directory.path().join("file-not-dir");
        std::fs::write(&blocker, b"").unwrap_or_else(|error| panic!("{error}"));
        let destination = Destination::Local { root: blocker.clone() };
        let error = runtime()
            .block_on(destination.publish("t/x.parquet", "t/_staging/x.tmp", Bytes::from_static(&[1])))
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(error.contains("file-not-dir"), "{error}");
    }
}
