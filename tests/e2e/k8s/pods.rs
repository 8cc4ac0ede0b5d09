//! Single pods run by the kubelet stand-in: their environment (Secrets, ConfigMaps, the downward
//! API, `$(VAR)` expansion), their ServiceAccount's credentials, probes and restarts.

use e2e::k8s::Kube;

use super::{container_status, get_json, is_ready, namespace, wait_pod, wait_until};

fn terminated(pod: &serde_json::Value, container: &str) -> bool {
    container_status(pod, container)["state"]["terminated"].is_object()
}

#[test]
fn env_from_secrets_the_downward_api_and_expansion_reach_the_process() {
    let kube = Kube::start().unwrap();
    let kubectl = kube.kubectl();
    let namespace = namespace(&kubectl, "env");
    kubectl.run(&["create", "secret", "generic", "token", "-n", &namespace, "--from-literal=value=s3cret"]).unwrap();
    kubectl.run(&["create", "configmap", "settings", "-n", &namespace, "--from-literal=MODE=fast"]).unwrap();
    kubectl
        .apply(&format!(
            r#"{{"apiVersion": "v1", "kind": "Pod",
                "metadata": {{"name": "printer", "namespace": "{namespace}", "labels": {{"tier": "gold"}}}},
                "spec": {{"restartPolicy": "Never",
                  "containers": [{{"name": "print", "image": "busybox:1.36",
                    "command": ["sh", "-c",
                      "echo secret=$SECRET mode=$CFG_MODE tier=$TIER api=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; echo \"$@\"",
                      "sh"],
                    "args": ["name=$(NAME)", "ip=$(IP)", "joined=$(JOINED)", "escaped=$$(NAME)", "undefined=$(NOPE)"],
                    "envFrom": [{{"prefix": "CFG_", "configMapRef": {{"name": "settings"}}}}],
                    "env": [
                      {{"name": "SECRET", "valueFrom": {{"secretKeyRef": {{"name": "token", "key": "value"}}}}}},
                      {{"name": "NAME", "valueFrom": {{"fieldRef": {{"fieldPath": "metadata.name"}}}}}},
                      {{"name": "IP", "valueFrom": {{"fieldRef": {{"fieldPath": "status.podIP"}}}}}},
                      {{"name": "TIER", "valueFrom": {{"fieldRef": {{"fieldPath": "metadata.labels['tier']"}}}}}},
                      {{"name": "JOINED", "value": "$(NAME)@$(IP)"}}
                    ]}}]}}}}"#
        ))
        .unwrap();
    let pod = wait_pod(&kubectl, &namespace, "printer", "to succeed", |p| p["status"]["phase"] == "Succeeded");
    let ip = pod["status"]["podIP"].as_str().unwrap();
    let log = kube.logs(&namespace, "printer", "print").unwrap();
    let (env_line, args_line) = log.split_once('\n').unwrap_or_else(|| panic!("two lines: {log:?}"));
    assert!(env_line.starts_with("secret=s3cret mode=fast tier=gold api="), "{log}");
    if let Kube::Local { plane, .. } = &kube {
        // The API server itself, never the `kubernetes` Service's cluster IP.
        let port = plane.server.rsplit(':').next().unwrap();
        assert!(env_line.ends_with(&format!(" api=127.0.0.1:{port}")), "{log}");
    }
    assert_eq!(args_line, format!("name=printer ip={ip} joined=printer@{ip} escaped=$(NAME) undefined=$(NOPE)\n"));
    assert_eq!(container_status(&pod, "print")["state"]["terminated"]["reason"], "Completed");
    kubectl.run(&["delete", "namespace", &namespace, "--wait=false"]).unwrap();
}

#[test]
fn the_service_account_token_authenticates_as_the_service_account() {
    let kube = Kube::start().unwrap();
    let kubectl = kube.kubectl();
    let namespace = namespace(&kubectl, "rbac");
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
                "spec": {{"restartPolicy": "Never", "serviceAccountName": "reader", "containers": [{}, {}, {}]}}}}"#,
            container("whoami", r#"["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]"#),
            container("allowed", r#"["get", "pods", "-o", "name"]"#),
            container("denied", r#"["get", "secrets"]"#),
        ))
        .unwrap();
    let pod = wait_pod(&kubectl, &namespace, "client", "to finish", |p| {
        ["whoami", "allowed", "denied"].iter().all(|c| terminated(p, c))
    });
    let exit = |c: &str| container_status(&pod, c)["state"]["terminated"]["exitCode"].as_i64();
    let logs = |c: &str| kube.logs(&namespace, "client", c).unwrap();
    assert_eq!(logs("whoami"), format!("system:serviceaccount:{namespace}:reader"));
    assert_eq!((exit("allowed"), logs("allowed").trim()), (Some(0), "pod/client"));
    assert_eq!(exit("denied"), Some(1));
    assert!(logs("denied").contains("Forbidden"), "{}", logs("denied"));
    assert_eq!(pod["status"]["phase"], "Failed");
    kubectl.run(&["delete", "namespace", &namespace, "--wait=false"]).unwrap();
}

#[test]
fn probes_gate_readiness_and_failed_containers_restart() {
    let kube = Kube::start().unwrap();
    let kubectl = kube.kubectl();
    let namespace = namespace(&kubectl, "probes");
    let flags = tempfile::tempdir().unwrap();
    let exec = |script: &str| format!(r#"{{"exec": {{"command": ["sh", "-c", "{script}"]}}, "periodSeconds": 1}}"#);
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
    let probes_run = || std::fs::read_to_string(flags.path().join("probes")).unwrap_or_default().lines().count();
    let pod = wait_until("the readiness probe to fail three times", || {
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
