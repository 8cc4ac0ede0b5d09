//! Metrics peers publish about themselves (`freespace`, `ping`) and the alerts raised when they expire.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::time;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    /// Base58 peer ID of the peer the metric describes.
    pub peer: String,
    pub value: String,
    /// Unix nanoseconds after which the metric is stale.
    pub expire: i64,
    pub valid: bool,
    pub weight: i64,
    pub partitionable: bool,
    /// Unix nanoseconds at which it was received.
    pub received_at: i64,
}

impl Metric {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now.timestamp_nanos_opt().unwrap_or(i64::MAX) > self.expire
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    #[serde(flatten)]
    pub metric: Metric,
    #[serde(with = "time::required")]
    pub triggered_at: DateTime<Utc>,
}
