//! One operator replica's life: serve its probes and metrics, wait in standby until it holds the
//! leader Lease, then run the controllers until it is told to stop or loses the Lease.

use std::net::SocketAddr;
use std::sync::Arc;

use kube::runtime::events::{Recorder, Reporter};
use kube_lease_manager::{LeaseCreateMode, LeaseManagerBuilder};
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::membership::controller as membership;
use crate::metrics::Metrics;
use crate::{pins, server, Error, Result};

/// How long a Lease stays held without renewal (the standby's takeover time, at worst), and how
/// long before expiry the holder renews it.
const LEASE_SECONDS: u64 = 15;
const LEASE_GRACE: u64 = 5;

pub struct Settings {
    /// The namespace whose clusters this operator drives.
    pub namespace: String,
    pub lease_name: String,
    pub metrics_address: SocketAddr,
    /// This replica's name in the Lease and in events (its pod name).
    pub identity: String,
}

/// Runs until `shutdown` resolves (then releases the Lease) or the Lease is lost (an error: the
/// replica should restart as a standby rather than act alongside the new leader).
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<()> {
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let (address, server) =
        server::serve(settings.metrics_address, metrics.clone(), shutdown.clone().cancelled_owned())
            .await
            .map_err(|e| Error::Misconfigured(format!("serving on {}: {e}", settings.metrics_address)))?;
    tracing::info!(%address, "serving /livez, /readyz and /metrics");

    let lease = LeaseManagerBuilder::new(client.clone(), &settings.lease_name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(LEASE_GRACE)
        // The chart makes the Lease (and grants no `create`), so that uninstalling removes it.
        .with_create_mode(LeaseCreateMode::UseExistent)
        .build()
        .await?;
    let (mut leading, lease_task) = lease.watch().await;
    tracing::info!(lease = %settings.lease_name, "standing by for the leader Lease");
    let held = tokio::select! {
        _ = shutdown.cancelled() => false,
        held = leading.wait_for(|held| *held) => held.is_ok(),
    };
    let lost = held && {
        let reporter = Reporter { controller: "cluster-operator".into(), instance: Some(settings.identity.clone()) };
        let context = Arc::new(Context { client: client.clone(), recorder: Recorder::new(client, reporter), metrics });
        lead(context, &settings.namespace, leading, &shutdown).await
    };
    // Dropping the last receiver makes the Lease manager release the Lease.
    if let Ok(Err(error)) = lease_task.await {
        tracing::warn!(%error, "releasing the Lease");
    }
    let _ = server.await;
    if lost {
        return Err(Error::LeaseLost);
    }
    Ok(())
}

/// Runs the controllers while `leading` says the Lease is held and `shutdown` is not cancelled;
/// whether the Lease was lost. Consumes the receiver, so that the Lease is released after.
async fn lead(
    context: Arc<Context>,
    namespace: &str,
    mut leading: tokio::sync::watch::Receiver<bool>,
    shutdown: &CancellationToken,
) -> bool {
    tracing::info!("leading: running the controllers");
    context.metrics.set_leading(true);
    let stop = shutdown.child_token();
    let watch_lease = async {
        let lost = tokio::select! {
            _ = stop.cancelled() => false,
            _ = leading.wait_for(|held| !*held) => true,
        };
        if lost {
            tracing::warn!("lost the leader Lease: stopping the controllers");
        }
        stop.cancel();
        lost
    };
    let (lost, (), ()) = tokio::join!(
        watch_lease,
        membership::run(context.clone(), namespace, stop.clone().cancelled_owned()),
        pins::run(context.clone(), namespace, stop.clone().cancelled_owned()),
    );
    context.metrics.set_leading(false);
    lost
}
