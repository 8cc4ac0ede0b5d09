//! The pin tracker: makes the local IPFS daemon hold what the pinset allocates to this peer.
//!
//! Memory is what keeps a million pins affordable: the tracker holds no `Pin`s. It keeps
//! - the daemon's pin set as last known (`CidKey -> PinMode`, from `pin/ls` and our own calls), and
//! - an operation table with only the CIDs that have something queued, running, waiting to retry
//!   or failed (see `queue`).
//!
//! Everything else is derived on demand: [`PinTracker::status_of`] combines the pin (from the
//! pinset, passed in by the caller), the operation and the daemon's view (see `status`).
//!
//! Work arrives through [`StateObserver::on_changes`] (cheap: a lock and a table update per
//! change), is decided by pure functions (`decide`), run by a dispatcher with at most
//! `concurrent_pins` daemon calls at once (`worker`), and checked by a periodic sync with the
//! daemon's pin set (`sync`). The tracker persists nothing itself: on start the first sync rebuilds
//! the queue from the durable pinset, its unpin records (removals whose IPFS side may not have run,
//! written with the removal, see [`crate::state::PendingUnpin`]) and `pin/ls`, so a peer killed
//! with work queued resumes it. A successful unpin drops its record (`worker`).

mod config;
mod decide;
mod queue;
mod status;
mod sync;
#[cfg(test)]
mod tests;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::ipfs::IpfsConnector;
use crate::state::{SnapshotSummary, StateChange, StateObserver};
use crate::types::{Cid, CidKey, Pin, PinMode, TrackerStatus};
use crate::Result;

pub use config::TrackerConfig;
pub use sync::{PinSource, SyncReport};

use decide::Plan;
use queue::{Lane, Op, OpKind, OpTable, Phase, Target};
use status::{IpfsView, Membership};

/// One CID's status on this peer, as `peer_map` entries report it.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalPinStatus {
    pub status: TrackerStatus,
    /// The last error, also while a retry is queued; empty when none.
    pub error: String,
    /// Daemon calls made for the current operation.
    pub attempt_count: u32,
    /// A new (or recovered) operation, served before retries.
    pub priority_pin: bool,
    /// When the operation last changed; for CIDs without one, the pin's timestamp.
    pub timestamp: DateTime<Utc>,
}

/// Counters for Prometheus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerMetrics {
    /// Operations waiting to run (queued or waiting out a retry backoff).
    pub queued: u64,
    /// Operations at the daemon now.
    pub in_progress: u64,
    /// Operations failed for good (`pin_error`, `unpin_error`) until recovered.
    pub errors: u64,
    /// Pins the daemon holds, as last known.
    pub ipfs_pins: u64,
    /// Daemon calls that succeeded / failed, since start.
    pub ops_done: u64,
    pub ops_failed: u64,
    /// Pins found missing from the daemon by a sync (after the first) and queued for repair.
    pub unexpectedly_unpinned: u64,
    /// Pins refused because the queue was full.
    pub queue_overflows: u64,
    /// A full sync with the daemon's pin set runs or is due: the start-up rebuild, the sync after
    /// a state restore, or a periodic one.
    pub syncing: bool,
    /// Full syncs that completed, since start.
    pub syncs: u64,
}

/// The tracker. Cheap to clone: clones share one tracker.
#[derive(Clone)]
pub struct PinTracker {
    shared: Arc<Shared>,
}

struct Shared {
    config: TrackerConfig,
    me: PeerId,
    ipfs: Arc<dyn IpfsConnector>,
    pins: Arc<dyn PinSource>,
    inner: Mutex<Inner>,
    /// Wakes the dispatcher: work was queued or a daemon call ended.
    work: Notify,
    /// Asks the maintenance task for a full sync now (after a state restore).
    resync: Notify,
    /// Wakes the task that drops the unpin records of finished unpins.
    unpins_finished: Notify,
    /// Syncs run one at a time.
    sync_lock: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Inner {
    ops: OpTable,
    ipfs: KnownPins,
    /// A pin was refused for lack of room since the last sync that found room for everything.
    queue_full: bool,
    /// Unpins done since their records were last dropped, each with the latest record `seq` from
    /// before it started (see [`crate::state::PinState::latest_unpin_seq`]).
    finished_unpins: Vec<(CidKey, u64)>,
    daemon: DaemonHealth,
    ops_done: u64,
    ops_failed: u64,
    unexpectedly_unpinned: u64,
    queue_overflows: u64,
    sync: SyncProgress,
}

/// Whether the tracker's statuses reflect a full sync of the current pinset.
struct SyncProgress {
    /// A sync was asked for and has not started yet: at start-up, and after a state restore.
    due: bool,
    running: bool,
    completed: u64,
}

impl Default for SyncProgress {
    fn default() -> Self {
        // The start-up rebuild is a sync like any other.
        SyncProgress { due: true, running: false, completed: 0 }
    }
}

/// The daemon's pin set as last known, and the bookkeeping a sync needs to merge a fresh `pin/ls`
/// with what happened while it ran.
#[derive(Default)]
struct KnownPins {
    pins: HashMap<CidKey, PinMode>,
    /// False until the first `pin/ls` succeeded.
    known: bool,
    /// While a sync runs: CIDs changed by the pinset, a recover or our own daemon calls since it
    /// started. The sync leaves them to whoever changed them.
    touched: Option<HashSet<CidKey>>,
    /// While a sync waits for `pin/ls`: CIDs our own calls pinned or unpinned meanwhile, whose
    /// entry in the listing may be older than what we know.
    changed_during_listing: Option<HashSet<CidKey>>,
}

impl KnownPins {
    fn view(&self, key: &CidKey) -> IpfsView {
        match self.pins.get(key) {
            Some(mode) => IpfsView::Has(*mode),
            None if self.known => IpfsView::Missing,
            None => IpfsView::Unknown,
        }
    }

    fn touch(&mut self, key: &CidKey) {
        if let Some(touched) = self.touched.as_mut() {
            touched.insert(key.clone());
        }
    }

    fn was_touched(&self, key: &CidKey) -> bool {
        self.touched.as_ref().is_some_and(|touched| touched.contains(key))
    }

    /// Records what one of our daemon calls did.
    fn record(&mut self, key: &CidKey, pinned: Option<PinMode>) {
        match pinned {
            // A recursive pin already covers a direct one.
            Some(mode) => {
                let current = self.pins.entry(key.clone()).or_insert(mode);
                if mode == PinMode::Recursive {
                    *current = mode;
                }
            }
            None => {
                self.pins.remove(key);
            }
        }
        self.touch(key);
        if let Some(changed) = self.changed_during_listing.as_mut() {
            changed.insert(key.clone());
        }
    }

    /// Replaces the known set with a fresh listing, keeping what our calls did meanwhile.
    fn install(&mut self, mut listed: HashMap<CidKey, PinMode>) {
        for key in self.changed_during_listing.take().unwrap_or_default() {
            match self.pins.get(&key) {
                Some(mode) => listed.insert(key, *mode),
                None => listed.remove(&key),
            };
        }
        self.pins = listed;
        self.known = true;
    }
}

/// Pauses all daemon calls while the daemon is unreachable, with a growing backoff, so a dead
/// daemon costs one probe per backoff instead of a failing call per queued pin.
#[derive(Default)]
struct DaemonHealth {
    paused_until: Option<Instant>,
    failures: u32,
}

impl DaemonHealth {
    /// Returns the pause when this failure starts a new one (failures of calls that were already
    /// in flight do not compound it).
    fn down(&mut self, now: Instant, config: &TrackerConfig) -> Option<Duration> {
        if self.paused_until.is_some_and(|until| now < until) {
            return None;
        }
        self.failures += 1;
        let pause = config.backoff(self.failures);
        self.paused_until = Some(now + pause);
        Some(pause)
    }

    fn up(&mut self) {
        *self = DaemonHealth::default();
    }

    fn paused(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|until| *until > now)
    }
}

/// What an operation is about, taken from a pin or from an existing operation.
struct Subject {
    cid: Cid,
    mode: PinMode,
    origins: Vec<Multiaddr>,
    in_pinset: bool,
}

impl Subject {
    fn of(pin: &Pin, in_pinset: bool) -> Self {
        Subject { cid: pin.cid, mode: pin.mode, origins: pin.origins.clone(), in_pinset }
    }

    fn of_op(op: &Op) -> Self {
        Subject { cid: op.cid, mode: op.mode, origins: op.origins.clone(), in_pinset: op.in_pinset }
    }

    fn target(&self, kind: OpKind) -> Target {
        Target { cid: self.cid, kind, mode: self.mode, origins: self.origins.clone(), in_pinset: self.in_pinset }
    }
}

impl Inner {
    fn op_state(&self, key: &CidKey) -> Option<(OpKind, Phase)> {
        self.ops.get(key).map(|op| (op.kind, op.phase))
    }

    /// Carries out a plan; true when something was queued (the dispatcher must be woken).
    fn carry_out(
        &mut self,
        key: &CidKey,
        plan: Plan,
        subject: &Subject,
        lane: Lane,
        keep_attempts: bool,
        max_queue: usize,
    ) -> bool {
        match plan {
            Plan::Nothing => false,
            Plan::Cancel => {
                self.ops.cancel(key);
                false
            }
            Plan::Retarget(kind) => {
                self.ops.retarget(key, subject.target(kind));
                false
            }
            Plan::Queue(kind) => {
                // Unpins are never refused: they only exist for pins the daemon holds, a bounded set,
                // and dropping one would leave a pin nobody removes.
                if kind == OpKind::Pin && self.ops.get(key).is_none() && self.ops.len() >= max_queue {
                    if !self.queue_full {
                        warn!(
                            max_pin_queue_size = max_queue,
                            "pin queue full: new pins get pin_error until a sync finds room"
                        );
                    }
                    self.queue_full = true;
                    self.queue_overflows += 1;
                    return false;
                }
                self.ops.queue(key, subject.target(kind), lane, keep_attempts);
                true
            }
        }
    }
}

fn op_status(op: &Op) -> LocalPinStatus {
    LocalPinStatus {
        status: status::of_op(op.kind, op.phase),
        error: op.error.clone().unwrap_or_default(),
        attempt_count: op.attempt_count,
        priority_pin: op.priority,
        timestamp: op.timestamp,
    }
}

impl PinTracker {
    /// A tracker for peer `me`. `pins` is the durable pinset (`Arc<PinState>` works as is). Nothing
    /// runs until [`PinTracker::start`] (or [`PinTracker::run`]); changes observed before are queued.
    pub fn new(
        config: TrackerConfig,
        me: PeerId,
        ipfs: Arc<dyn IpfsConnector>,
        pins: Arc<dyn PinSource>,
    ) -> Result<Self> {
        config.validate()?;
        let shared = Shared {
            config,
            me,
            ipfs,
            pins,
            inner: Mutex::new(Inner::default()),
            work: Notify::new(),
            resync: Notify::new(),
            unpins_finished: Notify::new(),
            sync_lock: tokio::sync::Mutex::new(()),
        };
        Ok(PinTracker { shared: Arc::new(shared) })
    }

    /// Spawns [`PinTracker::run`].
    pub fn start(&self, cancel: CancellationToken) -> JoinHandle<()> {
        let tracker = self.clone();
        tokio::spawn(async move { tracker.run(cancel).await })
    }

    /// Runs the dispatcher, the dropping of finished unpins' records and the maintenance task
    /// (startup rebuild, periodic sync and recover) until `cancel` fires. Dropping the future stops
    /// them too, aborting daemon calls in flight (a restart redoes them from the pinset and its
    /// unpin records).
    pub async fn run(&self, cancel: CancellationToken) {
        info!(concurrent_pins = self.shared.config.concurrent_pins, "pin tracker starting");
        tokio::join!(
            worker::dispatch(self.shared.clone(), cancel.clone()),
            worker::forget_finished_unpins(self.shared.clone(), cancel.clone()),
            sync::maintain(self.clone(), cancel),
        );
        info!("pin tracker stopped");
    }

    /// The status of one CID. No IO: `pin` is the CID's entry in the pinset, if any.
    pub fn status_of(&self, key: &CidKey, pin: Option<&Pin>) -> LocalPinStatus {
        self.shared.status_of(&self.shared.lock(), key, pin)
    }

    /// The statuses of many CIDs, in order, under one lock (a page of a listing).
    pub fn statuses_of<'a>(
        &self,
        pins: impl IntoIterator<Item = (&'a CidKey, Option<&'a Pin>)>,
    ) -> Vec<LocalPinStatus> {
        let inner = self.shared.lock();
        pins.into_iter().map(|(key, pin)| self.shared.status_of(&inner, key, pin)).collect()
    }

    /// CIDs no longer in the pinset with an unpin queued, running or failed: the statuses a
    /// listing of the pinset alone would miss.
    pub fn in_flight_unpins(&self) -> Vec<(Cid, LocalPinStatus)> {
        let inner = self.shared.lock();
        inner
            .ops
            .iter()
            .filter(|(_, op)| op.kind == OpKind::Unpin && !op.in_pinset)
            .map(|(_, op)| (op.cid, op_status(op)))
            .collect()
    }

    /// Re-queues the CID's operation (high priority) when it failed or waits for a retry, or when
    /// its pin is allocated here and missing from the daemon. `pin` is the CID's pin, `None` when it
    /// has left the pinset (then only a failed unpin is left to recover). Returns the status after.
    pub fn recover(&self, key: &CidKey, pin: Option<&Pin>) -> LocalPinStatus {
        let queued = {
            let mut inner = self.shared.lock();
            let subject = match pin {
                Some(pin) => Some(Subject::of(pin, true)),
                None => inner.ops.get(key).map(Subject::of_op),
            };
            match subject {
                Some(subject) => {
                    inner.ipfs.touch(key);
                    let plan =
                        decide::plan_recover(self.shared.membership(pin), inner.op_state(key), inner.ipfs.view(key));
                    let max_queue = self.shared.config.max_pin_queue_size;
                    inner.carry_out(key, plan, &subject, Lane::Priority, true, max_queue)
                }
                None => false,
            }
        };
        if queued {
            self.shared.work.notify_one();
        }
        self.status_of(key, pin)
    }

    /// Re-queues every failed operation (`pin_error`, `unpin_error`), high priority, and returns
    /// them with their new status. Pins missing from the daemon are the sync's to find
    /// ([`PinTracker::sync_now`]).
    pub fn recover_all(&self) -> Vec<(Cid, LocalPinStatus)> {
        let mut inner = self.shared.lock();
        let failed: Vec<CidKey> =
            inner.ops.iter().filter(|(_, op)| op.phase == Phase::Failed).map(|(key, _)| key.clone()).collect();
        let mut recovered = Vec::with_capacity(failed.len());
        for key in failed {
            let Some(op) = inner.ops.get(&key) else {
                continue;
            };
            let subject = Subject::of_op(op);
            let plan = decide::plan_recover(Membership::Absent, Some((op.kind, op.phase)), inner.ipfs.view(&key));
            inner.ipfs.touch(&key);
            inner.carry_out(&key, plan, &subject, Lane::Priority, true, self.shared.config.max_pin_queue_size);
            if let Some(op) = inner.ops.get(&key) {
                recovered.push((op.cid, op_status(op)));
            }
        }
        drop(inner);
        if !recovered.is_empty() {
            self.shared.work.notify_one();
        }
        recovered
    }

    /// Reads the daemon's pin set now, queues the repair of pins allocated here that it lacks,
    /// drops failed operations the daemon has since made moot, and cancels pin operations for
    /// pins no longer allocated here. Pins the daemon holds outside the cluster are left alone.
    pub async fn sync_now(&self) -> Result<SyncReport> {
        sync::sync(&self.shared).await
    }

    /// Whether the daemon's pin set has been read at least once (until then, allocated pins without
    /// an operation report `cluster_error`).
    pub fn ipfs_pinset_known(&self) -> bool {
        self.shared.lock().ipfs.known
    }

    pub fn metrics(&self) -> TrackerMetrics {
        let inner = self.shared.lock();
        let counts = inner.ops.counts();
        TrackerMetrics {
            queued: counts.queued as u64,
            in_progress: counts.running as u64,
            errors: counts.failed as u64,
            ipfs_pins: inner.ipfs.pins.len() as u64,
            ops_done: inner.ops_done,
            ops_failed: inner.ops_failed,
            unexpectedly_unpinned: inner.unexpectedly_unpinned,
            queue_overflows: inner.queue_overflows,
            syncing: inner.sync.due || inner.sync.running,
            syncs: inner.sync.completed,
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the table consistent before anything that can panic, so a poisoned
        // lock still guards usable data; refusing it would take the whole peer down.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn status_of(&self, inner: &Inner, key: &CidKey, pin: Option<&Pin>) -> LocalPinStatus {
        if let Some(op) = inner.ops.get(key) {
            return op_status(op);
        }
        let (status, error) = status::of_idle(self.membership(pin), || inner.ipfs.view(key), inner.queue_full);
        LocalPinStatus {
            status,
            error: error.unwrap_or_default().to_string(),
            attempt_count: 0,
            priority_pin: false,
            timestamp: pin.map_or_else(Utc::now, |pin| pin.timestamp),
        }
    }

    fn membership(&self, pin: Option<&Pin>) -> Membership {
        match pin {
            None => Membership::Absent,
            Some(pin) if pin.is_allocated_to(&self.me) => Membership::Here(pin.mode),
            Some(_) => Membership::Remote,
        }
    }
}

impl StateObserver for PinTracker {
    fn on_changes(&self, changes: &[StateChange]) {
        let shared = &self.shared;
        let mut queued = false;
        let mut inner = shared.lock();
        for change in changes {
            let (pin, in_pinset) = match change {
                StateChange::Pinned { pin, .. } => (pin, true),
                StateChange::Unpinned { pin } => (pin, false),
            };
            let key = pin.key();
            inner.ipfs.touch(&key);
            inner.ops.set_in_pinset(&key, in_pinset);
            let want = decide::want_after(change, &shared.me);
            let plan = decide::plan_change(want, inner.op_state(&key), inner.ipfs.view(&key));
            let subject = Subject::of(pin, in_pinset);
            queued |= inner.carry_out(&key, plan, &subject, Lane::Priority, false, shared.config.max_pin_queue_size);
        }
        drop(inner);
        if queued {
            shared.work.notify_one();
        }
    }

    fn on_restored(&self, summary: &SnapshotSummary) {
        info!(pins = summary.pins, "pinset restored: full sync with the IPFS daemon");
        self.shared.lock().sync.due = true;
        self.shared.resync.notify_one();
    }
}
