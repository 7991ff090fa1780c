//! A client connection's security: TLS (rustls, ring) and SASL (PLAIN,
//! SCRAM-SHA-256, SCRAM-SHA-512), configured the way Kafka's clients are —
//! librdkafka's property names, in a `key=value` file like the
//! `--command-config` of Kafka's tools:
//!
//! ```text
//! security.protocol=SASL_SSL
//! ssl.ca.location=/etc/sluice/ca.pem
//! sasl.mechanism=SCRAM-SHA-512
//! sasl.username=alice
//! sasl.password=alice-secret
//! ```
//!
//! [`Client::connect_secure`](crate::Client::connect_secure) opens the TCP
//! connection, the TLS session over it (SSL, SASL_SSL) and authenticates
//! (SASL_PLAINTEXT, SASL_SSL: SaslHandshake v1, then SaslAuthenticate v2
//! rounds, SCRAM including the check of the broker's signature). When the
//! broker gives the session a lifetime, the client does it again on the
//! same connection before the session ends (KIP-368).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
};

use crate::error::SASL_AUTHENTICATION_FAILED;
use crate::scram::{self, ScramClient};
use crate::{Client, ClientError};

/// Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Case-insensitive, as librdkafka and Kafka take it.
    pub fn from_name(name: &str) -> Option<SecurityProtocol> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// Whether the connection is wrapped in TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether the client authenticates with SASL.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A SASL mechanism the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(scram::Mechanism),
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }

    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (case-insensitive).
    pub fn from_name(name: &str) -> Option<SaslMechanism> {
        let upper = name.to_ascii_uppercase();
        match upper.as_str() {
            "PLAIN" => Some(SaslMechanism::Plain),
            other => scram::Mechanism::from_name(other).map(SaslMechanism::Scram),
        }
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who the client authenticates as, and how.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslConfig {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

/// Never prints the password.
impl fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslConfig")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to secure a connection (the default: PLAINTEXT, nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSecurity {
    pub protocol: SecurityProtocol,
    /// PEM CA certificates the broker's certificate must chain to
    /// (`ssl.ca.location`); None: the system's bundle, where one is found.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain and its private key, for brokers that
    /// ask for one (`ssl.certificate.location`, `ssl.key.location`).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name the broker's certificate must hold; None: the host part of
    /// the address connected to (an IP address is checked against the
    /// certificate's IP SANs).
    pub server_name: Option<String>,
    /// Whether the certificate must name the host
    /// (`ssl.endpoint.identification.algorithm`: `https`, the default, or
    /// `none`). The chain to the CA is checked either way.
    pub verify_hostname: bool,
    pub sasl: Option<SaslConfig>,
}

impl Default for ClientSecurity {
    fn default() -> ClientSecurity {
        ClientSecurity::plaintext()
    }
}

/// `key=value` lines: `#` and `!` start comments, blank lines are skipped,
/// and key and value are trimmed (no line continuations). In order, with
/// the line each came from.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, ClientError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(ClientError::config(format!(
                "line {}: not key=value: {:?}",
                n + 1,
                // A line without `=` may be a stray password: show its start only.
                line.chars().take(24).collect::<String>()
            )));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(ClientError::config(format!("line {}: no key", n + 1)));
        }
        out.push((key.to_string(), value.trim().to_string()));
    }
    Ok(out)
}

/// The `username="…"` and `password="…"` options of a JAAS line
/// (`sasl.jaas.config`, as Kafka's Java clients are configured).
fn jaas_options(jaas: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = jaas;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq]
            .rsplit(|c: char| c.is_whitespace())
            .next()
            .unwrap_or("")
            .to_string();
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        value.push(next);
                    }
                }
                '"' => {
                    end = Some(eq + 2 + i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((name, value));
        match end {
            Some(e) => rest = &rest[e..],
            None => break,
        }
    }
    out
}

impl ClientSecurity {
    pub fn plaintext() -> ClientSecurity {
        ClientSecurity {
            protocol: SecurityProtocol::Plaintext,
            ca: None,
            cert: None,
            key: None,
            server_name: None,
            verify_hostname: true,
            sasl: None,
        }
    }

    /// From librdkafka-style properties, later ones overriding earlier
    /// ones: `security.protocol`, `ssl.ca.location`,
    /// `ssl.certificate.location`, `ssl.key.location`,
    /// `ssl.endpoint.identification.algorithm`, `sasl.mechanism` (or
    /// librdkafka's `sasl.mechanisms`), `sasl.username`, `sasl.password`,
    /// and Kafka's `sasl.jaas.config` for the user name and password.
    /// Also returns the keys it ignored (other client settings, or typos:
    /// worth a warning). Settings that cannot be honoured (Java key
    /// stores, encrypted keys, other mechanisms) are errors, and so is
    /// a configuration that contradicts itself ([`validate`](Self::validate)).
    pub fn from_properties<K, V>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(ClientSecurity, Vec<String>), ClientError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut s = ClientSecurity::plaintext();
        let mut ignored = Vec::new();
        let (mut mechanism, mut username, mut password) = (None, None, None);
        let (mut jaas_user, mut jaas_password) = (None, None);
        let mut tls_settings = Vec::new();
        let path = |v: &str| (!v.is_empty()).then(|| PathBuf::from(v));
        for (key, value) in pairs {
            let (key, value) = (key.as_ref(), value.as_ref());
            match key {
                "security.protocol" => {
                    s.protocol = SecurityProtocol::from_name(value).ok_or_else(|| {
                        ClientError::config(format!(
                            "security.protocol {value:?}: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
                        ))
                    })?;
                }
                "ssl.ca.location" => {
                    s.ca = path(value);
                    tls_settings.push(key.to_string());
                }
                "ssl.certificate.location" => {
                    s.cert = path(value);
                    tls_settings.push(key.to_string());
                }
                "ssl.key.location" => {
                    s.key = path(value);
                    tls_settings.push(key.to_string());
                }
                "ssl.endpoint.identification.algorithm" => {
                    s.verify_hostname = match value.to_ascii_lowercase().as_str() {
                        "https" => true,
                        "none" | "" => false,
                        other => {
                            return Err(ClientError::config(format!(
                                "ssl.endpoint.identification.algorithm {other:?}: https or none"
                            )));
                        }
                    };
                }
                "sasl.mechanism" | "sasl.mechanisms" => {
                    mechanism = Some(SaslMechanism::from_name(value).ok_or_else(|| {
                        ClientError::config(format!(
                            "{key} {value:?}: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                        ))
                    })?);
                }
                "sasl.username" => username = Some(value.to_string()),
                "sasl.password" => password = Some(value.to_string()),
                "sasl.jaas.config" => {
                    for (name, v) in jaas_options(value) {
                        match name.as_str() {
                            "username" => jaas_user = Some(v),
                            "password" => jaas_password = Some(v),
                            _ => {}
                        }
                    }
                }
                "ssl.key.password" => {
                    return Err(ClientError::config(
                        "ssl.key.password: encrypted private keys are not supported; \
                         give an unencrypted PEM key (ssl.key.location)"
                            .into(),
                    ));
                }
                k if k.starts_with("ssl.truststore.") || k.starts_with("ssl.keystore.") => {
                    return Err(ClientError::config(format!(
                        "{k}: Java key stores are not supported; give PEM files \
                         (ssl.ca.location, ssl.certificate.location, ssl.key.location)"
                    )));
                }
                other => ignored.push(other.to_string()),
            }
        }
        let username = username.or(jaas_user);
        let password = password.or(jaas_password);
        if s.protocol.sasl() {
            let missing = |what: &str| {
                ClientError::config(format!(
                    "security.protocol {} needs {what}",
                    s.protocol.name()
                ))
            };
            s.sasl = Some(SaslConfig {
                mechanism: mechanism.ok_or_else(|| {
                    missing("sasl.mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
                })?,
                username: username.ok_or_else(|| missing("sasl.username"))?,
                password: password.ok_or_else(|| missing("sasl.password"))?,
            });
        } else if mechanism.is_some() || username.is_some() || password.is_some() {
            return Err(ClientError::config(format!(
                "SASL settings are given but security.protocol is {}: \
                 use SASL_PLAINTEXT or SASL_SSL",
                s.protocol.name()
            )));
        }
        if !s.protocol.tls() && !tls_settings.is_empty() {
            return Err(ClientError::config(format!(
                "{} given but security.protocol is {}: use SSL or SASL_SSL",
                tls_settings.join(", "),
                s.protocol.name()
            )));
        }
        s.validate()?;
        Ok((s, ignored))
    }

    /// [`from_properties`](Self::from_properties) of a file's
    /// [`parse_properties`].
    pub fn from_file(path: &Path) -> Result<(ClientSecurity, Vec<String>), ClientError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClientError::config(format!("{}: {e}", path.display())))?;
        let pairs = parse_properties(&text)
            .map_err(|e| ClientError::config(format!("{}: {e}", path.display())))?;
        ClientSecurity::from_properties(pairs)
    }

    /// Whether the settings hang together: SASL settings with a SASL
    /// protocol, a client certificate with its key.
    pub fn validate(&self) -> Result<(), ClientError> {
        match (&self.sasl, self.protocol.sasl()) {
            (None, true) => {
                return Err(ClientError::config(format!(
                    "security.protocol {} needs SASL settings (sasl.mechanism, sasl.username, sasl.password)",
                    self.protocol
                )));
            }
            (Some(_), false) => {
                return Err(ClientError::config(format!(
                    "SASL settings are given but security.protocol is {}",
                    self.protocol
                )));
            }
            (Some(sasl), true) if sasl.username.is_empty() => {
                return Err(ClientError::config("sasl.username is empty".into()));
            }
            _ => {}
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(ClientError::config(
                "a client certificate needs its key: give both ssl.certificate.location \
                 and ssl.key.location"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The rustls configuration: roots from the CA file (or the system's
    /// bundle), the client certificate if any, TLS 1.3 and 1.2.
    fn tls_config(&self) -> Result<ClientConfig, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca = match &self.ca {
            Some(ca) => ca.clone(),
            None => system_bundle().ok_or_else(|| {
                ClientError::tls(
                    "no CA to check the broker's certificate against: give ssl.ca.location \
                     (--tls-ca)"
                        .into(),
                )
            })?,
        };
        let mut roots = RootCertStore::empty();
        for cert in read_certs(&ca)? {
            roots
                .add(cert)
                .map_err(|e| ClientError::tls(format!("{}: {e}", ca.display())))?;
        }
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ClientError::tls(e.to_string()))?;
        let builder = if self.verify_hostname {
            builder.with_root_certificates(roots)
        } else {
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ClientError::tls(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyName(inner)))
        };
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let certs = read_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| ClientError::tls(format!("{}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| ClientError::tls(format!("{} and its key: {e}", cert.display())))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(config)
    }

    /// A client TLS session for the broker at `host` (or `server_name`).
    pub(crate) fn tls_connection(&self, host: &str) -> Result<ClientConnection, ClientError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|e| ClientError::tls(format!("server name {name:?}: {e}")))?;
        ClientConnection::new(Arc::new(self.tls_config()?), server_name)
            .map_err(|e| ClientError::tls(e.to_string()))
    }
}

/// The CA bundle of the system, where one is at a well-known place.
fn system_bundle() -> Option<PathBuf> {
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ClientError::tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ClientError::tls(format!(
            "{}: no certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// `ssl.endpoint.identification.algorithm=none`: the chain is checked as
/// always, but a certificate for another name is accepted.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// UNSUPPORTED_SASL_MECHANISM.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;

/// When to re-authenticate a session of `lifetime` that began at `start`:
/// as Kafka's client does, at a random 85–95 % of it (the 85 % leaves room
/// for latency and clock drift, the random 10 % spreads many connections'
/// re-authentications out).
pub(crate) fn reauthentication_due(start: Instant, lifetime: Duration) -> Instant {
    let mut bytes = [0u8; 4];
    // Without randomness, the earliest point of the window.
    let jitter = match getrandom::fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX),
        Err(_) => 0.0,
    };
    start + lifetime.mul_f64(0.85 + 0.10 * jitter)
}

/// SaslHandshake v1, then SaslAuthenticate v2 until the mechanism is done.
/// Returns the session's lifetime, if the broker gave it one.
pub(crate) fn authenticate(
    client: &mut Client,
    sasl: &SaslConfig,
) -> Result<Option<Duration>, ClientError> {
    let mut hs = SaslHandshakeRequest::default();
    hs.mechanism = StrBytes::from_static_str(sasl.mechanism.name());
    let resp = client.call(1, &hs)?;
    if resp.error_code == UNSUPPORTED_SASL_MECHANISM {
        let offered: Vec<&str> = resp.mechanisms.iter().map(|m| m.as_str()).collect();
        return Err(ClientError::Refused {
            code: UNSUPPORTED_SASL_MECHANISM,
            message: format!(
                "the broker does not offer {} (it offers: {})",
                sasl.mechanism,
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(", ")
                }
            ),
        });
    }
    if resp.error_code != 0 {
        return Err(ClientError::Kafka(resp.error_code));
    }
    // The broker's side of SCRAM did not check out: not a refusal by the
    // broker, a broker that does not follow the protocol (or is not the
    // one it claims to be).
    let failed = |message: String| {
        ClientError::Protocol(format!("{} with the broker: {message}", sasl.mechanism))
    };
    let lifetime = match sasl.mechanism {
        SaslMechanism::Plain => {
            let mut token = Vec::with_capacity(2 + sasl.username.len() + sasl.password.len());
            token.push(0);
            token.extend_from_slice(sasl.username.as_bytes());
            token.push(0);
            token.extend_from_slice(sasl.password.as_bytes());
            sasl_round(client, token, sasl)?.1
        }
        SaslMechanism::Scram(m) => {
            let (mut scram, first) =
                ScramClient::start(m, &sasl.username, sasl.password.as_bytes())
                    .map_err(|e| failed(e.to_string()))?;
            let (server_first, _) = sasl_round(client, first.into_bytes(), sasl)?;
            let client_final = scram
                .respond(&server_first)
                .map_err(|e| failed(format!("the broker's SCRAM challenge: {e}")))?;
            let (server_final, lifetime) = sasl_round(client, client_final.into_bytes(), sasl)?;
            scram.verify(&server_final).map_err(|e| {
                failed(format!(
                    "the broker did not prove it knows the credential ({e}): \
                     not the broker it claims to be"
                ))
            })?;
            lifetime
        }
    };
    Ok(lifetime)
}

/// One SaslAuthenticate v2: the broker's answer bytes and the session
/// lifetime it announces (None: 0, no limit), or its refusal.
fn sasl_round(
    client: &mut Client,
    token: Vec<u8>,
    sasl: &SaslConfig,
) -> Result<(Bytes, Option<Duration>), ClientError> {
    let mut r = SaslAuthenticateRequest::default();
    r.auth_bytes = Bytes::from(token);
    let resp = client.call(2, &r)?;
    match resp.error_code {
        0 => {
            let lifetime = u64::try_from(resp.session_lifetime_ms)
                .ok()
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis);
            Ok((resp.auth_bytes, lifetime))
        }
        SASL_AUTHENTICATION_FAILED => Err(ClientError::Refused {
            code: SASL_AUTHENTICATION_FAILED,
            message: format!(
                "{} as {:?}: {}",
                sasl.mechanism,
                sasl.username,
                resp.error_message
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "no reason given".into())
            ),
        }),
        code => Err(ClientError::Refused {
            code,
            message: resp
                .error_message
                .map(|m| m.to_string())
                .unwrap_or_default(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(text: &str) -> Result<(ClientSecurity, Vec<String>), ClientError> {
        ClientSecurity::from_properties(parse_properties(text)?)
    }

    #[test]
    fn a_command_config_file_reads_as_librdkafka_and_kafka_write_it() {
        let (s, ignored) = props(
            "# a comment\n\
             ! another\n\
             \n\
             security.protocol = sasl_ssl\n\
             ssl.ca.location=/etc/ca.pem\n\
             sasl.mechanisms=SCRAM-SHA-256\n\
             sasl.username=alice\n\
             sasl.password= pass=word \n\
             client.id=tool\n",
        )
        .unwrap();
        assert_eq!(s.protocol, SecurityProtocol::SaslSsl);
        assert_eq!(s.ca, Some(PathBuf::from("/etc/ca.pem")));
        assert!(s.verify_hostname);
        let sasl = s.sasl.clone().unwrap();
        assert_eq!(
            sasl.mechanism,
            SaslMechanism::Scram(scram::Mechanism::Sha256)
        );
        assert_eq!(sasl.username, "alice");
        assert_eq!(sasl.password, "pass=word", "split at the first =, trimmed");
        assert_eq!(ignored, vec!["client.id"]);
        assert!(
            !format!("{s:?}").contains("pass=word"),
            "Debug hides the password"
        );

        // Kafka's Java form: sasl.mechanism and a JAAS line.
        let (s, _) = props(
            "security.protocol=SASL_PLAINTEXT\n\
             sasl.mechanism=PLAIN\n\
             sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \
             required username=\"bob\" password=\"b\\\"o b\";\n",
        )
        .unwrap();
        let sasl = s.sasl.unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::Plain);
        assert_eq!(
            (sasl.username.as_str(), sasl.password.as_str()),
            ("bob", "b\"o b")
        );

        // mTLS without hostname checks; later keys win.
        let (s, _) = props(
            "security.protocol=PLAINTEXT\nsecurity.protocol=SSL\n\
             ssl.certificate.location=c.pem\nssl.key.location=k.pem\n\
             ssl.endpoint.identification.algorithm=none\n",
        )
        .unwrap();
        assert_eq!(s.protocol, SecurityProtocol::Ssl);
        assert_eq!(
            (s.cert, s.key),
            (Some("c.pem".into()), Some("k.pem".into()))
        );
        assert!(!s.verify_hostname);
        assert_eq!(props("").unwrap().0, ClientSecurity::plaintext());
    }

    #[test]
    fn contradictions_and_unsupported_settings_are_refused_clearly() {
        for (text, want) in [
            (
                "security.protocol=TLS",
                "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
            ),
            (
                "security.protocol=SASL_SSL\nsasl.username=a\nsasl.password=b",
                "needs sasl.mechanism",
            ),
            (
                "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.password=b",
                "needs sasl.username",
            ),
            (
                "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.username=a",
                "needs sasl.password",
            ),
            (
                "sasl.mechanism=GSSAPI",
                "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
            ),
            ("sasl.username=a", "security.protocol is PLAINTEXT"),
            (
                "security.protocol=SASL_PLAINTEXT\nssl.ca.location=ca.pem\nsasl.mechanism=PLAIN\nsasl.username=a\nsasl.password=b",
                "ssl.ca.location given",
            ),
            (
                "security.protocol=SSL\nssl.certificate.location=c.pem",
                "needs its key",
            ),
            (
                "security.protocol=SSL\nssl.truststore.location=t.jks",
                "Java key stores",
            ),
            (
                "security.protocol=SSL\nssl.key.password=x",
                "encrypted private keys",
            ),
            (
                "ssl.endpoint.identification.algorithm=ldap",
                "https or none",
            ),
            ("security.protocol", "line 1: not key=value"),
            ("=x", "line 1: no key"),
        ] {
            let err = props(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        // A bare line is shown only in part (it might be a password).
        let err = parse_properties("a-very-long-secret-password-typed-alone")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("typed-alone"), "{err}");
    }

    #[test]
    fn a_missing_ca_file_is_a_tls_error_naming_it() {
        let s = ClientSecurity {
            protocol: SecurityProtocol::Ssl,
            ca: Some("/nonexistent/ca.pem".into()),
            ..ClientSecurity::plaintext()
        };
        let err = s.tls_connection("127.0.0.1").unwrap_err();
        assert!(err.tls_failure().is_some(), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
