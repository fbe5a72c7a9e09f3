//! ACL requests (KIP-140): CreateAcls, DescribeAcls and DeleteAcls, with Kafka's model: a
//! binding grants or denies one operation on a resource pattern (type, name, literal or prefixed)
//! to a principal (`User:NAME`) from a host (`*` for any); a filter selects bindings, with `Any`
//! and `None` matching everything in their place.
//!
//! The enums print as Kafka's names (`TOPIC`, `PREFIXED`, `DESCRIBE_CONFIGS`, `ALLOW`) and parse
//! from them in any case, with or without `_` and `-` (`transactional-id`, `TransactionalId`).
//! A value a broker sends that this code has no name for is kept as `Unknown(code)`.

use std::ffi::CString;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::client::{Client, ClientContext};
use rdsys::rd_kafka_admin_op_t as Op;

use super::ffi::{as_int, c_string, c_text, entry_error, request, result_array, ErrBuf, Operation, Owned};
use super::AdminError;

/// An enum of Kafka's ACL model: each variant's Kafka name, its code on the wire (which
/// librdkafka's enum shares), and librdkafka's enum for it, whose `unknown` value stands for
/// a code without a name (librdkafka refuses it in a request).
macro_rules! kafka_enum {
    ($(#[$doc:meta])* $name:ident: $rdsys:ident, unknown $unknown:ident { $($variant:ident = $kafka_name:literal, $code:literal, $rdsys_variant:ident;)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)*
            /// A value this code has no name for, as the broker sent it.
            Unknown(i32),
        }

        impl $name {
            /// The value's code in Kafka's protocol.
            pub fn code(self) -> i32 {
                match self {
                    $($name::$variant => $code,)*
                    $name::Unknown(code) => code,
                }
            }

            pub fn from_code(code: i32) -> $name {
                match code {
                    $($code => $name::$variant,)*
                    other => $name::Unknown(other),
                }
            }

            fn to_rdsys(self) -> rdsys::$rdsys {
                match self {
                    $($name::$variant => rdsys::$rdsys::$rdsys_variant,)*
                    // librdkafka refuses a binding or filter with an unknown value.
                    $name::Unknown(_) => rdsys::$rdsys::$unknown,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $($name::$variant => formatter.write_str($kafka_name),)*
                    $name::Unknown(code) => write!(formatter, "UNKNOWN({code})"),
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let wanted = comparable(text);
                $(if wanted == comparable($kafka_name) {
                    return Ok($name::$variant);
                })*
                let known: &[&str] = &[$($kafka_name),*];
                Err(format!("unknown {} {text:?}; one of {}", stringify!($name), known.join(", ")))
            }
        }
    };
}

/// Lower case without `_` and `-`, so `TRANSACTIONAL_ID`, `transactional-id` and
/// `TransactionalId` compare equal.
fn comparable(text: &str) -> String {
    text.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
}

kafka_enum! {
    /// What kind of resource a binding is about. `Any` only in filters.
    ResourceType: rd_kafka_ResourceType_t, unknown RD_KAFKA_RESOURCE_UNKNOWN {
        Any = "ANY", 1, RD_KAFKA_RESOURCE_ANY;
        Topic = "TOPIC", 2, RD_KAFKA_RESOURCE_TOPIC;
        Group = "GROUP", 3, RD_KAFKA_RESOURCE_GROUP;
        Cluster = "CLUSTER", 4, RD_KAFKA_RESOURCE_BROKER;
        TransactionalId = "TRANSACTIONAL_ID", 5, RD_KAFKA_RESOURCE_TRANSACTIONAL_ID;
    }
}

kafka_enum! {
    /// How a binding's resource name matches: the name itself, or every name it prefixes.
    /// `Any` (every pattern) and `Match` (the patterns that would match the name) only in
    /// filters.
    PatternType: rd_kafka_ResourcePatternType_t, unknown RD_KAFKA_RESOURCE_PATTERN_UNKNOWN {
        Any = "ANY", 1, RD_KAFKA_RESOURCE_PATTERN_ANY;
        Match = "MATCH", 2, RD_KAFKA_RESOURCE_PATTERN_MATCH;
        Literal = "LITERAL", 3, RD_KAFKA_RESOURCE_PATTERN_LITERAL;
        Prefixed = "PREFIXED", 4, RD_KAFKA_RESOURCE_PATTERN_PREFIXED;
    }
}

kafka_enum! {
    /// The operation a binding allows or denies. `All` covers every operation; `Any` only in
    /// filters.
    AclOperation: rd_kafka_AclOperation_t, unknown RD_KAFKA_ACL_OPERATION_UNKNOWN {
        Any = "ANY", 1, RD_KAFKA_ACL_OPERATION_ANY;
        All = "ALL", 2, RD_KAFKA_ACL_OPERATION_ALL;
        Read = "READ", 3, RD_KAFKA_ACL_OPERATION_READ;
        Write = "WRITE", 4, RD_KAFKA_ACL_OPERATION_WRITE;
        Create = "CREATE", 5, RD_KAFKA_ACL_OPERATION_CREATE;
        Delete = "DELETE", 6, RD_KAFKA_ACL_OPERATION_DELETE;
        Alter = "ALTER", 7, RD_KAFKA_ACL_OPERATION_ALTER;
        Describe = "DESCRIBE", 8, RD_KAFKA_ACL_OPERATION_DESCRIBE;
        ClusterAction = "CLUSTER_ACTION", 9, RD_KAFKA_ACL_OPERATION_CLUSTER_ACTION;
        DescribeConfigs = "DESCRIBE_CONFIGS", 10, RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS;
        AlterConfigs = "ALTER_CONFIGS", 11, RD_KAFKA_ACL_OPERATION_ALTER_CONFIGS;
        IdempotentWrite = "IDEMPOTENT_WRITE", 12, RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE;
    }
}

kafka_enum! {
    /// Whether a binding allows or denies (deny wins). `Any` only in filters.
    AclPermission: rd_kafka_AclPermissionType_t, unknown RD_KAFKA_ACL_PERMISSION_TYPE_UNKNOWN {
        Any = "ANY", 1, RD_KAFKA_ACL_PERMISSION_TYPE_ANY;
        Deny = "DENY", 2, RD_KAFKA_ACL_PERMISSION_TYPE_DENY;
        Allow = "ALLOW", 3, RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW;
    }
}

/// One ACL: `permission` for `principal` from `host` to do `operation` on the resources the
/// pattern (`resource_type`, `resource_name`, `pattern_type`) covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    /// `User:NAME`, or `User:*` for every principal.
    pub principal: String,
    /// An IP address, or `*` for every host.
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

/// Which bindings DescribeAcls shows and DeleteAcls deletes: each field matches as Kafka's
/// `AclBindingFilter` does; `Any` and `None` match every value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclBindingFilter {
    pub resource_type: ResourceType,
    pub resource_name: Option<String>,
    pub pattern_type: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

impl AclBindingFilter {
    /// The filter that matches every binding.
    pub fn any() -> AclBindingFilter {
        AclBindingFilter {
            resource_type: ResourceType::Any,
            resource_name: None,
            pattern_type: PatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: AclPermission::Any,
        }
    }
}

impl From<&AclBinding> for AclBindingFilter {
    /// The filter that matches exactly `binding`.
    fn from(binding: &AclBinding) -> AclBindingFilter {
        AclBindingFilter {
            resource_type: binding.resource_type,
            resource_name: Some(binding.resource_name.clone()),
            pattern_type: binding.pattern_type,
            principal: Some(binding.principal.clone()),
            host: Some(binding.host.clone()),
            operation: binding.operation,
            permission: binding.permission,
        }
    }
}

const CREATE_ACLS: Operation<rdsys::rd_kafka_AclBinding_t> = Operation::new(
    "CreateAcls",
    Op::RD_KAFKA_ADMIN_OP_CREATEACLS,
    rdsys::rd_kafka_CreateAcls,
    rdsys::rd_kafka_event_CreateAcls_result,
);
const DESCRIBE_ACLS: Operation<rdsys::rd_kafka_AclBindingFilter_t> = Operation::new(
    "DescribeAcls",
    Op::RD_KAFKA_ADMIN_OP_DESCRIBEACLS,
    describe_acls_of_one,
    rdsys::rd_kafka_event_DescribeAcls_result,
);
const DELETE_ACLS: Operation<rdsys::rd_kafka_AclBindingFilter_t> = Operation::new(
    "DeleteAcls",
    Op::RD_KAFKA_ADMIN_OP_DELETEACLS,
    rdsys::rd_kafka_DeleteAcls,
    rdsys::rd_kafka_event_DeleteAcls_result,
);

/// Creates `bindings` in one CreateAcls request; the outcome of each, in order.
pub fn create_acls<C: ClientContext>(
    client: &Client<C>,
    bindings: &[AclBinding],
    timeout: Duration,
) -> Result<Vec<Result<(), AdminError>>, AdminError> {
    let owned = bindings.iter().map(new_binding).collect::<Result<Vec<_>, _>>()?;
    // SAFETY (read): the result is live during the call; its entries are ACL results, in request order.
    request(client, &CREATE_ACLS, timeout, &owned, |result| unsafe {
        let results = result_array(result, rdsys::rd_kafka_CreateAcls_result_acls);
        if results.len() != bindings.len() {
            return Err(AdminError::Unexpected(format!(
                "CreateAcls answered {} results for {} bindings",
                results.len(),
                bindings.len()
            )));
        }
        Ok(results
            .iter()
            .map(|&result| match entry_error(rdsys::rd_kafka_acl_result_error(result)) {
                Some(error) => Err(error),
                None => Ok(()),
            })
            .collect())
    })
}

/// The bindings `filter` matches (DescribeAcls).
pub fn describe_acls<C: ClientContext>(
    client: &Client<C>,
    filter: &AclBindingFilter,
    timeout: Duration,
) -> Result<Vec<AclBinding>, AdminError> {
    // SAFETY (read): the result is live during the call; its entries are bindings.
    request(client, &DESCRIBE_ACLS, timeout, &[new_filter(filter)?], |result| unsafe {
        Ok(result_array(result, rdsys::rd_kafka_DescribeAcls_result_acls)
            .iter()
            .map(|&binding| read_binding(binding))
            .collect())
    })
}

/// Deletes the bindings each of `filters` matches, in one DeleteAcls request: per filter, in
/// order, the bindings it deleted or its error.
pub fn delete_acls<C: ClientContext>(
    client: &Client<C>,
    filters: &[AclBindingFilter],
    timeout: Duration,
) -> Result<Vec<Result<Vec<AclBinding>, AdminError>>, AdminError> {
    let owned = filters.iter().map(new_filter).collect::<Result<Vec<_>, _>>()?;
    // SAFETY (read): the result is live during the call; its entries are responses, in request
    // order, each with its matching bindings.
    request(client, &DELETE_ACLS, timeout, &owned, |result| unsafe {
        let responses = result_array(result, rdsys::rd_kafka_DeleteAcls_result_responses);
        if responses.len() != filters.len() {
            return Err(AdminError::Unexpected(format!(
                "DeleteAcls answered {} results for {} filters",
                responses.len(),
                filters.len()
            )));
        }
        Ok(responses
            .iter()
            .map(|&response| {
                if let Some(error) = entry_error(rdsys::rd_kafka_DeleteAcls_result_response_error(response)) {
                    return Err(error);
                }
                let mut count = 0;
                let matching = rdsys::rd_kafka_DeleteAcls_result_response_matching_acls(response, &mut count);
                let matching =
                    if matching.is_null() { &[][..] } else { std::slice::from_raw_parts(matching, count) };
                Ok(matching.iter().map(|&binding| read_binding(binding)).collect())
            })
            .collect())
    })
}

/// DescribeAcls as the other requests are sent (`ffi::Submit`): librdkafka's takes one filter rather than an array.
///
/// # Safety
///
/// As `rd_kafka_DescribeAcls`, with `filters` pointing to exactly one live filter.
unsafe extern "C" fn describe_acls_of_one(
    client: *mut rdsys::rd_kafka_t,
    filters: *mut *mut rdsys::rd_kafka_AclBindingFilter_t,
    count: usize,
    options: *const rdsys::rd_kafka_AdminOptions_t,
    queue: *mut rdsys::rd_kafka_queue_t,
) {
    debug_assert_eq!(count, 1, "DescribeAcls takes one filter");
    // SAFETY: the caller's contract.
    unsafe { rdsys::rd_kafka_DescribeAcls(client, *filters, options, queue) }
}

/// librdkafka's copy of `binding`; librdkafka checks it (no `Any`, a principal and host given).
fn new_binding(binding: &AclBinding) -> Result<Owned<rdsys::rd_kafka_AclBinding_t>, AdminError> {
    let (name, principal, host) =
        (c_string(&binding.resource_name)?, c_string(&binding.principal)?, c_string(&binding.host)?);
    let mut errstr = ErrBuf::new();
    // SAFETY: the strings and `errstr` outlive the call; librdkafka copies the strings.
    unsafe {
        Owned::made(
            rdsys::rd_kafka_AclBinding_new(
                binding.resource_type.to_rdsys(),
                name.as_ptr(),
                binding.pattern_type.to_rdsys(),
                principal.as_ptr(),
                host.as_ptr(),
                binding.operation.to_rdsys(),
                binding.permission.to_rdsys(),
                errstr.ptr(),
                errstr.len(),
            ),
            rdsys::rd_kafka_AclBinding_destroy,
            || format!("ACL binding: {}", errstr.text()),
        )
    }
}

/// librdkafka's copy of `filter`.
fn new_filter(filter: &AclBindingFilter) -> Result<Owned<rdsys::rd_kafka_AclBindingFilter_t>, AdminError> {
    let optional = |text: &Option<String>| text.as_deref().map(c_string).transpose();
    let (name, principal, host) =
        (optional(&filter.resource_name)?, optional(&filter.principal)?, optional(&filter.host)?);
    let pointer = |text: &Option<CString>| text.as_ref().map_or(std::ptr::null(), |text| text.as_ptr());
    let mut errstr = ErrBuf::new();
    // SAFETY: the strings and `errstr` outlive the call; librdkafka copies the strings, and null
    // is its "any" for each of them.
    unsafe {
        Owned::made(
            rdsys::rd_kafka_AclBindingFilter_new(
                filter.resource_type.to_rdsys(),
                pointer(&name),
                filter.pattern_type.to_rdsys(),
                pointer(&principal),
                pointer(&host),
                filter.operation.to_rdsys(),
                filter.permission.to_rdsys(),
                errstr.ptr(),
                errstr.len(),
            ),
            rdsys::rd_kafka_AclBinding_destroy,
            || format!("ACL filter: {}", errstr.text()),
        )
    }
}

/// A binding of a result, copied out.
///
/// # Safety
///
/// `binding` must be a live binding; its strings live as long as it does.
unsafe fn read_binding(binding: *const rdsys::rd_kafka_AclBinding_t) -> AclBinding {
    // SAFETY: the caller's contract.
    unsafe {
        AclBinding {
            resource_type: ResourceType::from_code(as_int::rd_kafka_AclBinding_restype(binding)),
            resource_name: c_text(rdsys::rd_kafka_AclBinding_name(binding)),
            pattern_type: PatternType::from_code(as_int::rd_kafka_AclBinding_resource_pattern_type(binding)),
            principal: c_text(rdsys::rd_kafka_AclBinding_principal(binding)),
            host: c_text(rdsys::rd_kafka_AclBinding_host(binding)),
            operation: AclOperation::from_code(as_int::rd_kafka_AclBinding_operation(binding)),
            permission: AclPermission::from_code(as_int::rd_kafka_AclBinding_permission_type(binding)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_print_as_kafka_and_parse_in_any_spelling() {
        let check = |text: &str, expected: Result<&str, &str>| {
            let parsed = text.parse::<ResourceType>().map(|parsed| parsed.to_string());
            assert_eq!(parsed.as_deref().map_err(String::as_str), expected, "{text:?}");
        };
        check("topic", Ok("TOPIC"));
        check("Transactional-Id", Ok("TRANSACTIONAL_ID"));
        check("TransactionalId", Ok("TRANSACTIONAL_ID"));
        check("cluster", Ok("CLUSTER"));
        check(
            "user",
            Err("unknown ResourceType \"user\"; one of ANY, TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID"),
        );
        assert_eq!("describe-configs".parse::<AclOperation>(), Ok(AclOperation::DescribeConfigs));
        assert_eq!("IdempotentWrite".parse::<AclOperation>(), Ok(AclOperation::IdempotentWrite));
        assert_eq!("prefixed".parse::<PatternType>(), Ok(PatternType::Prefixed));
        assert_eq!("deny".parse::<AclPermission>(), Ok(AclPermission::Deny));
        // Codes are Kafka's, and a code without a name survives a round trip.
        assert_eq!(AclOperation::from_code(12), AclOperation::IdempotentWrite);
        assert_eq!(ResourceType::from_code(7), ResourceType::Unknown(7));
        assert_eq!(ResourceType::Unknown(7).code(), 7);
        assert_eq!(ResourceType::Unknown(7).to_string(), "UNKNOWN(7)");
    }

    #[test]
    fn librdkafka_checks_bindings_before_sending() {
        let binding = AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: "orders".to_string(),
            pattern_type: PatternType::Literal,
            principal: "User:alice".to_string(),
            host: "*".to_string(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        };
        assert!(new_binding(&binding).is_ok());
        assert!(new_filter(&AclBindingFilter::from(&binding)).is_ok());
        assert!(new_filter(&AclBindingFilter::any()).is_ok());
        // `Any` is only for filters.
        let any_operation = AclBinding { operation: AclOperation::Any, ..binding.clone() };
        let refused = new_binding(&any_operation).map(drop).map_err(|error| error.to_string());
        assert!(refused.as_ref().is_err_and(|error| error.starts_with("ACL binding: ")), "{refused:?}");
        let nul = AclBinding { principal: "User:a\0b".to_string(), ..binding };
        let refused = new_binding(&nul).map(drop).map_err(|error| error.to_string());
        assert_eq!(refused, Err("\"User:a\\0b\" contains a NUL byte".to_string()));
    }
}
