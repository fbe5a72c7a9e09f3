//! One MQTT connection: the CONNECT exchange, the hand-over to its [`Session`] (the reader)
//! and the writer task, and how the connection ends (DISCONNECT, will, linger). The writer holds
//! each acknowledgement until the append it acknowledges is durable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tidewater_client::now_ms;
use tidewater_mqtt::{
    check, connect_protocol_version, decode_connect, ConnAck, Connect, DecodeError, Disconnect, Limits,
    Packet, PacketId, Properties, ProtocolVersion, PubResponse, QoS, ReasonCode, Utf8Bytes,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

use super::session::Session;
use super::transport::ReadBytes;
use super::will::{will_delay, Will};
use super::{ClientClaim, MqttConfig, Shared, CONNECT_TIMEOUT, WRITE_TIMEOUT};
use crate::append::{AppendError, PendingAppend};
use crate::auth::{authenticate, authenticate_certificate, user_login, Identity};
use crate::hub::{ConnectOptions, SessionExpiry};
use crate::listener::PeerCertificates;
use crate::topic_rules::Action;
use crate::users::Verification;

/// What the reader hands the writer, in the order it must go out. The queue carries each in a
/// box ([`OutgoingQueue`]).
pub(super) enum Outgoing {
    /// Boxed: rarer than acknowledgements, and a whole packet is hundreds of bytes.
    Packet(Box<Packet>),
    /// `ack` once `pending` is durable; `permit` holds a QoS 1 in-flight slot until then.
    AfterAppend { pending: PendingAppend, ack: Ack, permit: Option<OwnedSemaphorePermit> },
    /// Write nothing more.
    Close,
}

/// The reader's end of the queue to the writer. It holds boxes: a Tokio channel allocates its
/// first block of 32 slots when it is made, and each connection has one all its life, so its
/// slots are a pointer each (32 items of 56 bytes would be 1.8 KiB per idle connection).
pub(super) type OutgoingQueue = mpsc::Sender<Box<Outgoing>>;

impl Outgoing {
    pub(super) fn packet(packet: Packet) -> Outgoing {
        Outgoing::Packet(Box::new(packet))
    }
}

/// A successful PUBACK (QoS 1) or PUBREC (QoS 2), built when it is written.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ack {
    pub(super) qos: QoS,
    pub(super) packet_id: PacketId,
    /// When the PUBLISH was read, for the acknowledgement latency metric.
    pub(super) received: std::time::Instant,
}

impl Ack {
    pub(super) fn packet(self) -> Packet {
        let response = PubResponse {
            packet_id: self.packet_id,
            reason_code: ReasonCode::Success,
            properties: Properties::default(),
        };
        match self.qos {
            QoS::ExactlyOnce => Packet::PubRec(response),
            _ => Packet::PubAck(response),
        }
    }
}

/// Why the reader ended a connection; the DISCONNECT reason for MQTT 5 where there is one.
#[derive(Debug)]
pub(super) enum End {
    /// The client sent DISCONNECT with this reason code.
    Disconnected(ReasonCode),
    /// The stream ended or the writer gave up.
    Quietly,
    /// Tell an MQTT 5 client why, then close.
    Because(ReasonCode, String),
}
/// One connection from its CONNECT to its end, over either half of a plain or TLS stream;
/// `certificates` is what a TLS client presented, if anything.
///
/// A future is as large as its largest state, and an idle connection's task keeps the whole of
/// it for as long as the connection lives; so every phase but the wait for the next packet (the
/// CONNECT exchange, each packet's handling, the end) runs in a box of its own, allocated only
/// while it runs. `the_connection_futures_stay_small` holds the sizes down.
pub(super) async fn run_connection<R, W>(
    mut reader: R,
    writer: W,
    peer: SocketAddr,
    certificates: Option<PeerCertificates>,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Receiver<bool>,
) where
    R: ReadBytes,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut open = crate::metrics::OpenConnection::new();
    let mut buffer = BytesMut::new();
    let connecting = accept_connect(&mut reader, writer, &mut buffer, peer, certificates, &shared, &mut open);
    let Some((mut connected, owed_sent)) = Box::pin(connecting).await else { return };
    let end = match owed_sent {
        Ok(()) => {
            let taken_over = connected.claim.taken_over.clone();
            connected.session.read_loop(&mut reader, &mut buffer, stop, &taken_over).await
        }
        Err(end) => end,
    };
    Box::pin(finish(connected, end, &mut reader, &mut buffer, peer)).await;
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
    writer_task: tokio::task::JoinHandle<()>,
    /// The device on the console's devices page, while this connection lives.
    online: Option<crate::presence::Online>,
}

/// The CONNECT exchange: reads the CONNECT, authenticates it, takes the client id over,
/// attaches (or restores) the session and answers with the CONNACK; then starts the writer and
/// queues what the session is owed (the outcome of that beside the connection). `None` once the
/// connection is over (refused, or gone).
async fn accept_connect<R, W>(
    reader: &mut R,
    mut writer: W,
    buffer: &mut BytesMut,
    peer: SocketAddr,
    certificates: Option<PeerCertificates>,
    shared: &Arc<Shared>,
    open: &mut crate::metrics::OpenConnection,
) -> Option<(Connected, Result<(), End>)>
where
    R: ReadBytes,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.config.limits;
    let mut connect = match tokio::time::timeout(CONNECT_TIMEOUT, read_frame(reader, buffer, &limits)).await {
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
                    let _ = write_packet(
                        &mut writer,
                        version,
                        &connack(error.reason_code(), Properties::default()),
                    )
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
            let _ = write_packet(&mut writer, version, &connack(code, Properties::default())).await;
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
    let wake = Arc::new(Notify::new());
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
                    &mut writer,
                    version,
                    &connack(ReasonCode::ServerUnavailable, Properties::default()),
                )
                .await;
                return None;
            }
        }
    }
    let (session_present, owed) =
        shared.hub.connect(&claimed_id, options, claim.connection_id, wake.clone(), now_ms());
    shared.hub.watch_takeover(&claimed_id, claim.connection_id, claim.taken_over.clone());
    let connack = Packet::ConnAck(ConnAck { session_present, reason_code: ReasonCode::Success, properties });
    if write_packet(&mut writer, version, &connack).await.is_err() {
        shared.hub.disconnect(&claimed_id, claim.connection_id, None);
        return None;
    }
    tracing::debug!(%peer, client_id = connect.client_id.as_str(), ?version, session_present, "MQTT client connected");
    if identity.device_id().is_some() {
        open.device_connected();
    }
    // Connected on the console's devices page until this connection ends.
    let online = identity.device_id().map(|device| crate::presence::presence().connected(device));

    let max_in_flight = usize::from(shared.config.max_in_flight_per_connection.max(1));
    let (outgoing, queue) = mpsc::channel(max_in_flight * 2 + 8);
    let writer_task = tokio::spawn(write_loop(writer, queue, version));
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
        qos1_slots: Arc::new(Semaphore::new(max_in_flight)),
        max_in_flight,
        outgoing,
        wake,
        topic_aliases: HashMap::new(),
        outbound_aliases: HashMap::new(),
        client_topic_alias_maximum: connect.properties.topic_alias_maximum.unwrap_or(0),
        credentials_expire_at,
        expiry_at_disconnect: None,
        activity: online.as_ref().map(|online| online.activity().clone()),
        throttle,
    };
    for (device, (partition, offset)) in owed.delivered {
        session.record_delivery(device, partition, offset);
    }
    let owed_sent = session.send_all(owed.packets).await;
    let connected =
        Connected { session, claim, will: connect.will.take().map(Box::new), expiry, writer_task, online };
    Some((connected, owed_sent))
}

/// How a connection ends, once its read loop did: the DISCONNECT that says why (MQTT 5), the
/// session detached, the will, the writer's last acknowledgements, and a linger for a client
/// that is told to go.
async fn finish<R: ReadBytes>(
    connected: Connected,
    end: End,
    reader: &mut R,
    buffer: &mut BytesMut,
    peer: SocketAddr,
) {
    // `_online` and `claim` last until the linger is over, as the connection does.
    let Connected { session, claim, will, expiry, writer_task, online: _online } = connected;
    let (shared, version) = (session.shared.clone(), session.version);
    let client_id = session.client_id.as_str();
    if let End::Because(code, detail) = &end {
        tracing::info!(%peer, client_id, reason = %code, detail, "closing an MQTT connection");
        if version == ProtocolVersion::V5 {
            let disconnect =
                Packet::Disconnect(Disconnect { reason_code: *code, properties: Properties::default() });
            let _ = session.send(Outgoing::packet(disconnect)).await;
        }
    }
    shared.hub.disconnect(&session.client, claim.connection_id, session.expiry_at_disconnect);
    // The will goes out unless the client said goodbye without asking for it (spec 3.1.2.5).
    let publish_will =
        !matches!(end, End::Disconnected(code) if code != ReasonCode::DisconnectWithWillMessage);
    if let (true, Some(will)) = (publish_will, will) {
        let session_expiry = session.expiry_at_disconnect.unwrap_or(expiry);
        let will = Will {
            shared: shared.clone(),
            identity: session.identity.clone(),
            client: session.client.clone(),
            will: *will,
        };
        match will_delay(&will.will, version, session_expiry) {
            None => will.publish().await,
            Some(delay) => will.wait_out(delay, claim.connection_id).await,
        }
    }
    let _ = session.send(Outgoing::Close).await;
    drop(session);
    let _ = writer_task.await;
    if matches!(end, End::Because(..)) {
        linger(reader, buffer).await;
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
/// Sleeps until `deadline`, or forever without one.
pub(super) async fn sleep_until_or_never(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
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

/// Most bytes gathered before they are written: acknowledgements that became ready together
/// (one fsync makes many appends durable at once) go out in one write, not one each.
pub(super) const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// The write buffer a connection keeps between writes; a larger one is given back.
pub(super) const WRITE_BUFFER_KEPT_BYTES: usize = 4096;

/// Writes what the reader queued, in order, holding each acknowledgement until its append is
/// durable. A failed append ends the connection unacknowledged, so the client sends it again.
///
/// Items already queued whose appends are already durable are encoded into one buffer and
/// written together; the loop waits for an append only after writing everything before it.
pub(super) async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut queue: mpsc::Receiver<Box<Outgoing>>,
    version: ProtocolVersion,
) {
    let mut out = BytesMut::new();
    let mut next = queue.recv().await;
    while let Some(item) = next.take() {
        // Each arm encodes its packet itself: a `Packet` (hundreds of bytes) bound outside a
        // match that waits inside would be kept in the future through every wait.
        let encoded = match *item {
            Outgoing::Close => break,
            Outgoing::Packet(packet) => packet.encode(version, &mut out),
            Outgoing::AfterAppend { mut pending, ack, permit } => {
                let appended = match ready_now(&mut pending) {
                    Some(appended) => appended,
                    None => {
                        if flush(&mut writer, &mut out).await.is_err() {
                            return;
                        }
                        pending.await
                    }
                };
                drop(permit);
                match appended {
                    Ok(()) => {
                        crate::metrics::gateway().acknowledged(ack.qos, ack.received);
                        ack.packet().encode(version, &mut out)
                    }
                    Err(error) => {
                        tracing::warn!(%error, "an append failed; closing the connection without acknowledging");
                        if version == ProtocolVersion::V5 {
                            let disconnect = Packet::Disconnect(Disconnect {
                                reason_code: ReasonCode::UnspecifiedError,
                                properties: Properties::default(),
                            });
                            let _ = disconnect.encode(version, &mut out);
                        }
                        break;
                    }
                }
            }
        };
        if let Err(error) = encoded {
            tracing::warn!(%error, "encoding a packet for an MQTT client");
            break;
        }
        next = if out.len() < WRITE_BATCH_BYTES { queue.try_recv().ok() } else { None };
        if next.is_none() {
            if flush(&mut writer, &mut out).await.is_err() {
                return;
            }
            next = queue.recv().await;
        }
    }
    let _ = flush(&mut writer, &mut out).await;
    let _ = writer.shutdown().await;
}

/// The outcome of `pending` if it is already known, without waiting.
pub(super) fn ready_now(pending: &mut PendingAppend) -> Option<Result<(), AppendError>> {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match pending.as_mut().poll(&mut context) {
        std::task::Poll::Ready(outcome) => Some(outcome),
        std::task::Poll::Pending => None,
    }
}

/// Writes `out` and empties it (giving back a large buffer, so idle connections stay small).
pub(super) async fn flush<W: AsyncWrite + Unpin>(writer: &mut W, out: &mut BytesMut) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let written = match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(out)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out")),
    };
    if out.capacity() > WRITE_BUFFER_KEPT_BYTES {
        *out = BytesMut::new();
    } else {
        out.clear();
    }
    if let Err(error) = &written {
        tracing::debug!(%error, "writing to an MQTT client");
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

    type TlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

    /// The size of the future `function` returns, without calling it.
    fn future_bytes<Args, Fut>(_: impl AsyncFnOnceLike<Args, Fut>) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// Functions of three, five or six arguments, to name the futures they return.
    trait AsyncFnOnceLike<Args, Fut> {}
    impl<F: FnOnce(A, B, C) -> Fut, A, B, C, Fut> AsyncFnOnceLike<(A, B, C), Fut> for F {}
    impl<F: FnOnce(A, B, C, D, E) -> Fut, A, B, C, D, E, Fut> AsyncFnOnceLike<(A, B, C, D, E), Fut> for F {}
    impl<F: FnOnce(A, B, C, D, E, G) -> Fut, A, B, C, D, E, G, Fut> AsyncFnOnceLike<(A, B, C, D, E, G), Fut>
        for F
    {
    }

    /// An idle connection's task holds its whole connection future, and its writer's task the
    /// writer's, for the connection's life: they were 6.6 KiB and 0.8 KiB before the CONNECT
    /// exchange, each packet's handling and the end were boxed and the writer stopped keeping
    /// a `Packet` through its waits (1.6 KiB and 384 bytes after, debug and release alike).
    #[test]
    fn the_connection_futures_stay_small() {
        let plain = future_bytes(run_connection::<OwnedReadHalf, OwnedWriteHalf>);
        let tls =
            future_bytes(run_connection::<tokio::io::ReadHalf<TlsStream>, tokio::io::WriteHalf<TlsStream>>);
        let read_loop = future_bytes(Session::read_loop::<OwnedReadHalf>);
        let writer = future_bytes(write_loop::<OwnedWriteHalf>);
        assert!(plain <= 1700, "run_connection over TCP: {plain} bytes");
        assert!(tls <= 1700, "run_connection over TLS: {tls} bytes");
        assert!(read_loop <= 1024, "Session::read_loop: {read_loop} bytes");
        assert!(writer <= 512, "write_loop: {writer} bytes");
    }

    /// The writer's queue allocates its first block of 32 slots when the connection starts.
    #[test]
    fn the_writer_queue_holds_pointers() {
        assert_eq!(std::mem::size_of::<Box<Outgoing>>(), std::mem::size_of::<usize>());
    }
}
