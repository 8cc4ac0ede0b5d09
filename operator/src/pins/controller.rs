//! The Pin controller: watches Pins and clusters into local caches, and runs passes over each
//! cluster's Pins (see the module docs of [`super`]) until told to stop.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use cluster_client::client::Client;
use cluster_client::types::{parse_cid, Cid};
use futures::{stream, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::ListParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use tokio::sync::Notify;
use tracing::instrument;

use super::execute::{Executor, Outcome};
use super::observe::{cluster_pin, summary, view};
use super::plan::{cluster_for, plan, Applied, Cluster, Failure, Observed, Summary, Unavailable};
use crate::context::Context;
use crate::crd::{ClusterPeer, PeerPhase, Pin, PinPhase};
use crate::membership::CLUSTER_LABEL;
use crate::sidecars::{self, Sidecars};
use crate::Result;

/// After a pass that changed something or left a Pin in progress.
const IN_MOTION: Duration = Duration::from_millis(250);
/// When all is settled: how soon a pin removed behind the operator's back is noticed.
const SETTLED: Duration = Duration::from_secs(5);
/// While a cluster cannot be reached, passes over it back off from the first to the last.
const UNREACHABLE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
/// A refused pin is tried again after 1 s, 2 s, 4 s... up to this.
const MAX_RETRY: Duration = Duration::from_secs(300);
/// Steps in flight at once: each makes at most one sidecar call and a few API server writes.
const CONCURRENCY: usize = 32;
/// How long a sidecar has to say whether it can list (`GET /consensus`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a whole pin listing may take.
const LISTING_TIMEOUT: Duration = Duration::from_secs(120);
/// Up to this many CIDs, a listing names them (`GET /pins?cids=...`, a few KiB of query).
const NAMED_CIDS_AT_MOST: usize = 50;
/// kubectl's client-side apply keeps the whole object it applied in this annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Its name in metrics.
const CONTROLLER: &str = "pins";

/// Runs the controller over `namespace` until `shutdown` resolves; a pass under way finishes.
pub async fn run(context: Arc<Context>, namespace: &str, shutdown: impl std::future::Future<Output = ()>) {
    let pin_api = Api::<Pin>::namespaced(context.client.clone(), namespace);
    let cluster_api = Api::<StatefulSet>::namespaced(context.client.clone(), namespace);
    let (pins, pin_writer) = reflector::store();
    let (clusters, cluster_writer) = reflector::store();
    let changes = Arc::new(Notify::new());
    // The cache keeps what the plan reads: managed fields and kubectl's last-applied copy of the
    // spec are most of a Pin's size, and 10,000 Pins are cached.
    let pin_events = watcher(pin_api.clone(), watcher::Config::default()).default_backoff().modify(|pin| {
        pin.managed_fields_mut().clear();
        pin.annotations_mut().remove(LAST_APPLIED);
    });
    let pin_events = reflector::reflector(pin_writer, pin_events).map(|event| event.map(drop));
    let cluster_events = watcher(cluster_api, watcher::Config::default().labels(CLUSTER_LABEL));
    let cluster_events = reflector::reflector(cluster_writer, cluster_events).default_backoff().map(|e| e.map(drop));
    let watching = tokio::spawn({
        let changes = changes.clone();
        stream::select(pin_events, cluster_events).for_each(move |event| {
            if let Err(error) = event {
                tracing::warn!(%error, "watching Pins and clusters");
            }
            // One stored permit: events during a pass fold into one next pass.
            changes.notify_one();
            std::future::ready(())
        })
    });
    let mut shutdown = std::pin::pin!(shutdown);
    let ready = async { pins.wait_until_ready().await.is_ok() && clusters.wait_until_ready().await.is_ok() };
    let ready = tokio::select! {
        _ = &mut shutdown => false,
        ready = ready => ready,
    };
    let mut memory = Memory::default();
    if ready {
        loop {
            let delay = pass(&context, &pin_api, &pins, &clusters, &mut memory).await;
            tokio::select! {
                _ = &mut shutdown => break,
                _ = changes.notified() => {}
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
    watching.abort();
}

/// What the controller remembers of each Pin (by UID) between passes.
#[derive(Default)]
struct Memory {
    pins: HashMap<String, Remembered>,
    /// Passes in a row each cluster could not be reached.
    unreachable: HashMap<String, u32>,
}

#[derive(Default)]
struct Remembered {
    /// The status last written: compared with instead of a watch event that may lag behind.
    written: Option<Summary>,
    /// The spec generation sent to the cluster, before the status records it.
    sent: Option<Applied>,
    refusals: u32,
    failure: Option<Failure>,
}

/// Takes in what a step did: a status written, a spec taken, or a refusal (and its backoff).
fn remember(remembered: &mut Remembered, outcome: Outcome, now: chrono::DateTime<Utc>) {
    if let Some(written) = outcome.written {
        remembered.written = Some(written);
    }
    if let Some(sent) = outcome.sent {
        remembered.sent = Some(sent);
        remembered.refusals = 0;
        remembered.failure = None;
    }
    if let Some(message) = outcome.refused {
        tracing::info!(pin = %outcome.pin, %message, "the cluster refused");
        remembered.refusals = remembered.refusals.saturating_add(1);
        let wait = Duration::from_secs(1 << (remembered.refusals - 1).min(9)).min(MAX_RETRY);
        let retry_at = now + chrono::Duration::from_std(wait).unwrap_or_default();
        remembered.failure = Some(Failure { message, retry_at });
    }
}

/// What one pass over one cluster found.
#[derive(Default)]
struct Report {
    /// Pins awaiting the cluster (sent, fetching, unpinning, refused): the queue depth.
    pending: usize,
    failed: bool,
    /// How soon to look again.
    delay: Option<Duration>,
    phases: Vec<PinPhase>,
}

/// Every cluster's Pins once; how long until the next pass.
async fn pass(
    context: &Context,
    pin_api: &Api<Pin>,
    pins: &Store<Pin>,
    clusters: &Store<StatefulSet>,
    memory: &mut Memory,
) -> Duration {
    let clusters = clusters.state();
    let names: Vec<String> = clusters.iter().map(|c| c.name_any()).collect();
    let mut groups: BTreeMap<Result<String, String>, Vec<Arc<Pin>>> = BTreeMap::new();
    for pin in pins.state() {
        groups.entry(cluster_for(pin.spec.cluster.as_deref(), &names)).or_default().push(pin);
    }
    let mut delay = SETTLED;
    let mut pending = 0;
    let mut all_phases = Vec::new();
    for (group, group_pins) in groups {
        let started = Instant::now();
        let report = match &group {
            Ok(name) => {
                let statefulset = clusters.iter().find(|c| c.name_any() == *name).expect("grouped by a cluster's name");
                cluster_pass(context, pin_api, statefulset, &group_pins, memory).await
            }
            Err(why) => {
                let missing = Err(Unavailable::Missing(why.clone()));
                plan_and_run(context, pin_api, missing, None, &group_pins, memory).await
            }
        };
        context.metrics.reconciled(CONTROLLER, started.elapsed(), !report.failed);
        pending += report.pending;
        delay = delay.min(report.delay.unwrap_or(SETTLED));
        all_phases.extend(report.phases);
    }
    let live: BTreeSet<String> = pins.state().iter().filter_map(|p| p.uid()).collect();
    memory.pins.retain(|uid, _| live.contains(uid));
    memory.unreachable.retain(|name, _| names.contains(name));
    context.metrics.queued(CONTROLLER, pending);
    let mut by_phase = BTreeMap::new();
    for phase in all_phases {
        *by_phase.entry(phase).or_default() += 1;
    }
    context.metrics.pins_by_phase(&by_phase);
    delay
}

#[instrument(skip_all, fields(cluster = %statefulset.name_any(), pins = pins.len()))]
async fn cluster_pass(
    context: &Context,
    pin_api: &Api<Pin>,
    statefulset: &StatefulSet,
    pins: &[Arc<Pin>],
    memory: &mut Memory,
) -> Report {
    let name = statefulset.name_any();
    let wanted: BTreeSet<String> =
        pins.iter().filter_map(|p| super::observe::canonical_cid(&p.spec.cid).ok()).collect();
    let listed = list_cluster(context, statefulset, &wanted).await;
    let attempts = memory.unreachable.entry(name.clone()).or_default();
    *attempts = if listed.is_ok() { 0 } else { attempts.saturating_add(1) };
    let backoff = (*attempts > 0).then(|| UNREACHABLE.0.saturating_mul(1 << (*attempts - 1).min(5)).min(UNREACHABLE.1));
    let mut report = match listed {
        Ok((cluster, pod, client)) => {
            plan_and_run(context, pin_api, Ok(cluster), Some((&pod, &client)), pins, memory).await
        }
        Err(why) => {
            tracing::info!(%why, "cluster unreachable");
            plan_and_run(context, pin_api, Err(Unavailable::Unreachable(why)), None, pins, memory).await
        }
    };
    if let Some(backoff) = backoff {
        report.delay = Some(backoff);
    }
    report
}

/// The cluster's peers and its account of the `wanted` CIDs, from the first sidecar of a joined
/// peer that lists them, with that sidecar; or why none could.
async fn list_cluster(
    context: &Context,
    statefulset: &StatefulSet,
    wanted: &BTreeSet<String>,
) -> Result<(Cluster, String, Client), String> {
    let name = statefulset.name_any();
    let namespace = statefulset.namespace().unwrap_or_default();
    let records = Api::<ClusterPeer>::namespaced(context.client.clone(), &namespace)
        .list(&ListParams::default().labels(&format!("{CLUSTER_LABEL}={name}")))
        .await
        .map_err(|e| e.to_string())?;
    let peers: BTreeMap<String, String> = records
        .items
        .iter()
        .filter_map(|r| {
            let status = r.status.as_ref().filter(|s| s.phase == PeerPhase::Joined)?;
            Some((r.spec.pod.clone(), status.peer_id.clone()?))
        })
        .collect();
    let pods = sidecars::pods_of(&context.client, statefulset).await.map_err(|e| e.to_string())?;
    let sidecars = Sidecars::of(&context.client, statefulset, &pods).await.map_err(|e| e.to_string())?;
    let mut why = format!("no peer of cluster {name} has joined yet");
    for pod in peers.keys() {
        match listing(&sidecars, pod, wanted).await {
            Ok((pins, client)) => {
                return Ok((Cluster { name: name.clone(), peers: peers.clone(), pins }, pod.clone(), client))
            }
            Err(error) => why = error.to_string(),
        }
    }
    Err(why)
}

/// One sidecar's `GET /pins`, keeping the CIDs some Pin names. The sidecar is asked first, with
/// a short timeout, whether it is a member that knows a leader: one that hangs (or is frozen)
/// must not hold the pass for the listing's long timeout.
async fn listing(
    sidecars: &Sidecars,
    pod: &str,
    wanted: &BTreeSet<String>,
) -> Result<(BTreeMap<String, super::plan::ClusterPin>, Client)> {
    let failed = |source| crate::Error::Sidecar { pod: pod.to_string(), source };
    let consensus = sidecars.client_with(pod, PROBE_TIMEOUT)?.consensus().await.map_err(failed)?;
    if consensus.leader.is_none() {
        return Err(failed(cluster_client::Error::Unavailable("it knows no leader".into())));
    }
    let client = sidecars.client_with(pod, LISTING_TIMEOUT)?;
    // A few Pins in a large pinset ask for their CIDs alone rather than stream the whole pinset.
    let only: Vec<Cid> = if wanted.len() <= NAMED_CIDS_AT_MOST {
        wanted.iter().filter_map(|cid| parse_cid(cid).ok()).collect()
    } else {
        Vec::new()
    };
    let mut infos = client.status_all(None, &only, false).await.map_err(failed)?;
    let mut pins = BTreeMap::new();
    while let Some(info) = infos.next().await {
        let info = info.map_err(failed)?;
        let cid = info.cid.to_string();
        if let Some(pin) = cluster_pin(&info).filter(|_| wanted.contains(&cid)) {
            pins.insert(cid, pin);
        }
    }
    Ok((pins, sidecars.client(pod)?))
}

/// Plans one group of Pins, carries the steps out, and remembers what they did.
async fn plan_and_run(
    context: &Context,
    pin_api: &Api<Pin>,
    cluster: Result<Cluster, Unavailable>,
    sidecar: Option<(&str, &Client)>,
    pins: &[Arc<Pin>],
    memory: &mut Memory,
) -> Report {
    let now = Utc::now();
    let reachable = cluster.is_ok();
    let views = pins
        .iter()
        .map(|pin| {
            let remembered = pin.uid().and_then(|uid| memory.pins.get(&uid));
            let current = remembered.and_then(|r| r.written.clone()).unwrap_or_else(|| summary(pin.status.as_ref()));
            let mut view = view(pin, current);
            view.sent = remembered.and_then(|r| r.sent);
            view.failure = remembered.and_then(|r| r.failure.clone());
            view
        })
        .collect();
    let observed = Observed { now, cluster, pins: views };
    let steps = plan(&observed);
    let objects: BTreeMap<String, Arc<Pin>> = pins.iter().map(|p| (p.name_any(), p.clone())).collect();
    let executor = Executor { pins: pin_api.clone(), objects: &objects, sidecar, recorder: &context.recorder };
    let outcomes: Vec<Outcome> =
        stream::iter(&steps).map(|step| executor.run(step)).buffer_unordered(CONCURRENCY).collect().await;
    for action in steps.iter().flat_map(|s| &s.actions) {
        context.metrics.acted(CONTROLLER, action.kind());
    }

    let mut report = Report::default();
    let mut moving = steps.iter().any(|s| s.actions.iter().any(|a| a.calls_cluster()));
    let mut outcomes: HashMap<String, Outcome> = outcomes.into_iter().map(|o| (o.pin.clone(), o)).collect();
    let mut next_retry: Option<Duration> = None;
    for (pin, view) in pins.iter().zip(&observed.pins) {
        let remembered = memory.pins.entry(pin.uid().unwrap_or_default()).or_default();
        if let Some(outcome) = outcomes.remove(&view.name) {
            report.failed |= outcome.error.is_some();
            remember(remembered, outcome, now);
        }
        let phase = remembered.written.as_ref().unwrap_or(&view.current).phase;
        let in_progress = view.deleting
            || phase == PinPhase::Pinning
            || remembered.sent.is_some_and(|s| view.current.applied != Some(s));
        if let Some(failure) = &remembered.failure {
            let wait = (failure.retry_at - Utc::now()).to_std().unwrap_or_default();
            next_retry = Some(next_retry.map_or(wait, |w| w.min(wait)));
        }
        if remembered.failure.is_some() || (reachable && in_progress) {
            report.pending += 1;
        }
        moving |= reachable && in_progress && remembered.failure.is_none();
        report.phases.push(phase);
    }
    report.delay = match (moving, next_retry) {
        (true, _) => Some(IN_MOTION),
        (false, Some(retry)) => Some(retry.max(IN_MOTION)),
        (false, None) => None,
    };
    report
}
