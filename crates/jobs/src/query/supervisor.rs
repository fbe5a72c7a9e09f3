//! Keeps the registered query jobs running: one `run_query_job` task per job that is not
//! stopped, restarted when its definition changes, and after `RESTART_DELAY` when it fails (a
//! cluster not reachable yet, or another instance of the job fencing this one).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tidewater_client::ClusterConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::registry::{QueryDefinition, QueryRegistry};
use super::runner::run_query_job;

/// How long a failed job waits before it starts again.
const RESTART_DELAY: Duration = Duration::from_secs(5);

struct Running {
    definition: QueryDefinition,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Runs the registered query jobs until `stop` turns true, then stops them (each commits a last
/// checkpoint).
pub async fn supervise_queries(
    cluster: ClusterConfig,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let registry = QueryRegistry::new(cluster.clone(), timeout);
    // A registry an older version made keeps every record until it is a compacted table.
    registry.upgrade_topic().await;
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
