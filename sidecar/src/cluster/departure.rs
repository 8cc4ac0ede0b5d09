//! The departure handshake (ours, for the Kubernetes operator): when a pod stops, its preStop
//! hook waits here until the operator decided what the stop means. Either the peer leaves (the
//! operator removes it from consensus while it is still alive, so that the quorum never counts a
//! dead voter), or the pod only restarts (the operator declares it, and the peer stays a member).

use std::time::Duration;

use super::Cluster;
use crate::types::Departure;

impl Cluster {
    /// What this peer's departure is, as decided so far.
    pub fn departure(&self) -> Departure {
        if self.inner.consensus.is_removed() {
            Departure::Removed
        } else if *self.inner.restart_declared.borrow() {
            Departure::Restart
        } else {
            Departure::Undecided
        }
    }

    /// `PUT /consensus/departure` with `restart`: the pod only restarts; the peer stays a member.
    pub fn declare_restart(&self) -> Departure {
        self.inner.restart_declared.send_replace(true);
        self.departure()
    }

    /// `GET /consensus/departure?wait=...`: the departure once decided, or undecided after `wait`.
    pub async fn await_departure(&self, wait: Duration) -> Departure {
        let mut declared = self.inner.restart_declared.subscribe();
        tokio::select! {
            _ = self.inner.consensus.removed() => {}
            _ = declared.wait_for(|declared| *declared) => {}
            _ = self.inner.shutdown.cancelled() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        self.departure()
    }
}
