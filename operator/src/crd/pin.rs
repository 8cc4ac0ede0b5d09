//! `Pin`: content a person wants pinned in a cluster, as a Kubernetes object. The object is the
//! desired state; its status is where the cluster holds the content. What the schema can check,
//! the API server refuses; the rest is marked by the controller with a condition.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The shape of a CID as IPFS Cluster accepts it: CIDv0 (base58btc `Qm...`), or a CIDv1 in one
/// of the multibase encodings people paste (base32, base58btc, base36, base16). The sidecar
/// decodes it for real; this only keeps typos out of the API server.
pub const CID_PATTERN: &str = "^(Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{50,}|B[A-Z2-7]{50,}|z[1-9A-HJ-NP-Za-km-z]{40,}|k[0-9a-z]{40,}|f[0-9a-f]{60,}|F[0-9A-F]{60,})$";
/// Go duration text, as the REST API's `expire-in` takes it (`90m`, `24h`, `1h30m`).
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// Content pinned in a cluster.
// Each printer column repeats `type_`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "ipfscluster.io",
    version = "v1alpha1",
    kind = "Pin",
    namespaced,
    status = "PinStatus",
    shortname = "ipfspin",
    category = "ipfscluster",
    printcolumn(name = "CID", type_ = "string", json_path = ".spec.cid"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Pinned", type_ = "string", json_path = ".status.replicas"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("!has(self.replicationMin) || !has(self.replicationMax) || self.replicationMax == -1 || (self.replicationMin != -1 && self.replicationMin <= self.replicationMax)")
        .message("replicationMin must not exceed replicationMax (-1, everywhere, is the largest)"),
    validation = Rule::new("!(has(self.expireAt) && has(self.expireIn))").message("give expireAt or expireIn, not both")
)]
#[serde(rename_all = "camelCase")]
pub struct PinSpec {
    /// The content's CID (v0 or v1). It names what is pinned, so it cannot change: make another Pin.
    #[x_kube(validation = Rule::new("self == oldSelf").message("cid is immutable: make another Pin"))]
    #[schemars(regex(pattern = CID_PATTERN), length(max = 689))]
    pub cid: String,
    /// A name for the pin (the REST API's `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub name: Option<String>,
    /// The fewest peers that must hold it; -1 for every peer. The cluster's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub replication_min: Option<i32>,
    /// The most peers that should hold it; -1 for every peer. The cluster's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub replication_max: Option<i32>,
    /// How the IPFS daemons pin it.
    #[serde(default)]
    pub mode: PinMode,
    /// Pods (by name) that should hold it first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocations: Vec<String>,
    /// When the cluster unpins it by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_at: Option<Time>,
    /// How long after it is pinned the cluster unpins it by itself (`24h`, `90m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub expire_in: Option<String>,
    /// Free-form metadata stored with the pin.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// The cluster (its StatefulSet's name) in this namespace; the only one when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// How the IPFS daemons pin the content.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PinMode {
    /// The block and everything it links to.
    #[default]
    Recursive,
    /// The block alone.
    Direct,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PinStatus {
    #[serde(default)]
    pub phase: PinPhase,
    /// `pinned/wanted`, for `kubectl get pins`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<String>,
    /// Peers holding it (or meant to).
    #[serde(default)]
    pub pinned: i32,
    /// Peers it is allocated to; every peer for replication -1.
    #[serde(default)]
    pub wanted: i32,
    /// Where it lives: each allocated peer, its pod and what its daemon reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PinLocation>,
    /// When the cluster unpins it by itself: `expireAt`, or `expireIn` after the spec was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// The last error the cluster reported for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One peer the content is allocated to.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PinLocation {
    /// The peer's pod, when it is one of the cluster's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub peer_id: String,
    /// The tracker's status there (`pinned`, `pinning`, `pin_error`...).
    pub status: String,
}

/// Where a Pin is in its life.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PinPhase {
    /// Accepted; not sent to the cluster yet.
    #[default]
    Queued,
    /// The cluster has it; the daemons are fetching it.
    Pinning,
    /// Held by every peer it is allocated to.
    Pinned,
    /// Held by some of them; the others failed or cannot be reached (`lastError`).
    PartiallyPinned,
    /// Held by none and a daemon reported an error (`lastError`), or the spec cannot be pinned.
    Error,
    /// Being unpinned (the Pin is being deleted).
    Unpinning,
    /// The cluster unpinned it at its expiry: change the expiry to pin it again, or delete the Pin.
    Expired,
}
