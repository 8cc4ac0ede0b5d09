//! What the peer says about itself: ID, peers, metrics, alerts, the health graph, GC, readiness.

use chrono::Utc;
use multiaddr::{Multiaddr, Protocol};

use super::Cluster;
use crate::protocol::{PeerLinks, RpcRequest, RpcResponse};
use crate::types::BandwidthByProtocol;
use crate::types::{
    Alert, ConnectGraph, GlobalRepoGc, Id, Metric, Readiness, RepoGc, COMPATIBLE_VERSION, RPC_PROTOCOL_VERSION,
};
use crate::Result;

impl Cluster {
    /// `GET /id`.
    pub async fn id(&self) -> Id {
        let inner = &self.inner;
        let members = inner.consensus.members();
        let cluster_peers_addresses = members
            .iter()
            .filter_map(|m| m.peer().filter(|peer| *peer != inner.identity.peer_id).map(|peer| (peer, m.multiaddrs())))
            .flat_map(|(peer, addrs)| addrs.into_iter().map(move |a| a.with(Protocol::P2p(peer))))
            .collect();
        Id {
            id: Some(inner.identity.peer_id),
            addresses: self.p2p_addresses().await,
            cluster_peers: match super::peers::peer_ids(&members) {
                // Not a member yet: only itself, as the reference reports a lone peer.
                peers if peers.is_empty() => vec![inner.identity.peer_id],
                peers => peers,
            },
            cluster_peers_addresses,
            version: COMPATIBLE_VERSION.to_string(),
            commit: String::new(),
            rpc_protocol_version: RPC_PROTOCOL_VERSION.to_string(),
            error: String::new(),
            ipfs: inner.ipfs_id.read().expect("ipfs id lock").clone(),
            peername: inner.config.peername.clone(),
            sidecar_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Where other peers reach this one: the listen addresses, each ending in `/p2p/<id>`.
    async fn p2p_addresses(&self) -> Vec<Multiaddr> {
        let addresses = self.inner.p2p.listen_addrs().await.unwrap_or_default();
        addresses.into_iter().map(|a| a.with(Protocol::P2p(self.inner.identity.peer_id))).collect()
    }

    /// `GET /monitor/metrics`.
    pub fn metric_names(&self) -> Vec<String> {
        self.inner.monitor.names()
    }

    /// `GET /monitor/metrics/{name}`: the latest valid metric of each peer.
    pub fn metrics(&self, name: &str) -> Vec<Metric> {
        self.inner.monitor.latest(name, Utc::now())
    }

    /// `GET /health/bandwidth`: what this peer's RPC streams carried, per libp2p protocol.
    pub fn bandwidth_by_protocol(&self) -> BandwidthByProtocol {
        self.inner.config.p2p.bandwidth.by_protocol()
    }

    /// `GET /health/alerts`: newest first.
    pub fn alerts(&self) -> Vec<Alert> {
        self.inner.monitor.alerts()
    }

    /// `GET /health/graph`: every member's cluster and IPFS connections (an unreachable member
    /// shows no links).
    pub async fn health_graph(&self) -> ConnectGraph {
        let me = self.inner.me.clone();
        let mut graph = ConnectGraph { cluster_id: me.clone(), ..Default::default() };
        let mut views = vec![(me, self.local_links().await)];
        for (peer, answer) in self.ask_others(RpcRequest::Links).await {
            let links = match answer {
                Ok(RpcResponse::Links(links)) => links,
                _ => PeerLinks::default(),
            };
            views.push((peer.to_string(), links));
        }
        for (peer, links) in views {
            graph.id_to_peername.insert(peer.clone(), links.peername);
            graph.cluster_links.insert(peer.clone(), links.cluster_peers);
            graph.cluster_trust_links.insert(peer.clone(), true);
            if let Some(ipfs) = links.ipfs_id {
                graph.ipfs_links.insert(ipfs.clone(), links.ipfs_peers);
                graph.cluster_to_ipfs.insert(peer, ipfs);
            }
        }
        graph
    }

    /// This peer's part of the health graph: its connections to members and its daemon's peers.
    pub(super) async fn local_links(&self) -> PeerLinks {
        let members: std::collections::HashSet<String> =
            self.inner.consensus.members().into_iter().map(|m| m.peer_id).collect();
        let connected = self.inner.p2p.connected_peers().await.unwrap_or_default();
        let ipfs_id = self.inner.ipfs_id.read().expect("ipfs id lock").id.map(|id| id.to_string());
        let ipfs_peers = match ipfs_id {
            Some(_) => self.inner.ipfs.swarm_peers().await.unwrap_or_default(),
            None => Vec::new(),
        };
        PeerLinks {
            peername: self.inner.config.peername.clone(),
            cluster_peers: connected.iter().map(ToString::to_string).filter(|p| members.contains(p)).collect(),
            ipfs_id,
            ipfs_peers: ipfs_peers.iter().map(ToString::to_string).collect(),
        }
    }

    /// `POST /ipfs/gc`: a failing daemon (or peer) is reported in its entry, not as a failed request.
    pub async fn ipfs_gc(&self, local: bool) -> Result<GlobalRepoGc> {
        let mut peer_map: std::collections::BTreeMap<String, RepoGc> =
            [(self.inner.me.clone(), self.local_repo_gc().await)].into_iter().collect();
        if !local {
            for (peer, answer) in self.ask_others(RpcRequest::RepoGc).await {
                let entry = match answer {
                    Ok(RpcResponse::RepoGc(entry)) => entry,
                    Ok(_) => RepoGc { peer: peer.to_string(), error: "unexpected answer".into(), ..Default::default() },
                    Err(e) => RepoGc { peer: peer.to_string(), error: e.to_string(), ..Default::default() },
                };
                peer_map.insert(peer.to_string(), entry);
            }
        }
        Ok(GlobalRepoGc { peer_map })
    }

    pub(super) async fn local_repo_gc(&self) -> RepoGc {
        let mut entry =
            RepoGc { peer: self.inner.me.clone(), peername: self.inner.config.peername.clone(), ..Default::default() };
        match self.inner.ipfs.repo_gc().await {
            Ok(keys) => entry.keys = keys,
            Err(e) => entry.error = e.to_string(),
        }
        entry
    }

    /// The readiness endpoint (ours): ready when the state is serving and the daemon answers.
    pub async fn readiness(&self) -> Readiness {
        let consensus = self.inner.consensus.is_ready();
        let vouch_left = self.vouched_left();
        let vouched = !consensus && !vouch_left.is_zero() && self.inner.consensus.is_member();
        let ipfs = self.inner.ipfs_up.load(std::sync::atomic::Ordering::Relaxed);
        let mut problems = Vec::new();
        if vouched {
            problems.push(format!(
                "no leader yet; ready as the operator vouched ({}s left): the members a quorum needs have no pods yet",
                vouch_left.as_secs()
            ));
        } else if !consensus {
            problems.push("not a cluster member with a known leader yet".to_string());
        }
        if !ipfs {
            let error = self.inner.ipfs_id.read().expect("ipfs id lock").error.clone();
            problems.push(format!("the IPFS daemon does not answer: {error}"));
        }
        Readiness { ready: (consensus || vouched) && ipfs, consensus, ipfs, problems }
    }
}
