//! One `helm install` of the repository's chart, seen as a person sees it (`kubectl get
//! clusterpeers`) and used as a client would (a pod's REST API with the cluster's credentials):
//! what the end-to-end tests, the benchmark and the playground share.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{Kube, Kubectl};
use crate::helm::{chart_dir, Helm};

/// The release name; the chart names its objects (StatefulSet, pods `NAME-i`, Lease) after it.
pub const RELEASE: &str = "ipfs-cluster";

/// The chart installed into a namespace, and what is read of it.
pub struct Release<'k> {
    pub kube: &'k Kube,
    pub kubectl: Kubectl,
    pub namespace: String,
}

impl<'k> Release<'k> {
    /// Creates `namespace` and runs `helm install` of the chart there with `values` (`--set`).
    pub fn install(kube: &'k Kube, namespace: &str, values: &[&str]) -> Result<Release<'k>> {
        let kubectl = kube.kubectl();
        kubectl.run(&["create", "namespace", namespace])?;
        let release = Release { kube, kubectl, namespace: namespace.to_string() };
        release.helm("install", values)?;
        Ok(release)
    }

    /// `helm install|upgrade RELEASE CHART` in the namespace with `values` (`--set`).
    pub fn helm(&self, verb: &str, values: &[&str]) -> Result<String> {
        let chart = chart_dir();
        let mut args = vec![verb, RELEASE, chart.to_str().unwrap(), "--namespace", &self.namespace];
        args.extend(["--kubeconfig", self.kube.kubeconfig().to_str().unwrap()]);
        for value in values {
            args.extend(["--set", value]);
        }
        Helm::installed()?.run(&args)
    }

    /// Pod `i` of the StatefulSet.
    pub fn pod(i: usize) -> String {
        format!("{RELEASE}-{i}")
    }

    /// `kubectl scale statefulset` to `replicas`.
    pub fn scale(&self, replicas: usize) -> Result<()> {
        let replicas = format!("--replicas={replicas}");
        self.kubectl.run(&["scale", "statefulset", RELEASE, "-n", &self.namespace, &replicas])?;
        Ok(())
    }

    /// The ClusterPeers, sorted by name.
    pub fn cluster_peers(&self) -> Result<Vec<Value>> {
        let out = self.kubectl.run(&["get", "clusterpeers", "-n", &self.namespace, "-o", "json"])?;
        let list: Value = serde_json::from_str(&out)?;
        let mut items = list["items"].as_array().cloned().unwrap_or_default();
        items.sort_by_key(|item| item["metadata"]["name"].as_str().unwrap_or_default().to_string());
        Ok(items)
    }

    /// Waits until exactly `pods` have ClusterPeers, all Joined, `voters` of them as voters and the
    /// others as learners (the sidecars keep an odd number of voters, at most their cap); the
    /// error carries the last state seen and [`Release::diagnose`].
    pub fn wait_joined(&self, pods: &[&str], voters: usize, timeout: Duration) -> Result<Vec<Value>> {
        let waited = wait_for(&format!("ClusterPeers of {pods:?} joined, {voters} voting"), timeout, || {
            let peers = self.cluster_peers().map_err(|e| e.to_string())?;
            let seen = phases(&peers);
            let named: Vec<&str> = seen.iter().map(|(pod, _, _)| pod.as_str()).collect();
            let joined =
                seen.iter().all(|(_, phase, role)| phase == "Joined" && matches!(role.as_str(), "Voter" | "Learner"));
            if named == pods && joined && seen.iter().filter(|(_, _, role)| role == "Voter").count() == voters {
                Ok(peers)
            } else {
                Err(format!("{seen:?}"))
            }
        });
        waited.map_err(|e| e.context(self.diagnose()))
    }

    /// A pod's REST API address and the cluster's credentials (`user:password`), read as the
    /// operator reads them.
    pub fn api_of(&self, pod: &str) -> Result<(String, String)> {
        let jsonpath = |kind: &str, name: &str, path: &str| {
            self.kubectl.run(&["get", kind, name, "-n", &self.namespace, "-o", &format!("jsonpath={path}")])
        };
        let secret = jsonpath("statefulset", RELEASE, r"{.metadata.annotations.ipfscluster\.io/api-credentials}")?;
        let encoded = jsonpath("secret", &secret, "{.data.credentials}")?;
        let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded.trim())?;
        Ok((format!("http://{}:9094", jsonpath("pod", pod, "{.status.podIP}")?), String::from_utf8(decoded)?))
    }

    /// What to read when a wait fails: the pods, and the last lines of the operator's and the
    /// sidecars' logs (and of the kubelet stand-in's journal).
    pub fn diagnose(&self) -> String {
        let kubectl = &self.kubectl;
        let namespace = self.namespace.as_str();
        let mut report = kubectl.run(&["get", "pods", "-n", namespace, "-o", "wide"]).unwrap_or_else(|e| e.to_string());
        let names = kubectl.run(&["get", "pods", "-n", namespace, "-o", "jsonpath={.items[*].metadata.name}"]);
        for pod in names.unwrap_or_default().split_whitespace() {
            for container in ["operator", "cluster"] {
                if let Ok(log) = self.kube.logs(namespace, pod, container) {
                    report.push_str(&format!("\n--- {pod}/{container}\n{}", tail(&log, 12)));
                }
            }
        }
        if let Some(kubelet) = self.kube.kubelet() {
            report.push_str(&format!("\n--- kubelet\n{}", tail(&kubelet.journal(), 30)));
        }
        report
    }
}

/// (pod, phase, role) of each ClusterPeer, `-` where not reported.
pub fn phases(peers: &[Value]) -> Vec<(String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    peers.iter().map(|p| (text(&p["spec"]["pod"]), text(&p["status"]["phase"]), text(&p["status"]["role"]))).collect()
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `probe` (blocking) until it returns `Ok`, or fails after `timeout` with the last state it
/// saw.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Result<T, String>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe() {
            Ok(value) => return Ok(value),
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Pins new CIDs one after the other until stopped, and counts: through one pod's REST API, or,
/// given several pods, as through a Service: a refused write moves on to the next pod, whose
/// address is read again (a pod that restarted has a new IP).
pub struct Writer {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Written>,
}

/// What a [`Writer`] saw.
#[derive(Clone, Debug)]
pub struct Written {
    pub acknowledged: usize,
    pub refused: usize,
    /// The longest stretch in which every write was refused.
    pub longest_refusal: Duration,
    /// The slowest refused write: how long it took, where it went and what came back.
    pub slowest_refusal: Option<(Duration, String)>,
}

/// A pause after a refused write, so that a peer that is down is not hammered.
const AFTER_REFUSAL: Duration = Duration::from_millis(20);

/// Where a [`Writer`] writes: pods' REST APIs, found as [`Release::api_of`] finds them.
struct Targets {
    kubectl: Kubectl,
    namespace: String,
    pods: Vec<String>,
    /// `user:password`.
    credentials: String,
}

impl Targets {
    /// The REST API of pod `i` now, if it has an IP.
    fn address(&self, i: usize) -> Option<String> {
        let path = "jsonpath={.status.podIP}";
        let ip = self.kubectl.run(&["get", "pod", &self.pods[i], "-n", &self.namespace, "-o", path]).ok()?;
        (!ip.is_empty()).then(|| format!("http://{ip}:9094"))
    }
}

impl Writer {
    /// Starts writing through the REST APIs of `pods` of `release`, with its credentials.
    pub fn start(release: &Release, pods: &[&str]) -> Result<Writer> {
        let first = pods.first().context("a writer needs a pod to write through")?;
        let (_, credentials) = release.api_of(first)?;
        let targets = Targets {
            kubectl: release.kubectl.clone(),
            namespace: release.namespace.clone(),
            pods: pods.iter().map(|pod| pod.to_string()).collect(),
            credentials,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let (stopping, counting) = (stop.clone(), acknowledged.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(write_until(&targets, &stopping, &counting))
        });
        Ok(Writer { stop, acknowledged, thread })
    }

    /// Writes acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.load(Ordering::Relaxed)
    }

    pub fn finish(self) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the writer thread panicked")
    }
}

async fn write_until(targets: &Targets, stop: &AtomicBool, acknowledged: &AtomicUsize) -> Written {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let (user, password) = targets.credentials.split_once(':').unwrap_or((&targets.credentials, ""));
    let mut written = Written { acknowledged: 0, refused: 0, longest_refusal: Duration::ZERO, slowest_refusal: None };
    let mut refused_since: Option<Instant> = None;
    let (mut n, mut pod) = (0u64, 0);
    let mut address = targets.address(pod);
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let cid = crate::common::raw_cid(format!("written during a change {n} {}", targets.namespace).as_bytes());
        let sent_at = Instant::now();
        let answer = match &address {
            Some(api) => {
                let sent = http.post(format!("{api}/pins/{cid}")).basic_auth(user, Some(password)).send().await;
                match sent {
                    Ok(response) if response.status().is_success() => Ok(()),
                    Ok(response) => Err(format!("{api}: {}", response.status())),
                    Err(e) => Err(format!("{api}: {e}")),
                }
            }
            None => Err(format!("{} has no IP", targets.pods[pod])),
        };
        if let Err(refusal) = &answer {
            let took = sent_at.elapsed();
            if written.slowest_refusal.as_ref().is_none_or(|(slowest, _)| took > *slowest) {
                written.slowest_refusal = Some((took, refusal.clone()));
            }
        }
        if answer.is_ok() {
            written.acknowledged += 1;
            acknowledged.store(written.acknowledged, Ordering::Relaxed);
            if let Some(since) = refused_since.take() {
                written.longest_refusal = written.longest_refusal.max(since.elapsed());
            }
        } else {
            written.refused += 1;
            refused_since.get_or_insert_with(Instant::now);
            pod = (pod + 1) % targets.pods.len();
            // A blocking kubectl call: nothing else runs on this thread.
            address = targets.address(pod);
            tokio::time::sleep(AFTER_REFUSAL).await;
        }
    }
    if let Some(since) = refused_since {
        written.longest_refusal = written.longest_refusal.max(since.elapsed());
    }
    written
}
