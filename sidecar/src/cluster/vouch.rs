//! Readiness vouched for by the operator (ours). A peer is ready only with a leader. Under a
//! StatefulSet's `OrderedReady` policy that deadlocks a whole-cluster restart: the StatefulSet
//! recreates pod 0 alone and creates pod 1 only once pod 0 is Ready, but pod 0 alone is no quorum.
//! The operator, which sees that the members a quorum needs have no pods yet, vouches for the
//! members that are back: each reports ready without a leader for a while, or until it knows one.

use std::time::Duration;

use tokio::time::Instant;

use super::Cluster;
use crate::{Error, Result};

/// The longest a vouch lasts; the operator renews it while it is needed.
const MAX_VOUCH: Duration = Duration::from_secs(600);

impl Cluster {
    /// `PUT /consensus/vouch` (ours): report ready without a leader for `span`, or until a leader
    /// is known. Only a member can be vouched for. Returns the time granted: zero when a leader is
    /// already known.
    pub fn vouch(&self, span: Duration) -> Result<Duration> {
        if span.is_zero() || span > MAX_VOUCH {
            return Err(Error::BadRequest(format!("seconds: between 1 and {}", MAX_VOUCH.as_secs())));
        }
        if !self.inner.consensus.is_member() {
            return Err(Error::Conflict("not a cluster member: there is no readiness to vouch for".into()));
        }
        *self.inner.vouched_until.lock().expect("vouch lock") = Some(Instant::now() + span);
        Ok(self.vouched_left())
    }

    /// How long the vouch has left; zero when there is none, or once a leader is known (which
    /// ends it: a later loss of the leader makes the peer unready as usual).
    pub(super) fn vouched_left(&self) -> Duration {
        let mut until = self.inner.vouched_until.lock().expect("vouch lock");
        if self.inner.consensus.is_ready() {
            *until = None;
        }
        until.map_or(Duration::ZERO, |until| until.saturating_duration_since(Instant::now()))
    }
}
