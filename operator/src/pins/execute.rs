//! Carries out the planner's steps: pins and unpins through one sidecar's REST API, finalizers
//! and statuses through the API server (server-side apply), events for `kubectl describe`.

use std::collections::BTreeMap;
use std::sync::Arc;

use cluster_client::client::Client;
use cluster_client::types::{parse_cid, parse_peer_id, PinOptions};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::observe::{status, wire_mode};
use super::plan::{Action, Applied, PinRequest, Step, Summary};
use super::FINALIZER;
use crate::crd::Pin;
use crate::membership::MANAGER;
use crate::{Error, Result};

/// One pass's executor over one cluster.
pub struct Executor<'a> {
    pub pins: Api<Pin>,
    /// The Pin objects the plan was made from, by name.
    pub objects: &'a BTreeMap<String, Arc<Pin>>,
    /// The sidecar that answered the listing, with the pod it runs in; `None` when none did
    /// (the plan then asks nothing of the cluster).
    pub sidecar: Option<(&'a str, &'a Client)>,
    pub recorder: &'a Recorder,
}

/// What one step did, for the controller's memory.
#[derive(Debug, Default)]
pub struct Outcome {
    pub pin: String,
    /// The status written.
    pub written: Option<Summary>,
    /// The spec generation the cluster took.
    pub sent: Option<Applied>,
    /// The cluster's refusal of a pin or unpin.
    pub refused: Option<String>,
    /// The first action that failed, which ended the step.
    pub error: Option<Error>,
}

impl Executor<'_> {
    /// Runs a step's actions in order; the first failure ends it (the next pass plans again).
    pub async fn run(&self, step: &Step) -> Outcome {
        let mut outcome = Outcome { pin: step.pin.clone(), ..Outcome::default() };
        let Some(object) = self.objects.get(&step.pin) else { return outcome };
        for action in &step.actions {
            if let Err(error) = self.act(object, action, &mut outcome).await {
                tracing::debug!(pin = %step.pin, action = action.kind(), %error, "action failed");
                if action.calls_cluster() {
                    outcome.refused = Some(error.to_string());
                }
                outcome.error = Some(error);
                break;
            }
        }
        outcome
    }

    async fn act(&self, object: &Pin, action: &Action, outcome: &mut Outcome) -> Result<()> {
        let name = object.name_any();
        match action {
            Action::AddFinalizer => self.finalize(&name, true).await,
            Action::RemoveFinalizer => self.finalize(&name, false).await,
            Action::Pin { cid, request, applied } => {
                let (pod, client) = self.sidecar()?;
                let cid = parse_cid(cid).map_err(|source| Error::Sidecar { pod: pod.into(), source })?;
                let options = options(request).map_err(|source| Error::Sidecar { pod: pod.into(), source })?;
                client.pin(&cid, &options).await.map_err(|source| Error::Sidecar { pod: pod.into(), source })?;
                outcome.sent = Some(*applied);
                Ok(())
            }
            Action::Unpin { cid } => {
                let (pod, client) = self.sidecar()?;
                let cid = parse_cid(cid).map_err(|source| Error::Sidecar { pod: pod.into(), source })?;
                match client.unpin(&cid).await {
                    // Unpinned meanwhile (by hand, or by its expiry): what was wanted.
                    Ok(_) | Err(cluster_client::Error::NotFound(_)) => Ok(()),
                    Err(source) => Err(Error::Sidecar { pod: pod.into(), source }),
                }
            }
            Action::SetStatus(summary) => {
                let written = status(summary, object.metadata.generation, object.status.as_ref());
                // The whole status, replaced (JSON Patch `add` replaces a member that exists): the
                // operator alone writes it, and a plain patch costs the API server less than a
                // server-side apply, which counts when thousands of Pins change at once.
                let patch: json_patch::Patch = serde_json::from_value(json!([
                    { "op": "add", "path": "/status", "value": written }
                ]))
                .expect("a JSON patch");
                self.pins.patch_status(&name, &PatchParams::default(), &Patch::<()>::Json(patch)).await?;
                outcome.written = Some(summary.clone());
                Ok(())
            }
            Action::Note { warning, reason, message } => {
                let event = Event {
                    type_: if *warning { EventType::Warning } else { EventType::Normal },
                    reason: (*reason).to_string(),
                    note: Some(message.clone()),
                    action: "Reconcile".into(),
                    secondary: None,
                };
                // A lost event loses nothing but a line in `describe`.
                if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
                    tracing::warn!(%error, pin = %name, "could not record an event");
                }
                Ok(())
            }
        }
    }

    fn sidecar(&self) -> Result<(&str, &Client)> {
        self.sidecar.ok_or_else(|| Error::Misconfigured("no sidecar of the cluster answers".into()))
    }

    /// Server-side apply of the finalizer list this manager owns: with ours, or empty (which
    /// drops ours and leaves anyone else's).
    async fn finalize(&self, name: &str, keep: bool) -> Result<()> {
        let finalizers: Vec<&str> = if keep { vec![FINALIZER] } else { vec![] };
        let patch = json!({
            "apiVersion": Pin::api_version(&()),
            "kind": Pin::kind(&()),
            "metadata": { "name": name, "finalizers": finalizers },
        });
        self.pins.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
        Ok(())
    }
}

fn options(request: &PinRequest) -> cluster_client::Result<PinOptions> {
    Ok(PinOptions {
        replication_factor_min: request.replication_min,
        replication_factor_max: request.replication_max,
        name: request.name.clone(),
        mode: wire_mode(request.mode),
        user_allocations: request.allocations.iter().map(|id| parse_peer_id(id)).collect::<Result<_, _>>()?,
        expire_at: request.expire_at,
        metadata: request.metadata.clone(),
        ..PinOptions::default()
    })
}
