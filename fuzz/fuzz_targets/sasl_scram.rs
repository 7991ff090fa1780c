//! Any bytes as what a SASL peer sends: SCRAM's client-first and
//! client-final messages to the server side, a server-first and
//! server-final to the client side, and whole PLAIN and SCRAM exchanges
//! through the broker's `SaslServer` against a credential store. Each
//! answers or refuses; none panics.
//!
//! The first byte picks the target; the rest is the message (two messages
//! are split at the first NUL).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_broker::security::credentials::CredentialStore;
use sluice_broker::security::sasl::{SaslMechanism, SaslServer};
use sluice_broker::security::scram::{self, Credential, Mechanism, ScramClient};

/// The store every exchange runs against: `user` with password `pencil`
/// for both mechanisms. Its directory lives as long as the process.
fn store() -> &'static CredentialStore {
    static STORE: OnceLock<(tempfile::TempDir, CredentialStore)> = OnceLock::new();
    &STORE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = CredentialStore::open(dir.path()).expect("store");
            for m in Mechanism::ALL {
                store
                    .upsert("user", m, credential(m).clone())
                    .expect("upsert");
            }
            (dir, store)
        })
        .1
}

/// `pencil` with a fixed salt, derived once per mechanism (PBKDF2 is slow).
fn credential(m: Mechanism) -> &'static Credential {
    static CREDENTIALS: OnceLock<[Credential; 2]> = OnceLock::new();
    let all = CREDENTIALS.get_or_init(|| {
        Mechanism::ALL.map(|m| Credential::derive(m, b"pencil", b"fuzz-salt-fuzz-salt", 4096))
    });
    &all[Mechanism::ALL.iter().position(|x| *x == m).unwrap_or(0)]
}

/// The two messages of `data`: before and after its first NUL.
fn two(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&which, data)) = input.split_first() else {
        return;
    };
    let m = if which & 0x80 == 0 {
        Mechanism::Sha256
    } else {
        Mechanism::Sha512
    };
    match which & 0x7f {
        // The server's parse of a client-first message.
        0 => {
            let _ = scram::parse_client_first(data);
        }
        // The server's check of a client-final, after a fixed server-first.
        1 => {
            let first =
                scram::parse_client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").expect("valid");
            let (_, awaiting) = scram::server_first(
                m,
                first,
                Some(credential(m).clone()),
                "3rfcNHYJY1ZVvWVs7j",
            );
            let _ = awaiting.finish(data);
        }
        // The client's answer to a server-first (which continues its own
        // nonce, as a real one does), then its check of a server-final.
        2 => {
            let Ok((mut client, first)) = ScramClient::start(m, "user", b"pencil") else {
                return;
            };
            let nonce = first.rsplit_once("r=").map_or("", |(_, n)| n);
            let (server_first, server_final) = two(data);
            let mut msg = format!("r={nonce}").into_bytes();
            msg.extend_from_slice(server_first);
            let _ = client.respond(&msg);
            let _ = client.verify(server_final);
        }
        // The broker's PLAIN.
        3 => {
            let mut server = SaslServer::new(SaslMechanism::Plain);
            let _ = server.step(data, store());
            let _ = server.step(data, store());
        }
        // The broker's SCRAM: a client-first, then a client-final.
        4 => {
            let (first, last) = two(data);
            let mut server = SaslServer::new(SaslMechanism::Scram(m));
            if server.step(first, store()).is_ok() {
                let _ = server.step(last, store());
            }
            let _ = server.step(last, store());
        }
        _ => {}
    }
});
