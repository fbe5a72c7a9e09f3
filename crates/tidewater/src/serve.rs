//! `tidewater serve`: the server's lifecycle. It opens the data directory (recovering every
//! log), starts the Kafka listener and a housekeeping timer, and, as Kafka clients of that
//! listener, the trigger, query and capture supervisors and the device gateway's MQTT and HTTP listeners.
//! On Ctrl-C or SIGTERM it stops the gateway, the triggers, the query jobs and the captures (while
//! the broker still answers them), then stops
//! accepting, answers the requests already in flight, and flushes and closes every log.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tidewater_broker::groups::{ConsumerGroupConfig, GroupConfig};
use tidewater_broker::{Broker, BrokerConfig, BrokerHandler};
use tidewater_kafka::ServerConfig;
use tidewater_log::{LogConfig, SystemClock};

use crate::cli::ServeArgs;

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let log_defaults = LogConfig {
        fsync: args.fsync,
        segment_bytes: args.segment_bytes,
        retention_ms: args.retention_ms,
        retention_bytes: args.retention_bytes,
        max_batch_bytes: args.max_batch_bytes,
        ..LogConfig::default()
    };
    log_defaults.validate().context("invalid log settings")?;
    anyhow::ensure!(
        (1..=tidewater_broker::PARTITIONS_PER_TOPIC_MAX).contains(&args.default_partitions),
        "--default-partitions must be between 1 and {}",
        tidewater_broker::PARTITIONS_PER_TOPIC_MAX
    );
    let mqtt_config = args.mqtt.config()?;
    let http_config = args.http.config(&mqtt_config)?;
    // Anonymous MQTT clients without TLS: the plain listener, and the WebSocket one when there
    // is no certificate to make it wss://.
    let plain_websocket = args.mqtt.mqtt_ws_listen.0.filter(|_| args.listeners.tls_cert.is_none());
    let anonymous_mqtt: Vec<(&str, std::net::SocketAddr)> = [
        ("the MQTT listener allowing anonymous clients", args.mqtt.mqtt_listen.0),
        ("the MQTT over WebSockets listener allowing anonymous clients", plain_websocket),
    ]
    .into_iter()
    .filter_map(|(what, address)| Some((what, address?)))
    .filter(|_| args.mqtt.mqtt_allow_anonymous)
    .collect();
    // Bound first, so that with `--kafka-listen HOST:0` the advertised address names the port
    // the kernel chose: clients connect to what Metadata advertises, and port 0 leads nowhere.
    // Connections that arrive during recovery wait in the listen backlog.
    let listeners = crate::listeners::bind(&args.listeners, &anonymous_mqtt)?;
    // The gateway's listeners are bound up front too, so a busy port fails the start, and the
    // running line can name the port the kernel chose for `--mqtt-listen HOST:0`.
    let gateway_sockets = crate::gateway_listen::GatewaySockets::bind(
        &args.mqtt,
        &args.http,
        args.listeners.tls_cert.as_deref(),
        args.listeners.tls_key.as_deref(),
    )?;
    let broker_config = BrokerConfig {
        data_dir: args.data_dir.clone(),
        node_id: args.node_id,
        auto_create_topics: args.auto_create_topics,
        default_partitions: args.default_partitions,
        log_defaults,
        groups: GroupConfig {
            initial_rebalance_delay_ms: args.group_initial_rebalance_delay_ms,
            min_session_timeout_ms: args.group_min_session_timeout_ms,
            consumer: ConsumerGroupConfig {
                session_timeout_ms: args.group_consumer_session_timeout_ms,
                heartbeat_interval_ms: args.group_consumer_heartbeat_interval_ms,
                ..ConsumerGroupConfig::default()
            },
            ..GroupConfig::default()
        },
        offsets_retention_ms: args.offsets_retention_minutes.saturating_mul(60_000),
        authorization: listeners.authorization_config(&args.superusers.concat()),
        fetch_session_slots: args.fetch_session_cache_slots,
    };
    let server_config = ServerConfig {
        max_request_bytes: args.max_request_bytes,
        max_connections: args.max_connections.max(1),
        max_in_flight_per_connection: args.max_in_flight_per_connection.max(1),
        idle_timeout: Duration::from_secs(args.idle_timeout_secs.max(1)),
        send_files: args.kafka_sendfile,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidewater")
        .build()
        .context("starting the async runtime")?;
    let gateway = GatewayListeners { sockets: gateway_sockets, mqtt: mqtt_config, http: http_config };
    runtime.block_on(serve(args, listeners, gateway, broker_config, server_config))
}

/// The device gateway's sockets (no gateway runs without any) and its configuration.
struct GatewayListeners {
    sockets: crate::gateway_listen::GatewaySockets,
    mqtt: tidewater_gateway::MqttConfig,
    http: tidewater_gateway::HttpConfig,
}

async fn serve(
    args: ServeArgs,
    listeners: crate::listeners::Listeners,
    gateway: GatewayListeners,
    broker_config: BrokerConfig,
    server_config: ServerConfig,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    // Installed first: a SIGTERM that arrives during recovery must still shut down cleanly.
    let shutdown = ShutdownSignal::install()?;
    // The admin listener answers from the start, so /health/ready can say that logs are being
    // recovered. With authenticating Kafka listeners, /metrics takes the SCRAM users' passwords,
    // known once the broker is open.
    let admin_users = Arc::new(crate::admin::LateCredentials::default());
    let metrics_token = crate::admin::metrics_token()?;
    let metrics_access = if listeners.authorization {
        tidewater_admin::MetricsAccess::Protected { token: metrics_token, users: Some(admin_users.clone()) }
    } else if metrics_token.is_some() {
        tidewater_admin::MetricsAccess::Protected { token: metrics_token, users: None }
    } else {
        tidewater_admin::MetricsAccess::Open
    };
    // The console's Kafka clients: with authenticating listeners, a request's SCRAM user logs in
    // on the internal listener with its own password (so its ACLs apply); without, they are
    // clients like the embedded components.
    let console = tidewater_console::ConsoleCluster {
        anyone: tidewater_client::ClusterConfig {
            bootstrap_servers: listeners.internal_access.bootstrap.clone(),
            properties: listeners.internal_access.properties.clone(),
            static_member: None,
        },
        users: listeners.authorization.then(|| tidewater_client::ClusterConfig {
            bootstrap_servers: listeners.internal_access.bootstrap.clone(),
            properties: vec![("security.protocol".to_string(), "SASL_PLAINTEXT".to_string())],
            static_member: None,
        }),
    };
    let admin = crate::admin::start(
        &args.admin,
        metrics_access,
        console,
        args.listeners.allow_insecure_listeners,
        "recovering the logs",
    )
    .await?;
    // Opening recovers every log: blocking file I/O, so it runs off the async threads.
    let broker = tokio::task::spawn_blocking(move || Broker::open(broker_config, Arc::new(SystemClock)))
        .await
        .context("recovery task failed")?
        .with_context(|| format!("opening data directory {}", args.data_dir.display()))?;
    let broker = Arc::new(broker);
    admin_users.set(broker.credentials.clone());
    // The partitions' and groups' gauges, read from the broker when scraped, while it lives.
    let broker_metrics: Arc<dyn tidewater_metrics::Collect> = broker.clone();
    tidewater_metrics::global().add_collector(Arc::downgrade(&broker_metrics));
    if let Some((mechanism, credential)) = listeners.internal_access.credential.clone() {
        broker.credentials.set_internal_credential(mechanism, credential);
    }
    create_bootstrap_user(&broker).await?;
    let session_lifetime = (args.listeners.connections_max_reauth_ms > 0)
        .then(|| Duration::from_millis(args.listeners.connections_max_reauth_ms));
    let credentials: Arc<dyn tidewater_security::sasl::CredentialSource> = broker.credentials.clone();
    let mut kafka_listeners = Vec::new();
    let mut kafka_addresses = Vec::new();
    for listener in listeners.external.iter().chain(&listeners.internal) {
        let config = listener.config(credentials.clone(), session_lifetime);
        let socket = listener.socket.try_clone().context("sharing the Kafka listener's socket")?;
        let socket = tokio::net::TcpListener::from_std(socket).context("registering the Kafka listener")?;
        kafka_addresses.push(format!(
            "{}://{}",
            config.info.name,
            socket.local_addr().map(|address| address.to_string()).unwrap_or_default()
        ));
        kafka_listeners.push((socket, config));
    }
    let [mqtt_address, mqtt_tls_address, mqtt_ws_address, http_address, http_tls_address] =
        gateway.sockets.addresses();
    let has_gateway = !gateway.sockets.is_empty();
    let mqtt_listens = crate::gateway_listen::listens(gateway.sockets.mqtt)?;
    let http_listens = crate::gateway_listen::listens(gateway.sockets.http)?;
    // MQTT clients log in as the SCRAM users whose keys this broker holds, checked in process.
    let mqtt_config = tidewater_gateway::MqttConfig {
        users: tidewater_gateway::users::UserCheck::StoredKeys(broker.credentials.clone()),
        ..gateway.mqtt
    };
    let mqtt = (!mqtt_listens.is_empty()).then_some((mqtt_listens, mqtt_config));
    let http = (!http_listens.is_empty()).then_some((http_listens, gateway.http));
    let topics = broker.topics();
    tracing::info!(
        data_dir = %args.data_dir.display(),
        topics = topics.len(),
        partitions = topics.iter().map(|topic| topic.partitions.len()).sum::<usize>(),
        fsync = %args.fsync,
        // The first listener's address as it always was (scripts read it), then every listener.
        kafka = %kafka_addresses.first().and_then(|first| first.split_once("://")).map(|(_, address)| address).unwrap_or_default(),
        listeners = %kafka_addresses.join(","),
        authorization = listeners.authorization,
        mqtt = %mqtt_address,
        mqtt_tls = %mqtt_tls_address,
        mqtt_ws = %mqtt_ws_address,
        http = %http_address,
        http_tls = %http_tls_address,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "data directory recovered; tidewater is running"
    );

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let handler = Arc::new(BrokerHandler::new(broker.clone()));
    let server = tokio::spawn(tidewater_kafka::serve(kafka_listeners, server_config, handler, stopped));
    if let Some(admin) = &admin {
        admin.readiness.set_ready();
    }
    let group_timers = tokio::spawn(group_timers(broker.clone()));
    let housekeeping = tokio::spawn(housekeeping(
        broker.clone(),
        Duration::from_millis(args.housekeeping_interval_ms.max(1)),
    ));
    // Triggers and query jobs are Kafka clients of this very broker, reaching it through a
    // listener (the internal one, with an identity of their own, when the external ones
    // authenticate; see listeners.rs). Each starts once the first `trigger create` / `query
    // create` made its registry topic: a server without them keeps no such clients (and their
    // connections) around. Their group consumers are static members named after this broker,
    // which is all the group ever sees of this process: a serve killed with its broker takes
    // its partitions back as soon as it is up, rather than waiting for the dead members'
    // sessions, which the broker kept across the restart, to time out.
    let own_cluster = tidewater_client::ClusterConfig {
        bootstrap_servers: listeners.internal_access.bootstrap.clone(),
        properties: listeners.internal_access.properties.clone(),
        static_member: Some(format!("tidewater-serve-{}", args.node_id)),
    };
    let triggers = args.triggers.then(|| {
        let cluster = own_cluster.clone();
        Component::spawn("triggers", |stop| {
            run_when_topic_exists(
                broker.clone(),
                tidewater_jobs::trigger::registry::TRIGGERS_TOPIC,
                stop,
                |stop| {
                    let options = tidewater_jobs::trigger::SupervisorOptions {
                        source: tidewater_jobs::trigger::DefinitionSource::Registry,
                        only: Vec::new(),
                        instance: crate::trigger_cmd::default_instance(),
                        timeout: CLIENT_TIMEOUT,
                    };
                    tidewater_jobs::trigger::supervise(cluster, options, stop)
                },
            )
        })
    });
    let queries = args.queries.then(|| {
        let cluster = own_cluster.clone();
        Component::spawn("query jobs", |stop| {
            run_when_topic_exists(
                broker.clone(),
                tidewater_jobs::query::registry::QUERIES_TOPIC,
                stop,
                |stop| {
                    tidewater_jobs::query::supervise_queries(
                        cluster,
                        CLIENT_TIMEOUT,
                        crate::trigger_cmd::default_instance(),
                        stop,
                    )
                },
            )
        })
    });
    let captures = args.captures.then(|| {
        let cluster = own_cluster.clone();
        Component::spawn("captures", |stop| {
            run_when_topic_exists(broker.clone(), tidewater_capture::registry::CAPTURES_TOPIC, stop, |stop| {
                tidewater_capture::supervisor::supervise_captures(
                    cluster,
                    CLIENT_TIMEOUT,
                    crate::trigger_cmd::default_instance(),
                    stop,
                )
            })
        })
    });
    // The gateway is a Kafka client of this broker too: it appends through the listener with an
    // idempotent acks=all producer, exactly as it would against any other cluster.
    let gateway = has_gateway.then(|| {
        let cluster = own_cluster.clone();
        Component::spawn("the gateway", |stop| {
            tidewater_gateway::run(cluster, mqtt, http, CLIENT_TIMEOUT, stop)
        })
    });
    let signal = shutdown.wait().await?;
    tracing::info!(signal, "shutting down");
    if let Some(admin) = &admin {
        admin.readiness.set_not_ready("shutting down");
    }
    // The clients first, while the broker still answers: the gateway's connections send the
    // acknowledgements they owe, triggers commit what they delivered, query jobs commit a last
    // checkpoint.
    for component in [gateway, triggers, queries, captures].into_iter().flatten() {
        component.stop().await;
    }
    let _ = stop.send(true);
    // Long-polling fetches answer now rather than at their deadline.
    broker.begin_shutdown();
    server.await.context("Kafka listener task failed")?;
    housekeeping.abort();
    group_timers.abort();
    let closing = broker.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .context("shutdown task failed")?
        .context("flushing logs at shutdown")?;
    tracing::info!("all logs flushed and closed");
    Ok(())
}

/// The environment variable naming the first user, `name:password` (as Redpanda's
/// RP_BOOTSTRAP_USER): created with SCRAM-SHA-256 and SCRAM-SHA-512 credentials at start if that
/// user has none.
const BOOTSTRAP_USER_VARIABLE: &str = "TIDEWATER_BOOTSTRAP_USER";

/// Creates the bootstrap user if `TIDEWATER_BOOTSTRAP_USER` names one that does not exist yet.
/// The password is never logged.
async fn create_bootstrap_user(broker: &Arc<Broker>) -> anyhow::Result<()> {
    let Some(value) = std::env::var_os(BOOTSTRAP_USER_VARIABLE) else { return Ok(()) };
    let value = value.into_string().map_err(|_| anyhow::anyhow!("{BOOTSTRAP_USER_VARIABLE} is not UTF-8"))?;
    let Some((user, password)) = value.split_once(':') else {
        anyhow::bail!("{BOOTSTRAP_USER_VARIABLE} must be name:password");
    };
    let (user, password) = (user.to_string(), password.to_string());
    let credentials = broker.credentials.clone();
    let created = tokio::task::spawn_blocking(move || {
        credentials.ensure_user(&user, password.as_bytes()).map(|created| (user, created))
    })
    .await
    .context("bootstrap user task failed")?
    .map_err(|error| anyhow::anyhow!("{BOOTSTRAP_USER_VARIABLE}: {error}"))?;
    match created {
        (user, true) => tracing::info!(%user, "created the bootstrap user (SCRAM-SHA-256 and SCRAM-SHA-512)"),
        (user, false) => tracing::debug!(%user, "the bootstrap user exists already"),
    }
    Ok(())
}

/// How long the clients `serve` runs against itself wait for a request to the broker.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long each client component may take to stop at shutdown.
const COMPONENT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `serve` looks for a registry topic before it starts what the registry holds.
const REGISTRY_TOPIC_POLL: Duration = Duration::from_secs(1);

/// A Kafka client `serve` runs against its own listener (the gateway, triggers, query jobs),
/// with the signal that stops it.
struct Component {
    name: &'static str,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Component {
    fn spawn<F, Fut>(name: &'static str, run: F) -> Component
    where
        F: FnOnce(tokio::sync::watch::Receiver<bool>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        Component { name, stop, task: tokio::spawn(run(stopped)) }
    }

    /// Signals the component to stop and waits for it, at most `COMPONENT_STOP_TIMEOUT`.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let name = self.name;
        match tokio::time::timeout(COMPONENT_STOP_TIMEOUT, self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(error = %format!("{error:#}"), "{name} ended with an error"),
            Ok(Err(error)) => tracing::warn!(%error, "the task running {name} failed"),
            Err(_) => tracing::warn!("{name} did not stop within {} s", COMPONENT_STOP_TIMEOUT.as_secs()),
        }
    }
}

/// Waits for `topic` to exist in this broker, then runs `run` until `stop`.
async fn run_when_topic_exists<F, Fut>(
    broker: Arc<Broker>,
    topic: &'static str,
    mut stop: tokio::sync::watch::Receiver<bool>,
    run: F,
) -> anyhow::Result<()>
where
    F: FnOnce(tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    while broker.topic(topic).is_none() {
        tokio::select! {
            _ = tokio::time::sleep(REGISTRY_TOPIC_POLL) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
    run(stop).await
}

/// Rolls old segments, runs interval fsyncs and applies retention, once per `interval`.
async fn housekeeping(broker: Arc<Broker>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let broker = broker.clone();
        if let Err(error) = tokio::task::spawn_blocking(move || broker.tick()).await {
            tracing::error!(%error, "housekeeping task failed");
        }
    }
}

/// How often consumer group timeouts (sessions, join phases) are checked: their granularity.
const GROUP_TIMER_INTERVAL: Duration = Duration::from_millis(100);

/// Drives the consumer group coordinator's clock.
async fn group_timers(broker: Arc<Broker>) {
    let mut ticker = tokio::time::interval(GROUP_TIMER_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let broker = broker.clone();
        // Offset expiry may write to the offsets log, so this runs off the async threads.
        if let Err(error) = tokio::task::spawn_blocking(move || broker.tick_groups()).await {
            tracing::error!(%error, "group timer task failed");
        }
    }
}

/// Ctrl-C (SIGINT) and SIGTERM, caught from the moment `install` returns.
pub(crate) struct ShutdownSignal {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    pub(crate) fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignal {
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Waits for either signal and says which arrived.
    pub(crate) async fn wait(mut self) -> anyhow::Result<&'static str> {
        tokio::select! {
            _ = self.interrupt.recv() => Ok("SIGINT"),
            _ = self.terminate.recv() => Ok("SIGTERM"),
        }
    }
}
