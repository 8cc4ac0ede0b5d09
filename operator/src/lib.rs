//! The Kubernetes operator of IPFS Cluster: it keeps a cluster's consensus membership in step with
//! the pods of its StatefulSet (one `ClusterPeer` per peer pod) and turns `Pin` resources into
//! cluster pins. It drives the peers only through their REST API.

mod context;
pub mod crd;
mod error;
pub mod membership;
pub mod metrics;
pub mod pins;
pub mod run;
mod server;
pub mod sidecars;

pub use error::{Error, Result};
