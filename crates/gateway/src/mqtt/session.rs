//! A connected client's session as its connection's loop drives it: packets read and decoded,
//! PUBLISHes routed and appended, QoS 2 ids, topic aliases in both directions,
//! SUBSCRIBE/UNSUBSCRIBE and acknowledgements of outgoing messages handed to the [`Hub`], and
//! what the hub queued written out, reading and writing in one task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tidewater_client::now_ms;
use tidewater_mqtt::{
    check, decode, Packet, PacketId, Properties, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode,
    SubAck, Subscribe, UnsubAck, Unsubscribe, Utf8Bytes,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::connection::End;
use super::outbound::{Ack, Outbound, Outgoing};
use super::transport::poll_read_some;
use super::Shared;
use crate::auth::Identity;
use crate::fanout::Delivery;
use crate::hub::{ConnectionSignal, SessionExpiry};
use crate::route::{may_subscribe, route, DeviceMessage};
use crate::subscriptions::Subscribed;
use crate::throttle::{Quota, Throttle};
use crate::topic_rules::Action;

/// One connected client's state, owned by its connection's task.
pub(super) struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) version: ProtocolVersion,
    pub(super) identity: Identity,
    /// The session's key in the hub: the claimed client id.
    pub(super) client: String,
    /// The client id as the client knows it, for topic rules.
    pub(super) client_id: String,
    /// Whether a topic rule's refusal was logged at info yet (the rest go to debug).
    pub(super) denial_logged: bool,
    /// This connection, as the hub knows it.
    pub(super) connection_id: u64,
    /// The hash of the key the device authenticated with (`None` for anonymous clients).
    pub(super) key_hash: Option<String>,
    pub(super) keep_alive: Option<Duration>,
    /// Most QoS 1 appends awaiting durability (and QoS 2 messages awaiting PUBREL).
    pub(super) max_in_flight: usize,
    /// What the client is owed, in order.
    pub(super) outbound: Outbound,
    /// Woken when the hub queued something for this client, or its id was taken over.
    pub(super) signal: Arc<ConnectionSignal>,
    /// MQTT 5 topic aliases in both directions, made when the first is used: most clients use
    /// none, and two empty maps are 96 bytes an idle connection would hold all its life.
    pub(super) aliases: Option<Box<TopicAliases>>,
    pub(super) client_topic_alias_maximum: u16,
    /// A Session Expiry Interval the client's DISCONNECT set.
    pub(super) expiry_at_disconnect: Option<SessionExpiry>,
    /// When the SAS token the client connected with expires.
    pub(super) credentials_expire_at: Option<tokio::time::Instant>,
    /// The device's activity on the console (`None` for anonymous clients).
    pub(super) activity: Option<Arc<crate::presence::DeviceActivity>>,
    /// What its PUBLISHes are charged to (`None`: a client that is not a device, under no quota).
    pub(super) throttle: Option<Throttle>,
}

/// Where the connection's timer starts, beyond any deadline it will be given.
const TIMER_IDLE: Duration = Duration::from_secs(30 * 24 * 3600);

/// What woke the connection's loop.
enum Event {
    /// A whole packet from the client.
    Frame(Bytes),
    /// The connection ends.
    End(End),
    /// Something moved (written, acknowledged, a deadline passed): look again.
    Moved,
    /// The hub queued something, the client id was taken over or the gateway is stopping.
    Signal,
}

/// A connection's MQTT 5 topic aliases.
#[derive(Default)]
pub(super) struct TopicAliases {
    /// Those the client set on this connection.
    inbound: HashMap<u16, Utf8Bytes>,
    /// Those the gateway set for messages to the client, up to the client's maximum.
    outbound: HashMap<Utf8Bytes, u16>,
}

impl Session {
    /// The connection's loop, until it ends: reads the client's packets and handles each, and
    /// writes what the connection owes the client ([`Outbound`]), both on `stream` in this one
    /// task, with one timer for every deadline (keep-alive, the SAS token's expiry, the end of
    /// a throttling pause, the write in progress).
    ///
    /// Reading pauses while the client is over its quota, while the queue to the client is full
    /// and while every QoS 1 slot is taken; a pause is not the client's silence, so it does not
    /// count against the keep-alive.
    pub(super) async fn run<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        stream: &mut S,
        buffer: &mut BytesMut,
    ) -> End {
        let signal = self.signal.clone();
        let started = Instant::now();
        // Keep-alive counts from the last packet received (spec 3.1.2.10).
        let mut keep_alive_at = self.keep_alive.map(|keep_alive| started + keep_alive);
        // Until when reading stops because the client went over its quota.
        let mut throttled_until: Option<Instant> = None;
        // Since when reading has been paused, if it is.
        let mut paused_since: Option<Instant> = None;
        // The hub queued something while the queue to the client was full.
        let mut pump_owed = false;
        // Armed for the earliest deadline. A later one (the keep-alive moves with every packet)
        // does not re-arm it: it fires early, finds nothing due, and is armed again then.
        let timer = tokio::time::sleep_until(started + TIMER_IDLE);
        tokio::pin!(timer);
        loop {
            if signal.is_taken_over() {
                return End::Because(
                    ReasonCode::SessionTakenOver,
                    "a new connection with the same client id".into(),
                );
            }
            if signal.is_shutting_down() {
                return End::Because(ReasonCode::ServerShuttingDown, "the gateway is stopping".into());
            }
            if pump_owed && self.outbound.has_room() {
                pump_owed = false;
                if let Err(end) = self.pump() {
                    return end;
                }
            }
            // Checked on every turn, not only when the timer is polled: a client that never
            // stops sending keeps the read ready ahead of the timer.
            let now = Instant::now();
            if self.credentials_expire_at.is_some_and(|at| at <= now) {
                return End::Because(ReasonCode::NotAuthorized, "the SAS token expired".into());
            }
            if self.outbound.write_deadline().is_some_and(|at| at <= now) {
                self.outbound.give_up();
                return End::Quietly;
            }
            if throttled_until.is_some_and(|at| at <= now) {
                throttled_until = None;
            }
            let reading = throttled_until.is_none()
                && self.outbound.has_room()
                && usize::from(self.outbound.qos1_in_flight()) < self.max_in_flight;
            match (reading, paused_since) {
                (false, None) => paused_since = Some(now),
                (true, Some(since)) => {
                    keep_alive_at = keep_alive_at.map(|at| at + now.saturating_duration_since(since));
                    paused_since = None;
                }
                _ => {}
            }
            let deadline = [
                keep_alive_at.filter(|_| reading),
                self.credentials_expire_at,
                throttled_until,
                self.outbound.write_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            if let Some(deadline) = deadline {
                if deadline < timer.deadline() || timer.is_elapsed() {
                    timer.as_mut().reset(deadline);
                }
            }
            // The stream (both ways) and the timer are polled in one place, the stream first: a
            // packet that came is read even if the keep-alive ran out meanwhile.
            let io = std::future::poll_fn(|context| {
                if let Poll::Ready(event) = self.poll_io(context, stream, buffer, reading) {
                    return Poll::Ready(event);
                }
                match deadline {
                    Some(_) => timer.as_mut().poll(context).map(|()| Event::Moved),
                    None => Poll::Pending,
                }
            });
            let event = tokio::select! {
                event = io => event,
                _ = signal.notified() => Event::Signal,
            };
            let frame = match event {
                Event::Frame(frame) => frame,
                Event::End(end) => return end,
                Event::Signal => {
                    pump_owed = true;
                    continue;
                }
                Event::Moved => {
                    if reading && keep_alive_at.is_some_and(|at| at <= Instant::now()) {
                        return End::Because(
                            ReasonCode::KeepAliveTimeout,
                            "no packet within 1.5 x keep-alive".into(),
                        );
                    }
                    continue;
                }
            };
            keep_alive_at = self.keep_alive.map(|keep_alive| Instant::now() + keep_alive);
            let frame_bytes = frame.len();
            let packet = match decode(frame, self.version, &self.shared.config.limits) {
                Ok(packet) => packet,
                Err(error) => return End::Because(error.reason_code(), error.to_string()),
            };
            let is_publish = matches!(packet, Packet::Publish(_));
            // Boxed: a packet's handling is far larger than the wait for the next packet, and
            // inline it would be part of the connection's task all its life.
            let handled = Box::pin(self.handle(packet)).await;
            if is_publish {
                if let Some(pause) =
                    self.throttle.as_ref().and_then(|throttle| throttle.after_message(frame_bytes))
                {
                    throttled_until = Some(Instant::now() + pause);
                }
            }
            if let Err(end) = handled {
                return end;
            }
        }
    }

    /// One look at the stream: writes what is owed as far as it goes, then (if `reading`) reads
    /// until a whole packet is buffered. Cancel-safe: what was read stays in `buffer`.
    fn poll_io<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        context: &mut Context<'_>,
        stream: &mut S,
        buffer: &mut BytesMut,
        reading: bool,
    ) -> Poll<Event> {
        let moved = match self.outbound.poll_progress(stream, context) {
            Poll::Ready(Ok(())) => true,
            // The queue closed: an append failed or the client cannot be written to.
            Poll::Ready(Err(())) => return Poll::Ready(Event::End(End::Quietly)),
            Poll::Pending => false,
        };
        if reading {
            loop {
                match check(buffer, self.shared.config.limits.max_packet_bytes) {
                    Ok(Some(len)) => return Poll::Ready(Event::Frame(buffer.split_to(len).freeze())),
                    Ok(None) => {}
                    Err(error) => {
                        return Poll::Ready(Event::End(End::Because(error.reason_code(), error.to_string())))
                    }
                }
                match poll_read_some(stream, context, buffer) {
                    Poll::Ready(Ok(0)) => {
                        if !buffer.is_empty() {
                            tracing::debug!("the connection closed in the middle of a packet");
                        }
                        return Poll::Ready(Event::End(End::Quietly));
                    }
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(error)) => {
                        tracing::debug!(%error, "reading from an MQTT client");
                        return Poll::Ready(Event::End(End::Quietly));
                    }
                    Poll::Pending => break,
                }
            }
        }
        if moved {
            Poll::Ready(Event::Moved)
        } else {
            Poll::Pending
        }
    }

    /// What one packet from the client does; `Err` ends the connection (DISCONNECT too).
    async fn handle(&mut self, packet: Packet) -> Result<(), End> {
        match packet {
            Packet::Publish(publish) => self.publish(publish).await,
            Packet::PubRel(release) => self.release(release).await,
            Packet::PingReq => self.send(Outgoing::packet(Packet::PingResp)),
            Packet::Disconnect(disconnect) => {
                self.expiry_at_disconnect =
                    disconnect.properties.session_expiry_interval_secs.map(SessionExpiry::from_interval);
                Err(End::Disconnected(disconnect.reason_code))
            }
            Packet::Subscribe(subscribe) => self.subscribe(subscribe).await,
            Packet::Unsubscribe(unsubscribe) => self.unsubscribe(unsubscribe).await,
            ack @ (Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_)) => self.acknowledged(&ack),
            Packet::Connect(_) => {
                Err(End::Because(ReasonCode::ProtocolError, "a second CONNECT (MQTT-3.1.0-2)".into()))
            }
            Packet::Auth(_) => {
                Err(End::Because(ReasonCode::ProtocolError, "AUTH without an authentication method".into()))
            }
            other => Err(End::Because(
                ReasonCode::ProtocolError,
                format!("{} is a packet servers send, not clients", other.packet_type().name()),
            )),
        }
    }

    /// Queues `item` for the client; `Err` once the queue closed (the connection is ending).
    pub(super) fn send(&mut self, item: Outgoing) -> Result<(), End> {
        if self.outbound.push(item) {
            Ok(())
        } else {
            Err(End::Quietly)
        }
    }

    /// Queues packets from the hub, with outbound topic aliases where the client allows them.
    /// They are in memory already; taking them stops while the queue is full (see `run`).
    pub(super) fn send_all(&mut self, packets: Vec<Packet>) -> Result<(), End> {
        for mut packet in packets {
            if let Packet::Publish(publish) = &mut packet {
                self.apply_outbound_alias(publish);
            }
            self.send(Outgoing::packet(packet))?;
        }
        Ok(())
    }

    /// Uses a topic alias for a message to the client where it allows them (spec 3.3.2.3.4):
    /// the first message on a topic sets one, later ones send it instead of the topic. Aliases
    /// are given out first come, first served, and never reassigned.
    pub(super) fn apply_outbound_alias(&mut self, publish: &mut Publish) {
        if self.version != ProtocolVersion::V5 || self.client_topic_alias_maximum == 0 {
            return;
        }
        let outbound = &mut self.aliases.get_or_insert_with(Box::default).outbound;
        if let Some(&alias) = outbound.get(&publish.topic) {
            publish.properties.topic_alias = Some(alias);
            publish.topic = Utf8Bytes::default();
        } else if let Ok(next) = u16::try_from(outbound.len() + 1) {
            if next <= self.client_topic_alias_maximum {
                outbound.insert(publish.topic.clone(), next);
                publish.properties.topic_alias = Some(next);
            }
        }
    }

    /// Writes what the hub has queued for this client, as far as its window allows.
    pub(super) fn pump(&mut self) -> Result<(), End> {
        let pumped = self.shared.hub.pump(&self.client, self.connection_id, now_ms());
        for (device, (partition, offset)) in pumped.delivered {
            self.record_delivery(device, partition, offset);
        }
        self.send_all(pumped.packets)
    }

    pub(super) fn ack(&self, qos: QoS, packet_id: PacketId, reason_code: ReasonCode) -> Packet {
        let response = PubResponse { packet_id, reason_code, properties: Properties::default() };
        match qos {
            QoS::ExactlyOnce => Packet::PubRec(response),
            _ => Packet::PubAck(response),
        }
    }

    /// Resolves an MQTT 5 topic alias (spec 3.3.2.3.4): a PUBLISH with a topic and an alias
    /// sets the alias, one with an alias and no topic uses it.
    pub(super) fn resolve_topic_alias(&mut self, publish: &mut Publish) -> Result<(), End> {
        let Some(alias) = publish.properties.topic_alias.take() else { return Ok(()) };
        if alias == 0 || alias > self.shared.config.topic_alias_maximum {
            return Err(End::Because(
                ReasonCode::TopicAliasInvalid,
                format!("topic alias {alias} is outside 1..={}", self.shared.config.topic_alias_maximum),
            ));
        }
        if publish.topic.is_empty() {
            match self.aliases.as_ref().and_then(|aliases| aliases.inbound.get(&alias)) {
                Some(topic) => publish.topic = topic.clone(),
                None => {
                    return Err(End::Because(
                        ReasonCode::ProtocolError,
                        format!("topic alias {alias} was never set on this connection"),
                    ))
                }
            }
        } else {
            self.aliases.get_or_insert_with(Box::default).inbound.insert(alias, publish.topic.clone());
        }
        Ok(())
    }

    pub(super) async fn publish(&mut self, mut publish: Publish) -> Result<(), End> {
        let received = std::time::Instant::now();
        crate::metrics::gateway().message_received(publish.qos);
        if let Some(activity) = &self.activity {
            activity.messages_received(1);
        }
        self.resolve_topic_alias(&mut publish)?;
        // A device disabled, removed or given a new key while connected is cut off at its next
        // message; one whose quota changed is charged under the new one from this message on.
        if let Identity::Device(id) = &self.identity {
            let quota = self.shared.directory.borrow().as_ref().and_then(|registry| {
                registry
                    .devices
                    .get(id)
                    .filter(|device| !device.disabled && Some(&device.key_hash) == self.key_hash.as_ref())
                    .map(|device| Quota::of_device(device, self.shared.config.device_quota))
            });
            let Some(quota) = quota else {
                return Err(End::Because(
                    ReasonCode::NotAuthorized,
                    format!("device {id} was disabled, removed or re-keyed"),
                ));
            };
            if let Some(throttle) = &mut self.throttle {
                throttle.set_quota(quota);
            }
        }
        let qos = publish.qos;
        let packet_id = publish.packet_id;
        let hub = &self.shared.hub;
        if let (QoS::ExactlyOnce, Some(packet_id)) = (qos, packet_id) {
            if hub.inbound_qos2_pending(&self.client, packet_id) {
                // A resend of a message already appended: acknowledge, do not append again.
                return self.send(Outgoing::packet(self.ack(qos, packet_id, ReasonCode::Success)));
            }
        }
        let routed = match route(&self.identity, &self.client, &publish, self.shared.config.destinations()) {
            Ok(routed) => routed,
            Err(code) => {
                let detail = format!("may not publish to {:?}", publish.topic.as_str());
                return match (self.version, packet_id) {
                    (ProtocolVersion::V5, Some(packet_id)) => {
                        tracing::info!(identity = ?self.identity, reason = %code, detail, "refused a PUBLISH");
                        self.send(Outgoing::packet(self.ack(qos, packet_id, code)))
                    }
                    (ProtocolVersion::V5, None) => {
                        tracing::info!(identity = ?self.identity, reason = %code, detail, "dropped a QoS 0 PUBLISH");
                        Ok(())
                    }
                    (ProtocolVersion::V311, _) => Err(End::Because(code, detail)),
                };
            }
        };
        if !super::rules_allow(
            &self.shared.directory,
            &self.identity,
            &self.client_id,
            Action::Publish,
            publish.topic.as_str(),
        ) {
            self.log_denial("PUBLISH", publish.topic.as_str());
            crate::metrics::gateway().denied(true);
            // MQTT 5 says Not authorized; 3.1.1 cannot, so the message is dropped and still
            // acknowledged (as Mosquitto does), or the client would send it again forever.
            let code = match self.version {
                ProtocolVersion::V5 => ReasonCode::NotAuthorized,
                ProtocolVersion::V311 => ReasonCode::Success,
            };
            return match packet_id {
                Some(packet_id) if qos != QoS::AtMostOnce => {
                    self.send(Outgoing::packet(self.ack(qos, packet_id, code)))
                }
                _ => Ok(()),
            };
        }
        match (qos, packet_id) {
            (QoS::AtMostOnce, _) | (_, None) => {
                // Fire and forget: the delivery report is not waited for.
                self.shared.append_routed(&routed).await.map(drop)
            }
            (QoS::AtLeastOnce, Some(packet_id)) => {
                // A QoS 1 slot is free: `run` reads only while one is.
                let pending = self.shared.append_routed(&routed).await?;
                self.send(Outgoing::AfterAppend { pending, ack: Ack { qos, packet_id, received } })
            }
            (QoS::ExactlyOnce, Some(packet_id)) => {
                if hub.inbound_qos2_count(&self.client) >= self.max_in_flight {
                    return Err(End::Because(
                        ReasonCode::ReceiveMaximumExceeded,
                        format!("more than {} QoS 2 messages awaiting PUBREL", self.max_in_flight),
                    ));
                }
                let mut pending = self.shared.append_routed(&routed).await?;
                hub.inbound_qos2_received(&self.client, packet_id);
                // A persistent session's id awaiting PUBREL is in the cluster before the PUBREC:
                // a resend after a restart is then recognised and not appended twice.
                if hub.persists(&self.client) {
                    let saved = self.shared.store.flush(hub);
                    pending = Box::pin(async move {
                        pending.await?;
                        saved.await
                    });
                }
                self.send(Outgoing::AfterAppend { pending, ack: Ack { qos, packet_id, received } })
            }
        }
    }

    pub(super) async fn release(&mut self, release: PubResponse) -> Result<(), End> {
        let hub = &self.shared.hub;
        let reason_code = if hub.inbound_qos2_released(&self.client, release.packet_id) {
            // Forgotten in the cluster too before the PUBCOMP, so that the client's next message
            // with this id is not taken for a resend after a restart.
            if hub.persists(&self.client) {
                self.save_session().await?;
            }
            ReasonCode::Success
        } else {
            ReasonCode::PacketIdentifierNotFound
        };
        let complete =
            PubResponse { packet_id: release.packet_id, reason_code, properties: Properties::default() };
        self.send(Outgoing::packet(Packet::PubComp(complete)))
    }

    /// Grants what this client may subscribe to, answers with the SUBACK, then sends the
    /// retained messages (and waiting commands) the new subscriptions bring.
    pub(super) async fn subscribe(&mut self, subscribe: Subscribe) -> Result<(), End> {
        let identifier = subscribe.properties.subscription_identifiers.first().copied();
        let mut allowed = Vec::new();
        // Each subscription's answer: a refusal now, or `None` until the hub had its say.
        let mut refusals: Vec<Option<ReasonCode>> = Vec::with_capacity(subscribe.subscriptions.len());
        for subscription in &subscribe.subscriptions {
            let filter = subscription.filter.as_str();
            let allowed_by_rules = super::rules_allow(
                &self.shared.directory,
                &self.identity,
                &self.client_id,
                Action::Subscribe,
                filter,
            );
            if !allowed_by_rules {
                self.log_denial("SUBSCRIBE", filter);
                crate::metrics::gateway().denied(false);
                // 0x80 (Unspecified error) on both versions, not MQTT 5's Not authorized (0x87):
                // the Eclipse Paho interoperability suite's MQTT 5 client accepts no other
                // refusal in a SUBACK, and 0x80 is what 3.1.1 clients know. The log says why.
                refusals.push(Some(ReasonCode::UnspecifiedError));
                continue;
            }
            match may_subscribe(&self.identity, filter) {
                Ok(()) => {
                    allowed
                        .push((filter.to_string(), Subscribed { options: subscription.options, identifier }));
                    refusals.push(None);
                }
                Err(code) => {
                    tracing::info!(identity = ?self.identity, filter, reason = %code, "refused a subscription");
                    refusals.push(Some(code));
                }
            }
        }
        let outcomes = self.shared.hub.subscribe(&self.client, &allowed, now_ms());
        let mut answers = allowed.iter().zip(outcomes).map(|((filter, subscribed), outcome)| match outcome {
            Err(()) => {
                tracing::info!(client = self.client, filter, "refused a subscription over the limit");
                ReasonCode::QuotaExceeded
            }
            Ok(_) => match subscribed.options.qos {
                QoS::AtMostOnce => ReasonCode::Success,
                QoS::AtLeastOnce => ReasonCode::GrantedQos1,
                QoS::ExactlyOnce => ReasonCode::GrantedQos2,
            },
        });
        let reason_codes = refusals
            .into_iter()
            .map(|refusal| refusal.or_else(|| answers.next()).unwrap_or(ReasonCode::UnspecifiedError))
            .collect();
        if self.shared.hub.persists(&self.client) {
            self.save_session().await?;
        }
        let answer = Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            properties: Properties::default(),
            reason_codes,
        });
        self.send(Outgoing::packet(answer))?;
        self.pump()
    }

    /// Logs a topic rule's refusal: the connection's first at info, later ones at debug, so a
    /// client retrying a refused topic cannot flood the log.
    fn log_denial(&mut self, what: &str, topic: &str) {
        if self.denial_logged {
            tracing::debug!(identity = ?self.identity, client_id = self.client_id, topic, "topic rules refused a {what}");
        } else {
            self.denial_logged = true;
            tracing::info!(identity = ?self.identity, client_id = self.client_id, topic, "topic rules refused a {what} (later refusals of this connection are logged at debug)");
        }
    }

    pub(super) async fn unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Result<(), End> {
        let filters: Vec<String> =
            unsubscribe.filters.iter().map(|filter| filter.as_str().to_string()).collect();
        let reason_codes = self
            .shared
            .hub
            .unsubscribe(&self.client, &filters)
            .into_iter()
            .map(|existed| if existed { ReasonCode::Success } else { ReasonCode::NoSubscriptionExisted })
            .collect();
        if self.shared.hub.persists(&self.client) {
            self.save_session().await?;
        }
        let answer = Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            properties: Properties::default(),
            reason_codes,
        });
        self.send(Outgoing::packet(answer))
    }

    /// Writes this session's record (with any other dirty ones) and waits for the cluster; a
    /// failure ends the connection unanswered, so the client asks again. (`&mut`: a session is
    /// not `Sync`, as the appends in its queue are not, and a future holding `&self` would not be
    /// `Send`.)
    pub(super) async fn save_session(&mut self) -> Result<(), End> {
        self.shared.store.flush(&self.shared.hub).await.map_err(|error| {
            End::Because(ReasonCode::UnspecifiedError, format!("the session could not be saved: {error}"))
        })
    }

    /// A PUBACK, PUBREC or PUBCOMP for a message sent to this client: answers a PUBREC with
    /// PUBREL, records a command's delivery in the cluster, and sends what the freed slot
    /// allows.
    pub(super) fn acknowledged(&mut self, ack: &Packet) -> Result<(), End> {
        let outcome = self.shared.hub.acknowledged(&self.client, ack);
        if let Some(reply) = outcome.reply {
            self.send(Outgoing::packet(reply))?;
        }
        if let Some((device, (partition, offset))) = outcome.delivered {
            self.record_delivery(device, partition, offset);
        }
        self.pump()
    }

    /// Appends a command's delivery record, so every gateway stops holding it and a restart
    /// does not send it again. Not waited for: losing it means the command may be sent twice,
    /// which at-least-once allows.
    pub(super) fn record_delivery(&self, device: String, partition: i32, offset: i64) {
        let topics = &self.shared.config.topics;
        let delivered_at_ms = now_ms();
        let ttl_ms = i64::try_from(topics.command_ttl.as_millis()).unwrap_or(i64::MAX);
        let delivery = Delivery {
            device: Some(device.clone()),
            partition,
            offset,
            delivered_at_ms,
            expires_at_ms: delivered_at_ms.saturating_add(ttl_ms),
        };
        let record = DeviceMessage {
            topic: topics.deliveries.clone(),
            key: Delivery::key(&device, partition, offset),
            payload: Bytes::from(serde_json::to_vec(&delivery).unwrap_or_default()),
            headers: Vec::new(),
        };
        tracing::debug!(device, partition, offset, "command delivered");
        match self.shared.appender.append(&record) {
            Ok(pending) => {
                tokio::spawn(async move {
                    if let Err(error) = pending.await {
                        tracing::warn!(%error, device, "recording a command's delivery failed; it may be sent again");
                    }
                });
            }
            Err(error) => {
                tracing::warn!(%error, device, "recording a command's delivery failed; it may be sent again")
            }
        }
    }
}
