//! What the peer says about itself: ID, peers, metrics, alerts, the health graph, GC, readiness.

use chrono::Utc;
use multiaddr::{Multiaddr, Protocol};

use super::Cluster;
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

    /// `GET /health/alerts`: newest first.
    pub fn alerts(&self) -> Vec<Alert> {
        self.inner.monitor.alerts()
    }

    /// `GET /health/graph`.
    pub async fn health_graph(&self) -> ConnectGraph {
        let me = self.inner.me.clone();
        let ipfs = self.inner.ipfs_id.read().expect("ipfs id lock").id.map(|id| id.to_string());
        let mut graph = ConnectGraph { cluster_id: me.clone(), ..Default::default() };
        graph.id_to_peername.insert(me.clone(), self.inner.config.peername.clone());
        graph.cluster_links.insert(me.clone(), Vec::new());
        graph.cluster_trust_links.insert(me.clone(), true);
        if let Some(ipfs) = ipfs {
            graph.ipfs_links.insert(ipfs.clone(), Vec::new());
            graph.cluster_to_ipfs.insert(me, ipfs);
        }
        graph
    }

    /// `POST /ipfs/gc`: a failing daemon is reported in the peer's entry, not as a failed request.
    pub async fn ipfs_gc(&self, _local: bool) -> Result<GlobalRepoGc> {
        let me = self.inner.me.clone();
        let mut entry = RepoGc { peer: me.clone(), peername: self.inner.config.peername.clone(), ..Default::default() };
        match self.inner.ipfs.repo_gc().await {
            Ok(keys) => entry.keys = keys,
            Err(e) => entry.error = e.to_string(),
        }
        Ok(GlobalRepoGc { peer_map: [(me, entry)].into_iter().collect() })
    }

    /// The readiness endpoint (ours): ready when the state is serving and the daemon answers.
    pub async fn readiness(&self) -> Readiness {
        let consensus = self.inner.consensus.is_ready();
        let ipfs = self.inner.ipfs_up.load(std::sync::atomic::Ordering::Relaxed);
        let mut problems = Vec::new();
        if !consensus {
            problems.push("not a cluster member with a known leader yet".to_string());
        }
        if !ipfs {
            let error = self.inner.ipfs_id.read().expect("ipfs id lock").error.clone();
            problems.push(format!("the IPFS daemon does not answer: {error}"));
        }
        Readiness { ready: consensus && ipfs, consensus, ipfs, problems }
    }
}
