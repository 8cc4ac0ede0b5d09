//! The operator's side, end to end on a real Kubernetes control plane (`e2e::k8s`), driven by the
//! stock kubectl. With `E2E_KUBECONFIG` set, the same tests run against that cluster instead, but
//! for the kubelet stand-in's own (`pods`, `statefulset`, `volumes`), which are skipped there.

mod lifecycle;
mod membership;
mod pinning;
mod pins;
mod playground;
mod pods;
mod races;
mod statefulset;
mod volumes;

use std::time::Duration;

use e2e::k8s::{Kube, Kubectl};
use serde_json::Value;

pub(crate) const WAIT: Duration = Duration::from_secs(120);

/// Polls `probe` (blocking) until it returns `Ok`, or fails with the last state it saw.
fn wait_until<T>(what: &str, probe: impl FnMut() -> Result<T, String>) -> T {
    e2e::k8s::release::wait_for(what, WAIT, probe).unwrap_or_else(|e| panic!("{e:#}"))
}

fn pod_names(kubectl: &Kubectl, namespace: &str, selector: &str) -> Result<Vec<String>, String> {
    let out = kubectl
        .run(&["get", "pods", "-n", namespace, "-l", selector, "-o", "jsonpath={.items[*].metadata.name}"])
        .map_err(|e| e.to_string())?;
    let mut names: Vec<String> = out.split_whitespace().map(str::to_string).collect();
    names.sort();
    Ok(names)
}

/// The generated CRDs are accepted by the real API server: `kubectl get clusterpeers` prints their
/// columns, and the schema's rules hold (an immutable field cannot change).
#[test]
fn the_crds_install_and_print_their_columns() {
    let kube = Kube::start().unwrap();
    let kubectl = kube.kubectl();
    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    kubectl.run(&["apply", "--server-side", "-f", crds.to_str().unwrap()]).unwrap();
    kubectl.run(&["wait", "--for=condition=Established", "crd/clusterpeers.ipfscluster.io"]).unwrap();
    let namespace = format!("crds-{}", std::process::id());
    kubectl.run(&["create", "namespace", &namespace]).unwrap();
    let peer = format!(
        r#"{{"apiVersion": "ipfscluster.io/v1alpha1", "kind": "ClusterPeer",
            "metadata": {{"name": "ipfs-0", "namespace": "{namespace}"}},
            "spec": {{"cluster": "ipfs", "pod": "ipfs-0"}}}}"#
    );
    kubectl.apply(&peer).unwrap();

    let table = kubectl.run(&["get", "cpeer", "-n", &namespace]).unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "POD", "PEER", "ID", "ROLE", "PHASE", "AGE"], "{table}");
    assert!(table.lines().nth(1).unwrap().starts_with("ipfs-0"), "{table}");

    let moved = kubectl.run(&[
        "patch",
        "cpeer",
        "ipfs-0",
        "-n",
        &namespace,
        "--type=merge",
        "-p",
        r#"{"spec":{"pod":"ipfs-1"}}"#,
    ]);
    let error = moved.expect_err("spec.pod is immutable").to_string();
    assert!(error.contains("pod is immutable"), "{error}");
}

/// A control plane of the harness's own with the kubelet stand-in, for the tests of the stand-in
/// itself (they look at its processes' files and pod IPs) and those that need its powers (freezing
/// a container); `None`, with a note, when `E2E_KUBECONFIG` names a cluster.
pub(crate) fn stand_in() -> Option<Kube> {
    if std::env::var_os("E2E_KUBECONFIG").is_some() {
        eprintln!("skipped: a test of the kubelet stand-in, and E2E_KUBECONFIG names a cluster");
        return None;
    }
    Some(Kube::start().unwrap())
}

/// `127.0.0.1:PORT` of the harness's API server.
fn plane_address(kube: &Kube) -> String {
    match kube {
        Kube::Local { plane, .. } => plane.server.trim_start_matches("https://").to_string(),
        Kube::External(_) => unreachable!("only for the stand-in's tests"),
    }
}

/// A namespace of the test's own, named after it (and the process, for side-by-side runs).
fn namespace(kubectl: &Kubectl, test: &str) -> String {
    let namespace = format!("{test}-{}", std::process::id());
    kubectl.run(&["create", "namespace", &namespace]).unwrap();
    namespace
}

/// `kubectl get KIND NAME -o json`, or the error as the state seen.
fn get_json(kubectl: &Kubectl, namespace: &str, kind: &str, name: &str) -> Result<Value, String> {
    let out = kubectl.run(&["get", kind, name, "-n", namespace, "-o", "json"]).map_err(|e| e.to_string())?;
    serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
}

/// Whether the pod's `Ready` condition is True.
fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// A container's status in the pod by name (`Null` when not reported).
fn container_status<'a>(pod: &'a Value, container: &str) -> &'a Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|statuses| statuses.iter().find(|s| s["name"] == container))
        .unwrap_or(&Value::Null)
}

/// Waits until the pod (by name) exists and satisfies `wanted`; returns it.
fn wait_pod(kubectl: &Kubectl, namespace: &str, name: &str, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    wait_until(&format!("pod {name} {what}"), || {
        let pod = get_json(kubectl, namespace, "pod", name)?;
        if wanted(&pod) {
            Ok(pod)
        } else {
            Err(pod["status"].to_string())
        }
    })
}
