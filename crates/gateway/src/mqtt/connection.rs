//! One MQTT connection: the CONNECT exchange, the hand-over to its [`Session`] (whose loop
//! reads the client's packets and writes what it is owed, in one task), and how the connection
//! ends (DISCONNECT, will, the last acknowledgements, linger).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tidewater_client::now_ms;
use tidewater_mqtt::{
    check, connect_protocol_version, decode_connect, ConnAck, Connect, DecodeError, Disconnect, Limits,
    Packet, Properties, ProtocolVersion, ReasonCode, Utf8Bytes,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::outbound::{Outbound, Outgoing};
use super::session::Session;
use super::transport::ReadBytes;
use super::will::{will_delay, Will};
use super::{ClientClaim, MqttConfig, Shared, CONNECT_TIMEOUT, WRITE_TIMEOUT};
use crate::auth::{authenticate, authenticate_certificate, user_login, Identity};
use crate::hub::{ConnectOptions, SessionExpiry};
use crate::listener::PeerCertificates;
use crate::topic_rules::Action;
use crate::users::Verification;

/// Why the connection's loop ended it; the DISCONNECT reason for MQTT 5 where there is one.
#[derive(Debug)]
pub(super) enum End {
    /// The client sent DISCONNECT with this reason code.
    Disconnected(ReasonCode),
    /// The stream ended, or writing to it failed or timed out.
    Quietly,
    /// Tell an MQTT 5 client why, then close.
    Because(ReasonCode, String),
}
/// One connection from its CONNECT to its end, over a plain or TLS stream (or a WebSocket's
/// pipe), read and written by this one task; `certificates` is what a TLS client presented, if
/// anything.
///
/// A future is as large as its largest state, and an idle connection's task keeps the whole of
/// it for as long as the connection lives; so every phase but the wait for the next packet (the
/// CONNECT exchange, each packet's handling, the end) runs in a box of its own, allocated only
/// while it runs. `the_connection_futures_stay_small` holds the sizes down.
pub(super) async fn run_connection<S>(
    mut stream: S,
    peer: SocketAddr,
    certificates: Option<PeerCertificates>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut open = crate::metrics::OpenConnection::new();
    let mut buffer = BytesMut::new();
    let connecting = accept_connect(&mut stream, &mut buffer, peer, certificates, &shared, &mut open);
    let Some(mut connected) = Box::pin(connecting).await else { return };
    let end = connected.session.run(&mut stream, &mut buffer).await;
    Box::pin(finish(connected, end, &mut stream, &mut buffer, peer)).await;
    drop(open);
}

/// A connection past its CONNACK: what its read loop and its end need.
struct Connected {
    session: Session,
    claim: ClientClaim,
    /// Boxed: most connections have none, and a will with its properties is hundreds of bytes.
    will: Option<Box<tidewater_mqtt::Will>>,
    /// The session's expiry as the CONNECT set it.
    expiry: SessionExpiry,
    /// The device on the console's devices page, while this connection lives.
    online: Option<crate::presence::Online>,
}

/// The CONNECT exchange: reads the CONNECT, authenticates it, takes the client id over,
/// attaches (or restores) the session and answers with the CONNACK; then queues what the
/// session is owed. `None` once the connection is over (refused, or gone).
async fn accept_connect<S>(
    stream: &mut S,
    buffer: &mut BytesMut,
    peer: SocketAddr,
    certificates: Option<PeerCertificates>,
    shared: &Arc<Shared>,
    open: &mut crate::metrics::OpenConnection,
) -> Option<Connected>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = shared.config.limits;
    let mut connect = match tokio::time::timeout(CONNECT_TIMEOUT, read_frame(stream, buffer, &limits)).await {
        // Copied out of the read buffer: the CONNECT's fields are slices of its frame, some
        // kept for the connection's life, and they must not keep a whole chunk with them.
        Ok(Ok(Some(frame))) => match decode_connect(Bytes::copy_from_slice(&frame), &limits) {
            Ok(connect) => connect,
            Err(error) => {
                tracing::debug!(%peer, %error, "refused a CONNECT that does not decode");
                // A CONNACK only if we know which version to say it in; an "MQTT" CONNECT of
                // a level we do not speak gets 3.1.1's "unacceptable protocol version"
                // (MQTT-3.1.2-2), which every version's client can read.
                let version = connect_protocol_version(&frame).or_else(|| {
                    matches!(error, DecodeError::UnsupportedProtocolLevel { .. })
                        .then_some(ProtocolVersion::V311)
                });
                if let Some(version) = version {
                    let _ =
                        write_packet(stream, version, &connack(error.reason_code(), Properties::default()))
                            .await;
                }
                return None;
            }
        },
        Ok(Ok(None)) => return None,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "closed a connection before CONNECT");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT within {CONNECT_TIMEOUT:?}; closed");
            return None;
        }
    };
    let version = connect.protocol_version;
    let mut registry = shared.directory.borrow().clone();
    let user_name = connect.username.as_ref().map(|name| name.as_str());
    let user = user_login(
        registry.as_deref().map(|registry| &registry.devices),
        connect.client_id.as_str(),
        user_name,
        connect.password.as_deref(),
    );
    // A client that sends no password but presented a certificate in the TLS handshake is an
    // X.509 device; one that sends a password is checked by it, certificate or not, as a device
    // unless it is a user's login (`user_login` says when).
    let identity = match (connect.password.as_deref(), certificates.as_deref(), user) {
        (None, Some(chain), _) if !chain.is_empty() => {
            authenticate_certificate(registry.as_deref(), connect.client_id.as_str(), chain)
        }
        (Some(password), _, Some(user)) => match shared.config.users.verify(user, password).await {
            Verification::Verified => Ok(Identity::User(user.to_string())),
            Verification::Refused => {
                crate::metrics::gateway().user_refused(false);
                tracing::info!(%peer, user, "refused an MQTT user: unknown user or wrong password");
                Err(ReasonCode::BadUserNameOrPassword)
            }
            Verification::Unavailable(reason) => {
                crate::metrics::gateway().user_refused(true);
                tracing::warn!(%peer, user, %reason, "could not check an MQTT user's password");
                Err(ReasonCode::ServerUnavailable)
            }
        },
        (password, _, _) => authenticate(
            registry.as_deref().map(|registry| &registry.devices),
            connect.client_id.as_str(),
            password,
            shared.config.allow_anonymous,
        ),
    };
    // Topic rules are in the registry: a client they may apply to waits for it to be read, as a
    // device does for its key (an anonymous client is let in without it otherwise).
    if matches!(identity, Ok(Identity::Anonymous)) && registry.is_none() {
        let mut directory = shared.directory.clone();
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, directory.wait_for(Option::is_some)).await;
        registry = shared.directory.borrow().clone();
    }
    let identity = match identity {
        Ok(Identity::Anonymous) if registry.is_none() => Err(ReasonCode::ServerUnavailable),
        // A will is a PUBLISH made later: one the rules refuse refuses the connection now.
        Ok(identity)
            if connect.will.as_ref().is_some_and(|will| {
                !super::rules_allow(
                    &shared.directory,
                    &identity,
                    connect.client_id.as_str(),
                    Action::Publish,
                    will.topic.as_str(),
                )
            }) =>
        {
            crate::metrics::gateway().denied(true);
            tracing::info!(%peer, client_id = connect.client_id.as_str(), ?identity, "refused a CONNECT whose will topic the topic rules refuse");
            Err(ReasonCode::NotAuthorized)
        }
        other => other,
    };
    // The key the device proved it holds, as its hash: a rotated key ends the connection too
    // (an X.509 device's is empty, and stays so unless it is re-registered with a key).
    let key_hash = match (&identity, &registry) {
        (Ok(Identity::Device(id)), Some(registry)) => {
            registry.devices.get(id).map(|device| device.key_hash.clone())
        }
        _ => None,
    };
    // A connection made with a SAS token ends when the token expires, as IoT Hub's do.
    let credentials_expire_at = connect
        .password
        .as_deref()
        .filter(|password| crate::token::is_token(password))
        .and_then(|password| crate::token::parse(password).ok())
        .map(|token| {
            let left = token.expiry_unix_secs.saturating_sub(crate::auth::unix_now_secs());
            tokio::time::Instant::now() + Duration::from_secs(left)
        });
    let identity = match identity {
        Ok(identity) => identity,
        Err(code) => {
            tracing::info!(%peer, client_id = connect.client_id.as_str(), reason = %code, "refused an MQTT connection");
            let _ = write_packet(stream, version, &connack(code, Properties::default())).await;
            return None;
        }
    };
    let properties = connack_properties(&connect, &shared.config);
    let client_id = match &properties.assigned_client_identifier {
        Some(assigned) => assigned.as_str(),
        None => connect.client_id.as_str(),
    };
    // Anonymous clients claim ids of their own kind, so one cannot push a device off by naming
    // itself after it; a user's are its own (a '/' in its name escaped), so one user cannot take
    // another's session over and inherit subscriptions its rules would refuse.
    let claimed_id = match &identity {
        Identity::Device(id) => id.clone(),
        Identity::User(name) => format!("user/{}/{client_id}", name.replace('%', "%25").replace('/', "%2F")),
        Identity::Anonymous => format!("anonymous/{client_id}"),
    };
    // The client id as the client knows it: what topic rules' %c and client id rules see.
    let rules_client_id = client_id.to_string();
    let claim = ClientClaim::take(shared, &claimed_id);
    let expiry = match (version, connect.clean_start) {
        (ProtocolVersion::V5, _) => {
            SessionExpiry::from_interval(connect.properties.session_expiry_interval_secs.unwrap_or(0))
        }
        (ProtocolVersion::V311, true) => SessionExpiry::AtDisconnect,
        (ProtocolVersion::V311, false) => SessionExpiry::Never,
    };
    let options = ConnectOptions {
        clean_start: connect.clean_start,
        expiry,
        version,
        receive_maximum: connect.properties.receive_maximum.unwrap_or(u16::MAX),
        maximum_packet_size: connect.properties.maximum_packet_size,
        device: identity.device_id().map(str::to_string),
        may_receive: super::receive_check(shared, &identity, client_id),
    };
    // A session this gateway does not hold but the cluster does (a restart, another gateway):
    // restored before the CONNACK, which then says it is present.
    if !connect.clean_start {
        shared.store.catch_up().await;
        if let Some(record) = shared.hub.restorable(&claimed_id, now_ms()) {
            if let Err(error) = restore_session(shared, &claimed_id, record, &options).await {
                tracing::warn!(%peer, client_id = claimed_id, error = %format!("{error:#}"), "could not restore a session; refused the connection");
                let _ = write_packet(
                    stream,
                    version,
                    &connack(ReasonCode::ServerUnavailable, Properties::default()),
                )
                .await;
                return None;
            }
        }
    }
    let (session_present, owed) =
        shared.hub.connect(&claimed_id, options, claim.connection_id, claim.signal.clone(), now_ms());
    let connack = Packet::ConnAck(ConnAck { session_present, reason_code: ReasonCode::Success, properties });
    if write_packet(stream, version, &connack).await.is_err() {
        shared.hub.disconnect(&claimed_id, claim.connection_id, None);
        return None;
    }
    tracing::debug!(%peer, client_id = connect.client_id.as_str(), ?version, session_present, "MQTT client connected");
    if identity.device_id().is_some() {
        open.device_connected();
    }
    // Connected on the console's devices page until this connection ends.
    let online = identity.device_id().map(|device| crate::presence::presence().connected(device));

    let max_in_flight = shared.config.max_in_flight_per_connection.max(1);
    // As many items as the writer's channel held before the two tasks became one.
    let outbound = Outbound::new(version, max_in_flight.saturating_mul(2).saturating_add(8));
    let throttle = crate::throttle::Throttle::for_client(identity.device_id(), shared.config.device_quota);
    let mut session = Session {
        shared: shared.clone(),
        version,
        identity,
        client: claimed_id.clone(),
        client_id: rules_client_id,
        denial_logged: false,
        connection_id: claim.connection_id,
        key_hash,
        keep_alive: keep_alive_deadline(granted_keep_alive(connect.keep_alive_secs, &shared.config)),
        max_in_flight: usize::from(max_in_flight),
        outbound,
        signal: claim.signal.clone(),
        aliases: None,
        client_topic_alias_maximum: connect.properties.topic_alias_maximum.unwrap_or(0),
        credentials_expire_at,
        expiry_at_disconnect: None,
        activity: online.as_ref().map(|online| online.activity().clone()),
        throttle,
    };
    for (device, (partition, offset)) in owed.delivered {
        session.record_delivery(device, partition, offset);
    }
    // A new queue is open: this cannot fail.
    let _ = session.send_all(owed.packets);
    Some(Connected { session, claim, will: connect.will.take().map(Box::new), expiry, online })
}

/// How a connection ends, once its read loop did: the DISCONNECT that says why (MQTT 5), the
/// session detached, the will, the last acknowledgements (written while the will is appended),
/// and a linger for a client that is told to go.
async fn finish<S: AsyncRead + AsyncWrite + Unpin + Send>(
    connected: Connected,
    end: End,
    stream: &mut S,
    buffer: &mut BytesMut,
    peer: SocketAddr,
) {
    // `_online` and `claim` last until the linger is over, as the connection does.
    let Connected { mut session, claim, will, expiry, online: _online } = connected;
    let (shared, version) = (session.shared.clone(), session.version);
    let client_id = session.client_id.as_str();
    if let End::Because(code, detail) = &end {
        tracing::info!(%peer, client_id, reason = %code, detail, "closing an MQTT connection");
        if version == ProtocolVersion::V5 {
            let disconnect =
                Packet::Disconnect(Disconnect { reason_code: *code, properties: Properties::default() });
            let _ = session.send(Outgoing::packet(disconnect));
        }
    }
    shared.hub.disconnect(&session.client, claim.connection_id, session.expiry_at_disconnect);
    // The will goes out unless the client said goodbye without asking for it (spec 3.1.2.5).
    let publish_will =
        !matches!(end, End::Disconnected(code) if code != ReasonCode::DisconnectWithWillMessage);
    let will = will.filter(|_| publish_will).map(|will| Will {
        shared: shared.clone(),
        identity: session.identity.clone(),
        client: session.client.clone(),
        will: *will,
    });
    let session_expiry = session.expiry_at_disconnect.unwrap_or(expiry);
    let connection_id = claim.connection_id;
    let appended = async move {
        if let Some(will) = will {
            match will_delay(&will.will, version, session_expiry) {
                None => will.publish().await,
                Some(delay) => will.wait_out(delay, connection_id).await,
            }
        }
    };
    // The acknowledgements owed go out while the will is appended; the stream closes after both.
    tokio::join!(appended, session.outbound.drain(stream));
    session.outbound.close_stream(stream).await;
    drop(session);
    if matches!(end, End::Because(..)) {
        linger(stream, buffer).await;
    }
}

/// Restores `client`'s session from its record: re-reads what it may be owed from the pub/sub
/// topic and puts it back in the hub. On failure the hub is as before, the record kept.
async fn restore_session(
    shared: &Shared,
    client: &str,
    record: crate::session_record::SessionRecord,
    options: &ConnectOptions,
) -> anyhow::Result<()> {
    let Some(ranges) = shared.hub.begin_restore(client, &record, options) else { return Ok(()) };
    // Until the follower has started on the pub/sub topic the hub knows no position to re-read
    // up to; restoring now would write the session back without its positions.
    if ranges.is_empty() && !record.positions.is_empty() {
        shared.hub.abandon_restore(client, record);
        anyhow::bail!("the pub/sub topic is not being read yet");
    }
    match shared.store.replay(ranges).await {
        Ok(replayed) => {
            shared.hub.finish_restore(client, &record, &replayed, now_ms());
            tracing::info!(
                client,
                gateway = record.gateway,
                n_replayed = replayed.len(),
                "restored a session from the cluster"
            );
            Ok(())
        }
        Err(error) => {
            shared.hub.abandon_restore(client, record);
            Err(error)
        }
    }
}

/// How long a connection the gateway closes keeps reading (and discarding) what the client
/// still sends, and how much of it.
pub(super) const LINGER: Duration = Duration::from_secs(2);
pub(super) const LINGER_BYTES_MAX: usize = 1 << 20;

/// After the gateway closed a connection (its DISCONNECT and FIN are sent), reads what the client
/// still sends until it closes too. Closing a socket with unread bytes makes the kernel send a
/// reset instead, and a reset can destroy the DISCONNECT before the client reads its reason code.
pub(super) async fn linger<R: ReadBytes>(reader: &mut R, buffer: &mut BytesMut) {
    let drain = async {
        let mut drained = 0;
        while drained < LINGER_BYTES_MAX {
            buffer.clear();
            match reader.read_some(buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => drained += read,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// The keep-alive the gateway holds a client to: what it asked for, at most
/// [`MqttConfig::max_keep_alive_secs`] (and not "none" when there is a maximum).
pub(super) fn granted_keep_alive(requested: u16, config: &MqttConfig) -> u16 {
    if config.max_keep_alive_secs == u16::MAX {
        return requested;
    }
    if requested == 0 {
        config.max_keep_alive_secs
    } else {
        requested.min(config.max_keep_alive_secs)
    }
}
/// 1.5 times the keep-alive, or no deadline for a keep-alive of 0 (spec 3.1.2.10).
pub(super) fn keep_alive_deadline(keep_alive_secs: u16) -> Option<Duration> {
    (keep_alive_secs > 0).then(|| Duration::from_millis(u64::from(keep_alive_secs) * 1500))
}

/// A CONNACK refusing the connection, or accepting one without a session.
pub(super) fn connack(reason_code: ReasonCode, properties: Properties) -> Packet {
    Packet::ConnAck(ConnAck { session_present: false, reason_code, properties })
}

/// What an MQTT 5 CONNACK tells the client about this server (dropped for 3.1.1).
pub(super) fn connack_properties(connect: &Connect, config: &MqttConfig) -> Properties {
    let assigned = connect.client_id.is_empty().then(|| {
        let mut random = [0u8; 8];
        let _ = getrandom::getrandom(&mut random);
        let id: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
        Utf8Bytes::try_from_bytes(Bytes::from(format!("anonymous-{id}"))).unwrap_or_default()
    });
    Properties {
        receive_maximum: Some(config.max_in_flight_per_connection.max(1)),
        maximum_packet_size: Some(u32::try_from(config.limits.max_packet_bytes).unwrap_or(u32::MAX)),
        assigned_client_identifier: assigned,
        server_keep_alive_secs: (granted_keep_alive(connect.keep_alive_secs, config)
            != connect.keep_alive_secs)
            .then(|| granted_keep_alive(connect.keep_alive_secs, config)),
        topic_alias_maximum: Some(config.topic_alias_maximum),
        wildcard_subscription_available: Some(true),
        subscription_identifiers_available: Some(true),
        shared_subscription_available: Some(true),
        retain_available: Some(true),
        ..Properties::default()
    }
}
/// Why reading a packet failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection closed in the middle of a packet")]
    Truncated,
}

/// Reads until a whole packet is buffered and returns it, or `None` at a clean end of stream.
/// The buffer grows with the bytes received, never with the length a header announces, and an
/// empty buffer is given back before waiting, so an idle connection holds none.
pub(super) async fn read_frame<R: ReadBytes>(
    reader: &mut R,
    buffer: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Bytes>, ReadError> {
    loop {
        if let Some(len) = check(buffer, limits.max_packet_bytes)? {
            return Ok(Some(buffer.split_to(len).freeze()));
        }
        if buffer.is_empty() && buffer.capacity() > 0 {
            *buffer = BytesMut::new();
        }
        // Cancel-safe: `read_some` has read nothing until it completes.
        if reader.read_some(buffer).await? == 0 {
            return if buffer.is_empty() { Ok(None) } else { Err(ReadError::Truncated) };
        }
    }
}

pub(super) async fn write_packet<W: AsyncWrite + Unpin>(
    writer: &mut W,
    version: ProtocolVersion,
    packet: &Packet,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    packet.encode(version, &mut out).map_err(std::io::Error::other)?;
    match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&out)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

    /// The size of the future `function` returns, without calling it.
    fn future_bytes<Args, Fut>(_: impl AsyncFnOnceLike<Args, Fut>) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// Functions of three or four arguments, to name the futures they return.
    trait AsyncFnOnceLike<Args, Fut> {}
    impl<F: FnOnce(A, B, C) -> Fut, A, B, C, Fut> AsyncFnOnceLike<(A, B, C), Fut> for F {}
    impl<F: FnOnce(A, B, C, D) -> Fut, A, B, C, D, Fut> AsyncFnOnceLike<(A, B, C, D), Fut> for F {}

    /// An idle connection's one task holds its whole connection future for the connection's
    /// life. It was 6.6 KiB before the CONNECT exchange, each packet's handling and the end were
    /// boxed, and 1.6 KiB beside a writer task of 384 bytes before reading and writing became
    /// one loop with one timer (1080 bytes after, the loop's own 456). A TLS stream is boxed by
    /// the listener: rustls's connection is 1.2 KiB, and the future would hold it twice.
    #[test]
    fn the_connection_futures_stay_small() {
        let plain = future_bytes(run_connection::<TcpStream>);
        let tls = future_bytes(run_connection::<Box<TlsStream>>);
        let run = future_bytes(Session::run::<TcpStream>);
        assert!(plain <= 1100, "run_connection over TCP: {plain} bytes");
        assert!(tls <= 1100, "run_connection over TLS: {tls} bytes");
        assert!(run <= 480, "Session::run: {run} bytes");
    }
}
