//! Membership that follows pods: the peers of a cluster are the pods of its StatefulSet.
//!
//! The operator is the only one that decides membership; the sidecars carry the changes out
//! (`POST /consensus/init`, `POST /peers`, `DELETE /peers/{id}`) and guard them themselves: a
//! sidecar refuses to remove the last member or to change membership without a quorum, waits for
//! a change in progress, keeps at most `max_voters` voters and promotes a caught-up learner when a
//! voter leaves. So the operator never has to reason about Raft's quorum arithmetic; it decides
//! *who* and *when*, one change at a time ([`plan`]).
//!
//! # The lifecycle
//! - A pod appears: its `ClusterPeer` is created (owned by the StatefulSet, with a finalizer).
//!   Its sidecar runs with `--no-init` and answers `GET /consensus` as uninitialised.
//! - The cluster's first pod is initialised by the operator, exactly once in the cluster's life:
//!   only when no sidecar is or was a member and no `ClusterPeer` ever saw its peer join (members
//!   that are merely unreachable must not be replaced by a second cluster). A sidecar refuses a
//!   second initialisation, so a retried or duplicated request is harmless.
//! - Every other pod joins through a member (the leader's pod when known).
//! - A restarted pod keeps its PVC, so its identity and Raft state: it resumes as the member it
//!   was, and the operator changes nothing.
//! - A pod back with wiped data answers as another node: the node it was is removed (it is gone
//!   for good), then the new one joins.
//! - A condemned pod (ordinal at or above `spec.replicas`) is removed from consensus while it is
//!   still alive, then its `ClusterPeer` is deleted; its PVC goes with the StatefulSet's
//!   `whenScaled: Delete` policy.
//! - Deleting a `ClusterPeer` by hand removes its peer (e.g. after its node is lost for good);
//!   the finalizer goes once the peer is out of the membership.
//!
//! # Leaving while alive: the departure handshake
//! The StatefulSet controller deletes condemned pods the moment `replicas` drops, all at once
//! under `Parallel`. A pod that stopped before it left would count against the quorum: scale 5 to
//! 1 and four voters of five are gone at once. So each sidecar's preStop hook waits
//! (`cluster-ctl peers await-departure`, bounded by the grace period) until its departure is
//! decided: either the peer is out of the membership (the operator removed it; the sidecar exits
//! by itself), or the operator declared that the pod only restarts (`PUT /consensus/departure`),
//! which ends the wait at once. The operator tells the two apart by the ordinal: a terminating pod
//! below `replicas` restarts, one at or above it leaves.
//!
//! Removals go one at a time, highest ordinal first (the StatefulSet's own order) and the leader
//! last, since removing it costs an election; each runs on a staying member.
//!
//! # Races, and why each is safe
//! - **Scale down right after a scale up.** The new pods may be uninitialised or half-way through
//!   their join when they are condemned. A join in progress is a membership change: the removal
//!   waits behind it (`changing`), then removes the new peer like any other; a pod that never got
//!   in has nothing to remove and its `ClusterPeer` is deleted once the pod is gone.
//! - **Scale down while a pod restarts.** The restarting pod is still a voter, only absent. The
//!   sidecar refuses a removal that would leave no quorum; the condemned pod's preStop keeps it
//!   alive (and counted) meanwhile, so the removal commits as soon as the restarted pod is back,
//!   and the quorum is never smaller than before the scale.
//! - **Scale down with the leader among the condemned.** Followers go first; the leader goes
//!   last, through a staying member: the leader commits its own removal and steps down, and the
//!   next election happens among the staying voters.
//! - **Scale down with the operator down.** Condemned pods wait in preStop for a verdict that does
//!   not come, up to the grace period. A second operator replica takes over through the Lease
//!   (well within the grace period) and removes them while they are alive. If no operator comes
//!   back within the grace period, the pods stop as members; when one does, it removes the
//!   condemned peers whose pods are gone while the others still form a quorum. Under `Parallel`,
//!   a majority condemned and stopped this way loses the quorum: that is the one case the design
//!   cannot cover, and why the chart runs two operator replicas.
//! - **A restart's preStop with the operator down** waits up to the bound before the pod
//!   restarts; the membership is unchanged either way.
//! - **The operator dies between two steps.** Every step is decided again from what is observed,
//!   and each is idempotent on the sidecar (adding a member or removing a non-member is a no-op;
//!   a second initialisation is refused), so the successor picks up where it stopped.
//! - **A change is half-way (joint consensus).** Nothing else is planned until it completes.
//! - **Every pod restarts at once** (a whole-cluster outage). Pods come back on new IPs; the
//!   membership holds the old ones, so no peer can reach another and no leader is elected. A
//!   member's sidecar lists the members it does not hear; the planner tells it where those whose
//!   pods answer are now (`Introduce`, `PUT /consensus/addresses`), they elect a leader, and each
//!   records its new address in the membership.
//! - **Every pod restarts at once under `OrderedReady`.** The StatefulSet recreates pod 0 alone
//!   and creates pod 1 only once pod 0 is Ready; a peer is Ready only with a live leader, and pod
//!   0 alone is no quorum: a deadlock. The operator sees it (no live leader, staying ordinals
//!   without pods, the voters back no majority) and vouches for each member back (`Vouch`, `PUT
//!   /consensus/vouch`): it reports ready without a leader for a minute, renewed while needed, so
//!   the StatefulSet creates the next pod. Once enough are back they elect a leader, which ends
//!   every vouch. A vouch only ever makes a leaderless peer Ready: the Service may route requests
//!   to it, which it answers with an error as any peer of a cluster without a quorum does. With a
//!   leader, or a majority back (they only have to elect one), nothing is vouched for, so a
//!   rolling restart still waits for each restarted peer to rejoin. With the operator down too,
//!   the deadlock lasts until it is back.
//! - **Scale to zero.** The last member is never removed: it is told it stops as a member (the
//!   restart verdict), so its preStop returns at once. Once every pod is gone the ClusterPeers are
//!   deleted (no cluster is left; with `whenScaled: Delete` its data went with the claims). Scaled
//!   up again, the first pod starts a cluster anew, or, with its claim retained, restarts as the
//!   one member it was.

pub mod controller;
mod execute;
mod observe;
pub mod plan;

pub use execute::{CLUSTER_LABEL, FINALIZER, MANAGER};
pub use plan::{plan, Action, Observed, PodManagement};
