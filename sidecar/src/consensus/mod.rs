//! Consensus: how a write becomes part of the pinset on every peer. openraft (0.9) over the
//! cluster's libp2p RPC, split as openraft's `raft-kv` examples are:
//!
//! - `types`: what Raft is instantiated with (node ids never reused, nodes as peer ID + addresses,
//!   entries carrying batches of pinset ops);
//! - `log_store` and `state_machine`: durable storage (the log in `raft.redb`, the pinset as the
//!   state machine, snapshots as files);
//! - `network`: Raft's messages over libp2p;
//! - `writer`: group commit of client writes, forwarded to the leader from any peer, every write
//!   answered in bounded time;
//! - `liveness`: faster heartbeats, and elections only by a peer that hears a majority;
//! - `rpc`: this peer's answers to Raft's messages and forwarded writes;
//! - `membership`: adding and removing peers, and keeping the voter set right; `plan`: the pure
//!   decisions those make.
//!
//! A write is acknowledged once committed by a quorum, applied on the leader (the pin tracker was
//! told) and applied on the peer that took it, so a client reads its own writes there.

mod liveness;
mod log_store;
mod membership;
mod network;
mod plan;
mod removal;
mod rpc;
mod snapshot_file;
mod state_machine;
#[cfg(test)]
mod tests;
mod types;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use openraft::{ServerState, SnapshotPolicy};
use tokio_util::sync::CancellationToken;

use crate::protocol::Host;
use crate::state::{PinState, StateObserver, StateOp};
use crate::types::{ConsensusRole, ConsensusStatus, Departure, MemberStatus};
use crate::{Error, Result};

pub use log_store::LogStore;
pub use plan::{plan_start, voter_count, StartFacts, StartPlan};
pub use removal::RemovalNotice;
pub use types::{ClusterNode, NodeId, OpBatch, SnapshotMeta, TypeConfig, Vote};

/// The consensus files inside the data directory: `raft.redb` and `snapshots/`.
pub const CONSENSUS_DIR: &str = "raft";
/// Left in the data directory by a peer that was removed and cleaned its consensus data.
pub const REMOVED_MARKER: &str = "removed-from-cluster";
/// Bytes of a Raft snapshot per message: one at a time crosses to a follower.
pub const SNAPSHOT_CHUNK_SIZE: usize = 4 * 1024 * 1024;

/// How consensus runs (`service.json`'s `raft` section, flags and environment).
#[derive(Clone, Debug)]
pub struct ConsensusConfig {
    pub heartbeat_interval: Duration,
    /// Followers wait a random time in this range without hearing from a leader before they
    /// start an election.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// At most this many voters (odd); further members are learners.
    pub max_voters: usize,
    /// How long a write waits for a leader to take it before it fails.
    pub commit_timeout: Duration,
    /// How long a new member may take to catch up before its addition is undone.
    pub catch_up_timeout: Duration,
    /// Log entries between snapshots (each entry is a batch of up to [`writer::MAX_BATCH`] ops).
    pub snapshot_every: u64,
    /// Members to ask to add this peer when it starts without consensus state (`--bootstrap`).
    pub bootstrap: Vec<Multiaddr>,
    /// Start a new cluster of one when there is neither state nor `bootstrap` (off: wait to be
    /// added, as under the operator).
    pub auto_init: bool,
    /// Leave the cluster (remove itself) on a clean shutdown.
    pub leave_on_shutdown: bool,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        ConsensusConfig {
            // openraft 0.9 gives every replication call `heartbeat_interval` to answer: 400 ms
            // keeps replicating over a link whose round trip is 200 ms longer than loopback's. The
            // leader beats every 150 ms regardless (see `liveness`).
            heartbeat_interval: Duration::from_millis(400),
            // A follower campaigns after a leader lease (= election_timeout_max) plus a random
            // election timeout without hearing from the leader, checked every 1.5 heartbeat
            // intervals: 1.3-2.2 s, long enough for a loaded machine, short enough to replace a
            // dead leader within ~2.5 s.
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: Duration::from_millis(800),
            max_voters: 5,
            commit_timeout: Duration::from_secs(10),
            catch_up_timeout: Duration::from_secs(300),
            snapshot_every: 4096,
            bootstrap: Vec::new(),
            auto_init: true,
            leave_on_shutdown: false,
        }
    }
}

/// This peer's part in consensus.
pub struct Consensus {
    raft: types::Raft,
    node_id: NodeId,
    state: Arc<PinState>,
    p2p: Host,
    config: ConsensusConfig,
    dir: PathBuf,
    writer: writer::Writer,
    liveness: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Fires once this peer learns it was removed from the cluster.
    removed: CancellationToken,
    shutdown: CancellationToken,
}

impl Consensus {
    /// Opens the durable log and the state machine under `data_dir` and starts this peer's Raft
    /// node. It does not join or initialise anything: see [`Consensus::plan_start`].
    pub async fn start(
        data_dir: &Path,
        state: Arc<PinState>,
        observer: Arc<dyn StateObserver>,
        p2p: Host,
        config: ConsensusConfig,
    ) -> Result<Consensus> {
        let dir = data_dir.join(CONSENSUS_DIR);
        std::fs::create_dir_all(&dir)?;
        let log = {
            let path = dir.join("raft.redb");
            tokio::task::spawn_blocking(move || LogStore::open(&path)).await.expect("open task")?
        };
        let node_id = log.node_id()?;
        let machine = state_machine::StateMachine::open(state.clone(), observer, &dir.join("snapshots"))?;
        let raft_config = openraft::Config {
            cluster_name: "ipfs-cluster".into(),
            heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
            election_timeout_min: config.election_timeout_min.as_millis() as u64,
            election_timeout_max: config.election_timeout_max.as_millis() as u64,
            // Entries are batches of up to 1024 ops and 1 MiB (`writer`): an append request of
            // entries over its byte budget is split further (`network`).
            max_payload_entries: 32,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            // Entries kept behind a snapshot, for followers slightly behind (cheaper than a snapshot).
            max_in_snapshot_log_to_keep: config.snapshot_every.min(100),
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_SIZE as u64,
            install_snapshot_timeout: 60_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Config(format!("consensus: {e}")))?;
        let network = network::Network { p2p: p2p.clone() };
        let raft = types::Raft::new(node_id, Arc::new(raft_config), network, log, machine)
            .await
            .map_err(|e| Error::Storage(format!("cannot start Raft: {e}")))?;
        let shutdown = CancellationToken::new();
        let timing = writer::WriterTiming {
            commit_timeout: config.commit_timeout,
            quorum_lost_after: config.election_timeout_min + config.election_timeout_max,
        };
        let writer = writer::Writer::start(raft.clone(), node_id, p2p.clone(), timing, shutdown.child_token());
        let liveness = tokio::spawn(liveness::run(raft.clone(), node_id, p2p.clone(), shutdown.child_token()));
        tracing::info!(node_id, "Raft node started");
        Ok(Consensus {
            raft,
            node_id,
            state,
            p2p,
            config,
            dir,
            writer,
            liveness: tokio::sync::Mutex::new(Some(liveness)),
            removed: CancellationToken::new(),
            shutdown,
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn config(&self) -> &ConsensusConfig {
        &self.config
    }

    /// Whether this peer has ever taken part in a cluster (it has Raft state).
    pub async fn is_initialized(&self) -> bool {
        self.raft.is_initialized().await.unwrap_or(false)
    }

    /// Commits `op`: returns once the cluster committed it and this peer applied it.
    pub async fn commit(&self, op: StateOp) -> Result<()> {
        self.writer.commit(op).await.map(drop)
    }

    /// Ready to take writes: a member that knows a live leader: this peer leading and hearing
    /// from a majority, or another member heard from lately. (Raft names the leader of the last
    /// vote it saw committed, also after a restart and while cut off; see [`liveness::LEADER_SILENCE`].)
    pub fn is_ready(&self) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        self.live_leader(&metrics).is_some() && self.is_member()
    }

    /// The leader Raft names, if it is alive as far as this peer can tell.
    fn live_leader(&self, metrics: &openraft::RaftMetrics<NodeId, ClusterNode>) -> Option<NodeId> {
        let leader = metrics.current_leader?;
        let alive = if leader == self.node_id {
            // A leader restored at start-up has heard from no quorum yet (`None`).
            metrics.state == ServerState::Leader
                && metrics.millis_since_quorum_ack.is_some()
                && !self.writer.leads_without_quorum()
        } else {
            let node = metrics.membership_config.membership().get_node(&leader);
            let heard = self.p2p.heard_within(liveness::LEADER_SILENCE);
            node.and_then(ClusterNode::peer).is_some_and(|peer| heard.contains(&peer))
        };
        alive.then_some(leader)
    }

    /// A running member of a cluster, whether or not it knows a leader.
    pub fn is_member(&self) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        metrics.running_state.is_ok()
            && metrics.membership_config.membership().get_node(&self.node_id).is_some()
            && !self.removed.is_cancelled()
    }

    /// The members this peer heard from lately, itself included.
    fn reachable_members(&self) -> std::collections::BTreeSet<NodeId> {
        let metrics = self.raft.metrics().borrow().clone();
        liveness::heard_members(&self.p2p, metrics.membership_config.membership(), self.node_id)
    }

    /// The members, for `/peers`, `/id` and allocation.
    pub fn members(&self) -> Vec<ClusterNode> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.membership_config.membership().nodes().map(|(_, node)| node.clone()).collect()
    }

    /// Where consensus stands, from this peer's point of view (`GET /consensus`).
    pub fn status(&self) -> ConsensusStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes: BTreeMap<NodeId, ClusterNode> = membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        let peer_of = |id: &NodeId| nodes.get(id).map(|n| n.peer_id.clone());
        let reachable = liveness::heard_members(&self.p2p, membership, self.node_id);
        let leader = self.live_leader(&metrics);
        let role = if self.removed.is_cancelled() {
            ConsensusRole::Removed
        } else if nodes.is_empty() {
            ConsensusRole::Uninitialized
        } else {
            match metrics.state {
                ServerState::Leader => ConsensusRole::Leader,
                ServerState::Candidate => ConsensusRole::Candidate,
                ServerState::Follower => ConsensusRole::Follower,
                ServerState::Learner => ConsensusRole::Learner,
                ServerState::Shutdown => ConsensusRole::Stopped,
            }
        };
        ConsensusStatus {
            node_id: self.node_id,
            peer_id: self.p2p.peer_id().to_string(),
            role,
            leader: leader.as_ref().and_then(peer_of),
            leader_node_id: leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            last_applied_index: metrics.last_applied.map(|l| l.index),
            snapshot_index: metrics.snapshot.map(|l| l.index),
            purged_index: metrics.purged.map(|l| l.index),
            joint: membership.get_joint_config().len() > 1,
            members: nodes
                .iter()
                .map(|(id, node)| MemberStatus {
                    node_id: *id,
                    peer_id: node.peer_id.clone(),
                    addresses: node.addrs.clone(),
                    voter: voters.contains(id),
                    reachable: reachable.contains(id),
                })
                .collect(),
            departure: Departure::Undecided,
            vouched_seconds: 0,
        }
    }

    /// Resolves with the reason once this peer's Raft node stopped on a fatal error (storage
    /// failure, panic): the peer cannot take part any more and should restart.
    pub async fn failed(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "the Raft node is gone".to_string();
            }
        }
    }

    pub fn is_removed(&self) -> bool {
        self.removed.is_cancelled()
    }

    /// Resolves once this peer was removed from the cluster.
    pub fn removed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.removed.cancelled()
    }

    /// Stops the Raft node. With `leave_on_shutdown`, leaves the cluster first.
    pub async fn shutdown(&self) {
        if self.config.leave_on_shutdown && !self.removed.is_cancelled() {
            match tokio::time::timeout(Duration::from_secs(30), self.remove_peer(self.p2p.peer_id(), true)).await {
                Ok(Ok(())) => tracing::info!("left the cluster (leave_on_shutdown)"),
                Ok(Err(e)) => tracing::warn!(error = %e, "could not leave the cluster on shutdown"),
                Err(_) => tracing::warn!("could not leave the cluster on shutdown: timed out"),
            }
        }
        self.shutdown.cancel();
        self.writer.stopped().await;
        if let Some(liveness) = self.liveness.lock().await.take() {
            let _ = liveness.await;
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "the Raft node did not stop cleanly");
        }
    }

    /// After removal and shutdown: moves the consensus data (log, snapshots) and the pinset at
    /// `pinset` into `<data_dir>/removed-<UTC time>/`, and leaves a marker so that a restart does
    /// not start a new cluster on its own. Returns where the data went.
    pub fn clean_after_removal(&self, data_dir: &Path, pinset: &Path) -> Result<PathBuf> {
        let aside = removal::set_aside(data_dir, &[&self.dir, pinset])?;
        std::fs::write(
            data_dir.join(REMOVED_MARKER),
            format!("this peer was removed from its cluster; its consensus data was moved to {}\n", aside.display()),
        )?;
        Ok(aside)
    }
}
