//! A StatefulSet run by the kubelet stand-in: pods of the IPFS image (a real daemon on each pod's
//! own IP) beside a shell container, Ready with distinct pod IPs; OrderedReady scaling up and down,
//! with each removed pod's preStop hook and SIGTERM observed.

use std::net::{Ipv4Addr, TcpStream};

use e2e::k8s::Kube;

use super::{container_status, get_json, is_ready, namespace, pod_names, wait_until};

fn statefulset(namespace: &str, markers: &str, replicas: u32) -> String {
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {{"name": "ipfs", "namespace": "{namespace}"}},
            "spec": {{"replicas": {replicas}, "serviceName": "ipfs",
              "selector": {{"matchLabels": {{"app": "ipfs"}}}},
              "template": {{"metadata": {{"labels": {{"app": "ipfs"}}}},
                "spec": {{"terminationGracePeriodSeconds": 20,
                  "volumes": [{{"name": "markers", "hostPath": {{"path": "{markers}"}}}}],
                  "containers": [
                    {{"name": "ipfs", "image": "ipfs/kubo:v0.32.1",
                      "ports": [{{"name": "api", "containerPort": 5001}}, {{"name": "swarm", "containerPort": 4001}}],
                      "readinessProbe": {{"tcpSocket": {{"port": "api"}}, "periodSeconds": 1}},
                      "volumeMounts": [{{"name": "markers", "mountPath": "/markers"}}],
                      "lifecycle": {{"preStop": {{"exec": {{"command":
                        ["sh", "-c", "echo preStop $HOSTNAME >> /markers/prestop"]}}}}}}}},
                    {{"name": "shell", "image": "busybox",
                      "command": ["sh", "-c",
                        "trap 'echo got SIGTERM; exit 0' TERM; echo running on $(POD_IP); while true; do sleep 0.2; done"],
                      "env": [{{"name": "POD_IP", "valueFrom": {{"fieldRef": {{"fieldPath": "status.podIP"}}}}}}]}}
                  ]}}}}}}}}"#
    )
}

fn ready_pods(kube: &Kube, namespace: &str, count: usize) -> Vec<(String, Ipv4Addr)> {
    let kubectl = kube.kubectl();
    wait_until(&format!("{count} ready pods"), || {
        let names = pod_names(&kubectl, namespace, "app=ipfs")?;
        let mut ready = Vec::new();
        for name in &names {
            let pod = get_json(&kubectl, namespace, "pod", name)?;
            if is_ready(&pod) {
                let ip = pod["status"]["podIP"].as_str().unwrap_or_default().parse().map_err(|e| format!("{e}"))?;
                ready.push((name.clone(), ip));
            }
        }
        if names.len() == count && ready.len() == count {
            Ok(ready)
        } else {
            Err(format!("pods {names:?}, ready {ready:?}; kubelet:\n{}", journal(kube)))
        }
    })
}

fn journal(kube: &Kube) -> String {
    kube.kubelet().map(|k| k.journal()).unwrap_or_default()
}

#[test]
fn a_statefulset_of_ipfs_pods_runs_and_scales_in_order() {
    let kube = Kube::start().unwrap();
    let kubectl = kube.kubectl();
    let namespace = namespace(&kubectl, "statefulset");
    let markers = tempfile::tempdir().unwrap();
    kubectl.apply(&statefulset(&namespace, &markers.path().display().to_string(), 2)).unwrap();

    let pods = ready_pods(&kube, &namespace, 2);
    let ips: std::collections::BTreeSet<Ipv4Addr> = pods.iter().map(|(_, ip)| *ip).collect();
    assert_eq!(ips.len(), 2, "distinct pod IPs: {pods:?}");
    for (name, ip) in &pods {
        assert!(ip.is_loopback() && *ip != Ipv4Addr::LOCALHOST, "{name} has {ip}");
        // The daemon listens on the pod's own IP, with the container's declared API port.
        TcpStream::connect((*ip, 5001)).unwrap_or_else(|e| panic!("{name}'s IPFS API on {ip}:5001: {e}"));
        let shell = kube.logs(&namespace, name, "shell").unwrap();
        assert!(shell.contains(&format!("running on {ip}")), "{name}'s shell log: {shell}");
    }
    let pod = get_json(&kubectl, &namespace, "pod", "ipfs-0").unwrap();
    assert_eq!(container_status(&pod, "ipfs")["started"], true, "{pod}");
    assert_eq!(pod["status"]["hostIP"], "127.0.0.1");

    kubectl.run(&["scale", "statefulset", "ipfs", "-n", &namespace, "--replicas=3"]).unwrap();
    let pods = ready_pods(&kube, &namespace, 3);
    assert_eq!(pods.iter().map(|(_, ip)| *ip).collect::<std::collections::BTreeSet<_>>().len(), 3, "{pods:?}");

    kubectl.run(&["scale", "statefulset", "ipfs", "-n", &namespace, "--replicas=1"]).unwrap();
    wait_until("only ipfs-0 left", || match pod_names(&kubectl, &namespace, "app=ipfs")? {
        names if names == ["ipfs-0"] => Ok(()),
        names => Err(format!("{names:?}")),
    });
    // OrderedReady removes the highest ordinal first, each after the previous one is gone.
    let prestop = std::fs::read_to_string(markers.path().join("prestop")).unwrap_or_default();
    assert_eq!(prestop, "preStop ipfs-2\npreStop ipfs-1\n", "preStop hooks run, in order");
    for name in ["ipfs-1", "ipfs-2"] {
        let shell = kube.logs(&namespace, name, "shell").unwrap();
        assert!(shell.contains("got SIGTERM"), "{name}'s shell log: {shell}");
    }
    let survivor = get_json(&kubectl, &namespace, "pod", "ipfs-0").unwrap();
    assert!(is_ready(&survivor), "{survivor}");
    kubectl.run(&["delete", "namespace", &namespace, "--wait=false"]).unwrap();
}
