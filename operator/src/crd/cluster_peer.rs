//! `ClusterPeer`: one per peer pod, created and owned by the operator. Its status is what the
//! operator last saw of the peer's membership; its finalizer means "removed from consensus before
//! this object goes", so deleting one by hand force-removes that peer (e.g. after its node is lost
//! for good).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The peer of one pod of a cluster's StatefulSet.
// Each printer column repeats `type_`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ipfscluster.io",
    version = "v1alpha1",
    kind = "ClusterPeer",
    namespaced,
    status = "ClusterPeerStatus",
    shortname = "cpeer",
    category = "ipfscluster",
    printcolumn(name = "Pod", type_ = "string", json_path = ".spec.pod"),
    printcolumn(name = "Peer ID", type_ = "string", json_path = ".status.peerId"),
    printcolumn(name = "Role", type_ = "string", json_path = ".status.role"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPeerSpec {
    /// The StatefulSet whose pods form the cluster.
    #[x_kube(validation = Rule::new("self == oldSelf").message("cluster is immutable"))]
    pub cluster: String,
    /// The pod this peer runs in.
    #[x_kube(validation = Rule::new("self == oldSelf").message("pod is immutable"))]
    pub pod: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPeerStatus {
    /// The peer's libp2p ID, once its sidecar answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
    /// Its Raft node ID (a pod with wiped data comes back as a new node), in decimal: node IDs
    /// are unsigned 64-bit, beyond what a Kubernetes integer (int64) holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<PeerRole>,
    #[serde(default)]
    pub phase: PeerPhase,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A member's vote: voters form the quorum; learners replicate and are promoted when voters leave.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRole {
    Voter,
    Learner,
}

/// Where the peer is in its life as a member.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeerPhase {
    /// The pod exists; its sidecar is not ready yet.
    #[default]
    Pending,
    /// Being added to consensus.
    Joining,
    /// A member.
    Joined,
    /// Being removed from consensus (its pod is condemned, or this object is being deleted).
    Leaving,
    /// No longer a member.
    Removed,
    /// Cannot join or leave; the conditions say why.
    Failed,
}
