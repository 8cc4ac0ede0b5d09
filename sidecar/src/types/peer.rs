//! Peer identity objects: `ID` (`GET /id`, `GET /peers`) and the IPFS daemon's identity inside it.

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use serde::{Deserialize, Serialize};

use super::pin::null_as_empty;
use super::status::opt_peer_id;

/// The REST API version we are wire-compatible with; clients check it.
pub const COMPATIBLE_VERSION: &str = "1.1.6";
pub const RPC_PROTOCOL_VERSION: &str = "/ipfscluster/1.0/rpc";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IpfsId {
    #[serde(default, with = "opt_peer_id")]
    pub id: Option<PeerId>,
    #[serde(default, with = "null_as_empty")]
    pub addresses: Vec<Multiaddr>,
    #[serde(default)]
    pub error: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Id {
    #[serde(with = "opt_peer_id")]
    pub id: Option<PeerId>,
    #[serde(default, with = "null_as_empty")]
    pub addresses: Vec<Multiaddr>,
    #[serde(default, with = "null_as_empty")]
    pub cluster_peers: Vec<PeerId>,
    #[serde(default, with = "null_as_empty")]
    pub cluster_peers_addresses: Vec<Multiaddr>,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub commit: String,
    #[serde(default)]
    pub rpc_protocol_version: String,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub ipfs: IpfsId,
    #[serde(default)]
    pub peername: String,
    /// Ours, beyond the reference: this implementation's own version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sidecar_version: String,
}

/// `GET /version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub version: String,
}
