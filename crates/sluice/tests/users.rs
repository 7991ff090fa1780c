//! `sluice user add | delete | list --data-dir` (issue 17): the first SCRAM
//! user is written before any broker runs, salted and hashed, and the
//! stored credential authenticates its password and only that.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use sluice_broker::security::shared::{in_cluster_mark, mark_in_cluster};

use sluice_broker::security::credentials::{CredentialStore, FILE};
use sluice_broker::security::scram::{
    Mechanism, ScramClient, ScramError, parse_client_first, random_nonce, server_first,
};

fn sluice(dir: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("user")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice user");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("password");
    let out = child.wait_with_output().expect("exit");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A whole SCRAM exchange against the stored credential.
fn authenticates(dir: &std::path::Path, user: &str, m: Mechanism, password: &str) -> bool {
    let store = CredentialStore::open(dir).expect("store");
    let (mut client, first) = ScramClient::start(m, user, password.as_bytes()).expect("start");
    let first = parse_client_first(first.as_bytes()).expect("client-first");
    let (sf, waiting) = server_first(
        m,
        first,
        store.get(user, m),
        &random_nonce().expect("nonce"),
    );
    let cf = client.respond(sf.as_bytes()).expect("client-final");
    match waiting.finish(cf.as_bytes()) {
        Ok(server_final) => {
            client
                .verify(server_final.as_bytes())
                .expect("server signature");
            true
        }
        Err(ScramError::BadProof) => false,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn the_first_user_is_written_before_any_broker_and_holds_no_password() {
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path().join("data");
    let password = "correct-horse-battery-staple";
    let (ok, out) = sluice(
        &dir,
        &["add", "admin", "--password-stdin"],
        &format!("{password}\n"),
    );
    assert!(ok, "{out}");
    assert!(out.contains("SCRAM-SHA-512 with 4096 iterations"), "{out}");
    let (ok, out) = sluice(
        &dir,
        &[
            "add",
            "reader",
            "--mechanism",
            "SCRAM-SHA-256",
            "--iterations",
            "8192",
            "--password-stdin",
        ],
        "other-secret\n",
    );
    assert!(ok, "{out}");
    let stored = std::fs::read_to_string(dir.join(FILE)).expect("store");
    assert!(!stored.contains(password) && !stored.contains("other-secret"));
    let (ok, out) = sluice(&dir, &["list"], "");
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![
            "admin\tSCRAM-SHA-512\titerations=4096",
            "reader\tSCRAM-SHA-256\titerations=8192"
        ]
    );
    assert!(authenticates(&dir, "admin", Mechanism::Sha512, password));
    assert!(!authenticates(
        &dir,
        "admin",
        Mechanism::Sha512,
        "correct-horse"
    ));
    assert!(
        !authenticates(&dir, "admin", Mechanism::Sha256, password),
        "no SHA-256 credential"
    );
    assert!(authenticates(
        &dir,
        "reader",
        Mechanism::Sha256,
        "other-secret"
    ));
    // Refusals: Kafka's iteration bounds, an unknown mechanism, no password.
    for (args, stdin) in [
        (
            vec!["add", "x", "--iterations", "100", "--password-stdin"],
            "pw\n",
        ),
        (
            vec!["add", "x", "--mechanism", "PLAIN", "--password-stdin"],
            "pw\n",
        ),
        (vec!["add", "x", "--password-stdin"], "\n"),
    ] {
        let (ok, out) = sluice(&dir, &args, stdin);
        assert!(!ok, "{args:?}: {out}");
    }
    let (ok, out) = sluice(
        &dir,
        &["delete", "reader", "--mechanism", "SCRAM-SHA-256"],
        "",
    );
    assert!(ok, "{out}");
    let (ok, _) = sluice(
        &dir,
        &["delete", "reader", "--mechanism", "SCRAM-SHA-256"],
        "",
    );
    assert!(!ok, "already gone");
    let (_, out) = sluice(&dir, &["list"], "");
    assert_eq!(out.trim(), "admin\tSCRAM-SHA-512\titerations=4096");
}

/// A cluster broker's users are the cluster's (etcd): `--data-dir` on its
/// directory refuses to change a file the broker no longer reads, and
/// works again once the directory is run single-node.
#[test]
fn a_cluster_brokers_directory_refuses_direct_changes_until_it_runs_single_node() {
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).expect("dir");
    // What a broker writes once it has joined a cluster.
    mark_in_cluster(&dir, "http://127.0.0.1:2379 under /sluice").expect("mark");
    let (ok, text) = sluice(&dir, &["add", "bob", "--password-stdin"], "pw-bob\n");
    assert!(!ok && text.contains("-b HOST:PORT"), "{text}");
    assert!(
        text.contains("http://127.0.0.1:2379 under /sluice"),
        "the refusal says where the users are: {text}"
    );
    assert!(!dir.join(FILE).exists(), "nothing was written");
    {
        let _single_node = support::Server::start_in(&dir, &[]);
    }
    assert_eq!(
        in_cluster_mark(&dir),
        None,
        "a single-node broker uses its files again"
    );
    let (ok, text) = sluice(&dir, &["add", "bob", "--password-stdin"], "pw-bob\n");
    assert!(ok, "{text}");
    assert!(authenticates(&dir, "bob", Mechanism::Sha512, "pw-bob"));
}
