//! The operator's Prometheus metrics, served at `/metrics` (see [`crate::server`]).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::membership::Action;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Counter,
    duration: Histogram,
    actions: Family<ActionLabels, Counter>,
    leading: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cluster_operator");
        let reconciles = Counter::default();
        let failures = Counter::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let actions = Family::<ActionLabels, Counter>::default();
        let leading = Gauge::default();
        registry.register("reconciles", "Reconcile passes over a cluster", reconciles.clone());
        registry.register("reconcile_failures", "Reconcile passes that failed (retried)", failures.clone());
        registry.register("reconcile_seconds", "How long a reconcile pass took", duration.clone());
        registry.register("actions", "Actions taken, by kind", actions.clone());
        registry.register("leading", "1 while this replica holds the leader Lease", leading.clone());
        Metrics { registry, reconciles, failures, duration, actions, leading }
    }
}

impl Metrics {
    pub fn reconciled(&self, took: Duration, ok: bool) {
        self.reconciles.inc();
        if !ok {
            self.failures.inc();
        }
        self.duration.observe(took.as_secs_f64());
    }

    pub fn acted(&self, action: &Action) {
        self.actions.get_or_create(&ActionLabels { action: action.kind() }).inc();
    }

    pub fn set_leading(&self, leading: bool) {
        self.leading.set(i64::from(leading));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}
