//! The kubelet stand-in: the only pretend part of the harness, faithful to a real kubelet in what
//! the API server's clients (the StatefulSet controller, the operator, kubectl) can observe.
//!
//! - `node`: registers a Node and keeps its Ready condition and Lease fresh;
//! - `scheduler`: binds pending pods to it (`binding` subresource);
//! - `pod`: runs each bound pod: a loopback IP of its own (`pod_ip`), its volumes (`volumes`),
//!   status (`status`) and termination, ending with the pod object's deletion;
//! - `container`: each container as a local process (`runtime`, whose image map says what
//!   runs), with its env (`env`, `$(VAR)` `expansion`), probes (`probes`), restarts, preStop;
//! - `provisioner`: a hostPath PersistentVolume for each pending claim, wiped when released.
//!
//! Where processes on one host differ from containers:
//! - Paths: a process has no container filesystem; mount paths in its command, args and env are
//!   rewritten to host directories (`paths`). Programs are this machine's, but for our image's
//!   (found by file name, in the container's command and in exec hooks and probes alike); the IPFS
//!   image has no `ipfs` command for exec hooks.
//! - Network: a pod's IP is a loopback address of its own, but `localhost` and `0.0.0.0` are the
//!   host's. A container must listen on its pod IP (`status.podIP` through the downward API) and
//!   reach the other containers of its pod there too: both work in a real cluster as well.
//! - In-cluster clients find their ServiceAccount through `KUBECONFIG`, a kubeconfig with the API
//!   server's real address and the pod's projected token and CA (the `kubernetes` Service IP is
//!   never dialled; `KUBERNETES_SERVICE_HOST` is `127.0.0.1`). No other Service's variables are set.
//! - Volumes are filled once, when the pod starts (no refresh of Secrets or tokens); `https` probes
//!   fail (the harness has no TLS client for them).
//! - There is no kubelet API: `kubectl logs` and `kubectl exec` do not work. Container logs are in
//!   `<kubelet dir>/logs/<namespace>/<pod>/<container>.log`, appended by every run of the container
//!   (and of a pod re-created under the same name); the kubelet's own notes in
//!   `<kubelet dir>/kubelet.log`.
//! - It acts with the control plane's admin credentials, not a node's.

mod container;
mod env;
mod expansion;
mod node;
mod paths;
mod pod;
mod pod_ip;
mod probes;
mod provisioner;
mod runtime;
mod scheduler;
mod status;
mod volumes;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Config};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use runtime::{Image, Images};

use super::ControlPlane;

/// The node's address, and the host IP of every pod.
const HOST_IP: &str = "127.0.0.1";
/// How long stopping the harness waits for the pods' processes.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// What every part of the kubelet shares.
struct Context {
    client: Client,
    node: String,
    dir: PathBuf,
    images: Images,
    /// The API server's real port (for `KUBERNETES_SERVICE_PORT` and in-cluster kubeconfigs).
    api_port: u16,
    shutdown: CancellationToken,
    journal: Mutex<std::fs::File>,
}

impl Context {
    /// A line in `kubelet.log`.
    fn note(&self, line: &str) {
        let now = k8s_openapi::jiff::Timestamp::now();
        let _ = writeln!(self.journal.lock().unwrap_or_else(PoisonError::into_inner), "{now} {line}");
    }

    fn log_path(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        let dir = self.dir.join("logs").join(namespace).join(pod);
        let _ = std::fs::create_dir_all(&dir);
        dir.join(format!("{container}.log"))
    }

    /// Where the current run of a container notes its process ID (its process group's, too).
    fn pid_path(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.log_path(namespace, pod, container).with_extension("pid")
    }
}

/// A kubelet stand-in beside a control plane; stopping it (drop) stops every process it runs.
pub struct Kubelet {
    ctx: Arc<Context>,
    runtime: Option<tokio::runtime::Runtime>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Kubelet {
    /// Registers the node (returns once it is registered) and starts scheduling and running pods.
    pub fn start(plane: &ControlPlane, images: Images) -> Result<Kubelet> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kubelet-stand-in")
            .enable_all()
            .build()?;
        let dir = plane.dir().join("kubelet");
        std::fs::create_dir_all(&dir)?;
        let api_port = plane.server.rsplit(':').next().and_then(|p| p.parse().ok()).context("the API server's port")?;
        let client = runtime.block_on(async {
            let kubeconfig = Kubeconfig::read_from(&plane.kubeconfig)?;
            let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
            anyhow::Ok(Client::try_from(config)?)
        })?;
        let ctx = Arc::new(Context {
            client,
            node: "kubelet-stand-in".into(),
            journal: Mutex::new(std::fs::File::create(dir.join("kubelet.log"))?),
            dir,
            images,
            api_port,
            shutdown: CancellationToken::new(),
        });
        runtime.block_on(node::register(&ctx))?;
        let mut tasks = Vec::new();
        let mut spawn = |task: fn(Arc<Context>) -> futures::future::BoxFuture<'static, ()>| {
            let ctx = Arc::clone(&ctx);
            let shutdown = ctx.shutdown.clone();
            tasks.push(runtime.spawn(async move {
                tokio::select! {
                    _ = task(ctx) => {}
                    _ = shutdown.cancelled() => {}
                }
            }));
        };
        spawn(|ctx| Box::pin(async move { node::keep_fresh(&ctx).await }));
        spawn(|ctx| Box::pin(async move { scheduler::run(&ctx).await }));
        spawn(|ctx| Box::pin(async move { provisioner::provision_claims(&ctx).await }));
        spawn(|ctx| Box::pin(async move { provisioner::reclaim_volumes(&ctx).await }));
        // The pod loop stops its pods itself on shutdown, so it is not cut short like the others.
        tasks.push(runtime.spawn(run_pods(Arc::clone(&ctx))));
        Ok(Kubelet { ctx, runtime: Some(runtime), tasks })
    }

    /// Everything a container of this name in this pod wrote so far (every run of it).
    pub fn logs(&self, namespace: &str, pod: &str, container: &str) -> String {
        std::fs::read_to_string(self.ctx.log_path(namespace, pod, container)).unwrap_or_default()
    }

    /// Kills the current run of a container with SIGKILL, as a crash would (no hook, no SIGTERM);
    /// the stand-in then restarts it as the pod's restartPolicy says.
    pub fn crash(&self, namespace: &str, pod: &str, container: &str) -> Result<()> {
        self.signal(namespace, pod, container, libc::SIGKILL)
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the current run of a container, as a machine that
    /// hangs: it neither answers nor notices time pass.
    pub fn freeze(&self, namespace: &str, pod: &str, container: &str, frozen: bool) -> Result<()> {
        self.signal(namespace, pod, container, if frozen { libc::SIGSTOP } else { libc::SIGCONT })
    }

    /// The process ID of the current (or last) run of a container; its process group's, too.
    pub fn pid(&self, namespace: &str, pod: &str, container: &str) -> Result<u32> {
        let path = self.ctx.pid_path(namespace, pod, container);
        std::fs::read_to_string(&path)
            .with_context(|| format!("{namespace}/{pod}/{container} has not run"))?
            .trim()
            .parse()
            .context("a malformed pid file")
    }

    fn signal(&self, namespace: &str, pod: &str, container: &str, signal: libc::c_int) -> Result<()> {
        let pid = self.pid(namespace, pod, container)? as libc::pid_t;
        // The container is a process group of its own.
        if unsafe { libc::kill(-pid, signal) } != 0 {
            anyhow::bail!("signalling {namespace}/{pod}/{container}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The kubelet's own notes (pods started and stopped, failures), for a test's failure message.
    pub fn journal(&self) -> String {
        std::fs::read_to_string(self.ctx.dir.join("kubelet.log")).unwrap_or_default()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.ctx.shutdown.cancel();
        let Some(runtime) = self.runtime.take() else { return };
        let tasks = std::mem::take(&mut self.tasks);
        // On a thread of its own: a test may drop the kubelet inside an async runtime.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                runtime.block_on(async {
                    let _ = tokio::time::timeout(STOP_TIMEOUT, futures::future::join_all(tasks)).await;
                });
                runtime.shutdown_timeout(Duration::from_secs(5));
            });
        });
    }
}

/// Runs a worker for each pod bound to the node, fed with the pod's updates.
async fn run_pods(ctx: Arc<Context>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let ours = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node));
    let mut events = watcher(pods, ours).default_backoff().boxed();
    let mut workers: HashMap<String, pod::PodHandle> = HashMap::new();
    // Pods whose worker is done: a late update of one must not start it again.
    let mut finished: HashSet<String> = HashSet::new();
    // The pods of a (re-)list: any other is gone, deleted while the watch was down.
    let mut listed: Option<HashSet<String>> = None;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut running = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Init)) => listed = Some(HashSet::new()),
                Some(Ok(watcher::Event::InitDone)) => {
                    let listed = listed.take().unwrap_or_default();
                    for (_, worker) in workers.iter().filter(|(uid, _)| !listed.contains(*uid)) {
                        worker.gone.cancel();
                    }
                }
                Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    if let Some(listed) = &mut listed {
                        listed.insert(uid.clone());
                    }
                    if let Some(worker) = workers.get(&uid) {
                        worker.updates.send_replace(pod);
                    } else if !finished.contains(&uid) {
                        let (updates, receiver) = watch::channel(pod);
                        let gone = CancellationToken::new();
                        let worker = pod::run(Arc::clone(&ctx), receiver, gone.clone());
                        let done = done_tx.clone();
                        let finished_uid = uid.clone();
                        running.spawn(async move {
                            worker.await;
                            let _ = done.send(finished_uid);
                        });
                        workers.insert(uid, pod::PodHandle { updates, gone });
                    }
                }
                Some(Ok(watcher::Event::Delete(pod))) => {
                    if let Some(worker) = pod.metadata.uid.as_ref().and_then(|uid| workers.get(uid)) {
                        worker.gone.cancel();
                    }
                }
                Some(Err(e)) => ctx.note(&format!("pod watch: {e}")),
                None => break,
            },
            Some(uid) = done_rx.recv() => {
                workers.remove(&uid);
                finished.insert(uid);
            }
            _ = ctx.shutdown.cancelled() => break,
        }
    }
    // Workers see the shutdown themselves and stop their containers.
    while running.join_next().await.is_some() {}
}
