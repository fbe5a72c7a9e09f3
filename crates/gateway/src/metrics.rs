//! The gateway's metrics: MQTT connections and devices online, messages received by QoS, the
//! time from a PUBLISH to its acknowledgement, device and user authentication failures by
//! reason, PUBLISH and SUBSCRIBE refused by topic rules, events received over HTTP, and devices
//! throttled by their quota (MQTT pauses, HTTP 429s; no label per device). Every series is
//! found once, the first time the gateway needs its metrics, so a message costs an atomic add
//! and no lock.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tidewater_metrics::{global, Counter, Gauge, Histogram};
use tidewater_mqtt::{QoS, ReasonCode};

use crate::auth::{CertificateProblem, Refusal};
use crate::token::TokenError;

pub(crate) struct GatewayMetrics {
    pub(crate) mqtt_connections: Arc<Gauge>,
    pub(crate) devices_connected: Arc<Gauge>,
    /// By QoS 0, 1 and 2.
    received: [Arc<Counter>; 3],
    /// PUBACK (QoS 1) and PUBREC (QoS 2).
    ack_latency: [Arc<Histogram>; 2],
    pub(crate) http_events_received: Arc<Counter>,
    /// PUBLISH and SUBSCRIBE refused by topic rules.
    denied_by_rules: [Arc<Counter>; 2],
    /// Senders over their quota: MQTT connections paused, HTTP requests refused with 429.
    throttled: [Arc<Counter>; 2],
    /// How long each MQTT pause lasted (its sum: the seconds spent paused).
    throttle_pauses: Arc<Histogram>,
}

/// The reasons `tidewater_device_auth_failures_total` counts, each a label value.
const AUTH_FAILURE_REASONS: [&str; 16] = [
    "bad_credentials",
    "user_bad_credentials",
    "user_check_unavailable",
    "not_authorized",
    "registry_unavailable",
    "token_expired",
    "token_signature",
    "token_invalid",
    "certificate_unknown_device",
    "certificate_unknown_thumbprint",
    "certificate_cn_mismatch",
    "certificate_unknown_ca",
    "certificate_expired",
    "certificate_not_yet_valid",
    "certificate_invalid",
    "other",
];

pub(crate) fn gateway() -> &'static GatewayMetrics {
    static METRICS: OnceLock<GatewayMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let registry = global();
        let received = registry.counters(
            "tidewater_mqtt_messages_received_total",
            "PUBLISH packets received from MQTT clients, by QoS.",
            &["qos"],
        );
        let ack_latency = registry.histograms(
            "tidewater_mqtt_ack_latency_seconds",
            "Time from reading a PUBLISH to writing its PUBACK (QoS 1) or PUBREC (QoS 2), which waits for the durable append.",
            &["qos"],
        );
        let failures = registry.counters(
            "tidewater_device_auth_failures_total",
            "Device connections and HTTP requests refused at authentication, by reason.",
            &["reason"],
        );
        for reason in AUTH_FAILURE_REASONS {
            failures.series(&[reason]);
        }
        let denied = registry.counters(
            "tidewater_mqtt_authorization_denied_total",
            "PUBLISH and SUBSCRIBE requests of MQTT users and anonymous clients refused by topic rules, by action.",
            &["action"],
        );
        let throttled = registry.counters(
            "tidewater_device_throttled_total",
            "Times a sender was over its quota: an MQTT connection paused its reading, an HTTP request was refused with 429, by protocol.",
            &["protocol"],
        );
        GatewayMetrics {
            mqtt_connections: registry.gauge("tidewater_mqtt_connections", "Open MQTT connections."),
            devices_connected: registry
                .gauge("tidewater_devices_connected", "Devices connected over MQTT (anonymous clients not counted)."),
            received: [received.series(&["0"]), received.series(&["1"]), received.series(&["2"])],
            ack_latency: [ack_latency.series(&["1"]), ack_latency.series(&["2"])],
            http_events_received: registry.counter(
                "tidewater_http_events_received_total",
                "Events received over HTTP and appended (one per record).",
            ),
            denied_by_rules: [denied.series(&["publish"]), denied.series(&["subscribe"])],
            throttled: [throttled.series(&["mqtt"]), throttled.series(&["http"])],
            throttle_pauses: registry.histogram(
                "tidewater_device_throttle_pause_seconds",
                "How long MQTT connections over their quota stopped reading; the sum is the time spent throttled.",
            ),
        }
    })
}

impl GatewayMetrics {
    pub(crate) fn message_received(&self, qos: QoS) {
        self.received[qos as usize].inc();
    }

    pub(crate) fn acknowledged(&self, qos: QoS, received: Instant) {
        match qos {
            QoS::AtLeastOnce => self.ack_latency[0].observe_since(received),
            QoS::ExactlyOnce => self.ack_latency[1].observe_since(received),
            QoS::AtMostOnce => {}
        }
    }

    /// A PUBLISH (`publish` true) or a SUBSCRIBE's filter refused by topic rules.
    pub(crate) fn denied(&self, publish: bool) {
        self.denied_by_rules[usize::from(!publish)].inc();
    }

    /// An MQTT connection over its quota stops reading for `pause`.
    pub(crate) fn throttled_mqtt(&self, pause: std::time::Duration) {
        self.throttled[0].inc();
        self.throttle_pauses.observe(pause);
    }

    /// An HTTP request refused with 429: its device is over its quota.
    pub(crate) fn throttled_http(&self) {
        self.throttled[1].inc();
    }

    /// A SCRAM user's login refused: a wrong name or password, or the check could not be made.
    pub(crate) fn user_refused(&self, unavailable: bool) {
        count_auth_failure(if unavailable { "user_check_unavailable" } else { "user_bad_credentials" });
    }

    pub(crate) fn auth_failed(&self, refusal: &Refusal) {
        let reason = match (&refusal.token, refusal.code) {
            (Some(TokenError::Expired { .. }), _) => "token_expired",
            (Some(TokenError::Signature), _) => "token_signature",
            (Some(_), _) => "token_invalid",
            (None, ReasonCode::BadUserNameOrPassword) => "bad_credentials",
            (None, ReasonCode::NotAuthorized) => "not_authorized",
            (None, ReasonCode::ServerUnavailable) => "registry_unavailable",
            (None, _) => "other",
        };
        count_auth_failure(reason);
    }

    pub(crate) fn certificate_refused(&self, problem: &CertificateProblem) {
        use tidewater_security::client_certificate::CertificateRefusal;
        let reason = match problem {
            CertificateProblem::RegistryNotRead => "registry_unavailable",
            CertificateProblem::UnknownDevice(_) | CertificateProblem::NotX509(_) => {
                "certificate_unknown_device"
            }
            CertificateProblem::UnknownThumbprint(_) => "certificate_unknown_thumbprint",
            CertificateProblem::CommonNameMismatch { .. } => "certificate_cn_mismatch",
            CertificateProblem::Certificate(CertificateRefusal::UnknownIssuer) => "certificate_unknown_ca",
            CertificateProblem::Certificate(CertificateRefusal::Expired) => "certificate_expired",
            CertificateProblem::Certificate(CertificateRefusal::NotYetValid) => "certificate_not_yet_valid",
            CertificateProblem::Certificate(CertificateRefusal::Invalid(_)) => "certificate_invalid",
            CertificateProblem::Disabled(_) => "not_authorized",
        };
        count_auth_failure(reason);
    }
}

/// Counts one refusal under `reason` (one of `AUTH_FAILURE_REASONS`, all made up front).
fn count_auth_failure(reason: &str) {
    global().counters("tidewater_device_auth_failures_total", "", &["reason"]).series(&[reason]).inc();
}

/// Counts an open connection (and, once it authenticated as one, a device online) for as long
/// as it lives.
pub(crate) struct OpenConnection {
    device: bool,
}

impl OpenConnection {
    pub(crate) fn new() -> OpenConnection {
        gateway().mqtt_connections.inc();
        OpenConnection { device: false }
    }

    pub(crate) fn device_connected(&mut self) {
        if !self.device {
            self.device = true;
            gateway().devices_connected.inc();
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let metrics = gateway();
        metrics.mqtt_connections.dec();
        if self.device {
            metrics.devices_connected.dec();
        }
    }
}
