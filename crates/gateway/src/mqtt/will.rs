//! Will messages: appended like a PUBLISH when a connection ends without a normal DISCONNECT,
//! at once or after MQTT 5's Will Delay Interval unless the client id reconnects first.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidewater_mqtt::{Properties, ProtocolVersion, Publish};

use crate::auth::Identity;
use crate::hub::SessionExpiry;
use crate::route::route;

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
