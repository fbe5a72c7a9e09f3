//! `ClusterConfig`: how jobs reach their Kafka-compatible cluster.
//!
//! Jobs never assume the broker is in-process: they get bootstrap servers and librdkafka
//! properties, and work the same against `tidewater serve`, Apache Kafka, Redpanda or Event Hubs.

use rdkafka::ClientConfig;

/// Bootstrap servers plus librdkafka properties applied to every client a job creates (security
/// settings, timeouts); the properties win over the job's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub bootstrap_servers: String,
    pub properties: Vec<(String, String)>,
}

impl ClusterConfig {
    pub fn new(bootstrap_servers: impl Into<String>) -> ClusterConfig {
        ClusterConfig { bootstrap_servers: bootstrap_servers.into(), properties: Vec::new() }
    }

    /// librdkafka configuration: the bootstrap servers, then `settings`, then the user's
    /// properties.
    pub fn client_config(&self, settings: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (key, value) in settings {
            config.set(*key, *value);
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// An idempotent producer whose sends complete only once every in-sync replica has the
    /// record: what dead-letter and command records need before their source offset is committed.
    pub fn reliable_producer(
        &self,
        client_id: &str,
    ) -> rdkafka::error::KafkaResult<rdkafka::producer::FutureProducer<crate::logging::QuietContext>> {
        self.client_config(&[
            ("client.id", client_id),
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "1"),
            ("message.timeout.ms", "30000"),
        ])
        .create_with_context(crate::logging::QuietContext::default())
    }
}
