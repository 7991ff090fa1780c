//! Security metadata a cluster shares: in a cluster the SCRAM credentials,
//! the ACLs and the client quotas are not each broker's files but one copy
//! in etcd (as Kafka keeps them in ZooKeeper or its metadata log), so a
//! user added, an ACL created or a quota set through any broker holds on
//! every broker.
//!
//! The stores stay what they are (validation, indexes, the request-path
//! lookups); what changes is where a change goes. Each store's state is a
//! set of lines (the lines of its file), each with an identity: a user and
//! mechanism, an ACL binding, a quota entity. With a [`SharedMetadata`]
//! attached, a change is written there as the lines it puts and the
//! identities it deletes, and the store's copy is replaced only by
//! [`install`](crate::security::credentials::CredentialStore::install)
//! from what the cluster holds — so every broker applies the same state,
//! including its own writes.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::Path;

/// Written into a cluster broker's data directory once its security
/// metadata comes from etcd, so `sluice user add --data-dir` refuses to
/// change files the broker no longer reads; removed when the broker runs
/// single-node again (its files are used then).
pub const IN_CLUSTER_FILE: &str = "security-in-cluster";

/// Marks `dir` as a cluster broker's: `where_` says where the metadata is.
pub fn mark_in_cluster(dir: &Path, where_: &str) -> io::Result<()> {
    let text = format!(
        "# This broker's SCRAM credentials, ACLs and client quotas live in the\n\
         # cluster's etcd ({where_}), not in this directory's files.\n\
         # Change them through a broker: sluice user add NAME -b HOST:PORT ...\n"
    );
    // Advisory only (it guards a CLI, not data): a plain write will do.
    std::fs::write(dir.join(IN_CLUSTER_FILE), text)
}

/// Removes the mark (a broker running without a cluster); true if it was there.
pub fn clear_in_cluster_mark(dir: &Path) -> io::Result<bool> {
    match std::fs::remove_file(dir.join(IN_CLUSTER_FILE)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The mark's text if `dir` belongs to a cluster broker.
pub fn in_cluster_mark(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(IN_CLUSTER_FILE)).ok()
}

/// Which store lines belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Credentials,
    Acls,
    Quotas,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Credentials, Kind::Acls, Kind::Quotas];

    /// The name of its file in a data directory, and of its key range in
    /// etcd.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Credentials => super::credentials::FILE,
            Kind::Acls => super::acl::FILE,
            Kind::Quotas => super::quotas::FILE,
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A store's state as lines, by identity.
pub type Lines = BTreeMap<String, String>;

/// The cluster's copy of the security metadata.
pub trait SharedMetadata: Send + Sync + fmt::Debug {
    /// Writes `puts` (identity, line) and removes `deletes` (identities)
    /// of one store. Returns once this broker's store has installed a state
    /// that includes the write (read-your-writes on the broker that took
    /// the request; the others follow as their watches deliver it). Called
    /// from blocking threads, never from async code.
    fn write(
        &self,
        kind: Kind,
        puts: Vec<(String, String)>,
        deletes: Vec<String>,
    ) -> io::Result<()>;
}

/// What turns `old` into `new`: the lines to put (new or changed) and the
/// identities to delete.
pub fn diff(old: &Lines, new: &Lines) -> (Vec<(String, String)>, Vec<String>) {
    let puts = new
        .iter()
        .filter(|(id, line)| old.get(*id) != Some(line))
        .map(|(id, line)| (id.clone(), line.clone()))
        .collect();
    let deletes = old
        .keys()
        .filter(|id| !new.contains_key(*id))
        .cloned()
        .collect();
    (puts, deletes)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::security::acl::{
        AclBinding, AclOperation, AclStore, PatternType, PermissionType, ResourceType,
    };
    use crate::security::credentials::CredentialStore;
    use crate::security::quotas::{Alteration, QuotaConfig, QuotaKey, Quotas};
    use crate::security::scram::{Credential, Mechanism};

    /// One write: the store, its puts and its deletes.
    type Write = (Kind, Vec<(String, String)>, Vec<String>);

    /// Records what the stores write; answers as a cluster would, or fails.
    #[derive(Debug, Default)]
    struct Recorder {
        writes: Mutex<Vec<Write>>,
        fail: bool,
    }

    impl SharedMetadata for Recorder {
        fn write(
            &self,
            kind: Kind,
            puts: Vec<(String, String)>,
            deletes: Vec<String>,
        ) -> io::Result<()> {
            if self.fail {
                return Err(io::Error::other("etcd unreachable"));
            }
            self.writes.lock().unwrap().push((kind, puts, deletes));
            Ok(())
        }
    }

    impl Recorder {
        fn take(&self) -> Vec<Write> {
            std::mem::take(&mut *self.writes.lock().unwrap())
        }
    }

    #[test]
    fn shared_stores_write_changes_out_and_hold_only_what_is_installed() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Arc::new(Recorder::default());

        // Credentials: an upsert is one put, by mechanism and user; the
        // store changes only on install; the file is not written.
        let credentials = CredentialStore::open(dir.path()).unwrap();
        credentials.share(recorder.clone());
        let c = Credential::new(Mechanism::Sha256, b"pw", 4096).unwrap();
        credentials
            .upsert("alice", Mechanism::Sha256, c.clone())
            .unwrap();
        let writes = recorder.take();
        assert_eq!(writes.len(), 1);
        let (kind, puts, deletes) = &writes[0];
        assert_eq!(*kind, Kind::Credentials);
        assert!(deletes.is_empty());
        assert_eq!(puts.len(), 1);
        assert_eq!(puts[0].0, "SCRAM-SHA-256\talice");
        assert_eq!(credentials.get("alice", Mechanism::Sha256), None);
        assert!(!dir.path().join(super::super::credentials::FILE).exists());
        credentials.install(&puts.iter().cloned().collect());
        assert_eq!(credentials.get("alice", Mechanism::Sha256), Some(c));
        // A deletion is one delete; a damaged line installed is skipped.
        assert!(credentials.delete("alice", Mechanism::Sha256).unwrap());
        let writes = recorder.take();
        assert_eq!(writes[0].2, vec!["SCRAM-SHA-256\talice".to_string()]);
        let mut lines = credentials.lines();
        lines.insert("x".into(), "SCRAM-SHA-256\tbob\tsalt=!!".into());
        credentials.install(&lines);
        assert_eq!(credentials.list().len(), 1);

        // ACLs: one key per binding.
        let acls = AclStore::in_memory();
        acls.share(recorder.clone());
        let b = AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: "orders".into(),
            pattern_type: PatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: AclOperation::Read,
            permission: PermissionType::Allow,
        };
        acls.create(std::slice::from_ref(&b)).unwrap();
        let writes = recorder.take();
        assert_eq!(writes[0].0, Kind::Acls);
        assert_eq!(writes[0].1.len(), 1);
        assert!(acls.is_empty());
        acls.install(&writes[0].1.iter().cloned().collect());
        assert_eq!(
            acls.describe(&super::super::acl::AclBindingFilter::any()),
            vec![b]
        );

        // Quotas: one key per entity; a failed write refuses the entry and
        // changes nothing.
        let quotas = Quotas::new(QuotaConfig::default());
        quotas.share(recorder.clone());
        let set = Alteration {
            entity: vec![("user".into(), Some("alice".into()))],
            ops: vec![("producer_byte_rate".into(), Some(1024.0))],
        };
        assert!(quotas.alter(std::slice::from_ref(&set), false)[0].is_ok());
        let writes = recorder.take();
        assert_eq!(writes[0].1[0].0, "user=alice");
        assert!(
            quotas
                .quota_for(QuotaKey::ProducerByteRate, "alice", "c")
                .is_none()
        );
        quotas.install(&writes[0].1.iter().cloned().collect());
        assert_eq!(
            quotas
                .quota_for(QuotaKey::ProducerByteRate, "alice", "c")
                .map(|(_, v)| v),
            Some(1024.0)
        );
        let failing = Arc::new(Recorder {
            fail: true,
            ..Recorder::default()
        });
        let quotas = Quotas::new(QuotaConfig::default());
        quotas.share(failing);
        assert!(quotas.alter(&[set], false)[0].is_err());
    }

    #[test]
    fn a_diff_puts_what_is_new_or_changed_and_deletes_what_is_gone() {
        let old: Lines = [("a", "1"), ("b", "2"), ("c", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let new: Lines = [("a", "1"), ("b", "20"), ("d", "4")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (puts, deletes) = diff(&old, &new);
        assert_eq!(
            puts,
            vec![
                ("b".to_string(), "20".to_string()),
                ("d".to_string(), "4".to_string())
            ]
        );
        assert_eq!(deletes, vec!["c".to_string()]);
        assert_eq!(diff(&new, &new), (vec![], vec![]));
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
    }
}
