//! The security flags every command that connects with `-b` shares: a
//! client properties file (`--command-config`, as Kafka's tools take it,
//! with librdkafka's and Kafka's property names) and flags that override
//! single settings. No flag: PLAINTEXT, as before.
//!
//! The SASL password is never a flag (it would show in `ps` and in shell
//! history): it comes from the file (`sasl.password`) or from an
//! environment variable named by `--sasl-password-env`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use sluice_client::{Client, ClientSecurity};

#[derive(Args, Debug, Clone, Default)]
pub struct SecurityArgs {
    /// Client properties (key=value lines, # comments): security.protocol,
    /// ssl.ca.location, ssl.certificate.location, ssl.key.location,
    /// ssl.endpoint.identification.algorithm, sasl.mechanism,
    /// sasl.username, sasl.password (or Kafka's sasl.jaas.config).
    #[arg(
        long,
        env = "SLUICE_COMMAND_CONFIG",
        value_name = "FILE",
        global = true
    )]
    pub command_config: Option<PathBuf>,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (security.protocol).
    #[arg(long, value_name = "PROTOCOL", global = true)]
    pub security_protocol: Option<String>,
    /// PEM CA certificates the broker's certificate must chain to
    /// (ssl.ca.location).
    #[arg(long, value_name = "FILE", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for brokers that ask for one
    /// (ssl.certificate.location).
    #[arg(long, value_name = "FILE", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (ssl.key.location).
    #[arg(long, value_name = "FILE", global = true)]
    pub tls_key: Option<PathBuf>,
    /// The name the broker's certificate must hold (default: the host of
    /// the broker address).
    #[arg(long, value_name = "NAME", global = true)]
    pub tls_server_name: Option<String>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (sasl.mechanism).
    #[arg(long, value_name = "MECHANISM", global = true)]
    pub sasl_mechanism: Option<String>,
    /// The SASL user (sasl.username).
    #[arg(long, value_name = "USER", global = true)]
    pub sasl_username: Option<String>,
    /// The environment variable that holds the SASL password
    /// (sasl.password); the password itself is never a flag.
    #[arg(long, value_name = "VAR", global = true)]
    pub sasl_password_env: Option<String>,
}

impl SecurityArgs {
    /// Whether any security flag is given (the file may come from the
    /// environment, so it does not count).
    pub fn given(&self) -> bool {
        self.security_protocol.is_some()
            || self.tls_ca.is_some()
            || self.tls_cert.is_some()
            || self.tls_key.is_some()
            || self.tls_server_name.is_some()
            || self.sasl_mechanism.is_some()
            || self.sasl_username.is_some()
            || self.sasl_password_env.is_some()
    }

    /// The settings: the file's, then the flags over them.
    pub fn resolve(&self) -> Result<ClientSecurity> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(file) = &self.command_config {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading --command-config {}", file.display()))?;
            pairs = sluice_client::security::parse_properties(&text)
                .with_context(|| format!("--command-config {}", file.display()))?;
        }
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        let flags = [
            ("security.protocol", self.security_protocol.clone()),
            ("ssl.ca.location", self.tls_ca.as_ref().map(path)),
            ("ssl.certificate.location", self.tls_cert.as_ref().map(path)),
            ("ssl.key.location", self.tls_key.as_ref().map(path)),
            ("sasl.mechanism", self.sasl_mechanism.clone()),
            ("sasl.username", self.sasl_username.clone()),
        ];
        for (key, value) in flags {
            if let Some(v) = value {
                pairs.push((key.to_string(), v));
            }
        }
        if let Some(var) = &self.sasl_password_env {
            let Some(password) = std::env::var_os(var) else {
                bail!("--sasl-password-env {var}: that environment variable is not set");
            };
            let Some(password) = password.to_str() else {
                bail!("--sasl-password-env {var}: the password is not UTF-8");
            };
            pairs.push(("sasl.password".into(), password.to_string()));
        }
        if pairs.is_empty() && self.tls_server_name.is_none() {
            return Ok(ClientSecurity::plaintext());
        }
        let (mut security, ignored) = ClientSecurity::from_properties(pairs)?;
        if !ignored.is_empty() {
            eprintln!(
                "warning: ignoring {} (not a setting sluice's client uses)",
                ignored.join(", ")
            );
        }
        if let Some(name) = &self.tls_server_name {
            if !security.protocol.tls() {
                bail!(
                    "--tls-server-name given but the security protocol is {}",
                    security.protocol
                );
            }
            security.server_name = Some(name.clone());
        }
        Ok(security)
    }
}

/// A connection to `addr` as `security` says, or why not.
pub fn connect(addr: &str, security: &ClientSecurity) -> Result<Client> {
    Client::connect_secure(addr, security).with_context(|| {
        if security.protocol == sluice_client::SecurityProtocol::Plaintext {
            format!("connecting to {addr}")
        } else {
            format!("connecting to {addr} ({})", security.protocol)
        }
    })
}
