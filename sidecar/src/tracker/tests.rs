//! The tracker end to end against the fake IPFS daemon and a real pinset in a temporary directory.
//! Waits are on conditions (polled, with a deadline), never on the clock; tests about backoff run
//! on tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use libp2p_identity::PeerId;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::ipfs::fake::{raw_block_cid, FakeIpfs};
use crate::state::{PinState, StateOp};
use crate::types::fixtures;

fn cid(n: u32) -> Cid {
    raw_block_cid(&n.to_be_bytes())
}

fn config() -> TrackerConfig {
    TrackerConfig {
        concurrent_pins: 10,
        retry_backoff_base: Duration::from_secs(1),
        retry_backoff_cap: Duration::from_secs(8),
        max_retries: 3,
        // Far away: tests sync explicitly.
        ipfs_sync_interval: Duration::from_secs(24 * 3600),
        pin_recover_interval: Duration::from_secs(24 * 3600),
        ..TrackerConfig::default()
    }
}

struct Harness {
    _dir: TempDir,
    state: Arc<PinState>,
    ipfs: Arc<FakeIpfs>,
    me: PeerId,
    tracker: PinTracker,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Harness {
    /// A tracker over an empty pinset, not started.
    fn new(config: TrackerConfig) -> Self {
        let dir = TempDir::new().unwrap();
        let state = Arc::new(PinState::open(&dir.path().join("state.redb")).unwrap());
        let ipfs = Arc::new(FakeIpfs::new());
        let me = PeerId::random();
        let tracker = PinTracker::new(config, me, ipfs.clone(), state.clone()).unwrap();
        Harness { _dir: dir, state, ipfs, me, tracker, cancel: CancellationToken::new(), task: None }
    }

    async fn started(config: TrackerConfig) -> Self {
        let mut harness = Self::new(config);
        harness.start().await;
        harness
    }

    async fn start(&mut self) {
        self.task = Some(self.tracker.start(self.cancel.clone()));
        self.wait_for("the first sync", || self.tracker.ipfs_pinset_known()).await;
    }

    /// A pin allocated to this peer.
    fn here(&self, cid: Cid) -> Pin {
        Pin { cid, allocations: vec![self.me], ..fixtures::pin("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG") }
    }

    fn elsewhere(&self, cid: Cid) -> Pin {
        Pin { allocations: vec![PeerId::random()], ..self.here(cid) }
    }

    /// Applies `ops` to the pinset and tells the tracker, as the consensus layer does.
    fn apply(&self, ops: Vec<StateOp>) {
        let changes = self.state.apply(&ops).unwrap();
        self.tracker.on_changes(&changes);
    }

    fn pin(&self, pins: impl IntoIterator<Item = Pin>) {
        self.apply(pins.into_iter().map(StateOp::Pin).collect());
    }

    fn unpin(&self, cid: Cid) {
        self.apply(vec![StateOp::Unpin(CidKey::of(&cid))]);
    }

    /// The CIDs of the pinset's unpin records.
    fn unpin_records(&self) -> Vec<Cid> {
        let records = self.state.pending_unpins(None, usize::MAX).unwrap();
        records.into_iter().map(|record| record.cid).collect()
    }

    fn status(&self, cid: Cid) -> LocalPinStatus {
        let key = CidKey::of(&cid);
        self.tracker.status_of(&key, self.state.get(&key).unwrap().as_ref())
    }

    fn is(&self, cid: Cid, status: TrackerStatus) -> bool {
        self.status(cid).status == status
    }

    async fn wait_for(&self, what: &str, condition: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !condition() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_status(&self, cid: Cid, status: TrackerStatus) {
        self.wait_for(&format!("{cid} to be {status:?} (is {:?})", self.status(cid)), || self.is(cid, status)).await;
    }

    async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_pin_goes_through_every_status_of_its_life() {
    let h = Harness::started(TrackerConfig { concurrent_pins: 1, ..config() }).await;
    let (a, b) = (cid(1), cid(2));
    h.ipfs.hold_ops();
    h.pin([h.here(a), h.here(b)]);
    h.wait_for("a at the daemon", || h.ipfs.waiting_at_gate() == 1).await;
    assert_eq!(h.status(a).status, TrackerStatus::Pinning);
    let queued = h.status(b);
    assert_eq!((queued.status, queued.priority_pin, queued.attempt_count), (TrackerStatus::PinQueued, true, 0));

    h.ipfs.release_ops(1);
    h.wait_status(a, TrackerStatus::Pinned).await;
    h.wait_status(b, TrackerStatus::Pinning).await;

    // b holds the only slot, so a's unpin waits.
    h.unpin(a);
    assert_eq!(h.status(a).status, TrackerStatus::UnpinQueued);
    assert_eq!(h.tracker.in_flight_unpins().iter().map(|(c, _)| *c).collect::<Vec<_>>(), vec![a]);
    h.ipfs.release_ops(1);
    h.wait_status(b, TrackerStatus::Pinned).await;
    h.wait_status(a, TrackerStatus::Unpinning).await;
    h.ipfs.release_ops(1);
    h.wait_status(a, TrackerStatus::Unpinned).await;
    assert_eq!(h.ipfs.pinned(&a), None);
    assert_eq!(h.ipfs.pinned(&b), Some(PinMode::Recursive));
    assert!(h.tracker.in_flight_unpins().is_empty());
    let metrics = h.tracker.metrics();
    assert_eq!((metrics.ops_done, metrics.queued, metrics.in_progress, metrics.ipfs_pins), (3, 0, 0, 1));
}

#[tokio::test]
async fn at_most_concurrent_pins_calls_run_at_once() {
    let h = Harness::started(config()).await;
    h.ipfs.hold_ops();
    let cids: Vec<Cid> = (0..50).map(cid).collect();
    h.pin(cids.iter().map(|c| h.here(*c)));
    h.wait_for("10 pins at the daemon", || h.ipfs.waiting_at_gate() == 10).await;
    let metrics = h.tracker.metrics();
    assert_eq!((metrics.in_progress, metrics.queued), (10, 40));
    let pinning = cids.iter().filter(|c| h.is(**c, TrackerStatus::Pinning)).count();
    let queued = cids.iter().filter(|c| h.is(**c, TrackerStatus::PinQueued)).count();
    assert_eq!((pinning, queued), (10, 40));

    h.ipfs.open_gate();
    h.wait_for("all pinned", || cids.iter().all(|c| h.is(*c, TrackerStatus::Pinned))).await;
    assert_eq!(h.ipfs.max_ops_in_flight(), 10);
    assert_eq!(h.ipfs.pin_calls(), 50);
}

#[tokio::test(start_paused = true)]
async fn new_pins_overtake_retries() {
    let h = Harness::started(TrackerConfig { concurrent_pins: 1, ..config() }).await;
    let (a, b) = (cid(1), cid(2));
    let new: Vec<Cid> = (10..13).map(cid).collect();
    h.ipfs.record_pin_calls();
    h.ipfs.fail_next_pins(2, "transient");
    h.pin([h.here(a)]);
    h.pin([h.here(b)]);
    h.wait_for("both failed once", || [a, b].iter().all(|c| h.status(*c).attempt_count == 1)).await;
    let retrying = h.status(a);
    assert_eq!((retrying.status, retrying.priority_pin), (TrackerStatus::PinQueued, false));
    assert_eq!(retrying.error, "IPFS error: transient");

    h.ipfs.hold_ops();
    h.pin([h.here(new[0])]);
    h.wait_for("the first new pin at the daemon", || h.ipfs.waiting_at_gate() == 1).await;
    h.pin(new[1..].iter().map(|c| h.here(*c)));
    // Past any backoff: both retries are due while the new pins still wait.
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.ipfs.open_gate();
    h.wait_for("all pinned", || [a, b].iter().chain(&new).all(|c| h.is(*c, TrackerStatus::Pinned))).await;

    let calls = h.ipfs.recorded_pin_calls();
    assert_eq!(calls[..5], [a, b, new[0], new[1], new[2]]);
    let mut retries = calls[5..].to_vec();
    retries.sort_by_key(|c| c.to_bytes());
    let mut expected = vec![a, b];
    expected.sort_by_key(|c| c.to_bytes());
    assert_eq!(retries, expected);
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_then_stay_in_error_until_recovered() {
    let h = Harness::started(TrackerConfig { max_retries: 2, ..config() }).await;
    let a = cid(1);
    h.ipfs.fail_next_pins(3, "no space left");
    let start = tokio::time::Instant::now();
    h.pin([h.here(a)]);
    h.wait_status(a, TrackerStatus::PinError).await;
    // Two retries, after at least half of 1 s and of 2 s (jittered backoff).
    assert!(start.elapsed() >= Duration::from_millis(1500), "retried too early: {:?}", start.elapsed());
    let failed = h.status(a);
    assert_eq!((failed.attempt_count, failed.error.as_str()), (3, "IPFS error: no space left"));
    assert_eq!(h.ipfs.pin_calls(), 3);
    assert_eq!(h.tracker.metrics().errors, 1);

    // It stays in error: no more calls however long we wait.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!((h.ipfs.pin_calls(), h.status(a).status), (3, TrackerStatus::PinError));

    let pin = h.here(a);
    let recovered = h.tracker.recover(&pin.key(), Some(&pin));
    assert_eq!((recovered.status, recovered.priority_pin), (TrackerStatus::PinQueued, true));
    h.wait_status(a, TrackerStatus::Pinned).await;
    assert_eq!(h.ipfs.pin_calls(), 4);

    // A failed unpin of a CID that has left the pinset is recovered by CID alone.
    h.ipfs.fail_next_unpins(3, "daemon busy");
    h.unpin(a);
    h.wait_status(a, TrackerStatus::UnpinError).await;
    let recovered = h.tracker.recover(&CidKey::of(&a), None);
    assert_eq!(recovered.status, TrackerStatus::UnpinQueued);
    h.wait_status(a, TrackerStatus::Unpinned).await;
    assert_eq!(h.ipfs.pinned(&a), None);
    h.pin([h.here(a)]);
    h.wait_status(a, TrackerStatus::Pinned).await;

    // recover_all re-queues errors (only them).
    let b = cid(2);
    h.ipfs.fail_next_pins(3, "still no space");
    h.pin([h.here(b)]);
    h.wait_status(b, TrackerStatus::PinError).await;
    let all = h.tracker.recover_all();
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].0, all[0].1.status), (b, TrackerStatus::PinQueued));
    h.wait_status(b, TrackerStatus::Pinned).await;
    assert!(h.tracker.recover_all().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_daemon_loses_nothing_and_is_not_hammered() {
    let config = TrackerConfig { retry_backoff_cap: Duration::from_secs(60), max_retries: 1, ..config() };
    let h = Harness::started(config).await;
    h.ipfs.set_unreachable(true);
    let cids: Vec<Cid> = (0..100).map(cid).collect();
    h.pin(cids.iter().map(|c| h.here(*c)));
    tokio::time::sleep(Duration::from_secs(600)).await;

    // Paused between probes: at most one round of `concurrent_pins` calls per backoff (jittered,
    // capped at 60 s: some 10-25 rounds in 10 minutes), not one call per pin per retry.
    let calls = h.ipfs.pin_calls();
    assert!(calls <= 30 * 10, "{calls} calls in 10 minutes");
    for c in &cids {
        let status = h.status(*c);
        assert_eq!(status.status, TrackerStatus::PinQueued, "{c}: {status:?}");
    }
    assert!(h.status(cids[0]).error.contains("unreachable"), "{:?}", h.status(cids[0]));
    assert_eq!(h.tracker.metrics().errors, 0);

    h.ipfs.set_unreachable(false);
    h.wait_for("all pinned", || cids.iter().all(|c| h.is(*c, TrackerStatus::Pinned))).await;
    assert_eq!(h.ipfs.pin_count(), 100);
}

#[tokio::test]
async fn sync_repairs_pins_lost_behind_our_back_and_leaves_foreign_pins_alone() {
    let h = Harness::started(config()).await;
    let (a, b, foreign) = (cid(1), cid(2), cid(99));
    h.ipfs.add_pin_behind_back(&foreign, PinMode::Recursive);
    h.pin([h.here(a), h.here(b)]);
    h.wait_for("pinned", || h.is(a, TrackerStatus::Pinned) && h.is(b, TrackerStatus::Pinned)).await;

    h.ipfs.remove_pin_behind_back(&a);
    assert_eq!(h.status(a).status, TrackerStatus::Pinned, "last known until a sync");
    let report = h.tracker.sync_now().await.unwrap();
    assert_eq!((report.ipfs_pins, report.allocated_here, report.missing), (2, 2, 1));
    assert_eq!(report.missing_sample, vec![a]);
    h.wait_status(a, TrackerStatus::Pinned).await;
    assert_eq!(h.ipfs.pinned(&a), Some(PinMode::Recursive));
    assert_eq!(h.tracker.metrics().unexpectedly_unpinned, 1);

    assert_eq!(h.ipfs.pinned(&foreign), Some(PinMode::Recursive));
    assert_eq!(h.ipfs.unpin_calls(), 0);
    assert_eq!(h.status(foreign).status, TrackerStatus::Unpinned);
    let again = h.tracker.sync_now().await.unwrap();
    assert_eq!((again.missing, again.stale, again.already_done), (0, 0, 0));
}

#[tokio::test]
async fn startup_rebuilds_the_queue_from_the_pinset_and_the_daemon() {
    let mut h = Harness::new(config());
    let here: Vec<Cid> = (0..4).map(cid).collect();
    let (remote_pinned, remote) = (cid(10), cid(11));
    // The pinset as a previous process left it: this tracker was never told of these changes.
    let mut ops: Vec<StateOp> = here.iter().map(|c| StateOp::Pin(h.here(*c))).collect();
    ops.extend([StateOp::Pin(h.elsewhere(remote_pinned)), StateOp::Pin(h.elsewhere(remote))]);
    h.state.apply(&ops).unwrap();
    // What the daemon kept from before the restart, plus a pin of its own.
    for c in [here[0], here[1], remote_pinned, cid(20)] {
        h.ipfs.add_pin_behind_back(&c, PinMode::Recursive);
    }
    assert_eq!(h.status(here[0]).status, TrackerStatus::ClusterError, "nothing known before the first sync");

    h.start().await;
    h.wait_for("allocated pins pinned", || here.iter().all(|c| h.is(*c, TrackerStatus::Pinned))).await;
    assert_eq!(h.ipfs.pin_calls(), 2);
    assert_eq!(h.ipfs.unpin_calls(), 0);
    assert_eq!(h.ipfs.pinned(&remote), None);
    assert_eq!(h.status(remote_pinned).status, TrackerStatus::Remote);
    assert_eq!(h.ipfs.pin_count(), 6);
    h.stop().await;
}

#[tokio::test]
async fn a_killed_tracker_resumes_queued_and_running_pins_after_restart() {
    let mut first = Harness::started(TrackerConfig { concurrent_pins: 4, ..config() }).await;
    first.ipfs.hold_ops();
    let cids: Vec<Cid> = (0..20).map(cid).collect();
    first.pin(cids.iter().map(|c| first.here(*c)));
    first.wait_for("4 at the daemon", || first.ipfs.waiting_at_gate() == 4).await;
    first.ipfs.release_ops(2);
    first.wait_for("2 pinned", || first.ipfs.pin_count() == 2).await;
    // "kill -9": the tracker's tasks vanish mid-call; only the pinset and the daemon remain.
    first.task.take().unwrap().abort();
    first.ipfs.open_gate();

    let second = PinTracker::new(config(), first.me, first.ipfs.clone(), first.state.clone()).unwrap();
    let cancel = CancellationToken::new();
    let task = second.start(cancel.clone());
    let status = |c: &Cid| second.status_of(&CidKey::of(c), first.state.get(&CidKey::of(c)).unwrap().as_ref()).status;
    first.wait_for("all pinned after restart", || cids.iter().all(|c| status(c) == TrackerStatus::Pinned)).await;
    assert_eq!(first.ipfs.pin_count(), 20);
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn reallocations_and_unpins_replace_pending_operations() {
    let h = Harness::started(TrackerConfig { concurrent_pins: 1, ..config() }).await;
    let (a, b, c) = (cid(1), cid(2), cid(3));
    h.ipfs.record_pin_calls();

    // Allocated away: our pin is removed, the status becomes remote.
    h.pin([h.here(a)]);
    h.wait_status(a, TrackerStatus::Pinned).await;
    h.pin([h.elsewhere(a)]);
    h.wait_status(a, TrackerStatus::Remote).await;
    assert_eq!((h.ipfs.pinned(&a), h.ipfs.unpin_calls()), (None, 1));

    // A queued pin that is unpinned never reaches the daemon.
    h.ipfs.hold_ops();
    h.pin([h.here(b)]);
    h.wait_for("b at the daemon", || h.ipfs.waiting_at_gate() == 1).await;
    h.pin([h.here(c)]);
    assert_eq!(h.status(c).status, TrackerStatus::PinQueued);
    h.unpin(c);
    assert_eq!(h.status(c).status, TrackerStatus::Unpinned);
    assert!(h.tracker.in_flight_unpins().is_empty());

    // Unpinned while pinning: the unpin follows the pin; pinned again while unpinning: the pin
    // follows the unpin.
    h.unpin(b);
    assert_eq!(h.status(b).status, TrackerStatus::UnpinQueued);
    h.ipfs.release_ops(1);
    h.wait_status(b, TrackerStatus::Unpinning).await;
    h.pin([h.here(b)]);
    assert_eq!(h.status(b).status, TrackerStatus::PinQueued);
    h.ipfs.open_gate();
    h.wait_status(b, TrackerStatus::Pinned).await;
    assert_eq!(h.ipfs.pinned(&b), Some(PinMode::Recursive));
    assert!(!h.ipfs.recorded_pin_calls().contains(&c));
    assert_eq!(h.ipfs.pinned(&c), None);
}

#[tokio::test]
async fn a_full_queue_refuses_pins_with_an_error_until_a_sync_finds_room() {
    let h = Harness::started(TrackerConfig { concurrent_pins: 1, max_pin_queue_size: 3, ..config() }).await;
    h.ipfs.hold_ops();
    let cids: Vec<Cid> = (0..5).map(cid).collect();
    h.pin(cids.iter().map(|c| h.here(*c)));
    let refused = h.status(cids[4]);
    assert_eq!(refused.status, TrackerStatus::PinError);
    assert!(refused.error.contains("max_pin_queue_size"), "{}", refused.error);
    assert_eq!(h.tracker.metrics().queue_overflows, 2);

    h.ipfs.open_gate();
    h.wait_for("the accepted pins", || cids[..3].iter().all(|c| h.is(*c, TrackerStatus::Pinned))).await;
    let report = h.tracker.sync_now().await.unwrap();
    assert_eq!((report.missing, report.not_queued), (2, 0));
    h.wait_for("all pinned", || cids.iter().all(|c| h.is(*c, TrackerStatus::Pinned))).await;
}

#[tokio::test]
async fn a_restored_pinset_triggers_a_full_sync() {
    let h = Harness::started(config()).await;
    h.wait_for("the start-up rebuild to complete", || !h.tracker.metrics().syncing).await;
    let (before, syncs) = (h.ipfs.pin_ls_calls(), h.tracker.metrics().syncs);
    assert!(syncs >= 1, "the start-up rebuild is a completed sync");
    h.tracker.on_restored(&SnapshotSummary { pins: 0, last_applied: None });
    // Due from the restore on, so that nobody mistakes the statuses for synced meanwhile.
    assert!(h.tracker.metrics().syncing);
    h.wait_for("another pin/ls", || h.ipfs.pin_ls_calls() > before).await;
    h.wait_for("the sync to complete", || h.tracker.metrics().syncs > syncs).await;
    h.wait_for("no sync running or due", || !h.tracker.metrics().syncing).await;
}

#[tokio::test]
async fn a_sync_that_fails_is_still_due() {
    let h = Harness::new(config());
    h.ipfs.set_unreachable(true);
    let task = h.tracker.start(h.cancel.clone());
    h.wait_for("a start-up sync attempt", || h.ipfs.pin_ls_calls() > 0).await;
    let metrics = h.tracker.metrics();
    assert!(metrics.syncing && metrics.syncs == 0, "{metrics:?}");
    h.ipfs.set_unreachable(false);
    h.wait_for("the start-up rebuild to complete", || h.tracker.metrics().syncs == 1).await;
    assert!(!h.tracker.metrics().syncing);
    h.cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_restored_pinset_unpins_what_the_snapshot_removed_or_moved_away() {
    let h = Harness::started(config()).await;
    let (kept, moved, removed) = (cid(1), cid(2), cid(3));
    h.pin([kept, moved, removed].map(|c| h.here(c)));
    h.wait_for("pinned", || [kept, moved, removed].iter().all(|c| h.is(*c, TrackerStatus::Pinned))).await;

    // The leader's pinset after ops this peer missed and that a snapshot compacted away.
    let dir = TempDir::new().unwrap();
    let leader = PinState::open(&dir.path().join("leader.redb")).unwrap();
    leader.apply(&[StateOp::Pin(h.here(kept)), StateOp::Pin(h.elsewhere(moved))]).unwrap();
    let mut snapshot = Vec::new();
    leader.snapshot(&mut snapshot).unwrap();
    let summary = h.state.restore(snapshot.as_slice()).unwrap();
    h.tracker.on_restored(&summary);

    h.wait_for("the unpins done and their records dropped", || {
        h.ipfs.pinned(&moved).is_none() && h.ipfs.pinned(&removed).is_none() && h.unpin_records().is_empty()
    })
    .await;
    assert_eq!(h.ipfs.pinned(&kept), Some(PinMode::Recursive));
    assert_eq!(h.ipfs.unpin_calls(), 2);
}

/// Throughput of the tracker alone (the pinset write is not measured): `cargo test --release -p
/// sidecar --lib tracker::tests::throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run in release"]
async fn throughput_of_100k_pins_exceeds_10k_per_second() {
    const PINS: u32 = 100_000;
    let h = Harness::started(config()).await;
    let pins: Vec<Pin> = (0..PINS).map(|n| h.here(cid(n))).collect();
    let changes: Vec<StateChange> = pins.into_iter().map(|pin| StateChange::Pinned { pin, previous: None }).collect();
    let start = std::time::Instant::now();
    for batch in changes.chunks(1024) {
        h.tracker.on_changes(batch);
    }
    let observed = start.elapsed();
    h.wait_for("every pin done", || h.tracker.metrics().ops_done == u64::from(PINS)).await;
    let total = start.elapsed();
    let rate = f64::from(PINS) / total.as_secs_f64();
    println!("on_changes of {PINS} pins: {observed:?}; all pinned after {total:?} ({rate:.0} pins/s)");
    assert!(rate >= 10_000.0, "{rate:.0} pins/s");
}

#[tokio::test]
async fn sync_cancels_pin_operations_whose_pin_left_without_a_change() {
    let h = Harness::started(TrackerConfig { concurrent_pins: 1, ..config() }).await;
    let (a, b) = (cid(1), cid(2));
    h.ipfs.hold_ops();
    h.pin([h.here(a), h.here(b)]);
    h.wait_for("a at the daemon", || h.ipfs.waiting_at_gate() == 1).await;
    // b leaves the pinset behind the tracker's back (as a restored snapshot would do it).
    h.state.apply(&[StateOp::Unpin(CidKey::of(&b))]).unwrap();
    assert_eq!(h.status(b).status, TrackerStatus::PinQueued);
    let report = h.tracker.sync_now().await.unwrap();
    assert_eq!(report.stale, 1);
    assert_eq!(h.status(b).status, TrackerStatus::Unpinned);
    h.ipfs.open_gate();
    h.wait_status(a, TrackerStatus::Pinned).await;
    assert_eq!((h.ipfs.pinned(&b), h.ipfs.pin_calls()), (None, 1));
}

#[tokio::test]
async fn unpins_acknowledged_before_a_kill_run_after_the_restart() {
    let mut first = Harness::started(TrackerConfig { concurrent_pins: 1, ..config() }).await;
    let (unpinned, moved, repinned, busy, foreign) = (cid(1), cid(2), cid(3), cid(4), cid(99));
    first.ipfs.add_pin_behind_back(&foreign, PinMode::Recursive);
    first.pin([unpinned, moved, repinned].map(|c| first.here(c)));
    first.wait_for("pinned", || [unpinned, moved, repinned].iter().all(|c| first.is(*c, TrackerStatus::Pinned))).await;

    // The only slot is busy: the removals are acknowledged, their unpins only queued.
    first.ipfs.hold_ops();
    first.pin([first.here(busy)]);
    first.wait_for("the busy pin at the daemon", || first.ipfs.waiting_at_gate() == 1).await;
    first.unpin(unpinned);
    first.pin([first.elsewhere(moved)]);
    first.unpin(repinned);
    first.pin([first.here(repinned)]);
    assert_eq!(first.status(unpinned).status, TrackerStatus::UnpinQueued);
    assert_eq!(first.status(moved).status, TrackerStatus::UnpinQueued);
    assert_eq!(first.status(repinned).status, TrackerStatus::Pinned);
    let mut recorded = first.unpin_records();
    recorded.sort_by_key(CidKey::of);
    let mut expected = vec![unpinned, moved];
    expected.sort_by_key(CidKey::of);
    assert_eq!(recorded, expected);

    // "kill -9": the queued unpins vanish with the tracker; the pinset and the daemon remain.
    first.task.take().unwrap().abort();
    first.ipfs.open_gate();
    assert_eq!(first.ipfs.unpin_calls(), 0);

    let second = PinTracker::new(config(), first.me, first.ipfs.clone(), first.state.clone()).unwrap();
    let cancel = CancellationToken::new();
    let task = second.start(cancel.clone());
    first
        .wait_for("the unpins done and their records dropped", || {
            first.ipfs.pinned(&unpinned).is_none()
                && first.ipfs.pinned(&moved).is_none()
                && first.ipfs.pinned(&busy).is_some()
                && first.unpin_records().is_empty()
        })
        .await;
    assert_eq!(first.ipfs.pinned(&repinned), Some(PinMode::Recursive));
    assert_eq!(
        first.ipfs.pinned(&foreign),
        Some(PinMode::Recursive),
        "a pin the cluster never asked for is left alone"
    );
    assert_eq!(first.ipfs.unpin_calls(), 2);
    let status = |c: &Cid| {
        let key = CidKey::of(c);
        second.status_of(&key, first.state.get(&key).unwrap().as_ref()).status
    };
    assert_eq!(
        [unpinned, moved, repinned].map(|c| status(&c)),
        [TrackerStatus::Unpinned, TrackerStatus::Remote, TrackerStatus::Pinned]
    );
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn syncs_act_on_unpin_records_that_name_this_peer_only() {
    let h = Harness::started(config()).await;
    let (ours, theirs, missed) = (cid(1), cid(2), cid(3));

    // A finished unpin drops its record.
    h.pin([h.here(ours)]);
    h.wait_status(ours, TrackerStatus::Pinned).await;
    h.unpin(ours);
    h.wait_for("the record of a done unpin dropped", || h.ipfs.pinned(&ours).is_none() && h.unpin_records().is_empty())
        .await;

    // Pinned on another peer in the cluster and by a user directly in this daemon.
    h.ipfs.add_pin_behind_back(&theirs, PinMode::Recursive);
    h.pin([h.elsewhere(theirs)]);
    h.unpin(theirs);
    // Removed while this tracker did not hear of it (as when a previous process was killed).
    h.pin([h.here(missed)]);
    h.wait_status(missed, TrackerStatus::Pinned).await;
    h.state.apply(&[StateOp::Unpin(CidKey::of(&missed))]).unwrap();
    assert_eq!(h.unpin_records().len(), 2);

    let report = h.tracker.sync_now().await.unwrap();
    assert_eq!(report.leftover_unpins, 1);
    h.wait_for("the missed unpin done and every record dropped", || {
        h.ipfs.pinned(&missed).is_none() && h.unpin_records().is_empty()
    })
    .await;
    assert_eq!(h.ipfs.pinned(&theirs), Some(PinMode::Recursive));
    assert_eq!(h.ipfs.unpin_calls(), 2);
    assert_eq!(h.tracker.sync_now().await.unwrap().leftover_unpins, 0);
}
