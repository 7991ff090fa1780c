//! `sluice acl add | list | remove` against a real `sluice serve
//! --authorizer acl` (CreateAcls, DescribeAcls, DeleteAcls over the wire):
//! the ACLs land in the data directory's `acls` file and are there again
//! after a restart; without an authorizer the APIs answer SECURITY_DISABLED.
//! (Enforcement is not tested here: requests are not authorized yet.)

mod support;

use std::process::Command;

use support::Server;

/// Runs `sluice args…`; (success, stdout, stderr).
fn sluice(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run sluice");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (success, stdout, stderr) = sluice(args);
    assert!(success, "sluice {args:?} failed: {stderr}\n{stdout}");
    stdout
}

fn refused(args: &[&str]) -> String {
    let (success, stdout, stderr) = sluice(args);
    assert!(!success, "sluice {args:?} should fail: {stdout}");
    stderr
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

const ALICE_ORDERS_READ: &str =
    "Topic:LITERAL:orders: User:alice has Allow permission for Read from host *";
const ALICE_ORDERS_DESCRIBE: &str =
    "Topic:LITERAL:orders: User:alice has Allow permission for Describe from host *";
const BOB_PAY_DENY: &str =
    "Topic:PREFIXED:pay-: User:bob has Deny permission for Write from host 10.0.0.1";
const ALICE_G_READ: &str = "Group:LITERAL:g: User:alice has Allow permission for Read from host *";
const ALICE_G_DESCRIBE: &str =
    "Group:LITERAL:g: User:alice has Allow permission for Describe from host *";
const OPS_CLUSTER: &str =
    "Cluster:LITERAL:kafka-cluster: User:ops has Allow permission for Alter from host *";
const TXN_ANYONE: &str =
    "TransactionalId:LITERAL:*: User:* has Allow permission for All from host *";

#[test]
fn acls_added_with_the_cli_are_listed_removed_and_survive_a_restart() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("data");
    // `sluice acl` connects over PLAINTEXT, as User:ANONYMOUS: with the
    // authorizer on it needs Alter and Describe on the cluster, here as a
    // super user.
    let flags = [
        "--authorizer",
        "acl",
        "--super-user",
        "User:admin",
        "--super-user",
        "User:ANONYMOUS",
    ];
    let mut server = Server::start_in(&dir, &flags);
    let b = server.addr.to_string();

    let (success, stdout, stderr) = sluice(&["acl", "list", "-b", &b]);
    assert!(success && stdout.is_empty(), "{stdout}{stderr}");
    assert!(stderr.contains("no ACLs"), "{stderr}");

    let added = ok(&[
        "acl",
        "add",
        "-b",
        &b,
        "--allow-principal",
        "User:alice",
        "--operation",
        "Read",
        "--operation",
        "describe",
        "--topic",
        "orders",
        "--group",
        "g",
    ]);
    assert_eq!(
        lines(&added),
        [
            format!("added {ALICE_ORDERS_READ}"),
            format!("added {ALICE_ORDERS_DESCRIBE}"),
            format!("added {ALICE_G_READ}"),
            format!("added {ALICE_G_DESCRIBE}"),
        ]
    );
    ok(&[
        "acl",
        "add",
        "-b",
        &b,
        "--deny-principal",
        "User:bob",
        "--deny-host",
        "10.0.0.1",
        "--operation",
        "WRITE",
        "--topic",
        "pay-",
        "--resource-pattern-type",
        "prefixed",
    ]);
    ok(&[
        "acl",
        "add",
        "-b",
        &b,
        "--allow-principal",
        "User:ops",
        "--operation",
        "Alter",
        "--cluster",
    ]);
    // No --operation: All. Adding it twice changes nothing.
    for _ in 0..2 {
        let added = ok(&[
            "acl",
            "add",
            "--bootstrap-server",
            &b,
            "--allow-principal",
            "User:*",
            "--transactional-id",
            "*",
        ]);
        assert_eq!(lines(&added), [format!("added {TXN_ANYONE}")]);
    }
    // Refused before anything is sent.
    let e = refused(&[
        "acl",
        "add",
        "-b",
        &b,
        "--allow-principal",
        "User:ops",
        "--operation",
        "Read",
        "--cluster",
    ]);
    assert!(e.contains("only supports operations"), "{e}");
    let e = refused(&["acl", "add", "-b", &b, "--topic", "t"]);
    assert!(e.contains("--allow-principal"), "{e}");
    let e = refused(&[
        "acl",
        "add",
        "-b",
        &b,
        "--allow-principal",
        "alice",
        "--topic",
        "t",
    ]);
    assert!(e.contains("TYPE:NAME"), "{e}");
    let e = refused(&[
        "acl",
        "add",
        "-b",
        &b,
        "--allow-principal",
        "User:a",
        "--topic",
        "t",
        "--resource-pattern-type",
        "match",
    ]);
    assert!(e.contains("literal or prefixed"), "{e}");

    let everything = [
        ALICE_ORDERS_READ,
        ALICE_ORDERS_DESCRIBE,
        BOB_PAY_DENY,
        ALICE_G_READ,
        ALICE_G_DESCRIBE,
        OPS_CLUSTER,
        TXN_ANYONE,
    ];
    assert_eq!(lines(&ok(&["acl", "list", "-b", &b])), everything);
    // What applies to topic pay-eu: the prefixed ACL, not the literal ones.
    let applying = ok(&[
        "acl",
        "list",
        "-b",
        &b,
        "--topic",
        "pay-eu",
        "--resource-pattern-type",
        "match",
    ]);
    assert_eq!(lines(&applying), [BOB_PAY_DENY]);
    assert!(
        ok(&["acl", "list", "-b", &b, "--topic", "pay-eu"]).is_empty(),
        "literal by default: no ACL names pay-eu itself"
    );
    let alices = ok(&["acl", "list", "-b", &b, "--principal", "User:alice"]);
    assert_eq!(
        lines(&alices),
        [
            ALICE_ORDERS_READ,
            ALICE_ORDERS_DESCRIBE,
            ALICE_G_READ,
            ALICE_G_DESCRIBE
        ]
    );

    // Removing every ACL of a resource takes --force.
    let e = refused(&["acl", "remove", "-b", &b, "--topic", "orders"]);
    assert!(e.contains("--force"), "{e}");
    let removed = ok(&[
        "acl",
        "remove",
        "-b",
        &b,
        "--topic",
        "orders",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Read",
    ]);
    assert_eq!(lines(&removed), [format!("removed {ALICE_ORDERS_READ}")]);
    let (success, stdout, stderr) = sluice(&[
        "acl",
        "remove",
        "-b",
        &b,
        "--topic",
        "orders",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Read",
    ]);
    assert!(success && stdout.is_empty(), "{stdout}{stderr}");
    assert!(stderr.contains("no ACLs matched"), "{stderr}");

    // The file holds them, one line each; a restart reads them back.
    server.stop();
    let file = std::fs::read_to_string(dir.join("acls")).expect("acls file");
    assert_eq!(file.lines().count(), 6, "{file}");
    assert!(
        file.contains("Topic\tPREFIXED\tpay-\tUser:bob\t10.0.0.1\tWrite\tDeny\n"),
        "{file}"
    );
    let mut server = Server::start_in(&dir, &flags);
    let b = server.addr.to_string();
    let after: Vec<&str> = everything
        .iter()
        .copied()
        .filter(|l| *l != ALICE_ORDERS_READ)
        .collect();
    assert_eq!(lines(&ok(&["acl", "list", "-b", &b])), after);
    let removed = ok(&["acl", "remove", "-b", &b, "--group", "g", "--force"]);
    assert_eq!(
        lines(&removed),
        [
            format!("removed {ALICE_G_READ}"),
            format!("removed {ALICE_G_DESCRIBE}")
        ]
    );
    server.stop();

    // Without an authorizer the ACL APIs are refused, and the file is kept.
    let server = Server::start_in(&dir, &[]);
    let b = server.addr.to_string();
    let e = refused(&["acl", "list", "-b", &b]);
    assert!(e.contains("SECURITY_DISABLED"), "{e}");
    let e = refused(&[
        "acl",
        "add",
        "-b",
        &b,
        "--allow-principal",
        "User:a",
        "--topic",
        "t",
    ]);
    assert!(e.contains("SECURITY_DISABLED"), "{e}");
    drop(server);
    let file = std::fs::read_to_string(dir.join("acls")).expect("acls file");
    assert_eq!(file.lines().count(), 4, "{file}");
}
