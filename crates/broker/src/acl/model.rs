//! The ACL vocabulary, in Kafka's words and with Kafka's wire codes: resource types, pattern
//! types, operations and permissions; a binding (a resource pattern plus who may or may not do
//! what from where); and the filters DescribeAcls and DeleteAcls select bindings with.
//!
//! Everything here is decoded from what a client sent (or the journal holds), so every
//! constructor validates and says why it refused; nothing panics on input. A binding that
//! exists is always concrete (no ANY, no MATCH, a principal that parses, a host that is `*` or
//! an IP address); filters are where ANY and MATCH live.

use std::fmt;
use std::net::IpAddr;

use tidewater_security::{KafkaPrincipal, USER_TYPE};

/// The resource name (literal pattern), principal name and host that match anything.
pub const WILDCARD: &str = "*";
/// The name of the one CLUSTER resource, as Kafka names it.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The longest resource name, principal or host a binding may hold, in bytes. Topic names are
/// at most 249 characters; principals from certificates (DNs) are the long ones.
pub const ACL_TEXT_BYTES_MAX: usize = 4096;

/// The wire code of ANY in every filter field, and of UNKNOWN, which is never valid.
const ANY_CODE: i8 = 1;
/// MATCH in a pattern type filter: literal, wildcard and prefixed bindings that match a name.
const MATCH_CODE: i8 = 2;
/// Resource types Kafka has that Tidewater never stores: DELEGATION_TOKEN and USER.
const KAFKA_ONLY_RESOURCE_TYPES: &[i8] = &[6, 7];
/// Operations Kafka has that Tidewater never stores: CREATE_TOKENS and DESCRIBE_TOKENS.
const KAFKA_ONLY_OPERATIONS: &[i8] = &[13, 14];

/// A value with a Kafka wire code (and a Kafka name, its `Display`).
pub trait Coded: Copy + PartialEq + fmt::Display + 'static {
    /// Every value, for decoding.
    const VALUES: &'static [Self];
    /// What the value is, in messages ("resource type").
    const WHAT: &'static str;
    fn code(self) -> i8;

    fn from_code(code: i8) -> Option<Self> {
        Self::VALUES.iter().copied().find(|value| value.code() == code)
    }
}

/// An enum of Kafka's with its wire code and name per variant, as one table.
macro_rules! coded {
    (
        $(#[$attribute:meta])*
        pub enum $name:ident ($what:literal) {
            $($(#[$variant_attribute:meta])* $variant:ident = $code:literal $text:literal,)+
        }
    ) => {
        $(#[$attribute])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$variant_attribute])* $variant,)+
        }

        impl Coded for $name {
            const VALUES: &'static [Self] = &[$($name::$variant),+];
            const WHAT: &'static str = $what;

            fn code(self) -> i8 {
                match self {
                    $($name::$variant => $code,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(match self {
                    $($name::$variant => $text,)+
                })
            }
        }
    };
}

coded! {
    pub enum ResourceType ("resource type") {
        Topic = 2 "TOPIC",
        Group = 3 "GROUP",
        Cluster = 4 "CLUSTER",
        TransactionalId = 5 "TRANSACTIONAL_ID",
    }
}

impl ResourceType {
    /// The operations that mean something on this resource type (Kafka's
    /// `AclEntry.supportedOperations`): what an authorized-operations bit field reports on.
    pub fn operations(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            ResourceType::Topic => {
                &[Read, Write, Create, Describe, Delete, Alter, DescribeConfigs, AlterConfigs]
            }
            ResourceType::Group => &[Read, Describe, Delete, DescribeConfigs, AlterConfigs],
            ResourceType::Cluster => {
                &[Create, ClusterAction, DescribeConfigs, AlterConfigs, IdempotentWrite, Alter, Describe]
            }
            ResourceType::TransactionalId => &[Describe, Write],
        }
    }

    /// A dense index, for tables with one slot per resource type.
    pub(crate) fn index(self) -> usize {
        match self {
            ResourceType::Topic => 0,
            ResourceType::Group => 1,
            ResourceType::Cluster => 2,
            ResourceType::TransactionalId => 3,
        }
    }
}

coded! {
    pub enum PatternType ("pattern type") {
        /// The name is the resource's whole name, or `*` for every resource of the type.
        Literal = 3 "LITERAL",
        /// The name is a prefix of the resource's name.
        Prefixed = 4 "PREFIXED",
    }
}

coded! {
    pub enum Operation ("operation") {
        /// Every operation (in a binding; never an action).
        All = 2 "ALL",
        Read = 3 "READ",
        Write = 4 "WRITE",
        Create = 5 "CREATE",
        Delete = 6 "DELETE",
        Alter = 7 "ALTER",
        Describe = 8 "DESCRIBE",
        ClusterAction = 9 "CLUSTER_ACTION",
        DescribeConfigs = 10 "DESCRIBE_CONFIGS",
        AlterConfigs = 11 "ALTER_CONFIGS",
        IdempotentWrite = 12 "IDEMPOTENT_WRITE",
    }
}

impl Operation {
    /// Whether an ALLOW binding for `self` also allows `action` (Kafka's implied operations).
    pub fn allows(self, action: Operation) -> bool {
        use Operation::*;
        match (self, action) {
            (All, _) => true,
            (Read | Write | Delete | Alter, Describe) => true,
            (AlterConfigs, DescribeConfigs) => true,
            _ => self == action,
        }
    }

    /// Whether a DENY binding for `self` denies `action`: only its own operation, or every one
    /// for ALL. (Denying READ does not deny DESCRIBE.)
    pub fn denies(self, action: Operation) -> bool {
        self == Operation::All || self == action
    }
}

coded! {
    pub enum Permission ("permission type") {
        Deny = 2 "DENY",
        Allow = 3 "ALLOW",
    }
}

/// Where a binding applies from: any host, or one IP address (held in canonical form, so
/// `::ffff:10.0.0.1` and `10.0.0.1` are the same host, as are `::1` and `0:0:0:0:0:0:0:1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AclHost {
    Any,
    Ip(IpAddr),
}

impl AclHost {
    pub fn parse(text: &str) -> Option<AclHost> {
        if text == WILDCARD {
            return Some(AclHost::Any);
        }
        text.parse::<IpAddr>().ok().map(|ip| AclHost::Ip(ip.to_canonical()))
    }

    pub fn admits(self, peer: IpAddr) -> bool {
        match self {
            AclHost::Any => true,
            AclHost::Ip(ip) => ip == peer.to_canonical(),
        }
    }
}

impl fmt::Display for AclHost {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AclHost::Any => formatter.write_str(WILDCARD),
            AclHost::Ip(ip) => write!(formatter, "{ip}"),
        }
    }
}

/// A resource, or resources, a binding is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourcePattern {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern_type: PatternType,
}

impl ResourcePattern {
    /// Whether this pattern covers the resource named `name` of its type.
    pub fn covers(&self, name: &str) -> bool {
        match self.pattern_type {
            PatternType::Literal => self.name == name || self.name == WILDCARD,
            PatternType::Prefixed => name.starts_with(&self.name),
        }
    }
}

/// Who may, or may not, do what, from where.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclEntry {
    pub principal: KafkaPrincipal,
    pub host: AclHost,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclEntry {
    /// This entry's verdict on `principal` at `peer` doing `action`, or `None` when it does
    /// not apply (Kafka's `StandardAuthorizerData.findResult`). The resource is the caller's
    /// business.
    pub fn verdict(&self, principal: &KafkaPrincipal, peer: IpAddr, action: Operation) -> Option<Permission> {
        let operation_matches = match self.permission {
            Permission::Allow => self.operation.allows(action),
            Permission::Deny => self.operation.denies(action),
        };
        (operation_matches && self.concerns(principal, peer)).then_some(self.permission)
    }

    /// Whether this entry is about `principal` (by name or as `User:*`) at `peer`.
    pub fn concerns(&self, principal: &KafkaPrincipal, peer: IpAddr) -> bool {
        (self.principal == *principal || is_wildcard_principal(&self.principal)) && self.host.admits(peer)
    }
}

/// `User:*`, the principal of bindings that apply to everyone.
pub fn is_wildcard_principal(principal: &KafkaPrincipal) -> bool {
    principal.principal_type == USER_TYPE && principal.name == WILDCARD
}

/// One ACL: a resource pattern and an entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclBinding {
    pub pattern: ResourcePattern,
    pub entry: AclEntry,
}

/// Why a binding or a filter was refused. Every one is Kafka's INVALID_REQUEST.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("unknown {what} {code}")]
    Unknown { what: &'static str, code: i8 },
    #[error("{what} {code} is a filter value; an ACL needs a concrete {what}")]
    NotConcrete { what: &'static str, code: i8 },
    #[error("{what} {code} is not supported by Tidewater (only {supported})")]
    Unsupported { what: &'static str, code: i8, supported: &'static str },
    #[error("the resource name must not be empty")]
    EmptyName,
    #[error("the only valid name for the CLUSTER resource is {CLUSTER_NAME}, not {0:?}")]
    ClusterName(String),
    #[error(transparent)]
    Principal(#[from] tidewater_security::PrincipalError),
    #[error("host {0:?} is neither * nor an IP address (ACLs match the client's address, not names)")]
    Host(String),
    #[error("the {field} is {bytes} bytes long; at most {ACL_TEXT_BYTES_MAX} are allowed")]
    TooLong { field: &'static str, bytes: usize },
}

impl AclBinding {
    /// A binding from CreateAcls fields (or the journal's), validated as Kafka validates a
    /// new ACL, plus what Tidewater cannot store.
    #[allow(clippy::too_many_arguments)]
    pub fn from_wire(
        resource_type: i8,
        name: &str,
        pattern_type: i8,
        principal: &str,
        host: &str,
        operation: i8,
        permission: i8,
    ) -> Result<AclBinding, AclError> {
        let resource_type = concrete::<ResourceType>(
            resource_type,
            &[],
            KAFKA_ONLY_RESOURCE_TYPES,
            "TOPIC, GROUP, CLUSTER and TRANSACTIONAL_ID",
        )?;
        let pattern_type = concrete::<PatternType>(pattern_type, &[MATCH_CODE], &[], "")?;
        let operation = concrete::<Operation>(
            operation,
            &[],
            KAFKA_ONLY_OPERATIONS,
            "ALL, READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, \
             ALTER_CONFIGS and IDEMPOTENT_WRITE",
        )?;
        let permission = concrete::<Permission>(permission, &[], &[], "")?;
        for (field, text) in [("resource name", name), ("principal", principal), ("host", host)] {
            if text.len() > ACL_TEXT_BYTES_MAX {
                return Err(AclError::TooLong { field, bytes: text.len() });
            }
        }
        if name.is_empty() {
            return Err(AclError::EmptyName);
        }
        if resource_type == ResourceType::Cluster && name != CLUSTER_NAME {
            return Err(AclError::ClusterName(name.to_string()));
        }
        let principal = principal.parse::<KafkaPrincipal>()?;
        let host = AclHost::parse(host).ok_or_else(|| AclError::Host(host.to_string()))?;
        Ok(AclBinding {
            pattern: ResourcePattern { resource_type, name: name.to_string(), pattern_type },
            entry: AclEntry { principal, host, operation, permission },
        })
    }
}

/// A concrete value from its code, or why not: ANY and the other `filter_only` codes (MATCH)
/// select bindings but are none; `kafka_only` codes are Kafka's but not ours; the rest are
/// unknown.
fn concrete<T: Coded>(
    code: i8,
    filter_only: &[i8],
    kafka_only: &[i8],
    supported: &'static str,
) -> Result<T, AclError> {
    if let Some(value) = T::from_code(code) {
        return Ok(value);
    }
    let what = T::WHAT;
    Err(if code == ANY_CODE || filter_only.contains(&code) {
        AclError::NotConcrete { what, code }
    } else if kafka_only.contains(&code) {
        AclError::Unsupported { what, code, supported }
    } else {
        AclError::Unknown { what, code }
    })
}

/// One field of a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Criterion<T> {
    /// ANY, or a null string: every value.
    Any,
    Exactly(T),
    /// A value Kafka knows but no Tidewater binding can have (a USER resource, a principal
    /// that does not parse): nothing.
    Nothing,
}

impl<T: PartialEq> Criterion<T> {
    pub fn admits(&self, value: &T) -> bool {
        match self {
            Criterion::Any => true,
            Criterion::Exactly(wanted) => wanted == value,
            Criterion::Nothing => false,
        }
    }
}

/// The pattern type of a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternFilter {
    /// Bindings of any pattern type whose name is the filter's.
    Any,
    /// Bindings that would apply to a resource with the filter's name: that literal name, the
    /// wildcard `*`, or a prefix of it.
    Match,
    Exactly(PatternType),
}

/// What DescribeAcls and DeleteAcls select bindings with (Kafka's `AclBindingFilter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclBindingFilter {
    pub resource_type: Criterion<ResourceType>,
    /// `None` matches every name.
    pub name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Criterion<KafkaPrincipal>,
    pub host: Criterion<AclHost>,
    pub operation: Criterion<Operation>,
    pub permission: Criterion<Permission>,
}

impl AclBindingFilter {
    /// Matches every binding.
    pub fn any() -> AclBindingFilter {
        AclBindingFilter {
            resource_type: Criterion::Any,
            name: None,
            pattern: PatternFilter::Any,
            principal: Criterion::Any,
            host: Criterion::Any,
            operation: Criterion::Any,
            permission: Criterion::Any,
        }
    }

    /// A filter from DescribeAcls or DeleteAcls fields. UNKNOWN (or an unassigned code) in any
    /// field is refused, as Kafka refuses it.
    #[allow(clippy::too_many_arguments)]
    pub fn from_wire(
        resource_type: i8,
        name: Option<&str>,
        pattern_type: i8,
        principal: Option<&str>,
        host: Option<&str>,
        operation: i8,
        permission: i8,
    ) -> Result<AclBindingFilter, AclError> {
        let pattern = match pattern_type {
            ANY_CODE => PatternFilter::Any,
            MATCH_CODE => PatternFilter::Match,
            code => PatternFilter::Exactly(
                PatternType::from_code(code).ok_or(AclError::Unknown { what: PatternType::WHAT, code })?,
            ),
        };
        Ok(AclBindingFilter {
            resource_type: criterion(resource_type, KAFKA_ONLY_RESOURCE_TYPES)?,
            name: name.map(str::to_string),
            pattern,
            principal: text_criterion(principal, |text| text.parse().ok()),
            host: text_criterion(host, AclHost::parse),
            operation: criterion(operation, KAFKA_ONLY_OPERATIONS)?,
            permission: criterion(permission, &[])?,
        })
    }

    /// Kafka's `AclBindingFilter.matches`.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        self.matches_pattern(&binding.pattern)
            && self.principal.admits(&binding.entry.principal)
            && self.host.admits(&binding.entry.host)
            && self.operation.admits(&binding.entry.operation)
            && self.permission.admits(&binding.entry.permission)
    }

    /// Kafka's `ResourcePatternFilter.matches`.
    fn matches_pattern(&self, pattern: &ResourcePattern) -> bool {
        if !self.resource_type.admits(&pattern.resource_type) {
            return false;
        }
        if let PatternFilter::Exactly(pattern_type) = self.pattern {
            if pattern_type != pattern.pattern_type {
                return false;
            }
        }
        let Some(name) = &self.name else { return true };
        match self.pattern {
            PatternFilter::Any | PatternFilter::Exactly(_) => *name == pattern.name,
            PatternFilter::Match => pattern.covers(name),
        }
    }
}

fn criterion<T: Coded>(code: i8, kafka_only: &[i8]) -> Result<Criterion<T>, AclError> {
    if code == ANY_CODE {
        return Ok(Criterion::Any);
    }
    match T::from_code(code) {
        Some(value) => Ok(Criterion::Exactly(value)),
        None if kafka_only.contains(&code) => Ok(Criterion::Nothing),
        None => Err(AclError::Unknown { what: T::WHAT, code }),
    }
}

/// A string field of a filter: null is ANY; text that no binding can hold matches nothing
/// (Kafka compares these as strings, so such text finds nothing there either).
fn text_criterion<T>(text: Option<&str>, parse: impl Fn(&str) -> Option<T>) -> Criterion<T> {
    match text {
        None => Criterion::Any,
        Some(text) => parse(text).map_or(Criterion::Nothing, Criterion::Exactly),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{from_fields, Fields};

    const TOPIC: i8 = 2;
    const GROUP: i8 = 3;
    const CLUSTER: i8 = 4;
    const LITERAL: i8 = 3;
    const PREFIXED: i8 = 4;
    const READ: i8 = 3;
    const ALLOW: i8 = 3;

    /// Binding text as `TYPE:PATTERN:name principal@host OPERATION PERMISSION`, for tables.
    fn show(binding: &AclBinding) -> String {
        let AclBinding { pattern, entry } = binding;
        format!(
            "{}:{}:{} {}@{} {} {}",
            pattern.resource_type,
            pattern.pattern_type,
            pattern.name,
            entry.principal,
            entry.host,
            entry.operation,
            entry.permission
        )
    }

    #[test]
    fn bindings_are_validated_as_kafka_validates_a_new_acl() {
        let check = |fields: Fields, expected: &str| {
            let outcome = from_fields(fields);
            let shown = match outcome {
                Ok(binding) => show(&binding),
                Err(error) => format!("error: {error}"),
            };
            assert_eq!(shown, expected, "{fields:?}");
        };
        check(
            (TOPIC, "orders", LITERAL, "User:alice", "*", READ, ALLOW),
            "TOPIC:LITERAL:orders User:alice@* READ ALLOW",
        );
        check(
            (GROUP, "app-", PREFIXED, "User:*", "10.0.0.1", 6, 2),
            "GROUP:PREFIXED:app- User:*@10.0.0.1 DELETE DENY",
        );
        check(
            (CLUSTER, "kafka-cluster", LITERAL, "User:ops", "::ffff:10.0.0.1", 2, ALLOW),
            "CLUSTER:LITERAL:kafka-cluster User:ops@10.0.0.1 ALL ALLOW",
        );
        check(
            (5, "tx", LITERAL, "User:a", "0:0:0:0:0:0:0:1", 4, ALLOW),
            "TRANSACTIONAL_ID:LITERAL:tx User:a@::1 WRITE ALLOW",
        );
        check(
            (1, "orders", LITERAL, "User:a", "*", READ, ALLOW),
            "error: resource type 1 is a filter value; an ACL needs a concrete resource type",
        );
        check((0, "orders", LITERAL, "User:a", "*", READ, ALLOW), "error: unknown resource type 0");
        check((7, "alice", LITERAL, "User:a", "*", READ, ALLOW), "error: resource type 7 is not supported by Tidewater (only TOPIC, GROUP, CLUSTER and TRANSACTIONAL_ID)");
        check(
            (TOPIC, "orders", 2, "User:a", "*", READ, ALLOW),
            "error: pattern type 2 is a filter value; an ACL needs a concrete pattern type",
        );
        check(
            (TOPIC, "orders", 1, "User:a", "*", READ, ALLOW),
            "error: pattern type 1 is a filter value; an ACL needs a concrete pattern type",
        );
        check((TOPIC, "orders", 9, "User:a", "*", READ, ALLOW), "error: unknown pattern type 9");
        check(
            (TOPIC, "orders", LITERAL, "User:a", "*", 1, ALLOW),
            "error: operation 1 is a filter value; an ACL needs a concrete operation",
        );
        check((TOPIC, "orders", LITERAL, "User:a", "*", 13, ALLOW), "error: operation 13 is not supported by Tidewater (only ALL, READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS and IDEMPOTENT_WRITE)");
        check((TOPIC, "orders", LITERAL, "User:a", "*", 0, ALLOW), "error: unknown operation 0");
        check(
            (TOPIC, "orders", LITERAL, "User:a", "*", READ, 1),
            "error: permission type 1 is a filter value; an ACL needs a concrete permission type",
        );
        check((TOPIC, "orders", LITERAL, "User:a", "*", READ, 0), "error: unknown permission type 0");
        check((TOPIC, "", LITERAL, "User:a", "*", READ, ALLOW), "error: the resource name must not be empty");
        check(
            (CLUSTER, "other", LITERAL, "User:a", "*", READ, ALLOW),
            "error: the only valid name for the CLUSTER resource is kafka-cluster, not \"other\"",
        );
        check(
            (TOPIC, "orders", LITERAL, "alice", "*", READ, ALLOW),
            "error: \"alice\" is not a principal: expected Type:name, such as User:alice",
        );
        check((TOPIC, "orders", LITERAL, "User:a", "client.example.com", READ, ALLOW), "error: host \"client.example.com\" is neither * nor an IP address (ACLs match the client's address, not names)");
        let long = "x".repeat(ACL_TEXT_BYTES_MAX + 1);
        check(
            (TOPIC, &long, LITERAL, "User:a", "*", READ, ALLOW),
            "error: the resource name is 4097 bytes long; at most 4096 are allowed",
        );
    }

    #[test]
    fn implied_operations_are_allowed_but_never_denied() {
        use Operation::*;
        let check = |binding: Operation, action: Operation, allows: bool, denies: bool| {
            assert_eq!(
                (binding.allows(action), binding.denies(action)),
                (allows, denies),
                "{binding} on {action}"
            );
        };
        check(All, Describe, true, true);
        check(All, IdempotentWrite, true, true);
        check(Read, Read, true, true);
        check(Read, Describe, true, false);
        check(Write, Describe, true, false);
        check(Delete, Describe, true, false);
        check(Alter, Describe, true, false);
        check(Create, Describe, false, false);
        check(DescribeConfigs, Describe, false, false);
        check(AlterConfigs, DescribeConfigs, true, false);
        check(AlterConfigs, Describe, false, false);
        check(Describe, Read, false, false);
        check(Alter, AlterConfigs, false, false);
        check(Write, IdempotentWrite, false, false);
    }

    #[test]
    fn filters_match_as_kafkas_acl_binding_filter() {
        let bindings: Vec<AclBinding> = [
            (TOPIC, "orders", LITERAL, "User:alice", "*", READ, ALLOW),
            (TOPIC, "*", LITERAL, "User:*", "*", 8, ALLOW),
            (TOPIC, "ord", PREFIXED, "User:bob", "10.0.0.1", 4, 2),
            (TOPIC, "orders-eu", LITERAL, "User:alice", "*", READ, ALLOW),
            (GROUP, "orders", LITERAL, "User:alice", "*", READ, ALLOW),
        ]
        .into_iter()
        .map(|fields| from_fields(fields).expect("valid"))
        .collect();
        let check = |filter: (i8, Option<&str>, i8, Option<&str>, Option<&str>, i8, i8),
                     expected: &[usize]| {
            let (t, n, p, who, host, op, perm) = filter;
            let filter = AclBindingFilter::from_wire(t, n, p, who, host, op, perm).expect("valid filter");
            let matched: Vec<usize> =
                (0..bindings.len()).filter(|index| filter.matches(&bindings[*index])).collect();
            assert_eq!(matched, expected, "{filter:?}");
        };
        // ANY everywhere: everything.
        check((1, None, 1, None, None, 1, 1), &[0, 1, 2, 3, 4]);
        check((TOPIC, None, 1, None, None, 1, 1), &[0, 1, 2, 3]);
        // A name with ANY pattern type: bindings with exactly that name, whatever their type.
        check((TOPIC, Some("orders"), 1, None, None, 1, 1), &[0]);
        check((TOPIC, Some("ord"), 1, None, None, 1, 1), &[2]);
        check((TOPIC, Some("ord"), LITERAL, None, None, 1, 1), &[]);
        check((TOPIC, None, PREFIXED, None, None, 1, 1), &[2]);
        // MATCH: what would apply to a topic of that name.
        check((TOPIC, Some("orders"), 2, None, None, 1, 1), &[0, 1, 2]);
        check((TOPIC, Some("orders-eu"), 2, None, None, 1, 1), &[1, 2, 3]);
        check((TOPIC, Some("other"), 2, None, None, 1, 1), &[1]);
        check((1, Some("orders"), 2, None, None, 1, 1), &[0, 1, 2, 4]);
        // Principal and host compare as written; User:* only finds wildcard bindings.
        check((1, None, 1, Some("User:alice"), None, 1, 1), &[0, 3, 4]);
        check((1, None, 1, Some("User:*"), None, 1, 1), &[1]);
        check((1, None, 1, Some("alice"), None, 1, 1), &[]);
        check((1, None, 1, None, Some("::ffff:10.0.0.1"), 1, 1), &[2]);
        check((1, None, 1, None, Some("*"), 1, 1), &[0, 1, 3, 4]);
        check((1, None, 1, None, Some("nowhere"), 1, 1), &[]);
        // Operation and permission are exact (no implication in filters).
        check((1, None, 1, None, None, 8, 1), &[1]);
        check((1, None, 1, None, None, 1, 2), &[2]);
        // Kafka's USER resources and token operations exist but are never stored.
        check((7, None, 1, None, None, 1, 1), &[]);
        check((1, None, 1, None, None, 14, 1), &[]);
    }

    #[test]
    fn filters_with_unknown_codes_are_refused() {
        let check = |filter: (i8, i8, i8, i8), expected: &str| {
            let (t, p, op, perm) = filter;
            let outcome = AclBindingFilter::from_wire(t, None, p, None, None, op, perm).map(|_| ());
            assert_eq!(outcome.map_err(|error| error.to_string()), Err(expected.to_string()), "{filter:?}");
        };
        check((0, 1, 1, 1), "unknown resource type 0");
        check((9, 1, 1, 1), "unknown resource type 9");
        check((1, 0, 1, 1), "unknown pattern type 0");
        check((1, 1, 0, 1), "unknown operation 0");
        check((1, 1, 15, 1), "unknown operation 15");
        check((1, 1, 1, 0), "unknown permission type 0");
    }
}
