//! `sluice user add | delete | list`: SCRAM users. With `--data-dir` the
//! command writes a single-node broker's credential store directly — the
//! way to create the first user before any broker runs (Kafka's
//! `kafka-storage format --add-scram`). Passwords are read from stdin, never
//! from the command line, and only their salted, hashed form is stored.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use sluice_broker::security::credentials::CredentialStore;
use sluice_broker::security::scram::{Credential, MAX_ITERATIONS, MIN_ITERATIONS, Mechanism};

#[derive(Args, Debug)]
pub struct UserArgs {
    /// The broker's data directory (the broker need not run).
    #[arg(
        long,
        env = "SLUICE_DATA_DIR",
        default_value = "./sluice-data",
        global = true
    )]
    pub data_dir: PathBuf,
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

pub fn run(args: UserArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let store = CredentialStore::open(&args.data_dir).context("reading the credential store")?;
    match args.command {
        UserCommand::Add {
            name,
            mechanism: m,
            iterations,
            password_stdin: _,
        } => {
            let m = mechanism(&m)?;
            if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
                bail!("iterations must be {MIN_ITERATIONS} to {MAX_ITERATIONS}, as Kafka's");
            }
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut password)
                .context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                bail!("an empty password");
            }
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
