//! What every controller gets: the API client, the event recorder and the metrics.

use std::sync::Arc;

use kube::runtime::events::Recorder;

use crate::metrics::Metrics;

pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
}
