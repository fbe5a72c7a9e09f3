//! `Authorizer`: the broker's ACL bindings (durable, replaced whole on each change), its
//! superusers and whether authorization is on; and `Access`, what one request may do.
//!
//! The hot path (produce, fetch) pays one read lock per request, to clone the `Arc` of the
//! current index into the request's `Access`, then a few hash lookups per topic. Changes
//! (CreateAcls, DeleteAcls) are serialised by the store's mutex, made durable, and only then
//! swapped in, so a request sees either all of a change or none of it, and the next request
//! after the acknowledgement sees it.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use tidewater_kafka::ResponseError;
use tidewater_log::{Clock, LogError};
use tidewater_security::KafkaPrincipal;

use super::index::AclIndex;
use super::is_internal_topic;
use super::model::{AclBinding, AclBindingFilter, Coded, Operation, ResourceType, CLUSTER_NAME};
use super::store::AclStore;
use crate::broker::ApiError;
use crate::error::BrokerError;

/// The most ACL bindings the broker holds. Each decision costs the same however many there
/// are, but each change rebuilds the index and DescribeAcls may list them all.
pub const ACL_BINDINGS_MAX: usize = 100_000;

/// Whether and how requests are authorized.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizationConfig {
    /// Authorize every request against the ACLs. Off (the default while no listener
    /// authenticates, since every client is then `User:ANONYMOUS`), everything is allowed.
    pub enabled: bool,
    /// Principals that bypass the ACLs and may use the internal topics (Kafka's `super.users`);
    /// the components embedded in `tidewater serve` run as one.
    pub superusers: Vec<KafkaPrincipal>,
}

/// Why an ACL change was not made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AclChangeError {
    #[error("at most {ACL_BINDINGS_MAX} ACLs may exist; this change would make {0}")]
    TooMany(usize),
    #[error("could not store the ACL change: {0}")]
    Storage(#[from] LogError),
}

impl AclChangeError {
    pub(crate) fn code(&self) -> ResponseError {
        match self {
            AclChangeError::TooMany(_) => ResponseError::PolicyViolation,
            AclChangeError::Storage(_) => ResponseError::KafkaStorageError,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Authorizer {
    enabled: bool,
    superusers: HashSet<KafkaPrincipal>,
    acls: RwLock<Arc<AclIndex>>,
    /// Held while a change is written and swapped in, so changes apply one at a time.
    store: Mutex<AclStore>,
}

impl Authorizer {
    /// Opens the ACL journal under `data_dir` and replays it.
    pub(crate) fn open(
        config: &AuthorizationConfig,
        data_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<Authorizer, BrokerError> {
        let (store, bindings) = AclStore::open(data_dir, clock)?;
        if !bindings.is_empty() {
            tracing::info!(acls = bindings.len(), enabled = config.enabled, "loaded ACLs");
        }
        Ok(Authorizer {
            enabled: config.enabled,
            superusers: config.superusers.iter().cloned().collect(),
            acls: RwLock::new(Arc::new(AclIndex::new(bindings))),
            store: Mutex::new(store),
        })
    }

    /// What a request from `principal` at `peer` may do, as the ACLs stand now.
    pub(crate) fn access(&self, principal: Arc<KafkaPrincipal>, peer: IpAddr) -> Access {
        let grant = if !self.enabled {
            Grant::Everything
        } else if self.superusers.contains(&*principal) {
            Grant::Superuser
        } else {
            Grant::Acls(self.snapshot())
        };
        Access { grant, principal, peer }
    }

    /// Adds `bindings` (those that exist already are left as they are), durably.
    pub(crate) fn create(&self, bindings: &[AclBinding], now_ms: i64) -> Result<(), AclChangeError> {
        let store = self.lock_store();
        let current = self.snapshot();
        let added: Vec<AclBinding> = bindings
            .iter()
            .filter(|binding| !current.bindings().contains(*binding))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if added.is_empty() {
            return Ok(());
        }
        let count = current.bindings().len() + added.len();
        if count > ACL_BINDINGS_MAX {
            return Err(AclChangeError::TooMany(count));
        }
        store.write(now_ms, &added, &[])?;
        let mut next = current.bindings().clone();
        next.extend(added.iter().cloned());
        self.swap(next);
        for binding in &added {
            tracing::info!(acl = %Shown(binding), "created ACL");
        }
        Ok(())
    }

    /// Deletes every binding any of `filters` matches, durably; returns what each filter
    /// matched (a binding two filters match is reported under both, as by Kafka).
    pub(crate) fn delete(
        &self,
        filters: &[AclBindingFilter],
        now_ms: i64,
    ) -> Result<Vec<Vec<AclBinding>>, AclChangeError> {
        let store = self.lock_store();
        let current = self.snapshot();
        let matched: Vec<Vec<AclBinding>> =
            filters.iter().map(|filter| current.matching(filter).cloned().collect()).collect();
        let removed: BTreeSet<AclBinding> = matched.iter().flatten().cloned().collect();
        if removed.is_empty() {
            return Ok(matched);
        }
        let removed: Vec<AclBinding> = removed.into_iter().collect();
        store.write(now_ms, &[], &removed)?;
        let mut next = current.bindings().clone();
        for binding in &removed {
            next.remove(binding);
            tracing::info!(acl = %Shown(binding), "deleted ACL");
        }
        self.swap(next);
        Ok(matched)
    }

    /// The bindings `filter` matches, in order.
    pub(crate) fn describe(&self, filter: &AclBindingFilter) -> Vec<AclBinding> {
        self.snapshot().matching(filter).cloned().collect()
    }

    pub(crate) fn close(&self) -> Result<(), LogError> {
        self.lock_store().close()
    }

    fn snapshot(&self) -> Arc<AclIndex> {
        self.acls.read().expect("ACL index lock poisoned by a panic").clone()
    }

    fn swap(&self, bindings: BTreeSet<AclBinding>) {
        let index = Arc::new(AclIndex::new(bindings));
        *self.acls.write().expect("ACL index lock poisoned by a panic") = index;
    }

    fn lock_store(&self) -> std::sync::MutexGuard<'_, AclStore> {
        self.store.lock().expect("ACL store mutex poisoned by a panic")
    }
}

/// Why a request may do what it does.
#[derive(Debug, Clone)]
enum Grant {
    /// Authorization is off.
    Everything,
    /// The principal is a superuser.
    Superuser,
    /// The bindings decide; the internal topics are closed.
    Acls(Arc<AclIndex>),
}

/// What one request may do: its principal, its host and the ACLs as they stood when it
/// arrived. Cheap to clone (two `Arc`s).
#[derive(Debug, Clone)]
pub(crate) struct Access {
    grant: Grant,
    principal: Arc<KafkaPrincipal>,
    peer: IpAddr,
}

impl Access {
    /// Whether the request may do `operation` on the resource. Internal topics are open to
    /// superusers only, whatever the bindings say.
    pub(crate) fn allows(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        match &self.grant {
            Grant::Everything | Grant::Superuser => true,
            Grant::Acls(index) => {
                self.opens(resource_type, name)
                    && index.permits(&self.principal, self.peer, operation, resource_type, name)
            }
        }
    }

    /// `allows` on the cluster.
    pub(crate) fn allows_cluster(&self, operation: Operation) -> bool {
        self.allows(operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Whether the request may do `operation` on at least one resource of the type (an
    /// idempotent producer that may WRITE some topic).
    pub(crate) fn allows_some(&self, operation: Operation, resource_type: ResourceType) -> bool {
        match &self.grant {
            Grant::Everything | Grant::Superuser => true,
            Grant::Acls(index) => {
                index.permits_some(&self.principal, self.peer, operation, resource_type, |pattern| {
                    // A prefix inside the internal namespace covers internal topics only.
                    resource_type == ResourceType::Topic && is_internal_topic(&pattern.name)
                })
            }
        }
    }

    /// Whether the request may create the topic: CREATE on the cluster or on the topic
    /// (CreateTopics, and auto-creation by Metadata and Produce).
    pub(crate) fn may_create_topic(&self, name: &str) -> bool {
        self.opens(ResourceType::Topic, name)
            && (self.allows_cluster(Operation::Create)
                || self.allows(Operation::Create, ResourceType::Topic, name))
    }

    /// `allows`, or the refusal a client gets for it (logged).
    pub(crate) fn check(
        &self,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Result<(), ApiError> {
        if self.allows(operation, resource_type, name) {
            return Ok(());
        }
        Err(self.refusal(operation, resource_type, name))
    }

    /// `check` on the cluster.
    pub(crate) fn check_cluster(&self, operation: Operation) -> Result<(), ApiError> {
        self.check(operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// The error for a refused action, with the error code Kafka uses for the resource type.
    /// Logged, as Kafka's authorizer logs a refusal of something a client asked for.
    pub(crate) fn refusal(&self, operation: Operation, resource_type: ResourceType, name: &str) -> ApiError {
        let principal = &self.principal;
        tracing::info!(target: "tidewater::authorizer", %principal, host = %self.peer, %operation, %resource_type, resource = name, "denied");
        let reason = if self.opens(resource_type, name) {
            "no ACL allows it"
        } else {
            "internal topics are for superusers only"
        };
        ApiError::new(
            authorization_failed(resource_type),
            format!("{principal} may not {operation} {resource_type} {name}: {reason}"),
        )
    }

    /// The operations the request may do on the resource, as the bit field (bit = operation
    /// code) Metadata, DescribeGroups and DescribeCluster report when asked.
    pub(crate) fn authorized_operations(&self, resource_type: ResourceType, name: &str) -> i32 {
        resource_type
            .operations()
            .iter()
            .filter(|operation| self.allows(**operation, resource_type, name))
            .fold(0, |bits, operation| bits | 1 << operation.code())
    }

    /// Whether the ACLs decide for this request (authorization is on and its principal is no
    /// superuser).
    pub(crate) fn bound_by_acls(&self) -> bool {
        matches!(self.grant, Grant::Acls(_))
    }

    /// Whether the bindings may open the resource at all: the internal topics only open to
    /// superusers (and to everyone while authorization is off).
    fn opens(&self, resource_type: ResourceType, name: &str) -> bool {
        !(self.bound_by_acls() && resource_type == ResourceType::Topic && is_internal_topic(name))
    }
}

/// Kafka's error code for a refusal on a resource of the type.
pub(crate) fn authorization_failed(resource_type: ResourceType) -> ResponseError {
    match resource_type {
        ResourceType::Topic => ResponseError::TopicAuthorizationFailed,
        ResourceType::Group => ResponseError::GroupAuthorizationFailed,
        ResourceType::Cluster => ResponseError::ClusterAuthorizationFailed,
        ResourceType::TransactionalId => ResponseError::TransactionalIdAuthorizationFailed,
    }
}

/// A binding for the log.
struct Shown<'a>(&'a AclBinding);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let AclBinding { pattern, entry } = self.0;
        write!(
            formatter,
            "{} {} on {}:{}:{} for {}@{}",
            entry.permission,
            entry.operation,
            pattern.resource_type,
            pattern.pattern_type,
            pattern.name,
            entry.principal,
            entry.host
        )
    }
}
