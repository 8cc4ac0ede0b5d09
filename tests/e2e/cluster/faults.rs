//! Faults: a leader killed mid-write, a leader frozen and woken, a whole cluster restarted, a peer
//! gone past the grace period, a wrong secret.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::cluster::{member_ids, Daemons, Member, TestCluster};
use e2e::common::*;
use e2e::peer::{unique_loopback, PeerOptions, PeerProcess};
use reqwest::Method;
use serde_json::{json, Value};

/// How long writes may stay unacknowledged after the leader dies: the followers elect a new one
/// within seconds (1.3-2.2 s without a heartbeat), and a write is answered within 10 s; generous
/// for a loaded machine.
const FAILOVER_BOUND: Duration = Duration::from_secs(30);

/// Pins acknowledged before the leader is killed, and again after writes resume.
const PINS_PER_PHASE: usize = 50;

/// A cluster secret other than the test peers' `TEST_SECRET`.
const OTHER_SECRET: &str = "0bad5ec7e70000000000000000000000000000000000000000000000000000ff";

/// Puts fresh content into the shared daemon and returns its CID, so that a pin of it completes
/// at once whichever peer (all beside that daemon) it is allocated to.
async fn fresh_content(label: &str) -> String {
    let data = unique_bytes(label);
    block_put(shared_daemon(), &data).await;
    raw_cid(&data)
}

/// The indexes of the members other than `index`.
fn others(cluster: &TestCluster, index: usize) -> Vec<usize> {
    (0..cluster.members.len()).filter(|&i| i != index).collect()
}

/// The CIDs of a peer's `GET /allocations`, in the order listed (duplicates kept, to be caught).
async fn listed_cids(member: &Member) -> Vec<String> {
    member.peer.allocations().await.iter().map(|pin| pin["cid"].as_str().expect("a CID").to_string()).collect()
}

/// The CIDs listed more than once.
fn duplicates(cids: &[String]) -> Vec<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for cid in cids {
        *counts.entry(cid).or_default() += 1;
    }
    counts.into_iter().filter(|(_, n)| *n > 1).map(|(cid, _)| cid.to_string()).collect()
}

/// Waits until the member's pinset holds every one of `expected`, then checks each CID is listed
/// once; returns the pinset.
async fn wait_pinset_holds(member: &Member, expected: &BTreeSet<String>) -> BTreeSet<String> {
    let what = format!("the pinset of {} to hold all {} expected pins", member.peer_id, expected.len());
    let listed = wait_for(&what, WAIT, || async {
        let listed = listed_cids(member).await;
        let missing: Vec<&String> = expected.iter().filter(|cid| !listed.contains(cid)).collect();
        match missing.is_empty() {
            true => Ok(listed),
            false => Err(format!("{} listed, {} missing, e.g. {:?}", listed.len(), missing.len(), missing.first())),
        }
    })
    .await;
    assert_eq!(duplicates(&listed), Vec::<String>::new(), "pins listed twice by {}", member.peer_id);
    listed.into_iter().collect()
}

/// The `(peer_id, node_id)` of every member a peer's `GET /consensus` lists, sorted.
fn members_with_node_ids(consensus: &Value) -> Vec<(String, u64)> {
    let mut members: Vec<(String, u64)> = consensus["members"]
        .as_array()
        .map(|members| {
            let pair = |m: &Value| Some((m["peer_id"].as_str()?.to_string(), m["node_id"].as_u64()?));
            members.iter().filter_map(pair).collect()
        })
        .unwrap_or_default();
    members.sort();
    members
}

/// The peer IDs of a `Pin`'s or `GlobalPinInfo`'s allocations, sorted.
fn allocations(pin: &Value) -> Vec<String> {
    let mut peers: Vec<String> = pin["allocations"]
        .as_array()
        .map(|peers| peers.iter().filter_map(|p| p.as_str().map(String::from)).collect())
        .unwrap_or_default();
    peers.sort();
    peers
}

/// What the writing clients saw, shared with the test while they run.
#[derive(Default)]
struct Journal {
    /// Each pin acknowledged with 200: its CID, when its request was sent and when it was answered.
    acked: Vec<(String, Instant, Instant)>,
    /// Every other outcome (an error status with its body, or a failed request).
    errors: Vec<String>,
}

impl Journal {
    /// When the first pin sent at or after `instant` was acknowledged.
    fn first_ack_sent_after(&self, instant: Instant) -> Option<Instant> {
        self.acked.iter().filter(|(_, sent, _)| *sent >= instant).map(|(_, _, acked)| *acked).min()
    }

    /// When the first pin still unanswered at `instant` was acknowledged (a write in flight then).
    fn first_ack_after(&self, instant: Instant) -> Option<Instant> {
        self.acked.iter().map(|(_, _, acked)| *acked).filter(|acked| *acked >= instant).min()
    }
}

/// Pins fresh content through the API at `api` one pin at a time until `stop` is set, journaling
/// every outcome. The client waits longer than a write may (30 s), so that each write ends with
/// an answer rather than a timeout of ours.
async fn stream_pins(api: String, label: String, stop: Arc<AtomicBool>, journal: Arc<Mutex<Journal>>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    while !stop.load(Ordering::Relaxed) {
        let cid = fresh_content(&label).await;
        let sent = Instant::now();
        let outcome = http.post(format!("{api}/pins/{cid}")).query(&[("replication", "1")]).send().await;
        let failure = match outcome {
            Ok(response) if response.status().as_u16() == 200 => {
                journal.lock().unwrap().acked.push((cid, sent, Instant::now()));
                continue;
            }
            Ok(response) => format!("{}: {}", response.status(), response.text().await.unwrap_or_default()),
            Err(e) => format!("request failed: {e}"),
        };
        journal.lock().unwrap().errors.push(format!("{label} {cid}: {failure}"));
        // Pacing only: an error may come back at once while no leader is known.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the clients have `n` pins acknowledged in all.
async fn wait_acked(journal: &Mutex<Journal>, n: usize, what: &str) {
    wait_for(what, WAIT, || async {
        let acked = journal.lock().unwrap().acked.len();
        if acked >= n {
            Ok(())
        } else {
            Err(format!("{acked} of {n} acknowledged"))
        }
    })
    .await
}

/// A peer started with `OTHER_SECRET` beside the shared daemon, and its data directory.
async fn start_stranger(args: &[&str]) -> (PeerProcess, tempfile::TempDir) {
    let dir = tempfile::Builder::new().prefix("e2e-stranger-").tempdir().unwrap();
    let options = PeerOptions {
        data_dir: dir.path().join("data"),
        host: unique_loopback(),
        ipfs_api: shared_daemon().api_multiaddr().to_string(),
        secret: Some(OTHER_SECRET.to_string()),
        args: args.iter().map(|a| a.to_string()).collect(),
    };
    (PeerProcess::start(options).await.expect("the stranger starts"), dir)
}

/// The end of a log, for failure messages.
fn tail(log: &str) -> &str {
    let cut = log.len().saturating_sub(3000);
    &log[(cut..log.len()).find(|&i| log.is_char_boundary(i)).unwrap_or(log.len())..]
}

/// `GET {path}` on a process without a `TestPeer`: status and body text.
async fn get_text(process: &PeerProcess, path: &str) -> (u16, String) {
    let url = format!("{}{path}", process.api_url());
    let response = http_client().get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_stream_loses_no_acknowledged_pin() {
    let mut cluster = TestCluster::start(3, Daemons::Shared, &[]).await;
    let leader = cluster.leader_seen_by(0).await;

    // One client per follower, each writing sequentially.
    let stop = Arc::new(AtomicBool::new(false));
    let journal = Arc::new(Mutex::new(Journal::default()));
    let clients: Vec<_> = others(&cluster, leader)
        .into_iter()
        .map(|i| {
            let (api, label) = (cluster.members[i].peer.url(""), format!("through peer {i}"));
            tokio::spawn(stream_pins(api, label, stop.clone(), journal.clone()))
        })
        .collect();
    wait_acked(&journal, PINS_PER_PHASE, "pins acknowledged before the kill").await;

    cluster.members[leader].peer.process.kill9().unwrap();
    let killed_at = Instant::now();
    let acked_at_kill = journal.lock().unwrap().acked.len();
    let resumed = wait_for("a pin sent after the kill to be acknowledged", FAILOVER_BOUND, || async {
        let journal = journal.lock().unwrap();
        journal.first_ack_sent_after(killed_at).ok_or_else(|| format!("{} acked", journal.acked.len()))
    })
    .await;
    let in_flight = journal.lock().unwrap().first_ack_after(killed_at).expect("an acknowledgement after the kill");
    println!(
        "failover: after the leader's kill, the first acknowledgement came {:?} later, that of the first pin sent \
         after the kill {:?} later",
        in_flight - killed_at,
        resumed - killed_at
    );
    wait_acked(&journal, acked_at_kill + PINS_PER_PHASE, "pins acknowledged after the kill").await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a client task");
    }

    let journal = std::mem::take(&mut *journal.lock().unwrap());
    println!(
        "{} pins acknowledged ({acked_at_kill} before the kill), {} not: {:#?}",
        journal.acked.len(),
        journal.errors.len(),
        journal.errors.iter().take(10).collect::<Vec<_>>()
    );
    let expected: BTreeSet<String> = journal.acked.iter().map(|(cid, _, _)| cid.clone()).collect();
    assert_eq!(expected.len(), journal.acked.len(), "every pin written is fresh content");

    // The killed leader comes back on its data; every replica holds every acknowledged pin, once.
    cluster.members[leader].peer.process.restart().await.expect("the killed leader restarts");
    cluster.wait_converged(&[0, 1, 2]).await;
    for member in &cluster.members {
        wait_pinset_holds(member, &expected).await;
    }
    // Pins whose write failed may have been committed all the same, but then on every replica.
    wait_for("every replica to list the same pinset", WAIT, || async {
        let mut pinsets = Vec::new();
        for member in &cluster.members {
            pinsets.push(listed_cids(member).await.into_iter().collect::<BTreeSet<_>>());
        }
        match pinsets.iter().all(|pinset| pinset == &pinsets[0]) {
            true => Ok(()),
            false => Err(format!("{:?} pins listed", pinsets.iter().map(BTreeSet::len).collect::<Vec<_>>())),
        }
    })
    .await;
}

/// A leader frozen (SIGSTOP) is, to the others, a leader cut off: they elect another and carry on.
/// Woken, it still believes it leads and holds writes it took meanwhile: it must step down, answer
/// them, and take writes again at once, without a minute-long stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_wakes_up_as_a_follower_and_takes_writes_again() {
    let mut cluster = TestCluster::start(3, Daemons::Shared, &[]).await;
    let leader = cluster.leader_seen_by(0).await;
    let majority = others(&cluster, leader);
    let stop = Arc::new(AtomicBool::new(false));
    let journal = Arc::new(Mutex::new(Journal::default()));
    let through_old = Arc::new(Mutex::new(Journal::default()));
    let mut clients: Vec<_> = majority
        .iter()
        .map(|&i| {
            let (api, label) = (cluster.members[i].peer.url(""), format!("through peer {i}"));
            tokio::spawn(stream_pins(api, label, stop.clone(), journal.clone()))
        })
        .collect();
    wait_acked(&journal, 10, "pins acknowledged before the freeze").await;

    cluster.members[leader].peer.process.freeze(true);
    let frozen_at = Instant::now();
    // A client of the frozen leader, whose first write waits for it to wake.
    let (api, label) = (cluster.members[leader].peer.url(""), "through the frozen leader".to_string());
    clients.push(tokio::spawn(stream_pins(api, label, stop.clone(), through_old.clone())));
    wait_for("a pin sent after the freeze to be acknowledged", FAILOVER_BOUND, || async {
        let journal = journal.lock().unwrap();
        journal.first_ack_sent_after(frozen_at).ok_or_else(|| format!("{:?}", journal.errors.last()))
    })
    .await;
    let acked = journal.lock().unwrap().acked.len();
    wait_acked(&journal, acked + 10, "more pins under the new leader").await;

    cluster.members[leader].peer.process.freeze(false);
    let woken_at = Instant::now();
    let resumed = wait_for("a pin sent through the woken peer to be acknowledged", FAILOVER_BOUND, || async {
        let journal = through_old.lock().unwrap();
        journal.first_ack_sent_after(woken_at).ok_or_else(|| format!("{:?}", journal.errors.last()))
    })
    .await;
    println!("a write through the woken leader was acknowledged {:?} after it woke", resumed - woken_at);
    let consensus = cluster.members[leader].consensus().await;
    assert_eq!(consensus["role"], "follower", "{consensus}");
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a client task");
    }
    let mut expected: BTreeSet<String> = journal.lock().unwrap().acked.iter().map(|(cid, _, _)| cid.clone()).collect();
    expected.extend(through_old.lock().unwrap().acked.iter().map(|(cid, _, _)| cid.clone()));
    cluster.wait_converged(&[0, 1, 2]).await;
    for member in &cluster.members {
        wait_pinset_holds(member, &expected).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_peer_keeps_pinset_and_membership() {
    let mut cluster = TestCluster::start(3, Daemons::Shared, &[]).await;
    let mut pinned = BTreeSet::new();
    for n in 0..20 {
        let cid = fresh_content("kept across restarts").await;
        cluster.members[n % 3].peer.pin(&cid, &[("replication", "1")]).await;
        pinned.insert(cid);
    }
    let mut before = Vec::new();
    for member in &cluster.members {
        assert_eq!(wait_pinset_holds(member, &pinned).await, pinned, "no other pin in {}", member.peer_id);
        before.push(members_with_node_ids(&member.consensus().await));
    }
    assert!(before.iter().all(|members| members == &before[0] && members.len() == 3), "{before:?}");

    // Stopped as Kubernetes stops pods (the last one without a quorum), then all started again.
    for member in cluster.members.iter_mut().rev() {
        member.peer.stop().await;
    }
    for member in &mut cluster.members {
        member.peer.process.restart().await.expect("the peer restarts");
    }
    cluster.wait_converged(&[0, 1, 2]).await;
    for member in &cluster.members {
        assert_eq!(members_with_node_ids(&member.consensus().await), before[0], "members of {}", member.peer_id);
        assert_eq!(wait_pinset_holds(member, &pinned).await, pinned, "pinset of {}", member.peer_id);
    }

    // The restarted cluster takes writes.
    let cid = fresh_content("after the restart").await;
    cluster.members[1].peer.pin(&cid, &[("replication", "1")]).await;
    pinned.insert(cid);
    for member in &cluster.members {
        assert_eq!(wait_pinset_holds(member, &pinned).await, pinned, "pinset of {}", member.peer_id);
    }
}

/// A member back alone after every peer stopped (a whole-cluster restart, as an `OrderedReady`
/// StatefulSet brings pod 0 back first): Raft still names the leader of its last term, but none is
/// alive, so the member is not ready, until the operator vouches for it. Once the others are back
/// and a leader is elected, it is ready on its own account and the vouch is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_back_alone_is_unready_until_vouched_for() {
    let mut cluster = TestCluster::start(3, Daemons::Shared, &[]).await;
    for member in cluster.members.iter_mut().rev() {
        member.peer.stop().await;
    }
    cluster.members[0].peer.process.restart().await.expect("the first peer restarts");
    let (status, ready) = readiness(&cluster.members[0]).await;
    assert_eq!((status, &ready["consensus"]), (503, &json!(false)), "no leader is alive: {ready}");
    assert_eq!(cluster.members[0].consensus().await["leader"], Value::Null);

    let first = &cluster.members[0].peer;
    let (status, granted) =
        first.call(first.request(Method::PUT, "/consensus/vouch").json(&json!({"seconds": 60}))).await;
    assert_eq!(status, 200, "{granted}");
    assert!((55..=60).contains(&granted["seconds"].as_u64().unwrap()), "{granted}");
    let (status, ready) = readiness(&cluster.members[0]).await;
    assert_eq!((status, &ready["consensus"]), (200, &json!(false)), "ready as vouched: {ready}");
    assert!(ready["problems"][0].as_str().unwrap().contains("vouched"), "{ready}");
    assert!(cluster.members[0].consensus().await["vouched_seconds"].as_u64().unwrap() > 0);

    for member in &mut cluster.members[1..] {
        member.peer.process.restart().await.expect("the peer restarts");
    }
    cluster.wait_converged(&[0, 1, 2]).await;
    let first = &cluster.members[0];
    wait_for("the first peer ready on its own, its vouch over", WAIT, || async {
        let (status, ready) = readiness(first).await;
        let vouched = first.consensus().await["vouched_seconds"].clone();
        match (status, &ready["consensus"], vouched.as_u64()) {
            (200, Value::Bool(true), Some(0)) => Ok(()),
            _ => Err(format!("{status} {ready}, vouched {vouched}")),
        }
    })
    .await;
}

/// `GET /readyz`: status and body.
async fn readiness(member: &Member) -> (u16, Value) {
    member.peer.call(member.peer.request(Method::GET, "/readyz")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gone_past_the_grace_period_has_its_pins_moved() {
    let args = ["--monitor-ping-interval", "1s", "--repin-after", "3s"];
    let mut cluster = TestCluster::start(3, Daemons::Own, &args).await;
    let leader = cluster.leader_seen_by(0).await;
    let cid = add_unpinned(cluster.members[0].daemon(), "moved").await;
    let pin = cluster.members[leader].peer.pin(&cid, &[("replication", "2")]).await;
    let allocated = allocations(&pin);
    assert_eq!(allocated.len(), 2, "{pin}");
    for member in cluster.members.iter().filter(|m| allocated.contains(&m.peer_id)) {
        wait_daemon_pin(member.daemon(), &cid, true).await;
    }

    // With two of three allocated, at least one allocated peer is a follower: it goes away.
    let is_follower = |i: &usize| *i != leader && allocated.contains(&cluster.members[*i].peer_id);
    let gone = (0..3).find(is_follower).expect("an allocated follower");
    let third = (0..3).find(|i| !allocated.contains(&cluster.members[*i].peer_id)).expect("an unallocated peer");
    let (gone_id, third_id) = (cluster.members[gone].peer_id.clone(), cluster.members[third].peer_id.clone());
    cluster.members[gone].peer.process.kill9().unwrap();

    let what = format!("{cid} to move from {gone_id} to {third_id}");
    let info = wait_for(&what, WAIT, || async {
        let info = cluster.members[leader].peer.status(&cid).await;
        let now = allocations(&info);
        if now.len() == 2 && !now.contains(&gone_id) && now.contains(&third_id) {
            Ok(info)
        } else {
            Err(info.to_string())
        }
    })
    .await;
    assert_eq!(info["peer_map"][&gone_id]["status"], "cluster_error", "the gone peer is unreachable: {info}");
    wait_daemon_pin(cluster.members[third].daemon(), &cid, true).await;

    // Back again, the peer that lost the allocation lets go of the pin on its daemon.
    cluster.members[gone].peer.process.restart().await.expect("the gone peer restarts");
    cluster.wait_converged(&[0, 1, 2]).await;
    wait_daemon_pin(cluster.members[gone].daemon(), &cid, false).await;
    wait_daemon_pin(cluster.members[third].daemon(), &cid, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_can_neither_join_nor_read() {
    let cluster = TestCluster::start(3, Daemons::Shared, &[]).await;
    let cid = fresh_content("secret").await;
    cluster.members[0].peer.pin(&cid, &[("replication", "-1")]).await;
    let members = member_ids(&cluster.members[0].consensus().await);

    // It asks to join, is refused at the connection (each attempt may last until the dial times
    // out), and keeps asking; it is never let in.
    let (stranger, _dir) = start_stranger(&["--bootstrap", &cluster.members[0].cluster_address()]).await;
    let assert_stranger_outside = || async {
        let (status, consensus) = get_text(&stranger, "/consensus").await;
        let consensus: Value = serde_json::from_str(&consensus).unwrap_or(Value::Null);
        let role = &consensus["role"];
        assert_eq!(
            (status, role),
            (200, &json!("uninitialized")),
            "the stranger: {consensus}\n{}",
            tail(&stranger.log())
        );
        for member in &cluster.members {
            assert_eq!(member_ids(&member.consensus().await), members, "members seen by {}", member.peer_id);
        }
    };
    wait_for("a failed join attempt in the stranger's log", WAIT, || async {
        let log = stranger.log();
        match log.contains("not joined yet") {
            true => Ok(()),
            false => Err(format!("no failed attempt logged yet; log:\n{}", tail(&log))),
        }
    })
    .await;
    assert_stranger_outside().await;

    // A member asked to add it cannot reach it.
    let (status, id) = get_text(&stranger, "/id").await;
    assert_eq!(status, 200, "GET /id of the stranger: {id}");
    let stranger_id = serde_json::from_str::<Value>(&id).unwrap()["id"].as_str().expect("an id").to_string();
    let request = json!({"peer_id": stranger_id, "addresses": [stranger.cluster_multiaddr()]});
    let (status, body) =
        cluster.members[1].peer.call(cluster.members[1].peer.request(Method::POST, "/peers").json(&request)).await;
    assert!(status >= 500, "POST /peers naming the stranger: {status} {body}");
    assert_stranger_outside().await;

    // Nothing of the cluster's pinset reaches it.
    for path in ["/pins", "/allocations"] {
        let (status, body) = get_text(&stranger, path).await;
        assert!(!body.contains(&cid), "GET {path} of the stranger lists the cluster's pin: {status} {body}");
    }
}

/// A rolling restart on new addresses, as Kubernetes moves pods to new IPs: each peer stops, comes
/// back on another loopback address, and records it in the membership, so that the peers moving
/// after it (the last one knows only what the membership recorded) still reach it. Every peer
/// has moved at the end; the cluster is whole and takes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_restarted_one_by_one_on_new_addresses_stay_connected() {
    let mut cluster = TestCluster::start(3, Daemons::Shared, &[]).await;
    for i in (0..3).rev() {
        let member = &mut cluster.members[i];
        member.peer.stop().await;
        let moved = unique_loopback();
        member.peer.process.options.host = moved;
        member.peer.process.restart().await.expect("the peer restarts on its new address");
        cluster.wait_converged(&[0, 1, 2]).await;
        let recorded = |consensus: &Value| {
            consensus["members"].as_array().into_iter().flatten().any(|m| {
                m["addresses"].as_array().into_iter().flatten().next().and_then(|a| a.as_str())
                    == Some(&format!("/ip4/{moved}/tcp/{}", e2e::peer::CLUSTER_PORT))
            })
        };
        let observer = (i + 1) % 3;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !recorded(&cluster.members[observer].consensus().await) {
            assert!(Instant::now() < deadline, "peer {i}'s new address {moved} was not recorded");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let cid = fresh_content("after every peer moved").await;
    let pin = cluster.members[0].peer.pin(&cid, &[("replication", "1")]).await;
    assert!(pin.is_object(), "{pin}");
}
