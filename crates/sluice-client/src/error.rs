//! Why a client call failed, and Kafka's names for its error codes.

use kafka_protocol::ResponseError;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Also what a TLS failure ([`TlsError`] inside) and unusable security
    /// settings ([`SecurityConfigError`] inside) come as, each shown by its
    /// own message: the variants stay the four that callers match on.
    /// (No `source`: the message already is the I/O error's, and a chain
    /// would print it twice.)
    #[error("{}", describe_io(.0))]
    Io(std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("broker answered with Kafka error {0} ({name})", name = error_name(*.0))]
    Kafka(i16),
    /// A Kafka error code with the broker's message (admin answers carry
    /// one, and so does a failed SASL authentication: code 58,
    /// SASL_AUTHENTICATION_FAILED).
    #[error("broker answered with Kafka error {code} ({name}): {message}", name = error_name(*.code))]
    Refused { code: i16, message: String },
}

/// The TLS session could not be set up or broke: a certificate the CA does
/// not vouch for, a name it does not hold, files that do not read, a client
/// certificate the broker refused. Comes inside [`ClientError::Io`] (kind
/// `InvalidData`); [`ClientError::tls_failure`] finds it.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(pub String);

/// Security settings that do not parse or contradict each other. Comes
/// inside [`ClientError::Io`] (kind `InvalidInput`).
#[derive(Debug, thiserror::Error)]
#[error("client security settings: {0}")]
pub struct SecurityConfigError(pub String);

fn describe_io(e: &std::io::Error) -> String {
    match e.get_ref() {
        Some(inner) if inner.is::<TlsError>() || inner.is::<SecurityConfigError>() => {
            inner.to_string()
        }
        Some(inner) if inner.is::<rustls::Error>() => format!("TLS: {inner}"),
        _ => format!("I/O error talking to the broker: {e}"),
    }
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> ClientError {
        ClientError::Io(e)
    }
}

impl ClientError {
    /// A TLS failure.
    pub fn tls(why: String) -> ClientError {
        ClientError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            TlsError(why),
        ))
    }

    /// Unusable security settings.
    pub fn config(why: String) -> ClientError {
        ClientError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            SecurityConfigError(why),
        ))
    }

    /// Why TLS failed, if that is what this is.
    pub fn tls_failure(&self) -> Option<String> {
        let ClientError::Io(e) = self else {
            return None;
        };
        let inner = e.get_ref()?;
        if let Some(t) = inner.downcast_ref::<TlsError>() {
            return Some(t.0.clone());
        }
        inner.downcast_ref::<rustls::Error>().map(|t| t.to_string())
    }

    /// Whether the broker refused the credentials (SASL_AUTHENTICATION_FAILED).
    pub fn is_authentication_failure(&self) -> bool {
        self.kafka_code() == Some(SASL_AUTHENTICATION_FAILED)
    }

    /// The Kafka error code, when the broker answered with one.
    pub fn kafka_code(&self) -> Option<i16> {
        match self {
            ClientError::Kafka(code) | ClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// SASL_AUTHENTICATION_FAILED.
pub const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// An I/O error, as a [`TlsError`] when it is rustls's (a fatal alert from
/// the broker, a record that does not decrypt).
pub(crate) fn io_error(e: std::io::Error) -> ClientError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => ClientError::tls(tls.to_string()),
        None => ClientError::Io(e),
    }
}

/// Kafka's name for an error code as Kafka spells it (`MESSAGE_TOO_LARGE`,
/// `TOPIC_ALREADY_EXISTS`: the names users meet in Kafka's docs and
/// clients), derived from `kafka_protocol`'s `ResponseError` so no table is
/// kept here; `NONE` for 0 and `error N` for a code it does not know.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(code)) => format!("error {code}"),
        Some(e) => screaming_snake(&e.to_string()),
    }
}

/// `MessageTooLarge` → `MESSAGE_TOO_LARGE`.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    let mut prev_lower = false;
    for c in camel.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_named_as_kafka_names_them() {
        assert_eq!(error_name(10), "MESSAGE_TOO_LARGE");
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(31_000), "error 31000");
        let e = ClientError::Kafka(10).to_string();
        assert!(e.contains("MESSAGE_TOO_LARGE"), "{e}");
    }
}
