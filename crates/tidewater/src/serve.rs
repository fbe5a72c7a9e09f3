//! `tidewater serve`: the server's lifecycle. It opens the data directory (recovering every
//! log), starts the Kafka listener and a housekeeping timer, and, as Kafka clients of that
//! listener, the trigger supervisor and the device gateway's MQTT listener. On Ctrl-C or SIGTERM
//! it stops the gateway and the triggers (while the broker still answers them), then stops
//! accepting, answers the requests already in flight, and flushes and closes every log.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tidewater_broker::groups::GroupConfig;
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
    // Bound first, so that with `--kafka-listen HOST:0` the advertised address names the port
    // the kernel chose: clients connect to what Metadata advertises, and port 0 leads nowhere.
    // Connections that arrive during recovery wait in the listen backlog.
    let listener = std::net::TcpListener::bind(args.kafka_listen)
        .with_context(|| format!("binding the Kafka listener to {}", args.kafka_listen))?;
    listener.set_nonblocking(true).context("making the Kafka listener non-blocking")?;
    let bound = listener.local_addr().context("reading the Kafka listener's address")?;
    let advertised = args.kafka_advertised.clone().unwrap_or_else(|| bound.to_string());
    // The MQTT listener is bound up front too, so a busy port fails the start, and the running
    // line can name the port the kernel chose for `--mqtt-listen HOST:0`.
    let mqtt_listener = match args.mqtt.mqtt_listen.0 {
        None => None,
        Some(address) => {
            let listener = std::net::TcpListener::bind(address).with_context(|| {
                format!("binding the MQTT listener to {address} (--mqtt-listen none turns it off)")
            })?;
            listener.set_nonblocking(true).context("making the MQTT listener non-blocking")?;
            Some(listener)
        }
    };
    let (advertised_host, advertised_port) = advertised
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host.trim_matches(['[', ']']).to_string(), port.parse::<u16>().ok()?)))
        .with_context(|| format!("--kafka-advertised {advertised:?} is not host:port"))?;
    let broker_config = BrokerConfig {
        data_dir: args.data_dir.clone(),
        node_id: args.node_id,
        advertised_host,
        advertised_port,
        auto_create_topics: args.auto_create_topics,
        default_partitions: args.default_partitions,
        log_defaults,
        groups: GroupConfig {
            initial_rebalance_delay_ms: args.group_initial_rebalance_delay_ms,
            min_session_timeout_ms: args.group_min_session_timeout_ms,
            ..GroupConfig::default()
        },
        offsets_retention_ms: args.offsets_retention_minutes.saturating_mul(60_000),
    };
    let server_config = ServerConfig {
        max_request_bytes: args.max_request_bytes,
        max_connections: args.max_connections.max(1),
        max_in_flight_per_connection: args.max_in_flight_per_connection.max(1),
        idle_timeout: Duration::from_secs(args.idle_timeout_secs.max(1)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidewater")
        .build()
        .context("starting the async runtime")?;
    let gateway = mqtt_listener.map(|listener| (listener, mqtt_config));
    runtime.block_on(serve(args, listener, gateway, broker_config, server_config))
}

async fn serve(
    args: ServeArgs,
    listener: std::net::TcpListener,
    gateway: Option<(std::net::TcpListener, tidewater_gateway::MqttConfig)>,
    broker_config: BrokerConfig,
    server_config: ServerConfig,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    // Installed first: a SIGTERM that arrives during recovery must still shut down cleanly.
    let shutdown = ShutdownSignal::install()?;
    // Opening recovers every log: blocking file I/O, so it runs off the async threads.
    let broker = tokio::task::spawn_blocking(move || Broker::open(broker_config, Arc::new(SystemClock)))
        .await
        .context("recovery task failed")?
        .with_context(|| format!("opening data directory {}", args.data_dir.display()))?;
    let broker = Arc::new(broker);
    let listener = tokio::net::TcpListener::from_std(listener).context("registering the Kafka listener")?;
    let gateway = match gateway {
        None => None,
        Some((listener, config)) => Some((
            tokio::net::TcpListener::from_std(listener).context("registering the MQTT listener")?,
            config,
        )),
    };
    let mqtt_address = match &gateway {
        Some((listener, _)) => listener.local_addr().map(|address| address.to_string()).unwrap_or_default(),
        None => "none".to_string(),
    };
    let topics = broker.topics();
    tracing::info!(
        data_dir = %args.data_dir.display(),
        topics = topics.len(),
        partitions = topics.iter().map(|topic| topic.partitions.len()).sum::<usize>(),
        fsync = %args.fsync,
        kafka = %listener.local_addr().map(|address| address.to_string()).unwrap_or_default(),
        mqtt = %mqtt_address,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "data directory recovered; tidewater is running"
    );

    let listener_address = listener.local_addr().context("reading the Kafka listener's address")?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let handler = Arc::new(BrokerHandler::new(broker.clone()));
    let server = tokio::spawn(tidewater_kafka::serve(listener, server_config, handler, stopped));
    let group_timers = tokio::spawn(group_timers(broker.clone()));
    let housekeeping = tokio::spawn(housekeeping(
        broker.clone(),
        Duration::from_millis(args.housekeeping_interval_ms.max(1)),
    ));
    // Triggers are Kafka clients of this very broker, reaching it through the listener. They start
    // once the first `trigger create` made the triggers topic: a server without triggers keeps
    // no trigger clients (and their connections) around.
    let (stop_triggers, triggers_stopped) = tokio::sync::watch::channel(false);
    let mut own_address = listener_address;
    if own_address.ip().is_unspecified() {
        own_address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let triggers = args
        .triggers
        .then(|| tokio::spawn(run_triggers(broker.clone(), own_address.to_string(), triggers_stopped)));
    // The gateway is a Kafka client of this broker too: it appends through the listener with an
    // idempotent acks=all producer, exactly as it would against any other cluster.
    let (stop_gateway, gateway_stopped) = tokio::sync::watch::channel(false);
    let gateway = gateway.map(|(listener, config)| {
        let cluster = tidewater_jobs::ClusterConfig::new(own_address.to_string());
        tokio::spawn(tidewater_gateway::run(
            cluster,
            listener,
            config,
            Duration::from_secs(30),
            gateway_stopped,
        ))
    });
    let signal = shutdown.wait().await?;
    tracing::info!(signal, "shutting down");
    // The gateway first: its connections send the acknowledgements they owe while the broker
    // still answers.
    let _ = stop_gateway.send(true);
    if let Some(gateway) = gateway {
        match tokio::time::timeout(Duration::from_secs(30), gateway).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                tracing::warn!(error = %format!("{error:#}"), "the gateway ended with an error")
            }
            Ok(Err(error)) => tracing::warn!(%error, "the gateway task failed"),
            Err(_) => tracing::warn!("the gateway did not stop within 30 s"),
        }
    }
    // Triggers first, while the broker still answers, so they commit what they delivered.
    let _ = stop_triggers.send(true);
    if let Some(triggers) = triggers {
        match tokio::time::timeout(Duration::from_secs(30), triggers).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                tracing::warn!(error = %format!("{error:#}"), "triggers ended with an error")
            }
            Ok(Err(error)) => tracing::warn!(%error, "the trigger task failed"),
            Err(_) => tracing::warn!("triggers did not stop within 30 s"),
        }
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

/// How often `serve` looks for the triggers topic before it starts running triggers.
const TRIGGERS_TOPIC_POLL: Duration = Duration::from_secs(1);

/// Waits for the triggers topic to exist, then runs the trigger supervisor against `bootstrap`
/// until `stop`.
async fn run_triggers(
    broker: Arc<Broker>,
    bootstrap: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use tidewater_jobs::trigger::registry::TRIGGERS_TOPIC;
    while broker.topic(TRIGGERS_TOPIC).is_none() {
        tokio::select! {
            _ = tokio::time::sleep(TRIGGERS_TOPIC_POLL) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
    let options = tidewater_jobs::trigger::SupervisorOptions {
        source: tidewater_jobs::trigger::DefinitionSource::Registry,
        only: Vec::new(),
        instance: crate::trigger_cmd::default_instance(),
        timeout: Duration::from_secs(30),
    };
    tidewater_jobs::trigger::supervise(tidewater_jobs::ClusterConfig::new(bootstrap), options, stop).await
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
