//! The peer's answers to other peers' RPC calls.

use std::sync::Weak;

use libp2p::PeerId;

use super::{Cluster, Inner};
use crate::p2p::{RpcHandler, RpcRequest, RpcResponse};

/// Holds the peer weakly: the host keeps its handler, and the peer keeps the host.
pub(super) struct ClusterRpc(pub Weak<Inner>);

#[async_trait::async_trait]
impl RpcHandler for ClusterRpc {
    async fn handle(&self, from: PeerId, request: RpcRequest) -> RpcResponse {
        let Some(inner) = self.0.upgrade() else {
            return RpcResponse::Error(crate::Error::ShuttingDown.to_string());
        };
        let cluster = Cluster { inner };
        tracing::debug!(%from, ?request, "RPC call");
        match request {
            RpcRequest::Id => RpcResponse::Id(Box::new(cluster.id().await)),
        }
    }
}
