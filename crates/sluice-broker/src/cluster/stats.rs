//! The cluster's counters, plain atomics the metrics page reads.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::metrics::Page;

/// What the metadata plane has done, for the Prometheus page.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    /// The last etcd call, keepalive or watch message succeeded.
    pub etcd_connected: AtomicBool,
    /// Times etcd went from reachable to unreachable.
    pub etcd_disconnects: AtomicU64,
    /// Unary etcd requests sent (and streams opened).
    pub etcd_requests: AtomicU64,
    /// Key and value bytes sent in etcd requests (an estimate of the
    /// payload, not of the gRPC frames).
    pub etcd_sent_bytes: AtomicU64,
    /// Key and value bytes received in listings, watch events and reads.
    pub etcd_received_bytes: AtomicU64,
    /// Watch events applied to this broker's view.
    pub watch_events: AtomicU64,
    /// Full re-reads of the cluster state (start, lost watch, compaction,
    /// controller conflict).
    pub relists: AtomicU64,
    /// Times the controller seen in this broker's view changed.
    pub controller_changes: AtomicU64,
    /// Times this broker became the controller.
    pub controller_elections_won: AtomicU64,
    /// This broker is the controller now.
    pub is_controller: AtomicBool,
    /// The controller epoch in this broker's view (0: none).
    pub controller_epoch: AtomicI64,
    /// Controller transactions that failed their comparisons (stale view,
    /// or a newer controller).
    pub controller_txn_conflicts: AtomicU64,
    /// Partition states the controller wrote.
    pub partition_state_writes: AtomicU64,
    /// ISR change requests this broker sent as a leader (AlterPartition).
    pub isr_change_requests: AtomicU64,
    /// ISR change requests the controller accepted / refused.
    pub isr_requests_accepted: AtomicU64,
    pub isr_requests_refused: AtomicU64,
    /// Registrations of this broker (1 + re-registrations after a lost
    /// lease).
    pub registrations: AtomicU64,
    /// Times this broker's lease was found gone.
    pub lease_losses: AtomicU64,
}

impl ClusterMetrics {
    /// Prometheus text exposition.
    pub fn prometheus(&self, page: &mut Page<'_>) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let flag = |a: &AtomicBool| u64::from(a.load(Ordering::Relaxed));
        let gauges = [
            (
                "sluice_cluster_etcd_connected",
                "1 while etcd answers this broker.",
                flag(&self.etcd_connected),
            ),
            (
                "sluice_cluster_is_controller",
                "1 while this broker is the controller.",
                flag(&self.is_controller),
            ),
            (
                "sluice_cluster_controller_epoch",
                "The controller epoch this broker sees (0: no controller).",
                self.controller_epoch.load(Ordering::Relaxed).max(0) as u64,
            ),
        ];
        for (name, help, value) in gauges {
            page.one(name, help, "gauge", value);
        }
        let counters = [
            (
                "sluice_cluster_etcd_disconnects_total",
                "Times etcd became unreachable.",
                &self.etcd_disconnects,
            ),
            (
                "sluice_cluster_etcd_requests_total",
                "etcd requests sent and streams opened.",
                &self.etcd_requests,
            ),
            (
                "sluice_cluster_etcd_sent_bytes_total",
                "Key and value bytes sent to etcd.",
                &self.etcd_sent_bytes,
            ),
            (
                "sluice_cluster_etcd_received_bytes_total",
                "Key and value bytes received from etcd.",
                &self.etcd_received_bytes,
            ),
            (
                "sluice_cluster_watch_events_total",
                "etcd watch events applied.",
                &self.watch_events,
            ),
            (
                "sluice_cluster_relists_total",
                "Full re-reads of the cluster state.",
                &self.relists,
            ),
            (
                "sluice_cluster_controller_changes_total",
                "Controller changes seen.",
                &self.controller_changes,
            ),
            (
                "sluice_cluster_controller_elections_won_total",
                "Times this broker became controller.",
                &self.controller_elections_won,
            ),
            (
                "sluice_cluster_controller_txn_conflicts_total",
                "Controller writes refused by their comparisons.",
                &self.controller_txn_conflicts,
            ),
            (
                "sluice_cluster_partition_state_writes_total",
                "Partition states written by this controller.",
                &self.partition_state_writes,
            ),
            (
                "sluice_cluster_isr_change_requests_total",
                "ISR changes this broker asked the controller for.",
                &self.isr_change_requests,
            ),
            (
                "sluice_cluster_isr_requests_accepted_total",
                "ISR change requests this controller accepted.",
                &self.isr_requests_accepted,
            ),
            (
                "sluice_cluster_isr_requests_refused_total",
                "ISR change requests this controller refused.",
                &self.isr_requests_refused,
            ),
            (
                "sluice_cluster_registrations_total",
                "Registrations of this broker in etcd.",
                &self.registrations,
            ),
            (
                "sluice_cluster_lease_losses_total",
                "Times this broker's lease was found expired.",
                &self.lease_losses,
            ),
        ];
        for (name, help, value) in counters {
            page.one(name, help, "counter", get(value));
        }
    }
}
