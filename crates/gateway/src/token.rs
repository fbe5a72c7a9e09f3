//! Time-limited device tokens in the shape of Azure IoT Hub's SAS tokens: what a device may send
//! instead of its key, as its MQTT password or an HTTP `Authorization` header. Pure: the current
//! time is passed in.
//!
//! ```text
//! SharedAccessSignature sr={percent-encoded resource}&sig={percent-encoded base64 signature}&se={expiry}
//!
//! resource     = "devices/{device id}"
//! expiry       = unix seconds; the token is valid while now < expiry
//! signature    = HMAC-SHA256(signing key, "{resource}\n{expiry}")
//! signing key  = HMAC-SHA256(the device key's base64 text, "tidewater-sas-v1")
//! ```
//!
//! The resource is IoT Hub's device-scoped one without the host name (`devices/{id}`, the same
//! words as the device's MQTT topics and HTTP path), and it must name exactly the device that
//! connects: a token of one device is no use to another. The fields may come in any order, each
//! exactly once; IoT Hub's `skn` (a shared access policy name) and any other field are refused,
//! since this gateway has device keys only.
//!
//! Why a derived signing key rather than the key itself: the registry stores only a salted hash
//! of the key (see [`crate::device`]), which can check a key but cannot check an HMAC made with
//! it. So the registry also stores this signing key, a one-way function of the key: whoever can
//! read the registry can mint tokens, but cannot recover the key, and rotating the key (which
//! derives a new signing key) makes every earlier token fail. ARCHITECTURE.md records this
//! trade-off.
//!
//! A token is checked in an order that tells a client nothing about which devices exist: its
//! syntax, its resource and its expiry depend on the token alone and are reported as such; an
//! unknown device, a device without a signing key and a wrong signature are one answer,
//! [`TokenError::Signature`]. Signatures are compared in constant time.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tidewater_client::cloudevents::percent_decode;

/// What a password or `Authorization` value starts with when it is a token rather than a key
/// (a key is base64 and never holds a space).
pub const TOKEN_PREFIX: &str = "SharedAccessSignature ";
/// The longest token accepted. A device id is at most 128 bytes, so a real token is under 300;
/// anything longer is refused before it is parsed.
pub const TOKEN_BYTES_MAX: usize = 1024;
/// The message a device key signs to give its token-signing key. Versioned, so a different
/// derivation later cannot be confused with this one.
pub const SIGNING_KEY_CONTEXT: &[u8] = b"tidewater-sas-v1";
/// Bytes in a signing key and in a signature (HMAC-SHA256).
pub const SIGNATURE_BYTES: usize = 32;
/// The most digits an expiry may have (u64::MAX has 20).
const EXPIRY_DIGITS_MAX: usize = 20;

/// Why a token is refused. Every variant but [`TokenError::Signature`] depends on the token
/// alone, so saying it to the client reveals nothing about the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a token is at most {TOKEN_BYTES_MAX} bytes, this one is {0}")]
    TooLong(usize),
    #[error("a token is text that starts with {TOKEN_PREFIX:?}")]
    NotAToken,
    #[error("the token has no {0} field")]
    MissingField(&'static str),
    #[error("the token has field {0:?} more than once")]
    DuplicateField(String),
    #[error("the token has field {0:?}, which is not one of sr, sig and se (shared access policies, skn, are not supported)")]
    UnknownField(String),
    #[error("the token's {0} field is not valid percent-encoded UTF-8")]
    Encoding(&'static str),
    #[error("the token's se field {0:?} is not unix seconds")]
    Expiry(String),
    #[error("the token's sig field is not the base64 of a {SIGNATURE_BYTES}-byte HMAC-SHA256")]
    SignatureEncoding,
    #[error("the token is for resource {presented:?}, not {expected:?}")]
    OtherResource { presented: String, expected: String },
    #[error("the token expired at {expiry_unix_secs} (unix seconds; it is now {now_unix_secs})")]
    Expired { expiry_unix_secs: u64, now_unix_secs: u64 },
    #[error("the token's signature does not match the device's key, or there is no such device")]
    Signature,
}

/// A token's fields, decoded but not yet checked against anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// `sr`, percent-decoded.
    pub resource: String,
    /// `sig`, percent- and base64-decoded.
    pub signature: [u8; SIGNATURE_BYTES],
    /// `se`.
    pub expiry_unix_secs: u64,
}

/// Whether a password selects token checking: it starts with [`TOKEN_PREFIX`].
pub fn is_token(password: &[u8]) -> bool {
    password.starts_with(TOKEN_PREFIX.as_bytes())
}

/// The resource a token of `device_id` names.
pub fn resource(device_id: &str) -> String {
    format!("devices/{device_id}")
}

/// The signing key the registry stores for a device whose key is `key` (its base64 text).
pub fn derive_signing_key(key: &str) -> [u8; SIGNATURE_BYTES] {
    hmac_sha256(key.as_bytes(), &[SIGNING_KEY_CONTEXT])
}

/// The signature of `resource` valid until `expiry_unix_secs`.
pub fn sign(signing_key: &[u8], resource: &str, expiry_unix_secs: u64) -> [u8; SIGNATURE_BYTES] {
    hmac_sha256(signing_key, &[resource.as_bytes(), b"\n", expiry_unix_secs.to_string().as_bytes()])
}

/// A token for `device_id` from its key, valid until `expiry_unix_secs`: what `tidewater device
/// token` prints, and what a device computes for itself.
pub fn mint(device_id: &str, key: &str, expiry_unix_secs: u64) -> String {
    let resource = resource(device_id);
    let signature = sign(&derive_signing_key(key), &resource, expiry_unix_secs);
    format!(
        "{TOKEN_PREFIX}sr={}&sig={}&se={expiry_unix_secs}",
        percent_encode(&resource),
        percent_encode(&BASE64.encode(signature)),
    )
}

/// Decodes a token (the whole password, prefix included).
pub fn parse(text: &[u8]) -> Result<Token, TokenError> {
    if text.len() > TOKEN_BYTES_MAX {
        return Err(TokenError::TooLong(text.len()));
    }
    let fields = std::str::from_utf8(text)
        .ok()
        .and_then(|text| text.strip_prefix(TOKEN_PREFIX))
        .ok_or(TokenError::NotAToken)?;
    let (mut resource, mut signature, mut expiry) = (None, None, None);
    for field in fields.split('&') {
        // Base64 ends in '=', so only the first '=' separates name from value.
        let (name, value) = field.split_once('=').unwrap_or((field, ""));
        let slot = match name {
            "sr" => &mut resource,
            "sig" => &mut signature,
            "se" => &mut expiry,
            other => return Err(TokenError::UnknownField(other.to_string())),
        };
        if slot.replace(value).is_some() {
            return Err(TokenError::DuplicateField(name.to_string()));
        }
    }
    let resource = resource.ok_or(TokenError::MissingField("sr"))?;
    let signature = signature.ok_or(TokenError::MissingField("sig"))?;
    let expiry = expiry.ok_or(TokenError::MissingField("se"))?;

    let resource = percent_decode(resource.as_bytes()).ok_or(TokenError::Encoding("sr"))?;
    let signature = percent_decode(signature.as_bytes()).ok_or(TokenError::Encoding("sig"))?;
    let signature = BASE64
        .decode(signature)
        .ok()
        .and_then(|bytes| <[u8; SIGNATURE_BYTES]>::try_from(bytes).ok())
        .ok_or(TokenError::SignatureEncoding)?;
    // Digits only: `u64::from_str` would also take a leading '+', which no signer writes.
    let well_formed = !expiry.is_empty()
        && expiry.len() <= EXPIRY_DIGITS_MAX
        && expiry.bytes().all(|byte| byte.is_ascii_digit());
    let expiry_unix_secs = well_formed
        .then(|| expiry.parse::<u64>().ok())
        .flatten()
        .ok_or_else(|| TokenError::Expiry(expiry.to_string()))?;
    Ok(Token { resource, signature, expiry_unix_secs })
}

impl Token {
    /// The checks that need no registry: the token names `device_id` and has not expired at
    /// `now_unix_secs`.
    pub fn check_claims(&self, device_id: &str, now_unix_secs: u64) -> Result<(), TokenError> {
        let expected = resource(device_id);
        if self.resource != expected {
            return Err(TokenError::OtherResource { presented: self.resource.clone(), expected });
        }
        if now_unix_secs >= self.expiry_unix_secs {
            return Err(TokenError::Expired { expiry_unix_secs: self.expiry_unix_secs, now_unix_secs });
        }
        Ok(())
    }

    /// Whether the signature is right for `signing_key`, compared in constant time. The
    /// signature is recomputed over the canonical text of the fields as parsed (the resource as
    /// decoded, the expiry without leading zeros), so two spellings of one token cannot differ in
    /// what they prove.
    pub fn signed_by(&self, signing_key: &[u8]) -> bool {
        let expected = sign(signing_key, &self.resource, self.expiry_unix_secs);
        bool::from(expected.ct_eq(&self.signature))
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; SIGNATURE_BYTES] {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC-SHA256 takes keys of any length")
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Encodes every byte except RFC 3986's unreserved characters (letters, digits, `-._~`), as
/// `encodeURIComponent` and Python's `quote(text, safe="")` do, with upper-case hex. (Decoding
/// is the same `%XX` rule the CloudEvents HTTP binding uses.)
fn percent_encode(text: &str) -> String {
    let unreserved = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~');
    tidewater_client::cloudevents::percent_encode(text, unreserved)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
    const EXPIRY: u64 = 1_700_000_000;

    /// Parses `token` and checks it as device `pump-1` at `now`, with the signing key of KEY:
    /// "ok" or the refusal.
    fn check(token: &str, now: u64) -> String {
        let outcome = parse(token.as_bytes()).and_then(|token| {
            token.check_claims("pump-1", now)?;
            if token.signed_by(&derive_signing_key(KEY)) {
                Ok(())
            } else {
                Err(TokenError::Signature)
            }
        });
        match outcome {
            Ok(()) => "ok".to_string(),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn a_fixed_key_and_expiry_give_a_fixed_token() {
        // Computed independently with Python's hmac module:
        //   k = hmac.new(KEY.encode(), b"tidewater-sas-v1", sha256).digest()
        //   sig = hmac.new(k, b"devices/pump-1\n1700000000", sha256).digest()
        assert_eq!(
            hex(&derive_signing_key(KEY)),
            "0c2a47b10c83e7cf55299183e71547a4975e77071704aadd008d09687f9a4bd7"
        );
        assert_eq!(
            mint("pump-1", KEY, EXPIRY),
            "SharedAccessSignature sr=devices%2Fpump-1&sig=8bBcwLjs7txOVmlF3qNyeLtqQH36tZ9XQhVo92RrMdg%3D&se=1700000000"
        );
    }

    #[test]
    fn a_minted_token_passes_until_its_expiry() {
        let token = mint("pump-1", KEY, EXPIRY);
        assert_eq!(check(&token, EXPIRY - 3600), "ok");
        assert_eq!(check(&token, EXPIRY - 1), "ok");
        assert_eq!(
            check(&token, EXPIRY),
            "the token expired at 1700000000 (unix seconds; it is now 1700000000)"
        );
        assert_eq!(
            check(&token, EXPIRY + 60),
            "the token expired at 1700000000 (unix seconds; it is now 1700000060)"
        );
    }

    #[test]
    fn a_token_for_another_device_is_refused() {
        assert_eq!(
            check(&mint("pump-2", KEY, EXPIRY), EXPIRY - 1),
            r#"the token is for resource "devices/pump-2", not "devices/pump-1""#
        );
        // The bare device id (no "devices/") is not the resource either.
        let bare = mint("pump-1", KEY, EXPIRY).replace("sr=devices%2Fpump-1", "sr=pump-1");
        assert_eq!(check(&bare, EXPIRY - 1), r#"the token is for resource "pump-1", not "devices/pump-1""#);
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let token = mint("pump-1", KEY, EXPIRY);
        // A later expiry under the old signature.
        let extended = token.replace("se=1700000000", "se=1800000000");
        assert_eq!(check(&extended, EXPIRY), TokenError::Signature.to_string());
        // One bit of the signature flipped.
        let parsed = parse(token.as_bytes()).map(|token| token.signature).unwrap_or_default();
        let mut flipped = parsed;
        flipped[0] ^= 1;
        let sig = percent_encode(&BASE64.encode(flipped));
        let tampered = format!("{TOKEN_PREFIX}sr=devices%2Fpump-1&sig={sig}&se={EXPIRY}");
        assert_eq!(check(&tampered, EXPIRY - 1), TokenError::Signature.to_string());
        // Made with another key.
        let other_key = mint("pump-1", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", EXPIRY);
        assert_eq!(check(&other_key, EXPIRY - 1), TokenError::Signature.to_string());
    }

    #[test]
    fn spellings_of_one_token() {
        let token = mint("pump-1", KEY, EXPIRY);
        let parsed = parse(token.as_bytes()).map(|token| token.signature).unwrap_or_default();
        let sig = percent_encode(&BASE64.encode(parsed));
        // Fields in IoT Hub's other order, an unencoded resource and signature, leading zeros.
        let reordered = format!("{TOKEN_PREFIX}se={EXPIRY}&sig={sig}&sr=devices%2Fpump-1");
        assert_eq!(check(&reordered, EXPIRY - 1), "ok");
        let plain = format!("{TOKEN_PREFIX}sr=devices/pump-1&sig={}&se={EXPIRY}", BASE64.encode(parsed));
        assert_eq!(check(&plain, EXPIRY - 1), "ok");
        let zeros = token.replace("se=", "se=00");
        assert_eq!(check(&zeros, EXPIRY - 1), "ok");
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        let good_sig = {
            let token = mint("pump-1", KEY, EXPIRY);
            token.split("sig=").nth(1).and_then(|rest| rest.split('&').next()).unwrap_or("").to_string()
        };
        let with = |fields: &str| check(&format!("{TOKEN_PREFIX}{fields}"), EXPIRY - 1);
        assert_eq!(
            check("sharedaccesssignature sr=x", 0),
            "a token is text that starts with \"SharedAccessSignature \""
        );
        assert_eq!(with(&format!("sr=devices%2Fpump-1&sig={good_sig}")), "the token has no se field");
        assert_eq!(with(&format!("sr=devices%2Fpump-1&se={EXPIRY}")), "the token has no sig field");
        assert_eq!(with(&format!("sig={good_sig}&se={EXPIRY}")), "the token has no sr field");
        assert_eq!(
            with(""),
            r#"the token has field "", which is not one of sr, sig and se (shared access policies, skn, are not supported)"#
        );
        assert_eq!(
            with(&format!("sr=devices%2Fpump-1&sig={good_sig}&se={EXPIRY}&skn=owner")),
            r#"the token has field "skn", which is not one of sr, sig and se (shared access policies, skn, are not supported)"#
        );
        assert_eq!(
            with(&format!("sr=a&sr=devices%2Fpump-1&sig={good_sig}&se={EXPIRY}")),
            r#"the token has field "sr" more than once"#
        );
        assert_eq!(
            with(&format!("sr=devices%2pump-1&sig={good_sig}&se={EXPIRY}")),
            "the token's sr field is not valid percent-encoded UTF-8"
        );
        for sig in ["", "not base64!", "AAAA", &format!("{good_sig}AAAA")] {
            assert_eq!(
                with(&format!("sr=devices%2Fpump-1&sig={sig}&se={EXPIRY}")),
                "the token's sig field is not the base64 of a 32-byte HMAC-SHA256",
                "{sig}"
            );
        }
        for se in ["", "+1700000000", "-1", "17e8", "1".repeat(21).as_str(), "99999999999999999999"] {
            assert_eq!(
                with(&format!("sr=devices%2Fpump-1&sig={good_sig}&se={se}")),
                format!("the token's se field {se:?} is not unix seconds")
            );
        }
        let long = format!("{TOKEN_PREFIX}sr={}", "x".repeat(TOKEN_BYTES_MAX));
        assert_eq!(check(&long, 0), format!("a token is at most 1024 bytes, this one is {}", long.len()));
        assert_eq!(parse(&[0xff; 4]), Err(TokenError::NotAToken));
    }

    #[test]
    fn is_token_needs_the_exact_prefix() {
        assert!(is_token(b"SharedAccessSignature sr=x"));
        assert!(!is_token(b"SharedAccessSignature"));
        assert!(!is_token(KEY.as_bytes()));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn fields_are_percent_encoded_as_uri_components() {
        assert_eq!(percent_encode("devices/pump-1:a b+=/"), "devices%2Fpump-1%3Aa%20b%2B%3D%2F");
        assert_eq!(percent_decode(b"devices%2Fpump-1%3aa%20b+"), Some("devices/pump-1:a b+".to_string()));
        let text = "x/y+z=é";
        assert_eq!(percent_decode(percent_encode(text).as_bytes()).as_deref(), Some(text));
    }
}
