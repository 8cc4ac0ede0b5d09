//! Harness of the end-to-end tests: real IPFS daemons, real peer processes, and clusters of real
//! peers in one process whose network can fail.

pub mod cluster;
pub mod common;
pub mod helm;
pub mod inprocess;
pub mod ipfs_daemon;
pub mod k8s;
pub mod peer;
pub mod setup;
