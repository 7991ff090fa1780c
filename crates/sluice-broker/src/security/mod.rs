//! Security (issue 17): who a connection is (SASL, TLS client
//! certificates), what it may do (ACLs) and how fast (quotas). Pure parts:
//! no sockets; `net` and `api` call into them.

pub mod acl;
pub mod credentials;
pub mod quotas;
pub mod sasl;
pub mod shared;
/// The SCRAM math lives in `sluice-client` (the client side needs it too);
/// the broker's paths (`security::scram::…`) keep working through this.
pub use sluice_client::scram;

/// Who sent a request, as Kafka's `KafkaPrincipal` names it: a type
/// (`User`) and a name. Connections that did not authenticate (PLAINTEXT
/// and SSL without a client certificate) are `User:ANONYMOUS`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    pub kind: String,
    pub name: String,
}

impl Principal {
    pub const USER: &'static str = "User";

    pub fn user(name: &str) -> Principal {
        Principal {
            kind: Self::USER.to_string(),
            name: name.to_string(),
        }
    }

    /// Kafka's `User:ANONYMOUS`.
    pub fn anonymous() -> Principal {
        Principal::user("ANONYMOUS")
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

impl std::str::FromStr for Principal {
    type Err = String;

    /// `TYPE:NAME`, as ACLs and `--super-user` write it (`User:alice`).
    /// The name may itself hold colons (a certificate's subject).
    fn from_str(s: &str) -> Result<Principal, String> {
        match s.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => Ok(Principal {
                kind: kind.to_string(),
                name: name.to_string(),
            }),
            _ => Err(format!(
                "{s:?} is not a principal (TYPE:NAME, e.g. User:alice)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_parse_and_print_as_kafka_writes_them() {
        let p: Principal = "User:CN=client,O=Sluice".parse().unwrap();
        assert_eq!(p.kind, "User");
        assert_eq!(p.name, "CN=client,O=Sluice");
        assert_eq!(p.to_string(), "User:CN=client,O=Sluice");
        assert!("alice".parse::<Principal>().is_err());
        assert!(":alice".parse::<Principal>().is_err());
        assert_eq!(Principal::anonymous().to_string(), "User:ANONYMOUS");
    }
}
