//! The release's life: `helm upgrade` rolls the peers without losing one or the secret, and the
//! uninstall order of the chart's README leaves nothing behind.

use e2e::k8s::{Kube, Release, Writer};

use super::membership::{assert_writes_went_on, events, install, names, peer_ids, pods, wait_joined};
use super::wait_until;

/// The cluster secret's data, base64 as stored.
fn cluster_secret(release: &Release) -> String {
    let path = "jsonpath={.data}";
    let secrets = release.kubectl.run(&["get", "secrets", "-n", &release.namespace, "-o", "name"]).unwrap();
    let name = secrets.lines().find(|s| s.ends_with("-cluster-secret")).unwrap_or_else(|| panic!("{secrets}"));
    release.kubectl.run(&["get", name, "-n", &release.namespace, "-o", path]).unwrap()
}

/// `helm upgrade` with a changed pod value rolls every peer pod (a restart each, from the highest
/// ordinal): the same peers after, no removal, writes going on, and the generated secrets kept.
/// Then the chart README's uninstall order: scale to 0, the ClusterPeers go, `helm uninstall`,
/// the claims deleted; nothing of the release is left.
#[test]
fn helm_upgrade_keeps_peers_and_secret_and_uninstall_leaves_nothing() {
    let kube = Kube::start().unwrap();
    let release = install(&kube, "upgrade", &["peers.terminationGracePeriodSeconds=30"]);
    let pods = pods(3);
    let pods = names(&pods);
    let before = peer_ids(&wait_joined(&release, &pods, 3));
    let secret = cluster_secret(&release);
    let revision = |release: &Release| {
        let path = "jsonpath={.status.updateRevision}";
        release.kubectl.run(&["get", "statefulset", "ipfs-cluster", "-n", &release.namespace, "-o", path]).unwrap()
    };
    let first_revision = revision(&release);

    let writer = Writer::start(&release, &pods).unwrap();
    release.helm("upgrade", &["peers.terminationGracePeriodSeconds=40"]).unwrap();
    wait_until("every peer pod rolled to the new revision", || {
        let path = "jsonpath={.status.updatedReplicas} {.status.readyReplicas} {.status.currentRevision}";
        let namespace = release.namespace.as_str();
        let seen = release.kubectl.run(&["get", "statefulset", "ipfs-cluster", "-n", namespace, "-o", path]);
        let seen = seen.map_err(|e| e.to_string())?;
        let new = revision(&release);
        if new != first_revision && seen == format!("3 3 {new}") {
            Ok(())
        } else {
            Err(seen)
        }
    });
    let after = peer_ids(&wait_joined(&release, &pods, 3));
    assert_writes_went_on("helm upgrade rolling the peers", writer.finish());
    assert_eq!(after, before, "the same peers after the upgrade");
    assert!(!events(&release, "Removed").contains("ipfs-cluster"), "no peer was removed");
    assert_eq!(cluster_secret(&release), secret, "the cluster secret is kept");

    // The chart README's order.
    let namespace = release.namespace.as_str();
    release.scale(0).unwrap();
    wait_until("the ClusterPeers gone", || match release.cluster_peers().map_err(|e| e.to_string())? {
        peers if peers.is_empty() => Ok(()),
        peers => Err(format!("{:?}", peer_ids(&peers))),
    });
    let kubeconfig = kube.kubeconfig().to_str().unwrap();
    e2e::helm::Helm::installed()
        .unwrap()
        .run(&["uninstall", "ipfs-cluster", "--namespace", namespace, "--kubeconfig", kubeconfig, "--wait"])
        .unwrap();
    let selector = "app.kubernetes.io/instance=ipfs-cluster,app.kubernetes.io/component=peer";
    release.kubectl.run(&["delete", "pvc", "-n", namespace, "-l", selector]).unwrap();
    wait_until("nothing of the release left", || {
        let kinds = "all,pvc,secrets,configmaps,serviceaccounts,roles,rolebindings,leases,\
                     poddisruptionbudgets,networkpolicies,clusterpeers";
        let left = release.kubectl.run(&["get", kinds, "-n", namespace, "-o", "name"]).map_err(|e| e.to_string())?;
        // What every namespace has.
        let left: Vec<&str> = left
            .lines()
            .filter(|l| {
                !matches!(
                    *l,
                    "serviceaccount/default" | "configmap/kube-root-ca.crt" | "configmap/openshift-service-ca.crt"
                )
            })
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
}

/// Every peer pod deleted at once (a whole-cluster restart), under `Parallel`: they all come back
/// on new IPs, where the membership knows only their old ones; the operator tells each sidecar
/// where the others are now, they elect a leader and come back as the same peers, taking writes.
#[test]
fn every_pod_restarted_at_once_comes_back_as_the_same_cluster() {
    restart_every_pod_at_once("all-at-once", "Parallel");
}

/// The same under `OrderedReady`: the StatefulSet recreates one pod at a time and waits for each
/// to be Ready, which a peer is only with a leader; pod 0 alone is no quorum. The operator vouches
/// for each member whose missing siblings the quorum needs, so the StatefulSet goes on.
#[test]
fn every_pod_restarted_at_once_comes_back_in_order() {
    restart_every_pod_at_once("all-in-order", "OrderedReady");
}

fn restart_every_pod_at_once(namespace: &str, policy: &str) {
    let kube = Kube::start().unwrap();
    let policy = format!("peers.podManagementPolicy={policy}");
    let values = ["peers.terminationGracePeriodSeconds=30", policy.as_str()];
    let release = install(&kube, namespace, &values);
    let pods = pods(3);
    let pods = names(&pods);
    let before = peer_ids(&wait_joined(&release, &pods, 3));
    // One field of every peer pod, space-separated.
    let peer_pods = |field: &str| {
        let path = format!("jsonpath={{.items[*].{field}}}");
        let selector = "app.kubernetes.io/component=peer";
        release.kubectl.run(&["get", "pods", "-n", &release.namespace, "-l", selector, "-o", &path]).unwrap()
    };
    let ips = || peer_pods("status.podIP");
    let uids = || peer_pods("metadata.uid");
    let old_ips = ips();
    let old_uids = uids();
    // By name and without kubectl's own wait: twice in full runs of the suite, `kubectl delete pods
    // -l ...` hung without deleting anything (`-v=6` shows where, should it happen again).
    let mut delete = vec!["delete", "pods", "-n", &release.namespace, "--wait=false", "-v=6"];
    delete.extend(pods.iter().copied());
    release.kubectl.run(&delete).unwrap();
    wait_until("every peer pod replaced", || {
        let now = uids();
        let replaced = now.split_whitespace().filter(|uid| !old_uids.contains(uid)).count();
        if replaced == pods.len() {
            Ok(())
        } else {
            Err(format!("{replaced} of {} replaced", pods.len()))
        }
    });
    let after = peer_ids(&wait_joined(&release, &pods, 3));
    assert_eq!(after, before, "the same peers");
    if policy.ends_with("OrderedReady") {
        let vouched = events(&release, "Vouched");
        assert!(vouched.contains("ipfs-cluster-0"), "pod 0 came back alone and was vouched for: {vouched}");
    }
    let new_ips = ips();
    assert!(old_ips.split_whitespace().all(|ip| !new_ips.contains(ip)), "{old_ips} -> {new_ips}");
    let writer = Writer::start(&release, &pods).unwrap();
    wait_until("a write acknowledged", || match writer.acknowledged() {
        0 => Err("none yet".into()),
        n => Ok(n),
    });
    assert_writes_went_on("after a whole-cluster restart", writer.finish());
}
