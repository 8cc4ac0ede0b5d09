//! What keeps consensus live through slow links and peers that come and go, beyond openraft 0.9's
//! own timers. One task, every [`PACE`]:
//! - on the leader: a heartbeat. openraft sends its own only every 1.5 heartbeat intervals, and the
//!   interval is also its time limit on a replication call, which must stay long enough for a slow
//!   link; beating faster keeps followers from campaigning on a link that is slow but alive.
//! - on a voter that does not lead: elections only while it hears from enough voters to win one.
//!   openraft 0.9 has no pre-vote: a peer cut off from the others would campaign again and again,
//!   raising its term, and on its return that term would depose a healthy leader. Hearing is
//!   libp2p's ping; the task also connects to voters it does not hear from, so that followers
//!   hear each other and can replace a leader that died. A peer that regains a majority waits
//!   [`REGAINED_GRACE`] before it may campaign: its leader, if alive, reaches it meanwhile (the
//!   leader retries a peer it could not reach every 0.5 s) and its heartbeats keep it a follower.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use openraft::ServerState;

use super::types::{ClusterNode, NodeId, Raft};

type Membership = openraft::Membership<NodeId, ClusterNode>;
use crate::protocol::Host;

/// How often the task runs (and the leader beats).
pub const PACE: Duration = Duration::from_millis(150);
/// A follower whose leader has not answered a ping for this long is not ready for writes (the
/// leader itself stops taking them after `quorum_lost_after` without a majority).
pub const LEADER_SILENCE: Duration = Duration::from_secs(2);
/// How long a peer must hear a majority again before it may campaign.
pub const REGAINED_GRACE: Duration = Duration::from_secs(2);

/// Whether a voter that does not lead may start an election: every voter set of the (possibly
/// joint) membership must have a majority among the voters it hears from, itself included.
pub fn may_elect(me: NodeId, configs: &[BTreeSet<NodeId>], heard: &BTreeSet<NodeId>) -> bool {
    configs.iter().all(|voters| {
        let reachable = voters.iter().filter(|v| **v == me || heard.contains(v)).count();
        reachable > voters.len() / 2
    })
}

/// Whether elections are allowed, from what the peer heard over time.
#[derive(Debug, Default)]
pub struct ElectionGate {
    /// Since when the peer has heard a majority without a break.
    hearing_since: Option<Instant>,
}

impl ElectionGate {
    /// `hears_majority`: [`may_elect`] now; `alone`: this peer is the only voter (nobody to hear).
    pub fn allows(&mut self, hears_majority: bool, alone: bool, now: Instant) -> bool {
        self.hearing_since = if hears_majority { self.hearing_since.or(Some(now)) } else { None };
        alone || self.hearing_since.is_some_and(|since| now.duration_since(since) >= REGAINED_GRACE)
    }
}

/// The members of `membership` this host heard from lately (a ping answered within about three
/// ping intervals), and `me`.
pub fn heard_members(p2p: &Host, membership: &Membership, me: NodeId) -> BTreeSet<NodeId> {
    let heard = p2p.heard_within(3 * p2p.ping_interval());
    membership
        .nodes()
        .filter(|(id, node)| **id == me || node.peer().is_some_and(|peer| heard.contains(&peer)))
        .map(|(id, _)| *id)
        .collect()
}

/// Runs the task until `stop` fires.
pub async fn run(raft: Raft, node_id: NodeId, p2p: Host, stop: tokio_util::sync::CancellationToken) {
    let mut ticks = tokio::time::interval(PACE);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut electing = true;
    let mut gate = ElectionGate::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let metrics = raft.metrics().borrow().clone();
        if metrics.running_state.is_err() {
            return;
        }
        if metrics.state == ServerState::Leader {
            if raft.trigger().heartbeat().await.is_err() {
                return;
            }
            continue;
        }
        let membership = metrics.membership_config.membership();
        let heard = heard_members(&p2p, membership, node_id);
        for (id, node) in membership.nodes() {
            if !heard.contains(id) && membership.voter_ids().any(|v| v == *id) {
                connect(&p2p, node).await;
            }
        }
        let configs = membership.get_joint_config();
        let alone = configs.iter().all(|voters| voters.iter().all(|v| *v == node_id));
        let allowed = gate.allows(may_elect(node_id, configs, &heard), alone, Instant::now());
        if allowed != electing {
            tracing::info!(
                allowed,
                heard = heard.len(),
                "elections {} (this peer {} a majority of the voters)",
                if allowed { "allowed again" } else { "paused" },
                if allowed { "hears" } else { "does not hear" }
            );
            raft.runtime_config().elect(allowed);
            electing = allowed;
        }
    }
}

async fn connect(p2p: &Host, node: &ClusterNode) {
    if let Some(peer) = node.peer() {
        let _ = p2p.connect(peer, node.multiaddrs()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn elections_wait_for_a_majority_heard_without_a_break() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let grace = REGAINED_GRACE.as_millis() as u64;
        // (ms since start, hears a majority, alone) => allowed
        let steps = [
            (0, true, false, false),
            (grace - 1, true, false, false),
            (grace, true, false, true),
            (grace + 100, false, false, false),
            (grace + 200, true, false, false),
            (2 * grace + 199, true, false, false),
            (2 * grace + 200, true, false, true),
            // The only voter never waits.
            (2 * grace + 300, false, true, true),
        ];
        let mut gate = ElectionGate::default();
        for (ms, hears, alone, want) in steps {
            assert_eq!(gate.allows(hears, alone, at(ms)), want, "at {ms} ms, hears {hears}, alone {alone}");
        }
    }

    #[test]
    fn elections_need_a_majority_within_reach() {
        // (me, voter sets, heard, may elect)
        type Case = (NodeId, &'static [&'static [NodeId]], &'static [NodeId], bool);
        let cases: &[Case] = &[
            (1, &[&[1]], &[], true),
            (1, &[&[1, 2, 3]], &[], false),
            (1, &[&[1, 2, 3]], &[2], true),
            (1, &[&[1, 2, 3]], &[2, 3], true),
            (1, &[&[1, 2, 3, 4, 5]], &[2], false),
            (1, &[&[1, 2, 3, 4, 5]], &[2, 5], true),
            // Learners heard do not count.
            (1, &[&[1, 2, 3]], &[4, 5], false),
            // Joint: a majority in each set.
            (1, &[&[1, 2, 3], &[1, 4, 5]], &[2], false),
            (1, &[&[1, 2, 3], &[1, 4, 5]], &[2, 4], true),
            // Two voters: both are needed.
            (1, &[&[1, 2]], &[], false),
            (1, &[&[1, 2]], &[2], true),
        ];
        for (me, configs, heard, want) in cases {
            let configs: Vec<BTreeSet<NodeId>> = configs.iter().map(|c| set(c)).collect();
            assert_eq!(may_elect(*me, &configs, &set(heard)), *want, "{me} {configs:?} heard {heard:?}");
        }
    }
}
