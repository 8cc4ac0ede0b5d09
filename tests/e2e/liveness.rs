//! Consensus stays available through the faults Kubernetes brings every day: a leader cut off and
//! back, a follower cut off and back, a slow link, a peer stopped with writes in flight. Clusters
//! of three real peers in this process (real libp2p on loopback, durable Raft storage), whose
//! network is cut or slowed by `NetFaults`, with clients writing through every peer all along.
//!
//! Bounds here are generous (a loaded 2-core machine): they catch outages of tens of seconds and
//! hangs, not a slow election. The benchmark `cluster-bench outage` measures the windows.

use std::time::{Duration, Instant};

use e2e::common::{wait_for, WAIT};
use e2e::inprocess::{fresh_cid, longest_outage, missing_on, InProcessCluster, Writers};
use sidecar::types::{ConsensusRole, PinOptions};

/// Writes fail or succeed within the commit timeout (10 s) plus this.
const ANSWER_SLACK: Duration = Duration::from_secs(3);
/// Longest acceptable time without an acknowledged write once the cluster can take writes.
const OUTAGE_BOUND: Duration = Duration::from_secs(12);

fn others(of: usize) -> Vec<usize> {
    (0..3).filter(|i| *i != of).collect()
}

/// Every write answered in bounded time, none acknowledged and lost, every peer with the same pins.
async fn check_safe_and_answered(cluster: &InProcessCluster, records: &[e2e::inprocess::WriteRecord]) {
    let slowest = records.iter().map(|r| r.took()).max().unwrap_or_default();
    assert!(slowest <= Duration::from_secs(10) + ANSWER_SLACK, "a write took {slowest:?} to be answered");
    for (i, node) in cluster.nodes.iter().enumerate() {
        wait_for("every acknowledged write on every peer", WAIT, || async {
            let missing = missing_on(node, records).await;
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("peer {i} lacks {} acknowledged pins, e.g. {}", missing.len(), missing[0]))
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_and_back_stops_writes_for_one_election_at_most() {
    let cluster = InProcessCluster::start(3, |_| {}).await;
    let old = cluster.agreed_leader(&[0, 1, 2]).await;
    let majority = others(old);
    let writers = Writers::start(&cluster, &[0, 0, 1, 1, 2, 2]);
    writers.acknowledged_after(Instant::now(), &[0, 1, 2], WAIT).await;

    let cut = Instant::now();
    cluster.nodes[old].faults.isolate(true);
    let new = cluster.agreed_leader(&majority).await;
    assert_ne!(new, old);
    let first = writers.acknowledged_after(cut, &majority, WAIT).await;
    assert!(first - cut <= OUTAGE_BOUND, "the majority took {:?} to acknowledge a write", first - cut);
    // Writes keep flowing on the majority side for a while.
    let quiet_from = Instant::now();
    writers.acknowledged_after(quiet_from + Duration::from_secs(3), &majority, WAIT).await;

    let healed = Instant::now();
    cluster.nodes[old].faults.isolate(false);
    wait_for("the old leader to follow the new one", WAIT, || async {
        let status = cluster.nodes[old].status();
        match (status.role, cluster.leader_agreed_by(&[0, 1, 2])) {
            (ConsensusRole::Follower, Ok(_)) => Ok(()),
            (role, leader) => Err(format!("old leader is {role:?}, agreement: {leader:?}")),
        }
    })
    .await;
    let back = writers.acknowledged_after(healed, &[old], WAIT).await;
    assert!(back - healed <= OUTAGE_BOUND, "writes through the old leader resumed {:?} after the heal", back - healed);
    writers.acknowledged_after(Instant::now() + Duration::from_secs(2), &[0, 1, 2], WAIT).await;
    let records = writers.stop().await;
    let end = records.iter().map(|r| r.answered).max().unwrap();
    let outage = longest_outage(&records, &majority, first, end);
    assert!(outage <= OUTAGE_BOUND, "the majority went {outage:?} without an acknowledged write after it recovered");
    check_safe_and_answered(&cluster, &records).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_a_peer_cut_off_fail_within_the_commit_timeout() {
    let cluster = InProcessCluster::start(3, |_| {}).await;
    let leader = cluster.agreed_leader(&[0, 1, 2]).await;
    let follower = others(leader)[0];
    for cut_off in [follower, leader] {
        cluster.nodes[cut_off].faults.isolate(true);
        let peer = cluster.nodes[cut_off].cluster.clone();
        let started = Instant::now();
        let outcome = peer.pin(fresh_cid(), PinOptions::default()).await;
        let took = started.elapsed();
        let error = outcome.expect_err("a write through a peer cut off from the others");
        assert_eq!(error.status(), 503, "{error}");
        assert!(took <= Duration::from_secs(10) + ANSWER_SLACK, "answered after {took:?}: {error}");
        cluster.nodes[cut_off].faults.isolate(false);
        cluster.agreed_leader(&[0, 1, 2]).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_continue_over_a_slow_link_to_the_leader() {
    let cluster = InProcessCluster::start(3, |_| {}).await;
    let leader = cluster.agreed_leader(&[0, 1, 2]).await;
    let term = cluster.nodes[leader].term();
    cluster.nodes[leader].faults.delay_inbound(Duration::from_millis(200));
    let writers = Writers::start(&cluster, &[0, 1, 2]);
    let slowed = Instant::now();
    // Through every peer, several times over.
    for round in 1..=3 {
        let since = slowed + Duration::from_secs(2 * round);
        writers.acknowledged_after(since, &[0], WAIT).await;
        writers.acknowledged_after(since, &[1], WAIT).await;
        writers.acknowledged_after(since, &[2], WAIT).await;
    }
    let records = writers.stop().await;
    assert_eq!(cluster.nodes[leader].term(), term, "a slow link to the leader caused an election");
    assert_eq!(cluster.leader_agreed_by(&[0, 1, 2]), Ok(leader));
    check_safe_and_answered(&cluster, &records).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_back_from_a_cut_does_not_depose_the_leader() {
    let cluster = InProcessCluster::start(3, |_| {}).await;
    let leader = cluster.agreed_leader(&[0, 1, 2]).await;
    let follower = others(leader)[0];
    let term = cluster.nodes[leader].term();
    cluster.nodes[follower].faults.isolate(true);
    // Long enough for several elections had it kept campaigning. Writes through the follower
    // fail meanwhile, each within the commit timeout, queue time included.
    let writers = Writers::start(&cluster, &[leader, follower, follower]);
    writers.acknowledged_after(Instant::now() + Duration::from_secs(14), &[leader], WAIT).await;
    assert_eq!(cluster.nodes[follower].term(), term, "the cut-off follower raised its term");
    cluster.nodes[follower].faults.isolate(false);
    wait_for("the follower to catch up", WAIT, || async {
        let (f, l) = (cluster.nodes[follower].status(), cluster.nodes[leader].status());
        if f.last_applied_index >= l.last_applied_index.map(|i| i.saturating_sub(2))
            && f.role == ConsensusRole::Follower
        {
            Ok(())
        } else {
            Err(format!("follower at {:?} ({:?}), leader at {:?}", f.last_applied_index, f.role, l.last_applied_index))
        }
    })
    .await;
    let records = writers.stop().await;
    assert_eq!(cluster.leader_agreed_by(&[0, 1, 2]), Ok(leader), "the leader changed");
    assert_eq!(cluster.nodes[leader].term(), term, "the returning follower forced an election");
    check_safe_and_answered(&cluster, &records).await;
    cluster.shutdown().await;
}

/// openraft 0.9 never answers a write whose entry a snapshot replaced: the old leader, cut off with
/// a write in flight, catches up through a snapshot, and its write must still be answered, and
/// writes through it must work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_flight_on_a_leader_that_catches_up_by_snapshot_is_answered() {
    let cluster = InProcessCluster::start(3, |config| config.consensus.snapshot_every = 16).await;
    let old = cluster.agreed_leader(&[0, 1, 2]).await;
    let majority = others(old);
    cluster.nodes[old].faults.isolate(true);
    let stuck = {
        let peer = cluster.nodes[old].cluster.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = peer.pin(fresh_cid(), PinOptions::default()).await;
            (started.elapsed(), outcome)
        })
    };
    cluster.agreed_leader(&majority).await;
    // Enough entries on the majority side to snapshot and purge past the old leader's log.
    let writers = Writers::start(&cluster, &[majority[0], majority[1]]);
    wait_for("the majority to purge its log", WAIT, || async {
        let status = cluster.nodes[majority[0]].status();
        match status.purged_index {
            Some(purged) if purged > 40 => Ok(()),
            other => Err(format!("purged up to {other:?}")),
        }
    })
    .await;
    cluster.nodes[old].faults.isolate(false);
    let (took, outcome) = stuck.await.unwrap();
    assert!(took <= Duration::from_secs(10) + ANSWER_SLACK, "the write in flight was answered after {took:?}");
    if let Err(e) = &outcome {
        assert_eq!(e.status(), 503, "{e}");
    }
    let healed = Instant::now();
    let writers_old = Writers::start(&cluster, &[old]);
    writers_old.acknowledged_after(healed, &[old], WAIT).await;
    let mut records = writers.stop().await;
    records.extend(writers_old.stop().await);
    check_safe_and_answered(&cluster, &records).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_stops_promptly_with_writes_in_flight() {
    let cluster = InProcessCluster::start(3, |_| {}).await;
    let leader = cluster.agreed_leader(&[0, 1, 2]).await;
    cluster.nodes[leader].faults.isolate(true);
    let peer = cluster.nodes[leader].cluster.clone();
    let pending = tokio::spawn(async move { peer.pin(fresh_cid(), PinOptions::default()).await });
    // The write is queued or proposed by now; stop the peer under it.
    wait_for("the write to be in flight", WAIT, || async {
        if pending.is_finished() {
            Err("answered already".to_string())
        } else {
            Ok(())
        }
    })
    .await;
    let started = Instant::now();
    cluster.nodes[leader].cluster.shutdown().await;
    let took = started.elapsed();
    assert!(took <= Duration::from_secs(8), "shutdown took {took:?}");
    let outcome = pending.await.unwrap();
    assert!(outcome.is_err(), "a write on a cut-off leader was acknowledged");
    for i in others(leader) {
        cluster.nodes[i].cluster.shutdown().await;
    }
}

/// Scaling down while a peer is out of reach must not remove a working peer: what is left could
/// not lose another one. Removing the unreachable peer instead is what replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_that_would_leave_no_spare_peer_is_refused_while_another_is_unreachable() {
    let cluster = InProcessCluster::start(3, |_| {}).await;
    let leader = cluster.agreed_leader(&[0, 1, 2]).await;
    let [working, cut_off] = [others(leader)[0], others(leader)[1]];
    cluster.nodes[cut_off].faults.isolate(true);
    let through = &cluster.nodes[leader].cluster;
    let cut_off_id = cluster.nodes[cut_off].peer_id.to_string();
    wait_for("the leader to notice the cut", WAIT, || async {
        let status = cluster.nodes[leader].status();
        match status.members.iter().find(|m| m.peer_id == cut_off_id) {
            Some(member) if !member.reachable => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let refused = through.remove_peer(cluster.nodes[working].peer_id, false).await.expect_err("a risky removal");
    assert_eq!(refused.status(), 409, "{refused}");
    assert!(refused.to_string().contains(&cut_off_id), "{refused}");
    assert_eq!(cluster.nodes[leader].status().members.len(), 3, "nothing was removed");
    through.remove_peer(cluster.nodes[cut_off].peer_id, false).await.expect("removing the unreachable peer");
    let members: Vec<String> = cluster.nodes[leader].status().members.into_iter().map(|m| m.peer_id).collect();
    assert!(!members.contains(&cut_off_id), "{members:?}");
    assert_eq!(
        members.len(),
        2,
        "{members:?}, leader {}, working {}",
        cluster.nodes[leader].peer_id,
        cluster.nodes[working].peer_id
    );
    for i in [leader, working] {
        cluster.nodes[i].cluster.shutdown().await;
    }
    cluster.nodes[cut_off].cluster.shutdown().await;
}
