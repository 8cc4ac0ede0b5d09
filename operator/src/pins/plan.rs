//! The Pin decisions, as one pure function over what the operator observed of one cluster's Pins
//! and of the cluster's pinset. The executor performs the actions; nothing here does IO.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::crd::{PinLocation, PinMode, PinPhase};

/// What the operator sees of one cluster and the Pins that name it, in one pass.
#[derive(Clone, Debug)]
pub struct Observed {
    pub now: DateTime<Utc>,
    /// The cluster, or why it cannot be asked now.
    pub cluster: Result<Cluster, Unavailable>,
    pub pins: Vec<PinView>,
}

/// The cluster as one of its sidecars lists it.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    pub name: String,
    /// Each joined peer's pod name and peer ID (from the `ClusterPeer`s).
    pub peers: BTreeMap<String, String>,
    /// The cluster's account of each CID a Pin names, by canonical CID text; a CID missing here
    /// is not in the cluster's pinset.
    pub pins: BTreeMap<String, ClusterPin>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// No sidecar of the cluster answered the listing: why.
    Unreachable(String),
    /// No cluster is there for the Pin (a name that matches none, or several and none named).
    Missing(String),
}

/// A CID in the cluster's pinset (`GET /pins`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterPin {
    /// The peers (IDs) it is allocated to; empty: every peer.
    pub allocations: Vec<String>,
    /// Each peer's tracker status (`pinned`, `pinning`, `remote`...) and error text.
    pub peers: BTreeMap<String, PeerPin>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerPin {
    pub status: String,
    pub error: String,
}

/// One Pin object.
#[derive(Clone, Debug)]
pub struct PinView {
    pub name: String,
    pub generation: i64,
    /// When it was created: of two Pins of one CID, the older owns it.
    pub created: Option<DateTime<Utc>>,
    /// Its deletion has begun; the finalizer holds it until the cluster has unpinned.
    pub deleting: bool,
    pub has_finalizer: bool,
    /// The CID in canonical text, or why it does not decode.
    pub cid: Result<String, String>,
    pub request: Wanted,
    /// What its status says now (or what this operator last wrote there).
    pub current: Summary,
    /// What this operator sent the cluster in an earlier pass and the status does not record yet.
    pub sent: Option<Applied>,
    /// The cluster's refusal of the last attempt to send it, if that failed.
    pub failure: Option<Failure>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// The attempts back off: the next is not before this.
    pub retry_at: DateTime<Utc>,
}

/// What the spec asks of the cluster, before allocations are resolved to peers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    /// 0: the cluster's default.
    pub replication_min: i32,
    pub replication_max: i32,
    pub mode: PinMode,
    /// Pod names.
    pub allocations: Vec<String>,
    pub expiry: Expiry,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Expiry {
    #[default]
    Never,
    At(DateTime<Utc>),
    /// After the spec is applied.
    After(chrono::Duration),
    /// `expireIn` is not a duration the operator can add to a time.
    Invalid(String),
}

/// A Pin's status, in the planner's terms: the executor turns it into `PinStatus` and conditions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub phase: PinPhase,
    pub pinned: i32,
    pub wanted: i32,
    pub peers: Vec<PinLocation>,
    pub last_error: Option<String>,
    /// The spec generation the cluster has, and the expiry it was given.
    pub applied: Option<Applied>,
    /// The `Ready` condition: whether the cluster has the spec as it is.
    pub ready: Verdict,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    pub generation: i64,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

impl Verdict {
    fn new(ready: bool, reason: &str, message: impl Into<String>) -> Verdict {
        Verdict { ready, reason: reason.into(), message: message.into() }
    }
}

/// What the cluster is sent for one Pin: the REST API's pin options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinRequest {
    pub name: String,
    pub replication_min: i32,
    pub replication_max: i32,
    pub mode: PinMode,
    /// Peer IDs.
    pub allocations: Vec<String>,
    pub expire_at: Option<DateTime<Utc>>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    AddFinalizer,
    /// `POST /pins/{cid}` with the options of generation `applied.generation`.
    Pin {
        cid: String,
        request: PinRequest,
        applied: Applied,
    },
    /// `DELETE /pins/{cid}`.
    Unpin {
        cid: String,
    },
    RemoveFinalizer,
    SetStatus(Summary),
    /// An event on the Pin, for `kubectl describe`.
    Note {
        warning: bool,
        reason: &'static str,
        message: String,
    },
}

impl Action {
    /// The action's name, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::AddFinalizer => "add_finalizer",
            Action::Pin { .. } => "pin",
            Action::Unpin { .. } => "unpin",
            Action::RemoveFinalizer => "remove_finalizer",
            Action::SetStatus(_) => "set_status",
            Action::Note { .. } => "note",
        }
    }

    /// Whether it asks the cluster for something.
    pub fn calls_cluster(&self) -> bool {
        matches!(self, Action::Pin { .. } | Action::Unpin { .. })
    }
}

/// One Pin's actions, to run in order; a failed one ends its step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub pin: String,
    pub actions: Vec<Action>,
}

/// The cluster a Pin belongs to: the one it names, or the namespace's only one; or why none.
pub fn cluster_for(named: Option<&str>, clusters: &[String]) -> Result<String, String> {
    match (named, clusters) {
        (Some(name), _) if clusters.iter().any(|c| c == name) => Ok(name.to_string()),
        (Some(name), _) => Err(format!("no cluster named {name} in this namespace")),
        (None, [only]) => Ok(only.clone()),
        (None, []) => Err("no cluster in this namespace yet".into()),
        (None, several) => Err(format!(
            "{} clusters in this namespace ({}): name one in spec.cluster",
            several.len(),
            several.join(", ")
        )),
    }
}

/// Every Pin's actions; Pins with nothing to do have no step.
pub fn plan(observed: &Observed) -> Vec<Step> {
    let owners = owners(&observed.pins);
    observed
        .pins
        .iter()
        .map(|pin| {
            let owner = pin.cid.as_ref().ok().and_then(|cid| owners.get(cid.as_str())).copied();
            Step { pin: pin.name.clone(), actions: pin_actions(observed, pin, owner) }
        })
        .filter(|step| !step.actions.is_empty())
        .collect()
}

/// Of the live Pins of each CID, the one that owns it: the oldest (then the first by name). Two
/// Pins of one CID with different options would otherwise re-pin it over each other forever.
fn owners(pins: &[PinView]) -> BTreeMap<&str, &str> {
    let mut owners: BTreeMap<&str, &PinView> = BTreeMap::new();
    for pin in pins.iter().filter(|p| !p.deleting) {
        let Ok(cid) = pin.cid.as_deref() else { continue };
        let owner = owners.entry(cid).or_insert(pin);
        if (pin.created, &pin.name) < (owner.created, &owner.name) {
            *owner = pin;
        }
    }
    owners.into_iter().map(|(cid, pin)| (cid, pin.name.as_str())).collect()
}

fn pin_actions(observed: &Observed, pin: &PinView, owner: Option<&str>) -> Vec<Action> {
    if pin.deleting {
        return deletion(observed, pin, owner);
    }
    let mut actions = Vec::new();
    if !pin.has_finalizer {
        // Before anything reaches the cluster: a Pin deleted meanwhile must still be unpinned.
        actions.push(Action::AddFinalizer);
    }
    let (summary, mut more) = desired(observed, pin, owner);
    actions.append(&mut more);
    if summary != pin.current {
        actions.push(Action::SetStatus(summary));
    }
    actions
}

/// A Pin being deleted: unpin its CID unless another Pin still wants it, then let it go.
fn deletion(observed: &Observed, pin: &PinView, owner: Option<&str>) -> Vec<Action> {
    if !pin.has_finalizer {
        return vec![];
    }
    let Ok(cid) = &pin.cid else { return vec![Action::RemoveFinalizer] };
    if owner.is_some() {
        // A live Pin of the same CID keeps the content pinned.
        return vec![Action::RemoveFinalizer];
    }
    match &observed.cluster {
        Err(Unavailable::Missing(_)) => vec![Action::RemoveFinalizer],
        Err(Unavailable::Unreachable(why)) => {
            let waiting = Summary {
                phase: PinPhase::Unpinning,
                ready: Verdict::new(false, "ClusterUnreachable", format!("waiting for the cluster to unpin it: {why}")),
                ..pin.current.clone()
            };
            if waiting == pin.current {
                vec![]
            } else {
                vec![Action::SetStatus(waiting)]
            }
        }
        Ok(cluster) if cluster.pins.contains_key(cid) => {
            vec![Action::Unpin { cid: cid.clone() }, Action::RemoveFinalizer]
        }
        Ok(_) => vec![Action::RemoveFinalizer],
    }
}

/// The status a live Pin should have, and what it takes to get there.
fn desired(observed: &Observed, pin: &PinView, owner: Option<&str>) -> (Summary, Vec<Action>) {
    let current = &pin.current;
    let cid = match &pin.cid {
        Ok(cid) => cid,
        Err(why) => return invalid(current, refused(current, "Invalid", format!("cid: {why}"))),
    };
    if let Expiry::Invalid(why) = &pin.request.expiry {
        return invalid(current, refused(current, "Invalid", format!("expireIn: {why}")));
    }
    if let Some(owner) = owner.filter(|owner| *owner != pin.name) {
        let message = format!("Pin {owner} already pins {cid}; delete one of the two");
        return invalid(current, refused(current, "DuplicateCid", message));
    }
    let cluster = match &observed.cluster {
        Ok(cluster) => cluster,
        Err(Unavailable::Missing(why)) => {
            let waiting =
                Summary { phase: PinPhase::Queued, ready: Verdict::new(false, "NoCluster", why), ..Summary::default() };
            return (waiting, vec![]);
        }
        Err(Unavailable::Unreachable(why)) => {
            let ready = Verdict::new(false, "ClusterUnreachable", format!("cannot reach the cluster: {why}"));
            return (Summary { ready, ..current.clone() }, vec![]);
        }
    };
    // The generation the cluster has: as the status records it, or as sent in an earlier pass.
    let applied = [current.applied, pin.sent].into_iter().flatten().find(|a| a.generation == pin.generation);
    let listed = cluster.pins.get(cid);
    match (applied, listed) {
        (Some(applied), Some(listed)) => (placement(cluster, listed, applied), vec![]),
        (Some(applied), None) if applied.expires_at.is_some_and(|at| at <= observed.now) => {
            let expired = Summary {
                phase: PinPhase::Expired,
                applied: Some(applied),
                ready: Verdict::new(false, "Expired", "the cluster unpinned it at its expiry"),
                ..Summary::default()
            };
            let note = (current.phase != PinPhase::Expired).then(|| Action::Note {
                warning: false,
                reason: "Expired",
                message: format!("the cluster unpinned {cid} at its expiry"),
            });
            (expired, note.into_iter().collect())
        }
        (applied, _) => send(observed, cluster, pin, cid, applied),
    }
}

/// Sends the spec to the cluster (the status follows from the next listing), unless the
/// cluster refused it lately: then the refusal shows and the Pin waits out its backoff.
fn send(
    observed: &Observed,
    cluster: &Cluster,
    pin: &PinView,
    cid: &str,
    applied: Option<Applied>,
) -> (Summary, Vec<Action>) {
    let current = &pin.current;
    let refusal = |failure: &Failure| Summary {
        phase: if current.phase == PinPhase::Queued { PinPhase::Error } else { current.phase },
        last_error: Some(failure.message.clone()),
        ready: Verdict::new(false, "ClusterRefused", failure.message.clone()),
        ..current.clone()
    };
    if let Some(failure) = pin.failure.as_ref().filter(|f| f.retry_at > observed.now) {
        return (refusal(failure), vec![]);
    }
    let expires_at = match (&pin.request.expiry, applied) {
        (_, Some(applied)) => applied.expires_at,
        (Expiry::At(at), None) => Some(*at),
        (Expiry::After(ttl), None) => observed.now.checked_add_signed(*ttl),
        (Expiry::Never | Expiry::Invalid(_), None) => None,
    };
    let request = match request(cluster, &pin.request, expires_at) {
        Ok(request) => request,
        Err(message) => return invalid(current, refused(current, "Invalid", message)),
    };
    let mut actions = vec![Action::Pin {
        cid: cid.to_string(),
        request,
        applied: Applied { generation: pin.generation, expires_at },
    }];
    if let Some(failure) = &pin.failure {
        // A retry: the refusal stays until the cluster takes it, and says nothing new.
        return (refusal(failure), actions);
    }
    // A first send says nothing: the status shows it, and an event per new Pin would be a third of
    // the operator's writes when thousands are applied at once.
    match (applied, current.applied) {
        (Some(_), _) => actions.push(Action::Note {
            warning: true,
            reason: "Restored",
            message: format!("the cluster no longer had {cid} (unpinned outside Kubernetes?); pinned it again"),
        }),
        (None, Some(_)) => actions.push(Action::Note {
            warning: false,
            reason: "Updated",
            message: format!("pinned {cid} again with the spec's new options"),
        }),
        (None, None) => {}
    }
    (current.clone(), actions)
}

/// The status of a Pin the operator does not send: why, in `lastError` and `Ready`.
fn refused(current: &Summary, reason: &str, message: String) -> Summary {
    Summary {
        phase: PinPhase::Error,
        pinned: 0,
        wanted: 0,
        peers: vec![],
        last_error: Some(message.clone()),
        applied: current.applied,
        ready: Verdict::new(false, reason, message),
    }
}

/// A spec that cannot be pinned: marked with a warning once, not retried until it changes.
fn invalid(current: &Summary, summary: Summary) -> (Summary, Vec<Action>) {
    let note = (current.ready != summary.ready).then(|| Action::Note {
        warning: true,
        reason: "Invalid",
        message: summary.ready.message.clone(),
    });
    (summary, note.into_iter().collect())
}

/// The pin options for the cluster: allocations by pod name become peer IDs.
fn request(cluster: &Cluster, wanted: &Wanted, expire_at: Option<DateTime<Utc>>) -> Result<PinRequest, String> {
    let allocations = wanted
        .allocations
        .iter()
        .map(|pod| {
            cluster.peers.get(pod).cloned().ok_or_else(|| {
                let peers = cluster.peers.keys().cloned().collect::<Vec<_>>().join(", ");
                format!("allocations: pod {pod} is not a peer of cluster {} (its peers: {peers})", cluster.name)
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(PinRequest {
        name: wanted.name.clone(),
        replication_min: wanted.replication_min,
        replication_max: wanted.replication_max,
        mode: wanted.mode,
        allocations,
        expire_at,
        metadata: wanted.metadata.clone(),
    })
}

/// Where the cluster holds a CID whose spec it has: the peers it is allocated to (every peer for
/// an empty allocation) and what each one's daemon reports.
fn placement(cluster: &Cluster, listed: &ClusterPin, applied: Applied) -> Summary {
    let unknown = PeerPin { status: "unknown".into(), error: String::new() };
    let allocated: Vec<(&str, &PeerPin)> = if listed.allocations.is_empty() {
        listed.peers.iter().filter(|(_, p)| p.status != "remote").map(|(id, p)| (id.as_str(), p)).collect()
    } else {
        listed.allocations.iter().map(|id| (id.as_str(), listed.peers.get(id).unwrap_or(&unknown))).collect()
    };
    let pod_of = |peer_id: &str| cluster.peers.iter().find(|(_, id)| *id == peer_id).map(|(pod, _)| pod.clone());
    let mut peers: Vec<PinLocation> = allocated
        .iter()
        .map(|(id, p)| PinLocation { pod: pod_of(id), peer_id: id.to_string(), status: p.status.clone() })
        .collect();
    let wanted = peers.len();
    let pinned = peers.iter().filter(|p| p.status == "pinned").count();
    let in_progress = allocated.iter().any(|(_, p)| matches!(p.status.as_str(), "pin_queued" | "pinning" | "unknown"));
    let phase = if wanted > 0 && pinned == wanted {
        PinPhase::Pinned
    } else if in_progress || wanted == 0 {
        PinPhase::Pinning
    } else if pinned > 0 {
        PinPhase::PartiallyPinned
    } else {
        PinPhase::Error
    };
    let last_error = (phase != PinPhase::Pinned)
        .then(|| {
            allocated.iter().zip(&peers).find(|((_, p), _)| !p.error.is_empty()).map(|((id, p), location)| {
                let at = location.pod.clone().unwrap_or_else(|| id.to_string());
                format!("{at}: {}", p.error)
            })
        })
        .flatten();
    // In pod order, for people reading `kubectl describe`.
    peers.sort_by(|a, b| (&a.pod, &a.peer_id).cmp(&(&b.pod, &b.peer_id)));
    Summary {
        phase,
        pinned: i32::try_from(pinned).unwrap_or(i32::MAX),
        wanted: i32::try_from(wanted).unwrap_or(i32::MAX),
        peers,
        last_error,
        applied: Some(applied),
        ready: Verdict::new(true, "Applied", format!("cluster {} has this spec", cluster.name)),
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
