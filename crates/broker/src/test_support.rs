//! What the broker's unit tests share: a broker on a temporary directory with a test clock,
//! record batches as producers write them, and ACL bindings written as text.

use std::path::Path;
use std::sync::Arc;

use tidewater_log::batch::{encode_records, KeyValue, ProducerFields};
use tidewater_log::{LogConfig, ManualClock};

use crate::acl::{
    AclBinding, AclError, AuthorizationConfig, Coded, Operation, PatternType, Permission, ResourceType,
};
use crate::broker::{Broker, BrokerConfig};
use crate::groups::GroupConfig;

/// A broker on `dir` whose topics get `log_defaults`, with time from `clock` (authorization off).
pub(crate) fn open_broker(dir: &Path, clock: &ManualClock, log_defaults: LogConfig) -> Broker {
    let config = BrokerConfig {
        data_dir: dir.to_path_buf(),
        node_id: 0,
        auto_create_topics: false,
        default_partitions: 1,
        log_defaults,
        groups: GroupConfig::default(),
        offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
        authorization: AuthorizationConfig::default(),
        fetch_session_slots: crate::fetch_sessions::DEFAULT_SLOTS,
    };
    Broker::open(config, Arc::new(clock.clone())).expect("open broker")
}

/// A v2 batch of unkeyed records from producer `producer_id` at `epoch`, from `sequence`.
pub(crate) fn idempotent_batch(producer_id: i64, epoch: i16, sequence: i32, values: &[&[u8]]) -> Vec<u8> {
    producer_batch(producer_id, epoch, sequence, false, values)
}

/// `idempotent_batch` with the transactional attribute set.
pub(crate) fn transactional_batch(producer_id: i64, epoch: i16, sequence: i32, values: &[&[u8]]) -> Vec<u8> {
    producer_batch(producer_id, epoch, sequence, true, values)
}

fn producer_batch(
    producer_id: i64,
    epoch: i16,
    sequence: i32,
    transactional: bool,
    values: &[&[u8]],
) -> Vec<u8> {
    let records: Vec<KeyValue<'_>> = values.iter().map(|value| (None, Some(*value))).collect();
    let producer =
        ProducerFields { producer_id, producer_epoch: epoch, base_sequence: sequence, transactional };
    encode_records(1_000, &records, Some(producer))
}

/// A binding's fields as CreateAcls carries them: (resource type, name, pattern type,
/// principal, host, operation, permission), with Kafka's codes.
pub(crate) type Fields<'a> = (i8, &'a str, i8, &'a str, &'a str, i8, i8);

pub(crate) fn from_fields(fields: Fields) -> Result<AclBinding, AclError> {
    let (resource_type, name, pattern_type, principal, host, operation, permission) = fields;
    AclBinding::from_wire(resource_type, name, pattern_type, principal, host, operation, permission)
}

/// A binding written `TYPE:PATTERN:name principal@host OPERATION PERMISSION`, in Kafka's names:
/// `TOPIC:PREFIXED:orders- User:alice@* READ ALLOW`.
pub(crate) fn binding(text: &str) -> AclBinding {
    let parts: Vec<&str> = text.split(' ').collect();
    let [resource, who, operation, permission] = parts[..] else { panic!("bad binding {text}") };
    let (resource_type, rest) = resource.split_once(':').expect("type");
    let (pattern_type, name) = rest.split_once(':').expect("pattern");
    let (principal, host) = who.rsplit_once('@').expect("host");
    let fields = (
        code::<ResourceType>(resource_type),
        name,
        code::<PatternType>(pattern_type),
        principal,
        host,
        code::<Operation>(operation),
        code::<Permission>(permission),
    );
    from_fields(fields).unwrap_or_else(|error| panic!("{text}: {error}"))
}

/// The code of the value Kafka names `name`.
fn code<T: Coded>(name: &str) -> i8 {
    let value = T::VALUES.iter().find(|value| value.to_string() == name);
    value.unwrap_or_else(|| panic!("no {} is named {name}", T::WHAT)).code()
}
