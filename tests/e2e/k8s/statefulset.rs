//! A StatefulSet run by the kubelet stand-in: each pod gets a loopback IP of its own, an IPFS
//! daemon on it, a shell with env from a Secret, a ConfigMap and the downward API, and a web server;
//! probes of every kind make it Ready. Scaled down, the removed pod's preStop hooks (exec and
//! httpGet) run before SIGTERM, and a container that ignores SIGTERM is killed at the grace
//! period's end, after which the pod object goes.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e::k8s::Kube;
use serde_json::Value;

use super::{get_json, is_ready, namespace, plane_address, pod_names, stand_in, wait_pod, wait_until};

const GRACE_SECONDS: u64 = 4;

fn statefulset(namespace: &str, markers: &Path, replicas: u32) -> String {
    let markers = markers.display();
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {{"name": "web", "namespace": "{namespace}"}},
            "spec": {{"replicas": {replicas}, "serviceName": "web", "podManagementPolicy": "Parallel",
              "selector": {{"matchLabels": {{"app": "web"}}}},
              "template": {{"metadata": {{"labels": {{"app": "web"}}}},
                "spec": {{"terminationGracePeriodSeconds": {GRACE_SECONDS},
                  "volumes": [{{"name": "markers", "hostPath": {{"path": "{markers}"}}}}],
                  "containers": [
                    {{"name": "ipfs", "image": "ipfs/kubo:v0.32.1",
                      "ports": [{{"name": "api", "containerPort": 5001}}, {{"name": "swarm", "containerPort": 4001}}],
                      "readinessProbe": {{"tcpSocket": {{"port": "api"}}, "periodSeconds": 1}}}},
                    {{"name": "shell", "image": "busybox:1.36",
                      "envFrom": [{{"prefix": "CFG_", "configMapRef": {{"name": "settings"}}}}],
                      "env": [
                        {{"name": "PASSWORD", "valueFrom": {{"secretKeyRef": {{"name": "credentials", "key": "password"}}}}}},
                        {{"name": "POD_NAME", "valueFrom": {{"fieldRef": {{"fieldPath": "metadata.name"}}}}}},
                        {{"name": "POD_IP", "valueFrom": {{"fieldRef": {{"fieldPath": "status.podIP"}}}}}},
                        {{"name": "APP", "valueFrom": {{"fieldRef": {{"fieldPath": "metadata.labels['app']"}}}}}},
                        {{"name": "ADDRESS", "value": "$(POD_NAME)@$(POD_IP)"}}
                      ],
                      "command": ["sh", "-c",
                        "echo password=$PASSWORD mode=$CFG_MODE app=$APP address=$ADDRESS api=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; echo \"$@\"; trap 'echo sigterm `date +%s.%N` >> /markers/$POD_NAME' TERM; while true; do sleep 0.2; done",
                        "sh"],
                      "args": ["name=$(POD_NAME)", "escaped=$$(POD_NAME)", "undefined=$(NOPE)"],
                      "volumeMounts": [{{"name": "markers", "mountPath": "/markers"}}],
                      "readinessProbe": {{"exec": {{"command": ["sh", "-c", "test -n \"$PASSWORD\""]}}, "periodSeconds": 1}},
                      "lifecycle": {{"preStop": {{"exec": {{"command":
                        ["sh", "-c", "sleep 1; echo prestop `date +%s.%N` >> /markers/$POD_NAME"]}}}}}}}},
                    {{"name": "web", "image": "python:3.11",
                      "env": [{{"name": "POD_IP", "valueFrom": {{"fieldRef": {{"fieldPath": "status.podIP"}}}}}}],
                      "args": ["-m", "http.server", "8080", "--bind", "$(POD_IP)"],
                      "ports": [{{"name": "http", "containerPort": 8080}}],
                      "readinessProbe": {{"httpGet": {{"path": "/", "port": "http"}}, "periodSeconds": 1}},
                      "lifecycle": {{"preStop": {{"httpGet": {{"path": "/prestop", "port": 8080}}}}}}}}
                  ]}}}}}}}}"#
    )
}

/// The pods once `count` of them exist and all are Ready, by name.
fn ready_pods(kube: &Kube, namespace: &str, count: usize) -> Vec<Value> {
    let kubectl = kube.kubectl();
    wait_until(&format!("{count} ready pods"), || {
        let names = pod_names(&kubectl, namespace, "app=web")?;
        let pods =
            names.iter().map(|name| get_json(&kubectl, namespace, "pod", name)).collect::<Result<Vec<_>, _>>()?;
        if pods.len() == count && pods.iter().all(is_ready) {
            Ok(pods)
        } else {
            let statuses: Vec<&Value> = pods.iter().map(|p| &p["status"]).collect();
            Err(format!(
                "{names:?}: {statuses:?}; kubelet:\n{}",
                kube.kubelet().map(|k| k.journal()).unwrap_or_default()
            ))
        }
    })
}

/// `POST /api/v0/id` of the IPFS daemon at `ip:5001`, the Kubo RPC way.
fn ipfs_id(ip: Ipv4Addr) -> Value {
    let mut stream = TcpStream::connect((ip, 5001)).unwrap_or_else(|e| panic!("the IPFS API on {ip}:5001: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "POST /api/v0/id HTTP/1.1\r\nHost: {ip}:5001\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    // The body may come chunked: the JSON object is the part between the outer braces.
    let json = &body[body.find('{').unwrap_or(0)..=body.rfind('}').unwrap_or(0)];
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {response}"))
}

/// `<what> <seconds since the epoch>` lines of a marker file.
fn marker_times(path: &Path) -> Vec<(String, f64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(what, time)| (what.to_string(), time.parse().unwrap_or_else(|e| panic!("{e}: {text}"))))
        .collect()
}

fn epoch_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn a_statefulsets_pods_get_ready_with_their_env_and_stop_gracefully() {
    let Some(kube) = stand_in() else { return };
    let kubectl = kube.kubectl();
    let namespace = namespace(&kubectl, "statefulset");
    kubectl
        .run(&["create", "secret", "generic", "credentials", "-n", &namespace, "--from-literal=password=s3cret"])
        .unwrap();
    kubectl.run(&["create", "configmap", "settings", "-n", &namespace, "--from-literal=MODE=fast"]).unwrap();
    let markers = tempfile::tempdir().unwrap();
    kubectl.apply(&statefulset(&namespace, markers.path(), 2)).unwrap();

    let pods = ready_pods(&kube, &namespace, 2);
    let ips: Vec<Ipv4Addr> = pods.iter().map(|p| p["status"]["podIP"].as_str().unwrap().parse().unwrap()).collect();
    assert_ne!(ips[0], ips[1], "each pod has an IP of its own");
    for (pod, ip) in pods.iter().zip(&ips) {
        let name = pod["metadata"]["name"].as_str().unwrap();
        assert!(ip.is_loopback() && *ip != Ipv4Addr::LOCALHOST, "{name} has {ip}");
        assert_eq!(pod["status"]["hostIP"], "127.0.0.1");
        // The daemon serves the Kubo RPC API on the pod's own IP and the declared ports.
        let id = ipfs_id(*ip);
        let swarm = format!("/ip4/{ip}/tcp/4001/p2p/{}", id["ID"].as_str().unwrap());
        assert!(id["Addresses"].as_array().unwrap().iter().any(|a| a == &swarm), "{name}: {id}");

        let shell = kube.logs(&namespace, name, "shell").unwrap();
        let mut lines = shell.lines();
        // The API server itself, never the `kubernetes` Service's cluster IP.
        let api = plane_address(&kube);
        let env = format!("password=s3cret mode=fast app=web address={name}@{ip} api={api}");
        assert_eq!(lines.next(), Some(env.as_str()), "{shell}");
        assert_eq!(lines.next(), Some(format!("name={name} escaped=$(POD_NAME) undefined=$(NOPE)").as_str()));
    }

    let started = SystemTime::now();
    kubectl.run(&["scale", "statefulset", "web", "-n", &namespace, "--replicas=1"]).unwrap();
    // The container that ignores SIGTERM keeps the pod until the grace period ends.
    let terminating =
        wait_pod(&kubectl, &namespace, "web-1", "terminating", |p| p["metadata"]["deletionTimestamp"].is_string());
    let deadline: SystemTime = terminating["metadata"]["deletionTimestamp"]
        .as_str()
        .unwrap()
        .parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap()
        .into();
    wait_until("web-1 gone", || match pod_names(&kubectl, &namespace, "app=web")? {
        names if names == ["web-0"] => Ok(()),
        names => Err(format!("{names:?}")),
    });
    let gone = SystemTime::now();
    // deletionTimestamp is the grace period's end, to the second below.
    assert!(gone >= deadline, "web-1 went at {gone:?}, before its grace period ended at {deadline:?}");
    assert!(gone.duration_since(started).unwrap() < Duration::from_secs(GRACE_SECONDS + 30), "{gone:?}");

    let marks = marker_times(&markers.path().join("web-1"));
    let what: Vec<&str> = marks.iter().map(|(what, _)| what.as_str()).collect();
    assert_eq!(what, ["prestop", "sigterm"], "preStop ran, then SIGTERM came: {marks:?}");
    let (prestop, sigterm) = (marks[0].1, marks[1].1);
    assert!(epoch_seconds(started) < prestop && prestop < sigterm, "{marks:?}");
    assert!(sigterm < epoch_seconds(deadline) + 1.0, "SIGTERM at {sigterm}, within the grace period: {deadline:?}");
    let web = kube.logs(&namespace, "web-1", "web").unwrap();
    assert!(web.contains("\"GET /prestop HTTP/1.1\""), "the httpGet preStop hook reached the web server: {web}");

    let survivor = get_json(&kubectl, &namespace, "pod", "web-0").unwrap();
    assert!(is_ready(&survivor), "{survivor}");
    assert!(!markers.path().join("web-0").exists(), "web-0 was left alone");
    kubectl.run(&["delete", "namespace", &namespace, "--wait=false"]).unwrap();
}
