//! Clusters form, pins land on as many daemons as asked, content moves between daemons.

use e2e::cluster::{Daemons, TestCluster};
use e2e::common::*;
use reqwest::Method;
use serde_json::Value;

/// Fast metrics, so allocation and liveness settle within seconds.
const FAST: &[&str] = &["--monitor-ping-interval", "1s"];

/// The peers whose entry in a cluster-wide `GlobalPinInfo` has `status`, sorted.
fn peers_with(info: &Value, status: &str) -> Vec<String> {
    let mut peers: Vec<String> = info["peer_map"]
        .as_object()
        .map(|map| map.iter().filter(|(_, v)| v["status"] == status).map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    peers.sort();
    peers
}

fn allocations(pin: &Value) -> Vec<String> {
    let mut peers: Vec<String> =
        pin["allocations"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    peers.sort();
    peers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_replicate_a_pin_on_exactly_two_daemons() {
    let cluster = TestCluster::start(3, Daemons::Own, FAST).await;
    cluster.wait_voters(&[0, 1, 2], 3, 0).await;
    let [a, b, c] = [&cluster.members[0], &cluster.members[1], &cluster.members[2]];

    // Content only daemon A has; the pin goes through peer B (a follower or the leader alike).
    let cid = add_unpinned(a.daemon(), "replicated").await;
    let pin = b.peer.pin(&cid, &[("replication", "2")]).await;
    let allocated = allocations(&pin);
    assert_eq!(allocated.len(), 2, "{pin}");

    // Every peer reports the same cluster-wide view: pinned on the two allocated, remote on the third.
    let info = wait_for("the pin to be pinned on its two allocations", WAIT, || async {
        let info = c.peer.status(&cid).await;
        if peers_with(&info, "pinned") == allocated && peers_with(&info, "remote").len() == 1 {
            Ok(info)
        } else {
            Err(info.to_string())
        }
    })
    .await;
    assert_eq!(info["peer_map"].as_object().unwrap().len(), 3, "{info}");

    // The daemons' own pin sets agree: exactly the two allocated hold it (fetched by bitswap).
    for member in &cluster.members {
        let expected = allocated.contains(&member.peer_id);
        wait_daemon_pin(member.daemon(), &cid, expected).await;
    }

    // The listing of every pin carries every peer's status too.
    let response = a.peer.request(Method::GET, "/pins").send().await.unwrap();
    let text = response.text().await.unwrap();
    let listed: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len(), 1, "{text}");
    assert_eq!(peers_with(&listed[0], "pinned"), allocated, "{text}");

    // Unpin through the third peer: every daemon lets go.
    let (status, body) = c.peer.unpin(&cid).await;
    assert_eq!(status, 200, "{body}");
    for member in &cluster.members {
        wait_daemon_pin(member.daemon(), &cid, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_peers_form_and_list_each_other() {
    let cluster = TestCluster::start(5, Daemons::Shared, FAST).await;
    // Five voters at most: all five vote.
    cluster.wait_voters(&[0, 1, 2, 3, 4], 5, 0).await;

    let response = cluster.members[2].peer.request(Method::GET, "/peers").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    let ids: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut listed: Vec<String> = ids.iter().map(|id| id["id"].as_str().unwrap().to_string()).collect();
    listed.sort();
    let mut expected: Vec<String> = cluster.members.iter().map(|m| m.peer_id.clone()).collect();
    expected.sort();
    assert_eq!(listed, expected, "{text}");
    for id in &ids {
        assert_eq!(id["error"], "", "{id}");
        assert_eq!(id["cluster_peers"].as_array().unwrap().len(), 5, "{id}");
    }
}

/// A peer joining after the log it needs was purged catches up from a snapshot: it holds every
/// pin, including those only the snapshot carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_peer_catches_up_from_a_snapshot() {
    // A snapshot every 4 entries, so that a few pins (one entry each, written one at a time)
    // purge the log.
    let args = [FAST, &["--snapshot-every", "4"]].concat();
    let mut cluster = TestCluster::start(1, Daemons::Shared, &args).await;
    let first = &cluster.members[0];
    let mut cids = Vec::new();
    for n in 0..20 {
        let data = unique_bytes(&format!("snapshot {n}"));
        block_put(shared_daemon(), &data).await;
        let cid = raw_cid(&data);
        first.peer.pin(&cid, &[]).await;
        cids.push(cid);
    }
    wait_for("the log to be purged behind a snapshot", WAIT, || async {
        let consensus = first.consensus().await;
        match consensus["purged_index"].as_u64() {
            Some(purged) if purged >= 10 => Ok(()),
            _ => Err(consensus.to_string()),
        }
    })
    .await;

    let bootstrap = first.cluster_address();
    let joiner = cluster.spawn_member(&["--bootstrap", &bootstrap]).await;
    cluster.members.push(joiner);
    cluster.wait_converged(&[0, 1]).await;
    let joiner = &cluster.members[1];
    let mut expected: Vec<String> = cids.iter().map(|c| key_text(c)).collect();
    expected.sort();
    wait_for("the joiner to hold every pin", WAIT, || async {
        let mut held: Vec<String> =
            joiner.peer.allocations().await.iter().map(|p| key_text(p["cid"].as_str().unwrap())).collect();
        held.sort();
        if held == expected {
            Ok(())
        } else {
            Err(format!("{} of {} pins", held.len(), expected.len()))
        }
    })
    .await;
    assert!(joiner.peer.log_tail().contains("installed a snapshot"), "{}", joiner.peer.log_tail());
}

/// A CID as comparable text (CIDs may come back in another version or base).
fn key_text(cid: &str) -> String {
    format!("{:?}", key(cid))
}
