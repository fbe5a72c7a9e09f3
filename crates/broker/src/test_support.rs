//! What the broker's unit tests share: record batches as producers write them, and ACL
//! bindings written as text.

use tidewater_log::batch;

use crate::acl::{AclBinding, AclError, Coded, Operation, PatternType, Permission, ResourceType};

/// A v2 batch from producer `producer_id` at `epoch`, starting at `sequence`.
pub(crate) fn idempotent_batch(producer_id: i64, epoch: i16, sequence: i32, values: &[&[u8]]) -> Vec<u8> {
    let records: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|value| (None, *value)).collect();
    let mut bytes = batch::encode_batch(1_000, &records);
    bytes[43..51].copy_from_slice(&producer_id.to_be_bytes());
    bytes[51..53].copy_from_slice(&epoch.to_be_bytes());
    bytes[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// `idempotent_batch` with the transactional attribute set.
pub(crate) fn transactional_batch(producer_id: i64, epoch: i16, sequence: i32, values: &[&[u8]]) -> Vec<u8> {
    let mut bytes = idempotent_batch(producer_id, epoch, sequence, values);
    bytes[21..23].copy_from_slice(&0x10i16.to_be_bytes());
    let crc = crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn crc32c(bytes: &[u8]) -> u32 {
    // CRC-32C (Castagnoli), bitwise: small and only for building test batches.
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
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
