//! What the MQTT and HTTP listeners share: a connection limit taken before `accept`, so that
//! over it new clients wait in the listen backlog instead of being accepted and held, and a
//! bounded wait at shutdown for the connections still open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// At most `max_connections` connections open at once, each holding a permit.
pub(crate) struct LimitedListener {
    listener: TcpListener,
    connections: Arc<Semaphore>,
    max_connections: usize,
    /// "MQTT" or "HTTP", for the log.
    what: &'static str,
}

impl LimitedListener {
    pub(crate) fn new(listener: TcpListener, max_connections: usize, what: &'static str) -> LimitedListener {
        let max_connections = max_connections.max(1);
        LimitedListener {
            listener,
            connections: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            what,
        }
    }

    /// The next connection and the permit it holds while open, or `None` once `stop` turns
    /// true.
    pub(crate) async fn accept(
        &self,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
        loop {
            // The permit first: over the limit, new clients wait in the listen backlog.
            let permit = tokio::select! {
                permit = self.connections.clone().acquire_owned() => permit.ok()?,
                _ = stop.changed() => return None,
            };
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = stop.changed() => return None,
            };
            match accepted {
                Ok((stream, peer)) => return Some((stream, peer, permit)),
                Err(error) => {
                    // Usually out of file descriptors; do not spin on it.
                    tracing::warn!(%error, "accepting an {} connection", self.what);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Stops listening and waits up to `grace` for the open connections to finish.
    pub(crate) async fn close(self, grace: Duration) {
        drop(self.listener);
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        if tokio::time::timeout(grace, self.connections.acquire_many(all)).await.is_err() {
            tracing::warn!("{} connections did not finish within {grace:?}", self.what);
        }
    }
}
