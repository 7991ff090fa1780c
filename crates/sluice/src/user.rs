//! `sluice user add | delete | list`: SCRAM users, one of two ways.
//!
//! - `--data-dir DIR` writes a single-node broker's credential store
//!   directly — the way to create the first user before any broker runs
//!   (Kafka's `kafka-storage format --add-scram`).
//! - `-b BOOTSTRAP` (with the security flags, `--command-config`) asks a
//!   running broker over the Kafka protocol, as Kafka's
//!   `kafka-configs --alter --add-config 'SCRAM-SHA-256=[…]'` does:
//!   AlterUserScramCredentials with a fresh 32-byte salt and the PBKDF2
//!   salted password computed here, DescribeUserScramCredentials to list.
//!
//! Passwords are read from stdin, never from the command line, and only
//! their salted, hashed form is stored (or sent).

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use sluice_broker::security::credentials::CredentialStore;
use sluice_broker::security::scram::{Credential, MAX_ITERATIONS, MIN_ITERATIONS, Mechanism};
use sluice_client::{Client, ClientError};

use crate::client_security::{self, SecurityArgs};

#[derive(Args, Debug)]
pub struct UserArgs {
    /// The broker's data directory, written directly (the broker need not
    /// run). The default, ./sluice-data, when -b is not given.
    #[arg(long, env = "SLUICE_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// A running broker to change users at over the Kafka protocol, instead
    /// of --data-dir.
    #[arg(short, long, value_name = "BOOTSTRAP", global = true)]
    pub broker: Option<String>,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user, or change its password, for one SCRAM mechanism.
    Add {
        name: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long, default_value = "SCRAM-SHA-512")]
        mechanism: String,
        /// PBKDF2 iterations (Kafka's bounds: 4096 to 16384).
        #[arg(long, default_value_t = 4096)]
        iterations: u32,
        /// Read the password from the first line of stdin.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Remove a user's credential for one mechanism.
    Delete {
        name: String,
        #[arg(long, default_value = "SCRAM-SHA-512")]
        mechanism: String,
    },
    /// Users, their mechanisms and iteration counts.
    List,
}

fn mechanism(name: &str) -> Result<Mechanism> {
    Mechanism::from_name(name)
        .with_context(|| format!("unknown mechanism {name}: SCRAM-SHA-256 or SCRAM-SHA-512"))
}

/// The first line of stdin, without its line end; not empty.
fn read_password() -> Result<String> {
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .context("reading the password from stdin")?;
    let password = password.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        bail!("an empty password");
    }
    Ok(password.to_string())
}

fn check_iterations(iterations: u32) -> Result<()> {
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        bail!("iterations must be {MIN_ITERATIONS} to {MAX_ITERATIONS}, as Kafka's");
    }
    Ok(())
}

pub fn run(args: UserArgs) -> Result<()> {
    match (args.broker, args.data_dir) {
        (Some(_), Some(_)) => bail!(
            "give --data-dir (write a broker's store directly) or -b (a running broker, over \
             the protocol), not both (is SLUICE_DATA_DIR set?)"
        ),
        (Some(broker), None) => {
            let security = args.security.resolve()?;
            let mut client = client_security::connect(&broker, &security)?;
            over_protocol(&mut client, &broker, args.command)
        }
        (None, data_dir) => {
            if args.security.given() {
                bail!("the security flags are for -b (a running broker); --data-dir needs none");
            }
            in_data_dir(
                &data_dir.unwrap_or_else(|| PathBuf::from("./sluice-data")),
                args.command,
            )
        }
    }
}

/// Users changed and listed at a running broker.
fn over_protocol(client: &mut Client, broker: &str, command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Add {
            name,
            mechanism: m,
            iterations,
            password_stdin: _,
        } => {
            let m = mechanism(&m)?;
            check_iterations(iterations)?;
            let password = read_password()?;
            client
                .upsert_scram_credential(&name, m, password.as_bytes(), iterations)
                .with_context(|| format!("adding user {name} at {broker}"))?;
            println!("user {name}: {} with {iterations} iterations", m.name());
        }
        UserCommand::Delete { name, mechanism: m } => {
            let m = mechanism(&m)?;
            match client.delete_scram_credential(&name, m) {
                Ok(()) => println!("user {name}: {} removed", m.name()),
                Err(ClientError::Refused { code: 91, .. }) => {
                    bail!("user {name} has no {} credential at {broker}", m.name())
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("deleting user {name} at {broker}"));
                }
            }
        }
        UserCommand::List => {
            let users = client
                .describe_scram_credentials(None)
                .with_context(|| format!("listing users at {broker}"))?;
            for u in users {
                if let Some((code, message)) = &u.error {
                    eprintln!(
                        "{}: {} ({message})",
                        u.user,
                        sluice_client::error_name(*code)
                    );
                }
                for (m, iterations) in &u.credentials {
                    let name = m.map_or("(unknown mechanism)", |m| m.name());
                    println!("{}\t{name}\titerations={iterations}", u.user);
                }
            }
        }
    }
    Ok(())
}

/// Users written to and read from a data directory's store.
fn in_data_dir(data_dir: &std::path::Path, command: UserCommand) -> Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    if let Some(mark) = sluice_broker::security::shared::in_cluster_mark(data_dir) {
        // The broker reads these files no more: a change here would be lost
        // silently, and a listing would show stale users.
        bail!(
            "{} belongs to a cluster broker, whose users are the cluster's, not this \
             directory's: use -b HOST:PORT instead of --data-dir.\n{}",
            data_dir.display(),
            mark.trim_end()
        );
    }
    let store = CredentialStore::open(data_dir).context("reading the credential store")?;
    match command {
        UserCommand::Add {
            name,
            mechanism: m,
            iterations,
            password_stdin: _,
        } => {
            let m = mechanism(&m)?;
            check_iterations(iterations)?;
            let password = read_password()?;
            let credential = Credential::new(m, password.as_bytes(), iterations)?;
            store
                .upsert(&name, m, credential)
                .with_context(|| format!("storing user {name}"))?;
            println!("user {name}: {} with {iterations} iterations", m.name());
        }
        UserCommand::Delete { name, mechanism: m } => {
            let m = mechanism(&m)?;
            if !store.delete(&name, m)? {
                bail!("user {name} has no {} credential", m.name());
            }
            println!("user {name}: {} removed", m.name());
        }
        UserCommand::List => {
            for (user, m, iterations) in store.list() {
                println!("{user}\t{}\titerations={iterations}", m.name());
            }
        }
    }
    Ok(())
}
