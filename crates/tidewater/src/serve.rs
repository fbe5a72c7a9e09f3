//! `tidewater serve`: the server's lifecycle. It opens the data directory (recovering every
//! log), runs housekeeping on a timer, and on Ctrl-C or SIGTERM flushes and closes every log
//! before exiting. The Kafka listener joins here in the broker issue.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tidewater_log::{LogConfig, LogDir, SystemClock};

use crate::cli::ServeArgs;

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let log_config = LogConfig {
        fsync: args.fsync,
        segment_bytes: args.segment_bytes,
        retention_ms: args.retention_ms,
        retention_bytes: args.retention_bytes,
        ..LogConfig::default()
    };
    log_config.validate().context("invalid log settings")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidewater")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args, log_config))
}

async fn serve(args: ServeArgs, log_config: LogConfig) -> anyhow::Result<()> {
    let data_dir = args.data_dir.clone();
    let started = std::time::Instant::now();
    // Opening recovers every log: blocking file I/O, so it runs off the async threads.
    let logs = tokio::task::spawn_blocking(move || {
        LogDir::open(&data_dir, Arc::new(SystemClock), |_| log_config.clone())
    })
    .await
    .context("recovery task failed")?
    .with_context(|| format!("opening data directory {}", args.data_dir.display()))?;
    let logs = Arc::new(logs);
    let partitions = logs.logs();
    let bytes: u64 = partitions.iter().map(|(_, log)| log.size_bytes()).sum();
    tracing::info!(
        data_dir = %args.data_dir.display(),
        partitions = partitions.len(),
        bytes,
        fsync = %args.fsync,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "data directory recovered; tidewater is running"
    );

    let housekeeping = tokio::spawn(housekeeping(logs.clone(), Duration::from_millis(args.housekeeping_interval_ms.max(1))));
    let signal = shutdown_signal().await?;
    tracing::info!(signal, "shutting down");
    housekeeping.abort();
    let closing = logs.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .context("shutdown task failed")?
        .context("flushing logs at shutdown")?;
    tracing::info!("all logs flushed and closed");
    Ok(())
}

/// Rolls old segments, runs interval fsyncs and applies retention, once per `interval`.
async fn housekeeping(logs: Arc<LogDir>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let logs = logs.clone();
        let failures = tokio::task::spawn_blocking(move || logs.tick()).await.unwrap_or_default();
        for (topic_partition, error) in failures {
            tracing::error!(%topic_partition, %error, "housekeeping failed");
        }
    }
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM and says which arrived.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => {
            result.context("waiting for Ctrl-C")?;
            Ok("SIGINT")
        }
        _ = terminate.recv() => Ok("SIGTERM"),
    }
}
