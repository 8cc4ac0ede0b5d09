//! The operator's one error type.

/// What can go wrong while reconciling a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A sidecar's REST API answered with an error, or could not be reached.
    #[error("the sidecar of pod {pod}: {source}")]
    Sidecar {
        pod: String,
        #[source]
        source: cluster_client::Error,
    },
    /// The cluster's objects are not as the chart makes them (a missing annotation, Secret or pod IP).
    #[error("{0}")]
    Misconfigured(String),
    /// Another replica holds the leader Lease now: this one must not act alongside it.
    #[error("lost the leader Lease; restart as a standby")]
    LeaseLost,
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
