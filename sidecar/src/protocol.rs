//! The cluster's peer protocol: the messages peers exchange over the libp2p host (`p2p`), CBOR-
//! encoded. It sits above both the host, which carries any [`Protocol`], and consensus, whose
//! messages it carries, so that neither imports the other.
//!
//! One request enum and one response enum: a new call is a new variant of each, so peers of one
//! version always agree on the wire.

use libp2p::{PeerId, StreamProtocol};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::consensus::{ClusterNode, NodeId, OpBatch, RemovalNotice, TypeConfig};
use crate::p2p::{P2p, Protocol};
use crate::types::{CidKey, Id, Metric, PinInfoShort, RepoGc};
use crate::{Error, Result};

/// The cluster peers' protocol, for the host.
pub struct ClusterProtocol;

/// The libp2p host of a cluster peer.
pub type Host = P2p<ClusterProtocol>;

impl Protocol for ClusterProtocol {
    type Request = RpcRequest;
    type Response = RpcResponse;

    fn name() -> StreamProtocol {
        StreamProtocol::new("/cluster-sidecar/rpc/1.0.0")
    }

    fn into_result(peer: PeerId, response: RpcResponse) -> Result<RpcResponse> {
        match response {
            RpcResponse::Error(message) => Err(Error::Remote { code: 500, message: format!("peer {peer}: {message}") }),
            RpcResponse::Failed { status, message } => Err(Error::Remote { code: status, message }),
            response => Ok(response),
        }
    }

    fn not_serving() -> RpcResponse {
        RpcResponse::Error("this peer is not serving requests yet".into())
    }
}

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
    /// The peer could not answer; [`P2p::request`] turns it into an error for the caller.
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
