//! The peer monitor: the latest metric of each kind from each peer, and alerts when one expires.
//!
//! Peers publish `freespace` (from the daemon's `repo/stat`, used by the allocator) and `ping`
//! (liveness) with a time to live. A metric that outlives its TTL without being renewed means the
//! peer (or its IPFS daemon) went quiet: that raises an alert, once per lapse.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::types::{Alert, Metric};

pub const FREESPACE: &str = "freespace";
pub const PING: &str = "ping";

/// Alerts kept for `GET /health/alerts`; older ones are dropped.
const MAX_ALERTS: usize = 1000;

#[derive(Default)]
pub struct Monitor {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Latest metric per (name, peer).
    latest: HashMap<(String, String), Metric>,
    /// (name, peer) pairs whose lapse was already alerted, so one lapse raises one alert.
    alerted: std::collections::HashSet<(String, String)>,
    alerts: VecDeque<Alert>,
}

impl Monitor {
    pub fn publish(&self, mut metric: Metric, now: DateTime<Utc>) {
        metric.received_at = nanos(now);
        let key = (metric.name.clone(), metric.peer.clone());
        let mut inner = self.inner.lock().expect("monitor lock");
        inner.alerted.remove(&key);
        inner.latest.insert(key, metric);
    }

    /// Names of the metrics known, sorted.
    pub fn names(&self) -> Vec<String> {
        let inner = self.inner.lock().expect("monitor lock");
        let mut names: Vec<String> = inner.latest.keys().map(|(name, _)| name.clone()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// The latest valid, unexpired metric called `name` of each peer, sorted by peer.
    pub fn latest(&self, name: &str, now: DateTime<Utc>) -> Vec<Metric> {
        let inner = self.inner.lock().expect("monitor lock");
        let mut metrics: Vec<Metric> =
            inner.latest.values().filter(|m| m.name == name && m.valid && !m.is_expired(now)).cloned().collect();
        metrics.sort_by(|a, b| a.peer.cmp(&b.peer));
        metrics
    }

    /// Peers whose metric `name` has expired, with when it did (the peer went quiet then).
    pub fn lapsed(&self, name: &str, now: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)> {
        let inner = self.inner.lock().expect("monitor lock");
        inner
            .latest
            .values()
            .filter(|m| m.name == name && m.is_expired(now))
            .map(|m| (m.peer.clone(), DateTime::from_timestamp_nanos(m.expire)))
            .collect()
    }

    /// Every peer any metric was heard from.
    pub fn peers(&self) -> Vec<String> {
        let inner = self.inner.lock().expect("monitor lock");
        let mut peers: Vec<String> = inner.latest.keys().map(|(_, peer)| peer.clone()).collect();
        peers.sort();
        peers.dedup();
        peers
    }

    /// Raises one alert for each metric that expired since the last check; returns how many.
    pub fn check_expired(&self, now: DateTime<Utc>) -> usize {
        let mut inner = self.inner.lock().expect("monitor lock");
        let lapsed: Vec<Metric> = inner
            .latest
            .iter()
            .filter(|(key, m)| m.is_expired(now) && !inner.alerted.contains(*key))
            .map(|(_, m)| m.clone())
            .collect();
        for metric in &lapsed {
            tracing::warn!(metric = %metric.name, peer = %metric.peer, "metric expired: raising an alert");
            inner.alerted.insert((metric.name.clone(), metric.peer.clone()));
            inner.alerts.push_front(Alert { metric: metric.clone(), triggered_at: now });
        }
        inner.alerts.truncate(MAX_ALERTS);
        lapsed.len()
    }

    /// Alerts, newest first.
    pub fn alerts(&self) -> Vec<Alert> {
        self.inner.lock().expect("monitor lock").alerts.iter().cloned().collect()
    }
}

/// A metric about `peer` valid for `ttl` from `now`.
pub fn metric(name: &str, peer: &str, value: u64, ttl: std::time::Duration, now: DateTime<Utc>) -> Metric {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    Metric {
        name: name.to_string(),
        peer: peer.to_string(),
        value: value.to_string(),
        expire: nanos(now + ttl),
        valid: true,
        weight: i64::try_from(value).unwrap_or(i64::MAX),
        partitionable: false,
        received_at: nanos(now),
    }
}

fn nanos(time: DateTime<Utc>) -> i64 {
    time.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_lapsed_metric_raises_one_alert_until_renewed() {
        let monitor = Monitor::default();
        let t0 = Utc::now();
        monitor.publish(metric(FREESPACE, "peer-a", 100, Duration::from_secs(30), t0), t0);
        assert_eq!(monitor.latest(FREESPACE, t0).len(), 1);
        assert_eq!(monitor.check_expired(t0), 0);

        let later = t0 + chrono::Duration::seconds(31);
        assert!(monitor.latest(FREESPACE, later).is_empty());
        assert_eq!(monitor.check_expired(later), 1);
        assert_eq!(monitor.check_expired(later), 0, "one lapse, one alert");
        assert_eq!(monitor.alerts()[0].metric.peer, "peer-a");

        monitor.publish(metric(FREESPACE, "peer-a", 100, Duration::from_secs(30), later), later);
        let much_later = later + chrono::Duration::seconds(31);
        assert_eq!(monitor.check_expired(much_later), 1, "a new lapse alerts again");
        assert_eq!(monitor.alerts().len(), 2);
        assert_eq!(monitor.names(), vec![FREESPACE.to_string()]);
        assert_eq!(monitor.peers(), vec!["peer-a".to_string()]);
        let lapsed = monitor.lapsed(FREESPACE, much_later);
        assert_eq!(lapsed.len(), 1);
        assert_eq!(lapsed[0].1.timestamp(), (later + chrono::Duration::seconds(30)).timestamp());
        assert!(monitor.lapsed(FREESPACE, later).is_empty());
    }
}
