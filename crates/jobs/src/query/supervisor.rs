//! Keeps the registered query jobs running: one `run_query_job` task per job that is not
//! stopped, restarted when its definition changes, and after `RESTART_DELAY` when it fails (a
//! cluster not reachable yet, another instance of the job fencing this one, a row the broker
//! refused). Every `STATUS_INTERVAL` it publishes each job's state here, its latest failure and
//! the events it read to `_tidewater_query_status`, which `query list` and `query describe` show.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tidewater_client::{now_ms, ClusterConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::registry::{QueryDefinition, QueryRegistry, QueryStatus};
use super::runner::run_query_job;

/// How long a failed job waits before it starts again.
const RESTART_DELAY: Duration = Duration::from_secs(5);
/// How often each job's status is published.
const STATUS_INTERVAL: Duration = Duration::from_secs(2);

struct Running {
    definition: QueryDefinition,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Runs the registered query jobs until `stop` turns true, then stops them (each commits a last
/// checkpoint).
/// `instance` names this supervisor in the status records (host and process).
pub async fn supervise_queries(
    cluster: ClusterConfig,
    timeout: Duration,
    instance: String,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let registry = QueryRegistry::new(cluster.clone(), timeout);
    // A registry an older version made keeps every record until it is a compacted table.
    registry.upgrade_topic().await;
    // Status is advisory: a cluster that refuses the topic still gets its jobs run.
    if let Err(error) = registry.ensure_status_topic().await {
        tracing::warn!(error = %format!("{error:#}"), "creating the query status topic failed; job status is not published");
    }
    let status_producer = registry.producer()?;
    let mut status_timer = tokio::time::interval(STATUS_INTERVAL);
    let (mut definitions, follower) = registry.watch(stop.clone())?;
    tracing::info!(brokers = %cluster.bootstrap_servers, "running the query jobs registered in {}", super::registry::QUERIES_TOPIC);
    let mut wanted: BTreeMap<String, QueryDefinition> = BTreeMap::new();
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut retry_at: HashMap<String, tokio::time::Instant> = HashMap::new();
    let mut check_timer = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = crate::task::stopped(&mut stop) => break,
            changed = definitions.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the query registry reader stopped");
                }
                let latest = definitions.borrow_and_update().clone();
                if let Some(latest) = latest {
                    wanted = latest;
                }
            }
            _ = status_timer.tick() => {
                for (name, definition) in &wanted {
                    let state = if definition.stopped {
                        "stopped"
                    } else if running.contains_key(name) {
                        "running"
                    } else {
                        "restarting"
                    };
                    let record = QueryStatus {
                        job: name.clone(),
                        instance: instance.clone(),
                        state: state.to_string(),
                        last_failure: super::metrics::last_failure(name),
                        events: super::metrics::events_read(name),
                        updated_at_ms: now_ms(),
                    };
                    if let Err(error) = registry.publish_status(&status_producer, &record) {
                        tracing::debug!(%error, "publishing query status failed");
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
            match entry.task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    let error = format!("{error:#}");
                    tracing::error!(job = %name, %error, "query job failed; restarting soon");
                    super::metrics::record_failure(&name, &error);
                }
                Err(error) => {
                    tracing::error!(job = %name, %error, "query job task panicked; restarting soon");
                    super::metrics::record_failure(&name, &format!("the job's task panicked: {error}"));
                }
            }
            retry_at.insert(name, tokio::time::Instant::now() + RESTART_DELAY);
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
                stop_job(&name, entry).await;
            }
        }
        let now = tokio::time::Instant::now();
        for (name, definition) in &wanted {
            if definition.stopped
                || running.contains_key(name)
                || retry_at.get(name).is_some_and(|at| *at > now)
            {
                continue;
            }
            retry_at.remove(name);
            let (stop_sender, stop_receiver) = watch::channel(false);
            let task = tokio::spawn(run_query_job(definition.settings(), cluster.clone(), stop_receiver));
            running.insert(name.clone(), Running { definition: definition.clone(), stop: stop_sender, task });
        }
    }
    for (name, entry) in running.drain() {
        stop_job(&name, entry).await;
    }
    crate::definitions::join_follower(follower).await;
    Ok(())
}

async fn stop_job(name: &str, entry: Running) {
    crate::task::stop_and_join(&format!("query job {name}"), &entry.stop, entry.task).await;
}
