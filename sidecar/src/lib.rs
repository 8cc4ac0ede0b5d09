//! An IPFS Cluster peer that runs beside an IPFS daemon: REST API compatible with IPFS Cluster,
//! durable pinset, pin tracker, IPFS connector and a command-line client.

pub mod allocator;
pub mod api;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod consensus;
pub mod daemon;
pub mod error;
pub mod identity;
pub mod ipfs;
pub mod monitor;
mod ndjson;
pub mod p2p;
pub mod protocol;
pub mod state;
pub mod tracker;
pub mod types;

pub use error::{Error, Result};
