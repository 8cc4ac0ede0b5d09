//! Membership: adding and removing peers, as the seed's peer tests do.
//!
//! `POST /peers` adds a peer waiting with `--no-init` (reached first, then added as a learner and
//! promoted per the voter plan); `DELETE /peers/{id}` removes a member, which then stops by itself,
//! moves its consensus data and pinset aside (into `removed-<time>/`) and leaves a marker. Every cluster here pins nothing of its own, so
//! all peers run beside the shared IPFS daemon.

use std::time::{Duration, Instant};

use e2e::cluster::{member_ids, Daemons, Member, TestCluster};
use e2e::common::*;
use reqwest::Method;
use serde_json::{json, Value};

/// Fast metrics, so liveness settles within seconds.
const FAST: &[&str] = &["--monitor-ping-interval", "1s"];

/// How long a removed peer may take to stop and clean up on a loaded machine.
const EXIT_WAIT: Duration = Duration::from_secs(60);

/// Starts a cluster of `size` peers and waits until the voter plan is carried out (at most five
/// voters, always an odd number): a peer that just joined is a learner until it is promoted, and a
/// membership change asked for meanwhile would race with that promotion.
async fn start_settled(size: usize) -> TestCluster {
    let cluster = TestCluster::start(size, Daemons::Shared, FAST).await;
    let voters = if size % 2 == 1 { size.min(5) } else { (size - 1).min(5) };
    cluster.wait_voters(&(0..size).collect::<Vec<_>>(), voters, size - voters).await;
    cluster
}

/// `POST /peers` on `member` with a raw body: status and JSON body.
async fn post_peers(member: &Member, body: String) -> (u16, Value) {
    let request = member.peer.request(Method::POST, "/peers").header("content-type", "application/json").body(body);
    member.peer.call(request).await
}

/// `POST /peers` on `member` asking it to add `peer_id`, reachable at `addresses`.
async fn post_peer(member: &Member, peer_id: &str, addresses: &[String]) -> (u16, Value) {
    post_peers(member, json!({ "peer_id": peer_id, "addresses": addresses }).to_string()).await
}

/// `DELETE /peers/{peer_id}` on `member`: status and JSON body (`Null` for 204).
async fn delete_peer(member: &Member, peer_id: &str) -> (u16, Value) {
    member.peer.call(member.peer.request(Method::DELETE, &format!("/peers/{peer_id}"))).await
}

/// The `message` of an error body.
fn message(body: &Value) -> String {
    body["message"].as_str().unwrap_or_default().to_string()
}

/// The end of the logs of `indexes`, for failure messages.
fn logs(cluster: &TestCluster, indexes: &[usize]) -> String {
    indexes.iter().map(|&i| format!("\n--- log of peer {i}:\n{}", cluster.members[i].peer.log_tail())).collect()
}

/// A member other than `than`, to check requests work on any member, not only on the leader.
fn other_than(cluster: &TestCluster, than: usize) -> usize {
    (0..cluster.members.len()).find(|&i| i != than).expect("a cluster of two peers or more")
}

/// A peer ID no process has.
fn unknown_peer_id() -> String {
    libp2p_identity::PeerId::random().to_string()
}

/// The members each of `indexes` lists in `GET /consensus`, in that order.
async fn memberships(cluster: &TestCluster, indexes: &[usize]) -> Vec<Vec<String>> {
    let mut seen = Vec::new();
    for &i in indexes {
        seen.push(member_ids(&cluster.members[i].consensus().await));
    }
    seen
}

/// A removed peer stops by itself with code 0, its data moved aside and the marker written.
async fn assert_removed(member: &mut Member) {
    let code = member.peer.process.wait_exit(EXIT_WAIT).await.expect("the removed peer stops by itself");
    assert_eq!(code, Some(0), "the removed peer exited with {code:?}; log:\n{}", member.peer.log_tail());
    assert_cleaned_up(member);
}

/// A removed peer that stopped: the marker written, its consensus data and pinset moved aside.
fn assert_cleaned_up(member: &Member) {
    let data = member.peer.data_dir();
    assert!(
        data.join("removed-from-cluster").is_file(),
        "no marker in {}; log:\n{}",
        data.display(),
        member.peer.log_tail()
    );
    assert!(!data.join("raft").exists(), "the raft directory is still in {}", data.display());
    assert!(!data.join("pinset.redb").exists(), "the pinset is still in {}", data.display());
    let aside: Vec<_> = std::fs::read_dir(data)
        .expect("the data directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("removed-20")))
        .collect();
    assert_eq!(aside.len(), 1, "one removed-<time> directory in {}", data.display());
    assert!(aside[0].join("raft").is_dir() && aside[0].join("pinset.redb").is_file(), "{}", aside[0].display());
}

/// The cluster still commits: a pin through `member` is acknowledged. The content is put into the
/// shared daemon first, so that the pin completes instead of searching for it.
async fn assert_takes_a_pin(member: &Member) {
    let data = unique_bytes("membership");
    block_put(shared_daemon(), &data).await;
    member.peer.pin(&raw_cid(&data), &[]).await;
}

/// Removes the member `removed` by sending `DELETE /peers/{id}` to `via`, then checks it stopped
/// and that the two left (of a three-peer cluster) converge on one voter and one learner, elect a
/// leader among themselves and still take a pin.
async fn remove_and_check(cluster: &mut TestCluster, removed: usize, via: usize) {
    let removed_id = cluster.members[removed].peer_id.clone();
    let (status, body) = delete_peer(&cluster.members[via], &removed_id).await;
    assert_eq!(status, 204, "DELETE /peers/{removed_id} on peer {via}: {body}{}", logs(cluster, &[via, removed]));
    assert_removed(&mut cluster.members[removed]).await;

    let left: Vec<usize> = (0..cluster.members.len()).filter(|&i| i != removed).collect();
    let leader = cluster.leader_seen_by(left[0]).await;
    assert!(left.contains(&leader), "the leader {leader} is not one of the peers left {left:?}");
    cluster.wait_converged(&left).await;
    cluster.wait_voters(&left, 1, 1).await;
    for &i in &left {
        assert_takes_a_pin(&cluster.members[i]).await;
    }
}

/// Two peers of three crash (the leader among them unless `survivor_leads`); asking the one left
/// to add a `--no-init` peer fails promptly with a 5xx saying there is no quorum, and nothing
/// changes.
async fn add_without_quorum(survivor_leads: bool) {
    let mut cluster = start_settled(3).await;
    let leader = cluster.leader_seen_by(0).await;
    let survivor = if survivor_leads { leader } else { other_than(&cluster, leader) };
    let before = member_ids(&cluster.members[survivor].consensus().await);
    for i in (0..3).filter(|&i| i != survivor) {
        cluster.members[i].peer.process.kill9().expect("kill -9");
    }

    let newcomer = cluster.spawn_member(&["--no-init"]).await;
    let address = newcomer.peer.process.cluster_multiaddr();
    let started = Instant::now();
    let (status, body) = post_peer(&cluster.members[survivor], &newcomer.peer_id, &[address]).await;
    let log = logs(&cluster, &[survivor]);
    assert!((500..600).contains(&status), "a peer without quorum answered {status}: {body}{log}");
    let why = message(&body);
    assert!(why.contains("quorum") || why.contains("leader"), "{status}: {body}{log}");
    assert!(started.elapsed() < Duration::from_secs(30), "answered after {:?}", started.elapsed());

    assert_eq!(member_ids(&cluster.members[survivor].consensus().await), before, "membership changed");
    let consensus = newcomer.consensus().await;
    assert_eq!(consensus["role"], "uninitialized", "the newcomer was not added: {consensus}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_peer() {
    let mut cluster = start_settled(3).await;
    let leader = cluster.leader_seen_by(0).await;
    let follower = other_than(&cluster, leader);

    let newcomer = cluster.spawn_member(&["--no-init"]).await;
    let consensus = newcomer.consensus().await;
    assert_eq!(consensus["role"], "uninitialized", "a --no-init peer waits to be added: {consensus}");
    assert!(member_ids(&consensus).is_empty(), "{consensus}");

    // Added through a follower: the change is carried out on the leader.
    let address = newcomer.peer.process.cluster_multiaddr();
    let (status, id) = post_peer(&cluster.members[follower], &newcomer.peer_id, &[address]).await;
    assert_eq!(status, 200, "POST /peers on peer {follower}: {id}{}", logs(&cluster, &[follower, leader]));
    assert_eq!(id["id"], newcomer.peer_id.as_str(), "the added peer's ID: {id}");

    cluster.members.push(newcomer);
    let all = [0, 1, 2, 3];
    cluster.wait_converged(&all).await;
    cluster.wait_voters(&all, 3, 1).await;

    let newcomer = &cluster.members[3];
    wait_for("the added peer to be ready", WAIT, || async {
        match newcomer.peer.request(Method::GET, "/readyz").send().await {
            Ok(response) if response.status().as_u16() == 200 => Ok(()),
            Ok(response) => Err(format!("{}: {}", response.status(), response.text().await.unwrap_or_default())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_an_unreachable_peer() {
    let cluster = start_settled(3).await;
    let all = [0, 1, 2];
    let before = memberships(&cluster, &all).await;

    // Nothing listens there: the member cannot reach it, so nothing is committed.
    let nowhere = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let (status, body) = post_peer(&cluster.members[1], &unknown_peer_id(), &[nowhere]).await;
    assert_eq!(status, 500, "{body}");
    assert!(message(&body).contains("unreachable"), "{body}");
    assert_eq!(memberships(&cluster, &all).await, before, "membership changed after a failed addition");

    let (status, body) = post_peers(&cluster.members[0], "{not json".to_string()).await;
    assert_eq!(status, 400, "a malformed body: {body}");
    let (status, body) = post_peer(&cluster.members[0], "not-a-peer-id", &[]).await;
    assert_eq!(status, 400, "a body whose peer_id is not a peer ID: {body}");
    assert_eq!(memberships(&cluster, &all).await, before, "membership changed after a refused request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_while_unhealthy() {
    add_without_quorum(false).await;
}

/// As [`add_while_unhealthy`], asking the old leader, which must find out it no longer leads a quorum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_while_unhealthy_on_the_old_leader() {
    add_without_quorum(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_a_peer() {
    let mut cluster = start_settled(3).await;
    let leader = cluster.leader_seen_by(0).await;
    let follower = other_than(&cluster, leader);
    remove_and_check(&mut cluster, follower, leader).await;
}

/// A peer removed while it was down is not told then; when it comes back it campaigns, and the
/// leader, refusing its vote, tells it: it stops and sets its data aside instead of campaigning
/// for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_removed_while_down_learns_it_when_it_returns() {
    let mut cluster = start_settled(3).await;
    let leader = cluster.leader_seen_by(0).await;
    let down = other_than(&cluster, leader);
    cluster.members[down].peer.process.kill9().unwrap();
    let down_id = cluster.members[down].peer_id.clone();
    let (status, body) = delete_peer(&cluster.members[leader], &down_id).await;
    assert_eq!(status, 204, "DELETE /peers/{down_id}: {body}{}", logs(&cluster, &[leader]));

    cluster.members[down].peer.process.restart().await.expect("the removed peer starts again");
    assert_removed(&mut cluster.members[down]).await;
    let left: Vec<usize> = (0..3).filter(|&i| i != down).collect();
    cluster.wait_converged(&left).await;
    assert_eq!(cluster.leader_seen_by(left[0]).await, leader, "the returning peer disturbed the leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_self() {
    let mut cluster = start_settled(3).await;
    let follower = other_than(&cluster, cluster.leader_seen_by(0).await);
    remove_and_check(&mut cluster, follower, follower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_the_leader() {
    let mut cluster = start_settled(3).await;
    let leader = cluster.leader_seen_by(0).await;
    let follower = other_than(&cluster, leader);
    remove_and_check(&mut cluster, leader, follower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_member_cannot_be_removed() {
    let cluster = start_settled(1).await;
    let only = &cluster.members[0];

    let (status, body) = delete_peer(only, &only.peer_id).await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains("cannot remove the last member"), "{body}");
    let consensus = only.consensus().await;
    assert_eq!(consensus["role"], "leader", "the last member still runs and leads: {consensus}");
    assert_eq!(member_ids(&consensus), std::slice::from_ref(&only.peer_id), "{consensus}");

    let (status, body) = delete_peer(only, &unknown_peer_id()).await;
    assert_eq!(status, 404, "removing a peer that is not a member: {body}");
}

/// With at most three voters, further peers are learners; when a voter leaves, a learner takes its
/// place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voter_cap_keeps_learners_and_promotes_one_when_a_voter_leaves() {
    let args = [FAST, &["--max-voters", "3"]].concat();
    let mut cluster = TestCluster::start(5, Daemons::Shared, &args).await;
    let all = [0, 1, 2, 3, 4];
    cluster.wait_voters(&all, 3, 2).await;

    let leader = cluster.leader_seen_by(0).await;
    let consensus = cluster.members[leader].consensus().await;
    let voter = consensus["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["voter"] == true)
        .map(|m| m["peer_id"].as_str().unwrap().to_string())
        .find(|id| *id != cluster.members[leader].peer_id)
        .expect("a voter other than the leader");
    let removed = cluster.members.iter().position(|m| m.peer_id == voter).unwrap();
    let (status, body) = delete_peer(&cluster.members[leader], &voter).await;
    assert_eq!(status, 204, "{body}{}", logs(&cluster, &[leader, removed]));
    assert_removed(&mut cluster.members[removed]).await;

    let left: Vec<usize> = all.into_iter().filter(|&i| i != removed).collect();
    cluster.wait_converged(&left).await;
    cluster.wait_voters(&left, 3, 1).await;
}

/// A peer started with `--leave-on-shutdown` removes itself when stopped, then cleans up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_on_shutdown_removes_the_peer() {
    let mut cluster = start_settled(3).await;
    let bootstrap = cluster.members[0].cluster_address();
    let leaving = cluster.spawn_member(&["--leave-on-shutdown", "--bootstrap", &bootstrap]).await;
    cluster.members.push(leaving);
    cluster.wait_converged(&[0, 1, 2, 3]).await;
    cluster.wait_voters(&[0, 1, 2, 3], 3, 1).await;

    let code = cluster.members[3].peer.process.stop(EXIT_WAIT).await.expect("SIGTERM");
    assert_eq!(code, Some(0), "log:\n{}", cluster.members[3].peer.log_tail());
    assert_cleaned_up(&cluster.members[3]);
    cluster.wait_converged(&[0, 1, 2]).await;
    cluster.wait_voters(&[0, 1, 2], 3, 0).await;
}

/// The leader started with `--leave-on-shutdown` also leaves, and cleans up before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_on_shutdown_removes_the_leader() {
    let args: Vec<&str> = FAST.iter().copied().chain(["--leave-on-shutdown"]).collect();
    let mut cluster = TestCluster::start(3, Daemons::Shared, &args).await;
    cluster.wait_voters(&[0, 1, 2], 3, 0).await;
    let leader = cluster.leader_seen_by(0).await;

    let code = cluster.members[leader].peer.process.stop(EXIT_WAIT).await.expect("SIGTERM");
    assert_eq!(code, Some(0), "log:\n{}", cluster.members[leader].peer.log_tail());
    assert_cleaned_up(&cluster.members[leader]);
    let left: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    cluster.wait_converged(&left).await;
    cluster.wait_voters(&left, 1, 1).await;
    assert_takes_a_pin(&cluster.members[cluster.leader_seen_by(left[0]).await]).await;
}
