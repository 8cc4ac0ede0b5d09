//! Prometheus metrics of the peer, read from its parts at scrape time (nothing to keep in sync).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{Cluster, Inner};
use crate::types::ConsensusRole;

impl Cluster {
    /// Prometheus text exposition of the peer's metrics (`GET /metrics`).
    pub fn prometheus(&self) -> String {
        let mut text = String::new();
        let registry = self.inner.registry.lock().expect("registry lock");
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("writing to a String cannot fail");
        text
    }

    /// Lets another part (the REST API) add its own series to the peer's registry.
    pub fn register_metrics(&self, register: impl FnOnce(&mut Registry)) {
        register(&mut self.inner.registry.lock().expect("registry lock"));
    }
}

/// A registry with the peer's own series, read through a weak handle so it never keeps a stopped
/// peer alive.
pub(super) fn peer_registry(inner: Weak<Inner>) -> Registry {
    let mut registry = Registry::with_prefix("cluster");
    registry.register_collector(Box::new(PeerCollector { inner }));
    registry
}

struct PeerCollector {
    inner: Weak<Inner>,
}

impl std::fmt::Debug for PeerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerCollector")
    }
}

impl Collector for PeerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(inner) = self.inner.upgrade() else { return Ok(()) };
        let inner: Arc<Inner> = inner;
        let tracker = inner.tracker.metrics();
        let consensus = inner.consensus.status();
        let pins = inner.state.len().unwrap_or(0);
        let gauges: [(&str, &str, i64); 13] = [
            ("pins", "Pins in the cluster's pinset", pins as i64),
            ("tracker_queued", "IPFS operations waiting (queued or backing off)", tracker.queued as i64),
            ("tracker_in_progress", "IPFS operations running", tracker.in_progress as i64),
            ("tracker_errors", "Pins or unpins failed until recovered", tracker.errors as i64),
            (
                "tracker_syncing",
                "1 while a full sync with the IPFS pin set runs or is due (start-up rebuild, after a restore)",
                tracker.syncing as i64,
            ),
            ("ipfs_pins", "Pins the IPFS daemon holds, as last known", tracker.ipfs_pins as i64),
            ("ipfs_up", "1 when the IPFS daemon answered its last probe", inner.ipfs_up.load(Ordering::Relaxed) as i64),
            ("alerts", "Alerts raised since start (kept, newest first)", inner.monitor.alerts().len() as i64),
            ("raft_term", "The Raft term this peer is in", consensus.term as i64),
            ("raft_is_leader", "1 when this peer leads the cluster", (consensus.role == ConsensusRole::Leader) as i64),
            ("raft_members", "Cluster members, voters and learners", consensus.members.len() as i64),
            ("raft_voters", "Voting members", consensus.members.iter().filter(|m| m.voter).count() as i64),
            (
                "raft_last_applied_index",
                "Index of the last Raft entry applied to the pinset here",
                consensus.last_applied_index.unwrap_or(0) as i64,
            ),
        ];
        for (name, help, value) in gauges {
            ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        let counters: [(&str, &str, u64); 5] = [
            ("tracker_ops_done", "IPFS operations that succeeded", tracker.ops_done),
            ("tracker_ops_failed", "IPFS operations that failed", tracker.ops_failed),
            (
                "tracker_unexpectedly_unpinned",
                "Pins found missing from IPFS and queued for repair",
                tracker.unexpectedly_unpinned,
            ),
            ("tracker_queue_overflows", "Pins refused because the queue was full", tracker.queue_overflows),
            ("tracker_syncs", "Full syncs with the IPFS pin set completed", tracker.syncs),
        ];
        for (name, help, value) in counters {
            ConstCounter::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?;
        }
        Ok(())
    }
}
