//! The pinset as openraft's state machine, and its snapshots as files.
//!
//! Applying a run of entries is one [`PinState::apply_each`] transaction that also stores where the
//! state is ([`Applied`]: the last log id and the membership), so the pinset and its log position
//! never disagree after a crash. The pin tracker hears of the changes before Raft answers the
//! write. A snapshot is the pinset's own snapshot stream, written to a file and fsynced; only the
//! newest is kept, with its metadata in `current.meta`.

use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};

use super::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::state::{PinState, StateObserver};
use crate::{Error, Result};

const CURRENT_META: &str = "current.meta";

/// Where the state is, stored with the pins as their `last_applied` blob.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Applied {
    last_log_id: Option<LogId>,
    membership: StoredMembership,
}

impl Applied {
    fn read(state: &PinState) -> Result<Applied> {
        match state.last_applied()? {
            None => Ok(Applied::default()),
            Some(blob) => decode_applied(&blob),
        }
    }
}

fn decode_applied(blob: &[u8]) -> Result<Applied> {
    postcard::from_bytes(blob).map_err(|e| Error::Storage(format!("the pinset's Raft position does not decode: {e}")))
}

pub struct StateMachine {
    state: Arc<PinState>,
    observer: Arc<dyn StateObserver>,
    snapshots: Arc<SnapshotDir>,
    /// The membership as of the last applied entry (written with each apply).
    membership: StoredMembership,
}

impl StateMachine {
    pub fn open(state: Arc<PinState>, observer: Arc<dyn StateObserver>, snapshot_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(snapshot_dir)?;
        let membership = Applied::read(&state)?.membership;
        let snapshots = Arc::new(SnapshotDir { dir: snapshot_dir.to_path_buf() });
        Ok(StateMachine { state, observer, snapshots, membership })
    }
}

fn io_error(e: impl ToString) -> AnyError {
    AnyError::error(e)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> std::result::Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = Applied::read(&self.state).map_err(|e| StorageIOError::read_state_machine(io_error(e)))?;
        Ok((applied.last_log_id, applied.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> std::result::Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut ops = Vec::new();
        let mut last_log_id = None;
        let mut count = 0;
        for entry in entries {
            count += 1;
            last_log_id = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => ops.extend(batch.0),
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                }
            }
        }
        let Some(last_log_id) = last_log_id else { return Ok(Vec::new()) };
        let applied = Applied { last_log_id: Some(last_log_id), membership: self.membership.clone() };
        // Written with every apply: postcard, as compact and quick as the log's own records.
        let blob = postcard::to_allocvec(&applied).expect("the Raft position always encodes");
        let state = self.state.clone();
        // Not fsynced: the log is, and a crash replays from the position lost with the ops.
        let outcomes = tokio::task::spawn_blocking(move || state.apply_each_deferred(&ops, &blob))
            .await
            .map_err(|e| StorageIOError::apply(last_log_id, io_error(e)))?
            .map_err(|e| StorageIOError::apply(last_log_id, io_error(e)))?;
        let changes: Vec<_> = outcomes.into_iter().flatten().collect();
        if !changes.is_empty() {
            self.observer.on_changes(&changes);
        }
        Ok(vec![(); count])
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { state: self.state.clone(), snapshots: self.snapshots.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> std::result::Result<Box<tokio::fs::File>, StorageError> {
        // Read back by `install_snapshot` through this very handle: open it for both.
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.snapshots.incoming())
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, io_error(e)))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> std::result::Result<(), StorageError> {
        let failed = |e: Error| StorageError::from(StorageIOError::write_snapshot(Some(meta.signature()), io_error(e)));
        let mut file = snapshot.into_std().await;
        let state = self.state.clone();
        let snapshots = self.snapshots.clone();
        let meta_owned = meta.clone();
        let summary = tokio::task::spawn_blocking(move || -> Result<_> {
            use std::io::Seek;
            file.sync_all()?;
            file.rewind()?;
            let summary = state.restore(BufReader::new(&file))?;
            snapshots.keep(snapshots.incoming(), &meta_owned)?;
            Ok(summary)
        })
        .await
        .map_err(|e| failed(Error::Storage(e.to_string())))?
        .map_err(failed)?;
        let applied = summary.last_applied.as_deref().map(decode_applied).transpose().map_err(failed)?;
        self.membership = applied.map(|a| a.membership).unwrap_or_else(|| meta.last_membership.clone());
        tracing::info!(pins = summary.pins, snapshot = %meta.snapshot_id, "installed a snapshot from the leader");
        self.observer.on_restored(&summary);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> std::result::Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.snapshots.current().await.map_err(|e| StorageIOError::read_snapshot(None, io_error(e)).into())
    }
}

pub struct SnapshotBuilder {
    state: Arc<PinState>,
    snapshots: Arc<SnapshotDir>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> std::result::Result<Snapshot<TypeConfig>, StorageError> {
        let state = self.state.clone();
        let snapshots = self.snapshots.clone();
        let built = tokio::task::spawn_blocking(move || snapshots.build(&state))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, io_error(e)))?
            .map_err(|e| StorageIOError::write_snapshot(None, io_error(e)))?;
        let meta = built.clone();
        let current = self.snapshots.current().await.map_err(|e| StorageIOError::read_snapshot(None, io_error(e)))?;
        current.filter(|s| s.meta == meta).ok_or_else(|| {
            StorageIOError::read_snapshot(None, io_error("the snapshot just built is not the current one")).into()
        })
    }
}

/// The snapshot files: `<id>.snap` for the newest snapshot, named by `current.meta`.
struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    fn incoming(&self) -> PathBuf {
        self.dir.join("incoming.snap")
    }

    /// Writes a snapshot of the pinset from one consistent read, fsyncs it and makes it current.
    fn build(&self, state: &PinState) -> Result<SnapshotMeta> {
        let building = self.dir.join("building.snap");
        let mut file = std::fs::File::create(&building)?;
        let summary = state.snapshot(BufWriter::new(&mut file))?;
        file.sync_all()?;
        let applied = summary.last_applied.as_deref().map(decode_applied).transpose()?.unwrap_or_default();
        let position = match applied.last_log_id {
            Some(last) => format!("{}-{}", last.leader_id.term, last.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_log_id,
            last_membership: applied.membership,
            snapshot_id: format!("{position}-{}", summary.pins),
        };
        self.keep(building, &meta)?;
        tracing::info!(pins = summary.pins, snapshot = %meta.snapshot_id, "built a snapshot");
        Ok(meta)
    }

    /// Makes the fsynced snapshot file `file` the current snapshot, described by `meta`, and
    /// deletes the one it replaces.
    fn keep(&self, file: PathBuf, meta: &SnapshotMeta) -> Result<()> {
        let previous = self.read_meta()?;
        std::fs::rename(&file, self.file_of(meta))?;
        let staged = self.dir.join("current.meta.tmp");
        let mut out = std::fs::File::create(&staged)?;
        serde_json::to_writer(&mut out, meta).map_err(|e| Error::Storage(format!("writing snapshot metadata: {e}")))?;
        out.sync_all()?;
        std::fs::rename(&staged, self.dir.join(CURRENT_META))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        if let Some(previous) = previous.filter(|p| p.snapshot_id != meta.snapshot_id) {
            let _ = std::fs::remove_file(self.file_of(&previous));
        }
        Ok(())
    }

    fn read_meta(&self) -> Result<Option<SnapshotMeta>> {
        match std::fs::read(self.dir.join(CURRENT_META)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::Storage(format!("{}: does not decode: {e}", self.dir.join(CURRENT_META).display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn file_of(&self, meta: &SnapshotMeta) -> PathBuf {
        self.dir.join(format!("{}.snap", meta.snapshot_id))
    }

    async fn current(&self) -> Result<Option<Snapshot<TypeConfig>>> {
        let Some(meta) = self.read_meta()? else { return Ok(None) };
        let file = tokio::fs::File::open(self.file_of(&meta)).await?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(file) }))
    }
}
