//! Requests one broker sends another outside replication: a transaction
//! coordinator's WriteTxnMarkers to partition leaders, and a leader's
//! KIP-890 check (AddPartitionsToTxn, verify only) with a coordinator.
//!
//! The client is the synchronous one the fetchers use, run on the blocking
//! pool; connections are kept per broker and reused, one request at a time
//! each (a call takes a connection out, and gives it back if it worked).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::protocol::Request;
use sluice_client::Client;
use sluice_client::security::ClientSecurity;

use super::Cluster;

/// How long a peer may take to answer before the connection is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Peers {
    idle: Mutex<HashMap<i32, Vec<Client>>>,
    /// How this broker connects to the others (the inter-broker listener's
    /// protocol and credentials).
    security: Arc<ClientSecurity>,
}

impl Peers {
    pub fn new(security: ClientSecurity) -> Peers {
        Peers {
            idle: Mutex::default(),
            security: Arc::new(security),
        }
    }

    /// Sends `req` to broker `node` and waits for its answer; an error (no
    /// such live broker, a refused connection, a timeout, a bad frame) is
    /// a reason to retry later, said in words for the log.
    pub async fn call<R>(
        self: &Arc<Self>,
        cluster: &Cluster,
        node: i32,
        version: i16,
        req: R,
    ) -> Result<R::Response, String>
    where
        R: Request + Send + 'static,
        R::Response: Send + 'static,
    {
        let broker = cluster
            .snapshot()
            .brokers
            .get(&node)
            .map(|b| format!("{}:{}", b.host, b.port))
            .ok_or_else(|| format!("broker {node} is not alive"))?;
        let peers = self.clone();
        let security = self.security.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = peers
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&node)
                .and_then(Vec::pop);
            let mut client = match pooled {
                Some(c) => c,
                None => {
                    let c = Client::connect_secure(broker.as_str(), &security)
                        .map_err(|e| e.to_string())?;
                    c.set_read_timeout(READ_TIMEOUT)
                        .map_err(|e| e.to_string())?;
                    c
                }
            };
            let response = client.call(version, &req).map_err(|e| e.to_string())?;
            peers
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(node)
                .or_default()
                .push(client);
            Ok(response)
        })
        .await
        .map_err(|e| format!("peer request task failed: {e}"))?
    }
}
