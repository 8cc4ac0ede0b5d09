//! From Pin objects and the cluster's pin listing to the planner's terms, and back from the
//! planner's [`Summary`] to a `PinStatus`: the one place that knows how the two map.

use chrono::{DateTime, Utc};
use cluster_client::types::{parse_cid, parse_go_duration, GlobalPinInfo, PinMode as WireMode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use super::plan::{Applied, ClusterPin, Expiry, PeerPin, PinView, Summary, Verdict, Wanted};
use super::FINALIZER;
use crate::crd::{Pin, PinMode, PinPhase, PinStatus};

/// A Pin as the planner sees it; `current` is its status (or what was last written there).
pub fn view(pin: &Pin, current: Summary) -> PinView {
    let spec = &pin.spec;
    PinView {
        name: pin.name_any(),
        generation: pin.metadata.generation.unwrap_or_default(),
        created: pin.metadata.creation_timestamp.as_ref().and_then(|t| to_chrono(&t.0)),
        deleting: pin.metadata.deletion_timestamp.is_some(),
        has_finalizer: pin.finalizers().iter().any(|f| f == FINALIZER),
        cid: canonical_cid(&spec.cid),
        request: Wanted {
            name: spec.name.clone().unwrap_or_else(|| pin.name_any()),
            replication_min: spec.replication_min.unwrap_or_default(),
            replication_max: spec.replication_max.unwrap_or_default(),
            mode: spec.mode,
            allocations: spec.allocations.clone(),
            expiry: match (&spec.expire_at, &spec.expire_in) {
                (Some(at), _) => to_chrono(&at.0).map_or(Expiry::Invalid("out of range".into()), Expiry::At),
                (None, Some(text)) => parse_go_duration(text)
                    .map_or(Expiry::Invalid(format!("{text:?} is not a duration")), Expiry::After),
                (None, None) => Expiry::Never,
            },
            metadata: spec.metadata.clone(),
        },
        current,
        sent: None,
        failure: None,
    }
}

/// The CID as the cluster writes it (CIDv0 in base58, CIDv1 in base32), so that a Pin's CID and
/// the listing's compare equal however the person typed it.
pub fn canonical_cid(text: &str) -> Result<String, String> {
    parse_cid(text).map(|cid| cid.to_string()).map_err(|error| error.to_string())
}

/// The cluster's account of a CID in its pinset; `None` for a CID the listing names that is not
/// in the pinset (being unpinned, or asked for by name): it has no creation time.
pub fn cluster_pin(info: &GlobalPinInfo) -> Option<ClusterPin> {
    info.created?;
    Some(ClusterPin {
        allocations: info.allocations.iter().map(ToString::to_string).collect(),
        peers: info
            .peer_map
            .iter()
            .map(|(peer, state)| {
                (peer.clone(), PeerPin { status: state.status.as_str().to_string(), error: state.error.clone() })
            })
            .collect(),
    })
}

/// What a Pin's status says, in the planner's terms.
pub fn summary(status: Option<&PinStatus>) -> Summary {
    let Some(status) = status else { return Summary::default() };
    let ready = status.conditions.iter().find(|c| c.type_ == READY).map(|c| Verdict {
        ready: c.status == "True",
        reason: c.reason.clone(),
        message: c.message.clone(),
    });
    Summary {
        phase: status.phase,
        pinned: status.pinned,
        wanted: status.wanted,
        peers: status.peers.clone(),
        last_error: status.last_error.clone(),
        applied: status.observed_generation.map(|generation| Applied {
            generation,
            expires_at: status.expires_at.as_ref().and_then(|t| to_chrono(&t.0)),
        }),
        ready: ready.unwrap_or_default(),
    }
}

const READY: &str = "Ready";
const PINNED: &str = "Pinned";

/// The status to write for `summary`; conditions keep their transition time while they hold.
pub fn status(summary: &Summary, generation: Option<i64>, before: Option<&PinStatus>) -> PinStatus {
    let earlier = |kind: &str| before.and_then(|s| s.conditions.iter().find(|c| c.type_ == kind));
    let condition = |kind: &str, holds: bool, reason: String, message: String| {
        let status = if holds { "True" } else { "False" };
        let last_transition_time = match earlier(kind) {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => Time(k8s_openapi::jiff::Timestamp::now()),
        };
        Condition {
            type_: kind.into(),
            status: status.into(),
            reason,
            message,
            last_transition_time,
            observed_generation: generation,
        }
    };
    let pinned = summary.phase == PinPhase::Pinned;
    let pinned_message = match &summary.last_error {
        Some(error) => error.clone(),
        None if pinned => "held by every peer it is allocated to".into(),
        None => format!("{} of {} peers hold it", summary.pinned, summary.wanted),
    };
    let ready = &summary.ready;
    PinStatus {
        phase: summary.phase,
        replicas: Some(format!("{}/{}", summary.pinned, summary.wanted)),
        pinned: summary.pinned,
        wanted: summary.wanted,
        peers: summary.peers.clone(),
        expires_at: summary.applied.and_then(|a| a.expires_at).and_then(to_time),
        last_error: summary.last_error.clone(),
        conditions: vec![
            condition(READY, ready.ready, ready.reason.clone(), ready.message.clone()),
            condition(PINNED, pinned, format!("{:?}", summary.phase), pinned_message),
        ],
        observed_generation: summary.applied.map(|a| a.generation),
    }
}

pub fn wire_mode(mode: PinMode) -> WireMode {
    match mode {
        PinMode::Recursive => WireMode::Recursive,
        PinMode::Direct => WireMode::Direct,
    }
}

fn to_chrono(at: &k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.as_second(), at.subsec_nanosecond().try_into().ok()?)
}

fn to_time(at: DateTime<Utc>) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::new(at.timestamp(), at.timestamp_subsec_nanos().try_into().ok()?).ok().map(Time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cids_compare_in_the_clusters_text() {
        let v1 = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
        assert_eq!(canonical_cid(v1).unwrap(), v1);
        let v0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
        assert_eq!(canonical_cid(v0).unwrap(), v0);
        assert!(canonical_cid("bafy-not-a-cid").is_err());
    }

    #[test]
    fn a_listed_cid_outside_the_pinset_is_not_a_cluster_pin() {
        let mut info = GlobalPinInfo {
            cid: parse_cid("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi").unwrap(),
            name: String::new(),
            allocations: vec![],
            origins: vec![],
            created: None,
            metadata: None,
            peer_map: Default::default(),
        };
        assert_eq!(cluster_pin(&info), None, "being unpinned, or named in the query: not pinned");
        info.created = DateTime::from_timestamp(1_800_000_000, 0);
        assert_eq!(cluster_pin(&info), Some(ClusterPin::default()));
    }

    #[test]
    fn a_written_status_reads_back_as_the_same_summary() {
        let summary = Summary {
            phase: PinPhase::PartiallyPinned,
            pinned: 1,
            wanted: 2,
            last_error: Some("ipfs-1: timed out".into()),
            applied: Some(Applied { generation: 3, expires_at: DateTime::from_timestamp(1_800_000_000, 0) }),
            ready: Verdict { ready: true, reason: "Applied".into(), message: "cluster ipfs has this spec".into() },
            ..Summary::default()
        };
        let written = status(&summary, Some(3), None);
        assert_eq!(written.replicas.as_deref(), Some("1/2"));
        assert_eq!(self::summary(Some(&written)), summary);
        // A condition that still holds keeps the time it became true.
        let again = status(&summary, Some(3), Some(&written));
        assert_eq!(again.conditions, written.conditions);
    }
}
