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

/// Nanoseconds per call of `check`, over `checks` calls.
fn time(checks: u64, mut check: impl FnMut() -> bool) -> f64 {
    let started = Instant::now();
    let mut allowed = 0u64;
    for _ in 0..checks {
        allowed += u64::from(black_box(check()));
    }
    black_box(allowed);
    started.elapsed().as_nanos() as f64 / checks as f64
}

pub fn run(args: AuthzArgs) -> Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let host: IpAddr = "127.0.0.1".parse()?;
    let bench = Principal::user("bench");
    let admin = Principal::user("admin");
    println!(
        "Authorizer::authorize, ns per check ({} checks each)",
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
