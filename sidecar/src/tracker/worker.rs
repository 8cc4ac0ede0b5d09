//! The dispatcher: takes operations off the queue and runs them against the daemon, at most
//! `concurrent_pins` at once; and the task that drops the unpin records of finished unpins. The
//! only places (with `sync`) where the tracker does IO.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::queue::{Job, OpKind, Outcome};
use super::Shared;
use crate::{Error, Result};

pub(super) async fn dispatch(shared: Arc<Shared>, cancel: CancellationToken) {
    let slots = Arc::new(Semaphore::new(shared.config.concurrent_pins));
    let mut running = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = cancel.cancelled() => break,
        };
        let Some((job, records_before)) = next_job(&shared, &cancel).await else {
            break;
        };
        running.spawn(execute(shared.clone(), job, records_before, permit));
        while let Some(ended) = running.try_join_next() {
            if let Err(e) = ended {
                error!(error = %e, "a pin tracker operation task failed");
            }
        }
    }
    running.shutdown().await;
}

/// Waits for an operation that may run now; `None` on cancellation. With it comes the latest
/// unpin record `seq` from before it was taken: the records its success fulfils.
async fn next_job(shared: &Shared, cancel: &CancellationToken) -> Option<(Job, u64)> {
    loop {
        let records_before = shared.pins.latest_unpin_seq();
        let (job, wake_at) = {
            let now = Instant::now();
            let mut inner = shared.lock();
            match inner.daemon.paused(now) {
                Some(until) => (None, Some(until)),
                None => (inner.ops.next(now), inner.ops.next_timer()),
            }
        };
        if let Some(job) = job {
            return Some((job, records_before));
        }
        tokio::select! {
            _ = shared.work.notified() => {}
            _ = sleep_until(wake_at) => {}
            _ = cancel.cancelled() => return None,
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs one daemon call; the slot is given back only once the outcome is recorded, so the next
/// operation picked sees it.
async fn execute(shared: Arc<Shared>, job: Job, records_before: u64, _slot: OwnedSemaphorePermit) {
    let result = match job.kind {
        OpKind::Pin => shared.ipfs.pin(&job.cid, job.mode, &job.origins).await,
        OpKind::Unpin => shared.ipfs.unpin(&job.cid).await,
    };
    match &result {
        Ok(()) => debug!(cid = %job.cid, op = ?job.kind, "IPFS operation done"),
        Err(Error::IpfsUnreachable(_)) => {
            debug!(cid = %job.cid, op = ?job.kind, "IPFS daemon unreachable")
        }
        Err(e) => warn!(cid = %job.cid, op = ?job.kind, error = %e, "IPFS operation failed"),
    }
    shared.finish(&job, records_before, result);
}

/// How long a finished unpin waits for others to share the transaction that drops their records.
const FORGET_DELAY: Duration = Duration::from_millis(250);

/// Drops the unpin records of finished unpins, in batches. Until dropped, a record only costs a
/// check of the daemon's pin set at the next sync.
pub(super) async fn forget_finished_unpins(shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = shared.unpins_finished.notified() => {}
            _ = cancel.cancelled() => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(FORGET_DELAY) => {}
            _ = cancel.cancelled() => break,
        }
        forget(&shared).await;
    }
    // A clean stop keeps the next start from checking these again.
    forget(&shared).await;
}

async fn forget(shared: &Shared) {
    let done = std::mem::take(&mut shared.lock().finished_unpins);
    if done.is_empty() {
        return;
    }
    let pins = shared.pins.clone();
    let count = done.len();
    let result = tokio::task::spawn_blocking(move || pins.forget_unpins(&done))
        .await
        .unwrap_or_else(|e| Err(Error::Storage(format!("forgetting unpin records: {e}"))));
    if let Err(e) = result {
        warn!(error = %e, count, "could not drop the records of finished unpins; the next sync checks them again");
    }
}

impl Shared {
    fn finish(&self, job: &Job, records_before: u64, result: Result<()>) {
        let now = Instant::now();
        let outcome = match result {
            Ok(()) => Outcome::Done,
            Err(e @ Error::IpfsUnreachable(_)) => Outcome::Unreachable(e.to_string()),
            Err(e) => Outcome::Failed(e.to_string()),
        };
        let mut inner = self.lock();
        match &outcome {
            Outcome::Done => {
                inner.ops_done += 1;
                inner.daemon.up();
                let pinned = (job.kind == OpKind::Pin).then_some(job.mode);
                inner.ipfs.record(&job.key, pinned);
                if job.kind == OpKind::Unpin {
                    let done = (job.key.clone(), records_before);
                    inner.finished_unpins.push(done);
                    if inner.finished_unpins.len() == 1 {
                        self.unpins_finished.notify_one();
                    }
                }
            }
            Outcome::Unreachable(error) => {
                inner.ops_failed += 1;
                if let Some(pause) = inner.daemon.down(now, &self.config) {
                    warn!(error = %error, pause = ?pause, "IPFS daemon unreachable: pausing pin operations");
                }
            }
            Outcome::Failed(_) => {
                inner.ops_failed += 1;
                inner.daemon.up();
            }
        }
        inner.ops.finish(&job.key, outcome, now, &self.config);
        drop(inner);
        self.work.notify_one();
    }
}
