//! Test certificates (a throwaway CA, server and client certificates made
//! with the openssl CLI) and SCRAM users written before a broker starts.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// A throwaway CA, a server certificate for 127.0.0.1/localhost, a second
/// one (for the reload test) and a client certificate, made with openssl.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = r#"
set -e
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=Sluice Test CA"
for name in server server2; do
  openssl req -newkey rsa:2048 -nodes -keyout $name.key -out $name.csr -subj "/O=Sluice/CN=$name"
  printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n" > $name.ext
  openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $name.pem -days 2 -extfile $name.ext
done
openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/C=US/O=Sluice/OU=Eng/CN=client1"
printf "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n" > client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client.ext
"#;
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir.path())
            .output()
            .expect("openssl is not installed: run scripts/test.sh, which installs it");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

pub fn add_user(data: &Path, user: &str, mechanism: &str, password: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "user",
            "add",
            user,
            "--mechanism",
            mechanism,
            "--password-stdin",
        ])
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sluice user add");
    writeln!(child.stdin.take().expect("stdin"), "{password}").expect("password");
    assert!(child.wait().expect("exit").success());
}

/// kcat against a secured listener: `settings` are librdkafka properties
/// (`-X k=v`), `stdin` its input; panics with kcat's stderr if it fails.
pub fn kcat_secured(
    broker: std::net::SocketAddr,
    settings: &[String],
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Vec<u8> {
    let mut cmd = Command::new("kcat");
    // cargo points test processes' LD_LIBRARY_PATH at the rdkafka crate's
    // own librdkafka; kcat must load Debian's (with OpenSSL).
    cmd.env_remove("LD_LIBRARY_PATH");
    cmd.arg("-b").arg(broker.to_string());
    for s in settings {
        cmd.arg("-X").arg(s);
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is not installed: run scripts/test.sh, which installs it");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(data) = stdin {
        input.write_all(data).expect("kcat stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("kcat");
    assert!(
        out.status.success(),
        "kcat {args:?} {settings:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
