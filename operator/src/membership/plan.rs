//! The membership decisions, as one pure function over what the operator observed of a cluster.
//! The executor performs the actions and plans again on the next event; nothing here does IO.

use crate::crd::{PeerPhase, PeerRole};

/// What the operator sees of one cluster when it plans.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The StatefulSet's `spec.replicas`: pods at this ordinal or above are condemned.
    pub replicas: u32,
    /// The StatefulSet's pods that exist.
    pub pods: Vec<PodView>,
    /// The cluster's `ClusterPeer` objects.
    pub records: Vec<Record>,
    /// The membership as a member reports it; `None` when no member answered.
    pub membership: Option<Membership>,
    /// The StatefulSet's `podManagementPolicy`.
    pub pod_management: PodManagement,
}

/// How the StatefulSet creates pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodManagement {
    /// One at a time, each once every pod below it is Ready (Kubernetes' default).
    #[default]
    OrderedReady,
    /// All at once.
    Parallel,
}

/// A pod of the StatefulSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    pub ordinal: u32,
    /// Its deletion has begun: its sidecar's preStop is waiting for a verdict.
    pub terminating: bool,
    /// What its sidecar says of itself; `None` while it does not answer.
    pub sidecar: Option<Sidecar>,
}

/// A sidecar's own account (`GET /consensus`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sidecar {
    pub peer_id: String,
    pub node_id: u64,
    pub standing: Standing,
    /// It was told its pod only restarts (its preStop has returned).
    pub restart_declared: bool,
    /// The members it does not hear from now (peer IDs): after every pod moved to a new IP at
    /// once, that is all of them.
    pub unheard: Vec<String>,
    /// Seconds left of the readiness without a leader it was vouched for (see [`Action::Vouch`]).
    pub vouched_seconds: u64,
}

/// Where a sidecar stands in consensus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// No cluster: it waits to be added, or to be told to start one (`--no-init`).
    Uninitialized,
    Member,
    /// Removed, or stopped: it exits, and comes back uninitialised.
    Out,
}

/// The cluster's membership, as a member reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub members: Vec<Member>,
    /// The leader's peer ID, when one is known and alive.
    pub leader: Option<String>,
    /// A change is half-way (joint configuration): the next one waits.
    pub changing: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub peer_id: String,
    pub node_id: u64,
    pub voter: bool,
}

/// A `ClusterPeer` (named after its pod) and the state it records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub pod: String,
    pub ordinal: u32,
    /// Being deleted (by hand, or with the cluster): its finalizer holds it until the peer is out.
    pub deleting: bool,
    pub state: PeerState,
}

/// What a `ClusterPeer`'s status says of its peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerState {
    pub peer_id: Option<String>,
    pub node_id: Option<u64>,
    pub role: Option<PeerRole>,
    pub phase: PeerPhase,
}

/// What to do next. At most one membership change (`Initialize`, `Join`, `Remove`) per plan:
/// the sidecars apply changes one at a time, and each one changes what the next should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create the `ClusterPeer` of a pod.
    Record { pod: String },
    /// Start the cluster on this pod's sidecar (`POST /consensus/init`), once in its life.
    Initialize { pod: String },
    /// Add a pod's peer through a member's sidecar (`POST /peers`).
    Join { pod: String, peer_id: String, via: String },
    /// Remove a peer through another member's sidecar (`DELETE /peers/{id}`).
    Remove { peer_id: String, via: String, reason: Removal },
    /// Tell a terminating pod's sidecar that its pod only restarts, so its preStop returns.
    DeclareRestart { pod: String },
    /// Tell a member's sidecar where members it does not hear are now (`(pod, peer ID)`; the
    /// executor reads their pods' IPs): members that all moved at once know only old addresses.
    Introduce { pod: String, peers: Vec<(String, String)> },
    /// Tell a member's sidecar to report ready without a leader for [`VOUCH_SECONDS`] (`PUT
    /// /consensus/vouch`): the quorum needs pods that an `OrderedReady` StatefulSet creates only
    /// once this one is Ready.
    Vouch { pod: String },
    /// Write a `ClusterPeer`'s status.
    SetState { pod: String, state: PeerState },
    /// Drop a `ClusterPeer`'s finalizer: its peer is out of consensus.
    Release { pod: String },
    /// Delete the `ClusterPeer` of a condemned pod whose peer has left.
    Forget { pod: String },
}

impl Action {
    /// The action's name, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Record { .. } => "record",
            Action::Initialize { .. } => "initialize",
            Action::Join { .. } => "join",
            Action::Remove { .. } => "remove",
            Action::DeclareRestart { .. } => "declare_restart",
            Action::Introduce { .. } => "introduce",
            Action::Vouch { .. } => "vouch",
            Action::SetState { .. } => "set_state",
            Action::Release { .. } => "release",
            Action::Forget { .. } => "forget",
        }
    }
}

/// How long a vouch lasts; it is renewed once less than [`VOUCH_RENEWED_BELOW`] is left, which
/// the controller's slowest pass (every 30 s) stays within.
pub const VOUCH_SECONDS: u64 = 60;
const VOUCH_RENEWED_BELOW: u64 = 45;

/// Why a peer is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Removal {
    /// Its pod is condemned (ordinal at or above `replicas`) and terminating or gone.
    Condemned,
    /// Its `ClusterPeer` is being deleted.
    Deleted,
    /// Its pod came back as another node (its data was wiped): the old node is gone for good.
    Superseded,
}

impl Observed {
    fn condemned(&self, ordinal: u32) -> bool {
        ordinal >= self.replicas
    }

    fn pod(&self, name: &str) -> Option<&PodView> {
        self.pods.iter().find(|p| p.name == name)
    }

    fn record(&self, pod: &str) -> Option<&Record> {
        self.records.iter().find(|r| r.pod == pod)
    }

    fn member(&self, peer_id: &str) -> Option<&Member> {
        self.membership.as_ref()?.members.iter().find(|m| m.peer_id == peer_id)
    }

    fn is_last_member(&self, sidecar: &Sidecar) -> bool {
        let members = self.membership.as_ref().map(|m| m.members.as_slice()).unwrap_or_default();
        sidecar.standing == Standing::Member && matches!(members, [only] if only.peer_id == sidecar.peer_id)
    }

    /// Scaled to zero and every pod gone: there is no cluster left to be a member of.
    fn gone(&self) -> bool {
        self.replicas == 0 && self.pods.is_empty()
    }
}

/// Everything to do now, in order.
pub fn plan(observed: &Observed) -> Vec<Action> {
    let mut actions = Vec::new();
    for pod in &observed.pods {
        let stays = !observed.condemned(pod.ordinal);
        if stays && !pod.terminating && observed.record(&pod.name).is_none() {
            actions.push(Action::Record { pod: pod.name.clone() });
        }
        // A staying pod only restarts; the last member of a cluster scaled to zero stops as a
        // member too (it cannot be removed): either way its preStop need not wait.
        let undeclared = pod.sidecar.as_ref().filter(|s| !s.restart_declared);
        if pod.terminating && undeclared.is_some_and(|s| stays || observed.is_last_member(s)) {
            actions.push(Action::DeclareRestart { pod: pod.name.clone() });
        }
    }
    actions.extend(introductions(observed));
    actions.extend(vouches(observed));
    actions.extend(membership_change(observed));
    for record in &observed.records {
        actions.extend(record_actions(observed, record));
    }
    actions
}

/// A member's sidecar that does not hear some members whose pods answer is told where those pods
/// are now: when every pod restarted on a new IP at once, the membership holds only their old
/// addresses, and the peers would never hear each other again.
fn introductions(observed: &Observed) -> Vec<Action> {
    let members = || {
        let alive = observed.pods.iter().filter(|p| !p.terminating);
        alive.filter_map(|p| Some((p, p.sidecar.as_ref().filter(|s| s.standing == Standing::Member)?)))
    };
    members()
        .filter_map(|(pod, sidecar)| {
            let unheard = members().filter(|(other, s)| other.name != pod.name && sidecar.unheard.contains(&s.peer_id));
            let peers: Vec<(String, String)> = unheard.map(|(p, s)| (p.name.clone(), s.peer_id.clone())).collect();
            (!peers.is_empty()).then(|| Action::Introduce { pod: pod.name.clone(), peers })
        })
        .collect()
}

/// Under `OrderedReady` the StatefulSet creates a pod only once every pod below it is Ready, and a
/// peer is Ready only with a live leader. After an outage that took a quorum of pods at once (a
/// whole-cluster restart), the members back cannot elect a leader without members whose pods the
/// StatefulSet holds back: each member back is vouched for, so that it reports ready without a
/// leader and the StatefulSet goes on. A leader, or a quorum of members back (they only have to
/// elect one), or no pod missing: nothing to vouch for.
fn vouches(observed: &Observed) -> Vec<Action> {
    let Some(membership) = &observed.membership else {
        return vec![];
    };
    let missing = (0..observed.replicas).any(|ordinal| observed.pods.iter().all(|p| p.ordinal != ordinal));
    if observed.pod_management != PodManagement::OrderedReady || membership.leader.is_some() || !missing {
        return vec![];
    }
    let back: Vec<(&PodView, &Sidecar)> = observed
        .pods
        .iter()
        .filter(|p| !p.terminating && !observed.condemned(p.ordinal))
        .filter_map(|p| Some((p, p.sidecar.as_ref().filter(|s| s.standing == Standing::Member)?)))
        .collect();
    let voters: Vec<&Member> = membership.members.iter().filter(|m| m.voter).collect();
    let voters_back = voters.iter().filter(|m| back.iter().any(|(_, s)| s.peer_id == m.peer_id)).count();
    if 2 * voters_back > voters.len() {
        return vec![];
    }
    back.into_iter()
        .filter(|(_, sidecar)| sidecar.vouched_seconds < VOUCH_RENEWED_BELOW)
        .map(|(pod, _)| Action::Vouch { pod: pod.name.clone() })
        .collect()
}

/// The one membership change to make now, if any: removals first (a condemned pod's grace
/// period is running), then the cluster's start, then joins.
fn membership_change(observed: &Observed) -> Option<Action> {
    let Some(membership) = &observed.membership else {
        return initialization(observed);
    };
    if membership.changing {
        return None;
    }
    // The last member stays: a cluster scaled to zero keeps its last peer's data until it is gone.
    let removal = membership
        .members
        .iter()
        .filter(|_| membership.members.len() > 1)
        .filter_map(|member| removal_reason(observed, member).map(|reason| (reason, member)))
        // Condemned first; the leader last (removing it costs an election); then highest ordinal,
        // the order in which the StatefulSet controller deletes.
        .min_by_key(|(reason, member)| {
            let is_leader = membership.leader.as_deref() == Some(member.peer_id.as_str());
            (*reason, is_leader, std::cmp::Reverse(ordinal_of(observed, &member.peer_id)))
        });
    if let Some((reason, member)) = removal {
        let via = via(observed, Some(&member.peer_id))?;
        return Some(Action::Remove { peer_id: member.peer_id.clone(), via, reason });
    }
    let joiner = observed
        .pods
        .iter()
        .filter(|pod| !pod.terminating && !observed.condemned(pod.ordinal))
        .filter(|pod| observed.record(&pod.name).is_some_and(|r| !r.deleting))
        .filter_map(|pod| Some((pod, pod.sidecar.as_ref()?)))
        .filter(|(_, sidecar)| sidecar.standing == Standing::Uninitialized)
        .min_by_key(|(pod, _)| pod.ordinal)?;
    let (pod, sidecar) = joiner;
    let via = via(observed, None)?;
    Some(Action::Join { pod: pod.name.clone(), peer_id: sidecar.peer_id.clone(), via })
}

/// No member answered: start the cluster on the lowest staying pod, but only when nothing says a
/// cluster exists (a sidecar that is or was a member, a `ClusterPeer` that saw its peer join);
/// otherwise the members are only unreachable for now, and starting another cluster would split
/// this one.
fn initialization(observed: &Observed) -> Option<Action> {
    let sidecars = || observed.pods.iter().filter_map(|p| p.sidecar.as_ref());
    let joined_once =
        |r: &Record| r.state.role.is_some() || matches!(r.state.phase, PeerPhase::Joined | PeerPhase::Leaving);
    if sidecars().any(|s| s.standing != Standing::Uninitialized) || observed.records.iter().any(joined_once) {
        return None;
    }
    let first = observed
        .pods
        .iter()
        .filter(|p| p.sidecar.is_some() && !p.terminating && !observed.condemned(p.ordinal))
        .filter(|p| observed.record(&p.name).is_some_and(|r| !r.deleting))
        .min_by_key(|p| p.ordinal)?;
    Some(Action::Initialize { pod: first.name.clone() })
}

/// Why this member should go, if it should. Members no `ClusterPeer` names are left alone.
fn removal_reason(observed: &Observed, member: &Member) -> Option<Removal> {
    let record = observed.records.iter().find(|r| r.state.peer_id.as_deref() == Some(member.peer_id.as_str()))?;
    let pod = observed.pod(&record.pod);
    if observed.condemned(record.ordinal) && pod.is_none_or(|p| p.terminating) {
        return Some(Removal::Condemned);
    }
    if record.deleting {
        return Some(Removal::Deleted);
    }
    // Its pod's sidecar answers as another node, not a member: the pod's data was wiped, and
    // the node it was is gone for good.
    let sidecar = pod.and_then(|p| p.sidecar.as_ref())?;
    let other_node = (sidecar.peer_id.as_str(), sidecar.node_id) != (member.peer_id.as_str(), member.node_id);
    (other_node && sidecar.standing != Standing::Member).then_some(Removal::Superseded)
}

fn ordinal_of(observed: &Observed, peer_id: &str) -> u32 {
    let record = observed.records.iter().find(|r| r.state.peer_id.as_deref() == Some(peer_id));
    record.map_or(0, |r| r.ordinal)
}

/// The pod whose sidecar carries a change: a staying member that answers, the leader's pod
/// first (the change runs there; any other forwards it), never the peer being removed.
fn via(observed: &Observed, removing: Option<&str>) -> Option<String> {
    let leader = observed.membership.as_ref()?.leader.as_deref();
    observed
        .pods
        .iter()
        .filter_map(|pod| Some((pod, pod.sidecar.as_ref()?)))
        .filter(|(_, s)| s.standing == Standing::Member && Some(s.peer_id.as_str()) != removing)
        .filter(|(_, s)| observed.member(&s.peer_id).is_some())
        .min_by_key(|(pod, s)| {
            let leaving = pod.terminating || observed.condemned(pod.ordinal);
            (leaving, Some(s.peer_id.as_str()) != leader, pod.ordinal)
        })
        .map(|(pod, _)| pod.name.clone())
}

/// A record's status as it should read, its finalizer, and whether it should go.
fn record_actions(observed: &Observed, record: &Record) -> Vec<Action> {
    let mut actions = Vec::new();
    let state = state_of(observed, record);
    let member = state.peer_id.as_deref().and_then(|id| observed.member(id));
    // Out of consensus for sure: the membership is known and lacks it, it never had a peer, or
    // the cluster itself is gone.
    let out = observed.gone() || (member.is_none() && (observed.membership.is_some() || state.peer_id.is_none()));
    if state != record.state {
        actions.push(Action::SetState { pod: record.pod.clone(), state });
    }
    if record.deleting && out {
        actions.push(Action::Release { pod: record.pod.clone() });
    } else if !record.deleting && out && observed.condemned(record.ordinal) && observed.pod(&record.pod).is_none() {
        actions.push(Action::Forget { pod: record.pod.clone() });
    }
    actions
}

/// What the record should say: the pod's sidecar's identity when it answers (else what the
/// record knew), its role in the membership, and the phase that follows.
fn state_of(observed: &Observed, record: &Record) -> PeerState {
    let pod = observed.pod(&record.pod);
    let sidecar = pod.and_then(|p| p.sidecar.as_ref());
    // A node the record knew stays recorded while it is still a member (it is removed first).
    let known_member = record.state.peer_id.as_deref().and_then(|id| observed.member(id));
    let (peer_id, node_id) = match (sidecar, known_member) {
        (_, Some(member)) if sidecar.is_none_or(|s| s.standing != Standing::Member) => {
            (Some(member.peer_id.clone()), Some(member.node_id))
        }
        (Some(s), _) => (Some(s.peer_id.clone()), Some(s.node_id)),
        (None, _) => (record.state.peer_id.clone(), record.state.node_id),
    };
    let member = peer_id.as_deref().and_then(|id| observed.member(id));
    if observed.membership.is_none() && sidecar.is_none() {
        // Nothing answered: what the record says stands.
        return PeerState { peer_id, node_id, ..record.state.clone() };
    }
    let role = member.map(|m| if m.voter { PeerRole::Voter } else { PeerRole::Learner });
    let leaving = record.deleting || (observed.condemned(record.ordinal) && pod.is_none_or(|p| p.terminating));
    let phase = match (member, leaving) {
        (Some(_), true) => PeerPhase::Leaving,
        (Some(_), false) => PeerPhase::Joined,
        (None, true) => PeerPhase::Removed,
        (None, false) => match sidecar.map(|s| s.standing) {
            Some(Standing::Uninitialized) => PeerPhase::Joining,
            Some(Standing::Out) => PeerPhase::Removed,
            Some(Standing::Member) | None => PeerPhase::Pending,
        },
    };
    PeerState { peer_id, node_id, role, phase }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
