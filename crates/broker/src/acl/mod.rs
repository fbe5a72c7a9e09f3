//! Access control lists: Kafka's authorization model, so Kafka's tools manage it and Kafka's
//! clients understand its refusals.
//!
//! - `model.rs`: the vocabulary (resource types, pattern types, operations, permissions), an
//!   ACL binding, and the filters DescribeAcls and DeleteAcls take, decoded from their wire
//!   codes with the reason for every refusal. Pure.
//! - `index.rs`: `AclIndex`, an immutable set of bindings indexed by resource, and the decision
//!   for one action, exactly as Kafka's `StandardAuthorizer` makes it. Pure.
//! - `store.rs`: the bindings, durable, in an internal journal at `<data-dir>/.acls`.
//! - `authorizer.rs`: `Authorizer` (the broker's ACLs, the superusers, on or off) and `Access`,
//!   what one request's principal and host may do, taken once per request.
//!
//! The rules, as Kafka's:
//! - a binding applies to an action when its principal is the caller's or `User:*`, its host is
//!   the caller's address or `*`, its resource pattern matches (a literal name equal to the
//!   resource's, the literal name `*`, or a prefix of the resource's name) and its operation is
//!   the action's, `ALL`, or, for an ALLOW binding, one that implies it (READ, WRITE, DELETE and
//!   ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS);
//! - any applicable DENY refuses, whatever allows; otherwise any applicable ALLOW permits;
//!   where nothing applies, the action is refused;
//! - superusers bypass the bindings.
//!
//! **Architecture invariant:** once authorization is on, access is denied by default, and the
//! internal topics (`_tidewater_*`: the device registry with its signing keys, checkpoints,
//! definitions) are for superusers only, whatever the bindings say. With authorization off (no
//! listener authenticates) every request is allowed, as before ACLs existed; bindings can be
//! managed all the same and take effect when it is turned on.

mod authorizer;
mod index;
mod model;
mod store;

pub(crate) use self::authorizer::{Access, Authorizer};
pub use self::authorizer::{AuthorizationConfig, ACL_BINDINGS_MAX};
pub use self::model::{
    is_wildcard_principal, AclBinding, AclBindingFilter, AclEntry, AclError, AclHost, Coded, Criterion,
    Operation, PatternFilter, PatternType, Permission, ResourcePattern, ResourceType, ACL_TEXT_BYTES_MAX,
    CLUSTER_NAME, WILDCARD,
};
pub use self::store::ACLS_DIR_NAME;

/// Topics whose names start with this are Tidewater's own state: superusers only.
pub const INTERNAL_TOPIC_PREFIX: &str = "_tidewater_";

/// Whether a topic is one of Tidewater's internal topics.
pub fn is_internal_topic(name: &str) -> bool {
    name.starts_with(INTERNAL_TOPIC_PREFIX)
}
