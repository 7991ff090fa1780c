//! `sluice txn list | describe | producers`: transactions on a running
//! broker or cluster (Sluice or any Kafka) over the Kafka protocol —
//! Metadata and ListTransactions at every broker (each lists the
//! transactions it coordinates), FindCoordinator (key type 1) and
//! DescribeTransactions, DescribeProducers at a partition's leader.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use sluice_client::txn::{KEY_TYPE_TRANSACTION, Node, TxnDescription};
use sluice_client::{Client, ClientSecurity, error_name};

use crate::client_security::{self, SecurityArgs};

#[derive(Args, Debug)]
pub struct TxnArgs {
    /// Broker address (any broker of the cluster).
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
    pub command: TxnCommand,
}

#[derive(Subcommand, Debug)]
pub enum TxnCommand {
    /// The transactional ids every broker coordinates: id, coordinator,
    /// producer id and state.
    List {
        /// Only transactions in this state (Empty, Ongoing, PrepareCommit,
        /// PrepareAbort, CompleteCommit, CompleteAbort, PrepareEpochFence,
        /// Dead); repeatable or comma-separated.
        #[arg(short, long = "state", value_delimiter = ',')]
        states: Vec<String>,
        /// Only this producer id; repeatable or comma-separated.
        #[arg(short, long = "producer-id", value_delimiter = ',')]
        producer_ids: Vec<i64>,
        /// Only transactions open at least this long (ListTransactions v1,
        /// Kafka 3.8 and later).
        #[arg(long)]
        min_duration_ms: Option<i64>,
    },
    /// One transactional id at its coordinator: state, producer id and
    /// epoch, timeout, start time of the open transaction, its partitions.
    Describe { transactional_id: String },
    /// The active producers of a topic's partitions (DescribeProducers at
    /// each partition's leader): producer id, epoch, last sequence, and
    /// the first offset of each open transaction.
    Producers {
        topic: String,
        /// Only this partition (default: all of them).
        #[arg(short, long)]
        partition: Option<i32>,
    },
}

pub fn run(args: TxnArgs) -> Result<()> {
    let security = args.security.resolve()?;
    let mut client = client_security::connect(&args.broker, &security)?;
    let bootstrap = Bootstrap {
        addr: &args.broker,
        security: &security,
    };
    match args.command {
        TxnCommand::List {
            states,
            producer_ids,
            min_duration_ms,
        } => list(
            &mut client,
            bootstrap,
            &states,
            &producer_ids,
            min_duration_ms,
        ),
        TxnCommand::Describe { transactional_id } => {
            describe(&mut client, bootstrap, &transactional_id)
        }
        TxnCommand::Producers { topic, partition } => {
            producers(&mut client, bootstrap, &topic, partition)
        }
    }
}

/// The broker first connected to, and how every broker is connected to.
#[derive(Clone, Copy)]
struct Bootstrap<'a> {
    addr: &'a str,
    security: &'a ClientSecurity,
}

/// A connection to `node`; the bootstrap connection when it is the only
/// broker or `node` is at the bootstrap address.
fn connect_to(node: &Node, bootstrap: Bootstrap<'_>) -> Result<Option<Client>> {
    if node.addr() == bootstrap.addr {
        return Ok(None);
    }
    Client::connect_secure(&node.addr(), bootstrap.security)
        .map(Some)
        .with_context(|| format!("connecting to broker {} at {}", node.id, node.addr()))
}

fn list(
    client: &mut Client,
    bootstrap: Bootstrap<'_>,
    states: &[String],
    producer_ids: &[i64],
    min_duration_ms: Option<i64>,
) -> Result<()> {
    let brokers = client
        .brokers()
        .context("Metadata (the cluster's brokers)")?;
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    let single = brokers.len() <= 1;
    for b in &brokers {
        let listed = if single {
            client.list_transactions(states, producer_ids, min_duration_ms)
        } else {
            match connect_to(b, bootstrap) {
                Ok(Some(mut c)) => c.list_transactions(states, producer_ids, min_duration_ms),
                Ok(None) => client.list_transactions(states, producer_ids, min_duration_ms),
                Err(e) => {
                    failed.push(format!("broker {} at {}: {e:#}", b.id, b.addr()));
                    continue;
                }
            }
        };
        match listed {
            Ok(list) => {
                for s in &list.unknown_state_filters {
                    eprintln!("broker {}: unknown state {s:?}", b.id);
                }
                rows.extend(list.transactions.into_iter().map(|t| (b.id, t)));
            }
            Err(e) => failed.push(format!("broker {} at {}: {e}", b.id, b.addr())),
        }
    }
    rows.sort_by(|a, b| a.1.transactional_id.cmp(&b.1.transactional_id));
    if rows.is_empty() {
        println!("no transactions");
    } else {
        let width = rows
            .iter()
            .map(|(_, t)| t.transactional_id.len())
            .max()
            .unwrap_or(0)
            .max("TRANSACTIONAL ID".len());
        println!(
            "{:<width$}  {:>11}  {:>11}  STATE",
            "TRANSACTIONAL ID", "COORDINATOR", "PRODUCER ID"
        );
        for (coordinator, t) in &rows {
            println!(
                "{:<width$}  {:>11}  {:>11}  {}",
                t.transactional_id, coordinator, t.producer_id, t.state
            );
        }
    }
    if !failed.is_empty() {
        bail!(
            "ListTransactions failed at {} of {} brokers (the list above misses their transactions): {}",
            failed.len(),
            brokers.len(),
            failed.join("; ")
        );
    }
    Ok(())
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn utc(ms: i64) -> String {
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn print_description(d: &TxnDescription, coordinator: &Node) {
    println!("transactional id  {}", d.transactional_id);
    println!(
        "coordinator       broker {} at {}",
        coordinator.id,
        coordinator.addr()
    );
    println!("state             {}", d.state);
    println!("producer id       {}", d.producer_id);
    println!("producer epoch    {}", d.producer_epoch);
    println!("timeout ms        {}", d.timeout_ms);
    let open = matches!(
        d.state.as_str(),
        "Ongoing" | "PrepareCommit" | "PrepareAbort" | "PrepareEpochFence"
    );
    if d.start_time_ms >= 0 && open {
        let ago = (now_ms() - d.start_time_ms) as f64 / 1000.0;
        println!(
            "start time        {} ({ago:.1} s ago)",
            utc(d.start_time_ms)
        );
    } else if d.start_time_ms >= 0 {
        // A finished transaction: when the last one started.
        println!(
            "start time        {} (last transaction)",
            utc(d.start_time_ms)
        );
    } else {
        println!("start time        -");
    }
    let partitions: Vec<String> = d
        .partitions
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| format!("{t}-{p}")))
        .collect();
    if partitions.is_empty() {
        println!("partitions        -");
    } else {
        println!("partitions        {}", partitions.join(" "));
    }
}

fn describe(client: &mut Client, bootstrap: Bootstrap<'_>, id: &str) -> Result<()> {
    let node = client
        .find_coordinator(id, KEY_TYPE_TRANSACTION)
        .with_context(|| format!("FindCoordinator (transaction) of {id:?}"))?;
    let mut other = connect_to(&node, bootstrap)?;
    let at = other.as_mut().unwrap_or(client);
    let described = at
        .describe_transactions(&[id.to_string()])
        .with_context(|| format!("DescribeTransactions of {id:?} at broker {}", node.id))?;
    let Some(d) = described.into_iter().find(|d| d.transactional_id == id) else {
        bail!("broker {} described no transaction {id:?}", node.id);
    };
    if d.error_code != 0 {
        bail!(
            "transactional id {id:?}: {} (coordinator: broker {} at {})",
            error_name(d.error_code),
            node.id,
            node.addr()
        );
    }
    print_description(&d, &node);
    Ok(())
}

fn producers(
    client: &mut Client,
    bootstrap: Bootstrap<'_>,
    topic: &str,
    only: Option<i32>,
) -> Result<()> {
    let topics = client
        .describe_topics(Some(&[topic.to_string()]))
        .with_context(|| format!("describing topic {topic}"))?;
    let Some(t) = topics.into_iter().next() else {
        bail!("no topic {topic}");
    };
    let brokers = client
        .brokers()
        .context("Metadata (the cluster's brokers)")?;
    let mut shown = false;
    for (partition, leader) in t.partitions {
        if only.is_some_and(|p| p != partition) {
            continue;
        }
        shown = true;
        let node = brokers.iter().find(|b| b.id == leader);
        let mut other = match node {
            Some(n) if brokers.len() > 1 => connect_to(n, bootstrap)?,
            _ => None,
        };
        let at = other.as_mut().unwrap_or(&mut *client);
        let described = at
            .describe_producers(topic, &[partition])
            .with_context(|| format!("DescribeProducers of {topic}-{partition}"))?;
        for (p, result) in described {
            match result {
                Err(e) => println!("partition {p}  leader {leader}  {e}"),
                Ok(list) if list.is_empty() => {
                    println!("partition {p}  leader {leader}  no active producers")
                }
                Ok(list) => {
                    println!("partition {p}  leader {leader}  producers {}", list.len());
                    for s in list {
                        let txn = if s.current_txn_start_offset >= 0 {
                            format!(
                                "open transaction from offset {}",
                                s.current_txn_start_offset
                            )
                        } else {
                            "no open transaction".to_string()
                        };
                        println!(
                            "  producer id {}  epoch {}  last sequence {}  last timestamp {}  coordinator epoch {}  {txn}",
                            s.producer_id,
                            s.epoch,
                            s.last_sequence,
                            if s.last_timestamp >= 0 {
                                utc(s.last_timestamp)
                            } else {
                                "-".to_string()
                            },
                            s.coordinator_epoch
                        );
                    }
                }
            }
        }
    }
    if !shown {
        bail!("topic {topic} has no partition {}", only.unwrap_or(-1));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn times_are_printed_in_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
