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
