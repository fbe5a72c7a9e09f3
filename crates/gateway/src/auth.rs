//! Who a connecting MQTT client or HTTP request is: a registered device proving it holds the
//! device's key (the key itself, or a time-limited token made with it), or (only where allowed)
//! an anonymous client with no device identity. [`authenticate_at`] is pure: the caller passes
//! the current device map and time, so every outcome is a unit test; [`authenticate`] reads the
//! clock and logs why a token was refused.
//!
//! A password that starts with `SharedAccessSignature ` is a token ([`crate::token`]); anything
//! else is a key. The refusals follow what device clients expect: an unknown device, a wrong key
//! and a token that is malformed, expired, for another device or wrongly signed are the same
//! answer, Bad User Name or Password (5.0: 0x86, 3.1.1: return code 4), so a caller cannot probe
//! which ids exist; a disabled device whose key or token is right is Not authorized (0x87 / 5);
//! an anonymous client where anonymity is off is Not authorized too, as Mosquitto 2 answers.
//!
//! A token is checked when the connection is made; as in IoT Hub, the MQTT listener also closes
//! a connection when its token expires (`mqtt.rs`).

use tidewater_mqtt::ReasonCode;

use crate::registry::DeviceMap;
use crate::token::{self, TokenError};

/// The identity a connection publishes as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// An authenticated device; its id is stamped into every record it produces.
    Device(String),
    /// Allowed only by an explicit setting; never has a device id, so it can publish to no
    /// device's topics.
    Anonymous,
}

impl Identity {
    pub fn device_id(&self) -> Option<&str> {
        match self {
            Identity::Device(id) => Some(id),
            Identity::Anonymous => None,
        }
    }
}

/// Why a client was refused: the reason code it is told and, if it sent a token, what was wrong
/// with the token (for the log, and for HTTP's answer: no variant reveals whether a device
/// exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ReasonCode,
    pub token: Option<TokenError>,
}

impl From<ReasonCode> for Refusal {
    fn from(code: ReasonCode) -> Refusal {
        Refusal { code, token: None }
    }
}

impl From<TokenError> for Refusal {
    fn from(error: TokenError) -> Refusal {
        Refusal { code: ReasonCode::BadUserNameOrPassword, token: Some(error) }
    }
}

/// Decides a CONNECT: `client_id` is the device id and `password` its key or a token. `devices`
/// is `None` while the registry has not been read yet, which refuses everyone as Server
/// unavailable (a retry later succeeds) rather than as unknown. Reads the clock for token
/// expiry and logs why a token was refused; the answer is [`authenticate_at`]'s.
pub fn authenticate(
    devices: Option<&DeviceMap>,
    client_id: &str,
    password: Option<&[u8]>,
    allow_anonymous: bool,
) -> Result<Identity, ReasonCode> {
    authenticate_at(devices, client_id, password, allow_anonymous, unix_now_secs()).map_err(|refusal| {
        crate::metrics::gateway().auth_failed(&refusal);
        if let Some(error) = &refusal.token {
            tracing::info!(client_id, reason = %error, "refused a SAS token");
        }
        refusal.code
    })
}

/// [`authenticate`] at `now_unix_secs`, without logging.
pub fn authenticate_at(
    devices: Option<&DeviceMap>,
    client_id: &str,
    password: Option<&[u8]>,
    allow_anonymous: bool,
    now_unix_secs: u64,
) -> Result<Identity, Refusal> {
    let Some(password) = password else {
        return if allow_anonymous { Ok(Identity::Anonymous) } else { Err(ReasonCode::NotAuthorized.into()) };
    };
    if token::is_token(password) {
        return authenticate_token(devices, client_id, password, now_unix_secs);
    }
    let devices = devices.ok_or(ReasonCode::ServerUnavailable)?;
    let device = devices.get(client_id).ok_or(ReasonCode::BadUserNameOrPassword)?;
    // The key is checked before the disabled flag, so only the key's holder learns that a
    // device is disabled.
    if !device.key_matches(password) {
        return Err(ReasonCode::BadUserNameOrPassword.into());
    }
    if device.disabled {
        return Err(ReasonCode::NotAuthorized.into());
    }
    Ok(Identity::Device(device.id.clone()))
}

fn authenticate_token(
    devices: Option<&DeviceMap>,
    client_id: &str,
    password: &[u8],
    now_unix_secs: u64,
) -> Result<Identity, Refusal> {
    // What depends on the token alone comes first: it is the same answer whatever the registry
    // holds, even before it has been read.
    let token = token::parse(password)?;
    token.check_claims(client_id, now_unix_secs)?;
    let devices = devices.ok_or(ReasonCode::ServerUnavailable)?;
    // An unknown device, one registered before tokens existed and a wrong signature are one
    // refusal, as an unknown device and a wrong key are.
    let device = devices.get(client_id).ok_or(TokenError::Signature)?;
    match device.signing_key() {
        Some(signing_key) if token.signed_by(&signing_key) => {}
        _ => return Err(TokenError::Signature.into()),
    }
    if device.disabled {
        return Err(ReasonCode::NotAuthorized.into());
    }
    Ok(Identity::Device(device.id.clone()))
}

/// Seconds since the Unix epoch (0 if the clock is before it, which expires every token).
pub fn unix_now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;
    use crate::token::mint;

    const NOW: u64 = 1_700_000_000;

    fn devices() -> DeviceMap {
        let mut devices = DeviceMap::new();
        devices.insert("pump-1".into(), Device::new("pump-1", "good-key", [3; 16], 0));
        let mut off = Device::new("pump-2", "good-key", [4; 16], 0);
        off.disabled = true;
        devices.insert("pump-2".into(), off);
        // Registered before tokens existed: its record has no signing key.
        let mut old = Device::new("pump-3", "good-key", [5; 16], 0);
        old.signing_key.clear();
        devices.insert("pump-3".into(), old);
        devices
    }

    fn check(client_id: &str, password: Option<&str>, allow_anonymous: bool) -> String {
        let devices = devices();
        match authenticate_at(Some(&devices), client_id, password.map(str::as_bytes), allow_anonymous, NOW) {
            Ok(identity) => format!("{identity:?}"),
            Err(Refusal { code, token: None }) => code.to_string(),
            Err(Refusal { code, token: Some(error) }) => format!("{code}: {error}"),
        }
    }

    #[test]
    fn outcomes() {
        assert_eq!(check("pump-1", Some("good-key"), false), r#"Device("pump-1")"#);
        assert_eq!(check("pump-1", Some("bad-key"), false), "Bad User Name or Password (0x86)");
        assert_eq!(check("nobody", Some("good-key"), false), "Bad User Name or Password (0x86)");
        assert_eq!(check("pump-2", Some("good-key"), false), "Not authorized (0x87)");
        assert_eq!(check("pump-2", Some("bad-key"), false), "Bad User Name or Password (0x86)");
        assert_eq!(check("pump-1", None, false), "Not authorized (0x87)");
        assert_eq!(check("pump-1", None, true), "Anonymous");
        // Anonymous where allowed, but a password still has to be right.
        assert_eq!(check("pump-1", Some("bad-key"), true), "Bad User Name or Password (0x86)");
        // The key of a device registered before tokens still works.
        assert_eq!(check("pump-3", Some("good-key"), false), r#"Device("pump-3")"#);
    }

    #[test]
    fn token_outcomes() {
        let valid = |id: &str| mint(id, "good-key", NOW + 3600);
        assert_eq!(check("pump-1", Some(&valid("pump-1")), false), r#"Device("pump-1")"#);
        assert_eq!(check("pump-1", Some(&valid("pump-1")), true), r#"Device("pump-1")"#);
        assert_eq!(
            check("pump-1", Some(&mint("pump-1", "good-key", NOW)), false),
            "Bad User Name or Password (0x86): the token expired at 1700000000 (unix seconds; it is now 1700000000)"
        );
        assert_eq!(
            check("pump-2", Some(&valid("pump-1")), false),
            r#"Bad User Name or Password (0x86): the token is for resource "devices/pump-1", not "devices/pump-2""#
        );
        let wrong = "Bad User Name or Password (0x86): the token's signature does not match the device's key, or there is no such device";
        assert_eq!(check("pump-1", Some(&mint("pump-1", "bad-key", NOW + 60)), false), wrong);
        // An unknown device and a device without a signing key say the same as a wrong key.
        assert_eq!(check("nobody", Some(&valid("nobody")), false), wrong);
        assert_eq!(check("pump-3", Some(&valid("pump-3")), false), wrong);
        // A right token of a disabled device, like a right key.
        assert_eq!(check("pump-2", Some(&valid("pump-2")), false), "Not authorized (0x87)");
        assert_eq!(check("pump-2", Some(&mint("pump-2", "bad-key", NOW + 60)), false), wrong);
        assert_eq!(
            check("pump-1", Some("SharedAccessSignature sr=devices%2Fpump-1"), false),
            "Bad User Name or Password (0x86): the token has no sig field"
        );
        // Without the prefix a token is taken for a key, and is a wrong one.
        let unprefixed = valid("pump-1").replace("SharedAccessSignature ", "");
        assert_eq!(check("pump-1", Some(&unprefixed), false), "Bad User Name or Password (0x86)");
    }

    #[test]
    fn rotating_the_key_retires_its_tokens() {
        let mut devices = devices();
        let token = mint("pump-1", "good-key", NOW + 3600);
        if let Some(device) = devices.get_mut("pump-1") {
            device.set_key("new-key", [6; 16], 1);
        }
        let outcome = authenticate_at(Some(&devices), "pump-1", Some(token.as_bytes()), false, NOW);
        assert_eq!(outcome, Err(TokenError::Signature.into()));
        let fresh = mint("pump-1", "new-key", NOW + 3600);
        let outcome = authenticate_at(Some(&devices), "pump-1", Some(fresh.as_bytes()), false, NOW);
        assert_eq!(outcome, Ok(Identity::Device("pump-1".into())));
    }

    #[test]
    fn before_the_registry_is_read_everyone_is_told_to_come_back() {
        let outcome = authenticate(None, "pump-1", Some(b"good-key"), false);
        assert_eq!(outcome, Err(ReasonCode::ServerUnavailable));
        let token = mint("pump-1", "good-key", NOW + 1);
        let outcome = authenticate_at(None, "pump-1", Some(token.as_bytes()), false, NOW);
        assert_eq!(outcome, Err(ReasonCode::ServerUnavailable.into()));
        // A token that is wrong on its face is refused for good at once.
        let outcome = authenticate_at(None, "pump-1", Some(token.as_bytes()), false, NOW + 1);
        assert!(matches!(outcome, Err(Refusal { token: Some(TokenError::Expired { .. }), .. })));
    }
}
