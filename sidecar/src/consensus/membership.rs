//! Adding and removing peers: the seed's peer add / peer remove procedure, adapted to Raft.
//!
//! Any peer takes the request; the changes themselves run on the leader (forwarded over RPC).
//! - add: reach the newcomer (or fail with membership unchanged), check the cluster has quorum,
//!   commit it as a learner and wait until it caught up, make it a voter when there is room (see
//!   [`plan_voters`]), then send it the member list and the address it was reached at. A failed
//!   step undoes the ones before it.
//! - remove: refuse the last member; check quorum; commit the removal (promoting a learner when a
//!   voter leaves); tell the removed peer (see [`super::removal`]), which checks the notice, stops
//!   and sets its data aside. A peer removing itself returns once it has stopped taking part.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;

use super::plan::{plan_removal, plan_voters, removal_risk, RemovalFacts, RemovalRisk, RemovalStep, VoterFacts};
use super::removal::RemovalNotice;
use super::types::{ClusterNode, NodeId, StoredMembership};
use super::Consensus;
use crate::protocol::{RpcRequest, RpcResponse};
use crate::{Error, Result};

/// How long the leader may take to confirm it still has a quorum before a change is refused.
const QUORUM_CHECK: Duration = Duration::from_secs(5);
/// How long a membership change waits for one already in progress before it fails.
const CHANGE_IN_PROGRESS_WAIT: Duration = Duration::from_secs(30);
/// How long a leader that removed itself keeps running (about ten heartbeats).
const REMOVED_LEADER_GRACE: Duration = Duration::from_secs(2);
/// How long a peer that asked for its own removal waits to learn it is out (from the leader's
/// notice, or its own grace when it leads).
const LEAVING_WAIT: Duration = Duration::from_secs(10);
/// How many addresses the membership keeps for a peer (its current ones first).
const MAX_RECORDED_ADDRS: usize = 4;
/// A member within this many log entries of the leader counts as healthy (each entry is a batch).
const HEALTHY_LAG: u64 = 100;

impl Consensus {
    /// Starts a new cluster whose only member is this peer. Refused when this peer already has
    /// consensus state: a cluster is initialised exactly once.
    pub async fn initialize(&self) -> Result<()> {
        if self.is_initialized().await {
            return Err(Error::Conflict("this peer already belongs to a cluster; it cannot start a new one".into()));
        }
        let me = self.me().await?;
        self.raft
            .initialize(BTreeMap::from([(self.node_id, me)]))
            .await
            .map_err(|e| Error::Conflict(format!("cannot initialise the cluster: {e}")))?;
        tracing::info!(node_id = self.node_id, "initialised a new cluster with this peer as its only member");
        if !self.state.is_empty()? {
            self.snapshot_existing_pins().await?;
        }
        Ok(())
    }

    /// The pinset predates the cluster (a peer of a single-node install, a restored state): its
    /// pins are in no log entry, so they reach joining peers only through a snapshot. Takes one
    /// and purges the log it covers, which makes the leader send it to every newcomer.
    async fn snapshot_existing_pins(&self) -> Result<()> {
        let pins = self.state.len()?;
        tracing::info!(pins, "the pinset predates the cluster: snapshotting it for joining peers");
        let stopped = |e| Error::Storage(format!("cannot snapshot the existing pinset: {e}"));
        self.raft
            .wait(Some(Duration::from_secs(60)))
            .state(openraft::ServerState::Leader, "leader after init")
            .await
            .map_err(|e| Error::Unavailable(format!("no leadership after initialising: {e}")))?;
        self.raft.trigger().snapshot().await.map_err(stopped)?;
        let metrics = self
            .raft
            .wait(Some(Duration::from_secs(600)))
            .metrics(|m| m.snapshot.is_some(), "the snapshot of the existing pinset")
            .await
            .map_err(|e| Error::Storage(format!("the snapshot of the existing pinset did not complete: {e}")))?;
        if let Some(snapshot) = metrics.snapshot {
            self.raft.trigger().purge_log(snapshot.index).await.map_err(stopped)?;
        }
        Ok(())
    }

    /// This peer as a member: its ID and the addresses it listens on.
    pub(crate) async fn me(&self) -> Result<ClusterNode> {
        let addrs: Vec<Multiaddr> = self.p2p.listen_addrs().await?.into_iter().filter(is_dialable).collect();
        Ok(ClusterNode::new(self.p2p.peer_id(), &addrs))
    }

    /// A member that restarted on another address (a pod's new IP) records where it is now, so
    /// that the peers restarting after it can still reach it (a rolling restart moves every
    /// peer). Its current addresses go first; older ones stay behind them, up to
    /// [`MAX_RECORDED_ADDRS`] in all, for an address given from outside (a NAT's) that the peer
    /// does not listen on. Nothing to do when the membership knows every current address.
    pub async fn announce_address(&self) -> Result<()> {
        let metrics = self.raft.metrics().borrow().clone();
        let Some(recorded) = metrics.membership_config.membership().get_node(&self.node_id).cloned() else {
            return Ok(());
        };
        if metrics.current_leader.is_none() {
            return Ok(());
        }
        let mut me = self.me().await?;
        if me.addrs.iter().all(|a| recorded.addrs.contains(a)) {
            return Ok(());
        }
        for older in recorded.addrs.iter().filter(|a| !me.addrs.contains(a)).cloned().collect::<Vec<_>>() {
            if me.addrs.len() < MAX_RECORDED_ADDRS {
                me.addrs.push(older);
            }
        }
        tracing::info!(recorded = ?recorded.addrs, now = ?me.addrs, "this peer's address changed: recording it");
        self.on_leader(RpcRequest::AddMember { node_id: self.node_id, node: me }).await
    }

    /// Asks the members at `bootstrap` to add this peer, one after the other until one does.
    pub async fn join(&self, bootstrap: &[Multiaddr]) -> Result<Vec<ClusterNode>> {
        let me = self.me().await?;
        let mut errors = Vec::new();
        for address in bootstrap {
            let attempt = async {
                let peer = self.p2p.dial(address.clone()).await?;
                match self.p2p.request(peer, RpcRequest::Join { addrs: me.addrs.clone() }).await? {
                    RpcResponse::Joined { members } => Ok(members),
                    other => Err(unexpected(other)),
                }
            };
            match attempt.await {
                Ok(members) => {
                    tracing::info!(via = %address, members = members.len(), "joined the cluster");
                    return Ok(members);
                }
                Err(e) => {
                    tracing::warn!(via = %address, error = %e, "could not join through this peer");
                    errors.push(format!("{address}: {e}"));
                }
            }
        }
        Err(Error::Unavailable(format!("could not join the cluster: {}", errors.join("; "))))
    }

    /// Adds the peer `peer`, reachable at `addrs` (or at the addresses it announced to this peer).
    /// Returns it as a member.
    #[tracing::instrument(skip(self, addrs), fields(%peer))]
    pub async fn add_peer(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<ClusterNode> {
        let mut addrs: Vec<Multiaddr> = addrs.into_iter().map(|a| without_p2p(&a)).collect();
        if addrs.is_empty() {
            addrs = self.p2p.peer_addrs(peer).await?.into_iter().filter(is_dialable).collect();
        }
        if addrs.is_empty() {
            return Err(Error::BadRequest(format!("no address is known for peer {peer}: give its cluster address")));
        }
        // Reachable, and who it is in consensus.
        let info = self.p2p.request_via(peer, addrs.clone(), RpcRequest::NodeInfo).await.map_err(|e| match e {
            Error::PeerUnreachable(why) | Error::Timeout(why) => {
                Error::PeerUnreachable(format!("cannot reach peer {peer}; it was not added: {why}"))
            }
            e => e,
        })?;
        let RpcResponse::NodeInfo { node_id, initialized } = info else { return Err(unexpected(info)) };
        let members = self.members();
        let known = members.iter().any(|m| m.peer_id == peer.to_string());
        if initialized && !known {
            return Err(Error::Conflict(format!(
                "peer {peer} already belongs to a cluster (it has consensus state); remove it there or wipe its data first"
            )));
        }
        let node = ClusterNode::new(peer, &addrs);
        self.on_leader(RpcRequest::AddMember { node_id, node: node.clone() }).await?;
        let welcome = RpcRequest::Welcome { members: self.members(), observed_addr: addrs[0].to_string() };
        if let Err(e) = self.p2p.request_via(peer, addrs, welcome).await {
            tracing::warn!(%peer, error = %e, "added a peer but could not send it the member list");
        }
        Ok(node)
    }

    /// Removes the member with libp2p identity `peer`. This peer included: then it returns once
    /// this peer has stopped taking part, so a shutdown that leaves also cleans up. Refused (409)
    /// when it would leave a cluster unable to lose another peer while other members are out of
    /// reach, unless `force` (see [`removal_risk`]).
    #[tracing::instrument(skip(self), fields(%peer))]
    pub async fn remove_peer(&self, peer: PeerId, force: bool) -> Result<()> {
        if !self.members().iter().any(|m| m.peer_id == peer.to_string()) {
            return Err(Error::NotFound(format!("{peer} is not a cluster member")));
        }
        self.on_leader(RpcRequest::RemoveMember { peer_id: peer.to_string(), force }).await?;
        if peer == self.p2p.peer_id() && tokio::time::timeout(LEAVING_WAIT, self.removed.cancelled()).await.is_err() {
            return Err(Error::Timeout(format!(
                "this peer was removed, but did not hear of it within {LEAVING_WAIT:?}; it keeps running"
            )));
        }
        Ok(())
    }

    /// Runs a membership change on the leader: here when this peer leads, else over RPC.
    async fn on_leader(&self, request: RpcRequest) -> Result<()> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader.ok_or_else(|| no_quorum("no leader is known"))?;
        if leader == self.node_id {
            return self.change_as_leader(request).await;
        }
        let node = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned()
            .ok_or_else(|| no_quorum("the leader is not in the membership"))?;
        let peer = node.peer().ok_or_else(|| no_quorum("the leader has a bad peer ID"))?;
        match self.p2p.request_via(peer, node.multiaddrs(), request).await {
            Ok(RpcResponse::Ok) => Ok(()),
            Ok(other) => Err(unexpected(other)),
            Err(Error::PeerUnreachable(why)) => Err(no_quorum(&format!("the leader is unreachable: {why}"))),
            Err(e) => Err(e),
        }
    }

    /// [`RpcRequest::AddMember`] and [`RpcRequest::RemoveMember`] on the leader.
    pub(crate) async fn change_as_leader(&self, request: RpcRequest) -> Result<()> {
        match request {
            RpcRequest::AddMember { node_id, node } => self.add_member(node_id, node).await,
            RpcRequest::RemoveMember { peer_id, force } => self.remove_member(&peer_id, force).await,
            other => Err(Error::BadRequest(format!("not a membership change: {other:?}"))),
        }
    }

    #[tracing::instrument(skip(self, node), fields(peer = %node))]
    async fn add_member(&self, node_id: NodeId, node: ClusterNode) -> Result<()> {
        self.check_quorum().await?;
        let before = self.raft.metrics().borrow().membership_config.membership().clone();
        if let Some(known) = before.get_node(&node_id).filter(|known| known.peer_id == node.peer_id) {
            // Already a member: only where it is may have changed (see `announce_address`).
            if known.addrs != node.addrs {
                self.change(ChangeMembers::SetNodes(BTreeMap::from([(node_id, node.clone())])), true).await?;
                tracing::info!(peer = %node.peer_id, addrs = ?node.addrs, "recorded a member's new address");
            }
            return Ok(());
        }
        // The same identity under another node id: the peer's data was wiped, its old node is gone
        // for good. Remove it first so it does not count towards quorum.
        let stale: BTreeSet<NodeId> =
            before.nodes().filter(|(id, n)| n.peer_id == node.peer_id && **id != node_id).map(|(id, _)| *id).collect();
        if !stale.is_empty() {
            self.remove_nodes(&stale).await?;
        }
        let catch_up =
            tokio::time::timeout(self.config.catch_up_timeout, self.raft.add_learner(node_id, node.clone(), true));
        let added = match catch_up.await {
            Ok(Ok(_)) => self.rebalance_voters(Some(node_id)).await,
            Ok(Err(e)) => Err(Error::Unavailable(format!("could not add {} as a learner: {e}", node.peer_id))),
            Err(_) => Err(Error::Timeout(format!(
                "{} did not catch up within {:?}",
                node.peer_id, self.config.catch_up_timeout
            ))),
        };
        if let Err(e) = added {
            tracing::warn!(peer = %node.peer_id, error = %e, "adding a peer failed; undoing");
            if before.get_node(&node_id).is_none() {
                if let Err(undo) = self.remove_nodes(&BTreeSet::from([node_id])).await {
                    tracing::error!(peer = %node.peer_id, error = %undo, "could not undo a failed addition");
                }
            }
            return Err(e);
        }
        tracing::info!(peer = %node.peer_id, node_id, "added a peer to the cluster");
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    async fn remove_member(&self, peer_id: &str, force: bool) -> Result<()> {
        let membership = self.raft.metrics().borrow().membership_config.membership().clone();
        let ids: BTreeSet<NodeId> =
            membership.nodes().filter(|(_, n)| n.peer_id == peer_id).map(|(id, _)| *id).collect();
        let Some(removed) = membership.nodes().find(|(_, n)| n.peer_id == peer_id).map(|(_, n)| n.clone()) else {
            return Err(Error::NotFound(format!("{peer_id} is not a cluster member")));
        };
        if membership.nodes().count() <= ids.len() {
            return Err(Error::Conflict("cannot remove the last member of the cluster".into()));
        }
        self.check_quorum().await?;
        self.check_removal_risk(&ids, force)?;
        let without = self.remove_nodes(&ids).await?;
        tracing::info!(peer = %peer_id, "removed a peer from the cluster");
        if ids.contains(&self.node_id) {
            // Not at once: the answer must reach the caller, and followers must hear that the
            // change is committed (openraft's leader keeps replicating until it steps down).
            let removed = self.removed.clone();
            tokio::spawn(async move {
                tokio::time::sleep(REMOVED_LEADER_GRACE).await;
                removed.cancel();
            });
            tracing::warn!("this peer removed itself from the cluster; it stops taking part");
        } else if let Some(peer) = removed.peer() {
            // The removed peer no longer hears from the leader: tell it, so it stops campaigning.
            let term = self.raft.metrics().borrow().current_term;
            let told = match RemovalNotice::of(self.node_id, term, &without) {
                Some(notice) => self.p2p.request_via(peer, removed.multiaddrs(), RpcRequest::Removed(notice)).await,
                None => Err(Error::Storage("the membership without it has no log id".into())),
            };
            match told {
                Ok(RpcResponse::Ok) => {}
                Ok(other) => tracing::warn!(peer = %peer_id, error = %unexpected(other), "the removed peer refused"),
                Err(e) => tracing::warn!(peer = %peer_id, error = %e, "removed a peer that could not be told"),
            }
        }
        Ok(())
    }

    /// Refuses a removal that [`removal_risk`] finds risky; with `force`, only one that would
    /// leave no reachable quorum.
    fn check_removal_risk(&self, ids: &BTreeSet<NodeId>, force: bool) -> Result<()> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let remaining: BTreeSet<NodeId> =
            membership.nodes().map(|(id, _)| *id).filter(|id| !ids.contains(id)).collect();
        let facts = RemovalFacts {
            removed: ids.clone(),
            voters_after: self.voters_without(&metrics, ids),
            remaining,
            reachable: self.reachable_members(),
        };
        let peer_of = |id: &NodeId| membership.get_node(id).map_or_else(|| id.to_string(), |n| n.peer_id.clone());
        match removal_risk(&facts) {
            None => Ok(()),
            Some(RemovalRisk::NoQuorum) => {
                Err(no_quorum("the voters left would not have a majority this leader can reach"))
            }
            Some(RemovalRisk::Fragile { .. }) if force => Ok(()),
            Some(RemovalRisk::Fragile { unreachable }) => Err(Error::Conflict(format!(
                "removing a working peer while {} cannot be reached would leave a cluster that cannot lose another \
                 peer; remove the unreachable member(s) first, bring them back, or force the removal (?force=true)",
                unreachable.iter().map(peer_of).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// The voters [`plan_voters`] wants once `ids` are gone.
    fn voters_without(
        &self,
        metrics: &openraft::RaftMetrics<NodeId, ClusterNode>,
        ids: &BTreeSet<NodeId>,
    ) -> BTreeSet<NodeId> {
        let membership = metrics.membership_config.membership();
        plan_voters(&VoterFacts {
            members: membership.nodes().map(|(id, _)| *id).filter(|id| !ids.contains(id)).collect(),
            voters: membership.voter_ids().filter(|id| !ids.contains(id)).collect(),
            healthy: healthy(metrics),
            leader: self.node_id,
            max_voters: self.config.max_voters,
        })
    }

    /// Takes `ids` out of the membership, voters and learners alike, keeping the voter count right,
    /// in the order [`plan_removal`] gives. Returns the committed membership without them.
    async fn remove_nodes(&self, ids: &BTreeSet<NodeId>) -> Result<StoredMembership> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let members: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let planned = self.voters_without(&metrics, ids);
        let mut current = StoredMembership::clone(&metrics.membership_config);
        for step in plan_removal(&members, &voters, ids, &planned, self.node_id) {
            current = match step {
                RemovalStep::Voters { voters, keep } => self.change(ChangeMembers::ReplaceAllVoters(voters), keep),
                RemovalStep::Learners(learners) => self.change(ChangeMembers::RemoveNodes(learners), false),
            }
            .await?;
        }
        Ok(current)
    }

    /// Promotes or demotes so the voters are what [`plan_voters`] says, and finishes a change
    /// left joint by a leader that died half-way. Run after each addition (`caught_up`: the node
    /// just added, which the replication metrics may not show as healthy yet) and by the leader's
    /// periodic check.
    pub(crate) async fn rebalance_voters(&self, caught_up: Option<NodeId>) -> Result<()> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.node_id) {
            return Ok(());
        }
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let facts = VoterFacts {
            members: membership.nodes().map(|(id, _)| *id).collect(),
            voters: voters.clone(),
            healthy: healthy(&metrics).into_iter().chain(caught_up).collect(),
            leader: self.node_id,
            max_voters: self.config.max_voters,
        };
        let planned = plan_voters(&facts);
        let joint = membership.get_joint_config().len() > 1;
        if planned != voters || joint {
            tracing::info!(?voters, ?planned, joint, "changing the voters");
            self.change(ChangeMembers::ReplaceAllVoters(planned), true).await?;
        }
        Ok(())
    }

    /// Commits a membership change; returns the membership it led to, with its log id.
    async fn change(&self, change: ChangeMembers<NodeId, ClusterNode>, retain: bool) -> Result<StoredMembership> {
        let response = when_no_change_in_progress(|| self.raft.change_membership(change.clone(), retain)).await?;
        let membership = response
            .membership
            .ok_or_else(|| Error::Storage("a membership change answered without a membership".into()))?;
        Ok(StoredMembership::new(Some(response.log_id), membership))
    }

    /// The leader confirms it still leads a quorum.
    async fn check_quorum(&self) -> Result<()> {
        match tokio::time::timeout(QUORUM_CHECK, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(no_quorum(&e.to_string())),
            Err(_) => Err(no_quorum(&format!("a quorum did not answer within {QUORUM_CHECK:?}"))),
        }
    }

    /// The answer to [`RpcRequest::NodeInfo`].
    pub(crate) async fn node_info(&self) -> RpcResponse {
        RpcResponse::NodeInfo { node_id: self.node_id, initialized: self.is_initialized().await }
    }
}

type ChangeResult = std::result::Result<
    openraft::raft::ClientWriteResponse<super::TypeConfig>,
    RaftError<NodeId, ClientWriteError<NodeId, ClusterNode>>,
>;

/// Runs a membership change, waiting while another one (a promotion after a join, a concurrent
/// addition) is committing rather than failing: Raft allows one change at a time.
async fn when_no_change_in_progress<F, Fut>(
    mut attempt: F,
) -> Result<openraft::raft::ClientWriteResponse<super::TypeConfig>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ChangeResult>,
{
    let deadline = tokio::time::Instant::now() + CHANGE_IN_PROGRESS_WAIT;
    loop {
        match attempt().await {
            Ok(response) => return Ok(response),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(
                busy,
            )))) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%busy, "another membership change is in progress; waiting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(Error::Unavailable(format!("the membership change failed: {e}"))),
        }
    }
}

/// Members whose log is close to the leader's (the leader's own view; empty elsewhere).
fn healthy(metrics: &openraft::RaftMetrics<NodeId, ClusterNode>) -> BTreeSet<NodeId> {
    let last = metrics.last_log_index.unwrap_or(0);
    let Some(replication) = &metrics.replication else { return BTreeSet::new() };
    replication
        .iter()
        .filter(|(_, matched)| matched.is_some_and(|m| m.index + HEALTHY_LAG >= last))
        .map(|(id, _)| *id)
        .collect()
}

fn no_quorum(why: &str) -> Error {
    Error::Unavailable(format!("the cluster has no quorum; membership is unchanged ({why})"))
}

fn unexpected(response: RpcResponse) -> Error {
    match response {
        RpcResponse::Error(message) => Error::Remote { code: 500, message },
        other => Error::Remote { code: 500, message: format!("unexpected answer: {other:?}") },
    }
}

/// An address another host can dial: not `0.0.0.0` / `::`.
fn is_dialable(address: &Multiaddr) -> bool {
    !address.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

fn without_p2p(address: &Multiaddr) -> Multiaddr {
    address.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect()
}
