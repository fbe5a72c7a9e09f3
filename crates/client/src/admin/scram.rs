//! SCRAM credential requests (KIP-554): AlterUserScramCredentials (upsert a user's credential
//! for a mechanism, or delete it) and DescribeUserScramCredentials (which mechanisms and
//! iteration counts a user has; never a password or a salted hash).
//!
//! An upsert carries the password to librdkafka, which salts and hashes it (PBKDF2 over
//! OpenSSL) before sending: the broker receives the salted password only, as KIP-554 specifies.
//! The password is never printed: [`ScramAlteration`]'s `Debug` leaves it out.

use std::ffi::{c_char, c_int, CString};
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::client::{Client, ClientContext};
use rdsys::rd_kafka_admin_op_t as Op;

use super::ffi::{as_int, c_string, c_text, entry_error, request, result_array, Operation, Owned};
use super::AdminError;

/// The iteration count Kafka's tools use when none is given (Kafka accepts 4096 to 16384).
pub const SCRAM_ITERATIONS_DEFAULT: i32 = 4096;

/// A SCRAM mechanism (RFC 5802 with SHA-256 or SHA-512, RFC 7677).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
    /// A mechanism this code has no name for, as the broker sent it.
    Unknown(i32),
}

impl ScramMechanism {
    fn from_code(code: c_int) -> ScramMechanism {
        match code {
            1 => ScramMechanism::Sha256,
            2 => ScramMechanism::Sha512,
            other => ScramMechanism::Unknown(other),
        }
    }

    fn to_rdsys(self) -> rdsys::rd_kafka_ScramMechanism_t {
        match self {
            ScramMechanism::Sha256 => rdsys::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_256,
            ScramMechanism::Sha512 => rdsys::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512,
            ScramMechanism::Unknown(_) => rdsys::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_UNKNOWN,
        }
    }
}

impl std::fmt::Display for ScramMechanism {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScramMechanism::Sha256 => formatter.write_str("SCRAM-SHA-256"),
            ScramMechanism::Sha512 => formatter.write_str("SCRAM-SHA-512"),
            ScramMechanism::Unknown(code) => write!(formatter, "UNKNOWN({code})"),
        }
    }
}

impl std::str::FromStr for ScramMechanism {
    type Err = String;

    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`, in any case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_uppercase().as_str() {
            "SCRAM-SHA-256" => Ok(ScramMechanism::Sha256),
            "SCRAM-SHA-512" => Ok(ScramMechanism::Sha512),
            _ => Err(format!("unknown SCRAM mechanism {text:?}; one of SCRAM-SHA-256, SCRAM-SHA-512")),
        }
    }
}

/// One credential of a user, as DescribeUserScramCredentials shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScramCredentialInfo {
    pub mechanism: ScramMechanism,
    pub iterations: i32,
}

/// A user's credentials, or why they could not be described (Kafka answers
/// RESOURCE_NOT_FOUND for a user without any).
#[derive(Debug)]
pub struct UserScramCredentials {
    pub user: String,
    pub credentials: Result<Vec<ScramCredentialInfo>, AdminError>,
}

/// What AlterUserScramCredentials answered for one user.
#[derive(Debug)]
pub struct UserOutcome {
    pub user: String,
    pub outcome: Result<(), AdminError>,
}

/// One change of AlterUserScramCredentials.
#[derive(Clone, PartialEq, Eq)]
pub enum ScramAlteration {
    /// Sets `user`'s credential for `mechanism`. `salt` is drawn at random when `None`.
    Upsert {
        user: String,
        mechanism: ScramMechanism,
        iterations: i32,
        password: String,
        salt: Option<Vec<u8>>,
    },
    /// Removes `user`'s credential for `mechanism`.
    Delete { user: String, mechanism: ScramMechanism },
}

impl ScramAlteration {
    pub fn user(&self) -> &str {
        match self {
            ScramAlteration::Upsert { user, .. } | ScramAlteration::Delete { user, .. } => user,
        }
    }
}

impl std::fmt::Debug for ScramAlteration {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScramAlteration::Upsert { user, mechanism, iterations, password: _, salt } => formatter
                .debug_struct("Upsert")
                .field("user", user)
                .field("mechanism", mechanism)
                .field("iterations", iterations)
                .field("password", &"(redacted)")
                .field("salt", &salt.as_ref().map(|salt| format!("{} bytes", salt.len())))
                .finish(),
            ScramAlteration::Delete { user, mechanism } => {
                formatter.debug_struct("Delete").field("user", user).field("mechanism", mechanism).finish()
            }
        }
    }
}

const ALTER_USER_SCRAM_CREDENTIALS: Operation<rdsys::rd_kafka_UserScramCredentialAlteration_t> =
    Operation::new(
        "AlterUserScramCredentials",
        Op::RD_KAFKA_ADMIN_OP_ALTERUSERSCRAMCREDENTIALS,
        rdsys::rd_kafka_AlterUserScramCredentials,
        rdsys::rd_kafka_event_AlterUserScramCredentials_result,
    );
const DESCRIBE_USER_SCRAM_CREDENTIALS: Operation<c_char> = Operation::new(
    "DescribeUserScramCredentials",
    Op::RD_KAFKA_ADMIN_OP_DESCRIBEUSERSCRAMCREDENTIALS,
    describe_users,
    rdsys::rd_kafka_event_DescribeUserScramCredentials_result,
);

/// Applies `alterations` in one AlterUserScramCredentials request: per user named, the outcome
/// (Kafka answers once per user, however many of its mechanisms change).
pub fn alter_user_scram_credentials<C: ClientContext>(
    client: &Client<C>,
    alterations: &[ScramAlteration],
    timeout: Duration,
) -> Result<Vec<UserOutcome>, AdminError> {
    let owned = alterations.iter().map(new_alteration).collect::<Result<Vec<_>, _>>()?;
    // SAFETY (read): the result is live during the call; its entries are per-user responses.
    request(client, &ALTER_USER_SCRAM_CREDENTIALS, timeout, &owned, |result| unsafe {
        Ok(result_array(result, rdsys::rd_kafka_AlterUserScramCredentials_result_responses)
            .iter()
            .map(|&response| {
                let user = c_text(rdsys::rd_kafka_AlterUserScramCredentials_result_response_user(response));
                let error =
                    entry_error(rdsys::rd_kafka_AlterUserScramCredentials_result_response_error(response));
                UserOutcome { user, outcome: error.map_or(Ok(()), Err) }
            })
            .collect())
    })
}

/// The SCRAM credentials of `users`, or of every user with any when `users` is empty.
pub fn describe_user_scram_credentials<C: ClientContext>(
    client: &Client<C>,
    users: &[&str],
    timeout: Duration,
) -> Result<Vec<UserScramCredentials>, AdminError> {
    let names = users.iter().map(|user| c_string(user)).collect::<Result<Vec<CString>, _>>()?;
    // SAFETY (read): the result is live during the call; its entries are per-user descriptions,
    // each with `count` credential infos.
    request(client, &DESCRIBE_USER_SCRAM_CREDENTIALS, timeout, &names, |result| unsafe {
        let descriptions =
            result_array(result, rdsys::rd_kafka_DescribeUserScramCredentials_result_descriptions);
        Ok(descriptions.iter().map(|&description| read_description(description)).collect())
    })
}

/// A user's description of a DescribeUserScramCredentials result, copied out.
///
/// # Safety
///
/// `description` must be a live description; its strings and infos live as long as it does.
unsafe fn read_description(
    description: *const rdsys::rd_kafka_UserScramCredentialsDescription_t,
) -> UserScramCredentials {
    // SAFETY: the caller's contract; librdkafka holds `count` infos.
    unsafe {
        let user = c_text(rdsys::rd_kafka_UserScramCredentialsDescription_user(description));
        if let Some(error) = entry_error(rdsys::rd_kafka_UserScramCredentialsDescription_error(description)) {
            return UserScramCredentials { user, credentials: Err(error) };
        }
        let count = rdsys::rd_kafka_UserScramCredentialsDescription_scramcredentialinfo_count(description);
        let credentials = (0..count)
            .map(|index| {
                let info =
                    rdsys::rd_kafka_UserScramCredentialsDescription_scramcredentialinfo(description, index);
                ScramCredentialInfo {
                    mechanism: ScramMechanism::from_code(as_int::rd_kafka_ScramCredentialInfo_mechanism(
                        info,
                    )),
                    iterations: rdsys::rd_kafka_ScramCredentialInfo_iterations(info),
                }
            })
            .collect();
        UserScramCredentials { user, credentials: Ok(credentials) }
    }
}

/// DescribeUserScramCredentials as the other requests are sent (`ffi::Submit`): its array is of
/// `const char *`.
///
/// # Safety
///
/// As `rd_kafka_DescribeUserScramCredentials`: `users` points to `count` live C strings.
unsafe extern "C" fn describe_users(
    client: *mut rdsys::rd_kafka_t,
    users: *mut *mut c_char,
    count: usize,
    options: *const rdsys::rd_kafka_AdminOptions_t,
    queue: *mut rdsys::rd_kafka_queue_t,
) {
    // SAFETY: the caller's contract; librdkafka only reads the strings.
    unsafe { rdsys::rd_kafka_DescribeUserScramCredentials(client, users.cast(), count, options, queue) }
}

/// librdkafka's copy of `alteration`; for an upsert it salts and hashes the password here.
fn new_alteration(
    alteration: &ScramAlteration,
) -> Result<Owned<rdsys::rd_kafka_UserScramCredentialAlteration_t>, AdminError> {
    let user = c_string(alteration.user())?;
    let pointer = match alteration {
        ScramAlteration::Upsert { mechanism, iterations, password, salt, .. } => {
            let salt = salt.as_deref().unwrap_or_default();
            // SAFETY: the name, password and salt outlive the call; librdkafka copies them (a
            // null salt with length 0 asks it for a random one).
            unsafe {
                rdsys::rd_kafka_UserScramCredentialUpsertion_new(
                    user.as_ptr(),
                    mechanism.to_rdsys(),
                    *iterations,
                    password.as_ptr(),
                    password.len(),
                    if salt.is_empty() { std::ptr::null() } else { salt.as_ptr() },
                    salt.len(),
                )
            }
        }
        // SAFETY: the name outlives the call; librdkafka copies it.
        ScramAlteration::Delete { mechanism, .. } => unsafe {
            rdsys::rd_kafka_UserScramCredentialDeletion_new(user.as_ptr(), mechanism.to_rdsys())
        },
    };
    // SAFETY: a non-null alteration is ours; this is its destructor.
    unsafe {
        Owned::made(pointer, rdsys::rd_kafka_UserScramCredentialAlteration_destroy, || {
            format!("librdkafka refused the SCRAM change for {:?}", alteration.user())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanisms_parse_as_kafka_names_them_and_passwords_stay_hidden() {
        assert_eq!("scram-sha-256".parse::<ScramMechanism>(), Ok(ScramMechanism::Sha256));
        assert_eq!(
            "SCRAM-SHA-512".parse::<ScramMechanism>().map(|m| m.to_string()),
            Ok("SCRAM-SHA-512".into())
        );
        assert!("PLAIN".parse::<ScramMechanism>().is_err());
        let upsert = ScramAlteration::Upsert {
            user: "alice".to_string(),
            mechanism: ScramMechanism::Sha256,
            iterations: SCRAM_ITERATIONS_DEFAULT,
            password: "hunter2".to_string(),
            salt: None,
        };
        let shown = format!("{upsert:?}");
        assert!(!shown.contains("hunter2") && shown.contains("(redacted)"), "{shown}");
        assert!(new_alteration(&upsert).is_ok());
        assert!(new_alteration(&ScramAlteration::Delete {
            user: "alice".to_string(),
            mechanism: ScramMechanism::Sha512
        })
        .is_ok());
    }
}
