//! TLS configuration shared by every listener Tidewater serves over TLS: the server's
//! certificate chain and key, loaded once from PEM files (`--tls-cert`, `--tls-key`), and the
//! CA that client certificates must chain to (`--tls-client-ca`) for mutual TLS.
//!
//! A file that does not load is an error naming the file and the reason, so that `serve` stops
//! with a message a user can act on, never with a listener that fails every handshake. The
//! crypto provider is `ring`, as for the rest of the workspace's rustls (webhook deliveries).
//!
//! A client certificate becomes a principal as Kafka's default principal builder makes it:
//! `User:` followed by the subject's distinguished name in RFC 2253 form
//! (`CN=alice,OU=eng,O=Acme`), passed through `ssl.principal.mapping.rules` (see
//! `principal_mapping`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::principal::KafkaPrincipal;
use crate::principal_mapping::PrincipalMapping;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {reason}")]
    File { what: &'static str, path: PathBuf, reason: String },
    #[error("the key in {key} does not belong to the certificate in {cert}: {reason}")]
    KeyMismatch { cert: PathBuf, key: PathBuf, reason: String },
    #[error("client CA {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
}

/// How a listener treats client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Ask for none (SASL_SSL: the identity comes from SASL).
    None,
    /// Ask for one and refuse the handshake without one that chains to the client CA (an `SSL`
    /// listener with `--tls-client-ca`).
    Required,
    /// Ask for one, accept a connection without one, refuse one that does not chain to the CA.
    Optional,
    /// Ask for one, accept any or none, and check only the client's handshake signature (that
    /// it holds the certificate's key). The application decides what the certificate is worth
    /// after the handshake (see [`crate::client_certificate`]): the device gateway, against
    /// devices and CAs registered while it runs. Needs no client CA.
    Requested,
}

/// The server's identity and the client CA, loaded from PEM files.
#[derive(Clone)]
pub struct TlsIdentity {
    certificates: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    client_roots: Option<Arc<RootCertStore>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("TlsIdentity")
            .field("certificates", &self.certificates.len())
            .field("client_ca", &self.client_roots.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Loads the certificate chain (leaf first) from `cert`, the private key (PKCS#8, PKCS#1 or
    /// SEC1) from `key`, and, if given, the CA certificates client certificates must chain to.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<TlsIdentity, TlsError> {
        let certificates = read_certificates(cert, "certificate")?;
        let private_key = PrivateKeyDer::from_pem_file(key).map_err(|error| TlsError::File {
            what: "private key",
            path: key.to_path_buf(),
            reason: pem_reason(&error, "PEM private key"),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let signing_key =
            provider.key_provider.load_private_key(private_key.clone_key()).map_err(|error| {
                TlsError::File { what: "private key", path: key.to_path_buf(), reason: error.to_string() }
            })?;
        rustls::sign::CertifiedKey::new(certificates.clone(), signing_key).keys_match().map_err(|error| {
            TlsError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                reason: error.to_string(),
            }
        })?;
        let client_roots = match client_ca {
            None => None,
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for certificate in read_certificates(path, "client CA")? {
                    roots.add(certificate).map_err(|error| TlsError::ClientCa {
                        path: path.to_path_buf(),
                        reason: error.to_string(),
                    })?;
                }
                Some(Arc::new(roots))
            }
        };
        Ok(TlsIdentity { certificates, key: Arc::new(private_key), client_roots, provider })
    }

    /// Whether a client CA was given, so listeners can ask for client certificates.
    pub fn has_client_ca(&self) -> bool {
        self.client_roots.is_some()
    }

    /// A rustls server configuration for one listener. `Required` and `Optional` need a client
    /// CA; asking for them without one is a configuration error the caller reports.
    pub fn server_config(
        &self,
        client_auth: ClientAuth,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| self.error(error.to_string()))?;
        let builder = match (client_auth, &self.client_roots) {
            (ClientAuth::None, _) => builder.with_no_client_auth(),
            (ClientAuth::Requested, _) => builder.with_client_cert_verifier(Arc::new(AnyClientCertificate {
                provider: self.provider.clone(),
            })),
            (ClientAuth::Required | ClientAuth::Optional, None) => {
                return Err(self.error("client certificates were asked for without a client CA".to_string()))
            }
            (ClientAuth::Required | ClientAuth::Optional, Some(roots)) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), self.provider.clone());
                let verifier = if client_auth == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(
                    verifier.build().map_err(|error| self.error(error.to_string()))?,
                )
            }
        };
        let mut config = builder
            .with_single_cert(self.certificates.clone(), self.key.clone_key())
            .map_err(|error| self.error(error.to_string()))?;
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(Arc::new(config))
    }

    fn error(&self, reason: String) -> TlsError {
        TlsError::File { what: "TLS configuration", path: PathBuf::new(), reason }
    }
}

/// [`ClientAuth::Requested`]: every certificate passes the handshake, and every signature is
/// checked with the provider's algorithms, as webpki's verifier checks them.
#[derive(Debug)]
struct AnyClientCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::server::danger::ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints: a client then sends whatever certificate it has (RFC 8446 4.2.4).
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn read_certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File { what, path: path.to_path_buf(), reason };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(pem_reason(&error, "PEM certificates")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(pem_reason(&error, "PEM certificates")))?;
    if certificates.is_empty() {
        return Err(file_error("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_string()));
    }
    for certificate in &certificates {
        x509_parser::parse_x509_certificate(certificate)
            .map_err(|error| file_error(format!("a certificate does not parse: {error}")))?;
    }
    Ok(certificates)
}

/// Says what went wrong reading a PEM file in words a user can act on.
fn pem_reason(error: &rustls::pki_types::pem::Error, expected: &str) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::Io(error) => error.to_string(),
        Error::NoItemsFound => format!("holds no {expected}"),
        other => format!("does not hold valid {expected}: {other:?}"),
    }
}

/// The subject of a DER certificate as an RFC 2253 distinguished name, as Java's
/// `X500Principal.getName()` writes it: the most specific RDN first, attributes by their short
/// names (an unknown one by its dotted OID with the value as `#` and hex DER), values escaped.
pub fn subject_name(certificate: &[u8]) -> Result<String, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).map_err(|error| error.to_string())?;
    let mut rdns: Vec<String> = Vec::new();
    for rdn in parsed.subject().iter() {
        let attributes: Vec<String> = rdn
            .iter()
            .map(|attribute| {
                let oid = attribute.attr_type();
                match short_name(&oid.to_id_string()) {
                    Some(name) => match attribute.as_str() {
                        Ok(value) => format!("{name}={}", escape_rfc2253(value)),
                        Err(_) => format!("{name}=#{}", hex(attribute.attr_value().as_bytes())),
                    },
                    None => format!("{}=#{}", oid.to_id_string(), hex(attribute.attr_value().as_bytes())),
                }
            })
            .collect();
        rdns.push(attributes.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

/// The principal a client certificate authenticates: `User:` and its mapped subject name.
pub fn certificate_principal(
    certificate: &[u8],
    mapping: &PrincipalMapping,
) -> Result<KafkaPrincipal, String> {
    let name = subject_name(certificate)?;
    mapping.apply(&name).map(KafkaPrincipal::user)
}

/// The keywords Java's RFC 2253 form uses.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

fn escape_rfc2253(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (index, character) in value.chars().enumerate() {
        let special = matches!(character, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (index == 0 && (character == '#' || character == ' '))
            || (index == last && character == ' ');
        if special {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2253_values_are_escaped_as_java_does() {
        assert_eq!(escape_rfc2253("plain"), "plain");
        assert_eq!(escape_rfc2253("Acme, Inc."), "Acme\\, Inc.");
        assert_eq!(escape_rfc2253("#1 a+b"), "\\#1 a\\+b");
        assert_eq!(escape_rfc2253(" padded "), "\\ padded\\ ");
    }

    #[test]
    fn missing_and_wrong_files_are_named_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("tidewater-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let not_pem = dir.join("not-pem.txt");
        std::fs::write(&not_pem, "hello").expect("write");
        let missing = dir.join("missing.pem");
        let error = TlsIdentity::load(&missing, &missing, None).expect_err("missing file").to_string();
        assert!(error.contains("missing.pem") && error.contains("certificate"), "{error}");
        let error = TlsIdentity::load(&not_pem, &not_pem, None).expect_err("not PEM").to_string();
        assert!(error.contains("not-pem.txt") && error.contains("no PEM certificate"), "{error}");
        let (cert, _) = write_certificate(&dir, "server", &[(rcgen::DnType::CommonName, "localhost")]);
        let error = TlsIdentity::load(&cert, &not_pem, None).expect_err("key not PEM").to_string();
        assert!(
            error.contains("private key") && error.ends_with("not-pem.txt: holds no PEM private key"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A self-signed certificate with `subject`, written as PEM files; returns (cert, key) paths.
    fn write_certificate(dir: &Path, name: &str, subject: &[(rcgen::DnType, &str)]) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        let certificate = params.self_signed(&key).expect("self-signed");
        let (cert_path, key_path) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&cert_path, certificate.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }

    #[test]
    fn certificates_load_and_their_subject_becomes_a_kafka_style_principal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let subject = [
            (rcgen::DnType::CountryName, "US"),
            (rcgen::DnType::OrganizationName, "Acme, Inc."),
            (rcgen::DnType::OrganizationalUnitName, "eng"),
            (rcgen::DnType::CommonName, "alice"),
        ];
        let (cert, key) = write_certificate(dir.path(), "alice", &subject);
        let identity = TlsIdentity::load(&cert, &key, Some(&cert)).expect("loads");
        for client_auth in
            [ClientAuth::None, ClientAuth::Required, ClientAuth::Optional, ClientAuth::Requested]
        {
            identity.server_config(client_auth, &[]).expect("a server configuration");
        }
        let der = CertificateDer::from_pem_file(&cert).expect("der");
        assert_eq!(subject_name(&der).expect("subject"), "CN=alice,OU=eng,O=Acme\\, Inc.,C=US");
        let default = certificate_principal(&der, &PrincipalMapping::default()).expect("principal");
        assert_eq!(default.to_string(), "User:CN=alice,OU=eng,O=Acme\\, Inc.,C=US");
        let cn_only = PrincipalMapping::parse("RULE:^CN=([^,]*),.*$/$1/").expect("rules");
        assert_eq!(certificate_principal(&der, &cn_only).expect("principal").to_string(), "User:alice");

        // Another certificate's key does not match, and the error says which files.
        let (_, other_key) = write_certificate(dir.path(), "bob", &[(rcgen::DnType::CommonName, "bob")]);
        let error = TlsIdentity::load(&cert, &other_key, None).expect_err("mismatch").to_string();
        assert!(error.contains("bob.key") && error.contains("alice.crt"), "{error}");
        // Client certificates cannot be asked for without a CA to check them against.
        let without_ca = TlsIdentity::load(&cert, &key, None).expect("loads");
        assert!(without_ca.server_config(ClientAuth::Required, &[]).is_err());
        // Requested leaves the decision to the application, so it needs none.
        assert!(without_ca.server_config(ClientAuth::Requested, &[]).is_ok());
    }
}
