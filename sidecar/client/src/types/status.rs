//! Tracker statuses and the per-peer / cluster-wide status objects of `/pins`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use serde::{Deserialize, Serialize};

use super::cid::{cid_serde, Cid};
use super::pin::null_as_empty;
use super::time;

/// Where a pin stands on one peer. JSON names are the reference's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackerStatus {
    /// Used only as a filter: matches everything.
    Undefined,
    /// The peer could not be reached or could not read its state.
    ClusterError,
    PinError,
    UnpinError,
    Pinned,
    Pinning,
    Unpinning,
    Unpinned,
    /// In the pinset but not allocated to this peer.
    Remote,
    PinQueued,
    UnpinQueued,
    Sharded,
    /// Allocated here, not pinned in IPFS, and nothing queued to fix it.
    UnexpectedlyUnpinned,
}

impl TrackerStatus {
    pub const ALL: [TrackerStatus; 13] = [
        TrackerStatus::Undefined,
        TrackerStatus::ClusterError,
        TrackerStatus::PinError,
        TrackerStatus::UnpinError,
        TrackerStatus::Pinned,
        TrackerStatus::Pinning,
        TrackerStatus::Unpinning,
        TrackerStatus::Unpinned,
        TrackerStatus::Remote,
        TrackerStatus::PinQueued,
        TrackerStatus::UnpinQueued,
        TrackerStatus::Sharded,
        TrackerStatus::UnexpectedlyUnpinned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TrackerStatus::Undefined => "undefined",
            TrackerStatus::ClusterError => "cluster_error",
            TrackerStatus::PinError => "pin_error",
            TrackerStatus::UnpinError => "unpin_error",
            TrackerStatus::Pinned => "pinned",
            TrackerStatus::Pinning => "pinning",
            TrackerStatus::Unpinning => "unpinning",
            TrackerStatus::Unpinned => "unpinned",
            TrackerStatus::Remote => "remote",
            TrackerStatus::PinQueued => "pin_queued",
            TrackerStatus::UnpinQueued => "unpin_queued",
            TrackerStatus::Sharded => "sharded",
            TrackerStatus::UnexpectedlyUnpinned => "unexpectedly_unpinned",
        }
    }

    pub fn is_error(self) -> bool {
        matches!(self, TrackerStatus::ClusterError | TrackerStatus::PinError | TrackerStatus::UnpinError)
    }
}

/// A `filter=` value of `GET /pins`: a set of statuses, including the composites `error` and `queued`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusFilter(Vec<TrackerStatus>);

impl StatusFilter {
    /// Parses `pinned,error,...`; an empty string matches everything. `Err` names the bad entry.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut statuses = Vec::new();
        for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "error" => {
                    statuses.extend([TrackerStatus::ClusterError, TrackerStatus::PinError, TrackerStatus::UnpinError])
                }
                "queued" => statuses.extend([TrackerStatus::PinQueued, TrackerStatus::UnpinQueued]),
                _ => match TrackerStatus::ALL.iter().find(|s| s.as_str() == name) {
                    Some(TrackerStatus::Undefined) => return Ok(StatusFilter::default()),
                    Some(status) => statuses.push(*status),
                    None => return Err(format!("unknown filter: {name}")),
                },
            }
        }
        Ok(StatusFilter(statuses))
    }

    pub fn matches(&self, status: TrackerStatus) -> bool {
        self.0.is_empty() || self.0.contains(&status)
    }
}

/// One peer's view of one pin, as it appears inside `peer_map`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PinInfoShort {
    #[serde(default)]
    pub peername: String,
    #[serde(default, with = "opt_peer_id")]
    pub ipfs_peer_id: Option<PeerId>,
    #[serde(default, with = "super::rendered::multiaddrs")]
    pub ipfs_peer_addresses: Vec<Multiaddr>,
    pub status: TrackerStatus,
    #[serde(with = "time::required")]
    pub timestamp: DateTime<Utc>,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub attempt_count: u32,
    #[serde(default)]
    pub priority_pin: bool,
}

/// The cluster-wide status of a pin: what `/pins` and `/pins/{cid}` return.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GlobalPinInfo {
    #[serde(with = "cid_serde")]
    pub cid: Cid,
    #[serde(default)]
    pub name: String,
    #[serde(default, with = "crate::types::rendered::peer_ids")]
    pub allocations: Vec<PeerId>,
    #[serde(default, with = "null_as_empty")]
    pub origins: Vec<Multiaddr>,
    #[serde(default, with = "time::optional")]
    pub created: Option<DateTime<Utc>>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Keyed by cluster peer ID (base58).
    pub peer_map: BTreeMap<String, PinInfoShort>,
}

/// A peer ID that may be absent (written as `""`, as the reference does for an unknown IPFS peer).
pub(crate) mod opt_peer_id {
    use libp2p_identity::PeerId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &Option<PeerId>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.serialize_str(&crate::types::rendered::peer_id(id)),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PeerId>, D::Error> {
        // JSON may carry `null`; binary formats always carry the string that was written.
        let text: Option<String> =
            if d.is_human_readable() { Option::deserialize(d)? } else { Some(String::deserialize(d)?) };
        match text.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => text.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_filters_expand() {
        let filter = StatusFilter::parse("error,queued").unwrap();
        assert!(filter.matches(TrackerStatus::PinError));
        assert!(filter.matches(TrackerStatus::UnpinQueued));
        assert!(!filter.matches(TrackerStatus::Pinned));
        assert!(StatusFilter::parse("").unwrap().matches(TrackerStatus::Pinned));
        assert!(StatusFilter::parse("undefined").unwrap().matches(TrackerStatus::Remote));
        assert!(StatusFilter::parse("pinned,bogus").is_err());
    }

    #[test]
    fn statuses_use_reference_names() {
        for status in TrackerStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }
}
