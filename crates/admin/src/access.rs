//! Who may read `/metrics`: [`MetricsAccess`]. A token is compared in constant time; a SCRAM
//! user's password is checked against the stored keys (the password itself is stored nowhere),
//! on a blocking thread since that costs thousands of HMAC rounds.

use std::sync::Arc;

use base64::Engine;
use subtle::ConstantTimeEq;
use tidewater_security::sasl::{CredentialSource, ScramMechanism};

/// A bearer token for `/metrics` (`TIDEWATER_METRICS_TOKEN`). Its `Debug` hides it, so it
/// cannot reach a log.
#[derive(Clone)]
pub struct MetricsToken(Vec<u8>);

impl MetricsToken {
    pub fn new(token: impl Into<Vec<u8>>) -> MetricsToken {
        MetricsToken(token.into())
    }
}

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("MetricsToken(<hidden>)")
    }
}

/// Who may read `/metrics`.
#[derive(Debug, Clone)]
pub enum MetricsAccess {
    /// Anyone who can reach the listener.
    Open,
    /// A request with `Authorization: Bearer TOKEN`, or `Authorization: Basic` with a SCRAM
    /// user's name and password or with the token as the password (any user name, as a
    /// browser sends). Either may be absent; with neither, nothing is let in.
    Protected { token: Option<MetricsToken>, users: Option<Arc<dyn CredentialSource>> },
}

/// Why a request was not let in (the 401's body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    NoCredentials,
    WrongCredentials,
    MalformedAuthorization,
}

impl Refusal {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::NoCredentials => {
                "authentication required: send Authorization: Bearer TOKEN (TIDEWATER_METRICS_TOKEN) or Basic with a SCRAM user"
            }
            Refusal::WrongCredentials => "wrong token, user or password",
            Refusal::MalformedAuthorization => "malformed Authorization header: expected Bearer TOKEN or Basic BASE64",
        }
    }
}

/// Who a let-in request is: what the console's API acts as.
#[derive(Clone, PartialEq, Eq)]
pub enum Principal {
    /// Nobody in particular: the listener is open.
    Anyone,
    /// The bearer of the metrics token.
    TokenBearer,
    /// A SCRAM user whose password was checked, with the mechanism it has a credential for, so
    /// that a Kafka client can log in as that user.
    User { name: String, password: String, mechanism: &'static str },
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Anyone => formatter.write_str("Anyone"),
            Principal::TokenBearer => formatter.write_str("TokenBearer"),
            // The password never reaches a log.
            Principal::User { name, mechanism, .. } => write!(formatter, "User({name}, {mechanism})"),
        }
    }
}

impl MetricsAccess {
    /// Checks a request's `Authorization` header value, and says who sent it.
    pub(crate) async fn check(&self, authorization: Option<&[u8]>) -> Result<Principal, Refusal> {
        let (token, users) = match self {
            MetricsAccess::Open => return Ok(Principal::Anyone),
            MetricsAccess::Protected { token, users } => (token, users),
        };
        let authorization = authorization.ok_or(Refusal::NoCredentials)?;
        let text = std::str::from_utf8(authorization).map_err(|_| Refusal::MalformedAuthorization)?;
        let (scheme, credentials) = text.trim().split_once(' ').ok_or(Refusal::MalformedAuthorization)?;
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            let expected = token.as_ref().ok_or(Refusal::WrongCredentials)?;
            return match bool::from(expected.0.ct_eq(credentials.as_bytes())) {
                true => Ok(Principal::TokenBearer),
                false => Err(Refusal::WrongCredentials),
            };
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(Refusal::MalformedAuthorization);
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .map_err(|_| Refusal::MalformedAuthorization)?;
        let decoded = String::from_utf8(decoded).map_err(|_| Refusal::MalformedAuthorization)?;
        let (user, password) = decoded.split_once(':').ok_or(Refusal::MalformedAuthorization)?;
        // The token as a Basic password (any user name): what a browser can send, since it
        // cannot send a bearer token, so the console opens with the token alone.
        if token.as_ref().is_some_and(|expected| bool::from(expected.0.ct_eq(password.as_bytes()))) {
            return Ok(Principal::TokenBearer);
        }
        let users = users.clone().ok_or(Refusal::WrongCredentials)?;
        let (user, password) = (user.to_string(), password.to_string());
        let (checked_user, checked_password) = (user.clone(), password.as_bytes().to_vec());
        let verified = tokio::task::spawn_blocking(move || {
            // SHA-512 first: the internal listener a console's client logs in through takes both.
            [ScramMechanism::Sha512, ScramMechanism::Sha256].into_iter().find(|mechanism| {
                users
                    .scram_credential(&checked_user, *mechanism)
                    .is_some_and(|credential| credential.verify_password(*mechanism, &checked_password))
            })
        })
        .await
        .unwrap_or(None);
        match verified {
            Some(mechanism) => Ok(Principal::User { name: user, password, mechanism: mechanism.name() }),
            None => Err(Refusal::WrongCredentials),
        }
    }
}
