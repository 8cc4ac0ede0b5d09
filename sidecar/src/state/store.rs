//! The redb layout of the pinset: opening and creating the file, tables, record encoding, and
//! redb errors turned into messages that name the file and say what to do.

use std::fmt::Display;
use std::fs;
use std::path::{Path, PathBuf};

use libp2p_identity::PeerId;
use redb::{
    Builder, Database, DatabaseError, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, Table,
    TableDefinition, TableError, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use super::{PendingUnpin, StateChange, StateOp, StateOptions};
use crate::types::{cid_serde, Cid, CidKey, Pin, PinMode};
use crate::{Error, Result};

/// CidKey bytes -> record (see [`encode_pin`]).
pub(super) const PINS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pins");
/// (expire_at as Unix seconds, CidKey bytes) -> (): pins by expiry, so `expired` reads only what is due.
pub(super) const EXPIRY: TableDefinition<(i64, &[u8]), ()> = TableDefinition::new("expiry");
/// Format version and the consensus layer's `last_applied` blob.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// CidKey bytes -> [`UnpinRecord`]: removals (unpins, allocations moved away) whose IPFS side may
/// not have run yet. Local bookkeeping, not part of snapshots. Files written before it existed lack
/// it: it is created by the first write, and read as empty until then (same format version).
pub(super) const UNPINS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("unpins");

pub(super) const LAST_APPLIED: &str = "last_applied";
/// u64 LE: the `seq` of the last [`UnpinRecord`] written (absent: none yet).
pub(super) const UNPIN_SEQ: &str = "unpin_seq";
const FORMAT: &str = "format";
/// Version of the table layout; a file with another one is refused, never guessed at.
pub(super) const FORMAT_VERSION: u32 = 1;
/// First byte of every record: how the rest is encoded (1 = postcard of [`Pin`]).
const RECORD_V1: u8 = 1;

const DAMAGED_HINT: &str = "it was left as it is: restore it from a snapshot, or move it away to start this peer \
    with an empty pinset (it then re-syncs from its cluster peers, if it has any)";

/// Opens the state file, creating it only when nothing is at `path`.
pub(super) fn open(path: &Path, options: &StateOptions) -> Result<Database> {
    let exists = path.try_exists().map_err(|e| {
        Error::Storage(format!(
            "{}: cannot tell whether the state file exists: {e}; check the permissions of its directory",
            path.display()
        ))
    })?;
    if !exists {
        create(path)?;
    }
    let len = fs::metadata(path).map(|m| m.len()).map_err(|e| {
        Error::Storage(format!("{}: cannot read the state file's metadata: {e}; check its permissions", path.display()))
    })?;
    if len == 0 {
        return Err(damaged(path, "it is empty (0 bytes)"));
    }
    let mut builder = Builder::new();
    builder.set_cache_size(options.cache_size);
    // Even a clean writable open rewrites redb's header, so the file is vetted read-only first:
    // a file we refuse is left byte for byte as it was.
    match builder.open_read_only(path) {
        Ok(db) => {
            check_layout(&db, path)?;
            db.close().map_err(|e| db_error(path, "cannot open the pinset state", e))?;
        }
        // Not shut down cleanly: only the writable open below may repair it; vetted after that.
        Err(DatabaseError::RepairAborted) => {
            tracing::warn!(file = %path.display(), "the pinset state was not closed cleanly; repairing it")
        }
        Err(e) => return Err(db_error(path, "cannot open the pinset state", e)),
    }
    let db = builder.open(path).map_err(|e| db_error(path, "cannot open the pinset state", e))?;
    check_layout(&db, path)?;
    Ok(db)
}

/// Builds an empty state beside `path` and renames it into place once durable, so a file at
/// `path` is always a complete state: an empty or half-written one there is damage, not a
/// crash during creation, and is reported instead of being initialised over.
fn create(path: &Path) -> Result<()> {
    let io = |what: &str, e: std::io::Error| Error::Storage(format!("{}: {what}: {e}", path.display()));
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| io("cannot create the state directory", e))?;
    let staging = staging_path(path);
    match fs::remove_file(&staging) {
        Ok(()) => {
            tracing::warn!(file = %staging.display(), "removed an unfinished state file from an interrupted start")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("cannot remove the unfinished state file beside it", e)),
    }
    let db = Builder::new().create(&staging).map_err(|e| db_error(&staging, "cannot create the pinset state", e))?;
    let txn = db.begin_write().map_err(|e| db_error(&staging, "cannot initialise the pinset state", e))?;
    {
        Tables::open(&txn, &staging)?
            .meta
            .insert(FORMAT, FORMAT_VERSION.to_le_bytes().as_slice())
            .map_err(|e| db_error(&staging, "cannot initialise the pinset state", e))?;
    }
    txn.commit().map_err(|e| db_error(&staging, "cannot initialise the pinset state", e))?;
    db.close().map_err(|e| db_error(&staging, "cannot close the new pinset state", e))?;
    fs::rename(&staging, path).map_err(|e| io("cannot move the new state file into place", e))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("cannot sync the state directory", e))?;
    tracing::info!(file = %path.display(), "created an empty pinset state");
    Ok(())
}

fn staging_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".creating");
    PathBuf::from(name)
}

/// Refuses a redb file that is not a pinset of a format this build reads.
fn check_layout(db: &impl ReadableDatabase, path: &Path) -> Result<()> {
    let foreign = || {
        Error::Storage(format!(
            "{} is a redb database but not a pinset state file; it was left as it is: point the state \
             path elsewhere or move the file away",
            path.display()
        ))
    };
    let txn = db.begin_read().map_err(|e| db_error(path, "cannot read the pinset state", e))?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(
            TableError::TableDoesNotExist(_) | TableError::TableTypeMismatch { .. } | TableError::TableIsMultimap(_),
        ) => return Err(foreign()),
        Err(e) => return Err(db_error(path, "cannot read the pinset state", e)),
    };
    let format =
        meta.get(FORMAT).map_err(|e| db_error(path, "cannot read the pinset state", e))?.ok_or_else(foreign)?;
    let version = <[u8; 4]>::try_from(format.value())
        .map(u32::from_le_bytes)
        .map_err(|_| damaged(path, "its format version is unreadable"))?;
    if version != FORMAT_VERSION {
        return Err(Error::Storage(format!(
            "{} has pinset format version {version}, and this build reads only version {FORMAT_VERSION}; it was \
             left as it is: run a sidecar release that reads it, or restore the state from a snapshot",
            path.display()
        )));
    }
    open_read(&txn, PINS, path)?;
    open_read(&txn, EXPIRY, path)?;
    Ok(())
}

/// The tables of a write transaction, and the one place where a pin is written or removed,
/// keeping `pins`, `expiry` and `unpins` in step.
pub(super) struct Tables<'t> {
    pins: Table<'t, &'static [u8], &'static [u8]>,
    expiry: Table<'t, (i64, &'static [u8]), ()>,
    meta: Table<'t, &'static str, &'static [u8]>,
    unpins: Table<'t, &'static [u8], &'static [u8]>,
    /// The last unpin record `seq` of this transaction, once one was written.
    unpin_seq: Option<u64>,
    path: &'t Path,
}

impl<'t> Tables<'t> {
    pub(super) fn open(txn: &'t WriteTransaction, path: &'t Path) -> Result<Self> {
        let err = |e| db_error(path, "cannot open the pinset tables", e);
        Ok(Tables {
            pins: txn.open_table(PINS).map_err(err)?,
            expiry: txn.open_table(EXPIRY).map_err(err)?,
            meta: txn.open_table(META).map_err(err)?,
            unpins: txn.open_table(UNPINS).map_err(err)?,
            unpin_seq: None,
            path,
        })
    }

    /// The `seq` of the last unpin record this transaction wrote, if it wrote one.
    pub(super) fn written_unpin_seq(&self) -> Option<u64> {
        self.unpin_seq
    }

    /// Applies `op`; conditional ops decide on the state as it is now (see [`StateOp`]).
    pub(super) fn apply(&mut self, op: &StateOp) -> Result<Option<StateChange>> {
        match op {
            StateOp::Pin(pin) => self.pinned_unless_same(pin),
            StateOp::Unpin(key) => self.unpinned(key),
            StateOp::UnpinIfExpired { key, now } => match self.get(key)? {
                Some(stored) if stored.is_expired(*now) => self.unpinned(key),
                _ => Ok(None),
            },
            StateOp::Reallocate { key, expected, allocations, timestamp } => match self.get(key)? {
                Some(stored) if stored.timestamp == *expected => {
                    self.pinned(&Pin { allocations: allocations.clone(), timestamp: *timestamp, ..stored }).map(Some)
                }
                _ => Ok(None),
            },
            StateOp::Barrier => Ok(None),
        }
    }

    fn get(&self, key: &CidKey) -> Result<Option<Pin>> {
        let stored = self.pins.get(key.as_bytes()).map_err(write_error(self.path))?;
        stored.map(|v| decode_pin(self.path, key.as_bytes(), v.value())).transpose()
    }

    fn pinned(&mut self, pin: &Pin) -> Result<StateChange> {
        let previous = self.pin(pin)?;
        Ok(StateChange::Pinned { pin: pin.clone(), previous })
    }

    fn unpinned(&mut self, key: &CidKey) -> Result<Option<StateChange>> {
        Ok(self.unpin(key)?.map(|pin| StateChange::Unpinned { pin }))
    }

    /// Stores `pin`, unpin record included, and returns the pin it replaced.
    pub(super) fn pin(&mut self, pin: &Pin) -> Result<Option<Pin>> {
        self.pin_record(pin, &encode_pin(self.path, pin)?)
    }

    /// As [`Tables::pin`], with `record` the pin already encoded (as a snapshot carries it).
    pub(super) fn pin_record(&mut self, pin: &Pin, record: &[u8]) -> Result<Option<Pin>> {
        let previous = self.put(pin, record)?;
        self.track_removal(&pin.key(), previous.as_ref(), Some(pin))?;
        Ok(previous)
    }

    /// Removes the pin of `key`, unpin record included, and returns it.
    pub(super) fn unpin(&mut self, key: &CidKey) -> Result<Option<Pin>> {
        let removed = self.pins.remove(key.as_bytes()).map_err(write_error(self.path))?;
        let removed = removed.map(|old| decode_pin(self.path, key.as_bytes(), old.value())).transpose()?;
        let Some(pin) = removed else { return Ok(None) };
        if let Some(at) = pin.expire_at {
            self.expiry.remove((at.timestamp(), key.as_bytes())).map_err(write_error(self.path))?;
        }
        self.track_removal(key, Some(&pin), None)?;
        Ok(Some(pin))
    }

    /// Stores `pin` unless the stored pin is the same (then nothing changes, its timestamp
    /// included). Stored first and put back in that rare case: a new pin, the usual one, then
    /// takes one search of the table instead of two.
    fn pinned_unless_same(&mut self, pin: &Pin) -> Result<Option<StateChange>> {
        let previous = self.put(pin, &encode_pin(self.path, pin)?)?;
        if let Some(stored) = previous.as_ref().filter(|stored| same_pin(stored, pin)) {
            self.put(stored, &encode_pin(self.path, stored)?)?;
            return Ok(None);
        }
        self.track_removal(&pin.key(), previous.as_ref(), Some(pin))?;
        Ok(Some(StateChange::Pinned { pin: pin.clone(), previous }))
    }

    /// Stores `pin`, encoded as `record`, and returns the pin it replaced.
    fn put(&mut self, pin: &Pin, record: &[u8]) -> Result<Option<Pin>> {
        let key = pin.key();
        let previous = self.pins.insert(key.as_bytes(), record).map_err(write_error(self.path))?;
        let previous = previous.map(|old| decode_pin(self.path, key.as_bytes(), old.value())).transpose()?;
        if let Some(at) = previous.as_ref().and_then(|p| p.expire_at) {
            self.expiry.remove((at.timestamp(), key.as_bytes())).map_err(write_error(self.path))?;
        }
        if let Some(at) = pin.expire_at {
            self.expiry.insert((at.timestamp(), key.as_bytes()), ()).map_err(write_error(self.path))?;
        }
        Ok(previous)
    }

    /// Keeps the unpin record of `key` in step with its pin going from `previous` to `next` (`None`:
    /// unpinned), so that the peers that lost the pin learn of it even if they crash before their
    /// IPFS unpin ran. Every write gives the record a new `seq`.
    pub(super) fn track_removal(&mut self, key: &CidKey, previous: Option<&Pin>, next: Option<&Pin>) -> Result<()> {
        let recorded = self.unpins.get(key.as_bytes()).map_err(write_error(self.path))?;
        let recorded = recorded.map(|r| decode_unpin(self.path, key.as_bytes(), r.value())).transpose()?;
        let owed = owed_peers(
            recorded.as_ref().map(|r| r.from.as_slice()),
            previous.map(|p| p.allocations.as_slice()),
            next.map(|p| p.allocations.as_slice()),
        );
        let Some(from) = owed else {
            if recorded.is_some() {
                self.unpins.remove(key.as_bytes()).map_err(write_error(self.path))?;
            }
            return Ok(());
        };
        // Something is owed only from a previous pin or a record.
        let (cid, mode) = match (previous, recorded) {
            (Some(pin), _) => (pin.cid, pin.mode),
            (None, Some(record)) => (record.cid, record.mode),
            (None, None) => unreachable!("owed_peers owes nothing without a previous pin or record"),
        };
        let seq = self.next_unpin_seq()?;
        let record = encode_unpin(self.path, &UnpinRecord { cid, mode, from, seq })?;
        self.unpins.insert(key.as_bytes(), record.as_slice()).map_err(write_error(self.path))?;
        Ok(())
    }

    /// The keys of every unpin record, in key order.
    pub(super) fn recorded_unpins(&self) -> Result<Vec<CidKey>> {
        let mut keys = Vec::new();
        for entry in self.unpins.iter().map_err(write_error(self.path))? {
            let (key, _) = entry.map_err(write_error(self.path))?;
            keys.push(CidKey::from_bytes(key.value()).ok_or_else(|| {
                damaged(
                    self.path,
                    format!("an unpin record is stored under {}, not a CID key", describe_key(key.value())),
                )
            })?);
        }
        Ok(keys)
    }

    fn next_unpin_seq(&mut self) -> Result<u64> {
        let last = match self.unpin_seq {
            Some(seq) => seq,
            None => {
                let stored = self.meta.get(UNPIN_SEQ).map_err(write_error(self.path))?;
                stored.map(|v| decode_seq(self.path, v.value())).transpose()?.unwrap_or(0)
            }
        };
        let seq = last + 1;
        self.meta.insert(UNPIN_SEQ, seq.to_le_bytes().as_slice()).map_err(write_error(self.path))?;
        self.unpin_seq = Some(seq);
        Ok(seq)
    }

    pub(super) fn set_last_applied(&mut self, applied: Option<&[u8]>) -> Result<()> {
        match applied {
            Some(applied) => self.meta.insert(LAST_APPLIED, applied).map(drop),
            None => self.meta.remove(LAST_APPLIED).map(drop),
        }
        .map_err(write_error(self.path))
    }
}

/// The peers that may still hold an IPFS pin of a CID that the cluster no longer asks of them,
/// once its allocations go from `previous` to `next` (`None`: not in the pinset), given those
/// `recorded` before. Allocation lists follow [`Pin::allocations`] (empty = every peer); so does
/// the result, which is `None` when nobody is owed an unpin. "Every peer but `next`'s" stays
/// "every peer": a superset is safe, as each peer also checks that the pin is not allocated to
/// it any more before unpinning.
pub(super) fn owed_peers(
    recorded: Option<&[PeerId]>,
    previous: Option<&[PeerId]>,
    next: Option<&[PeerId]>,
) -> Option<Vec<PeerId>> {
    let mut owed: Option<Vec<PeerId>> = None;
    for peers in [recorded, previous].into_iter().flatten() {
        owed = Some(match owed {
            None => peers.to_vec(),
            Some(so_far) if so_far.is_empty() || peers.is_empty() => Vec::new(),
            Some(mut so_far) => {
                for peer in peers {
                    if !so_far.contains(peer) {
                        so_far.push(*peer);
                    }
                }
                so_far
            }
        });
    }
    match (owed?, next) {
        (owed, None) => Some(owed),
        // Allocated to every peer again: nobody lost it.
        (_, Some([])) => None,
        (every, Some(_)) if every.is_empty() => Some(every),
        (owed, Some(kept)) => {
            let still: Vec<PeerId> = owed.into_iter().filter(|peer| !kept.contains(peer)).collect();
            (!still.is_empty()).then_some(still)
        }
    }
}

/// Whether pinning `new` over `stored` would change nothing: the same options and allocations
/// (in any order); only the time of the request differs.
fn same_pin(stored: &Pin, new: &Pin) -> bool {
    let sorted = |pin: &Pin| {
        let mut peers = pin.allocations.clone();
        peers.sort();
        peers
    };
    sorted(stored) == sorted(new)
        && *stored == Pin { timestamp: stored.timestamp, allocations: stored.allocations.clone(), ..new.clone() }
}

fn write_error(path: &Path) -> impl Fn(redb::StorageError) -> Error + '_ {
    move |e| db_error(path, "writing the pinset", e)
}

pub(super) fn open_read<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    table: TableDefinition<K, V>,
    path: &Path,
) -> Result<ReadOnlyTable<K, V>> {
    txn.open_table(table).map_err(|e| match e {
        TableError::TableDoesNotExist(name) => damaged(path, format!("its table `{name}` is missing")),
        e => db_error(path, "cannot read the pinset state", e),
    })
}

/// A record: [`RECORD_V1`], then the postcard encoding of the pin.
pub(super) fn encode_pin(path: &Path, pin: &Pin) -> Result<Vec<u8>> {
    postcard::to_extend(pin, vec![RECORD_V1])
        .map_err(|e| Error::Storage(format!("{}: cannot encode the pin of {}: {e}", path.display(), pin.cid)))
}

/// Reads a record stored under `key`; anything but a well-formed record of that very key is damage.
pub(super) fn decode_pin(path: &Path, key: &[u8], record: &[u8]) -> Result<Pin> {
    let pin =
        decode_record(record).map_err(|why| damaged(path, format!("the record of {}: {why}", describe_key(key))))?;
    if pin.key().as_bytes() != key {
        return Err(damaged(path, format!("the record stored under {} is the pin of {}", describe_key(key), pin.cid)));
    }
    Ok(pin)
}

/// Decodes a record of any version this build reads.
pub(super) fn decode_record(record: &[u8]) -> Result<Pin, String> {
    match record.split_first() {
        Some((&RECORD_V1, body)) => match postcard::take_from_bytes::<Pin>(body) {
            Ok((pin, [])) => Ok(pin),
            Ok((_, rest)) => Err(format!("{} unexpected bytes after the pin", rest.len())),
            Err(e) => Err(format!("it does not decode ({e})")),
        },
        Some((version, _)) => Err(format!("unknown record version {version}")),
        None => Err("it is empty".into()),
    }
}

/// An unpin record: [`RECORD_V1`], then the postcard encoding of this.
#[derive(Serialize, Deserialize)]
struct UnpinRecord {
    #[serde(with = "cid_serde")]
    cid: Cid,
    mode: PinMode,
    /// Empty = every peer.
    from: Vec<PeerId>,
    seq: u64,
}

fn encode_unpin(path: &Path, record: &UnpinRecord) -> Result<Vec<u8>> {
    postcard::to_extend(record, vec![RECORD_V1]).map_err(|e| {
        Error::Storage(format!("{}: cannot encode the unpin record of {}: {e}", path.display(), record.cid))
    })
}

fn decode_unpin(path: &Path, key: &[u8], record: &[u8]) -> Result<UnpinRecord> {
    let damaged_record = |why: String| damaged(path, format!("the unpin record of {}: {why}", describe_key(key)));
    let record = match record.split_first() {
        Some((&RECORD_V1, body)) => match postcard::take_from_bytes::<UnpinRecord>(body) {
            Ok((record, [])) => record,
            Ok((_, rest)) => return Err(damaged_record(format!("{} unexpected bytes after it", rest.len()))),
            Err(e) => return Err(damaged_record(format!("it does not decode ({e})"))),
        },
        Some((version, _)) => return Err(damaged_record(format!("unknown record version {version}"))),
        None => return Err(damaged_record("it is empty".into())),
    };
    if CidKey::of(&record.cid).as_bytes() != key {
        return Err(damaged_record(format!("it names {}", record.cid)));
    }
    Ok(record)
}

/// Reads an unpin record stored under `key` as the API returns it.
pub(super) fn decode_pending_unpin(path: &Path, key: &[u8], record: &[u8]) -> Result<PendingUnpin> {
    let UnpinRecord { cid, mode, from, seq } = decode_unpin(path, key, record)?;
    Ok(PendingUnpin { key: CidKey::of(&cid), cid, mode, from, seq })
}

pub(super) fn decode_seq(path: &Path, value: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(value).map(u64::from_le_bytes).map_err(|_| damaged(path, "its unpin sequence is unreadable"))
}

pub(super) fn describe_key(key: &[u8]) -> String {
    match CidKey::from_bytes(key) {
        Some(key) => key.to_cid().to_string(),
        None => format!("key 0x{}", key.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

pub(super) fn damaged(path: &Path, what: impl Display) -> Error {
    Error::Storage(format!("{}: {what}: the state file is damaged; {DAMAGED_HINT}", path.display()))
}

/// A redb failure, with what we were doing and what the operator can do about it.
pub(super) fn db_error(path: &Path, doing: &str, e: impl Into<redb::Error>) -> Error {
    let e: redb::Error = e.into();
    let hint = match &e {
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            return damaged(path, format!("{doing}: {e}"))
        }
        redb::Error::Corrupted(_) => return damaged(path, format!("{doing}: {e}")),
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            "another process has it open: stop the other peer that uses this data directory"
        }
        redb::Error::UpgradeRequired(_) => {
            "it was written by an incompatible storage version: restore it from a snapshot"
        }
        redb::Error::Io(_) | redb::Error::PreviousIo => {
            "check the disk (free space, permissions), then restart the peer"
        }
        _ => "restart the peer; if this persists, restore the state from a snapshot",
    };
    Error::Storage(format!("{}: {doing}: {e}; {hint}", path.display()))
}
