//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks
//! them inside SaslAuthenticate, both sides: credentials derived and stored
//! as Kafka stores them (salt, StoredKey, ServerKey, iterations — never the
//! password), the server's check of the three-message exchange in constant
//! time ([`parse_client_first`], [`server_first`], [`AwaitingProof`]), and
//! the client's side ([`ScramClient`]). The broker uses it as
//! `sluice_broker::security::scram`.
//!
//! Pure: no sockets, no clock. The caller feeds each message in and sends
//! each answer out.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// Kafka's bounds on the PBKDF2 iteration count
/// (`ScramMechanism.minIterations` / `maxIterations`).
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 16384;

/// The longest client message accepted: a client-first is a user name and a
/// nonce, a client-final a nonce and a proof.
pub const MAX_MESSAGE_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's wire id in (Describe|Alter)UserScramCredentials.
    pub fn kafka_id(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_id(id: i8) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.kafka_id() == id)
    }

    /// The hash's output length: that of a salted password, a StoredKey and
    /// a ServerKey.
    pub fn hash_len(self) -> usize {
        match self {
            Mechanism::Sha256 => 32,
            Mechanism::Sha512 => 64,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Mechanism::Sha512 => {
                let mut m = Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// RFC 5802's Hi(): PBKDF2 with HMAC of the mechanism's hash — what a
    /// client sends in AlterUserScramCredentials (KIP-554), so the password
    /// itself never leaves it.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                let mut out = vec![0u8; self.hash_len()];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
            Mechanism::Sha512 => {
                let mut out = vec![0u8; self.hash_len()];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

/// What is stored for a user and mechanism (Kafka's `ScramCredential`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

impl Credential {
    /// Derives the stored form of `password` with `salt`.
    pub fn derive(
        mechanism: Mechanism,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Credential {
        let salted = mechanism.salted_password(password, salt, iterations);
        Credential::from_salted_password(mechanism, salt, &salted, iterations)
    }

    /// The stored form from a salted password ([`Mechanism::salted_password`]),
    /// as a broker derives it from an AlterUserScramCredentials upsertion:
    /// StoredKey = H(HMAC(salted, "Client Key")), ServerKey = HMAC(salted,
    /// "Server Key").
    pub fn from_salted_password(
        mechanism: Mechanism,
        salt: &[u8],
        salted_password: &[u8],
        iterations: u32,
    ) -> Credential {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        Credential {
            salt: salt.to_vec(),
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
            iterations,
        }
    }

    /// Derives with a fresh random 32-byte salt.
    pub fn new(
        mechanism: Mechanism,
        password: &[u8],
        iterations: u32,
    ) -> Result<Credential, ScramError> {
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        let salt = random_salt()?;
        Ok(Credential::derive(mechanism, password, &salt, iterations))
    }

    /// Whether `password` is the one this credential was derived from
    /// (SASL/PLAIN checks against the SCRAM store), compared in constant
    /// time.
    pub fn matches_password(&self, mechanism: Mechanism, password: &[u8]) -> bool {
        let derived = Credential::derive(mechanism, password, &self.salt, self.iterations);
        constant_time_eq(&derived.stored_key, &self.stored_key)
    }

    /// Kafka's text form: `salt=…,stored_key=…,server_key=…,iterations=N`
    /// (base64 values).
    pub fn to_text(&self) -> String {
        format!(
            "salt={},stored_key={},server_key={},iterations={}",
            B64.encode(&self.salt),
            B64.encode(&self.stored_key),
            B64.encode(&self.server_key),
            self.iterations
        )
    }

    pub fn from_text(text: &str) -> Option<Credential> {
        let mut salt = None;
        let mut stored_key = None;
        let mut server_key = None;
        let mut iterations = None;
        for field in text.split(',') {
            let (k, v) = field.split_once('=')?;
            match k {
                "salt" => salt = Some(B64.decode(v).ok()?),
                "stored_key" => stored_key = Some(B64.decode(v).ok()?),
                "server_key" => server_key = Some(B64.decode(v).ok()?),
                "iterations" => iterations = Some(v.parse().ok()?),
                _ => return None,
            }
        }
        Some(Credential {
            salt: salt?,
            stored_key: stored_key?,
            server_key: server_key?,
            iterations: iterations?,
        })
    }
}

/// Why an exchange failed. Every variant ends the authentication; what the
/// client is told is only "authentication failed" (a reason here is for the
/// log, never for the peer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("SCRAM message over {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("an authorization id different from the user is not supported")]
    AuthzId,
    #[error("SCRAM extensions are not supported")]
    Extensions,
    #[error("the nonce does not continue the exchange's")]
    Nonce,
    #[error("the channel-binding echo does not match")]
    BindingEcho,
    #[error("invalid credentials")]
    BadProof,
    #[error("iteration count {0} outside Kafka's {MIN_ITERATIONS}..={MAX_ITERATIONS}")]
    Iterations(u32),
    #[error("no randomness: {0}")]
    Random(String),
}

/// RFC 5802's `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is
/// an error.
fn unescape_name(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3) {
            Some("2C") => out.push(','),
            Some("3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in the user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A printable nonce without commas (RFC 5802).
fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// The parts of a client-first message that matter to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The GS2 header as sent (echoed, base64, in the client-final).
    pub gs2_header: String,
    pub user: String,
    pub nonce: String,
    /// `client-first-message-bare`: part of the signed AuthMessage.
    pub bare: String,
}

pub fn parse_client_first(msg: &[u8]) -> Result<ClientFirst, ScramError> {
    if msg.len() > MAX_MESSAGE_BYTES {
        return Err(ScramError::TooLarge);
    }
    let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    // gs2-header: cbind-flag "," [authzid] ","
    let (flag, rest) = msg
        .split_once(',')
        .ok_or(ScramError::Malformed("no GS2 header"))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("bad channel-binding flag")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(ScramError::Malformed("no GS2 header"))?;
    let gs2_header = format!("{flag},{authzid},");
    let mut fields = bare.split(',');
    let user = match fields.next() {
        Some(f) if f.starts_with("m=") => return Err(ScramError::Extensions),
        Some(f) => f
            .strip_prefix("n=")
            .ok_or(ScramError::Malformed("no user name"))?,
        None => return Err(ScramError::Malformed("no user name")),
    };
    let user = unescape_name(user)?;
    if user.is_empty() {
        return Err(ScramError::Malformed("empty user name"));
    }
    let nonce = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .ok_or(ScramError::Malformed("no nonce"))?;
    if !valid_nonce(nonce) {
        return Err(ScramError::Malformed("bad nonce"));
    }
    // Kafka's only extension is delegation tokens (`tokenauth`), which
    // Sluice does not have.
    if fields.next().is_some() {
        return Err(ScramError::Extensions);
    }
    if !authzid.is_empty() {
        let id = authzid
            .strip_prefix("a=")
            .ok_or(ScramError::Malformed("bad authorization id"))?;
        if unescape_name(id)? != user {
            return Err(ScramError::AuthzId);
        }
    }
    Ok(ClientFirst {
        gs2_header,
        user,
        nonce: nonce.to_string(),
        bare: bare.to_string(),
    })
}

/// The server between its first answer and the client's proof.
#[derive(Debug)]
pub struct AwaitingProof {
    mechanism: Mechanism,
    first: ClientFirst,
    server_first: String,
    nonce: String,
    /// None: the user is unknown, and the exchange runs on made-up
    /// credentials to its failure, so that a client cannot tell an unknown
    /// user from a wrong password (RFC 5802 §5.1).
    credential: Option<Credential>,
}

/// Answers a client-first: the server-first message to send, and the state
/// to check the proof with. `server_nonce` is random per exchange (a
/// parameter so tests can pin it).
pub fn server_first(
    mechanism: Mechanism,
    first: ClientFirst,
    credential: Option<Credential>,
    server_nonce: &str,
) -> (String, AwaitingProof) {
    let nonce = format!("{}{}", first.nonce, server_nonce);
    let (salt, iterations) = match &credential {
        Some(c) => (c.salt.clone(), c.iterations),
        None => {
            // A stable fake salt per user: asking twice gives the same one.
            let fake = mechanism.hmac(b"sluice-unknown-user", first.user.as_bytes());
            (fake[..16].to_vec(), MIN_ITERATIONS)
        }
    };
    let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
    (
        server_first.clone(),
        AwaitingProof {
            mechanism,
            first,
            server_first,
            nonce,
            credential,
        },
    )
}

/// A fresh 32-byte salt, as Kafka's tools make one.
pub fn random_salt() -> Result<[u8; 32], ScramError> {
    let mut salt = [0u8; 32];
    getrandom::fill(&mut salt).map_err(|e| ScramError::Random(e.to_string()))?;
    Ok(salt)
}

/// A fresh server nonce: 32 random bytes, base64 (printable, no commas).
pub fn random_nonce() -> Result<String, ScramError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ScramError::Random(e.to_string()))?;
    Ok(B64.encode(bytes))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AwaitingProof {
    pub fn user(&self) -> &str {
        &self.first.user
    }

    /// Checks the client-final message; on success the server-final message
    /// (`v=` the server signature) to send, and the user is authenticated.
    pub fn finish(self, msg: &[u8]) -> Result<String, ScramError> {
        if msg.len() > MAX_MESSAGE_BYTES {
            return Err(ScramError::TooLarge);
        }
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut fields = without_proof.split(',');
        let binding = fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .ok_or(ScramError::Malformed("no channel binding"))?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        if fields.next().is_some() {
            return Err(ScramError::Extensions);
        }
        if B64.decode(binding).ok().as_deref() != Some(self.first.gs2_header.as_bytes()) {
            return Err(ScramError::BindingEcho);
        }
        // RFC 5802 wants the combined nonce echoed as it was; librdkafka
        // sends its own nonce before it again, and Kafka accepts any nonce
        // that ends with the combined one (ScramSaslServer). The proof
        // signs the message as sent, so this loosens nothing it protects.
        if !nonce.ends_with(&self.nonce) {
            return Err(ScramError::Nonce);
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let Some(credential) = &self.credential else {
            return Err(ScramError::BadProof);
        };
        let auth_message = format!(
            "{},{},{}",
            self.first.bare, self.server_first, without_proof
        );
        let m = self.mechanism;
        let client_signature = m.hmac(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(ScramError::BadProof);
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        if !constant_time_eq(&m.hash(&client_key), &credential.stored_key) {
            return Err(ScramError::BadProof);
        }
        let server_signature = m.hmac(&credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

/// The client's side of an exchange (brokers authenticating to each other,
/// the CLI, tests): client-first, then the proof for the server's
/// challenge, then the check of the server's signature.
#[derive(Debug)]
pub struct ScramClient {
    mechanism: Mechanism,
    password: Vec<u8>,
    bare: String,
    expected_server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// Starts an exchange for `user` (escaped as RFC 5802 requires) with a
    /// random nonce; returns the client-first message to send.
    pub fn start(
        mechanism: Mechanism,
        user: &str,
        password: &[u8],
    ) -> Result<(ScramClient, String), ScramError> {
        let name = user.replace('=', "=3D").replace(',', "=2C");
        let bare = format!("n={name},r={}", random_nonce()?);
        let first = format!("n,,{bare}");
        Ok((
            ScramClient {
                mechanism,
                password: password.to_vec(),
                bare,
                expected_server_signature: None,
            },
            first,
        ))
    }

    /// The client-final message (with the proof) for the server-first.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<String, ScramError> {
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for f in server_first.split(',') {
            if let Some(v) = f.strip_prefix("r=") {
                nonce = Some(v);
            } else if let Some(v) = f.strip_prefix("s=") {
                salt = B64.decode(v).ok();
            } else if let Some(v) = f.strip_prefix("i=") {
                iterations = v.parse::<u32>().ok();
            }
        }
        let nonce = nonce.ok_or(ScramError::Malformed("no nonce"))?;
        let own = self.bare.rsplit_once(",r=").map(|(_, n)| n).unwrap_or("");
        if !nonce.starts_with(own) || nonce.len() == own.len() {
            return Err(ScramError::Nonce);
        }
        let salt = salt.ok_or(ScramError::Malformed("no salt"))?;
        let iterations = iterations.ok_or(ScramError::Malformed("no iteration count"))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        let m = self.mechanism;
        let salted = m.salted_password(&self.password, &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{},{server_first},{without_proof}", self.bare);
        let signature = m.hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = m.hmac(&salted, b"Server Key");
        self.expected_server_signature = Some(m.hmac(&server_key, auth.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final message: the server knew the credential.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let v = std::str::from_utf8(server_final)
            .ok()
            .and_then(|s| s.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .ok_or(ScramError::Malformed("no server signature"))?;
        match &self.expected_server_signature {
            Some(expected) if constant_time_eq(expected, &v) => Ok(()),
            _ => Err(ScramError::BadProof),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3's example exchange, byte for byte.
    #[test]
    fn rfc_7677_sha256_exchange() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = Credential::derive(Mechanism::Sha256, b"pencil", &salt, 4096);
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(first.user, "user");
        let (server_first, waiting) = server_first(
            Mechanism::Sha256,
            first,
            Some(credential),
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        );
        assert_eq!(
            server_first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let final_message = waiting
            .finish(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(
            final_message,
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    /// A whole exchange through [`ScramClient`]: the server's verdict.
    fn exchange(
        m: Mechanism,
        user: &str,
        password: &[u8],
        stored: Option<Credential>,
    ) -> Result<(), ScramError> {
        let (mut client, first) = ScramClient::start(m, user, password)?;
        let first = parse_client_first(first.as_bytes())?;
        assert_eq!(first.user, user);
        let (sf, waiting) = server_first(m, first, stored, &random_nonce()?);
        let cf = client.respond(sf.as_bytes())?;
        let server_final = waiting.finish(cf.as_bytes())?;
        client.verify(server_final.as_bytes())
    }

    #[test]
    fn both_mechanisms_accept_the_password_and_refuse_others() {
        for m in Mechanism::ALL {
            let credential = Credential::new(m, b"s3cret", 4096).unwrap();
            let stored = Credential::from_text(&credential.to_text()).unwrap();
            assert_eq!(stored, credential, "the text form round-trips");
            for (password, ok) in [(&b"s3cret"[..], true), (b"s3cres", false), (b"", false)] {
                let result = exchange(m, "al=i,ce", password, Some(stored.clone()));
                assert_eq!(result.is_ok(), ok, "{} {password:?}", m.name());
                if !ok {
                    assert_eq!(result, Err(ScramError::BadProof));
                }
            }
        }
    }

    #[test]
    fn a_salted_password_gives_the_credential_the_password_gives() {
        for m in Mechanism::ALL {
            let salt = random_salt().unwrap();
            let salted = m.salted_password(b"pw", &salt, 4096);
            assert_eq!(
                Credential::from_salted_password(m, &salt, &salted, 4096),
                Credential::derive(m, b"pw", &salt, 4096)
            );
        }
    }

    #[test]
    fn an_unknown_user_fails_like_a_wrong_password() {
        let m = Mechanism::Sha512;
        let first = parse_client_first(b"n,,n=mallory,r=abc").unwrap();
        let (sf, _) = server_first(m, first.clone(), None, "xyz");
        let (sf_again, _) = server_first(m, first, None, "xyz");
        assert_eq!(sf, sf_again, "the same made-up salt every time");
        assert!(sf.contains(",i=4096"));
        assert_eq!(
            exchange(m, "mallory", b"guess", None),
            Err(ScramError::BadProof)
        );
    }

    #[test]
    fn a_client_refuses_a_server_that_does_not_know_the_password() {
        let m = Mechanism::Sha256;
        let (mut client, _) = ScramClient::start(m, "u", b"pw").unwrap();
        assert_eq!(
            client.respond(b"r=other,s=AAAA,i=4096"),
            Err(ScramError::Nonce)
        );
        let own = client.bare.rsplit_once(",r=").unwrap().1.to_string();
        let sf = format!("r={own}srv,s=AAAA,i=4096");
        client.respond(sf.as_bytes()).unwrap();
        assert_eq!(client.verify(b"v=AAAA"), Err(ScramError::BadProof));
        let low = format!("r={own}srv,s=AAAA,i=1");
        assert_eq!(
            client.respond(low.as_bytes()),
            Err(ScramError::Iterations(1))
        );
    }

    #[test]
    fn hostile_messages_are_refused_not_panicked_on() {
        let cases: [(&[u8], ScramError); 9] = [
            (b"", ScramError::Malformed("no GS2 header")),
            (b"n,", ScramError::Malformed("no GS2 header")),
            (b"p=tls-unique,,n=u,r=x", ScramError::ChannelBinding),
            (
                b"x,,n=u,r=x",
                ScramError::Malformed("bad channel-binding flag"),
            ),
            (
                b"n,,n=u=ZZ,r=x",
                ScramError::Malformed("bad escape in the user name"),
            ),
            (b"n,,n=u,r=a,b", ScramError::Extensions),
            (b"n,,n=u,r=x,tokenauth=true", ScramError::Extensions),
            (b"n,a=other,n=u,r=x", ScramError::AuthzId),
            (b"n,,n=,r=x", ScramError::Malformed("empty user name")),
        ];
        for (msg, err) in cases {
            assert_eq!(parse_client_first(msg), Err(err), "{msg:?}");
        }
        assert_eq!(
            parse_client_first(&vec![b'a'; MAX_MESSAGE_BYTES + 1]),
            Err(ScramError::TooLarge)
        );
        let escaped = parse_client_first(b"n,a=a=2Cb=3D,n=a=2Cb=3D,r=x").unwrap();
        assert_eq!(escaped.user, "a,b=");
        // The final message: a wrong nonce, a wrong binding echo, junk.
        let credential = Credential::new(Mechanism::Sha256, b"pw", 4096).unwrap();
        let fresh = || {
            let first = parse_client_first(b"n,,n=u,r=abc").unwrap();
            server_first(Mechanism::Sha256, first, Some(credential.clone()), "def").1
        };
        assert_eq!(
            fresh().finish(b"c=biws,r=abcX,p=AAAA"),
            Err(ScramError::Nonce)
        );
        // librdkafka repeats its own nonce before the combined one; Kafka
        // takes that, so the exchange goes on to the proof.
        assert_eq!(
            fresh().finish(b"c=biws,r=abcabcdef,p=AAAA"),
            Err(ScramError::BadProof)
        );
        assert_eq!(
            fresh().finish(b"c=biws,r=abcdefX,p=AAAA"),
            Err(ScramError::Nonce)
        );
        assert_eq!(
            fresh().finish(b"c=eSws,r=abcdef,p=AAAA"),
            Err(ScramError::BindingEcho)
        );
        assert_eq!(
            fresh().finish(b"c=biws,r=abcdef,p=AAAA"),
            Err(ScramError::BadProof)
        );
        assert!(fresh().finish(b"garbage").is_err());
        assert!(fresh().finish(&[0xff; 10]).is_err());
        assert_eq!(
            Credential::new(Mechanism::Sha256, b"pw", 100),
            Err(ScramError::Iterations(100))
        );
    }
}
