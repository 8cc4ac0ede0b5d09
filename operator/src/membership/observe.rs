//! From what the API server and the sidecars report to the planner's [`Observed`]: the one place
//! that knows how Kubernetes objects and `GET /consensus` map onto membership facts.

use std::collections::BTreeMap;

use cluster_client::types::{ConsensusRole, ConsensusStatus, Departure};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::plan::{Member, Membership, Observed, PeerState, PodManagement, PodView, Record, Sidecar, Standing};
use crate::crd::ClusterPeer;

/// The label the StatefulSet controller puts on each pod: its ordinal.
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Everything read for one cluster in one pass.
pub struct Snapshot<'a> {
    pub statefulset: &'a StatefulSet,
    pub pods: &'a [Pod],
    pub records: &'a [ClusterPeer],
    /// Each answering sidecar's `GET /consensus`, by pod name.
    pub sidecars: &'a BTreeMap<String, ConsensusStatus>,
}

pub fn observe(snapshot: &Snapshot<'_>) -> Observed {
    let spec = snapshot.statefulset.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let pod_management = match spec.and_then(|s| s.pod_management_policy.as_deref()) {
        Some("Parallel") => PodManagement::Parallel,
        _ => PodManagement::OrderedReady,
    };
    Observed {
        pod_management,
        replicas: u32::try_from(replicas).unwrap_or(0),
        pods: snapshot
            .pods
            .iter()
            .filter_map(|pod| {
                let name = pod.name_any();
                Some(PodView {
                    ordinal: pod_ordinal(pod)?,
                    terminating: pod.metadata.deletion_timestamp.is_some(),
                    sidecar: snapshot.sidecars.get(&name).map(sidecar),
                    name,
                })
            })
            .collect(),
        records: snapshot.records.iter().filter_map(record).collect(),
        membership: membership(snapshot.sidecars.values()),
    }
}

/// A pod's ordinal: the StatefulSet controller's label, or the end of its name.
pub fn pod_ordinal(pod: &Pod) -> Option<u32> {
    pod.labels().get(POD_INDEX_LABEL).and_then(|i| i.parse().ok()).or_else(|| name_ordinal(&pod.name_any()))
}

fn name_ordinal(name: &str) -> Option<u32> {
    name.rsplit_once('-')?.1.parse().ok()
}

fn sidecar(status: &ConsensusStatus) -> Sidecar {
    let standing = match status.role {
        ConsensusRole::Uninitialized => Standing::Uninitialized,
        ConsensusRole::Removed | ConsensusRole::Stopped => Standing::Out,
        ConsensusRole::Leader | ConsensusRole::Follower | ConsensusRole::Candidate | ConsensusRole::Learner => {
            Standing::Member
        }
    };
    Sidecar {
        peer_id: status.peer_id.clone(),
        node_id: status.node_id,
        standing,
        restart_declared: status.departure == Departure::Restart,
        unheard: status.members.iter().filter(|m| !m.reachable).map(|m| m.peer_id.clone()).collect(),
        vouched_seconds: status.vouched_seconds,
    }
}

fn record(peer: &ClusterPeer) -> Option<Record> {
    let status = peer.status.clone().unwrap_or_default();
    Some(Record {
        ordinal: name_ordinal(&peer.spec.pod)?,
        pod: peer.spec.pod.clone(),
        deleting: peer.metadata.deletion_timestamp.is_some(),
        state: PeerState {
            peer_id: status.peer_id,
            node_id: status.node_id.and_then(|id| id.parse().ok()),
            role: status.role,
            phase: status.phase,
        },
    })
}

/// The membership as the best-placed member sees it: the leader's own view, else a member that
/// knows a leader, else any member's.
fn membership<'a>(statuses: impl Iterator<Item = &'a ConsensusStatus>) -> Option<Membership> {
    let view = statuses
        .filter(|s| matches!(s.role, ConsensusRole::Leader | ConsensusRole::Follower | ConsensusRole::Learner))
        .max_by_key(|s| (s.role == ConsensusRole::Leader, s.leader.is_some(), s.term))?;
    Some(Membership {
        members: view
            .members
            .iter()
            .map(|m| Member { peer_id: m.peer_id.clone(), node_id: m.node_id, voter: m.voter })
            .collect(),
        leader: view.leader.clone(),
        changing: view.joint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_come_from_the_label_or_the_name() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("ipfs-cluster-12".into());
        assert_eq!(pod_ordinal(&pod), Some(12));
        pod.metadata.labels = Some([(POD_INDEX_LABEL.to_string(), "3".to_string())].into());
        assert_eq!(pod_ordinal(&pod), Some(3));
        pod.metadata.labels = None;
        pod.metadata.name = Some("no-ordinal".into());
        assert_eq!(pod_ordinal(&pod), None);
    }
}
