//! CreateAcls, DescribeAcls and DeleteAcls (v0-3): Kafka's ACL management APIs over the
//! broker's `Authorizer`, so kafka-acls, confluent-kafka's and kafka-python's admin clients
//! manage Tidewater's ACLs.
//!
//! CreateAcls and DeleteAcls need ALTER on the cluster, DescribeAcls DESCRIBE; a refusal is
//! CLUSTER_AUTHORIZATION_FAILED for every creation, filter or the whole description. Each
//! binding and filter is validated on its own (INVALID_REQUEST with the reason); the valid
//! ones are applied together, durably, before the answer. Version 0 has no pattern type:
//! its bindings and filters are LITERAL, as in Kafka. Unlike Kafka without an authorizer,
//! these APIs work while authorization is off, so ACLs can be set up before it is turned on.

use std::sync::Arc;

use tidewater_kafka::kafka_protocol::messages::create_acls_request::CreateAclsRequest;
use tidewater_kafka::kafka_protocol::messages::create_acls_response::{
    AclCreationResult, CreateAclsResponse,
};
use tidewater_kafka::kafka_protocol::messages::delete_acls_request::DeleteAclsRequest;
use tidewater_kafka::kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl, DeleteAclsResponse,
};
use tidewater_kafka::kafka_protocol::messages::describe_acls_request::DescribeAclsRequest;
use tidewater_kafka::kafka_protocol::messages::describe_acls_response::{
    AclDescription, DescribeAclsResource, DescribeAclsResponse,
};
use tidewater_kafka::ResponseError;

use super::{blocking, str_bytes};
use crate::acl::{
    Access, AclBinding, AclBindingFilter, AclError, Coded, Operation, PatternType, ResourcePattern,
};
use crate::broker::{ApiError, Broker};

/// The pattern type a request of `version` gives: its own from v1, LITERAL in v0, which has
/// no such field.
fn pattern_type(version: i16, field: i8) -> i8 {
    if version >= 1 {
        field
    } else {
        PatternType::Literal.code()
    }
}

/// The filter in the fields a `DescribeAclsRequest` and a `DeleteAclsFilter` both have, or
/// why it is invalid.
macro_rules! filter_of {
    ($fields:expr, $version:expr) => {
        AclBindingFilter::from_wire(
            $fields.resource_type_filter,
            $fields.resource_name_filter.as_deref(),
            pattern_type($version, $fields.pattern_type_filter),
            $fields.principal_filter.as_deref(),
            $fields.host_filter.as_deref(),
            $fields.operation,
            $fields.permission_type,
        )
        .map_err(invalid)
    };
}

fn invalid(error: AclError) -> ApiError {
    ApiError::new(ResponseError::InvalidRequest, error.to_string())
}

/// An error as the (code, message) pair every ACL response carries.
fn code_and_message<T>(outcome: &Result<T, ApiError>) -> (i16, Option<String>) {
    match outcome {
        Ok(_) => (0, None),
        Err(error) => (error.code.code(), Some(error.message.clone())),
    }
}

/// One outcome per item (binding or filter) of a CreateAcls or DeleteAcls: for a request that
/// may not ALTER the cluster, its refusal for each; otherwise what `work` makes of them, on the
/// blocking pool (it writes the journal).
async fn altering<T: Send + 'static>(
    access: &Access,
    items: usize,
    work: impl FnOnce() -> Vec<Result<T, ApiError>> + Send + 'static,
) -> Vec<Result<T, ApiError>> {
    match access.check_cluster(Operation::Alter) {
        Err(refusal) => (0..items).map(|_| Err(refusal.clone())).collect(),
        Ok(()) => blocking(work).await,
    }
}

pub(super) async fn create(
    broker: Arc<Broker>,
    request: CreateAclsRequest,
    version: i16,
    access: Access,
) -> CreateAclsResponse {
    let items = request.creations.len();
    let outcomes: Vec<Result<(), ApiError>> = altering(&access, items, move || {
        let bindings: Vec<Result<AclBinding, ApiError>> = request
            .creations
            .iter()
            .map(|creation| {
                AclBinding::from_wire(
                    creation.resource_type,
                    &creation.resource_name,
                    pattern_type(version, creation.resource_pattern_type),
                    &creation.principal,
                    &creation.host,
                    creation.operation,
                    creation.permission_type,
                )
                .map_err(invalid)
            })
            .collect();
        let valid: Vec<AclBinding> = bindings.iter().filter_map(|binding| binding.clone().ok()).collect();
        let stored = broker
            .acls
            .create(&valid, broker.now_ms())
            .map_err(|error| ApiError::new(error.code(), error.to_string()));
        bindings.into_iter().map(|binding| binding.and_then(|_| stored.clone())).collect()
    })
    .await;
    let results = outcomes
        .iter()
        .map(|outcome| {
            let (code, message) = code_and_message(outcome);
            AclCreationResult::default().with_error_code(code).with_error_message(message.map(str_bytes))
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

pub(super) fn describe(
    broker: &Broker,
    request: DescribeAclsRequest,
    version: i16,
    access: &Access,
) -> DescribeAclsResponse {
    let filter = access.check_cluster(Operation::Describe).and_then(|()| filter_of!(request, version));
    let filter = match filter {
        Ok(filter) => filter,
        Err(error) => {
            return DescribeAclsResponse::default()
                .with_error_code(error.code.code())
                .with_error_message(Some(str_bytes(error.message)))
        }
    };
    // The bindings come sorted by resource pattern, so each resource's ACLs are consecutive.
    let mut resources: Vec<(ResourcePattern, Vec<AclDescription>)> = Vec::new();
    for AclBinding { pattern, entry } in broker.acls.describe(&filter) {
        let description = AclDescription::default()
            .with_principal(str_bytes(entry.principal.to_string()))
            .with_host(str_bytes(entry.host.to_string()))
            .with_operation(entry.operation.code())
            .with_permission_type(entry.permission.code());
        match resources.last_mut() {
            Some((last, descriptions)) if *last == pattern => descriptions.push(description),
            _ => resources.push((pattern, vec![description])),
        }
    }
    let resources = resources
        .into_iter()
        .map(|(pattern, acls)| {
            DescribeAclsResource::default()
                .with_resource_type(pattern.resource_type.code())
                .with_resource_name(str_bytes(pattern.name))
                .with_pattern_type(pattern.pattern_type.code())
                .with_acls(acls)
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}

pub(super) async fn delete(
    broker: Arc<Broker>,
    request: DeleteAclsRequest,
    version: i16,
    access: Access,
) -> DeleteAclsResponse {
    let items = request.filters.len();
    let outcomes: Vec<Result<Vec<AclBinding>, ApiError>> = altering(&access, items, move || {
        let filters: Vec<Result<AclBindingFilter, ApiError>> =
            request.filters.iter().map(|filter| filter_of!(filter, version)).collect();
        let valid: Vec<AclBindingFilter> = filters.iter().filter_map(|filter| filter.clone().ok()).collect();
        let deleted = broker
            .acls
            .delete(&valid, broker.now_ms())
            .map_err(|error| ApiError::new(error.code(), error.to_string()));
        let mut matched = match deleted {
            Ok(matched) => matched.into_iter().map(Ok).collect(),
            Err(error) => vec![Err(error); valid.len()],
        }
        .into_iter();
        filters
            .into_iter()
            .map(|filter| filter.and_then(|_| matched.next().unwrap_or_else(|| Ok(Vec::new()))))
            .collect()
    })
    .await;
    let results = outcomes
        .into_iter()
        .map(|outcome| {
            let (code, message) = code_and_message(&outcome);
            let matching = outcome.unwrap_or_default().into_iter().map(|AclBinding { pattern, entry }| {
                DeleteAclsMatchingAcl::default()
                    .with_resource_type(pattern.resource_type.code())
                    .with_resource_name(str_bytes(pattern.name))
                    .with_pattern_type(pattern.pattern_type.code())
                    .with_principal(str_bytes(entry.principal.to_string()))
                    .with_host(str_bytes(entry.host.to_string()))
                    .with_operation(entry.operation.code())
                    .with_permission_type(entry.permission.code())
            });
            DeleteAclsFilterResult::default()
                .with_error_code(code)
                .with_error_message(message.map(str_bytes))
                .with_matching_acls(matching.collect())
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
