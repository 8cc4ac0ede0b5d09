//! The durable log and the state machine against openraft's own storage test suite. Consensus
//! between peers is exercised through real processes in the end-to-end tests.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::types::{StorageError, TypeConfig};
use crate::state::{PinState, StateChange, StateObserver};

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
