//! The operator's Prometheus metrics, served at `/metrics` (see [`crate::server`]), each labelled
//! with the controller it counts for (`membership`, `pins`).

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::crd::PinPhase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    controller: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

type Durations = Family<ControllerLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    failures: Family<ControllerLabels, Counter>,
    duration: Durations,
    queue_depth: Family<ControllerLabels, Gauge>,
    actions: Family<ActionLabels, Counter>,
    pins: Family<PhaseLabels, Gauge>,
    leading: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cluster_operator");
        let reconciles = Family::default();
        let failures = Family::default();
        let duration: Durations = Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 14)));
        let queue_depth = Family::default();
        let actions = Family::default();
        let pins = Family::default();
        let leading = Gauge::default();
        registry.register("reconciles", "Reconcile passes", reconciles.clone());
        registry.register("reconcile_failures", "Reconcile passes that failed (retried)", failures.clone());
        registry.register("reconcile_seconds", "How long a reconcile pass took", duration.clone());
        registry.register(
            "queue_depth",
            "Work the last pass found: membership actions, or Pins awaiting the cluster",
            queue_depth.clone(),
        );
        registry.register("actions", "Actions taken, by kind", actions.clone());
        registry.register("pins", "Pin objects by phase", pins.clone());
        registry.register("leading", "1 while this replica holds the leader Lease", leading.clone());
        Metrics { registry, reconciles, failures, duration, queue_depth, actions, pins, leading }
    }
}

impl Metrics {
    pub fn reconciled(&self, controller: &'static str, took: Duration, ok: bool) {
        let labels = ControllerLabels { controller };
        self.reconciles.get_or_create(&labels).inc();
        if !ok {
            self.failures.get_or_create(&labels).inc();
        }
        self.duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    pub fn acted(&self, controller: &'static str, action: &'static str) {
        self.actions.get_or_create(&ActionLabels { controller, action }).inc();
    }

    pub fn queued(&self, controller: &'static str, depth: usize) {
        self.queue_depth.get_or_create(&ControllerLabels { controller }).set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// The number of Pins in each phase; a phase no Pin is in is left out.
    pub fn pins_by_phase(&self, counts: &BTreeMap<PinPhase, i64>) {
        self.pins.clear();
        for (phase, count) in counts {
            self.pins.get_or_create(&PhaseLabels { phase: format!("{phase:?}") }).set(*count);
        }
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
