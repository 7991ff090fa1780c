//! `sluice cluster status`: the brokers, the controller, and the partitions
//! that are under-replicated or offline — from any broker of a cluster (or
//! a single one) over the Kafka protocol (DescribeCluster, Metadata).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use sluice_client::PartitionReplicas;

use crate::client_security::{self, SecurityArgs};

#[derive(Args, Debug)]
pub struct ClusterArgs {
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
    pub command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Brokers, controller, and partitions whose ISR is short of their
    /// replicas (under-replicated) or that have no leader (offline).
    Status,
}

/// A partition's health, as Metadata describes it.
fn health(p: &PartitionReplicas) -> Option<&'static str> {
    if p.leader < 0 {
        Some("offline")
    } else if p.isr.len() < p.replicas.len() {
        Some("under-replicated")
    } else {
        None
    }
}

pub fn run(args: ClusterArgs) -> Result<()> {
    let security = args.security.resolve()?;
    let mut client = client_security::connect(&args.broker, &security)?;
    match args.command {
        ClusterCommand::Status => {
            let cluster = client
                .describe_cluster()
                .context("describing the cluster")?;
            println!(
                "cluster {}  controller {}  brokers {}",
                cluster.cluster_id,
                cluster.controller_id,
                cluster.brokers.len()
            );
            for b in &cluster.brokers {
                let rack = b
                    .rack
                    .as_deref()
                    .map(|r| format!("  rack {r}"))
                    .unwrap_or_default();
                println!("  broker {} at {}:{}{rack}", b.id, b.host, b.port);
            }
            let topics = client.describe_topics(None).context("listing topics")?;
            let mut total = 0;
            let mut unhealthy = Vec::new();
            for t in &topics {
                for p in &t.replicas {
                    total += 1;
                    if let Some(what) = health(p) {
                        unhealthy.push((what, t.name.as_str(), p));
                    }
                }
            }
            let count = |what| unhealthy.iter().filter(|u| u.0 == what).count();
            println!(
                "partitions {total}  under-replicated {}  offline {}",
                count("under-replicated"),
                count("offline")
            );
            for (what, topic, p) in unhealthy {
                println!(
                    "  {what} {topic}-{}  leader {}  replicas {:?}  isr {:?}",
                    p.partition, p.leader, p.replicas, p.isr
                );
            }
        }
    }
    Ok(())
}
