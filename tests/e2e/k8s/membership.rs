//! The operator end to end: the chart installed by real helm, the operator and the peers (real IPFS
//! daemons beside our sidecars) run as the chart says, membership watched through
//! `kubectl get clusterpeers` as a person would.

use e2e::helm::{chart_dir, Helm};
use e2e::k8s::{Kube, Kubectl};
use serde_json::Value;

use super::{namespace, wait_until};

/// The release every test installs; its objects are named after it.
const RELEASE: &str = "ipfs-cluster";

/// `helm install` of the chart into a namespace of the test's own, with `values` (`--set`).
fn install(kube: &Kube, kubectl: &Kubectl, test: &str, values: &[&str]) -> String {
    let namespace = namespace(kubectl, test);
    let chart = chart_dir();
    let mut args = vec!["install", RELEASE, chart.to_str().unwrap(), "--namespace", &namespace];
    args.extend(["--kubeconfig", kube.kubeconfig().to_str().unwrap()]);
    for value in values {
        args.extend(["--set", value]);
    }
    Helm::installed().unwrap().run(&args).unwrap();
    namespace
}

/// The ClusterPeers, sorted by name, or what `kubectl` said.
fn cluster_peers(kubectl: &Kubectl, namespace: &str) -> Result<Vec<Value>, String> {
    let out = kubectl.run(&["get", "clusterpeers", "-n", namespace, "-o", "json"]).map_err(|e| e.to_string())?;
    let list: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    let mut items = list["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|item| item["metadata"]["name"].as_str().unwrap_or_default().to_string());
    Ok(items)
}

/// What to read when a wait fails: the pods, and the logs of the operator and the sidecars.
fn diagnose(kube: &Kube, namespace: &str) -> String {
    let kubectl = kube.kubectl();
    let mut report = kubectl.run(&["get", "pods", "-n", namespace, "-o", "wide"]).unwrap_or_else(|e| e.to_string());
    let names = kubectl.run(&["get", "pods", "-n", namespace, "-o", "jsonpath={.items[*].metadata.name}"]);
    for pod in names.unwrap_or_default().split_whitespace() {
        for container in ["operator", "cluster"] {
            if let Ok(log) = kube.logs(namespace, pod, container) {
                let tail: Vec<&str> = log.lines().rev().take(12).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                report.push_str(&format!("\n--- {pod}/{container}\n{}", tail.join("\n")));
            }
        }
    }
    if let Some(kubelet) = kube.kubelet() {
        let journal = kubelet.journal();
        let tail: Vec<&str> = journal.lines().rev().take(30).collect();
        report.push_str(&format!("\n--- kubelet\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
    }
    report
}

/// Waits until exactly `pods` have ClusterPeers, all Joined with these roles (in pod order).
fn wait_joined(kube: &Kube, namespace: &str, pods: &[&str], roles: &[&str]) -> Vec<Value> {
    let kubectl = &kube.kubectl();
    let _report = Diagnose { kube, namespace };
    wait_until(&format!("ClusterPeers of {pods:?} joined as {roles:?}"), || {
        let peers = cluster_peers(kubectl, namespace)?;
        let seen: Vec<(String, String, String)> = peers
            .iter()
            .map(|p| {
                let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
                (text(&p["spec"]["pod"]), text(&p["status"]["phase"]), text(&p["status"]["role"]))
            })
            .collect();
        let wanted: Vec<(String, String, String)> =
            pods.iter().zip(roles).map(|(pod, role)| (pod.to_string(), "Joined".into(), role.to_string())).collect();
        if seen == wanted {
            Ok(peers)
        } else {
            Err(format!("{seen:?}"))
        }
    })
}

#[test]
fn helm_install_makes_a_cluster_of_three_joined_voters() {
    let kube = Kube::start().unwrap();
    let kubectl = kube.kubectl();
    let namespace = install(&kube, &kubectl, "install", &["peers.terminationGracePeriodSeconds=20"]);
    let pods = ["ipfs-cluster-0", "ipfs-cluster-1", "ipfs-cluster-2"];
    let peers = wait_joined(&kube, &namespace, &pods, &["Voter"; 3]);

    // Three peers of one cluster: distinct identities, and the table a person reads says so.
    let mut ids: Vec<&str> = peers.iter().filter_map(|p| p["status"]["peerId"].as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{peers:?}");
    let table = kubectl.run(&["get", "clusterpeers", "-n", &namespace]).unwrap();
    for (pod, id) in pods.iter().zip(&ids) {
        let row = table.lines().find(|l| l.starts_with(pod)).unwrap_or_else(|| panic!("{pod} in\n{table}"));
        assert!(row.contains(id) && row.contains("Voter") && row.contains("Joined"), "{table}");
    }
}

/// Prints [`diagnose`] when dropped by a failing test.
struct Diagnose<'a> {
    kube: &'a Kube,
    namespace: &'a str,
}

impl Drop for Diagnose<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", diagnose(self.kube, self.namespace));
        }
    }
}

/// A client of one pod's REST API, with the cluster's credentials (as the operator reads them).
fn api_of(kubectl: &Kubectl, namespace: &str, pod: &str) -> (String, String) {
    let jsonpath = |kind: &str, name: &str, path: &str| {
        kubectl.run(&["get", kind, name, "-n", namespace, "-o", &format!("jsonpath={path}")]).unwrap()
    };
    let secret = jsonpath("statefulset", "ipfs-cluster", r"{.metadata.annotations.ipfscluster\.io/api-credentials}");
    let encoded = jsonpath("secret", &secret, "{.data.credentials}");
    let credentials =
        String::from_utf8(base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded.trim()).unwrap())
            .unwrap();
    (format!("http://{}:9094", jsonpath("pod", pod, "{.status.podIP}")), credentials)
}

/// Pins new CIDs one after the other through `api` until stopped; the longest stretch in which
/// every write was refused, and how many were acknowledged and refused.
struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(std::time::Duration, usize, usize)>,
}

impl Writer {
    fn start((api, credentials): (String, String)) -> Writer {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let (user, password) = credentials.split_once(':').unwrap();
                let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().unwrap();
                let (mut longest, mut acknowledged, mut refused) = (std::time::Duration::ZERO, 0, 0);
                let mut refused_since: Option<std::time::Instant> = None;
                for n in 0.. {
                    if stopping.load(Ordering::Relaxed) {
                        break;
                    }
                    let cid = e2e::common::raw_cid(format!("written during a scale {n}").as_bytes());
                    let sent = http.post(format!("{api}/pins/{cid}")).basic_auth(user, Some(password)).send().await;
                    if sent.is_ok_and(|r| r.status().is_success()) {
                        acknowledged += 1;
                        if let Some(since) = refused_since.take() {
                            longest = longest.max(since.elapsed());
                        }
                    } else {
                        refused += 1;
                        refused_since.get_or_insert_with(std::time::Instant::now);
                    }
                }
                if let Some(since) = refused_since {
                    longest = longest.max(since.elapsed());
                }
                (longest, acknowledged, refused)
            })
        });
        Writer { stop, thread }
    }

    fn finish(self) -> (std::time::Duration, usize, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Scale 3 to 1 (OrderedReady): each condemned peer is removed while its pod waits in preStop,
/// writes through the staying pod keep being acknowledged, and the removed pods' ClusterPeers and
/// PVCs go.
#[test]
fn scaling_down_removes_peers_while_they_live_and_writes_go_on() {
    let kube = Kube::start().unwrap();
    let kubectl = kube.kubectl();
    let namespace = install(&kube, &kubectl, "scale-down", &["peers.terminationGracePeriodSeconds=30"]);
    wait_joined(&kube, &namespace, &["ipfs-cluster-0", "ipfs-cluster-1", "ipfs-cluster-2"], &["Voter"; 3]);

    let writer = Writer::start(api_of(&kubectl, &namespace, "ipfs-cluster-0"));
    kubectl.run(&["scale", "statefulset", "ipfs-cluster", "-n", &namespace, "--replicas=1"]).unwrap();
    wait_joined(&kube, &namespace, &["ipfs-cluster-0"], &["Voter"]);
    wait_until("the condemned pods and their claims gone", || {
        let left = kubectl
            .run(&["get", "pods,pvc", "-n", &namespace, "-o", "name"])
            .map_err(|e| e.to_string())?
            .lines()
            .filter(|l| l.contains("ipfs-cluster-1") || l.contains("ipfs-cluster-2"))
            .map(str::to_string)
            .collect::<Vec<_>>();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
    let (longest, acknowledged, refused) = writer.finish();
    eprintln!("scale 3 -> 1: {acknowledged} writes acknowledged, {refused} refused, longest refusal {longest:?}");
    assert!(acknowledged > 0, "no write went through");
    // Generous for a loaded machine: one election at most (the benchmark reports the figure).
    assert!(longest < std::time::Duration::from_secs(15), "writes refused for {longest:?}");

    // Each was removed by the operator, while alive (its preStop waited for it), not lost.
    let events = kubectl.run(&["get", "events", "-n", &namespace, "--field-selector", "reason=Removed"]).unwrap();
    for pod in ["ipfs-cluster-1", "ipfs-cluster-2"] {
        assert!(
            events.lines().any(|l| l.contains(pod) && l.contains("its pod is scaled away")),
            "no removal event for {pod}:\n{events}"
        );
    }
}

/// The peers' IDs by pod, from their ClusterPeers.
fn peer_ids(peers: &[Value]) -> Vec<(String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    peers.iter().map(|p| (text(&p["spec"]["pod"]), text(&p["status"]["peerId"]))).collect()
}

/// Deleting a pod restarts it: the operator declares the restart, so its preStop returns at once
/// (far within the grace period), and it comes back as the same peer, membership unchanged.
#[test]
fn a_deleted_pod_comes_back_as_the_same_peer_without_waiting() {
    let kube = Kube::start().unwrap();
    let kubectl = kube.kubectl();
    let namespace = install(&kube, &kubectl, "restart", &["peers.terminationGracePeriodSeconds=60"]);
    let pods = ["ipfs-cluster-0", "ipfs-cluster-1", "ipfs-cluster-2"];
    let before = peer_ids(&wait_joined(&kube, &namespace, &pods, &["Voter"; 3]));

    let started = std::time::Instant::now();
    kubectl.run(&["delete", "pod", "ipfs-cluster-1", "-n", &namespace]).unwrap();
    let took = started.elapsed();
    // The preStop bound is 50 s: a stop far below it was not left to run out.
    assert!(took < std::time::Duration::from_secs(30), "deleting the pod took {took:?}");

    let after = peer_ids(&wait_joined(&kube, &namespace, &pods, &["Voter"; 3]));
    assert_eq!(after, before, "the restarted pod is the same peer");
    let events = kubectl.run(&["get", "events", "-n", &namespace, "--field-selector", "reason=Removed"]).unwrap();
    assert!(!events.contains("ipfs-cluster"), "no peer was removed:\n{events}");
}

/// Parallel pod management: 3 -> 5 (two fresh peers join), then 5 -> 1 all at once, with a writer
/// running: the four condemned pods wait in preStop while the operator removes them one by one.
#[test]
fn parallel_scale_up_then_down_to_one_keeps_the_quorum() {
    let kube = Kube::start().unwrap();
    let kubectl = kube.kubectl();
    let values = ["peers.terminationGracePeriodSeconds=60", "peers.podManagementPolicy=Parallel"];
    let namespace = install(&kube, &kubectl, "parallel", &values);
    let all: Vec<String> = (0..5).map(|i| format!("ipfs-cluster-{i}")).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    wait_joined(&kube, &namespace, &all[..3], &["Voter"; 3]);

    kubectl.run(&["scale", "statefulset", "ipfs-cluster", "-n", &namespace, "--replicas=5"]).unwrap();
    wait_joined(&kube, &namespace, &all, &["Voter"; 5]);

    let writer = Writer::start(api_of(&kubectl, &namespace, "ipfs-cluster-0"));
    kubectl.run(&["scale", "statefulset", "ipfs-cluster", "-n", &namespace, "--replicas=1"]).unwrap();
    wait_joined(&kube, &namespace, &all[..1], &["Voter"]);
    let (longest, acknowledged, refused) = writer.finish();
    eprintln!(
        "scale 5 -> 1 (Parallel): {acknowledged} writes acknowledged, {refused} refused, longest refusal {longest:?}"
    );
    assert!(acknowledged > 0, "no write went through");
    assert!(longest < std::time::Duration::from_secs(15), "writes refused for {longest:?}");
}

/// The leading operator crashes (SIGKILL: no Lease released) right as a scale-down starts: a
/// replica (the standby once the Lease expires, or the crashed one restarted under the same
/// identity, whichever comes first) removes the condemned peers while their preStop still waits.
/// (On a cluster of `E2E_KUBECONFIG`, the pod is force-deleted instead.)
#[test]
fn a_scale_down_finishes_safely_when_the_leading_operator_crashes() {
    let kube = Kube::start().unwrap();
    let kubectl = kube.kubectl();
    let values = ["peers.terminationGracePeriodSeconds=60", "peers.podManagementPolicy=Parallel"];
    let namespace = install(&kube, &kubectl, "failover", &values);
    let pods = ["ipfs-cluster-0", "ipfs-cluster-1", "ipfs-cluster-2"];
    wait_joined(&kube, &namespace, &pods, &["Voter"; 3]);
    let holder = |kubectl: &Kubectl| {
        let path = "jsonpath={.spec.holderIdentity}";
        kubectl.run(&["get", "lease", "ipfs-cluster-operator", "-n", &namespace, "-o", path]).unwrap()
    };
    let leader = holder(&kubectl);

    let writer = Writer::start(api_of(&kubectl, &namespace, "ipfs-cluster-0"));
    match kube.kubelet() {
        Some(kubelet) => kubelet.crash(&namespace, &leader, "operator").unwrap(),
        None => drop(kubectl.run(&["delete", "pod", &leader, "-n", &namespace, "--grace-period=0", "--force"])),
    }
    kubectl.run(&["scale", "statefulset", "ipfs-cluster", "-n", &namespace, "--replicas=1"]).unwrap();
    wait_joined(&kube, &namespace, &pods[..1], &["Voter"]);
    let (longest, acknowledged, refused) = writer.finish();
    eprintln!(
        "operator crashed during scale 3 -> 1: {acknowledged} acknowledged, {refused} refused, longest {longest:?}"
    );
    assert!(longest < std::time::Duration::from_secs(15), "writes refused for {longest:?}");
    let events = kubectl.run(&["get", "events", "-n", &namespace, "--field-selector", "reason=Removed"]).unwrap();
    for pod in &pods[1..] {
        assert!(events.contains(pod), "{pod} was removed by the operator, not lost:\n{events}");
    }
}

/// A ClusterPeer deleted by hand force-removes its peer (its finalizer holds the object until the
/// peer is out); the pod, still there, then comes back through a fresh ClusterPeer as a new node.
#[test]
fn deleting_a_cluster_peer_removes_its_peer_which_rejoins_as_a_new_node() {
    let kube = Kube::start().unwrap();
    let kubectl = kube.kubectl();
    let values = ["peers.terminationGracePeriodSeconds=30", "peers.podManagementPolicy=Parallel"];
    let namespace = install(&kube, &kubectl, "forget", &values);
    let pods = ["ipfs-cluster-0", "ipfs-cluster-1", "ipfs-cluster-2"];
    let node_of = |peers: &[Value]| peers[2]["status"]["nodeId"].as_str().unwrap_or_default().to_string();
    let before = node_of(&wait_joined(&kube, &namespace, &pods, &["Voter"; 3]));

    kubectl.run(&["delete", "clusterpeer", "ipfs-cluster-2", "-n", &namespace]).unwrap();
    let events = kubectl.run(&["get", "events", "-n", &namespace, "--field-selector", "reason=Removed"]).unwrap();
    assert!(events.contains("its ClusterPeer is being deleted"), "{events}");
    let after = node_of(&wait_joined(&kube, &namespace, &pods, &["Voter"; 3]));
    assert_ne!(after, before, "ipfs-cluster-2 rejoined as a new node");
}
