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
//! - [`session_record`], [`session_store`]: persistent MQTT sessions kept in the cluster, so
//!   they survive a restart and move between gateways.
//! - [`http`]: HTTP ingestion (CloudEvents binary, structured and batch modes, plain JSON).
//! - [`presence`]: which devices this process has seen, connected now, last seen, messages.
//! - [`topic_rules`]: what MQTT users and anonymous clients may publish and subscribe to.
//! - [`users`]: checking an MQTT client's user name and password against SCRAM credentials.
//! - [`throttle`]: per-device quotas (messages and bytes per second) as token buckets.

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
pub mod session_record;
pub mod session_store;
pub mod subscriptions;
pub mod throttle;
pub mod token;
pub mod topic_rules;
pub mod users;

pub use append::{Appender, KafkaAppender, MemoryAppender};
pub use device::{Device, DeviceCa, X509Identity};
pub use http::HttpConfig;
pub use listener::Listen;
pub use mqtt::MqttConfig;
pub use registry::{DeviceRegistry, Directory, RegistryView, DEVICES_TOPIC};
pub use session_store::SessionStore;

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
    let mut sessions_follower = None;
    let mut flusher = None;
    let store = Arc::new(match &mqtt {
        Some((_, config)) => {
            SessionStore::new(&cluster, &config.topics.sessions, &config.topics.messages, timeout)?
        }
        None => SessionStore::disabled(),
    });
    let mqtt = match mqtt {
        Some((listener, config)) => {
            let hub =
                Arc::new(hub::Hub::new(hub::HubConfig { persist_sessions: true, ..config.hub_config() }));
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
            let (loaded, sessions_loaded) = tokio::sync::oneshot::channel();
            sessions_follower = session_store::follow(&store, hub.clone(), stop.clone(), loaded)?;
            // Clients wait in the listen backlog until subscribers can be fed and their
            // sessions are known; past the timeout the listener opens anyway (publishing works;
            // subscribers get what arrives once the followers are reading).
            if tokio::time::timeout(timeout, following).await.is_err() {
                tracing::warn!("the MQTT pub/sub follower is not reading yet; accepting MQTT clients anyway");
            }
            if tokio::time::timeout(timeout, sessions_loaded).await.is_err() {
                tracing::warn!(
                    topic = config.topics.sessions,
                    "the MQTT sessions table is not read yet; accepting MQTT clients anyway"
                );
            }
            flusher = Some(tokio::spawn(flush_sessions(store.clone(), hub.clone(), stop.clone())));
            Some((
                tokio::spawn(mqtt::serve(
                    listener,
                    config,
                    directory.clone(),
                    appender.clone(),
                    hub.clone(),
                    store.clone(),
                    stop.clone(),
                )),
                hub,
            ))
        }
        None => None,
    };
    let http = http.map(|(listener, config)| {
        tokio::spawn(http::serve(listener, config, directory.clone(), appender.clone(), stop.clone()))
    });
    let mut hub = None;
    let mqtt = mqtt.map(|(task, mqtt_hub)| {
        hub = Some(mqtt_hub);
        task
    });
    for task in [mqtt, http].into_iter().flatten() {
        if let Err(error) = task.await {
            tracing::warn!(%error, "a gateway listener task failed");
        }
    }
    // Every connection has ended: write what their ends changed (detached sessions, tombstones)
    // before the producer goes.
    if let Some(flusher) = flusher {
        let _ = flusher.await;
    }
    if let Some(hub) = hub {
        if let Err(error) = tokio::time::timeout(timeout, store.flush(&hub)).await.unwrap_or(Ok(())) {
            tracing::warn!(%error, "the last session records could not be written");
        }
    }
    drop(store);
    // Close the Kafka clients before returning, so `serve` stops its listener after them.
    drop(appender);
    let _ = tokio::task::spawn_blocking(move || {
        let _ = follower.join();
        if let Some(fanout) = fanout {
            let _ = fanout.join();
        }
        if let Some(sessions_follower) = sessions_follower {
            let _ = sessions_follower.join();
        }
    })
    .await;
    Ok(())
}

/// Writes the records of the sessions that changed every [`session_store::FLUSH_INTERVAL`]
/// until `stop`. A failed write is retried at the next round (the store marks its sessions dirty
/// again).
async fn flush_sessions(
    store: Arc<SessionStore>,
    hub: Arc<hub::Hub>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(session_store::FLUSH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stop.borrow() {
        tokio::select! {
            _ = ticks.tick() => {
                // Not awaited here: a slow cluster must not hold the next round back, and the
                // store orders the records itself.
                let written = store.flush(&hub);
                tokio::spawn(async move {
                    let _ = written.await;
                });
            }
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
}
