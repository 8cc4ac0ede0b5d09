//! Raft's messages over the cluster's libp2p host, each peer's on a lane of its own (one stream
//! that carries call after call: openraft makes one call at a time per peer and link).

use std::future::Future;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use super::types::{ClusterNode, NodeId, TypeConfig};
use crate::p2p::encoded_len;
use crate::p2p::Lane;
use crate::protocol::{ClusterProtocol, Host, RaftMessage, RpcRequest, RpcResponse};
use crate::Error;

/// Makes one [`PeerLink`] per Raft peer.
pub struct Network {
    pub p2p: Host,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerLink;

    async fn new_client(&mut self, target: NodeId, node: &ClusterNode) -> PeerLink {
        let entries_budget = APPEND_BYTES.min(self.p2p.max_request_size().saturating_sub(ENVELOPE_BYTES));
        let lane = node.peer().map(|peer| self.p2p.lane(peer, node.multiaddrs()));
        PeerLink { target, lane, entries_budget }
    }
}

/// The way to one Raft peer.
pub struct PeerLink {
    target: NodeId,
    /// `None` for a member whose peer ID does not parse: every call to it fails as unreachable.
    lane: Option<Lane<ClusterProtocol>>,
    /// The most bytes of entries one append request may carry.
    entries_budget: u64,
}

/// More than an append request takes besides its entries (the vote, log ids, the RPC's tags).
const ENVELOPE_BYTES: u64 = 16 * 1024;
/// Most bytes of entries one append request carries. openraft gives an append the heartbeat
/// interval (400 ms) to be sent, decoded and made durable on the follower, then drops it and
/// sends the same entries again: a request that cannot make it in time never does. A few
/// entries of the largest size ([`super::writer::MAX_BATCH_BYTES`]) make it.
const APPEND_BYTES: u64 = 2 * 1024 * 1024;

/// How many of the leading entries, of these encoded sizes, fit in `budget` bytes (at least one),
/// when not all of them do: the hint by which openraft splits an append request. `None` when all
/// fit, or for one entry, which no split makes smaller: sent as it is, it fails at the receiver
/// and is retried with backoff, where a hint of one would be retried at once, forever.
fn entries_hint(sizes: &[u64], budget: u64) -> Option<u64> {
    if sizes.len() <= 1 || sizes.iter().sum::<u64>() <= budget {
        return None;
    }
    let fitting = sizes.iter().scan(0u64, |total, size| {
        *total += size;
        Some(*total)
    });
    Some(fitting.take_while(|total| *total <= budget).count().max(1) as u64)
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, ClusterNode, RaftError<NodeId, E>>>;

impl PeerLink {
    /// `message`, addressed to the target's Raft node.
    fn raft(&self, message: RaftMessage) -> RpcRequest {
        RpcRequest::Raft { to: self.target, message }
    }

    /// Sends `request` within the call's time limit; `answer` picks the reply out of the response.
    async fn call<T, E: std::error::Error>(
        &mut self,
        request: RpcRequest,
        option: &RPCOption,
        answer: impl FnOnce(RpcResponse) -> Option<Result<T, RaftError<NodeId, E>>>,
    ) -> RpcResult<T, E> {
        let Some(lane) = self.lane.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(&Error::PeerUnreachable(format!(
                "node {} has no valid peer ID",
                self.target
            )))));
        };
        let response = match with_deadline(option, lane.call(request)).await {
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
                message: format!("node {} answered a Raft call with something else", self.target),
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
        // The receiver drops a request over its limit unread; openraft would send it again and
        // again. Told the payload is too large, it sends fewer entries.
        if rpc.entries.len() > 1 {
            let sizes: Vec<u64> = rpc.entries.iter().map(encoded_len).collect();
            if let Some(hint) = entries_hint(&sizes, self.entries_budget) {
                tracing::debug!(entries = sizes.len(), hint, "an append request would exceed the RPC size limit");
                return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint)));
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_requests_over_the_budget_are_split() {
        // (entry sizes, budget, hint)
        let cases: &[(&[u64], u64, Option<u64>)] = &[
            (&[], 10, None),
            (&[100], 10, None),
            (&[4, 3, 3], 10, None),
            (&[4, 3, 3, 1], 10, Some(3)),
            (&[6, 5, 1], 10, Some(1)),
            (&[20, 1, 1], 10, Some(1)),
            (&[1, 20, 1], 10, Some(1)),
            (&[1 << 20; 32], 16 << 20, Some(16)),
        ];
        for &(sizes, budget, hint) in cases {
            assert_eq!(entries_hint(sizes, budget), hint, "{sizes:?} in {budget}");
        }
    }
}
