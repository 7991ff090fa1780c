//! The security metadata of a cluster broker lives in etcd, not in its
//! data directory: SCRAM credentials, ACLs and client quotas are kept under
//! `<prefix>/security/<store>/<identity>`, one key per line of the
//! single-node file, and every broker's stores are replaced from its watch
//! of them. A change made through one broker (AlterUserScramCredentials,
//! CreateAcls, AlterClientQuotas, …) is written to etcd and answered once
//! that broker's own stores show it; the other brokers apply it as their
//! watches deliver it (milliseconds), as Kafka's brokers apply ZooKeeper's
//! or the metadata log's changes.
//!
//! A new cluster starts from the files of the first broker to join it
//! (`sluice user add --data-dir` before any broker runs, like Kafka's
//! `kafka-storage format --add-scram`); after that the files are ignored.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::security::acl::AclStore;
use crate::security::credentials::CredentialStore;
use crate::security::quotas::Quotas;
use crate::security::shared::{Kind, Lines, SharedMetadata};

/// How long a write waits for this broker's watch to bring it back.
const INSTALL_WAIT: Duration = Duration::from_secs(10);

/// The stores a broker keeps in step with the cluster.
#[derive(Clone)]
pub struct Stores {
    pub credentials: Arc<CredentialStore>,
    pub quotas: Arc<Quotas>,
    /// None without `--authorizer acl`: the ACLs stay in etcd, unused here.
    pub acls: Option<Arc<crate::security::acl::Authorizer>>,
}

impl Stores {
    fn acl_store(&self) -> Option<&AclStore> {
        self.acls.as_deref().map(|a| a.store())
    }

    fn lines(&self, kind: Kind) -> Option<Lines> {
        match kind {
            Kind::Credentials => Some(self.credentials.lines()),
            Kind::Quotas => Some(self.quotas.lines()),
            Kind::Acls => self.acl_store().map(AclStore::lines),
        }
    }

    fn install(&self, kind: Kind, lines: &Lines) {
        match kind {
            Kind::Credentials => self.credentials.install(lines),
            Kind::Quotas => self.quotas.install(lines),
            Kind::Acls => {
                if let Some(store) = self.acl_store() {
                    store.install(lines);
                }
            }
        }
    }

    fn share(&self, shared: Arc<dyn SharedMetadata>) {
        self.credentials.share(shared.clone());
        self.quotas.share(shared.clone());
        if let Some(store) = self.acl_store() {
            store.share(shared);
        }
    }
}

/// [`SharedMetadata`] in etcd.
struct EtcdSecurity {
    cluster: Arc<Cluster>,
    runtime: tokio::runtime::Handle,
    /// The revision of the last cluster snapshot installed in the stores.
    installed: watch::Sender<i64>,
}

impl std::fmt::Debug for EtcdSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSecurity")
            .field("installed", &*self.installed.borrow())
            .finish_non_exhaustive()
    }
}

impl EtcdSecurity {
    async fn write_and_wait(
        &self,
        kind: Kind,
        puts: Vec<(String, String)>,
        deletes: Vec<String>,
    ) -> io::Result<()> {
        let revision = self
            .cluster
            .write_security(kind.name(), puts, deletes)
            .await
            .map_err(|e| io::Error::other(format!("writing {} to etcd: {e}", kind.name())))?;
        self.wait_installed(revision).await
    }

    async fn wait_installed(&self, revision: i64) -> io::Result<()> {
        let mut installed = self.installed.subscribe();
        match tokio::time::timeout(INSTALL_WAIT, installed.wait_for(|r| *r >= revision)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "written to etcd at revision {revision}, but this broker's watch has not \
                     brought it back within {INSTALL_WAIT:?}"
                ),
            )),
        }
    }
}

impl SharedMetadata for EtcdSecurity {
    fn write(
        &self,
        kind: Kind,
        puts: Vec<(String, String)>,
        deletes: Vec<String>,
    ) -> io::Result<()> {
        // The stores are changed from blocking threads (`off_runtime`),
        // where waiting on the runtime is allowed.
        self.runtime
            .block_on(self.write_and_wait(kind, puts, deletes))
    }
}

/// Puts the stores in step with the cluster: from now on their changes go
/// to etcd and their contents come from it. A new cluster first takes this
/// broker's files. Returns once the stores hold the cluster's state.
pub async fn start(cluster: Arc<Cluster>, stores: Stores) -> io::Result<()> {
    let local: Vec<(String, String, String)> = Kind::ALL
        .into_iter()
        .filter_map(|kind| stores.lines(kind).map(|lines| (kind, lines)))
        .flat_map(|(kind, lines)| {
            lines
                .into_iter()
                .map(move |(id, line)| (kind.name().to_string(), id, line))
        })
        .collect();
    let backend = Arc::new(EtcdSecurity {
        cluster: cluster.clone(),
        runtime: tokio::runtime::Handle::current(),
        installed: watch::channel(0).0,
    });
    stores.share(backend.clone());
    let mut rx = cluster.subscribe();
    let installer = backend.clone();
    tokio::spawn(async move {
        let mut seen: BTreeMap<Kind, Option<Arc<BTreeMap<String, String>>>> = BTreeMap::new();
        loop {
            let snap = rx.borrow_and_update().clone();
            for kind in Kind::ALL {
                let lines = snap.security.get(kind.name()).cloned();
                let unchanged = match (seen.get(&kind), &lines) {
                    (Some(Some(a)), Some(b)) => Arc::ptr_eq(a, b),
                    (Some(None), None) => true,
                    _ => false,
                };
                if !unchanged {
                    stores.install(kind, lines.as_deref().unwrap_or(&Lines::new()));
                    seen.insert(kind, lines);
                }
            }
            installer.installed.send_replace(snap.revision);
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
    let count = local.len();
    match cluster.bootstrap_security(local).await {
        Ok(Some(revision)) => {
            tracing::info!(
                "this broker started the cluster's security metadata: {count} lines of its \
                 SCRAM credentials, ACLs and client quotas are now in etcd"
            );
            backend.wait_installed(revision).await
        }
        Ok(None) => {
            if count > 0 {
                tracing::info!(
                    "the cluster's SCRAM credentials, ACLs and client quotas are in etcd; \
                     this broker's files ({count} lines) are not used"
                );
            }
            backend.wait_installed(cluster.snapshot().revision).await
        }
        Err(e) => Err(io::Error::other(format!(
            "reading the cluster's security metadata: {e}"
        ))),
    }
}
