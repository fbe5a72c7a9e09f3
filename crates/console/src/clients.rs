//! One librdkafka client per principal, created on its first request and kept for the next
//! ones (the overview page polls every second or two). Which cluster and identity a principal
//! gets is [`ConsoleCluster`]'s: a SCRAM user logs in with its own name and password, so the
//! broker applies that user's ACLs to everything the console asks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rdkafka::consumer::BaseConsumer;
use tidewater_admin::Principal;
use tidewater_client::{ClusterConfig, QuietContext};

use crate::api::{ApiError, ConsoleCluster};

/// The most principals whose clients are kept at once; beyond that the cache starts over. A
/// console is used by a few people, each holding one client (a few connections).
const CLIENTS_KEPT_MAX: usize = 16;

pub(crate) type ConsoleClient = BaseConsumer<QuietContext>;

/// The kept clients, by principal. The lock is held only to look up or insert, never across a
/// Kafka request, and no hot path of the broker takes it.
#[derive(Default, Clone)]
pub(crate) struct Clients {
    by_principal: Arc<Mutex<HashMap<String, Arc<ConsoleClient>>>>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Clients")
    }
}

/// The cluster configuration a principal's clients use.
pub(crate) fn cluster_for(
    cluster: &ConsoleCluster,
    principal: &Principal,
) -> Result<ClusterConfig, ApiError> {
    match (principal, &cluster.users) {
        (Principal::User { name, password, mechanism }, Some(users)) => {
            let mut config = users.clone();
            config.properties.push(("sasl.mechanism".to_string(), mechanism.to_string()));
            config.properties.push(("sasl.username".to_string(), name.clone()));
            config.properties.push(("sasl.password".to_string(), password.clone()));
            Ok(config)
        }
        // With authenticating listeners the role's own identity is a superuser's: the metrics
        // token does not open it.
        (Principal::Anyone | Principal::TokenBearer, Some(_)) => Err(ApiError {
            status: 401,
            reason: "the console needs a SCRAM user's name and password (HTTP Basic), not the metrics token"
                .to_string(),
        }),
        (Principal::User { .. }, None) | (Principal::Anyone | Principal::TokenBearer, None) => {
            Ok(cluster.anyone.clone())
        }
    }
}

impl Clients {
    /// The client of `principal`, created if it has none yet.
    pub(crate) fn get(
        &self,
        cluster: &ConsoleCluster,
        principal: &Principal,
    ) -> Result<Arc<ConsoleClient>, ApiError> {
        let key = match principal {
            Principal::User { name, password, .. } => format!("user\0{name}\0{password}"),
            Principal::Anyone | Principal::TokenBearer => String::new(),
        };
        let mut by_principal = self.by_principal.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = by_principal.get(&key) {
            return Ok(client.clone());
        }
        let client: ConsoleClient = cluster_for(cluster, principal)?
            .client_config(&[("client.id", "tidewater-console"), ("enable.auto.commit", "false")])
            .create_with_context(QuietContext::default())
            .map_err(|error| ApiError::unavailable(format!("creating a Kafka client: {error}")))?;
        if by_principal.len() >= CLIENTS_KEPT_MAX {
            by_principal.clear();
        }
        let client = Arc::new(client);
        by_principal.insert(key, client.clone());
        Ok(client)
    }
}
