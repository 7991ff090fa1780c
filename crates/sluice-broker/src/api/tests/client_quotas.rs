//! DescribeClientQuotas and AlterClientQuotas through `dispatch` (and one
//! through `handle`, from the frame's bytes), and the throttle time quotas
//! give Produce and Fetch.

use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use super::{Fixture, call, errors, fixture};
use crate::api::client_quotas::{Direction, request_throttle_for, throttle_for};
use crate::api::{Part, Reply, handle};
use crate::config::BrokerConfig;
use crate::state::{Advertised, BrokerState};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// An AlterClientQuotas entry: entity (type, name or None for the
/// default), ops (key, value or None to remove).
fn entry(entity: &[(&str, Option<&str>)], ops: &[(&str, Option<f64>)]) -> EntryData {
    let mut e = EntryData::default();
    e.entity = entity
        .iter()
        .map(|(t, n)| {
            let mut d = EntityData::default();
            d.entity_type = s(t);
            d.entity_name = n.map(s);
            d
        })
        .collect();
    e.ops = ops
        .iter()
        .map(|(k, v)| {
            let mut op = OpData::default();
            op.key = s(k);
            op.value = v.unwrap_or(0.0);
            op.remove = v.is_none();
            op
        })
        .collect();
    e
}

async fn alter(
    f: &Fixture,
    version: i16,
    validate_only: bool,
    entries: Vec<EntryData>,
) -> Vec<i16> {
    let mut req = AlterClientQuotasRequest::default();
    req.validate_only = validate_only;
    req.entries = entries.clone();
    let resp = call(f, version, req).await;
    assert_eq!(resp.entries.len(), entries.len());
    for (asked, got) in entries.iter().zip(&resp.entries) {
        // Each entry's entity comes back as it was asked.
        let asked: Vec<_> = asked
            .entity
            .iter()
            .map(|e| (e.entity_type.to_string(), e.entity_name.clone()))
            .collect();
        let got_entity: Vec<_> = got
            .entity
            .iter()
            .map(|e| (e.entity_type.to_string(), e.entity_name.clone()))
            .collect();
        assert_eq!(asked, got_entity);
        assert_eq!(got.error_code != 0, got.error_message.is_some(), "{got:?}");
    }
    resp.entries.iter().map(|e| e.error_code).collect()
}

/// (match type, name) per entity type; the entries as
/// "type=name…" lines with their sorted values.
async fn describe(
    f: &Fixture,
    version: i16,
    components: &[(&str, i8, Option<&str>)],
    strict: bool,
) -> Result<Vec<String>, (i16, String)> {
    let mut req = DescribeClientQuotasRequest::default();
    req.strict = strict;
    req.components = components
        .iter()
        .map(|(t, m, n)| {
            let mut c = ComponentData::default();
            c.entity_type = s(t);
            c.match_type = *m;
            c._match = n.map(s);
            c
        })
        .collect();
    let resp = call(f, version, req).await;
    if resp.error_code != 0 {
        assert!(resp.entries.is_none());
        return Err((
            resp.error_code,
            resp.error_message
                .map(|m| m.to_string())
                .unwrap_or_default(),
        ));
    }
    Ok(resp
        .entries
        .expect("entries")
        .iter()
        .map(|e| {
            let mut parts: Vec<String> = e
                .entity
                .iter()
                .map(|c| {
                    format!(
                        "{}={}",
                        c.entity_type,
                        c.entity_name.as_deref().unwrap_or("<default>")
                    )
                })
                .collect();
            for v in &e.values {
                parts.push(format!("{}:{}", v.key, v.value));
            }
            parts.join(" ")
        })
        .collect())
}

const EXACT: i8 = 0;
const DEFAULT: i8 = 1;
const SPECIFIED: i8 = 2;

#[tokio::test]
async fn alter_then_describe_round_trips_with_defaults_and_validate_only() {
    let f = fixture(BrokerConfig::default());
    for version in 0..=1 {
        assert_eq!(describe(&f, version, &[], false).await, Ok(vec![]));
    }
    // validate_only: checked (a refused entry is still refused), not applied.
    let codes = alter(
        &f,
        1,
        true,
        vec![
            entry(
                &[("user", Some("alice"))],
                &[("producer_byte_rate", Some(1024.0))],
            ),
            entry(&[("user", Some("alice"))], &[("bogus", Some(1.0))]),
        ],
    )
    .await;
    assert_eq!(codes, vec![errors::NONE, errors::INVALID_REQUEST]);
    assert_eq!(describe(&f, 1, &[], false).await, Ok(vec![]));
    let codes = alter(
        &f,
        0,
        false,
        vec![
            entry(
                &[("user", Some("alice"))],
                &[
                    ("producer_byte_rate", Some(1024.0)),
                    ("consumer_byte_rate", Some(2048.0)),
                ],
            ),
            entry(&[("user", None)], &[("request_percentage", Some(25.5))]),
            entry(
                &[("user", Some("alice")), ("client-id", None)],
                &[("controller_mutation_rate", Some(3.0))],
            ),
            entry(
                &[("client-id", Some("app"))],
                &[("producer_byte_rate", Some(100.0))],
            ),
            entry(&[("client-id", None)], &[("consumer_byte_rate", Some(0.0))]),
            entry(&[("ip", None)], &[("connection_creation_rate", Some(5.0))]),
        ],
    )
    .await;
    assert_eq!(
        codes,
        vec![
            errors::NONE,
            errors::NONE,
            errors::NONE,
            errors::NONE,
            errors::INVALID_REQUEST,
            errors::INVALID_REQUEST
        ]
    );
    for version in 0..=1 {
        assert_eq!(
            describe(&f, version, &[], false).await,
            Ok(vec![
                "client-id=app producer_byte_rate:100".to_string(),
                "user=<default> request_percentage:25.5".to_string(),
                "user=alice producer_byte_rate:1024 consumer_byte_rate:2048".to_string(),
                "user=alice client-id=<default> controller_mutation_rate:3".to_string(),
            ])
        );
    }
    assert_eq!(
        describe(&f, 1, &[("user", EXACT, Some("alice"))], true).await,
        Ok(vec![
            "user=alice producer_byte_rate:1024 consumer_byte_rate:2048".to_string()
        ])
    );
    assert_eq!(
        describe(&f, 1, &[("user", DEFAULT, None)], false).await,
        Ok(vec!["user=<default> request_percentage:25.5".to_string()])
    );
    assert_eq!(
        describe(
            &f,
            1,
            &[("user", SPECIFIED, None), ("client-id", DEFAULT, None)],
            true
        )
        .await,
        Ok(vec![
            "user=alice client-id=<default> controller_mutation_rate:3".to_string()
        ])
    );
    assert_eq!(
        describe(&f, 1, &[("client-id", SPECIFIED, None)], false)
            .await
            .map(|v| v.len()),
        Ok(2)
    );
    // Refused filters are the response's error.
    let refused = describe(&f, 1, &[("topic", SPECIFIED, None)], false).await;
    assert_eq!(refused.map_err(|e| e.0), Err(errors::UNSUPPORTED_VERSION));
    let refused = describe(&f, 0, &[("user", EXACT, None)], false).await;
    assert_eq!(refused.map_err(|e| e.0), Err(errors::INVALID_REQUEST));
    // Removing keys; removing the last one removes the entity.
    let codes = alter(
        &f,
        1,
        false,
        vec![
            entry(&[("user", Some("alice"))], &[("producer_byte_rate", None)]),
            entry(
                &[("client-id", Some("app"))],
                &[("producer_byte_rate", None)],
            ),
        ],
    )
    .await;
    assert_eq!(codes, vec![errors::NONE, errors::NONE]);
    assert_eq!(
        describe(&f, 1, &[("user", EXACT, Some("alice"))], false).await,
        Ok(vec![
            "user=alice consumer_byte_rate:2048".to_string(),
            "user=alice client-id=<default> controller_mutation_rate:3".to_string(),
        ])
    );
    assert_eq!(describe(&f, 1, &[], false).await.map(|v| v.len()), Ok(3));
}

#[tokio::test]
async fn quotas_survive_a_restart_of_the_broker() {
    let f = fixture(BrokerConfig::default());
    let codes = alter(
        &f,
        1,
        false,
        vec![
            entry(
                &[
                    ("user", Some("User with spaces")),
                    ("client-id", Some("app")),
                ],
                &[("producer_byte_rate", Some(5e6))],
            ),
            entry(&[("client-id", None)], &[("request_percentage", Some(0.5))]),
        ],
    )
    .await;
    assert_eq!(codes, vec![0, 0]);
    let before = describe(&f, 1, &[], false).await;
    let Fixture { state, _dir: dir } = f;
    let config = state.config.clone();
    drop(state);
    let state = Arc::new(
        BrokerState::open(
            config,
            Advertised {
                host: "kafka.example".into(),
                port: 19092,
            },
        )
        .expect("reopen"),
    );
    let f = Fixture { state, _dir: dir };
    assert_eq!(describe(&f, 1, &[], false).await, before);
    assert_eq!(before.map(|v| v.len()), Ok(2));
    // And enforced: 60 MB against 5 MB/s over the 10 s minimum window.
    assert!(
        throttle_for(
            &f.state,
            Direction::Produce,
            "User with spaces",
            "app",
            60_000_000
        ) > 0
    );
}

#[tokio::test]
async fn throttle_for_answers_kafkas_throttle_time() {
    let f = fixture(BrokerConfig::default());
    // Nothing configured: never throttled.
    assert_eq!(
        throttle_for(&f.state, Direction::Produce, "alice", "app", u64::MAX),
        0
    );
    assert_eq!(
        throttle_for(&f.state, Direction::Fetch, "alice", "app", u64::MAX),
        0
    );
    assert_eq!(request_throttle_for(&f.state, "alice", "app", u64::MAX), 0);
    let codes = alter(
        &f,
        1,
        false,
        vec![
            entry(
                &[("user", Some("alice"))],
                &[
                    ("producer_byte_rate", Some(1000.0)),
                    ("request_percentage", Some(10.0)),
                ],
            ),
            entry(
                &[("user", None), ("client-id", None)],
                &[("consumer_byte_rate", Some(1000.0))],
            ),
            // An entity twice in one request: the second is refused.
            entry(
                &[("user", Some("alice"))],
                &[("consumer_byte_rate", Some(1.0))],
            ),
        ],
    )
    .await;
    assert_eq!(codes, vec![0, 0, errors::INVALID_REQUEST]);
    // 12000 B against 1000 B/s over a window of 10 s (and the microseconds
    // this test takes): (1200 - 1000) / 1000 × 10 s, just under 2000 ms.
    assert_eq!(
        throttle_for(&f.state, Direction::Produce, "alice", "a", 6000),
        0
    );
    let t = throttle_for(&f.state, Direction::Produce, "alice", "b", 6000);
    assert!((1990..=2000).contains(&t), "{t}");
    // bob has no producer quota; his fetches are under the default
    // (user, client) one, a budget per client id.
    assert_eq!(
        throttle_for(&f.state, Direction::Produce, "bob", "a", 1 << 40),
        0
    );
    assert_eq!(
        throttle_for(&f.state, Direction::Fetch, "bob", "a", 6000),
        0
    );
    assert_eq!(
        throttle_for(&f.state, Direction::Fetch, "bob", "b", 6000),
        0
    );
    let t = throttle_for(&f.state, Direction::Fetch, "bob", "b", 6000);
    assert!((1990..=2000).contains(&t), "{t}");
    // Handler time: 1.5 s in a 10 s window is 15 % of a thread, over 10 %;
    // the throttle is capped at one 1 s window.
    assert_eq!(
        request_throttle_for(&f.state, "alice", "a", 1_500_000_000),
        1000
    );
    assert_eq!(request_throttle_for(&f.state, "bob", "a", 1_500_000_000), 0);
}

/// Sends `req` as a frame through `handle`: the versions table, decoding,
/// dispatch and encoding.
async fn over_the_wire<R: Request + Encodable>(f: &Fixture, version: i16, req: R) -> R::Response {
    let api = ApiKey::try_from(R::KEY).expect("key");
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = 11;
    header.client_id = Some(s("quota-test"));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api.request_header_version(version))
        .expect("header");
    req.encode(&mut buf, version).expect("body");
    let mut session = crate::api::Session::new(
        std::sync::Arc::new(crate::api::ListenerInfo {
            name: "PLAINTEXT".into(),
            protocol: crate::config::SecurityProtocol::Plaintext,
        }),
        "127.0.0.1:5555".parse().expect("addr"),
        None,
    );
    let reply = handle(&f.state, buf.freeze(), &mut session)
        .await
        .expect("answered");
    let Reply::Respond(parts) = reply else {
        panic!("no response")
    };
    let mut frame = BytesMut::new();
    for part in parts {
        match part {
            Part::Bytes(b) => frame.extend_from_slice(&b),
            Part::File(_) => panic!("no file regions here"),
        }
    }
    let mut frame = frame.freeze().split_off(4);
    let h = ResponseHeader::decode(&mut frame, api.response_header_version(version)).expect("h");
    assert_eq!(h.correlation_id, 11);
    R::Response::decode(&mut frame, version).expect("response")
}

#[tokio::test]
async fn both_apis_are_served_at_v0_and_v1_from_the_frame() {
    let f = fixture(BrokerConfig::default());
    for version in 0..=1 {
        let client = format!("c{version}");
        let mut req = AlterClientQuotasRequest::default();
        req.entries = vec![entry(
            &[("client-id", Some(client.as_str()))],
            &[("consumer_byte_rate", Some(4096.0))],
        )];
        let resp = over_the_wire(&f, version, req).await;
        assert_eq!(resp.entries.len(), 1);
        assert_eq!(resp.entries[0].error_code, 0);
        let resp = over_the_wire(&f, version, DescribeClientQuotasRequest::default()).await;
        assert_eq!(resp.error_code, 0);
        assert_eq!(resp.entries.map(|e| e.len()), Some(version as usize + 1));
    }
    assert_eq!(
        crate::api::versions::supported(ApiKey::DescribeClientQuotas),
        Some((0, 1))
    );
    assert_eq!(
        crate::api::versions::supported(ApiKey::AlterClientQuotas),
        Some((0, 1))
    );
}
