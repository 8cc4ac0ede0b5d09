//! The dispatcher: takes operations off the queue and runs them against the daemon, at most
//! `concurrent_pins` at once. The only place (with `sync`) where the tracker does IO.

use std::sync::Arc;

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
        let Some(job) = next_job(&shared, &cancel).await else {
            break;
        };
        running.spawn(execute(shared.clone(), job, permit));
        while let Some(ended) = running.try_join_next() {
            if let Err(e) = ended {
                error!(error = %e, "a pin tracker operation task failed");
            }
        }
    }
    running.shutdown().await;
}

/// Waits for an operation that may run now; `None` on cancellation.
async fn next_job(shared: &Shared, cancel: &CancellationToken) -> Option<Job> {
    loop {
        let (job, wake_at) = {
            let now = Instant::now();
            let mut inner = shared.lock();
            match inner.daemon.paused(now) {
                Some(until) => (None, Some(until)),
                None => (inner.ops.next(now), inner.ops.next_timer()),
            }
        };
        if job.is_some() {
            return job;
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
async fn execute(shared: Arc<Shared>, job: Job, _slot: OwnedSemaphorePermit) {
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
    shared.finish(&job, result);
}

impl Shared {
    fn finish(&self, job: &Job, result: Result<()>) {
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
