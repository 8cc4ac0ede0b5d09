//! Raft's messages over the cluster's libp2p RPC.

use std::future::Future;

use libp2p::{Multiaddr, PeerId};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use super::types::{ClusterNode, NodeId, TypeConfig};
use crate::protocol::{Host, RaftMessage, RpcRequest, RpcResponse};
use crate::Error;

/// Makes one [`PeerLink`] per Raft peer.
pub struct Network {
    pub p2p: Host,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerLink;

    async fn new_client(&mut self, target: NodeId, node: &ClusterNode) -> PeerLink {
        PeerLink { p2p: self.p2p.clone(), target, peer: node.peer(), addrs: node.multiaddrs() }
    }
}

/// The way to one Raft peer.
pub struct PeerLink {
    p2p: Host,
    target: NodeId,
    /// `None` for a member whose peer ID does not parse: every call to it fails as unreachable.
    peer: Option<PeerId>,
    addrs: Vec<Multiaddr>,
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, ClusterNode, RaftError<NodeId, E>>>;

impl PeerLink {
    /// `message`, addressed to the target's Raft node.
    fn raft(&self, message: RaftMessage) -> RpcRequest {
        RpcRequest::Raft { to: self.target, message }
    }

    /// Sends `request` within the call's time limit; `answer` picks the reply out of the response.
    async fn call<T, E: std::error::Error>(
        &self,
        request: RpcRequest,
        option: &RPCOption,
        answer: impl FnOnce(RpcResponse) -> Option<Result<T, RaftError<NodeId, E>>>,
    ) -> RpcResult<T, E> {
        let Some(peer) = self.peer else {
            return Err(RPCError::Unreachable(Unreachable::new(&Error::PeerUnreachable(format!(
                "node {} has no valid peer ID",
                self.target
            )))));
        };
        let sent = self.p2p.request_via(peer, self.addrs.clone(), request);
        let response = match with_deadline(option, sent).await {
            Ok(response) => response,
            Err(e @ (Error::PeerUnreachable(_) | Error::ShuttingDown)) => {
                return Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => return Err(RPCError::Network(NetworkError::new(&e))),
        };
        match answer(response) {
            Some(Ok(value)) => Ok(value),
            Some(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            None => Err(RPCError::Network(NetworkError::new(&Error::Remote {
                code: 500,
                message: format!("peer {peer} answered a Raft call with something else"),
            }))),
        }
    }
}

async fn with_deadline<T>(option: &RPCOption, call: impl Future<Output = crate::Result<T>>) -> crate::Result<T> {
    tokio::time::timeout(option.hard_ttl(), call)
        .await
        .unwrap_or_else(|_| Err(Error::Timeout(format!("no answer within {:?}", option.hard_ttl()))))
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.call(self.raft(RaftMessage::Append(rpc)), &option, |response| match response {
            RpcResponse::RaftAppend(result) => Some(result),
            _ => None,
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(self.raft(RaftMessage::Snapshot(rpc)), &option, |response| match response {
            RpcResponse::RaftSnapshot(result) => Some(result),
            _ => None,
        })
        .await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        self.call(self.raft(RaftMessage::Vote(rpc)), &option, |response| match response {
            RpcResponse::RaftVote(result) => Some(result),
            _ => None,
        })
        .await
    }
}
