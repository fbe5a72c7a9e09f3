//! `tidewater gateway`: a device gateway as its own process, in front of any Kafka-compatible
//! cluster. The same gateway runs inside `tidewater serve`; this is for running it elsewhere
//! or several times over one cluster (each instance follows the device registry).

use std::time::Duration;

use anyhow::Context;

use crate::cli::GatewayArgs;

/// How long a stopping gateway may take before the process exits anyway.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let config = args.mqtt.config()?;
    let address = args.mqtt.mqtt_listen.0.context("`tidewater gateway` needs an --mqtt-listen address")?;
    let cluster = crate::trigger_cmd::cluster_config(&args.connect);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidewater-gateway")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = crate::serve::ShutdownSignal::install()?;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding the MQTT listener to {address}"))?;
        let bound = listener.local_addr().context("reading the MQTT listener's address")?;
        tracing::info!(brokers = %cluster.bootstrap_servers, mqtt = %bound, "tidewater gateway is running");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let gateway =
            tokio::spawn(tidewater_gateway::run(cluster, listener, config, args.connect.timeout(), stopped));
        tokio::pin!(gateway);
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
