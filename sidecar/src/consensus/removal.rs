//! Being removed from the cluster: the leader's notice to the removed peer, the checks that
//! peer makes before it stops, and its data moved aside (never deleted) once it has stopped.
//!
//! A notice is believed only if it could come from the leader that committed the removal: sent
//! by the node it names, at a term not behind this peer's, by the leader this peer knows or a
//! member of the membership it carries; and that membership must leave this peer out and not be
//! older than one this peer holds with itself in it. Anything else (a stale or replayed notice,
//! a confused peer) is refused with a warning, and this peer keeps running.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::types::{LogId, NodeId, StoredMembership};
use super::Consensus;
use crate::protocol::RpcResponse;
use crate::Result;

/// From the leader to a peer it removed: who sends it, and the committed membership without it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemovalNotice {
    /// The sender's node id.
    pub leader: NodeId,
    /// The sender's term.
    pub term: u64,
    /// The log id of the committed membership that removed the peer.
    pub membership: LogId,
    /// The nodes of that membership, voters and learners.
    pub members: BTreeSet<NodeId>,
}

impl RemovalNotice {
    /// The notice of the committed `membership`, from this leader at `term`.
    pub(super) fn of(leader: NodeId, term: u64, membership: &StoredMembership) -> Option<RemovalNotice> {
        Some(RemovalNotice {
            leader,
            term,
            membership: *membership.log_id().as_ref()?,
            members: membership.membership().nodes().map(|(id, _)| *id).collect(),
        })
    }
}

/// What the receiver of a [`RemovalNotice`] knows, from its own Raft metrics.
#[derive(Clone, Debug)]
pub(super) struct RemovalFacts {
    pub me: NodeId,
    pub term: u64,
    pub leader: Option<NodeId>,
    /// The log id of this peer's membership, and whether this peer is in it.
    pub membership: Option<LogId>,
    pub in_membership: bool,
    /// The node the sending libp2p peer is in this peer's membership (`None`: not a member here).
    pub sender: Option<NodeId>,
}

/// Why a notice was not believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The sending peer is another member than the node the notice names.
    NotTheSender,
    /// The membership it carries still has this peer.
    StillAMember,
    /// Its term is behind this peer's (which knows a leader, or holds a membership as new): an old
    /// leader, or a replay.
    StaleTerm,
    /// The sender is neither the leader this peer knows nor a member of that membership.
    NotTheLeader,
    /// This peer holds a newer membership with itself in it.
    OlderMembership,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::NotTheSender => "it names another node than the member that sent it",
            Refusal::StillAMember => "the membership it carries still has this peer",
            Refusal::StaleTerm => "its term is behind this peer's",
            Refusal::NotTheLeader => "its sender is neither the known leader nor a member of its membership",
            Refusal::OlderMembership => "this peer holds a newer membership that still has it",
        })
    }
}

/// Whether this peer believes `notice` and stops (see the module documentation).
pub(super) fn judge_removal(facts: &RemovalFacts, notice: &RemovalNotice) -> Result<(), Refusal> {
    if facts.sender.is_some_and(|sender| sender != notice.leader) {
        return Err(Refusal::NotTheSender);
    }
    if notice.members.contains(&facts.me) {
        return Err(Refusal::StillAMember);
    }
    // A peer removed while it was down comes back campaigning, its term above the cluster's: a
    // notice carrying a newer membership than its own still counts while it knows no leader.
    let newer_membership = facts.membership.is_none_or(|ours| notice.membership > ours);
    if notice.term < facts.term && !(facts.leader.is_none() && newer_membership) {
        return Err(Refusal::StaleTerm);
    }
    if facts.leader != Some(notice.leader) && !notice.members.contains(&notice.leader) {
        return Err(Refusal::NotTheLeader);
    }
    if facts.in_membership && facts.membership.is_some_and(|ours| ours > notice.membership) {
        return Err(Refusal::OlderMembership);
    }
    Ok(())
}

impl Consensus {
    /// The answer to [`crate::protocol::RpcRequest::Removed`] from `from`: stops taking part if the
    /// notice is believed (the daemon then shuts down and sets the data aside).
    pub(crate) fn on_removed(&self, from: PeerId, notice: &RemovalNotice) -> RpcResponse {
        let metrics = self.raft.metrics().borrow().clone();
        let stored = &metrics.membership_config;
        let membership = stored.membership();
        let sender = from.to_string();
        let facts = RemovalFacts {
            me: self.node_id,
            term: metrics.current_term,
            leader: metrics.current_leader,
            membership: stored.log_id().as_ref().copied(),
            in_membership: membership.get_node(&self.node_id).is_some(),
            sender: membership.nodes().find(|(_, node)| node.peer_id == sender).map(|(id, _)| *id),
        };
        match judge_removal(&facts, notice) {
            Ok(()) => {
                self.stop_as_removed();
                RpcResponse::Ok
            }
            Err(why) => {
                tracing::warn!(%from, ?notice, ?facts, %why, "refused a removal notice; this peer keeps running");
                RpcResponse::Error(format!("removal notice refused: {why}"))
            }
        }
    }

    /// This peer was removed: it stops taking part (the daemon shuts down and cleans up).
    pub(super) fn stop_as_removed(&self) {
        if !self.removed.is_cancelled() {
            tracing::warn!("this peer was removed from the cluster; it stops taking part");
            self.removed.cancel();
        }
    }
}

/// Moves `paths` (those that exist) into a new `<data_dir>/removed-<UTC time>/` and returns it:
/// the data of a removed peer is kept for an operator to inspect or restore, never deleted.
pub(super) fn set_aside(data_dir: &Path, paths: &[&Path]) -> Result<PathBuf> {
    let aside = data_dir.join(format!("removed-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")));
    std::fs::create_dir(&aside)?;
    for path in paths.iter().filter(|path| path.exists()) {
        if let Some(name) = path.file_name() {
            std::fs::rename(path, aside.join(name))?;
        }
    }
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn removal_notices_are_believed_only_from_the_leader_that_left_us_out() {
        // This peer: node 3 at term 5, leader 1, membership at index 20 with itself in it, and
        // the notice's sender is node 1 in that membership.
        let facts = RemovalFacts {
            me: 3,
            term: 5,
            leader: Some(1),
            membership: Some(log_id(5, 20)),
            in_membership: true,
            sender: Some(1),
        };
        let notice = RemovalNotice { leader: 1, term: 5, membership: log_id(5, 22), members: BTreeSet::from([1, 2]) };
        let unknown_sender = RemovalFacts { sender: None, ..facts.clone() };
        let after_election = RemovalFacts { leader: Some(2), ..facts.clone() };
        let already_out = RemovalFacts { in_membership: false, ..facts.clone() };
        let other_sender = RemovalFacts { sender: Some(2), ..facts.clone() };
        // Back after being removed while down: campaigning (term 9), no leader known.
        let returned = RemovalFacts { term: 9, leader: None, ..facts.clone() };
        let returned_newer = RemovalFacts { membership: Some(log_id(5, 22)), ..returned.clone() };
        let from = |term, membership, members: &[NodeId]| RemovalNotice {
            leader: 1,
            term,
            membership,
            members: members.iter().copied().collect(),
        };
        let (ours, older) = (log_id(5, 22), log_id(4, 10));
        #[rustfmt::skip]
        let cases: Vec<(&str, &RemovalFacts, RemovalNotice, Result<(), Refusal>)> = vec![
            ("the leader left us out", &facts, notice.clone(), Ok(())),
            ("a newer term", &facts, from(6, ours, &[1, 2]), Ok(())),
            ("a sender this peer does not know yet", &unknown_sender, notice.clone(), Ok(())),
            ("a member of that membership, leader elsewhere", &after_election, notice.clone(), Ok(())),
            ("the known leader, outside its membership", &facts, from(5, ours, &[2]), Ok(())),
            ("older than a membership without us", &already_out, from(5, older, &[1, 2]), Ok(())),
            ("sent by node 2, naming node 1", &other_sender, notice.clone(), Err(Refusal::NotTheSender)),
            ("a membership with us in it", &facts, from(5, ours, &[1, 2, 3]), Err(Refusal::StillAMember)),
            ("an old term (a replay)", &facts, from(4, ours, &[1, 2]), Err(Refusal::StaleTerm)),
            ("an old term, no leader known, a newer membership", &returned, notice.clone(), Ok(())),
            ("an old term, no leader known, no newer membership", &returned_newer, notice.clone(), Err(Refusal::StaleTerm)),
            ("neither leader nor member", &after_election, from(5, ours, &[2]), Err(Refusal::NotTheLeader)),
            ("older than our membership with us", &facts, from(5, older, &[1, 2]), Err(Refusal::OlderMembership)),
        ];
        for (name, facts, notice, expected) in cases {
            assert_eq!(judge_removal(facts, &notice), expected, "{name}");
        }
    }

    #[test]
    fn removed_data_is_moved_aside_not_deleted() {
        let dir = tempfile::TempDir::new().unwrap();
        let (raft, pinset) = (dir.path().join("raft"), dir.path().join("pinset.redb"));
        std::fs::create_dir(&raft).unwrap();
        std::fs::write(raft.join("raft.redb"), b"log").unwrap();
        std::fs::write(&pinset, b"pins").unwrap();

        let aside = set_aside(dir.path(), &[&raft, &pinset, &dir.path().join("absent")]).unwrap();
        assert!(aside.file_name().unwrap().to_str().unwrap().starts_with("removed-20"));
        assert!(!raft.exists() && !pinset.exists());
        assert_eq!(std::fs::read(aside.join("raft").join("raft.redb")).unwrap(), b"log");
        assert_eq!(std::fs::read(aside.join("pinset.redb")).unwrap(), b"pins");
    }
}
