//! The races of a scale-down (see the operator's `membership` module docs): the StatefulSet
//! controller deletes condemned pods the moment `replicas` drops, whatever else is going on.

use e2e::k8s::{Kube, Kubectl, Release, Writer};
use serde_json::Value;

use super::membership::{
    assert_writes_went_on, consensus_members, events, install, leader_seen_by, names, peer_ids, pods, wait_joined,
    wait_pods_and_claims_gone,
};
use super::wait_until;

const OPERATOR: &str = "ipfs-cluster-operator";

/// The operator pod holding the Lease.
pub(crate) fn leading_operator(kubectl: &Kubectl, namespace: &str) -> String {
    let path = "jsonpath={.spec.holderIdentity}";
    kubectl.run(&["get", "lease", OPERATOR, "-n", namespace, "-o", path]).unwrap()
}

/// Each of `pods` was removed by the operator (an event says so), not lost.
fn assert_removed_by_the_operator(release: &Release, pods: &[&str]) {
    let removed = events(release, "Removed");
    for pod in pods {
        assert!(removed.contains(pod), "{pod} was removed by the operator, not lost:\n{removed}");
    }
}

/// The leading operator crashes (SIGKILL: no Lease released) right as a scale-down starts: a
/// replica (the standby once the Lease expires, or the crashed one restarted under the same
/// identity, whichever comes first) removes the condemned peers while their preStop still waits.
/// (On a cluster of `E2E_KUBECONFIG`, the pod is force-deleted instead.)
#[test]
fn a_scale_down_finishes_safely_when_the_leading_operator_crashes() {
    let kube = Kube::start().unwrap();
    let values = ["peers.terminationGracePeriodSeconds=60", "peers.podManagementPolicy=Parallel"];
    let release = install(&kube, "failover", &values);
    let pods = pods(3);
    let pods = names(&pods);
    wait_joined(&release, &pods, 3);
    let leader = leading_operator(&release.kubectl, &release.namespace);

    let writer = Writer::start(&release, &pods[..1]).unwrap();
    match kube.kubelet() {
        Some(kubelet) => kubelet.crash(&release.namespace, &leader, "operator").unwrap(),
        None => {
            let namespace = release.namespace.as_str();
            drop(release.kubectl.run(&["delete", "pod", &leader, "-n", namespace, "--grace-period=0", "--force"]))
        }
    }
    release.scale(1).unwrap();
    wait_joined(&release, &pods[..1], 1);
    assert_writes_went_on("operator crashed during scale 3 -> 1", writer.finish());
    assert_removed_by_the_operator(&release, &pods[1..]);
}

/// With no operator running at all, a scale-down leaves the condemned pods waiting in preStop;
/// once the operator is started, it removes them (those still waiting, or, when their grace
/// period ran out first, the dead peers while the quorum holds).
#[test]
fn a_scale_down_while_the_operator_is_down_finishes_once_it_starts() {
    let kube = Kube::start().unwrap();
    let values = ["peers.terminationGracePeriodSeconds=60", "peers.podManagementPolicy=Parallel"];
    let release = install(&kube, "no-operator", &values);
    let pods = pods(3);
    let pods = names(&pods);
    wait_joined(&release, &pods, 3);
    let namespace = release.namespace.as_str();
    let kubectl = &release.kubectl;
    kubectl.run(&["scale", "deployment", OPERATOR, "-n", namespace, "--replicas=0"]).unwrap();
    let selector = "app.kubernetes.io/component=operator";
    wait_until("the operator pods gone", || match super::pod_names(kubectl, namespace, selector)? {
        names if names.is_empty() => Ok(()),
        names => Err(format!("{names:?}")),
    });

    let writer = Writer::start(&release, &pods[..1]).unwrap();
    release.scale(1).unwrap();
    // Nobody decides: the condemned pods are still there, waiting.
    let peers = release.cluster_peers().unwrap();
    assert_eq!(peers.len(), 3, "{:?}", peer_ids(&peers));
    kubectl.run(&["scale", "deployment", OPERATOR, "-n", namespace, "--replicas=1"]).unwrap();
    wait_joined(&release, &pods[..1], 1);
    wait_pods_and_claims_gone(&release, &pods[1..]);
    assert_writes_went_on("scale 3 -> 1 with the operator started late", writer.finish());
    assert_removed_by_the_operator(&release, &pods[1..]);
}

/// Scale 3 -> 5 and at once back to 3, before the new pods have joined (or even started): the
/// cluster ends with the three first peers, unchanged, and nothing of the two others is left.
#[test]
fn a_scale_down_right_after_a_scale_up_leaves_the_first_peers() {
    let kube = Kube::start().unwrap();
    let values = ["peers.terminationGracePeriodSeconds=30", "peers.podManagementPolicy=Parallel"];
    let release = install(&kube, "up-down", &values);
    let all = pods(5);
    let all = names(&all);
    let before = peer_ids(&wait_joined(&release, &all[..3], 3));

    let writer = Writer::start(&release, &all[..1]).unwrap();
    release.scale(5).unwrap();
    // Until the new pods exist (whatever else they have done).
    wait_until("the new pods created", || {
        match super::pod_names(&release.kubectl, &release.namespace, "app.kubernetes.io/component=peer")? {
            names if names.len() == 5 => Ok(()),
            names => Err(format!("{names:?}")),
        }
    });
    release.scale(3).unwrap();
    let after = peer_ids(&wait_joined(&release, &all[..3], 3));
    wait_pods_and_claims_gone(&release, &all[3..]);
    assert_eq!(after, before, "the first three peers stay");
    assert_writes_went_on("scale 3 -> 5 -> 3", writer.finish());
    // Every peer left is one of the three (no half-joined member stays in consensus).
    let members = consensus_members(&release, all[0]);
    assert_eq!(members.len(), 3, "{members:?}");
}

/// A pod restarting (deleted, being recreated) as a scale-down condemns others: the restarting
/// peer comes back as itself and the condemned ones are removed.
#[test]
fn a_scale_down_while_a_pod_restarts_keeps_the_restarting_peer() {
    let kube = Kube::start().unwrap();
    let values = ["peers.terminationGracePeriodSeconds=60", "peers.podManagementPolicy=Parallel"];
    let release = install(&kube, "restarting", &values);
    let all = pods(5);
    let all = names(&all);
    wait_joined(&release, &all[..3], 3);
    release.scale(5).unwrap();
    let before = peer_ids(&wait_joined(&release, &all, 5));

    let writer = Writer::start(&release, &all[..1]).unwrap();
    let namespace = release.namespace.as_str();
    release.kubectl.run(&["delete", "pod", all[1], "-n", namespace, "--wait=false"]).unwrap();
    release.scale(2).unwrap();
    let after = peer_ids(&wait_joined(&release, &all[..2], 1));
    wait_pods_and_claims_gone(&release, &all[2..]);
    assert_eq!(after, before[..2], "the restarted peer is the same");
    assert_writes_went_on("scale 5 -> 2 while a pod restarts", writer.finish());
    assert_removed_by_the_operator(&release, &all[2..]);
}

/// The Raft leader is among the condemned (moved there first by freezing `ipfs-cluster-0`'s
/// sidecar while it leads): it is removed while alive and a staying peer takes over.
#[test]
fn a_scale_down_condemning_the_leader_moves_leadership_to_a_staying_peer() {
    let Some(kube) = super::stand_in() else { return };
    let values = ["peers.terminationGracePeriodSeconds=60", "peers.podManagementPolicy=Parallel"];
    let release = install(&kube, "leader", &values);
    let pods = pods(3);
    let pods = names(&pods);
    let peers = peer_ids(&wait_joined(&release, &pods, 3));
    let id_of = |pod: &str| peers.iter().find(|(p, _)| p == pod).unwrap().1.clone();
    // A restarted leader would lead again (its committed vote stands); a frozen one loses the
    // next election, and steps down when it resumes.
    if leader_seen_by(&release, pods[1]).unwrap() == id_of(pods[0]) {
        let kubelet = kube.kubelet().unwrap();
        kubelet.freeze(&release.namespace, pods[0], "cluster", true).unwrap();
        let elected = wait_until("another leader", || match leader_seen_by(&release, pods[1])? {
            leader if leader != id_of(pods[0]) => Ok(leader),
            leader => Err(leader),
        });
        kubelet.freeze(&release.namespace, pods[0], "cluster", false).unwrap();
        wait_until("ipfs-cluster-0 following", || match leader_seen_by(&release, pods[0])? {
            leader if leader == elected => Ok(()),
            leader => Err(leader),
        });
    }

    let writer = Writer::start(&release, &pods[..1]).unwrap();
    release.scale(1).unwrap();
    wait_joined(&release, &pods[..1], 1);
    wait_pods_and_claims_gone(&release, &pods[1..]);
    assert_writes_went_on("scale 3 -> 1 with the leader condemned", writer.finish());
    assert_eq!(leader_seen_by(&release, pods[0]).unwrap(), id_of(pods[0]));
    assert_removed_by_the_operator(&release, &pods[1..]);
}

/// 7 replicas with at most 5 voters: 2 learners; when a voter leaves, a learner is promoted, and
/// scaling down to 5 ends with 5 voters.
#[test]
fn seven_replicas_make_five_voters_and_two_learners_promoted_when_voters_leave() {
    let kube = Kube::start().unwrap();
    let values = [
        "peers.terminationGracePeriodSeconds=30",
        "peers.podManagementPolicy=Parallel",
        "peers.replicas=7",
        "peers.maxVoters=5",
    ];
    let release = install(&kube, "learners", &values);
    let all = pods(7);
    let all = names(&all);
    let pods_in = |peers: &[Value], role: &str| -> Vec<String> {
        let joined = |p: &&Value| p["status"]["phase"] == "Joined" && p["status"]["role"] == role;
        peers.iter().filter(joined).map(|p| p["spec"]["pod"].as_str().unwrap_or("-").to_string()).collect()
    };
    let five_and_two = |what: &str, also: &dyn Fn(&[String]) -> bool| {
        wait_until(what, || {
            let peers = release.cluster_peers().map_err(|e| e.to_string())?;
            let (voters, learners) = (pods_in(&peers, "Voter"), pods_in(&peers, "Learner"));
            if voters.len() == 5 && learners.len() == 2 && also(&voters) {
                Ok((voters, learners))
            } else {
                Err(format!("voters {voters:?}, learners {learners:?}"))
            }
        })
    };
    let (voters, learners) = five_and_two("7 joined peers, 5 voters and 2 learners", &|_| true);

    // A voter leaves (its ClusterPeer deleted by hand): a learner is promoted in its place; the
    // pod comes back as a new node.
    let leaving = voters[0].clone();
    release.kubectl.run(&["delete", "clusterpeer", &leaving, "-n", &release.namespace]).unwrap();
    five_and_two("a learner promoted", &|voters: &[String]| learners.iter().any(|l| voters.contains(l)));

    // Scale 7 -> 5: whichever roles the condemned had, the five staying peers end as voters.
    let writer = Writer::start(&release, &all[..1]).unwrap();
    release.scale(5).unwrap();
    wait_joined(&release, &all[..5], 5);
    wait_pods_and_claims_gone(&release, &all[5..]);
    assert_writes_went_on("scale 7 -> 5 (max 5 voters)", writer.finish());
    assert_eq!(consensus_members(&release, all[0]).len(), 5);
}
