//! The Raft log, vote and commit position, durable in their own redb file next to the pinset.
//!
//! Separate from the pinset because they change on another rhythm: the log grows by appends and
//! shrinks from the front once a snapshot covers it, while the pinset is rewritten in place. Every
//! write that Raft relies on (append, vote, truncate) is fsynced before it is reported done.
//!
//! Tables: `logs` (index -> postcard-encoded entry) and `meta` (vote, committed, last purged log
//! id and this peer's node id, postcard-encoded).
//!
//! Changes are written by one thread of their own ([`flusher`]), in the order Raft makes them;
//! the newest entries are also kept in memory ([`tail`]), where Raft reads them back.

mod flusher;
mod tail;

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, OptionalSend, RaftLogReader, StorageIOError};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use self::flusher::{Flusher, Write};
use self::tail::Tail;
use super::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};
use crate::{Error, Result};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
const NODE_ID: &str = "node_id";

/// The durable log; cheap to clone (readers for replication are clones).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    path: Arc<PathBuf>,
    tail: Arc<Mutex<Tail>>,
    /// The committed position Raft last reported, written with the flusher's next transaction.
    committed: Arc<Mutex<Option<LogId>>>,
    flusher: Arc<Flusher>,
}

impl LogStore {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Arc::new(
            Database::create(path)
                .map_err(|e| Error::Storage(format!("{}: cannot open the Raft log: {e}", path.display())))?,
        );
        let path = Arc::new(path.to_path_buf());
        let (tail, committed) = (Arc::default(), Arc::default());
        let flusher = Arc::new(Flusher::start(db.clone(), path.clone(), Arc::clone(&tail), Arc::clone(&committed))?);
        let store = LogStore { db, path, tail, committed, flusher };
        // Create the tables once, so readers never meet a missing one.
        store.write(Durability::Immediate, |txn| {
            txn.open_table(LOGS)?;
            txn.open_table(META)?;
            Ok(())
        })?;
        Ok(store)
    }

    fn tail(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `write` and waits until it is done.
    async fn write_and_wait(
        &self,
        write: impl FnOnce(tokio::sync::oneshot::Sender<Result<()>>) -> Write,
    ) -> std::result::Result<(), AnyError> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        self.flusher.send(write(done));
        match outcome.await {
            Ok(outcome) => outcome.map_err(AnyError::error),
            Err(_) => Err(AnyError::error("the Raft log's writer stopped")),
        }
    }

    /// This peer's Raft node id: read back, or drawn at random and stored on first use.
    pub fn node_id(&self) -> Result<NodeId> {
        if let Some(id) = self.read_meta::<NodeId>(NODE_ID)? {
            return Ok(id);
        }
        // Never 0: some tools treat it as "unset".
        let id = rand::random::<u64>().max(1);
        self.write_meta(NODE_ID, &id)?;
        Ok(id)
    }

    /// Whether this store has ever held Raft state (a vote or a log entry): a peer that has
    /// must never initialise a new cluster.
    pub fn has_state(&self) -> Result<bool> {
        let has_vote = self.read_meta::<Vote>(VOTE)?.is_some();
        Ok(has_vote || self.read_meta::<LogId>(LAST_PURGED)?.is_some() || self.last_entry()?.is_some())
    }

    fn last_entry(&self) -> Result<Option<Entry>> {
        let txn = self.db.begin_read().map_err(|e| self.error("reading the log", e))?;
        let logs = txn.open_table(LOGS).map_err(|e| self.error("reading the log", e))?;
        let last = logs.last().map_err(|e| self.error("reading the log", e))?;
        last.map(|(_, v)| decode(v.value()).map_err(|e| Error::Storage(format!("{}: {e}", self.path.display()))))
            .transpose()
    }

    fn read_meta<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let txn = self.db.begin_read().map_err(|e| self.error("reading meta", e))?;
        let meta = txn.open_table(META).map_err(|e| self.error("reading meta", e))?;
        let value = meta.get(name).map_err(|e| self.error("reading meta", e))?;
        value
            .map(|v| {
                decode(v.value()).map_err(|e| Error::Storage(format!("{}: meta `{name}`: {e}", self.path.display())))
            })
            .transpose()
    }

    fn write_meta<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let bytes = encode(value)?;
        self.write(Durability::Immediate, |txn| {
            txn.open_table(META)?.insert(name, bytes.as_slice())?;
            Ok(())
        })
    }

    fn write(
        &self,
        durability: Durability,
        body: impl FnOnce(&redb::WriteTransaction) -> std::result::Result<(), redb::Error>,
    ) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(|e| self.error("writing", e))?;
        txn.set_durability(durability).map_err(|e| self.error("writing", redb::Error::from(e)))?;
        body(&txn).map_err(|e| self.error("writing", e))?;
        txn.commit().map_err(|e| self.error("committing", e))
    }

    fn error(&self, doing: &str, e: impl Into<redb::Error>) -> Error {
        error_at(&self.path, doing, e)
    }

    /// Runs `work` on a blocking thread: redb reads must not stall the Raft core's task.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&LogStore) -> Result<T> + Send + 'static,
    ) -> std::result::Result<T, AnyError> {
        let store = self.clone();
        match tokio::task::spawn_blocking(move || work(&store)).await {
            Ok(result) => result.map_err(AnyError::error),
            Err(e) => Err(AnyError::error(format!("the Raft log task failed: {e}"))),
        }
    }
}

fn error_at(path: &Path, doing: &str, e: impl Into<redb::Error>) -> Error {
    Error::Storage(format!("{}: Raft log: {doing}: {}", path.display(), e.into()))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| Error::Storage(format!("cannot encode a Raft record: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("a Raft record does not decode ({e})"))
}

fn owned_bounds(range: impl RangeBounds<u64>) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<Entry>, StorageError> {
        let range = owned_bounds(range);
        let (held, before_tail) = self.tail().read(&range);
        let Some(start) = before_tail else { return Ok(held) };
        // Older than the tail: in the file, up to where the tail starts.
        let end = held.first().map_or(range.1, |first| Bound::Excluded(first.log_id.index));
        let mut entries = self
            .blocking(move |store| {
                let txn = store.db.begin_read().map_err(|e| store.error("reading entries", e))?;
                let logs = txn.open_table(LOGS).map_err(|e| store.error("reading entries", e))?;
                let mut entries = Vec::new();
                for item in
                    logs.range::<u64>((Bound::Included(start), end)).map_err(|e| store.error("reading entries", e))?
                {
                    let (_, value) = item.map_err(|e| store.error("reading entries", e))?;
                    entries.push(decode(value.value()).map_err(Error::Storage)?);
                }
                Ok(entries)
            })
            .await
            .map_err(|e| StorageError::from(StorageIOError::read_logs(&e)))?;
        entries.extend(held);
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> std::result::Result<LogState<TypeConfig>, StorageError> {
        let appended = self.tail().last();
        let (last_purged, last) = self
            .blocking(move |store| {
                let last = match appended {
                    Some(appended) => Some(appended),
                    None => store.last_entry()?.map(|e| e.log_id),
                };
                Ok((store.read_meta::<LogId>(LAST_PURGED)?, last))
            })
            .await
            .map_err(|e| StorageError::from(StorageIOError::read_logs(&e)))?;
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last.or(last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> std::result::Result<(), StorageError> {
        let vote = encode(vote).map_err(|e| StorageIOError::write_vote(AnyError::error(e)))?;
        self.write_and_wait(|done| Write::Vote { vote, done }).await.map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> std::result::Result<Option<Vote>, StorageError> {
        self.blocking(|store| store.read_meta(VOTE)).await.map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> std::result::Result<(), StorageError> {
        // Written with the next change (or on a clean stop), not on its own: a committed position
        // lost in a crash is learnt again from the leader.
        if let Some(committed) = committed {
            *self.committed.lock().unwrap_or_else(PoisonError::into_inner) = Some(committed);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> std::result::Result<Option<LogId>, StorageError> {
        if let Some(pending) = *self.committed.lock().unwrap_or_else(PoisonError::into_inner) {
            return Ok(Some(pending));
        }
        self.blocking(|store| Ok(store.read_meta::<Option<LogId>>(COMMITTED)?.flatten()))
            .await
            .map_err(|e| StorageIOError::read(&e).into())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> std::result::Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (mut records, mut held) = (Vec::new(), Vec::new());
        for entry in entries {
            let bytes = encode(&entry).map_err(|e| StorageIOError::write_logs(AnyError::error(e)))?;
            let index = entry.log_id.index;
            held.push((entry, bytes.len()));
            records.push((index, bytes));
        }
        let seq = self.tail().push(held);
        // Readable from the tail now; Raft counts them as persisted once the flusher calls back,
        // after the fsync.
        self.flusher.send(Write::Append { records, seq, flushed: callback });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> std::result::Result<(), StorageError> {
        self.tail().truncate(log_id.index);
        self.write_and_wait(|done| Write::Truncate { from: log_id.index, done })
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> std::result::Result<(), StorageError> {
        // Not fsynced on its own: entries a crash brings back are purged again; the snapshot
        // covers them.
        self.tail().purge(log_id.index);
        self.write_and_wait(|done| Write::Purge { upto: log_id, done })
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
