//! The other peers: membership (`/peers`, our `/consensus`), their IDs, the metrics they share,
//! and links between the IPFS daemons.

use std::time::Duration;

use chrono::Utc;
use futures::stream::{self, BoxStream, StreamExt};
use libp2p::{Multiaddr, PeerId};

use super::Cluster;
use crate::consensus::ClusterNode;
use crate::protocol::{RpcRequest, RpcResponse};
use crate::types::{ConsensusStatus, Id, Metric};
use crate::{Error, Result};

/// How long one peer may take to answer a call made for a cluster-wide view.
pub(super) const PEER_CALL: Duration = Duration::from_secs(10);

impl Cluster {
    /// Members other than this peer.
    pub(super) fn other_members(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let me = self.inner.identity.peer_id;
        self.inner
            .consensus
            .members()
            .into_iter()
            .filter_map(|node| Some((node.peer()?, node.multiaddrs())))
            .filter(|(peer, _)| *peer != me)
            .collect()
    }

    /// Calls `peer` for a cluster-wide view, within [`PEER_CALL`].
    pub(super) async fn call_peer(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: RpcRequest,
    ) -> Result<RpcResponse> {
        let call = self.inner.p2p.request_via(peer, addrs, request);
        tokio::time::timeout(PEER_CALL, call)
            .await
            .unwrap_or_else(|_| Err(Error::Timeout(format!("peer {peer} did not answer within {PEER_CALL:?}"))))
    }

    /// Sends `request` to every other member at once; each answer (or failure) with its peer.
    pub(super) async fn ask_others(&self, request: RpcRequest) -> Vec<(PeerId, Result<RpcResponse>)> {
        let calls = self.other_members().into_iter().map(|(peer, addrs)| {
            let request = request.clone();
            async move { (peer, self.call_peer(peer, addrs, request).await) }
        });
        futures::future::join_all(calls).await
    }

    /// `GET /peers`: the ID of every member, this one first; an unreachable one as `{id, error}`.
    pub fn peers(&self) -> BoxStream<'static, Id> {
        let cluster = self.clone();
        let me = stream::once({
            let cluster = cluster.clone();
            async move { cluster.id().await }
        });
        let others = stream::iter(self.other_members())
            .map(move |(peer, addrs)| {
                let cluster = cluster.clone();
                async move {
                    match cluster.call_peer(peer, addrs, RpcRequest::Id).await {
                        Ok(RpcResponse::Id(id)) => *id,
                        Ok(_) => unreachable_id(peer, "unexpected answer"),
                        Err(e) => unreachable_id(peer, &e.to_string()),
                    }
                }
            })
            .buffered(16);
        me.chain(others).boxed()
    }

    /// `POST /peers`: adds `peer` (see [`crate::consensus::Consensus::add_peer`]); its ID.
    pub async fn add_peer(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<Id> {
        let node = self.inner.consensus.add_peer(peer, addrs).await?;
        match self.call_peer(peer, node.multiaddrs(), RpcRequest::Id).await {
            Ok(RpcResponse::Id(id)) => Ok(*id),
            Ok(_) => Ok(unreachable_id(peer, "unexpected answer")),
            Err(e) => Ok(unreachable_id(peer, &e.to_string())),
        }
    }

    /// `DELETE /peers/{peer}[?force=true]`.
    pub async fn remove_peer(&self, peer: PeerId, force: bool) -> Result<()> {
        self.inner.consensus.remove_peer(peer, force).await
    }

    /// `GET /consensus` (ours).
    pub fn consensus_status(&self) -> ConsensusStatus {
        let vouched_seconds = self.vouched_left().as_secs();
        ConsensusStatus { departure: self.departure(), vouched_seconds, ..self.inner.consensus.status() }
    }

    /// `PUT /consensus/addresses` (ours): where members are now. Connects to each of them (in the
    /// background), so that members that all moved at once (every pod restarted on a new IP,
    /// while the membership still holds the old ones) hear each other again and elect a leader;
    /// each then records its own new address (see `Consensus::announce_address`). Peers that are
    /// not members, and this peer, are skipped. Returns how many it connects to.
    pub async fn introduce(&self, peers: Vec<(PeerId, Vec<Multiaddr>)>) -> Result<usize> {
        let members: Vec<String> = self.inner.consensus.members().into_iter().map(|m| m.peer_id).collect();
        let mut connecting = 0;
        for (peer, addrs) in peers {
            if peer != self.inner.p2p.peer_id() && !addrs.is_empty() && members.contains(&peer.to_string()) {
                self.inner.p2p.connect(peer, addrs).await?;
                connecting += 1;
            }
        }
        Ok(connecting)
    }

    /// `POST /consensus/init` (ours): starts a new cluster with this peer as its only member.
    pub async fn init_cluster(&self) -> Result<ConsensusStatus> {
        self.inner.consensus.initialize().await?;
        Ok(self.consensus_status())
    }

    /// Asks the bootstrap peers to add this one until one does (or the peer stops).
    pub(super) async fn join_until_member(self, bootstrap: Vec<Multiaddr>) {
        let mut pause = Duration::from_secs(1);
        loop {
            match self.inner.consensus.join(&bootstrap).await {
                Ok(_) => return,
                Err(e) => tracing::warn!(error = %e, retry_in = ?pause, "not joined yet"),
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(30));
            if self.inner.consensus.is_initialized().await {
                return;
            }
        }
    }

    /// Another peer's metrics: kept when they describe that very peer.
    pub(super) fn receive_metrics(&self, from: PeerId, metrics: Vec<Metric>) {
        let from = from.to_string();
        let now = Utc::now();
        for metric in metrics.into_iter().filter(|m| m.peer == from) {
            self.inner.monitor.publish(metric, now);
        }
    }

    /// Sends this peer's latest metrics to every other member (fire and forget: a member that
    /// misses them sees them expire, which is what an unreachable peer should look like).
    pub(super) fn share_metrics(&self, metrics: Vec<Metric>) {
        for (peer, addrs) in self.other_members() {
            let cluster = self.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                if let Err(e) = cluster.call_peer(peer, addrs, RpcRequest::Metrics(metrics)).await {
                    tracing::debug!(%peer, error = %e, "could not share metrics");
                }
            });
        }
    }

    /// Connects this peer's IPFS daemon to the daemons of the other members, so content moves
    /// between them by bitswap. Daemons already connected are left alone.
    pub(super) async fn link_ipfs_daemons(&self) {
        let connected = match self.inner.ipfs.swarm_peers().await {
            Ok(peers) => peers,
            Err(e) => return tracing::debug!(error = %e, "cannot list the daemon's swarm peers"),
        };
        let own = self.inner.ipfs_id.read().expect("ipfs id lock").id;
        for (peer, addrs) in self.other_members() {
            let Ok(RpcResponse::Id(id)) = self.call_peer(peer, addrs, RpcRequest::Id).await else { continue };
            let Some(ipfs) = id.ipfs.id else { continue };
            if connected.contains(&ipfs) || Some(ipfs) == own {
                continue;
            }
            for address in id.ipfs.addresses.iter().filter(|a| is_tcp(a)) {
                let address = with_p2p(address, ipfs);
                match self.inner.ipfs.swarm_connect(&address).await {
                    Ok(()) => {
                        tracing::info!(cluster_peer = %peer, ipfs = %address, "connected the IPFS daemons");
                        break;
                    }
                    Err(e) => tracing::debug!(ipfs = %address, error = %e, "could not connect the IPFS daemons"),
                }
            }
        }
    }
}

fn unreachable_id(peer: PeerId, error: &str) -> Id {
    Id { id: Some(peer), error: error.to_string(), ..Id::default() }
}

fn is_tcp(address: &Multiaddr) -> bool {
    address.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::Tcp(_)))
        && !address
            .iter()
            .any(|p| matches!(p, libp2p::multiaddr::Protocol::Ws(_) | libp2p::multiaddr::Protocol::Wss(_)))
}

fn with_p2p(address: &Multiaddr, peer: PeerId) -> Multiaddr {
    match address.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(_)) => address.clone(),
        _ => address.clone().with(libp2p::multiaddr::Protocol::P2p(peer)),
    }
}

/// Members as `ClusterNode`s are what the RPC carries; the REST API speaks peer IDs.
pub(super) fn peer_ids(nodes: &[ClusterNode]) -> Vec<PeerId> {
    nodes.iter().filter_map(ClusterNode::peer).collect()
}
