//! This peer's answers to the consensus part of the peer protocol: Raft's own messages and writes
//! forwarded by other peers.

use libp2p::PeerId;

use super::removal::RemovalNotice;
use super::Consensus;
use crate::protocol::{RaftMessage, RpcRequest, RpcResponse};
use crate::{Error, Result};

impl Consensus {
    /// Answers `request` when it is consensus's to answer; gives it back otherwise.
    #[tracing::instrument(level = "debug", name = "rpc", skip_all, fields(%from))]
    pub async fn serve(&self, from: PeerId, request: RpcRequest) -> Result<Result<RpcResponse>, RpcRequest> {
        let raft = &self.raft;
        Ok(Ok(match request {
            RpcRequest::Raft { to, .. } if to != self.node_id => {
                tracing::warn!(%from, to, node_id = self.node_id, "refused a Raft message meant for another node");
                RpcResponse::Error(format!(
                    "this peer is Raft node {}, not {to}: its consensus data was replaced",
                    self.node_id
                ))
            }
            RpcRequest::Raft { message, .. } => match message {
                RaftMessage::Append(rpc) => RpcResponse::RaftAppend(raft.append_entries(rpc).await),
                RaftMessage::Vote(rpc) if !self.may_campaign(rpc.vote.leader_id.node_id) => {
                    tracing::debug!(%from, node_id = rpc.vote.leader_id.node_id, "refused a vote to a non-member");
                    self.tell_removed(from);
                    RpcResponse::Error("not a member of this cluster".into())
                }
                RaftMessage::Vote(rpc) => RpcResponse::RaftVote(raft.vote(rpc).await),
                RaftMessage::Snapshot(rpc) => RpcResponse::RaftSnapshot(raft.install_snapshot(rpc).await),
            },
            // Never forwarded again from here (see `writer`).
            RpcRequest::Write(batch) => match self.writer.commit_forwarded(batch).await {
                Ok(index) => RpcResponse::Written { index },
                Err(Error::NotLeader { leader }) => RpcResponse::NotLeader { leader },
                Err(e) => return Ok(Err(e)),
            },
            RpcRequest::NodeInfo => self.node_info().await,
            other => return Err(other),
        }))
    }

    /// On the leader: tells a peer that campaigns without being a member (removed while it was
    /// down, it missed the news) that it was removed, so that it stops. Elsewhere nothing: only the
    /// leader's notice is believed, and a follower's own view may be the stale one.
    fn tell_removed(&self, peer: PeerId) {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = &metrics.membership_config;
        if metrics.current_leader != Some(self.node_id) || membership.membership().get_joint_config().len() > 1 {
            return;
        }
        let Some(notice) = RemovalNotice::of(self.node_id, metrics.current_term, membership) else { return };
        let p2p = self.p2p.clone();
        tokio::spawn(async move {
            match p2p.request(peer, RpcRequest::Removed(notice)).await {
                Ok(_) => tracing::info!(%peer, "told a removed peer that campaigned that it was removed"),
                Err(e) => tracing::debug!(%peer, error = %e, "could not tell a removed peer it was removed"),
            }
        });
    }

    /// Whether `node` may ask this peer for its vote: a member, or anyone while this peer has no
    /// membership yet. A removed peer that missed the news (it was down when removed) campaigns
    /// with ever higher terms; answering it would unseat working leaders.
    fn may_campaign(&self, node: super::NodeId) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        membership.nodes().next().is_none() || membership.get_node(&node).is_some()
    }
}
