//! One pod's life on the node: its IP, volumes and containers (each supervised: restarts with
//! back-off, probes), its reported status, and its termination (preStop, SIGTERM, the grace
//! period, SIGKILL) ending in the deletion of the pod object with grace 0, as the kubelet does.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, PodCondition, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::env::{container_env, PodAddresses};
use super::expansion::expand;
use super::paths::{rewrite, Mount};
use super::pod_ip::PodIp;
use super::probes::{self, Schedule, Verdict};
use super::runtime::{self, ContainerPlan, Image, Launch};
use super::status::{pod_status, ContainerRecord, Phase, PodView, Termination};
use super::volumes::{self, PodVolumes, SERVICE_ACCOUNT_MOUNT};
use super::{Context, HOST_IP};

/// A real kubelet backs off from 10 s up to 5 min; tests cannot wait that long.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How often a failing preparation (a Secret or a PVC not there yet) is retried.
const RETRY: Duration = Duration::from_secs(1);
/// What a container gets after its preStop hook used up the grace period (as the kubelet does).
const MIN_GRACE_AFTER_PRE_STOP: Duration = Duration::from_secs(2);
/// When the harness stops, containers get this long after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// What the kubelet's pod loop holds for a running pod worker.
pub struct PodHandle {
    pub updates: watch::Sender<Pod>,
    /// Cancelled when the pod object is gone (force-deleted): processes are killed at once.
    pub gone: CancellationToken,
}

/// How the containers are told to stop.
#[derive(Clone, Copy, Debug)]
struct Stop {
    deadline: Instant,
    run_pre_stop: bool,
}

/// The pod's container records, shared by its supervisors and its status reporter.
struct Records {
    containers: Mutex<Vec<ContainerRecord>>,
    changed: Notify,
}

impl Records {
    fn update(&self, index: usize, change: impl FnOnce(&mut ContainerRecord)) {
        change(&mut self.containers.lock().unwrap_or_else(PoisonError::into_inner)[index]);
        self.changed.notify_one();
    }

    fn snapshot(&self) -> Vec<ContainerRecord> {
        self.containers.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
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
    let reporting = CancellationToken::new();
    let reporter =
        tokio::spawn(report_status(Arc::clone(&ctx), pod.clone(), ip.addr, Arc::clone(&records), reporting.clone()));

    let (stop_tx, stop_rx) = watch::channel(None);
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
    let stop = match ended {
        Ended::Deleted => Stop { deadline: Instant::now() + grace_period(&updates.borrow()), run_pre_stop: true },
        Ended::Gone => Stop { deadline: Instant::now(), run_pre_stop: false },
        Ended::Shutdown => Stop { deadline: Instant::now() + SHUTDOWN_GRACE, run_pre_stop: false },
    };
    ctx.note(&format!("{key}: stopping ({ended:?})"));
    let _ = stop_tx.send(Some(stop));
    tokio::select! {
        _ = async { while supervisors.join_next().await.is_some() {} } => {}
        _ = gone.cancelled(), if !matches!(ended, Ended::Gone) => {
            let _ = stop_tx.send(Some(Stop { deadline: Instant::now(), run_pre_stop: false }));
            while supervisors.join_next().await.is_some() {}
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

#[derive(Debug)]
enum Ended {
    Deleted,
    Gone,
    Shutdown,
}

/// Volumes, retried until they can be made (or the pod is deleted first: `None`).
async fn prepare(
    ctx: &Context,
    pod: &Pod,
    pod_ip: Ipv4Addr,
    pod_dir: &std::path::Path,
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
fn grace_period(pod: &Pod) -> Duration {
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

/// Patches the pod's status whenever the records change it.
async fn report_status(ctx: Arc<Context>, pod: Pod, pod_ip: Ipv4Addr, records: Arc<Records>, done: CancellationToken) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
    let name = pod.metadata.name.clone().unwrap_or_default();
    let restart_policy = pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into());
    let start_time = Timestamp::now();
    let pod_ip = pod_ip.to_string();
    let mut reported: Option<PodStatus> = None;
    loop {
        let changed = records.changed.notified();
        let containers = records.snapshot();
        let previous: Vec<PodCondition> = reported.iter().flat_map(|s| s.conditions.clone()).flatten().collect();
        let status = pod_status(&PodView {
            pod_ip: &pod_ip,
            host_ip: HOST_IP,
            start_time,
            restart_policy: &restart_policy,
            containers: &containers,
            previous: &previous,
            now: Timestamp::now(),
        });
        let mut retry = false;
        if reported.as_ref() != Some(&status) {
            let patch = serde_json::json!({ "status": status });
            match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => reported = Some(status),
                Err(kube::Error::Api(e)) if e.code == 404 => return,
                Err(e) => {
                    ctx.note(&format!("{}: status update failed: {e}", pod_key(&pod)));
                    retry = true;
                }
            }
        }
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(RETRY), if retry => {}
            _ = done.cancelled() => return,
        }
    }
}

/// Runs one container for the pod's whole life.
struct Supervisor {
    ctx: Arc<Context>,
    pod: Pod,
    index: usize,
    container: Container,
    pod_ip: Ipv4Addr,
    volumes: Arc<PodVolumes>,
    scratch: PathBuf,
    records: Arc<Records>,
    stop: watch::Receiver<Option<Stop>>,
}

/// Why a container's process ended.
enum Outcome {
    Exited(ExitStatus),
    LivenessFailed(ExitStatus),
    Stopped,
}

impl Supervisor {
    async fn run(mut self) {
        let image_name = self.container.image.clone().unwrap_or_default();
        let Some(image) = self.ctx.images.lookup(&image_name).cloned() else {
            let message = format!("the kubelet stand-in has no image map entry for {image_name:?}");
            self.set_phase(Phase::Waiting { reason: "ErrImagePull".into(), message });
            self.stopping().await;
            return;
        };
        let restart_policy = self.pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_default();
        let mut backoff = BACKOFF_FIRST;
        loop {
            let launch = match self.plan(&image).await {
                Ok(launch) => launch,
                Err(e) => {
                    let message = format!("{e:#}");
                    self.set_phase(Phase::Waiting { reason: "CreateContainerConfigError".into(), message });
                    if self.wait_or_stop(RETRY).await {
                        return;
                    }
                    continue;
                }
            };
            let started_at = Timestamp::now();
            let outcome = match runtime::spawn(&launch, &self.log_path()) {
                Ok(child) => self.watch_process(child, &launch, started_at).await,
                Err(e) => {
                    let message = format!("{e:#}");
                    self.set_phase(Phase::Waiting { reason: "RunContainerError".into(), message });
                    Outcome::Exited(std::os::unix::process::ExitStatusExt::from_raw(128 << 8))
                }
            };
            let status = match outcome {
                Outcome::Stopped => return,
                Outcome::Exited(status) | Outcome::LivenessFailed(status) => status,
            };
            let exit_code = exit_code(status);
            let termination = Termination {
                exit_code,
                reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
                started_at,
                finished_at: Timestamp::now(),
            };
            self.ctx.note(&format!("{}: container {} exited ({exit_code})", pod_key(&self.pod), self.container.name));
            let restart = match restart_policy.as_str() {
                "Never" => false,
                "OnFailure" => exit_code != 0,
                _ => true,
            };
            if !restart {
                self.records.update(self.index, |r| {
                    r.phase = Phase::Terminated(termination);
                    r.ready = false;
                    r.started = false;
                });
                self.stopping().await;
                return;
            }
            let message = format!("back-off {backoff:?} restarting failed container {}", self.container.name);
            self.records.update(self.index, |r| {
                r.phase = Phase::Waiting { reason: "CrashLoopBackOff".into(), message };
                r.last_termination = Some(termination);
                r.ready = false;
                r.started = false;
            });
            if self.wait_or_stop(backoff).await {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            self.records.update(self.index, |r| r.restart_count += 1);
        }
    }

    /// The process until it exits, fails its liveness probe or is stopped.
    async fn watch_process(
        &mut self,
        mut child: tokio::process::Child,
        launch: &Launch,
        started_at: Timestamp,
    ) -> Outcome {
        self.records.update(self.index, |r| {
            r.phase = Phase::Running { started_at };
            r.ready = false;
            r.started = false;
        });
        let probing = CancellationToken::new();
        let liveness_failed = Arc::new(Notify::new());
        let prober = Prober {
            container: self.container.clone(),
            pod_ip: self.pod_ip,
            exec_env: launch.clone(),
            records: Arc::clone(&self.records),
            index: self.index,
            liveness_failed: Arc::clone(&liveness_failed),
        };
        let probes = tokio::spawn({
            let probing = probing.clone();
            async move {
                tokio::select! {
                    _ = prober.run() => {}
                    _ = probing.cancelled() => {}
                }
            }
        });
        let mut stop = self.stop.clone();
        let outcome = tokio::select! {
            status = child.wait() => {
                // The rest of the container's processes go with its main one.
                runtime::signal(&child, libc::SIGKILL);
                Outcome::Exited(status.unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(1 << 8)))
            }
            _ = liveness_failed.notified() => {
                self.ctx.note(&format!("{}: container {} failed its liveness probe", pod_key(&self.pod), self.container.name));
                let deadline = Instant::now() + grace_period(&self.pod);
                Outcome::LivenessFailed(self.terminate(&mut child, launch, Stop { deadline, run_pre_stop: true }).await)
            }
            stop = async { *stop.wait_for(|stop| stop.is_some()).await.expect("the pod worker outlives its supervisors") } => {
                let stop = stop.expect("waited for Some");
                self.terminate(&mut child, launch, stop).await;
                Outcome::Stopped
            }
        };
        probing.cancel();
        let _ = probes.await;
        outcome
    }

    /// preStop, then SIGTERM, then SIGKILL at the deadline.
    async fn terminate(&self, child: &mut tokio::process::Child, launch: &Launch, stop: Stop) -> ExitStatus {
        let pre_stop = self.container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref());
        if let (true, Some(handler)) = (stop.run_pre_stop, pre_stop) {
            let _ = tokio::time::timeout_at(stop.deadline, run_handler(handler, &self.container, self.pod_ip, launch))
                .await;
        }
        let deadline = if stop.run_pre_stop && pre_stop.is_some() {
            stop.deadline.max(Instant::now() + MIN_GRACE_AFTER_PRE_STOP)
        } else {
            stop.deadline
        };
        runtime::signal(child, libc::SIGTERM);
        let status = match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                runtime::signal(child, libc::SIGKILL);
                child.wait().await
            }
        };
        runtime::signal(child, libc::SIGKILL);
        status.unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(libc::SIGKILL))
    }

    /// The process to start: env, `$(VAR)` expansion, mount paths, the in-cluster kubeconfig.
    async fn plan(&self, image: &Image) -> Result<Launch> {
        let pod_ip = self.pod_ip.to_string();
        let addresses = PodAddresses { pod_ip: &pod_ip, host_ip: HOST_IP };
        let mut env = container_env(&self.ctx, &self.pod, &self.container, &addresses).await?;
        let mounts = volumes::container_mounts(&self.container, &self.volumes)?;
        if let Some(credentials) = mounts.iter().find(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_MOUNT) {
            if env.get("KUBECONFIG").is_none() {
                let namespace = self.pod.metadata.namespace.as_deref().unwrap_or("default");
                let kubeconfig = self.scratch.with_extension("kubeconfig");
                std::fs::create_dir_all(&self.scratch)?;
                let yaml = volumes::service_account_kubeconfig(self.ctx.api_port, &credentials.host_dir, namespace);
                std::fs::write(&kubeconfig, yaml)?;
                env.set("KUBECONFIG", kubeconfig.display().to_string());
            }
        }
        let vars = env.as_map();
        let expand_all = |list: &Option<Vec<String>>, mounts: &[Mount]| -> Vec<String> {
            list.iter().flatten().map(|a| rewrite(&expand(a, &vars), mounts)).collect()
        };
        let command = expand_all(&self.container.command, &mounts);
        let args = expand_all(&self.container.args, &mounts);
        env.map_values(|v| rewrite(v, &mounts));
        // A fresh "container filesystem" at each start.
        let _ = std::fs::remove_dir_all(&self.scratch);
        std::fs::create_dir_all(&self.scratch).with_context(|| format!("creating {}", self.scratch.display()))?;
        let plan = ContainerPlan {
            container: self.container.clone(),
            command,
            args,
            env: env.vars().to_vec(),
            mounts,
            pod_ip: self.pod_ip,
            scratch: self.scratch.clone(),
        };
        let image = image.clone();
        tokio::task::spawn_blocking(move || runtime::launch(&image, plan)).await?
    }

    fn log_path(&self) -> PathBuf {
        self.ctx.log_path(
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
            self.pod.metadata.name.as_deref().unwrap_or_default(),
            &self.container.name,
        )
    }

    fn set_phase(&self, phase: Phase) {
        self.records.update(self.index, |r| r.phase = phase);
    }

    async fn stopping(&mut self) {
        let _ = self.stop.wait_for(|stop| stop.is_some()).await;
    }

    /// Waits `delay`; true when told to stop meanwhile.
    async fn wait_or_stop(&mut self, delay: Duration) -> bool {
        tokio::time::timeout(delay, self.stopping()).await.is_ok()
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1)
}

/// Runs a lifecycle handler: exec as a process with the container's env, or httpGet on the pod IP.
async fn run_handler(handler: &LifecycleHandler, container: &Container, pod_ip: Ipv4Addr, launch: &Launch) {
    let probe = k8s_openapi::api::core::v1::Probe {
        exec: handler.exec.clone(),
        http_get: handler.http_get.clone(),
        tcp_socket: handler.tcp_socket.clone(),
        // The grace period bounds a hook, not a probe's timeout.
        timeout_seconds: Some(i32::MAX),
        ..Default::default()
    };
    if let Some(sleep) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
    } else {
        probes::run_once(&probe, container, pod_ip, launch).await;
    }
}

/// A container's startup, readiness and liveness probes while its process runs.
struct Prober {
    container: Container,
    pod_ip: Ipv4Addr,
    exec_env: Launch,
    records: Arc<Records>,
    index: usize,
    liveness_failed: Arc<Notify>,
}

impl Prober {
    async fn run(self) {
        if let Some(probe) = &self.container.startup_probe {
            if !self.passes_eventually(probe).await {
                self.liveness_failed.notify_one();
                return;
            }
        }
        self.records.update(self.index, |r| r.started = true);
        tokio::join!(self.readiness(), self.liveness());
    }

    /// Startup: true at the first success, false after `failure_threshold` failures.
    async fn passes_eventually(&self, probe: &k8s_openapi::api::core::v1::Probe) -> bool {
        let schedule = Schedule::of(probe);
        tokio::time::sleep(schedule.initial_delay).await;
        let mut failures = 0;
        loop {
            if probes::run_once(probe, &self.container, self.pod_ip, &self.exec_env).await {
                return true;
            }
            failures += 1;
            if failures >= schedule.failure_threshold {
                return false;
            }
            tokio::time::sleep(schedule.period).await;
        }
    }

    async fn readiness(&self) {
        let Some(probe) = &self.container.readiness_probe else {
            return self.records.update(self.index, |r| r.ready = true);
        };
        let schedule = Schedule::of(probe);
        tokio::time::sleep(schedule.initial_delay).await;
        let mut verdict = Verdict::new(false);
        loop {
            let ready = verdict.record(self.probe(probe).await, &schedule);
            let changed = self.records.snapshot()[self.index].ready != ready;
            if changed {
                self.records.update(self.index, |r| r.ready = ready);
            }
            tokio::time::sleep(schedule.period).await;
        }
    }

    async fn liveness(&self) {
        let Some(probe) = &self.container.liveness_probe else { return };
        let schedule = Schedule::of(probe);
        tokio::time::sleep(schedule.initial_delay).await;
        let mut verdict = Verdict::new(true);
        loop {
            if !verdict.record(self.probe(probe).await, &schedule) {
                self.liveness_failed.notify_one();
                return;
            }
            tokio::time::sleep(schedule.period).await;
        }
    }

    async fn probe(&self, probe: &k8s_openapi::api::core::v1::Probe) -> bool {
        probes::run_once(probe, &self.container, self.pod_ip, &self.exec_env).await
    }
}

pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}
