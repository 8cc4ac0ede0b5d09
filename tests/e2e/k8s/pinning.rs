//! Pin objects end to end: applied, changed and deleted with kubectl as a person types it; what
//! the IPFS daemons hold is read from their own `pin/ls`.

use std::time::Duration;

use e2e::common::{raw_cid, unique_bytes};
use e2e::k8s::{PodIpfs, Release};
use serde_json::Value;

use super::membership::{events, install, names, pods, wait_joined};
use super::races::leading_operator;
use super::{get_json, wait_until};

/// A Pin object of `cid` with `spec` (JSON fields after the CID).
fn pin(release: &Release, name: &str, cid: &str, spec: &str) -> String {
    let more = if spec.is_empty() { String::new() } else { format!(", {spec}") };
    format!(
        r#"{{"apiVersion": "ipfscluster.io/v1alpha1", "kind": "Pin",
            "metadata": {{"name": "{name}", "namespace": "{}"}}, "spec": {{"cid": "{cid}"{more}}}}}"#,
        release.namespace
    )
}

fn kubectl(release: &Release, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["-n", &release.namespace]);
    release.kubectl.run(&all).unwrap_or_else(|e| panic!("kubectl {args:?}: {e:#}\n{}", release.diagnose()))
}

fn status(release: &Release, name: &str) -> Result<Value, String> {
    Ok(get_json(&release.kubectl, &release.namespace, "pin", name)?["status"].clone())
}

/// Waits until the Pin's status satisfies `wanted`; returns it.
fn wait_status(release: &Release, name: &str, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    wait_until(&format!("pin {name} {what}"), || {
        let status = status(release, name)?;
        if wanted(&status) {
            Ok(status)
        } else {
            Err(status.to_string())
        }
    })
}

/// Puts `data` into every daemon of `daemons` (each pins locally, fetching nothing); its CID.
fn put_into(daemons: &[&PodIpfs], data: &[u8]) -> String {
    let cids: Vec<String> = daemons.iter().map(|d| d.put(data).unwrap()).collect();
    cids[0].clone()
}

/// The pods the status names, sorted.
fn pods_named(status: &Value) -> Vec<String> {
    let mut pods: Vec<String> = status["peers"]
        .as_array()
        .map(|peers| peers.iter().map(|p| p["pod"].as_str().unwrap_or("-").to_string()).collect())
        .unwrap_or_default();
    pods.sort();
    pods
}

/// Waits until exactly the daemons of `holding` (of `all`) hold `cid`.
fn wait_held(daemons: &[(String, PodIpfs)], cid: &str, holding: &[String]) {
    wait_until(&format!("{cid} held by exactly {holding:?}"), || {
        let mut held = Vec::new();
        for (pod, daemon) in daemons {
            if daemon.holds(cid).map_err(|e| format!("{pod}: {e:#}"))? {
                held.push(pod.clone());
            }
        }
        if held == holding {
            Ok(())
        } else {
            Err(format!("held by {held:?}"))
        }
    });
}

/// A Pin follows its object: pinned where its replication says, re-pinned when that changes, put
/// back when unpinned behind its back, unpinned when deleted, also while the cluster is away;
/// content no daemon can find ends in Error, a spec the cluster cannot take is marked Invalid.
#[test]
fn pins_follow_their_objects() {
    let Some(kube) = super::stand_in() else { return };
    let values = ["peers.podManagementPolicy=Parallel", "peers.sidecar.pinDeadline=10s"];
    let release = install(&kube, "pinning", &values);
    let all = pods(3);
    wait_joined(&release, &names(&all), 3);
    let daemons: Vec<(String, PodIpfs)> =
        all.iter().map(|pod| (pod.clone(), PodIpfs::of(&release, pod).unwrap())).collect();
    let everywhere: Vec<&PodIpfs> = daemons.iter().map(|(_, d)| d).collect();
    let put_everywhere = |label: &str| put_into(&everywhere, &unique_bytes(label));

    // Replication 2: Pinned, on two pods, whose daemons hold it.
    let cid = put_everywhere("replicated");
    release.kubectl.apply(&pin(&release, "doc", &cid, r#""replicationMin": 2, "replicationMax": 2"#)).unwrap();
    kubectl(&release, &["wait", "--for=condition=Pinned", "pin/doc", "--timeout=120s"]);
    let pinned = status(&release, "doc").unwrap();
    assert_eq!(pinned["phase"], "Pinned", "{pinned}");
    assert_eq!(pinned["replicas"], "2/2", "{pinned}");
    let holders = pods_named(&pinned);
    assert_eq!(holders.len(), 2, "{pinned}");
    assert!(holders.iter().all(|pod| all.contains(pod)), "{pinned}");
    wait_held(&daemons, &cid, &holders);
    let table = kubectl(&release, &["get", "pins"]);
    assert!(table.lines().any(|l| l.starts_with("doc") && l.contains("Pinned") && l.contains("2/2")), "{table}");

    // Replication 3: the third daemon holds it too.
    kubectl(
        &release,
        &["patch", "pin", "doc", "--type=merge", "-p", r#"{"spec":{"replicationMin":3,"replicationMax":3}}"#],
    );
    wait_status(&release, "doc", "on three peers", |s| s["replicas"] == "3/3" && s["observedGeneration"] == 2);
    wait_held(&daemons, &cid, &all);

    // Unpinned through the REST API behind the controller's back: put back, with an event.
    let (api, credentials) = release.api_of(&all[0]).unwrap();
    rest_unpin(&api, &credentials, &cid);
    wait_until("a Restored event", || {
        let seen = events(&release, "Restored");
        if seen.contains("doc") {
            Ok(())
        } else {
            Err(seen)
        }
    });
    wait_status(&release, "doc", "pinned again", |s| s["phase"] == "Pinned" && s["replicas"] == "3/3");
    wait_held(&daemons, &cid, &all);

    // Content no daemon can find: Pinning, then Error with the daemons' reason, never Pinned.
    let lost = raw_cid(&unique_bytes("nowhere"));
    release.kubectl.apply(&pin(&release, "lost", &lost, "")).unwrap();
    let failed = wait_status(&release, "lost", "failed", |s| {
        assert_ne!(s["phase"], "Pinned", "content nobody has cannot be pinned: {s}");
        s["phase"] == "Error"
    });
    assert!(failed["lastError"].as_str().is_some_and(|e| !e.is_empty()), "{failed}");

    // A pod that is not a peer: marked Invalid with a warning, nothing sent.
    let misplaced = put_everywhere("misplaced");
    release.kubectl.apply(&pin(&release, "misplaced", &misplaced, r#""allocations": ["nobody-0"]"#)).unwrap();
    let invalid = wait_status(&release, "misplaced", "invalid", |s| s["phase"] == "Error");
    assert!(invalid["lastError"].as_str().unwrap_or_default().contains("nobody-0"), "{invalid}");
    assert!(events(&release, "Invalid").contains("misplaced"), "an Invalid event");
    wait_held(&daemons, &misplaced, &[]);

    // Deleted: unpinned in every daemon before the object goes.
    kubectl(&release, &["delete", "pin", "doc", "--timeout=120s"]);
    wait_held(&daemons, &cid, &[]);

    // Deleted while no sidecar answers: the finalizer waits, saying why, and completes once
    // they are back.
    let later = put_everywhere("later");
    release.kubectl.apply(&pin(&release, "later", &later, "")).unwrap();
    kubectl(&release, &["wait", "--for=condition=Pinned", "pin/later", "--timeout=120s"]);
    let kubelet = kube.kubelet().unwrap();
    for pod in &all {
        kubelet.freeze(&release.namespace, pod, "cluster", true).unwrap();
    }
    kubectl(&release, &["delete", "pin", "later", "--wait=false"]);
    let waiting = wait_status(&release, "later", "waiting for the cluster", |s| {
        s["phase"] == "Unpinning" && ready_reason(s) == "ClusterUnreachable"
    });
    eprintln!("while the sidecars are frozen: {waiting}");
    for pod in &all {
        kubelet.freeze(&release.namespace, pod, "cluster", false).unwrap();
    }
    kubectl(&release, &["wait", "--for=delete", "pin/later", "--timeout=180s"]);
    wait_held(&daemons, &later, &[]);

    // The Pin controller's own metrics, beside the membership controller's.
    let metrics = operator_metrics(&release);
    for family in ["cluster_operator_reconciles_total{controller=\"pins\"}", "cluster_operator_pins{phase=\"Error\"}"] {
        assert!(metrics.contains(family), "{family} in:\n{metrics}");
    }
    assert!(metrics.contains("cluster_operator_queue_depth{controller=\"pins\"}"), "{metrics}");
}

/// `GET /metrics` of the leading operator replica, at its pod IP.
fn operator_metrics(release: &Release) -> String {
    let leader = leading_operator(&release.kubectl, &release.namespace);
    let ip = kubectl(release, &["get", "pod", &leader, "-o", "jsonpath={.status.podIP}"]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let response = reqwest::get(format!("http://{ip}:8080/metrics")).await.unwrap();
        response.text().await.unwrap()
    })
}

fn ready_reason(status: &Value) -> String {
    let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    let ready = conditions.iter().find(|c| c["type"] == "Ready");
    ready.and_then(|c| c["reason"].as_str()).unwrap_or("-").to_string()
}

/// `DELETE /pins/{cid}` through a pod's REST API, as a person with cluster-ctl or curl would.
fn rest_unpin(api: &str, credentials: &str, cid: &str) {
    let (user, password) = credentials.split_once(':').unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = runtime.block_on(async {
        let request = reqwest::Client::new().delete(format!("{api}/pins/{cid}")).basic_auth(user, Some(password));
        request.timeout(Duration::from_secs(30)).send().await.unwrap().status()
    });
    assert!(status.is_success(), "DELETE /pins/{cid}: {status}");
}

/// Scaling 3 -> 1 with 50 Pins on every peer: each stays Pinned, and its status names only the
/// pod that is left.
#[test]
fn fifty_pins_stay_pinned_through_a_scale_down_to_one() {
    let Some(kube) = super::stand_in() else { return };
    let release = install(&kube, "pins-scale", &["peers.podManagementPolicy=Parallel"]);
    let all = pods(3);
    wait_joined(&release, &names(&all), 3);
    let daemons: Vec<PodIpfs> = all.iter().map(|pod| PodIpfs::of(&release, pod).unwrap()).collect();
    let objects: Vec<String> = (0..50)
        .map(|i| {
            let cid = put_into(&daemons.iter().collect::<Vec<_>>(), &unique_bytes(&format!("scaled {i}")));
            pin(&release, &format!("content-{i}"), &cid, "")
        })
        .collect();
    let list = format!(r#"{{"apiVersion": "v1", "kind": "List", "items": [{}]}}"#, objects.join(","));
    release.kubectl.apply(&list).unwrap();
    kubectl(&release, &["wait", "--for=condition=Pinned", "pins", "--all", "--timeout=180s"]);

    release.scale(1).unwrap();
    wait_joined(&release, &names(&all[..1]), 1);
    let only = vec![all[0].clone()];
    wait_until("every Pin pinned on the one pod left", || {
        let listing = kubectl(&release, &["get", "pins", "-o", "json"]);
        let items: Value = serde_json::from_str(&listing).map_err(|e| e.to_string())?;
        let items = items["items"].as_array().cloned().unwrap_or_default();
        let off: Vec<String> = items
            .iter()
            .filter(|p| p["status"]["phase"] != "Pinned" || pods_named(&p["status"]) != only)
            .map(|p| format!("{}: {}", p["metadata"]["name"], p["status"]))
            .collect();
        if items.len() == 50 && off.is_empty() {
            Ok(())
        } else {
            Err(format!("{} Pins, not yet: {:?}", items.len(), off.iter().take(3).collect::<Vec<_>>()))
        }
    });
}
