//! Two peers in one process, each with a fake IPFS daemon: the paths that decide on this peer's
//! own copy of the pinset, which on a follower may lag behind the cluster's.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use multiaddr::Protocol;
use tempfile::TempDir;

use super::{Cluster, ClusterConfig};
use crate::identity::Identity;
use crate::ipfs::fake::FakeIpfs;
use crate::ipfs::kubo::{KuboClient, KuboConfig};
use crate::monitor::{FREESPACE, PING};
use crate::p2p::P2pConfig;
use crate::state::StateOp;
use crate::types::{Cid, CidKey, ConsensusRole, Pin, PinOptions};

const CID: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";

/// Polls `condition` until it holds; panics after a generous deadline.
async fn until<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start(config: ClusterConfig, dir: &TempDir) -> Cluster {
    let data_dir = dir.path().join(&config.peername);
    Cluster::start(config, Identity::generate(), Arc::new(FakeIpfs::new()), &data_dir).await.unwrap()
}

/// A leader and a member that joined through it. Background expiry never runs on its own: the
/// tests call it.
async fn two_peers(dir: &TempDir) -> (Cluster, Cluster) {
    let secret = rand::random();
    let config = |name: &str| {
        let mut p2p = P2pConfig::new(secret);
        p2p.listen = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
        ClusterConfig { expiry_check_interval: Duration::from_secs(3600), ..ClusterConfig::new(name, p2p) }
    };
    let leader = start(config("leader"), dir).await;
    until("the first peer leads", || async { leader.consensus_status().role == ConsensusRole::Leader }).await;
    let address = leader.inner.p2p.listen_addrs().await.unwrap().remove(0);
    let mut member = config("member");
    member.consensus.bootstrap = vec![address.with(Protocol::P2p(leader.inner.identity.peer_id))];
    let member = start(member, dir).await;
    until("the second peer is a member", || async {
        member.inner.consensus.is_ready() && member.inner.consensus.members().len() == 2
    })
    .await;
    assert_ne!(member.consensus_status().role, ConsensusRole::Leader);
    (leader, member)
}

fn stored(peer: &Cluster, cid: &Cid) -> Option<Pin> {
    peer.inner.state.get(&CidKey::of(cid)).unwrap()
}

async fn applied(peer: &Cluster, cid: &Cid, present: bool) {
    until("the write is applied there", || async { stored(peer, cid).is_some() == present }).await;
}

#[tokio::test]
async fn expiry_runs_on_the_leader_only() {
    let dir = TempDir::new().unwrap();
    let (leader, member) = two_peers(&dir).await;
    let cid: Cid = CID.parse().unwrap();
    let expired = PinOptions { expire_at: Some(Utc::now() - chrono::Duration::seconds(1)), ..Default::default() };
    leader.pin(cid, expired).await.unwrap();
    applied(&member, &cid, true).await;

    // A member's view may be stale (a re-pin it has not applied yet): it leaves expiry alone.
    member.unpin_expired().await;
    member.inner.consensus.commit(StateOp::Barrier).await.unwrap();
    assert!(stored(&leader, &cid).is_some() && stored(&member, &cid).is_some());

    leader.unpin_expired().await;
    assert_eq!(stored(&leader, &cid), None);
    applied(&member, &cid, false).await;
    member.shutdown().await;
    leader.shutdown().await;
}

#[tokio::test]
async fn a_pin_through_a_member_with_a_stale_copy_is_committed() {
    let dir = TempDir::new().unwrap();
    let (leader, member) = two_peers(&dir).await;
    let cid: Cid = CID.parse().unwrap();
    let pin = leader.pin(cid, PinOptions::default()).await.unwrap();
    applied(&member, &cid, true).await;
    leader.unpin(&cid).await.unwrap();
    applied(&member, &cid, false).await;
    // The member's copy as it was before it applied the unpin: it still sees the pin.
    member.inner.state.apply(&[StateOp::Pin(pin)]).unwrap();

    member.pin(cid, PinOptions::default()).await.unwrap();
    assert!(stored(&leader, &cid).is_some(), "the pin the member acknowledged is in the pinset");
    member.shutdown().await;
    leader.shutdown().await;
}

#[tokio::test]
async fn an_unpin_through_a_member_that_has_not_applied_the_pin_yet_finds_it() {
    let dir = TempDir::new().unwrap();
    let (leader, member) = two_peers(&dir).await;
    // The leader acknowledges once it applied; the member learns the commit with the next
    // message from the leader, so right after the pin its copy usually lacks it.
    for n in 0..10 {
        let cid = crate::state::tests::pin_n(n).cid;
        leader.pin(cid, PinOptions::default()).await.unwrap();
        let removed = member.unpin(&cid).await.unwrap_or_else(|e| panic!("unpin {n}: {e}"));
        assert_eq!(removed.cid, cid);
        assert_eq!(stored(&leader, &cid), None);
    }
    let absent = crate::state::tests::pin_n(99).cid;
    assert!(matches!(member.unpin(&absent).await, Err(crate::Error::NotFound(_))));
    member.shutdown().await;
    leader.shutdown().await;
}

#[tokio::test]
async fn the_leader_moves_the_pins_of_a_peer_that_left_as_reallocations() {
    let dir = TempDir::new().unwrap();
    let (leader, member) = two_peers(&dir).await;
    let members = [leader.inner.identity.peer_id, member.inner.identity.peer_id];
    // A peer the monitor heard from that is not a member any more: its pins must move.
    let left = libp2p::PeerId::random();
    let now = Utc::now();
    leader
        .inner
        .monitor
        .publish(crate::monitor::metric(PING, &left.to_string(), 1, Duration::from_secs(3600), now), now);
    let on_left = |n| Pin {
        allocations: vec![left],
        replication_factor_min: 1,
        replication_factor_max: 1,
        ..crate::state::tests::pin_n(n)
    };
    for n in 0..3 {
        leader.inner.consensus.commit(StateOp::Pin(on_left(n))).await.unwrap();
    }

    leader.repin_pass(Duration::ZERO).await;
    for n in 0..3 {
        let moved = stored(&leader, &on_left(n).cid).unwrap();
        assert!(matches!(moved.allocations[..], [peer] if members.contains(&peer)), "{:?}", moved.allocations);
        // Nothing but the allocations (and the time) changed.
        assert_eq!(Pin { allocations: vec![left], timestamp: on_left(n).timestamp, ..moved }, on_left(n));
    }
    assert!(leader.inner.last_repin.lock().unwrap().is_some(), "every move settled: the next pass is skipped");
    member.shutdown().await;
    leader.shutdown().await;
}

#[tokio::test]
async fn with_no_peer_gone_the_leader_moves_nothing() {
    let dir = TempDir::new().unwrap();
    let (leader, member) = two_peers(&dir).await;
    // Below its minimum as stored (allocation never commits that; an imported state may hold it):
    // a departure would make the pass top it up, a join alone does not.
    let short = Pin {
        allocations: vec![leader.inner.identity.peer_id],
        replication_factor_min: 2,
        replication_factor_max: 2,
        ..crate::state::tests::pin_n(1)
    };
    leader.inner.consensus.commit(StateOp::Pin(short.clone())).await.unwrap();
    // Both members are candidates with room, so a pass that looked at the pin could move it.
    let now = Utc::now();
    for peer in [&leader, &member] {
        let metric = crate::monitor::metric(FREESPACE, &peer.inner.me, 1 << 30, Duration::from_secs(3600), now);
        leader.inner.monitor.publish(metric, now);
    }
    assert_eq!(leader.allocation_candidates().len(), 2);

    leader.repin_pass(Duration::ZERO).await;
    assert_eq!(stored(&leader, &short.cid), Some(short));
    assert!(leader.inner.last_repin.lock().unwrap().is_some(), "the next pass is skipped too");
    member.shutdown().await;
    leader.shutdown().await;
}

/// A Raft message carries the node it is for: a peer whose consensus data was replaced (a new
/// node under the same identity) must not act on messages meant for its old node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_message_for_another_node_is_refused() {
    let dir = TempDir::new().unwrap();
    let (leader, member) = two_peers(&dir).await;
    let term = leader.consensus_status().term;
    let sender = member.inner.consensus.node_id();
    let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(term + 5, sender), None);
    let stale = crate::protocol::RpcRequest::Raft { to: sender, message: crate::protocol::RaftMessage::Vote(vote) };
    let refused = member.inner.p2p.request(leader.inner.identity.peer_id, stale).await.unwrap_err();
    assert!(refused.to_string().contains("not"), "{refused}");
    assert_eq!(leader.consensus_status().term, term, "the message was acted on");
    assert_eq!(leader.consensus_status().role, ConsensusRole::Leader);
}

#[tokio::test]
async fn start_does_not_wait_long_for_a_daemon_that_does_not_answer() {
    // A daemon that accepts connections and never answers (a js-ipfs counting a million blocks
    // for `repo/stat` looks the same from here); its calls would wait out this request timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            connections.push(connection);
        }
    });
    let ipfs = KuboClient::new(KuboConfig {
        node_multiaddress: format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap(),
        request_timeout: Duration::from_secs(3600),
        ..KuboConfig::default()
    })
    .unwrap();
    let dir = TempDir::new().unwrap();
    let mut p2p = P2pConfig::new(rand::random());
    p2p.listen = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    let started = tokio::time::timeout(
        Duration::from_secs(120),
        Cluster::start(ClusterConfig::new("silent-daemon", p2p), Identity::generate(), Arc::new(ipfs), dir.path()),
    )
    .await
    .expect("Cluster::start returns without the daemon's first answer")
    .unwrap();
    until("it leads its new cluster", || async { started.consensus_status().role == ConsensusRole::Leader }).await;
    started.shutdown().await;
    held.abort();
}
