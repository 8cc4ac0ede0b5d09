//! Consensus: how a write becomes part of the pinset. Today a single node, [`LocalConsensus`],
//! stands where Raft will.
//!
//! A write is acknowledged only once it is durable and the observer (the pin tracker) was told.
//! Writes are group-committed: one writer task takes whatever queued while the previous fsync ran
//! (up to [`MAX_BATCH`] ops, with no timer) and applies it in one transaction.
//!
//! How Raft (openraft 0.9) replaces it: `commit` becomes `client_write` on the leader (forwarded
//! from followers), and the openraft state machine's `apply(entries)` calls
//! [`PinState::apply_each`] with the ops of the entries and the last log id as the `applied` blob
//! (so the state and its log position commit together), then [`StateObserver::on_changes`];
//! `applied_state` reads [`PinState::last_applied`]; snapshots are [`PinState::snapshot`] and
//! `install_snapshot` is [`PinState::restore`] followed by [`StateObserver::on_restored`]. Raft's
//! own batching of log entries takes the place of the writer task's.

#[cfg(test)]
mod tests;

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::state::{PinState, RestoreSummary, StateChange, StateObserver, StateOp};
use crate::{Error, Result};

/// Most ops applied in one transaction: bounds the latency a batch adds to its last op.
pub const MAX_BATCH: usize = 1024;

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Ops committed (successfully or not).
    pub ops: u64,
    /// Write transactions (each one fsync) they took.
    pub transactions: u64,
}

/// The single-node consensus: commits ops to the local pinset, group-committed.
pub struct LocalConsensus {
    state: Arc<PinState>,
    requests: mpsc::Sender<Request>,
    shutdown: CancellationToken,
    writer: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

// Ops are the hot, common case: kept inline rather than boxed to spare an allocation per write.
#[allow(clippy::large_enum_variant)]
enum Request {
    Op(StateOp, oneshot::Sender<Result<Option<StateChange>>>),
    Restore(Box<dyn Read + Send>, oneshot::Sender<Result<RestoreSummary>>),
}

#[derive(Default)]
struct Counters {
    ops: AtomicU64,
    transactions: AtomicU64,
    /// The last transaction failed: the disk or the file is in trouble, so not ready.
    failing: AtomicBool,
}

impl LocalConsensus {
    /// Starts the writer task; must be called inside a Tokio runtime.
    pub fn start(state: Arc<PinState>, observer: Arc<dyn StateObserver>) -> Self {
        let (requests, inbox) = mpsc::channel(4 * MAX_BATCH);
        let shutdown = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let writer =
            Writer { state: state.clone(), observer, inbox, shutdown: shutdown.clone(), counters: counters.clone() };
        let writer = tokio::spawn(writer.run());
        LocalConsensus { state, requests, shutdown, writer: Mutex::new(Some(writer)), counters }
    }

    /// The pinset, for reads.
    pub fn state(&self) -> &Arc<PinState> {
        &self.state
    }

    /// Commits `op`: returns once it is durable and the observer was told, with what it changed
    /// (`None`: an unpin of an absent pin). [`Error::ShuttingDown`] when the consensus stops
    /// before the op was applied; an op already being written when it stops completes first.
    pub async fn commit(&self, op: StateOp) -> Result<Option<StateChange>> {
        let (reply, outcome) = oneshot::channel();
        self.send(Request::Op(op, reply)).await?;
        // A dropped reply means the writer task was torn down (runtime shutdown) mid-write.
        outcome.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Replaces the pinset with a snapshot stream (state import), in order with the commits around
    /// it; the observer learns of it through [`StateObserver::on_restored`].
    pub async fn restore(&self, reader: impl Read + Send + 'static) -> Result<RestoreSummary> {
        let (reply, outcome) = oneshot::channel();
        self.send(Request::Restore(Box::new(reader), reply)).await?;
        outcome.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Ready to take writes: running, and the last write transaction did not fail.
    pub fn is_ready(&self) -> bool {
        !self.shutdown.is_cancelled() && !self.requests.is_closed() && !self.counters.failing.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> CommitStats {
        CommitStats {
            ops: self.counters.ops.load(Ordering::Relaxed),
            transactions: self.counters.transactions.load(Ordering::Relaxed),
        }
    }

    /// Stops taking writes: the batch being written completes, everything still queued gets
    /// [`Error::ShuttingDown`]. Returns when the writer task has ended.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        let writer = self.writer.lock().expect("the writer handle lock is never poisoned").take();
        if let Some(writer) = writer {
            if let Err(e) = writer.await {
                tracing::error!(error = %e, "the consensus writer task failed");
            }
        }
    }

    async fn send(&self, request: Request) -> Result<()> {
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        self.requests.send(request).await.map_err(|_| Error::ShuttingDown)
    }
}

impl Drop for LocalConsensus {
    /// Queued callers get [`Error::ShuttingDown`] rather than waiting forever.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

struct Writer {
    state: Arc<PinState>,
    observer: Arc<dyn StateObserver>,
    inbox: mpsc::Receiver<Request>,
    shutdown: CancellationToken,
    counters: Arc<Counters>,
}

impl Writer {
    async fn run(mut self) {
        let mut next = None;
        loop {
            let request = match next.take() {
                Some(request) => request,
                None => tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => break,
                    request = self.inbox.recv() => match request {
                        Some(request) => request,
                        None => break,
                    },
                },
            };
            match request {
                Request::Op(op, reply) => {
                    let mut ops = vec![op];
                    let mut replies = vec![reply];
                    while ops.len() < MAX_BATCH {
                        match self.inbox.try_recv() {
                            Ok(Request::Op(op, reply)) => {
                                ops.push(op);
                                replies.push(reply);
                            }
                            Ok(restore) => {
                                next = Some(restore);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit_batch(ops, replies).await;
                }
                Request::Restore(reader, reply) => {
                    let state = self.state.clone();
                    let result = tokio::task::spawn_blocking(move || state.restore(reader))
                        .await
                        .unwrap_or_else(|e| Err(unknown_outcome(&e)));
                    self.counters.failing.store(result.is_err(), Ordering::Relaxed);
                    if let Ok(summary) = &result {
                        self.observer.on_restored(summary);
                    }
                    // The caller may have given up waiting; the restore stands regardless.
                    let _ = reply.send(result);
                }
            }
        }
        self.inbox.close();
        let pending = next.into_iter().chain(std::iter::from_fn(|| self.inbox.try_recv().ok()));
        for request in pending {
            match request {
                Request::Op(_, reply) => drop(reply.send(Err(Error::ShuttingDown))),
                Request::Restore(_, reply) => drop(reply.send(Err(Error::ShuttingDown))),
            }
        }
    }

    async fn commit_batch(&self, ops: Vec<StateOp>, replies: Vec<oneshot::Sender<Result<Option<StateChange>>>>) {
        let count = ops.len();
        let state = self.state.clone();
        let counters = self.counters.clone();
        let outcomes = tokio::task::spawn_blocking(move || apply_batch(&state, &ops, &counters))
            .await
            .unwrap_or_else(|e| (0..count).map(|_| Err(unknown_outcome(&e))).collect());
        self.counters.ops.fetch_add(count as u64, Ordering::Relaxed);
        let changes: Vec<StateChange> =
            outcomes.iter().filter_map(|outcome| outcome.as_ref().ok().cloned().flatten()).collect();
        if !changes.is_empty() {
            self.observer.on_changes(&changes);
        }
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // The caller may have given up waiting; the write stands regardless.
            let _ = reply.send(outcome);
        }
    }
}

/// Applies a batch in one transaction. Should it fail, its ops are retried one by one, so that
/// one bad op (say, over a damaged record) does not fail the others that happened to queue with it.
fn apply_batch(state: &PinState, ops: &[StateOp], counters: &Counters) -> Vec<Result<Option<StateChange>>> {
    let apply = |ops: &[StateOp]| {
        counters.transactions.fetch_add(1, Ordering::Relaxed);
        let result = state.apply_each(ops, None);
        counters.failing.store(result.is_err(), Ordering::Relaxed);
        result
    };
    match apply(ops) {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(e) if ops.len() > 1 => {
            tracing::warn!(error = %e, ops = ops.len(), "a batch of pinset writes failed; applying its ops one by one");
            ops.iter().map(|op| apply(std::slice::from_ref(op)).map(|mut outcome| outcome.pop().flatten())).collect()
        }
        Err(e) => vec![Err(e)],
    }
}

/// The blocking task applying a write panicked: whether the write reached the disk is unknown.
fn unknown_outcome(e: &tokio::task::JoinError) -> Error {
    Error::Storage(format!("the state writer failed: {e}; outcome unknown"))
}
