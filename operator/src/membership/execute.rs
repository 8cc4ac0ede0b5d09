//! Carries out the planner's actions: membership changes through the sidecars' REST API,
//! `ClusterPeer` objects through the API server (server-side apply), and an event for each
//! change a person would want to see in `kubectl describe`.

use cluster_client::types::{parse_peer_id, PeerAddresses};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::plan::{Action, PeerState, Removal, VOUCH_SECONDS};
use crate::crd::{ClusterPeer, ClusterPeerSpec, ClusterPeerStatus, PeerPhase};
use crate::sidecars::Sidecars;
use crate::{Error, Result};

/// The field manager of everything the operator applies.
pub const MANAGER: &str = "cluster-operator";
/// On every `ClusterPeer`: its peer is out of consensus before the object goes.
pub const FINALIZER: &str = "ipfscluster.io/removed-from-consensus";
/// On every `ClusterPeer`: the StatefulSet (cluster) it belongs to.
pub const CLUSTER_LABEL: &str = "ipfscluster.io/cluster";

/// One cluster's executor for one reconcile pass.
pub struct Executor<'a> {
    pub statefulset: &'a StatefulSet,
    pub peers: Api<ClusterPeer>,
    pub records: &'a [ClusterPeer],
    pub sidecars: &'a Sidecars,
    pub recorder: &'a Recorder,
}

impl Executor<'_> {
    pub async fn run(&self, action: &Action) -> Result<()> {
        match action {
            Action::Record { pod } => self.apply_record(pod, true).await,
            Action::Initialize { pod } => {
                self.sidecar_call(pod, self.sidecars.client(pod)?.init_cluster()).await?;
                self.note(pod, "Initialized", "Initialize", format!("started the cluster on {pod}")).await;
                Ok(())
            }
            Action::Join { pod, peer_id, via } => {
                let peer = parse_peer_id(peer_id).map_err(|source| Error::Sidecar { pod: pod.clone(), source })?;
                let address = self
                    .sidecars
                    .cluster_address(pod)?
                    .parse()
                    .map_err(|e| Error::Misconfigured(format!("pod {pod}: cluster address: {e}")))?;
                self.sidecar_call(via, self.sidecars.client(via)?.add_peer(&peer, &[address])).await?;
                self.note(pod, "Joined", "Join", format!("added peer {peer_id} through {via}")).await;
                Ok(())
            }
            Action::Remove { peer_id, via, reason } => {
                let peer = parse_peer_id(peer_id).map_err(|source| Error::Sidecar { pod: via.clone(), source })?;
                self.sidecar_call(via, self.sidecars.client(via)?.remove_peer(&peer, false)).await?;
                if let Some(pod) = self.pod_of_peer(peer_id) {
                    let why = match reason {
                        Removal::Condemned => "its pod is scaled away",
                        Removal::Deleted => "its ClusterPeer is being deleted",
                        Removal::Superseded => "its pod came back as a new node",
                    };
                    self.note(&pod, "Removed", "Remove", format!("removed peer {peer_id} through {via}: {why}")).await;
                }
                Ok(())
            }
            Action::Introduce { pod, peers } => {
                let mut introduced = Vec::new();
                for (other, peer_id) in peers {
                    // A pod without an IP yet is left out; the next pass includes it.
                    if let Ok(address) = self.sidecars.cluster_address(other) {
                        introduced.push(PeerAddresses { peer_id: peer_id.clone(), addresses: vec![address] });
                    }
                }
                self.sidecar_call(pod, self.sidecars.client(pod)?.introduce(&introduced)).await?;
                Ok(())
            }
            Action::Vouch { pod } => {
                self.sidecar_call(pod, self.sidecars.client(pod)?.vouch(VOUCH_SECONDS)).await?;
                let note = format!("{pod} reports ready without a leader: the quorum needs pods not created yet");
                self.note(pod, "Vouched", "Vouch", note).await;
                Ok(())
            }
            Action::DeclareRestart { pod } => {
                self.sidecar_call(pod, self.sidecars.client(pod)?.declare_restart()).await?;
                Ok(())
            }
            Action::SetState { pod, state } => self.apply_status(pod, state).await,
            Action::Release { pod } => self.apply_record(pod, false).await,
            Action::Forget { pod } => {
                self.peers.delete(pod, &DeleteParams::default()).await?;
                Ok(())
            }
        }
    }

    async fn sidecar_call<T>(
        &self,
        pod: &str,
        call: impl std::future::Future<Output = cluster_client::Result<T>>,
    ) -> Result<T> {
        call.await.map_err(|source| Error::Sidecar { pod: pod.to_string(), source })
    }

    /// The `ClusterPeer` of `pod` as the operator wants it, with or without its finalizer (server-
    /// side apply drops a finalizer this manager applied before and no longer lists).
    async fn apply_record(&self, pod: &str, finalizer: bool) -> Result<()> {
        let cluster = self.statefulset.name_any();
        let mut record = ClusterPeer::new(pod, ClusterPeerSpec { cluster: cluster.clone(), pod: pod.to_string() });
        record.metadata.labels = Some([(CLUSTER_LABEL.to_string(), cluster)].into());
        record.metadata.owner_references = self.statefulset.controller_owner_ref(&()).map(|owner| vec![owner]);
        record.metadata.finalizers = Some(if finalizer { vec![FINALIZER.to_string()] } else { vec![] });
        self.peers.patch(pod, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&record)).await?;
        Ok(())
    }

    async fn apply_status(&self, pod: &str, state: &PeerState) -> Result<()> {
        let current = self.records.iter().find(|r| r.spec.pod == pod);
        let generation = current.and_then(|r| r.metadata.generation);
        let before = current.and_then(|r| r.status.as_ref()).and_then(|s| ready_condition(&s.conditions));
        let status = ClusterPeerStatus {
            peer_id: state.peer_id.clone(),
            node_id: state.node_id.map(|id| id.to_string()),
            role: state.role,
            phase: state.phase,
            conditions: vec![ready(state.phase, generation, before)],
            observed_generation: generation,
        };
        let patch = json!({
            "apiVersion": ClusterPeer::api_version(&()),
            "kind": ClusterPeer::kind(&()),
            "status": status,
        });
        self.peers.patch_status(pod, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
        Ok(())
    }

    fn pod_of_peer(&self, peer_id: &str) -> Option<String> {
        let record =
            self.records.iter().find(|r| r.status.as_ref().and_then(|s| s.peer_id.as_deref()) == Some(peer_id));
        record.map(|r| r.spec.pod.clone())
    }

    /// An event on the pod's `ClusterPeer`. A lost event loses nothing but a line in `describe`.
    async fn note(&self, pod: &str, reason: &str, action: &str, note: String) {
        let Some(record) = self.records.iter().find(|r| r.spec.pod == pod) else {
            return;
        };
        let event = Event {
            type_: EventType::Normal,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &record.object_ref(&())).await {
            tracing::warn!(%error, %pod, "could not record an event");
        }
    }
}

fn ready_condition(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == "Ready")
}

/// `Ready`: the peer is a member. Its transition time moves only when its status does.
fn ready(phase: PeerPhase, generation: Option<i64>, before: Option<&Condition>) -> Condition {
    let status = if phase == PeerPhase::Joined { "True" } else { "False" };
    let reason = format!("{phase:?}");
    let last_transition_time = match before {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason,
        message: match phase {
            PeerPhase::Pending => "waiting for the pod's sidecar to answer".into(),
            PeerPhase::Joining => "waiting to be added to consensus".into(),
            PeerPhase::Joined => "a member of consensus".into(),
            PeerPhase::Leaving => "being removed from consensus".into(),
            PeerPhase::Removed => "not a member of consensus".into(),
            PeerPhase::Failed => "cannot join or leave".into(),
        },
        last_transition_time,
        observed_generation: generation,
    }
}
