//! Harness of the cross-process end-to-end tests: real IPFS daemons, real peer processes.

pub mod cluster;
pub mod common;
pub mod ipfs_daemon;
pub mod peer;
