//! Re-allocation: when a peer has been gone longer than the grace period (`repin_after`), or has
//! left the cluster, the leader moves its pins so every pin keeps at least `min` live holders.
//!
//! The decision for one pin is [`plan_repin`], pure; the leader's periodic pass reads the pinset
//! page by page and commits each move through consensus as a [`StateOp::Reallocate`], applied
//! only if the pin is still the one read (a concurrent unpin or change wins over the move). The peer that lost a
//! pin unpins it when it comes back (an unpin record names it).

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use libp2p::PeerId;

use super::Cluster;
use crate::allocator::{self, AllocationRequest, Candidate};
use crate::monitor::PING;
use crate::state::StateOp;
use crate::types::{CidKey, Pin};

/// Pins read per pass step.
const PAGE: usize = 4096;
/// Moved pins committed at once.
const CONCURRENT_COMMITS: usize = 64;

/// The new allocations of `pin` when fewer than its minimum of holders are live; `None` when it
/// is fine as it is (or pinned everywhere, or no allocation can do better now).
pub fn plan_repin(pin: &Pin, gone: &HashSet<PeerId>, candidates: &[Candidate]) -> Option<Vec<PeerId>> {
    if pin.allocations.is_empty() || pin.replication_factor_min < 1 {
        return None;
    }
    let live: Vec<PeerId> = pin.allocations.iter().copied().filter(|p| !gone.contains(p)).collect();
    if live.len() >= pin.replication_factor_min as usize {
        return None;
    }
    let candidates: Vec<Candidate> = candidates.iter().filter(|c| !gone.contains(&c.peer)).cloned().collect();
    let request = AllocationRequest {
        cid: &pin.cid,
        replication_min: pin.replication_factor_min,
        replication_max: pin.replication_factor_max,
        current: &live,
        preferred: &pin.user_allocations,
    };
    allocator::allocate(&request, &candidates).ok().filter(|new| new != &pin.allocations)
}

impl Cluster {
    /// Peers that count as gone: ping lapsed for longer than `grace`, or no longer members.
    fn gone_peers(&self, grace: Duration) -> HashSet<PeerId> {
        let members: HashSet<String> = self.inner.consensus.members().into_iter().map(|m| m.peer_id).collect();
        let now = Utc::now();
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let mut gone: HashSet<PeerId> = self
            .inner
            .monitor
            .lapsed(PING, now)
            .into_iter()
            .filter(|(_, expired_at)| now - *expired_at > grace)
            .filter_map(|(peer, _)| peer.parse().ok())
            .collect();
        gone.extend(
            self.inner
                .monitor
                .peers()
                .into_iter()
                .filter(|p| !members.contains(p))
                .filter_map(|p| p.parse::<PeerId>().ok()),
        );
        gone
    }

    /// The leader's periodic pass. Skipped when no peer is gone, and when nothing changed since
    /// the last full pass that found nothing to move (the same gone peers and members), so a
    /// quiet or growing cluster does not rescan millions of pins every few seconds.
    pub(super) async fn repin_pass(&self, grace: Duration) {
        if self.consensus_status().role != crate::types::ConsensusRole::Leader {
            return;
        }
        let gone = self.gone_peers(grace);
        let members: BTreeSet<String> = self.inner.consensus.members().into_iter().map(|m| m.peer_id).collect();
        let mut fingerprint: BTreeSet<String> = gone.iter().map(ToString::to_string).collect();
        fingerprint.extend(members.into_iter().map(|m| format!("member:{m}")));
        if self.inner.last_repin.lock().expect("repin lock").as_ref() == Some(&fingerprint) {
            return;
        }
        if gone.is_empty() {
            // Allocation never commits a pin with fewer holders than its minimum, so with nobody
            // gone no pin can need a move: a join alone must not cost the leader a scan of
            // millions of pins (the reference, too, re-pins on a peer's lapsed ping only).
            *self.inner.last_repin.lock().expect("repin lock") = Some(fingerprint);
            return;
        }
        let candidates = self.allocation_candidates();
        let mut after: Option<CidKey> = None;
        let mut moved = 0usize;
        let mut unsettled = 0usize;
        loop {
            let cursor = after.clone();
            let page = match self.read_state(move |state| state.scan(cursor.as_ref(), PAGE)).await {
                Ok(page) => page,
                Err(e) => return tracing::error!(error = %e, "re-allocation cannot read the pinset"),
            };
            after = page.last().map(Pin::key);
            let done = page.len() < PAGE;
            let moves: Vec<(Pin, Vec<PeerId>)> = page
                .into_iter()
                .filter_map(|pin| {
                    let allocations = plan_repin(&pin, &gone, &candidates)?;
                    Some((pin, allocations))
                })
                .collect();
            let (gone, candidates) = (&gone, &candidates);
            let outcomes: Vec<bool> = futures::stream::iter(moves)
                .map(|(pin, allocations)| async move {
                    tracing::info!(cid = %pin.cid, ?allocations, "re-allocating a pin");
                    let key = pin.key();
                    // Applied only to the pin as read: one unpinned or changed since stays as it is.
                    let op = StateOp::Reallocate {
                        key: key.clone(),
                        expected: pin.timestamp,
                        allocations,
                        timestamp: Utc::now(),
                    };
                    self.inner.consensus.commit(op).await.is_ok() && self.settled(&key, gone, candidates)
                })
                .buffer_unordered(CONCURRENT_COMMITS)
                .collect()
                .await;
            moved += outcomes.iter().filter(|ok| **ok).count();
            unsettled += outcomes.iter().filter(|ok| !**ok).count();
            if done {
                break;
            }
        }
        if moved > 0 || unsettled > 0 {
            tracing::info!(moved, unsettled, gone = gone.len(), "re-allocation pass done");
        }
        if unsettled == 0 {
            *self.inner.last_repin.lock().expect("repin lock") = Some(fingerprint);
        }
    }

    /// Whether the pin of `key` needs no move any more, as this peer's state has it once the
    /// re-allocation is applied here: a pin changed meanwhile kept its allocations and may still
    /// need one, so the next pass must not be skipped.
    fn settled(&self, key: &CidKey, gone: &HashSet<PeerId>, candidates: &[Candidate]) -> bool {
        match self.inner.state.get(key) {
            Ok(pin) => pin.is_none_or(|pin| plan_repin(&pin, gone, candidates).is_none()),
            Err(e) => {
                tracing::error!(error = %e, "re-allocation cannot read the pinset");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::pin_n;

    fn pin_on(allocations: &[PeerId], min: i32, max: i32) -> Pin {
        let mut pin = pin_n(1);
        pin.allocations = allocations.to_vec();
        pin.replication_factor_min = min;
        pin.replication_factor_max = max;
        pin
    }

    #[test]
    fn pins_move_only_below_their_minimum_of_live_holders() {
        let [a, b, c, d] = [PeerId::random(), PeerId::random(), PeerId::random(), PeerId::random()];
        let candidates: Vec<Candidate> = [(a, 10), (b, 20), (c, 30), (d, 5)]
            .iter()
            .map(|(peer, free_space)| Candidate { peer: *peer, free_space: *free_space })
            .collect();
        let gone = |peers: &[PeerId]| peers.iter().copied().collect::<HashSet<_>>();
        // (pin, gone) => new allocations
        let cases: Vec<(Pin, HashSet<PeerId>, Option<Vec<PeerId>>)> = vec![
            // Nobody gone.
            (pin_on(&[a, b], 2, 2), gone(&[]), None),
            // A holder gone: replaced by the candidate with the most free space; the live one stays.
            (pin_on(&[a, b], 2, 2), gone(&[a]), Some(vec![b, c])),
            // Still at its minimum without the gone holder: left alone.
            (pin_on(&[a, b, c], 2, 3), gone(&[a]), None),
            // Below the minimum: topped up to the maximum.
            (pin_on(&[a, b], 2, 3), gone(&[a]), Some(vec![b, c, d])),
            // Pinned everywhere: nothing to move.
            (pin_on(&[], -1, -1), gone(&[a]), None),
            // Not enough live candidates: left as it is (and alerted on elsewhere).
            (pin_on(&[a, b], 2, 2), gone(&[a, c, d]), None),
        ];
        for (pin, gone, expected) in cases {
            assert_eq!(plan_repin(&pin, &gone, &candidates), expected, "{:?} gone {gone:?}", pin.allocations);
        }
    }
}
