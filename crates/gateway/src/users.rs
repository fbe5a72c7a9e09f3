//! MQTT clients that are not devices log in as the cluster's SCRAM users (`tidewater user
//! create`): the MQTT user name and password are checked against the same stored keys the
//! broker's SASL checks, so there is no second user store and no password is kept anywhere.
//!
//! How depends on where the gateway runs ([`UserCheck`]):
//!
//! - **Inside `tidewater serve`** ([`UserCheck::StoredKeys`]): the broker's credentials are in
//!   the same process, so the password is checked against the stored salt, StoredKey and
//!   iterations directly (SCRAM-SHA-512, then SCRAM-SHA-256), on a blocking thread since that
//!   costs thousands of HMAC rounds, as the admin listener checks a console user. This works
//!   whether or not any Kafka listener speaks SASL.
//! - **Standalone (`tidewater gateway`)** ([`UserCheck::ClusterLogin`]): the gateway is only a
//!   Kafka client and cannot read the stored keys (DescribeUserScramCredentials gives only
//!   mechanisms and iterations, as KIP-554 intends), so it proves the password the one way a
//!   client can: it logs in to the cluster with it, a SASL/SCRAM exchange the broker checks
//!   against its stored keys, with the gateway's own connection settings (`security.protocol`,
//!   `sasl.mechanism`, TLS) and the offered user name and password. That needs the gateway's
//!   cluster connection to be SASL/SCRAM; otherwise user logins are refused and the gateway
//!   says so at start. Since a login costs a connection and a round trip, a success is
//!   remembered for [`LOGIN_CACHE_TTL`] under a salted hash of the name and password (the salt
//!   is random per process; the password is not kept), at most [`LOGIN_CACHE_ENTRIES_MAX`], and
//!   at most [`LOGINS_AT_ONCE_MAX`] logins run at once.
//!
//! A user that is removed or whose password changes keeps the connections it has, as a Kafka
//! client keeps its session until re-authentication; new connections are checked afresh (a
//! standalone gateway may still let one in within [`LOGIN_CACHE_TTL`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use sha2::Sha256;
use tidewater_client::ClusterConfig;
use tidewater_security::sasl::{CredentialSource, ScramMechanism};

/// How long a standalone gateway trusts a successful login to the cluster.
pub const LOGIN_CACHE_TTL: Duration = Duration::from_secs(60);
/// Most logins a standalone gateway remembers; past it the oldest are forgotten.
pub const LOGIN_CACHE_ENTRIES_MAX: usize = 10_000;
/// How long a login to the cluster may take before the client is told to come back later.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Most logins to the cluster at once (each is a librdkafka client with its threads and a
/// connection); more CONNECTs wait their turn, so a flood of made-up user names cannot turn into
/// a flood of connections to the cluster.
pub const LOGINS_AT_ONCE_MAX: usize = 8;

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The user exists and the password is right.
    Verified,
    /// An unknown user or a wrong password (one answer: Bad User Name or Password).
    Refused,
    /// The check could not be made (the cluster unreachable): Server unavailable.
    Unavailable(String),
}

/// How this gateway checks a user's password.
#[derive(Clone)]
pub enum UserCheck {
    /// No users: a user name that is not a device is refused.
    None,
    /// Against the broker's stored keys, in process (`tidewater serve`).
    StoredKeys(Arc<dyn CredentialSource>),
    /// By logging in to the cluster (`tidewater gateway`).
    ClusterLogin(Arc<ClusterLogin>),
}

impl std::fmt::Debug for UserCheck {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            UserCheck::None => "UserCheck::None",
            UserCheck::StoredKeys(_) => "UserCheck::StoredKeys",
            UserCheck::ClusterLogin(_) => "UserCheck::ClusterLogin",
        })
    }
}

impl UserCheck {
    /// For a standalone gateway: a login check when `cluster` logs in with SCRAM, else none
    /// (with a warning, since user logins will then be refused).
    pub fn for_cluster(cluster: &ClusterConfig) -> UserCheck {
        let property = |name: &str| {
            cluster
                .properties
                .iter()
                .rev()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.to_ascii_uppercase())
        };
        let sasl = property("security.protocol").is_some_and(|protocol| protocol.starts_with("SASL_"));
        let scram = property("sasl.mechanism")
            .or_else(|| property("sasl.mechanisms"))
            .is_some_and(|mechanism| mechanism.starts_with("SCRAM-"));
        if sasl && scram {
            UserCheck::ClusterLogin(Arc::new(ClusterLogin::new(cluster.clone())))
        } else {
            tracing::info!("the gateway's cluster connection is not SASL/SCRAM, so MQTT clients cannot log in as SCRAM users here (devices and anonymous clients are not affected)");
            UserCheck::None
        }
    }

    /// Checks `user`'s `password`.
    pub async fn verify(&self, user: &str, password: &[u8]) -> Verification {
        match self {
            UserCheck::None => Verification::Refused,
            UserCheck::StoredKeys(credentials) => {
                let (credentials, user, password) =
                    (credentials.clone(), user.to_string(), password.to_vec());
                let verified =
                    tokio::task::spawn_blocking(move || verify_stored(&*credentials, &user, &password))
                        .await
                        .unwrap_or(false);
                if verified {
                    Verification::Verified
                } else {
                    Verification::Refused
                }
            }
            UserCheck::ClusterLogin(login) => login.verify(user, password).await,
        }
    }
}

/// Whether `password` is `user`'s under either SCRAM mechanism.
pub fn verify_stored(credentials: &dyn CredentialSource, user: &str, password: &[u8]) -> bool {
    [ScramMechanism::Sha512, ScramMechanism::Sha256].into_iter().any(|mechanism| {
        credentials
            .scram_credential(user, mechanism)
            .is_some_and(|credential| credential.verify_password(mechanism, password))
    })
}

/// Logging in to the cluster as the user, with a short memory of successes.
pub struct ClusterLogin {
    cluster: ClusterConfig,
    /// Random per process: the cache's hashes mean nothing outside it.
    salt: [u8; 32],
    /// Salted hash of name and password -> when the login succeeded.
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    /// Bounds the logins in progress to [`LOGINS_AT_ONCE_MAX`].
    logins: tokio::sync::Semaphore,
}

impl std::fmt::Debug for ClusterLogin {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The salt and the hashes stay out of logs.
        formatter.debug_struct("ClusterLogin").field("cluster", &self.cluster).finish_non_exhaustive()
    }
}

impl ClusterLogin {
    pub fn new(cluster: ClusterConfig) -> ClusterLogin {
        let mut salt = [0; 32];
        // Without randomness the salt is zeros: the cache still works, its hashes are just
        // guessable by whoever can read this process's memory, who could read passwords anyway.
        let _ = getrandom::getrandom(&mut salt);
        ClusterLogin {
            cluster,
            salt,
            verified: Mutex::new(HashMap::new()),
            logins: tokio::sync::Semaphore::new(LOGINS_AT_ONCE_MAX),
        }
    }

    fn hash(&self, user: &str, password: &[u8]) -> [u8; 32] {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.salt) else { return [0; 32] };
        mac.update(&(user.len() as u64).to_be_bytes());
        mac.update(user.as_bytes());
        mac.update(password);
        mac.finalize().into_bytes().into()
    }

    async fn verify(&self, user: &str, password: &[u8]) -> Verification {
        let hash = self.hash(user, password);
        {
            let verified = self.verified.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if verified.get(&hash).is_some_and(|at| at.elapsed() < LOGIN_CACHE_TTL) {
                return Verification::Verified;
            }
        }
        let Ok(password_text) = String::from_utf8(password.to_vec()) else { return Verification::Refused };
        let Ok(_turn) = self.logins.acquire().await else {
            return Verification::Unavailable("the gateway is stopping".to_string());
        };
        let (cluster, user_name) = (self.cluster.clone(), user.to_string());
        let outcome = tokio::task::spawn_blocking(move || login(&cluster, &user_name, &password_text))
            .await
            .unwrap_or_else(|error| Verification::Unavailable(error.to_string()));
        if outcome == Verification::Verified {
            let mut verified = self.verified.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            verified.retain(|_, at| at.elapsed() < LOGIN_CACHE_TTL);
            if verified.len() >= LOGIN_CACHE_ENTRIES_MAX {
                if let Some(oldest) = verified.iter().min_by_key(|(_, at)| **at).map(|(hash, _)| *hash) {
                    verified.remove(&oldest);
                }
            }
            verified.insert(hash, Instant::now());
        }
        outcome
    }
}

/// Records whether librdkafka reported an authentication failure.
#[derive(Default)]
struct LoginContext {
    refused: std::sync::atomic::AtomicBool,
}

impl rdkafka::client::ClientContext for LoginContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        tracing::debug!(target: "librdkafka", ?level, facility, "{message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication) {
            self.refused.store(true, std::sync::atomic::Ordering::Relaxed);
        } else {
            tracing::debug!(target: "librdkafka", "{reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for LoginContext {}

/// One login to the cluster as `user`: a metadata request succeeds only after the SASL
/// exchange did. Blocking.
fn login(cluster: &ClusterConfig, user: &str, password: &str) -> Verification {
    let mut config = cluster.client_config(&[]);
    config
        .set("sasl.username", user)
        .set("sasl.password", password)
        .set("client.id", "tidewater-gateway-login");
    let consumer: BaseConsumer<LoginContext> = match config.create_with_context(LoginContext::default()) {
        Ok(consumer) => consumer,
        Err(error) => return Verification::Unavailable(error.to_string()),
    };
    let started = Instant::now();
    let step = Duration::from_millis(100);
    while started.elapsed() < LOGIN_TIMEOUT {
        match consumer.fetch_metadata(None, step) {
            Ok(_) => return Verification::Verified,
            Err(KafkaError::MetadataFetch(RDKafkaErrorCode::Authentication)) => return Verification::Refused,
            Err(_) => {}
        }
        // Errors outside a request arrive through the context when the client is polled.
        let _ = consumer.poll(Duration::ZERO);
        if consumer.context().refused.load(std::sync::atomic::Ordering::Relaxed) {
            return Verification::Refused;
        }
    }
    Verification::Unavailable(format!("no answer from the cluster within {LOGIN_TIMEOUT:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidewater_security::sasl::ScramCredential;

    #[derive(Debug)]
    struct OneUser(ScramCredential);

    impl CredentialSource for OneUser {
        fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
            (user == "alice" && mechanism == ScramMechanism::Sha256).then(|| self.0.clone())
        }
    }

    #[test]
    fn a_password_is_checked_against_the_stored_keys() {
        let credential =
            ScramCredential::from_password(ScramMechanism::Sha256, b"s3cret", b"salt-salt".to_vec(), 4096);
        let users = OneUser(credential);
        assert!(verify_stored(&users, "alice", b"s3cret"));
        assert!(!verify_stored(&users, "alice", b"wrong"));
        assert!(!verify_stored(&users, "bob", b"s3cret"));
    }

    #[test]
    fn only_a_scram_cluster_connection_can_check_users() {
        let mut cluster = ClusterConfig::new("127.0.0.1:9092");
        assert!(matches!(UserCheck::for_cluster(&cluster), UserCheck::None));
        cluster.properties.push(("security.protocol".into(), "SASL_PLAINTEXT".into()));
        cluster.properties.push(("sasl.mechanism".into(), "PLAIN".into()));
        assert!(matches!(UserCheck::for_cluster(&cluster), UserCheck::None));
        cluster.properties.push(("sasl.mechanism".into(), "SCRAM-SHA-256".into()));
        assert!(matches!(UserCheck::for_cluster(&cluster), UserCheck::ClusterLogin(_)));
    }

    #[test]
    fn the_login_cache_keys_by_a_salted_hash_of_name_and_password() {
        let login = ClusterLogin::new(ClusterConfig::new("127.0.0.1:9092"));
        assert_eq!(login.hash("alice", b"pw"), login.hash("alice", b"pw"));
        assert_ne!(login.hash("alice", b"pw"), login.hash("alice", b"pw2"));
        // The name's length is hashed too, so moving bytes between name and password changes it.
        assert_ne!(login.hash("alicep", b"w"), login.hash("alice", b"pw"));
        let other = ClusterLogin::new(ClusterConfig::new("127.0.0.1:9092"));
        assert_ne!(login.hash("alice", b"pw"), other.hash("alice", b"pw"));
    }
}
