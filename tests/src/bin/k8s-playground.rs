//! `k8s-playground` (run by `scripts/playground`): a real Kubernetes control plane on loopback with
//! the kubelet stand-in, the chart installed by helm (the operator and the peers, each peer a real
//! IPFS daemon beside our sidecar), a kubeconfig written for the stock kubectl, and the next steps
//! printed. Ctrl-C (or SIGTERM) stops everything it started.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use e2e::k8s::release::{phases, wait_for};
use e2e::k8s::{ControlPlane, Images, Kube, Kubelet, Release};

#[derive(Debug, Parser)]
#[command(name = "k8s-playground", about = "A Kubernetes control plane on loopback with the chart installed")]
struct Args {
    /// Where the kubeconfig is written.
    #[arg(long, default_value = ".playground")]
    dir: PathBuf,
    /// The namespace the chart is installed into.
    #[arg(long, default_value = "ipfs")]
    namespace: String,
    /// Peer pods to start with.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Further chart values (`helm --set`), e.g. `peers.podManagementPolicy=Parallel`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    values: Vec<String>,
    /// How long to wait for the peers to join.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    join_timeout: Duration,
}

fn say(line: &str) {
    println!("playground: {line}");
}

fn main() -> Result<()> {
    let args = Args::parse();
    let stopping = watch_stop_signals()?;
    let stopped = || stopping.load(Ordering::Relaxed);

    say("starting a Kubernetes control plane on loopback (etcd, kube-apiserver, kube-controller-manager)...");
    let plane = ControlPlane::start()?;
    say("starting the kubelet stand-in (it runs each pod's containers as local processes)...");
    let kubelet = Kubelet::start(&plane, Images::default())?;
    let kube = Kube::Local { kubelet, plane };
    if !stopped() {
        run(&args, &kube, &stopped)?;
    }
    say("stopping the pods, the kubelet stand-in and the control plane...");
    drop(kube);
    say("stopped; nothing left running");
    Ok(())
}

/// Everything after the control plane's start, until a stop signal.
fn run(args: &Args, kube: &Kube, stopped: &dyn Fn() -> bool) -> Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let kubeconfig = std::path::absolute(args.dir.join("kubeconfig"))?;
    std::fs::copy(kube.kubeconfig(), &kubeconfig).context("writing the kubeconfig")?;

    say(&format!("helm install of charts/ipfs-cluster into namespace {} ({} peers)...", args.namespace, args.replicas));
    let replicas = format!("peers.replicas={}", args.replicas);
    let values: Vec<&str> = std::iter::once(replicas.as_str()).chain(args.values.iter().map(String::as_str)).collect();
    let release = Release::install(kube, &args.namespace, &values)?;

    let mut last = Vec::new();
    let joined = wait_for("the peers to join", args.join_timeout, || {
        if stopped() {
            return Ok(());
        }
        let peers = release.cluster_peers().map_err(|e| e.to_string())?;
        let seen = phases(&peers);
        if seen != last {
            let line: Vec<String> = seen.iter().map(|(pod, phase, role)| format!("{pod} {phase} {role}")).collect();
            say(&format!("ClusterPeers: {}", if line.is_empty() { "none yet".into() } else { line.join(", ") }));
            last = seen.clone();
        }
        let all_joined = seen.len() == args.replicas && seen.iter().all(|(_, phase, _)| phase == "Joined");
        if all_joined {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    joined.map_err(|e| e.context(release.diagnose()))?;
    if !stopped() {
        say("putting the content of examples/*.yaml into every IPFS daemon...");
        let pods: Vec<String> = (0..args.replicas).map(Release::pod).collect();
        e2e::k8s::examples::put_content(&release, &pods)?;
    }
    if !stopped() {
        print_next_steps(&release, &kubeconfig)?;
    }
    while !stopped() {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// A flag raised by the first Ctrl-C or SIGTERM; a step under way finishes first.
fn watch_stop_signals() -> Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Installed now, on this thread, so that no signal is missed; awaited on a thread of its own.
    let (mut interrupt, mut terminate) =
        runtime.block_on(async { anyhow::Ok((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?)) })?;
    let stopping = Arc::new(AtomicBool::new(false));
    let raised = stopping.clone();
    std::thread::spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        });
        say("stop requested: stopping once the current step ends...");
        raised.store(true, Ordering::Relaxed);
    });
    Ok(stopping)
}

fn print_next_steps(release: &Release, kubeconfig: &std::path::Path) -> Result<()> {
    let namespace = &release.namespace;
    let pod = Release::pod(0);
    let (api, credentials) = release.api_of(&pod)?;
    let host = api.trim_start_matches("http://").replace(':', "/tcp/");
    let ctl = e2e::peer::workspace_binary("cluster-ctl")?;
    let ctl = ctl.display();
    println!(
        "
Ready. In another shell:
  export KUBECONFIG={kubeconfig}
  kubectl get clusterpeers -n {namespace}
  kubectl get pods -n {namespace} -o wide
  kubectl scale statefulset ipfs-cluster -n {namespace} --replicas=5    # two peers join
  kubectl get clusterpeers -n {namespace} -w
  kubectl scale statefulset ipfs-cluster -n {namespace} --replicas=1    # four leave, each removed while alive
  kubectl get events -n {namespace} --field-selector reason=Removed

Pins (examples/ holds three; their content is in every daemon):
  kubectl apply -n {namespace} -f {examples}/pin.yaml
  kubectl get pins -n {namespace} -w
  kubectl wait -n {namespace} --for=condition=Pinned pin/example
  kubectl describe pin -n {namespace} example
  kubectl delete pin -n {namespace} example    # unpinned in the cluster, then the object goes

Each pod has a loopback IP of its own ({pod}: {api}); its REST API, with the release's credentials:
  {ctl} --host /ip4/{host} --basic-auth {credentials} peers ls
  curl -u {credentials} {api}/pins

Ctrl-C stops everything this started.",
        kubeconfig = kubeconfig.display(),
        examples = std::path::absolute(e2e::k8s::examples::dir())?.display(),
    );
    Ok(())
}
