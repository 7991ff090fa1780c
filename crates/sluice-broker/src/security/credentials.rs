//! The SCRAM credentials of a single-node broker: one file in the data
//! directory, `scram-credentials`, holding what Kafka keeps per user and
//! mechanism (salt, StoredKey, ServerKey, iterations — never a password).
//!
//! Format, one line per user and mechanism, sorted:
//! `<mechanism> <TAB> <user> <TAB> salt=…,stored_key=…,server_key=…,iterations=N`.
//! Every change rewrites the file whole: written to `scram-credentials.tmp`,
//! synced, renamed over the old one, and the directory synced, so a crash
//! leaves either the old file or the new one.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::scram::{Credential, Mechanism};
use super::shared::{Kind, Lines, SharedMetadata, diff};

pub const FILE: &str = "scram-credentials";

/// Whether `user` can be stored: a SASL name without control characters
/// (tabs and newlines would break the file), at most 255 bytes.
pub fn valid_user(user: &str) -> bool {
    !user.is_empty() && user.len() <= 255 && !user.chars().any(char::is_control)
}

type Users = BTreeMap<(String, Mechanism), Credential>;

#[derive(Debug)]
pub struct CredentialStore {
    path: PathBuf,
    /// One change at a time (held across the write, which no reader waits
    /// for).
    writer: Mutex<()>,
    users: Mutex<Arc<Users>>,
    /// In a cluster: where changes go instead of the file.
    shared: OnceLock<Arc<dyn SharedMetadata>>,
}

/// A stored line: `<mechanism> TAB <user> TAB <credential>`.
fn line_of(user: &str, mechanism: Mechanism, credential: &Credential) -> String {
    format!("{}\t{user}\t{}", mechanism.name(), credential.to_text())
}

fn parse_line(line: &str) -> Option<((String, Mechanism), Credential)> {
    let mut parts = line.splitn(3, '\t');
    let mechanism = parts.next().and_then(Mechanism::from_name)?;
    let user = parts.next().filter(|u| valid_user(u))?;
    let credential = parts.next().and_then(Credential::from_text)?;
    Some(((user.to_string(), mechanism), credential))
}

/// A line's identity: its mechanism and user.
fn identity(user: &str, mechanism: Mechanism) -> String {
    format!("{}\t{user}", mechanism.name())
}

fn lines_of(users: &Users) -> Lines {
    users
        .iter()
        .map(|((u, m), c)| (identity(u, *m), line_of(u, *m, c)))
        .collect()
}

impl CredentialStore {
    /// Reads `dir/scram-credentials` (none yet: no users).
    pub fn open(dir: &Path) -> io::Result<CredentialStore> {
        let path = dir.join(FILE);
        let mut users = BTreeMap::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    if line.is_empty() {
                        continue;
                    }
                    let (key, credential) = parse_line(line).ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: line {} does not parse", path.display(), n + 1),
                        )
                    })?;
                    users.insert(key, credential);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(CredentialStore {
            path,
            writer: Mutex::new(()),
            users: Mutex::new(Arc::new(users)),
            shared: OnceLock::new(),
        })
    }

    fn current(&self) -> Arc<Users> {
        self.users.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn get(&self, user: &str, mechanism: Mechanism) -> Option<Credential> {
        self.current().get(&(user.to_string(), mechanism)).cloned()
    }

    /// Every (user, mechanism, iterations), sorted.
    pub fn list(&self) -> Vec<(String, Mechanism, u32)> {
        self.current()
            .iter()
            .map(|((u, m), c)| (u.clone(), *m, c.iterations))
            .collect()
    }

    /// The credentials as lines by identity (what a cluster shares).
    pub fn lines(&self) -> Lines {
        lines_of(&self.current())
    }

    /// From now on changes go to `shared`, and the store holds what
    /// [`install`](Self::install) gives it; the file is left alone.
    pub fn share(&self, shared: Arc<dyn SharedMetadata>) {
        let _ = self.shared.set(shared);
    }

    /// Replaces the credentials with the cluster's. A line that does not
    /// parse is skipped with a warning (one bad key must not lock everyone
    /// out).
    pub fn install(&self, lines: &Lines) {
        let mut users = BTreeMap::new();
        for (id, line) in lines {
            match parse_line(line) {
                Some((key, credential)) => {
                    users.insert(key, credential);
                }
                None => tracing::warn!("ignoring the SCRAM credential {id:?}: it does not parse"),
            }
        }
        *self.users.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(users);
    }

    /// Adds or replaces a user's credential for a mechanism, durably.
    pub fn upsert(
        &self,
        user: &str,
        mechanism: Mechanism,
        credential: Credential,
    ) -> io::Result<()> {
        if !valid_user(user) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a user name is 1 to 255 bytes without control characters",
            ));
        }
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current();
        let mut next = (*old).clone();
        next.insert((user.to_string(), mechanism), credential);
        self.commit(&old, next)
    }

    /// Removes a user's credential for a mechanism; false if there was none.
    pub fn delete(&self, user: &str, mechanism: Mechanism) -> io::Result<bool> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let key = (user.to_string(), mechanism);
        let old = self.current();
        let mut next = (*old).clone();
        if next.remove(&key).is_none() {
            return Ok(false);
        }
        self.commit(&old, next)?;
        Ok(true)
    }

    /// Makes `next`, made from `old`, the credentials (the writer lock
    /// held): through the cluster, or the file and then memory. In a
    /// cluster only the difference from `old` is written: the store may
    /// have installed another broker's change since `old` was read, and
    /// diffing against that would delete it.
    fn commit(&self, old: &Users, next: Users) -> io::Result<()> {
        if let Some(shared) = self.shared.get() {
            let (puts, deletes) = diff(&lines_of(old), &lines_of(&next));
            return shared.write(Kind::Credentials, puts, deletes);
        }
        self.write(&next)?;
        *self.users.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(())
    }

    fn write(&self, users: &Users) -> io::Result<()> {
        let mut text = String::new();
        for line in lines_of(users).values() {
            text.push_str(line);
            text.push('\n');
        }
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_survive_a_reopen_and_never_hold_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::open(dir.path()).unwrap();
        assert!(store.list().is_empty());
        let c = Credential::new(Mechanism::Sha512, b"hunter2-pw", 4096).unwrap();
        store.upsert("alice", Mechanism::Sha512, c.clone()).unwrap();
        let c256 = Credential::new(Mechanism::Sha256, b"hunter2-pw", 8192).unwrap();
        store
            .upsert("bob=,x", Mechanism::Sha256, c256.clone())
            .unwrap();
        assert!(
            store
                .upsert("bad\tname", Mechanism::Sha256, c256.clone())
                .is_err()
        );
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        let again = CredentialStore::open(dir.path()).unwrap();
        assert_eq!(again.get("alice", Mechanism::Sha512), Some(c));
        assert_eq!(again.get("alice", Mechanism::Sha256), None);
        assert_eq!(
            again.list(),
            vec![
                ("alice".to_string(), Mechanism::Sha512, 4096),
                ("bob=,x".to_string(), Mechanism::Sha256, 8192)
            ]
        );
        assert!(again.delete("alice", Mechanism::Sha512).unwrap());
        assert!(!again.delete("alice", Mechanism::Sha512).unwrap());
        let third = CredentialStore::open(dir.path()).unwrap();
        assert_eq!(third.list().len(), 1);
        assert!(!dir.path().join("scram-credentials.tmp").exists());
    }

    #[test]
    fn a_damaged_file_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "SCRAM-SHA-256\talice\tsalt=!!\n").unwrap();
        let err = CredentialStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
