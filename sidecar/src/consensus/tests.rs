use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tempfile::TempDir;

use super::*;
use crate::state::tests::pin_n;
use crate::types::CidKey;

/// Records what it is told, in order.
#[derive(Default)]
struct Recorder {
    changes: Mutex<Vec<StateChange>>,
    restores: Mutex<Vec<RestoreSummary>>,
}

impl StateObserver for Recorder {
    fn on_changes(&self, changes: &[StateChange]) {
        assert!(!changes.is_empty());
        self.changes.lock().unwrap().extend_from_slice(changes);
    }

    fn on_restored(&self, summary: &RestoreSummary) {
        self.restores.lock().unwrap().push(summary.clone());
    }
}

fn start(dir: &TempDir) -> (LocalConsensus, Arc<Recorder>) {
    let state = Arc::new(PinState::open(&dir.path().join("state.redb")).unwrap());
    let recorder = Arc::new(Recorder::default());
    (LocalConsensus::start(state, recorder.clone()), recorder)
}

fn key_of(change: &StateChange) -> CidKey {
    match change {
        StateChange::Pinned { pin, .. } | StateChange::Unpinned { pin } => pin.key(),
    }
}

#[tokio::test]
async fn commit_is_durable_and_observed_before_it_returns() {
    let dir = TempDir::new().unwrap();
    let (consensus, recorder) = start(&dir);
    assert!(consensus.is_ready());

    let change = consensus.commit(StateOp::Pin(pin_n(1))).await.unwrap();
    let expected = StateChange::Pinned { pin: pin_n(1), previous: None };
    assert_eq!(change, Some(expected.clone()));
    assert_eq!(*recorder.changes.lock().unwrap(), vec![expected]);
    assert_eq!(consensus.state().get(&pin_n(1).key()).unwrap(), Some(pin_n(1)));

    // Nothing changes, nothing is reported.
    assert_eq!(consensus.commit(StateOp::Unpin(pin_n(2).key())).await.unwrap(), None);
    assert_eq!(recorder.changes.lock().unwrap().len(), 1);
    assert_eq!(consensus.stats(), CommitStats { ops: 2, transactions: 2 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_are_batched_and_each_observed_once_in_order() {
    const TASKS: u64 = 300;
    let dir = TempDir::new().unwrap();
    let (consensus, recorder) = start(&dir);
    let consensus = Arc::new(consensus);

    let tasks: Vec<_> = (0..TASKS)
        .map(|n| {
            let consensus = consensus.clone();
            tokio::spawn(async move {
                // Each task's own ops are sequential, so their order is known.
                consensus.commit(StateOp::Pin(pin_n(n))).await.unwrap().unwrap();
                consensus.commit(StateOp::Unpin(pin_n(n).key())).await.unwrap().unwrap();
                let mut renamed = pin_n(n);
                renamed.name = "again".into();
                consensus.commit(StateOp::Pin(renamed)).await.unwrap().unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    let stats = consensus.stats();
    assert_eq!(stats.ops, 3 * TASKS);
    assert!(stats.transactions < stats.ops, "no batching happened: {stats:?}");

    let mut per_key: HashMap<CidKey, Vec<StateChange>> = HashMap::new();
    for change in recorder.changes.lock().unwrap().iter() {
        per_key.entry(key_of(change)).or_default().push(change.clone());
    }
    assert_eq!(per_key.len() as u64, TASKS);
    for n in 0..TASKS {
        let mut renamed = pin_n(n);
        renamed.name = "again".into();
        let expected = vec![
            StateChange::Pinned { pin: pin_n(n), previous: None },
            StateChange::Unpinned { pin: pin_n(n) },
            StateChange::Pinned { pin: renamed, previous: None },
        ];
        assert_eq!(per_key[&pin_n(n).key()], expected, "pin {n}");
    }
    assert_eq!(consensus.state().len().unwrap(), TASKS);
}

#[test]
fn acknowledged_commits_survive_dropping_everything_without_shutdown() {
    let dir = TempDir::new().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let consensus = runtime.block_on(async {
        let (consensus, _) = start(&dir);
        let consensus = Arc::new(consensus);
        let commits: Vec<_> = (0..200)
            .map(|n| {
                let consensus = consensus.clone();
                tokio::spawn(async move { consensus.commit(StateOp::Pin(pin_n(n))).await })
            })
            .collect();
        for commit in commits {
            commit.await.unwrap().unwrap();
        }
        consensus
    });
    drop(runtime);
    drop(consensus);

    let state = PinState::open(&dir.path().join("state.redb")).unwrap();
    let mut expected: Vec<_> = (0..200).map(pin_n).collect();
    expected.sort_by_key(|p| p.key());
    assert_eq!(state.scan(None, usize::MAX).unwrap(), expected);
}

const CRASH_DIR: &str = "SIDECAR_CONSENSUS_CRASH_DIR";
const CRASH_PINS: u64 = 500;

/// Run by [`acknowledged_commits_survive_an_abort`] in a child process: commits, reports the
/// acknowledgements, then dies without any shutdown or clean close.
#[test]
#[ignore = "a child process of acknowledged_commits_survive_an_abort"]
fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_DIR) else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let state = Arc::new(PinState::open(&Path::new(&dir).join("state.redb")).unwrap());
        let consensus = Arc::new(LocalConsensus::start(state, Arc::new(Recorder::default())));
        let commits: Vec<_> = (0..CRASH_PINS)
            .map(|n| {
                let consensus = consensus.clone();
                tokio::spawn(async move { consensus.commit(StateOp::Pin(pin_n(n))).await })
            })
            .collect();
        let mut acked = 0;
        for commit in commits {
            commit.await.unwrap().unwrap();
            acked += 1;
        }
        println!("acked {acked}");
        std::process::abort();
    });
}

#[test]
fn acknowledged_commits_survive_an_abort() {
    let dir = TempDir::new().unwrap();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "consensus::tests::crash_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CRASH_DIR, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("acked {CRASH_PINS}")),
        "child: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "the child was meant to abort");

    let path = dir.path().join("state.redb");
    // The file really was left unclean: a read-only open refuses to repair it.
    assert!(matches!(redb::Builder::new().open_read_only(&path), Err(redb::DatabaseError::RepairAborted)));
    let state = PinState::open(&path).unwrap();
    assert_eq!(state.len().unwrap(), CRASH_PINS);
    for n in 0..CRASH_PINS {
        assert_eq!(state.get(&pin_n(n).key()).unwrap(), Some(pin_n(n)));
    }
}

/// Blocks the writer inside `on_changes` until released, to hold commits in the queue.
struct Gate {
    entered: AtomicBool,
    release: Mutex<std_mpsc::Receiver<()>>,
}

impl StateObserver for Gate {
    fn on_changes(&self, _: &[StateChange]) {
        self.entered.store(true, Ordering::SeqCst);
        self.release.lock().unwrap().recv().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_fails_queued_commits_and_finishes_the_one_in_flight() {
    let dir = TempDir::new().unwrap();
    let state = Arc::new(PinState::open(&dir.path().join("state.redb")).unwrap());
    let (release, gate) = std_mpsc::channel();
    let observer = Arc::new(Gate { entered: AtomicBool::new(false), release: Mutex::new(gate) });
    let consensus = Arc::new(LocalConsensus::start(state.clone(), observer.clone()));

    let in_flight = tokio::spawn({
        let consensus = consensus.clone();
        async move { consensus.commit(StateOp::Pin(pin_n(0))).await }
    });
    while !observer.entered.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let queued: Vec<_> = (1..=5)
        .map(|n| {
            let consensus = consensus.clone();
            tokio::spawn(async move { consensus.commit(StateOp::Pin(pin_n(n))).await })
        })
        .collect();
    while consensus.requests.max_capacity() - consensus.requests.capacity() < 5 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    consensus.shutdown.cancel();
    assert!(!consensus.is_ready());
    release.send(()).unwrap();
    consensus.shutdown().await;

    assert_eq!(in_flight.await.unwrap().unwrap(), Some(StateChange::Pinned { pin: pin_n(0), previous: None }));
    for commit in queued {
        assert!(matches!(commit.await.unwrap(), Err(Error::ShuttingDown)));
    }
    assert!(matches!(consensus.commit(StateOp::Pin(pin_n(9))).await, Err(Error::ShuttingDown)));
    assert_eq!(state.scan(None, usize::MAX).unwrap(), vec![pin_n(0)]);
}

#[tokio::test]
async fn restore_replaces_the_pinset_and_tells_the_observer() {
    let dir = TempDir::new().unwrap();
    let (consensus, recorder) = start(&dir);
    consensus.commit(StateOp::Pin(pin_n(1))).await.unwrap();
    let mut snapshot = Vec::new();
    consensus.state().snapshot(&mut snapshot).unwrap();
    consensus.commit(StateOp::Pin(pin_n(2))).await.unwrap();

    let damaged = snapshot[..snapshot.len() - 1].to_vec();
    assert!(matches!(consensus.restore(std::io::Cursor::new(damaged)).await, Err(Error::Storage(_))));
    assert!(recorder.restores.lock().unwrap().is_empty());
    assert_eq!(consensus.state().len().unwrap(), 2);

    let summary = consensus.restore(std::io::Cursor::new(snapshot)).await.unwrap();
    assert_eq!(summary, RestoreSummary { pins: 1, last_applied: None });
    assert_eq!(*recorder.restores.lock().unwrap(), vec![summary]);
    assert_eq!(consensus.state().scan(None, 10).unwrap(), vec![pin_n(1)]);
    assert!(consensus.is_ready());
}

#[test]
fn a_failing_op_does_not_fail_the_others_of_its_batch() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("state.redb");
    PinState::open(&path).unwrap().apply(&[StateOp::Pin(pin_n(1))]).unwrap();
    {
        // Damage the record of pin 1 behind the state's back.
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let mut pins = txn.open_table(redb::TableDefinition::<&[u8], &[u8]>::new("pins")).unwrap();
        pins.insert(pin_n(1).key().as_bytes(), [1u8, 0xff].as_slice()).unwrap();
        drop(pins);
        txn.commit().unwrap();
    }
    let state = PinState::open(&path).unwrap();
    let counters = Counters::default();
    let outcomes = apply_batch(
        &state,
        &[StateOp::Pin(pin_n(2)), StateOp::Unpin(pin_n(1).key()), StateOp::Pin(pin_n(3))],
        &counters,
    );
    assert!(matches!(&outcomes[0], Ok(Some(StateChange::Pinned { .. }))));
    assert!(matches!(&outcomes[1], Err(Error::Storage(msg)) if msg.contains("damaged")));
    assert!(matches!(&outcomes[2], Ok(Some(StateChange::Pinned { .. }))));
    // The batch, then each of its three ops alone.
    assert_eq!(counters.transactions.load(Ordering::Relaxed), 4);
    assert_eq!(state.get(&pin_n(3).key()).unwrap(), Some(pin_n(3)));
}
