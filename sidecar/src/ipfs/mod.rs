//! The IPFS connector: everything the peer asks of its IPFS daemon.
//!
//! [`IpfsConnector`] is the seam: [`kubo::KuboClient`] speaks the Kubo RPC API over HTTP to a real
//! daemon; [`fake::FakeIpfs`] is a fast in-process fake for unit tests and throughput benchmarks.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::types::{Cid, CidKey, IpfsId, PinMode};
use crate::Result;

pub mod car;
pub mod fake;
pub mod kubo;

/// Repository usage, for the `freespace` metric.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepoStat {
    pub repo_size: u64,
    pub storage_max: u64,
}

impl RepoStat {
    pub fn free_space(&self) -> u64 {
        self.storage_max.saturating_sub(self.repo_size)
    }
}

/// One line of an `add`: a file or directory the daemon imported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedEntry {
    pub name: String,
    #[serde(with = "crate::types::cid_serde")]
    pub cid: Cid,
    /// Bytes read so far (progress lines) or total.
    pub bytes: u64,
    /// The DAG size as the daemon reports it.
    pub size: u64,
}

/// A request to import content: the client's multipart body passed through to the daemon's `add`.
pub struct AddRequest {
    /// The request's `Content-Type` (multipart/form-data with its boundary), forwarded as is.
    pub content_type: String,
    pub body: BoxStream<'static, std::result::Result<Bytes, std::io::Error>>,
    /// Query parameters the daemon's `add` understands (`cid-version`, `raw-leaves`, `chunker`,
    /// `hash`, `wrap-with-directory`, `hidden`, `progress`...).
    pub params: Vec<(String, String)>,
}

/// A key removed by garbage collection, or the error reported for it (the wire type of `/ipfs/gc`).
pub use crate::types::RepoGcKey as GcKey;

#[async_trait]
pub trait IpfsConnector: Send + Sync + 'static {
    /// The daemon's identity; also the readiness probe.
    async fn id(&self) -> Result<IpfsId>;
    /// Pins `cid`, connecting to `origins` first. Bounded by the configured timeouts.
    async fn pin(&self, cid: &Cid, mode: PinMode, origins: &[Multiaddr]) -> Result<()>;
    /// Unpins `cid`; "not pinned" counts as success.
    async fn unpin(&self, cid: &Cid) -> Result<()>;
    /// How `cid` is pinned (recursive or direct), or `None` when it is not.
    async fn pin_status(&self, cid: &Cid) -> Result<Option<PinMode>>;
    /// Every recursive and direct pin of the daemon (indirect pins are not listed).
    async fn pin_ls(&self) -> Result<HashMap<CidKey, PinMode>>;
    /// Connects the daemon to another IPFS daemon at `address`, which ends in `/p2p/<peer id>`.
    /// Daemons fetch content only from daemons they are connected to, so the peer connects its
    /// daemon to the daemons of the other cluster peers (and to a pin's origins). Connecting to an
    /// already connected daemon is a success.
    async fn swarm_connect(&self, address: &Multiaddr) -> Result<()>;
    /// The IPFS peer IDs the daemon is connected to right now (each once), so that only the
    /// cluster peers' daemons that are missing get connected again (connections are lost when a
    /// daemon restarts, and daemons do not always redial by themselves).
    async fn swarm_peers(&self) -> Result<Vec<PeerId>>;
    async fn repo_stat(&self) -> Result<RepoStat>;
    /// Resolves an `/ipfs/...`, `/ipns/...` or `/ipld/...` path to the CID it names.
    async fn resolve(&self, path: &str) -> Result<Cid>;
    /// Imports content; yields the daemon's entries as they come (the last one is the root).
    async fn add(&self, request: AddRequest) -> Result<BoxStream<'static, Result<AddedEntry>>>;
    /// Runs garbage collection and reports what was removed.
    async fn repo_gc(&self) -> Result<Vec<GcKey>>;
    /// Imports the blocks of a CAR without pinning its roots (the cluster pins).
    async fn dag_import(&self, archive: car::ByteStream) -> Result<()>;
}
