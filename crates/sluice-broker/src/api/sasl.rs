//! SaslHandshake (v0–1) and SaslAuthenticate (v0–2): a connection's SASL
//! authentication, and KIP-368's re-authentication on the open connection.
//!
//! After a v1 handshake tokens come in SaslAuthenticate requests; after a
//! v0 handshake they come as bare size-prefixed frames ([`raw_token`]), as
//! Kafka before 1.0 sent them. A failed authentication is answered with
//! SASL_AUTHENTICATION_FAILED and the connection closed; the log names the
//! address, user and reason, the counter counts it, and the address's next
//! attempt waits (`FailureBackoff`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError as E;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};

use super::session::{Auth, Session};
use super::str_bytes;
use crate::security::Principal;
use crate::security::sasl::{Outcome, SaslError, SaslMechanism, SaslServer};
use crate::state::BrokerState;

/// What SaslAuthenticate comes to: an answer, and whether the connection
/// closes after it.
pub(super) struct Authenticated {
    pub response: SaslAuthenticateResponse,
    pub close: Option<String>,
}

fn enabled(state: &BrokerState) -> Vec<SaslMechanism> {
    state
        .config
        .security
        .sasl_mechanisms
        .iter()
        .filter_map(|m| SaslMechanism::from_name(m))
        .collect()
}

pub(super) fn handshake(
    state: &BrokerState,
    session: &mut Session,
    r: SaslHandshakeRequest,
    version: i16,
) -> SaslHandshakeResponse {
    let mechanisms = enabled(state);
    let mut out = SaslHandshakeResponse::default();
    out.mechanisms = mechanisms.iter().map(|m| str_bytes(m.name())).collect();
    if !session.listener.protocol.sasl() {
        out.error_code = E::IllegalSaslState.code();
        return out;
    }
    let reauth = matches!(session.auth, Auth::Open { .. });
    if reauth && version == 0 {
        // Re-authentication exists only with SaslAuthenticate (v1).
        out.error_code = E::IllegalSaslState.code();
        return out;
    }
    match mechanisms
        .into_iter()
        .find(|m| m.name() == r.mechanism.as_str())
    {
        Some(m) => {
            session.auth = Auth::Exchange {
                server: Box::new(SaslServer::new(m)),
                raw: version == 0,
                reauth,
                started: false,
            };
        }
        None => out.error_code = E::UnsupportedSaslMechanism.code(),
    }
    out
}

pub(super) async fn authenticate(
    state: &BrokerState,
    session: &mut Session,
    r: SaslAuthenticateRequest,
) -> Authenticated {
    let mut out = SaslAuthenticateResponse::default();
    match step(state, session, &r.auth_bytes).await {
        Ok(Step::More(challenge)) => {
            out.auth_bytes = challenge;
            Authenticated {
                response: out,
                close: None,
            }
        }
        Ok(Step::Done(last, lifetime)) => {
            out.auth_bytes = last;
            out.session_lifetime_ms = lifetime.map_or(0, |d| d.as_millis() as i64);
            Authenticated {
                response: out,
                close: None,
            }
        }
        Err(failure) => {
            out.error_code = E::SaslAuthenticationFailed.code();
            out.error_message = Some(str_bytes(&failure.client_message));
            Authenticated {
                response: out,
                close: Some(failure.reason),
            }
        }
    }
}

/// A bare token after a v0 handshake: the size-prefixed answer, or why the
/// connection closes (Kafka sends nothing after a failed v0 exchange).
pub async fn raw_token(
    state: &BrokerState,
    session: &mut Session,
    token: &[u8],
) -> Result<Bytes, String> {
    let reply = match step(state, session, token).await {
        Ok(Step::More(b)) | Ok(Step::Done(b, _)) => b,
        Err(failure) => return Err(failure.reason),
    };
    let mut out = BytesMut::with_capacity(4 + reply.len());
    out.put_u32(reply.len() as u32);
    out.extend_from_slice(&reply);
    Ok(out.freeze())
}

enum Step {
    More(Bytes),
    Done(Bytes, Option<Duration>),
}

struct Failure {
    client_message: String,
    reason: String,
}

async fn step(state: &BrokerState, session: &mut Session, token: &[u8]) -> Result<Step, Failure> {
    let ip = session.peer.ip();
    let Auth::Exchange {
        server,
        reauth,
        started,
        ..
    } = &mut session.auth
    else {
        return Err(Failure {
            client_message: "SaslAuthenticate without a SaslHandshake".into(),
            reason: "SaslAuthenticate without a SaslHandshake".into(),
        });
    };
    let mechanism = server.mechanism();
    if !*started {
        *started = true;
        // An address that failed lately waits its turn before each attempt.
        let wait = state.auth_failures.wait_before_attempt(ip, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
    // PBKDF2 for PLAIN is thousands of hashes: off the async workers.
    let result = if mechanism == SaslMechanism::Plain {
        let mut owned = std::mem::replace(server, Box::new(SaslServer::new(mechanism)));
        let token = token.to_vec();
        let store = state.credentials.clone();
        let (back, result) = tokio::task::spawn_blocking(move || {
            let r = owned.step(&token, &store);
            (owned, r)
        })
        .await
        .map_err(|e| Failure {
            client_message: "authentication failed".into(),
            reason: format!("authentication task failed: {e}"),
        })?;
        *server = back;
        result
    } else {
        server.step(token, &state.credentials)
    };
    let reauth = *reauth;
    let stats = &state.auth_stats;
    match result {
        Ok(Outcome::Challenge(c)) => Ok(Step::More(Bytes::from(c))),
        Ok(Outcome::Done { user, last }) => {
            let principal = Principal::user(&user);
            if reauth && principal != session.principal {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    peer = %session.peer,
                    was = %session.principal,
                    now = %principal,
                    "re-authentication refused: a session cannot change its principal"
                );
                return Err(Failure {
                    client_message: "Cannot change principals during re-authentication".into(),
                    reason: format!(
                        "re-authentication as {principal} on a session of {}",
                        session.principal
                    ),
                });
            }
            state.auth_failures.succeeded(ip);
            let lifetime = state.config.security.max_reauth;
            session.principal = principal;
            session.auth = Auth::Open {
                expires: lifetime.map(|d| Instant::now() + d),
            };
            if reauth {
                stats.reauthenticated.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %session.peer, principal = %session.principal, "re-authenticated");
            } else {
                stats.succeeded.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    peer = %session.peer,
                    principal = %session.principal,
                    mechanism = mechanism.name(),
                    "authenticated"
                );
            }
            Ok(Step::Done(Bytes::from(last), lifetime))
        }
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            state.auth_failures.failed(ip, Instant::now());
            tracing::warn!(
                peer = %session.peer,
                listener = %session.listener.name,
                mechanism = mechanism.name(),
                "authentication failed: {e}"
            );
            let client_message = match e {
                SaslError::BadPassword(_) => format!(
                    "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
                    mechanism.name()
                ),
                _ => format!("Authentication failed: {e}"),
            };
            Err(Failure {
                client_message,
                reason: format!("authentication failed: {e}"),
            })
        }
    }
}
