//! The operator's own HTTP endpoints: `/livez`, `/readyz` (for its probes) and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use warp::Filter;

use crate::metrics::Metrics;

/// Serves until `shutdown` resolves; returns the address bound (port 0 picks one).
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let alive = warp::path!("livez").map(|| "ok");
    // Ready once serving: a standby replica is ready too (it takes over through the Lease).
    let ready = warp::path!("readyz").map(|| "ok");
    let exposition = warp::path!("metrics").map(move || {
        warp::http::Response::builder()
            .header("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(metrics.encode())
    });
    let routes = warp::get().and(alive.or(ready).or(exposition));
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let server = warp::serve(routes).incoming(listener).graceful(shutdown).run();
    Ok((bound, tokio::spawn(server)))
}
