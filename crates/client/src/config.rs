//! Where a Kafka-compatible cluster is and how to talk to it: [`ClusterConfig`], and the one path
//! from user input to it, [`ClusterArgs`] (the `--brokers`, `--timeout-ms`, `--client-config`
//! and `-X` flags of every command and role).
//!
//! A client's librdkafka settings come from three places, later ones winning:
//!
//! 1. the client's built-in settings (a producer's `acks`, a consumer's `group.id`);
//! 2. the client config file (`--client-config FILE`): a Java-style properties file, as kcat's
//!    `-F` and the Kafka tools' `--command-config` read it ([`parse_properties`]);
//! 3. `-X key=value`, like kcat's.
//!
//! That is where TLS and SASL settings go (`security.protocol`, `sasl.mechanism`,
//! `sasl.username`, `sasl.password`, `ssl.ca.location`), so every command and role takes them
//! the same way. The bootstrap servers are `--brokers` (or `TIDEWATER_BROKERS`), else the file's
//! `bootstrap.servers`, else `127.0.0.1:9092`; a `-X bootstrap.servers` wins over all of them.
//! Every property is offered to librdkafka when the configuration is built, so a misspelt key is
//! an error naming the file and line (or `-X`) before any client exists.
//!
//! Secrets never leave through this module: the value of a property whose key names a password
//! or a secret ([`is_secret`]) prints as `(redacted)` in `Debug` output and is never part of an
//! error, and a malformed line of the file is reported by its number, not its text.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

use crate::logging::QuietContext;

/// The bootstrap servers when neither a flag, the environment nor the client config file names
/// any: a `tidewater serve` on this machine.
pub const DEFAULT_BOOTSTRAP_SERVERS: &str = "127.0.0.1:9092";
/// The largest client config file read. Real ones are a few hundred bytes; this bounds what a
/// wrong path (a log file, a device) can cost.
pub const CLIENT_CONFIG_BYTES_MAX: u64 = 1024 * 1024;
/// Parts of a property key that mark its value as secret (compared in lower case): librdkafka's
/// `sasl.password`, `ssl.key.password`, `ssl.keystore.password`, `sasl.oauthbearer.client.secret`,
/// `sasl.jaas.config` (Java clients' properties files carry it), the PEM private key and the
/// OAUTHBEARER config string, which may hold credentials.
const SECRET_KEY_PARTS: [&str; 5] =
    ["password", "secret", "sasl.jaas", "ssl.key.pem", "sasl.oauthbearer.config"];
/// What a secret value prints as.
const REDACTED: &str = "(redacted)";
/// The keys that name the bootstrap servers (librdkafka takes both).
const BOOTSTRAP_KEYS: [&str; 2] = ["bootstrap.servers", "metadata.broker.list"];
/// The compression of every client writing a table: none (see
/// `ClusterConfig::table_client_config`).
const TABLE_COMPRESSION: &str = "none";
/// A key librdkafka resolves only after loading plugins, so properties are not checked one by
/// one when it is present.
const PLUGIN_KEY: &str = "plugin.library.paths";

/// Whether `key` names a secret, whose value is never printed.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEY_PARTS.iter().any(|part| key.contains(part))
}

/// librdkafka takes timeouts as a C `int` of milliseconds.
pub fn timeout_ms_for_librdkafka(timeout: Duration) -> i32 {
    i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX)
}

/// A `KEY=VALUE` argument, split at the first `=`; the value may be empty, the key may not.
/// `Debug` hides the value of a secret key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

impl std::fmt::Debug for KeyValue {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value", &shown_value(&self.key, &self.value))
            .finish()
    }
}

impl std::str::FromStr for KeyValue {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                Ok(KeyValue { key: key.to_string(), value: value.to_string() })
            }
            // Only the key is shown: what follows it may be a secret.
            Some(_) => Err("expected KEY=VALUE, got an empty key".to_string()),
            None if is_secret(text) => Err("expected KEY=VALUE, got no '='".to_string()),
            None => Err(format!("expected KEY=VALUE, got {text:?}")),
        }
    }
}

/// What Tidewater's consumers of streams set before their own settings
/// ([`ClusterConfig::consumer_config`]).
///
/// `fetch.queue.backoff.ms`: librdkafka stops fetching a partition whose local queue holds
/// `queued.min.messages` records (100,000), and looks again only after this backoff, 1 s by
/// default. A consumer that gets through 100,000 small records in less than a second then sits
/// idle for the rest of it. Measured on a release build: `tidewater bench consume` of 64-byte
/// records read 0.3 million records/s with the default and 2.0 million with 10 ms, and a query
/// job over 1,000,000 JSON readings finished in 3.6-5.5 s instead of 9.0-10.0 s, its CPU time the
/// same. Records of 1 KiB fill the queue's byte bound first and did not show it.
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[("fetch.queue.backoff.ms", "10")];

/// Bootstrap servers plus the user's librdkafka properties, applied to every client Tidewater
/// creates for this cluster (security settings, timeouts) after the client's own settings.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub bootstrap_servers: String,
    /// In the order they apply: the client config file's, then `-X`'s.
    pub properties: Vec<(String, String)>,
    /// A name for this process that stays the same across its restarts, set where one exists
    /// (`tidewater serve`: one per broker). With it, the runners' group consumers join as static
    /// members (KIP-345, see [`ClusterConfig::group_consumer_config`]).
    pub static_member: Option<String>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: Vec<(&str, &str)> =
            self.properties.iter().map(|(key, value)| (key.as_str(), shown_value(key, value))).collect();
        formatter
            .debug_struct("ClusterConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &properties)
            .field("static_member", &self.static_member)
            .finish()
    }
}

impl ClusterConfig {
    /// A cluster at `bootstrap_servers` with no properties of the user's (what `tidewater serve`
    /// gives its embedded components).
    pub fn new(bootstrap_servers: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            bootstrap_servers: bootstrap_servers.into(),
            properties: Vec::new(),
            static_member: None,
        }
    }

    /// [`ClusterConfig::client_config`] for a consumer that joins a group, the only one of its
    /// group in this process.
    ///
    /// With a [`static_member`](ClusterConfig::static_member) name it joins as a static member
    /// (`group.instance.id`). Why: group membership outlives a broker restart, so a process
    /// killed together with its broker would otherwise come back as a new member beside its
    /// dead self, and the group would not rebalance until the dead member's session timed out
    /// (45 s by default). A static member coming back takes its old place and its partitions at
    /// once. The cost, as in Kafka: a static member that stops for good (a trigger paused or
    /// deleted) holds its partitions until its session times out, since it does not leave the
    /// group when it closes.
    pub fn group_consumer_config(&self, settings: &[(&str, &str)]) -> ClientConfig {
        let mut all = settings.to_vec();
        if let Some(name) = &self.static_member {
            all.push(("group.instance.id", name));
        }
        self.consumer_config(&all)
    }

    /// [`ClusterConfig::client_config`] for a consumer that reads streams: the
    /// [`CONSUMER_DEFAULTS`] first, then `settings`, then the user's properties.
    pub fn consumer_config(&self, settings: &[(&str, &str)]) -> ClientConfig {
        let mut all = CONSUMER_DEFAULTS.to_vec();
        all.extend_from_slice(settings);
        self.client_config(&all)
    }

    /// librdkafka configuration: the bootstrap servers, then `settings` (the client's own), then
    /// the user's properties, which win.
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

    /// [`ClusterConfig::client_config`] for a client that writes compacted topics (Tidewater's
    /// tables): compression is off whatever the user's properties say, because a broker may
    /// refuse compressed batches on a compacted topic (Tidewater's does: it reads keys without
    /// decompressing). librdkafka applies one compression to everything a producer writes, so a
    /// producer writing a table and other topics in one transaction writes them all
    /// uncompressed.
    pub fn table_client_config(&self, settings: &[(&str, &str)]) -> ClientConfig {
        let mut config = self.client_config(settings);
        // Both names set one librdkafka property; which of two would win is not defined.
        config.remove("compression.codec");
        config.set("compression.type", TABLE_COMPRESSION);
        config
    }

    /// An idempotent producer whose sends complete only once every in-sync replica has the
    /// record: what dead-letter and command records need before their source offset is
    /// committed, and what the gateway appends with.
    pub fn reliable_producer(
        &self,
        client_id: &str,
    ) -> rdkafka::error::KafkaResult<FutureProducer<QuietContext>> {
        self.client_config(&reliable_settings(client_id)).create_with_context(QuietContext::default())
    }

    /// [`ClusterConfig::reliable_producer`] for compacted topics (Tidewater's tables): never
    /// compresses (see [`ClusterConfig::table_client_config`]).
    pub fn table_producer(
        &self,
        client_id: &str,
    ) -> rdkafka::error::KafkaResult<FutureProducer<QuietContext>> {
        self.table_client_config(&reliable_settings(client_id)).create_with_context(QuietContext::default())
    }
}

/// The settings of a reliable producer (idempotent, acks=all).
fn reliable_settings(client_id: &str) -> [(&str, &str); 5] {
    [
        ("client.id", client_id),
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("linger.ms", "1"),
        ("message.timeout.ms", "30000"),
    ]
}

/// Where every command and role finds its Kafka-compatible cluster; flatten it into a command's
/// arguments. [`ClusterArgs::cluster_config`] is the one way from these flags to a
/// [`ClusterConfig`].
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Bootstrap brokers, host:port[,host:port...] (Kafka bootstrap.servers). Any
    /// Kafka-compatible cluster works, not only Tidewater. Default: the client config file's
    /// bootstrap.servers, else 127.0.0.1:9092.
    #[arg(long, short = 'b', env = "TIDEWATER_BROKERS", global = true, value_name = "HOST:PORT[,...]")]
    pub brokers: Option<String>,
    /// Milliseconds to wait for the cluster: metadata and admin requests, and for `produce`
    /// the delivery of each record (librdkafka message.timeout.ms).
    #[arg(long, default_value_t = 30_000, global = true)]
    pub timeout_ms: u64,
    /// A file of librdkafka client properties, KEY=VALUE per line, # or ! starting a comment (a
    /// Java properties file, like kcat -F or the Kafka tools' --command-config): the place for
    /// TLS and SASL settings. -X properties win over it.
    #[arg(long, env = "TIDEWATER_CLIENT_CONFIG", global = true, value_name = "FILE")]
    pub client_config: Option<PathBuf>,
    /// A librdkafka client property (see librdkafka's CONFIGURATION.md), like kcat's -X; may be
    /// repeated. Applied last, so it overrides the other flags and the client config file.
    #[arg(short = 'X', long = "property", value_name = "KEY=VALUE", global = true)]
    pub properties: Vec<KeyValue>,
}

impl ClusterArgs {
    /// Flags for the cluster at `brokers`, with nothing else set (as if only `--brokers` was
    /// given).
    pub fn for_brokers(brokers: impl Into<String>) -> ClusterArgs {
        ClusterArgs {
            brokers: Some(brokers.into()),
            timeout_ms: 30_000,
            client_config: None,
            properties: Vec::new(),
        }
    }

    /// How long to wait for the cluster (at least a millisecond).
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    /// The cluster these flags describe: reads the client config file, checks every property
    /// with librdkafka, and resolves the bootstrap servers (see the module documentation).
    pub fn cluster_config(&self) -> Result<ClusterConfig, ConfigError> {
        let mut properties = Vec::new();
        let mut file_bootstrap = None;
        if let Some(path) = &self.client_config {
            let text = read_client_config(path)?;
            let parsed = parse_properties(&text).map_err(|error| ConfigError::Malformed {
                path: path.display().to_string(),
                line_number: error.line_number,
                problem: error.problem,
            })?;
            for property in parsed {
                let origin = || format!("{} line {}", path.display(), property.line_number);
                let KeyValue { key, value } = property.entry;
                if BOOTSTRAP_KEYS.contains(&key.as_str()) {
                    // Flags win over the file, so the file's servers are only a default.
                    check_non_empty(&value, origin)?;
                    file_bootstrap = Some(value);
                } else {
                    properties.push((key, value, origin()));
                }
            }
        }
        for property in &self.properties {
            properties.push((property.key.clone(), property.value.clone(), "-X".to_string()));
        }
        check_with_librdkafka(&properties)?;
        let bootstrap_servers =
            self.brokers.clone().or(file_bootstrap).unwrap_or_else(|| DEFAULT_BOOTSTRAP_SERVERS.to_string());
        Ok(ClusterConfig {
            bootstrap_servers,
            properties: properties.into_iter().map(|(key, value, _)| (key, value)).collect(),
            static_member: None,
        })
    }
}

/// Why the flags do not make a cluster configuration. No variant carries a property's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading the client config file {path}: {error}")]
    Unreadable { path: String, error: std::io::Error },
    #[error("the client config file {path} is larger than {CLIENT_CONFIG_BYTES_MAX} bytes")]
    TooLarge { path: String },
    #[error("{path} line {line_number}: {problem}")]
    Malformed { path: String, line_number: usize, problem: String },
    /// `origin` is `FILE line N` or `-X`.
    #[error("{origin}: {key}: {reason}")]
    Refused { origin: String, key: String, reason: String },
}

/// One `key=value` line of a properties file (its `Debug` hides a secret value, as
/// [`KeyValue`]'s does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// 1-based, for errors.
    pub line_number: usize,
    pub entry: KeyValue,
}

/// Why a properties file does not parse: the line and what is wrong with it, never its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertiesError {
    pub line_number: usize,
    pub problem: String,
}

/// Parses a client config file: one `key=value` per line, split at the first `=`, key and value
/// trimmed of surrounding white space (the value may be empty and may contain `=`); blank lines
/// and lines starting with `#` or `!` (after white space) are comments. There are no escapes or
/// continuation lines: a value is the rest of its line, as librdkafka properties need. A later
/// line wins over an earlier one with the same key, as `-X` does.
pub fn parse_properties(text: &str) -> Result<Vec<Property>, PropertiesError> {
    let mut properties = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let problem = |problem: &str| PropertiesError { line_number, problem: problem.to_string() };
        let Some((key, value)) = line.split_once('=') else {
            return Err(problem("expected KEY=VALUE, found no '='"));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(problem("expected KEY=VALUE, found no key before '='"));
        }
        let entry = KeyValue { key: key.to_string(), value: value.trim().to_string() };
        properties.push(Property { line_number, entry });
    }
    Ok(properties)
}

fn read_client_config(path: &Path) -> Result<String, ConfigError> {
    let unreadable = |error| ConfigError::Unreadable { path: path.display().to_string(), error };
    let length = std::fs::metadata(path).map_err(unreadable)?.len();
    if length > CLIENT_CONFIG_BYTES_MAX {
        return Err(ConfigError::TooLarge { path: path.display().to_string() });
    }
    std::fs::read_to_string(path).map_err(unreadable)
}

fn check_non_empty(servers: &str, origin: impl Fn() -> String) -> Result<(), ConfigError> {
    if servers.is_empty() {
        return Err(ConfigError::Refused {
            origin: origin(),
            key: "bootstrap.servers".to_string(),
            reason: "no servers given".to_string(),
        });
    }
    Ok(())
}

/// Offers each property to librdkafka on its own, so a misspelt key or a bad value is reported
/// with where it came from rather than when the first client is created. librdkafka's reason
/// may quote the value; for a secret it is cut out.
fn check_with_librdkafka(properties: &[(String, String, String)]) -> Result<(), ConfigError> {
    if properties.iter().any(|(key, _, _)| key == PLUGIN_KEY) {
        // Plugins add properties of their own once loaded; librdkafka checks them all when the
        // first client is created.
        return Ok(());
    }
    for (key, value, origin) in properties {
        let mut config = ClientConfig::new();
        config.set(key, value);
        if let Err(error) = config.create_native_config() {
            let reason = match error {
                rdkafka::error::KafkaError::ClientConfig(_, description, _, _) => description,
                other => other.to_string(),
            };
            let reason =
                if is_secret(key) && !value.is_empty() { reason.replace(value, REDACTED) } else { reason };
            return Err(ConfigError::Refused { origin: origin.clone(), key: key.clone(), reason });
        }
    }
    Ok(())
}

fn shown_value<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret(key) {
        REDACTED
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text` and renders the result as `key=value` pairs separated by `; ` (each with its
    /// line number), or `error: line N: problem`.
    fn check(text: &str, expected: &str) {
        let rendered = match parse_properties(text) {
            Ok(properties) => properties
                .iter()
                .map(|property| {
                    format!("{}:{}={}", property.line_number, property.entry.key, property.entry.value)
                })
                .collect::<Vec<_>>()
                .join("; "),
            Err(error) => format!("error: line {}: {}", error.line_number, error.problem),
        };
        assert_eq!(rendered, expected, "{text:?}");
    }

    #[test]
    fn properties_files_parse_as_kafka_tools_write_them() {
        check("", "");
        check("security.protocol=SASL_SSL\n", "1:security.protocol=SASL_SSL");
        check(
            "# a comment\n\n  ! another\nsasl.mechanism = SCRAM-SHA-256\r\nsasl.username=alice",
            "4:sasl.mechanism=SCRAM-SHA-256; 5:sasl.username=alice",
        );
        // The value is everything after the first '=', trimmed; it may be empty.
        check("sasl.password=a=b=c \nclient.id=\n", "1:sasl.password=a=b=c; 2:client.id=");
        check("   \t  \n#x=y\n", "");
        // A '#' inside a value is part of it.
        check("ssl.ca.location=/etc/ca#1.pem", "1:ssl.ca.location=/etc/ca#1.pem");
        // Repeats are kept in order; the later one wins when applied.
        check("acks=1\nacks=all", "1:acks=1; 2:acks=all");
        check("a=1\nsasl.password hunter2\n", "error: line 2: expected KEY=VALUE, found no '='");
        check("=value", "error: line 1: expected KEY=VALUE, found no key before '='");
    }

    #[test]
    fn key_value_arguments_split_at_the_first_equals_sign() {
        let parse = |text: &str| text.parse::<KeyValue>().map(|kv| format!("{}={}", kv.key, kv.value));
        assert_eq!(parse("linger.ms=5"), Ok("linger.ms=5".to_string()));
        assert_eq!(parse("a=b=c"), Ok("a=b=c".to_string()));
        assert_eq!(parse("empty="), Ok("empty=".to_string()));
        assert_eq!(parse("retention.ms"), Err("expected KEY=VALUE, got \"retention.ms\"".to_string()));
        assert_eq!(parse("=x"), Err("expected KEY=VALUE, got an empty key".to_string()));
        assert_eq!(parse("sasl.passwordhunter2"), Err("expected KEY=VALUE, got no '='".to_string()));
    }

    #[test]
    fn secrets_are_redacted_from_debug_output() {
        let cluster = ClusterConfig {
            bootstrap_servers: "broker:9093".to_string(),
            properties: vec![
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
                ("sasl.username".to_string(), "alice".to_string()),
                ("sasl.password".to_string(), "hunter2".to_string()),
                ("SSL.KEY.PASSWORD".to_string(), "hunter3".to_string()),
                ("sasl.oauthbearer.client.secret".to_string(), "hunter4".to_string()),
                ("sasl.jaas.config".to_string(), "password=\"hunter5\"".to_string()),
            ],
            static_member: None,
        };
        let shown = format!("{cluster:?}");
        for secret in ["hunter2", "hunter3", "hunter4", "hunter5"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("\"sasl.username\", \"alice\""), "{shown}");
        assert!(shown.contains("\"sasl.password\", \"(redacted)\""), "{shown}");
        let argument: KeyValue =
            "sasl.password=hunter2".parse().unwrap_or(KeyValue { key: String::new(), value: String::new() });
        assert_eq!(format!("{argument:?}"), "KeyValue { key: \"sasl.password\", value: \"(redacted)\" }");
    }

    /// Regression guard: a user's `compression.type` (or its alias `compression.codec`) reached
    /// the clients writing compacted tables, whose compressed batches Tidewater refuses.
    #[test]
    fn table_clients_never_compress_whatever_the_user_set() {
        for (key, value) in [("compression.type", "lz4"), ("compression.codec", "zstd")] {
            let cluster = ClusterConfig {
                bootstrap_servers: "kafka:9092".to_string(),
                properties: vec![
                    (key.to_string(), value.to_string()),
                    ("linger.ms".to_string(), "7".to_string()),
                ],
                static_member: None,
            };
            let table = cluster.table_client_config(&[("client.id", "t")]);
            assert_eq!(table.get("compression.type"), Some("none"), "{key}");
            assert_eq!(table.get("compression.codec"), None, "{key}");
            assert_eq!(table.get("linger.ms"), Some("7"), "other properties still apply");
            assert_eq!(cluster.client_config(&[]).get(key), Some(value), "other clients keep it");
            assert!(cluster.table_producer("t").is_ok());
        }
    }

    #[test]
    fn consumers_take_the_consumer_defaults_and_the_user_still_wins() {
        let mut cluster = ClusterConfig::new("kafka:9092");
        assert_eq!(cluster.consumer_config(&[]).get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(cluster.group_consumer_config(&[]).get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(
            cluster.client_config(&[]).get("fetch.queue.backoff.ms"),
            None,
            "producers do not take it"
        );
        cluster.properties.push(("fetch.queue.backoff.ms".to_string(), "250".to_string()));
        assert_eq!(cluster.consumer_config(&[]).get("fetch.queue.backoff.ms"), Some("250"));
    }

    #[test]
    fn group_consumers_are_static_members_only_where_the_process_has_a_lasting_name() {
        let mut cluster = ClusterConfig::new("kafka:9092");
        let settings = [("group.id", "g"), ("client.id", "c")];
        assert_eq!(cluster.group_consumer_config(&settings).get("group.instance.id"), None);
        cluster.static_member = Some("tidewater-serve-3".to_string());
        let config = cluster.group_consumer_config(&settings);
        assert_eq!(config.get("group.instance.id"), Some("tidewater-serve-3"));
        assert_eq!(config.get("group.id"), Some("g"));
        assert_eq!(
            cluster.client_config(&settings).get("group.instance.id"),
            None,
            "other clients stay dynamic"
        );
    }

    /// Flags as the CLI would parse them, with a client config file holding `file`.
    fn cluster_from(
        file: Option<&str>,
        brokers: Option<&str>,
        properties: &[&str],
    ) -> Result<ClusterConfig, String> {
        let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
        let path = dir.path().join("client.properties");
        if let Some(text) = file {
            std::fs::write(&path, text).map_err(|error| error.to_string())?;
        }
        let args = ClusterArgs {
            brokers: brokers.map(str::to_string),
            timeout_ms: 1000,
            client_config: file.map(|_| path.clone()),
            properties: properties.iter().map(|text| text.parse()).collect::<Result<_, _>>()?,
        };
        args.cluster_config().map_err(|error| error.to_string().replace(&path.display().to_string(), "FILE"))
    }

    #[test]
    fn flags_then_file_then_defaults_give_the_cluster() {
        let sasl_ssl = "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-256\nsasl.username=alice\n\
                        sasl.password=hunter2\nbootstrap.servers=kafka-1:9093\n";
        let cluster = cluster_from(Some(sasl_ssl), None, &["sasl.mechanism=SCRAM-SHA-512"]);
        assert_eq!(
            cluster,
            Ok(ClusterConfig {
                bootstrap_servers: "kafka-1:9093".to_string(),
                properties: [
                    ("security.protocol", "SASL_SSL"),
                    ("sasl.mechanism", "SCRAM-SHA-256"),
                    ("sasl.username", "alice"),
                    ("sasl.password", "hunter2"),
                    ("sasl.mechanism", "SCRAM-SHA-512"),
                ]
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .to_vec(),
                static_member: None,
            })
        );
        // -X is applied after the file, so its value is the one librdkafka keeps.
        let config = cluster.map(|cluster| cluster.client_config(&[("sasl.mechanism", "PLAIN")]));
        assert_eq!(
            config.as_ref().ok().and_then(|config| config.get("sasl.mechanism")),
            Some("SCRAM-SHA-512")
        );
        // --brokers wins over the file's servers; with neither, the local default.
        assert_eq!(
            cluster_from(Some(sasl_ssl), Some("other:9092"), &[]).map(|cluster| cluster.bootstrap_servers),
            Ok("other:9092".to_string())
        );
        assert_eq!(
            cluster_from(None, None, &[]).map(|cluster| cluster.bootstrap_servers),
            Ok(DEFAULT_BOOTSTRAP_SERVERS.to_string())
        );
    }

    #[test]
    fn a_bad_file_or_property_is_an_error_naming_where_it_is_without_its_value() {
        assert_eq!(
            cluster_from(Some("acks=all\nsasl.password hunter2\n"), None, &[]),
            Err("FILE line 2: expected KEY=VALUE, found no '='".to_string())
        );
        let unknown = cluster_from(Some("# tls\nsasl.pasword=hunter2\n"), None, &[]);
        assert!(
            unknown.as_ref().is_err_and(|error| error.starts_with("FILE line 2: sasl.pasword: ")
                && error.contains("No such configuration property")
                && !error.contains("hunter2")),
            "{unknown:?}"
        );
        let invalid = cluster_from(None, None, &["security.protocol=SASL_TLS"]);
        assert!(
            invalid.as_ref().is_err_and(|error| error.starts_with("-X: security.protocol: ")),
            "{invalid:?}"
        );
        let missing = ClusterArgs {
            client_config: Some(PathBuf::from("/nonexistent/client.properties")),
            ..ClusterArgs::for_brokers("localhost:9092")
        }
        .cluster_config()
        .map_err(|error| error.to_string());
        assert!(
            missing
                .as_ref()
                .is_err_and(|error| error
                    .starts_with("reading the client config file /nonexistent/client.properties: ")),
            "{missing:?}"
        );
    }

    #[test]
    fn librdkafka_is_built_with_tls_and_sasl() {
        // `ssl-vendored` (OpenSSL built from source) gives librdkafka TLS and SCRAM; a build
        // without it would leave every SASL_SSL cluster unreachable.
        let features = ClientConfig::new()
            .create_native_config()
            .and_then(|config| config.get("builtin.features"))
            .unwrap_or_default();
        let features: Vec<&str> = features.split(',').collect();
        for wanted in ["ssl", "sasl_plain", "sasl_scram", "zstd", "lz4"] {
            assert!(features.contains(&wanted), "librdkafka lacks {wanted}: {features:?}");
        }
        let (version, name) = rdkafka::util::get_rdkafka_version();
        assert!(version >= 0x020c_0000, "librdkafka {name} is older than 2.12");
    }
}
