//! `tidewater gateway`: a device gateway as its own process, in front of any Kafka-compatible
//! cluster. The same gateway runs inside `tidewater serve`; this is for running it elsewhere
//! or several times over one cluster (each instance follows the device registry).

use std::time::Duration;

use anyhow::Context;

use crate::cli::GatewayArgs;

/// How long a stopping gateway may take before the process exits anyway.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let mqtt_config = args.mqtt.config()?;
    let http_config = args.http.config(&mqtt_config)?;
    let sockets = crate::gateway_listen::GatewaySockets::bind(
        &args.mqtt,
        &args.http,
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
    )?;
    anyhow::ensure!(
        !sockets.is_empty(),
        "`tidewater gateway` needs an --mqtt-listen, --mqtt-tls-listen, --mqtt-ws-listen, --http-listen or --http-tls-listen address"
    );
    let cluster = args.connect.cluster_config()?;
    // MQTT clients log in as SCRAM users by logging in to the cluster with their credentials.
    let mqtt_config = tidewater_gateway::MqttConfig {
        users: tidewater_gateway::users::UserCheck::for_cluster(&cluster),
        ..mqtt_config
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidewater-gateway")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = crate::serve::ShutdownSignal::install()?;
        let admin = crate::admin::start_for_client_role(&args.admin, &cluster).await?;
        let [mqtt_bound, mqtt_tls_bound, mqtt_ws_bound, http_bound, http_tls_bound] = sockets.addresses();
        let mqtt_listens = crate::gateway_listen::listens(sockets.mqtt)?;
        let http_listens = crate::gateway_listen::listens(sockets.http)?;
        let mqtt = (!mqtt_listens.is_empty()).then_some((mqtt_listens, mqtt_config));
        let http = (!http_listens.is_empty()).then_some((http_listens, http_config));
        tracing::info!(
            brokers = %cluster.bootstrap_servers,
            mqtt = %mqtt_bound,
            mqtt_tls = %mqtt_tls_bound,
            mqtt_ws = %mqtt_ws_bound,
            http = %http_bound,
            http_tls = %http_tls_bound,
            "tidewater gateway is running"
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let gateway =
            tokio::spawn(tidewater_gateway::run(cluster, mqtt, http, args.connect.timeout(), stopped));
        tokio::pin!(gateway);
        crate::admin::AdminListener::set_ready(&admin);
        tokio::select! {
            result = &mut gateway => return result.context("the gateway task failed")?,
            signal = shutdown.wait() => tracing::info!(signal = signal?, "stopping the gateway"),
        }
        let _ = stop.send(true);
        tokio::time::timeout(STOP_TIMEOUT, gateway)
            .await
            .context("the gateway did not stop in time")?
            .context("the gateway task failed")?
    })
}
