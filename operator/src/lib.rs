//! The Kubernetes operator of IPFS Cluster: it keeps a cluster's consensus membership in step with
//! the pods of its StatefulSet (one `ClusterPeer` per peer pod) and, later, turns `Pin` resources
//! into cluster pins. It drives the peers only through their REST API.

pub mod crd;
pub mod membership;
