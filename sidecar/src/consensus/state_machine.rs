//! The pinset as openraft's state machine, and its snapshots as files.
//!
//! Applying a run of entries is one [`PinState::apply_each`] transaction that also stores where the
//! state is ([`Applied`]: the last log id and the membership), so the pinset and its log position
//! never disagree after a crash. The pin tracker hears of the changes before Raft answers the
//! write. A snapshot is the pinset's own snapshot stream, written to a file and fsynced; only the
//! newest is kept, with its metadata in `current.meta`, and never replaced by an older one. A
//! snapshot being received is staged into the pinset's files as its chunks arrive (see
//! [`PinState::stage`]), unseen until the install swaps it in; it is kept before that swap, so the
//! pinset is never ahead of the current snapshot: a crash in between is finished when the state
//! machine opens again.

use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};

use super::snapshot_file::{Arriving, Progress, SnapshotFile};
use super::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::state::{PinState, StagedSnapshot, StateObserver};
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
    /// The snapshot being received, staged into the pinset as it arrives.
    receiving: Option<Receiving>,
}

struct Receiving {
    progress: Arc<Progress>,
    staging: tokio::task::JoinHandle<Result<StagedSnapshot>>,
}

impl Receiving {
    /// Stops the staging (its file is given up) and waits for it to end.
    async fn stop(self) {
        self.progress.abandon();
        if let Ok(Ok(staged)) = self.staging.await {
            tracing::debug!(?staged, "a snapshot was staged but not installed");
        }
    }
}

impl Drop for StateMachine {
    fn drop(&mut self) {
        if let Some(receiving) = &self.receiving {
            receiving.progress.abandon();
        }
    }
}

impl StateMachine {
    pub fn open(state: Arc<PinState>, observer: Arc<dyn StateObserver>, snapshot_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(snapshot_dir)?;
        let snapshots = Arc::new(SnapshotDir { dir: snapshot_dir.to_path_buf(), files: Mutex::new(()) });
        snapshots.finish_interrupted_install(&state, observer.as_ref())?;
        let membership = Applied::read(&state)?.membership;
        Ok(StateMachine { state, observer, snapshots, membership, receiving: None })
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

    /// Starts staging the snapshot into the pinset while it arrives (see [`PinState::stage`]).
    async fn begin_receiving_snapshot(&mut self) -> std::result::Result<Box<SnapshotFile>, StorageError> {
        let failed = |e: std::io::Error| StorageError::from(StorageIOError::write_snapshot(None, io_error(e)));
        if let Some(earlier) = self.receiving.take() {
            earlier.stop().await;
        }
        let path = self.snapshots.incoming();
        // A new file, not the earlier one truncated: its writer may still hold it.
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed(e)),
            _ => {}
        }
        // Read back by `install_snapshot` through this very handle: open it for both.
        let file =
            tokio::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).await.map_err(failed)?;
        let arriving = std::fs::File::open(&path).map_err(failed)?;
        let (file, progress) = SnapshotFile::receiving(file);
        let state = self.state.clone();
        let reader = Arriving::new(arriving, progress.clone());
        let staging = tokio::task::spawn_blocking(move || state.stage(reader));
        self.receiving = Some(Receiving { progress, staging });
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotFile>,
    ) -> std::result::Result<(), StorageError> {
        let failed = |e: Error| StorageError::from(StorageIOError::write_snapshot(Some(meta.signature()), io_error(e)));
        let staging = match self.receiving.take() {
            Some(receiving) if snapshot.is_followed_by(&receiving.progress) => Some(receiving.staging),
            other => {
                if let Some(stale) = other {
                    stale.stop().await;
                }
                None
            }
        };
        let file = snapshot.into_std().await;
        // Made durable while the staging ends.
        let synced = tokio::task::spawn_blocking(move || -> Result<std::fs::File> {
            file.sync_all()?;
            Ok(file)
        });
        let joined = |e: tokio::task::JoinError| failed(Error::Storage(e.to_string()));
        let staged = match staging {
            Some(staging) => Some(staging.await.map_err(joined)?.map_err(failed)?),
            None => None,
        };
        let file = synced.await.map_err(joined)?.map_err(failed)?;
        let (state, snapshots, meta_owned) = (self.state.clone(), self.snapshots.clone(), meta.clone());
        let summary = tokio::task::spawn_blocking(move || {
            let staged = match staged {
                Some(staged) => staged,
                // Not received through `begin_receiving_snapshot`: staged from its start.
                None => {
                    use std::io::Seek;
                    let mut file = &file;
                    file.rewind()?;
                    state.stage(BufReader::new(file))?
                }
            };
            // Kept once known whole, and before the swap: a pinset restored past the current
            // snapshot could leave that older one to be sent to followers behind the purge
            // point.
            snapshots.keep(snapshots.incoming(), &meta_owned)?;
            state.finish_restore(staged)
        })
        .await
        .map_err(joined)?
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
    /// Returns the current snapshot: the one just built, or a newer one installed while it was
    /// being built (openraft keeps the newest meta it is given, so the older is simply dropped).
    async fn build_snapshot(&mut self) -> std::result::Result<Snapshot<TypeConfig>, StorageError> {
        let state = self.state.clone();
        let snapshots = self.snapshots.clone();
        tokio::task::spawn_blocking(move || snapshots.build(&state))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, io_error(e)))?
            .map_err(|e| StorageIOError::write_snapshot(None, io_error(e)))?;
        let current = self.snapshots.current().await.map_err(|e| StorageIOError::read_snapshot(None, io_error(e)))?;
        current.ok_or_else(|| {
            StorageIOError::read_snapshot(None, io_error("no snapshot is current after building one")).into()
        })
    }
}

/// The snapshot files: `<id>.snap` for the newest snapshot, named by `current.meta`.
struct SnapshotDir {
    dir: PathBuf,
    /// Held while `current.meta` changes or the file it names is opened: a build (openraft runs it
    /// in its own task) and an install may keep snapshots at the same time.
    files: Mutex<()>,
}

impl SnapshotDir {
    fn incoming(&self) -> PathBuf {
        self.dir.join("incoming.snap")
    }

    /// Writes a snapshot of the pinset from one consistent read, fsyncs it and makes it current
    /// (see [`SnapshotDir::keep`]).
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
    /// deletes the one it replaces; unless the current one is newer (a build that started before
    /// an install and finished after it), then `file` is deleted instead.
    fn keep(&self, file: PathBuf, meta: &SnapshotMeta) -> Result<()> {
        let _files = self.lock();
        let previous = self.read_meta()?;
        if let Some(newer) = previous.as_ref().filter(|current| current.last_log_id > meta.last_log_id) {
            let (current, older) = (&newer.snapshot_id, &meta.snapshot_id);
            tracing::info!(%current, %older, "dropped a snapshot older than the current one");
            std::fs::remove_file(&file)?;
            return Ok(());
        }
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
        let (meta, file) = {
            let _files = self.lock();
            let Some(meta) = self.read_meta()? else { return Ok(None) };
            let file = std::fs::File::open(self.file_of(&meta))?;
            (meta, file)
        };
        Ok(Some(Snapshot { meta, snapshot: Box::new(SnapshotFile::new(tokio::fs::File::from_std(file))) }))
    }

    /// Restores the current snapshot if the pinset is behind it: an install was stopped between
    /// keeping the snapshot and committing its restore. openraft takes the current snapshot as
    /// installed, and would not install it again.
    fn finish_interrupted_install(&self, state: &PinState, observer: &dyn StateObserver) -> Result<()> {
        let applied = Applied::read(state)?;
        let Some(meta) = self.read_meta()?.filter(|meta| meta.last_log_id > applied.last_log_id) else {
            return Ok(());
        };
        tracing::warn!(snapshot = %meta.snapshot_id, "finishing the install of a snapshot that a stop interrupted");
        let summary = state.restore(BufReader::new(std::fs::File::open(self.file_of(&meta))?))?;
        observer.on_restored(&summary);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // It guards files, changed by atomic renames only: a panic while it was held leaves no
        // half-done change behind it.
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use openraft::CommittedLeaderId;
    use tempfile::TempDir;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::consensus::types::OpBatch;
    use crate::state::tests::pin_n;
    use crate::state::{SnapshotSummary, StateChange, StateOp};

    #[derive(Default)]
    struct CountRestores(AtomicUsize);

    impl StateObserver for CountRestores {
        fn on_changes(&self, _changes: &[StateChange]) {}

        fn on_restored(&self, _summary: &SnapshotSummary) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    /// A state machine in `dir/name` that applied entries 1..=`last`, entry n pinning `pin_n(n)`.
    async fn machine_at(dir: &TempDir, name: &str, last: u64) -> (Arc<PinState>, StateMachine) {
        let state = Arc::new(PinState::open(&dir.path().join(format!("{name}.redb"))).unwrap());
        let mut machine =
            StateMachine::open(state.clone(), Arc::new(CountRestores::default()), &dir.path().join(name)).unwrap();
        machine.apply((1..=last).map(entry)).await.unwrap();
        (state, machine)
    }

    /// The leader's snapshot at entry 5: its meta and its bytes.
    async fn leader_snapshot(dir: &TempDir) -> (SnapshotMeta, Vec<u8>) {
        let (_, mut leader) = machine_at(dir, "leader", 5).await;
        let mut snapshot = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let mut bytes = Vec::new();
        snapshot.snapshot.read_to_end(&mut bytes).await.unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(5)));
        (snapshot.meta, bytes)
    }

    /// Receives `bytes` as openraft does before it installs them.
    async fn received(machine: &mut StateMachine, bytes: &[u8]) -> Box<SnapshotFile> {
        let mut file = machine.begin_receiving_snapshot().await.unwrap();
        file.write_all(bytes).await.unwrap();
        file.shutdown().await.unwrap();
        file
    }

    #[tokio::test]
    async fn a_build_that_loses_the_race_to_an_install_leaves_the_newer_snapshot_current() {
        let dir = TempDir::new().unwrap();
        let (meta, bytes) = leader_snapshot(&dir).await;
        let (_, mut follower) = machine_at(&dir, "follower", 2).await;
        // What a build that read the pinset before the install sees.
        let (before_install, _) = machine_at(&dir, "before-install", 2).await;

        let file = received(&mut follower, &bytes).await;
        follower.install_snapshot(&meta, file).await.unwrap();
        let mut late_build = SnapshotBuilder { state: before_install, snapshots: follower.snapshots.clone() };
        let returned = late_build.build_snapshot().await.unwrap();

        assert_eq!(returned.meta, meta, "the build answers with the newer, current snapshot");
        assert_eq!(follower.get_current_snapshot().await.unwrap().unwrap().meta, meta);
        let snap_files = std::fs::read_dir(dir.path().join("follower"))
            .unwrap()
            .filter(|f| f.as_ref().unwrap().path().extension().is_some_and(|e| e == "snap"))
            .count();
        assert_eq!(snap_files, 1, "the older build is gone");
    }

    #[tokio::test]
    async fn an_install_stopped_before_its_restore_is_finished_at_open() {
        let dir = TempDir::new().unwrap();
        let (meta, bytes) = leader_snapshot(&dir).await;
        let (state, follower) = machine_at(&dir, "follower", 2).await;
        // The install kept the snapshot, then the process stopped before the restore committed.
        let incoming = follower.snapshots.incoming();
        std::fs::write(&incoming, &bytes).unwrap();
        follower.snapshots.keep(incoming, &meta).unwrap();
        drop(follower);

        let restores = Arc::new(CountRestores::default());
        let mut reopened = StateMachine::open(state.clone(), restores.clone(), &dir.path().join("follower")).unwrap();
        assert_eq!(reopened.applied_state().await.unwrap().0, Some(log_id(5)));
        assert_eq!(state.scan(None, usize::MAX).unwrap(), (1..=5).map(pin_n).collect::<Vec<_>>());
        assert_eq!(restores.0.load(Ordering::Relaxed), 1);

        // A pinset at or past its current snapshot is left as it is.
        StateMachine::open(state, restores.clone(), &dir.path().join("follower")).unwrap();
        assert_eq!(restores.0.load(Ordering::Relaxed), 1);
    }

    fn entry(n: u64) -> Entry {
        Entry { log_id: log_id(n), payload: EntryPayload::Normal(OpBatch(vec![StateOp::Pin(pin_n(n))])) }
    }

    /// A snapshot is staged while its chunks arrive, and the state machine applies entries
    /// meanwhile: the staging never holds the pinset's writes up until the transfer ends.
    #[tokio::test]
    async fn entries_apply_while_a_snapshot_arrives_and_the_install_replaces_them() {
        let dir = TempDir::new().unwrap();
        let (meta, bytes) = leader_snapshot(&dir).await;
        let (state, mut follower) = machine_at(&dir, "follower", 1).await;

        let mut file = follower.begin_receiving_snapshot().await.unwrap();
        let (first, rest) = bytes.split_at(bytes.len() / 2);
        file.write_all(first).await.unwrap();
        let applied = tokio::time::timeout(Duration::from_secs(30), follower.apply([entry(2)])).await;
        applied.expect("an apply while a snapshot arrives").unwrap();
        assert_eq!(state.scan(None, usize::MAX).unwrap(), vec![pin_n(1), pin_n(2)], "not yet installed");

        file.write_all(rest).await.unwrap();
        file.shutdown().await.unwrap();
        follower.install_snapshot(&meta, file).await.unwrap();
        assert_eq!(state.scan(None, usize::MAX).unwrap(), (1..=5).map(pin_n).collect::<Vec<_>>());
        assert_eq!(follower.applied_state().await.unwrap().0, Some(log_id(5)));
    }

    /// A transfer given up (openraft starts another one, for a newer snapshot or from a new
    /// leader) stops its staging, and the next transfer installs whole.
    #[tokio::test]
    async fn a_transfer_given_up_stops_its_staging_and_the_next_one_installs() {
        let dir = TempDir::new().unwrap();
        let (meta, bytes) = leader_snapshot(&dir).await;
        let (state, mut follower) = machine_at(&dir, "follower", 2).await;

        let mut abandoned = follower.begin_receiving_snapshot().await.unwrap();
        abandoned.write_all(&bytes[..bytes.len() / 3]).await.unwrap();
        let file = tokio::time::timeout(Duration::from_secs(30), received(&mut follower, &bytes))
            .await
            .expect("the earlier staging stops");
        drop(abandoned);
        follower.install_snapshot(&meta, file).await.unwrap();
        assert_eq!(state.scan(None, usize::MAX).unwrap(), (1..=5).map(pin_n).collect::<Vec<_>>());

        // A state machine dropped mid-transfer lets its staging go too.
        let (other_state, mut other) = machine_at(&dir, "other", 2).await;
        let mut partial = other.begin_receiving_snapshot().await.unwrap();
        partial.write_all(&bytes[..bytes.len() / 3]).await.unwrap();
        drop(other);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while Arc::strong_count(&other_state) > 1 {
            assert!(tokio::time::Instant::now() < deadline, "the staging still holds the pinset");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(other_state.scan(None, usize::MAX).unwrap(), vec![pin_n(1), pin_n(2)]);
    }

    /// A snapshot that arrives damaged is refused before it is kept: neither the pinset nor the
    /// current snapshot changes.
    #[tokio::test]
    async fn a_damaged_snapshot_is_neither_kept_nor_installed() {
        let dir = TempDir::new().unwrap();
        let (meta, mut bytes) = leader_snapshot(&dir).await;
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        let (state, mut follower) = machine_at(&dir, "follower", 2).await;

        let file = received(&mut follower, &bytes).await;
        let error = follower.install_snapshot(&meta, file).await.unwrap_err();
        assert!(error.to_string().contains("snapshot rejected"), "{error}");
        assert_eq!(state.scan(None, usize::MAX).unwrap(), vec![pin_n(1), pin_n(2)]);
        assert!(follower.get_current_snapshot().await.unwrap().is_none(), "not kept");
    }
}
