//! The server side of SASL, independent of how tokens arrive (Kafka's
//! SaslAuthenticate requests, or v0's raw frames): PLAIN (RFC 4616) checked
//! against the SCRAM store, and SCRAM-SHA-256/512. Plus the per-address
//! back-off after failed attempts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use super::credentials::CredentialStore;
use super::scram::{self, AwaitingProof, Mechanism, ScramError};

/// Longest PLAIN token accepted: two names and a password.
pub const MAX_PLAIN_TOKEN: usize = 4096;

/// A mechanism this broker speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(Mechanism),
}

impl SaslMechanism {
    pub fn from_name(name: &str) -> Option<SaslMechanism> {
        match name {
            "PLAIN" => Some(SaslMechanism::Plain),
            other => Mechanism::from_name(other).map(SaslMechanism::Scram),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }
}

/// One exchange in progress.
#[derive(Debug)]
pub struct SaslServer {
    mechanism: SaslMechanism,
    step: Step,
}

#[derive(Debug)]
enum Step {
    Start,
    ScramProof(Box<AwaitingProof>),
    Over,
}

/// What a token leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send this and wait for the client's next token.
    Challenge(Vec<u8>),
    /// Authenticated as `user`; send `last` (empty for PLAIN).
    Done { user: String, last: Vec<u8> },
}

/// Why an exchange failed: for the log. The client hears only that
/// authentication failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SaslError {
    #[error("malformed PLAIN token")]
    MalformedPlain,
    #[error("PLAIN token over {MAX_PLAIN_TOKEN} bytes")]
    PlainTooLarge,
    #[error("an authorization id different from the user is not supported")]
    AuthzId,
    #[error("invalid credentials for user {0:?}")]
    BadPassword(String),
    #[error("{0}")]
    Scram(#[from] ScramError),
    #[error("a token after the exchange ended")]
    Over,
}

impl SaslServer {
    pub fn new(mechanism: SaslMechanism) -> SaslServer {
        SaslServer {
            mechanism,
            step: Step::Start,
        }
    }

    pub fn mechanism(&self) -> SaslMechanism {
        self.mechanism
    }

    /// Takes the client's next token.
    pub fn step(&mut self, token: &[u8], store: &CredentialStore) -> Result<Outcome, SaslError> {
        match (
            std::mem::replace(&mut self.step, Step::Over),
            self.mechanism,
        ) {
            (Step::Start, SaslMechanism::Plain) => {
                let user = check_plain(token, store)?;
                Ok(Outcome::Done {
                    user,
                    last: Vec::new(),
                })
            }
            (Step::Start, SaslMechanism::Scram(m)) => {
                let first = scram::parse_client_first(token)?;
                let credential = store.get(&first.user, m);
                let nonce = scram::random_nonce()?;
                let (reply, awaiting) = scram::server_first(m, first, credential, &nonce);
                self.step = Step::ScramProof(Box::new(awaiting));
                Ok(Outcome::Challenge(reply.into_bytes()))
            }
            (Step::ScramProof(awaiting), _) => {
                let user = awaiting.user().to_string();
                let last = awaiting.finish(token).map_err(|e| match e {
                    ScramError::BadProof => SaslError::BadPassword(user.clone()),
                    other => SaslError::Scram(other),
                })?;
                Ok(Outcome::Done {
                    user,
                    last: last.into_bytes(),
                })
            }
            (Step::Over, _) => Err(SaslError::Over),
        }
    }
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`, checked against the user's
/// SCRAM credential (SHA-512's if it has one, else SHA-256's).
fn check_plain(token: &[u8], store: &CredentialStore) -> Result<String, SaslError> {
    if token.len() > MAX_PLAIN_TOKEN {
        return Err(SaslError::PlainTooLarge);
    }
    let mut parts = token.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::MalformedPlain);
    };
    let user = std::str::from_utf8(user).map_err(|_| SaslError::MalformedPlain)?;
    if user.is_empty() {
        return Err(SaslError::MalformedPlain);
    }
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err(SaslError::AuthzId);
    }
    let matches = [Mechanism::Sha512, Mechanism::Sha256]
        .into_iter()
        .find_map(|m| store.get(user, m).map(|c| c.matches_password(m, password)));
    match matches {
        Some(true) => Ok(user.to_string()),
        // An unknown user costs the same PBKDF2 work as a known one, so the
        // time taken does not tell them apart.
        None => {
            let fake = scram::Credential::derive(Mechanism::Sha512, b"", b"sluice", 4096);
            let _ = fake.matches_password(Mechanism::Sha512, password);
            Err(SaslError::BadPassword(user.to_string()))
        }
        Some(false) => Err(SaslError::BadPassword(user.to_string())),
    }
}

/// Authentication counters for the metrics page.
#[derive(Debug, Default)]
pub struct AuthStats {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub reauthenticated: AtomicU64,
    /// Connections closed for a request the session did not allow (before
    /// authentication, or after the session expired).
    pub refused_unauthenticated: AtomicU64,
}

/// Failed authentications per source address, and when the next attempt
/// from there may be answered: each failure pushes that time out by the
/// base delay doubled per recent failure (capped at 32×), so one address
/// cannot try passwords faster than that, over however many connections.
#[derive(Debug)]
pub struct FailureBackoff {
    base: Duration,
    by_ip: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// The earliest the next attempt is answered.
    next: Instant,
}

impl FailureBackoff {
    pub fn new(base: Duration) -> FailureBackoff {
        FailureBackoff {
            base,
            by_ip: Mutex::new(HashMap::new()),
        }
    }

    /// How long an attempt from `ip` arriving at `now` must wait before it
    /// is answered, reserving its turn.
    pub fn wait_before_attempt(&self, ip: IpAddr, now: Instant) -> Duration {
        let mut map = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        let Some(f) = map.get_mut(&ip) else {
            return Duration::ZERO;
        };
        let turn = f.next.max(now);
        // The attempt after this one waits its turn behind it.
        f.next = turn + self.delay(f.count);
        turn - now
    }

    /// Records a failure from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        // Forget addresses that have been quiet for a while.
        if map.len() > 10_000 {
            let quiet = self.base * 64;
            map.retain(|_, f| f.next + quiet > now);
        }
        let f = map.entry(ip).or_insert(Failures {
            count: 0,
            next: now,
        });
        // Failures long ago do not count against a new one.
        if f.next + self.base * 64 < now {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.next = f.next.max(now) + self.delay(f.count);
    }

    /// A success from `ip` clears its record.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut map = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&ip);
    }

    fn delay(&self, failures: u32) -> Duration {
        self.base * (1u32 << failures.saturating_sub(1).min(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::scram::{Credential, ScramClient};

    fn store_with(
        user: &str,
        password: &str,
        m: Mechanism,
    ) -> (tempfile::TempDir, CredentialStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::open(dir.path()).unwrap();
        let c = Credential::new(m, password.as_bytes(), 4096).unwrap();
        store.upsert(user, m, c).unwrap();
        (dir, store)
    }

    #[test]
    fn plain_accepts_the_stored_password_and_nothing_else() {
        let (_d, store) = store_with("alice", "s3cret", Mechanism::Sha256);
        let mut ok = SaslServer::new(SaslMechanism::Plain);
        assert_eq!(
            ok.step(b"\0alice\0s3cret", &store),
            Ok(Outcome::Done {
                user: "alice".into(),
                last: vec![]
            })
        );
        // The same exchange cannot go on.
        assert_eq!(ok.step(b"\0alice\0s3cret", &store), Err(SaslError::Over));
        let authz = SaslServer::new(SaslMechanism::Plain).step(b"alice\0alice\0s3cret", &store);
        assert!(matches!(authz, Ok(Outcome::Done { .. })));
        for (token, want) in [
            (
                &b"\0alice\0wrong"[..],
                SaslError::BadPassword("alice".into()),
            ),
            (b"\0bob\0s3cret", SaslError::BadPassword("bob".into())),
            (b"bob\0alice\0s3cret", SaslError::AuthzId),
            (b"\0alice", SaslError::MalformedPlain),
            (b"\0alice\0s3cret\0extra", SaslError::MalformedPlain),
            (b"\0\0s3cret", SaslError::MalformedPlain),
            (b"\0\xff\0s3cret", SaslError::MalformedPlain),
        ] {
            let got = SaslServer::new(SaslMechanism::Plain).step(token, &store);
            assert_eq!(got, Err(want), "token {token:?}");
        }
        let huge = vec![b'a'; MAX_PLAIN_TOKEN + 1];
        assert_eq!(
            SaslServer::new(SaslMechanism::Plain).step(&huge, &store),
            Err(SaslError::PlainTooLarge)
        );
    }

    #[test]
    fn scram_exchange_authenticates_with_the_right_password_only() {
        for m in [Mechanism::Sha256, Mechanism::Sha512] {
            let (_d, store) = store_with("bob", "pw", m);
            for (password, good) in [("pw", true), ("nope", false)] {
                let mut server = SaslServer::new(SaslMechanism::Scram(m));
                let (mut client, first) =
                    ScramClient::start(m, "bob", password.as_bytes()).unwrap();
                let Outcome::Challenge(challenge) = server.step(first.as_bytes(), &store).unwrap()
                else {
                    panic!("SCRAM answers the first message with a challenge");
                };
                let proof = client.respond(&challenge).unwrap();
                match server.step(proof.as_bytes(), &store) {
                    Ok(Outcome::Done { user, last }) => {
                        assert!(good, "{m:?}: a wrong password was accepted");
                        assert_eq!(user, "bob");
                        client.verify(&last).unwrap();
                    }
                    Err(e) => {
                        assert!(!good, "{m:?}: the right password was refused: {e}");
                        assert_eq!(e, SaslError::BadPassword("bob".into()));
                    }
                    Ok(other) => panic!("unexpected {other:?}"),
                }
            }
        }
    }

    #[test]
    fn failures_slow_the_next_attempts_from_that_address_only() {
        let b = FailureBackoff::new(Duration::from_millis(100));
        let (a, other): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        assert_eq!(b.wait_before_attempt(a, t0), Duration::ZERO);
        b.failed(a, t0);
        // One failure: the next attempt waits the base delay.
        assert_eq!(b.wait_before_attempt(a, t0), Duration::from_millis(100));
        // A second attempt at once (another connection) queues behind it.
        assert_eq!(b.wait_before_attempt(a, t0), Duration::from_millis(200));
        assert_eq!(b.wait_before_attempt(other, t0), Duration::ZERO);
        // More failures double the delay, up to 32×.
        let later = t0 + Duration::from_secs(1);
        for _ in 0..10 {
            b.failed(a, later);
        }
        let wait = b.wait_before_attempt(a, later);
        assert!(wait >= Duration::from_millis(3200), "{wait:?}");
        b.succeeded(a);
        assert_eq!(b.wait_before_attempt(a, later), Duration::ZERO);
    }
}
