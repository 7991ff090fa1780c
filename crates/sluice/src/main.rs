//! `sluice`: the single binary — the broker (`serve`), console tools
//! (`produce`, `consume`, `topic`, `cluster`, `txn`) and the benchmarks
//! (`bench`).

mod serve;

/// mimalloc instead of glibc malloc: under a soak of 32 producers and 32
/// consumers (~100k allocations/s) glibc's RSS crept up ~0.4 MiB a minute
/// with a flat live heap (heaptrack: 5–7 MB), i.e. fragmentation; see
/// docs/BENCHMARKS.md, "Soak".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod acl;
mod bench;
mod bench_authz;
mod client_security;
mod cluster_status;
mod tools;
mod topic;
mod txn;
mod user;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sluice", version, about = "A zero-copy message log broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker: Kafka's wire protocol on 127.0.0.1:9092, data in ./sluice-data.
    Serve(Box<serve::ServeArgs>),
    /// Write lines from stdin to a topic (kcat -P style).
    Produce(tools::ProduceArgs),
    /// Print a topic's messages (kcat -C style).
    Consume(tools::ConsumeArgs),
    /// Create, list, describe and delete topics on a running broker.
    Topic(topic::TopicArgs),
    /// A cluster's brokers, controller and unhealthy partitions.
    Cluster(cluster_status::ClusterArgs),
    /// List and describe transactions, and a partition's producers.
    Txn(txn::TxnArgs),
    /// SCRAM users of a broker's data directory (before or without a running broker).
    User(user::UserArgs),
    /// Add, list and remove ACLs on a running broker (kafka-acls.sh style).
    Acl(acl::AclArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> Result<()> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    serve::apply_config_file(&args)?;
    match Cli::parse_from(args).command {
        Command::Serve(args) => serve::serve(*args),
        Command::Produce(args) => tools::produce(args),
        Command::Consume(args) => tools::consume(args),
        Command::Topic(args) => topic::run(args),
        Command::Cluster(args) => cluster_status::run(args),
        Command::Txn(args) => txn::run(args),
        Command::User(args) => user::run(args),
        Command::Acl(args) => acl::run(args),
        Command::Bench(command) => bench::run(command),
    }
}
