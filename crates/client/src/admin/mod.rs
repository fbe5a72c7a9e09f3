//! Admin requests through librdkafka's C API: topics (CreateTopics, DeleteTopics,
//! CreatePartitions, DescribeConfigs, IncrementalAlterConfigs, and "ensure": create unless it
//! exists, and for a table upgrade it to a compacted topic), consumer
//! groups (ListGroups with DescribeGroups, ListConsumerGroupOffsets, AlterConsumerGroupOffsets,
//! DeleteGroups), ACLs (CreateAcls, DescribeAcls, DeleteAcls) and SCRAM credentials
//! (AlterUserScramCredentials, DescribeUserScramCredentials).
//!
//! Why not the `rdkafka` crate's `AdminClient` methods: they keep only the error code of each
//! result and drop the broker's error message, which is the part that says *which* config value
//! was wrong and why; and the crate has no IncrementalAlterConfigs at all (its AlterConfigs
//! replaces every override of a topic, silently resetting the ones not named), no ACL or SCRAM
//! requests, nor any of the group requests but the listing, whose `GroupInfo` drops each group's
//! error.
//!
//! Every request goes through one helper ([`ffi::request`]): it makes the request's options and
//! result queue, calls the C function, waits for the result event (at most the caller's timeout
//! plus a margin for librdkafka to report its own timeout), turns an event error into an
//! [`AdminError`] (an API the broker does not implement into [`AdminError::Unsupported`]) and
//! hands the typed result to a closure that copies out what it needs. The operations in
//! `topics`, `groups`, `acls` and `scram` are short safe functions on top of it. This module is
//! the workspace's only librdkafka FFI.

mod acls;
mod ffi;
mod groups;
mod scram;
mod topics;

pub use acls::{
    create_acls, delete_acls, describe_acls, AclBinding, AclBindingFilter, AclOperation, AclPermission,
    PatternType, ResourceType,
};
pub use groups::{
    alter_group_offsets, delete_group, describe_consumer_group, list_group_offsets, list_groups,
    ConsumerGroupDescription, ConsumerGroupMember, GroupInfo, GroupListing, GroupMember, GroupOffset,
};
pub use scram::{
    alter_user_scram_credentials, describe_user_scram_credentials, ScramAlteration, ScramCredentialInfo,
    ScramMechanism, UserOutcome, UserScramCredentials, SCRAM_ITERATIONS_DEFAULT,
};
pub use topics::{
    alter_topic_configs, create_partitions, create_topic, delete_records, delete_topic,
    describe_topic_configs, ensure_table_topic, ensure_table_topic_on, ensure_topic, ensure_topic_on,
    table_upgrades, upgrade_table_topic, upgrade_table_topic_on, ConfigChange, ConfigUpgrade, DeletedRecords,
    NewTopic, TopicConfigEntry,
};

/// A Kafka error code as a broker sent it, which may be one this librdkafka has no name for.
/// It prints as librdkafka's text ("Broker: Unknown member id").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub i32);

impl ErrorCode {
    /// `None` for 0, Kafka's "no error".
    pub fn from_raw(code: i32) -> Option<ErrorCode> {
        (code != 0).then_some(ErrorCode(code))
    }

    pub fn is(self, known: rdkafka::types::RDKafkaErrorCode) -> bool {
        self.0 == known as i32
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&ffi::code_text(self.0))
    }
}

/// Why an admin request, or one entry of it, failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The broker (or librdkafka on its behalf, as for a timeout) answered with an error:
    /// librdkafka's text for the code and the broker's message, as in "Broker: Configuration is
    /// invalid: retention.ms: \"soon\" is not a valid number".
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    /// The broker does not implement the request's API (it is not in its ApiVersions answer).
    #[error("the broker does not support {operation}: {message}")]
    Unsupported { operation: &'static str, message: String },
    /// librdkafka refused the request's arguments before sending anything (a NUL byte in a
    /// name, a replication factor it cannot express, a binding with an `any` in it).
    #[error("{0}")]
    Invalid(String),
    /// librdkafka gave no result within the timeout and its margin, or a result that does not
    /// answer the request; only a bug in librdkafka or here would cause either.
    #[error("{0}")]
    Unexpected(String),
    /// No client to send the request through.
    #[error("creating a Kafka client: {error}")]
    Client { error: rdkafka::error::KafkaError },
}

impl AdminError {
    /// The error code the broker answered with, if it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            AdminError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}
