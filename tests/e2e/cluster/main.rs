//! Clusters of real `cluster-sidecar` processes, each on its own loopback address beside its own
//! real IPFS daemon: consensus, membership, allocation and the cluster-wide views, end to end.
//!
//! At most two clusters run at once (see `e2e::cluster`). Waits poll a condition under a
//! generous deadline; none sleeps.

mod faults;
mod membership;
mod replication;
