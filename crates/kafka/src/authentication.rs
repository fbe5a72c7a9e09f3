//! One connection's SASL authentication, as Kafka's `SaslServerAuthenticator` runs it (KIP-43,
//! KIP-152, KIP-368):
//!
//! ```text
//! ApiVersions (optional, any time)
//! SaslHandshake v1 {mechanism}      -> the mechanisms enabled here, or UNSUPPORTED_SASL_MECHANISM
//! SaslAuthenticate {auth_bytes} ... -> challenges, then the mechanism's last message
//!                                      (and, v1+, the session lifetime)
//! ...any request, as the principal
//! ```
//!
//! A SaslHandshake v0 is followed by the mechanism's messages as bare size-prefixed frames with
//! no request header (the protocol before KIP-152); `expects_raw_token` tells the reader.
//!
//! Until the exchange completes, only ApiVersions, SaslHandshake and SaslAuthenticate are
//! accepted; anything else, a failed exchange, or a message out of order closes the connection
//! (after a SaslAuthenticate error response saying why, where the protocol has one, and, for a
//! refused handshake or exchange, `FAILED_AUTHENTICATION_CLOSE_DELAY` later). Once
//! authenticated, a client may re-authenticate on the same connection (KIP-368) as the same
//! principal; if the listener sets a session lifetime, a request after it has run out without a
//! re-authentication closes the connection.
//!
//! This type does no I/O: the reader feeds it requests and writes what it returns.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tidewater_security::sasl::{Mechanism, SaslError, SaslServer, SaslStep};
use tidewater_security::KafkaPrincipal;

use crate::listener::SaslSettings;

/// Largest request accepted before a SASL listener has authenticated the connection: Kafka's
/// `sasl.server.max.receive.size` default. Anonymous clients cannot make the broker buffer a
/// 100 MiB request.
pub const UNAUTHENTICATED_REQUEST_BYTES_MAX: usize = 512 * 1024;

/// How long a connection stays open after the answer to a refused handshake or exchange, before
/// it is closed: Kafka's `connection.failed.authentication.delay.ms` default (KIP-306). A client
/// that reads the answer and the end of the connection in one go still sees why it was refused
/// (kafka-python 3.0 drops the answer when both arrive together), and one that retries a wrong
/// password cannot do so as fast as it can connect.
pub const FAILED_AUTHENTICATION_CLOSE_DELAY: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub(crate) struct Authentication {
    /// The client's address, for the log lines that say why an exchange failed.
    peer: SocketAddr,
    sasl: Option<SaslSettings>,
    state: State,
    principal: KafkaPrincipal,
    /// Set once the client has authenticated; a re-authentication renews it.
    session: Option<Session>,
    /// A handshake or exchange was refused: the connection closes after its answer.
    refused: bool,
}

/// An authenticated session.
#[derive(Debug, Clone, Copy)]
struct Session {
    /// When it ends (KIP-368), if the listener limits sessions.
    expires: Option<Instant>,
}

#[derive(Debug)]
enum State {
    /// Requests flow: nothing to authenticate on this listener, or authenticated.
    Open,
    /// A SASL listener whose client has not completed a handshake yet.
    AwaitingHandshake,
    /// A mechanism chosen; its messages come next, in SaslAuthenticate requests or, after a v0
    /// handshake, as bare frames.
    Exchanging { server: Box<SaslServer>, raw_tokens: bool },
}

/// What becomes of a SaslAuthenticate request or a bare token.
#[derive(Debug)]
pub(crate) struct AuthenticateOutcome {
    pub(crate) response: SaslAuthenticateResponse,
    /// The exchange failed: send the response, then close.
    pub(crate) close: bool,
}

impl Authentication {
    /// A connection from `peer` on a listener with `sasl` (or none), starting as `principal`
    /// (anonymous, or the client certificate's).
    pub(crate) fn new(
        peer: SocketAddr,
        sasl: Option<SaslSettings>,
        principal: KafkaPrincipal,
    ) -> Authentication {
        let state = if sasl.is_some() { State::AwaitingHandshake } else { State::Open };
        Authentication { peer, sasl, state, principal, session: None, refused: false }
    }

    pub(crate) fn principal(&self) -> &KafkaPrincipal {
        &self.principal
    }

    /// Whether requests may flow: nothing to authenticate here, or the client has (and may be
    /// re-authenticating).
    pub(crate) fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Open) || self.session.is_some()
    }

    /// The largest frame the reader should accept now.
    pub(crate) fn request_bytes_max(&self, configured: usize) -> usize {
        if self.is_authenticated() {
            configured
        } else {
            configured.min(UNAUTHENTICATED_REQUEST_BYTES_MAX)
        }
    }

    /// Whether the next frame is a bare SASL token (after a v0 handshake), not a request.
    pub(crate) fn expects_raw_token(&self) -> bool {
        matches!(self.state, State::Exchanging { raw_tokens: true, .. })
    }

    /// Whether a request of `api_key` may be handled now; the error says why not, and closes
    /// the connection.
    pub(crate) fn admit(&self, api_key: ApiKey, now: Instant) -> Result<(), String> {
        if matches!(api_key, ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) {
            return Ok(());
        }
        match self.state {
            State::Open => {}
            _ if self.is_authenticated() => {} // re-authenticating: the old session still holds
            State::AwaitingHandshake => {
                return Err(format!("{api_key:?} request before SASL authentication"))
            }
            State::Exchanging { .. } => {
                return Err(format!("{api_key:?} request during SASL authentication"))
            }
        }
        match self.session.and_then(|session| session.expires) {
            Some(expires) if now >= expires => {
                Err(format!("{api_key:?} request after the SASL session expired without re-authentication"))
            }
            _ => Ok(()),
        }
    }

    /// Whether a handshake or exchange was refused, so the connection is closing (after
    /// `FAILED_AUTHENTICATION_CLOSE_DELAY`).
    pub(crate) fn was_refused(&self) -> bool {
        self.refused
    }

    /// Answers a SaslHandshake; `true` in the second place closes the connection after it.
    pub(crate) fn handshake(
        &mut self,
        request: &SaslHandshakeRequest,
        version: i16,
    ) -> (SaslHandshakeResponse, bool) {
        let (response, close) = self.answer_handshake(request, version);
        self.refused |= close;
        (response, close)
    }

    fn answer_handshake(
        &mut self,
        request: &SaslHandshakeRequest,
        version: i16,
    ) -> (SaslHandshakeResponse, bool) {
        let Some(sasl) = &self.sasl else {
            // Not a SASL listener: Kafka answers ILLEGAL_SASL_STATE.
            let response =
                SaslHandshakeResponse::default().with_error_code(ResponseError::IllegalSaslState.code());
            return (response, true);
        };
        let enabled: Vec<StrBytes> =
            sasl.mechanisms.iter().map(|mechanism| StrBytes::from_static_str(mechanism.name())).collect();
        let response = SaslHandshakeResponse::default().with_mechanisms(enabled);
        if matches!(self.state, State::Exchanging { .. }) {
            return (response.with_error_code(ResponseError::IllegalSaslState.code()), true);
        }
        let requested = request.mechanism.as_str();
        let Some(mechanism) = sasl
            .mechanisms
            .iter()
            .copied()
            .find(|mechanism| mechanism.name().eq_ignore_ascii_case(requested))
        else {
            tracing::info!(peer = %self.peer, mechanism = requested, "SASL mechanism not enabled on this listener");
            return (response.with_error_code(ResponseError::UnsupportedSaslMechanism.code()), true);
        };
        let server = SaslServer::with_random_nonce(mechanism, sasl.credentials.clone());
        self.state = State::Exchanging { server: Box::new(server), raw_tokens: version == 0 };
        (response, false)
    }

    /// Feeds one message of the exchange (a SaslAuthenticate's bytes, or a bare token). SCRAM
    /// steps are a few HMACs and PLAIN's is a PBKDF2 of the stored iterations: both run on the
    /// blocking pool, off the async threads.
    pub(crate) async fn authenticate(&mut self, auth_bytes: Bytes, now: Instant) -> AuthenticateOutcome {
        let outcome = self.step(auth_bytes, now).await;
        self.refused |= outcome.close;
        outcome
    }

    async fn step(&mut self, auth_bytes: Bytes, now: Instant) -> AuthenticateOutcome {
        let State::Exchanging { server, raw_tokens } =
            std::mem::replace(&mut self.state, State::AwaitingHandshake)
        else {
            tracing::warn!(peer = %self.peer, principal = %self.principal, "SaslAuthenticate without a SaslHandshake first");
            return failed(
                ResponseError::IllegalSaslState,
                "SaslAuthenticate before SaslHandshake".to_string(),
            );
        };
        let mechanism = server.mechanism();
        let stepped = tokio::task::spawn_blocking(move || {
            let mut server = server;
            let step = server.step(&auth_bytes);
            (server, step)
        })
        .await;
        let (server, step) = match stepped {
            Ok(stepped) => stepped,
            Err(error) => {
                tracing::error!(peer = %self.peer, %error, "a SASL step failed");
                return failed(ResponseError::SaslAuthenticationFailed, "Authentication failed".to_string());
            }
        };
        match step {
            Ok(SaslStep::Continue(challenge)) => {
                self.state = State::Exchanging { server, raw_tokens };
                AuthenticateOutcome {
                    response: SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(challenge)),
                    close: false,
                }
            }
            Ok(SaslStep::Complete { response, principal }) => {
                self.complete(mechanism, principal, response, now)
            }
            Err(error) => {
                // The reason goes to the log (never a password: `SaslError` holds none); the client
                // gets the uniform message.
                tracing::warn!(peer = %self.peer, reason = %error, "SASL authentication failed");
                failed(ResponseError::SaslAuthenticationFailed, error.client_message())
            }
        }
    }

    fn complete(
        &mut self,
        mechanism: Mechanism,
        principal: KafkaPrincipal,
        last_message: Vec<u8>,
        now: Instant,
    ) -> AuthenticateOutcome {
        let reauthenticating = self.session.is_some();
        if reauthenticating && principal != self.principal {
            let error = SaslError::Malformed {
                mechanism,
                reason: format!("re-authentication as {principal} on a connection of {}", self.principal),
            };
            tracing::warn!(peer = %self.peer, reason = %error, "SASL re-authentication refused");
            return failed(
                ResponseError::SaslAuthenticationFailed,
                "Cannot change principals during re-authentication".to_string(),
            );
        }
        let lifetime = self.sasl.as_ref().and_then(|sasl| sasl.session_lifetime);
        self.session = Some(Session { expires: lifetime.map(|lifetime| now + lifetime) });
        tracing::debug!(peer = %self.peer, %principal, %mechanism, reauthenticating, "SASL authentication succeeded");
        self.principal = principal;
        self.state = State::Open;
        let lifetime_ms =
            lifetime.map_or(0, |lifetime| i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX));
        AuthenticateOutcome {
            response: SaslAuthenticateResponse::default()
                .with_auth_bytes(Bytes::from(last_message))
                .with_session_lifetime_ms(lifetime_ms),
            close: false,
        }
    }
}

fn failed(code: ResponseError, message: String) -> AuthenticateOutcome {
    AuthenticateOutcome {
        response: SaslAuthenticateResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message))),
        close: true,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tidewater_security::sasl::{CredentialSource, ScramCredential, ScramMechanism};

    use super::*;

    #[derive(Debug)]
    struct OneUser(ScramCredential);

    impl CredentialSource for OneUser {
        fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
            (user == "alice" && mechanism == ScramMechanism::Sha256).then(|| self.0.clone())
        }
    }

    const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50_000);

    fn settings(lifetime: Option<Duration>) -> SaslSettings {
        SaslSettings {
            mechanisms: vec![Mechanism::Plain, Mechanism::Scram(ScramMechanism::Sha256)],
            credentials: Arc::new(OneUser(ScramCredential::generate(ScramMechanism::Sha256, b"pw", 4096))),
            session_lifetime: lifetime,
        }
    }

    fn handshake(mechanism: &str) -> SaslHandshakeRequest {
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(mechanism.to_string()))
    }

    #[tokio::test]
    async fn requests_wait_for_a_completed_exchange() {
        let now = Instant::now();
        let mut auth = Authentication::new(PEER, Some(settings(None)), KafkaPrincipal::anonymous());
        assert!(auth.admit(ApiKey::ApiVersions, now).is_ok());
        assert!(auth.admit(ApiKey::Metadata, now).is_err());
        assert_eq!(auth.request_bytes_max(100 << 20), UNAUTHENTICATED_REQUEST_BYTES_MAX);
        let (response, close) = auth.handshake(&handshake("GSSAPI"), 1);
        assert_eq!((response.error_code, close), (ResponseError::UnsupportedSaslMechanism.code(), true));
        assert_eq!(response.mechanisms.len(), 2);
        let (response, close) = auth.handshake(&handshake("PLAIN"), 1);
        assert_eq!((response.error_code, close), (0, false));
        assert!(auth.admit(ApiKey::Produce, now).is_err());
        let outcome = auth.authenticate(Bytes::from_static(b"\0alice\0pw"), now).await;
        assert_eq!((outcome.response.error_code, outcome.close), (0, false));
        assert_eq!(auth.principal(), &KafkaPrincipal::user("alice"));
        assert!(auth.admit(ApiKey::Produce, now).is_ok());
        assert_eq!(auth.request_bytes_max(100 << 20), 100 << 20);
    }

    #[tokio::test]
    async fn a_wrong_password_fails_with_a_message_and_closes() {
        let mut auth = Authentication::new(PEER, Some(settings(None)), KafkaPrincipal::anonymous());
        auth.handshake(&handshake("PLAIN"), 1);
        let outcome = auth.authenticate(Bytes::from_static(b"\0alice\0nope"), Instant::now()).await;
        assert_eq!(outcome.response.error_code, ResponseError::SaslAuthenticationFailed.code());
        assert!(outcome.close);
        let message = outcome.response.error_message.map(|message| message.to_string()).unwrap_or_default();
        assert!(message.contains("invalid credentials") && !message.contains("nope"), "{message}");
        assert!(auth.admit(ApiKey::Produce, Instant::now()).is_err());
        assert!(auth.was_refused());
    }

    #[tokio::test]
    async fn out_of_order_messages_close_the_connection() {
        let mut auth = Authentication::new(PEER, Some(settings(None)), KafkaPrincipal::anonymous());
        let outcome = auth.authenticate(Bytes::from_static(b"\0alice\0pw"), Instant::now()).await;
        assert_eq!(outcome.response.error_code, ResponseError::IllegalSaslState.code());
        assert!(outcome.close);
        let mut auth = Authentication::new(PEER, Some(settings(None)), KafkaPrincipal::anonymous());
        auth.handshake(&handshake("SCRAM-SHA-256"), 1);
        let (response, close) = auth.handshake(&handshake("SCRAM-SHA-256"), 1);
        assert_eq!((response.error_code, close), (ResponseError::IllegalSaslState.code(), true));
        let mut plaintext = Authentication::new(PEER, None, KafkaPrincipal::anonymous());
        let (response, close) = plaintext.handshake(&handshake("PLAIN"), 1);
        assert_eq!((response.error_code, close), (ResponseError::IllegalSaslState.code(), true));
        assert!(plaintext.admit(ApiKey::Produce, Instant::now()).is_ok());
    }

    #[tokio::test]
    async fn sessions_expire_unless_renewed_as_the_same_principal() {
        let lifetime = Duration::from_secs(60);
        let start = Instant::now();
        let mut auth = Authentication::new(PEER, Some(settings(Some(lifetime))), KafkaPrincipal::anonymous());
        auth.handshake(&handshake("PLAIN"), 1);
        let outcome = auth.authenticate(Bytes::from_static(b"\0alice\0pw"), start).await;
        assert_eq!(outcome.response.session_lifetime_ms, 60_000);
        assert!(auth.admit(ApiKey::Fetch, start + Duration::from_secs(59)).is_ok());
        assert!(auth.admit(ApiKey::Fetch, start + lifetime).is_err());
        // Re-authentication: requests of the old session go on meanwhile.
        let later = start + Duration::from_secs(30);
        auth.handshake(&handshake("PLAIN"), 1);
        assert!(auth.admit(ApiKey::Fetch, later).is_ok());
        let outcome = auth.authenticate(Bytes::from_static(b"\0alice\0pw"), later).await;
        assert!(!outcome.close);
        assert!(auth.admit(ApiKey::Fetch, start + Duration::from_secs(89)).is_ok());
    }

    #[tokio::test]
    async fn a_v0_handshake_switches_to_bare_tokens() {
        let mut auth = Authentication::new(PEER, Some(settings(None)), KafkaPrincipal::anonymous());
        auth.handshake(&handshake("PLAIN"), 0);
        assert!(auth.expects_raw_token());
        let outcome = auth.authenticate(Bytes::from_static(b"\0alice\0pw"), Instant::now()).await;
        assert!(!outcome.close);
        assert!(!auth.expects_raw_token());
    }
}
