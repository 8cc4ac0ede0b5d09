//! An IPFS Cluster peer that runs beside an IPFS daemon: REST API compatible with IPFS Cluster,
//! durable pinset, pin tracker, IPFS connector and a command-line client.

pub mod allocator;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod consensus;
pub mod daemon;
pub mod identity;
pub mod ipfs;
pub mod monitor;
pub mod p2p;
pub mod protocol;
pub mod state;
pub mod tracker;

// The REST API's wire types, client and error live in their own crate (so the operator can use them
// without the peer's libp2p, openraft and redb); the peer keeps them at their old paths.
use cluster_client::ndjson;
pub use cluster_client::{client, types, Error, Result};
