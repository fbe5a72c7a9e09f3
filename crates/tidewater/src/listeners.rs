//! `serve`'s Kafka listeners, from its flags to what the protocol server runs: each
//! `--kafka-listen` with its protocol, the TLS configuration (loaded once from `--tls-cert` and
//! `--tls-key`, shared by every TLS listener), its SASL mechanisms and its advertised address;
//! plus, when the external listeners authenticate or none is plaintext, an internal listener on
//! loopback for the components `serve` runs as Kafka clients of itself.
//!
//! Safe by default: a listener on an address other than loopback that has neither TLS nor
//! authentication stops `serve` with a message saying how to secure it, unless the user accepts
//! the risk with `--allow-insecure-listeners` (Mosquitto 2's stance; Kafka and Redpanda start).
//!
//! The components' identity: the internal listener is `SASL_PLAINTEXT` on 127.0.0.1 with
//! SCRAM-SHA-512 only, and its one user, `__tidewater_internal`, gets a random password made at
//! each start and kept in memory (the broker's credential store holds it apart from the users it
//! stores). SCRAM never sends the password, and the principal is a superuser, so the gateway,
//! triggers and query jobs keep working whatever the external listeners require.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use anyhow::Context;
use tidewater_broker::AuthorizationConfig;
use tidewater_kafka::{ListenerAddress, ListenerConfig, ListenerInfo, SaslSettings, SecurityProtocol};
use tidewater_security::principal_mapping::PrincipalMapping;
use tidewater_security::sasl::{CredentialSource, Mechanism, ScramCredential, ScramMechanism};
use tidewater_security::tls::{ClientAuth, TlsIdentity};
use tidewater_security::KafkaPrincipal;

use crate::cli::KafkaListenerArgs;

/// One listener, bound, with everything but the credential store (which opens with the broker).
#[derive(Debug)]
pub(crate) struct BoundListener {
    pub(crate) socket: std::net::TcpListener,
    pub(crate) info: ListenerInfo,
    tls: Option<Arc<rustls::ServerConfig>>,
    certificate_principal: Option<PrincipalMapping>,
    mechanisms: Option<Vec<Mechanism>>,
}

impl BoundListener {
    /// The protocol server's configuration, once the credential store is open.
    pub(crate) fn config(
        &self,
        credentials: Arc<dyn CredentialSource>,
        session_lifetime: Option<std::time::Duration>,
    ) -> ListenerConfig {
        ListenerConfig {
            info: Arc::new(self.info.clone()),
            tls: self.tls.clone(),
            certificate_principal: self.certificate_principal.clone(),
            sasl: self.mechanisms.clone().map(|mechanisms| SaslSettings {
                mechanisms,
                credentials: credentials.clone(),
                session_lifetime,
            }),
        }
    }

    fn authenticates(&self) -> bool {
        self.mechanisms.is_some() || self.certificate_principal.is_some()
    }
}

/// The components' way into the embedded broker.
#[derive(Debug)]
pub(crate) struct InternalAccess {
    /// `bootstrap.servers` for the components.
    pub(crate) bootstrap: String,
    /// librdkafka properties (security protocol and SASL settings, the password among them).
    pub(crate) properties: Vec<(String, String)>,
    /// The internal user's credential, to put in the broker's store (`None` when the internal
    /// listener needs no authentication).
    pub(crate) credential: Option<(ScramMechanism, ScramCredential)>,
}

/// Every listener `serve` runs.
#[derive(Debug)]
pub(crate) struct Listeners {
    pub(crate) external: Vec<BoundListener>,
    /// The internal listener, when the components cannot use an external one.
    pub(crate) internal: Option<BoundListener>,
    pub(crate) internal_access: InternalAccess,
    /// Whether any listener authenticates: then every request on every listener is authorized.
    pub(crate) authorization: bool,
}

impl Listeners {
    /// The broker's authorization: on when a listener authenticates, with the user's superusers
    /// and, when the components log in, their own principal.
    pub(crate) fn authorization_config(&self, superusers: &[KafkaPrincipal]) -> AuthorizationConfig {
        let mut superusers = superusers.to_vec();
        if self.internal_access.credential.is_some() {
            superusers.push(KafkaPrincipal::user(tidewater_broker::credentials::INTERNAL_USER));
        }
        AuthorizationConfig { enabled: self.authorization, superusers }
    }
}

/// The name of the components' listener in logs.
const INTERNAL_LISTENER_NAME: &str = "INTERNAL";

/// Checks the flags, loads TLS material, and binds every listener (so that a busy port or an
/// unreadable certificate stops the start, and `HOST:0` advertises the port the kernel chose).
/// `other_insecure` names the gateway's listeners that are open to anyone (MQTT with anonymous
/// clients), for the same safety check.
pub(crate) fn bind(
    args: &KafkaListenerArgs,
    other_insecure: &[(&str, SocketAddr)],
) -> anyhow::Result<Listeners> {
    anyhow::ensure!(!args.kafka_listen.is_empty(), "--kafka-listen: at least one listener is needed");
    anyhow::ensure!(
        args.kafka_advertised.is_empty() || args.kafka_advertised.len() == args.kafka_listen.len(),
        "--kafka-advertised is given {} times for {} listeners: give it once per --kafka-listen, in the same order",
        args.kafka_advertised.len(),
        args.kafka_listen.len()
    );
    let tls = tls_identity(args)?;
    let mapping = PrincipalMapping::parse(&args.ssl_principal_mapping_rules)
        .context("--ssl-principal-mapping-rules")?;
    let mechanisms = sasl_mechanisms(args)?;
    let mut sasl_index = 0;
    let mut external = Vec::new();
    let mut insecure: Vec<String> = other_insecure
        .iter()
        .filter(|(_, address)| !address.ip().is_loopback())
        .map(|(what, address)| format!("{what} on {address}"))
        .collect();
    for (index, address) in args.kafka_listen.iter().enumerate() {
        let bind_address = resolve(address)?;
        let protocol = address.protocol;
        let server_tls = match (protocol.uses_tls(), &tls) {
            (false, _) => None,
            (true, None) => anyhow::bail!(
                "listener {address} uses TLS: give --tls-cert and --tls-key (PEM files of the server's certificate chain and key)"
            ),
            (true, Some(identity)) => {
                let client_auth = if protocol == SecurityProtocol::Ssl && identity.has_client_ca() {
                    ClientAuth::Required
                } else {
                    ClientAuth::None
                };
                Some(identity.server_config(client_auth, &[]).with_context(|| format!("listener {address}"))?)
            }
        };
        let certificate_principal =
            (protocol == SecurityProtocol::Ssl && args.tls_client_ca.is_some()).then(|| mapping.clone());
        let listener_mechanisms = protocol.uses_sasl().then(|| {
            let chosen = if mechanisms.len() == 1 { &mechanisms[0] } else { &mechanisms[sasl_index] };
            sasl_index += 1;
            chosen.clone()
        });
        if protocol == SecurityProtocol::Plaintext && !bind_address.ip().is_loopback() {
            insecure.push(format!("Kafka listener {address}"));
        }
        let socket = std::net::TcpListener::bind(bind_address)
            .with_context(|| format!("binding the Kafka listener {address}"))?;
        socket.set_nonblocking(true).context("making the Kafka listener non-blocking")?;
        let bound = socket.local_addr().context("reading the Kafka listener's address")?;
        let advertised = args.kafka_advertised.get(index).cloned().unwrap_or_else(|| bound.to_string());
        let (advertised_host, advertised_port) = tidewater_kafka::listener::split_host_port(&advertised)
            .with_context(|| format!("--kafka-advertised {advertised:?} is not host:port"))?;
        external.push(BoundListener {
            socket,
            info: ListenerInfo {
                name: protocol.name().to_string(),
                protocol,
                advertised_host,
                advertised_port,
            },
            tls: server_tls,
            certificate_principal,
            mechanisms: listener_mechanisms,
        });
    }
    if mechanisms.len() > 1 {
        anyhow::ensure!(
            mechanisms.len() == sasl_index,
            "--sasl-mechanisms is given {} times for {sasl_index} SASL listeners: give it once, or once per SASL listener",
            mechanisms.len()
        );
    }
    if args.tls_client_ca.is_some()
        && !external.iter().any(|listener| listener.certificate_principal.is_some())
    {
        tracing::warn!("--tls-client-ca is set but no SSL listener uses it (only SSL listeners take client certificates)");
    }
    if !insecure.is_empty() && !args.allow_insecure_listeners {
        anyhow::bail!(
            "refusing to start: {} would be reachable beyond this machine with neither TLS nor authentication, \
             so anyone who can reach it could read and write every topic. Listen on 127.0.0.1, or secure it \
             (SASL_SSL://HOST:PORT with --tls-cert and --tls-key, and users from TIDEWATER_BOOTSTRAP_USER or \
             `tidewater user create`; for MQTT, leave out --mqtt-allow-anonymous), or accept the risk with \
             --allow-insecure-listeners",
            insecure.join(" and ")
        );
    }
    let authorization = external.iter().any(BoundListener::authenticates);
    let plaintext = external.iter().find(|listener| listener.info.protocol == SecurityProtocol::Plaintext);
    let (internal, internal_access) = match plaintext {
        Some(listener) if !authorization => {
            let mut address = listener.socket.local_addr().context("reading the Kafka listener's address")?;
            if address.ip().is_unspecified() {
                address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            (
                None,
                InternalAccess { bootstrap: address.to_string(), properties: Vec::new(), credential: None },
            )
        }
        _ => internal_listener(authorization)?,
    };
    Ok(Listeners { external, internal, internal_access, authorization })
}

/// Loads the certificate and key if given (both or neither).
fn tls_identity(args: &KafkaListenerArgs) -> anyhow::Result<Option<TlsIdentity>> {
    match (&args.tls_cert, &args.tls_key) {
        (None, None) => {
            anyhow::ensure!(args.tls_client_ca.is_none(), "--tls-client-ca needs --tls-cert and --tls-key");
            Ok(None)
        }
        (Some(cert), Some(key)) => Ok(Some(
            TlsIdentity::load(cert, key, args.tls_client_ca.as_deref())
                .context("loading the TLS certificate")?,
        )),
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    }
}

/// Each `--sasl-mechanisms` value as a list of mechanisms.
fn sasl_mechanisms(args: &KafkaListenerArgs) -> anyhow::Result<Vec<Vec<Mechanism>>> {
    args.sasl_mechanisms
        .iter()
        .map(|list| {
            let mechanisms: Vec<Mechanism> = list
                .split(',')
                .filter(|name| !name.trim().is_empty())
                .map(|name| name.parse::<Mechanism>())
                .collect::<Result<_, _>>()
                .context("--sasl-mechanisms")?;
            anyhow::ensure!(
                !mechanisms.is_empty(),
                "--sasl-mechanisms: a listener needs at least one mechanism"
            );
            Ok(mechanisms)
        })
        .collect()
}

/// The first address `host:port` resolves to; an empty host means every interface.
fn resolve(address: &ListenerAddress) -> anyhow::Result<SocketAddr> {
    let host = if address.host.is_empty() { "0.0.0.0".to_string() } else { address.host.clone() };
    let listener = ListenerAddress { host, ..address.clone() };
    listener
        .host_port()
        .to_socket_addrs()
        .with_context(|| format!("resolving {address}"))?
        .next()
        .with_context(|| format!("{address} resolves to no address"))
}

/// A loopback listener for the components: SCRAM-authenticated when authorization is on, plain
/// otherwise (then it only stands in for an external listener the components cannot use).
fn internal_listener(authorization: bool) -> anyhow::Result<(Option<BoundListener>, InternalAccess)> {
    let socket = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .context("binding the internal listener on 127.0.0.1")?;
    socket.set_nonblocking(true).context("making the internal listener non-blocking")?;
    let address = socket.local_addr().context("reading the internal listener's address")?;
    let protocol = if authorization { SecurityProtocol::SaslPlaintext } else { SecurityProtocol::Plaintext };
    let mechanism = ScramMechanism::Sha512;
    let info = ListenerInfo {
        name: INTERNAL_LISTENER_NAME.to_string(),
        protocol,
        advertised_host: address.ip().to_string(),
        advertised_port: address.port(),
    };
    let mut access =
        InternalAccess { bootstrap: address.to_string(), properties: Vec::new(), credential: None };
    if authorization {
        let mut password_bytes = [0u8; 32];
        getrandom::getrandom(&mut password_bytes).context("making the internal user's password")?;
        let password = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, password_bytes);
        let credential = ScramCredential::generate(
            mechanism,
            password.as_bytes(),
            tidewater_security::sasl::scram::ITERATIONS_MIN,
        );
        access.credential = Some((mechanism, credential));
        access.properties = vec![
            ("security.protocol".to_string(), protocol.name().to_string()),
            ("sasl.mechanism".to_string(), mechanism.name().to_string()),
            ("sasl.username".to_string(), tidewater_broker::credentials::INTERNAL_USER.to_string()),
            ("sasl.password".to_string(), password),
        ];
    }
    let listener = BoundListener {
        socket,
        info,
        tls: None,
        certificate_principal: None,
        // Both SCRAM mechanisms: the web console's clients log in here as the user whose
        // password the admin listener checked, with whichever mechanism that user has.
        mechanisms: authorization
            .then(|| vec![Mechanism::Scram(mechanism), Mechanism::Scram(ScramMechanism::Sha256)]),
    };
    Ok((Some(listener), access))
}
