//! The device gateway: devices connect over MQTT 3.1.1 or 5 (on TCP, TLS or WebSockets), or
//! POST over HTTP(S), authenticate with a per-device key, a time-limited token made with it or
//! an X.509 client certificate, and every message they send is appended to a topic of a
//! Kafka-compatible cluster before it is acknowledged.
//!
//! The gateway is a Kafka client ([`append::KafkaAppender`], [`registry::DeviceRegistry`]), so
//! it runs inside `tidewater serve` against the embedded broker or standalone (`tidewater
//! gateway`) in front of any Kafka-compatible cluster. It keeps no copy of the events.
//!
//! - [`device`]: a device record, key generation, salted hashes, constant-time checks.
//! - [`token`]: IoT Hub-style SAS tokens: minting, parsing, verifying.
//! - [`registry`]: the `_tidewater_devices` topic and the live in-memory map gateways follow.
//! - [`auth`]: CONNECT decisions (key, token or client certificate), with the MQTT reason code
//!   of each refusal.
//! - [`listener`]: plain and TLS listeners, the bounded TLS handshake, connection limits.
//! - [`route`]: which PUBLISH goes where, with the authenticated device id stamped in.
//! - [`append`]: queue in order, learn when durable.
//! - [`mqtt`]: the listener and its connections.
//! - [`hub`]: MQTT sessions, subscriptions, retained messages and commands waiting for devices.
//! - [`subscriptions`]: matching a topic to the sessions subscribed to it.
//! - [`message`]: an MQTT message as record headers and back.
//! - [`fanout`]: the log follower that feeds the hub from the cluster.
//! - [`http`]: HTTP ingestion (CloudEvents binary, structured and batch modes, plain JSON).
//! - [`presence`]: which devices this process has seen, connected now, last seen, messages.

pub mod append;
pub mod auth;
pub mod device;
pub mod fanout;
pub mod http;
pub mod hub;
pub mod listener;
pub mod message;
mod metrics;
pub mod mqtt;
pub mod presence;
pub mod registry;
pub mod route;
pub mod subscriptions;
pub mod token;

pub use append::{Appender, KafkaAppender, MemoryAppender};
pub use device::{Device, DeviceCa, X509Identity};
pub use http::HttpConfig;
pub use listener::Listen;
pub use mqtt::MqttConfig;
pub use registry::{DeviceRegistry, Directory, RegistryView, DEVICES_TOPIC};

use std::sync::Arc;
use std::time::Duration;

use tidewater_client::ClusterConfig;

/// Runs a gateway against `cluster` until `stop`: creates the device registry topic (and for
/// MQTT the pub/sub topics) if needed, follows them, and serves MQTT and/or HTTP on the
/// listeners given (each plain or TLS), appending through one idempotent acks=all producer. Used by `tidewater serve` (against its own Kafka listener) and
/// `tidewater gateway`.
pub async fn run(
    cluster: ClusterConfig,
    mqtt: Option<(Vec<Listen>, MqttConfig)>,
    http: Option<(Vec<Listen>, HttpConfig)>,
    timeout: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let registry = DeviceRegistry::new(cluster.clone(), timeout);
    // Not fatal: the follower retries, and devices are refused as Server unavailable meanwhile.
    if let Err(error) = registry.ensure_topic().await {
        tracing::warn!(error = %format!("{error:#}"), "could not create {DEVICES_TOPIC}; will keep trying to read it");
    }
    let (directory, follower) = registry.watch(stop.clone())?;
    let table_topics = match &mqtt {
        Some((_, config)) => vec![config.topics.retained.clone(), config.topics.deliveries.clone()],
        None => Vec::new(),
    };
    let appender: Arc<dyn Appender> = Arc::new(KafkaAppender::new(&cluster, table_topics)?);
    let mut fanout = None;
    let mqtt = match mqtt {
        Some((listener, config)) => {
            let hub = Arc::new(hub::Hub::new(config.hub_config()));
            // Not fatal either: the follower keeps trying to read what is missing.
            if let Err(error) = fanout::ensure_topics(&cluster, &config.topics, timeout).await {
                tracing::warn!(error = %format!("{error:#}"), "could not create the MQTT pub/sub topics");
            }
            let (ready, following) = tokio::sync::oneshot::channel();
            fanout = Some(fanout::follow(
                &cluster,
                config.topics.clone(),
                hub.clone(),
                timeout,
                stop.clone(),
                ready,
            )?);
            // Clients wait in the listen backlog until subscribers can be fed; past the timeout
            // the listener opens anyway (publishing works; subscribers get what arrives once the
            // follower is reading).
            if tokio::time::timeout(timeout, following).await.is_err() {
                tracing::warn!("the MQTT pub/sub follower is not reading yet; accepting MQTT clients anyway");
            }
            Some(tokio::spawn(mqtt::serve(
                listener,
                config,
                directory.clone(),
                appender.clone(),
                hub,
                stop.clone(),
            )))
        }
        None => None,
    };
    let http = http.map(|(listener, config)| {
        tokio::spawn(http::serve(listener, config, directory.clone(), appender.clone(), stop.clone()))
    });
    for task in [mqtt, http].into_iter().flatten() {
        if let Err(error) = task.await {
            tracing::warn!(%error, "a gateway listener task failed");
        }
    }
    // Close the Kafka clients before returning, so `serve` stops its listener after them.
    drop(appender);
    let _ = tokio::task::spawn_blocking(move || {
        let _ = follower.join();
        if let Some(fanout) = fanout {
            let _ = fanout.join();
        }
    })
    .await;
    Ok(())
}
