//! SASL on the server side: the mechanisms Tidewater offers (PLAIN, SCRAM-SHA-256 and
//! SCRAM-SHA-512) behind one state machine, `SaslServer`, that a listener feeds the client's
//! messages and that ends with the principal or an error.
//!
//! Credentials are looked up through `CredentialSource`, so this module holds none: the broker's
//! store implements it. Only SCRAM credentials are ever stored (salt, StoredKey, ServerKey,
//! iterations, as Kafka stores them); PLAIN is checked against them by deriving the StoredKey
//! from the password offered, so there is one user store and never a password at rest.
//!
//! What a failure tells the client is deliberately uniform ("invalid credentials"), whether the
//! user is unknown or the password wrong; `SaslError` keeps the real reason for the server's
//! log. Nothing here ever formats a password or a proof.

mod plain;
pub mod scram;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::principal::KafkaPrincipal;

pub use self::scram::{ScramClient, ScramClientExchange, ScramCredential, ScramMechanism};

/// The longest SASL message accepted from a client. SCRAM's messages are a few hundred bytes and
/// PLAIN's are a name and a password; anything larger is refused before it is parsed.
pub const SASL_MESSAGE_BYTES_MAX: usize = 8 * 1024;
/// The longest user name accepted, in bytes, after SCRAM's `=2C`/`=3D` escapes are undone.
pub const USERNAME_BYTES_MAX: usize = 1024;

/// A SASL mechanism a listener can enable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
}

impl Mechanism {
    pub const ALL: [Mechanism; 3] = [
        Mechanism::Plain,
        Mechanism::Scram(ScramMechanism::Sha256),
        Mechanism::Scram(ScramMechanism::Sha512),
    ];

    /// The IANA name clients send in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(scram) => scram.name(),
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown SASL mechanism {0:?}: Tidewater offers PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512")]
pub struct UnknownMechanism(pub String);

impl FromStr for Mechanism {
    type Err = UnknownMechanism;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Mechanism::ALL
            .into_iter()
            .find(|mechanism| mechanism.name().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| UnknownMechanism(text.to_string()))
    }
}

/// Where SASL mechanisms find a user's stored credentials.
pub trait CredentialSource: Send + Sync + fmt::Debug {
    fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential>;
}

/// What one step of an exchange produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslStep {
    /// Send this challenge and wait for the client's next message.
    Continue(Vec<u8>),
    /// Authenticated: send this last message (possibly empty) and act as `principal`.
    Complete { response: Vec<u8>, principal: KafkaPrincipal },
}

/// Why an exchange failed. `Display` is what the server logs; `client_message` is what the
/// client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("malformed {mechanism} message: {reason}")]
    Malformed { mechanism: Mechanism, reason: String },
    #[error("{mechanism} message of {bytes} bytes is over the limit of {SASL_MESSAGE_BYTES_MAX}")]
    TooLarge { mechanism: Mechanism, bytes: usize },
    #[error("{mechanism}: unknown user {user:?}")]
    UnknownUser { mechanism: Mechanism, user: String },
    #[error("{mechanism}: wrong password or proof for user {user:?}")]
    BadCredentials { mechanism: Mechanism, user: String },
    #[error("{mechanism}: authorization id {authorization_id:?} differs from user {user:?}")]
    AuthorizationIdMismatch { mechanism: Mechanism, user: String, authorization_id: String },
    #[error("{mechanism}: a message arrived after the exchange ended")]
    OutOfOrder { mechanism: Mechanism },
}

impl SaslError {
    /// The message for the client's SASL_AUTHENTICATION_FAILED: it names the mechanism and what
    /// kind of failure it was, but never tells an unknown user from a wrong password.
    pub fn client_message(&self) -> String {
        match self {
            SaslError::UnknownUser { mechanism, .. } | SaslError::BadCredentials { mechanism, .. } => format!(
                "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
            ),
            SaslError::AuthorizationIdMismatch { .. } => {
                "Authentication failed: the authorization id must be empty or equal the user name".to_string()
            }
            other => format!("Authentication failed: {other}"),
        }
    }
}

/// The server side of one SASL exchange on one connection.
#[derive(Debug)]
pub struct SaslServer {
    state: ServerState,
}

#[derive(Debug)]
enum ServerState {
    Plain(Arc<dyn CredentialSource>),
    Scram(scram::ScramServer),
    Finished(Mechanism),
}

impl SaslServer {
    /// Starts an exchange. `server_nonce` is SCRAM's random server part (printable, no commas),
    /// passed in so that tests can use RFC 7677's.
    pub fn new(
        mechanism: Mechanism,
        credentials: Arc<dyn CredentialSource>,
        server_nonce: String,
    ) -> SaslServer {
        let state = match mechanism {
            Mechanism::Plain => ServerState::Plain(credentials),
            Mechanism::Scram(scram) => {
                ServerState::Scram(scram::ScramServer::new(scram, credentials, server_nonce))
            }
        };
        SaslServer { state }
    }

    /// Starts an exchange with a fresh random server nonce.
    pub fn with_random_nonce(mechanism: Mechanism, credentials: Arc<dyn CredentialSource>) -> SaslServer {
        SaslServer::new(mechanism, credentials, scram::random_nonce())
    }

    pub fn mechanism(&self) -> Mechanism {
        match &self.state {
            ServerState::Plain(_) => Mechanism::Plain,
            ServerState::Scram(server) => Mechanism::Scram(server.mechanism()),
            ServerState::Finished(mechanism) => *mechanism,
        }
    }

    /// Takes the client's next message. After `Complete` or an error the exchange is over and
    /// any further message is `OutOfOrder`.
    pub fn step(&mut self, message: &[u8]) -> Result<SaslStep, SaslError> {
        let mechanism = self.mechanism();
        if message.len() > SASL_MESSAGE_BYTES_MAX {
            self.state = ServerState::Finished(mechanism);
            return Err(SaslError::TooLarge { mechanism, bytes: message.len() });
        }
        let outcome = match &mut self.state {
            ServerState::Finished(_) => Err(SaslError::OutOfOrder { mechanism }),
            ServerState::Plain(credentials) => plain::authenticate(message, credentials.as_ref())
                .map(|principal| SaslStep::Complete { response: Vec::new(), principal }),
            ServerState::Scram(server) => server.step(message),
        };
        if !matches!(outcome, Ok(SaslStep::Continue(_))) {
            self.state = ServerState::Finished(mechanism);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanism_names_parse_case_insensitively_and_unknown_ones_are_named() {
        assert_eq!("scram-sha-512".parse::<Mechanism>(), Ok(Mechanism::Scram(ScramMechanism::Sha512)));
        assert_eq!("PLAIN".parse::<Mechanism>(), Ok(Mechanism::Plain));
        assert_eq!("GSSAPI".parse::<Mechanism>(), Err(UnknownMechanism("GSSAPI".to_string())));
        for mechanism in Mechanism::ALL {
            assert_eq!(mechanism.name().parse::<Mechanism>(), Ok(mechanism));
        }
    }

    #[test]
    fn unknown_users_and_wrong_passwords_look_the_same_to_the_client() {
        let mechanism = Mechanism::Scram(ScramMechanism::Sha256);
        let unknown = SaslError::UnknownUser { mechanism, user: "mallory".to_string() };
        let wrong = SaslError::BadCredentials { mechanism, user: "alice".to_string() };
        assert_eq!(unknown.client_message(), wrong.client_message());
        assert!(!unknown.client_message().contains("mallory"));
    }
}
