//! SASL PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd` in one message, checked against the
//! user's stored SCRAM credential (SHA-256 if there is one, else SHA-512), so PLAIN needs no
//! store of its own. PLAIN sends the password itself, so it belongs on TLS listeners only; the
//! listener decides that, not this module.

use super::{CredentialSource, Mechanism, SaslError, USERNAME_BYTES_MAX};
use crate::principal::KafkaPrincipal;
use crate::sasl::ScramMechanism;

pub(super) fn authenticate(
    message: &[u8],
    credentials: &dyn CredentialSource,
) -> Result<KafkaPrincipal, SaslError> {
    let malformed =
        |reason: &str| SaslError::Malformed { mechanism: Mechanism::Plain, reason: reason.to_string() };
    let mut parts = message.split(|byte| *byte == 0);
    let (Some(authorization_id), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected [authzid] NUL user NUL password"));
    };
    let user = std::str::from_utf8(user).map_err(|_| malformed("the user name is not UTF-8"))?;
    let authorization_id =
        std::str::from_utf8(authorization_id).map_err(|_| malformed("the authorization id is not UTF-8"))?;
    if user.is_empty() {
        return Err(malformed("the user name is empty"));
    }
    if user.len() > USERNAME_BYTES_MAX {
        return Err(malformed("the user name is too long"));
    }
    if password.is_empty() {
        return Err(malformed("the password is empty"));
    }
    if !authorization_id.is_empty() && authorization_id != user {
        return Err(SaslError::AuthorizationIdMismatch {
            mechanism: Mechanism::Plain,
            user: user.to_string(),
            authorization_id: authorization_id.to_string(),
        });
    }
    let stored = ScramMechanism::ALL.into_iter().find_map(|mechanism| {
        credentials.scram_credential(user, mechanism).map(|credential| (mechanism, credential))
    });
    let Some((mechanism, credential)) = stored else {
        return Err(SaslError::UnknownUser { mechanism: Mechanism::Plain, user: user.to_string() });
    };
    if !credential.verify_password(mechanism, password) {
        return Err(SaslError::BadCredentials { mechanism: Mechanism::Plain, user: user.to_string() });
    }
    Ok(KafkaPrincipal::user(user))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::sasl::ScramCredential;

    #[derive(Debug)]
    struct Users(HashMap<(String, ScramMechanism), ScramCredential>);

    impl CredentialSource for Users {
        fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
            self.0.get(&(user.to_string(), mechanism)).cloned()
        }
    }

    #[test]
    fn plain_messages_authenticate_against_stored_scram_credentials() {
        let users = Users(HashMap::from([
            (
                ("alice".to_string(), ScramMechanism::Sha256),
                ScramCredential::generate(ScramMechanism::Sha256, b"pw", 4096),
            ),
            (
                ("bob".to_string(), ScramMechanism::Sha512),
                ScramCredential::generate(ScramMechanism::Sha512, b"pw", 4096),
            ),
        ]));
        let check = |message: &[u8], expected: &str| {
            let outcome = match authenticate(message, &users) {
                Ok(principal) => principal.to_string(),
                Err(error) => error.to_string(),
            };
            assert!(outcome.contains(expected), "{:?}: {outcome}", String::from_utf8_lossy(message));
        };
        check(b"\0alice\0pw", "User:alice");
        check(b"alice\0alice\0pw", "User:alice");
        check(b"\0bob\0pw", "User:bob");
        check(b"\0alice\0wrong", "wrong password");
        check(b"\0carol\0pw", "unknown user");
        check(b"bob\0alice\0pw", "authorization id");
        check(b"\0\0pw", "empty");
        check(b"\0alice\0", "password is empty");
        check(b"alice", "expected");
        check(b"\0a\0b\0c", "expected");
        check(b"\0\xff\0pw", "UTF-8");
    }
}
