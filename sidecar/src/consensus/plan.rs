//! The consensus decisions that need no IO: how a peer starts, which members vote, and whether a
//! removal leaves a cluster that can lose a peer.

use std::collections::BTreeSet;

use libp2p::Multiaddr;

use super::types::NodeId;

/// What a peer does with its consensus at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartPlan {
    /// It has Raft state: it takes part again as the member it was.
    Resume,
    /// A new cluster of one: this peer. Happens at most once in a cluster's life.
    Initialize,
    /// Ask these members to add this peer.
    Join(Vec<Multiaddr>),
    /// Wait until a member adds this peer (`POST /peers` on a member, as the operator does) or
    /// until it is told to start a new cluster (`POST /consensus/init`).
    WaitToBeAdded,
}

/// What the peer knows at start-up.
#[derive(Clone, Debug, Default)]
pub struct StartFacts<'a> {
    /// Its Raft log holds a vote or entries.
    pub has_state: bool,
    /// `--bootstrap` addresses.
    pub bootstrap: &'a [Multiaddr],
    /// May start a new cluster on its own (not `--no-init`).
    pub auto_init: bool,
    /// It was removed from a cluster before (its data was cleaned): restarting it must not
    /// silently start a second cluster.
    pub was_removed: bool,
}

/// Decides how to start. Existing state always wins over `--bootstrap`, as in the reference: a
/// peer that already belongs to a cluster does not join another.
pub fn plan_start(facts: &StartFacts<'_>) -> StartPlan {
    if facts.has_state {
        StartPlan::Resume
    } else if !facts.bootstrap.is_empty() {
        StartPlan::Join(facts.bootstrap.to_vec())
    } else if facts.auto_init && !facts.was_removed {
        StartPlan::Initialize
    } else {
        StartPlan::WaitToBeAdded
    }
}

/// How many of `members` should vote: the largest odd number up to both `members` and
/// `max_voters`. An even voter count tolerates no more failures than the odd one below it and
/// makes every commit wait for one more peer (and exactly 2 voters trips an openraft liveness bug
/// on leader removal), so the extra member stays a learner.
pub fn voter_count(members: usize, max_voters: usize) -> usize {
    let n = members.min(max_voters.max(1));
    if n > 0 && n.is_multiple_of(2) {
        n - 1
    } else {
        n
    }
}

/// The membership as the leader sees it when it plans the voters.
#[derive(Clone, Debug, Default)]
pub struct VoterFacts {
    pub members: BTreeSet<NodeId>,
    pub voters: BTreeSet<NodeId>,
    /// Members that keep up with the leader's log: only those are promoted, and lagging voters
    /// are the first demoted.
    pub healthy: BTreeSet<NodeId>,
    pub leader: NodeId,
    pub max_voters: usize,
}

/// The voters the cluster should have: an odd number, [`voter_count`] of its members when enough
/// of them can vote. Current voters stay first (the leader, then healthy ones, then lagging ones:
/// a slow voter is not swapped out, which would churn the membership), then healthy learners by
/// lowest node id, so that every leader plans alike. Lagging learners are never promoted.
pub fn plan_voters(facts: &VoterFacts) -> BTreeSet<NodeId> {
    let is_healthy = |id: &NodeId| facts.healthy.contains(id) || *id == facts.leader;
    let mut voters: Vec<NodeId> = facts.voters.iter().copied().filter(|id| facts.members.contains(id)).collect();
    voters.sort_by_key(|id| (*id != facts.leader, !is_healthy(id), *id));
    let learners = facts.members.iter().copied().filter(|id| !facts.voters.contains(id) && is_healthy(id));
    let ranked: Vec<NodeId> = voters.into_iter().chain(learners).collect();
    let count = voter_count(ranked.len().min(voter_count(facts.members.len(), facts.max_voters)), facts.max_voters);
    ranked.into_iter().take(count).collect()
}

/// One membership change of a removal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemovalStep {
    /// Make exactly `voters` vote; the other voters stay as learners (`keep`) or leave.
    Voters { voters: BTreeSet<NodeId>, keep: bool },
    /// Drop these learners.
    Learners(BTreeSet<NodeId>),
}

/// The changes that take `removed` out of a membership of `members` (`voters` among them), leaving
/// `planned` ([`plan_voters`] over the members left) as the voters, this `leader` running them.
///
/// When the leader itself leaves, its own removal comes last (openraft makes a leader step down as
/// soon as a membership without it as a voter is committed): first the voters the plan no longer
/// wants are demoted while the removed ones still vote, then the voters become the plan and the
/// removed voters leave with it, then the removed learners go. Otherwise the voters become the plan
/// in one change that keeps every former voter as a learner (a removed voter may be down, and an
/// intermediate voter set that still counted it could never commit), then every removed member
/// goes.
pub fn plan_removal(
    members: &BTreeSet<NodeId>,
    voters: &BTreeSet<NodeId>,
    removed: &BTreeSet<NodeId>,
    planned: &BTreeSet<NodeId>,
    leader: NodeId,
) -> Vec<RemovalStep> {
    let removed_voters: BTreeSet<NodeId> = voters.intersection(removed).copied().collect();
    let mut steps = Vec::new();
    let mut leaving_as_voters = BTreeSet::new();
    if removed_voters.contains(&leader) {
        if voters.difference(removed).any(|id| !planned.contains(id)) {
            steps.push(RemovalStep::Voters { voters: planned.union(&removed_voters).copied().collect(), keep: true });
        }
        steps.push(RemovalStep::Voters { voters: planned.clone(), keep: false });
        leaving_as_voters = removed_voters;
    } else if !removed_voters.is_empty() {
        steps.push(RemovalStep::Voters { voters: planned.clone(), keep: true });
    }
    let learners: BTreeSet<NodeId> =
        removed.iter().copied().filter(|id| members.contains(id) && !leaving_as_voters.contains(id)).collect();
    if !learners.is_empty() {
        steps.push(RemovalStep::Learners(learners));
    }
    steps
}

/// What the leader knows when asked to remove members.
#[derive(Clone, Debug, Default)]
pub struct RemovalFacts {
    /// The members to remove.
    pub removed: BTreeSet<NodeId>,
    /// The members left after the removal.
    pub remaining: BTreeSet<NodeId>,
    /// The voters after it ([`plan_voters`] over the members left).
    pub voters_after: BTreeSet<NodeId>,
    /// The members the leader hears from now, itself included.
    pub reachable: BTreeSet<NodeId>,
}

/// Why a removal would leave the cluster worse off than it must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemovalRisk {
    /// The voters left would have no majority within reach: the cluster would stop taking writes
    /// (and the change itself could not commit).
    NoQuorum,
    /// It removes reachable members while `unreachable` members stay: what is left cannot lose
    /// one more peer, when removing the unreachable ones instead would have kept it able to.
    Fragile { unreachable: BTreeSet<NodeId> },
}

/// Whether removing `facts.removed` is safe. Removing an unreachable member is always allowed
/// (as long as a reachable majority remains): it is what an operator does to replace it.
pub fn removal_risk(facts: &RemovalFacts) -> Option<RemovalRisk> {
    let quorum = facts.voters_after.len() / 2 + 1;
    let reachable_voters = facts.voters_after.intersection(&facts.reachable).count();
    if reachable_voters < quorum {
        return Some(RemovalRisk::NoQuorum);
    }
    let unreachable: BTreeSet<NodeId> = facts.remaining.difference(&facts.reachable).copied().collect();
    let removes_working_peers = facts.removed.iter().all(|id| facts.reachable.contains(id));
    let spare = reachable_voters - quorum;
    (removes_working_peers && !unreachable.is_empty() && spare == 0).then_some(RemovalRisk::Fragile { unreachable })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn start_plans() {
        let seed: Vec<Multiaddr> = vec!["/ip4/127.0.0.2/tcp/9096".parse().unwrap()];
        let none: Vec<Multiaddr> = Vec::new();
        #[rustfmt::skip]
        let cases = [
            // has_state, bootstrap, auto_init, was_removed => plan
            (true,  &seed, true,  false, StartPlan::Resume),
            (true,  &none, false, true,  StartPlan::Resume),
            (false, &seed, true,  false, StartPlan::Join(seed.clone())),
            (false, &seed, false, true,  StartPlan::Join(seed.clone())),
            (false, &none, true,  false, StartPlan::Initialize),
            (false, &none, false, false, StartPlan::WaitToBeAdded),
            (false, &none, true,  true,  StartPlan::WaitToBeAdded),
        ];
        for (has_state, bootstrap, auto_init, was_removed, expected) in cases {
            let facts = StartFacts { has_state, bootstrap, auto_init, was_removed };
            assert_eq!(plan_start(&facts), expected, "{facts:?}");
        }
    }

    #[test]
    fn removal_steps() {
        use RemovalStep::{Learners, Voters};
        let voters = |ids: &[NodeId], keep| Voters { voters: set(ids), keep };
        // (members, voters, removed, planned, leader) => steps
        type Case =
            (&'static [NodeId], &'static [NodeId], &'static [NodeId], &'static [NodeId], NodeId, Vec<RemovalStep>);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            // A follower of three: one change (2 stays a learner: two members, one voter), then 3 goes.
            (&[1, 2, 3], &[1, 2, 3], &[3], &[1], 1, vec![voters(&[1], true), Learners(set(&[3]))]),
            // The leader of three: 2 demoted while 1 still votes, then 1 leaves with the change.
            (&[1, 2, 3], &[1, 2, 3], &[1], &[3], 1, vec![voters(&[1, 3], true), voters(&[3], false)]),
            // The leader of five: 5 demoted first (four members keep three voters).
            (&[1, 2, 3, 4, 5], &[1, 2, 3, 4, 5], &[1], &[2, 3, 4], 1,
                vec![voters(&[1, 2, 3, 4], true), voters(&[2, 3, 4], false)]),
            // The leader of three voters and a learner: nobody to demote, the learner is promoted.
            (&[1, 2, 3, 4], &[1, 2, 3], &[1], &[2, 3, 4], 1, vec![voters(&[2, 3, 4], false)]),
            // A learner: just dropped.
            (&[1, 2, 3, 4], &[1, 2, 3], &[4], &[1, 2, 3], 1, vec![Learners(set(&[4]))]),
            // The leader and a learner: the learner goes last.
            (&[1, 2, 3, 4, 5], &[1, 2, 3], &[1, 5], &[2, 3, 4], 1,
                vec![voters(&[2, 3, 4], false), Learners(set(&[5]))]),
            // A voter that may be down and a learner, leader stays.
            (&[1, 2, 3, 4], &[1, 2, 3], &[3, 4], &[1], 1, vec![voters(&[1], true), Learners(set(&[3, 4]))]),
        ];
        for (members, current, removed, planned, leader, expected) in cases {
            let steps = plan_removal(&set(members), &set(current), &set(removed), &set(planned), leader);
            assert_eq!(steps, expected, "remove {removed:?} from {members:?} (voters {current:?}), leader {leader}");
        }
    }

    /// removed, remaining, voters after, reachable => risk (None: safe; Some(empty): no quorum;
    /// Some(ids): fragile while `ids` are unreachable)
    type RemovalCase =
        (&'static [NodeId], &'static [NodeId], &'static [NodeId], &'static [NodeId], Option<&'static [NodeId]>);

    #[test]
    fn removals_keep_a_cluster_that_can_lose_a_peer() {
        #[rustfmt::skip]
        let cases: &[RemovalCase] = &[
            // 3 -> 2, every peer up: the usual scale-down.
            (&[3],    &[1, 2],       &[1],          &[1, 2, 3],       None),
            // 3 peers, 3 cut off: removing 2 (up) leaves 1 and an unreachable 3: refused.
            (&[2],    &[1, 3],       &[1],          &[1, 2],          Some(&[3])),
            // ... removing 3 (down) is what replaces it.
            (&[3],    &[1, 2],       &[1],          &[1, 2],          None),
            // 5 peers, 5 cut off: removing 4 leaves 3 voters, all up, one spare.
            (&[4],    &[1, 2, 3, 5], &[1, 2, 3],    &[1, 2, 3, 4],    None),
            // 5 peers, 4 and 5 cut off: removing 3 leaves 1, 2 and two unreachable: refused.
            (&[3],    &[1, 2, 4, 5], &[1, 2, 4],    &[1, 2, 3],       Some(&[4, 5])),
            // No reachable majority among the voters left.
            (&[2],    &[1, 3, 4],    &[1, 3, 4],    &[1, 2],          Some(&[])),
            // Removing a mix of up and down peers is not "removing working peers".
            (&[2, 3], &[1, 4, 5],    &[1, 4, 5],    &[1, 2, 4, 5],    None),
        ];
        for (removed, remaining, voters_after, reachable, expected) in cases {
            let facts = RemovalFacts {
                removed: set(removed),
                remaining: set(remaining),
                voters_after: set(voters_after),
                reachable: set(reachable),
            };
            let expected = expected.map(|ids| match ids {
                [] => RemovalRisk::NoQuorum,
                ids => RemovalRisk::Fragile { unreachable: set(ids) },
            });
            assert_eq!(removal_risk(&facts), expected, "{facts:?}");
        }
    }

    #[test]
    fn voter_counts_are_odd_and_capped() {
        #[rustfmt::skip]
        let cases = [(0, 5, 0), (1, 5, 1), (2, 5, 1), (3, 5, 3), (4, 5, 3), (5, 5, 5), (6, 5, 5), (100, 5, 5),
            (7, 7, 7), (8, 7, 7), (4, 3, 3), (9, 1, 1), (3, 0, 1), (10, 4, 3)];
        for (members, max, expected) in cases {
            assert_eq!(voter_count(members, max), expected, "{members} members, at most {max}");
        }
    }

    /// members, voters, healthy, leader, max voters => planned voters
    type VoterCase = (&'static [NodeId], &'static [NodeId], &'static [NodeId], NodeId, usize, &'static [NodeId]);

    #[test]
    fn voter_plans() {
        #[rustfmt::skip]
        let cases: &[VoterCase] = &[
            // members, voters, healthy, leader, max => planned voters
            // A second peer stays a learner; a third makes both vote.
            (&[1, 2],          &[1],          &[1, 2],          1, 5, &[1]),
            (&[1, 2, 3],       &[1],          &[1, 2, 3],       1, 5, &[1, 2, 3]),
            // Only healthy learners are promoted.
            (&[1, 2, 3],       &[1],          &[1, 3],          1, 5, &[1]),
            (&[1, 2, 3, 4],    &[1],          &[1, 3, 4],       1, 5, &[1, 3, 4]),
            // The cap: the sixth and seventh peers are learners.
            (&[1, 2, 3, 4, 5, 6, 7], &[1, 2, 3, 4, 5], &[1, 2, 3, 4, 5, 6, 7], 1, 5, &[1, 2, 3, 4, 5]),
            // A voter left (no longer a member): a healthy learner takes its place.
            (&[1, 2, 4, 5, 6, 7], &[1, 2, 3, 4, 5], &[1, 2, 4, 5, 6, 7], 1, 5, &[1, 2, 4, 5, 6]),
            // Down to 4 members: 3 voters; a lagging voter goes first, never the leader.
            // (Node 1 lags in the first case.)
            (&[1, 2, 3, 4],    &[1, 2, 3, 4], &[3, 4],          2, 5, &[2, 3, 4]),
            (&[1, 2, 3, 4],    &[1, 2, 3, 4], &[1, 2, 3, 4],    4, 5, &[1, 2, 4]),
            // Down to 2 members: 1 voter, the leader.
            (&[1, 2],          &[1, 2, 3],    &[1, 2],          2, 5, &[2]),
            // Alone.
            (&[7],             &[7],          &[],              7, 5, &[7]),
        ];
        for (members, voters, healthy, leader, max, expected) in cases {
            let facts = VoterFacts {
                members: set(members),
                voters: set(voters),
                healthy: set(healthy),
                leader: *leader,
                max_voters: *max,
            };
            assert_eq!(plan_voters(&facts), set(expected), "{facts:?}");
        }
    }
}
