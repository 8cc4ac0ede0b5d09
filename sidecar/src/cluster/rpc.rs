//! The peer's answers to other peers' RPC calls.

use std::sync::Weak;

use libp2p::PeerId;

use super::{Cluster, Inner};
use crate::p2p::RpcHandler;
use crate::protocol::{ClusterProtocol, RpcRequest, RpcResponse};
use crate::Result;

/// Holds the peer weakly: the host keeps its handler, and the peer keeps the host.
pub(super) struct ClusterRpc(pub Weak<Inner>);

#[async_trait::async_trait]
impl RpcHandler<ClusterProtocol> for ClusterRpc {
    async fn handle(&self, from: PeerId, request: RpcRequest) -> RpcResponse {
        let Some(inner) = self.0.upgrade() else {
            return RpcResponse::Error(crate::Error::ShuttingDown.to_string());
        };
        let cluster = Cluster { inner };
        cluster
            .answer(from, request)
            .await
            .unwrap_or_else(|e| RpcResponse::Failed { status: e.status(), message: e.to_string() })
    }
}

impl Cluster {
    async fn answer(&self, from: PeerId, request: RpcRequest) -> Result<RpcResponse> {
        let consensus = &self.inner.consensus;
        let request = match consensus.serve(from, request).await {
            Ok(answered) => return answered,
            Err(request) => request,
        };
        Ok(match request {
            RpcRequest::Id => RpcResponse::Id(Box::new(self.id().await)),
            change @ (RpcRequest::AddMember { .. } | RpcRequest::RemoveMember { .. }) => {
                tracing::debug!(%from, ?change, "membership change asked by another peer");
                consensus.change_as_leader(change).await?;
                RpcResponse::Ok
            }
            RpcRequest::Join { addrs } => {
                let addrs = addrs.iter().filter_map(|a| a.parse().ok()).collect();
                consensus.add_peer(from, addrs).await?;
                RpcResponse::Joined { members: consensus.members() }
            }
            RpcRequest::Welcome { members, observed_addr } => {
                tracing::info!(%from, members = members.len(), reached_at = %observed_addr, "added to the cluster");
                RpcResponse::Ok
            }
            RpcRequest::Removed(notice) => consensus.on_removed(from, &notice),
            RpcRequest::Metrics(metrics) => {
                self.receive_metrics(from, metrics);
                RpcResponse::Ok
            }
            RpcRequest::Statuses(keys) => RpcResponse::Statuses(self.answer_status_page(keys).await?),
            RpcRequest::Links => RpcResponse::Links(self.local_links().await),
            RpcRequest::RepoGc => RpcResponse::RepoGc(self.local_repo_gc().await),
            RpcRequest::Recover(key) => {
                self.recover_locally(key.as_ref())?;
                RpcResponse::Ok
            }
            consensus_request @ (RpcRequest::Raft { .. } | RpcRequest::Write(_) | RpcRequest::NodeInfo) => {
                unreachable!("consensus answers {consensus_request:?}")
            }
        })
    }
}
