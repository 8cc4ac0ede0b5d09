//! The pinset: the replicated state machine of the cluster (CID -> Pin), durable on disk.
//!
//! It only ever changes by applying [`StateOp`]s, in order, and it can snapshot and restore itself,
//! so the consensus layer (Raft) drives it without knowing its insides.
//! Every applied batch reports its [`StateChange`]s to a [`StateObserver`] (the pin tracker).
//!
//! Storage is one redb file (see `store`): table `pins` (CidKey bytes -> versioned postcard record),
//! `expiry` ((expire_at seconds, key) -> ()) so expiry never scans the pinset, `unpins` (see
//! [`PendingUnpin`]) and `meta` (format version, the consensus layer's `last_applied` blob, written
//! in the same transaction as the ops it covers, and the last unpin record's `seq`). Records are
//! decoded when read; a record that does not decode is an error, never skipped.
//!
//! Unpin records make the IPFS side of a removal as durable as the removal: an unpin (or a pin
//! whose allocations lose peers) writes one in its own transaction, naming the peers that lost the
//! pin. The state does not know which peer it runs on, and under Raft every peer applies the same
//! ops: each peer's tracker reads the records, acts on those that name it, and forgets them
//! locally. The table is not replicated: snapshots leave it out, and a restore keeps it and adds
//! the records of the pins it removes or moves away, as the ops it stands for would have.
//!
//! Measured in release mode on the shared 2-core build machine (`cargo test --release -p sidecar
//! --lib state::tests::million -- --ignored --nocapture`), 1M pins with two allocations each:
//! insert ~95-107k pins/s (batches of 1024 ops, one fsync each), reopen after a clean close ~1-6 ms,
//! the full-file check redb runs after a crash ~0.3 s (warm page cache), scan in pages of 10k
//! ~615-690k pins/s, snapshot ~1.5 s (146 MiB stream), restore ~4.5 s, file 266 MiB, peak RSS of
//! the whole test ~116 MiB with the default 64 MiB cache (185 MiB when it also runs the check above
//! with redb's default 1 GiB cache).

mod snapshot;
mod store;
#[cfg(test)]
pub(crate) mod tests;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use libp2p_identity::PeerId;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableError};
use serde::{Deserialize, Serialize};

use crate::types::{Cid, CidKey, Pin, PinMode};
use crate::Result;

pub use snapshot::{SnapshotSummary, StagedSnapshot};

/// An operation on the pinset.
// The pin travels by value: each op moves once through a channel, and boxing it would cost an
// allocation per write on the hottest path.
//
// Ops that a caller decides on a read of its own carry their condition, checked when applied: under
// Raft every replica applies the op to the same state, while the caller's read may be stale (a
// lagging follower, a write committed meanwhile) and must never undo a newer acknowledged write.
// New variants go at the end: the log and the wire encode variants by index.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StateOp {
    /// Adds or replaces the pin of `pin.cid`; a no-op when the stored pin differs only in its
    /// `timestamp` (and the order of its allocations).
    Pin(Pin),
    /// Removes the pin; a no-op when absent.
    Unpin(CidKey),
    /// Removes the pin if it has an `expire_at` at or before `now`, which travels in the op so
    /// every replica decides alike; a no-op otherwise (re-pinned with a later expiry, or none).
    UnpinIfExpired {
        key: CidKey,
        #[serde(with = "crate::types::time::required")]
        now: DateTime<Utc>,
    },
    /// Moves the pin to `allocations`, stamped `timestamp`, if it is still the pin that was read:
    /// its `timestamp` is `expected`. A no-op when it was unpinned or changed since.
    Reallocate {
        key: CidKey,
        #[serde(with = "crate::types::time::required")]
        expected: DateTime<Utc>,
        allocations: Vec<PeerId>,
        #[serde(with = "crate::types::time::required")]
        timestamp: DateTime<Utc>,
    },
    /// Changes nothing: once it is applied here, so is everything committed before it.
    Barrier,
}

/// What applying an operation changed.
#[allow(clippy::large_enum_variant)] // as for `StateOp`
#[derive(Clone, Debug, PartialEq)]
pub enum StateChange {
    Pinned { pin: Pin, previous: Option<Pin> },
    Unpinned { pin: Pin },
}

/// Told of every change, synchronously, after it is durable and before the write is acknowledged.
/// Implementations must be quick (enqueue work, never block on IO).
pub trait StateObserver: Send + Sync + 'static {
    fn on_changes(&self, changes: &[StateChange]);

    /// The whole pinset was replaced by [`PinState::restore`] (a Raft snapshot install, a state
    /// import). No per-pin changes are reported for it: the observer must resynchronise from the
    /// state itself (for the tracker: a full sync of the state against IPFS). Called once, after
    /// the restore is durable and before any later change is reported. The default does nothing,
    /// which is only right for observers that keep no view of the pinset.
    fn on_restored(&self, _summary: &SnapshotSummary) {}
}

/// A removal whose IPFS side may not have run yet on some peer: the CID was unpinned, or its
/// allocations moved away from `from`. Written in the transaction of the op that removed it,
/// dropped by a later op that allocates it to all of `from` again, or by
/// [`PinState::forget_unpins`] once a peer has checked its own daemon.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingUnpin {
    pub key: CidKey,
    /// The CID as the removed pin spelled it.
    pub cid: Cid,
    pub mode: PinMode,
    /// Peers that may still hold the IPFS pin (empty = every peer, as in [`Pin::allocations`]).
    pub from: Vec<PeerId>,
    /// Written after every record with a lower `seq` (see [`PinState::latest_unpin_seq`]).
    pub seq: u64,
}

impl PendingUnpin {
    /// Whether `peer` may hold an IPFS pin of the CID that the cluster asked of it.
    pub fn names(&self, peer: &PeerId) -> bool {
        self.from.is_empty() || self.from.contains(peer)
    }
}

/// Tuning of the state file.
#[derive(Clone, Debug)]
pub struct StateOptions {
    /// Bytes of redb page cache. Kept small: the OS page cache serves scans, and the peer must
    /// hold millions of pins in little memory.
    pub cache_size: usize,
}

impl Default for StateOptions {
    fn default() -> Self {
        StateOptions { cache_size: 64 * 1024 * 1024 }
    }
}

/// The durable pinset.
pub struct PinState {
    db: Database,
    path: PathBuf,
    /// The `seq` of the last unpin record committed (0: none yet).
    unpin_seq: AtomicU64,
    /// Restores started: the latest owns the staged tables (see [`PinState::stage`]).
    staging: AtomicU64,
}

impl PinState {
    /// Opens (or creates) the state at `path`. A corrupt, truncated or foreign file is an error
    /// that names the file; it is never replaced or emptied.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, &StateOptions::default())
    }

    /// [`PinState::open`] with explicit options.
    pub fn open_with(path: &Path, options: &StateOptions) -> Result<Self> {
        let db = store::open(path, options)?;
        let state = PinState { db, path: path.to_path_buf(), unpin_seq: AtomicU64::new(0), staging: AtomicU64::new(0) };
        let seq = state.read_meta(store::UNPIN_SEQ)?.map(|v| store::decode_seq(path, &v)).transpose()?;
        state.unpin_seq.store(seq.unwrap_or(0), Ordering::Release);
        snapshot::drop_unfinished(&state)?;
        Ok(state)
    }

    /// The file this state lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies `ops` in order in one durable transaction (fsync before returning).
    pub fn apply(&self, ops: &[StateOp]) -> Result<Vec<StateChange>> {
        Ok(self.apply_each(ops, None)?.into_iter().flatten().collect())
    }

    /// Applies `ops` in order in one durable transaction and returns what each op changed (`None`
    /// for an op that changed nothing: an unpin of an absent pin, a pin equal to the stored one, a
    /// condition that did not hold). When `applied` is given it replaces the `last_applied` blob
    /// in the same transaction, so the consensus layer's position and the pinset never disagree
    /// after a crash. All or nothing: on error nothing of the batch is stored.
    pub fn apply_each(&self, ops: &[StateOp], applied: Option<&[u8]>) -> Result<Vec<Option<StateChange>>> {
        self.apply_with(ops, applied, Durability::Immediate)
    }

    /// [`PinState::apply_each`] without waiting for the disk: for a consensus layer whose log is
    /// durable and replays what a crash loses (the ops and their `last_applied` are lost together,
    /// never one without the other). [`PinState::snapshot`] makes everything before it durable.
    pub fn apply_each_deferred(&self, ops: &[StateOp], applied: &[u8]) -> Result<Vec<Option<StateChange>>> {
        self.apply_with(ops, Some(applied), Durability::None)
    }

    fn apply_with(
        &self,
        ops: &[StateOp],
        applied: Option<&[u8]>,
        durability: Durability,
    ) -> Result<Vec<Option<StateChange>>> {
        if ops.is_empty() && applied.is_none() {
            return Ok(Vec::new());
        }
        let mut txn = self.db.begin_write().map_err(|e| store::db_error(&self.path, "starting a write", e))?;
        txn.set_durability(durability)
            .map_err(|e| store::db_error(&self.path, "starting a write", redb::Error::from(e)))?;
        let (outcomes, unpin_seq) = {
            let mut tables = store::Tables::open(&txn, &self.path)?;
            let outcomes = ops.iter().map(|op| tables.apply(op)).collect::<Result<Vec<_>>>()?;
            if applied.is_some() {
                tables.set_last_applied(applied)?;
            }
            (outcomes, tables.written_unpin_seq())
        };
        txn.commit().map_err(|e| store::db_error(&self.path, "committing a write", e))?;
        self.committed_unpin_seq(unpin_seq);
        Ok(outcomes)
    }

    /// Publishes the last unpin record `seq` of a transaction just committed, if it wrote one.
    /// Only once committed: a reader of the seq relies on every record up to it being there.
    fn committed_unpin_seq(&self, seq: Option<u64>) {
        if let Some(seq) = seq {
            self.unpin_seq.store(seq, Ordering::Release);
        }
    }

    /// The blob last stored by [`PinState::apply_each`] or [`PinState::restore`], if any.
    pub fn last_applied(&self) -> Result<Option<Vec<u8>>> {
        self.read_meta(store::LAST_APPLIED)
    }

    /// The `seq` of the last unpin record committed. An IPFS unpin of a CID that starts after this
    /// was read fulfils the CID's record if its `seq` is at most this: any later removal of the
    /// CID writes a record with a higher one.
    pub fn latest_unpin_seq(&self) -> u64 {
        self.unpin_seq.load(Ordering::Acquire)
    }

    /// Up to `limit` unpin records in key order, starting after `after` (see [`PendingUnpin`]).
    pub fn pending_unpins(&self, after: Option<&CidKey>, limit: usize) -> Result<Vec<PendingUnpin>> {
        let txn = self.begin_read()?;
        let unpins = match txn.open_table(store::UNPINS) {
            Ok(unpins) => unpins,
            // A file from before unpin records: none yet.
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(store::db_error(&self.path, "reading unpin records", e)),
        };
        page(&unpins, after, limit, &self.path, "reading unpin records", store::decode_pending_unpin)
    }

    /// Drops the unpin record of each key whose `seq` is at most the one given with it (a record
    /// rewritten since is kept). Not fsynced: a drop lost in a crash only costs one more check of
    /// the daemon's pin set at the next start, and this runs after every batch of unpins.
    pub fn forget_unpins(&self, done: &[(CidKey, u64)]) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(|e| store::db_error(&self.path, "starting a write", e))?;
        txn.set_durability(Durability::None)
            .map_err(|e| store::db_error(&self.path, "forgetting unpin records", redb::Error::from(e)))?;
        {
            let mut unpins = txn
                .open_table(store::UNPINS)
                .map_err(|e| store::db_error(&self.path, "forgetting unpin records", e))?;
            let forget = |e| store::db_error(&self.path, "forgetting unpin records", e);
            for (key, seq) in done {
                let stored = unpins.get(key.as_bytes()).map_err(forget)?;
                let stored = stored.map(|v| store::decode_pending_unpin(&self.path, key.as_bytes(), v.value()));
                if stored.transpose()?.is_some_and(|record| record.seq <= *seq) {
                    unpins.remove(key.as_bytes()).map_err(forget)?;
                }
            }
        }
        txn.commit().map_err(|e| store::db_error(&self.path, "committing a write", e))
    }

    pub fn get(&self, key: &CidKey) -> Result<Option<Pin>> {
        let txn = self.begin_read()?;
        let pins = store::open_read(&txn, store::PINS, &self.path)?;
        let value = pins.get(key.as_bytes()).map_err(|e| store::db_error(&self.path, "reading a pin", e))?;
        value.map(|v| store::decode_pin(&self.path, key.as_bytes(), v.value())).transpose()
    }

    /// The pins of `keys`, in order, read in one transaction. Keys in ascending order (a page of
    /// another peer's scan) are read as one range, merged with the keys; others one by one.
    pub fn get_many(&self, keys: &[CidKey]) -> Result<Vec<Option<Pin>>> {
        const DOING: &str = "reading pins";
        let txn = self.begin_read()?;
        let pins = store::open_read(&txn, store::PINS, &self.path)?;
        let read_error = |e| store::db_error(&self.path, DOING, e);
        let ascending = keys.windows(2).all(|pair| pair[0] < pair[1]);
        let (Some(first), Some(last), true) = (keys.first(), keys.last(), ascending) else {
            let decode = |key: &CidKey| {
                let stored = pins.get(key.as_bytes()).map_err(read_error)?;
                stored.map(|v| store::decode_pin(&self.path, key.as_bytes(), v.value())).transpose()
            };
            return keys.iter().map(decode).collect();
        };
        let mut found = Vec::with_capacity(keys.len());
        let mut wanted = keys.iter().peekable();
        for entry in pins.range::<&[u8]>(first.as_bytes()..=last.as_bytes()).map_err(read_error)? {
            let (key, value) = entry.map_err(read_error)?;
            while wanted.next_if(|wanted| wanted.as_bytes() < key.value()).is_some() {
                found.push(None);
            }
            if wanted.next_if(|wanted| wanted.as_bytes() == key.value()).is_some() {
                found.push(Some(store::decode_pin(&self.path, key.value(), value.value())?));
            }
        }
        found.resize(keys.len(), None);
        Ok(found)
    }

    pub fn len(&self) -> Result<u64> {
        let txn = self.begin_read()?;
        let pins = store::open_read(&txn, store::PINS, &self.path)?;
        pins.len().map_err(|e| store::db_error(&self.path, "counting pins", e))
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Up to `limit` pins in key order, starting after `after` (pagination for streaming).
    pub fn scan(&self, after: Option<&CidKey>, limit: usize) -> Result<Vec<Pin>> {
        let txn = self.begin_read()?;
        let pins = store::open_read(&txn, store::PINS, &self.path)?;
        page(&pins, after, limit, &self.path, "scanning pins", store::decode_pin)
    }

    /// Pins whose `expire_at` is at or before `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> Result<Vec<Pin>> {
        let txn = self.begin_read()?;
        let expiry = store::open_read(&txn, store::EXPIRY, &self.path)?;
        let pins = store::open_read(&txn, store::PINS, &self.path)?;
        // Every entry of a second up to and including now's; the sub-second part is checked below.
        let end: (i64, &[u8]) = (now.timestamp().saturating_add(1), &[]);
        let due = expiry.range(..end).map_err(|e| store::db_error(&self.path, "reading expiries", e))?;
        let mut out = Vec::new();
        for entry in due {
            let (index, _) = entry.map_err(|e| store::db_error(&self.path, "reading expiries", e))?;
            let (_, key) = index.value();
            let value = pins.get(key).map_err(|e| store::db_error(&self.path, "reading a pin", e))?;
            let Some(value) = value else {
                return Err(store::damaged(&self.path, "an expiry entry names a pin that is not in the pinset"));
            };
            let pin = store::decode_pin(&self.path, key, value.value())?;
            if pin.is_expired(now) {
                out.push(pin);
            }
        }
        Ok(out)
    }

    /// Writes every pin, from one consistent read made durable first (see
    /// [`PinState::apply_each_deferred`]), as a self-describing checksummed stream that
    /// [`PinState::restore`] reads back. Returns how many pins it wrote and the `last_applied`
    /// blob they go with.
    pub fn snapshot(&self, writer: impl Write) -> Result<SnapshotSummary> {
        snapshot::write(self, writer)
    }

    /// Replaces the whole pinset (and `last_applied`) with the stream of [`PinState::snapshot`],
    /// visible and durable at once, in one transaction. Each pin it removes, or whose allocations lose peers, gets its
    /// unpin record as if an op had done it: the ops a snapshot compacts away still reach every
    /// peer's IPFS daemon. A damaged or truncated stream is an error and leaves the state as it
    /// was. Observers are not told here: whoever drives the state calls
    /// [`StateObserver::on_restored`] with the summary once this returns.
    pub fn restore(&self, reader: impl Read + Send) -> Result<SnapshotSummary> {
        snapshot::restore(self, reader)
    }

    /// The first half of [`PinState::restore`]: writes the stream, checked to its end, where no
    /// reader sees it, in transactions that let other writes go on meanwhile; so it can follow a
    /// stream still arriving. Nothing changes for readers until [`PinState::finish_restore`]. A
    /// later call takes the staged tables over, and this one's result is then refused.
    pub fn stage(&self, reader: impl Read + Send) -> Result<StagedSnapshot> {
        snapshot::stage(self, reader)
    }

    /// The second half of [`PinState::restore`]: swaps the staged pinset in, in one durable
    /// transaction with the unpin records it owes.
    pub fn finish_restore(&self, staged: StagedSnapshot) -> Result<SnapshotSummary> {
        snapshot::finish(self, staged)
    }

    fn read_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.begin_read()?;
        let meta = txn.open_table(store::META).map_err(|e| store::db_error(&self.path, "reading meta", e))?;
        let value = meta.get(name).map_err(|e| store::db_error(&self.path, "reading meta", e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// A read of everything committed so far, all of it made durable first: the empty durable
    /// commit is taken while the read starts, so no write slips in between (redb persists the
    /// deferred commits before a durable one).
    fn durable_read(&self) -> Result<redb::ReadTransaction> {
        let flush = self.db.begin_write().map_err(|e| store::db_error(&self.path, "flushing", e))?;
        let read = self.begin_read()?;
        flush.commit().map_err(|e| store::db_error(&self.path, "flushing", e))?;
        Ok(read)
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction> {
        self.db.begin_read().map_err(|e| store::db_error(&self.path, "starting a read", e))
    }
}

impl std::fmt::Debug for PinState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinState").field("path", &self.path).finish()
    }
}

/// Up to `limit` records of a table keyed by CID, in key order after `after`, each decoded with
/// `decode(file, key, record)`.
fn page<T>(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    after: Option<&CidKey>,
    limit: usize,
    path: &Path,
    doing: &str,
    decode: impl Fn(&Path, &[u8], &[u8]) -> Result<T>,
) -> Result<Vec<T>> {
    let lower = match after {
        Some(key) => std::ops::Bound::Excluded(key.as_bytes()),
        None => std::ops::Bound::Unbounded,
    };
    let range =
        table.range::<&[u8]>((lower, std::ops::Bound::Unbounded)).map_err(|e| store::db_error(path, doing, e))?;
    let mut out = Vec::with_capacity(limit.min(16 * 1024));
    for entry in range.take(limit) {
        let (key, value) = entry.map_err(|e| store::db_error(path, doing, e))?;
        out.push(decode(path, key.value(), value.value())?);
    }
    Ok(out)
}
