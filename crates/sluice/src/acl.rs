//! `sluice acl add | list | remove`: ACLs on a running broker (Sluice with
//! `--authorizer acl`, or any Kafka with an authorizer) over the Kafka
//! protocol — CreateAcls, DescribeAcls, DeleteAcls — with kafka-acls.sh's
//! options: `--allow-principal User:alice --operation Read --topic orders`.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;
use sluice_broker::security::Principal;
use sluice_broker::security::acl::{
    AclBinding, AclBindingFilter, AclOperation, CLUSTER_NAME, PatternType, PermissionType,
    ResourceType, WILDCARD,
};
use sluice_client::{Client, error_name};

/// The ACL APIs' version used: v1 is served by every Kafka since 2.0 (and
/// by Kafka 4, which dropped v0).
const VERSION: i16 = 1;

#[derive(Args, Debug)]
pub struct AclArgs {
    /// Broker address.
    #[arg(
        short,
        long,
        alias = "bootstrap-server",
        env = "SLUICE_BROKER",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub broker: String,
    #[command(subcommand)]
    pub command: AclCommand,
}

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Add ACLs: every principal with every host and operation, on every
    /// resource named.
    Add {
        #[command(flatten)]
        resources: Resources,
        #[command(flatten)]
        entries: Entries,
    },
    /// List ACLs, one per line: all of them, or those of the resources
    /// named (`--resource-pattern-type match`: every ACL that applies to
    /// them, wildcard and prefixed ones included).
    List {
        #[command(flatten)]
        resources: Resources,
        /// Only this principal's ACLs (`User:alice`); repeatable.
        #[arg(long = "principal", value_name = "PRINCIPAL")]
        principals: Vec<Principal>,
    },
    /// Remove the ACLs of the resources named for the principals, hosts and
    /// operations given; with no principal, every ACL of those resources
    /// (only with --force). Prints what was removed.
    Remove {
        #[command(flatten)]
        resources: Resources,
        #[command(flatten)]
        entries: Entries,
        /// Remove every ACL of the resources when no principal is given.
        #[arg(long)]
        force: bool,
    },
}

/// The resources an ACL is for.
#[derive(Args, Debug)]
pub struct Resources {
    /// A topic (`*`: every topic); repeatable.
    #[arg(long = "topic", value_name = "TOPIC")]
    topics: Vec<String>,
    /// A consumer group (`*`: every group); repeatable.
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
    /// The cluster.
    #[arg(long)]
    cluster: bool,
    /// A transactional id (`*`: every one); repeatable.
    #[arg(long = "transactional-id", value_name = "ID")]
    transactional_ids: Vec<String>,
    /// How resource names match: literal (the default) or prefixed; list
    /// and remove also take match (every ACL applying to the name) and any.
    #[arg(long, value_name = "TYPE")]
    resource_pattern_type: Option<PatternType>,
}

/// Who an ACL is for, from where, and what it allows or denies.
#[derive(Args, Debug)]
pub struct Entries {
    /// A principal the ACLs allow (`User:alice`, `User:*` for everyone);
    /// repeatable.
    #[arg(long = "allow-principal", value_name = "PRINCIPAL")]
    allow_principals: Vec<Principal>,
    /// A principal the ACLs deny; repeatable.
    #[arg(long = "deny-principal", value_name = "PRINCIPAL")]
    deny_principals: Vec<Principal>,
    /// A host (IP address) the allow ACLs are for; repeatable; default `*`.
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_hosts: Vec<String>,
    /// A host the deny ACLs are for; repeatable; default `*`.
    #[arg(long = "deny-host", value_name = "HOST")]
    deny_hosts: Vec<String>,
    /// Read, Write, Create, Delete, Alter, Describe, ClusterAction,
    /// DescribeConfigs, AlterConfigs, IdempotentWrite, CreateTokens,
    /// DescribeTokens or All (the default); repeatable.
    #[arg(long = "operation", value_name = "OPERATION")]
    operations: Vec<AclOperation>,
}

impl Resources {
    fn pattern_type(&self) -> PatternType {
        self.resource_pattern_type.unwrap_or(PatternType::Literal)
    }

    /// Every resource named, as (type, name).
    fn named(&self) -> Vec<(ResourceType, String)> {
        let mut out = Vec::new();
        out.extend(self.topics.iter().map(|t| (ResourceType::Topic, t.clone())));
        if self.cluster {
            out.push((ResourceType::Cluster, CLUSTER_NAME.to_string()));
        }
        out.extend(self.groups.iter().map(|g| (ResourceType::Group, g.clone())));
        out.extend(
            self.transactional_ids
                .iter()
                .map(|t| (ResourceType::TransactionalId, t.clone())),
        );
        out
    }

    fn required(&self) -> Result<Vec<(ResourceType, String)>> {
        let named = self.named();
        if named.is_empty() {
            bail!(
                "name at least one resource: --topic T, --group G, --cluster or --transactional-id ID"
            );
        }
        Ok(named)
    }
}

/// (principal, host, operation, permission) of each ACL the options name.
type Entry = (String, String, AclOperation, PermissionType);

impl Entries {
    fn has_principals(&self) -> bool {
        !self.allow_principals.is_empty() || !self.deny_principals.is_empty()
    }

    fn entries(&self) -> Result<Vec<Entry>> {
        if self.allow_principals.is_empty() && !self.allow_hosts.is_empty() {
            bail!("--allow-host needs --allow-principal");
        }
        if self.deny_principals.is_empty() && !self.deny_hosts.is_empty() {
            bail!("--deny-host needs --deny-principal");
        }
        let operations = if self.operations.is_empty() {
            vec![AclOperation::All]
        } else {
            self.operations.clone()
        };
        if operations.contains(&AclOperation::Any) {
            bail!("Any is not an operation an ACL can name (All is every operation)");
        }
        let star = [WILDCARD.to_string()];
        let mut out = Vec::new();
        for (principals, hosts, permission) in [
            (
                &self.allow_principals,
                &self.allow_hosts,
                PermissionType::Allow,
            ),
            (
                &self.deny_principals,
                &self.deny_hosts,
                PermissionType::Deny,
            ),
        ] {
            let hosts = if hosts.is_empty() { &star[..] } else { hosts };
            for p in principals {
                for h in hosts {
                    for op in &operations {
                        out.push((p.to_string(), h.trim().to_string(), *op, permission));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The operations kafka-acls.sh accepts for a resource type (Kafka's
/// `AclEntry.supportedOperations`, and All).
fn supported_operations(rt: ResourceType) -> &'static [AclOperation] {
    use AclOperation::*;
    match rt {
        ResourceType::Topic => &[
            Read,
            Write,
            Create,
            Describe,
            Delete,
            Alter,
            DescribeConfigs,
            AlterConfigs,
            All,
        ],
        ResourceType::Group => &[Read, Describe, Delete, DescribeConfigs, AlterConfigs, All],
        ResourceType::Cluster => &[
            Create,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
            Alter,
            Describe,
            All,
        ],
        ResourceType::TransactionalId => &[Describe, Write, All],
        ResourceType::DelegationToken => &[Describe, All],
        ResourceType::User => &[CreateTokens, DescribeTokens, All],
        ResourceType::Any => &[],
    }
}

pub fn run(args: AclArgs) -> Result<()> {
    let mut client = Client::connect(args.broker.as_str())
        .with_context(|| format!("connecting to {}", args.broker))?;
    match args.command {
        AclCommand::Add { resources, entries } => add(&mut client, &resources, &entries),
        AclCommand::List {
            resources,
            principals,
        } => list(&mut client, &resources, &principals),
        AclCommand::Remove {
            resources,
            entries,
            force,
        } => remove(&mut client, &resources, &entries, force),
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn add(client: &mut Client, resources: &Resources, entries: &Entries) -> Result<()> {
    let pattern_type = resources.pattern_type();
    if !matches!(pattern_type, PatternType::Literal | PatternType::Prefixed) {
        bail!(
            "--resource-pattern-type {pattern_type} is for list and remove; add takes literal or prefixed"
        );
    }
    if resources.cluster && pattern_type != PatternType::Literal {
        bail!(
            "--cluster is a literal resource: it takes no --resource-pattern-type {pattern_type}"
        );
    }
    let named = resources.required()?;
    if !entries.has_principals() {
        bail!("name who the ACLs are for: --allow-principal or --deny-principal");
    }
    let entries = entries.entries()?;
    let mut bindings = Vec::new();
    for (rt, name) in &named {
        let supported = supported_operations(*rt);
        for (principal, host, op, permission) in &entries {
            if !supported.contains(op) {
                let names: Vec<&str> = supported.iter().map(|o| o.name()).collect();
                bail!(
                    "resource type {rt} only supports operations {}",
                    names.join(", ")
                );
            }
            bindings.push(AclBinding {
                resource_type: *rt,
                resource_name: name.clone(),
                pattern_type,
                principal: principal.clone(),
                host: host.clone(),
                operation: *op,
                permission: *permission,
            });
        }
    }
    let mut req = CreateAclsRequest::default();
    req.creations = bindings
        .iter()
        .map(|b| {
            let mut c = AclCreation::default();
            c.resource_type = b.resource_type.code();
            c.resource_name = s(&b.resource_name);
            c.resource_pattern_type = b.pattern_type.code();
            c.principal = s(&b.principal);
            c.host = s(&b.host);
            c.operation = b.operation.code();
            c.permission_type = b.permission.code();
            c
        })
        .collect();
    let resp = client.call(VERSION, &req).context("CreateAcls")?;
    if resp.results.len() != bindings.len() {
        bail!(
            "CreateAcls: {} results for {} ACLs",
            resp.results.len(),
            bindings.len()
        );
    }
    let mut failed = Vec::new();
    for (b, r) in bindings.iter().zip(&resp.results) {
        if r.error_code == 0 {
            println!("added {b}");
        } else {
            failed.push(format!(
                "{b}: {}{}",
                error_name(r.error_code),
                message(r.error_message.as_ref())
            ));
        }
    }
    if !failed.is_empty() {
        bail!("CreateAcls refused:\n{}", failed.join("\n"));
    }
    Ok(())
}

fn message(m: Option<&StrBytes>) -> String {
    m.filter(|m| !m.is_empty())
        .map(|m| format!(" ({m})"))
        .unwrap_or_default()
}

fn code<T>(code: i8, parse: fn(i8) -> Option<T>, what: &str) -> Result<T> {
    parse(code).with_context(|| format!("the broker answered an unknown {what} code {code}"))
}

fn list(client: &mut Client, resources: &Resources, principals: &[Principal]) -> Result<()> {
    let named = resources.named();
    let resource_filters: Vec<(ResourceType, Option<String>, PatternType)> = if named.is_empty() {
        vec![(
            ResourceType::Any,
            None,
            resources.resource_pattern_type.unwrap_or(PatternType::Any),
        )]
    } else {
        named
            .into_iter()
            .map(|(rt, name)| (rt, Some(name), resources.pattern_type()))
            .collect()
    };
    let principal_filters: Vec<Option<String>> = if principals.is_empty() {
        vec![None]
    } else {
        principals.iter().map(|p| Some(p.to_string())).collect()
    };
    let mut found = BTreeSet::new();
    for (rt, name, pattern_type) in &resource_filters {
        for principal in &principal_filters {
            let mut req = DescribeAclsRequest::default();
            req.resource_type_filter = rt.code();
            req.resource_name_filter = name.as_deref().map(s);
            req.pattern_type_filter = pattern_type.code();
            req.principal_filter = principal.as_deref().map(s);
            req.host_filter = None;
            req.operation = AclOperation::Any.code();
            req.permission_type = PermissionType::Any.code();
            let resp = client.call(VERSION, &req).context("DescribeAcls")?;
            if resp.error_code != 0 {
                bail!(
                    "DescribeAcls: {}{}",
                    error_name(resp.error_code),
                    message(resp.error_message.as_ref())
                );
            }
            for r in &resp.resources {
                for a in &r.acls {
                    found.insert(AclBinding {
                        resource_type: code(
                            r.resource_type,
                            ResourceType::from_code,
                            "resource type",
                        )?,
                        resource_name: r.resource_name.to_string(),
                        pattern_type: code(r.pattern_type, PatternType::from_code, "pattern type")?,
                        principal: a.principal.to_string(),
                        host: a.host.to_string(),
                        operation: code(a.operation, AclOperation::from_code, "operation")?,
                        permission: code(
                            a.permission_type,
                            PermissionType::from_code,
                            "permission type",
                        )?,
                    });
                }
            }
        }
    }
    if found.is_empty() {
        eprintln!("no ACLs");
    }
    for b in &found {
        println!("{b}");
    }
    Ok(())
}

fn remove(
    client: &mut Client,
    resources: &Resources,
    entries: &Entries,
    force: bool,
) -> Result<()> {
    let named = resources.required()?;
    let pattern_type = resources.pattern_type();
    let mut filters = Vec::new();
    if entries.has_principals() {
        let entries = entries.entries()?;
        for (rt, name) in &named {
            for (principal, host, op, permission) in &entries {
                filters.push(AclBindingFilter {
                    resource_type: *rt,
                    resource_name: Some(name.clone()),
                    pattern_type,
                    principal: Some(principal.clone()),
                    host: Some(host.clone()),
                    operation: *op,
                    permission: *permission,
                });
            }
        }
    } else {
        if !entries.operations.is_empty()
            || !entries.allow_hosts.is_empty()
            || !entries.deny_hosts.is_empty()
        {
            bail!("--operation and the host options need --allow-principal or --deny-principal");
        }
        if !force {
            bail!(
                "with no --allow-principal or --deny-principal every ACL of the resources is removed: add --force to mean it"
            );
        }
        for (rt, name) in &named {
            filters.push(AclBindingFilter {
                resource_type: *rt,
                resource_name: Some(name.clone()),
                pattern_type,
                ..AclBindingFilter::any()
            });
        }
    }
    let mut req = DeleteAclsRequest::default();
    req.filters = filters
        .iter()
        .map(|f| {
            let mut d = DeleteAclsFilter::default();
            d.resource_type_filter = f.resource_type.code();
            d.resource_name_filter = f.resource_name.as_deref().map(s);
            d.pattern_type_filter = f.pattern_type.code();
            d.principal_filter = f.principal.as_deref().map(s);
            d.host_filter = f.host.as_deref().map(s);
            d.operation = f.operation.code();
            d.permission_type = f.permission.code();
            d
        })
        .collect();
    let resp = client.call(VERSION, &req).context("DeleteAcls")?;
    let mut removed = BTreeSet::new();
    let mut failed = Vec::new();
    for r in &resp.filter_results {
        if r.error_code != 0 {
            failed.push(format!(
                "{}{}",
                error_name(r.error_code),
                message(r.error_message.as_ref())
            ));
            continue;
        }
        for m in &r.matching_acls {
            if m.error_code != 0 {
                failed.push(format!(
                    "{}{}",
                    error_name(m.error_code),
                    message(m.error_message.as_ref())
                ));
                continue;
            }
            removed.insert(AclBinding {
                resource_type: code(m.resource_type, ResourceType::from_code, "resource type")?,
                resource_name: m.resource_name.to_string(),
                pattern_type: code(m.pattern_type, PatternType::from_code, "pattern type")?,
                principal: m.principal.to_string(),
                host: m.host.to_string(),
                operation: code(m.operation, AclOperation::from_code, "operation")?,
                permission: code(
                    m.permission_type,
                    PermissionType::from_code,
                    "permission type",
                )?,
            });
        }
    }
    for b in &removed {
        println!("removed {b}");
    }
    if removed.is_empty() && failed.is_empty() {
        eprintln!("no ACLs matched");
    }
    if !failed.is_empty() {
        bail!("DeleteAcls refused: {}", failed.join("; "));
    }
    Ok(())
}
