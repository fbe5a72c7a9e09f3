//! `KafkaPrincipal`: the identity a connection acts as, written `Type:name` as Kafka writes it
//! (`User:alice`, `User:CN=device-7,O=Acme`). ACLs, superusers and logs all name principals
//! this way.

use std::fmt;
use std::str::FromStr;

/// The principal of a connection that did not authenticate (a `PLAINTEXT` listener, or `SSL`
/// without a client certificate), as Kafka names it.
pub const ANONYMOUS_NAME: &str = "ANONYMOUS";
/// The principal type of users, the only type Kafka's default principal builder makes.
pub const USER_TYPE: &str = "User";

/// An authenticated (or anonymous) identity: a type and a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KafkaPrincipal {
    pub principal_type: String,
    pub name: String,
}

impl KafkaPrincipal {
    pub fn user(name: impl Into<String>) -> KafkaPrincipal {
        KafkaPrincipal { principal_type: USER_TYPE.to_string(), name: name.into() }
    }

    /// `User:ANONYMOUS`.
    pub fn anonymous() -> KafkaPrincipal {
        KafkaPrincipal::user(ANONYMOUS_NAME)
    }

    pub fn is_anonymous(&self) -> bool {
        self.principal_type == USER_TYPE && self.name == ANONYMOUS_NAME
    }
}

impl fmt::Display for KafkaPrincipal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}", self.principal_type, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a principal: expected Type:name, such as User:alice")]
pub struct PrincipalError {
    pub text: String,
}

impl FromStr for KafkaPrincipal {
    type Err = PrincipalError;

    /// Parses `Type:name`. The name may itself contain colons (a DN can), so only the first
    /// colon separates; neither part may be empty.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once(':') {
            Some((principal_type, name)) if !principal_type.is_empty() && !name.is_empty() => {
                Ok(KafkaPrincipal { principal_type: principal_type.to_string(), name: name.to_string() })
            }
            _ => Err(PrincipalError { text: text.to_string() }),
        }
    }
}

/// A list of principals, as `--superusers` takes it: separated by semicolons, as Kafka's
/// `super.users`, or by commas. A principal's name may itself hold commas (a certificate's DN:
/// `User:CN=alice,OU=eng`), so a comma starts a new principal only where what follows it reads
/// `Type:` (letters, digits and underscores, then a colon), which no DN attribute (`OU=...`) does.
pub fn parse_principal_list(text: &str) -> Result<Vec<KafkaPrincipal>, PrincipalError> {
    let mut principals: Vec<String> = Vec::new();
    for part in text.split(';') {
        for piece in part.split(',') {
            let starts_principal = piece.trim_start().split_once(':').is_some_and(|(kind, _)| {
                kind.starts_with(|c: char| c.is_ascii_alphabetic())
                    && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
            match principals.last_mut() {
                Some(last) if !starts_principal => {
                    last.push(',');
                    last.push_str(piece);
                }
                _ => principals.push(piece.to_string()),
            }
        }
    }
    principals
        .iter()
        .map(|principal| principal.trim())
        .filter(|principal| !principal.is_empty())
        .map(str::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_parse_and_print_as_kafka_writes_them() {
        let check = |text: &str, expected: Option<(&str, &str)>| {
            let parsed = text.parse::<KafkaPrincipal>().ok();
            let parts =
                parsed.as_ref().map(|principal| (principal.principal_type.as_str(), principal.name.as_str()));
            assert_eq!(parts, expected, "{text}");
            if let Some(principal) = parsed {
                assert_eq!(principal.to_string(), text);
            }
        };
        check("User:alice", Some(("User", "alice")));
        check("User:CN=a:b,O=Acme", Some(("User", "CN=a:b,O=Acme")));
        check("Group:ops", Some(("Group", "ops")));
        check("alice", None);
        check(":alice", None);
        check("User:", None);
        assert!(KafkaPrincipal::anonymous().is_anonymous());
    }

    #[test]
    fn principal_lists_split_on_semicolons_and_on_commas_that_start_a_principal() {
        let check = |text: &str, expected: &[&str]| {
            let parsed: Vec<String> = parse_principal_list(text)
                .unwrap_or_else(|error| panic!("{text}: {error}"))
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(parsed, expected, "{text}");
        };
        check("User:a,User:b", &["User:a", "User:b"]);
        check("User:a;User:b", &["User:a", "User:b"]);
        check("User:CN=alice,OU=eng,O=Acme,User:bob", &["User:CN=alice,OU=eng,O=Acme", "User:bob"]);
        check("User:CN=alice,OU=eng;User:CN=bob", &["User:CN=alice,OU=eng", "User:CN=bob"]);
        check(" User:a , User:b ", &["User:a", "User:b"]);
        check("", &[]);
        assert!(parse_principal_list("alice,User:bob").is_err());
        assert!(!KafkaPrincipal::user("alice").is_anonymous());
    }
}
