//! The types openraft is instantiated with: node ids, what a node is, and what a log entry carries.

use std::fmt;

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::state::StateOp;

/// A Raft node id. Drawn at random when a peer first creates its consensus data and never reused:
/// a peer whose data was wiped comes back as a new node (the same libp2p identity, a new id).
pub type NodeId = u64;

/// What the cluster knows of a member: how to reach it. Carried in the replicated membership, so
/// every peer can dial every other one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// Base58 peer ID (openraft needs `Default`, which `PeerId` is not).
    pub peer_id: String,
    /// Its cluster (libp2p) addresses, without the `/p2p/` suffix.
    pub addrs: Vec<String>,
}

impl ClusterNode {
    pub fn new(peer_id: PeerId, addrs: &[Multiaddr]) -> Self {
        ClusterNode { peer_id: peer_id.to_string(), addrs: addrs.iter().map(ToString::to_string).collect() }
    }

    /// The peer ID; `None` only for a value that did not come from [`ClusterNode::new`].
    pub fn peer(&self) -> Option<PeerId> {
        self.peer_id.parse().ok()
    }

    pub fn multiaddrs(&self) -> Vec<Multiaddr> {
        self.addrs.iter().filter_map(|a| a.parse().ok()).collect()
    }
}

impl fmt::Display for ClusterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.peer_id)
    }
}

/// The payload of one log entry: a batch of pinset ops, applied in order in one transaction.
/// Group commit puts many client writes in one entry, so one fsync of the log and one of the
/// state serve them all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpBatch(pub Vec<StateOp>);

openraft::declare_raft_types!(
    /// The cluster's Raft: pinset op batches over libp2p, snapshots as files.
    pub TypeConfig:
        D = OpBatch,
        R = (),
        NodeId = NodeId,
        Node = ClusterNode,
        SnapshotData = super::snapshot_file::SnapshotFile,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, ClusterNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, ClusterNode>;
pub type StorageError = openraft::StorageError<NodeId>;
