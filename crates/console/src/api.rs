//! The console's routes: the assets, and the JSON API under `/api/`.
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/overview` | totals from the metrics registry and whether the cluster answers |
//! | `GET /api/topics` | topics the principal may describe: partitions, watermarks, log sizes |
//! | `GET /api/topics/{topic}/messages?partition=&offset=&count=` (or `&timestamp=` in ms) | records with key, headers and value |
//! | `POST /api/topics/{topic}/search` `{"key": "...", "limit": n}` | the newest records with that key |
//! | `GET /api/groups` | consumer groups: state, members, assignments, committed offsets, lag |
//! | `GET /api/devices` | the gateway's registered devices with whether each is connected, since when, last seen and messages sent; how many are connected now |
//! | `POST /api/devices/{id}/disabled` `{"disabled": true}` | disables or enables a device |
//! | `POST /api/devices/{id}/command` `{"payload": ...}` | sends a command to a device |
//! | `GET /api/queries` | registered query jobs, with their counters when they run here |
//! | `POST /api/queries/test` `{"sql": ..., "events": ...}` | the query run over sample events |
//! | `POST /api/queries` `{"name": ..., "sql": ...}` | registers a query job |
//! | `GET /api/triggers` | registered triggers, counters when they run here, dead-letter topics |
//! | `POST /api/triggers/{name}/replay` `{"partition": P, "offset": O}` | a dead letter sent back |
//!
//! Every input is bounded and checked before a Kafka request is made; a bad one gets a 4xx with
//! `{"error": reason}`, never a panic. Kafka's blocking calls run on tokio's blocking threads.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidewater_admin::{Console, ConsoleFuture, ConsoleRequest, ConsoleResponse, Principal};
use tidewater_client::ClusterConfig;

use crate::clients::{Clients, ConsoleClient};

/// How long one Kafka request of the API may take.
pub(crate) const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);
const JSON: &str = "application/json";

/// Where the console's Kafka clients connect, by who is asking.
#[derive(Debug, Clone)]
pub struct ConsoleCluster {
    /// For a request let in without a user (an open listener, or the metrics token): the role's
    /// own cluster configuration.
    pub anyone: ClusterConfig,
    /// For a SCRAM user: a listener that takes SASL/SCRAM, with `security.protocol` set; the
    /// user's mechanism, name and password are added. `None` when no listener authenticates.
    pub users: Option<ClusterConfig>,
}

/// A refusal of the API: an HTTP status and the reason, sent as `{"error": reason}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub reason: String,
}

impl ApiError {
    pub(crate) fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError { status: 400, reason: reason.into() }
    }
    pub(crate) fn not_found(reason: impl Into<String>) -> ApiError {
        ApiError { status: 404, reason: reason.into() }
    }
    pub(crate) fn unavailable(reason: impl Into<String>) -> ApiError {
        ApiError { status: 503, reason: reason.into() }
    }
}

/// The console: implements the admin listener's hook.
#[derive(Debug)]
pub struct ConsoleApi {
    cluster: ConsoleCluster,
    clients: Clients,
    registry: &'static tidewater_metrics::Registry,
}

impl ConsoleApi {
    pub fn new(cluster: ConsoleCluster, registry: &'static tidewater_metrics::Registry) -> Arc<ConsoleApi> {
        Arc::new(ConsoleApi { cluster, clients: Clients::default(), registry })
    }

    fn client(&self, principal: &Principal) -> Result<Arc<ConsoleClient>, ApiError> {
        self.clients.get(&self.cluster, principal)
    }

    async fn route(self: Arc<Self>, request: ConsoleRequest) -> Result<ConsoleResponse, ApiError> {
        let path = request.path.as_str();
        if !path.starts_with("/api/") {
            if request.method == "POST" {
                return Err(ApiError { status: 405, reason: format!("{path} only takes GET") });
            }
            return match crate::assets::asset(path) {
                Some(asset) => Ok(ConsoleResponse {
                    status: 200,
                    content_type: asset.content_type,
                    body: Bytes::from_static(asset.body.as_bytes()),
                }),
                None => Err(ApiError::not_found(format!("no such page or asset: {path}"))),
            };
        }
        let segments: Vec<&str> = path["/api/".len()..].split('/').collect();
        let method = request.method.as_str();
        let value = match (method, segments.as_slice()) {
            ("GET" | "HEAD", ["overview"]) => {
                let client = self.client(&request.principal)?;
                crate::overview::overview(self.registry, client).await
            }
            ("GET" | "HEAD", ["topics"]) => {
                let client = self.client(&request.principal)?;
                crate::topics::list(self.registry, client).await?
            }
            ("GET" | "HEAD", ["topics", topic, "messages"]) => {
                let query = crate::messages::BrowseQuery::parse(&request.query)?;
                let topic = decode_segment(topic)?;
                let client = self.client(&request.principal)?;
                let cluster = crate::clients::cluster_for(&self.cluster, &request.principal)?;
                crate::messages::browse(client, cluster, topic, query).await?
            }
            ("POST", ["topics", topic, "search"]) => {
                let search = crate::messages::KeySearch::parse(&request.body)?;
                let topic = decode_segment(topic)?;
                let client = self.client(&request.principal)?;
                let cluster = crate::clients::cluster_for(&self.cluster, &request.principal)?;
                crate::messages::search(client, cluster, topic, search).await?
            }
            ("GET" | "HEAD", ["groups"]) => {
                let client = self.client(&request.principal)?;
                crate::groups::list(client).await?
            }
            ("GET" | "HEAD", ["devices"]) => {
                let cluster = crate::clients::cluster_for(&self.cluster, &request.principal)?;
                let connected_now = crate::overview::samples(&self.registry.render())
                    .into_iter()
                    .find(|sample| sample.name == "tidewater_devices_connected")
                    .map(|sample| sample.value);
                crate::devices::list(cluster, connected_now).await?
            }
            ("POST", ["devices", id, "disabled"]) => {
                let id = decode_segment(id)?;
                let cluster = crate::clients::cluster_for(&self.cluster, &request.principal)?;
                crate::devices::set_disabled(cluster, id, &request.body).await?
            }
            ("POST", ["devices", id, "command"]) => {
                let id = decode_segment(id)?;
                let cluster = crate::clients::cluster_for(&self.cluster, &request.principal)?;
                crate::devices::send_command(cluster, id, &request.body).await?
            }
            ("GET" | "HEAD", ["queries"]) => {
                let client = self.client(&request.principal)?;
                let cluster = crate::clients::cluster_for(&self.cluster, &request.principal)?;
                crate::queries::list(client, cluster, crate::overview::samples(&self.registry.render()))
                    .await?
            }
            ("POST", ["queries", "test"]) => {
                // Nothing of the cluster is read, but only someone let in to the console may run it.
                crate::clients::cluster_for(&self.cluster, &request.principal)?;
                crate::queries::test(&request.body).await?
            }
            ("POST", ["queries"]) => {
                let cluster = crate::clients::cluster_for(&self.cluster, &request.principal)?;
                crate::queries::create(cluster, &request.body).await?
            }
            ("GET" | "HEAD", ["triggers"]) => {
                let client = self.client(&request.principal)?;
                let cluster = crate::clients::cluster_for(&self.cluster, &request.principal)?;
                crate::triggers::list(client, cluster, crate::overview::samples(&self.registry.render()))
                    .await?
            }
            ("POST", ["triggers", name, "replay"]) => {
                let name = decode_segment(name)?;
                let client = self.client(&request.principal)?;
                let cluster = crate::clients::cluster_for(&self.cluster, &request.principal)?;
                crate::triggers::replay(client, cluster, name, &request.body).await?
            }
            (
                _,
                ["overview" | "topics" | "groups" | "devices" | "queries" | "triggers"]
                | ["triggers", _, "replay"]
                | ["queries", "test"]
                | ["topics", _, "messages" | "search"]
                | ["devices", _, "disabled" | "command"],
            ) => return Err(ApiError { status: 405, reason: format!("{path} does not take {method}") }),
            _ => return Err(ApiError::not_found(format!("no such API route: {path}"))),
        };
        Ok(json(200, &value))
    }
}

/// A path segment with its `%XX` escapes decoded (topic names may hold `.`, `_` and `-`, which
/// browsers leave alone, but a client may escape anything).
fn decode_segment(segment: &str) -> Result<String, ApiError> {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes
                .get(index + 1..index + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| ApiError::bad_request(format!("malformed escape in {segment:?}")))?;
            decoded.push(hex);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| ApiError::bad_request(format!("{segment:?} is not UTF-8")))
}

fn json(status: u16, value: &serde_json::Value) -> ConsoleResponse {
    let body = serde_json::to_vec(value).unwrap_or_default();
    ConsoleResponse { status, content_type: JSON, body: Bytes::from(body) }
}

impl Console for ConsoleApi {
    fn handle(&self, request: ConsoleRequest) -> ConsoleFuture {
        // The hook takes `&self`; the routes run on a clone of the parts they need.
        let api = Arc::new(ConsoleApi {
            cluster: self.cluster.clone(),
            clients: self.clients.clone(),
            registry: self.registry,
        });
        Box::pin(async move {
            match api.route(request).await {
                Ok(response) => response,
                Err(error) => json(error.status, &serde_json::json!({ "error": error.reason })),
            }
        })
    }
}

/// Runs a blocking Kafka call on tokio's blocking threads.
pub(crate) async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|error| ApiError { status: 500, reason: format!("the request's task failed: {error}") })?
}

#[cfg(test)]
mod tests {
    use super::decode_segment;

    #[test]
    fn segments_are_unescaped() {
        assert_eq!(decode_segment("a%2Eb").expect("accepted"), "a.b");
        assert_eq!(decode_segment("plain-name_1").expect("accepted"), "plain-name_1");
        assert_eq!(decode_segment("bad%zz").expect_err("refused").status, 400);
        assert_eq!(decode_segment("cut%2").expect_err("refused").status, 400);
    }
}
