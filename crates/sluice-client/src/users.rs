//! SCRAM users over the protocol (KIP-554): AlterUserScramCredentials and
//! DescribeUserScramCredentials v0. The password never leaves the client:
//! it is salted (a fresh 32-byte salt) and hashed (PBKDF2) here, and the
//! broker derives its StoredKey and ServerKey from that.

use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::Client;
use crate::error::ClientError;
use crate::scram::{MAX_ITERATIONS, MIN_ITERATIONS, Mechanism, random_salt};

/// A user as DescribeUserScramCredentials describes it: its mechanisms and
/// iteration counts (never a salt or a key), or why the broker has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramUser {
    pub user: String,
    /// (mechanism, iterations); a mechanism this client does not know is
    /// None.
    pub credentials: Vec<(Option<Mechanism>, i32)>,
    /// The broker's per-user error: (code, message), e.g. RESOURCE_NOT_FOUND
    /// for a named user without credentials.
    pub error: Option<(i16, String)>,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// The one user's result of an AlterUserScramCredentials.
fn only_result(resp: AlterUserScramCredentialsResponse, user: &str) -> Result<(), ClientError> {
    let r = resp
        .results
        .into_iter()
        .find(|r| r.user.as_str() == user)
        .ok_or_else(|| {
            ClientError::Protocol(format!(
                "AlterUserScramCredentials answered nothing for {user:?}"
            ))
        })?;
    match r.error_code {
        0 => Ok(()),
        code => Err(ClientError::Refused {
            code,
            message: r.error_message.map(|m| m.to_string()).unwrap_or_default(),
        }),
    }
}

impl Client {
    /// Adds `user`'s credential for `mechanism`, or replaces it: the salted
    /// password is computed here (PBKDF2 with `iterations`, Kafka's
    /// 4096..=16384) and only it is sent.
    pub fn upsert_scram_credential(
        &mut self,
        user: &str,
        mechanism: Mechanism,
        password: &[u8],
        iterations: u32,
    ) -> Result<(), ClientError> {
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ClientError::config(format!(
                "iterations must be {MIN_ITERATIONS} to {MAX_ITERATIONS}, as Kafka's"
            )));
        }
        let salt = random_salt().map_err(|e| ClientError::config(e.to_string()))?;
        let mut u = ScramCredentialUpsertion::default();
        u.name = s(user);
        u.mechanism = mechanism.kafka_id();
        u.iterations = iterations as i32;
        u.salt = Bytes::copy_from_slice(&salt);
        u.salted_password = Bytes::from(mechanism.salted_password(password, &salt, iterations));
        let mut r = AlterUserScramCredentialsRequest::default();
        r.upsertions = vec![u];
        let resp = self.call(0, &r)?;
        only_result(resp, user)
    }

    /// Removes `user`'s credential for `mechanism` (RESOURCE_NOT_FOUND if
    /// it has none).
    pub fn delete_scram_credential(
        &mut self,
        user: &str,
        mechanism: Mechanism,
    ) -> Result<(), ClientError> {
        let mut d = ScramCredentialDeletion::default();
        d.name = s(user);
        d.mechanism = mechanism.kafka_id();
        let mut r = AlterUserScramCredentialsRequest::default();
        r.deletions = vec![d];
        let resp = self.call(0, &r)?;
        only_result(resp, user)
    }

    /// Every user with a SCRAM credential (`users` None) or the named ones.
    pub fn describe_scram_credentials(
        &mut self,
        users: Option<&[String]>,
    ) -> Result<Vec<ScramUser>, ClientError> {
        let mut r = DescribeUserScramCredentialsRequest::default();
        r.users = users.map(|names| {
            names
                .iter()
                .map(|n| {
                    let mut u = UserName::default();
                    u.name = s(n);
                    u
                })
                .collect()
        });
        let resp = self.call(0, &r)?;
        if resp.error_code != 0 {
            return Err(ClientError::Refused {
                code: resp.error_code,
                message: resp
                    .error_message
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            });
        }
        let mut out: Vec<ScramUser> = resp
            .results
            .into_iter()
            .map(|r| ScramUser {
                user: r.user.to_string(),
                credentials: r
                    .credential_infos
                    .iter()
                    .map(|c| (Mechanism::from_kafka_id(c.mechanism), c.iterations))
                    .collect(),
                error: (r.error_code != 0).then(|| {
                    (
                        r.error_code,
                        r.error_message.map(|m| m.to_string()).unwrap_or_default(),
                    )
                }),
            })
            .collect();
        out.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(out)
    }
}
