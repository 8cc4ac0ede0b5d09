//! The messages peers exchange over the request-response protocol, CBOR-encoded.
//!
//! One request enum and one response enum: a new call is a new variant of each, so peers of one
//! version always agree on the wire.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::consensus::{ClusterNode, NodeId, OpBatch, RemovalNotice, TypeConfig};
use crate::types::{CidKey, Id, Metric, PinInfoShort, RepoGc};

/// The request-response protocol of the cluster peers.
pub(crate) const PROTOCOL: libp2p::StreamProtocol = libp2p::StreamProtocol::new("/cluster-sidecar/rpc/1.0.0");

/// A call to another peer.
#[allow(clippy::large_enum_variant)] // one request per call; boxing buys nothing
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RpcRequest {
    /// The peer's `GET /id` object.
    Id,
    /// Raft replication, election and snapshot transfer, for the Raft node `to`: a peer whose
    /// consensus data was replaced (a new node) refuses what was meant for its old node.
    Raft { to: NodeId, message: RaftMessage },
    /// To the leader: commit a batch of pinset ops; answers [`RpcResponse::Written`].
    Write(OpBatch),
    /// Who the peer is in consensus; answers [`RpcResponse::NodeInfo`].
    NodeInfo,
    /// To the leader: add this node (learner, catch-up, then voter when there is room).
    AddMember { node_id: NodeId, node: ClusterNode },
    /// To the leader: remove the member with this peer ID; `force`: even when it leaves a cluster
    /// that cannot lose another peer (see `consensus::plan::removal_risk`).
    RemoveMember {
        peer_id: String,
        #[serde(default)]
        force: bool,
    },
    /// From a new peer to a member: add me, reachable at these addresses; answers
    /// [`RpcResponse::Joined`].
    Join { addrs: Vec<String> },
    /// From the peer that added this one: the members, and the address it reached this peer at.
    Welcome { members: Vec<ClusterNode>, observed_addr: String },
    /// From the leader: this peer was removed from the cluster and must stop taking part, once
    /// it has checked the notice.
    Removed(RemovalNotice),
    /// A peer's latest metrics, pushed to every other member.
    Metrics(Vec<Metric>),
    /// This peer's tracker statuses of these CIDs, in the same order.
    Statuses(Vec<CidKey>),
    /// Whom this peer and its IPFS daemon are connected to (`/health/graph`).
    Links,
    /// Garbage-collect this peer's IPFS daemon (`POST /ipfs/gc`).
    RepoGc,
    /// Re-queue this peer's failed operation on one CID, or all of them.
    Recover(Option<CidKey>),
}

/// A message of Raft's own, to a peer's Raft node.
#[allow(clippy::large_enum_variant)] // as for `RpcRequest`
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RaftMessage {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// A peer's connections, for the cluster's health graph.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PeerLinks {
    pub peername: String,
    /// Cluster peers this one is connected to (base58 IDs).
    pub cluster_peers: Vec<String>,
    /// Its IPFS daemon's ID and the daemons it is connected to.
    pub ipfs_id: Option<String>,
    pub ipfs_peers: Vec<String>,
}

/// The answer to an [`RpcRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcResponse {
    Ok,
    Id(Box<Id>),
    RaftAppend(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    RaftVote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    RaftSnapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// The log index the batch was committed at.
    Written {
        index: u64,
    },
    NodeInfo {
        node_id: NodeId,
        initialized: bool,
    },
    Joined {
        members: Vec<ClusterNode>,
    },
    Statuses(Vec<PinInfoShort>),
    Links(PeerLinks),
    RepoGc(RepoGc),
    /// The peer could not answer; [`super::P2p::request`] turns it into an error for the caller.
    Error(String),
    /// The call failed with this error: its HTTP status (see [`crate::Error::status`]) and text,
    /// so a forwarded request fails on the first peer as it did on the second.
    Failed {
        status: u16,
        message: String,
    },
    /// To [`RpcRequest::Write`]: this peer does not lead (nothing was proposed); the leader it
    /// knows, if any.
    NotLeader {
        leader: Option<NodeId>,
    },
}

pub(crate) type Behaviour = libp2p::request_response::cbor::Behaviour<RpcRequest, RpcResponse>;
