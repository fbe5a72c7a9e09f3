//! Who a connecting MQTT client is: a registered device proving it holds the device's key, or
//! (only where allowed) an anonymous client with no device identity. Pure: the caller passes the
//! current device map, so every outcome is a unit test.
//!
//! The refusals follow what device clients expect: an unknown device and a wrong key are the
//! same answer, Bad User Name or Password (5.0: 0x86, 3.1.1: return code 4), so a caller cannot
//! probe which ids exist; a disabled device whose key is right is Not authorized (0x87 / 5);
//! an anonymous client where anonymity is off is Not authorized too, as Mosquitto 2 answers.

use tidewater_mqtt::ReasonCode;

use crate::registry::DeviceMap;

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

/// Decides a CONNECT: `client_id` is the device id and `password` its key. `devices` is `None`
/// while the registry has not been read yet, which refuses everyone as Server unavailable (a
/// retry later succeeds) rather than as unknown.
pub fn authenticate(
    devices: Option<&DeviceMap>,
    client_id: &str,
    password: Option<&[u8]>,
    allow_anonymous: bool,
) -> Result<Identity, ReasonCode> {
    let Some(password) = password else {
        return if allow_anonymous { Ok(Identity::Anonymous) } else { Err(ReasonCode::NotAuthorized) };
    };
    let devices = devices.ok_or(ReasonCode::ServerUnavailable)?;
    let device = devices.get(client_id).ok_or(ReasonCode::BadUserNameOrPassword)?;
    // The key is checked before the disabled flag, so only the key's holder learns that a
    // device is disabled.
    if !device.key_matches(password) {
        return Err(ReasonCode::BadUserNameOrPassword);
    }
    if device.disabled {
        return Err(ReasonCode::NotAuthorized);
    }
    Ok(Identity::Device(device.id.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;

    fn check(client_id: &str, password: Option<&str>, allow_anonymous: bool) -> String {
        let mut devices = DeviceMap::new();
        devices.insert("pump-1".into(), Device::new("pump-1", "good-key", [3; 16], 0));
        let mut off = Device::new("pump-2", "good-key", [4; 16], 0);
        off.disabled = true;
        devices.insert("pump-2".into(), off);
        match authenticate(Some(&devices), client_id, password.map(str::as_bytes), allow_anonymous) {
            Ok(identity) => format!("{identity:?}"),
            Err(code) => code.to_string(),
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
    }

    #[test]
    fn before_the_registry_is_read_everyone_is_told_to_come_back() {
        let outcome = authenticate(None, "pump-1", Some(b"good-key"), false);
        assert_eq!(outcome, Err(ReasonCode::ServerUnavailable));
    }
}
