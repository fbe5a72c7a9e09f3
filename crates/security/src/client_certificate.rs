//! Client certificates checked by the application after the handshake, against what it keeps
//! itself rather than a CA fixed at start: the device gateway's devices registered by
//! thumbprint and its registered device CAs, which change while it runs.
//!
//! The handshake ([`crate::tls::ClientAuth::Requested`]) asks every client for a certificate,
//! accepts any (or none), and checks only the client's signature over the handshake, which
//! proves it holds the certificate's key. What the certificate is worth is decided here:
//! [`thumbprint`] is what a self-signed device is registered by (IoT Hub's SHA-256 thumbprint,
//! hex), [`check_validity`] its validity period, [`verify_chain`] whether a chain leads to one
//! of a set of CAs (validity included), and [`common_name`] the subject CN a CA-signed device's
//! id must equal.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore};
use sha2::{Digest, Sha256};

/// Why a client certificate is refused, in words for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateRefusal {
    #[error("the certificate expired")]
    Expired,
    #[error("the certificate is not valid yet")]
    NotYetValid,
    #[error("the certificate does not chain to a registered CA")]
    UnknownIssuer,
    #[error("the certificate is not acceptable: {0}")]
    Invalid(String),
}

/// The SHA-256 of the DER certificate as lowercase hex, as IoT Hub's X.509 thumbprints (which
/// compare case-insensitively).
pub fn thumbprint(certificate: &[u8]) -> String {
    Sha256::digest(certificate).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Normalizes a thumbprint as an operator typed it (either case, with or without `:`
/// separators) to [`thumbprint`]'s form, or `None` if it is not 32 bytes of hex.
pub fn normalize_thumbprint(text: &str) -> Option<String> {
    let hex: String =
        text.chars().filter(|character| *character != ':').collect::<String>().to_ascii_lowercase();
    (hex.len() == 64 && hex.chars().all(|character| character.is_ascii_hexdigit())).then_some(hex)
}

/// The subject's common name, if it has one that is a string.
pub fn common_name(certificate: &[u8]) -> Result<Option<String>, CertificateRefusal> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate)
        .map_err(|error| CertificateRefusal::Invalid(error.to_string()))?;
    let name = parsed.subject().iter_common_name().next().and_then(|name| name.as_str().ok());
    Ok(name.map(str::to_string))
}

/// Whether `now_unix_secs` falls within the certificate's validity period.
pub fn check_validity(certificate: &[u8], now_unix_secs: u64) -> Result<(), CertificateRefusal> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate)
        .map_err(|error| CertificateRefusal::Invalid(error.to_string()))?;
    let now = i64::try_from(now_unix_secs).unwrap_or(i64::MAX);
    let validity = parsed.validity();
    if now < validity.not_before.timestamp() {
        return Err(CertificateRefusal::NotYetValid);
    }
    if now > validity.not_after.timestamp() {
        return Err(CertificateRefusal::Expired);
    }
    Ok(())
}

/// Whether `chain` (leaf first, then what the client sent along) leads to one of `cas` and
/// every certificate on the way is valid at `now_unix_secs`: webpki's path building, as for the
/// Kafka listener's `--tls-client-ca`, with the CAs given per call.
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    cas: &[CertificateDer<'static>],
    now_unix_secs: u64,
) -> Result<(), CertificateRefusal> {
    let (leaf, intermediates) =
        chain.split_first().ok_or(CertificateRefusal::Invalid("no certificate".into()))?;
    let mut roots = RootCertStore::empty();
    for ca in cas {
        // A CA that does not parse as a trust anchor simply anchors nothing.
        let _ = roots.add(ca.clone());
    }
    if roots.is_empty() {
        return Err(CertificateRefusal::UnknownIssuer);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|error| CertificateRefusal::Invalid(error.to_string()))?;
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now_unix_secs));
    match verifier.verify_client_cert(leaf, intermediates, now) {
        Ok(_verified) => Ok(()),
        Err(rustls::Error::InvalidCertificate(error)) => Err(match error {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                CertificateRefusal::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                CertificateRefusal::NotYetValid
            }
            CertificateError::UnknownIssuer => CertificateRefusal::UnknownIssuer,
            other => CertificateRefusal::Invalid(format!("{other:?}")),
        }),
        Err(other) => Err(CertificateRefusal::Invalid(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seconds since the epoch at 2030-01-01, well inside the test certificates' validity.
    const NOW: u64 = 1_893_456_000;

    struct Issued {
        certificate: rcgen::Certificate,
        key: rcgen::KeyPair,
    }

    fn params(common_name: &str, years: (i32, i32)) -> rcgen::CertificateParams {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
        params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
        params
    }

    fn ca(name: &str) -> Issued {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = params(name, (2020, 2040));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        Issued { certificate: params.self_signed(&key).expect("CA"), key }
    }

    fn leaf(name: &str, years: (i32, i32), issuer: &Issued) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let certificate =
            params(name, years).signed_by(&key, &issuer.certificate, &issuer.key).expect("signed");
        certificate.der().clone()
    }

    #[test]
    fn a_chain_is_checked_against_the_cas_given() {
        let (ours, foreign) = (ca("ours"), ca("foreign"));
        let cas = [ours.certificate.der().clone()];
        let check = |certificate: CertificateDer<'static>| verify_chain(&[certificate], &cas, NOW);
        assert_eq!(check(leaf("pump-1", (2020, 2040), &ours)), Ok(()));
        assert_eq!(check(leaf("pump-1", (2020, 2040), &foreign)), Err(CertificateRefusal::UnknownIssuer));
        assert_eq!(check(leaf("pump-1", (2020, 2025), &ours)), Err(CertificateRefusal::Expired));
        assert_eq!(check(leaf("pump-1", (2035, 2040), &ours)), Err(CertificateRefusal::NotYetValid));
        let no_cas = verify_chain(&[leaf("pump-1", (2020, 2040), &ours)], &[], NOW);
        assert_eq!(no_cas, Err(CertificateRefusal::UnknownIssuer));
        assert!(verify_chain(&[], &cas, NOW).is_err());
    }

    #[test]
    fn thumbprints_names_and_validity() {
        let ours = ca("ours");
        let certificate = leaf("pump-1", (2020, 2025), &ours);
        let print = thumbprint(&certificate);
        assert_eq!(print.len(), 64);
        let typed = print.to_ascii_uppercase();
        assert_eq!(normalize_thumbprint(&typed).as_deref(), Some(print.as_str()));
        assert_eq!(normalize_thumbprint("ab:cd"), None);
        assert_eq!(normalize_thumbprint(&"g".repeat(64)), None);
        assert_eq!(common_name(&certificate), Ok(Some("pump-1".to_string())));
        assert_eq!(check_validity(&certificate, 1_700_000_000), Ok(()));
        assert_eq!(check_validity(&certificate, NOW), Err(CertificateRefusal::Expired));
        assert_eq!(check_validity(&certificate, 1_500_000_000), Err(CertificateRefusal::NotYetValid));
        assert!(common_name(b"not a certificate").is_err());
    }
}
