//! Single pods run by the kubelet stand-in: a client in a pod authenticates with its
//! ServiceAccount's projected token (RBAC applies), our image runs our binaries, and a pod's probes,
//! readiness gates and restartPolicy decide readiness and restarts.

use super::{container_status, get_json, is_ready, namespace, stand_in, wait_pod, wait_until};

fn terminated(pod: &serde_json::Value, container: &str) -> bool {
    container_status(pod, container)["state"]["terminated"].is_object()
}

#[test]
fn pods_act_as_their_service_account_and_restart_as_their_probes_and_policy_say() {
    let Some(kube) = stand_in() else { return };
    let kubectl = kube.kubectl();
    let namespace = namespace(&kubectl, "pods");
    kubectl.run(&["create", "serviceaccount", "reader", "-n", &namespace]).unwrap();
    kubectl.run(&["create", "role", "pod-reader", "-n", &namespace, "--verb=get,list", "--resource=pods"]).unwrap();
    kubectl
        .run(&[
            "create",
            "rolebinding",
            "reader",
            "-n",
            &namespace,
            "--role=pod-reader",
            &format!("--serviceaccount={namespace}:reader"),
        ])
        .unwrap();
    let container =
        |name: &str, args: &str| format!(r#"{{"name": "{name}", "image": "bitnami/kubectl:1.36", "args": {args}}}"#);
    kubectl
        .apply(&format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "client", "namespace": "{namespace}"}},
                "spec": {{"restartPolicy": "Never", "serviceAccountName": "reader", "containers": [{}, {}, {},
                  {{"name": "ours", "image": "ghcr.io/example/ipfs-cluster-sidecar:dev",
                    "command": ["/usr/local/bin/cluster-ctl", "--version"]}}]}}}}"#,
            container("whoami", r#"["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]"#),
            container("allowed", r#"["get", "pods", "-o", "name"]"#),
            container("denied", r#"["get", "secrets"]"#),
        ))
        .unwrap();
    let flags = tempfile::tempdir().unwrap();
    let exec = |script: &str| {
        format!(r#"{{"exec": {{"command": ["sh", "-c", "{script}"]}}, "periodSeconds": 1, "failureThreshold": 1}}"#)
    };
    let sleeper = r#""command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]"#;
    kubectl
        .apply(&format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "probed", "namespace": "{namespace}"}},
                "spec": {{"volumes": [{{"name": "flags", "hostPath": {{"path": "{flags}"}}}}],
                  "containers": [
                    {{"name": "gated", "image": "busybox", {sleeper},
                      "volumeMounts": [{{"name": "flags", "mountPath": "/flags"}}],
                      "readinessProbe": {}}},
                    {{"name": "lively", "image": "busybox", {sleeper},
                      "volumeMounts": [{{"name": "flags", "mountPath": "/flags"}}],
                      "livenessProbe": {}}},
                    {{"name": "crasher", "image": "busybox", "command": ["sh", "-c", "echo run; exit 3"]}}
                  ]}}}}"#,
            exec("echo probed >> /flags/probes; test -f /flags/ready"),
            exec("test ! -f /flags/dead"),
            flags = flags.path().display(),
        ))
        .unwrap();
    kubectl
        .apply(&format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "joiner", "namespace": "{namespace}"}},
                "spec": {{"readinessGates": [{{"conditionType": "example.com/joined"}}],
                  "containers": [{{"name": "sleeper", "image": "busybox", {sleeper}}}]}}}}"#
        ))
        .unwrap();
    let pod = wait_pod(&kubectl, &namespace, "client", "to finish", |p| {
        ["whoami", "allowed", "denied", "ours"].iter().all(|c| terminated(p, c))
    });
    let exit = |c: &str| container_status(&pod, c)["state"]["terminated"]["exitCode"].as_i64();
    let logs = |c: &str| kube.logs(&namespace, "client", c).unwrap();
    assert_eq!(logs("whoami"), format!("system:serviceaccount:{namespace}:reader"));
    // Listing is allowed; the other pods of the test may or may not exist yet.
    assert_eq!(exit("allowed"), Some(0), "{}", logs("allowed"));
    assert!(logs("allowed").lines().any(|l| l == "pod/client"), "{}", logs("allowed"));
    assert_eq!(exit("denied"), Some(1));
    assert!(logs("denied").contains("Forbidden"), "{}", logs("denied"));
    // Our image runs our binaries; the container's command names which.
    assert_eq!((exit("ours"), logs("ours").trim()), (Some(0), concat!("cluster-ctl ", env!("CARGO_PKG_VERSION"))));
    assert_eq!(pod["status"]["phase"], "Failed");

    // A readiness gate: Ready waits for a condition someone else sets, which the kubelet keeps.
    let condition = |pod: &serde_json::Value, kind: &str| {
        let conditions = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
        conditions.into_iter().find(|c| c["type"] == kind).map(|c| c["status"].clone())
    };
    let joiner = wait_pod(&kubectl, &namespace, "joiner", "to have its containers ready", |p| {
        condition(p, "ContainersReady") == Some("True".into())
    });
    assert_eq!(condition(&joiner, "Ready"), Some("False".into()), "{joiner}");
    let joined = r#"{"status": {"conditions": [{"type": "example.com/joined", "status": "True"}]}}"#;
    kubectl.run(&["patch", "pod", "joiner", "-n", &namespace, "--subresource=status", "-p", joined]).unwrap();
    wait_pod(&kubectl, &namespace, "joiner", "ready through its gate", is_ready);

    let probes_run = || std::fs::read_to_string(flags.path().join("probes")).unwrap_or_default().lines().count();
    let pod = wait_until("the readiness probe to have failed three times", || {
        let pod = get_json(&kubectl, &namespace, "pod", "probed")?;
        match probes_run() {
            n if n >= 3 && container_status(&pod, "gated")["state"]["running"].is_object() => Ok(pod),
            n => Err(format!("{n} probes; {}", pod["status"])),
        }
    });
    assert_eq!(container_status(&pod, "gated")["ready"], false, "{pod}");
    assert!(!is_ready(&pod), "{pod}");
    assert_eq!(pod["status"]["phase"], "Running");

    let pod = wait_pod(&kubectl, &namespace, "probed", "to restart the crasher twice", |p| {
        container_status(p, "crasher")["restartCount"].as_i64() >= Some(2)
    });
    assert_eq!(container_status(&pod, "crasher")["lastState"]["terminated"]["exitCode"], 3, "{pod}");
    assert!(kube.logs(&namespace, "probed", "crasher").unwrap().matches("run\n").count() >= 3);

    std::fs::write(flags.path().join("ready"), "").unwrap();
    wait_pod(&kubectl, &namespace, "probed", "to have its gated container ready", |p| {
        container_status(p, "gated")["ready"] == true
    });
    assert_eq!(container_status(&pod, "lively")["restartCount"], 0);
    std::fs::write(flags.path().join("dead"), "").unwrap();
    wait_pod(&kubectl, &namespace, "probed", "to restart the container failing its liveness probe", |p| {
        container_status(p, "lively")["restartCount"].as_i64() >= Some(1)
    });
    kubectl.run(&["delete", "namespace", &namespace, "--wait=false"]).unwrap();
}
