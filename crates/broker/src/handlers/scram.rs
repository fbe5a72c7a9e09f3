//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): SCRAM users managed
//! through Kafka's own APIs, so confluent-kafka's AdminClient and kafka-configs style tools work.
//!
//! An upsertion carries the salt and the salted password (`Hi(password, salt, iterations)`, made
//! by the client), never the password; the broker derives StoredKey and ServerKey from it. The
//! changes of one user are all applied or none is (the user's result carries the first error);
//! every applied change of a request is written to the journal in one fsynced batch before the
//! response.
//!
//! Authorization as in Kafka: describing needs DESCRIBE on the cluster, altering ALTER
//! (CLUSTER_AUTHORIZATION_FAILED for the whole request, or for each user altered).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use tidewater_kafka::kafka_protocol::messages::alter_user_scram_credentials_request::AlterUserScramCredentialsRequest;
use tidewater_kafka::kafka_protocol::messages::alter_user_scram_credentials_response::{
    AlterUserScramCredentialsResponse, AlterUserScramCredentialsResult,
};
use tidewater_kafka::kafka_protocol::messages::describe_user_scram_credentials_request::DescribeUserScramCredentialsRequest;
use tidewater_kafka::kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResponse, DescribeUserScramCredentialsResult,
};
use tidewater_kafka::ResponseError;
use tidewater_security::sasl::{ScramCredential, ScramMechanism};

use super::{blocking, str_bytes};
use crate::acl::{Access, Operation};
use crate::broker::Broker;
use crate::credentials::{CredentialChange, CredentialError};

pub(super) fn describe(
    broker: &Broker,
    request: DescribeUserScramCredentialsRequest,
    access: &Access,
) -> DescribeUserScramCredentialsResponse {
    if let Err(refusal) = access.check_cluster(Operation::Describe) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(refusal.code.code())
            .with_error_message(Some(str_bytes(refusal.message)));
    }
    let users = broker.credentials.describe();
    let result = |user: String, mechanisms: &[(ScramMechanism, u32)]| {
        DescribeUserScramCredentialsResult::default().with_user(str_bytes(user)).with_credential_infos(
            mechanisms
                .iter()
                .map(|(mechanism, iterations)| {
                    CredentialInfo::default()
                        .with_mechanism(mechanism.kafka_type())
                        .with_iterations(i32::try_from(*iterations).unwrap_or(i32::MAX))
                })
                .collect(),
        )
    };
    let results = match request.users.filter(|requested| !requested.is_empty()) {
        // No names: every user.
        None => users.iter().map(|(user, mechanisms)| result(user.clone(), mechanisms)).collect(),
        Some(requested) => {
            let mut seen = HashSet::new();
            let duplicated: HashSet<String> = requested
                .iter()
                .filter(|user| !seen.insert(user.name.to_string()))
                .map(|user| user.name.to_string())
                .collect();
            let mut reported = HashSet::new();
            requested
                .into_iter()
                .map(|user| user.name.to_string())
                .filter(|user| reported.insert(user.clone()))
                .map(|user| {
                    let failure = |code: ResponseError, message: &str| {
                        DescribeUserScramCredentialsResult::default()
                            .with_user(str_bytes(user.clone()))
                            .with_error_code(code.code())
                            .with_error_message(Some(str_bytes(message)))
                    };
                    if duplicated.contains(&user) {
                        return failure(
                            ResponseError::DuplicateResource,
                            "Cannot describe SCRAM credentials for the same user twice in a single request",
                        );
                    }
                    match users.get(&user) {
                        Some(mechanisms) => result(user.clone(), mechanisms),
                        None => failure(
                            ResponseError::ResourceNotFound,
                            "Attempt to describe a user credential that does not exist",
                        ),
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

pub(super) async fn alter(
    broker: Arc<Broker>,
    request: AlterUserScramCredentialsRequest,
    access: &Access,
) -> AlterUserScramCredentialsResponse {
    if let Err(refusal) = access.check_cluster(Operation::Alter) {
        // Every user the request names gets the refusal, once.
        let mut users: Vec<String> = Vec::new();
        let names = request.deletions.iter().map(|deletion| &deletion.name);
        for name in names.chain(request.upsertions.iter().map(|upsertion| &upsertion.name)) {
            if !users.iter().any(|user| user.as_str() == name.as_str()) {
                users.push(name.to_string());
            }
        }
        let results = users
            .into_iter()
            .map(|user| {
                AlterUserScramCredentialsResult::default()
                    .with_user(str_bytes(user))
                    .with_error_code(refusal.code.code())
                    .with_error_message(Some(str_bytes(refusal.message.clone())))
            })
            .collect();
        return AlterUserScramCredentialsResponse::default().with_results(results);
    }
    // Each user's changes in request order, or the first reason to refuse them all.
    let mut per_user: BTreeMap<String, Result<Vec<CredentialChange>, (ResponseError, String)>> =
        BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut seen: HashSet<(String, i8)> = HashSet::new();
    let deletions =
        request.deletions.into_iter().map(|deletion| (deletion.name.to_string(), deletion.mechanism, None));
    let upsertions = request.upsertions.into_iter().map(|upsertion| {
        let name = upsertion.name.to_string();
        (name, upsertion.mechanism, Some((upsertion.iterations, upsertion.salt, upsertion.salted_password)))
    });
    for (user, mechanism_type, upsertion) in deletions.chain(upsertions) {
        if !per_user.contains_key(&user) {
            order.push(user.clone());
        }
        let entry = per_user.entry(user.clone()).or_insert_with(|| Ok(Vec::new()));
        let Ok(changes) = entry else { continue };
        let change = (|| {
            if !seen.insert((user.clone(), mechanism_type)) {
                return Err((
                    ResponseError::DuplicateResource,
                    "A user credential cannot be altered twice in the same request".to_string(),
                ));
            }
            let mechanism = ScramMechanism::from_kafka_type(mechanism_type).ok_or_else(|| {
                (ResponseError::UnsupportedSaslMechanism, format!("Unknown SCRAM mechanism {mechanism_type}"))
            })?;
            let change = match upsertion {
                None => CredentialChange::Delete { user: user.clone(), mechanism },
                Some((iterations, salt, salted_password)) => {
                    if salted_password.is_empty() {
                        return Err((
                            ResponseError::UnacceptableCredential,
                            "The salted password must not be empty".to_string(),
                        ));
                    }
                    let iterations = u32::try_from(iterations).unwrap_or(0);
                    CredentialChange::Upsert {
                        user: user.clone(),
                        mechanism,
                        credential: ScramCredential::from_salted_password(
                            mechanism,
                            &salted_password,
                            salt.to_vec(),
                            iterations,
                        ),
                    }
                }
            };
            broker.credentials.validate(&change).map_err(|error| match error {
                CredentialError::Unacceptable(message) => (ResponseError::UnacceptableCredential, message),
                CredentialError::NotFound(message) => (ResponseError::ResourceNotFound, message),
                CredentialError::Storage(message) => (ResponseError::KafkaStorageError, message),
            })?;
            Ok(change)
        })();
        match change {
            Ok(change) => changes.push(change),
            Err(failure) => *entry = Err(failure),
        }
    }
    let accepted: Vec<CredentialChange> =
        per_user.values().filter_map(|changes| changes.as_ref().ok()).flatten().cloned().collect();
    let applied = {
        let broker = broker.clone();
        blocking(move || broker.credentials.apply(&accepted)).await
    };
    let results = order
        .into_iter()
        .map(|user| {
            let outcome = match (&per_user[&user], &applied) {
                (Err((code, message)), _) => Some((*code, message.clone())),
                (Ok(_), Err(error)) => Some((ResponseError::KafkaStorageError, error.to_string())),
                (Ok(_), Ok(())) => None,
            };
            let result = AlterUserScramCredentialsResult::default().with_user(str_bytes(user.clone()));
            match outcome {
                None => {
                    tracing::info!(%user, "SCRAM credentials altered");
                    result
                }
                Some((code, message)) => {
                    result.with_error_code(code.code()).with_error_message(Some(str_bytes(message)))
                }
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}
