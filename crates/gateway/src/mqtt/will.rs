//! Will messages: appended like a PUBLISH when a connection ends without a normal DISCONNECT,
//! at once or after MQTT 5's Will Delay Interval unless the client id reconnects first.
//!
//! A will waiting out its delay is kept in the sessions topic when the gateway keeps sessions
//! there (`crate::session_store`), so it survives a restart and any gateway in front of the
//! cluster publishes it when it is due: [`wills_loop`] claims due wills and publishes those
//! whose claim came first. Without a store (or if the write fails) it waits in memory.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidewater_mqtt::{Properties, ProtocolVersion, Publish};

use crate::auth::Identity;
use crate::hub::SessionExpiry;
use crate::route::route;
use crate::session_record::StoredWill;
use tidewater_client::now_ms;

use super::{Shared, WRITE_TIMEOUT};

/// Header marking a will message, as IoT Hub marks its will telemetry.
pub const WILL_HEADER: &str = "mqtt-will";

/// How long a will waits: MQTT 5's Will Delay Interval, cut short by the end of the session
/// (spec 3.1.3.2.2); `None` to send it now.
pub(super) fn will_delay(
    will: &tidewater_mqtt::Will,
    version: ProtocolVersion,
    session: SessionExpiry,
) -> Option<Duration> {
    let delay = match (version, will.properties.will_delay_interval_secs) {
        (ProtocolVersion::V5, Some(secs)) if secs > 0 => Duration::from_secs(u64::from(secs)),
        _ => return None,
    };
    match session {
        SessionExpiry::AtDisconnect => None,
        SessionExpiry::After(expiry) => Some(delay.min(expiry)).filter(|delay| !delay.is_zero()),
        SessionExpiry::Never => Some(delay),
    }
}

/// A connection's will message and whose it is.
pub(super) struct Will {
    pub(super) shared: Arc<Shared>,
    pub(super) identity: Identity,
    pub(super) client: String,
    pub(super) will: tidewater_mqtt::Will,
}

impl Will {
    /// Lets the will wait out `delay`: in the sessions topic if the gateway keeps one (so a
    /// restart does not lose it), else in memory ([`Will::publish_after`]).
    pub(super) async fn wait_out(self, delay: Duration, connection_id: u64) {
        if !self.shared.store.is_enabled() {
            return self.publish_after(delay, connection_id);
        }
        let ended_at_ms = now_ms();
        let due_at_ms = ended_at_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        let stored = StoredWill::of(
            &self.will,
            self.identity.device_id(),
            self.shared.hub.instance(),
            ended_at_ms,
            due_at_ms,
        );
        // Known here before it is written, so a reconnect right now still cancels it.
        self.shared.hub.apply_will(&self.client, Some(stored.clone()));
        let written =
            tokio::time::timeout(WRITE_TIMEOUT, self.shared.store.write_will(&self.client, Some(&stored)))
                .await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::warn!(
                client = self.client,
                "a delayed will could not be kept in the cluster; it waits in memory"
            );
            if self.shared.hub.cancel_will(&self.client) {
                self.publish_after(delay, connection_id);
            }
        }
    }

    /// Publishes the will once `delay` has passed, unless a new connection with the same client
    /// id arrives first. A gateway stopping meanwhile drops it.
    pub(super) fn publish_after(self, delay: Duration, connection_id: u64) {
        self.shared.lock_delayed_wills().insert(self.client.clone(), connection_id);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let due = {
                let mut delayed = self.shared.lock_delayed_wills();
                let due = delayed.get(&self.client) == Some(&connection_id);
                if due {
                    delayed.remove(&self.client);
                }
                due
            };
            if due {
                self.publish().await;
            }
        });
    }

    /// Appends the will, routed like any PUBLISH of its identity (so a device's will must name
    /// its own events topic; an anonymous client's reaches subscribers), with header
    /// `mqtt-will: true`, and waits until it is durable.
    pub(super) async fn publish(&self) {
        let will = &self.will;
        let publish = Publish {
            dup: false,
            qos: will.qos,
            retain: will.retain,
            topic: will.topic.clone(),
            packet_id: None,
            properties: Properties { will_delay_interval_secs: None, ..will.properties.clone() },
            payload: will.payload.clone(),
        };
        let mut routed = match route(
            &self.identity,
            &self.client,
            &publish,
            self.shared.config.destinations(),
        ) {
            Ok(routed) => routed,
            Err(code) => {
                tracing::info!(identity = ?self.identity, topic = will.topic.as_str(), reason = %code, "will message dropped");
                return;
            }
        };
        for message in std::iter::once(&mut routed.message).chain(routed.retained.as_mut()) {
            message.headers.push((WILL_HEADER.to_string(), Bytes::from_static(b"true")));
        }
        let appended = match self.shared.append_routed(&routed).await {
            Ok(pending) => tokio::time::timeout(WRITE_TIMEOUT, pending).await,
            Err(_) => return,
        };
        if !matches!(appended, Ok(Ok(()))) {
            tracing::warn!(identity = ?self.identity, "a will message could not be appended");
        }
    }
}

/// How often due wills in the sessions topic are claimed and won ones published.
const WILLS_EVERY: Duration = Duration::from_millis(250);

/// Until `stop`: claims the wills of the sessions topic that are due, and publishes those whose
/// claim was the first (see the module docs), then removes them with a tombstone.
pub(super) async fn wills_loop(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    if !shared.store.is_enabled() {
        return;
    }
    let mut ticks = tokio::time::interval(WILLS_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stop.borrow() {
        tokio::select! {
            _ = ticks.tick() => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        for (client, claim) in shared.hub.claim_due_wills(now_ms()) {
            if let Err(error) = shared.store.write_will(&client, Some(&claim)).await {
                tracing::warn!(%error, client, "claiming a due will failed; it is left to another gateway or a later try");
                shared.hub.claim_failed(&client, claim.ended_at_ms);
            }
        }
        for (client, stored) in shared.hub.take_won_wills() {
            let Some(will) = stored.will() else {
                tracing::warn!(client, "a will record is damaged; dropped");
                continue;
            };
            let identity = match &stored.device {
                Some(device) => Identity::Device(device.clone()),
                None => Identity::Anonymous,
            };
            Will { shared: shared.clone(), identity, client: client.clone(), will }.publish().await;
            tracing::info!(client, "published a delayed will");
            if let Err(error) = shared.store.write_will(&client, None).await {
                tracing::warn!(%error, client, "removing a published will failed");
            }
        }
    }
}
