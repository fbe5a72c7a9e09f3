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
    let http_config = args.http.config(&mqtt_config.telemetry_topic)?;
    let (mqtt_address, http_address) = (args.mqtt.mqtt_listen.0, args.http.http_listen.0);
    anyhow::ensure!(
        mqtt_address.is_some() || http_address.is_some(),
        "`tidewater gateway` needs an --mqtt-listen or --http-listen address"
    );
    let cluster = args.connect.cluster_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidewater-gateway")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = crate::serve::ShutdownSignal::install()?;
        let admin = crate::admin::start_for_client_role(&args.admin, &cluster).await?;
        let mqtt = match mqtt_address {
            None => None,
            Some(address) => Some((bind(address, "MQTT").await?, mqtt_config)),
        };
        let http = match http_address {
            None => None,
            Some(address) => Some((bind(address, "HTTP").await?, http_config)),
        };
        let address_of = |listener: Option<&tokio::net::TcpListener>| match listener {
            Some(listener) => listener.local_addr().map(|address| address.to_string()).unwrap_or_default(),
            None => "none".to_string(),
        };
        let (mqtt_bound, http_bound) = (
            address_of(mqtt.as_ref().map(|(listener, _)| listener)),
            address_of(http.as_ref().map(|(listener, _)| listener)),
        );
        tracing::info!(
            brokers = %cluster.bootstrap_servers,
            mqtt = %mqtt_bound,
            http = %http_bound,
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

async fn bind(address: std::net::SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the {what} listener to {address}"))
}
