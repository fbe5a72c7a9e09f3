//! What the MQTT and HTTP listeners share: a connection limit taken before `accept`, so that
//! over it new clients wait in the listen backlog instead of being accepted and held; the TLS
//! handshake of a TLS listener, bounded by [`TLS_HANDSHAKE_TIMEOUT`] so that a client that
//! stalls or speaks something else costs only its own connection; and a bounded wait at
//! shutdown for the connections still open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a client has to finish its TLS handshake; then only its connection is closed.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One socket the gateway serves: plain, or TLS with the given server configuration (made by
/// the binary from `--tls-cert`/`--tls-key`; the gateway does not load certificates itself).
#[derive(Debug)]
pub struct Listen {
    pub socket: TcpListener,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// MQTT over WebSockets (ignored by the HTTP listener).
    pub websocket: bool,
}

impl Listen {
    pub fn plain(socket: TcpListener) -> Listen {
        Listen { socket, tls: None, websocket: false }
    }

    pub fn tls(socket: TcpListener, config: Arc<rustls::ServerConfig>) -> Listen {
        Listen { socket, tls: Some(config), websocket: false }
    }
}

/// The certificate chain a TLS client presented (leaf first), as DER. The handshake proved the
/// client holds the leaf's key; whether the certificate is any good is for [`crate::auth`].
pub type PeerCertificates = Vec<CertificateDer<'static>>;

/// Runs the server side of a TLS handshake on `stream`, within [`TLS_HANDSHAKE_TIMEOUT`].
/// `None` (after logging why) when it fails or stalls; the caller then just drops the socket.
pub(crate) async fn tls_handshake(
    stream: TcpStream,
    config: &Arc<rustls::ServerConfig>,
    peer: SocketAddr,
    what: &'static str,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Option<PeerCertificates>)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let certificates = stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|chain| chain.iter().map(|certificate| certificate.clone().into_owned()).collect());
            Some((stream, certificates))
        }
        Ok(Err(error)) => {
            tracing::info!(%peer, %error, "{what} TLS handshake failed; closed that connection");
            None
        }
        Err(_) => {
            tracing::info!(
                %peer,
                "{what} TLS handshake not finished within {} s; closed that connection",
                TLS_HANDSHAKE_TIMEOUT.as_secs()
            );
            None
        }
    }
}

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
