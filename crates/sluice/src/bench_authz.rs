//! `sluice bench authz`: what one authorization check costs — the
//! broker's `Authorizer` over in-memory ACL sets of each size (literal and
//! prefixed ACLs for many principals, DENYs among them), on one thread and
//! on several at once (reads take no lock: the per-check time should not
//! grow with the threads, up to the cores there are).

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use sluice_broker::security::Principal;
use sluice_broker::security::acl::{
    AclBinding, AclOperation as Op, AclStore, Authorizer, PatternType, PermissionType,
    ResourceType as Rt,
};

#[derive(Args)]
pub struct AuthzArgs {
    /// ACL set sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000")]
    acls: Vec<usize>,
    /// Checks per measurement (per thread).
    #[arg(long, default_value_t = 2_000_000)]
    checks: u64,
    /// Threads checking at once in the last measurement of each size
    /// (default: the cores there are).
    #[arg(long)]
    threads: Option<usize>,
}

fn binding(
    rt: Rt,
    pt: PatternType,
    name: &str,
    principal: &str,
    op: Op,
    permission: PermissionType,
) -> AclBinding {
    AclBinding {
        resource_type: rt,
        resource_name: name.to_string(),
        pattern_type: pt,
        principal: principal.to_string(),
        host: "*".to_string(),
        operation: op,
        permission,
    }
}

/// `n` ACLs: the principal measured (`User:bench`) may Write to every
/// `bench-` topic (a prefixed ACL) and Read `topic-7`; the rest are other
/// principals' — 60 % literal topic ACLs, 20 % prefixed ones of varied
/// lengths, 10 % group ACLs, 10 % DENYs on the topics the measured checks
/// ask about (so those checks walk entries that do not apply).
pub fn acl_set(n: usize) -> Vec<AclBinding> {
    use PatternType::{Literal, Prefixed};
    use PermissionType::{Allow, Deny};
    let mut out = vec![
        binding(
            Rt::Topic,
            Prefixed,
            "bench-",
            "User:bench",
            Op::Write,
            Allow,
        ),
        binding(Rt::Topic, Literal, "topic-7", "User:bench", Op::Read, Allow),
    ];
    for i in 0..n.saturating_sub(out.len()) {
        let user = format!("User:user-{}", i % 100);
        out.push(match i % 10 {
            0..=5 => binding(
                Rt::Topic,
                Literal,
                &format!("topic-{i}"),
                &user,
                if i % 2 == 0 { Op::Read } else { Op::Write },
                Allow,
            ),
            6 | 7 => binding(
                Rt::Topic,
                Prefixed,
                &format!("{}-{i}-", "app".repeat(1 + i % 4)),
                &user,
                Op::Write,
                Allow,
            ),
            8 => binding(
                Rt::Group,
                Literal,
                &format!("group-{i}"),
                &user,
                Op::Read,
                Allow,
            ),
            _ => binding(
                Rt::Topic,
                if i % 20 == 9 { Literal } else { Prefixed },
                if i % 20 == 9 {
                    "bench-orders"
                } else {
                    "bench-"
                },
                &format!("User:mallory-{i}"),
                Op::Write,
                Deny,
            ),
        });
    }
    out.truncate(n.max(2));
    out
}

fn authorizer(n: usize) -> Result<Authorizer> {
    let store = AclStore::in_memory();
    let acls = acl_set(n);
    for r in store.create(&acls)? {
        if let Err(e) = r {
            bail!("a generated ACL was refused: {e}");
        }
    }
    Ok(Authorizer::new(
        store,
        vec![Principal::user("admin")],
        false,
    ))
}

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`:
/// time another process had the core is not counted, so a busy machine
/// slows the measurement without inflating it); None where not available.
fn on_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Nanoseconds on the CPU per call of `check`, over `checks` calls (wall
/// time where the kernel does not say).
fn time(checks: u64, mut check: impl FnMut() -> bool) -> f64 {
    let (wall, cpu) = (Instant::now(), on_cpu_ns());
    let mut allowed = 0u64;
    for _ in 0..checks {
        allowed += u64::from(black_box(check()));
    }
    black_box(allowed);
    let ns = match (cpu, on_cpu_ns()) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64,
        _ => wall.elapsed().as_nanos() as f64,
    };
    ns / checks.max(1) as f64
}

pub fn run(args: AuthzArgs) -> Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let host: IpAddr = "127.0.0.1".parse()?;
    let bench = Principal::user("bench");
    let admin = Principal::user("admin");
    println!(
        "Authorizer::authorize, ns on the CPU per check ({} checks each)",
        args.checks
    );
    println!(
        "{:>7}  {:>14}  {:>13}  {:>12}  {:>10}  {:>16}  {:>22}",
        "ACLs",
        "prefix allow",
        "literal allow",
        "no ACL: deny",
        "super user",
        "checker, 10/req",
        format!("prefix allow, {threads} thr"),
    );
    for &n in &args.acls {
        let a = Arc::new(authorizer(n)?);
        let prefixed = time(args.checks, || {
            a.authorize(&bench, host, Op::Write, Rt::Topic, "bench-orders")
        });
        let literal = time(args.checks, || {
            a.authorize(&bench, host, Op::Read, Rt::Topic, "topic-7")
        });
        let missing = time(args.checks, || {
            a.authorize(&bench, host, Op::Write, Rt::Topic, "nobodys-topic")
        });
        let super_user = time(args.checks, || {
            a.authorize(&admin, host, Op::Write, Rt::Topic, "bench-orders")
        });
        // A request's ten topics checked over one snapshot load.
        let batched = time(args.checks / 10, || {
            let c = a.checker(&bench, host);
            (0..10).all(|_| c.authorize(Op::Write, Rt::Topic, "bench-orders"))
        }) / 10.0;
        let per_thread: Vec<f64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (a, bench) = (a.clone(), bench.clone());
                    s.spawn(move || {
                        time(args.checks, || {
                            a.authorize(&bench, host, Op::Write, Rt::Topic, "bench-orders")
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(f64::NAN))
                .collect()
        });
        let parallel = per_thread.iter().sum::<f64>() / per_thread.len().max(1) as f64;
        println!(
            "{n:>7}  {prefixed:>14.1}  {literal:>13.1}  {missing:>12.1}  {super_user:>10.1}  {batched:>16.1}  {parallel:>22.1}"
        );
    }
    per_request(args.checks / 10)
}

/// What `dispatch` adds to a request with an authorizer: `authz::gate`
/// and the answer's `Fixup`, over a broker state whose authorizer holds
/// the ACL set of the produce benchmark (docs/bench/issue17/make_acls.py:
/// 1000 ACLs, the anonymous producer allowed by a prefixed ALL), less the
/// cost of the request's and answer's copies every round makes.
fn per_request(rounds: u64) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("sluice-bench-authz-{}", std::process::id()));
    let result = per_request_in(&dir, rounds);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn per_request_in(dir: &std::path::Path, rounds: u64) -> Result<()> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{
        ApiKey, FetchRequest, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
        RequestKind, ResponseKind, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    use sluice_broker::api::authz::{Authz, Gate, gate};

    let config = sluice_broker::config::BrokerConfig {
        data_dir: dir.to_path_buf(),
        authorizer_acl: true,
        ..Default::default()
    };
    let advertised = sluice_broker::state::Advertised {
        host: "127.0.0.1".into(),
        port: 9092,
    };
    let state = sluice_broker::state::BrokerState::open(config, advertised)?;
    let mut acls = vec![
        binding(
            Rt::Topic,
            PatternType::Prefixed,
            "bench",
            "User:ANONYMOUS",
            Op::All,
            PermissionType::Allow,
        ),
        binding(
            Rt::Cluster,
            PatternType::Literal,
            "kafka-cluster",
            "User:ANONYMOUS",
            Op::Describe,
            PermissionType::Allow,
        ),
    ];
    acls.extend(acl_set(1000).into_iter().skip(2).take(998));
    if let Some(a) = &state.authorizer {
        a.store().create(&acls)?;
    }
    let anonymous = Principal::anonymous();
    let host: IpAddr = "127.0.0.1".parse()?;
    let Some(az) = Authz::new(&state, &anonymous, host) else {
        bail!("no authorizer");
    };
    let topic = |n: &str| TopicName(StrBytes::from_string(n.to_string()));
    let batch = bytes::Bytes::from(vec![0u8; 16 * 1024]);

    let mut produce = ProduceRequest::default();
    produce.acks = 1;
    let mut pd = PartitionProduceData::default();
    pd.records = Some(batch);
    let mut td = TopicProduceData::default();
    td.name = topic("bench");
    td.partition_data.push(pd);
    produce.topic_data.push(td);
    let mut produced = ProduceResponse::default();
    let mut tr = TopicProduceResponse::default();
    tr.name = topic("bench");
    tr.partition_responses
        .push(PartitionProduceResponse::default());
    produced.responses.push(tr);

    let mut fetch = FetchRequest::default();
    fetch.replica_id = (-1).into();
    for p in 0..4 {
        let mut ft = FetchTopic::default();
        ft.topic = topic(&format!("bench-{p}"));
        ft.partitions.push(FetchPartition::default());
        fetch.topics.push(ft);
    }

    let mut every = MetadataResponse::default();
    every.topics = (0..100)
        .map(|i| {
            let mut t = MetadataResponseTopic::default();
            t.name = Some(topic(&if i % 2 == 0 {
                format!("bench-{i}")
            } else {
                format!("topic-{i}")
            }));
            t
        })
        .collect();

    let round =
        |api: ApiKey, request: &RequestKind, response: &ResponseKind, check: bool| -> bool {
            let (request, mut response) = (request.clone(), response.clone());
            if !check {
                return black_box((request, response)).1
                    != ResponseKind::Produce(Default::default());
            }
            match gate(&az, &state, api, 9, request) {
                Gate::Serve(r, fixup) => {
                    black_box(r);
                    fixup.apply(&az, 9, &mut response);
                    black_box(response) != ResponseKind::Produce(Default::default())
                }
                Gate::Answer(_) | Gate::Silent | Gate::Refuse(_) => false,
            }
        };
    let cases = [
        (
            "Produce, 1 topic",
            ApiKey::Produce,
            RequestKind::Produce(produce),
            ResponseKind::Produce(produced),
        ),
        (
            "Fetch, 4 topics",
            ApiKey::Fetch,
            RequestKind::Fetch(fetch),
            ResponseKind::Fetch(Default::default()),
        ),
        (
            "Metadata, every topic (100, half visible)",
            ApiKey::Metadata,
            RequestKind::Metadata({
                let mut r = MetadataRequest::default();
                r.topics = None;
                r
            }),
            ResponseKind::Metadata(every),
        ),
    ];
    println!();
    println!(
        "authz::gate + Fixup::apply, ns on the CPU per request, 1000 ACLs ({rounds} rounds each)"
    );
    println!("{:<42}  {:>10}", "request", "ns");
    for (what, api, request, response) in &cases {
        let copies = time(rounds, || round(*api, request, response, false));
        let checked = time(rounds, || round(*api, request, response, true));
        println!("{what:<42}  {:>10.1}", (checked - copies).max(0.0));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_acls_are_valid_and_decide_as_meant() {
        for n in [2, 10, 1000] {
            let a = authorizer(n).expect("authorizer");
            assert_eq!(a.store().len(), n);
            let host: IpAddr = "127.0.0.1".parse().expect("ip");
            let bench = Principal::user("bench");
            assert!(a.authorize(&bench, host, Op::Write, Rt::Topic, "bench-orders"));
            assert!(a.authorize(&bench, host, Op::Read, Rt::Topic, "topic-7"));
            assert!(!a.authorize(&bench, host, Op::Write, Rt::Topic, "nobodys-topic"));
        }
    }
}
