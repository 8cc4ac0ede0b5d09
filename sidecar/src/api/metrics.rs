//! Request metrics of the REST API: a counter by route, method and status, and a latency histogram
//! by route. Latency is measured to the response head, so streamed bodies do not inflate it.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// Cheap to clone: clones share the same series.
#[derive(Clone)]
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics {
            requests: Family::default(),
            // 1ms .. ~16s.
            latency: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 15))),
        }
    }
}

impl ApiMetrics {
    /// Adds `restapi_requests_total` and `restapi_request_duration_seconds` to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("restapi_requests", "REST API requests by route, method and status", self.requests.clone());
        registry.register(
            "restapi_request_duration_seconds",
            "Time to the response head of REST API requests, by route",
            self.latency.clone(),
        );
    }

    /// `route` is the route's pattern (`/pins/{cid}`), never the raw path, to keep cardinality bounded.
    pub(crate) fn observe(&self, route: &str, method: &http::Method, status: u16, elapsed: Duration) {
        let labels = RequestLabels { route: route.to_string(), method: method.as_str().to_string(), status };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&RouteLabels { route: route.to_string() }).observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_show_up_in_the_exposition() {
        let metrics = ApiMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.observe("/pins/{cid}", &http::Method::GET, 404, Duration::from_millis(3));
        metrics.observe("/pins/{cid}", &http::Method::GET, 404, Duration::from_millis(5));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains(r#"restapi_requests_total{route="/pins/{cid}",method="GET",status="404"} 2"#), "{text}");
        assert!(text.contains(r#"restapi_request_duration_seconds_count{route="/pins/{cid}"} 2"#), "{text}");
    }
}
