//! AlterUserScramCredentials (v0) and DescribeUserScramCredentials (v0):
//! SCRAM users managed over the protocol (KIP-554), against the broker's
//! credential store (`security::credentials`: the data directory's
//! `scram-credentials`, which `sluice user --data-dir` writes offline; in a
//! cluster, etcd, so a user changed through one broker holds on all).
//!
//! The password never reaches the broker: an upsertion carries the salt,
//! the iteration count and the salted password (PBKDF2, computed by the
//! client), from which the broker derives what it stores — StoredKey =
//! H(HMAC(salted, "Client Key")), ServerKey = HMAC(salted, "Server Key").
//! Describe answers mechanisms and iteration counts only, never a salt or a
//! key.
//!
//! Errors and messages are Kafka's (`ScramControlManager.alterCredentials`,
//! `ScramImage.describe`): per user, a user named twice in one request is
//! DUPLICATE_RESOURCE, an unknown mechanism UNSUPPORTED_SASL_MECHANISM, an
//! empty name or an iteration count outside 4096..=16384
//! UNACCEPTABLE_CREDENTIAL, a deletion of a credential that is not there
//! (or a description of a user without one) RESOURCE_NOT_FOUND.

use std::collections::HashMap;

use kafka_protocol::ResponseError as E;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::{Blocking, str_bytes};
use crate::security::credentials::valid_user;
use crate::security::scram::{Credential, MAX_ITERATIONS, MIN_ITERATIONS, Mechanism};
use crate::state::BrokerState;

/// A user's refusal: (error code, message).
type Refusal = (i16, String);

/// What a request does to one user.
enum Change {
    Delete(Mechanism),
    Upsert(Mechanism, Credential),
}

fn mechanism_of(id: i8) -> Result<Mechanism, Refusal> {
    Mechanism::from_kafka_id(id).ok_or_else(|| {
        (
            E::UnsupportedSaslMechanism.code(),
            "Unknown SCRAM mechanism".to_string(),
        )
    })
}

fn check_name(name: &str) -> Result<(), Refusal> {
    if name.is_empty() {
        return Err((
            E::UnacceptableCredential.code(),
            "Username must not be empty".into(),
        ));
    }
    // Sluice's own: the store's file holds one user a line.
    if !valid_user(name) {
        return Err((
            E::UnacceptableCredential.code(),
            "A user name is at most 255 bytes without control characters".into(),
        ));
    }
    Ok(())
}

/// AlterUserScramCredentials: each user's deletions and upsertions, each
/// user at most once per request. The store is rewritten (and synced) per
/// change, so this runs on the blocking pool.
pub(super) fn alter_user_scram_credentials(
    state: &BrokerState,
    r: AlterUserScramCredentialsRequest,
    _blocking: &Blocking,
) -> AlterUserScramCredentialsResponse {
    // authz: Alter on Cluster (Kafka's ControllerApis refuses every user
    // with CLUSTER_AUTHORIZATION_FAILED otherwise).
    let mut order: Vec<String> = Vec::new();
    let mut changes: HashMap<String, Change> = HashMap::new();
    let mut refused: HashMap<String, Refusal> = HashMap::new();
    let duplicate = || {
        (
            E::DuplicateResource.code(),
            "A user credential cannot be altered twice in the same request".to_string(),
        )
    };
    for d in r.deletions {
        let name = d.name.to_string();
        if refused.contains_key(&name) {
            continue;
        }
        if !order.contains(&name) {
            order.push(name.clone());
        }
        if changes.remove(&name).is_some() {
            refused.insert(name, duplicate());
            continue;
        }
        let checked = check_name(&name).and_then(|()| mechanism_of(d.mechanism));
        let checked = checked.and_then(|m| match state.credentials.get(&name, m) {
            Some(_) => Ok(m),
            None => Err((
                E::ResourceNotFound.code(),
                "Attempt to delete a user credential that does not exist".into(),
            )),
        });
        match checked {
            Ok(m) => {
                changes.insert(name, Change::Delete(m));
            }
            Err(refusal) => {
                refused.insert(name, refusal);
            }
        }
    }
    for u in r.upsertions {
        let name = u.name.to_string();
        if refused.contains_key(&name) {
            continue;
        }
        if !order.contains(&name) {
            order.push(name.clone());
        }
        if changes.remove(&name).is_some() {
            refused.insert(name, duplicate());
            continue;
        }
        let checked = check_name(&name).and_then(|()| mechanism_of(u.mechanism));
        let checked = checked.and_then(|m| {
            let unacceptable = |why: &str| Err((E::UnacceptableCredential.code(), why.to_string()));
            if u.iterations < MIN_ITERATIONS as i32 {
                return unacceptable("Too few iterations");
            }
            if u.iterations > MAX_ITERATIONS as i32 {
                return unacceptable("Too many iterations");
            }
            // Sluice's own checks: a salted password is the mechanism's
            // hash long (PBKDF2's output), and a salt is not empty.
            if u.salt.is_empty() {
                return unacceptable("The salt must not be empty");
            }
            if u.salted_password.len() != m.hash_len() {
                return unacceptable(&format!(
                    "A {} salted password is {} bytes, not {}",
                    m.name(),
                    m.hash_len(),
                    u.salted_password.len()
                ));
            }
            Ok(Change::Upsert(
                m,
                Credential::from_salted_password(
                    m,
                    &u.salt,
                    &u.salted_password,
                    u.iterations as u32,
                ),
            ))
        });
        match checked {
            Ok(change) => {
                changes.insert(name, change);
            }
            Err(refusal) => {
                refused.insert(name, refusal);
            }
        }
    }
    let mut out = AlterUserScramCredentialsResponse::default();
    for name in order {
        let (code, message) = match (refused.remove(&name), changes.remove(&name)) {
            (Some((code, message)), _) => (code, Some(message)),
            (None, Some(change)) => apply(state, &name, change),
            // Every user named is refused or changed.
            (None, None) => continue,
        };
        let mut result = AlterUserScramCredentialsResult::default();
        result.user = str_bytes(&name);
        result.error_code = code;
        result.error_message = message.map(|m| str_bytes(&m));
        out.results.push(result);
    }
    out
}

/// Writes one user's change to the store.
fn apply(state: &BrokerState, name: &str, change: Change) -> (i16, Option<String>) {
    let store = &state.credentials;
    let (m, done) = match change {
        Change::Delete(m) => (
            m,
            store.delete(name, m).map(|existed| {
                existed.then_some(()).ok_or((
                    E::ResourceNotFound.code(),
                    "Attempt to delete a user credential that does not exist".to_string(),
                ))
            }),
        ),
        Change::Upsert(m, credential) => (m, store.upsert(name, m, credential).map(Ok)),
    };
    match done {
        Ok(Ok(())) => {
            tracing::info!(
                user = name,
                mechanism = m.name(),
                "SCRAM credential altered"
            );
            (super::errors::NONE, None)
        }
        Ok(Err((code, message))) => (code, Some(message)),
        Err(e) => {
            tracing::error!(
                user = name,
                mechanism = m.name(),
                "storing a SCRAM credential: {e}"
            );
            (
                E::UnknownServerError.code(),
                Some(format!("The credential store could not be written: {e}")),
            )
        }
    }
}

/// DescribeUserScramCredentials: each user's mechanisms and iteration
/// counts (null or empty `users`: every user). Reads memory only.
pub(super) fn describe_user_scram_credentials(
    state: &BrokerState,
    r: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    // authz: Describe on Cluster (Kafka answers CLUSTER_AUTHORIZATION_FAILED
    // at the top level otherwise).
    let mut out = DescribeUserScramCredentialsResponse::default();
    out.error_message = None;
    let stored = state.credentials.list();
    // (user, named more than once).
    let mut users: Vec<(String, bool)> = Vec::new();
    match r.users.filter(|u| !u.is_empty()) {
        None => {
            for (user, _, _) in &stored {
                if users.last().is_none_or(|(last, _)| last != user) {
                    users.push((user.clone(), false));
                }
            }
        }
        Some(named) => {
            for u in named {
                let name = u.name.to_string();
                match users.iter_mut().find(|(n, _)| *n == name) {
                    Some(seen) => seen.1 = true,
                    None => users.push((name, false)),
                }
            }
        }
    }
    for (user, twice) in users {
        let mut result = DescribeUserScramCredentialsResult::default();
        result.user = str_bytes(&user);
        result.error_message = None;
        if twice {
            result.error_code = E::DuplicateResource.code();
            result.error_message = Some(str_bytes(&format!(
                "Cannot describe SCRAM credentials for the same user twice in a single request: {user}"
            )));
        } else {
            result.credential_infos = stored
                .iter()
                .filter(|(u, _, _)| *u == user)
                .map(|(_, m, iterations)| {
                    let mut info = CredentialInfo::default();
                    info.mechanism = m.kafka_id();
                    info.iterations = *iterations as i32;
                    info
                })
                .collect();
            if result.credential_infos.is_empty() {
                result.error_code = E::ResourceNotFound.code();
                result.error_message = Some(str_bytes(&format!(
                    "Attempt to describe a user credential that does not exist: {user}"
                )));
            }
        }
        out.results.push(result);
    }
    out
}
