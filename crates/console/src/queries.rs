//! The query jobs page's routes: `GET /api/queries` (the jobs registry, read as a Kafka table,
//! with each job's counters from this process's registry when it runs here), `POST
//! /api/queries/test` `{"sql": ..., "events": "JSON lines"}` (the query run over sample events
//! with no cluster, exactly as `tidewater query test` runs a file) and `POST /api/queries`
//! `{"name": ..., "sql": ...}` (registers the job, as `tidewater query create` does, refusing a
//! name that exists).

use std::collections::HashMap;

use tidewater_client::ClusterConfig;
use tidewater_jobs::query::{QueryDefinition, QueryRegistry};

use crate::api::{blocking, ApiError, KAFKA_TIMEOUT};
use crate::overview::Sample;

/// The most result lines a test answers with; the rest are counted, not sent.
const TEST_RESULTS_MAX: usize = 1_000;

fn unavailable(error: anyhow::Error) -> ApiError {
    ApiError::unavailable(format!("{error:#}"))
}

pub(crate) async fn list(
    client: std::sync::Arc<crate::clients::ConsoleClient>,
    cluster: ClusterConfig,
    samples: Vec<Sample>,
) -> Result<serde_json::Value, ApiError> {
    let registry = QueryRegistry::new(cluster, KAFKA_TIMEOUT);
    let jobs = blocking(move || {
        // No registry topic yet (the first `query create` makes it), or none this user may
        // describe: no jobs to show, rather than a read that fails.
        match crate::topics::partitions_of(&client, tidewater_jobs::query::registry::QUERIES_TOPIC) {
            Err(error) if error.status == 404 => return Ok(Default::default()),
            Err(error) => return Err(error),
            Ok(_) => {}
        }
        registry.load().map_err(unavailable)
    })
    .await?;
    let now_ms = tidewater_client::now_ms();
    let mut figures: HashMap<(String, &'static str), f64> = HashMap::new();
    for sample in &samples {
        let name = match sample.name.as_str() {
            "tidewater_query_events_total" => "events_total",
            "tidewater_query_late_events_total" => "late_events_total",
            "tidewater_query_watermark_lag_seconds" => "watermark_lag_seconds",
            "tidewater_query_failures_total" => "failures_total",
            _ => continue,
        };
        if let Some(job) = sample.label("job") {
            figures.insert((job.to_string(), name), sample.value);
        }
    }
    let jobs: Vec<serde_json::Value> = jobs
        .values()
        .map(|job| {
            let figure = |name: &'static str| figures.get(&(job.name.clone(), name)).copied();
            let lag = figure("watermark_lag_seconds");
            // The watermark as a time: the gauge is now minus it, so it is read back the same way.
            let watermark_ms = lag.map(|lag| now_ms - (lag * 1000.0).round() as i64);
            let failure = tidewater_jobs::query::last_failure(&job.name);
            serde_json::json!({
                "name": job.name,
                "sql": job.sql,
                "state": if job.stopped { "stopped" } else { "running" },
                "parallel": job.parallel,
                "events_total": figure("events_total"),
                "late_events_total": figure("late_events_total"),
                "watermark_lag_seconds": lag,
                "watermark_ms": watermark_ms,
                // Jobs this process runs have a failures series once they failed; 0 otherwise.
                "failures_total": figure("failures_total").or(figure("events_total").map(|_| 0.0)),
                "last_error": failure.as_ref().map(|failure| failure.message.clone()),
                "last_error_at_ms": failure.map(|failure| failure.at_ms),
            })
        })
        .collect();
    Ok(serde_json::json!({ "jobs": jobs }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    sql: String,
    /// JSON Lines, in `tidewater query test`'s input format.
    events: String,
}

pub(crate) async fn test(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    let TestRequest { sql, events } = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!(
            "malformed JSON body ({error}); expected {{\"sql\": ..., \"events\": ...}}"
        ))
    })?;
    blocking(move || {
        let mut job = match tidewater_sql::compile(&sql, tidewater_sql::JobOptions::default()) {
            Ok(job) => job,
            Err(diagnostics) => {
                let problems: Vec<String> = diagnostics
                    .iter()
                    .map(|diagnostic| {
                        format!("{}:{}: {}", diagnostic.line, diagnostic.column, diagnostic.message)
                    })
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "the query does not compile: {}",
                    problems.join("; ")
                )));
            }
        };
        let mut results = tidewater_sql::local::run(&mut job, &events, |_, _| Ok(()))
            .map_err(|error| ApiError::bad_request(format!("events: {error}")))?;
        let total = results.len();
        results.truncate(TEST_RESULTS_MAX);
        Ok(serde_json::json!({ "results": results, "results_total": total }))
    })
    .await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    sql: String,
}

pub(crate) async fn create(cluster: ClusterConfig, body: &[u8]) -> Result<serde_json::Value, ApiError> {
    let CreateRequest { name, sql } = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!(
            "malformed JSON body ({error}); expected {{\"name\": ..., \"sql\": ...}}"
        ))
    })?;
    // The registry's own defaults for everything else, as `query create` without flags.
    let definition: QueryDefinition = serde_json::from_value(serde_json::json!({ "name": name, "sql": sql }))
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    definition.validate().map_err(ApiError::bad_request)?;
    let registry = QueryRegistry::new(cluster, KAFKA_TIMEOUT);
    registry.ensure_topic().await.map_err(unavailable)?;
    let reader = registry.clone();
    let exists = blocking(move || reader.load().map_err(unavailable)).await?.contains_key(&definition.name);
    if exists {
        return Err(ApiError {
            status: 409,
            reason: format!("a query job named {:?} exists", definition.name),
        });
    }
    registry.put(&definition).await.map_err(unavailable)?;
    Ok(serde_json::json!({ "created": definition.name }))
}
