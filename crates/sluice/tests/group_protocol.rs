//! The group protocol over a raw client: a member that stops heartbeating is
//! removed and the group rebalances; committed offsets survive SIGKILLs of
//! the broker — never one that was not acknowledged, never losing one that was.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    ListGroupsRequest, OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest,
    SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use support::{Client, Server};

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn join(c: &mut Client, member: &str, session_ms: i32) -> (i16, i32, String, String) {
    join_group(c, "raw", member, session_ms)
}

fn sync(c: &mut Client, generation: i32, member: &str, leader: bool) -> i16 {
    let mut r = SyncGroupRequest::default();
    r.group_id = GroupId(sb("raw"));
    r.generation_id = generation;
    r.member_id = sb(member);
    if leader {
        let mut a = SyncGroupRequestAssignment::default();
        a.member_id = sb(member);
        a.assignment = Bytes::from_static(b"all");
        r.assignments = vec![a];
    }
    c.call(3, &r).error_code
}

fn heartbeat(c: &mut Client, generation: i32, member: &str) -> i16 {
    let mut r = HeartbeatRequest::default();
    r.group_id = GroupId(sb("raw"));
    r.generation_id = generation;
    r.member_id = sb(member);
    c.call(3, &r).error_code
}

#[test]
fn a_silent_member_is_removed_and_the_group_rebalances() {
    let server = Server::start(&["--group-initial-rebalance-delay-ms", "0"]);
    let mut a = Client::connect(server.addr);
    let mut b = Client::connect(server.addr);
    // v4+ join: first ask for a member id (KIP-394), then join with it.
    let (err, _, a_id, _) = join(&mut a, "", 6000);
    assert_eq!(err, 79, "MEMBER_ID_REQUIRED");
    let (err, g1, _, leader) = join(&mut a, &a_id, 6000);
    assert_eq!((err, leader.as_str()), (0, a_id.as_str()));
    assert_eq!(sync(&mut a, g1, &a_id, true), 0);
    // B joins: A learns of the rebalance through its heartbeat and rejoins.
    let (_, _, b_id, _) = join(&mut b, "", 1000);
    let b_thread = std::thread::spawn(move || {
        let joined = join(&mut b, &b_id, 1000);
        (b, b_id, joined)
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(heartbeat(&mut a, g1, &a_id), 27, "REBALANCE_IN_PROGRESS");
    let (err, g2, _, _) = join(&mut a, &a_id, 6000);
    assert_eq!(err, 0);
    let (_b, b_id, (berr, bg, _, _)) = b_thread.join().expect("b joined");
    assert_eq!((berr, bg), (0, g2), "both in generation {g2}");
    assert_eq!(sync(&mut a, g2, &a_id, true), 0);
    // B never heartbeats: after its 1 s session it is removed and A must rejoin.
    let start = Instant::now();
    loop {
        let code = heartbeat(&mut a, g2, &a_id);
        if code == 27 {
            break;
        }
        assert_eq!(code, 0);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "B was never expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (err, g3, _, leader) = join(&mut a, &a_id, 6000);
    assert_eq!((err, leader.as_str()), (0, a_id.as_str()));
    assert!(g3 > g2);
    assert_eq!(
        heartbeat(&mut a, g2, &b_id),
        25,
        "UNKNOWN_MEMBER_ID for the expired member"
    );
}

fn commit(c: &mut Client, offset: i64) -> Option<i16> {
    commit_to(c, "killed", 0, offset)
}

fn commit_to(c: &mut Client, group: &str, partition: i32, offset: i64) -> Option<i16> {
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = partition;
    p.committed_offset = offset;
    p.committed_leader_epoch = -1;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(sb("t"));
    t.partitions = vec![p];
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(sb(group));
    r.generation_id_or_member_epoch = -1;
    r.topics = vec![t];
    c.try_call(2, &r)
        .map(|resp| resp.topics[0].partitions[0].error_code)
}

fn committed(c: &mut Client) -> i64 {
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(sb("t"));
    t.partition_indexes = vec![0];
    let mut r = OffsetFetchRequest::default();
    r.group_id = GroupId(sb("killed"));
    r.topics = Some(vec![t]);
    c.call(5, &r).topics[0].partitions[0].committed_offset
}

#[test]
fn committed_offsets_survive_sigkill_exactly_as_acknowledged() {
    let mut server = Server::start(&[]);
    let dir = server.take_dir();
    let data_dir = server.data_dir.clone();
    let mut acked = -1i64;
    let mut next = 0i64;
    let mut rng = 0x2545_f491_u64;
    for round in 0..10 {
        // Commit increasing offsets from another thread until the kill lands.
        let addr = server.addr;
        let start_at = next;
        let committer = std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            let mut last_acked = None;
            let mut attempted = start_at;
            loop {
                match commit(&mut c, attempted) {
                    Some(0) => last_acked = Some(attempted),
                    Some(code) => panic!("commit refused with {code}"),
                    None => return (last_acked, attempted),
                }
                attempted += 1;
            }
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(30 + rng % 100));
        server.kill();
        let (last_acked, attempted) = committer.join().expect("committer");
        if let Some(a) = last_acked {
            acked = a;
        }
        server = Server::start_in(&data_dir, &[]);
        let mut c = Client::connect(server.addr);
        let found = committed(&mut c);
        assert!(
            found >= acked,
            "round {round}: acknowledged offset {acked} lost (found {found})"
        );
        assert!(
            found <= attempted,
            "round {round}: offset {found} was never sent"
        );
        next = attempted + 1;
        acked = found;
    }
    assert!(acked > 0, "commits were acknowledged");
    drop(dir);
}

fn fetch_offsets(c: &mut Client, group: &str) -> Vec<i64> {
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(sb("t"));
    t.partition_indexes = vec![0, 1];
    let mut r = OffsetFetchRequest::default();
    r.group_id = GroupId(sb(group));
    r.topics = Some(vec![t]);
    c.call(5, &r).topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect()
}

#[test]
fn groups_are_listed_described_and_deleted_with_their_offsets() {
    let server = Server::start(&["--group-initial-rebalance-delay-ms", "0"]);
    let mut c = Client::connect(server.addr);
    assert_eq!(commit_to(&mut c, "admin-g", 0, 5), Some(0));
    assert_eq!(commit_to(&mut c, "admin-g", 1, 7), Some(0));
    let listed = c.call(4, &ListGroupsRequest::default());
    let g = listed
        .groups
        .iter()
        .find(|g| g.group_id.0.as_str() == "admin-g")
        .expect("listed");
    assert_eq!(g.group_state.as_str(), "Empty");
    let mut d = DescribeGroupsRequest::default();
    d.groups = vec![GroupId(sb("admin-g"))];
    assert_eq!(c.call(5, &d).groups[0].group_state.as_str(), "Empty");

    // OffsetDelete of one partition.
    let mut p = OffsetDeleteRequestPartition::default();
    p.partition_index = 1;
    let mut t = OffsetDeleteRequestTopic::default();
    t.name = TopicName(sb("t"));
    t.partitions = vec![p];
    let mut od = OffsetDeleteRequest::default();
    od.group_id = GroupId(sb("admin-g"));
    od.topics = vec![t];
    let resp = c.call(0, &od);
    assert_eq!(
        (resp.error_code, resp.topics[0].partitions[0].error_code),
        (0, 0)
    );
    assert_eq!(fetch_offsets(&mut c, "admin-g"), vec![5, -1]);

    // A group with a member can be neither deleted nor have offsets deleted.
    let mut m = Client::connect(server.addr);
    let (_, _, id, _) = join_group(&mut m, "busy", "", 6000);
    let (err, _, _, _) = join_group(&mut m, "busy", &id, 6000);
    assert_eq!(err, 0);
    let mut del = DeleteGroupsRequest::default();
    del.groups_names = vec![GroupId(sb("busy"))];
    assert_eq!(c.call(2, &del).results[0].error_code, 68, "NON_EMPTY_GROUP");
    od.group_id = GroupId(sb("busy"));
    assert_eq!(c.call(0, &od).topics[0].partitions[0].error_code, 86);

    // Deleting the empty group drops its offsets.
    del.groups_names = vec![GroupId(sb("admin-g"))];
    assert_eq!(c.call(2, &del).results[0].error_code, 0);
    assert_eq!(fetch_offsets(&mut c, "admin-g"), vec![-1, -1]);
    assert_eq!(
        c.call(2, &del).results[0].error_code,
        69,
        "GROUP_ID_NOT_FOUND"
    );
}

fn join_group(
    c: &mut Client,
    group: &str,
    member: &str,
    session_ms: i32,
) -> (i16, i32, String, String) {
    let mut p = JoinGroupRequestProtocol::default();
    p.name = sb("range");
    p.metadata = Bytes::from_static(b"meta");
    let mut r = JoinGroupRequest::default();
    r.group_id = GroupId(sb(group));
    r.session_timeout_ms = session_ms;
    r.rebalance_timeout_ms = 5000;
    r.member_id = sb(member);
    r.protocol_type = sb("consumer");
    r.protocols = vec![p];
    let resp = c.call(5, &r);
    (
        resp.error_code,
        resp.generation_id,
        resp.member_id.to_string(),
        resp.leader.to_string(),
    )
}

#[test]
fn a_static_member_restarting_keeps_its_assignment_without_a_rebalance() {
    let server = Server::start(&["--group-initial-rebalance-delay-ms", "0"]);
    let static_join = |c: &mut Client, member: &str| {
        let mut p = JoinGroupRequestProtocol::default();
        p.name = sb("range");
        p.metadata = Bytes::from_static(b"meta");
        let mut r = JoinGroupRequest::default();
        r.group_id = GroupId(sb("raw"));
        r.session_timeout_ms = 10_000;
        r.rebalance_timeout_ms = 5000;
        r.member_id = sb(member);
        r.group_instance_id = Some(sb("instance-1"));
        r.protocol_type = sb("consumer");
        r.protocols = vec![p];
        let resp = c.call(5, &r);
        (
            resp.error_code,
            resp.generation_id,
            resp.member_id.to_string(),
        )
    };
    let mut a = Client::connect(server.addr);
    let (err, generation, first_id) = static_join(&mut a, "");
    assert_eq!(
        err, 0,
        "static members need no MEMBER_ID_REQUIRED round trip"
    );
    assert_eq!(sync(&mut a, generation, &first_id, true), 0);
    // The process restarts: same instance id, no member id.
    let mut again = Client::connect(server.addr);
    let (err, same_generation, new_id) = static_join(&mut again, "");
    assert_eq!(err, 0);
    assert_eq!(same_generation, generation, "no rebalance");
    assert_ne!(new_id, first_id);
    let mut r = SyncGroupRequest::default();
    r.group_id = GroupId(sb("raw"));
    r.generation_id = generation;
    r.member_id = sb(&new_id);
    let resp = again.call(3, &r);
    assert_eq!(
        (resp.error_code, resp.assignment.as_ref()),
        (0, b"all".as_slice()),
        "its old assignment"
    );
    assert_eq!(heartbeat(&mut again, generation, &new_id), 0);
    assert_eq!(
        heartbeat(&mut a, generation, &first_id),
        25,
        "the old incarnation is gone"
    );
}

#[test]
fn end_txn_for_an_unknown_transactional_id_is_answered_not_dropped() {
    use kafka_protocol::messages::{EndTxnRequest, TransactionalId};
    let server = Server::start(&[]);
    let mut c = Client::connect(server.addr);
    let mut r = EndTxnRequest::default();
    r.transactional_id = TransactionalId(sb("tx"));
    r.producer_id = 5.into();
    r.producer_epoch = 0;
    r.committed = true;
    assert_eq!(
        c.call(1, &r).error_code,
        49,
        "INVALID_PRODUCER_ID_MAPPING: no such transactional id"
    );
    let versions = c.call(3, &kafka_protocol::messages::ApiVersionsRequest::default());
    assert!(
        versions.api_keys.iter().any(|k| k.api_key == 26),
        "EndTxn advertised"
    );
    // The connection is still usable.
    assert_eq!(commit_to(&mut c, "after-txn", 0, 1), Some(0));
}

/// CRC-32C (Castagnoli), bit by bit: the legacy offsets file's checksum.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One commit record of the file Sluice kept committed offsets in before
/// `__consumer_offsets` (`consumer-offsets.log`, docs/FORMAT.md).
fn legacy_commit(group: &str, entries: &[(&str, i32, i64)]) -> Vec<u8> {
    let put = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    let mut body = vec![1u8];
    put(&mut body, group);
    body.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (topic, partition, offset) in entries {
        put(&mut body, topic);
        body.extend_from_slice(&partition.to_be_bytes());
        body.extend_from_slice(&offset.to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        put(&mut body, "meta");
        body.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[test]
fn a_data_directory_from_before_the_offsets_topic_keeps_every_committed_offset() {
    let dir = tempfile::tempdir().expect("dir");
    let mut file = legacy_commit("old-a", &[("t", 0, 5), ("t", 1, 7)]);
    file.extend(legacy_commit("old-b", &[("t", 0, 11)]));
    file.extend(legacy_commit("old-a", &[("t", 0, 6)]));
    // A torn tail, as a kill mid-write left it: never acknowledged, dropped.
    let torn = legacy_commit("old-b", &[("t", 0, 99)]);
    file.extend_from_slice(&torn[..torn.len() - 3]);
    std::fs::write(dir.path().join("consumer-offsets.log"), &file).expect("write");
    let mut server = Server::start_in(dir.path(), &[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(fetch_offsets(&mut c, "old-a"), vec![6, 7]);
    assert_eq!(fetch_offsets(&mut c, "old-b"), vec![11, -1]);
    assert!(
        !dir.path().join("consumer-offsets.log").exists()
            && dir.path().join("consumer-offsets.log.migrated").exists(),
        "the old file is set aside once migrated"
    );
    assert!(
        dir.path().join("__consumer_offsets-0").is_dir(),
        "the offsets now live in __consumer_offsets"
    );
    // From the topic alone, after a restart (and after a SIGKILL).
    server.kill();
    let server = Server::start_in(dir.path(), &[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(fetch_offsets(&mut c, "old-a"), vec![6, 7]);
    assert_eq!(fetch_offsets(&mut c, "old-b"), vec![11, -1]);
}
