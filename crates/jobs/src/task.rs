//! Small pieces every long-running job task shares: waiting for the stop signal, and stopping a
//! spawned task and reporting how it ended.

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Resolves once `stop` is true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is dropped here, before the caller's next await.
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Raises `stop` and waits for `task`, logging an error or a panic against `what`.
pub async fn stop_and_join<T>(what: &str, stop: &watch::Sender<bool>, task: JoinHandle<anyhow::Result<T>>) {
    let _ = stop.send(true);
    match task.await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(error = %format!("{error:#}"), "{what} ended with an error"),
        Err(error) => tracing::warn!(%error, "the task running {what} failed"),
    }
}
