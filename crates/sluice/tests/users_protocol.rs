//! SCRAM users over the protocol, and the CLI on a secured broker (issue
//! 17): a broker with a PLAINTEXT and a SASL_SSL listener (a throwaway CA
//! and server certificate made with `openssl`); the first user written with
//! `--data-dir` before it starts; then `sluice user add -b` authenticated as
//! that user adds a second (AlterUserScramCredentials), who can use the
//! CLI over SASL_SSL with SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN; a wrong
//! password and an unknown CA fail with clear messages; `user list -b`
//! shows users, mechanisms and iterations only; credentials survive a
//! restart; `user delete -b` ends a user's logins.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// Runs `openssl` with `args` in `dir`; panics with its stderr if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (the CLI) is needed to make test certificates");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`NAME-ca.pem`), a client certificate it signed
/// (`NAME-client.pem`, `NAME-client.key`, subject `CN=NAME-client`) and, if
/// `server`, a server certificate for IP 127.0.0.1 and localhost
/// (`NAME-server.pem`, `NAME-server.key`).
fn make_ca(dir: &Path, name: &str, server: bool) -> PathBuf {
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            &format!("/CN=sluice test CA {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    let roles: &[(&str, &str)] = if server {
        &[
            (
                "server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ]
    } else {
        &[("client", "extendedKeyUsage=clientAuth\n")]
    };
    for (role, usage) in roles {
        let key = format!("{name}-{role}.key");
        let csr = format!("{name}-{role}.csr");
        let ext = format!("{name}-{role}.ext");
        std::fs::write(
            dir.join(&ext),
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{usage}"),
        )
        .expect("ext file");
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}-{role}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &format!("{name}-{role}.pem"),
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
    dir.join(ca)
}

/// A `sluice serve` with the listeners given, on free ports: its
/// addresses by listener name, from the `sluice listener NAME on ADDR`
/// lines it prints. Killed when dropped.
struct Broker {
    child: Child,
    listeners: BTreeMap<String, SocketAddr>,
}

impl Broker {
    fn start(data: &Path, certs: &Path) -> Broker {
        let mut child = Command::new(SLUICE)
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .args([
                "--listener",
                "PLAINTEXT://127.0.0.1:0",
                "--listener",
                "SASL_SSL://127.0.0.1:0",
                "--listener",
                "SSL://127.0.0.1:0",
                "--connection-failed-authentication-delay-ms",
                "10",
                // Client certificates checked when presented (SASL_SSL
                // clients here present none).
                "--tls-client-auth",
                "requested",
            ])
            .arg("--tls-client-ca")
            .arg(certs.join("good-ca.pem"))
            .arg("--tls-cert")
            .arg(certs.join("good-server.pem"))
            .arg("--tls-key")
            .arg(certs.join("good-server.key"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sluice serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut listeners = BTreeMap::new();
        while listeners.len() < 3 {
            let line = lines
                .next()
                .expect("sluice serve exited before listening")
                .expect("stdout line");
            if let Some(rest) = line.strip_prefix("sluice listener ") {
                let (name, addr) = rest.split_once(" on ").expect("NAME on ADDR");
                listeners.insert(name.to_string(), addr.parse().expect("address"));
            }
        }
        // Keep draining stdout so the broker never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Broker { child, listeners }
    }

    fn addr(&self, listener: &str) -> String {
        self.listeners[listener].to_string()
    }

    /// SIGTERM, and wait for the exit.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sluice ARGS` with `stdin` and extra environment variables: (exit
/// success, stdout, stderr).
fn sluice(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let mut child = Command::new(SLUICE)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("SLUICE_DATA_DIR")
        .env_remove("SLUICE_BROKER")
        .env_remove("SLUICE_COMMAND_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin");
    let out = child.wait_with_output().expect("exit");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A command-config file for `user` with `password` and `mechanism`.
fn config(dir: &Path, ca: &Path, mechanism: &str, user: &str, password: &str) -> PathBuf {
    let path = dir.join(format!("{user}-{mechanism}-{}.properties", password.len()));
    std::fs::write(
        &path,
        format!(
            "# as librdkafka names them\n\
             security.protocol=SASL_SSL\n\
             ssl.ca.location={}\n\
             sasl.mechanism={mechanism}\n\
             sasl.username={user}\n\
             sasl.password={password}\n",
            ca.display()
        ),
    )
    .expect("config file");
    path
}

/// `sluice topic list` at `addr` with a command-config file.
fn topic_list(addr: &str, config: &Path) -> (bool, String, String) {
    sluice(
        &[
            "topic",
            "list",
            "-b",
            addr,
            "--command-config",
            config.to_str().expect("path"),
        ],
        "",
        &[],
    )
}

#[test]
fn users_are_managed_over_the_protocol_and_the_cli_speaks_sasl_ssl() {
    let tmp = tempfile::tempdir().expect("dir");
    let certs = tmp.path().join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    let ca = make_ca(&certs, "good", true);
    let other_ca = make_ca(&certs, "other", false);
    let data = tmp.path().join("data");

    // The first user, before any broker runs.
    let data_arg = data.to_str().expect("path");
    let (ok, _, err) = sluice(
        &[
            "user",
            "add",
            "admin",
            "--mechanism",
            "SCRAM-SHA-256",
            "--password-stdin",
            "--data-dir",
            data_arg,
        ],
        "admin-secret\n",
        &[],
    );
    assert!(ok, "{err}");

    let broker = Broker::start(&data, &certs);
    let plain = broker.addr("PLAINTEXT");
    let secure = broker.addr("SASL_SSL");
    let (ok, _, err) = sluice(
        &["topic", "create", "orders", "-b", &plain, "-p", "2"],
        "",
        &[],
    );
    assert!(ok, "PLAINTEXT needs no security flags, as before: {err}");

    // The admin adds bob over SASL_SSL: SCRAM-SHA-256 and SCRAM-SHA-512.
    let admin = config(tmp.path(), &ca, "SCRAM-SHA-256", "admin", "admin-secret");
    let admin_arg = admin.to_str().expect("path");
    for (mechanism, iterations) in [("SCRAM-SHA-256", "4096"), ("SCRAM-SHA-512", "8192")] {
        let (ok, out, err) = sluice(
            &[
                "user",
                "add",
                "bob",
                "--mechanism",
                mechanism,
                "--iterations",
                iterations,
                "--password-stdin",
                "-b",
                &secure,
                "--command-config",
                admin_arg,
            ],
            "bob-secret\n",
            &[],
        );
        assert!(ok, "{err}");
        assert!(
            out.contains(&format!(
                "user bob: {mechanism} with {iterations} iterations"
            )),
            "{out}"
        );
    }

    // bob, over SASL_SSL, with each mechanism.
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] {
        let bob = config(tmp.path(), &ca, mechanism, "bob", "bob-secret");
        let (ok, out, err) = topic_list(&secure, &bob);
        assert!(ok, "{mechanism}: {err}");
        assert_eq!(out.trim(), "orders", "{mechanism}");
    }
    // The same with flags and the password from the environment.
    let (ok, out, err) = sluice(
        &[
            "topic",
            "list",
            "-b",
            &secure,
            "--security-protocol",
            "SASL_SSL",
            "--tls-ca",
            ca.to_str().expect("path"),
            "--sasl-mechanism",
            "SCRAM-SHA-512",
            "--sasl-username",
            "bob",
            "--sasl-password-env",
            "BOB_PASSWORD",
        ],
        "",
        &[("BOB_PASSWORD", "bob-secret")],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "orders");

    // The certificate must name the host asked for, unless the check is
    // off (ssl.endpoint.identification.algorithm=none); the CA still counts.
    let bob = config(tmp.path(), &ca, "SCRAM-SHA-512", "bob", "bob-secret");
    let elsewhere = |config: &Path| {
        sluice(
            &[
                "topic",
                "list",
                "-b",
                &secure,
                "--command-config",
                config.to_str().expect("path"),
                "--tls-server-name",
                "kafka.example.com",
            ],
            "",
            &[],
        )
    };
    let (ok, _, err) = elsewhere(&bob);
    assert!(!ok);
    assert!(err.contains("not valid for name"), "{err}");
    let lax = tmp.path().join("bob-lax.properties");
    let text = std::fs::read_to_string(&bob).expect("config");
    std::fs::write(
        &lax,
        format!("{text}ssl.endpoint.identification.algorithm=none\n"),
    )
    .expect("config");
    let (ok, out, err) = elsewhere(&lax);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "orders");
    let lax_other = tmp.path().join("bob-lax-other.properties");
    std::fs::write(
        &lax_other,
        std::fs::read_to_string(&lax)
            .expect("config")
            .replace(ca.to_str().expect("path"), other_ca.to_str().expect("path")),
    )
    .expect("config");
    let (ok, _, err) = elsewhere(&lax_other);
    assert!(!ok && err.contains("UnknownIssuer"), "{err}");

    // A wrong password: the broker's refusal, said plainly.
    let wrong = config(tmp.path(), &ca, "SCRAM-SHA-256", "bob", "bob-secreT!");
    let (ok, _, err) = topic_list(&secure, &wrong);
    assert!(!ok);
    assert!(
        err.contains("SASL_AUTHENTICATION_FAILED") && err.contains("invalid credentials"),
        "{err}"
    );
    // A CA that did not sign the broker's certificate: a TLS error.
    let untrusted = config(tmp.path(), &other_ca, "SCRAM-SHA-256", "bob", "bob-secret");
    let (ok, _, err) = topic_list(&secure, &untrusted);
    assert!(!ok);
    assert!(err.contains("TLS") && err.contains("handshake"), "{err}");
    // mTLS on the SSL listener: a certificate the broker's CA signed is
    // taken, one another CA signed is not.
    let ssl = broker.addr("SSL");
    let with_cert = |who: &str| {
        sluice(
            &[
                "topic",
                "list",
                "-b",
                &ssl,
                "--security-protocol",
                "SSL",
                "--tls-ca",
                ca.to_str().expect("path"),
                "--tls-cert",
                certs
                    .join(format!("{who}-client.pem"))
                    .to_str()
                    .expect("path"),
                "--tls-key",
                certs
                    .join(format!("{who}-client.key"))
                    .to_str()
                    .expect("path"),
            ],
            "",
            &[],
        )
    };
    let (ok, out, err) = with_cert("good");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "orders");
    let (ok, _, err) = with_cert("other");
    assert!(!ok);
    assert!(err.contains("TLS"), "{err}");
    // Without SASL settings a SASL_SSL listener is not reached at all.
    let (ok, _, err) = sluice(
        &[
            "topic",
            "list",
            "-b",
            &secure,
            "--security-protocol",
            "SASL_SSL",
        ],
        "",
        &[],
    );
    assert!(!ok);
    assert!(err.contains("needs sasl.mechanism"), "{err}");

    // The list: users, mechanisms, iterations — never a salt or a key.
    let expected = "admin\tSCRAM-SHA-256\titerations=4096\n\
                    bob\tSCRAM-SHA-256\titerations=4096\n\
                    bob\tSCRAM-SHA-512\titerations=8192\n";
    let list = |at: &str| {
        let (ok, out, err) = sluice(
            &["user", "list", "-b", at, "--command-config", admin_arg],
            "",
            &[],
        );
        assert!(ok, "{err}");
        out
    };
    let listed = list(&secure);
    assert_eq!(listed, expected);
    let stored = std::fs::read_to_string(data.join("scram-credentials")).expect("store");
    for line in stored.lines() {
        for secret in line.split([',', '\t']).filter_map(|f| f.split_once('=')) {
            if secret.0 != "iterations" {
                assert!(!listed.contains(secret.1), "{} is listed", secret.0);
            }
        }
    }
    assert!(!stored.contains("bob-secret"));

    // -b and --data-dir together: one or the other.
    let (ok, _, err) = sluice(
        &["user", "list", "-b", &secure, "--data-dir", data_arg],
        "",
        &[],
    );
    assert!(!ok);
    assert!(err.contains("not both"), "{err}");

    // A restart keeps them.
    broker.stop();
    let broker = Broker::start(&data, &certs);
    let secure = broker.addr("SASL_SSL");
    assert_eq!(list(&secure), expected);
    let bob512 = config(tmp.path(), &ca, "SCRAM-SHA-512", "bob", "bob-secret");
    let (ok, _, err) = topic_list(&secure, &bob512);
    assert!(ok, "after a restart: {err}");

    // Deleting bob's credentials ends his logins, mechanism by mechanism.
    let delete = |mechanism: &str| {
        sluice(
            &[
                "user",
                "delete",
                "bob",
                "--mechanism",
                mechanism,
                "-b",
                &secure,
                "--command-config",
                admin_arg,
            ],
            "",
            &[],
        )
    };
    let (ok, out, err) = delete("SCRAM-SHA-256");
    assert!(ok, "{err}");
    assert!(out.contains("user bob: SCRAM-SHA-256 removed"), "{out}");
    let bob256 = config(tmp.path(), &ca, "SCRAM-SHA-256", "bob", "bob-secret");
    let (ok, _, err) = topic_list(&secure, &bob256);
    assert!(!ok && err.contains("SASL_AUTHENTICATION_FAILED"), "{err}");
    let (ok, _, err) = topic_list(&secure, &bob512);
    assert!(ok, "SCRAM-SHA-512 is still there: {err}");
    let (ok, _, err) = delete("SCRAM-SHA-512");
    assert!(ok, "{err}");
    for mechanism in ["SCRAM-SHA-512", "PLAIN"] {
        let bob = config(tmp.path(), &ca, mechanism, "bob", "bob-secret");
        let (ok, _, err) = topic_list(&secure, &bob);
        assert!(
            !ok && err.contains("SASL_AUTHENTICATION_FAILED"),
            "{mechanism}: {err}"
        );
    }
    let (ok, _, err) = delete("SCRAM-SHA-512");
    assert!(!ok);
    assert!(err.contains("bob has no SCRAM-SHA-512 credential"), "{err}");
    assert_eq!(list(&secure), "admin\tSCRAM-SHA-256\titerations=4096\n");
}
