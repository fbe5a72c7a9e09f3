//! Listeners: where clients connect and how each connection proves who it is, as Kafka's
//! `listeners` and `listener.security.protocol.map` describe them. A listener has a security
//! protocol (`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`), the TLS configuration its
//! protocol needs, the SASL mechanisms it enables, and the address clients that came in on it
//! are told to connect to (Metadata answers with the advertised address of the client's own
//! listener, so a client on an internal network and one outside each get an address they can
//! reach).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tidewater_security::principal_mapping::PrincipalMapping;
use tidewater_security::sasl::{CredentialSource, Mechanism};

/// Kafka's security protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for SecurityProtocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SecurityProtocol::ALL
            .into_iter()
            .find(|protocol| protocol.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                format!(
                    "unknown security protocol {text:?}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
                )
            })
    }
}

/// `[PROTOCOL://]host:port`, the form of `--kafka-listen`: where to bind and with what protocol
/// (`PLAINTEXT` when none is given). The host is kept as text; binding resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerAddress {
    pub protocol: SecurityProtocol,
    pub host: String,
    pub port: u16,
}

impl ListenerAddress {
    /// `host:port`, with brackets around an IPv6 host, as `bind` and clients take it.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for ListenerAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}://{}", self.protocol, self.host_port())
    }
}

impl FromStr for ListenerAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (protocol, address) = match text.split_once("://") {
            Some((protocol, address)) => (protocol.parse()?, address),
            None => (SecurityProtocol::Plaintext, text),
        };
        let (host, port) = split_host_port(address).ok_or_else(|| {
            format!("{text:?} is not [PROTOCOL://]host:port (such as SASL_SSL://0.0.0.0:9093)")
        })?;
        Ok(ListenerAddress { protocol, host, port })
    }
}

/// Splits `host:port` or `[ipv6]:port`; the host may be empty (all interfaces, as Kafka reads
/// `PLAINTEXT://:9092`), the port must be a number.
pub fn split_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.strip_suffix(']')?.to_string(),
        None if host.contains(':') => return None,
        None => host.to_string(),
    };
    Some((host, port))
}

/// What a request handler may want to know about the listener a connection came in on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInfo {
    /// The listener's name, for logs (the protocol's name unless the server names it otherwise,
    /// as it does its internal listener).
    pub name: String,
    pub protocol: SecurityProtocol,
    /// Where this listener's clients are told to connect (Metadata, FindCoordinator,
    /// DescribeCluster).
    pub advertised_host: String,
    pub advertised_port: u16,
}

/// SASL on one listener.
#[derive(Debug, Clone)]
pub struct SaslSettings {
    /// The mechanisms this listener enables, in the order SaslHandshake lists them.
    pub mechanisms: Vec<Mechanism>,
    /// Where users' credentials come from (the broker's store).
    pub credentials: Arc<dyn CredentialSource>,
    /// Kafka's `connections.max.reauth.ms` (KIP-368): a session lasts this long, after which the
    /// client must re-authenticate on the same connection or be disconnected. `None` lets
    /// sessions last as long as the connection.
    pub session_lifetime: Option<Duration>,
}

/// A listener's whole configuration.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub info: Arc<ListenerInfo>,
    /// Present exactly when the protocol uses TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// On an `SSL` listener that requires client certificates, how a certificate's subject
    /// becomes the principal's name. `None` leaves `SSL` connections anonymous.
    pub certificate_principal: Option<PrincipalMapping>,
    /// Present exactly when the protocol uses SASL.
    pub sasl: Option<SaslSettings>,
}

impl ListenerConfig {
    /// A `PLAINTEXT` listener advertising `host:port`.
    pub fn plaintext(advertised_host: impl Into<String>, advertised_port: u16) -> ListenerConfig {
        ListenerConfig {
            info: Arc::new(ListenerInfo {
                name: SecurityProtocol::Plaintext.name().to_string(),
                protocol: SecurityProtocol::Plaintext,
                advertised_host: advertised_host.into(),
                advertised_port,
            }),
            tls: None,
            certificate_principal: None,
            sasl: None,
        }
    }

    /// Whether connections on this listener prove an identity (SASL, or a client certificate).
    pub fn authenticates(&self) -> bool {
        self.sasl.is_some() || self.certificate_principal.is_some()
    }

    /// Checks that the settings fit the protocol: TLS exactly for SSL and SASL_SSL, SASL exactly
    /// for SASL_*, at least one mechanism.
    pub fn validate(&self) -> Result<(), String> {
        let protocol = self.info.protocol;
        if protocol.uses_tls() != self.tls.is_some() {
            return Err(format!(
                "listener {}: {protocol} needs TLS settings exactly when it uses TLS",
                self.info.name
            ));
        }
        if protocol.uses_sasl() != self.sasl.is_some() {
            return Err(format!(
                "listener {}: SASL settings belong to SASL_* listeners only",
                self.info.name
            ));
        }
        if let Some(sasl) = &self.sasl {
            if sasl.mechanisms.is_empty() {
                return Err(format!("listener {}: no SASL mechanism enabled", self.info.name));
            }
        }
        if self.certificate_principal.is_some() && protocol != SecurityProtocol::Ssl {
            return Err(format!(
                "listener {}: client-certificate principals are for SSL listeners",
                self.info.name
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_addresses_parse_as_kafka_writes_them() {
        let check = |text: &str, expected: Result<(SecurityProtocol, &str, u16), &str>| {
            let parsed = text.parse::<ListenerAddress>();
            match (&parsed, expected) {
                (Ok(address), Ok((protocol, host, port))) => {
                    assert_eq!(
                        (address.protocol, address.host.as_str(), address.port),
                        (protocol, host, port),
                        "{text}"
                    )
                }
                (Err(error), Err(expected)) => assert!(error.contains(expected), "{text}: {error}"),
                _ => panic!("{text}: {parsed:?}"),
            }
        };
        check("127.0.0.1:9092", Ok((SecurityProtocol::Plaintext, "127.0.0.1", 9092)));
        check("SASL_SSL://0.0.0.0:9093", Ok((SecurityProtocol::SaslSsl, "0.0.0.0", 9093)));
        check("ssl://broker.example:9094", Ok((SecurityProtocol::Ssl, "broker.example", 9094)));
        check("SASL_PLAINTEXT://[::1]:9095", Ok((SecurityProtocol::SaslPlaintext, "::1", 9095)));
        check("PLAINTEXT://:9092", Ok((SecurityProtocol::Plaintext, "", 9092)));
        check("KERBEROS://host:1", Err("unknown security protocol"));
        check("host", Err("is not [PROTOCOL://]host:port"));
        check("host:port", Err("is not"));
        check("::1:9092", Err("is not"));
        assert_eq!(
            "SASL_SSL://[::1]:9".parse::<ListenerAddress>().map(|a| a.to_string()),
            Ok("SASL_SSL://[::1]:9".to_string())
        );
    }
}
