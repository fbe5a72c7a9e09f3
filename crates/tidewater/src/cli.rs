//! Command-line interface: one subcommand per role.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tidewater_client::ClusterArgs;
use tidewater_log::FsyncPolicy;
use tidewater_security::KafkaPrincipal;

#[derive(Debug, Parser)]
#[command(name = "tidewater", version, about = "Tidewater: an event streaming platform in one binary")]
pub(crate) struct Cli {
    /// Log filter for stderr (error, warn, info, debug, trace, or a RUST_LOG expression).
    #[arg(long, global = true, default_value = "info", env = "TIDEWATER_LOG")]
    pub(crate) log_level: String,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run Tidewater: open (or create) the data directory, recover every log in it, serve the
    /// Kafka protocol, and run until Ctrl-C or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Inspect log directories on disk (works while no server has them open).
    #[command(subcommand)]
    Log(LogCommand),
    /// Create, list, describe, alter and delete topics on any Kafka-compatible cluster.
    Topic(tidewater_cli::topic::TopicArgs),
    /// Write stdin to a topic, one record per line (like kcat -P). Exits non-zero if any record
    /// was not acknowledged.
    Produce(tidewater_cli::produce::ProduceArgs),
    /// Print a topic's records to stdout (like kcat -C). Reads partitions by explicit
    /// assignment: no consumer group, no committed offsets.
    Consume(tidewater_cli::consume::ConsumeArgs),
    /// Measure any Kafka-compatible cluster: produce and consume throughput, end-to-end latency
    /// at a fixed rate (`scripts/bench` runs the whole suite against `tidewater serve`).
    #[command(subcommand)]
    Bench(tidewater_bench::BenchCommand),
    /// SCRAM users of any Kafka-compatible cluster (create, passwd, list, delete), through
    /// Kafka's AlterUserScramCredentials and DescribeUserScramCredentials.
    User(tidewater_cli::user::UserArgs),
    /// ACLs of any Kafka-compatible cluster (create, list, delete), as kafka-acls.sh manages
    /// them. (What MQTT users may publish and subscribe to is `mqtt-acl`.)
    Acl(tidewater_cli::acl::AclArgs),
    /// List, describe and delete consumer groups and reset their committed offsets on any
    /// Kafka-compatible cluster (like kafka-consumer-groups).
    Group(tidewater_cli::group::GroupArgs),
    /// Simple event processing: an action (webhook, command, device command) for every event of
    /// a topic, with retries, backoff and a dead-letter topic. Register triggers on any
    /// Kafka-compatible cluster and run them in `tidewater serve` or with `trigger run`.
    Trigger(crate::trigger_cmd::TriggerArgs),
    /// Complex event processing: streaming SQL (Azure Stream Analytics dialect) over event time.
    /// `query test` runs a query over a file of events with no server; `query run` runs it
    /// against any Kafka-compatible cluster exactly once; `query create` registers it for
    /// `tidewater serve` to run.
    #[command(subcommand)]
    Query(crate::query_cmd::QueryCommand),
    /// The cold path: capture topics to Hive-partitioned Parquet files (date, hour, partition)
    /// in a directory or an S3 bucket, exactly once, for DuckDB, Spark, Polars or pyarrow.
    /// `capture run` runs one against any Kafka-compatible cluster.
    Capture(crate::capture_cmd::CaptureArgs),
    /// Register devices for the gateway and manage them (add, list, show, update their quota,
    /// disable, enable, remove, rotate-key) on any Kafka-compatible cluster. Keys are stored hashed. `device
    /// token` makes a time-limited token from a key, with no server.
    Device(crate::device_cmd::DeviceArgs),
    /// Topic rules for MQTT clients that are not devices (SCRAM users, anonymous clients):
    /// allow or deny publish/subscribe per user, client id, anonymous clients or everyone, with
    /// the wildcards '+' and '#' and the placeholders %u/%c (add, list, remove), on any
    /// Kafka-compatible cluster; every gateway follows them live.
    MqttAcl(crate::mqtt_acl_cmd::MqttAclArgs),
    /// Run a device gateway in this process against any Kafka-compatible cluster: devices
    /// connect over MQTT 3.1.1/5 and every message is appended before it is acknowledged
    /// (`tidewater serve` runs one against itself).
    Gateway(Box<GatewayArgs>),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) listeners: KafkaListenerArgs,
    /// This broker's node id, as clients see it in metadata.
    #[arg(long, default_value_t = 0)]
    pub(crate) node_id: i32,
    /// Create a topic when a producer or a metadata request names one that does not exist
    /// (Kafka auto.create.topics.enable).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) auto_create_topics: bool,
    /// Partitions of an auto-created topic (Kafka num.partitions).
    #[arg(long, default_value_t = 1)]
    pub(crate) default_partitions: i32,
    /// Largest request a client may send, in bytes (Kafka socket.request.max.bytes).
    #[arg(long, default_value_t = tidewater_kafka::frame::DEFAULT_MAX_REQUEST_BYTES)]
    pub(crate) max_request_bytes: usize,
    /// Connections open at once; more wait in the listen backlog.
    #[arg(long, default_value_t = tidewater_kafka::server::DEFAULT_MAX_CONNECTIONS)]
    pub(crate) max_connections: usize,
    /// Requests one connection may have in flight before the broker stops reading from it.
    #[arg(long, default_value_t = tidewater_kafka::server::DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION)]
    pub(crate) max_in_flight_per_connection: usize,
    /// Close connections idle this many seconds (Kafka connections.max.idle.ms).
    #[arg(long, default_value_t = tidewater_kafka::server::DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub(crate) idle_timeout_secs: u64,
    /// Largest record batch a producer may send, unless a topic overrides it (Kafka
    /// message.max.bytes).
    #[arg(long, default_value_t = tidewater_log::DEFAULT_MAX_BATCH_BYTES)]
    pub(crate) max_batch_bytes: usize,
    /// Where topic-partition logs live, one subdirectory each.
    #[arg(long, default_value = "tidewater-data", env = "TIDEWATER_DATA_DIR")]
    pub(crate) data_dir: PathBuf,
    /// When appends reach the disk: always (fsync before acknowledging, group-committed),
    /// interval[:ms] (fsync in the background; a power loss can lose one interval) or never
    /// (only on segment roll and shutdown; a power loss can lose everything since the last roll).
    #[arg(long, default_value = "always", env = "TIDEWATER_FSYNC")]
    pub(crate) fsync: FsyncPolicy,
    /// Roll to a new segment file at this size (Kafka segment.bytes).
    #[arg(long, default_value_t = tidewater_log::DEFAULT_SEGMENT_BYTES)]
    pub(crate) segment_bytes: u64,
    /// Delete closed segments older than this many milliseconds; -1 keeps them forever
    /// (Kafka retention.ms).
    #[arg(long, default_value_t = tidewater_log::DEFAULT_RETENTION_MS, allow_negative_numbers = true)]
    pub(crate) retention_ms: i64,
    /// Delete the oldest closed segments while a partition is larger than this; -1 for no limit
    /// (Kafka retention.bytes).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub(crate) retention_bytes: i64,
    /// Milliseconds between housekeeping passes (segment age, interval fsync, retention).
    #[arg(long, default_value_t = 1000)]
    pub(crate) housekeeping_interval_ms: u64,
    /// How long a new consumer group waits for more members before its first assignment
    /// (Kafka group.initial.rebalance.delay.ms).
    #[arg(long, default_value_t = 3000)]
    pub(crate) group_initial_rebalance_delay_ms: i64,
    /// The shortest session timeout a consumer may ask for (Kafka group.min.session.timeout.ms).
    #[arg(long, default_value_t = 6000)]
    pub(crate) group_min_session_timeout_ms: i32,
    /// Consumer-protocol groups (KIP-848, `group.protocol=consumer`): a member not heard from
    /// for this long is removed and its partitions reassigned (Kafka
    /// group.consumer.session.timeout.ms).
    #[arg(long, default_value_t = 45_000, value_parser = clap::value_parser!(i32).range(1..))]
    pub(crate) group_consumer_session_timeout_ms: i32,
    /// Consumer-protocol groups: how often members are told to heartbeat (Kafka
    /// group.consumer.heartbeat.interval.ms).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(i32).range(1..))]
    pub(crate) group_consumer_heartbeat_interval_ms: i32,
    /// Committed offsets of a group without members are deleted after this many minutes without
    /// a commit (Kafka offsets.retention.minutes).
    #[arg(long, default_value_t = 7 * 24 * 60)]
    pub(crate) offsets_retention_minutes: i64,
    /// The most fetch sessions (KIP-227) kept at once, Kafka's
    /// max.incremental.fetch.session.cache.slots: a consumer with a session sends only the
    /// partitions that changed. When full, an idle (2 min) or smaller session gives up its slot;
    /// 0 answers every fetch without a session.
    #[arg(long, default_value_t = tidewater_broker::fetch_sessions::DEFAULT_SLOTS)]
    pub(crate) fetch_session_cache_slots: usize,
    /// Send fetched batches on plaintext Kafka listeners with sendfile, straight from the segment
    /// files, instead of reading them into memory first (TLS listeners always read them). Off by
    /// default: on loopback it cost the broker more CPU per byte served (docs/operations.md).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub(crate) kafka_sendfile: bool,
    /// Run the triggers registered in this server's triggers topic (`tidewater trigger create`),
    /// as a Kafka client of the embedded broker.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) triggers: bool,
    /// Run the query jobs registered in this server's `_tidewater_queries` topic (`tidewater
    /// query create`), as a Kafka client of the embedded broker.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) queries: bool,
    /// Run the captures registered in this server's `_tidewater_captures` topic (`tidewater
    /// capture create`), as a Kafka client of the embedded broker. S3 destinations take their
    /// settings from this process's AWS_* environment variables.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) captures: bool,
    /// Principals that bypass ACLs and alone may use the internal `_tidewater_*` topics
    /// (Kafka's super.users), separated by semicolons or commas: User:admin;User:ops, or
    /// User:admin,User:CN=ops,O=Acme (a comma followed by Type: starts the next one). ACLs apply once any
    /// listener authenticates (SASL, or SSL with --tls-client-ca); then everything no ACL
    /// allows is denied, on every listener (a PLAINTEXT client is User:ANONYMOUS).
    #[arg(long, env = "TIDEWATER_SUPERUSERS", value_parser = parse_superusers)]
    pub(crate) superusers: Vec<Vec<KafkaPrincipal>>,
    #[command(flatten)]
    pub(crate) mqtt: MqttArgs,
    #[command(flatten)]
    pub(crate) http: HttpArgs,
    #[command(flatten)]
    pub(crate) admin: crate::admin::AdminArgs,
}

/// One `--superusers` value: a list of principals.
fn parse_superusers(text: &str) -> Result<Vec<KafkaPrincipal>, String> {
    tidewater_security::parse_principal_list(text).map_err(|error| error.to_string())
}

/// The Kafka listeners and how they secure connections, in `serve`.
#[derive(Debug, Args)]
pub(crate) struct KafkaListenerArgs {
    /// Where Kafka clients connect: [PROTOCOL://]host:port, PROTOCOL one of PLAINTEXT (the
    /// default), SSL, SASL_PLAINTEXT or SASL_SSL, as Kafka's listeners. Give it once per
    /// listener (or comma-separated in the environment variable).
    #[arg(long, default_value = "127.0.0.1:9092", env = "TIDEWATER_KAFKA_LISTEN", value_delimiter = ',')]
    pub(crate) kafka_listen: Vec<tidewater_kafka::ListenerAddress>,
    /// host:port clients of a listener are told to connect to (Kafka's advertised.listeners),
    /// once per --kafka-listen in the same order; defaults to the address bound.
    #[arg(long, env = "TIDEWATER_KAFKA_ADVERTISED", value_delimiter = ',')]
    pub(crate) kafka_advertised: Vec<String>,
    /// The server's certificate chain (PEM, leaf first), for every TLS listener (Kafka, and the
    /// gateway's --mqtt-tls-listen and --http-tls-listen).
    #[arg(long, env = "TIDEWATER_TLS_CERT")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TIDEWATER_TLS_KEY")]
    pub(crate) tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to: SSL listeners then require
    /// a client certificate and take the principal from it (mutual TLS).
    #[arg(long, env = "TIDEWATER_TLS_CLIENT_CA")]
    pub(crate) tls_client_ca: Option<PathBuf>,
    /// How a client certificate's subject DN becomes a principal name (Kafka's
    /// ssl.principal.mapping.rules), e.g. 'RULE:^CN=([^,]*).*$/$1/,DEFAULT' for the CN alone.
    #[arg(long, default_value = "DEFAULT", env = "TIDEWATER_SSL_PRINCIPAL_MAPPING_RULES")]
    pub(crate) ssl_principal_mapping_rules: String,
    /// SASL mechanisms a SASL listener enables, comma-separated (PLAIN, SCRAM-SHA-256,
    /// SCRAM-SHA-512). Given once, it applies to every SASL listener; given once per SASL
    /// listener, in the order of --kafka-listen, each gets its own.
    #[arg(long, default_value = "SCRAM-SHA-256,SCRAM-SHA-512", env = "TIDEWATER_SASL_MECHANISMS")]
    pub(crate) sasl_mechanisms: Vec<String>,
    /// Milliseconds a SASL session lasts before the client must re-authenticate on its
    /// connection (Kafka's connections.max.reauth.ms, KIP-368); 0 for sessions as long as the
    /// connection.
    #[arg(long, default_value_t = 0)]
    pub(crate) connections_max_reauth_ms: u64,
    /// Start even with a listener on a non-loopback address that has neither TLS nor
    /// authentication (a PLAINTEXT Kafka listener, an MQTT listener allowing anonymous clients):
    /// anyone who can reach it could then read and write every topic.
    #[arg(long)]
    pub(crate) allow_insecure_listeners: bool,
}

/// The device gateway's MQTT listener, in `serve` and `gateway`.
#[derive(Debug, Args)]
pub(crate) struct MqttArgs {
    /// Address the MQTT listener binds to, or "none" for no MQTT listener (and no gateway).
    #[arg(long, default_value = "127.0.0.1:1883", env = "TIDEWATER_MQTT_LISTEN")]
    pub(crate) mqtt_listen: ListenAddress,
    /// Address an MQTT over TLS listener binds to (conventionally port 8883), or "none". It
    /// uses --tls-cert and --tls-key, and asks clients for a certificate: devices registered
    /// with `device add --x509-thumbprint` or `--x509-ca` must present theirs; key and token
    /// devices need none.
    #[arg(long, default_value = "none", env = "TIDEWATER_MQTT_TLS_LISTEN")]
    pub(crate) mqtt_tls_listen: ListenAddress,
    /// Address an MQTT over WebSockets listener binds to, or "none": path /mqtt (or IoT Hub's
    /// /$iothub/websocket), subprotocol mqtt. It is TLS (wss://) whenever --tls-cert is given,
    /// with client certificates as on --mqtt-tls-listen.
    #[arg(long, default_value = "none", env = "TIDEWATER_MQTT_WS_LISTEN")]
    pub(crate) mqtt_ws_listen: ListenAddress,
    /// Accept MQTT clients that send no password. They get no device identity, so they can
    /// publish to no device's topics, and are under the anonymous topic rules once any exist
    /// (`tidewater mqtt-acl`). Off by default, as in Mosquitto 2. (Clients with a SCRAM user's
    /// name and password are accepted either way.)
    #[arg(long)]
    pub(crate) mqtt_allow_anonymous: bool,
    /// The topic device events (devices/{id}/messages/events/#) are appended to, keyed by
    /// device id.
    #[arg(long, default_value = "telemetry")]
    pub(crate) mqtt_telemetry_topic: String,
    /// MQTT connections open at once; more wait in the listen backlog.
    #[arg(long, default_value_t = tidewater_gateway::mqtt::DEFAULT_MAX_CONNECTIONS)]
    pub(crate) mqtt_max_connections: usize,
    /// Largest MQTT packet a client may send, fixed header included (MQTT 5 Maximum Packet
    /// Size); at most 458752, so that every accepted message fits Kafka's default 1,000,000-byte
    /// message limit.
    #[arg(long, default_value_t = tidewater_gateway::mqtt::DEFAULT_MAX_PACKET_BYTES)]
    pub(crate) mqtt_max_packet_bytes: usize,
    /// QoS 1 messages awaiting their append, and QoS 2 messages awaiting PUBREL, per connection
    /// (MQTT 5 Receive Maximum).
    #[arg(long, default_value_t = tidewater_gateway::mqtt::DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION)]
    pub(crate) mqtt_max_in_flight: u16,
    /// The topic plain MQTT pub/sub goes through (anonymous clients publishing outside
    /// devices/), keyed by MQTT topic; subscribers are fed from it.
    #[arg(long, default_value = "mqtt-messages")]
    pub(crate) mqtt_messages_topic: String,
    /// The table of retained MQTT messages, keyed by MQTT topic, loaded at start.
    #[arg(long, default_value = "_tidewater_mqtt_retained")]
    pub(crate) mqtt_retained_topic: String,
    /// The table of persistent MQTT sessions (Clean Session 0, Session Expiry Interval above 0),
    /// keyed by client id: subscriptions, positions in the pub/sub topic, unacknowledged
    /// messages and QoS 2 ids awaiting PUBREL. Every gateway in front of the cluster follows
    /// it, so a session survives a gateway restart and moves to another gateway.
    #[arg(long, default_value = "_tidewater_mqtt_sessions")]
    pub(crate) mqtt_sessions_topic: String,
    /// Messages a session queues for its client beyond those in flight (also while the client
    /// of a persistent session is away); more are dropped.
    #[arg(long, default_value_t = 1000)]
    pub(crate) mqtt_max_queued_messages: usize,
    /// The longest keep-alive an MQTT client may ask for, in seconds; one asking for more, or
    /// for none, is held to this (MQTT 5 clients are told, as Server Keep Alive). The default,
    /// 65535, allows any keep-alive including none.
    #[arg(long, default_value_t = u16::MAX)]
    pub(crate) mqtt_max_keep_alive_secs: u16,
    /// Subscriptions one MQTT session may hold; more get Quota exceeded in the SUBACK.
    #[arg(long, default_value_t = 100)]
    pub(crate) mqtt_max_subscriptions: usize,
    /// Topic aliases an MQTT 5 client may set per connection (0: none).
    #[arg(long, default_value_t = tidewater_gateway::mqtt::DEFAULT_TOPIC_ALIAS_MAXIMUM)]
    pub(crate) mqtt_topic_alias_maximum: u16,
    /// Commands to devices: records keyed by device id, delivered on
    /// devices/{id}/messages/devicebound/ to the device while it is subscribed.
    #[arg(long, default_value = "commands")]
    pub(crate) commands_topic: String,
    /// Where the gateway records each command a device acknowledged.
    #[arg(long, default_value = "_tidewater_command_deliveries")]
    pub(crate) command_deliveries_topic: String,
    /// How long a command waits for its device, in seconds, unless its record carries an
    /// mqtt-message-expiry header (seconds).
    #[arg(long, default_value_t = 3600)]
    pub(crate) command_ttl_secs: u64,
    /// Messages per second a device may send, over MQTT and HTTP together, unless its own record
    /// says otherwise (`device add|update --max-messages-per-second`); 0 for no limit. A device
    /// may send one second's worth at once. Over it, its MQTT connection is read no further until
    /// it is back within it (nothing is dropped, and TCP slows the device), and its HTTP requests
    /// get 429 with Retry-After. MQTT users and anonymous clients are held to it too, per
    /// connection.
    #[arg(long, default_value_t = 0, env = "TIDEWATER_DEVICE_MAX_MESSAGES_PER_SECOND")]
    pub(crate) device_max_messages_per_second: u64,
    /// Bytes per second a device may send (MQTT PUBLISH packets as sent, HTTP request bodies),
    /// likewise; 0 for no limit.
    #[arg(long, default_value_t = 0, env = "TIDEWATER_DEVICE_MAX_BYTES_PER_SECOND")]
    pub(crate) device_max_bytes_per_second: u64,
}

/// The smallest packet limit accepted: a CONNECT with a device id and key fits easily.
const MQTT_PACKET_BYTES_MIN: usize = 256;

impl MqttArgs {
    /// The listener's configuration, after checking the flags.
    pub(crate) fn config(&self) -> anyhow::Result<tidewater_gateway::MqttConfig> {
        anyhow::ensure!(
            (MQTT_PACKET_BYTES_MIN..=tidewater_gateway::mqtt::PACKET_BYTES_MAX)
                .contains(&self.mqtt_max_packet_bytes),
            "--mqtt-max-packet-bytes must be between {MQTT_PACKET_BYTES_MIN} and {} (a message must fit \
             Kafka's default 1,000,000-byte message limit once it carries its topic and headers)",
            tidewater_gateway::mqtt::PACKET_BYTES_MAX
        );
        anyhow::ensure!(self.mqtt_max_in_flight > 0, "--mqtt-max-in-flight must be at least 1");
        anyhow::ensure!(self.mqtt_max_connections > 0, "--mqtt-max-connections must be at least 1");
        for (flag, topic) in [
            ("--mqtt-telemetry-topic", &self.mqtt_telemetry_topic),
            ("--mqtt-messages-topic", &self.mqtt_messages_topic),
            ("--mqtt-retained-topic", &self.mqtt_retained_topic),
            ("--mqtt-sessions-topic", &self.mqtt_sessions_topic),
            ("--commands-topic", &self.commands_topic),
            ("--command-deliveries-topic", &self.command_deliveries_topic),
        ] {
            anyhow::ensure!(!topic.is_empty(), "{flag} must not be empty");
        }
        anyhow::ensure!(self.command_ttl_secs > 0, "--command-ttl-secs must be at least 1");
        anyhow::ensure!(self.mqtt_max_keep_alive_secs > 0, "--mqtt-max-keep-alive-secs must be at least 1");
        anyhow::ensure!(self.mqtt_max_subscriptions > 0, "--mqtt-max-subscriptions must be at least 1");
        Ok(tidewater_gateway::MqttConfig {
            max_connections: self.mqtt_max_connections,
            limits: tidewater_mqtt::Limits {
                max_packet_bytes: self.mqtt_max_packet_bytes,
                ..tidewater_mqtt::Limits::default()
            },
            max_in_flight_per_connection: self.mqtt_max_in_flight,
            allow_anonymous: self.mqtt_allow_anonymous,
            telemetry_topic: self.mqtt_telemetry_topic.clone(),
            topics: tidewater_gateway::fanout::PubSubTopics {
                messages: self.mqtt_messages_topic.clone(),
                retained: self.mqtt_retained_topic.clone(),
                commands: self.commands_topic.clone(),
                deliveries: self.command_deliveries_topic.clone(),
                sessions: self.mqtt_sessions_topic.clone(),
                command_ttl: std::time::Duration::from_secs(self.command_ttl_secs),
            },
            max_queued_messages: self.mqtt_max_queued_messages,
            topic_alias_maximum: self.mqtt_topic_alias_maximum,
            max_keep_alive_secs: self.mqtt_max_keep_alive_secs,
            max_subscriptions_per_client: self.mqtt_max_subscriptions,
            // Set by the role: serve checks its own stored keys, a standalone gateway logs in.
            users: tidewater_gateway::users::UserCheck::None,
            device_quota: tidewater_gateway::throttle::Quota {
                messages_per_second: self.device_max_messages_per_second,
                bytes_per_second: self.device_max_bytes_per_second,
            },
        })
    }
}

/// The device gateway's HTTP ingestion listener, in `serve` and `gateway`. Events go to the
/// same topic as MQTT's (`--mqtt-telemetry-topic`).
#[derive(Debug, Args)]
pub(crate) struct HttpArgs {
    /// Address the HTTP ingestion listener binds to (devices POST to
    /// /devices/{id}/messages/events), or "none" for no HTTP listener.
    #[arg(long, default_value = "127.0.0.1:8080", env = "TIDEWATER_HTTP_LISTEN")]
    pub(crate) http_listen: ListenAddress,
    /// Address an HTTPS ingestion listener binds to, or "none". It uses --tls-cert and
    /// --tls-key and accepts the same device client certificates as --mqtt-tls-listen.
    #[arg(long, default_value = "none", env = "TIDEWATER_HTTP_TLS_LISTEN")]
    pub(crate) http_tls_listen: ListenAddress,
    /// Largest request body; larger requests get 413.
    #[arg(long, default_value_t = tidewater_gateway::http::DEFAULT_MAX_BODY_BYTES)]
    pub(crate) http_max_body_bytes: usize,
    /// Most events in one CloudEvents batch request; more get 413.
    #[arg(long, default_value_t = tidewater_gateway::http::DEFAULT_MAX_BATCH_EVENTS)]
    pub(crate) http_max_batch_events: usize,
    /// HTTP connections open at once; more wait in the listen backlog.
    #[arg(long, default_value_t = tidewater_gateway::http::DEFAULT_MAX_CONNECTIONS)]
    pub(crate) http_max_connections: usize,
    /// Milliseconds a client has to send a request's headers (also how long an idle
    /// keep-alive connection is kept).
    #[arg(long, default_value_t = tidewater_gateway::http::DEFAULT_HEADER_TIMEOUT.as_millis() as u64)]
    pub(crate) http_header_timeout_ms: u64,
    /// Milliseconds a client has to send a request's body.
    #[arg(long, default_value_t = tidewater_gateway::http::DEFAULT_BODY_TIMEOUT.as_millis() as u64)]
    pub(crate) http_body_timeout_ms: u64,
}

impl HttpArgs {
    /// The listener's configuration, after checking the flags; the telemetry topic and the
    /// devices' default quota are MQTT's.
    pub(crate) fn config(
        &self,
        mqtt: &tidewater_gateway::MqttConfig,
    ) -> anyhow::Result<tidewater_gateway::HttpConfig> {
        anyhow::ensure!(self.http_max_body_bytes > 0, "--http-max-body-bytes must be at least 1");
        anyhow::ensure!(self.http_max_batch_events > 0, "--http-max-batch-events must be at least 1");
        anyhow::ensure!(self.http_max_connections > 0, "--http-max-connections must be at least 1");
        anyhow::ensure!(self.http_header_timeout_ms > 0, "--http-header-timeout-ms must be at least 1");
        anyhow::ensure!(self.http_body_timeout_ms > 0, "--http-body-timeout-ms must be at least 1");
        Ok(tidewater_gateway::HttpConfig {
            max_body_bytes: self.http_max_body_bytes,
            max_batch_events: self.http_max_batch_events,
            max_connections: self.http_max_connections,
            header_timeout: std::time::Duration::from_millis(self.http_header_timeout_ms),
            body_timeout: std::time::Duration::from_millis(self.http_body_timeout_ms),
            telemetry_topic: mqtt.telemetry_topic.clone(),
            device_quota: mqtt.device_quota,
        })
    }
}

/// A listen address, or "none" for no listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenAddress(pub(crate) Option<SocketAddr>);

impl std::str::FromStr for ListenAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("none") {
            return Ok(ListenAddress(None));
        }
        text.parse()
            .map(|address| ListenAddress(Some(address)))
            .map_err(|_| format!("expected host:port (an IP address and a port) or \"none\", got {text:?}"))
    }
}

#[derive(Debug, Args)]
pub(crate) struct GatewayArgs {
    #[command(flatten)]
    pub(crate) connect: ClusterArgs,
    /// The gateway's certificate chain (PEM, leaf first), for --mqtt-tls-listen and
    /// --http-tls-listen.
    #[arg(long, env = "TIDEWATER_TLS_CERT")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TIDEWATER_TLS_KEY")]
    pub(crate) tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) mqtt: MqttArgs,
    #[command(flatten)]
    pub(crate) http: HttpArgs,
    #[command(flatten)]
    pub(crate) admin: crate::admin::AdminArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum LogCommand {
    /// Re-read every segment of one topic-partition directory and check every batch's CRC and
    /// offset continuity. Exits non-zero on corruption, naming the file and byte position.
    Verify {
        /// A topic-partition directory, such as tidewater-data/orders-0.
        dir: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// clap checks a command's flags only when that command is parsed; this checks them all, so a
    /// flag that clashes with the shared cluster flags (`-b`, `-X`, `--client-config`) in any
    /// command fails here rather than when a user runs it.
    #[test]
    fn every_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
