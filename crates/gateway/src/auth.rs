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
//!
//! A client whose user name and password are a SCRAM user's and whose client id names no device
//! logs in as that user ([`user_login`] tells which; [`crate::users`] checks the password); an
//! unknown user or a wrong password is Bad User Name or Password too.
//!
//! Over TLS, a client that sends no password but presented a certificate is an X.509 device
//! ([`authenticate_certificate_at`]): the client id names the device, and the certificate must
//! be the one registered by thumbprint, or chain to a registered CA with subject CN = the
//! client id, and be valid now. Every way the certificate can fail (an unknown device or
//! thumbprint, a CA not registered, a CN that is not the client id, expired or not yet valid,
//! a device registered with a key) is Bad User Name or Password, as a wrong key is; a disabled
//! device whose certificate is right is Not authorized. The log says which it was.

use rustls::pki_types::CertificateDer;
use tidewater_mqtt::ReasonCode;
use tidewater_security::client_certificate::{
    check_validity, common_name, thumbprint, verify_chain, CertificateRefusal,
};

use crate::device::X509Identity;
use crate::registry::{DeviceMap, RegistryView};
use crate::token::{self, TokenError};

/// The identity a connection publishes as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// An authenticated device; its id is stamped into every record it produces.
    Device(String),
    /// A SCRAM user of the cluster ([`crate::users`]): plain pub/sub like an anonymous client,
    /// under the topic rules of its name ([`crate::topic_rules`]).
    User(String),
    /// Allowed only by an explicit setting; never has a device id, so it can publish to no
    /// device's topics.
    Anonymous,
}

impl Identity {
    pub fn device_id(&self) -> Option<&str> {
        match self {
            Identity::Device(id) => Some(id),
            Identity::User(_) | Identity::Anonymous => None,
        }
    }

    /// The user name of a user, for topic rules.
    pub fn user(&self) -> Option<&str> {
        match self {
            Identity::User(name) => Some(name),
            Identity::Device(_) | Identity::Anonymous => None,
        }
    }
}

/// Whether a CONNECT is a SCRAM user logging in rather than a device, and as whom. Devices come
/// first, so nothing a device does changes: a CONNECT is a user's only when it has a password
/// that is not a SAS token, a non-empty user name, and a client id that names no registered
/// device. (Before the registry is read it is a device's, refused as Server unavailable.) A
/// user whose client id names a device is checked as that device, and refused.
pub fn user_login<'a>(
    devices: Option<&DeviceMap>,
    client_id: &str,
    user_name: Option<&'a str>,
    password: Option<&[u8]>,
) -> Option<&'a str> {
    let user_name = user_name.filter(|name| !name.is_empty())?;
    let password = password?;
    if token::is_token(password) {
        return None;
    }
    let devices = devices?;
    (!devices.contains_key(client_id)).then_some(user_name)
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

/// Why a client certificate did not open a device, for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateProblem {
    #[error("the device registry has not been read yet")]
    RegistryNotRead,
    #[error("no device {0:?}")]
    UnknownDevice(String),
    #[error("device {0:?} is not registered for X.509 (it uses a key)")]
    NotX509(String),
    #[error("unknown thumbprint {0} (not the device's primary or secondary)")]
    UnknownThumbprint(String),
    #[error("the certificate's subject CN {common_name:?} is not the client id {client_id:?}")]
    CommonNameMismatch { common_name: Option<String>, client_id: String },
    #[error(transparent)]
    Certificate(#[from] CertificateRefusal),
    #[error("device {0:?} is disabled")]
    Disabled(String),
}

impl CertificateProblem {
    /// What the client is told: come back later, the device is disabled, or bad credentials.
    pub fn code(&self) -> ReasonCode {
        match self {
            CertificateProblem::RegistryNotRead => ReasonCode::ServerUnavailable,
            CertificateProblem::Disabled(_) => ReasonCode::NotAuthorized,
            _ => ReasonCode::BadUserNameOrPassword,
        }
    }
}

/// Decides a CONNECT (or an HTTPS request) that proves itself with the certificate `chain`
/// (leaf first) presented in the TLS handshake, as device `client_id`, at `now_unix_secs`.
pub fn authenticate_certificate_at(
    registry: Option<&RegistryView>,
    client_id: &str,
    chain: &[CertificateDer<'_>],
    now_unix_secs: u64,
) -> Result<Identity, CertificateProblem> {
    let registry = registry.ok_or(CertificateProblem::RegistryNotRead)?;
    let device = registry
        .devices
        .get(client_id)
        .ok_or_else(|| CertificateProblem::UnknownDevice(client_id.to_string()))?;
    let leaf = chain.first().ok_or(CertificateRefusal::Invalid("no certificate".to_string()))?;
    match &device.x509 {
        None => return Err(CertificateProblem::NotX509(client_id.to_string())),
        Some(X509Identity::Thumbprint { primary, secondary }) => {
            let presented = thumbprint(leaf);
            if presented != *primary && Some(&presented) != secondary.as_ref() {
                return Err(CertificateProblem::UnknownThumbprint(presented));
            }
            check_validity(leaf, now_unix_secs)?;
        }
        Some(X509Identity::CertificateAuthority) => {
            let name = common_name(leaf)?;
            if name.as_deref() != Some(client_id) {
                return Err(CertificateProblem::CommonNameMismatch {
                    common_name: name,
                    client_id: client_id.to_string(),
                });
            }
            let cas: Vec<CertificateDer<'static>> = registry
                .cas
                .values()
                .filter_map(|ca| ca.certificate_der().map(CertificateDer::from))
                .collect();
            verify_chain(chain, &cas, now_unix_secs)?;
        }
    }
    if device.disabled {
        return Err(CertificateProblem::Disabled(client_id.to_string()));
    }
    Ok(Identity::Device(device.id.clone()))
}

/// [`authenticate_certificate_at`] now, logging why a certificate was refused.
pub fn authenticate_certificate(
    registry: Option<&RegistryView>,
    client_id: &str,
    chain: &[CertificateDer<'_>],
) -> Result<Identity, ReasonCode> {
    authenticate_certificate_at(registry, client_id, chain, unix_now_secs()).map_err(|problem| {
        crate::metrics::gateway().certificate_refused(&problem);
        tracing::info!(client_id, reason = %problem, "refused a client certificate");
        problem.code()
    })
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
    fn a_user_logs_in_only_where_no_device_would() {
        let devices = devices();
        let login = |client_id: &str, user: Option<&'static str>, password: Option<&str>| {
            user_login(Some(&devices), client_id, user, password.map(str::as_bytes))
        };
        assert_eq!(login("app-1", Some("alice"), Some("pw")), Some("alice"));
        // A device's client id is always the device's, whatever user name it sends.
        assert_eq!(login("pump-1", Some("alice"), Some("pw")), None);
        assert_eq!(login("app-1", Some(""), Some("pw")), None);
        assert_eq!(login("app-1", None, Some("pw")), None);
        assert_eq!(login("app-1", Some("alice"), None), None);
        assert_eq!(login("app-1", Some("alice"), Some("SharedAccessSignature sr=x")), None);
        // Before the registry is read, nothing is known to be a user.
        assert_eq!(user_login(None, "app-1", Some("alice"), Some(b"pw")), None);
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

    /// A CA (or a self-signed certificate) made with rcgen, and certificates it signs.
    struct Issuer {
        certificate: rcgen::Certificate,
        key: rcgen::KeyPair,
    }

    fn params(common_name: &str, years: (i32, i32), ca: bool) -> rcgen::CertificateParams {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
        params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        params
    }

    fn issuer(name: &str, years: (i32, i32)) -> Issuer {
        let key = rcgen::KeyPair::generate().expect("key");
        let certificate = params(name, years, true).self_signed(&key).expect("self-signed");
        Issuer { certificate, key }
    }

    fn signed(name: &str, years: (i32, i32), by: &Issuer) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        params(name, years, false).signed_by(&key, &by.certificate, &by.key).expect("signed").der().clone()
    }

    #[test]
    fn certificate_outcomes() {
        use crate::device::{Device, DeviceCa, X509Identity};
        use base64::Engine;
        // 2030-01-01: inside 2020..2040, after 2025.
        const AT: u64 = 1_893_456_000;
        let factory = issuer("factory", (2020, 2040));
        let foreign = issuer("foreign", (2020, 2040));
        let self_signed = issuer("cam-2", (2020, 2040));
        let rolled = issuer("cam-2", (2020, 2040));
        let old = issuer("cam-3", (2020, 2025));
        let mut registry = RegistryView::default();
        let mut add = |device: Device| registry.devices.insert(device.id.clone(), device);
        add(Device::new_x509("cam-1", X509Identity::CertificateAuthority, 0));
        add(Device::new_x509(
            "cam-2",
            X509Identity::Thumbprint {
                primary: thumbprint(self_signed.certificate.der()),
                secondary: Some(thumbprint(rolled.certificate.der())),
            },
            0,
        ));
        add(Device::new_x509(
            "cam-3",
            X509Identity::Thumbprint { primary: thumbprint(old.certificate.der()), secondary: None },
            0,
        ));
        let mut off = Device::new_x509("cam-off", X509Identity::CertificateAuthority, 0);
        off.disabled = true;
        add(off);
        add(Device::new("pump-1", "good-key", [3; 16], 0));
        registry.cas.insert(
            "factory".into(),
            DeviceCa {
                name: "factory".into(),
                certificate_der_base64: base64::engine::general_purpose::STANDARD
                    .encode(factory.certificate.der()),
                subject: "CN=factory".into(),
                added_at_ms: 0,
            },
        );
        let check = |client_id: &str, certificate: &CertificateDer<'_>| match authenticate_certificate_at(
            Some(&registry),
            client_id,
            std::slice::from_ref(certificate),
            AT,
        ) {
            Ok(identity) => format!("{identity:?}"),
            Err(problem) => format!("{}: {problem}", problem.code()),
        };
        let bad = "Bad User Name or Password (0x86)";
        assert_eq!(check("cam-1", &signed("cam-1", (2020, 2040), &factory)), r#"Device("cam-1")"#);
        assert_eq!(check("cam-2", self_signed.certificate.der()), r#"Device("cam-2")"#);
        assert_eq!(check("cam-2", rolled.certificate.der()), r#"Device("cam-2")"#);
        assert_eq!(
            check("cam-1", &signed("cam-1", (2020, 2040), &foreign)),
            format!("{bad}: the certificate does not chain to a registered CA")
        );
        assert_eq!(
            check("cam-1", &signed("cam-9", (2020, 2040), &factory)),
            format!(r#"{bad}: the certificate's subject CN Some("cam-9") is not the client id "cam-1""#)
        );
        assert_eq!(
            check("cam-1", &signed("cam-1", (2020, 2025), &factory)),
            format!("{bad}: the certificate expired")
        );
        assert_eq!(
            check("cam-1", &signed("cam-1", (2035, 2040), &factory)),
            format!("{bad}: the certificate is not valid yet")
        );
        assert_eq!(check("cam-3", old.certificate.der()), format!("{bad}: the certificate expired"));
        let unknown = check("cam-2", foreign.certificate.der());
        assert!(unknown.starts_with(&format!("{bad}: unknown thumbprint ")), "{unknown}");
        assert_eq!(check("cam-9", self_signed.certificate.der()), format!(r#"{bad}: no device "cam-9""#));
        assert_eq!(
            check("pump-1", self_signed.certificate.der()),
            format!(r#"{bad}: device "pump-1" is not registered for X.509 (it uses a key)"#)
        );
        assert_eq!(
            check("cam-off", &signed("cam-off", (2020, 2040), &factory)),
            r#"Not authorized (0x87): device "cam-off" is disabled"#
        );
        // A disabled device whose certificate is wrong learns nothing about being disabled.
        assert!(check("cam-off", &signed("cam-off", (2020, 2040), &foreign)).starts_with(bad));
        let unread =
            authenticate_certificate_at(None, "cam-1", &[signed("cam-1", (2020, 2040), &factory)], AT);
        assert_eq!(unread.map_err(|problem| problem.code()), Err(ReasonCode::ServerUnavailable));
    }
}
