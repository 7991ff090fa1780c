//! The ACL APIs: CreateAcls, DescribeAcls and DeleteAcls (KIP-140), as
//! Kafka's broker answers them, over `security::acl`'s store. Without an
//! authorizer (`--authorizer acl`) each answers SECURITY_DISABLED. With
//! one, `authz` has checked the principal first: Describe on the cluster
//! for DescribeAcls, Alter on it for CreateAcls and DeleteAcls (else
//! CLUSTER_AUTHORIZATION_FAILED, and these never run).
//!
//! v1–v3 only: v0 (no pattern type) was removed by Kafka 4.0 (KIP-896) and
//! `kafka-protocol` does not encode it.

use kafka_protocol::ResponseError as E;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::{Blocking, errors, str_bytes};
use crate::security::acl::{
    AclBinding, AclBindingFilter, AclOperation, PatternType, PermissionType, ResourceType,
};
use crate::state::BrokerState;

const NO_AUTHORIZER: &str = "No Authorizer is configured on the broker";

fn security_disabled() -> (i16, Option<StrBytes>) {
    (E::SecurityDisabled.code(), Some(str_bytes(NO_AUTHORIZER)))
}

/// A wire code as one of the enum's values; `what` names the field.
fn code<T>(code: i8, parse: fn(i8) -> Option<T>, what: &str) -> Result<T, String> {
    parse(code).ok_or_else(|| format!("Unknown {what} code {code}"))
}

fn binding_of(c: &AclCreation) -> Result<AclBinding, String> {
    let b = AclBinding {
        resource_type: code(c.resource_type, ResourceType::from_code, "resourceType")?,
        resource_name: c.resource_name.to_string(),
        pattern_type: code(
            c.resource_pattern_type,
            PatternType::from_code,
            "patternType",
        )?,
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: code(c.operation, AclOperation::from_code, "operation")?,
        permission: code(
            c.permission_type,
            PermissionType::from_code,
            "permissionType",
        )?,
    };
    b.validate()?;
    Ok(b)
}

/// A DescribeAcls or DeleteAcls filter; UNKNOWN codes are refused
/// (Kafka's INVALID_REQUEST "Unknown patternFilter." / "Unknown entryFilter.").
fn filter_of(
    resource_type: i8,
    resource_name: Option<&StrBytes>,
    pattern_type: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclBindingFilter, String> {
    Ok(AclBindingFilter {
        resource_type: code(resource_type, ResourceType::from_code, "resourceType")?,
        resource_name: resource_name.map(|n| n.to_string()),
        pattern_type: code(pattern_type, PatternType::from_code, "patternType")?,
        principal: principal.map(|p| p.to_string()),
        host: host.map(|h| h.to_string()),
        operation: code(operation, AclOperation::from_code, "operation")?,
        permission: code(permission, PermissionType::from_code, "permissionType")?,
    })
}

/// CreateAcls: one result per creation, in order. Each is validated as
/// Kafka does (INVALID_REQUEST with its message); the valid ones are stored
/// with one rewrite of the `acls` file, and a failed write fails them all
/// (UNKNOWN_SERVER_ERROR). Creating an ACL that exists succeeds.
pub fn create_acls(
    state: &BrokerState,
    r: CreateAclsRequest,
    _version: i16,
    _b: &Blocking,
) -> CreateAclsResponse {
    let mut out = CreateAclsResponse::default();
    let result = |(code, message): (i16, Option<StrBytes>)| {
        let mut r = AclCreationResult::default();
        r.error_code = code;
        r.error_message = message;
        r
    };
    let Some(authorizer) = &state.authorizer else {
        out.results = r
            .creations
            .iter()
            .map(|_| result(security_disabled()))
            .collect();
        return out;
    };
    let parsed: Vec<Result<AclBinding, String>> = r.creations.iter().map(binding_of).collect();
    let valid: Vec<AclBinding> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
    let stored = authorizer.store().create(&valid);
    if let Err(e) = &stored {
        tracing::warn!("CreateAcls: storing {} ACLs failed: {e}", valid.len());
    }
    let mut stored = stored.map(Vec::into_iter);
    out.results = parsed
        .into_iter()
        .map(|p| {
            let outcome = match p {
                Err(message) => Err((errors::INVALID_REQUEST, message)),
                Ok(_) => match &mut stored {
                    Ok(results) => match results.next() {
                        Some(Ok(())) => Ok(()),
                        Some(Err(message)) => Err((errors::INVALID_REQUEST, message)),
                        None => Err((E::UnknownServerError.code(), "no result".into())),
                    },
                    Err(e) => Err((
                        E::UnknownServerError.code(),
                        format!("storing the ACLs failed: {e}"),
                    )),
                },
            };
            match outcome {
                Ok(()) => result((errors::NONE, None)),
                Err((code, message)) => result((code, Some(str_bytes(&message)))),
            }
        })
        .collect();
    out
}

/// DescribeAcls: the ACLs the filter matches, grouped by resource pattern.
pub fn describe_acls(
    state: &BrokerState,
    r: DescribeAclsRequest,
    _version: i16,
) -> DescribeAclsResponse {
    let mut out = DescribeAclsResponse::default();
    let Some(authorizer) = &state.authorizer else {
        (out.error_code, out.error_message) = security_disabled();
        return out;
    };
    let filter = match filter_of(
        r.resource_type_filter,
        r.resource_name_filter.as_ref(),
        r.pattern_type_filter,
        r.principal_filter.as_ref(),
        r.host_filter.as_ref(),
        r.operation,
        r.permission_type,
    ) {
        Ok(f) => f,
        Err(message) => {
            out.error_code = errors::INVALID_REQUEST;
            out.error_message = Some(str_bytes(&message));
            return out;
        }
    };
    // Sorted by type, name, pattern type: each resource's ACLs are adjacent.
    for b in authorizer.store().describe(&filter) {
        let same = out
            .resources
            .last()
            .is_some_and(|r: &DescribeAclsResource| {
                r.resource_type == b.resource_type.code()
                    && r.pattern_type == b.pattern_type.code()
                    && r.resource_name.as_str() == b.resource_name
            });
        if !same {
            let mut resource = DescribeAclsResource::default();
            resource.resource_type = b.resource_type.code();
            resource.resource_name = str_bytes(&b.resource_name);
            resource.pattern_type = b.pattern_type.code();
            out.resources.push(resource);
        }
        let mut acl = AclDescription::default();
        acl.principal = str_bytes(&b.principal);
        acl.host = str_bytes(&b.host);
        acl.operation = b.operation.code();
        acl.permission_type = b.permission.code();
        if let Some(resource) = out.resources.last_mut() {
            resource.acls.push(acl);
        }
    }
    out
}

/// DeleteAcls: for each filter, the ACLs it matched and removed; every
/// filter sees the ACLs as they were before the request. An invalid filter
/// is refused alone (INVALID_REQUEST); a failed write of the `acls` file
/// fails every filter (UNKNOWN_SERVER_ERROR) and removes nothing.
pub fn delete_acls(
    state: &BrokerState,
    r: DeleteAclsRequest,
    _version: i16,
    _b: &Blocking,
) -> DeleteAclsResponse {
    let mut out = DeleteAclsResponse::default();
    let failed = |(code, message): (i16, Option<StrBytes>)| {
        let mut f = DeleteAclsFilterResult::default();
        f.error_code = code;
        f.error_message = message;
        f
    };
    let Some(authorizer) = &state.authorizer else {
        out.filter_results = r
            .filters
            .iter()
            .map(|_| failed(security_disabled()))
            .collect();
        return out;
    };
    let parsed: Vec<Result<AclBindingFilter, String>> = r
        .filters
        .iter()
        .map(|f| {
            filter_of(
                f.resource_type_filter,
                f.resource_name_filter.as_ref(),
                f.pattern_type_filter,
                f.principal_filter.as_ref(),
                f.host_filter.as_ref(),
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let valid: Vec<AclBindingFilter> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
    let deleted = authorizer.store().delete(&valid);
    if let Err(e) = &deleted {
        tracing::warn!("DeleteAcls: rewriting the ACLs failed: {e}");
    }
    let mut deleted = deleted.map(Vec::into_iter);
    out.filter_results = parsed
        .into_iter()
        .map(|p| match p {
            Err(message) => failed((errors::INVALID_REQUEST, Some(str_bytes(&message)))),
            Ok(_) => match &mut deleted {
                Ok(results) => {
                    let mut f = DeleteAclsFilterResult::default();
                    f.matching_acls = results
                        .next()
                        .unwrap_or_default()
                        .iter()
                        .map(matching_acl)
                        .collect();
                    f
                }
                Err(e) => failed((
                    E::UnknownServerError.code(),
                    Some(str_bytes(&format!("removing the ACLs failed: {e}"))),
                )),
            },
        })
        .collect();
    out
}

fn matching_acl(b: &AclBinding) -> DeleteAclsMatchingAcl {
    let mut m = DeleteAclsMatchingAcl::default();
    m.resource_type = b.resource_type.code();
    m.resource_name = str_bytes(&b.resource_name);
    m.pattern_type = b.pattern_type.code();
    m.principal = str_bytes(&b.principal);
    m.host = str_bytes(&b.host);
    m.operation = b.operation.code();
    m.permission_type = b.permission.code();
    m
}
