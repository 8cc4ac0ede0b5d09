//! Ours, beyond the reference: where consensus stands on a peer (`GET /consensus`), which the
//! operator reads to drive membership.

use serde::{Deserialize, Serialize};

/// A peer's part in consensus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsensusRole {
    /// No cluster yet: waiting to be added (or to be told to start one).
    Uninitialized,
    Leader,
    Follower,
    Candidate,
    /// A member that replicates the log but does not vote.
    Learner,
    /// Removed from the cluster; the peer is stopping.
    Removed,
    Stopped,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub peer_id: String,
    pub node_id: u64,
    pub addresses: Vec<String>,
    pub voter: bool,
    /// This peer hears from it now (it answered a ping lately); always true of itself.
    #[serde(default)]
    pub reachable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusStatus {
    /// This peer's Raft node id (new whenever its consensus data is wiped).
    pub node_id: u64,
    pub peer_id: String,
    pub role: ConsensusRole,
    /// The leader's peer ID, when one is known and alive: this peer leading and hearing from a
    /// majority, or a member it heard from lately.
    pub leader: Option<String>,
    pub leader_node_id: Option<u64>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    /// The last entry the newest snapshot covers.
    pub snapshot_index: Option<u64>,
    /// The last entry removed from the log (covered by a snapshot): a peer that needs an entry
    /// up to this one catches up from the snapshot.
    pub purged_index: Option<u64>,
    /// A membership change is half-way (joint configuration).
    pub joint: bool,
    pub members: Vec<MemberStatus>,
    /// What this peer's stop would mean, as decided so far (see [`Departure`]).
    #[serde(default)]
    pub departure: Departure,
    /// Seconds left in which this peer reports ready without a leader, as the operator vouched
    /// (`PUT /consensus/vouch`); 0 when it has not, or a leader is known.
    #[serde(default)]
    pub vouched_seconds: u64,
}

/// What a stopping peer's departure means (ours: the handshake between a pod's preStop hook and
/// the Kubernetes operator, `GET`/`PUT /consensus/departure`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Departure {
    /// Nothing decided: a stop now leaves the peer a member that is down.
    #[default]
    Undecided,
    /// Its pod only restarts: it stays a member.
    Restart,
    /// It is out of the cluster.
    Removed,
}

/// The body of `GET` and `PUT /consensus/departure`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepartureStatus {
    pub departure: Departure,
}

/// The body of `PUT /consensus/vouch` and its answer (ours): how long the peer reports ready
/// without a leader. The Kubernetes operator vouches for a member whose missing siblings the
/// quorum needs: under `OrderedReady` the StatefulSet creates them only once this pod is Ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vouch {
    pub seconds: u64,
}

/// The body of `POST /peers`: the reference's `{"peer_id": ...}`, plus (ours) the cluster
/// addresses to reach the new peer at. Without addresses, the peer must have connected to this
/// one already (e.g. through `--bootstrap`), so that its announced addresses are known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddPeer {
    pub peer_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

/// Where a member is now (`PUT /consensus/addresses`, ours, a list of these): when every member
/// moved at once (each pod restarted on a new IP), the Kubernetes operator tells the peers where
/// the others are, so that they hear each other again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAddresses {
    pub peer_id: String,
    pub addresses: Vec<String>,
}

/// The answer to `PUT /consensus/addresses`: how many of the members it connects to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Introduced {
    pub connecting: usize,
}
