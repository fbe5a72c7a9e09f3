//! The TCP side of the Kafka protocol: accepting connections, reading frames, dispatching
//! decoded requests to a `Handler` and writing responses back in request order.
//!
//! Each connection has a reader (this task) and a writer task joined by a bounded queue of
//! in-flight requests. The reader decodes a frame, starts its handler on its own task and queues
//! the task's handle; the writer awaits the handles in queue order. So requests on one connection
//! run concurrently (a long-polling fetch does not hold up a produce behind it), while responses
//! leave in the order the requests came, as Kafka clients require. When the queue is full the
//! reader stops reading: that is the per-connection in-flight limit, and it is backpressure, not
//! an error.
//!
//! A bad frame (oversized, undecodable, an unsupported version) closes that one connection with a
//! log line. A handler that panics closes its connection too; the server and every other
//! connection carry on.
//!
//! The server serves several listeners at once (`listener.rs`), sharing one connection limit.
//! On a TLS listener the handshake runs on the connection's own task within
//! `TLS_HANDSHAKE_TIMEOUT`, so a client that stalls or speaks plaintext costs one connection
//! slot for a moment and nothing else. On a SASL listener nothing reaches the handler before
//! the connection has authenticated (`authentication.rs`): the reader answers ApiVersions,
//! SaslHandshake and SaslAuthenticate itself, in order, and closes the connection on anything
//! else. The principal a connection settles on travels with every request in `ConnectionInfo`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use tidewater_security::KafkaPrincipal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::authentication::{Authentication, FAILED_AUTHENTICATION_CLOSE_DELAY};
use crate::codec::{self, DecodeError, Request};
use crate::encoded::EncodedResponse;
use crate::file_records::FileRecordSets;
use crate::frame;
use crate::listener::{ListenerConfig, ListenerInfo};
use crate::send_file::ResponseWriter;
use crate::versions::SupportedVersions;

/// What a handler returns for one request. Rarely `NoResponse`, so the size difference between
/// the variants costs nothing worth a box.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    Response(ResponseKind),
    /// A fetch response some of whose record sets are placeholders for file ranges, sent
    /// with `sendfile` ([`crate::file_records`]); only where `ConnectionInfo::sends_files`.
    WithFiles(ResponseKind, FileRecordSets),
    /// Send nothing back: a produce with acks=0.
    NoResponse,
}

pub type ReplyFuture = Pin<Box<dyn Future<Output = Reply> + Send + 'static>>;

/// The broker's side of the protocol: turns a typed request into a typed reply. The server
/// answers ApiVersions itself from `supported_versions`.
pub trait Handler: Send + Sync + 'static {
    fn supported_versions(&self) -> &SupportedVersions;
    fn handle(&self, request: Request, connection: &ConnectionInfo) -> ReplyFuture;
}

/// Who is on the other end of a connection, and what orders work across its requests.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub peer: SocketAddr,
    pub connection_id: u64,
    /// Requests of one connection run concurrently, but some work must happen in request order
    /// (appends: Kafka keeps a producer's pipelined batches in order). `Handler::handle` is called
    /// in request order, so a handler that takes a turn there and waits for it in its future gets
    /// that order.
    pub turns: TurnQueue,
    /// Who this connection acts as, for authorization: settled by the listener's authentication
    /// before any request reaches the handler, `User:ANONYMOUS` where nothing authenticates.
    pub principal: Arc<KafkaPrincipal>,
    /// The listener the connection came in on: its advertised address is what Metadata gives
    /// this client.
    pub listener: Arc<ListenerInfo>,
    /// Whether record sets may be left in their files for the writer to send with `sendfile`
    /// ([`Reply::WithFiles`]): on plaintext TCP, not through TLS, which must encrypt them.
    pub sends_files: bool,
}

/// A FIFO of turns: each `Turn` waits until the turn taken before it on the same queue is over.
#[derive(Debug, Clone, Default)]
pub struct TurnQueue {
    last: Arc<std::sync::Mutex<Option<oneshot::Receiver<()>>>>,
}

impl TurnQueue {
    /// Takes the next turn. Call this synchronously, in the order the work must happen.
    pub fn take(&self) -> Turn {
        let (done, finished) = oneshot::channel();
        let previous = self.last.lock().expect("turn queue mutex poisoned by a panic").replace(finished);
        Turn { previous, _done: done }
    }
}

/// One place in a `TurnQueue`. The turn is over when this is dropped (also on error or panic, so
/// a failed request never blocks the ones behind it).
#[derive(Debug)]
pub struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    _done: oneshot::Sender<()>,
}

impl Turn {
    /// Waits until every turn taken before this one is over.
    pub async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            // An error only means the previous turn was dropped, which is also "over".
            let _ = previous.await;
        }
    }
}

/// Kafka's `connections.max.idle.ms` default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Requests one connection may have in flight before the server stops reading from it.
/// librdkafka pipelines up to 5 produce requests per partition leader for idempotence, and
/// consumers keep a fetch outstanding beside heartbeats and commits.
pub const DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION: usize = 64;
/// Connections open at once; further clients wait in the listen backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// A connection's read buffer to start with, and the least room made at a time for a frame
/// that is still arriving.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;
/// How long shutdown waits for connections to finish their in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
/// How long a client may take over its TLS handshake before its connection is closed.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub max_request_bytes: usize,
    pub max_connections: usize,
    pub max_in_flight_per_connection: usize,
    pub idle_timeout: Duration,
    /// Send fetched record sets on plaintext connections with `sendfile` instead of reading them
    /// first ([`crate::file_records`]). Off by default: on loopback it measured more broker CPU
    /// per byte served than the one-copy read (docs/operations.md, `bench-consume-ab`).
    pub send_files: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_request_bytes: frame::DEFAULT_MAX_REQUEST_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight_per_connection: DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            send_files: false,
        }
    }
}

/// Accepts connections on every listener until `shutdown` turns true, then stops reading new
/// requests, lets every connection answer what it has in flight (up to `SHUTDOWN_GRACE`) and
/// returns. The listeners share `config.max_connections`.
pub async fn serve(
    listeners: Vec<(TcpListener, ListenerConfig)>,
    config: ServerConfig,
    handler: Arc<dyn Handler>,
    shutdown: watch::Receiver<bool>,
) {
    let connection_slots = Arc::new(Semaphore::new(config.max_connections));
    let connection_ids = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut accept_loops = tokio::task::JoinSet::new();
    for (listener, listener_config) in listeners {
        let accept = AcceptLoop {
            listener,
            listener_config: Arc::new(listener_config),
            config: config.clone(),
            handler: handler.clone(),
            connection_slots: connection_slots.clone(),
            connection_ids: connection_ids.clone(),
        };
        accept_loops.spawn(accept.run(shutdown.clone()));
    }
    while accept_loops.join_next().await.is_some() {}
}

/// One listener's accept loop and the connections it accepted.
struct AcceptLoop {
    listener: TcpListener,
    listener_config: Arc<ListenerConfig>,
    config: ServerConfig,
    handler: Arc<dyn Handler>,
    connection_slots: Arc<Semaphore>,
    connection_ids: Arc<std::sync::atomic::AtomicU64>,
}

impl AcceptLoop {
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            // Take a slot before accepting, so clients beyond the limit wait in the backlog.
            let slot = tokio::select! {
                slot = self.connection_slots.clone().acquire_owned() => slot,
                _ = shutdown.changed() => break,
            };
            let Ok(slot) = slot else { break };
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = shutdown.changed() => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: say so, back off briefly, carry on.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let connection_id = self.connection_ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let listener = self.listener_config.clone();
            let info = ConnectionInfo {
                peer,
                connection_id,
                turns: TurnQueue::default(),
                principal: Arc::new(KafkaPrincipal::anonymous()),
                listener: listener.info.clone(),
                sends_files: self.config.send_files && listener.tls.is_none(),
            };
            let connection = Connection { config: self.config.clone(), handler: self.handler.clone(), info };
            let shutdown = shutdown.clone();
            // Every line logged about this connection (its authentication among them) says whose
            // it is.
            let span = tracing::info_span!("connection", %peer, listener = %listener.info.name);
            let open = crate::metrics::OpenConnection::new();
            let task = async move {
                let _open = open;
                match &listener.tls {
                    None => {
                        let (reader, writer) = stream.into_split();
                        connection.run(reader, writer, &listener, shutdown).await;
                    }
                    Some(tls) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let connection = match connection
                                    .with_certificate_principal(&stream, &listener)
                                {
                                    Ok(connection) => connection,
                                    Err(reason) => {
                                        tracing::warn!(%peer, listener = %listener.info.name, %reason, "closing a TLS connection");
                                        drop(slot);
                                        return;
                                    }
                                };
                                let (reader, writer) = tokio::io::split(stream);
                                connection.run(reader, writer, &listener, shutdown).await;
                            }
                            Ok(Err(error)) => {
                                tracing::info!(%peer, listener = %listener.info.name, %error, "TLS handshake failed")
                            }
                            Err(_) => tracing::info!(
                                %peer,
                                listener = %listener.info.name,
                                "TLS handshake not finished within {} s",
                                TLS_HANDSHAKE_TIMEOUT.as_secs()
                            ),
                        }
                    }
                }
                drop(slot);
            };
            connections.spawn(tracing::Instrument::instrument(task, span));
            // Reap finished connections so the set does not grow with every client ever seen.
            while connections.try_join_next().is_some() {}
        }
        let drained =
            tokio::time::timeout(SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} })
                .await;
        if drained.is_err() {
            tracing::warn!(
                listener = %self.listener_config.info.name,
                remaining = connections.len(),
                "connections still busy after the shutdown grace period"
            );
            connections.abort_all();
        }
    }
}

struct Connection {
    config: ServerConfig,
    handler: Arc<dyn Handler>,
    info: ConnectionInfo,
}

/// What the writer sends, in the order the reader queued it.
enum Outgoing {
    /// A request's reply, sent once its task finishes.
    /// `received` is when the request was read, for the latency metric.
    Reply {
        correlation_id: i32,
        api_key: ApiKey,
        api_version: i16,
        received: Instant,
        reply: JoinHandle<Reply>,
    },
    /// A bare SASL token, the answer to one after a v0 SaslHandshake.
    SaslToken(Bytes),
}

impl Connection {
    /// On an `SSL` listener that maps client certificates to principals, takes the principal
    /// from the certificate the handshake verified. A connection without one (the listener
    /// requires it, so this means a misconfiguration) or whose subject no mapping rule takes is
    /// refused.
    fn with_certificate_principal<S>(
        mut self,
        stream: &tokio_rustls::server::TlsStream<S>,
        listener: &ListenerConfig,
    ) -> Result<Connection, String> {
        let Some(mapping) = &listener.certificate_principal else { return Ok(self) };
        let certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certificates| certificates.first())
            .ok_or("no client certificate")?;
        let principal = tidewater_security::tls::certificate_principal(certificate, mapping)?;
        tracing::debug!(peer = %self.info.peer, %principal, "client certificate accepted");
        self.info.principal = Arc::new(principal);
        Ok(self)
    }

    async fn run<R, W>(
        mut self,
        mut reader: R,
        writer: W,
        listener: &ListenerConfig,
        mut shutdown: watch::Receiver<bool>,
    ) where
        R: AsyncRead + Unpin + Send,
        W: ResponseWriter + 'static,
    {
        let peer = self.info.peer;
        tracing::debug!(%peer, connection_id = self.info.connection_id, listener = %listener.info.name, "connection opened");
        let mut authentication =
            Authentication::new(peer, listener.sasl.clone(), (*self.info.principal).clone());
        let (queue, outgoing) = mpsc::channel(self.config.max_in_flight_per_connection.max(1));
        let writer = tokio::spawn(write_replies(writer, outgoing, peer));
        let mut buffer = BytesMut::with_capacity(READ_BUFFER_BYTES);
        let close_reason = 'read: loop {
            loop {
                let request_bytes_max = authentication.request_bytes_max(self.config.max_request_bytes);
                match frame::check(&buffer, request_bytes_max) {
                    Ok(Some(len)) => {
                        let payload = buffer.split_to(len).freeze().slice(frame::SIZE_PREFIX_BYTES..);
                        if let Err(reason) = self.dispatch(payload, &queue, &mut authentication).await {
                            break 'read reason;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        // A bad size prefix leaves no way to find the next frame: say why at the
                        // same level as a bad request, then close.
                        let hint = if looks_like_tls(&buffer) {
                            " (a TLS handshake on a plaintext listener?)"
                        } else {
                            ""
                        };
                        tracing::warn!(peer = %self.info.peer, listener = %listener.info.name, %error, "closing connection after a bad frame{hint}");
                        break 'read format!("bad frame: {error}");
                    }
                }
            }
            // Make room for the rest of the frame as it arrives (`check` has already refused
            // sizes over the limit): at most as much again as is here, or `READ_BUFFER_BYTES`.
            // Memory follows the bytes a client has sent, not the size it announced, so a
            // size prefix alone costs little however large it claims to be (reserving the whole
            // frame at once let each such 4-byte write cost `max_request_bytes`); and doubling
            // keeps the copying for a large frame linear in its size.
            if let Some(needed) = frame_size(&buffer) {
                buffer.reserve(room_to_make(buffer.len(), needed));
            }
            let read = tokio::select! {
                read = tokio::time::timeout(self.config.idle_timeout, reader.read_buf(&mut buffer)) => read,
                _ = shutdown.changed() => break 'read "server shutting down".to_string(),
            };
            match read {
                Ok(Ok(0)) => break "closed by client".to_string(),
                Ok(Ok(_)) => {}
                Ok(Err(error)) => break format!("read failed: {error}"),
                Err(_) => break format!("idle for {:?}", self.config.idle_timeout),
            }
        };
        // A refused client gets its answer at once and the close a moment later (KIP-306), so it
        // reads why before it sees the connection end.
        if authentication.was_refused() {
            tokio::select! {
                _ = tokio::time::sleep(FAILED_AUTHENTICATION_CLOSE_DELAY) => {}
                _ = shutdown.changed() => {}
            }
        }
        // Let the writer answer everything already accepted, then close.
        drop(queue);
        let _ = writer.await;
        tracing::debug!(%peer, reason = %close_reason, "connection closed");
    }

    /// Decodes one request and queues its reply. An error closes the connection (after what is
    /// queued has been written).
    async fn dispatch(
        &mut self,
        payload: Bytes,
        queue: &mpsc::Sender<Outgoing>,
        authentication: &mut Authentication,
    ) -> Result<(), String> {
        let writer_gone = |_| "writer gone".to_string();
        let received = Instant::now();
        if authentication.expects_raw_token() {
            // After a v0 SaslHandshake the frame is the mechanism's message itself.
            let outcome = authentication.authenticate(payload, Instant::now()).await;
            if outcome.close {
                return Err("SASL authentication failed".to_string());
            }
            self.info.principal = Arc::new(authentication.principal().clone());
            return queue.send(Outgoing::SaslToken(outcome.response.auth_bytes)).await.map_err(writer_gone);
        }
        let supported = self.handler.supported_versions();
        let request = match codec::decode_request(payload, supported) {
            Ok(request) => request,
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                api_version,
                correlation_id,
            }) => {
                // KIP-511: answer in v0 with our ranges so the client can pick a version.
                let response = supported.api_versions_response(true);
                tracing::debug!(peer = %self.info.peer, api_version, "unsupported ApiVersions version");
                return queue
                    .send(ready(correlation_id, ApiKey::ApiVersions, 0, ResponseKind::ApiVersions(response)))
                    .await
                    .map_err(writer_gone);
            }
            Err(error) => {
                tracing::warn!(peer = %self.info.peer, %error, "closing connection after a bad request");
                return Err(error.to_string());
            }
        };
        let correlation_id = request.header.correlation_id;
        let (api_key, api_version) = (request.api_key, request.api_version);
        if let Err(reason) = authentication.admit(api_key, Instant::now()) {
            tracing::warn!(peer = %self.info.peer, principal = %authentication.principal(), %reason, "closing connection");
            return Err(reason);
        }
        let (outgoing, close) = match &request.body {
            RequestKind::ApiVersions(_) => {
                let response = ResponseKind::ApiVersions(supported.api_versions_response(false));
                (ready(correlation_id, api_key, api_version, response), None)
            }
            RequestKind::SaslHandshake(handshake) => {
                let (response, close) = authentication.handshake(handshake, api_version);
                let close =
                    close.then(|| format!("SaslHandshake refused (error code {})", response.error_code));
                (ready(correlation_id, api_key, api_version, ResponseKind::SaslHandshake(response)), close)
            }
            RequestKind::SaslAuthenticate(authenticate) => {
                let outcome =
                    authentication.authenticate(authenticate.auth_bytes.clone(), Instant::now()).await;
                self.info.principal = Arc::new(authentication.principal().clone());
                let close = outcome.close.then(|| "SASL authentication failed".to_string());
                (
                    ready(
                        correlation_id,
                        api_key,
                        api_version,
                        ResponseKind::SaslAuthenticate(outcome.response),
                    ),
                    close,
                )
            }
            _ => {
                let reply = tokio::spawn(self.handler.handle(request, &self.info));
                (Outgoing::Reply { correlation_id, api_key, api_version, received, reply }, None)
            }
        };
        queue.send(outgoing).await.map_err(writer_gone)?;
        match close {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

/// A reply that is already known, queued like any other so it keeps its place in the order.
fn ready(correlation_id: i32, api_key: ApiKey, api_version: i16, response: ResponseKind) -> Outgoing {
    let reply = tokio::spawn(async move { Reply::Response(response) });
    Outgoing::Reply { correlation_id, api_key, api_version, received: Instant::now(), reply }
}

/// Whether `buffer` starts like a TLS record carrying a handshake (content type 22, major
/// version 3): a TLS client on a plaintext listener, whose first bytes read as a huge frame.
fn looks_like_tls(buffer: &[u8]) -> bool {
    matches!(buffer, [0x16, 0x03, ..])
}

/// The size of the frame at the front of `buffer`, prefix included, if its prefix is there.
fn frame_size(buffer: &[u8]) -> Option<usize> {
    let prefix = buffer.get(..frame::SIZE_PREFIX_BYTES)?;
    let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    usize::try_from(size).ok().map(|size| size + frame::SIZE_PREFIX_BYTES)
}

/// How many more bytes of buffer to make room for when `buffered` bytes of a `frame_bytes` frame
/// have arrived: the rest of the frame, but never more than `buffered` (or `READ_BUFFER_BYTES`)
/// at a time.
fn room_to_make(buffered: usize, frame_bytes: usize) -> usize {
    frame_bytes.saturating_sub(buffered).min(buffered.max(READ_BUFFER_BYTES))
}

/// Writes replies in request order. Stops at the first failure (a panicked handler, an encode
/// error, a broken socket), which closes the connection.
async fn write_replies<W: ResponseWriter>(
    mut writer: W,
    mut outgoing: mpsc::Receiver<Outgoing>,
    peer: SocketAddr,
) {
    while let Some(next) = outgoing.recv().await {
        let (response, request) = match next {
            Outgoing::SaslToken(token) => {
                let mut framed = BytesMut::with_capacity(frame::SIZE_PREFIX_BYTES + token.len());
                framed.put_i32(i32::try_from(token.len()).unwrap_or(i32::MAX));
                framed.put_slice(&token);
                (EncodedResponse::single(framed.freeze()), None)
            }
            Outgoing::Reply { correlation_id, api_key, api_version, received, reply } => {
                let reply = match reply.await {
                    Ok(reply) => reply,
                    Err(error) => {
                        tracing::error!(%peer, ?api_key, %error, "request handler failed; closing connection");
                        break;
                    }
                };
                let (body, files) = match reply {
                    Reply::Response(body) => (body, FileRecordSets::default()),
                    Reply::WithFiles(body, files) => (body, files),
                    Reply::NoResponse => continue,
                };
                match codec::encode_response(correlation_id, api_key, api_version, &body, &files) {
                    Ok(response) => (response, Some((api_key, received))),
                    Err(error) => {
                        tracing::error!(%peer, %error, "could not encode a response; closing connection");
                        break;
                    }
                }
            }
        };
        if let Err(error) = response.write_to(&mut writer).await {
            tracing::debug!(%peer, %error, "write failed");
            break;
        }
        if let Some((api_key, received)) = request {
            crate::metrics::observe_request(api_key, received);
        }
    }
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_made_as_a_frame_arrives_not_when_it_is_announced() {
        let max = frame::DEFAULT_MAX_REQUEST_BYTES + frame::SIZE_PREFIX_BYTES;
        // (bytes buffered, frame size with prefix, room to make)
        let cases = [
            (4, max, READ_BUFFER_BYTES),
            (READ_BUFFER_BYTES, max, READ_BUFFER_BYTES),
            (READ_BUFFER_BYTES + 1, max, READ_BUFFER_BYTES + 1),
            (max / 2, max, max - max / 2),
            (max - 1, max, 1),
            (max, max, 0),
            (4, 100, 96),
            (100, 100, 0),
            (150, 100, 0),
        ];
        for (buffered, frame_bytes, expected) in cases {
            assert_eq!(room_to_make(buffered, frame_bytes), expected, "{buffered} of {frame_bytes}");
        }
    }
}
