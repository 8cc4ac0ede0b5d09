//! The operator end to end: the chart installed by real helm, the operator and the peers (real IPFS
//! daemons beside our sidecars) run as the chart says, membership watched through
//! `kubectl get clusterpeers` as a person would.

use std::time::Duration;

use e2e::k8s::release::phases;
use e2e::k8s::{Kube, Release, Writer, Written};
use serde_json::Value;

use super::{wait_until, WAIT};

/// `helm install` of the chart into a namespace of the test's own, with `values` (`--set`).
pub(crate) fn install<'k>(kube: &'k Kube, test: &str, values: &[&str]) -> Release<'k> {
    Release::install(kube, &format!("{test}-{}", std::process::id()), values).unwrap()
}

/// Waits until exactly `pods` have ClusterPeers, all Joined, `voters` of them voting.
pub(crate) fn wait_joined(release: &Release, pods: &[&str], voters: usize) -> Vec<Value> {
    release.wait_joined(pods, voters, WAIT).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `ipfs-cluster-0` .. `ipfs-cluster-{n-1}`.
pub(crate) fn pods(n: usize) -> Vec<String> {
    (0..n).map(Release::pod).collect()
}

/// Borrowed names, for [`wait_joined`].
pub(crate) fn names(pods: &[String]) -> Vec<&str> {
    pods.iter().map(String::as_str).collect()
}

/// Events of one reason in the namespace, as `kubectl get events` prints them.
pub(crate) fn events(release: &Release, reason: &str) -> String {
    let selector = format!("reason={reason}");
    release.kubectl.run(&["get", "events", "-n", &release.namespace, "--field-selector", &selector]).unwrap()
}

/// Generous for a loaded machine: one election at most (the benchmark reports the figure).
pub(crate) fn assert_writes_went_on(what: &str, written: Written) {
    eprintln!(
        "{what}: {} writes acknowledged, {} refused, longest refusal {:?}, slowest refused write {:?}",
        written.acknowledged, written.refused, written.longest_refusal, written.slowest_refusal
    );
    assert!(written.acknowledged > 0, "{what}: no write went through");
    assert!(written.longest_refusal < Duration::from_secs(15), "{what}: writes refused for {written:?}");
}

#[test]
fn helm_install_makes_a_cluster_of_three_joined_voters() {
    let kube = Kube::start().unwrap();
    let release = install(&kube, "install", &["peers.terminationGracePeriodSeconds=20"]);
    let pods = pods(3);
    let peers = wait_joined(&release, &names(&pods), 3);

    // Three peers of one cluster: distinct identities, and the table a person reads says so.
    let mut ids: Vec<&str> = peers.iter().filter_map(|p| p["status"]["peerId"].as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{peers:?}");
    let table = release.kubectl.run(&["get", "clusterpeers", "-n", &release.namespace]).unwrap();
    for (pod, id) in pods.iter().zip(&ids) {
        let row = table.lines().find(|l| l.starts_with(pod.as_str())).unwrap_or_else(|| panic!("{pod} in\n{table}"));
        assert!(row.contains(id) && row.contains("Voter") && row.contains("Joined"), "{table}");
    }
    // One leader, which every peer names.
    let leaders: Vec<String> = pods.iter().map(|pod| leader_seen_by(&release, pod).unwrap()).collect();
    assert!(ids.contains(&leaders[0].as_str()) && leaders.iter().all(|l| *l == leaders[0]), "{leaders:?}");
}

/// `GET /consensus` of `pod`, or why it did not answer.
fn consensus_of(release: &Release, pod: &str) -> Result<Value, String> {
    let (api, credentials) = release.api_of(pod).map_err(|e| e.to_string())?;
    let (user, password) = credentials.split_once(':').unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let sent = http.get(format!("{api}/consensus")).basic_auth(user, Some(password)).send().await;
        sent.map_err(|e| e.to_string())?.json().await.map_err(|e| e.to_string())
    })
}

/// The peer ID of the leader as `pod`'s `GET /consensus` reports it.
pub(crate) fn leader_seen_by(release: &Release, pod: &str) -> Result<String, String> {
    let status = consensus_of(release, pod)?;
    status["leader"].as_str().map(str::to_string).ok_or_else(|| format!("no leader in {status}"))
}

/// The consensus members as `pod` sees them.
pub(crate) fn consensus_members(release: &Release, pod: &str) -> Vec<Value> {
    consensus_of(release, pod).unwrap()["members"].as_array().cloned().unwrap_or_default()
}

/// The peers' IDs by pod, from their ClusterPeers.
pub(crate) fn peer_ids(peers: &[Value]) -> Vec<(String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    peers.iter().map(|p| (text(&p["spec"]["pod"]), text(&p["status"]["peerId"]))).collect()
}

/// Waits until no pod or PVC of these pods is left.
pub(crate) fn wait_pods_and_claims_gone(release: &Release, gone: &[&str]) {
    wait_until("the condemned pods and their claims gone", || {
        let listed = release.kubectl.run(&["get", "pods,pvc", "-n", &release.namespace, "-o", "name"]);
        let left: Vec<String> = listed
            .map_err(|e| e.to_string())?
            .lines()
            .filter(|line| {
                gone.iter().any(|pod| line.ends_with(&format!("/{pod}")) || line.ends_with(&format!("-{pod}")))
            })
            .map(str::to_string)
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
}

/// Scale 3 -> 5 -> 2 -> 1 (OrderedReady) with a writer through the staying pod: each condemned peer
/// is removed while its pod waits in preStop, and the removed pods' ClusterPeers and PVCs go.
/// Then 1 -> 3: the new pods join with fresh identities.
#[test]
fn scaling_down_removes_peers_while_they_live_and_writes_go_on() {
    let kube = Kube::start().unwrap();
    let release = install(&kube, "scale-down", &["peers.terminationGracePeriodSeconds=30"]);
    let all = pods(5);
    let all = names(&all);
    wait_joined(&release, &all[..3], 3);
    release.scale(5).unwrap();
    let first = peer_ids(&wait_joined(&release, &all, 5));

    let writer = Writer::start(&release, &all[..1]).unwrap();
    release.scale(2).unwrap();
    wait_joined(&release, &all[..2], 1);
    wait_pods_and_claims_gone(&release, &all[2..]);
    release.scale(1).unwrap();
    wait_joined(&release, &all[..1], 1);
    wait_pods_and_claims_gone(&release, &all[1..]);
    assert_writes_went_on("scale 5 -> 2 -> 1", writer.finish());

    // Each was removed by the operator, while alive (its preStop waited for it), not lost.
    let removed = events(&release, "Removed");
    for pod in &all[1..] {
        let removal = removed.lines().any(|l| l.contains(pod) && l.contains("its pod is scaled away"));
        assert!(removal, "no removal event for {pod}:\n{removed}");
    }

    release.scale(3).unwrap();
    let again = peer_ids(&wait_joined(&release, &all[..3], 3));
    assert_eq!(again[0], first[0], "the staying peer is the same");
    for (fresh, old) in again[1..].iter().zip(&first[1..3]) {
        assert_ne!(fresh.1, old.1, "{} joined with a fresh identity", fresh.0);
    }
}

/// Deleting a pod restarts it: the operator declares the restart, so its preStop returns at once
/// (far within the grace period), and it comes back as the same peer, membership unchanged.
#[test]
fn a_deleted_pod_comes_back_as_the_same_peer_without_waiting() {
    let kube = Kube::start().unwrap();
    let release = install(&kube, "restart", &["peers.terminationGracePeriodSeconds=60"]);
    let pods = pods(3);
    let pods = names(&pods);
    let before = peer_ids(&wait_joined(&release, &pods, 3));

    let writer = Writer::start(&release, &pods[..1]).unwrap();
    let started = std::time::Instant::now();
    release.kubectl.run(&["delete", "pod", pods[1], "-n", &release.namespace]).unwrap();
    let took = started.elapsed();
    // The preStop bound is 50 s: a stop far below it was not left to run out.
    assert!(took < Duration::from_secs(30), "deleting the pod took {took:?}");

    let after = peer_ids(&wait_joined(&release, &pods, 3));
    assert_eq!(after, before, "the restarted pod is the same peer");
    assert!(!events(&release, "Removed").contains("ipfs-cluster"), "no peer was removed");
    assert_writes_went_on("a pod restarted", writer.finish());
}

/// Parallel pod management: 3 -> 5 (two fresh peers join), then 5 -> 1 all at once, with a writer
/// running: the four condemned pods wait in preStop while the operator removes them one by one.
#[test]
fn parallel_scale_up_then_down_to_one_keeps_the_quorum() {
    let kube = Kube::start().unwrap();
    let values = ["peers.terminationGracePeriodSeconds=60", "peers.podManagementPolicy=Parallel"];
    let release = install(&kube, "parallel", &values);
    let all = pods(5);
    let all = names(&all);
    wait_joined(&release, &all[..3], 3);

    release.scale(5).unwrap();
    wait_joined(&release, &all, 5);

    let writer = Writer::start(&release, &all[..1]).unwrap();
    release.scale(1).unwrap();
    wait_joined(&release, &all[..1], 1);
    wait_pods_and_claims_gone(&release, &all[1..]);
    assert_writes_went_on("scale 5 -> 1 (Parallel)", writer.finish());
}

/// A ClusterPeer deleted by hand force-removes its peer (its finalizer holds the object until the
/// peer is out); the pod, still there, then comes back through a fresh ClusterPeer as a new node.
#[test]
fn deleting_a_cluster_peer_removes_its_peer_which_rejoins_as_a_new_node() {
    let kube = Kube::start().unwrap();
    let values = ["peers.terminationGracePeriodSeconds=30", "peers.podManagementPolicy=Parallel"];
    let release = install(&kube, "forget", &values);
    let pods = pods(3);
    let pods = names(&pods);
    let node_of = |peers: &[Value]| peers[2]["status"]["nodeId"].as_str().unwrap_or_default().to_string();
    let before = node_of(&wait_joined(&release, &pods, 3));

    release.kubectl.run(&["delete", "clusterpeer", pods[2], "-n", &release.namespace]).unwrap();
    assert!(events(&release, "Removed").contains("its ClusterPeer is being deleted"));
    let after = node_of(&wait_joined(&release, &pods, 3));
    assert_ne!(after, before, "{} rejoined as a new node", pods[2]);
}

/// A pod whose data is lost for good (its PVC deleted with it) comes back empty: the operator
/// removes the old peer and the pod joins as a new node, new peer ID and node ID.
#[test]
fn a_pod_back_with_wiped_data_joins_as_a_new_node() {
    let kube = Kube::start().unwrap();
    let values = ["peers.terminationGracePeriodSeconds=30", "peers.podManagementPolicy=Parallel"];
    let release = install(&kube, "wiped", &values);
    let pods = pods(3);
    let pods = names(&pods);
    let before = wait_joined(&release, &pods, 3);

    // The claim waits (kubernetes.io/pvc-protection) until its pod is gone; then the pod is
    // recreated with a fresh claim.
    let namespace = release.namespace.as_str();
    release.kubectl.run(&["delete", "pvc", "cluster-data-ipfs-cluster-2", "-n", namespace, "--wait=false"]).unwrap();
    release.kubectl.run(&["delete", "pod", pods[2], "-n", namespace]).unwrap();
    let joined: Vec<_> = pods.iter().map(|pod| (pod.to_string(), "Joined".to_string(), "Voter".to_string())).collect();
    let after = wait_until("ipfs-cluster-2 back as a new node", || {
        let peers = release.cluster_peers().map_err(|e| e.to_string())?;
        if phases(&peers) == joined && peers[2]["status"]["nodeId"] != before[2]["status"]["nodeId"] {
            Ok(peers)
        } else {
            Err(format!("{:?}", peer_ids(&peers)))
        }
    });
    assert_ne!(after[2]["status"]["peerId"], before[2]["status"]["peerId"], "a new identity");
    assert_eq!(peer_ids(&after)[..2], peer_ids(&before)[..2], "the others are the same peers");
}
