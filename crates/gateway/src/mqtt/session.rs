//! A connected client's session as its reader drives it: packets read and decoded, PUBLISHes
//! routed and appended, QoS 2 ids, topic aliases in both directions, SUBSCRIBE/UNSUBSCRIBE and
//! acknowledgements of outgoing messages handed to the [`Hub`], and what the hub queued written
//! out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tidewater_client::now_ms;
use tidewater_mqtt::{
    decode, Packet, PacketId, Properties, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, SubAck,
    Subscribe, UnsubAck, Unsubscribe, Utf8Bytes,
};
use tokio::sync::{Notify, Semaphore};

use super::connection::{read_frame, sleep_until_or_never, Ack, End, Outgoing, OutgoingQueue, ReadError};
use super::transport::ReadBytes;
use super::Shared;
use crate::auth::Identity;
use crate::fanout::Delivery;
use crate::hub::SessionExpiry;
use crate::route::{may_subscribe, route, DeviceMessage};
use crate::subscriptions::Subscribed;
use crate::throttle::{Quota, Throttle};
use crate::topic_rules::Action;

/// One connected client's state, owned by its reader.
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
    /// QoS 1 appends awaiting durability.
    pub(super) qos1_slots: Arc<Semaphore>,
    pub(super) max_in_flight: usize,
    pub(super) outgoing: OutgoingQueue,
    /// Notified when the hub queued something for this client.
    pub(super) wake: Arc<Notify>,
    /// MQTT 5 topic aliases the client set on this connection.
    pub(super) topic_aliases: HashMap<u16, Utf8Bytes>,
    /// Topic aliases the gateway set for messages to the client, up to the client's maximum.
    pub(super) outbound_aliases: HashMap<Utf8Bytes, u16>,
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

impl Session {
    pub(super) async fn read_loop<R: ReadBytes>(
        &mut self,
        reader: &mut R,
        buffer: &mut BytesMut,
        mut stop: tokio::sync::watch::Receiver<bool>,
        taken_over: &Notify,
    ) -> End {
        let limits = self.shared.config.limits;
        // Keep-alive counts from the last packet received, not from the last wake-up.
        let mut deadline = self.keep_alive.map(|keep_alive| tokio::time::Instant::now() + keep_alive);
        // Until when reading stops because the client went over its quota.
        let mut throttled_until = None;
        loop {
            let read = async {
                if let Some(resume_at) = throttled_until {
                    tokio::time::sleep_until(resume_at).await;
                }
                match deadline {
                    Some(deadline) => {
                        tokio::time::timeout_at(deadline, read_frame(reader, buffer, &limits)).await.ok()
                    }
                    None => Some(read_frame(reader, buffer, &limits).await),
                }
            };
            // `read_frame` can be dropped at any await: what it read stays in `buffer`.
            let frame = tokio::select! {
                read = read => read,
                _ = self.wake.notified() => {
                    if let Err(end) = Box::pin(self.pump()).await {
                        return end;
                    }
                    continue;
                }
                _ = self.outgoing.closed() => return End::Quietly,
                _ = stop.changed() => return End::Because(ReasonCode::ServerShuttingDown, "the gateway is stopping".into()),
                _ = sleep_until_or_never(self.credentials_expire_at) => {
                    return End::Because(ReasonCode::NotAuthorized, "the SAS token expired".into())
                }
                _ = taken_over.notified() => {
                    return End::Because(ReasonCode::SessionTakenOver, "a new connection with the same client id".into())
                }
            };
            let frame = match frame {
                None => {
                    return End::Because(
                        ReasonCode::KeepAliveTimeout,
                        "no packet within 1.5 x keep-alive".into(),
                    )
                }
                Some(Ok(Some(frame))) => frame,
                Some(Ok(None)) => return End::Quietly,
                Some(Err(ReadError::Decode(error))) => {
                    return End::Because(error.reason_code(), error.to_string())
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "reading from an MQTT client");
                    return End::Quietly;
                }
            };
            deadline = self.keep_alive.map(|keep_alive| tokio::time::Instant::now() + keep_alive);
            let frame_bytes = frame.len();
            let packet = match decode(frame, self.version, &limits) {
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
                    throttled_until = Some(tokio::time::Instant::now() + pause);
                    // Our pause is not the client's silence.
                    deadline = deadline.map(|deadline| deadline + pause);
                }
            }
            if let Err(end) = handled {
                return end;
            }
        }
    }

    /// What one packet from the client does; `Err` ends the connection (DISCONNECT too).
    async fn handle(&mut self, packet: Packet) -> Result<(), End> {
        match packet {
            Packet::Publish(publish) => self.publish(publish).await,
            Packet::PubRel(release) => self.release(release).await,
            Packet::PingReq => self.send(Outgoing::packet(Packet::PingResp)).await,
            Packet::Disconnect(disconnect) => {
                self.expiry_at_disconnect =
                    disconnect.properties.session_expiry_interval_secs.map(SessionExpiry::from_interval);
                Err(End::Disconnected(disconnect.reason_code))
            }
            Packet::Subscribe(subscribe) => self.subscribe(subscribe).await,
            Packet::Unsubscribe(unsubscribe) => self.unsubscribe(unsubscribe).await,
            ack @ (Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_)) => {
                self.acknowledged(&ack).await
            }
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

    pub(super) async fn send(&self, item: Outgoing) -> Result<(), End> {
        self.outgoing.send(Box::new(item)).await.map_err(|_| End::Quietly)
    }

    pub(super) async fn send_all(&mut self, packets: Vec<Packet>) -> Result<(), End> {
        for mut packet in packets {
            if let Packet::Publish(publish) = &mut packet {
                self.apply_outbound_alias(publish);
            }
            self.send(Outgoing::packet(packet)).await?;
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
        if let Some(&alias) = self.outbound_aliases.get(&publish.topic) {
            publish.properties.topic_alias = Some(alias);
            publish.topic = Utf8Bytes::default();
        } else if let Ok(next) = u16::try_from(self.outbound_aliases.len() + 1) {
            if next <= self.client_topic_alias_maximum {
                self.outbound_aliases.insert(publish.topic.clone(), next);
                publish.properties.topic_alias = Some(next);
            }
        }
    }

    /// Writes what the hub has queued for this client, as far as its window allows.
    pub(super) async fn pump(&mut self) -> Result<(), End> {
        let pumped = self.shared.hub.pump(&self.client, self.connection_id, now_ms());
        for (device, (partition, offset)) in pumped.delivered {
            self.record_delivery(device, partition, offset);
        }
        self.send_all(pumped.packets).await
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
            match self.topic_aliases.get(&alias) {
                Some(topic) => publish.topic = topic.clone(),
                None => {
                    return Err(End::Because(
                        ReasonCode::ProtocolError,
                        format!("topic alias {alias} was never set on this connection"),
                    ))
                }
            }
        } else {
            self.topic_aliases.insert(alias, publish.topic.clone());
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
                return self.send(Outgoing::packet(self.ack(qos, packet_id, ReasonCode::Success))).await;
            }
        }
        let routed = match route(&self.identity, &self.client, &publish, self.shared.config.destinations()) {
            Ok(routed) => routed,
            Err(code) => {
                let detail = format!("may not publish to {:?}", publish.topic.as_str());
                return match (self.version, packet_id) {
                    (ProtocolVersion::V5, Some(packet_id)) => {
                        tracing::info!(identity = ?self.identity, reason = %code, detail, "refused a PUBLISH");
                        self.send(Outgoing::packet(self.ack(qos, packet_id, code))).await
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
                    self.send(Outgoing::packet(self.ack(qos, packet_id, code))).await
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
                let permit = tokio::select! {
                    permit = self.qos1_slots.clone().acquire_owned() => permit.map_err(|_| End::Quietly)?,
                    _ = self.outgoing.closed() => return Err(End::Quietly),
                };
                let pending = self.shared.append_routed(&routed).await?;
                self.send(Outgoing::AfterAppend {
                    pending,
                    ack: Ack { qos, packet_id, received },
                    permit: Some(permit),
                })
                .await
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
                self.send(Outgoing::AfterAppend {
                    pending,
                    ack: Ack { qos, packet_id, received },
                    permit: None,
                })
                .await
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
        self.send(Outgoing::packet(Packet::PubComp(complete))).await
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
        self.send(Outgoing::packet(answer)).await?;
        self.pump().await
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
        self.send(Outgoing::packet(answer)).await
    }

    /// Writes this session's record (with any other dirty ones) and waits for the cluster; a
    /// failure ends the connection unanswered, so the client asks again.
    pub(super) async fn save_session(&self) -> Result<(), End> {
        self.shared.store.flush(&self.shared.hub).await.map_err(|error| {
            End::Because(ReasonCode::UnspecifiedError, format!("the session could not be saved: {error}"))
        })
    }

    /// A PUBACK, PUBREC or PUBCOMP for a message sent to this client: answers a PUBREC with
    /// PUBREL, records a command's delivery in the cluster, and sends what the freed slot
    /// allows.
    pub(super) async fn acknowledged(&mut self, ack: &Packet) -> Result<(), End> {
        let outcome = self.shared.hub.acknowledged(&self.client, ack);
        if let Some(reply) = outcome.reply {
            self.send(Outgoing::packet(reply)).await?;
        }
        if let Some((device, (partition, offset))) = outcome.delivered {
            self.record_delivery(device, partition, offset);
        }
        self.pump().await
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
