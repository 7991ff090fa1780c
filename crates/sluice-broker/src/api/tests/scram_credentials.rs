//! AlterUserScramCredentials and DescribeUserScramCredentials through
//! `dispatch`: Kafka's per-user answers (KIP-554), and what reaches the
//! credential store.

use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{call, fixture};
use crate::config::BrokerConfig;
use crate::security::scram::{Credential, Mechanism, random_salt};

const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const RESOURCE_NOT_FOUND: i16 = 91;
const DUPLICATE_RESOURCE: i16 = 92;
const UNACCEPTABLE_CREDENTIAL: i16 = 93;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// An upsertion as a client makes it: the salted password, never the
/// password.
fn upsert(user: &str, m: Mechanism, password: &str, iterations: i32) -> ScramCredentialUpsertion {
    let salt = random_salt().expect("salt");
    let mut u = ScramCredentialUpsertion::default();
    u.name = s(user);
    u.mechanism = m.kafka_id();
    u.iterations = iterations;
    u.salt = Bytes::copy_from_slice(&salt);
    u.salted_password = Bytes::from(m.salted_password(
        password.as_bytes(),
        &salt,
        iterations.clamp(1, 20_000) as u32,
    ));
    u
}

fn delete(user: &str, mechanism: i8) -> ScramCredentialDeletion {
    let mut d = ScramCredentialDeletion::default();
    d.name = s(user);
    d.mechanism = mechanism;
    d
}

fn alter(
    deletions: Vec<ScramCredentialDeletion>,
    upsertions: Vec<ScramCredentialUpsertion>,
) -> AlterUserScramCredentialsRequest {
    let mut r = AlterUserScramCredentialsRequest::default();
    r.deletions = deletions;
    r.upsertions = upsertions;
    r
}

/// (user, error code, message) per result.
fn results(resp: &AlterUserScramCredentialsResponse) -> Vec<(String, i16, String)> {
    resp.results
        .iter()
        .map(|r| {
            (
                r.user.to_string(),
                r.error_code,
                r.error_message
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn describe(users: Option<&[&str]>) -> DescribeUserScramCredentialsRequest {
    let mut r = DescribeUserScramCredentialsRequest::default();
    r.users = users.map(|u| {
        u.iter()
            .map(|n| {
                let mut name = UserName::default();
                name.name = s(n);
                name
            })
            .collect()
    });
    r
}

#[tokio::test]
async fn an_upserted_credential_authenticates_its_password_and_is_described_without_secrets() {
    let f = fixture(BrokerConfig::default());
    let resp = call(
        &f,
        0,
        alter(
            vec![],
            vec![
                upsert("alice", Mechanism::Sha256, "alice-pw", 4096),
                upsert("bob", Mechanism::Sha512, "bob-pw", 8192),
            ],
        ),
    )
    .await;
    assert_eq!(
        results(&resp),
        vec![
            ("alice".into(), 0, String::new()),
            ("bob".into(), 0, String::new())
        ]
    );
    let stored = f
        .state
        .credentials
        .get("alice", Mechanism::Sha256)
        .expect("stored");
    assert!(stored.matches_password(Mechanism::Sha256, b"alice-pw"));
    assert!(!stored.matches_password(Mechanism::Sha256, b"alice-pX"));
    assert_eq!(
        stored,
        Credential::derive(Mechanism::Sha256, b"alice-pw", &stored.salt, 4096)
    );
    // A second mechanism for alice, in another request.
    let resp = call(
        &f,
        0,
        alter(
            vec![],
            vec![upsert("alice", Mechanism::Sha512, "alice-pw", 4096)],
        ),
    )
    .await;
    assert_eq!(resp.results[0].error_code, 0);

    // Null and empty both list every user, by name, with mechanisms and
    // iteration counts only.
    for users in [None, Some(&[][..])] {
        let resp = call(&f, 0, describe(users)).await;
        assert_eq!(resp.error_code, 0);
        let listed: Vec<(String, Vec<(i8, i32)>)> = resp
            .results
            .iter()
            .map(|r| {
                assert_eq!(r.error_code, 0);
                (
                    r.user.to_string(),
                    r.credential_infos
                        .iter()
                        .map(|c| (c.mechanism, c.iterations))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            vec![
                ("alice".into(), vec![(1, 4096), (2, 4096)]),
                ("bob".into(), vec![(2, 8192)])
            ]
        );
    }

    // Named users: an unknown one and one named twice.
    let resp = call(&f, 0, describe(Some(&["bob", "nobody", "alice", "alice"]))).await;
    let got: Vec<(String, i16, Option<String>)> = resp
        .results
        .iter()
        .map(|r| {
            (
                r.user.to_string(),
                r.error_code,
                r.error_message.as_ref().map(|m| m.to_string()),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("bob".into(), 0, None),
            (
                "nobody".into(),
                RESOURCE_NOT_FOUND,
                Some("Attempt to describe a user credential that does not exist: nobody".into())
            ),
            (
                "alice".into(),
                DUPLICATE_RESOURCE,
                Some(
                    "Cannot describe SCRAM credentials for the same user twice in a single request: alice"
                        .into()
                )
            ),
        ]
    );

    // Deletion by (name, mechanism); the other mechanism stays.
    let resp = call(&f, 0, alter(vec![delete("alice", 1)], vec![])).await;
    assert_eq!(results(&resp), vec![("alice".into(), 0, String::new())]);
    assert_eq!(f.state.credentials.get("alice", Mechanism::Sha256), None);
    assert!(
        f.state
            .credentials
            .get("alice", Mechanism::Sha512)
            .is_some()
    );
    let resp = call(&f, 0, alter(vec![delete("bob", 2)], vec![])).await;
    assert_eq!(resp.results[0].error_code, 0);
    let resp = call(&f, 0, describe(Some(&["bob"]))).await;
    assert_eq!(resp.results[0].error_code, RESOURCE_NOT_FOUND);
    // The store on disk says the same.
    let reopened =
        crate::security::credentials::CredentialStore::open(&f.state.config.data_dir).unwrap();
    assert_eq!(
        reopened.list(),
        vec![("alice".to_string(), Mechanism::Sha512, 4096)]
    );
}

#[tokio::test]
async fn refusals_are_kafkas_per_user_and_change_nothing() {
    let f = fixture(BrokerConfig::default());
    let resp = call(
        &f,
        0,
        alter(vec![], vec![upsert("twice", Mechanism::Sha512, "pw", 4096)]),
    )
    .await;
    assert_eq!(resp.results[0].error_code, 0);
    let before = f.state.credentials.get("twice", Mechanism::Sha512);
    let mut bad_mechanism = upsert("m", Mechanism::Sha256, "pw", 4096);
    bad_mechanism.mechanism = 0;
    let mut short_key = upsert("k", Mechanism::Sha512, "pw", 4096);
    short_key.salted_password = Bytes::from_static(&[1; 32]);
    let mut no_salt = upsert("n", Mechanism::Sha256, "pw", 4096);
    no_salt.salt = Bytes::new();
    let resp = call(
        &f,
        0,
        alter(
            vec![
                delete("ghost", 1),
                delete("", 1),
                delete("x", 3),
                // Named twice: a deletion and an upsertion.
                delete("twice", 2),
            ],
            vec![
                upsert("twice", Mechanism::Sha256, "pw", 4096),
                upsert("low", Mechanism::Sha256, "pw", 4095),
                upsert("high", Mechanism::Sha256, "pw", 16385),
                upsert("", Mechanism::Sha256, "pw", 4096),
                upsert("bad\nname", Mechanism::Sha256, "pw", 4096),
                bad_mechanism,
                short_key,
                no_salt,
                // Twice among the upsertions, and a third time.
                upsert("dup", Mechanism::Sha256, "pw", 4096),
                upsert("dup", Mechanism::Sha512, "pw", 4096),
                upsert("dup", Mechanism::Sha512, "pw", 4096),
                upsert("fine", Mechanism::Sha256, "pw", 16384),
            ],
        ),
    )
    .await;
    let got = results(&resp);
    let expect: Vec<(&str, i16, &str)> = vec![
        (
            "ghost",
            RESOURCE_NOT_FOUND,
            "Attempt to delete a user credential that does not exist",
        ),
        ("", UNACCEPTABLE_CREDENTIAL, "Username must not be empty"),
        ("x", UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism"),
        (
            "twice",
            DUPLICATE_RESOURCE,
            "A user credential cannot be altered twice in the same request",
        ),
        ("low", UNACCEPTABLE_CREDENTIAL, "Too few iterations"),
        ("high", UNACCEPTABLE_CREDENTIAL, "Too many iterations"),
        (
            "bad\nname",
            UNACCEPTABLE_CREDENTIAL,
            "A user name is at most 255 bytes without control characters",
        ),
        ("m", UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism"),
        (
            "k",
            UNACCEPTABLE_CREDENTIAL,
            "A SCRAM-SHA-512 salted password is 64 bytes, not 32",
        ),
        ("n", UNACCEPTABLE_CREDENTIAL, "The salt must not be empty"),
        (
            "dup",
            DUPLICATE_RESOURCE,
            "A user credential cannot be altered twice in the same request",
        ),
        ("fine", 0, ""),
    ];
    let expect: Vec<(String, i16, String)> = expect
        .into_iter()
        .map(|(u, c, m)| (u.to_string(), c, m.to_string()))
        .collect();
    assert_eq!(got, expect);
    // Only the one acceptable change reached the store.
    assert_eq!(
        f.state.credentials.list(),
        vec![
            ("fine".to_string(), Mechanism::Sha256, 16384),
            ("twice".to_string(), Mechanism::Sha512, 4096)
        ]
    );
    assert_eq!(f.state.credentials.get("twice", Mechanism::Sha512), before);
    // A user whose first entry is refused keeps that refusal (Kafka skips
    // its later entries).
    let resp = call(
        &f,
        0,
        alter(
            vec![delete("ghost", 1)],
            vec![upsert("ghost", Mechanism::Sha256, "pw", 4096)],
        ),
    )
    .await;
    assert_eq!(results(&resp).len(), 1);
    assert_eq!(resp.results[0].error_code, RESOURCE_NOT_FOUND);
    assert_eq!(f.state.credentials.get("ghost", Mechanism::Sha256), None);
}
