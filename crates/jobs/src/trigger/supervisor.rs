//! Keeps the right triggers running: starts, restarts and stops `run_trigger` tasks to match the
//! definitions, and publishes their status.
//!
//! Definitions come from the triggers topic (followed live: `create`, `pause`, `resume` and
//! `delete` take effect within a second) or from a fixed list (a config file). A definition that
//! changes restarts its trigger; a trigger that fails (for instance, the cluster is unreachable
//! when it starts) is restarted after `RESTART_DELAY`; one the receiver disabled with 410 Gone is
//! recorded as disabled in the triggers topic, so every instance stops it until `resume`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tidewater_client::{now_ms, ClusterConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::definition::TriggerDefinition;
use super::registry::{Registry, StatusRecord};
use super::runner::{run_trigger, RunEnd};
use super::stats::TriggerStats;

/// How long a failed trigger waits before it starts again.
const RESTART_DELAY: Duration = Duration::from_secs(5);
/// How often each trigger's status is published.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// Where the supervisor gets its definitions.
#[derive(Debug, Clone)]
pub enum DefinitionSource {
    /// The triggers topic, followed live.
    Registry,
    /// A fixed list, e.g. from a config file.
    Fixed(Vec<TriggerDefinition>),
}

/// The supervisor's settings.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    pub source: DefinitionSource,
    /// Run only these triggers (all if empty).
    pub only: Vec<String>,
    /// This instance's name in status records.
    pub instance: String,
    pub timeout: Duration,
}

struct Running {
    definition: TriggerDefinition,
    stats: Arc<TriggerStats>,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<RunEnd>>,
}

/// A trigger's state as the supervisor last saw it.
#[derive(Debug, Clone)]
struct Known {
    state: &'static str,
    detail: Option<String>,
    stats: Arc<TriggerStats>,
    /// When a failed trigger may start again.
    retry_at: Option<tokio::time::Instant>,
}

/// Runs triggers until `stop` turns true, then stops them all (each commits what it finished).
pub async fn supervise(
    cluster: ClusterConfig,
    options: SupervisorOptions,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let registry = Registry::new(cluster.clone(), options.timeout);
    match &options.source {
        DefinitionSource::Registry => tracing::info!(
            brokers = %cluster.bootstrap_servers,
            "running the triggers registered in {}", super::registry::TRIGGERS_TOPIC
        ),
        DefinitionSource::Fixed(list) => {
            tracing::info!(brokers = %cluster.bootstrap_servers, triggers = list.len(), "running triggers from a file")
        }
    }
    // Triggers from a file publish status from the start, so the topics must exist (retrying
    // while the cluster starts). Following the registry, nothing is created: the registry reader
    // waits for the topics `trigger create` makes, so a server nobody registers triggers on keeps
    // no trigger topics. Those that exist are upgraded to compacted tables (made by an older
    // version, they would keep every record).
    if matches!(options.source, DefinitionSource::Registry) {
        registry.upgrade_topics().await;
    }
    if matches!(options.source, DefinitionSource::Fixed(_)) {
        loop {
            match registry.ensure_topics().await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "trigger registry not ready; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = crate::task::stopped(&mut stop) => return Ok(()),
                    }
                }
            }
        }
    }
    // For a fixed list the sender must outlive the loop: a dropped sender reads as "the
    // registry reader stopped".
    let (fixed_sender, mut definitions) = watch::channel(None);
    let mut follower = None;
    match &options.source {
        DefinitionSource::Registry => {
            let (watched, thread) = registry.watch(stop.clone())?;
            definitions = watched;
            follower = Some(thread);
        }
        DefinitionSource::Fixed(list) => {
            for definition in list {
                definition
                    .validate()
                    .map_err(|error| anyhow::anyhow!("trigger {}: {error}", definition.name))?;
            }
            let map: BTreeMap<String, TriggerDefinition> =
                list.iter().map(|definition| (definition.name.clone(), definition.clone())).collect();
            let _ = fixed_sender.send(Some(map));
        }
    }
    let status_producer = registry.producer()?;

    let mut running: HashMap<String, Running> = HashMap::new();
    let mut known: HashMap<String, Known> = HashMap::new();
    let mut wanted: BTreeMap<String, TriggerDefinition> = BTreeMap::new();
    let mut status_timer = tokio::time::interval(STATUS_INTERVAL);
    let mut check_timer = tokio::time::interval(Duration::from_millis(250));

    loop {
        tokio::select! {
            _ = crate::task::stopped(&mut stop) => break,
            changed = definitions.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the trigger registry reader stopped");
                }
                let latest = definitions.borrow_and_update().clone();
                if let Some(latest) = latest {
                    wanted = latest
                        .into_iter()
                        .filter(|(name, _)| options.only.is_empty() || options.only.contains(name))
                        .collect();
                }
            }
            _ = status_timer.tick() => {
                for (name, entry) in &known {
                    let record = StatusRecord {
                        trigger: name.clone(),
                        instance: options.instance.clone(),
                        state: entry.state.to_string(),
                        detail: entry.detail.clone(),
                        stats: entry.stats.snapshot(),
                        updated_at_ms: now_ms(),
                    };
                    if let Err(error) = registry.publish_status(&status_producer, &record) {
                        tracing::debug!(%error, "publishing trigger status failed");
                    }
                }
                continue;
            }
            _ = check_timer.tick() => {}
        }

        // Collect triggers that ended by themselves.
        let ended: Vec<String> = running
            .iter()
            .filter(|(_, entry)| entry.task.is_finished())
            .map(|(name, _)| name.clone())
            .collect();
        for name in ended {
            let Some(entry) = running.remove(&name) else { continue };
            let result = entry.task.await;
            let state = known.entry(name.clone()).or_insert_with(|| Known {
                state: "stopped",
                detail: None,
                stats: entry.stats.clone(),
                retry_at: None,
            });
            match result {
                Ok(Ok(RunEnd::Disabled { reason })) => {
                    state.state = "disabled";
                    state.detail = Some(reason.clone());
                    if matches!(options.source, DefinitionSource::Registry) {
                        let mut disabled = entry.definition.clone();
                        disabled.disabled_reason = Some(reason);
                        if let Err(error) = registry.put(&disabled).await {
                            tracing::error!(trigger = %name, %error, "recording the disabled trigger failed");
                        }
                    }
                    // Until the registry says otherwise, this instance keeps it stopped.
                    if let Some(wanted) = wanted.get_mut(&name) {
                        wanted.disabled_reason = state.detail.clone();
                    }
                }
                Ok(Ok(RunEnd::Stopped)) => state.state = "stopped",
                Ok(Err(error)) => {
                    tracing::error!(trigger = %name, error = %format!("{error:#}"), "trigger failed; restarting soon");
                    state.state = "failed";
                    state.detail = Some(format!("{error:#}"));
                    state.retry_at = Some(tokio::time::Instant::now() + RESTART_DELAY);
                }
                Err(error) => {
                    tracing::error!(trigger = %name, %error, "trigger task panicked; restarting soon");
                    state.state = "failed";
                    state.detail = Some(error.to_string());
                    state.retry_at = Some(tokio::time::Instant::now() + RESTART_DELAY);
                }
            }
        }

        // Stop what is no longer wanted as it runs.
        let outdated: Vec<String> = running
            .iter()
            .filter(|(name, entry)| {
                wanted.get(*name).is_none_or(|definition| *definition != entry.definition)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in outdated {
            if let Some(entry) = running.remove(&name) {
                stop_trigger(&name, entry).await;
            }
        }
        known.retain(|name, _| wanted.contains_key(name));

        // Start what is wanted and not running.
        let now = tokio::time::Instant::now();
        for (name, definition) in &wanted {
            if running.contains_key(name) {
                continue;
            }
            let entry = known.entry(name.clone()).or_insert_with(|| Known {
                state: "stopped",
                detail: None,
                stats: Arc::new(TriggerStats::default()),
                retry_at: None,
            });
            if !definition.is_active() {
                entry.state = if definition.disabled_reason.is_some() { "disabled" } else { "paused" };
                entry.detail = definition.disabled_reason.clone();
                continue;
            }
            if entry.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            entry.state = "running";
            entry.detail = None;
            entry.retry_at = None;
            let (stop_sender, stop_receiver) = watch::channel(false);
            let task = tokio::spawn(run_trigger(
                definition.clone(),
                cluster.clone(),
                entry.stats.clone(),
                stop_receiver,
            ));
            running.insert(
                name.clone(),
                Running {
                    definition: definition.clone(),
                    stats: entry.stats.clone(),
                    stop: stop_sender,
                    task,
                },
            );
        }
    }

    for (name, entry) in running.drain() {
        stop_trigger(&name, entry).await;
    }
    drop(fixed_sender);
    if let Some(follower) = follower {
        crate::definitions::join_follower(follower).await;
    }
    Ok(())
}

async fn stop_trigger(name: &str, entry: Running) {
    crate::task::stop_and_join(&format!("trigger {name}"), &entry.stop, entry.task).await;
}
