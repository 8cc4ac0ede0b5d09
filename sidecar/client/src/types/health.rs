//! Health objects: `/health/graph`, `/health/bandwidth`, `/ipfs/gc`, `/add` output and the
//! readiness report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::cid::{opt_cid_serde, Cid};

/// `GET /health/graph`: who is connected to whom, keyed by base58 peer IDs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectGraph {
    pub cluster_id: String,
    #[serde(default)]
    pub id_to_peername: BTreeMap<String, String>,
    #[serde(default)]
    pub ipfs_links: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub cluster_links: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub cluster_trust_links: BTreeMap<String, bool>,
    #[serde(default)]
    pub cluster_to_ipfs: BTreeMap<String, String>,
}

/// One protocol's traffic, as the reference's `api.Bandwidth`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Bandwidth {
    pub total_in: u64,
    pub total_out: u64,
    /// Bytes per second.
    pub rate_in: f64,
    pub rate_out: f64,
}

/// `GET /health/bandwidth`: per protocol ID.
pub type BandwidthByProtocol = BTreeMap<String, Bandwidth>;

/// One line of `POST /add`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AddedOutput {
    pub name: String,
    #[serde(default, with = "opt_cid_serde")]
    pub cid: Option<Cid>,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub allocations: Option<Vec<String>>,
}

/// A key collected by one peer's IPFS garbage collection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RepoGcKey {
    #[serde(default, with = "opt_cid_serde", skip_serializing_if = "Option::is_none")]
    pub key: Option<Cid>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RepoGc {
    pub peer: String,
    pub peername: String,
    #[serde(default)]
    pub keys: Vec<RepoGcKey>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// `POST /ipfs/gc`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GlobalRepoGc {
    pub peer_map: BTreeMap<String, RepoGc>,
}

/// Ours: what the readiness endpoint reports. Ready only when every check passes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    /// A consensus member with a live leader: itself hearing from a majority, or a member it
    /// heard from lately.
    pub consensus: bool,
    /// The IPFS daemon answered its last probe.
    pub ipfs: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}
