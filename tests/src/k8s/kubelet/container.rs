//! One container for its pod's whole life: its process started from the image map, restarted per
//! the pod's restartPolicy with back-off, probed, and stopped as the kubelet stops a container:
//! preStop hook, SIGTERM, SIGKILL at the deadline.

use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, Probe};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::env::{container_env, PodAddresses};
use super::expansion::expand;
use super::paths::rewrite;
use super::pod::{grace_period, pod_key, Records, Stop, RETRY};
use super::probes::{self, Prober};
use super::runtime::{self, ContainerPlan, Image, Launch};
use super::status::{Phase, Termination};
use super::volumes::{self, PodVolumes, SERVICE_ACCOUNT_MOUNT};
use super::{Context, HOST_IP};

/// A real kubelet backs off from 10 s up to 5 min; tests cannot wait that long.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The kubelet leaves a container at least this long between SIGTERM and SIGKILL, whatever the
/// grace period or a preStop hook left of it.
const MIN_GRACE: Duration = Duration::from_secs(2);

pub struct Supervisor {
    pub ctx: Arc<Context>,
    pub pod: Pod,
    pub index: usize,
    pub container: Container,
    pub pod_ip: Ipv4Addr,
    pub volumes: Arc<PodVolumes>,
    /// Stands for the container's own filesystem: emptied at each start.
    pub scratch: PathBuf,
    pub records: Arc<Records>,
    /// The pod's stop, once its containers must go.
    pub stop: watch::Receiver<Option<Stop>>,
}

/// Why a container's process ended.
enum Outcome {
    Exited(ExitStatus),
    LivenessFailed(ExitStatus),
    Stopped,
}

impl Supervisor {
    pub async fn run(mut self) {
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
                Ok(child) => {
                    if let Some(pid) = child.id() {
                        let _ = std::fs::write(self.log_path().with_extension("pid"), pid.to_string());
                    }
                    self.watch_process(child, &launch, started_at).await
                }
                Err(e) => {
                    let message = format!("{e:#}");
                    self.set_phase(Phase::Waiting { reason: "RunContainerError".into(), message });
                    Outcome::Exited(ExitStatus::from_raw(128 << 8))
                }
            };
            let status = match outcome {
                Outcome::Stopped => return,
                Outcome::Exited(status) | Outcome::LivenessFailed(status) => status,
            };
            let termination = Termination::of(status, started_at);
            let exit_code = termination.exit_code;
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
                Outcome::Exited(status.unwrap_or_else(|_| ExitStatus::from_raw(1 << 8)))
            }
            _ = liveness_failed.notified() => {
                self.ctx.note(&format!("{}: container {} failed its liveness probe", pod_key(&self.pod), self.container.name));
                let own = Stop { deadline: Instant::now() + grace_period(&self.pod), run_pre_stop: true };
                Outcome::LivenessFailed(self.terminate(&mut child, launch, own).await)
            }
            pod_stop = async { stop.wait_for(Option::is_some).await.ok().and_then(|stop| *stop) } => {
                let own = pod_stop.expect("the pod worker outlives its supervisors");
                let status = self.terminate(&mut child, launch, own).await;
                let termination = Termination::of(status, started_at);
                self.records.update(self.index, |r| {
                    r.phase = Phase::Terminated(termination);
                    r.ready = false;
                });
                Outcome::Stopped
            }
        };
        probing.cancel();
        let _ = probes.await;
        outcome
    }

    /// preStop (when asked and time is left), SIGTERM, then SIGKILL at the deadline: `own`'s, or
    /// the pod's stop if that is or becomes sooner, but never less than [`MIN_GRACE`] after SIGTERM.
    async fn terminate(&self, child: &mut tokio::process::Child, launch: &Launch, own: Stop) -> ExitStatus {
        let mut stop = self.stop.clone();
        let pre_stop = self.container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref());
        if let (true, Some(handler)) = (own.run_pre_stop, pre_stop) {
            if own.deadline > Instant::now() {
                tokio::select! {
                    _ = run_handler(handler, &self.container, self.pod_ip, launch) => {}
                    _ = until(&mut stop, own.deadline, Instant::now()) => {}
                }
            }
        }
        let at_least = Instant::now() + MIN_GRACE;
        runtime::signal(child, libc::SIGTERM);
        let status = tokio::select! {
            status = child.wait() => status,
            _ = until(&mut stop, own.deadline, at_least) => {
                runtime::signal(child, libc::SIGKILL);
                child.wait().await
            }
        };
        runtime::signal(child, libc::SIGKILL);
        status.unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL))
    }

    /// The process to start: env, `$(VAR)` expansion, mount paths, the in-cluster kubeconfig.
    async fn plan(&self, image: &Image) -> Result<Launch> {
        let pod_ip = self.pod_ip.to_string();
        let addresses = PodAddresses { pod_ip: &pod_ip, host_ip: HOST_IP };
        let mut env = container_env(&self.ctx, &self.pod, &self.container, &addresses).await?;
        let mut mounts = volumes::container_mounts(&self.container, &self.volumes)?;
        mounts.extend(image.unmounted_volumes(&mounts, &self.scratch));
        if let Some(credentials) = mounts.iter().find(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_MOUNT) {
            if env.get("KUBECONFIG").is_none() {
                let namespace = self.pod.metadata.namespace.as_deref().unwrap_or("default");
                let kubeconfig = self.scratch.with_extension("kubeconfig");
                let yaml = volumes::service_account_kubeconfig(self.ctx.api_port, &credentials.host_dir, namespace);
                if let Some(parent) = kubeconfig.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&kubeconfig, yaml)?;
                env.set("KUBECONFIG", kubeconfig.display().to_string());
            }
        }
        let vars = env.as_map();
        let expand_all = |list: &Option<Vec<String>>| -> Vec<String> {
            list.iter().flatten().map(|a| rewrite(&expand(a, &vars), &mounts)).collect()
        };
        let command = expand_all(&self.container.command);
        let args = expand_all(&self.container.args);
        // The image's ENV is not there for `$(VAR)`, as in Kubernetes; the runtime adds a HOME.
        let home = ("HOME".to_string(), self.scratch.display().to_string());
        for (name, value) in image.env.iter().chain([&home]) {
            if env.get(name).is_none() {
                env.set(name, value.clone());
            }
        }
        env.map_values(|v| rewrite(v, &mounts));
        let working_dir = match self.container.working_dir.as_deref().filter(|dir| !dir.is_empty()) {
            Some(dir) if rewrite(dir, &mounts) != dir => PathBuf::from(rewrite(dir, &mounts)),
            Some(dir) => self.scratch.join(dir.trim_start_matches('/')),
            None => self.scratch.clone(),
        };
        // A fresh "container filesystem" at each start, with the image's volumes that nothing mounts.
        let _ = std::fs::remove_dir_all(&self.scratch);
        let dirs = [&self.scratch, &working_dir].into_iter().chain(mounts.iter().map(|m| &m.host_dir));
        for dir in dirs {
            if dir.starts_with(&self.scratch) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
        }
        let plan = ContainerPlan {
            container: self.container.clone(),
            command,
            args,
            env: env.vars().to_vec(),
            mounts,
            pod_ip: self.pod_ip,
            working_dir,
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
        let _ = self.stop.wait_for(Option::is_some).await;
    }

    /// Waits `delay`; true when told to stop meanwhile.
    async fn wait_or_stop(&mut self, delay: Duration) -> bool {
        tokio::time::timeout(delay, self.stopping()).await.is_ok()
    }
}

/// Sleeps until `own` or the pod's stop deadline, whichever is sooner (following the pod's stop as
/// it changes), but not before `at_least`.
async fn until(stop: &mut watch::Receiver<Option<Stop>>, own: Instant, at_least: Instant) {
    loop {
        let pod = stop.borrow_and_update().map(|stop| stop.deadline);
        let deadline = pod.map_or(own, |pod| pod.min(own)).max(at_least);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            changed = stop.changed() => if changed.is_err() {
                tokio::time::sleep_until(deadline).await;
                return;
            }
        }
    }
}

/// Runs a lifecycle handler: exec as a process with the container's env, httpGet on the pod IP, or
/// sleep. Its outcome does not matter: the kubelet goes on with SIGTERM either way.
async fn run_handler(handler: &LifecycleHandler, container: &Container, pod_ip: Ipv4Addr, launch: &Launch) {
    if let Some(sleep) = &handler.sleep {
        return tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
    }
    let probe = Probe {
        exec: handler.exec.clone(),
        http_get: handler.http_get.clone(),
        tcp_socket: handler.tcp_socket.clone(),
        // The grace period bounds a hook, not a probe's timeout.
        timeout_seconds: Some(i32::MAX),
        ..Default::default()
    };
    probes::run_once(&probe, container, pod_ip, launch).await;
}
