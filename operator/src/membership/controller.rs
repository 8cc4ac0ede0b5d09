//! The membership controller: reconciles each cluster (a StatefulSet labelled
//! `ipfscluster.io/cluster`) when it, one of its pods or one of its `ClusterPeer`s changes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::instrument;

use super::execute::{Executor, CLUSTER_LABEL};
use super::observe::{observe, Snapshot};
use super::plan::{plan, Action, Standing};
use crate::context::Context;
use crate::crd::ClusterPeer;
use crate::sidecars::{self, Sidecars};
use crate::{Error, Result};

/// While anything is in motion (a change made, a sidecar not answering or waiting to join):
/// sidecars coming up send no Kubernetes event, so the controller looks again soon.
const IN_MOTION: Duration = Duration::from_secs(1);
/// A settled cluster is still looked at now and then (a member lost behind the operator's back).
const SETTLED: Duration = Duration::from_secs(30);
const AFTER_ERROR: Duration = Duration::from_secs(5);
/// Its name in metrics.
const CONTROLLER: &str = "membership";

/// Runs the controller over `namespace` until `shutdown` resolves.
pub async fn run(
    context: Arc<Context>,
    namespace: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), namespace);
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let peers = Api::<ClusterPeer>::namespaced(client, namespace);
    Controller::new(statefulsets, watcher::Config::default().labels(CLUSTER_LABEL))
        .owns(peers, watcher::Config::default().labels(CLUSTER_LABEL))
        .watches(pods, watcher::Config::default(), |pod| owning_statefulset(&pod))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|outcome| async move {
            if let Err(error) = outcome {
                tracing::debug!(%error, "reconcile failed");
            }
        })
        .await;
}

/// The StatefulSet a pod belongs to, from its owner reference.
fn owning_statefulset(pod: &Pod) -> Option<ObjectRef<StatefulSet>> {
    let owner = pod.owner_references().iter().find(|o| o.kind == "StatefulSet" && o.controller == Some(true))?;
    Some(ObjectRef::new(&owner.name).within(&pod.namespace()?))
}

#[instrument(skip_all, fields(cluster = %statefulset.name_any()))]
async fn reconcile(statefulset: Arc<StatefulSet>, context: Arc<Context>) -> Result<Requeue> {
    let started = Instant::now();
    let outcome = reconcile_once(&statefulset, &context).await;
    context.metrics.reconciled(CONTROLLER, started.elapsed(), outcome.is_ok());
    outcome
}

async fn reconcile_once(statefulset: &StatefulSet, context: &Context) -> Result<Requeue> {
    let namespace = statefulset.namespace().unwrap_or_default();
    let name = statefulset.name_any();
    let pods = sidecars::pods_of(&context.client, statefulset).await?;
    let peers = Api::<ClusterPeer>::namespaced(context.client.clone(), &namespace);
    let records = peers.list(&ListParams::default().labels(&format!("{CLUSTER_LABEL}={name}"))).await?.items;
    let sidecars = Sidecars::of(&context.client, statefulset, &pods).await?;
    let statuses = sidecars.statuses().await;
    let observed = observe(&Snapshot { statefulset, pods: &pods, records: &records, sidecars: &statuses });
    let actions = plan(&observed);
    context.metrics.queued(CONTROLLER, actions.len());
    let executor = Executor { statefulset, peers, records: &records, sidecars: &sidecars, recorder: &context.recorder };
    let mut failure = None;
    for action in &actions {
        tracing::info!(?action, "acting");
        context.metrics.acted(CONTROLLER, action.kind());
        if let Err(error) = executor.run(action).await {
            tracing::warn!(?action, %error, "action failed");
            failure.get_or_insert(error);
            // A failed membership change leaves the next one to the next pass.
            if matches!(action, Action::Initialize { .. } | Action::Join { .. } | Action::Remove { .. }) {
                break;
            }
        }
    }
    if let Some(error) = failure {
        return Err(error);
    }
    let waiting = observed.pods.iter().any(|p| p.sidecar.as_ref().is_none_or(|s| s.standing != Standing::Member));
    Ok(Requeue::requeue(if actions.is_empty() && !waiting { SETTLED } else { IN_MOTION }))
}

fn error_policy(statefulset: Arc<StatefulSet>, error: &Error, _: Arc<Context>) -> Requeue {
    tracing::warn!(cluster = %statefulset.name_any(), %error, "reconcile failed; retrying");
    Requeue::requeue(AFTER_ERROR)
}
