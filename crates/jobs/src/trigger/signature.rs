//! Webhook signatures, the Standard Webhooks way (<https://www.standardwebhooks.com>).
//!
//! Each request carries `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`. The secret is
//! written `whsec_<base64 key>`; the key is the base64-decoded part. The id stays the same across
//! retries of one delivery, so receivers can deduplicate; the timestamp is the time of the
//! attempt, so receivers can refuse stale replays.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A decoded signing key.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// Reads a `whsec_...` secret (the prefix is optional, as in the reference libraries).
    pub fn parse(secret: &str) -> Result<SigningKey, String> {
        let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
        let key = BASE64
            .decode(encoded)
            .map_err(|error| format!("a webhook secret is whsec_ followed by base64: {error}"))?;
        if key.len() < 16 || key.len() > 64 {
            return Err(format!("a webhook secret's key is 16 to 64 bytes, this one is {}", key.len()));
        }
        Ok(SigningKey(key))
    }

    /// A new random secret, `whsec_` and 32 bytes of base64.
    pub fn generate() -> String {
        let mut key = Vec::with_capacity(32);
        key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        format!("{SECRET_PREFIX}{}", BASE64.encode(key))
    }

    /// The `webhook-signature` header value for one request.
    pub fn sign(&self, id: &str, timestamp_secs: i64, body: &[u8]) -> String {
        // HMAC accepts keys of any length; new_from_slice cannot fail for it.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            unreachable!("HMAC-SHA256 takes keys of any length")
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_secs.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification's test vectors (also used by the
    /// reference libraries' tests).
    #[test]
    fn matches_the_reference_vector() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap_or_else(|error| panic!("{error}"));
        let signature = key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn bad_secrets_are_refused_with_a_reason() {
        assert!(SigningKey::parse("whsec_not base64!").err().is_some_and(|error| error.contains("base64")));
        assert!(SigningKey::parse("whsec_AAAA").err().is_some_and(|error| error.contains("16 to 64 bytes")));
        let generated = SigningKey::generate();
        assert!(generated.starts_with(SECRET_PREFIX));
        assert!(SigningKey::parse(&generated).is_ok());
    }
}
