//! The REST API of an IPFS Cluster peer: its wire types and a typed client.
//!
//! A crate of its own so that the operator (and anything else that only talks to a peer) gets the
//! wire types and the client without the peer's libp2p, openraft and redb.

pub mod client;
mod error;
pub mod ndjson;
pub mod types;

pub use error::{Error, Result};
