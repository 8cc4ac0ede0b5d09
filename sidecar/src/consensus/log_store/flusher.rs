//! The one thread that writes the log: what queues while it writes goes into its next
//! transaction, so appends arriving together share one fsync.
//!
//! openraft 0.9 waits for each append's flush inside its core task, so the flush is on every
//! write's path; a thread of its own spares the hand-off to tokio's blocking pool, and the
//! committed position rides along with the next write instead of taking a transaction of its own.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use openraft::storage::LogFlushed;
use redb::{Database, Durability};
use tokio::sync::oneshot;

use super::tail::{AppendSeq, Tail};
use super::{error_at, COMMITTED, LAST_PURGED, LOGS, META, VOTE};
use crate::consensus::types::{LogId, TypeConfig};
use crate::{Error, Result};

/// A change to the log, in the order Raft made it.
pub(super) enum Write {
    /// Encoded entries, by index; `flushed` is told once they are durable.
    Append { records: Vec<(u64, Vec<u8>)>, seq: AppendSeq, flushed: LogFlushed<TypeConfig> },
    /// Drops the entries from this index on.
    Truncate { from: u64, done: oneshot::Sender<Result<()>> },
    /// Drops the entries up to this log id and remembers it as the last purged.
    Purge { upto: LogId, done: oneshot::Sender<Result<()>> },
    /// An encoded vote.
    Vote { vote: Vec<u8>, done: oneshot::Sender<Result<()>> },
}

impl Write {
    /// Whether Raft relies on it surviving a crash once reported done.
    fn must_be_durable(&self) -> bool {
        !matches!(self, Write::Purge { .. })
    }

    fn report(self, outcome: &Result<()>) {
        match self {
            Write::Append { flushed, .. } => {
                let outcome = outcome.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()));
                flushed.log_io_completed(outcome);
            }
            Write::Truncate { done, .. } | Write::Purge { done, .. } | Write::Vote { done, .. } => {
                let _ = done.send(outcome.as_ref().map(|_| ()).map_err(Error::duplicate));
            }
        }
    }
}

/// The flusher's handle: dropping the last one lets the thread finish what is queued and stop,
/// and waits for it, so the file is closed once the log store is gone.
pub(super) struct Flusher {
    writes: Option<mpsc::Sender<Write>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    pub fn start(
        db: Arc<Database>,
        path: Arc<PathBuf>,
        tail: Arc<Mutex<Tail>>,
        committed: Arc<Mutex<Option<LogId>>>,
    ) -> Result<Flusher> {
        let (writes, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("raft-log".into())
            .spawn(move || Thread { db, tail, committed, path: &path }.run(queue))?;
        Ok(Flusher { writes: Some(writes), thread: Some(thread) })
    }

    /// Queues `write`; it is reported through its own channel or callback.
    pub fn send(&self, write: Write) {
        let writes = self.writes.as_ref().expect("only taken on drop");
        if let Err(mpsc::SendError(write)) = writes.send(write) {
            write.report(&Err(Error::ShuttingDown));
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.writes.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Thread<'a> {
    db: Arc<Database>,
    tail: Arc<Mutex<Tail>>,
    /// The committed position Raft last reported, not yet written.
    committed: Arc<Mutex<Option<LogId>>>,
    path: &'a Path,
}

impl Thread<'_> {
    fn run(self, queue: mpsc::Receiver<Write>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            batch.extend(queue.try_iter());
            let outcome = self.commit(&batch);
            if outcome.is_ok() {
                let appended = batch.iter().filter_map(|write| match write {
                    Write::Append { seq, .. } => Some(*seq),
                    _ => None,
                });
                if let Some(last) = appended.max() {
                    self.tail.lock().unwrap_or_else(PoisonError::into_inner).written(last);
                }
            }
            for write in batch {
                write.report(&outcome);
            }
        }
        // The committed position of a clean stop, so a restart applies up to it at once.
        if let Err(e) = self.commit(&[]) {
            tracing::warn!("{e}");
        }
    }

    /// Writes `batch` in order in one transaction, with the pending committed position.
    fn commit(&self, batch: &[Write]) -> Result<()> {
        let committed = self.committed.lock().unwrap_or_else(PoisonError::into_inner).take();
        if batch.is_empty() && committed.is_none() {
            return Ok(());
        }
        let durability = if batch.is_empty() || batch.iter().any(Write::must_be_durable) {
            Durability::Immediate
        } else {
            Durability::None
        };
        let fail = |doing: &str, e: redb::Error| error_at(self.path, doing, e);
        let mut txn = self.db.begin_write().map_err(|e| fail("writing", e.into()))?;
        txn.set_durability(durability).map_err(|e| fail("writing", e.into()))?;
        let written = (|| -> std::result::Result<(), redb::Error> {
            let mut logs = txn.open_table(LOGS)?;
            let mut meta = txn.open_table(META)?;
            for write in batch {
                match write {
                    Write::Append { records, .. } => {
                        for (index, bytes) in records {
                            logs.insert(index, bytes.as_slice())?;
                        }
                    }
                    Write::Truncate { from, .. } => logs.retain_in(*from.., |_, _| false)?,
                    Write::Purge { upto, .. } => {
                        let purged = postcard::to_allocvec(upto).expect("a log id always encodes");
                        meta.insert(LAST_PURGED, purged.as_slice())?;
                        logs.retain_in::<u64, _>(..=upto.index, |_, _| false)?;
                    }
                    Write::Vote { vote, .. } => {
                        meta.insert(VOTE, vote.as_slice())?;
                    }
                }
            }
            if let Some(committed) = committed {
                let committed = postcard::to_allocvec(&Some(committed)).expect("a log id always encodes");
                meta.insert(COMMITTED, committed.as_slice())?;
            }
            Ok(())
        })();
        written.map_err(|e| fail("writing", e))?;
        txn.commit().map_err(|e| fail("committing", e.into()))
    }
}
