//! CreateAcls, DescribeAcls and DeleteAcls through `dispatch`.

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{call, errors, fixture};
use crate::config::BrokerConfig;
use crate::security::acl::{AclStore, FILE};

const TOPIC: i8 = 2;
const CLUSTER: i8 = 4;
const GROUP: i8 = 3;
const ANY: i8 = 1;
const MATCH: i8 = 2;
const LITERAL: i8 = 3;
const PREFIXED: i8 = 4;
const READ: i8 = 3;
const WRITE: i8 = 4;
const ALTER: i8 = 7;
const DENY: i8 = 2;
const ALLOW: i8 = 3;
const SECURITY_DISABLED: i16 = 54;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn creation(rt: i8, name: &str, pt: i8, principal: &str, op: i8, perm: i8) -> AclCreation {
    let mut c = AclCreation::default();
    c.resource_type = rt;
    c.resource_name = s(name);
    c.resource_pattern_type = pt;
    c.principal = s(principal);
    c.host = s("*");
    c.operation = op;
    c.permission_type = perm;
    c
}

fn describe(rt: i8, name: Option<&str>, pt: i8, principal: Option<&str>) -> DescribeAclsRequest {
    let mut r = DescribeAclsRequest::default();
    r.resource_type_filter = rt;
    r.resource_name_filter = name.map(s);
    r.pattern_type_filter = pt;
    r.principal_filter = principal.map(s);
    r.host_filter = None;
    r.operation = ANY;
    r.permission_type = ANY;
    r
}

fn delete_filter(rt: i8, name: Option<&str>, pt: i8, principal: Option<&str>) -> DeleteAclsFilter {
    let mut f = DeleteAclsFilter::default();
    f.resource_type_filter = rt;
    f.resource_name_filter = name.map(s);
    f.pattern_type_filter = pt;
    f.principal_filter = principal.map(s);
    f.host_filter = None;
    f.operation = ANY;
    f.permission_type = ANY;
    f
}

/// With an authorizer; the tests' connection (`User:ANONYMOUS`) is a
/// super user, so every ACL API is allowed (authz.rs tests the refusals).
fn acls_on() -> BrokerConfig {
    BrokerConfig {
        authorizer_acl: true,
        super_users: vec![crate::security::Principal::anonymous()],
        ..BrokerConfig::default()
    }
}

/// (resource type, name, pattern type, principal, operation, permission)
/// of every ACL in a DescribeAcls answer, in its order.
fn described(resp: &DescribeAclsResponse) -> Vec<(i8, String, i8, String, i8, i8)> {
    resp.resources
        .iter()
        .flat_map(|r| {
            r.acls.iter().map(|a| {
                (
                    r.resource_type,
                    r.resource_name.to_string(),
                    r.pattern_type,
                    a.principal.to_string(),
                    a.operation,
                    a.permission_type,
                )
            })
        })
        .collect()
}

#[tokio::test]
async fn without_an_authorizer_every_acl_api_is_security_disabled() {
    let f = fixture(BrokerConfig::default());
    for version in 1..=3 {
        let mut req = CreateAclsRequest::default();
        req.creations = vec![creation(TOPIC, "t", LITERAL, "User:a", READ, ALLOW); 2];
        let resp = call(&f, version, req).await;
        assert_eq!(resp.results.len(), 2);
        for r in &resp.results {
            assert_eq!(r.error_code, SECURITY_DISABLED);
            assert!(r.error_message.is_some());
        }
        let resp = call(&f, version, describe(ANY, None, ANY, None)).await;
        assert_eq!(resp.error_code, SECURITY_DISABLED);
        assert!(resp.resources.is_empty());
        let mut req = DeleteAclsRequest::default();
        req.filters = vec![delete_filter(ANY, None, ANY, None)];
        let resp = call(&f, version, req).await;
        assert_eq!(resp.filter_results.len(), 1);
        assert_eq!(resp.filter_results[0].error_code, SECURITY_DISABLED);
    }
    assert!(!f.state.config.data_dir.join(FILE).exists());
}

#[tokio::test]
async fn acls_are_created_described_and_deleted_at_every_version() {
    for version in 1..=3 {
        let f = fixture(acls_on());
        let mut req = CreateAclsRequest::default();
        req.creations = vec![
            creation(TOPIC, "orders", LITERAL, "User:alice", READ, ALLOW),
            creation(TOPIC, "ord", PREFIXED, "User:bob", WRITE, DENY),
            creation(TOPIC, "*", LITERAL, "User:*", READ, ALLOW),
            creation(CLUSTER, "kafka-cluster", LITERAL, "User:ops", ALTER, ALLOW),
            creation(GROUP, "g", LITERAL, "User:alice", READ, ALLOW),
            // Refused, each alone.
            creation(CLUSTER, "my-cluster", LITERAL, "User:ops", ALTER, ALLOW),
            creation(TOPIC, "t", LITERAL, "alice", READ, ALLOW),
            creation(TOPIC, "t", MATCH, "User:alice", READ, ALLOW),
            creation(0, "t", LITERAL, "User:alice", READ, ALLOW),
            creation(TOPIC, "t", LITERAL, "User:alice", ANY, ALLOW),
            // Again: succeeds, changes nothing.
            creation(TOPIC, "orders", LITERAL, "User:alice", READ, ALLOW),
        ];
        let resp = call(&f, version, req).await;
        let codes: Vec<i16> = resp.results.iter().map(|r| r.error_code).collect();
        let bad = errors::INVALID_REQUEST;
        assert_eq!(
            codes,
            vec![0, 0, 0, 0, 0, bad, bad, bad, bad, bad, 0],
            "v{version}: {:?}",
            resp.results
        );
        let msg = |i: usize| {
            resp.results[i]
                .error_message
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default()
        };
        assert!(msg(5).contains("kafka-cluster"), "{}", msg(5));
        assert!(msg(6).contains("principal"), "{}", msg(6));
        assert!(resp.results[0].error_message.is_none());

        // Everything, grouped by resource.
        let all = call(&f, version, describe(ANY, None, ANY, None)).await;
        assert_eq!(all.error_code, 0);
        assert_eq!(all.resources.len(), 5, "{:?}", all.resources);
        assert_eq!(described(&all).len(), 5);
        // What applies to topic "orders": its literal ACL, "*" and prefix "ord".
        let applying = call(&f, version, describe(TOPIC, Some("orders"), MATCH, None)).await;
        let names: Vec<String> = described(&applying).into_iter().map(|a| a.1).collect();
        assert_eq!(names, vec!["*", "ord", "orders"]);
        // Exactly the prefixed one.
        let prefixed = call(&f, version, describe(TOPIC, Some("ord"), PREFIXED, None)).await;
        assert_eq!(
            described(&prefixed),
            vec![(
                TOPIC,
                "ord".into(),
                PREFIXED,
                "User:bob".into(),
                WRITE,
                DENY
            )]
        );
        let literal = call(&f, version, describe(TOPIC, Some("ord"), LITERAL, None)).await;
        assert!(literal.resources.is_empty());
        let alice = call(&f, version, describe(ANY, None, ANY, Some("User:alice"))).await;
        assert_eq!(described(&alice).len(), 2);
        let unknown = call(&f, version, describe(ANY, None, 0, None)).await;
        assert_eq!(unknown.error_code, errors::INVALID_REQUEST);
        assert!(unknown.error_message.is_some());

        // Alice's ACLs, bob's prefixed topic ACL (and a filter matching
        // nothing, one refused).
        let mut req = DeleteAclsRequest::default();
        req.filters = vec![
            delete_filter(ANY, None, ANY, Some("User:alice")),
            delete_filter(TOPIC, Some("ord"), PREFIXED, None),
            delete_filter(TOPIC, Some("nothing"), LITERAL, None),
            delete_filter(TOPIC, None, 9, None),
            // Alice's again: every filter sees the ACLs as they were.
            delete_filter(GROUP, Some("g"), MATCH, Some("User:alice")),
        ];
        let resp = call(&f, version, req).await;
        let r = &resp.filter_results;
        assert_eq!(r.len(), 5);
        assert_eq!(r[0].error_code, 0);
        assert_eq!(r[0].matching_acls.len(), 2);
        assert_eq!(r[1].matching_acls.len(), 1);
        let m = &r[1].matching_acls[0];
        assert_eq!(
            (
                m.resource_type,
                m.resource_name.as_str(),
                m.pattern_type,
                m.principal.as_str(),
                m.host.as_str(),
                m.operation,
                m.permission_type,
                m.error_code
            ),
            (TOPIC, "ord", PREFIXED, "User:bob", "*", WRITE, DENY, 0)
        );
        assert_eq!((r[2].error_code, r[2].matching_acls.len()), (0, 0));
        assert_eq!(r[3].error_code, errors::INVALID_REQUEST);
        assert_eq!(r[4].matching_acls.len(), 1);
        let left = call(&f, version, describe(ANY, None, ANY, None)).await;
        let names: Vec<String> = described(&left).into_iter().map(|a| a.1).collect();
        assert_eq!(names, vec!["*", "kafka-cluster"]);
        // The broker's authorizer and the file agree.
        let authorizer = f.state.authorizer.as_ref().expect("authorizer");
        assert_eq!(authorizer.store().len(), 2);
        let on_disk = AclStore::open(&f.state.config.data_dir).expect("acls file");
        assert_eq!(on_disk.len(), 2);
    }
}
