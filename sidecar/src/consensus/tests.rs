//! The durable log and the state machine against openraft's own storage test suite, and entries
//! of many large pins between real peers in this process. Consensus under faults is exercised
//! through the end-to-end tests.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::RaftLogStorage;
use openraft::testing::{StoreBuilder, Suite};
use openraft::CommittedLeaderId;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::types::{LogId, StorageError, TypeConfig, Vote};
use super::writer::MAX_OP_BYTES;
use crate::cluster::{Cluster, ClusterConfig};
use crate::identity::Identity;
use crate::ipfs::fake::FakeIpfs;
use crate::p2p::P2pConfig;
use crate::state::{PinState, StateChange, StateObserver};
use crate::types::{Cid, PinOptions};

struct Ignore;

impl StateObserver for Ignore {
    fn on_changes(&self, _changes: &[StateChange]) {}
}

struct OnDisk;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for OnDisk {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new().expect("temp dir");
        let log = LogStore::open(&dir.path().join("raft.redb")).expect("log opens");
        let state = Arc::new(PinState::open(&dir.path().join("pinset.redb")).expect("state opens"));
        let machine =
            StateMachine::open(state, Arc::new(Ignore), &dir.path().join("snapshots")).expect("machine opens");
        Ok((dir, log, machine))
    }
}

#[test]
fn storage_passes_the_openraft_suite() {
    Suite::test_all(OnDisk).unwrap();
}

#[test]
fn node_ids_are_kept_and_differ_between_stores() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("raft.redb");
    let first = LogStore::open(&path).unwrap().node_id().unwrap();
    assert_eq!(LogStore::open(&path).unwrap().node_id().unwrap(), first, "the same store keeps its id");
    let other = TempDir::new().unwrap();
    let second = LogStore::open(&other.path().join("raft.redb")).unwrap().node_id().unwrap();
    assert_ne!(first, second, "a wiped peer comes back as a new node");
    assert!(!LogStore::open(&path).unwrap().has_state().unwrap(), "an id alone is not Raft state");
}

#[tokio::test]
async fn the_vote_and_the_committed_position_outlive_the_store() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("raft.redb");
    let vote = Vote::new(3, 7);
    let committed = LogId::new(CommittedLeaderId::new(3, 7), 42);
    {
        let mut log = LogStore::open(&path).unwrap();
        log.save_vote(&vote).await.unwrap();
        // Kept in memory until the next write; here that is the flusher's last one, as it stops.
        log.save_committed(Some(committed)).await.unwrap();
    }
    let mut log = LogStore::open(&path).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(committed));
    assert!(log.has_state().unwrap(), "a vote is Raft state");
}

/// Polls `condition` until it holds; panics after a generous deadline.
async fn until<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A peer of a cluster keyed by `secret`, joining through `bootstrap` when given.
async fn peer(name: &str, secret: [u8; 32], bootstrap: Option<multiaddr::Multiaddr>, dir: &TempDir) -> Cluster {
    let mut p2p = P2pConfig::new(secret);
    p2p.listen = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    let mut config = ClusterConfig::new(name, p2p);
    config.consensus.bootstrap = bootstrap.into_iter().collect();
    Cluster::start(config, Identity::generate(), Arc::new(FakeIpfs::new()), &dir.path().join(name)).await.unwrap()
}

/// Whether `peer` holds every one of `cids`.
async fn holds_all(peer: &Cluster, cids: &[Cid]) -> bool {
    for cid in cids {
        if peer.allocation(cid).await.is_err() {
            return false;
        }
    }
    true
}

/// 600 pins near the size limit, written at once, take about 18 MB: more than one RPC carries
/// (16 MiB). They commit in entries bounded by bytes (one entry of all the writes queued behind
/// the first would never reach the other peer), and a peer that joins afterwards catches up on
/// those entries in append requests split small enough to arrive in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_large_pins_commit_and_reach_every_peer() {
    const PINS: usize = 600;
    let dir = TempDir::new().unwrap();
    let secret = rand::random();
    let first = peer("first", secret, None, &dir).await;
    until("the first peer leads", || async { first.consensus_status().leader.is_some() }).await;
    let address = first.id().await.addresses.into_iter().next().unwrap();
    let second = peer("second", secret, Some(address.clone()), &dir).await;
    until("the second peer is a member", || async { first.consensus_status().members.len() == 2 }).await;

    let cids: Vec<Cid> = (0..PINS)
        .map(|i| {
            let digest = multihash::Multihash::wrap(0x12, &Sha256::digest(i.to_be_bytes())).unwrap();
            Cid::new_v1(0x55, digest)
        })
        .collect();
    let near_max = "m".repeat(MAX_OP_BYTES as usize - 2_000);
    let options = PinOptions { metadata: [("blob".to_string(), near_max)].into(), ..Default::default() };
    let writes = cids.iter().map(|cid| first.pin(*cid, options.clone()));
    futures::future::try_join_all(writes).await.unwrap();

    let third = peer("third", secret, Some(address), &dir).await;
    for (name, peer) in [("second", &second), ("third", &third)] {
        until(&format!("the {name} peer holds every pin"), || holds_all(peer, &cids)).await;
    }
    for peer in [&first, &second, &third] {
        peer.shutdown().await;
    }
}
