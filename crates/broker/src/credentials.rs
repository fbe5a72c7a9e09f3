//! Users' SCRAM credentials, as Kafka keeps them (KIP-554): per user and mechanism, the salt,
//! StoredKey, ServerKey and iteration count, never a password. Durable in the
//! `<data-dir>/.scram-credentials` journal (fsynced before an alteration is acknowledged,
//! replayed on open), and served to SASL from memory behind a read lock.
//!
//! One user name is reserved: the embedded components' (`INTERNAL_USER`), whose credential
//! lives only in memory, made afresh at each start by `serve`, so no API can read, replace or
//! delete it and it never reaches the disk. Names starting with `RESERVED_USER_PREFIX` are
//! refused to AlterUserScramCredentials.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tidewater_log::{Clock, LogError};
use tidewater_security::sasl::scram::{ITERATIONS_DEFAULT, ITERATIONS_MAX, ITERATIONS_MIN};
use tidewater_security::sasl::{CredentialSource, ScramCredential, ScramMechanism};

use crate::internal_log::Journal;

/// The journal's directory under the data directory.
const JOURNAL_DIR: &str = ".scram-credentials";
/// User names the broker keeps for itself.
pub const RESERVED_USER_PREFIX: &str = "__tidewater";
/// The user the components `serve` runs (gateway, triggers, query jobs) authenticate as.
pub const INTERNAL_USER: &str = "__tidewater_internal";

/// Why an alteration of one user's credentials was refused, with Kafka's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("{0}")]
    Unacceptable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Storage(String),
}

/// One change to a user's credentials.
#[derive(Debug, Clone)]
pub enum CredentialChange {
    Upsert { user: String, mechanism: ScramMechanism, credential: ScramCredential },
    Delete { user: String, mechanism: ScramMechanism },
}

#[derive(Debug)]
pub struct CredentialStore {
    journal: Mutex<Journal>,
    credentials: RwLock<BTreeMap<(String, ScramMechanism), ScramCredential>>,
    internal: RwLock<Option<(ScramMechanism, ScramCredential)>>,
    clock: Arc<dyn Clock>,
}

/// A credential as the journal holds it.
#[derive(Serialize, Deserialize)]
struct StoredCredential {
    salt: String,
    stored_key: String,
    server_key: String,
    iterations: u32,
}

fn journal_key(user: &str, mechanism: ScramMechanism) -> Vec<u8> {
    format!("{}/{user}", mechanism.name()).into_bytes()
}

impl CredentialStore {
    pub(crate) fn open(data_dir: &Path, clock: Arc<dyn Clock>) -> Result<CredentialStore, LogError> {
        let (journal, records) = Journal::open(data_dir, JOURNAL_DIR, clock.clone())?;
        let mut credentials = BTreeMap::new();
        for (key, value) in records {
            let key = String::from_utf8_lossy(&key).into_owned();
            let Some((mechanism, user)) = key.split_once('/').and_then(|(mechanism, user)| {
                let mechanism =
                    ScramMechanism::ALL.into_iter().find(|candidate| candidate.name() == mechanism)?;
                Some((mechanism, user.to_string()))
            }) else {
                tracing::warn!(%key, "skipping a credential record with a key this version does not know");
                continue;
            };
            if value.is_empty() {
                credentials.remove(&(user, mechanism));
                continue;
            }
            match serde_json::from_slice::<StoredCredential>(&value).ok().and_then(|stored| stored.decode()) {
                Some(credential) => {
                    credentials.insert((user, mechanism), credential);
                }
                None => {
                    tracing::error!(%user, %mechanism, "a stored credential does not decode; the user cannot log in with it")
                }
            }
        }
        Ok(CredentialStore {
            journal: Mutex::new(journal),
            credentials: RwLock::new(credentials),
            internal: RwLock::new(None),
            clock,
        })
    }

    /// Sets the embedded components' credential (in memory only).
    pub fn set_internal_credential(&self, mechanism: ScramMechanism, credential: ScramCredential) {
        *self.internal.write().expect("credential lock poisoned by a panic") = Some((mechanism, credential));
    }

    /// Every user with a credential and the mechanisms and iterations of each, sorted by name.
    pub fn describe(&self) -> BTreeMap<String, Vec<(ScramMechanism, u32)>> {
        let mut users: BTreeMap<String, Vec<(ScramMechanism, u32)>> = BTreeMap::new();
        for ((user, mechanism), credential) in self.read().iter() {
            users.entry(user.clone()).or_default().push((*mechanism, credential.iterations));
        }
        users
    }

    /// Checks `change` as KIP-554 asks: a reserved or empty name, an iteration count outside
    /// Kafka's bounds, or a salted password of the wrong length are unacceptable; deleting what
    /// does not exist is not found.
    pub fn validate(&self, change: &CredentialChange) -> Result<(), CredentialError> {
        let user = match change {
            CredentialChange::Upsert { user, .. } | CredentialChange::Delete { user, .. } => user,
        };
        if user.is_empty() {
            return Err(CredentialError::Unacceptable("Username must not be empty".to_string()));
        }
        if user.starts_with(RESERVED_USER_PREFIX) {
            return Err(CredentialError::Unacceptable(format!(
                "user names starting with {RESERVED_USER_PREFIX} are reserved for Tidewater's own components"
            )));
        }
        match change {
            CredentialChange::Upsert { mechanism, credential, .. } => {
                if credential.iterations < ITERATIONS_MIN {
                    return Err(CredentialError::Unacceptable(format!(
                        "Too few iterations: {mechanism} needs at least {ITERATIONS_MIN}"
                    )));
                }
                if credential.iterations > ITERATIONS_MAX {
                    return Err(CredentialError::Unacceptable(format!(
                        "Too many iterations: {mechanism} allows at most {ITERATIONS_MAX}"
                    )));
                }
                if credential.salt.is_empty() {
                    return Err(CredentialError::Unacceptable("The salt must not be empty".to_string()));
                }
            }
            CredentialChange::Delete { user, mechanism } => {
                if !self.read().contains_key(&(user.clone(), *mechanism)) {
                    return Err(CredentialError::NotFound(
                        "Attempt to delete a user credential that does not exist".to_string(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Applies validated changes: written to the journal and fsynced first, then visible to SASL.
    pub fn apply(&self, changes: &[CredentialChange]) -> Result<(), CredentialError> {
        if changes.is_empty() {
            return Ok(());
        }
        let records: Vec<(Vec<u8>, Vec<u8>)> = changes
            .iter()
            .map(|change| match change {
                CredentialChange::Upsert { user, mechanism, credential } => {
                    let stored = StoredCredential::encode(credential);
                    let value = serde_json::to_vec(&stored).unwrap_or_default();
                    (journal_key(user, *mechanism), value)
                }
                CredentialChange::Delete { user, mechanism } => (journal_key(user, *mechanism), Vec::new()),
            })
            .collect();
        let journal = self.journal.lock().expect("credential journal mutex poisoned by a panic");
        journal
            .write(self.clock.now_ms(), &records)
            .map_err(|error| CredentialError::Storage(format!("could not store credentials: {error}")))?;
        let mut credentials = self.credentials.write().expect("credential lock poisoned by a panic");
        for change in changes {
            match change {
                CredentialChange::Upsert { user, mechanism, credential } => {
                    credentials.insert((user.clone(), *mechanism), credential.clone());
                }
                CredentialChange::Delete { user, mechanism } => {
                    credentials.remove(&(user.clone(), *mechanism));
                }
            }
        }
        Ok(())
    }

    /// Creates SCRAM-SHA-256 and SCRAM-SHA-512 credentials for `user` unless it has some already
    /// (Redpanda's `RP_BOOTSTRAP_USER`): the first user of a new cluster. Returns whether it
    /// created them.
    pub fn ensure_user(&self, user: &str, password: &[u8]) -> Result<bool, CredentialError> {
        if self.has_user(user) {
            return Ok(false);
        }
        if password.is_empty() {
            return Err(CredentialError::Unacceptable("the bootstrap user's password is empty".to_string()));
        }
        let changes: Vec<CredentialChange> = ScramMechanism::ALL
            .into_iter()
            .map(|mechanism| CredentialChange::Upsert {
                user: user.to_string(),
                mechanism,
                credential: ScramCredential::generate(mechanism, password, ITERATIONS_DEFAULT),
            })
            .collect();
        for change in &changes {
            self.validate(change)?;
        }
        self.apply(&changes)?;
        Ok(true)
    }

    /// Whether `user` has any credential.
    pub fn has_user(&self, user: &str) -> bool {
        ScramMechanism::ALL
            .into_iter()
            .any(|mechanism| self.read().contains_key(&(user.to_string(), mechanism)))
    }

    pub(crate) fn close(&self) -> Result<(), LogError> {
        self.journal.lock().expect("credential journal mutex poisoned by a panic").close()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<(String, ScramMechanism), ScramCredential>> {
        self.credentials.read().expect("credential lock poisoned by a panic")
    }
}

impl CredentialSource for CredentialStore {
    fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        if user == INTERNAL_USER {
            let internal = self.internal.read().expect("credential lock poisoned by a panic");
            return internal
                .as_ref()
                .filter(|(kept, _)| *kept == mechanism)
                .map(|(_, credential)| credential.clone());
        }
        self.read().get(&(user.to_string(), mechanism)).cloned()
    }
}

impl StoredCredential {
    fn encode(credential: &ScramCredential) -> StoredCredential {
        StoredCredential {
            salt: BASE64.encode(&credential.salt),
            stored_key: BASE64.encode(&credential.stored_key),
            server_key: BASE64.encode(&credential.server_key),
            iterations: credential.iterations,
        }
    }

    fn decode(self) -> Option<ScramCredential> {
        Some(ScramCredential {
            salt: BASE64.decode(self.salt).ok()?,
            stored_key: BASE64.decode(self.stored_key).ok()?,
            server_key: BASE64.decode(self.server_key).ok()?,
            iterations: self.iterations,
        })
    }
}

#[cfg(test)]
mod tests {
    use tidewater_log::SystemClock;

    use super::*;

    fn upsert(user: &str, mechanism: ScramMechanism, password: &[u8], iterations: u32) -> CredentialChange {
        CredentialChange::Upsert {
            user: user.to_string(),
            mechanism,
            credential: ScramCredential::generate(mechanism, password, iterations),
        }
    }

    #[test]
    fn credentials_survive_a_reopen_and_deletions_too() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = CredentialStore::open(dir.path(), Arc::new(SystemClock)).expect("open");
        let password = b"correct-horse-battery-staple";
        let changes = [
            upsert("alice", ScramMechanism::Sha256, password, 4096),
            upsert("bob", ScramMechanism::Sha512, b"b", 8192),
        ];
        for change in &changes {
            store.validate(change).expect("valid");
        }
        store.apply(&changes).expect("apply");
        store
            .apply(&[CredentialChange::Delete { user: "bob".to_string(), mechanism: ScramMechanism::Sha512 }])
            .expect("delete");
        store.close().expect("close");
        let reopened = CredentialStore::open(dir.path(), Arc::new(SystemClock)).expect("reopen");
        let alice = reopened.scram_credential("alice", ScramMechanism::Sha256).expect("alice");
        assert!(alice.verify_password(ScramMechanism::Sha256, password));
        assert_eq!(reopened.scram_credential("bob", ScramMechanism::Sha512), None);
        assert_eq!(
            reopened.describe(),
            BTreeMap::from([("alice".to_string(), vec![(ScramMechanism::Sha256, 4096)])])
        );
        // The journal was written, and nothing in it holds the password.
        let files: Vec<Vec<u8>> = std::fs::read_dir(dir.path().join(JOURNAL_DIR))
            .expect("journal dir")
            .flatten()
            .filter_map(|entry| std::fs::read(entry.path()).ok())
            .collect();
        assert!(files.iter().any(|bytes| bytes.windows(5).any(|window| window == b"alice")));
        assert!(!files.iter().any(|bytes| bytes.windows(password.len()).any(|window| window == password)));
    }

    #[test]
    fn unacceptable_changes_are_refused_with_kafka_s_reasons() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = CredentialStore::open(dir.path(), Arc::new(SystemClock)).expect("open");
        let check = |change: CredentialChange, expected: &str| {
            let error = store.validate(&change).expect_err(expected).to_string();
            assert!(error.contains(expected), "{error}");
        };
        check(upsert("", ScramMechanism::Sha256, b"pw", 4096), "must not be empty");
        check(upsert("__tidewater_x", ScramMechanism::Sha256, b"pw", 4096), "reserved");
        check(upsert("alice", ScramMechanism::Sha256, b"pw", 4095), "Too few iterations");
        check(upsert("alice", ScramMechanism::Sha256, b"pw", 16385), "Too many iterations");
        check(
            CredentialChange::Delete { user: "nobody".to_string(), mechanism: ScramMechanism::Sha256 },
            "does not exist",
        );
    }

    #[test]
    fn the_bootstrap_user_is_made_once_with_both_mechanisms() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = CredentialStore::open(dir.path(), Arc::new(SystemClock)).expect("open");
        assert_eq!(store.ensure_user("admin", b"first"), Ok(true));
        assert_eq!(store.ensure_user("admin", b"second"), Ok(false));
        for mechanism in ScramMechanism::ALL {
            let credential = store.scram_credential("admin", mechanism).expect("credential");
            assert!(credential.verify_password(mechanism, b"first"));
        }
        assert!(store.ensure_user("__tidewater_internal", b"x").is_err());
    }

    #[test]
    fn the_internal_user_lives_in_memory_for_its_mechanism_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = CredentialStore::open(dir.path(), Arc::new(SystemClock)).expect("open");
        let credential = ScramCredential::generate(ScramMechanism::Sha512, b"secret", 4096);
        store.set_internal_credential(ScramMechanism::Sha512, credential.clone());
        assert_eq!(store.scram_credential(INTERNAL_USER, ScramMechanism::Sha512), Some(credential));
        assert_eq!(store.scram_credential(INTERNAL_USER, ScramMechanism::Sha256), None);
        assert!(store.describe().is_empty());
    }
}
