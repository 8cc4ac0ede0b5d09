//! The peer as the REST API sees it: one handle over state, consensus, tracker, IPFS and monitor.
//!
//! Every REST endpoint maps to one method here. Methods with a `local` flag answer for this peer
//! only; the others answer for the whole cluster (today the cluster is this one peer; the
//! multi-peer layer gathers the other peers' answers behind the same signatures).

use futures::stream::BoxStream;

use crate::ipfs::AddRequest;
use crate::types::{
    Alert, Cid, ConnectGraph, GlobalPinInfo, GlobalRepoGc, Id, Metric, Pin, PinOptions, PinType, Readiness,
    StatusFilter, AddedOutput,
};
use crate::Result;

/// Which pin types `GET /allocations` lists (`filter=pin,meta-pin,...`; empty = all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinTypeFilter(pub Vec<PinType>);

impl PinTypeFilter {
    /// Parses `pin,meta-pin,clusterdag-pin,shard-pin,all`; unknown names are an error.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut types = Vec::new();
        for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if name == "all" {
                return Ok(PinTypeFilter::default());
            }
            types.push(PinType::parse(name).ok_or_else(|| format!("unknown pin type filter: {name}"))?);
        }
        Ok(PinTypeFilter(types))
    }

    pub fn matches(&self, pin_type: PinType) -> bool {
        self.0.is_empty() || self.0.contains(&pin_type)
    }
}

/// Options of `POST /add` that are the cluster's (the rest go to the daemon's `add`).
#[derive(Clone, Debug, Default)]
pub struct AddOptions {
    pub pin: PinOptions,
    /// `no-pin`: import only.
    pub no_pin: bool,
    /// `local`: pin on this peer only... (reference: add locally, then pin cluster-wide).
    pub local: bool,
}

/// The cluster-level settings of `service.json`'s `cluster` section that the peer acts on.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub peername: String,
    /// Defaults used when a pin asks for 0 (-1 = everywhere).
    pub replication_factor_min: i32,
    pub replication_factor_max: i32,
}

impl ClusterConfig {
    /// Reference defaults: replicate everywhere. More settings (tracker, monitor...) join here.
    pub fn new(peername: impl Into<String>) -> Self {
        ClusterConfig { peername: peername.into(), replication_factor_min: -1, replication_factor_max: -1 }
    }
}

/// Handle to the running peer; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    _todo: (),
}

impl Cluster {
    /// Opens the durable state under `data_dir`, starts the tracker, monitor and background tasks.
    pub async fn start(
        _config: ClusterConfig,
        _identity: crate::identity::Identity,
        _ipfs: std::sync::Arc<dyn crate::ipfs::IpfsConnector>,
        _data_dir: &std::path::Path,
    ) -> Result<Cluster> {
        todo!()
    }

    /// Stops background work and closes the state; pending writes fail with `ShuttingDown`.
    pub async fn shutdown(&self) {
        todo!()
    }

    /// Prometheus text exposition of the peer's metrics (`GET /metrics`).
    pub fn prometheus(&self) -> String {
        todo!()
    }

    /// `GET /id`.
    pub async fn id(&self) -> Id {
        todo!()
    }

    /// `GET /peers`: the ID of every member (unreachable ones carry `error`).
    pub async fn peers(&self) -> Vec<Id> {
        todo!()
    }

    /// `POST /pins/{cid}`: allocates, commits and returns the pin as committed.
    pub async fn pin(&self, _cid: Cid, _opts: PinOptions) -> Result<Pin> {
        todo!()
    }

    /// `POST /pins/{ipfs,ipns,ipld}/{path}`: resolves through IPFS, then pins.
    pub async fn pin_path(&self, _path: &str, _opts: PinOptions) -> Result<Pin> {
        todo!()
    }

    /// `DELETE /pins/{cid}`: the pin as it was; `Error::NotFound` when absent.
    pub async fn unpin(&self, _cid: &Cid) -> Result<Pin> {
        todo!()
    }

    /// `DELETE /pins/{ipfs,ipns,ipld}/{path}`.
    pub async fn unpin_path(&self, _path: &str) -> Result<Pin> {
        todo!()
    }

    /// `GET /allocations`: every pin of the pinset, streamed.
    pub fn allocations(&self, _filter: PinTypeFilter) -> BoxStream<'static, Result<Pin>> {
        todo!()
    }

    /// `GET /allocations/{cid}`: `Error::NotFound("pin is not part of the pinset")` when absent.
    pub async fn allocation(&self, _cid: &Cid) -> Result<Pin> {
        todo!()
    }

    /// `GET /pins`: statuses of every pin (or of `cids`), filtered, streamed.
    pub fn status_all(
        &self,
        _filter: StatusFilter,
        _cids: Option<Vec<Cid>>,
        _local: bool,
    ) -> BoxStream<'static, Result<GlobalPinInfo>> {
        todo!()
    }

    /// `GET /pins/{cid}`: not in the pinset = every peer `unpinned`.
    pub async fn status(&self, _cid: &Cid, _local: bool) -> Result<GlobalPinInfo> {
        todo!()
    }

    /// `POST /pins/{cid}/recover`.
    pub async fn recover(&self, _cid: &Cid, _local: bool) -> Result<GlobalPinInfo> {
        todo!()
    }

    /// `POST /pins/recover`: the pins re-queued, streamed.
    pub fn recover_all(&self, _local: bool) -> BoxStream<'static, Result<GlobalPinInfo>> {
        todo!()
    }

    /// `POST /add`: imports through the local daemon, then pins the root (unless `no_pin`).
    pub async fn add(
        &self,
        _request: AddRequest,
        _options: AddOptions,
    ) -> Result<BoxStream<'static, Result<AddedOutput>>> {
        todo!()
    }

    /// `GET /monitor/metrics`.
    pub fn metric_names(&self) -> Vec<String> {
        todo!()
    }

    /// `GET /monitor/metrics/{name}`: the latest valid metric of each peer.
    pub fn metrics(&self, _name: &str) -> Vec<Metric> {
        todo!()
    }

    /// `GET /health/alerts`: newest first.
    pub fn alerts(&self) -> Vec<Alert> {
        todo!()
    }

    /// `GET /health/graph`.
    pub async fn health_graph(&self) -> ConnectGraph {
        todo!()
    }

    /// `POST /ipfs/gc`.
    pub async fn ipfs_gc(&self, _local: bool) -> Result<GlobalRepoGc> {
        todo!()
    }

    /// The readiness endpoint (ours).
    pub async fn readiness(&self) -> Readiness {
        todo!()
    }
}
