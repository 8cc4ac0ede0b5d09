//! Harness of the cross-process end-to-end tests: real IPFS daemons, real peer processes.

pub mod ipfs_daemon;
pub mod peer;
