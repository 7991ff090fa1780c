//! The metadata plane against a real etcd: each test runs its own etcd
//! process on free loopback ports and several `Cluster`s in this process.
//!
//! etcd must be installed (`scripts/test.sh` installs Debian's
//! `etcd-server`); without it these tests fail, they do not skip.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_broker::ClusterConfig;
use sluice_broker::cluster::{Cluster, ClusterError, ClusterSnapshot, PartitionState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TTL: Duration = Duration::from_secs(2);

fn etcd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_ETCD") {
        return PathBuf::from(path);
    }
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let path = PathBuf::from(dir).join("etcd");
        if path.exists() {
            return path;
        }
    }
    panic!(
        "etcd is not installed (looked for /usr/bin/etcd and /usr/local/bin/etcd, or set \
         SLUICE_ETCD): install Debian's etcd-server, as scripts/test.sh does"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// One etcd member on loopback, killed when dropped.
struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client: u16,
    peer: u16,
}

impl Etcd {
    async fn start() -> Etcd {
        let mut etcd = Etcd {
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
            client: free_port(),
            peer: free_port(),
        };
        etcd.spawn().await;
        etcd
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    /// (Re)starts the process on the same ports and data directory and
    /// waits for it to report healthy.
    async fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client);
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let child = Command::new(etcd_binary())
            .arg("--name")
            .arg("n0")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("n0={peer}")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "250"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.healthy().await {
            assert!(Instant::now() < deadline, "etcd did not become healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn healthy(&self) -> bool {
        let Ok(mut conn) = tokio::net::TcpStream::connect(("127.0.0.1", self.client)).await else {
            return false;
        };
        let request = "GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n";
        if conn.write_all(request.as_bytes()).await.is_err() {
            return false;
        }
        let mut body = String::new();
        let read = tokio::time::timeout(Duration::from_secs(1), conn.read_to_string(&mut body));
        matches!(read.await, Ok(Ok(_))) && body.contains("\"health\":\"true\"")
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None)
            .await
            .expect("connect to etcd")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config(etcd: &Etcd, prefix: &str) -> ClusterConfig {
    ClusterConfig {
        endpoints: vec![etcd.endpoint()],
        prefix: prefix.into(),
        lease_ttl: TTL,
        default_replication_factor: 3,
        ..ClusterConfig::default()
    }
}

async fn start(etcd: &Etcd, prefix: &str, id: i32) -> Arc<Cluster> {
    Cluster::start(
        id,
        "127.0.0.1".into(),
        9000 + id as u16,
        Vec::new(),
        &config(etcd, prefix),
    )
    .await
    .unwrap_or_else(|e| panic!("broker {id} failed to join: {e}"))
}

/// Polls until `ok` holds on the snapshot of every cluster in `on`.
async fn until(
    what: &str,
    within: Duration,
    on: &[&Arc<Cluster>],
    ok: impl Fn(&ClusterSnapshot) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        if on.iter().all(|c| ok(&c.snapshot())) {
            return;
        }
        if Instant::now() > deadline {
            let snaps: Vec<_> = on.iter().map(|c| c.snapshot()).collect();
            panic!("timed out waiting for {what}: {snaps:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until_true(what: &str, within: Duration, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn state(snap: &ClusterSnapshot, topic: &str, p: i32) -> PartitionState {
    snap.partition(topic, p)
        .cloned()
        .unwrap_or_else(|| panic!("no state for {topic}-{p}"))
}

fn controller_of<'a>(clusters: &[&'a Arc<Cluster>]) -> &'a Arc<Cluster> {
    let controllers: Vec<_> = clusters.iter().filter(|c| c.is_controller()).collect();
    assert_eq!(controllers.len(), 1, "exactly one controller");
    controllers[0]
}

const WAIT: Duration = Duration::from_secs(10);

/// Three brokers: one controller; a topic with rf 3 gets its partition
/// states everywhere; admin errors; AlterPartition accepted and refused; a
/// broker leaving moves its leaderships; the controller leaving hands over
/// to another broker that still handles the death; a stale controller's
/// write is fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_topics_isr_and_failover() {
    let etcd = Etcd::start().await;
    let b1 = start(&etcd, "/sluice", 1).await;
    let b2 = start(&etcd, "/sluice", 2).await;
    let b3 = start(&etcd, "/sluice", 3).await;
    let all = [&b1, &b2, &b3];
    until("three brokers and a controller", WAIT, &all, |s| {
        s.brokers.len() == 3 && s.controller.is_some()
    })
    .await;
    until_true("one broker to know it is the controller", WAIT, || {
        all.iter().filter(|c| c.is_controller()).count() == 1
    })
    .await;
    let cluster_id = b1.cluster_id();
    assert_eq!(cluster_id.len(), 22, "{cluster_id}");
    assert!(all.iter().all(|c| c.cluster_id() == cluster_id));
    let first_controller = controller_of(&all).clone();
    let first_epoch = b1.snapshot().controller_epoch;
    assert_eq!(b1.snapshot().controller, Some(first_controller.node_id()));
    assert!(first_epoch > 0);
    for c in all {
        assert_eq!(c.snapshot().brokers[&2].port, 9002);
        assert!(c.etcd_connected());
    }

    // CreateTopics and its refusals.
    let info = b2
        .create_topic("orders", 3, 3, None, BTreeMap::new(), false)
        .await
        .expect("create topic");
    assert_eq!(info.replicas.len(), 3);
    let leaders: std::collections::BTreeSet<i32> = info.replicas.iter().map(|r| r[0]).collect();
    assert_eq!(leaders.len(), 3, "leaders spread: {:?}", info.replicas);
    until("partition states with ISR of 3", WAIT, &all, |s| {
        (0..3).all(|p| {
            s.partition("orders", p).is_some_and(|st| {
                st.isr.len() == 3
                    && st.leader == info.replicas[p as usize][0]
                    && st.leader_epoch == 0
                    && st.controller_epoch == first_epoch
            })
        })
    })
    .await;
    assert_eq!(
        b3.create_topic("orders", 1, 1, None, BTreeMap::new(), false)
            .await,
        Err(ClusterError::TopicExists)
    );
    assert!(matches!(
        b3.create_topic("big", 1, 4, None, BTreeMap::new(), false)
            .await,
        Err(ClusterError::InvalidReplicationFactor(_))
    ));
    assert!(matches!(
        b3.create_topic(
            "bad",
            -1,
            -1,
            Some(vec![vec![1, 2], vec![3]]),
            BTreeMap::new(),
            false
        )
        .await,
        Err(ClusterError::InvalidReplicaAssignment(_))
    ));
    assert!(matches!(
        b3.create_topic(
            "bad",
            -1,
            -1,
            Some(vec![vec![1, 7]]),
            BTreeMap::new(),
            false
        )
        .await,
        Err(ClusterError::InvalidReplicaAssignment(_))
    ));
    assert!(matches!(
        b3.create_topic("a/b", 1, 1, None, BTreeMap::new(), false)
            .await,
        Err(ClusterError::InvalidTopic(_))
    ));
    let dry = b3
        .create_topic("dry", 2, 2, None, BTreeMap::new(), true)
        .await
        .expect("validate only");
    assert_eq!(dry.replicas.len(), 2);
    let manual = b1
        .create_topic(
            "manual",
            -1,
            -1,
            Some(vec![vec![3, 1]]),
            BTreeMap::new(),
            false,
        )
        .await
        .expect("manual assignment");
    assert_eq!(manual.replicas, vec![vec![3, 1]]);
    until("manual topic led by 3", WAIT, &all, |s| {
        s.partition("manual", 0)
            .is_some_and(|st| st.leader == 3 && st.isr == vec![3, 1])
    })
    .await;
    assert!(!b1.snapshot().topics.contains_key("dry"));

    // AlterPartition: the leader shrinks the ISR, then restores it.
    let p0 = state(&b1.snapshot(), "orders", 0);
    let leader = all.iter().find(|c| c.node_id() == p0.leader).unwrap();
    let other = info.replicas[0][1];
    let shrunk = leader
        .alter_isr(
            "orders",
            0,
            p0.leader_epoch,
            p0.partition_epoch,
            vec![p0.leader, other],
        )
        .await
        .expect("alter isr");
    assert_eq!(shrunk.isr, vec![p0.leader, other]);
    assert_eq!(shrunk.partition_epoch, p0.partition_epoch + 1);
    assert_eq!(shrunk.leader_epoch, p0.leader_epoch);
    // A stale partition epoch is refused: the current state comes back.
    let stale = leader
        .alter_isr(
            "orders",
            0,
            p0.leader_epoch,
            p0.partition_epoch,
            p0.isr.clone(),
        )
        .await
        .expect("stale alter isr");
    assert_eq!(stale, shrunk);
    // A request from a broker that is not the leader reaches the controller
    // and is refused there.
    let not_leader = all.iter().find(|c| c.node_id() == other).unwrap();
    let refused = not_leader
        .alter_isr(
            "orders",
            0,
            shrunk.leader_epoch,
            shrunk.partition_epoch,
            vec![other],
        )
        .await
        .expect("refused alter isr");
    assert_eq!(refused, shrunk);
    until_true("the controller to count the refusal", WAIT, || {
        all.iter()
            .map(|c| {
                c.metrics()
                    .isr_requests_refused
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum::<u64>()
            >= 1
    })
    .await;
    let restored = leader
        .alter_isr(
            "orders",
            0,
            shrunk.leader_epoch,
            shrunk.partition_epoch,
            p0.isr.clone(),
        )
        .await
        .expect("restore isr");
    assert_eq!(restored.isr, p0.isr);
    assert_eq!(restored.partition_epoch, p0.partition_epoch + 2);

    // A broker that is not the controller leaves.
    let leaving = all
        .iter()
        .find(|c| !c.is_controller())
        .map(|c| (*c).clone())
        .unwrap();
    let gone = leaving.node_id();
    until("every view to show the restored ISR", WAIT, &all, |s| {
        s.partition("orders", 0) == Some(&restored)
    })
    .await;
    let before = b1.snapshot();
    let staying: Vec<&Arc<Cluster>> = all
        .iter()
        .copied()
        .filter(|c| c.node_id() != gone)
        .collect();
    leaving.shutdown().await;
    until("its leaderships to move", WAIT, &staying, |s| {
        !s.brokers.contains_key(&gone)
            && (0..3).all(|p| {
                s.partition("orders", p)
                    .is_some_and(|st| st.leader != gone && !st.isr.contains(&gone))
            })
    })
    .await;
    let after = b1.snapshot();
    let after = if gone == 1 { b2.snapshot() } else { after };
    for p in 0..3 {
        let (old, new) = (state(&before, "orders", p), state(&after, "orders", p));
        let expected_isr: Vec<i32> = old.isr.iter().copied().filter(|b| *b != gone).collect();
        assert_eq!(new.isr, expected_isr, "partition {p}");
        if old.leader == gone {
            let replicas = &info.replicas[p as usize];
            let expected = *replicas.iter().find(|b| expected_isr.contains(b)).unwrap();
            assert_eq!(
                new.leader, expected,
                "partition {p}: first live ISR replica"
            );
            assert_eq!(new.leader_epoch, old.leader_epoch + 1);
        } else {
            assert_eq!(new.leader, old.leader);
            assert_eq!(new.leader_epoch, old.leader_epoch);
        }
        assert_eq!(new.partition_epoch, old.partition_epoch + 1);
    }

    // The controller leaves: the last broker takes over and moves the
    // partitions the controller led.
    let controller = controller_of(&staying).clone();
    let last = staying
        .iter()
        .find(|c| c.node_id() != controller.node_id())
        .map(|c| (*c).clone())
        .unwrap();
    let old_key = controller
        .election_key()
        .expect("the controller's election key");
    let old_epoch = last.snapshot().controller_epoch;
    controller.shutdown().await;
    let survivor = last.node_id();
    until("the survivor to lead everything", WAIT, &[&last], |s| {
        s.controller == Some(survivor)
            && s.controller_epoch > old_epoch
            && (0..3).all(|p| {
                s.partition("orders", p)
                    .is_some_and(|st| st.leader == survivor && st.isr == vec![survivor])
            })
    })
    .await;
    assert!(last.is_controller());
    let snap = last.snapshot();
    for p in 0..3 {
        assert_eq!(
            state(&snap, "orders", p).controller_epoch,
            snap.controller_epoch
        );
    }

    // The old controller's epoch is fenced; the current one writes.
    let mut forged = state(&snap, "orders", 0);
    forged.leader = -1;
    assert_eq!(
        last.write_partition_as_controller(&old_key, old_epoch, "orders", 0, forged.clone())
            .await,
        Err(ClusterError::Fenced)
    );
    assert_eq!(state(&last.snapshot(), "orders", 0).leader, survivor);
    let new_key = last.election_key().expect("the new controller's key");
    assert_ne!(new_key, old_key);
    let mut legit = state(&snap, "orders", 0);
    legit.partition_epoch += 1;
    legit.controller_epoch = snap.controller_epoch;
    last.write_partition_as_controller(&new_key, snap.controller_epoch, "orders", 0, legit)
        .await
        .expect("the current controller writes");

    // Delete, and create more partitions.
    last.delete_topic("manual").await.expect("delete topic");
    assert_eq!(
        last.delete_topic("manual").await,
        Err(ClusterError::UnknownTopic)
    );
    until("the deleted topic to vanish", WAIT, &[&last], |s| {
        !s.topics.contains_key("manual") && s.partition("manual", 0).is_none()
    })
    .await;
    last.create_partitions("orders", 4, Some(vec![vec![survivor, 1]]), false)
        .await
        .expect_err("broker 1 is not alive");
    last.create_partitions("orders", 5, None, false)
        .await
        .expect_err("rf 3 with one broker");
    last.shutdown().await;
}

/// A broker that dies without revoking (its lease expires), a broker that
/// restarts before its old lease expired (a new incarnation), and a broker
/// whose lease is revoked under it (it registers again); `confirm_lease`
/// through all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_restart_and_lost_lease() {
    let etcd = Etcd::start().await;
    let b1 = start(&etcd, "/lease", 1).await;
    let b2 = start(&etcd, "/lease", 2).await;
    let b3 = start(&etcd, "/lease", 3).await;
    until("three brokers", WAIT, &[&b1, &b2, &b3], |s| {
        s.brokers.len() == 3
    })
    .await;
    b1.create_topic(
        "t",
        -1,
        -1,
        Some(vec![vec![3, 1, 2], vec![1, 2, 3]]),
        BTreeMap::new(),
        false,
    )
    .await
    .expect("create");
    until("states", WAIT, &[&b1, &b2], |s| {
        s.partition("t", 0)
            .is_some_and(|st| st.leader == 3 && st.isr.len() == 3)
            && s.partition("t", 1).is_some_and(|st| st.leader == 1)
    })
    .await;
    b3.confirm_lease()
        .await
        .expect("a fresh lease is confirmed");

    // Broker 3 crashes: no revoke, the lease expires after the TTL.
    let crashed_at = Instant::now();
    let old_incarnation = b1.snapshot().brokers[&3].incarnation;
    assert_eq!(b3.incarnation(), old_incarnation);
    drop(b3);
    until("broker 3's lease to expire", WAIT, &[&b1, &b2], |s| {
        !s.brokers.contains_key(&3)
            && s.partition("t", 0)
                .is_some_and(|st| st.leader == 1 && st.leader_epoch == 1)
            && s.partition("t", 1).is_some_and(|st| !st.isr.contains(&3))
    })
    .await;
    // The lease ran from the last keepalive, sent up to TTL/3 before.
    assert!(crashed_at.elapsed() >= TTL / 2);
    let s = b1.snapshot();
    assert_eq!(state(&s, "t", 0).isr, vec![1, 2]);
    assert_eq!(state(&s, "t", 1).isr, vec![1, 2]);

    // Broker 3 comes back; the leader (1) lets it into the ISR again.
    let b3 = start(&etcd, "/lease", 3).await;
    until("broker 3 back", WAIT, &[&b1], |s| {
        s.brokers.contains_key(&3)
    })
    .await;
    assert!(b1.snapshot().brokers[&3].incarnation > old_incarnation);
    let p0 = state(&b1.snapshot(), "t", 0);
    let grown = b1
        .alter_isr("t", 0, p0.leader_epoch, p0.partition_epoch, vec![1, 2, 3])
        .await
        .expect("grow isr");
    assert_eq!(grown.isr, vec![1, 2, 3]);

    // Broker 1 (leader of both) restarts before its lease expires: the
    // new registration replaces the old one, and the controller treats it
    // as a death and a return.
    let b1_incarnation = b1.incarnation();
    let before = b2.snapshot();
    drop(b1);
    let b1 = start(&etcd, "/lease", 1).await;
    assert!(b1.incarnation() > b1_incarnation);
    until(
        "broker 1's leaderships to move",
        WAIT,
        &[&b1, &b2, &b3],
        |s| {
            s.brokers
                .get(&1)
                .is_some_and(|b| b.incarnation > b1_incarnation)
                && (0..2).all(|p| {
                    s.partition("t", p)
                        .is_some_and(|st| st.leader != 1 && !st.isr.contains(&1))
                })
        },
    )
    .await;
    let after = b2.snapshot();
    for p in 0..2 {
        assert_eq!(
            state(&after, "t", p).leader_epoch,
            state(&before, "t", p).leader_epoch + 1
        );
    }
    assert_eq!(
        state(&after, "t", 0).leader,
        3,
        "replicas [3, 1, 2], ISR [2, 3]"
    );
    assert_eq!(state(&after, "t", 1).leader, 2, "replicas [1, 2, 3]");

    // Broker 2's lease is revoked under it: confirm_lease says so, and the
    // broker registers again with a new incarnation.
    let lease = b2.lease_id();
    let incarnation = b2.incarnation();
    b2.confirm_incarnation(incarnation)
        .await
        .expect("confirmed");
    etcd.client()
        .await
        .lease_revoke(lease)
        .await
        .expect("revoke broker 2's lease");
    // Outdate the last confirmation so the next call asks etcd.
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    let deadline = Instant::now() + WAIT;
    loop {
        match b2.confirm_incarnation(incarnation).await {
            Err(ClusterError::LeaseLost) => break,
            Ok(()) => panic!("a revoked lease was confirmed"),
            Err(e) => {
                assert!(Instant::now() < deadline, "confirm_lease: {e}");
            }
        }
    }
    until_true("broker 2 to register again", WAIT, || {
        b2.incarnation() > incarnation
    })
    .await;
    assert_ne!(b2.lease_id(), lease);
    b2.confirm_lease()
        .await
        .expect("the new lease is confirmed");
    assert_eq!(
        b2.confirm_incarnation(incarnation).await,
        Err(ClusterError::LeaseLost)
    );
    assert!(
        b2.metrics()
            .lease_losses
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    until(
        "broker 2 registered again everywhere",
        WAIT,
        &[&b1, &b3],
        |s| {
            s.brokers
                .get(&2)
                .is_some_and(|b| b.incarnation > incarnation)
                && (0..2).all(|p| s.partition("t", p).is_some_and(|st| st.leader >= 0))
        },
    )
    .await;
    for c in [&b1, &b2, &b3] {
        c.shutdown().await;
    }
}

/// etcd killed and restarted on the same ports and data: every broker sees
/// it go and come back, re-reads the state, and the cluster keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart() {
    let mut etcd = Etcd::start().await;
    let b1 = start(&etcd, "/restart", 1).await;
    let b2 = start(&etcd, "/restart", 2).await;
    let both = [&b1, &b2];
    until("two brokers", WAIT, &both, |s| {
        s.brokers.len() == 2 && s.controller.is_some()
    })
    .await;
    b1.create_topic("before", 2, 2, None, BTreeMap::new(), false)
        .await
        .expect("create");
    until("states", WAIT, &both, |s| {
        s.partition("before", 1).is_some()
    })
    .await;
    let relists: Vec<u64> = both
        .iter()
        .map(|c| {
            c.metrics()
                .relists
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .collect();
    let epoch = b1.snapshot().controller_epoch;
    // Compact the history away first: the brokers must re-read, not
    // replay.
    let mut client = etcd.client().await;
    let head = client
        .get("/", None)
        .await
        .expect("read the revision")
        .header()
        .map_or(0, |h| h.revision());
    client.compact(head, None).await.expect("compact");

    etcd.kill();
    until_true("both to see etcd gone", WAIT, || {
        both.iter().all(|c| !c.etcd_connected())
    })
    .await;
    // Past the TTL no keepalive has confirmed the lease; with etcd down
    // no leadership can change, so the broker serves on.
    tokio::time::sleep(TTL + Duration::from_millis(200)).await;
    b1.confirm_lease().await.expect("etcd down: serve on");
    assert!(matches!(
        b1.create_topic("during", 1, 1, None, BTreeMap::new(), false)
            .await,
        Err(ClusterError::Etcd(_) | ClusterError::Timeout)
    ));

    etcd.spawn().await;
    until_true("both to reconnect", WAIT, || {
        both.iter().all(|c| c.etcd_connected())
    })
    .await;
    until_true("both to re-read the state", WAIT, || {
        both.iter().zip(&relists).all(|(c, before)| {
            c.metrics()
                .relists
                .load(std::sync::atomic::Ordering::Relaxed)
                > *before
        })
    })
    .await;
    let snap = b2.snapshot();
    assert_eq!(snap.brokers.len(), 2);
    assert!(snap.partition("before", 0).is_some());
    b1.confirm_lease().await.expect("confirmed again");
    b2.create_topic("after", 2, 2, None, BTreeMap::new(), false)
        .await
        .expect("create after the restart");
    until("the new topic's states", WAIT, &both, |s| {
        (0..2).all(|p| s.partition("after", p).is_some_and(|st| st.isr.len() == 2))
            && s.controller_epoch == epoch
    })
    .await;
    for c in both {
        c.shutdown().await;
    }
}

/// Two clusters under different prefixes of one etcd (one a string prefix
/// of the other) do not see each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_are_separate_clusters() {
    let etcd = Etcd::start().await;
    let a = start(&etcd, "/sluice", 1).await;
    let b = start(&etcd, "/sluice2/", 1).await;
    let b2 = start(&etcd, "/sluice2", 2).await;
    until("cluster a", WAIT, &[&a], |s| {
        s.brokers.len() == 1 && s.controller == Some(1)
    })
    .await;
    until("cluster b", WAIT, &[&b, &b2], |s| {
        s.brokers.len() == 2 && s.controller.is_some()
    })
    .await;
    assert_ne!(a.cluster_id(), b.cluster_id());
    assert_eq!(b.cluster_id(), b2.cluster_id());
    a.create_topic("only-a", 1, 1, None, BTreeMap::new(), false)
        .await
        .expect("create in a");
    b.create_topic("only-b", 1, 2, None, BTreeMap::new(), false)
        .await
        .expect("create in b");
    until("a's topic", WAIT, &[&a], |s| {
        s.partition("only-a", 0).is_some()
    })
    .await;
    until("b's topic", WAIT, &[&b, &b2], |s| {
        s.partition("only-b", 0).is_some()
    })
    .await;
    let (sa, sb) = (a.snapshot(), b.snapshot());
    assert_eq!(sa.topics.keys().collect::<Vec<_>>(), vec!["only-a"]);
    assert_eq!(sb.topics.keys().collect::<Vec<_>>(), vec!["only-b"]);
    assert_eq!(sa.controller, Some(1));
    // Both clusters have a broker 1 and a controller of their own.
    until_true("a controller in each cluster", WAIT, || {
        a.is_controller() && (b.is_controller() || b2.is_controller())
    })
    .await;
    for c in [&a, &b, &b2] {
        c.shutdown().await;
    }
}

/// Producer ids come in blocks reserved through etcd: brokers allocating at
/// once never hand out the same id, and a restarted broker (a new
/// `Cluster`) starts past every block handed out before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_ids_are_unique_across_brokers() {
    let etcd = Etcd::start().await;
    let a = start(&etcd, "/pids", 1).await;
    let b = start(&etcd, "/pids", 2).await;
    let mut tasks = Vec::new();
    for c in [a.clone(), b.clone(), a.clone(), b.clone()] {
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..1500 {
                ids.push(c.next_producer_id().await.expect("producer id"));
            }
            ids
        }));
    }
    let mut all = std::collections::BTreeSet::new();
    let mut count = 0;
    for t in tasks {
        for id in t.await.expect("task") {
            count += 1;
            assert!(all.insert(id), "producer id {id} handed out twice");
        }
    }
    assert_eq!(count, 6000);
    let highest = *all.last().expect("ids");
    a.shutdown().await;
    let a2 = start(&etcd, "/pids", 1).await;
    let next = a2.next_producer_id().await.expect("after a restart");
    assert!(
        next > highest,
        "a restarted broker reused id {next} (highest so far {highest})"
    );
    // Another prefix is another cluster, with its own ids.
    let other = start(&etcd, "/pids-other", 1).await;
    assert_eq!(other.next_producer_id().await.expect("id"), 0);
}

/// The lines under `<prefix>/security/`, and the bootstrap marker's value.
async fn security_keys(etcd: &Etcd, prefix: &str) -> (usize, Option<String>) {
    let mut client = etcd.client().await;
    let lines = client
        .get(
            format!("{prefix}/security/"),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .expect("count");
    let marker = client
        .get(format!("{prefix}/security-bootstrapped"), None)
        .await
        .expect("marker");
    (
        lines.count() as usize,
        marker
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
    )
}

/// A security import bigger than one etcd transaction is all-or-nothing:
/// broker 1 dies halfway through importing 20,000 lines; broker 2, started
/// meanwhile, waits for the claim to end with broker 1's lease, then
/// replaces the partial import with its own lines; broker 3 finds the
/// import done and imports nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_security_import_interrupted_by_a_crash_is_redone_whole() {
    let etcd = Etcd::start().await;
    let prefix = "/import";
    let lines = |from: &str, n: usize| -> Vec<(String, String, String)> {
        (0..n)
            .map(|i| {
                (
                    "acls".to_string(),
                    format!("{from}-{i}"),
                    format!("line {i} from {from}"),
                )
            })
            .collect()
    };
    let b1 = start(&etcd, prefix, 1).await;
    let importing = {
        let b1 = b1.clone();
        let lines = lines("b1", 20_000);
        tokio::spawn(async move { b1.bootstrap_security(lines).await })
    };
    // Broker 1 "crashes" once some of its lines are in, none of them made
    // permanent: its task stops mid-import and its lease is not renewed.
    let deadline = Instant::now() + WAIT;
    loop {
        let (count, marker) = security_keys(&etcd, prefix).await;
        if count > 0 {
            assert_eq!(
                marker.as_deref(),
                Some("importing 1"),
                "lines are in while broker 1 holds the claim"
            );
            break;
        }
        assert!(Instant::now() < deadline, "broker 1 never began importing");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    importing.abort();
    let _ = importing.await;
    drop(b1);
    let (partial, _) = security_keys(&etcd, prefix).await;
    assert!(
        partial > 0 && partial < 20_000,
        "broker 1 stopped mid-import ({partial} lines)"
    );

    let b2 = start(&etcd, prefix, 2).await;
    let started = Instant::now();
    let revision = b2
        .bootstrap_security(lines("b2", 150))
        .await
        .expect("broker 2 imports");
    assert!(revision.is_some(), "broker 2 took over the import");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "broker 2 waited for broker 1's claim to expire"
    );
    assert_eq!(
        security_keys(&etcd, prefix).await,
        (150, Some("2".to_string())),
        "exactly broker 2's lines, and the import is permanent"
    );
    until("broker 2's lines in its view", WAIT, &[&b2], |s| {
        s.security.get("acls").is_some_and(|acls| {
            acls.len() == 150 && acls.get("b2-149").map(String::as_str) == Some("line 149 from b2")
        })
    })
    .await;

    let b3 = start(&etcd, prefix, 3).await;
    assert_eq!(
        b3.bootstrap_security(lines("b3", 5)).await.expect("b3"),
        None,
        "the cluster's metadata was imported already"
    );
    assert_eq!(security_keys(&etcd, prefix).await.0, 150);
}
