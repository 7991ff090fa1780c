//! `sluice topic create | list | describe | alter | delete-records | delete |
//! reassign`: topic administration against a running broker (Sluice or any
//! Kafka) over the Kafka protocol — CreateTopics, Metadata, ListOffsets,
//! DescribeConfigs, IncrementalAlterConfigs, DeleteRecords, DeleteTopics,
//! AlterPartitionReassignments, ListPartitionReassignments.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use sluice_client::{Client, ClientSecurity, ConfigChange, ConfigOp, RESOURCE_TOPIC};

use crate::client_security::{self, SecurityArgs};

#[derive(Args, Debug)]
pub struct TopicArgs {
    /// Broker address.
    #[arg(
        short,
        long,
        env = "SLUICE_BROKER",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub broker: String,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(subcommand)]
    pub command: TopicCommand,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(short, long, default_value_t = 1)]
        partitions: i32,
        /// Replicas of each partition (-1: the cluster's default.replication.factor).
        #[arg(short, long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// A topic config, `key=value` (e.g. retention.ms=3600000); repeatable.
        #[arg(short, long = "config", value_parser = parse_config)]
        configs: Vec<(String, String)>,
    },
    /// List topic names, one per line.
    List,
    /// Partitions, leaders and offsets of the named topics (all if none),
    /// and each topic's config overrides.
    Describe { names: Vec<String> },
    /// Change a topic's configs (IncrementalAlterConfigs): set some, put
    /// others back to the broker's value.
    Alter {
        name: String,
        /// Set a config, `key=value` (e.g. retention.ms=3600000); repeatable.
        #[arg(short, long = "config", value_parser = parse_config)]
        configs: Vec<(String, String)>,
        /// Remove an override, so the broker's value applies; repeatable.
        #[arg(short, long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
    /// Delete a partition's records below an offset (DeleteRecords): its log
    /// start offset moves there, and consumers start from it.
    DeleteRecords {
        name: String,
        #[arg(short, long)]
        partition: i32,
        /// Records below this offset go; -1: every record (up to the high
        /// watermark).
        #[arg(short, long, allow_negative_numbers = true)]
        offset: i64,
    },
    /// Delete topics.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Move replicas between brokers (AlterPartitionReassignments): the
    /// new replicas catch up, then the old ones are dropped. One partition
    /// with `NAME --partition P --replicas 3,2`, or every replica off a
    /// broker with `--drain-broker N` (each to the live broker holding the
    /// fewest); `NAME --partition P --cancel` reverts one in progress; with
    /// no topic and no drain, lists those in progress.
    Reassign {
        name: Option<String>,
        #[arg(short, long)]
        partition: Option<i32>,
        /// The new replicas, preferred leader first.
        #[arg(short, long, value_delimiter = ',')]
        replicas: Vec<i32>,
        #[arg(long)]
        cancel: bool,
        #[arg(long, value_name = "BROKER")]
        drain_broker: Option<i32>,
        /// Wait until no reassignment is in progress.
        #[arg(long)]
        wait: bool,
    },
}

fn parse_config(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

/// The reassignments in progress, `(topic, partition, replicas, adding,
/// removing)`.
type Ongoing = Vec<(String, i32, Vec<i32>, Vec<i32>, Vec<i32>)>;

fn list_reassignments(client: &mut Client) -> Result<Ongoing> {
    use kafka_protocol::messages::ListPartitionReassignmentsRequest;
    let mut r = ListPartitionReassignmentsRequest::default();
    r.timeout_ms = 30_000;
    let resp = client.call(0, &r).context("ListPartitionReassignments")?;
    if resp.error_code != 0 {
        bail!(
            "ListPartitionReassignments: {}",
            sluice_client::error_name(resp.error_code)
        );
    }
    let ids = |v: &[kafka_protocol::messages::BrokerId]| v.iter().map(|b| b.0).collect();
    Ok(resp
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    ids(&p.replicas),
                    ids(&p.adding_replicas),
                    ids(&p.removing_replicas),
                )
            })
        })
        .collect())
}

/// One partition's move: (topic, partition, new replicas; None cancels).
type Move = (String, i32, Option<Vec<i32>>);

/// Sends one AlterPartitionReassignments; an error names the partitions
/// refused.
fn alter_reassignments(client: &mut Client, moves: &[Move]) -> Result<()> {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, BrokerId};
    let mut by_topic: std::collections::BTreeMap<&str, Vec<ReassignablePartition>> =
        Default::default();
    for (topic, p, replicas) in moves {
        let mut rp = ReassignablePartition::default();
        rp.partition_index = *p;
        rp.replicas = replicas
            .as_ref()
            .map(|rs| rs.iter().copied().map(BrokerId).collect());
        by_topic.entry(topic).or_default().push(rp);
    }
    let mut r = AlterPartitionReassignmentsRequest::default();
    r.timeout_ms = 30_000;
    r.topics = by_topic
        .into_iter()
        .map(|(name, partitions)| {
            let mut t = ReassignableTopic::default();
            t.name = sluice_client::topic_name(name);
            t.partitions = partitions;
            t
        })
        .collect();
    let resp = client.call(0, &r).context("AlterPartitionReassignments")?;
    if resp.error_code != 0 {
        bail!(
            "AlterPartitionReassignments: {}",
            sluice_client::error_name(resp.error_code)
        );
    }
    let refused: Vec<String> = resp
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions.iter().filter(|p| p.error_code != 0).map(|p| {
                format!(
                    "{}-{}: {}",
                    t.name.0,
                    p.partition_index,
                    sluice_client::error_name(p.error_code)
                )
            })
        })
        .collect();
    if !refused.is_empty() {
        bail!("reassignment refused: {}", refused.join(", "));
    }
    Ok(())
}

/// Every replica on `broker` moved to the live broker (not already a
/// replica) holding the fewest replicas, counting the moves made so far.
fn drain_plan(client: &mut Client, broker: i32) -> Result<Vec<Move>> {
    let live: Vec<i32> = client
        .describe_cluster()
        .context("DescribeCluster")?
        .brokers
        .iter()
        .map(|b| b.id)
        .filter(|id| *id != broker)
        .collect();
    let topics = client.describe_topics(None).context("describing topics")?;
    let mut load: std::collections::BTreeMap<i32, usize> = live.iter().map(|b| (*b, 0)).collect();
    for t in &topics {
        for p in &t.replicas {
            for r in &p.replicas {
                if let Some(n) = load.get_mut(r) {
                    *n += 1;
                }
            }
        }
    }
    let mut moves = Vec::new();
    for t in &topics {
        for p in &t.replicas {
            let Some(at) = p.replicas.iter().position(|r| *r == broker) else {
                continue;
            };
            let Some((&to, _)) = load
                .iter()
                .filter(|(b, _)| !p.replicas.contains(b))
                .min_by_key(|(b, n)| (**n, **b))
            else {
                bail!(
                    "{}-{}: no live broker to move broker {broker}'s replica to",
                    t.name,
                    p.partition
                );
            };
            *load.entry(to).or_default() += 1;
            let mut target = p.replicas.clone();
            target[at] = to;
            moves.push((t.name.clone(), p.partition, Some(target)));
        }
    }
    Ok(moves)
}

fn reassign(
    client: &mut Client,
    name: Option<String>,
    partition: Option<i32>,
    replicas: Vec<i32>,
    cancel: bool,
    drain_broker: Option<i32>,
    wait: bool,
) -> Result<()> {
    let moves = match (name, drain_broker) {
        (Some(_), Some(_)) => bail!("give a topic or --drain-broker, not both"),
        (Some(name), None) => {
            let Some(p) = partition else {
                bail!("--partition is needed with a topic")
            };
            match (cancel, replicas.is_empty()) {
                (true, true) => vec![(name, p, None)],
                (false, false) => vec![(name, p, Some(replicas))],
                (true, false) => bail!("--cancel takes no --replicas"),
                (false, true) => bail!("--replicas (e.g. 3,2) or --cancel is needed"),
            }
        }
        (None, Some(b)) => drain_plan(client, b)?,
        (None, None) => Vec::new(),
    };
    if !moves.is_empty() {
        alter_reassignments(client, &moves)?;
        for (t, p, target) in &moves {
            match target {
                Some(rs) => println!("{t}-{p}: moving to {rs:?}"),
                None => println!("{t}-{p}: cancelled"),
            }
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let ongoing = list_reassignments(client)?;
        if !wait || ongoing.is_empty() {
            if ongoing.is_empty() && (moves.is_empty() || wait) {
                println!("no reassignment in progress");
            }
            for (t, p, rs, adding, removing) in &ongoing {
                println!("{t}-{p}: replicas {rs:?} adding {adding:?} removing {removing:?}");
            }
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "{} reassignment(s) still in progress after 600 s",
                ongoing.len()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

pub fn run(args: TopicArgs) -> Result<()> {
    let security = args.security.resolve()?;
    let mut client = client_security::connect(&args.broker, &security)?;
    match args.command {
        TopicCommand::Reassign {
            name,
            partition,
            replicas,
            cancel,
            drain_broker,
            wait,
        } => reassign(
            &mut client,
            name,
            partition,
            replicas,
            cancel,
            drain_broker,
            wait,
        )?,
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            if partitions < 1 {
                bail!("--partitions must be at least 1");
            }
            client
                .create_topic_replicated(&name, partitions, replication_factor, &configs)
                .with_context(|| format!("creating topic {name}"))?;
            println!("created topic {name} with {partitions} partition(s)");
        }
        TopicCommand::List => {
            for t in client.describe_topics(None).context("listing topics")? {
                println!("{}", t.name);
            }
        }
        TopicCommand::Describe { names } => {
            let names = (!names.is_empty()).then_some(names);
            let topics = client
                .describe_topics(names.as_deref())
                .context("describing topics")?;
            let mut leaders = Leaders::new(&mut client, &security)?;
            for t in topics {
                println!(
                    "topic {}  partitions {}{}",
                    t.name,
                    t.partitions.len(),
                    if t.internal { "  (internal)" } else { "" }
                );
                let overrides = client
                    .topic_overrides(&t.name)
                    .with_context(|| format!("describing the configs of topic {}", t.name))?;
                if !overrides.is_empty() {
                    let shown: Vec<String> = overrides
                        .iter()
                        .map(|c| match (&c.value, c.sensitive) {
                            (_, true) => format!("{}=(sensitive)", c.name),
                            (Some(v), false) => format!("{}={v}", c.name),
                            (None, false) => format!("{}=(null)", c.name),
                        })
                        .collect();
                    println!("  configs {}", shown.join(" "));
                }
                for p in &t.replicas {
                    // Offsets come from the partition's leader (in a
                    // cluster, another broker may lead it).
                    let offsets = leaders.client(&mut client, p.leader).and_then(|c| {
                        Ok((
                            c.list_offset(&t.name, p.partition, -2)?,
                            c.list_offset(&t.name, p.partition, -1)?,
                        ))
                    });
                    let offsets = match offsets {
                        Ok((earliest, latest)) => format!(
                            "earliest {earliest}  latest {latest}  messages {}",
                            latest - earliest
                        ),
                        Err(e) => format!("offsets unavailable: {e}"),
                    };
                    println!(
                        "  partition {}  leader {}  epoch {}  replicas {:?}  isr {:?}  {offsets}",
                        p.partition, p.leader, p.leader_epoch, p.replicas, p.isr
                    );
                }
            }
        }
        TopicCommand::Alter {
            name,
            configs,
            delete_configs,
        } => {
            if configs.is_empty() && delete_configs.is_empty() {
                bail!("nothing to change: give --config key=value or --delete-config key");
            }
            let mut changes: Vec<ConfigChange> = configs
                .into_iter()
                .map(|(k, v)| ConfigChange {
                    name: k,
                    op: ConfigOp::Set,
                    value: Some(v),
                })
                .collect();
            changes.extend(delete_configs.into_iter().map(|k| ConfigChange {
                name: k,
                op: ConfigOp::Delete,
                value: None,
            }));
            client
                .incremental_alter_configs(RESOURCE_TOPIC, &name, &changes, false)
                .with_context(|| format!("altering the configs of topic {name}"))?;
            for c in &changes {
                match &c.value {
                    Some(v) => println!("set {}={v} on topic {name}", c.name),
                    None => println!("deleted {} from topic {name}", c.name),
                }
            }
        }
        TopicCommand::DeleteRecords {
            name,
            partition,
            offset,
        } => {
            let low = client
                .delete_records(&name, partition, offset)
                .with_context(|| format!("deleting records of {name}-{partition}"))?;
            println!("topic {name} partition {partition}: log start offset {low}");
        }
        TopicCommand::Delete { names } => {
            for name in names {
                client
                    .delete_topic(&name)
                    .with_context(|| format!("deleting topic {name}"))?;
                println!("deleted topic {name}");
            }
        }
    }
    Ok(())
}

/// Connections to the brokers leading partitions, opened as needed.
struct Leaders {
    addresses: std::collections::HashMap<i32, String>,
    open: std::collections::HashMap<i32, Client>,
    /// Each leader is connected to as the bootstrap broker was.
    security: ClientSecurity,
}

impl Leaders {
    fn new(client: &mut Client, security: &ClientSecurity) -> Result<Leaders> {
        let cluster = client
            .describe_cluster()
            .context("describing the cluster")?;
        Ok(Leaders {
            addresses: cluster
                .brokers
                .into_iter()
                .map(|b| (b.id, format!("{}:{}", b.host, b.port)))
                .collect(),
            open: std::collections::HashMap::new(),
            security: security.clone(),
        })
    }

    /// A client on `leader`: the bootstrap connection when it is the only
    /// broker, else a connection to the leader's address.
    fn client<'a>(
        &'a mut self,
        bootstrap: &'a mut Client,
        leader: i32,
    ) -> Result<&'a mut Client, sluice_client::ClientError> {
        if self.addresses.len() <= 1 {
            return Ok(bootstrap);
        }
        let Some(addr) = self.addresses.get(&leader) else {
            return Err(sluice_client::ClientError::Protocol(format!(
                "no address for broker {leader}"
            )));
        };
        match self.open.entry(leader) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                Ok(e.insert(Client::connect_secure(addr, &self.security)?))
            }
        }
    }
}
