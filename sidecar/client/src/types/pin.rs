//! The pin: what the cluster keeps in its replicated state, and its JSON as the reference writes it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use serde::{Deserialize, Serialize};

use super::cid::{cid_serde, opt_cid_serde, Cid, CidKey};
use super::time;

/// How IPFS pins the DAG: `recursive` (all of it) or `direct` (the root block only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinMode {
    #[default]
    Recursive,
    Direct,
}

impl PinMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PinMode::Recursive => "recursive",
            PinMode::Direct => "direct",
        }
    }

    /// `max_depth` as the reference reports it: -1 for the whole DAG, 0 for the root only.
    pub fn max_depth(self) -> i32 {
        match self {
            PinMode::Recursive => -1,
            PinMode::Direct => 0,
        }
    }
}

/// What kind of cluster pin this is. Only `pin` is produced here; the others exist for sharded DAGs
/// in the reference and are accepted so that filters and foreign states parse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PinType {
    #[default]
    #[serde(rename = "pin")]
    Data,
    #[serde(rename = "meta-pin")]
    Meta,
    #[serde(rename = "clusterdag-pin")]
    ClusterDag,
    #[serde(rename = "shard-pin")]
    Shard,
}

impl PinType {
    pub fn as_str(self) -> &'static str {
        match self {
            PinType::Data => "pin",
            PinType::Meta => "meta-pin",
            PinType::ClusterDag => "clusterdag-pin",
            PinType::Shard => "shard-pin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [PinType::Data, PinType::Meta, PinType::ClusterDag, PinType::Shard].into_iter().find(|t| t.as_str() == text)
    }
}

/// A cluster pin. Field order and names follow the reference's `api.Pin` exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    pub replication_factor_min: i32,
    pub replication_factor_max: i32,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub mode: PinMode,
    #[serde(default)]
    pub shard_size: u64,
    #[serde(default, with = "empty_as_null")]
    pub user_allocations: Vec<PeerId>,
    #[serde(default, with = "time::optional")]
    pub expire_at: Option<DateTime<Utc>>,
    #[serde(default, with = "empty_as_null")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, with = "opt_cid_serde")]
    pub pin_update: Option<Cid>,
    #[serde(default, with = "null_as_empty")]
    pub origins: Vec<Multiaddr>,
    #[serde(with = "cid_serde")]
    pub cid: Cid,
    #[serde(rename = "type", default)]
    pub pin_type: PinType,
    /// Peers that must pin this CID; empty means "every peer" (replication -1).
    #[serde(default, with = "crate::types::rendered::peer_ids")]
    pub allocations: Vec<PeerId>,
    #[serde(default)]
    pub max_depth: i32,
    #[serde(default, with = "opt_cid_serde")]
    pub reference: Option<Cid>,
    #[serde(with = "time::required")]
    pub timestamp: DateTime<Utc>,
}

impl Pin {
    pub fn key(&self) -> CidKey {
        CidKey::of(&self.cid)
    }

    /// Whether `peer` is asked to hold this pin (every peer when replication is "everywhere").
    pub fn is_allocated_to(&self, peer: &PeerId) -> bool {
        self.allocations.is_empty() || self.allocations.contains(peer)
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expire_at.is_some_and(|at| at <= now)
    }
}

/// Serializes an empty collection as `null`, as Go does for nil slices and maps; reads `null` as empty.
mod empty_as_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T, S>(value: &T, s: S) -> Result<S::Ok, S::Error>
    where
        T: Serialize + IsEmpty,
        S: Serializer,
    {
        if value.is_empty() {
            s.serialize_none()
        } else {
            s.serialize_some(value)
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: Deserialize<'de> + Default,
        D: Deserializer<'de>,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }

    pub trait IsEmpty {
        fn is_empty(&self) -> bool;
    }
    impl<T> IsEmpty for Vec<T> {
        fn is_empty(&self) -> bool {
            Vec::is_empty(self)
        }
    }
    impl<K, V> IsEmpty for std::collections::BTreeMap<K, V> {
        fn is_empty(&self) -> bool {
            std::collections::BTreeMap::is_empty(self)
        }
    }
}

/// Always writes the collection (`[]` when empty); reads `null` as empty.
pub(crate) mod null_as_empty {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        value.serialize(s)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: Deserialize<'de> + Default,
        D: Deserializer<'de>,
    {
        if d.is_human_readable() {
            Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
        } else {
            T::deserialize(d)
        }
    }
}

/// Pins for tests (the `fixtures` feature).
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures {
    use super::*;
    use crate::types::parse_cid;

    /// A recursive "everywhere" pin of a well-known CID, for tests to adjust.
    pub fn pin(cid: &str) -> Pin {
        Pin {
            replication_factor_min: -1,
            replication_factor_max: -1,
            name: String::new(),
            mode: PinMode::Recursive,
            shard_size: 0,
            user_allocations: vec![],
            expire_at: None,
            metadata: BTreeMap::new(),
            pin_update: None,
            origins: vec![],
            cid: parse_cid(cid).unwrap(),
            pin_type: PinType::Data,
            allocations: vec![],
            max_depth: -1,
            reference: None,
            timestamp: DateTime::parse_from_rfc3339("2025-05-09T10:00:00Z").unwrap().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::pin;
    use super::*;

    const CID: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";

    #[test]
    fn json_has_the_reference_shape() {
        let json = serde_json::to_value(pin(CID)).unwrap();
        let expected = serde_json::json!({
            "replication_factor_min": -1, "replication_factor_max": -1, "name": "", "mode": "recursive",
            "shard_size": 0, "user_allocations": null, "expire_at": "0001-01-01T00:00:00Z",
            "metadata": null, "pin_update": null, "origins": [], "cid": CID, "type": "pin",
            "allocations": [], "max_depth": -1, "reference": null, "timestamp": "2025-05-09T10:00:00Z"
        });
        assert_eq!(json, expected);
    }

    #[test]
    fn round_trips_through_json_and_binary() {
        let mut p = pin(CID);
        p.name = "site".into();
        p.metadata.insert("owner".into(), "me".into());
        p.allocations = vec![PeerId::random()];
        p.origins = vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()];
        p.expire_at = Some(p.timestamp);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Pin>(&json).unwrap(), p);
        let bytes = postcard::to_allocvec(&p).unwrap();
        assert_eq!(postcard::from_bytes::<Pin>(&bytes).unwrap(), p);
    }
}
