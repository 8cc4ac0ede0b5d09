//! The pinset: the replicated state machine of the cluster (CID -> Pin), durable on disk.
//!
//! It only ever changes by applying [`StateOp`]s, in order, and it can snapshot and restore itself,
//! so a consensus layer (single-node today, Raft later) drives it without knowing its insides.
//! Every applied batch reports its [`StateChange`]s to a [`StateObserver`] (the pin tracker).

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::types::{CidKey, Pin};
use crate::Result;

/// An operation on the pinset.
#[derive(Clone, Debug, PartialEq)]
pub enum StateOp {
    /// Adds or replaces the pin of `pin.cid`.
    Pin(Pin),
    /// Removes the pin; a no-op when absent.
    Unpin(CidKey),
}

/// What applying an operation changed.
#[derive(Clone, Debug, PartialEq)]
pub enum StateChange {
    Pinned { pin: Pin, previous: Option<Pin> },
    Unpinned { pin: Pin },
}

/// Told of every change, synchronously, after it is durable and before the write is acknowledged.
/// Implementations must be quick (enqueue work, never block on IO).
pub trait StateObserver: Send + Sync + 'static {
    fn on_changes(&self, changes: &[StateChange]);
}

/// The durable pinset.
pub struct PinState {
    _todo: (),
}

impl PinState {
    /// Opens (or creates) the state at `path`. A corrupt, truncated or foreign file is an error
    /// that names the file; it is never replaced or emptied.
    pub fn open(_path: &Path) -> Result<Self> {
        todo!()
    }

    /// Applies `ops` in order in one durable transaction (fsync before returning).
    pub fn apply(&self, _ops: &[StateOp]) -> Result<Vec<StateChange>> {
        todo!()
    }

    pub fn get(&self, _key: &CidKey) -> Result<Option<Pin>> {
        todo!()
    }

    pub fn len(&self) -> Result<u64> {
        todo!()
    }

    /// Up to `limit` pins in key order, starting after `after` (pagination for streaming).
    pub fn scan(&self, _after: Option<&CidKey>, _limit: usize) -> Result<Vec<Pin>> {
        todo!()
    }

    /// Pins whose `expire_at` is at or before `now`.
    pub fn expired(&self, _now: DateTime<Utc>) -> Result<Vec<Pin>> {
        todo!()
    }
}
