//! `sluice topic create | list | describe | delete`: topic administration
//! against a running broker (Sluice or any Kafka) over the Kafka protocol —
//! CreateTopics, Metadata, ListOffsets, DeleteTopics.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use sluice_client::Client;

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
        /// A topic config, `key=value` (e.g. retention.ms=3600000); repeatable.
        #[arg(short, long = "config", value_parser = parse_config)]
        configs: Vec<(String, String)>,
    },
    /// List topic names, one per line.
    List,
    /// Partitions, leaders and offsets of the named topics (all if none).
    Describe { names: Vec<String> },
    /// Delete topics.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

fn parse_config(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

pub fn run(args: TopicArgs) -> Result<()> {
    let mut client = Client::connect(args.broker.as_str())
        .with_context(|| format!("connecting to {}", args.broker))?;
    match args.command {
        TopicCommand::Create {
            name,
            partitions,
            configs,
        } => {
            if partitions < 1 {
                bail!("--partitions must be at least 1");
            }
            client
                .create_topic(&name, partitions, &configs)
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
            for t in topics {
                println!(
                    "topic {}  partitions {}{}",
                    t.name,
                    t.partitions.len(),
                    if t.internal { "  (internal)" } else { "" }
                );
                for (partition, leader) in t.partitions {
                    let earliest = client.list_offset(&t.name, partition, -2)?;
                    let latest = client.list_offset(&t.name, partition, -1)?;
                    println!(
                        "  partition {partition}  leader {leader}  earliest {earliest}  latest {latest}  messages {}",
                        latest - earliest
                    );
                }
            }
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
