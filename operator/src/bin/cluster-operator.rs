//! `cluster-operator`: drives the IPFS clusters of one namespace (see the `operator` crate).
//! Several replicas may run: one leads through a Lease, the others stand by.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use operator::run::{run, Settings};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(version, about = "The Kubernetes operator of IPFS Cluster: membership that follows pods")]
struct Args {
    /// The namespace whose clusters (StatefulSets labelled ipfscluster.io/cluster) to drive.
    #[arg(long, env = "OPERATOR_NAMESPACE")]
    namespace: String,
    /// The Lease through which replicas elect the one that acts; it must exist (the chart makes
    /// it), as the operator is granted no `create` on Leases.
    #[arg(long, env = "OPERATOR_LEASE_NAME", default_value = "cluster-operator")]
    lease_name: String,
    /// Where to serve /livez, /readyz and /metrics.
    #[arg(long, env = "OPERATOR_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    metrics_address: SocketAddr,
    /// This replica's name in the Lease and in events; its pod name by default.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// `text` or `json` logs.
    #[arg(long, env = "OPERATOR_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if args.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let identity = args.identity.unwrap_or_else(|| format!("cluster-operator-{}", std::process::id()));
    let settings = Settings {
        namespace: args.namespace,
        lease_name: args.lease_name,
        metrics_address: args.metrics_address,
        identity,
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    match run(settings, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "stopping");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM (Kubernetes) or SIGINT (Ctrl-C) starts a graceful shutdown.
async fn stop_on_signal(shutdown: CancellationToken) {
    let (Ok(mut terminate), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot listen for signals");
        return;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
