//! A cluster of real peers (`Cluster`: real libp2p on loopback, durable Raft log and pinset on
//! disk) in this process, each beside the in-process fake IPFS daemon, with the network faults of
//! each peer under the test's control: isolation and inbound delay (see `sidecar::p2p::NetFaults`).
//! For consensus under partitions and slow links, which needs no real daemon.
//!
//! Writers keep writing through chosen peers and record every answer with its timing, so a test or
//! a benchmark can read outage windows, error bounds and acknowledged writes off one record.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use sidecar::cluster::{Cluster, ClusterConfig};
use sidecar::identity::Identity;
use sidecar::ipfs::fake::FakeIpfs;
use sidecar::p2p::{NetFaults, P2pConfig};
use sidecar::types::{parse_cid, Cid, ConsensusRole, ConsensusStatus, PinOptions};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use crate::common::{raw_cid, unique_bytes, wait_for, WAIT};

/// One peer of the cluster.
pub struct Node {
    pub cluster: Cluster,
    pub faults: NetFaults,
    pub peer_id: PeerId,
    pub address: Multiaddr,
    _dir: TempDir,
}

impl Node {
    pub fn status(&self) -> ConsensusStatus {
        self.cluster.consensus_status()
    }

    pub fn role(&self) -> ConsensusRole {
        self.status().role
    }

    pub fn term(&self) -> u64 {
        self.status().term
    }
}

pub struct InProcessCluster {
    pub nodes: Vec<Node>,
}

impl InProcessCluster {
    /// `size` peers (1, 3 or 5: all voters): the first starts the cluster, the others join through
    /// it; returns once every peer is a voter and they agree on the leader. `tune` adjusts each peer's configuration.
    pub async fn start(size: usize, tune: impl Fn(&mut ClusterConfig)) -> InProcessCluster {
        // The peers' logs, when RUST_LOG asks for them.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut nodes: Vec<Node> = Vec::new();
        for i in 0..size {
            let bootstrap = nodes.first().map(|first| first.address.clone());
            nodes.push(start_node(i, bootstrap, &tune).await);
        }
        let cluster = InProcessCluster { nodes };
        // Newcomers join as learners and become voters once caught up.
        wait_for("every peer to be a voting member", WAIT, || async {
            let seen: Vec<usize> =
                cluster.nodes.iter().map(|n| n.status().members.iter().filter(|m| m.voter).count()).collect();
            if seen.iter().all(|voters| *voters == size) {
                Ok(())
            } else {
                Err(format!("voters seen: {seen:?}"))
            }
        })
        .await;
        cluster.agreed_leader(&(0..size).collect::<Vec<_>>()).await;
        cluster
    }

    /// The peer that every peer of `among` names as leader, once they agree.
    pub async fn agreed_leader(&self, among: &[usize]) -> usize {
        wait_for("the peers to agree on a leader", WAIT, || async { self.leader_agreed_by(among) }).await
    }

    /// The leader every peer of `among` names, if they agree on one of them, and it leads.
    pub fn leader_agreed_by(&self, among: &[usize]) -> Result<usize, String> {
        let seen: Vec<Option<String>> = among.iter().map(|i| self.nodes[*i].status().leader).collect();
        let Some(Some(leader)) = seen.first() else { return Err(format!("leaders seen: {seen:?}")) };
        let index = self.nodes.iter().position(|n| n.peer_id.to_string() == *leader);
        match index {
            Some(i)
                if among.contains(&i)
                    && seen.iter().all(|s| s.as_ref() == Some(leader))
                    && self.nodes[i].role() == ConsensusRole::Leader =>
            {
                Ok(i)
            }
            _ => Err(format!("leaders seen: {seen:?}")),
        }
    }

    pub async fn shutdown(&self) {
        for node in &self.nodes {
            node.cluster.shutdown().await;
        }
    }
}

async fn start_node(index: usize, bootstrap: Option<Multiaddr>, tune: &impl Fn(&mut ClusterConfig)) -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let faults = NetFaults::default();
    let secret = sidecar::p2p::parse_secret(crate::peer::TEST_SECRET).expect("the test secret");
    let mut p2p = P2pConfig::new(secret);
    p2p.listen = "/ip4/127.0.0.1/tcp/0".parse().expect("listen address");
    p2p.faults = Some(faults.clone());
    let mut config = ClusterConfig::new(format!("peer-{index}"), p2p);
    config.consensus.bootstrap = bootstrap.into_iter().collect();
    tune(&mut config);
    let identity = Identity::generate();
    let peer_id = identity.peer_id;
    let cluster =
        Cluster::start(config, identity, Arc::new(FakeIpfs::new()), dir.path()).await.expect("the peer starts");
    let address = cluster.id().await.addresses.into_iter().next().expect("a cluster address");
    Node { cluster, faults, peer_id, address, _dir: dir }
}

/// A CID no other write has used.
pub fn fresh_cid() -> Cid {
    parse_cid(&raw_cid(&unique_bytes("in-process write"))).expect("a valid CID")
}

/// One write and how it ended.
#[derive(Clone, Debug)]
pub struct WriteRecord {
    /// Through which peer.
    pub node: usize,
    pub cid: Cid,
    pub sent: Instant,
    pub answered: Instant,
    /// `None` when acknowledged.
    pub error: Option<String>,
}

impl WriteRecord {
    pub fn acknowledged(&self) -> bool {
        self.error.is_none()
    }

    pub fn took(&self) -> Duration {
        self.answered - self.sent
    }
}

/// Clients writing new pins back to back, each through its peer, until stopped.
pub struct Writers {
    records: Arc<Mutex<Vec<WriteRecord>>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// One client per entry of `through` (a peer's index; a peer may appear several times).
    pub fn start(cluster: &InProcessCluster, through: &[usize]) -> Writers {
        let records = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let tasks = through
            .iter()
            .map(|&node| {
                let peer = cluster.nodes[node].cluster.clone();
                let (records, stop) = (records.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.is_cancelled() {
                        let cid = fresh_cid();
                        let sent = Instant::now();
                        let outcome = peer.pin(cid, PinOptions::default()).await;
                        let answered = Instant::now();
                        let error = outcome.err().map(|e| e.to_string());
                        let failed = error.is_some();
                        records.lock().unwrap().push(WriteRecord { node, cid, sent, answered, error });
                        if failed {
                            // An error comes back at once while there is no leader: don't spin.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                })
            })
            .collect();
        Writers { records, stop, tasks }
    }

    /// What has been answered so far.
    pub fn records(&self) -> Vec<WriteRecord> {
        self.records.lock().unwrap().clone()
    }

    /// Waits until a write through one of `nodes` sent after `since` is acknowledged; returns when.
    pub async fn acknowledged_after(&self, since: Instant, nodes: &[usize], within: Duration) -> Instant {
        wait_for("a write acknowledged", within, || async {
            let records = self.records();
            let first = records
                .iter()
                .filter(|r| r.acknowledged() && r.sent >= since && nodes.contains(&r.node))
                .map(|r| r.answered)
                .min();
            first.ok_or_else(|| {
                let errors: Vec<&String> = records.iter().rev().filter_map(|r| r.error.as_ref()).take(3).collect();
                format!("{} answers, latest errors: {errors:?}", records.len())
            })
        })
        .await
    }

    /// Stops the clients (each finishes the write it has in flight) and returns every record.
    pub async fn stop(self) -> Vec<WriteRecord> {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        let records = self.records.lock().unwrap().clone();
        records
    }
}

/// The longest time, between `from` and `to`, in which no write through `nodes` was acknowledged.
pub fn longest_outage(records: &[WriteRecord], nodes: &[usize], from: Instant, to: Instant) -> Duration {
    let mut acks: Vec<Instant> = records
        .iter()
        .filter(|r| r.acknowledged() && nodes.contains(&r.node) && r.answered >= from && r.answered <= to)
        .map(|r| r.answered)
        .collect();
    acks.sort();
    let mut previous = from;
    let mut longest = Duration::ZERO;
    for ack in acks.into_iter().chain(std::iter::once(to)) {
        longest = longest.max(ack - previous);
        previous = ack;
    }
    longest
}

/// Every acknowledged write of `records` that `node`'s pinset lacks.
pub async fn missing_on(node: &Node, records: &[WriteRecord]) -> Vec<Cid> {
    let mut missing = Vec::new();
    for record in records.iter().filter(|r| r.acknowledged()) {
        if node.cluster.allocation(&record.cid).await.is_err() {
            missing.push(record.cid);
        }
    }
    missing
}
