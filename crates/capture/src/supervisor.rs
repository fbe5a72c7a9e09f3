//! Keeps the registered captures running: starts, restarts and stops `run_capture` tasks to
//! match the captures topic, and publishes each one's status (state, latest error, counters).
//!
//! A changed definition restarts its capture (which first writes and commits its open files); a
//! paused one is stopped the same way; one that fails to start (a destination that does not
//! parse, a cluster that is down) is started again after `RESTART_DELAY`. Write errors do not
//! end a capture: it retries them itself and reports the latest as the status's detail.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tidewater_client::{now_ms, ClusterConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::definition::CaptureDefinition;
use crate::registry::{Counters, Registry, StatusRecord};
use crate::runner::{run_capture, CaptureStats};

/// How long a failed capture waits before it starts again.
const RESTART_DELAY: Duration = Duration::from_secs(5);
/// How often each capture's status is published.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(2);
/// How often finished tasks and changed definitions are looked at.
const CHECK_INTERVAL: Duration = Duration::from_millis(250);

struct Running {
    definition: CaptureDefinition,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// A capture's state as the supervisor last saw it.
struct Known {
    state: &'static str,
    failure: Option<String>,
    stats: Arc<CaptureStats>,
    retry_at: Option<tokio::time::Instant>,
}

impl CaptureStats {
    /// The counters as they are now.
    pub fn counters(&self) -> Counters {
        Counters {
            records_written: self.records_written.load(Ordering::Relaxed),
            files_written: self.files_written.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            non_json_values: self.non_json_values.load(Ordering::Relaxed),
            type_conflicts: self.type_conflicts.load(Ordering::Relaxed),
            records_skipped: self.records_skipped.load(Ordering::Relaxed),
        }
    }
}

/// Runs the registered captures until `stop` turns true, then stops them all (each writes and
/// commits its open files).
pub async fn supervise_captures(
    cluster: ClusterConfig,
    timeout: Duration,
    instance: String,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let registry = Registry::new(cluster.clone(), timeout);
    tracing::info!(brokers = %cluster.bootstrap_servers, "running the captures registered in {}", crate::registry::CAPTURES_TOPIC);
    let (mut definitions, follower) = registry.watch(stop.clone())?;
    let status_producer = registry.producer()?;
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut known: HashMap<String, Known> = HashMap::new();
    let mut wanted: BTreeMap<String, CaptureDefinition> = BTreeMap::new();
    let mut status_timer = tokio::time::interval(STATUS_INTERVAL);
    let mut check_timer = tokio::time::interval(CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = tidewater_jobs::task::stopped(&mut stop) => break,
            changed = definitions.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the capture registry reader stopped");
                }
                if let Some(latest) = definitions.borrow_and_update().clone() {
                    wanted = latest;
                }
            }
            _ = status_timer.tick() => {
                for (name, entry) in &known {
                    let record = StatusRecord {
                        capture: name.clone(),
                        instance: instance.clone(),
                        state: entry.state.to_string(),
                        detail: entry.failure.clone().or_else(|| entry.stats.last_error()),
                        counters: entry.stats.counters(),
                        updated_at_ms: now_ms(),
                    };
                    if let Err(error) = registry.publish_status(&status_producer, &record) {
                        tracing::debug!(%error, "publishing capture status failed");
                    }
                }
                continue;
            }
            _ = check_timer.tick() => {}
        }

        let ended: Vec<String> = running
            .iter()
            .filter(|(_, entry)| entry.task.is_finished())
            .map(|(name, _)| name.clone())
            .collect();
        for name in ended {
            let Some(entry) = running.remove(&name) else { continue };
            let failure = match entry.task.await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(format!("{error:#}")),
                Err(error) => Some(error.to_string()),
            };
            if let Some(state) = known.get_mut(&name) {
                state.state = if failure.is_some() { "failed" } else { "stopped" };
                if let Some(failure) = &failure {
                    tracing::error!(capture = %name, error = %failure, "capture failed; restarting soon");
                }
                state.failure = failure;
                state.retry_at = Some(tokio::time::Instant::now() + RESTART_DELAY);
            }
        }

        let outdated: Vec<String> = running
            .iter()
            .filter(|(name, entry)| {
                wanted.get(*name).is_none_or(|definition| *definition != entry.definition)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in outdated {
            if let Some(entry) = running.remove(&name) {
                tidewater_jobs::task::stop_and_join(&format!("capture {name}"), &entry.stop, entry.task)
                    .await;
            }
        }
        known.retain(|name, _| wanted.contains_key(name));

        let now = tokio::time::Instant::now();
        for (name, definition) in &wanted {
            if running.contains_key(name) {
                continue;
            }
            let entry = known.entry(name.clone()).or_insert_with(|| {
                let stats = Arc::new(CaptureStats::default());
                crate::metrics::register(name, &stats);
                Known { state: "stopped", failure: None, stats, retry_at: None }
            });
            if definition.paused {
                entry.state = "paused";
                continue;
            }
            if entry.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            entry.state = "running";
            entry.failure = None;
            entry.retry_at = None;
            let (stop_sender, stop_receiver) = watch::channel(false);
            let task = tokio::spawn(run_capture(
                definition.clone(),
                cluster.clone(),
                entry.stats.clone(),
                stop_receiver,
            ));
            running.insert(name.clone(), Running { definition: definition.clone(), stop: stop_sender, task });
        }
    }
    for (name, entry) in running.drain() {
        tidewater_jobs::task::stop_and_join(&format!("capture {name}"), &entry.stop, entry.task).await;
    }
    tidewater_jobs::definitions::join_follower(follower).await;
    Ok(())
}
