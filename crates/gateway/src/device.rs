//! A registered device and its key: what the registry stores and how a key is checked.
//!
//! A device key is 32 random bytes, shown to the operator once as base64 (the text the device
//! sends as its MQTT password). Only a salted SHA-256 of that text is stored, so the registry
//! topic does not hold usable secrets, and the comparison runs in constant time so that timing
//! does not tell an attacker how much of a guess was right.
//!
//! A record also holds the device's token-signing key, derived one-way from the key (see
//! [`crate::token`]): it verifies the time-limited tokens a device may send instead of its key.
//! It is a secret (whoever holds it can mint tokens for the device) but not the key itself.
//! Records written before tokens existed have none; such a device can use tokens only once its
//! key is rotated.
//!
//! A device registered for X.509 ([`X509Identity`]) has no key at all (its hash, salt and
//! signing key are empty, which match no key and verify no token): it proves who it is with a
//! client certificate over TLS, known by its SHA-256 thumbprint or chaining to a registered
//! CA ([`DeviceCa`]), as IoT Hub's X.509 devices do.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::token;

/// Random bytes in a device key.
pub const DEVICE_KEY_BYTES: usize = 32;
/// Random bytes of salt per stored key hash.
pub const SALT_BYTES: usize = 16;
/// Longest device id; it is also an MQTT client id and a Kafka record key.
pub const DEVICE_ID_BYTES_MAX: usize = 128;

/// A device as stored in the registry topic (JSON; unknown fields are ignored so a newer
/// version's records still load).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    /// Hex SHA-256 of `salt` followed by the key's base64 text.
    pub key_hash: String,
    /// Hex salt.
    pub salt: String,
    /// Hex token-signing key, [`crate::token::derive_signing_key`] of the key; empty in records
    /// written before tokens existed, which makes every token of the device fail.
    #[serde(default)]
    pub signing_key: String,
    #[serde(default)]
    pub disabled: bool,
    pub created_at_ms: i64,
    #[serde(default)]
    pub updated_at_ms: i64,
    /// Set for a device that authenticates with a client certificate instead of a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509: Option<X509Identity>,
    /// The device's own limit on messages per second (0: unlimited), in place of the gateway's
    /// default ([`crate::throttle`]); `None`, as in records written before quotas existed, means
    /// the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages_per_second: Option<u64>,
    /// Likewise for bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_second: Option<u64>,
}

/// How an X.509 device's certificate is recognized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum X509Identity {
    /// A certificate (usually self-signed) known by its SHA-256 thumbprint (lowercase hex); a
    /// secondary one lets a device move to a new certificate without a gap.
    Thumbprint { primary: String, secondary: Option<String> },
    /// A certificate that chains to a registered CA, with subject CN = the device id.
    CertificateAuthority,
}

/// A CA whose certificates identify X.509 devices (`tidewater device ca add`), stored in the
/// registry topic under key [`CA_KEY_PREFIX`] + name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCa {
    pub name: String,
    /// The CA certificate, DER in base64.
    pub certificate_der_base64: String,
    /// Its subject, for `device ca list`.
    #[serde(default)]
    pub subject: String,
    pub added_at_ms: i64,
}

/// Registry keys of CAs start with this; a device id cannot contain '/'.
pub const CA_KEY_PREFIX: &str = "ca/";

impl DeviceCa {
    /// The certificate as DER, or `None` for a damaged record (which then anchors nothing).
    pub fn certificate_der(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD.decode(&self.certificate_der_base64).ok()
    }
}

/// Why a device id cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    #[error("a device id must not be empty")]
    Empty,
    #[error("a device id is at most {DEVICE_ID_BYTES_MAX} bytes, this one is {0}")]
    TooLong(usize),
    #[error("a device id may hold letters, digits, '-', '_', '.' and ':' only; {0:?} is not allowed")]
    Character(char),
}

/// Checks a device id: it appears in MQTT topic levels (`devices/{id}/...`), so wildcards and
/// separators are out, and in logs and record keys, so it stays printable.
pub fn validate_device_id(id: &str) -> Result<(), DeviceIdError> {
    if id.is_empty() {
        return Err(DeviceIdError::Empty);
    }
    if id.len() > DEVICE_ID_BYTES_MAX {
        return Err(DeviceIdError::TooLong(id.len()));
    }
    match id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))) {
        Some(bad) => Err(DeviceIdError::Character(bad)),
        None => Ok(()),
    }
}

/// A fresh device key as the base64 text the device presents.
pub fn generate_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; DEVICE_KEY_BYTES];
    getrandom::getrandom(&mut bytes)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Fresh random salt.
pub fn generate_salt() -> Result<[u8; SALT_BYTES], getrandom::Error> {
    let mut salt = [0u8; SALT_BYTES];
    getrandom::getrandom(&mut salt)?;
    Ok(salt)
}

impl Device {
    /// A new, enabled device with `key` stored as its salted hash. Salt and time are passed in
    /// so tests are deterministic.
    pub fn new(id: &str, key: &str, salt: [u8; SALT_BYTES], now_ms: i64) -> Device {
        Device {
            id: id.to_string(),
            key_hash: hex(&key_digest(&salt, key.as_bytes())),
            salt: hex(&salt),
            signing_key: hex(&token::derive_signing_key(key)),
            disabled: false,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            x509: None,
            max_messages_per_second: None,
            max_bytes_per_second: None,
        }
    }

    /// A new, enabled X.509 device: no key, so no key or token opens it.
    pub fn new_x509(id: &str, x509: X509Identity, now_ms: i64) -> Device {
        Device {
            id: id.to_string(),
            key_hash: String::new(),
            salt: String::new(),
            signing_key: String::new(),
            disabled: false,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            x509: Some(x509),
            max_messages_per_second: None,
            max_bytes_per_second: None,
        }
    }

    /// Replaces the key (rotate-key): the old key, and every token made with it, stop working
    /// as soon as gateways see this.
    pub fn set_key(&mut self, key: &str, salt: [u8; SALT_BYTES], now_ms: i64) {
        self.key_hash = hex(&key_digest(&salt, key.as_bytes()));
        self.salt = hex(&salt);
        self.signing_key = hex(&token::derive_signing_key(key));
        self.updated_at_ms = now_ms;
    }

    /// Whether `presented` (the MQTT password) is this device's key, compared in constant time.
    /// A record whose hash or salt does not decode matches nothing.
    pub fn key_matches(&self, presented: &[u8]) -> bool {
        let (Some(salt), Some(stored)) = (unhex(&self.salt), unhex(&self.key_hash)) else {
            return false;
        };
        let digest = key_digest(&salt, presented);
        stored.len() == digest.len() && bool::from(digest.as_slice().ct_eq(&stored))
    }

    /// The token-signing key, or `None` for a record without one (or with a damaged one), which
    /// verifies no token.
    pub fn signing_key(&self) -> Option<[u8; token::SIGNATURE_BYTES]> {
        unhex(&self.signing_key)?.try_into().ok()
    }
}

fn key_digest(salt: &[u8], key: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(key);
    hasher.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|idx| u8::from_str_radix(text.get(idx..idx + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_matches_only_itself_and_is_not_stored() {
        let device = Device::new("pump-1", "secret-key", [7; SALT_BYTES], 1000);
        assert!(device.key_matches(b"secret-key"));
        assert!(!device.key_matches(b"secret-kez"));
        assert!(!device.key_matches(b""));
        assert!(!serde_json::to_string(&device).unwrap_or_default().contains("secret-key"));
        let other_salt = Device::new("pump-1", "secret-key", [8; SALT_BYTES], 1000);
        assert_ne!(device.key_hash, other_salt.key_hash);
    }

    #[test]
    fn rotating_the_key_retires_the_old_one() {
        let mut device = Device::new("pump-1", "old", [1; SALT_BYTES], 1000);
        device.set_key("new", [2; SALT_BYTES], 2000);
        assert!(device.key_matches(b"new"));
        assert!(!device.key_matches(b"old"));
        assert_eq!((device.created_at_ms, device.updated_at_ms), (1000, 2000));
    }

    #[test]
    fn the_signing_key_is_derived_from_the_key_and_rotates_with_it() {
        let mut device = Device::new("pump-1", "old", [1; SALT_BYTES], 1000);
        assert_eq!(device.signing_key(), Some(token::derive_signing_key("old")));
        device.set_key("new", [2; SALT_BYTES], 2000);
        assert_eq!(device.signing_key(), Some(token::derive_signing_key("new")));
        assert_ne!(token::derive_signing_key("old"), token::derive_signing_key("new"));
    }

    #[test]
    fn a_record_from_before_tokens_loads_without_a_signing_key() {
        let old = r#"{"id":"a","key_hash":"00","salt":"00","created_at_ms":5}"#;
        let device: Result<Device, _> = serde_json::from_str(old);
        assert!(device.is_ok_and(|device| device.signing_key.is_empty() && device.signing_key().is_none()));
    }

    #[test]
    fn a_record_from_before_quotas_loads_with_the_default_and_quotas_round_trip() {
        let old = r#"{"id":"a","key_hash":"00","salt":"00","signing_key":"","created_at_ms":5}"#;
        let device: Result<Device, _> = serde_json::from_str(old);
        assert!(device.is_ok_and(
            |device| device.max_messages_per_second.is_none() && device.max_bytes_per_second.is_none()
        ));
        let mut device = Device::new("pump-1", "k", [1; SALT_BYTES], 0);
        let json = serde_json::to_string(&device).unwrap_or_default();
        assert!(!json.contains("per_second"), "no quota fields unless set: {json}");
        device.max_messages_per_second = Some(20);
        device.max_bytes_per_second = Some(0);
        let json = serde_json::to_string(&device).unwrap_or_default();
        assert!(json.contains(r#""max_messages_per_second":20,"max_bytes_per_second":0"#), "{json}");
        let back: Result<Device, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(device));
    }

    #[test]
    fn an_x509_device_has_no_key_to_match() {
        let device = Device::new_x509("cam-1", X509Identity::CertificateAuthority, 0);
        assert!(!device.key_matches(b""));
        assert!(!device.key_matches(b"anything"));
        assert_eq!(device.signing_key(), None);
        let json = serde_json::to_string(&device).unwrap_or_default();
        assert!(json.contains(r#""x509":{"kind":"certificate_authority"}"#), "{json}");
        let back: Result<Device, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(device));
    }

    #[test]
    fn a_damaged_record_matches_nothing() {
        let mut device = Device::new("pump-1", "k", [1; SALT_BYTES], 0);
        device.key_hash.pop();
        assert!(!device.key_matches(b"k"));
        device.signing_key.pop();
        assert_eq!(device.signing_key(), None);
    }

    #[test]
    fn generated_keys_are_32_random_bytes_in_base64() {
        let (Ok(first), Ok(second)) = (generate_key(), generate_key()) else { panic!("no randomness") };
        assert_ne!(first, second);
        let decoded = base64::engine::general_purpose::STANDARD.decode(&first).unwrap_or_default();
        assert_eq!(decoded.len(), DEVICE_KEY_BYTES);
    }

    #[test]
    fn device_ids() {
        let check = |id: &str| validate_device_id(id).map_err(|error| error.to_string());
        assert_eq!(check("pump-1.a_b:c"), Ok(()));
        assert_eq!(check(""), Err("a device id must not be empty".to_string()));
        assert!(check("a/b").is_err());
        assert!(check("a+").is_err());
        assert!(check("a#").is_err());
        assert!(check(&"x".repeat(DEVICE_ID_BYTES_MAX)).is_ok());
        assert!(check(&"x".repeat(DEVICE_ID_BYTES_MAX + 1)).is_err());
    }
}
