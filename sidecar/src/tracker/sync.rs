//! Sync with the daemon's pin set, the startup rebuild (which is the first sync), and the periodic
//! maintenance: sync every `ipfs_sync_interval`, recover errors every `pin_recover_interval`.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::decide::{self, Plan, RecordPlan, Want};
use super::queue::{Lane, OpKind};
use super::{PinTracker, Shared, Subject};
use crate::state::{PendingUnpin, PinState};
use crate::types::{Cid, CidKey, Pin};
use crate::{Error, Result};

/// The pinset as the tracker reads it, with its unpin records. [`PinState`] is the real one.
pub trait PinSource: Send + Sync + 'static {
    /// Up to `limit` pins in key order, starting after `after`.
    fn scan(&self, after: Option<&CidKey>, limit: usize) -> Result<Vec<Pin>>;
    fn get(&self, key: &CidKey) -> Result<Option<Pin>>;
    /// See [`PinState::pending_unpins`].
    fn pending_unpins(&self, after: Option<&CidKey>, limit: usize) -> Result<Vec<PendingUnpin>>;
    /// See [`PinState::forget_unpins`].
    fn forget_unpins(&self, done: &[(CidKey, u64)]) -> Result<()>;
    /// See [`PinState::latest_unpin_seq`].
    fn latest_unpin_seq(&self) -> u64;
}

impl PinSource for PinState {
    fn scan(&self, after: Option<&CidKey>, limit: usize) -> Result<Vec<Pin>> {
        PinState::scan(self, after, limit)
    }

    fn get(&self, key: &CidKey) -> Result<Option<Pin>> {
        PinState::get(self, key)
    }

    fn pending_unpins(&self, after: Option<&CidKey>, limit: usize) -> Result<Vec<PendingUnpin>> {
        PinState::pending_unpins(self, after, limit)
    }

    fn forget_unpins(&self, done: &[(CidKey, u64)]) -> Result<()> {
        PinState::forget_unpins(self, done)
    }

    fn latest_unpin_seq(&self) -> u64 {
        PinState::latest_unpin_seq(self)
    }
}

/// What one sync found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Pins the daemon listed.
    pub ipfs_pins: usize,
    /// Pins of the pinset allocated here.
    pub allocated_here: u64,
    /// Allocated pins the daemon lacks with nothing queued for them, now queued. On the first
    /// sync that is the work a previous process left unfinished; later, pins lost behind the
    /// cluster's back (`unexpectedly_unpinned`).
    pub missing: u64,
    /// Up to [`SAMPLE`] of the missing CIDs.
    pub missing_sample: Vec<Cid>,
    /// Missing pins that were not queued because the queue is full.
    pub not_queued: u64,
    /// Waiting or failed operations dropped because the daemon already is as they wanted.
    pub already_done: u64,
    /// Pin operations for pins no longer allocated here (a state restore, a missed change),
    /// cancelled or turned into unpins.
    pub stale: u64,
    /// Unpin records of removals from this peer whose IPFS pin is still there with nothing queued
    /// for it (on the first sync: unpins a previous process acknowledged but did not run), now
    /// queued.
    pub leftover_unpins: u64,
}

/// Pins read from the pinset per step: bounds the memory a sync of a million pins needs.
const PAGE: usize = 10_000;
pub const SAMPLE: usize = 100;

/// Opens a sync's bookkeeping window and closes it however the sync ends.
struct Window<'a> {
    shared: &'a Shared,
    /// A sync was due when this one started: it still is unless this one completes.
    was_due: bool,
    completed: bool,
}

impl<'a> Window<'a> {
    fn open(shared: &'a Shared) -> Self {
        let mut inner = shared.lock();
        inner.ipfs.touched = Some(HashSet::new());
        inner.ipfs.changed_during_listing = Some(HashSet::new());
        // This sync reads the pinset as it is now: it is the one a restore asked for.
        let was_due = std::mem::replace(&mut inner.sync.due, false);
        inner.sync.running = true;
        Window { shared, was_due, completed: false }
    }

    fn complete(mut self) {
        self.completed = true;
    }
}

impl Drop for Window<'_> {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        inner.ipfs.touched = None;
        inner.ipfs.changed_during_listing = None;
        inner.sync.running = false;
        if self.completed {
            inner.sync.completed += 1;
        } else {
            inner.sync.due |= self.was_due;
        }
    }
}

pub(super) async fn sync(shared: &Arc<Shared>) -> Result<SyncReport> {
    let _one_at_a_time = shared.sync_lock.lock().await;
    let window = Window::open(shared);
    let listed = shared.ipfs.pin_ls().await?;
    let max_queue = shared.config.max_pin_queue_size;
    let mut report = SyncReport { ipfs_pins: listed.len(), ..SyncReport::default() };
    let (first, overflows_before, mut unconfirmed) = {
        let mut inner = shared.lock();
        let first = !inner.ipfs.known;
        inner.ipfs.install(listed);
        let moot: Vec<CidKey> = inner
            .ops
            .iter()
            .filter(|(key, op)| {
                !inner.ipfs.was_touched(key) && decide::already_done(op.kind, op.phase, op.mode, inner.ipfs.view(key))
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in &moot {
            inner.ops.cancel(key);
        }
        report.already_done = moot.len() as u64;
        // Pin operations from before this sync: each must find its pin allocated here in the
        // scan, or it is stale. (Only these: a rebuild's own repairs would make the set huge.)
        let unconfirmed: HashSet<CidKey> =
            inner.ops.iter().filter(|(_, op)| op.kind == OpKind::Pin).map(|(key, _)| key.clone()).collect();
        (first, inner.queue_overflows, unconfirmed)
    };

    let mut after: Option<CidKey> = None;
    loop {
        let page = scan_page(shared, after.take()).await?;
        let mut queued = false;
        {
            let mut inner = shared.lock();
            for pin in page.iter().filter(|pin| pin.is_allocated_to(&shared.me)) {
                report.allocated_here += 1;
                let key = pin.key();
                unconfirmed.remove(&key);
                if inner.ipfs.was_touched(&key) {
                    continue;
                }
                if decide::needs_repair(pin.mode, inner.op_state(&key), inner.ipfs.view(&key)) {
                    report.missing += 1;
                    if report.missing_sample.len() < SAMPLE {
                        report.missing_sample.push(pin.cid);
                    }
                    let subject = Subject::of(pin, true);
                    if inner.carry_out(&key, Plan::Queue(OpKind::Pin), &subject, Lane::Normal, false, max_queue) {
                        queued = true;
                        // The status shows the repair in progress; say why it is happening.
                        if !first {
                            inner.ops.annotate(&key, UNEXPECTEDLY_UNPINNED);
                        }
                    } else {
                        report.not_queued += 1;
                    }
                }
            }
        }
        if queued {
            shared.work.notify_one();
        }
        if page.len() < PAGE {
            break;
        }
        after = page.last().map(Pin::key);
    }

    let queued = {
        let mut inner = shared.lock();
        let stale: Vec<CidKey> = unconfirmed
            .into_iter()
            .filter(|key| {
                let pin_op = inner.ops.get(key).is_some_and(|op| op.kind == OpKind::Pin);
                pin_op && !inner.ipfs.was_touched(key)
            })
            .collect();
        let mut queued = false;
        for key in &stale {
            let Some(op) = inner.ops.get(key) else {
                continue;
            };
            let subject = Subject { in_pinset: false, ..Subject::of_op(op) };
            let plan = decide::plan_change(Want::NotPinned { ours: true }, inner.op_state(key), inner.ipfs.view(key));
            queued |= inner.carry_out(key, plan, &subject, Lane::Priority, false, max_queue);
        }
        report.stale = stale.len() as u64;
        if inner.queue_overflows == overflows_before {
            inner.queue_full = false;
        }
        if !first {
            inner.unexpectedly_unpinned += report.missing;
        }
        queued
    };
    if queued {
        shared.work.notify_one();
    }
    report.leftover_unpins = check_unpin_records(shared).await?;
    window.complete();
    Ok(report)
}

/// Goes through the unpin records: queues the unpins this peer still owes the daemon, and drops
/// the records that ask nothing of it (any more). Returns how many unpins it queued.
async fn check_unpin_records(shared: &Shared) -> Result<u64> {
    let max_queue = shared.config.max_pin_queue_size;
    let mut queued_total = 0;
    let mut after: Option<CidKey> = None;
    loop {
        let page = unpin_records_page(shared, after.take()).await?;
        let mut forget = Vec::new();
        let mut queued = false;
        {
            let mut inner = shared.lock();
            for (record, pin) in &page {
                let key = &record.key;
                if inner.ipfs.was_touched(key) {
                    continue;
                }
                let plan = decide::plan_unpin_record(
                    record.names(&shared.me),
                    shared.membership(pin.as_ref()),
                    inner.op_state(key),
                    inner.ipfs.view(key),
                );
                match plan {
                    RecordPlan::Keep => {}
                    RecordPlan::Forget => forget.push((key.clone(), record.seq)),
                    RecordPlan::Unpin => {
                        let subject = Subject {
                            cid: record.cid,
                            mode: record.mode,
                            origins: Vec::new(),
                            in_pinset: pin.is_some(),
                        };
                        queued |=
                            inner.carry_out(key, Plan::Queue(OpKind::Unpin), &subject, Lane::Normal, false, max_queue);
                        queued_total += 1;
                    }
                }
            }
        }
        if queued {
            shared.work.notify_one();
        }
        if !forget.is_empty() {
            let pins = shared.pins.clone();
            tokio::task::spawn_blocking(move || pins.forget_unpins(&forget))
                .await
                .map_err(|e| Error::Storage(format!("forgetting unpin records: {e}")))??;
        }
        if page.len() < PAGE {
            return Ok(queued_total);
        }
        after = page.last().map(|(record, _)| record.key.clone());
    }
}

/// A page of unpin records, each with the CID's pin as the pinset has it now.
async fn unpin_records_page(shared: &Shared, after: Option<CidKey>) -> Result<Vec<(PendingUnpin, Option<Pin>)>> {
    let pins = shared.pins.clone();
    tokio::task::spawn_blocking(move || {
        let records = pins.pending_unpins(after.as_ref(), PAGE)?;
        records
            .into_iter()
            .map(|record| {
                let pin = pins.get(&record.key)?;
                Ok((record, pin))
            })
            .collect()
    })
    .await
    .map_err(|e| Error::Storage(format!("reading unpin records: {e}")))?
}

/// The note a repaired pin carries while it is queued again.
const UNEXPECTEDLY_UNPINNED: &str = "unexpectedly_unpinned: missing from the IPFS daemon, pinning again";

async fn scan_page(shared: &Shared, after: Option<CidKey>) -> Result<Vec<Pin>> {
    let pins = shared.pins.clone();
    // The pinset is on disk: read it off the async threads.
    tokio::task::spawn_blocking(move || pins.scan(after.as_ref(), PAGE))
        .await
        .map_err(|e| Error::Storage(format!("scanning the pinset: {e}")))?
}

/// The startup rebuild, retried until it succeeds, then periodic syncs and recovers.
pub(super) async fn maintain(tracker: PinTracker, cancel: CancellationToken) {
    let shared = tracker.shared.clone();
    let config = &shared.config;
    let mut failures = 0;
    loop {
        let result = tokio::select! {
            result = sync(&shared) => result,
            _ = cancel.cancelled() => return,
        };
        match result {
            Ok(report) => {
                info!(
                    ipfs_pins = report.ipfs_pins,
                    allocated_here = report.allocated_here,
                    queued = report.missing,
                    not_queued = report.not_queued,
                    unpins_queued = report.leftover_unpins,
                    "pin tracker rebuilt its queue from the pinset and the IPFS pin set"
                );
                break;
            }
            Err(e) => {
                failures += 1;
                let delay = config.backoff(failures).min(config.ipfs_sync_interval);
                warn!(error = %e, retry_in = ?delay, "pin tracker start-up sync failed");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => return,
                }
            }
        }
    }

    let now = Instant::now();
    let mut sync_tick = interval_at(now + config.ipfs_sync_interval, config.ipfs_sync_interval);
    sync_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut recover_tick = interval_at(now + config.pin_recover_interval, config.pin_recover_interval);
    recover_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sync_tick.tick() => {}
            _ = shared.resync.notified() => {}
            _ = recover_tick.tick() => {
                let recovered = tracker.recover_all();
                if !recovered.is_empty() {
                    info!(count = recovered.len(), "re-queued failed pin operations");
                }
                continue;
            }
        }
        let result = tokio::select! {
            result = sync(&shared) => result,
            _ = cancel.cancelled() => return,
        };
        match result {
            Ok(report) if report.missing > 0 || report.stale > 0 => warn!(
                missing = report.missing, sample = ?report.missing_sample.iter().take(5).collect::<Vec<_>>(),
                stale = report.stale, "IPFS sync: repairing pins lost behind the cluster's back"
            ),
            Ok(report) if report.leftover_unpins > 0 => {
                info!(count = report.leftover_unpins, "IPFS sync: unpinning removed pins still in the daemon")
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "IPFS sync failed; statuses use the last known IPFS pin set")
            }
        }
    }
}
