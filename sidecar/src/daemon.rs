//! The `cluster-sidecar` process: configuration, logging, start-up and graceful shutdown.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::cluster::Cluster;
use crate::config::{DaemonArgs, DaemonConfig, LogFormat};
use crate::identity::{Identity, IDENTITY_FILE};
use crate::ipfs::kubo::KuboClient;
use crate::Result;

/// Runs the peer until SIGINT or SIGTERM.
pub async fn run(args: DaemonArgs) -> Result<()> {
    init_logging(args.log_format);
    let config = DaemonConfig::resolve(args)?;
    std::fs::create_dir_all(&config.data_dir)?;
    let identity = Identity::load_or_create(&config.data_dir.join(IDENTITY_FILE))?;
    tracing::info!(peer_id = %identity.peer_id, peername = %config.cluster.peername,
        data_dir = %config.data_dir.display(), ipfs = %config.ipfs.node_multiaddress, "starting peer");
    if config.insecure_no_secret {
        tracing::warn!(
            "INSECURE: --insecure-no-secret: the cluster network uses a publicly known all-zero key; anyone who \
             can reach this peer can join its cluster. For development only: give --secret / CLUSTER_SECRET"
        );
    }

    let ipfs = Arc::new(KuboClient::new(config.ipfs.clone())?);
    let cluster = Cluster::start(config.cluster.clone(), identity, ipfs, &config.data_dir).await?;

    let stop = CancellationToken::new();
    let (address, server) =
        crate::api::serve(cluster.clone(), config.api.clone(), stop.clone().cancelled_owned()).await?;
    tracing::info!(%address, "REST API listening");

    let failure = tokio::select! {
        signal = wait_for_signal() => signal.err().map(|e| e.to_string()),
        _ = cluster.removed() => None,
        reason = cluster.consensus_failed() => Some(format!("consensus stopped: {reason}")),
    };
    tracing::info!("shutting down");
    stop.cancel();
    let _ = server.await;
    cluster.shutdown().await;
    // Removed by another peer, or left on shutdown (`--leave-on-shutdown`).
    if cluster.is_removed() {
        cluster.clean_after_removal()?;
        tracing::warn!("this peer was removed from the cluster and has stopped");
    }
    match failure {
        // A non-zero exit, so that a supervisor (or Kubernetes) restarts the peer.
        Some(reason) => Err(crate::Error::Storage(reason)),
        None => Ok(()),
    }
}

async fn wait_for_signal() -> Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
