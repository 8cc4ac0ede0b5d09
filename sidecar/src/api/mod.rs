//! The REST API, wire-compatible with IPFS Cluster's (see `rest-api.md`), served by warp on hyper 1.
//!
//! Layout: `service` (middleware: CORS, auth, 307, limits, metrics) -> `routes` (the table) ->
//! handlers (`info`, `pins`, `add`), with `stream` for NDJSON + trailer responses, `error` for the
//! error JSON, `body` for bounded request bodies and `parse_errors` for hyper's own answers.
//! Beyond the reference: `GET /readyz` (readiness, no auth) and `GET /metrics` (Prometheus text,
//! no auth).

mod add;
mod auth;
mod body;
mod cors;
mod error;
mod info;
pub mod metrics;
mod parse_errors;
mod peers;
mod pins;
mod routes;
mod service;
mod status_lines;
mod stream;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use multiaddr::Multiaddr;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use metrics::ApiMetrics;
use parse_errors::ErrorJsonIo;

use crate::{Error, Result};

/// How long shutdown waits for open connections (streams in flight) before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Go's server allows this much beyond `max_header_bytes` (net/http's "bufio slop"), and so do we, so
/// that a reference `service.json` admits the same requests.
const HEADER_SLACK: usize = 4096;

/// `service.json`'s `api.restapi` section. Unknown keys (TLS, libp2p, the reference's
/// `write_timeout` and `idle_timeout`) are accepted and ignored so existing files load: an idle
/// keep-alive connection is closed after `read_header_timeout`, which hyper starts when it waits for
/// the next request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct RestApiConfig {
    #[serde(with = "listen_multiaddress")]
    pub http_listen_multiaddress: Multiaddr,
    /// user -> password; `None` (null) disables authentication.
    pub basic_auth_credentials: Option<BTreeMap<String, String>>,
    /// Extra headers added to every response.
    pub headers: BTreeMap<String, Vec<String>>,
    pub cors_allowed_origins: Vec<String>,
    pub cors_allowed_methods: Vec<String>,
    /// Empty means the usual `Origin, Accept, Content-Type, X-Requested-With`.
    pub cors_allowed_headers: Vec<String>,
    pub cors_exposed_headers: Vec<String>,
    pub cors_allow_credentials: bool,
    /// 0 = no `Access-Control-Max-Age`.
    #[serde(with = "crate::types::go_duration")]
    pub cors_max_age: Duration,
    /// How long a request's headers may take to arrive, and how long a keep-alive connection may
    /// wait idle for its next request.
    #[serde(with = "crate::types::go_duration")]
    pub read_header_timeout: Duration,
    /// How long a request's body may take to arrive after its headers (408 beyond); 0 = no limit, as
    /// in the reference (whose `service.json` files say `0s`).
    #[serde(with = "crate::types::go_duration")]
    pub read_timeout: Duration,
    /// Largest request head (request line and headers); 431 beyond (with 4 KiB of slack, as Go).
    pub max_header_bytes: usize,
    /// Connections served at once; further clients wait in the listen backlog until one closes.
    /// Each holds a file descriptor, and the peer needs others (libp2p, the daemon, storage).
    pub max_connections: usize,
    /// Largest request body accepted on every route but `POST /add` (413 beyond).
    pub max_body_size: u64,
    /// Largest upload of `POST /add`; `None` = unlimited, as the reference.
    pub max_add_body_size: Option<u64>,
}

impl Default for RestApiConfig {
    fn default() -> Self {
        RestApiConfig {
            http_listen_multiaddress: "/ip4/127.0.0.1/tcp/9094".parse().expect("valid multiaddr"),
            basic_auth_credentials: None,
            headers: BTreeMap::new(),
            cors_allowed_origins: vec!["*".into()],
            cors_allowed_methods: vec!["GET".into()],
            cors_allowed_headers: vec![],
            cors_exposed_headers: ["Content-Type", "X-Stream-Output", "X-Chunked-Output", "X-Content-Length"]
                .map(String::from)
                .to_vec(),
            cors_allow_credentials: true,
            cors_max_age: Duration::ZERO,
            read_header_timeout: Duration::from_secs(5),
            // Long enough for a multi-gigabyte `/add` on a slow link; slow clients are let go.
            read_timeout: Duration::from_secs(300),
            // A URI up to hyper's own limit (64 KiB) and any real client's headers.
            max_header_bytes: 64 << 10,
            // Half the usual soft limit on open files (1024), which Rust does not raise as Go does;
            // far more than the operator, the CLI and client libraries open.
            max_connections: 512,
            max_body_size: 1 << 20,
            max_add_body_size: None,
        }
    }
}

impl RestApiConfig {
    pub fn validate(&self) -> Result<()> {
        if self.basic_auth_credentials.as_ref().is_some_and(BTreeMap::is_empty) {
            return Err(Error::Config(
                "restapi.basic_auth_credentials should be null or have at least one entry".into(),
            ));
        }
        if self.read_header_timeout.is_zero() {
            return Err(Error::Config("restapi.read_header_timeout must be positive".into()));
        }
        if self.max_header_bytes == 0 {
            return Err(Error::Config("restapi.max_header_bytes must be positive".into()));
        }
        if self.max_connections == 0 {
            return Err(Error::Config("restapi.max_connections must be positive".into()));
        }
        Ok(())
    }
}

/// Binds `config.http_listen_multiaddress` (port 0 picks one) and serves until `shutdown`
/// resolves. Returns the bound address and the server task. Request metrics join the peer's
/// registry (`GET /metrics`).
pub async fn serve(
    cluster: crate::cluster::Cluster,
    config: RestApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    config.validate()?;
    let (host, port) = crate::client::multiaddr_host_port(&config.http_listen_multiaddress)?;
    let listener = TcpListener::bind((host.as_str(), port))
        .await
        .map_err(|e| Error::Config(format!("restapi: cannot listen on {}: {e}", config.http_listen_multiaddress)))?;
    let local = listener.local_addr()?;
    let metrics = ApiMetrics::default();
    cluster.register_metrics(|registry| metrics.register(registry));
    let service = Arc::new(service::ApiService::new(cluster, &config, metrics)?);
    tracing::info!(address = %local, authenticated = config.basic_auth_credentials.is_some(), "REST API listening");
    let task = tokio::spawn(run(listener, service, config, shutdown));
    Ok((local, task))
}

async fn run(
    listener: TcpListener,
    service: Arc<service::ApiService>,
    config: RestApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // A permit per open connection; when none is left, accepting waits (as Go's LimitListener).
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.read_header_timeout)
        .max_header_size(config.max_header_bytes.saturating_add(HEADER_SLACK))
        // One write per message, which `ErrorJsonIo` relies on to recognise hyper's own answers.
        .writev(false);
    loop {
        let (stream, remote, permit) = tokio::select! {
            accepted = accept(&listener, &connections) => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "REST API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = service.clone();
        let handler = hyper::service::service_fn(move |req| service.clone().handle(req));
        let conn = builder.serve_connection(TokioIo::new(ErrorJsonIo::new(stream)), handler);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = %e, "REST API connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("REST API connections still open after {SHUTDOWN_GRACE:?}; dropping them");
    }
    tracing::info!("REST API stopped");
}

/// The next connection, once one of `connections` is free.
async fn accept(
    listener: &TcpListener,
    connections: &Arc<Semaphore>,
) -> std::io::Result<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let permit = connections.clone().acquire_owned().await.map_err(std::io::Error::other)?;
    let (stream, remote) = listener.accept().await?;
    Ok((stream, remote, permit))
}

/// `http_listen_multiaddress` is one multiaddr; the reference also writes a list (one is served).
mod listen_multiaddress {
    use multiaddr::Multiaddr;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(addr: &Multiaddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(addr)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Multiaddr, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let text = match OneOrMany::deserialize(d)? {
            OneOrMany::One(text) => text,
            OneOrMany::Many(list) if list.len() == 1 => list.into_iter().next().expect("one"),
            OneOrMany::Many(list) => {
                return Err(de::Error::custom(format!("expected one http_listen_multiaddress, got {}", list.len())))
            }
        };
        text.parse().map_err(|e| de::Error::custom(format!("invalid http_listen_multiaddress {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reference_section() {
        let json = r#"{
            "http_listen_multiaddress": ["/ip4/0.0.0.0/tcp/9094"],
            "read_timeout": "0s", "read_header_timeout": "5s", "max_header_bytes": 4096,
            "basic_auth_credentials": {"admin": "pw"},
            "cors_allowed_origins": ["*"], "cors_allowed_methods": ["GET"],
            "cors_max_age": "0s", "headers": {}
        }"#;
        let config: RestApiConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.http_listen_multiaddress.to_string(), "/ip4/0.0.0.0/tcp/9094");
        assert_eq!(config.basic_auth_credentials.unwrap()["admin"], "pw");
        assert_eq!(config.max_body_size, 1 << 20);
        assert_eq!((config.read_timeout, config.max_header_bytes), (Duration::ZERO, 4096));
        config_roundtrips(&RestApiConfig::default());
    }

    fn config_roundtrips(config: &RestApiConfig) {
        let json = serde_json::to_string(config).unwrap();
        let again: RestApiConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&again).unwrap(), json);
    }

    #[test]
    fn empty_credentials_and_zero_bounds_are_invalid() {
        let config = RestApiConfig { basic_auth_credentials: Some(BTreeMap::new()), ..Default::default() };
        assert!(config.validate().unwrap_err().to_string().contains("basic_auth_credentials"));
        assert!(RestApiConfig::default().validate().is_ok());
        let config = RestApiConfig { max_connections: 0, ..Default::default() };
        assert!(config.validate().unwrap_err().to_string().contains("max_connections"));
        let config = RestApiConfig { max_header_bytes: 0, ..Default::default() };
        assert!(config.validate().unwrap_err().to_string().contains("max_header_bytes"));
    }
}
