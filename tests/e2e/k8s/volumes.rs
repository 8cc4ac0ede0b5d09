//! PersistentVolumeClaims of a StatefulSet, provisioned by the kubelet stand-in: the data survives
//! the pod's deletion (the pod comes back with the same data) and is wiped with the claim.

use e2e::k8s::Kube;

use super::{get_json, is_ready, namespace, stand_in, wait_pod, wait_until};

fn statefulset(namespace: &str, replicas: u32) -> String {
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {{"name": "keeper", "namespace": "{namespace}"}},
            "spec": {{"replicas": {replicas}, "serviceName": "keeper",
              "selector": {{"matchLabels": {{"app": "keeper"}}}},
              "volumeClaimTemplates": [{{"metadata": {{"name": "data"}},
                "spec": {{"accessModes": ["ReadWriteOnce"], "resources": {{"requests": {{"storage": "10Mi"}}}}}}}}],
              "template": {{"metadata": {{"labels": {{"app": "keeper"}}}},
                "spec": {{"containers": [{{"name": "keeper", "image": "busybox",
                  "volumeMounts": [{{"name": "data", "mountPath": "/data"}}],
                  "env": [{{"name": "POD_UID", "valueFrom": {{"fieldRef": {{"fieldPath": "metadata.uid"}}}}}}],
                  "command": ["sh", "-c",
                    "if [ -f /data/first ]; then echo found $(cat /data/first); else echo $POD_UID > /data/first; echo wrote $POD_UID; fi; trap 'exit 0' TERM; while true; do sleep 0.2; done"]
                }}]}}}}}}}}"#
    )
}

/// The last `found X` or `wrote X` line of the keeper's log.
fn last_report(kube: &Kube, namespace: &str) -> Result<String, String> {
    let log = kube.logs(namespace, "keeper-0", "keeper").map_err(|e| e.to_string())?;
    log.lines().rev().find(|l| l.starts_with("found ") || l.starts_with("wrote ")).map(str::to_string).ok_or(log)
}

fn ready_keeper(kube: &Kube, namespace: &str, not_uid: &str) -> String {
    let pod = wait_pod(&kube.kubectl(), namespace, "keeper-0", "ready (a new one)", |p| {
        is_ready(p) && p["metadata"]["uid"] != not_uid
    });
    pod["metadata"]["uid"].as_str().unwrap().to_string()
}

#[test]
fn claimed_data_survives_the_pod_and_goes_with_the_claim() {
    let Some(kube) = stand_in() else { return };
    let kubectl = kube.kubectl();
    let namespace = namespace(&kubectl, "volumes");
    kubectl.apply(&statefulset(&namespace, 1)).unwrap();
    let first = ready_keeper(&kube, &namespace, "");
    assert_eq!(wait_until("the first report", || last_report(&kube, &namespace)), format!("wrote {first}"));
    let claim = get_json(&kubectl, &namespace, "pvc", "data-keeper-0").unwrap();
    assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
    let volume = claim["spec"]["volumeName"].as_str().unwrap().to_string();
    let pv = get_json(&kubectl, "default", "pv", &volume).unwrap();
    let dir = std::path::PathBuf::from(pv["spec"]["hostPath"]["path"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(dir.join("first")).unwrap().trim(), first);

    kubectl.run(&["delete", "pod", "keeper-0", "-n", &namespace]).unwrap();
    let second = ready_keeper(&kube, &namespace, &first);
    let report = wait_until("the second report", || match last_report(&kube, &namespace)? {
        report if report != format!("wrote {first}") => Ok(report),
        report => Err(report),
    });
    assert_eq!(report, format!("found {first}"), "the new pod {second} sees the old pod's data");

    kubectl.run(&["scale", "statefulset", "keeper", "-n", &namespace, "--replicas=0"]).unwrap();
    kubectl.run(&["delete", "pvc", "data-keeper-0", "-n", &namespace, "--wait=false"]).unwrap();
    wait_until("the volume deleted and wiped", || {
        match kubectl.run(&["get", "pv", &volume, "--ignore-not-found", "-o", "name"]).map_err(|e| e.to_string())? {
            out if out.is_empty() && !dir.exists() => Ok(()),
            out => Err(format!("pv: {out:?}, directory exists: {}", dir.exists())),
        }
    });

    kubectl.run(&["scale", "statefulset", "keeper", "-n", &namespace, "--replicas=1"]).unwrap();
    let third = ready_keeper(&kube, &namespace, &second);
    let report = wait_until("the third report", || match last_report(&kube, &namespace)? {
        report if report.starts_with("wrote ") => Ok(report),
        report => Err(report),
    });
    assert_eq!(report, format!("wrote {third}"), "a fresh claim starts empty");
    kubectl.run(&["delete", "namespace", &namespace, "--wait=false"]).unwrap();
}
