//! One pod's life on the node: its IP, volumes and containers (each run by a [`Supervisor`]), its
//! reported status, and its termination: every container stopped by one deadline (the grace period
//! from the deletion; a later, shorter one wins), then the pod object deleted with grace 0 and a uid
//! precondition, as the kubelet does.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::container::Supervisor;
use super::env::PodAddresses;
use super::pod_ip::PodIp;
use super::status::{pod_status, ContainerRecord, Phase, PodView};
use super::volumes::{self, PodVolumes};
use super::{Context, HOST_IP};

/// How often a failing preparation (a Secret or a PVC not there yet) or status update is retried.
pub const RETRY: Duration = Duration::from_secs(1);
/// When the harness stops, containers get this long after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// How often the final status is tried before the pod object is deleted anyway.
const FINAL_STATUS_ATTEMPTS: u32 = 5;

/// What the kubelet's pod loop holds for a running pod worker.
pub struct PodHandle {
    pub updates: watch::Sender<Pod>,
    /// Cancelled when the pod object is gone (force-deleted): its containers stop without preStop.
    pub gone: CancellationToken,
}

/// How the pod's containers are told to stop.
#[derive(Clone, Copy, Debug)]
pub struct Stop {
    /// SIGKILL then (the kubelet leaves any container at least 2 s after SIGTERM, though).
    pub deadline: Instant,
    pub run_pre_stop: bool,
}

/// The pod's container records, shared by its supervisors and its status reporter.
pub struct Records {
    containers: Mutex<Vec<ContainerRecord>>,
    changed: Notify,
}

impl Records {
    pub fn update(&self, index: usize, change: impl FnOnce(&mut ContainerRecord)) {
        change(&mut self.containers.lock().unwrap_or_else(PoisonError::into_inner)[index]);
        self.changed.notify_one();
    }

    pub fn snapshot(&self) -> Vec<ContainerRecord> {
        self.containers.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Why the pod's containers stop.
#[derive(Debug)]
enum Ended {
    /// The pod object has a deletionTimestamp.
    Deleted,
    /// The pod object is gone (force-deleted).
    Gone,
    /// The harness stops.
    Shutdown,
}

pub async fn run(ctx: Arc<Context>, mut updates: watch::Receiver<Pod>, gone: CancellationToken) {
    let pod = updates.borrow().clone();
    let key = pod_key(&pod);
    let ip = match PodIp::allocate() {
        Ok(ip) => ip,
        Err(e) => return ctx.note(&format!("{key}: no pod IP: {e:#}")),
    };
    ctx.note(&format!("{key}: starting with IP {}", ip.addr));
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let pod_dir = ctx.dir.join("pods").join(&uid);
    let containers = pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
    let records = Arc::new(Records {
        containers: Mutex::new(
            containers.iter().map(|c| ContainerRecord::new(&c.name, c.image.as_deref().unwrap_or_default())).collect(),
        ),
        changed: Notify::new(),
    });
    let (stop_tx, stop_rx) = watch::channel(None);
    let reporting = CancellationToken::new();
    let reporter = tokio::spawn(report_status(
        Arc::clone(&ctx),
        updates.clone(),
        ip.addr,
        Arc::clone(&records),
        stop_rx.clone(),
        reporting.clone(),
    ));

    let mut supervisors = tokio::task::JoinSet::new();
    let ended = tokio::select! {
        ended = async {
            let Some(volumes) = prepare(&ctx, &pod, ip.addr, &pod_dir, &records, &mut updates).await else {
                return Ended::Deleted;
            };
            let volumes = Arc::new(volumes);
            for (index, container) in containers.into_iter().enumerate() {
                let supervisor = Supervisor {
                    ctx: Arc::clone(&ctx),
                    pod: pod.clone(),
                    index,
                    container,
                    pod_ip: ip.addr,
                    volumes: Arc::clone(&volumes),
                    scratch: pod_dir.join("containers").join(index.to_string()),
                    records: Arc::clone(&records),
                    stop: stop_rx.clone(),
                };
                supervisors.spawn(supervisor.run());
            }
            wait_for_deletion(&mut updates).await
        } => ended,
        _ = gone.cancelled() => Ended::Gone,
        _ = ctx.shutdown.cancelled() => Ended::Shutdown,
    };
    ctx.note(&format!("{key}: stopping ({ended:?})"));
    let mut stop = match ended {
        Ended::Deleted => Stop { deadline: Instant::now() + grace_period(&updates.borrow()), run_pre_stop: true },
        Ended::Gone => Stop { deadline: Instant::now(), run_pre_stop: false },
        Ended::Shutdown => Stop { deadline: Instant::now() + SHUTDOWN_GRACE, run_pre_stop: false },
    };
    let _ = stop_tx.send(Some(stop));
    // Until every container is gone, a shorter grace period (a second deletion), a force deletion
    // or the harness's shutdown brings the deadline forward.
    let mut watching = true;
    loop {
        let sooner = tokio::select! {
            done = supervisors.join_next() => match done {
                Some(_) => continue,
                None => break,
            },
            changed = updates.changed(), if watching => {
                watching = changed.is_ok();
                Instant::now() + grace_period(&updates.borrow_and_update())
            }
            _ = gone.cancelled(), if !gone.is_cancelled() => Instant::now(),
            _ = ctx.shutdown.cancelled(), if !ctx.shutdown.is_cancelled() => Instant::now() + SHUTDOWN_GRACE,
        };
        if sooner < stop.deadline {
            stop.deadline = sooner;
            let _ = stop_tx.send(Some(stop));
        }
    }
    reporting.cancel();
    let _ = reporter.await;
    if matches!(ended, Ended::Deleted) {
        if let Err(e) = delete_now(&ctx, &pod).await {
            ctx.note(&format!("{key}: deleting the pod object failed: {e:#}"));
        }
    }
    let _ = std::fs::remove_dir_all(&pod_dir);
    ctx.note(&format!("{key}: stopped, IP {} released", ip.addr));
}

/// Volumes, retried until they can be made (or the pod is deleted first: `None`).
async fn prepare(
    ctx: &Context,
    pod: &Pod,
    pod_ip: Ipv4Addr,
    pod_dir: &Path,
    records: &Records,
    updates: &mut watch::Receiver<Pod>,
) -> Option<PodVolumes> {
    let pod_ip = pod_ip.to_string();
    let addresses = PodAddresses { pod_ip: &pod_ip, host_ip: HOST_IP };
    loop {
        if updates.borrow().metadata.deletion_timestamp.is_some() {
            return None;
        }
        match volumes::prepare(ctx, pod, pod_dir, &addresses).await {
            Ok(volumes) => return Some(volumes),
            Err(e) => {
                let message = format!("{e:#}");
                for index in 0..records.snapshot().len() {
                    records.update(index, |r| {
                        r.phase = Phase::Waiting { reason: "ContainerCreating".into(), message: message.clone() }
                    });
                }
            }
        }
        let _ = tokio::time::timeout(RETRY, updates.changed()).await;
    }
}

async fn wait_for_deletion(updates: &mut watch::Receiver<Pod>) -> Ended {
    loop {
        if updates.borrow_and_update().metadata.deletion_timestamp.is_some() {
            return Ended::Deleted;
        }
        if updates.changed().await.is_err() {
            return Ended::Gone;
        }
    }
}

/// The grace period the deletion asked for, else the pod's own.
pub fn grace_period(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    Duration::from_secs(seconds.max(0) as u64)
}

/// Removes the pod object once its processes are gone (grace 0, this very pod only).
async fn delete_now(ctx: &Context, pod: &Pod) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
        ..Default::default()
    };
    match api.delete(pod.metadata.name.as_deref().unwrap_or_default(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Patches the pod's status whenever it changes (the records, or others' conditions it depends
/// on), and once more when `done` (the containers' final states, before the pod object goes).
/// Each patch is conditional on the pod's resourceVersion, so that no one else's condition is
/// overwritten with an old copy.
async fn report_status(
    ctx: Arc<Context>,
    mut updates: watch::Receiver<Pod>,
    pod_ip: Ipv4Addr,
    records: Arc<Records>,
    stop: watch::Receiver<Option<Stop>>,
    done: CancellationToken,
) {
    let mut latest = updates.borrow_and_update().clone();
    let key = pod_key(&latest);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), latest.metadata.namespace.as_deref().unwrap_or("default"));
    let name = latest.metadata.name.clone().unwrap_or_default();
    let spec = latest.spec.clone().unwrap_or_default();
    let restart_policy = spec.restart_policy.unwrap_or_else(|| "Always".into());
    let readiness_gates: Vec<String> =
        spec.readiness_gates.iter().flatten().map(|g| g.condition_type.clone()).collect();
    // To the second, as the API server keeps times (a time it rounded is then no change).
    let now = || Timestamp::from_second(Timestamp::now().as_second()).expect("now is a valid time");
    let start_time = now();
    let pod_ip = pod_ip.to_string();
    let mut reported: Option<PodStatus> = None;
    let mut watching = true;
    let mut final_attempts = FINAL_STATUS_ATTEMPTS;
    loop {
        let finishing = done.is_cancelled();
        let changed = records.changed.notified();
        let containers = records.snapshot();
        let current = latest.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let status = pod_status(&PodView {
            pod_ip: &pod_ip,
            host_ip: HOST_IP,
            start_time,
            restart_policy: &restart_policy,
            terminating: stop.borrow().is_some(),
            containers: &containers,
            readiness_gates: &readiness_gates,
            current: &current,
            now: now(),
        });
        let mut retry = false;
        if reported.as_ref() != Some(&status) {
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": latest.metadata.resource_version },
                "status": status,
            });
            match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(patched) => {
                    latest = patched;
                    reported = Some(status);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => return,
                // Changed meanwhile (the watch brings the new version): computed again from it.
                Err(kube::Error::Api(e)) if e.code == 409 => retry = true,
                Err(e) => {
                    ctx.note(&format!("{key}: status update failed: {e}"));
                    retry = true;
                }
            }
        }
        if finishing {
            final_attempts -= 1;
            if !retry || final_attempts == 0 {
                return;
            }
        }
        tokio::select! {
            _ = changed => {}
            changed = updates.changed(), if watching => {
                watching = changed.is_ok();
                latest = updates.borrow_and_update().clone();
            }
            _ = tokio::time::sleep(RETRY), if retry => {}
            _ = done.cancelled(), if !finishing => {}
        }
    }
}

pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}
